"""Count the bad inputs lucent_dsl refuses cleanly, by area (issue 28's closing note).

A fixed catalogue of bad inputs (damaged and hostile files, recipes, model specs, command-line arguments, datasets,
models the renderer cannot drive, resource asks) is fed to the command line (`lucent_dsl.cli.app.main`, in this
process) or to the Python API. Each ends one of three ways:

- refused: the CLI exits 2 with one `error: ...` line on stderr (no "unexpected"), or Python raises a `LucentError`;
- accepted: the CLI exits 0, or Python returns (a bad input that did work: a finding);
- other: any other exit code or exception, or still running after `--hang` seconds (SIGALRM).

    python benchmarks/red_team.py            # the table (about a minute on one core)
    python benchmarks/red_team.py -v         # and one line per input: its outcome and the error's first words

Nothing here downloads or runs code from an input: hostile model files write a marker, and the run fails if one
appears.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import collections  # noqa: E402
import contextlib  # noqa: E402
import dataclasses as dc  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import zlib  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

import lucent_dsl as ld  # noqa: E402
from lucent_dsl.cli import app as cli  # noqa: E402
from lucent_dsl.io.files import RECIPE_KEY, save_image, save_png  # noqa: E402
from lucent_dsl.io.metadata import PNG_SIGNATURE, encode_xmp  # noqa: E402

OBJ = "channel('0', 1)"
FAST = ("--size", "16", "--steps", "1", "-q")
MODELS = '''
from pathlib import Path
from torch import nn

def tiny():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())

def evil():
    Path(__file__).with_name("PWNED").write_text("a recipe ran this code")
    return tiny()

def half():
    return tiny().half()

def meta():
    return tiny().to("meta")
'''


class Payload:
    """A class a hostile .pt file names (torch.load(weights_only=True) must refuse to build it)."""


@dc.dataclass(frozen=True)
class Case:
    area: str
    name: str
    run: Callable[[Path], tuple[str, str]]  # (outcome, detail)


# --- how an input is fed ------------------------------------------------------------------------------------


def cli_case(*argv: str, setup: Callable[[Path], Any] | None = None) -> Callable[[Path], tuple[str, str]]:
    def run(tmp: Path) -> tuple[str, str]:
        if setup:
            setup(tmp)
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = cli.main([a.replace("{tmp}", str(tmp)) for a in argv])
        lines = [line for line in err.getvalue().splitlines() if line.strip()]
        first = lines[-1] if lines else ""
        if code == 0:
            return "accepted", "exit 0"
        if code == 2 and len(lines) == 1 and first.startswith("error: ") and "unexpected" not in first:
            return "refused", first[7:]
        return "other", f"exit {code}: {first}"

    return run


def py_case(call: Callable[[Path], Any]) -> Callable[[Path], tuple[str, str]]:
    def run(tmp: Path) -> tuple[str, str]:
        try:
            call(tmp)
        except ld.LucentError as e:
            return "refused", f"{type(e).__name__}: {e}"
        except Exception as e:  # noqa: BLE001 - what this script counts
            return "other", f"{type(e).__name__}: {e}"
        return "accepted", "returned"

    return run


# --- bad files ----------------------------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")


def _png(*chunks: bytes) -> bytes:
    ihdr = (1).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    return PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + b"".join(chunks) + _chunk(b"IEND", b"")


def _recipe_png(tmp: Path, text: str, name: str = "r.png") -> Path:
    save_png(tmp / name, torch.rand(3, 8, 8), metadata={RECIPE_KEY: text})
    return tmp / name


def _good(tmp: Path, ext: str) -> bytes:
    save_image(tmp / f"good{ext}", torch.rand(3, 16, 16), metadata={RECIPE_KEY: json.dumps({"objective": OBJ})})
    return (tmp / f"good{ext}").read_bytes()


def file_setups() -> dict[str, Callable[[Path], Any]]:
    def write(name: str, data: Callable[[Path], bytes]) -> Callable[[Path], Any]:
        return lambda tmp: (tmp / name).write_bytes(data(tmp))

    def flip(data: bytes, at: int) -> bytes:
        b = bytearray(data)
        b[at % len(b)] ^= 0xFF
        return bytes(b)

    def webp_xmp(xmp: bytes) -> Callable[[Path], Any]:
        def setup(tmp: Path) -> None:
            Image.new("RGB", (4, 4)).save(tmp / "x.webp", format="WEBP", lossless=True, xmp=xmp)
        return setup

    return {
        "png_cut_in_the_header": write("x.png", lambda t: _good(t, ".png")[:30]),
        "png_cut_in_the_pixels": write("x.png", lambda t: _good(t, ".png")[:-40]),
        "png_flipped_byte": write("x.png", lambda t: flip(_good(t, ".png"), 60)),
        "png_bad_zlib_text": write("x.png", lambda t: _png(_chunk(b"zTXt", b"k\0\0not zlib"))),
        "png_zip_bomb": write("x.png", lambda t: _png(_chunk(b"zTXt", b"k\0\0" + zlib.compress(b"a" * 40_000_000, 9)))),
        "png_many_text_chunks": write("x.png", lambda t: _png(*(_chunk(b"zTXt", f"k{i}\0\0".encode() + zlib.compress(
            b"a" * 9_000_000, 9)) for i in range(3)))),
        "png_13000x13000_header": write("x.png", lambda t: PNG_SIGNATURE + _chunk(
            b"IHDR", (13000).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])) + _chunk(b"IEND", b"")),
        "jpeg_cut": write("x.jpg", lambda t: _good(t, ".jpg")[:200]),
        "jpeg_flipped_byte": write("x.jpg", lambda t: flip(_good(t, ".jpg"), 300)),
        "webp_cut": write("x.webp", lambda t: _good(t, ".webp")[:40]),
        "webp_quadratic_xmp_2mb": webp_xmp(b"<lucent_dsl:metadata>" * 100_000),
        "webp_xmp_cut": webp_xmp(encode_xmp({RECIPE_KEY: "{}"})[:-60]),
        "text_named_png": write("x.png", lambda t: b"hello, not an image"),
        "empty_png": write("x.png", lambda t: b""),
        "fifo_named_png": lambda tmp: os.mkfifo(tmp / "x.png"),
        "folder_named_png": lambda tmp: (tmp / "x.png").mkdir(),
    }


def _path_of(name: str) -> str:
    return "{tmp}/x.webp" if name.startswith("webp") else "{tmp}/x.jpg" if name.startswith("jpeg") else "{tmp}/x.png"


# --- the catalogue ------------------------------------------------------------------------------------------


def recipe_file(fields: dict[str, Any] | str, name: str = "r.json") -> Callable[[Path], Any]:
    def setup(tmp: Path) -> None:
        (tmp / "nets.py").write_text(MODELS)
        text = fields if isinstance(fields, str) else json.dumps(
            {"objective": OBJ, "size": [16, 16], "steps": 1, **fields}).replace("{nets}", str(tmp / "nets.py"))
        (tmp / name).write_text(text)
    return setup


def catalogue() -> list[Case]:
    cases: list[Case] = []
    for name, setup in file_setups().items():  # each bad file as a recipe and (if its pixels are bad) an input image
        cases.append(Case("image files", f"recipe:{name}", cli_case("render", "--recipe", _path_of(name), "-q",
                                                                      setup=setup)))
        if "xmp" in name:
            continue  # damaged metadata, good pixels: a fine input image
        cases.append(Case("image files", f"caricature:{name}", cli_case(
            "caricature", _path_of(name), "--model", "lenet5_mnist", "--layers", "conv1", *FAST, "--out",
            "{tmp}/c.png", setup=setup)))
    recipes: dict[str, dict[str, Any] | str] = {
        "not_json": "{not json", "json_array": "[1, 2]", "json_string": '"x"', "nan_lr": '{"objective": "channel(\'0\', 1)", "lr": NaN}',
        "models_is_int": {"models": 5}, "models_is_null": {"models": None}, "size_is_text": {"size": "big"},
        "size_negative": {"size": [-1, 16]}, "steps_is_text": {"steps": "many"}, "seed_negative": {"seed": -1},
        "threads_100000": {"threads": 100000}, "threads_zero": {"threads": 0}, "models_700": {"models": ["lenet5_mnist"] * 700},
        "models_64_vit_h_14": {"models": [f"m{i}=torchvision:vit_h_14" for i in range(64)], "size": [224, 224]},
        "unknown_key": {"stpes": 3}, "future_format": {"lucent_dsl_recipe": 2}, "objective_is_code":
        {"objective": "__import__('os').system('touch PWNED')"}, "objective_is_dict": {"objective": {"a": 1}},
        "file_model": {"models": ["{nets}:evil"]}, "download_weights": {"models": ["torchvision:resnet18:weights=DEFAULT"]},
        "timm_pretrained_upper": {"models": ["timm:resnet18:pretrained=TRUE"]}, "image_ask": {"command": "caricature",
        "image": "/etc/passwd", "layers": ["0"], "objective": None}, "steps_above_cap": {"steps": 10**7},
        "size_above_cap": {"size": [100000, 100000]}, "batch_above_cap": {"batch": 100000},
        "decay_power_99": {"decay_power": 99}, "precision_fp16": {"precision": "fp16"}, "layers_is_int": {"layers": 3},
    }
    for name, fields in recipes.items():
        cases.append(Case("recipes", name, cli_case("render", "--recipe", "{tmp}/r.json", "-q",
                                                     setup=recipe_file(fields))))
    cases.append(Case("recipes", "recipe_file_of_17_mb", cli_case("render", "--recipe", "{tmp}/r.json", "-q",
                                                                  setup=recipe_file("x" * (17 * 2**20)))))
    specs = ("nonexistent_zoo_name", "torchvision:not_a_net", "torchvision:resnet18:weights=BOGUS", "timm:not_a_net",
             "{tmp}/missing.py:tiny", "{tmp}/nets.py:not-a-name", "{tmp}/nets.py", " ", "a=b=c",
             "torchvision:resnet18:foo=bar", "{tmp}/nets.py:half", "{tmp}/nets.py:meta")
    for spec in specs:
        cases.append(Case("model specs", spec.replace("{tmp}/", ""), cli_case(
            "render", OBJ, "--model", spec, *FAST, "--out", "{tmp}/o.png",
            setup=lambda tmp: (tmp / "nets.py").write_text(MODELS))))
    args = (("--steps", "0"), ("--steps", "-1"), ("--size", "0"), ("--size", "99999"), ("--seed", str(2**63)),
            ("--threads", "100000"), ("--device", "meta"), ("--device", "xyz"), ("--lr", "nan"), ("--out", "{tmp}/x.bmp"),
            ("--batch", "1000"), ("--allow", "everything"), ("--precision", "fp16"), ("--decay-power", "-3"),
            ("--gif", "{tmp}/a.png"), ("--every", "2"))
    for a in args:
        cases.append(Case("CLI arguments", " ".join(a).replace("{tmp}/", ""), cli_case(
            "render", OBJ, "--model", "lenet5_mnist", *FAST, *a)))
    for text in ("channel('conv1', ", "undefined_term('conv1', 1)", "__import__('os')", "channel('nope', 1)",
                 "channel('conv1', 10**9)", "channel('conv1', 1) * 'a'"):
        cases.append(Case("CLI arguments", f"objective {text}", cli_case("render", text, "--model", "lenet5_mnist",
                                                                        *FAST, "--out", "{tmp}/o.png")))

    datasets: dict[str, Callable[[Path], Any]] = {
        "pickle_with_a_class.pt": lambda t: torch.save({"x": Payload()}, t / "d.pt"),
        "cut.pt": lambda t: (torch.save(torch.rand(4, 1, 28, 28), t / "whole.pt"),
                             (t / "d.pt").write_bytes((t / "whole.pt").read_bytes()[:300])),
        "text.pt": lambda t: (t / "d.pt").write_text("not a checkpoint"),
        "dict.pt": lambda t: torch.save({"a": torch.rand(2)}, t / "d.pt"),
        "object_array.npy": lambda t: np.save(t / "d.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True),
        "cut.npy": lambda t: (t / "d.npy").write_bytes(b"\x93NUMPY\x01\x00v\x00{'descr'"),
        "wrong_rank.npy": lambda t: np.save(t / "d.npy", np.zeros((4, 5), np.float32)),
        "fifo.npy": lambda t: os.mkfifo(t / "d.npy"),
        "folder_of_only_a_fifo": lambda t: ((t / "imgs").mkdir(), os.mkfifo(t / "imgs" / "x.png")),
    }
    for name, setup in datasets.items():
        source = "{tmp}/imgs" if "folder" in name else "{tmp}/d." + name.rsplit(".", 1)[1]
        cases.append(Case("datasets", name, cli_case("activation-atlas", source, "--layer", "conv1", "--model",
                                                     "lenet5_mnist", "--out", "{tmp}/atlas", "-q", setup=setup)))
        if not name.startswith(("folder", "wrong_rank", "dict")):
            from lucent_dsl.toolbox.dictionary import load_dictionary

            path = source.replace("{tmp}", "")
            cases.append(Case("datasets", f"dictionary:{name}", py_case(
                lambda t, setup=setup, path=path: (setup(t), load_dictionary(str(t) + path)))))

    def tiny() -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())

    class TwoArgs(nn.Module):
        def forward(self, x: Any, mask: Any) -> Any:
            return x * mask

    models: dict[str, Callable[[], Any]] = {
        "float16": lambda: tiny().half(), "bfloat16": lambda: tiny().to(torch.bfloat16),
        "float64": lambda: tiny().double(), "meta": lambda: tiny().to("meta"),
        "torchscript": lambda: torch.jit.script(tiny()), "two_argument_forward": TwoArgs,
        "a_function": lambda: (lambda x: x), "a_string": lambda: "resnet50",
    }
    for name, make in models.items():
        cases.append(Case("models (Python)", name, py_case(
            lambda t, make=make: ld.render(OBJ, make(), size=8, steps=1, progress=False))))
    return cases


# --- running --------------------------------------------------------------------------------------------------


class Hang(BaseException):
    """Raised by SIGALRM in a hung input; a BaseException, so no `except OSError` on the way turns it into a refusal."""


def _hung(*_: Any) -> None:
    raise Hang


def run_case(case: Case, hang_s: float) -> tuple[str, str]:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        old = signal.signal(signal.SIGALRM, _hung)
        signal.setitimer(signal.ITIMER_REAL, hang_s)
        try:
            outcome = case.run(tmp)
        except Hang:
            outcome = ("other", f"still running after {hang_s:g} s")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        if (tmp / "PWNED").exists():
            raise SystemExit(f"{case.area} / {case.name}: an input ran code")
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per input")
    parser.add_argument("--hang", type=float, default=60.0, help="seconds before an input counts as a hang")
    parser.add_argument("--skip", action="append", default=[], metavar="TEXT",
                        help="leave out the inputs whose name contains TEXT (one that kills the process, say)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    table: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for case in catalogue():
        if any(text in case.name for text in args.skip):
            print(f"skipped   {case.area:16} {case.name}")
            continue
        outcome, detail = run_case(case, args.hang)
        table[case.area][outcome] += 1
        if args.verbose or outcome != "refused":
            print(f"{outcome:9} {case.area:16} {case.name:40} {detail[:110]}", flush=True)
    print(f"\n{'area':18} {'tried':>6} {'refused':>8} {'accepted':>9} {'other':>6}")
    total: collections.Counter[str] = collections.Counter()
    for area, counts in table.items():
        total.update(counts)
        print(f"{area:18} {sum(counts.values()):6} {counts['refused']:8} {counts['accepted']:9} {counts['other']:6}")
    print(f"{'all':18} {sum(total.values()):6} {total['refused']:8} {total['accepted']:9} {total['other']:6}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
