"""Ensembles: one objective over several models, each with its own preprocessing.

Contracts: only the models an objective reads ever run (and each only up to its deepest layer);
each model sees the image through its own `ModelInfo` (size, mean/std, channels); a weighted
sum of terms on different models scores exactly the weighted sum of the separate scores. The
quality test renders one class for MobileNetV2 + EfficientNet-Lite0 and checks both see it.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from models import zoo_model
from torch import Tensor

import lucent_dsl as ld
from lucent_dsl import render
from lucent_dsl.dsl.expr import Site


class Recorder(nn.Module):
    """conv -> relu -> conv -> pooled logits; keeps every input it was called with.

    The input is recorded by a hook on `conv1` (the first layer), not in `forward`: plans run a
    torch.fx trace of the model, so Python side effects in `forward` happen only while tracing.
    """

    def __init__(self, channels: int = 3, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(channels, 6, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 5, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.seen: list[Tensor] = []
        self.conv1.register_forward_pre_hook(lambda m, args: self.seen.append(args[0].detach().clone()))

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.conv2(self.relu(self.conv1(x)))).flatten(1)


class Exploding(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: Tensor) -> Tensor:
        raise AssertionError("a model the objective does not read was run")


class Tripwire(nn.Module):
    """`early` is needed; `late` must never run when only `early` is read."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.early = nn.Conv2d(3, 4, 3, padding=1)
        self.late = nn.Conv2d(4, 4, 3, padding=1)
        self.late.register_forward_pre_hook(self._trip)

    @staticmethod
    def _trip(module: nn.Module, args: tuple) -> None:
        raise AssertionError("the forward ran past the deepest needed layer")

    def forward(self, x: Tensor) -> Tensor:
        return self.late(self.early(x))


def test_only_the_models_read_are_run_and_each_only_as_far_as_needed():
    a, trip, boom = Recorder(), Tripwire(), Exploding()
    models = {"a": a, "trip": trip, "boom": boom}
    objective = ld.channel("conv2", 1, model="a") + 0.5 * ld.channel("early", 2, model="trip")
    plan = ld.compile_plan(objective, models)
    assert set(plan.models) == {"a", "trip"}  # "boom" is not even part of the plan
    r = render(objective, models, size=12, steps=3, transforms=[], progress=False)
    assert r.steps == 3 and len(a.seen) == 3  # one forward of `a` per step


def test_each_model_gets_its_own_preprocessing():
    small = ld.with_info(Recorder(seed=0), ld.ModelInfo(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5), input_size=(8, 6)))
    grey = ld.with_info(Recorder(channels=1, seed=1), ld.ModelInfo(input_size=(20, 24), channels=1))
    raw = Recorder(seed=2)  # no ModelInfo: the image as it is
    models = {"small": small, "grey": grey, "raw": raw}
    objective = (ld.channel("conv2", 0, model="small") + ld.channel("conv2", 1, model="grey")
                 + ld.channel("conv2", 2, model="raw"))
    plan = ld.compile_plan(objective, models)
    image = torch.rand(2, 3, 10, 14)
    plan.forward(image)
    expected_small = torch.nn.functional.interpolate(image, size=(8, 6), mode="bilinear", align_corners=False)
    expected_small = (expected_small - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / torch.tensor([0.2, 0.25, 0.5]).view(1, 3, 1, 1)
    expected_grey = torch.nn.functional.interpolate(image.mean(1, keepdim=True), size=(20, 24), mode="bilinear",
                                                    align_corners=False)
    torch.testing.assert_close(small.seen[-1], expected_small)
    torch.testing.assert_close(grey.seen[-1], expected_grey)
    assert torch.equal(raw.seen[-1], image)

    # and inside a render (after the random transforms): every model sees its own input shape
    render(objective, models, size=16, steps=2, progress=False, preset="lucid")  # "auto" would scale standard()
    assert small.seen[-1].shape == (1, 3, 8, 6)
    assert grey.seen[-1].shape == (1, 1, 20, 24)
    assert raw.seen[-1].shape == (1, 3, 16 + 24, 16 + 24)  # standard() pads 12 pixels a side


def test_weights_scale_each_models_contribution_exactly():
    a = ld.with_info(Recorder(seed=0), ld.ModelInfo(mean=(0.5,) * 3, std=(0.25,) * 3))
    b = ld.with_info(Recorder(seed=3), ld.ModelInfo(input_size=(9, 9)))
    models = {"a": a, "b": b}
    ta, tb = ld.channel("conv2", 1, model="a"), ld.neuron("conv1", 4, model="b")
    kw = dict(size=14, steps=4, seed=7, progress=False, lr=0.1)

    alone_a = render(ta, models, **kw).history[repr(ta)]
    alone_b = render(tb, models, **kw).history[repr(tb)]
    both = render(2.0 * ta - 0.5 * tb, models, **kw).history
    # step 1 scores the same initial image (same seed: same init, same transform draws)
    assert torch.equal(both["2.0 * " + repr(ta)][0], 2.0 * alone_a[0])
    assert torch.equal(both["-0.5 * " + repr(tb)][0], -0.5 * alone_b[0])

    # scores and gradients of the plan are exactly linear in the weights, on any image
    image = torch.rand(1, 3, 14, 14, requires_grad=True)
    plan_a, plan_b = ld.compile_plan(ta, models), ld.compile_plan(tb, models)
    plan = ld.compile_plan(0.3 * ta + 1.7 * tb, models)
    sa = plan_a.scores(plan_a.forward(image), 1).total
    sb = plan_b.scores(plan_b.forward(image), 1).total
    s = plan.scores(plan.forward(image), 1)
    torch.testing.assert_close(s.total, 0.3 * sa + 1.7 * sb)
    (ga,) = torch.autograd.grad(sa, image)
    (gb,) = torch.autograd.grad(sb, image)
    (g,) = torch.autograd.grad(s.total, image)
    torch.testing.assert_close(g, 0.3 * ga + 1.7 * gb)
    assert set(plan.forward(image)) == {Site("a", "conv2"), Site("b", "conv1")}


# ---- real weights ---------------------------------------------------------------------------------


@pytest.mark.quality
def test_a_class_rendered_on_an_ensemble_is_seen_by_both_models():
    mnet, eff = zoo_model("mobilenet_v2"), zoo_model("efficientnet_lite0")
    objective = ld.class_logit("flamingo", model="mnet") + ld.class_logit("flamingo", model="eff")
    # 32 steps at 224: ~35 s on one loaded CPU thread; both models are sure after ~16-24 steps with "lucid"'s light
    # transforms ("auto" picks robust_ensemble for class renders: p 0.52 for eff after 32 steps, made for 512)
    r = render(objective, {"mnet": mnet, "eff": eff}, size=224, steps=32, seed=0, progress=False, preset="lucid")
    flamingo = ld.info_of(mnet).labels.index("flamingo")
    with torch.no_grad():
        for model in (mnet, eff):
            p = model(ld.info_of(model).preprocess(r.images)).softmax(-1)[0]
            assert int(p.argmax()) == flamingo
            assert float(p[flamingo]) > 0.9  # measured 1.000 (mnet) and 0.9998 (eff)
