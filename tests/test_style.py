"""The `style` term (Gram-matrix match): laws, the algebra and DSL round trip, refusals, and texture synthesis
from a real photo on MobileNetV2 (the Gram distance must fall by a large factor)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings, strategies as st
from models import conv_net, zoo_model

import lucent_dsl as ld
from lucent_dsl.dsl.expr import Site
from lucent_dsl.dsl.printing import to_text
from lucent_dsl.errors import InvalidArgumentError, ObjectiveShapeError
from lucent_dsl.toolbox import gram, gram_distances, image_gram, style, style_transfer, texture

L = Site(None, "L")
LAYERS = ["features.2", "features.4", "features.7"]
# Measured (coffee photo at 128x170, 96 px texture, 96 steps from noise): the Gram distance fell 13x, 35x and 19x
# at features.2, .4 and .7.
MIN_FACTOR = 5.0


def acts_of(kind: str, seed: int, rows: int = 2, c: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = {"maps": (rows, c, 4, 5), "tokens": (rows, 7, c), "vectors": (rows, c)}[kind]
    return torch.randn(shape, generator=g, dtype=torch.float64)


def rows_of(a: torch.Tensor) -> torch.Tensor:
    return {4: lambda t: t.flatten(2), 3: lambda t: t.transpose(1, 2), 2: lambda t: t.unsqueeze(-1)}[a.dim()](a)


@settings(max_examples=30)
@given(kind=st.sampled_from(["maps", "tokens", "vectors"]), seed=st.integers(0, 2**16), k=st.floats(0.1, 10.0))
def test_style_is_zero_at_its_target_negative_elsewhere_and_scale_free(kind, seed, k):
    a = acts_of(kind, seed)
    target = gram(rows_of(a[:1])).mean(0)
    term = style("L", target + 1e-3 * torch.eye(3, dtype=torch.float64))  # a Gram matrix (PSD), not a's own
    exact = style("L", target)
    assert float(exact.score({L: a[:1]}, 1)[0]) == pytest.approx(0.0, abs=1e-5)
    s = term.score({L: a}, 2)
    assert s.shape == (2,) and bool((s <= 0).all())
    # relative: scaling the activations by k and the target by k^2 changes nothing
    scaled = style("L", (target + 1e-3 * torch.eye(3, dtype=torch.float64)) * k * k)
    torch.testing.assert_close(scaled.score({L: a * k}, 2), s, rtol=1e-4, atol=1e-6)


def test_style_averages_crops_and_respects_batch():
    a = acts_of("maps", 0, rows=4)  # 2 crops x 2 images, crop-major
    target = gram(rows_of(a[:1])).mean(0).float().double()  # the term stores float32
    per_row = -((gram(rows_of(a)) - target) ** 2).flatten(1).sum(1) / (target ** 2).sum()
    torch.testing.assert_close(style("L", target).score({L: a}, 2), per_row.view(2, 2).mean(0), rtol=1e-6, atol=1e-9)
    only = style("L", target, batch=1).score({L: a}, 2)
    assert float(only[0]) == 0.0 and float(only[1]) < 0


def test_style_joins_the_algebra_and_round_trips():
    net = conv_net()
    e = ld.channel("1", 0) + 0.5 * style("1", torch.rand(1, 3, 12, 12), net=net)
    assert ld.parse(to_text(e)) == e and ld.from_json(ld.to_json(e)) == e  # a Gram of random floats: past repr's 400
    r = ld.render(e, net, size=12, steps=3, progress=False)
    assert len(r.history) == 2 and r.images.shape == (1, 3, 12, 12)


def test_style_refusals():
    with pytest.raises(InvalidArgumentError, match="net=model"):
        style("1", torch.rand(1, 3, 8, 8))
    with pytest.raises(InvalidArgumentError, match="not a Gram matrix"):
        style("1", torch.rand(28, 28))  # a grey image is not silently read as a Gram matrix
    with pytest.raises(InvalidArgumentError, match="all zeros"):
        style("1", torch.zeros(3, 3))
    with pytest.raises(InvalidArgumentError, match=r"\(C, C\)"):
        style("1", torch.rand(3, 4))
    with pytest.raises(ObjectiveShapeError, match="3x3.*8 channels"):
        style("1", torch.eye(3)).score({Site(None, "1"): torch.rand(1, 8, 4, 4)}, 1)


def test_image_gram_matches_a_hand_computation():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    x = torch.rand(1, 3, 9, 7)
    with torch.no_grad():
        a = net(x)[0].flatten(1)
    torch.testing.assert_close(image_gram(net, x, "1"), a @ a.T / a.shape[1], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def coffee():
    data = pytest.importorskip("skimage.data")
    photo = torch.from_numpy(data.coffee()).permute(2, 0, 1).float()[None] / 255
    return torch.nn.functional.interpolate(photo, size=(128, 170), mode="bilinear", antialias=True)


def test_texture_synthesis_lowers_the_gram_distance_by_a_large_factor(coffee):
    model = zoo_model("mobilenet_v2")
    r = texture(model, coffee, LAYERS, size=96, steps=96, progress=False)
    start = ld.param.fft(96)
    noise = start.to_image(start.init(torch.Generator().manual_seed(0))).detach()  # the render's first image
    before, after = gram_distances(model, noise, coffee, LAYERS)[0], gram_distances(model, r.images, coffee, LAYERS)[0]
    factors = before / after
    assert bool((factors >= MIN_FACTOR).all()), f"distances {before.tolist()} -> {after.tolist()}"


def test_style_transfer_keeps_the_content_and_takes_the_style(coffee):
    data = pytest.importorskip("skimage.data")
    model = zoo_model("mobilenet_v2")
    cat = torch.from_numpy(data.chelsea()).permute(2, 0, 1).float()[None] / 255
    r = style_transfer(model, cat, coffee, LAYERS, size=96, steps=48, progress=False)
    content = torch.nn.functional.interpolate(cat, size=(96, 96), mode="bilinear", antialias=True)
    ours = gram_distances(model, r.images, coffee, LAYERS)[0]
    plain = gram_distances(model, content, coffee, LAYERS)[0]
    assert bool((ours < plain).all()), f"style distance {ours.tolist()} vs the untouched photo's {plain.tolist()}"
    assert float((r.images - content).abs().mean()) < 0.25  # still the cat, not a texture
    with pytest.raises(InvalidArgumentError, match="transforms"):
        style_transfer(model, cat, coffee, LAYERS, transforms=[])
