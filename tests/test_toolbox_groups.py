"""Neuron groups: NMF laws on planted factors, refusals, and the groups of MobileNetV2 on a scikit-image photo."""
from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings, strategies as st
from models import zoo_model

from lucent_dsl.errors import InvalidArgumentError
from lucent_dsl.io.files import read_png_metadata
from lucent_dsl.toolbox import direction_scores, factorize, neuron_groups

LAYER = "features.10.conv.1"  # MobileNetV2's depthwise conv of block 10: ReLU6, so non-negative
# Measured (chelsea at 160 px, k=4, 32 steps at 96 px): NMF error 0.61; every group's render drove its own
# direction more than any other group's render did (margins 0.09-0.47) and more than it drove the other directions.
MAX_NMF_ERROR = 0.75


@settings(max_examples=15)
@given(k=st.integers(1, 3), c=st.integers(4, 9), p=st.integers(6, 20), seed=st.integers(0, 2**16))
def test_planted_non_negative_factors_are_recovered(k, c, p, seed):
    g = torch.Generator().manual_seed(seed)
    maps = torch.rand(k, p, generator=g)
    dirs = torch.rand(k, c, generator=g) + 0.1
    acts = dirs.T @ maps  # (C, P): exactly rank k and non-negative
    d, m, err = factorize(acts, k, seed=0)
    assert err < 0.05
    assert torch.allclose(d.norm(dim=1), torch.ones(k), atol=1e-5)
    assert bool((m >= 0).all()) and bool((d >= 0).all())
    assert torch.allclose(d.T @ m, acts, atol=0.1 * float(acts.abs().max()))
    shares = m.sum(1)
    assert bool((shares[:-1] >= shares[1:]).all())  # largest group first


def test_negative_activations_are_refused_or_split():
    acts = torch.randn(5, 4, 4, generator=torch.Generator().manual_seed(0))
    with pytest.raises(InvalidArgumentError, match="non-negative.*features.N.conv"):
        factorize(acts, 2)
    d, m, err = factorize(acts, 3, negative="split")
    assert d.shape == (3, 5) and bool((d < 0).any()) and m.shape == (3, 4, 4)
    with pytest.raises(InvalidArgumentError, match="only 5 channels"):
        factorize(acts.abs(), 6)


@pytest.fixture(scope="module")
def chelsea_groups():
    data = pytest.importorskip("skimage.data")
    photo = torch.from_numpy(data.chelsea()).permute(2, 0, 1).float() / 255
    model = zoo_model("mobilenet_v2")
    return model, neuron_groups(model, photo, LAYER, 4, size=160, render_size=96, steps=32, progress=False)


def test_mobilenet_groups_of_a_photo(chelsea_groups):
    model, g = chelsea_groups
    assert g.image.shape == (1, 3, 160, 160) and g.maps.shape == (4, 10, 10) and g.renders.shape == (4, 3, 96, 96)
    assert g.error < MAX_NMF_ERROR
    assert abs(float(g.shares.sum()) - 1) < 1e-5
    # the maps are where the groups are: the image's own activations, projected, follow each map
    own = direction_scores(model, g.image, LAYER, g.directions)[0]
    assert bool((own > 0).all())
    scores = direction_scores(model, g.renders, LAYER, g.directions)  # (render, group)
    for i in range(4):
        others = [float(scores[j, i]) for j in range(4) if j != i]
        assert float(scores[i, i]) > max(others), f"group {i}: its render {float(scores[i, i]):.3f}, others {others}"
        assert int(scores[i].argmax()) == i, f"render {i} drives {scores[i].tolist()}"


def test_groups_figure_and_manifest(chelsea_groups, tmp_path):
    _, g = chelsea_groups
    g.save(tmp_path / "groups.png", spec="mobilenet_v2")
    manifest = json.loads(read_png_metadata(tmp_path / "groups.png")["lucent_dsl.groups"])
    assert manifest["layer"] == LAYER and len(manifest["groups"]) == 4
    assert manifest["groups"][0]["recipe"]["objective"].startswith(f"direction('{LAYER}'")
    overlays = g.overlays()
    assert overlays.shape == (4, 3, 160, 160) and float(overlays.max()) <= float(g.image.max()) + 1e-6


def test_groups_of_tokens_lie_on_the_patch_grid():
    from models import TinyViT

    vit = TinyViT()  # 17 tokens: CLS + a 4 x 4 grid; LayerNorm'd residuals go negative
    with pytest.raises(InvalidArgumentError, match="negative"):
        neuron_groups(vit, torch.rand(1, 3, 16, 16), "blocks.1", 2, steps=1, progress=False)
    g = neuron_groups(vit, torch.rand(1, 3, 16, 16), "blocks.1", 2, negative="split", steps=2, progress=False)
    assert g.maps.shape == (2, 4, 4) and g.renders.shape == (2, 3, 16, 16) and g.overlays().shape == (2, 3, 16, 16)
