"""BatchNorm folding and channels-last (`lucent_dsl.plan.fold`): same activations and input gradients as the model's own modules."""
from __future__ import annotations

import copy

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings
from torch import nn

import lucent_dsl as ld
from lucent_dsl.plan import fold
from lucent_dsl.plan.compiler import compile_plan
from lucent_dsl.plan.fold import frozen_models


def _bn(channels: int, affine: bool, gen: torch.Generator) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels, affine=affine, eps=1e-3)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(channels, generator=gen))
        bn.running_var.copy_(torch.rand(channels, generator=gen) * 3 + 0.05)
        if affine:
            bn.weight.copy_(torch.randn(channels, generator=gen))
            bn.bias.copy_(torch.randn(channels, generator=gen))
    return bn


@st.composite
def conv_bn_nets(draw):
    """Small eval-mode nets of Conv2d -> BatchNorm2d -> activation blocks with random hyperparameters."""
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    layers, c = [], 3
    for _ in range(draw(st.integers(1, 3))):
        groups = draw(st.sampled_from([1, c]))  # plain or depthwise
        out = c * draw(st.integers(1, 2)) if groups == c else draw(st.integers(1, 6))
        kernel = draw(st.sampled_from([1, 3]))
        conv = nn.Conv2d(c, out, kernel, stride=draw(st.integers(1, 2)),
                         padding=draw(st.integers(0, 1)) if kernel == 1 else 1, groups=groups, bias=draw(st.booleans()),
                         padding_mode=draw(st.sampled_from(["zeros", "reflect"])))
        with torch.no_grad():
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen))
        layers += [conv, _bn(out, draw(st.booleans()), gen), draw(st.sampled_from([nn.ReLU(), nn.ReLU6(), nn.Identity()]))]
        c = out
    return nn.Sequential(*layers).eval()


def _forward_and_grad(plan, x):
    x = x.clone().requires_grad_(True)
    acts = plan.forward(x)
    total = sum((a * torch.linspace(-1, 1, a.numel()).reshape(a.shape)).sum() for a in acts.values())
    total.backward()
    return acts, x.grad


@settings(max_examples=25)
@given(net=conv_bn_nets(), seed=st.integers(0, 1000), read=st.sampled_from(["conv", "bn", "act", "all"]))
def test_folded_plan_gives_the_same_activations_and_input_gradient(net, seed, read):
    last = len(net) - 1
    paths = {"conv": [str(last - 2)], "bn": [str(last - 1)], "act": [str(last)],
             "all": [str(i) for i in range(len(net))]}[read]
    objective = sum((ld.channel(p, 0) for p in paths[1:]), ld.channel(paths[0], 0))
    fused, plain = compile_plan(objective, net, fuse=True), compile_plan(objective, net, fuse=False)
    unread_pairs = sum(1 for i in range(0, len(net), 3) if str(i) not in paths)
    assert fused.runners["model"].folded == unread_pairs  # every pair whose convolution is not read
    x = torch.rand(2, 3, 13, 10, generator=torch.Generator().manual_seed(seed))
    a_fused, g_fused = _forward_and_grad(fused, x)
    a_plain, g_plain = _forward_and_grad(plain, x)
    assert a_fused.keys() == a_plain.keys()
    for site in a_plain:
        torch.testing.assert_close(a_fused[site], a_plain[site], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(g_fused, g_plain, rtol=1e-4, atol=1e-4)


def _net() -> nn.Sequential:
    torch.manual_seed(0)  # the convolutions' own init uses the global generator
    gen = torch.Generator().manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), _bn(4, True, gen), nn.ReLU(), nn.Conv2d(4, 4, 1), _bn(4, True, gen)).eval()


def test_a_read_convolution_is_not_folded_away():
    plan = compile_plan(ld.channel("0", 1) + ld.channel("4", 0), _net())
    assert "1 BatchNorms folded" in str(plan)  # the second pair only: conv 0's own output is read


@pytest.mark.parametrize("edit", ["no_grad", "data", "replace", "load_state_dict"])
def test_weights_edited_after_compiling_are_seen(edit):
    net = _net()
    plan = compile_plan(ld.channel("4", 1), net)
    x = torch.rand(1, 3, 8, 8)
    plan.forward(x)  # folds once
    with torch.no_grad():
        if edit == "no_grad":
            net[1].running_var.mul_(4)
        elif edit == "data":
            net[1].running_var.data.mul_(4)  # bypasses the version counter
        elif edit == "replace":
            net[0].weight.data = net[0].weight.data * 2
        else:
            other = copy.deepcopy(net)
            other[4].bias.add_(1)
            net.load_state_dict(other.state_dict())
    expected = compile_plan(ld.channel("4", 1), net, fuse=False).forward(x)
    torch.testing.assert_close(plan.forward(x), expected, rtol=1e-5, atol=1e-5)


def test_folded_weights_are_cached_only_while_frozen():
    net = _net()
    plan = compile_plan(ld.channel("4", 1), net)
    folded = [m for m in plan.runners["model"].fast.modules() if isinstance(m, fold.FoldedConvBN)]
    calls = []
    original = fold.FoldedConvBN.fold
    fold.FoldedConvBN.fold = lambda self: calls.append(1) or original(self)
    try:
        x = torch.rand(1, 3, 8, 8)
        plan.forward(x), plan.forward(x)
        assert len(calls) == 2 * len(folded)  # outside a render: every call
        calls.clear()
        with frozen_models([net]):
            plan.forward(x), plan.forward(x)
            assert all(m._folded is not None for m in folded)
        assert len(calls) == len(folded)  # inside: once
        assert all(m._folded is None for m in folded)  # the copies are dropped when the render ends
        calls.clear()
        with frozen_models([net]):
            plan.forward(x)
        assert len(calls) == len(folded)  # a new context does not reuse the old cache
    finally:
        fold.FoldedConvBN.fold = original


def test_hooks_and_training_mode_run_the_original_modules():
    net = _net()
    plan = compile_plan(ld.channel("4", 1), net)
    seen = []
    handle = net[1].register_forward_hook(lambda m, i, o: seen.append(o))
    x = torch.rand(2, 3, 8, 8)
    plan.forward(x)
    handle.remove()
    assert len(seen) == 1
    net.train()  # batch statistics, and running stats updated, exactly as the model's own modules do
    twin = copy.deepcopy(net)
    out = plan.forward(x)
    torch.testing.assert_close(out, compile_plan(ld.channel("4", 1), twin, fuse=False).forward(x))
    torch.testing.assert_close(net[1].running_mean, twin[1].running_mean)
    assert not torch.equal(net[1].running_mean, _net()[1].running_mean)


def test_render_with_folding_matches_the_unfolded_render_and_leaves_the_model_alone():
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    # SGD, not Adam: Adam's first steps are about lr * sign(gradient), so a rounding-level difference in a
    # near-zero gradient would move a pixel by lr; SGD keeps the two renders as close as their gradients.
    # (lr 200: the FFT parameterization's gradients are small; the images must visibly move.)
    kw = dict(size=12, progress=False, seed=5, transforms=[], optimizer=torch.optim.SGD, lr=200.0)
    obj = ld.channel("4", 1) - 0.01 * ld.total_variation()
    fused = ld.render(compile_plan(obj, net), steps=4, **kw)
    plain = ld.render(compile_plan(obj, net, fuse=False), steps=4, **kw)
    first = ld.render(compile_plan(obj, net), steps=1, **kw)
    assert float((fused.images - first.images).abs().max()) > 1e-3
    torch.testing.assert_close(fused.images, plain.images, rtol=1e-5, atol=1e-5)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(isinstance(m, fold.FoldedConvBN) for m in net.modules())


class SamePadConv(nn.Conv2d):
    """A convolution class of its own, as EfficientNet's: pads, then calls F.conv2d on its parameters."""

    def forward(self, x):
        x = nn.functional.pad(x, (1, 1, 1, 1))
        return nn.functional.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class BatchNormRelu(nn.BatchNorm2d):
    """A BatchNorm subclass that does more than normalize (timm's BatchNormAct2d): never folded."""

    def forward(self, x):
        return torch.relu(super().forward(x))


def test_functional_convolutions_are_folded_and_batchnorm_subclasses_are_not():
    gen = torch.Generator().manual_seed(1)
    bn_act = BatchNormRelu(4)
    bn_act.load_state_dict(_bn(4, True, gen).state_dict())
    net = nn.Sequential(SamePadConv(3, 4, 3, bias=False), _bn(4, True, gen), nn.Conv2d(4, 4, 1), bn_act).eval()
    plan = compile_plan(ld.channel("3", 2), net)
    assert plan.runners["model"].folded == 1
    x = torch.rand(2, 3, 9, 9)
    a_fused, g_fused = _forward_and_grad(plan, x)
    a_plain, g_plain = _forward_and_grad(compile_plan(ld.channel("3", 2), net, fuse=False), x)
    torch.testing.assert_close(a_fused, a_plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_fused, g_plain, rtol=1e-5, atol=1e-5)
    assert float(list(a_fused.values())[0].detach().min()) >= 0  # the subclass's ReLU ran


def test_a_hook_on_a_read_block_still_fires():
    class Block(nn.Module):  # a custom container: traced through unless it has hooks
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3), _bn(4, True, torch.Generator().manual_seed(2))

        def forward(self, x):
            return self.bn(self.conv(x)).relu()

    net = nn.Sequential(Block(), nn.Conv2d(4, 2, 1)).eval()
    seen = []
    net[0].register_forward_hook(lambda m, i, o: seen.append(o))
    plan = compile_plan(ld.channel("1", 0), net)
    plan.forward(torch.rand(1, 3, 8, 8))
    assert len(seen) == 1


def test_plans_built_differently_are_different_plans():
    # render's compiled-step cache keys on the plan: a folded plan must never reuse an unfolded one's step
    net, obj = _net(), ld.channel("4", 1)
    assert compile_plan(obj, net) == compile_plan(obj, net)
    assert compile_plan(obj, net) != compile_plan(obj, net, fuse=False)
    assert compile_plan(obj, net, truncate="fx") != compile_plan(obj, net, truncate="hooks")
