"""The README gallery replays: each panel PNG carries one ordinary recipe that renders its images again."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from lucent_dsl import zoo
from lucent_dsl.io.files import RECIPE_KEY, read_metadata
from lucent_dsl.replay import Recipe

ROOT = Path(__file__).resolve().parents[1]
GALLERY = ROOT / "docs" / "gallery"


def _example():
    spec = importlib.util.spec_from_file_location("gallery_example", ROOT / "examples" / "gallery.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("panel", ["mobilenet_v2_classes", "efficientnet_lite0"])
def test_a_gallery_panel_replays_from_its_recipe(panel, tmp_path):
    gallery = _example()
    chosen = next(p for p in gallery.PANELS if p.name == panel)
    if not zoo.installed(chosen.model):
        pytest.skip(f"{chosen.model} weights are not installed (python -m lucent_dsl.zoo install)")
    model = zoo.load(chosen.model)
    result = gallery.render_panel(chosen, model, steps=2, size=64, seed=3, decay_power=chosen.decay_power, cache=None)
    assert result.recipe is not None, result.unreplayable
    assert result.recipe.transforms == "robust_fit" and result.recipe.preset == "robust_ensemble"  # auto, BN CNN
    assert result.recipe.decay_power == chosen.decay_power and result.recipe.batch == len(result.images)
    path = gallery.make_panel(chosen, steps=2, size=64, tile=24, seed=3, decay_power=chosen.decay_power, out=tmp_path)
    meta = read_metadata(path)
    recipe = Recipe.from_json(meta[RECIPE_KEY])
    assert recipe == result.recipe and json.loads(meta[gallery.GALLERY_KEY])["panel"] == panel
    assert torch.equal(recipe.run(progress=False).images, result.images)


@pytest.mark.parametrize("png", sorted(p.name for p in GALLERY.glob("*.png") if not p.name.startswith(("toolbox_",))))
def test_every_shipped_gallery_png_carries_a_recipe_in_the_one_schema(png):
    recipe = Recipe.load(GALLERY / png)  # the CLI's reader: unknown keys or another schema would fail here
    assert recipe.command == "render" and recipe.batch > 1 and recipe.steps == 512
