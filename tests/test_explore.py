"""`explore`: the site of LeNet5 (with real digits), of MobileNetV2 through the CLI (with photo crops), of a segmentation model."""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
import torch
from digits import mnist
from models import zoo_model

from lucent_dsl.cli import explore as command
from lucent_dsl.errors import InvalidArgumentError, LayerNotFoundError
from lucent_dsl.explore.site import explore
from lucent_dsl.explore.units import CENTRAL_BOX, DIVERSITY_SET, model_units
from lucent_dsl.io.files import RECIPE_KEY, load_image, read_png_metadata, save_png
from lucent_dsl.replay import Recipe

SRC = re.compile(r'(?:src|href)="([^"#]+)"')


def _local_refs(site: Path) -> dict[Path, list[Path]]:
    """Every page -> the files its src/href attributes point at (inside the site)."""
    out = {}
    for page in site.rglob("*.html"):
        if page.parent.name == "img":
            continue
        refs = [(page.parent / r).resolve() for r in SRC.findall(page.read_text()) if not r.startswith(("data:", "http"))]
        out[page] = refs
    return out


@pytest.fixture(scope="module")
def lenet_site(tmp_path_factory):
    images, _ = mnist()
    site = tmp_path_factory.mktemp("lenet") / "site"
    model = zoo_model("lenet5_mnist")
    done = explore(model, "lenet5_mnist", ["conv2", "@output"], site, channels="0:3", images=images[::25], steps=12,
                   batch=8, k=6, progress=False)
    return site, model, done


def test_the_lenet5_site_has_every_page_and_image(lenet_site):
    site, _, done = lenet_site
    assert done["units"] == 6 and done["images_rendered"] == 12 and done["sets_rendered"] == 6
    manifest = json.loads((site / "site.json").read_text())
    assert list(manifest["layers"]) == ["conv2", "@output"]
    assert [u["label"] for u in manifest["layers"]["@output"]] == ["class 0", "class 1", "class 2"]
    pages = _local_refs(site)
    assert {p.relative_to(site).as_posix() for p in pages} == {
        "index.html", "l/conv2.html", "l/_output.html", *(f"u/{n}_{i:04d}.html" for n in ("conv2", "_output") for i in range(3))}
    for page, refs in pages.items():
        missing = [r for r in refs if not r.exists()]
        assert not missing, (page, missing)
    unit = (site / "u" / "conv2_0001.html").read_text()
    assert unit.count("<img ") == 2 + DIVERSITY_SET + 2 and 'loading="lazy"' in unit
    assert "Sanity check" in unit and "vis~pos" in unit and "channel(&#x27;conv2&#x27;, 1)" in unit
    assert "lucent-dsl render &quot;channel(&#x27;conv2&#x27;, 1)&quot; --model lenet5_mnist --size 28x28 --steps 12" in unit
    sanity = manifest["layers"]["@output"][2]["sanity"]
    assert [r["layer"] for r in sanity["rows"]][-1] == "@output" and all(-1 <= r["pos_pos"] <= 1 for r in sanity["rows"])


def test_every_image_carries_the_recipe_that_makes_it(lenet_site):
    site, model, _ = lenet_site
    img = site / "img"
    vis, neg = (Recipe.from_json(read_png_metadata(img / f)[RECIPE_KEY]) for f in ("conv2_0001.png", "conv2_0001.neg.png"))
    div = Recipe.from_json(read_png_metadata(img / "conv2_0001.div2.png")[RECIPE_KEY])
    assert vis.objective == "channel('conv2', 1)" and neg.objective == "-channel('conv2', 1)" and vis.batch == 1
    assert div.batch == DIVERSITY_SET and "diversity('conv2')" in div.objective and vis.seed != neg.seed != div.seed
    assert json.loads(read_png_metadata(img / "_output_0002.div0.png")[RECIPE_KEY])["objective"].endswith("* diversity('maxpool2')")  # the deepest map
    again = vis.run(model, progress=False).images  # the recipe renders the same picture (batching rounds the floats)
    assert (again - load_image(img / "conv2_0001.png", channels=1)).abs().max() <= 2 / 255
    top = load_image(img / "_output_0001.top.png")
    assert top.shape[-1] > 5 * top.shape[-2]  # a strip of 6 crops


def test_a_second_run_resumes_and_redoes_only_what_is_missing(lenet_site):
    site, model, _ = lenet_site
    images, _ = mnist()
    (site / "img" / "conv2_0002.neg.png").unlink()
    save_png(site / "img" / "_output_0000.div1.png", torch.zeros(1, 1, 28, 28))  # no recipe: the set is redone
    before = (site / "img" / "conv2_0000.png").read_bytes()
    done = explore(model, "lenet5_mnist", ["conv2", "@output"], site, channels="0:3", images=images[::25], steps=12,
                   batch=8, k=6, progress=False)
    assert (done["images_rendered"], done["sets_rendered"]) == (1, 1)
    assert (site / "img" / "conv2_0000.png").read_bytes() == before
    with pytest.raises(InvalidArgumentError, match="another recipe"):  # other settings never mix into one folder
        explore(model, "lenet5_mnist", ["conv2"], site, channels="0:1", steps=13, progress=False)


def test_explore_command_builds_a_mobilenet_v2_site_with_photo_examples(tmp_path):
    import skimage.data

    zoo_model("mobilenet_v2")
    photos = tmp_path / "photos"
    for name in ("coffee", "astronaut", "chelsea", "rocket", "colorwheel", "immunohistochemistry"):
        save_png(photos / f"{name}.png", load_image(getattr(skimage.data, name)(), size=96))
    parser = argparse.ArgumentParser(prog="lucent-dsl")
    command.add_parser(parser.add_subparsers(), [])
    args = parser.parse_args(["explore", "mobilenet_v2", "--layers", "features.14", "--channels", "5,9", "--out",
                              str(tmp_path / "site"), "--images", str(photos), "--size", "64", "--steps", "6", "--k", "3"])
    args.quiet = True
    assert args.run(args) == 0
    unit = (tmp_path / "site" / "u" / "features.14_0009.html").read_text()
    assert "Dataset examples" in unit and "Sanity check" in unit and "features.18" in unit
    assert re.search(r"drive it most: (\w+\.png \([-0-9.e]+\), ){2}\w+\.png", unit)
    assert "--size 64x64 --steps 6" in unit and "--batch 4" in unit
    bad = parser.parse_args(["explore", "mobilenet_v2", "--layers", "features.99", "--out", str(tmp_path / "x")])
    with pytest.raises(LayerNotFoundError, match="features.9"):
        bad.run(bad)


def test_a_segmentation_model_gets_one_unit_per_class_inside_the_central_region(tmp_path):
    factory = tmp_path / "seg.py"
    factory.write_text(
        "import torchvision\n"
        "from lucent_dsl.models import IMAGENET_MEAN, IMAGENET_STD, ModelInfo, with_info\n"
        "def build():\n"
        "    m = torchvision.models.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=4)\n"
        "    return with_info(m.eval(), ModelInfo(IMAGENET_MEAN, IMAGENET_STD, labels=('bg', 'cat', 'dog', 'plant')))\n")
    from lucent_dsl.models.specs import build_model

    spec = f"{factory}:build"
    model = build_model(spec)
    units = model_units(model, ["@output/out"], None, (64, 64))
    assert [u.label for u in units] == ["bg (0)", "cat (1)", "dog (2)", "plant (3)"]
    assert units[3].objective == f"masked(class_logit(3, layer='@output/out'), {CENTRAL_BOX})"
    done = explore(model, spec, ["@output/out"], tmp_path / "site", size=(64, 64), steps=3, progress=False)
    index = (tmp_path / "site" / "index.html").read_text()
    assert done["units"] == 4 and all(f"{name} (" in index for name in ("bg", "cat", "dog", "plant"))  # every class on the index
    with pytest.raises(InvalidArgumentError, match="no entry 'aux2'"):
        model_units(model, ["@output/aux2"], None, (64, 64))


def test_explore_after_a_model_change_reports_the_new_models_examples(tmp_path):
    """Issue 28.1 and 28.14: after explore's own advice (delete img/*.png), a rerun with changed weights redoes the
    dataset examples too; fewer photos than 2k give n // 2 per side with a warning, never one photo in both."""
    import copy

    from lucent_dsl.dataset_examples import Examples, StaleStateWarning, TooFewImagesWarning, dataset_examples

    images, site = mnist()[0][:5], tmp_path / "site"
    model = zoo_model("lenet5_mnist")
    kw = dict(channels="0:1", images=images, steps=2, batch=8, k=3, progress=False, sanity=False)
    with pytest.warns(TooFewImagesWarning, match="only 5 images"):
        explore(model, "lenet5_mnist", ["conv2"], site, **kw)
    first = Examples.from_json((site / "examples.json").read_text())
    assert all(not {e.index for e in u.top} & {e.index for e in u.bottom} for u in first.units)
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.conv2.weight.neg_()
    with pytest.raises(InvalidArgumentError, match="other weights"):
        explore(changed, "lenet5_mnist", ["conv2"], site, **kw)
    for png in (site / "img").glob("*.png"):
        if ".div" not in png.name:  # the channel images only: a diversity set of the old weights is refused too
            png.unlink()
    with pytest.raises(InvalidArgumentError, match="div0.png' was rendered from other weights"):
        explore(changed, "lenet5_mnist", ["conv2"], site, **kw)
    for png in (site / "img").glob("*.png"):
        png.unlink()
    with pytest.warns(StaleStateWarning, match="the model"), pytest.warns(TooFewImagesWarning):
        explore(changed, "lenet5_mnist", ["conv2"], site, **kw)
    with pytest.warns(TooFewImagesWarning):
        want = dataset_examples(["channel('conv2', 0)"], changed, images, k=3, progress=False)
    assert Examples.from_json((site / "examples.json").read_text()) == want != first


def test_explore_renders_and_records_decay_power_and_precision(tmp_path, monkeypatch):
    """Issue 28.4: explore's --decay-power was dropped (its images drew 1/f while the flag said otherwise)."""
    site = tmp_path / "site"
    explore(zoo_model("lenet5_mnist"), "lenet5_mnist", ["conv2"], site, channels="0:1", steps=1, batch=8,
            progress=False, precision="fp32", decay_power=1.5)
    for name in ("conv2_0000.png", "conv2_0000.neg.png", "conv2_0000.div0.png"):
        recipe = Recipe.from_json(read_png_metadata(site / "img" / name)[RECIPE_KEY])
        assert (recipe.decay_power, recipe.precision) == (1.5, "fp32")
    assert "--decay-power 1.5" in (site / "u" / "conv2_0000.html").read_text()
    seen = {}
    monkeypatch.setattr("lucent_dsl.explore.site.explore", lambda *a, **kw: seen.update(kw) or {"rank": 1})
    parser = argparse.ArgumentParser()
    optim = argparse.ArgumentParser(add_help=False)
    optim.add_argument("--decay-power", type=float)
    optim.add_argument("--precision")
    command.add_parser(parser.add_subparsers(), [optim])
    args = parser.parse_args(["explore", "lenet5_mnist", "--layers", "conv2", "--out", str(site), "--decay-power",
                              "1.25", "--precision", "bf16"])
    assert args.run(args) == 0 and (seen["decay_power"], seen["precision"]) == (1.25, "bf16")


def _replays(site: Path, name: str, model, channels: int = 3) -> Recipe:
    """The recipe stored in SITE/img/NAME, after checking that it renders NAME's pixels again (a set: all four)."""
    recipe = Recipe.from_json(read_png_metadata(site / "img" / name)[RECIPE_KEY])
    again = recipe.run(model, progress=False).images
    files = [name] if recipe.batch == 1 else [name.replace(".div0.", f".div{i}.") for i in range(recipe.batch)]
    stored = torch.cat([load_image(site / "img" / f, channels=channels) for f in files])
    assert (again - stored).abs().max() <= 2 / 255, name
    return recipe


def test_auto_picks_each_images_preset_and_every_image_replays_to_its_pixels(tmp_path):
    """On a BatchNorm CNN, "auto" gives a channel "lucid" and a class at "@output" "robust_ensemble" (two colour-
    shifted copies a step, so those images render one at a time). Each PNG's recipe names the preset that ran and
    renders its pixels again; the pages say the preset per layer and put it in every command."""
    from lucent_dsl.renderer.presets import auto_preset

    model, site = zoo_model("mobilenet_v2"), tmp_path / "site"
    explore(model, "mobilenet_v2", ["features.2", "@output"], site, channels="0:1", size=(64, 64), steps=3, batch=8,
            progress=False)
    presets = {}
    for png in sorted((site / "img").glob("*_0000*.png")):  # (not the atlas grids)
        recipe = Recipe.from_json(read_png_metadata(png)[RECIPE_KEY])
        assert recipe.preset == auto_preset(model, (64, 64), recipe.objective), png.name
        presets[png.name.split("_0000")[0]] = recipe.preset
    assert presets == {"features.2": "lucid", "_output": "robust_ensemble"}
    for name in ("features.2_0000.png", "_output_0000.png", "_output_0000.neg.png", "_output_0000.div0.png"):
        _replays(site, name, model)
    index, unit = (site / "index.html").read_text(), (site / "u" / "_output_0000.html").read_text()
    assert "lucid (features.2), robust_ensemble (@output)" in index and "--preset robust_ensemble" in unit


@pytest.mark.parametrize("preset", ["plugin", "deepinversion"])
def test_a_named_preset_with_copies_or_priors_runs_as_each_image_records(tmp_path, preset):
    """A site once rendered every image as "lucid" with the preset's lr, param and transforms, and recorded the
    preset: a replay of those PNGs differed by up to 0.21 (copies, schedule, betas and prior terms never ran)."""
    model, site = zoo_model("lenet5_mnist"), tmp_path / "site"
    explore(model, "lenet5_mnist", ["conv2"], site, channels="0:2", steps=6, batch=8, progress=False, preset=preset,
            sanity=False)
    for name in ("conv2_0000.png", "conv2_0001.neg.png", "conv2_0001.div0.png"):
        assert _replays(site, name, model, channels=1).preset == preset


def test_a_sites_pictures_take_renders_default_steps(tmp_path, monkeypatch):
    """Issue 27: the site's pictures as good as the gallery's, which are `render`'s defaults (at 256 steps they
    reached 0.90x the channel activation and p 0.865 instead of 0.893: benchmarks/README.md)."""
    import inspect

    import lucent_dsl as ld

    default = inspect.signature(ld.render).parameters["steps"].default
    assert inspect.signature(explore).parameters["steps"].default == default
    seen = {}
    monkeypatch.setattr("lucent_dsl.explore.site.explore", lambda *a, **kw: seen.update(kw) or {"rank": 1})
    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers(), [argparse.ArgumentParser(add_help=False)])
    args = parser.parse_args(["explore", "lenet5_mnist", "--layers", "conv2", "--out", str(tmp_path / "site")])
    assert args.run(args) == 0 and seen["steps"] == default


def test_a_site_with_macos_parameterization_renders_and_replays(tmp_path):
    """`--param maco` (now a choice, as recipes name it) cannot share a batch (its init is not seeded per image):
    a batch of them once failed in `seeded_param`; each renders alone and replays to its pixels."""
    model, site = zoo_model("mobilenet_v2"), tmp_path / "site"
    explore(model, "mobilenet_v2", ["features.2"], site, channels="0:2", size=(64, 64), steps=2, batch=8,
            progress=False, param="maco", sanity=False)
    for name in ("features.2_0000.png", "features.2_0001.neg.png", "features.2_0000.div0.png"):
        assert _replays(site, name, model).param == "maco"
