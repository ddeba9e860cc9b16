"""The recipe trust rule: a downloaded image's recipe never runs code, downloads weights or reads files.

Hostile recipes are written into real PNGs (as an attacker would share them) and replayed by
`lucent-dsl render --recipe evil.png` (in-process `cli.main`, and once as the real program in a
subprocess): each names a factory that would create a marker file, which must not appear. The same
recipes run when the user says so (`--allow file`, `--model SPEC`): the marker then appears, so
the test can fail.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest
import torch

from lucent_dsl.cli import app as cli
from lucent_dsl.errors import InvalidArgumentError
from lucent_dsl.io.files import RECIPE_KEY, read_metadata, save_image
from lucent_dsl.record import trust
from lucent_dsl.replay import Recipe

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = '''
from pathlib import Path

from torch import nn


def factory():
    Path(__file__).with_name("PWNED").write_text("code from a recipe ran")
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
'''


def program(*argv: str, cwd: Path, limit_as: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}

    def limit() -> None:
        if limit_as is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit_as, resource.getrlimit(resource.RLIMIT_AS)[1]))

    return subprocess.run([sys.executable, "-m", "lucent_dsl", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, check=False, preexec_fn=limit)


def shared_png(path: Path, **recipe: object) -> Path:
    d = {"objective": "channel('0', 1)", "size": [16, 16], "steps": 2, **recipe}
    save_image(path, torch.rand(3, 16, 16), metadata={RECIPE_KEY: json.dumps(d)})
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "evil.py").write_text(HOSTILE)
    return tmp_path


# spec -> where its code lives (relative to the folder, or any .py already on disk)
SPECS = {
    "absolute_path": lambda d: f"{d / 'evil.py'}:factory",
    "relative_path": lambda d: "evil.py:factory",
    "in_an_ensemble": lambda d: f"b={d / 'evil.py'}:factory",
}


def main(capsys, *argv: str) -> tuple[int, str]:
    code = cli.main([str(a) for a in argv])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(SPECS))
def test_a_shared_png_never_runs_its_model_file(folder, name, capsys, monkeypatch):
    monkeypatch.chdir(folder)
    spec = SPECS[name](folder)
    models = ["a=torchvision:squeezenet1_1", spec] if spec.startswith("b=") else [spec]
    png = shared_png(folder / "downloaded.png", models=models)
    code, err = main(capsys, "render", "--recipe", "downloaded.png", "--out", "o.png", "-q")
    assert code == 2, err
    assert not (folder / "PWNED").exists() and not (folder / "o.png").exists()
    line = err.strip()
    assert line.count("\n") == 0 and "[file]" in line and "evil.py" in line and "--allow file" in line, line
    assert "--model SPEC" in line
    if name == "relative_path":
        assert "relative to the current folder" in line
    # the user allows it by name: now it runs (so this test sees the code when it does run)
    extra = ["--model", f"{folder / 'evil.py'}:factory"] if spec.startswith("b=") else []
    code, err = main(capsys, "render", "--recipe", png, "--out", "o.png", "-q", "--allow", "file", *extra)
    assert code == 0, err
    assert (folder / "PWNED").exists() and (folder / "o.png").exists()


def test_the_real_program_refuses_a_shared_png(folder):
    shared_png(folder / "downloaded.png", models=["evil.py:factory"])
    proc = program("render", "--recipe", "downloaded.png", "--out", "o.png", cwd=folder)
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert proc.stderr.startswith("error: the recipe in 'downloaded.png' asks for") and "[file]" in proc.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["downloaded.png", "evil.py"]  # no marker, no output


def test_model_named_on_the_command_line_replaces_the_recipes(folder, capsys):
    png = shared_png(folder / "downloaded.png", models=[f"{folder / 'evil.py'}:factory"])
    safe = folder / "safe.py"
    safe.write_text("from torch import nn\n\ndef factory():\n    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1))\n")
    code, err = main(capsys, "render", "--recipe", png, "--model", f"{safe}:factory", "--out", folder / "o.png", "-q")
    assert code == 0, err
    assert not (folder / "PWNED").exists()
    assert Recipe.from_json(read_metadata(folder / "o.png")[RECIPE_KEY]).models == (f"{safe.resolve()}:factory",)


@pytest.mark.parametrize("spec, words", [
    ("torchvision:vit_h_14:weights=DEFAULT", ("[download]", "vit_h_14", "--allow download")),
    ("torchvision:deeplabv3_resnet50", ("[download]", "backbone", "ResNet50_Weights")),
    ("timm:vit_tiny_patch16_224:pretrained=true", ("[download]", "timm", "--allow download")),
    (f"{Path(json.__file__).with_name('decoder.py')}:JSONDecoder", ("[file]", "decoder.py", "JSONDecoder()")),
])
def test_recipes_that_download_or_import_are_refused_in_python_too(spec, words, tmp_path):
    recipe = Recipe(objective="channel('0', 1)", models=(spec,), steps=2, size=(16, 16))
    with pytest.raises(trust.UntrustedRecipeError) as info:
        recipe.run(progress=False)
    assert all(w in str(info.value) for w in words), info.value
    with pytest.raises(trust.UntrustedRecipeError):
        recipe.build_models()


def test_random_weight_architectures_and_given_models_need_no_permission():
    recipe = Recipe(objective="channel('features.0', 1)", models=("torchvision:squeezenet1_1",), steps=1, size=(32, 32))
    assert trust.asks(recipe) == []
    result = recipe.run(progress=False)  # builds it: random weights, nothing downloaded
    assert result.steps == 1
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    own = Recipe(objective="channel('0', 1)", models=("/nowhere/evil.py:factory",), steps=1, size=(8, 8))
    assert own.run(net, progress=False).steps == 1  # given models are the caller's own: the spec is not built


def test_a_recipe_image_path_needs_permission_and_a_recipe_its_caps(tmp_path):
    recipe = Recipe(command="accentuate", objective="channel('0', 1)", image="/etc/passwd", models=("torchvision:squeezenet1_1",))
    with pytest.raises(trust.UntrustedRecipeError, match=r"\[image\] '/etc/passwd'"):
        recipe.check_trusted()
    recipe.check_trusted("image")
    for field, value in (("steps", 10**6), ("size", (9000, 9000)), ("batch", 10**4)):
        big = Recipe(objective="channel('0', 1)").replace(**{field: value})
        with pytest.raises(InvalidArgumentError, match="--allow large"):
            big.check_trusted()
        big.check_trusted("large")
    with pytest.raises(InvalidArgumentError, match="unknown"):
        recipe.check_trusted("everything")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")


def test_reading_a_recipe_never_decodes_the_pixels(tmp_path):
    """A PNG that claims 13000 x 13000 pixels, its recipe after the pixel data: read under a memory limit
    far below the 169 MB that decoding would allocate (and PIL's decode, the control, fails there)."""
    text = Recipe(objective="channel('0', 1)", models=("torchvision:squeezenet1_1",)).to_json()
    ihdr = (13000).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    body = _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 13001 * 50)) + _chunk(b"zTXt", RECIPE_KEY.encode() + b"\0\0" + zlib.compress(text.encode()))
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + body + _chunk(b"IEND", b""))
    script = textwrap.dedent(f"""
        import resource, sys
        from lucent_dsl.replay import Recipe
        from PIL import Image
        size = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size + 96 * 2**20, resource.RLIM_INFINITY))
        print(Recipe.load({str(big)!r}).models)
        Image.MAX_IMAGE_PIXELS = None
        try:
            Image.open({str(big)!r}).load()
        except MemoryError:
            print("decode: MemoryError")
        """)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.stdout.splitlines() == ["('torchvision:squeezenet1_1',)", "decode: MemoryError"], proc.stderr[-2000:]
