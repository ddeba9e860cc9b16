"""The BatchNorm-statistics prior (`objectives.batchnorm`) computes DeepInversion's regularizer on the BatchNorms'
inputs, read through a compiled plan whose BatchNorms are folded into their convolutions."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

import lucent_dsl as ld
from lucent_dsl.errors import InvalidArgumentError
from lucent_dsl.objectives.batchnorm import batchnorm_prior


def _scores(plan, images, n):
    with torch.no_grad():
        return plan.scores(plan.forward(images), n)


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5), nn.ReLU(), nn.Conv2d(5, 6, 3, bias=False),
                        nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 4, 1))
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):  # trained-looking statistics and affine maps, weights away from zero
            m.running_mean.normal_()
            m.running_var.uniform_(0.2, 3.0)
            m.weight.data = torch.empty_like(m.weight).uniform_(0.5, 2.0) * torch.sign(torch.randn_like(m.weight))
            m.bias.data.normal_()
    return net.eval()


def deepinversion(net: nn.Module, x: torch.Tensor, first: float) -> float:
    """NVlabs/DeepInversion's DeepInversionFeatureHook, summed with the first layer weighted by `first`."""
    r: list[torch.Tensor] = []

    def hook(module, inputs, output):
        a = inputs[0]
        c = a.shape[1]
        mean = a.mean([0, 2, 3])
        var = a.permute(1, 0, 2, 3).contiguous().view([c, -1]).var(1, unbiased=False)
        r.append(torch.norm(module.running_var - var, 2) + torch.norm(module.running_mean - mean, 2))

    hooks = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in hooks:
            h.remove()
    return float(first * r[0] + sum(r[1:]))


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**16), first=st.sampled_from([1.0, 10.0]), fuse=st.booleans(), side=st.integers(8, 20))
def test_the_prior_is_deepinversions_regularizer_on_the_batchnorm_inputs(seed, first, fuse, side):
    net = _net(seed)
    x = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(seed))
    plan = ld.compile_plan(batchnorm_prior(net, first=first), net, fuse=fuse)
    got = float(_scores(plan, x, 1).total)
    assert got == pytest.approx(deepinversion(net, x, first), rel=1e-4, abs=1e-4)


def test_each_image_is_scored_on_its_own_statistics():
    net = _net(0)
    x = torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    plan = ld.compile_plan(batchnorm_prior(net), net)
    rows = _scores(plan, x, 3).per_image
    alone = [float(_scores(plan, x[i:i + 1], 1).total) for i in range(3)]
    assert rows.tolist() == pytest.approx(alone, rel=1e-5)


def test_a_batched_render_gives_each_image_its_own_prior():
    net = _net(0)
    prior = batchnorm_prior(net)
    r = ld.render([ld.channel("6", c) - 0.05 * prior for c in range(2)], net, size=12, steps=2, progress=False)
    assert r.images.shape[0] == 2
    plan = ld.compile_plan(ld.batched([prior, prior]), net)
    x = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(_scores(plan, x, 2).per_image, _scores(ld.compile_plan(prior, net), x, 2).per_image)


def test_subtracting_the_prior_brings_a_render_closer_to_the_running_statistics():
    net = _net(3)
    prior = batchnorm_prior(net)
    base = ld.render(ld.channel("6", 0), net, size=16, steps=24, progress=False, seed=0)
    with_prior = ld.render(ld.channel("6", 0) - 0.05 * prior, net, size=16, steps=24, progress=False, seed=0)
    plan = ld.compile_plan(prior, net)

    def distance(images):
        return float(_scores(plan, images, 1).total)

    assert distance(with_prior.images) < distance(base.images)
    assert with_prior.recipe is None and any("batchnorm_prior" in why for why in with_prior.unreplayable)


def test_the_prior_refuses_models_it_cannot_read():
    with pytest.raises(InvalidArgumentError, match="no BatchNorm2d"):
        batchnorm_prior(nn.Sequential(nn.Conv2d(3, 4, 3)))
    net = _net(0)
    net[1].weight.data[2] = 0.0
    with pytest.raises(InvalidArgumentError, match="zero weight"):
        batchnorm_prior(net)
    with pytest.raises(InvalidArgumentError, match="nn.Module"):
        batchnorm_prior("mobilenet_v2")  # type: ignore[arg-type]
