"""Resource and input holes (issue 28, items 5 and 6): each refused before work, one line and exit 2 from the CLI, a
LucentError from Python; and every malformed file a named error, never "unexpected".

A hang is caught by `_within` (SIGALRM raises in the test): it bounds what once ran for minutes or forever (a
quadratic regex, a FIFO opened for reading), it does not time anything.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from PIL import Image
from torch import nn

import lucent_dsl as ld
from lucent_dsl.cli import app as cli
from lucent_dsl.errors import ImageError, InvalidArgumentError, LucentError
from lucent_dsl.io import files as io_files, metadata as meta_lib
from lucent_dsl.record import resources
from lucent_dsl.record.recipe import Recipe
from lucent_dsl.toolbox.dictionary import load_dictionary
from tests.procs import END_TIMEOUT, START_TIMEOUT, faulthandler_env, reaped

OBJ = "channel('0', 1)"


def load_tensor_file(path, **kwargs):  # imported when called, so that this file runs against older code too
    from lucent_dsl.io.tensors import load_tensor_file as load

    return load(path, **kwargs)
HANG_GUARD_S = 120  # generous: what is bounded here took 25 minutes or forever before


class Hang(BaseException):
    """A hang, raised by SIGALRM: a BaseException, so that no `except OSError` on its way makes it look handled."""


@contextlib.contextmanager
def _within(seconds: float):
    def hung(*_):
        raise Hang(f"still running after {seconds} s: a hang")

    old = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _cli(capsys, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(list(argv))
    _, err = capsys.readouterr()
    return code, err


def _refused(code: int, err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "unexpected" not in err, err
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def _never_built(monkeypatch) -> list[object]:
    """Every model builder replaced by one that records the call and refuses (nothing may be built)."""
    calls: list[object] = []

    def build(specs, **kwargs):
        calls.append(specs)
        raise AssertionError("a model was built before the check")

    for where in ("lucent_dsl.models.specs", "lucent_dsl.replay", "lucent_dsl.record.recipe"):
        monkeypatch.setattr(f"{where}.build_models", build)
    return calls


# --- 5: a WebP whose XMP packet makes a regex quadratic ------------------------------------------------------


def _many_openings(n_bytes: int) -> bytes:
    tag = b"<lucent_dsl:metadata>"
    return tag * (n_bytes // len(tag))


def test_an_xmp_packet_of_2_mb_of_openings_is_read_without_hanging():
    with _within(HANG_GUARD_S):
        assert meta_lib.decode_xmp(_many_openings(2_100_000)) == {}


def test_a_webp_whose_xmp_hangs_a_regex_is_refused_with_exit_2(tmp_path, capsys):
    path = tmp_path / "evil.webp"
    Image.new("RGB", (4, 4)).save(path, format="WEBP", lossless=True, xmp=_many_openings(2_100_000))
    with _within(HANG_GUARD_S):
        code, err = _cli(capsys, "render", "--recipe", str(path), "-q")
    _refused(code, err, "evil.webp", "carries no lucent_dsl recipe")


# --- 5: the text budget is per file, not per chunk ------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")


def _png(*chunks: bytes) -> bytes:
    ihdr = (1).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    return meta_lib.PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + b"".join(chunks) + _chunk(b"IEND", b"")


def _bomb(key: str, inflated: int) -> bytes:
    return _chunk(b"zTXt", key.encode() + b"\0\0" + zlib.compress(b"a" * inflated, 9))


@pytest.mark.parametrize("kind", ["zTXt", "tEXt"])
def test_many_text_chunks_each_under_the_cap_are_refused_together(tmp_path, monkeypatch, capsys, kind):
    monkeypatch.setattr(meta_lib, "MAX_TEXT_BYTES", 10_000)
    chunks = [_bomb(f"k{i}", 6000) if kind == "zTXt" else _chunk(b"tEXt", f"k{i}\0".encode() + b"a" * 6000)
              for i in range(3)]
    path = tmp_path / "many.png"
    path.write_bytes(_png(*chunks))
    with pytest.raises(ImageError, match="larger than 10000 bytes"):
        io_files.read_metadata(path)
    _refused(*_cli(capsys, "render", "--recipe", str(path), "-q"), "many.png", "10000 bytes")


def test_a_bomb_inflates_only_to_the_budget(monkeypatch):
    seen = []
    real = zlib.decompressobj

    class Spy:
        def __init__(self):
            self.d = real()

        def decompress(self, data, max_length=0):
            seen.append(max_length)
            return self.d.decompress(data, max_length)

        def __getattr__(self, name):
            return getattr(self.d, name)

    monkeypatch.setattr(meta_lib.zlib, "decompressobj", Spy)
    monkeypatch.setattr(meta_lib, "MAX_TEXT_BYTES", 10_000)
    with pytest.raises(ImageError):
        meta_lib.png_text(__import__("io").BytesIO(_png(_bomb("k", 10**7))))
    assert seen and all(0 < n <= 10_001 for n in seen), seen


def test_a_cut_zlib_stream_in_a_text_chunk_is_a_damaged_png(tmp_path):
    whole = zlib.compress(b"a" * 5000)
    path = tmp_path / "cut.png"
    path.write_bytes(_png(_chunk(b"zTXt", b"k\0\0" + whole[: len(whole) // 2])))
    with pytest.raises(ImageError, match="damaged PNG"):
        io_files.read_metadata(path)


# --- 5: threads ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("threads", [100_000, 1025])
def test_a_recipe_asking_for_too_many_threads_is_refused(tmp_path, capsys, threads):
    with pytest.raises(InvalidArgumentError, match=f"threads {threads} is above the limit"):
        Recipe(objective=OBJ, threads=threads)
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"objective": OBJ, "threads": threads}))
    _refused(*_cli(capsys, "render", "--recipe", str(path), "-q"), f"threads {threads}", "MAX_THREADS")
    # the option too (`objectives` does no parallel work: before the cap this exited 0 with 100000 threads set)
    _refused(*_cli(capsys, "objectives", "--threads", str(threads)), f"threads {threads}")
    assert Recipe(objective=OBJ, threads=resources.MAX_THREADS).threads == resources.MAX_THREADS == 1024


# --- 5: a recipe's models are counted and sized before any is built ------------------------------------------


def test_a_recipe_of_700_models_is_refused_before_building_one(tmp_path, capsys, monkeypatch):
    calls = _never_built(monkeypatch)
    recipe = Recipe(objective=OBJ, models=("mobilenet_v2",) * 700)
    with pytest.raises(InvalidArgumentError, match="names 700 models, above the cap of 16"):
        recipe.run(progress=False)
    with pytest.raises(InvalidArgumentError, match="700 models"):
        recipe.build_models()
    path = tmp_path / "r.json"
    path.write_text(recipe.to_json())
    _refused(*_cli(capsys, "render", "--recipe", str(path), "-q"), "700 models", "--allow large")
    assert calls == []


def test_models_whose_weights_exceed_the_memory_are_refused_before_building(tmp_path, capsys, monkeypatch):
    calls = _never_built(monkeypatch)
    monkeypatch.setattr(resources, "available_bytes", lambda device=None: (4 * 2**30, "the test's memory"))
    recipe = Recipe(objective=OBJ, models=tuple(f"m{i}=torchvision:vit_h_14" for i in range(4)))
    assert resources.spec_bytes(recipe.models) > 9 * 2**30  # 632 M parameters each, counted on the meta device
    with pytest.raises(InvalidArgumentError, match=r"weights alone need about 9\.\d+ GB.*4\.00 GB"):
        recipe.run(progress=False)
    path = tmp_path / "r.json"
    path.write_text(recipe.to_json())
    _refused(*_cli(capsys, "render", "--recipe", str(path), "-q"), "weights alone", "--allow memory")
    assert calls == []
    with pytest.raises(AssertionError, match="a model was built"):  # allowed: the check steps aside
        recipe.run(progress=False, allow="memory")


# --- 5: a FIFO named like an image ------------------------------------------------------------------------------


@pytest.fixture
def fifo_folder(tmp_path) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    os.mkfifo(folder / "x.png")
    return folder


def test_a_fifo_named_like_an_image_is_refused_or_skipped_never_opened(fifo_folder, capsys):
    fifo = fifo_folder / "x.png"
    with _within(HANG_GUARD_S):
        for read in (io_files.load_image, io_files.read_metadata, io_files.image_size, load_tensor_file):
            with pytest.raises(ImageError, match="FIFO"):
                read(fifo)
        code, err = _cli(capsys, "activation-atlas", str(fifo_folder), "--layer", "conv1",
                         "--model", "lenet5_mnist", "--out", str(fifo_folder.parent / "atlas"), "-q")
        _refused(code, err, "no images")
        from lucent_dsl.cli.toolbox import dataset

        Image.new("RGB", (8, 8)).save(fifo_folder / "y.png")
        images, _ = dataset(str(fifo_folder), ld.with_info(nn.Conv2d(3, 4, 3), ld.ModelInfo(input_size=(8, 8))))
        assert next(iter(images)).shape == (1, 3, 8, 8)  # y.png alone


# --- 6: models render cannot drive, from Python -------------------------------------------------------------


def _tiny() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())


@pytest.mark.parametrize("make, fragment", [
    (lambda: _tiny().half(), "torch.float16"),
    (lambda: _tiny().to(torch.bfloat16), "torch.bfloat16"),
    (lambda: _tiny().double(), "torch.float64"),
    (lambda: _tiny().to("meta"), "meta device"),
])
def test_render_from_python_names_a_model_it_cannot_drive(make, fragment):
    with pytest.raises(InvalidArgumentError, match=fragment):
        ld.render(OBJ, make(), size=8, steps=1, progress=False)


def test_render_of_a_compiled_plan_names_a_model_changed_since_into_one_it_cannot_drive():
    model = _tiny()
    plan = ld.compile_plan(OBJ, model)
    model.double()  # after the plan was compiled: render(plan) meets the same check as render(objective, model)
    with pytest.raises(InvalidArgumentError, match="torch.float64"):
        ld.render(plan, size=8, steps=1, progress=False)


# --- 6: pickles get our advice, not torch's ---------------------------------------------------------------------


class _Payload:
    pass


def test_a_pickle_of_more_than_tensors_is_refused_without_torchs_advice(tmp_path, capsys):
    path = tmp_path / "data.pt"
    torch.save({"images": torch.rand(2, 3, 8, 8), "extra": _Payload()}, path)
    with pytest.raises(ImageError) as caught:
        load_tensor_file(path)
    message = str(caught.value)
    assert "Python objects besides tensors" in message and "torch.save(tensor)" in message
    assert "weights_only=False" not in message and "weights_only` set to `False`" not in message
    code, err = _cli(capsys, "activation-atlas", str(path), "--layer", "0", "--model", "lenet5_mnist",
                     "--out", str(tmp_path / "atlas"), "-q")
    _refused(code, err, "data.pt", "besides tensors")
    assert "weights_only=False" not in err
    dictionary = tmp_path / "dict.pt"
    torch.save({"W_dec": _Payload()}, dictionary)
    with pytest.raises(InvalidArgumentError, match="besides tensors"):
        load_dictionary(dictionary)


# --- 6: every malformed file is a named error ---------------------------------------------------------------------


def _good_files(folder: Path) -> dict[str, bytes]:
    recipe = Recipe(objective=OBJ, steps=3).to_json()
    out = {}
    for ext in (".png", ".jpg", ".webp"):
        io_files.save_image(folder / f"g{ext}", torch.rand(3, 12, 12), metadata={io_files.RECIPE_KEY: recipe})
        out[ext] = (folder / f"g{ext}").read_bytes()
    io_files.save_png(folder / "z.png", torch.rand(3, 4, 4), metadata={io_files.RECIPE_KEY: recipe, "pad": "x" * 3000})
    out["z.png"] = (folder / "z.png").read_bytes()  # a zTXt chunk
    torch.save(torch.rand(2, 3, 4, 4), folder / "g.pt")
    out[".pt"] = (folder / "g.pt").read_bytes()
    np.save(folder / "g.npy", np.random.default_rng(0).random((2, 3, 4, 4)))
    out[".npy"] = (folder / "g.npy").read_bytes()
    out[".json"] = recipe.encode()
    return out


def _readers(ext: str):
    if ext in (".pt", ".npy"):
        return (load_tensor_file,)
    if ext == ".json":
        return (Recipe.load,)
    return (io_files.read_metadata, io_files.load_image, Recipe.load)


@st.composite
def _damage(draw, data: bytes) -> bytes:
    b = bytearray(data)
    how = draw(st.sampled_from(["cut", "flip", "scribble", "insert", "zero"]))
    at = draw(st.integers(0, len(b) - 1))
    if how == "cut":
        return bytes(b[:at])
    if how == "flip":
        b[at] ^= 1 << draw(st.integers(0, 7))
    elif how == "scribble":
        for i, v in draw(st.lists(st.tuples(st.integers(0, len(b) - 1), st.integers(0, 255)), min_size=1, max_size=20)):
            b[i] = v
    elif how == "insert":
        b[at:at] = draw(st.binary(min_size=1, max_size=40))
    else:
        b[at:at + draw(st.integers(1, 64))] = bytes(64)
    return bytes(b)


@pytest.fixture(scope="module")
def good_files(tmp_path_factory) -> dict[str, bytes]:
    return _good_files(tmp_path_factory.mktemp("good"))


@settings(max_examples=150)
@given(data=st.data())
def test_a_damaged_image_dataset_or_recipe_file_is_read_or_refused_by_name(good_files, tmp_path_factory, data):
    kind = data.draw(st.sampled_from(sorted(good_files)))
    damaged = data.draw(_damage(good_files[kind]))
    path = tmp_path_factory.mktemp("bad") / ("f.png" if kind == "z.png" else f"f{kind}")
    path.write_bytes(damaged)
    for read in _readers(kind):
        try:
            read(path)
        except LucentError:
            pass  # a named error; anything else fails the test with its traceback


_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
                    st.text(max_size=8), st.lists(st.integers(-3, 300), max_size=3), st.just([None]),
                    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2), st.just(["mobilenet_v2"]))


@given(st.dictionaries(st.sampled_from(["objective", "models", "size", "steps", "seed", "param", "transforms", "lr",
                                        "batch", "precision", "command", "image", "layers", "decay_power", "threads"]),
                       _VALUES, min_size=1, max_size=4))
def test_a_recipe_with_fields_of_the_wrong_type_is_refused_by_name(fields):
    base = json.loads(Recipe(objective=OBJ, steps=3).to_json())
    try:
        Recipe.from_json(json.dumps({**base, **fields}))
    except LucentError:
        pass


def test_damaged_metadata_json_in_an_image_is_a_named_error(tmp_path, capsys):
    path = tmp_path / "bad.png"
    io_files.save_png(path, torch.rand(3, 4, 4), metadata={io_files.RECIPE_KEY: "{not json"})
    _refused(*_cli(capsys, "render", "--recipe", str(path), "-q"), "not valid JSON")
    webp = tmp_path / "bad.webp"
    Image.new("RGB", (4, 4)).save(webp, format="WEBP", lossless=True, xmp=meta_lib.encode_xmp({"a": "b"})[:-80])
    _refused(*_cli(capsys, "render", "--recipe", str(webp), "-q"), "bad.webp")


# --- 6: a killed writer leaves nothing behind for long ----------------------------------------------------------

_WRITER = """
import sys, time
from lucent_dsl.io.files import atomic_write
with atomic_write(sys.argv[1]) as f:
    f.write(b"half a file")
    f.flush()
    print("writing", flush=True)
    time.sleep(600)
"""


def test_a_temp_file_left_by_a_sigkilled_writer_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "examples" / "state.json"
    env = faulthandler_env({**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    with reaped(subprocess.Popen([sys.executable, "-c", _WRITER, str(target)], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)) as proc:
        assert proc.stdout is not None
        with _within(START_TIMEOUT):
            assert proc.stdout.readline().strip() == "writing"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=END_TIMEOUT)
    left = [p.name for p in target.parent.iterdir()]
    assert len(left) == 1 and left[0].endswith(".tmp"), left  # what the kill left
    # the next run: this process has written nothing into that folder yet, as a new process would
    with io_files.atomic_write(target.with_name("other.json"), "w") as f:
        f.write("{}")
    assert sorted(p.name for p in target.parent.iterdir()) == ["other.json"]


def test_a_write_in_progress_is_never_removed(tmp_path):
    target = tmp_path / "a.bin"
    with io_files.atomic_write(target) as f:
        f.write(b"x")
        (tmp_path / "b.bin").write_bytes(b"")
        io_files.remove_stale_temps(tmp_path)  # this process is alive: its temp file stays
    assert target.read_bytes() == b"x"
