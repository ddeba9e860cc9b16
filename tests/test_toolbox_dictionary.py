"""Dictionaries of directions: loading (tensor, .pt, .npy, .safetensors), orientation, token layouts, and an NMF
dictionary of MobileNetV2 on the photos that ship with scikit-image and matplotlib, whose atoms render specifically."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from models import TinyViT, zoo_model
from PIL import Image

import lucent_dsl as ld
from lucent_dsl.dsl.expr import Site
from lucent_dsl.errors import InvalidArgumentError, ObjectiveShapeError
from lucent_dsl.io.files import RECIPE_KEY, read_png_metadata
from lucent_dsl.replay import Recipe
from lucent_dsl.toolbox import (
    direction_scores,
    load_dictionary,
    nmf_dictionary,
    orient,
    render_dictionary,
    top_examples,
)
from lucent_dsl.toolbox.inversion import activations

LAYER = "features.7.conv.0"  # MobileNetV2's expansion conv of block 7: ReLU6, non-negative
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")  # + stereo_motorcycle()[0] and grace_hopper: the shipped photos


def test_load_dictionary_from_every_kind_of_source(tmp_path):
    d = torch.randn(5, 7)
    torch.save(d, tmp_path / "plain.pt")
    torch.save({"W_dec": d, "b_dec": torch.zeros(7), "W_enc": d.T.contiguous()}, tmp_path / "sae.pt")
    np.save(tmp_path / "atoms.npy", d.numpy())
    assert torch.equal(load_dictionary(tmp_path / "plain.pt"), d)
    assert torch.equal(load_dictionary(str(tmp_path / "sae.pt"), key="W_dec"), d)
    assert torch.equal(load_dictionary(tmp_path / "atoms.npy"), d)
    assert torch.equal(load_dictionary(d.numpy()), d)
    safetensors = pytest.importorskip("safetensors.torch")
    safetensors.save_file({"W_dec": d}, str(tmp_path / "sae.safetensors"))
    assert torch.equal(load_dictionary(tmp_path / "sae.safetensors"), d)  # the only 2-D entry
    with pytest.raises(InvalidArgumentError, match="key=.*W_dec.*W_enc"):
        load_dictionary(tmp_path / "sae.pt")
    with pytest.raises(InvalidArgumentError, match="does not exist"):
        load_dictionary(tmp_path / "nope.pt")
    with pytest.raises(InvalidArgumentError, match="2-D"):
        load_dictionary(torch.zeros(3))
    with pytest.raises(InvalidArgumentError, match="NaN"):
        load_dictionary(torch.tensor([[1.0, float("nan")]]))


def test_orientation_is_checked_not_guessed():
    d = torch.randn(8, 5)  # an nn.Linear decoder's weight: (C=8, K=5)
    assert orient(d, 8, "columns").shape == (5, 8)
    with pytest.raises(ObjectiveShapeError, match="atoms='columns'"):
        orient(d, 8)
    with pytest.raises(ObjectiveShapeError, match="has 3 channels"):
        orient(d, 3)


def test_token_layouts_render_each_atom():
    vit = TinyViT()
    atoms = torch.eye(8)[:3] * 2
    r = render_dictionary(vit, "blocks.1", atoms, size=16, steps=24, transforms="none", progress=False)
    assert r.images.shape == (3, 3, 16, 16) and r.indices == (0, 1, 2)
    assert all(t.startswith("direction('blocks.1'") for t in r.objectives)
    scores = direction_scores(vit, r.images, "blocks.1", atoms)  # (render, atom)
    assert (scores.argmax(0) == torch.arange(3)).all(), scores  # each atom is driven most by its own render
    one = render_dictionary(vit, "blocks.1", atoms, indices=[2], size=16, steps=24, transforms="none", progress=False)
    torch.testing.assert_close(one.images[0], r.images[2], atol=2e-3, rtol=0)  # an atom's image ignores its batch
    with pytest.raises(InvalidArgumentError, match="atom indices"):
        render_dictionary(vit, "blocks.1", atoms, indices=[3], size=16, steps=1, progress=False)


def _photos(size: int) -> torch.Tensor:
    data = pytest.importorskip("skimage.data")
    cbook = pytest.importorskip("matplotlib.cbook")
    arrays = [getattr(data, name)() for name in PHOTOS] + [data.stereo_motorcycle()[0]]
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        arrays.append(np.asarray(Image.open(f).convert("RGB")))
    out = []
    for a in arrays:
        im = Image.fromarray(a).convert("RGB")
        side = min(im.size)
        im = im.crop(((im.width - side) // 2, (im.height - side) // 2, (im.width + side) // 2, (im.height + side) // 2))
        out.append(torch.from_numpy(np.array(im.resize((size, size), Image.BICUBIC))).permute(2, 0, 1).float() / 255)
    return torch.stack(out)


@pytest.fixture(scope="module")
def photo_atoms():
    model = zoo_model("mobilenet_v2")
    photos = _photos(128)
    atoms = nmf_dictionary(model, photos, LAYER, 4, seed=0)
    r = render_dictionary(model, LAYER, atoms, size=96, steps=32, examples=photos, k=2, progress=False)
    return model, photos, atoms, r


def test_nmf_atoms_of_the_shipped_photos_render_specifically(photo_atoms):
    model, _, atoms, r = photo_atoms
    assert atoms.shape == (4, 192) and bool((atoms >= 0).all())
    scores = direction_scores(model, r.images, LAYER, atoms)  # (render, atom)
    for i in range(4):
        others = [round(float(scores[i, j]), 3) for j in range(4) if j != i]
        assert float(scores[i, i]) > max(others), f"atom {i}'s render: own {float(scores[i, i]):.3f}, others {others}"


def test_atoms_carry_recipes_and_their_dataset_examples(photo_atoms, tmp_path):
    model, photos, atoms, r = photo_atoms
    assert r.examples is not None and all(len(e) == 2 for e in r.examples)
    acts = {Site(None, LAYER): activations(model, photos, [LAYER])[LAYER]}
    best = [int(ld.evaluate(ld.parse(text), acts, len(photos)).argmax()) for text in r.objectives]
    assert [e[0] for e in r.examples] == best  # the top example is the photo that scores highest on the objective
    plain = top_examples(model, LAYER, atoms, photos, k=2)  # without objectives: unit-vector dot products
    assert [e[0] for e in plain] == direction_scores(model, photos, LAYER, atoms).argmax(0).tolist()
    r.save(tmp_path, spec="mobilenet_v2")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [a["atom"] for a in manifest["atoms"]] == [0, 1, 2, 3]
    recipe = Recipe.from_json(read_png_metadata(tmp_path / "atom_00002.png")[RECIPE_KEY])
    assert recipe.objective == r.objectives[2] and recipe.models == ("mobilenet_v2",) and recipe.size == (96, 96)
