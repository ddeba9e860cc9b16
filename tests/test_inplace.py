"""In-place safety and one semantics on every runner.

- What a term reads is what the module returned at that moment, even when later ops write to it in place
  (`ReLU(inplace=True)`, `x.mul_()`, `out += x` in a residual, an in-place op behind a view or an Identity), for
  every runner; the model keeps its in-place ops and no hook outlives a call.
- A module called several times is read at its last call by fx and by hooks alike.
- Hooks on the model itself and an instance-level `forward` are honoured ("auto" runs hooks) or refused ("fx").
"""
from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import Tensor, nn

import lucent_dsl as ld
from lucent_dsl.dsl.expr import OUTPUT, Site
from lucent_dsl.errors import InvalidArgumentError

RUNNERS = (("auto", True), ("fx", True), ("fx", False), ("hooks", True))
C = 4


class MulInPlace(nn.Module):
    """A custom module that writes to its input and returns it (opaque to the fx graph when it is a leaf)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mul_(0.5)


class Residual(nn.Module):
    """torchvision's BasicBlock pattern: `out += identity`."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(C, C, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        out += x
        return out


def _bn() -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(C)
    with torch.no_grad():
        bn.running_mean.normal_(0, 0.5)
        bn.running_var.uniform_(0.5, 2)
    return bn


OPS = {
    "conv": lambda: nn.Conv2d(C, C, 3, padding=1), "bn": _bn, "relu_": lambda: nn.ReLU(inplace=True),
    "relu6_": lambda: nn.ReLU6(inplace=True), "mul_": MulInPlace, "residual": Residual, "identity": nn.Identity,
    "add_": None, "view_relu_": None, "sigmoid": nn.Sigmoid,
}


class Net(nn.Module):
    """The ops in order; "add_" and "view_relu_" are functional in-place ops in this forward, not modules."""

    def __init__(self, ops: list[str], seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.ops = ops
        self.stem = nn.Conv2d(3, C, 3, padding=1)
        self.body = nn.ModuleDict({f"m{i}": OPS[op]() for i, op in enumerate(ops) if OPS[op] is not None})

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem(x)
        for i, op in enumerate(self.ops):
            if op == "add_":
                h.add_(0.25)
            elif op == "view_relu_":
                h.view(h.shape[0], -1).relu_()  # writes to h through a view
            else:
                h = self.body[f"m{i}"](h)
        return h.mean((2, 3))


def reference(model: nn.Module, x: Tensor, layers: list[str]) -> dict[str, Tensor]:
    """The value each module returned at its last call, cloned at that moment (a plain hook, then a clone)."""
    seen: dict[str, Tensor] = {}
    handles = [model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o.clone()))
               for n in layers if n != OUTPUT]
    try:
        with torch.no_grad():
            out = model(x.clone())
    finally:
        for h in handles:
            h.remove()
    return {**seen, OUTPUT: out}


def flags(model: nn.Module) -> list:
    return [getattr(m, "inplace", None) for m in model.modules()]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(sorted(OPS)), min_size=2, max_size=7), st.data())
def test_reads_are_what_each_module_returned_whatever_runs_after(ops, data):
    model = Net(ops, data.draw(st.integers(0, 99))).eval()
    modules = ["stem"] + [f"body.m{i}" for i, op in enumerate(ops) if OPS[op] is not None]
    layers = data.draw(st.lists(st.sampled_from(modules + [OUTPUT]), min_size=1, max_size=3, unique=True))
    x = torch.randn(2, 3, 6, 5, generator=torch.Generator().manual_seed(0))
    expected = reference(model, x, layers)
    before = flags(model)
    objective = ld.sum_of([ld.channel(layer, 0) for layer in layers])
    for truncate, fuse in RUNNERS:
        plan = ld.compile_plan(objective, model, truncate=truncate, fuse=fuse)
        with torch.no_grad():
            acts = plan.forward(x.clone())
        for layer in layers:
            torch.testing.assert_close(acts[Site("model", layer)], expected[layer], rtol=1e-5, atol=1e-5,
                                       msg=lambda m, layer=layer, t=truncate, f=fuse: f"{layer} ({t}, fuse={f}): {m}")
        assert flags(model) == before and not any(m._forward_hooks for m in model.modules())


def test_stock_resnet18_reads_the_batchnorm_not_the_relu_after_it():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    assert model.relu.inplace and model.layer1[0].relu.inplace  # as torchvision builds it
    x = torch.rand(1, 3, 64, 64)
    ref = reference(model, ld.info_of(model).preprocess(x), ["layer1.0.bn1", "layer1.0.bn2"])  # ImageNet-normalized
    e = ld.channel("layer1.0.bn1", 3) + ld.channel("layer1.0.bn2", 3) + ld.channel("layer2", 0)
    for truncate, fuse in RUNNERS:
        plan = ld.compile_plan(e, model, truncate=truncate, fuse=fuse)
        with torch.no_grad():
            acts = plan.forward(x)
        for layer in ("layer1.0.bn1", "layer1.0.bn2"):
            a = acts[Site("model", layer)]
            assert float(a.min()) < 0, f"{layer} ({truncate}): a ReLU ran over it"
            torch.testing.assert_close(a, ref[layer], rtol=1e-4, atol=1e-4)
    assert model.relu.inplace and model.layer1[0].relu.inplace  # the model is not changed


class Twice(nn.Module):
    """`shared` is called `k` times, with other work between the calls."""

    def __init__(self, k: int, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.k = k
        self.stem = nn.Conv2d(3, C, 3, padding=1)
        self.shared = nn.Conv2d(C, C, 3, padding=1)
        self.mix = nn.ModuleList(nn.Conv2d(C, C, 1) for _ in range(k))
        self.head = nn.Conv2d(C, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem(x)
        for i in range(self.k):
            h = torch.relu(self.mix[i](self.shared(h)))
        return self.head(h).mean((2, 3))


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 3), st.integers(0, 99), st.sampled_from((("shared",), ("shared", "stem"), ("shared", "mix.0"),
                                                               ("shared", OUTPUT))))
def test_runners_agree_on_modules_called_several_times(k, seed, layers):
    model = Twice(k, seed).eval()
    x = torch.rand(1, 3, 7, 6)
    expected = reference(model, x, list(layers))  # the hook keeps the last call
    objective = ld.sum_of([ld.channel(layer, 0) for layer in layers])
    for truncate, fuse in RUNNERS:
        plan = ld.compile_plan(objective, model, truncate=truncate, fuse=fuse)
        for _ in range(2):  # the hooks runner counts the calls on its first forward and stops early afterwards
            with torch.no_grad():
                acts = plan.forward(x)
            for layer in layers:
                torch.testing.assert_close(acts[Site("model", layer)], expected[layer], rtol=1e-5, atol=1e-5)


def _conv_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, C, 3, padding=1), nn.Tanh(), nn.Conv2d(C, C, 3, padding=1), nn.Tanh()).eval()


def _root_forward_hook(model):
    return model.register_forward_hook(lambda m, i, o: o * 3)


def _root_pre_hook(model):
    return model.register_forward_pre_hook(lambda m, args: (args[0].flip(-1),))


def _instance_forward(model):
    original = model.forward
    model.forward = lambda x: original(x.flip(-2))
    return None


@pytest.mark.parametrize("install", [_root_forward_hook, _root_pre_hook, _instance_forward])
@pytest.mark.parametrize("layer", ["2", OUTPUT])
def test_root_hooks_and_instance_forwards_are_honoured_or_refused(install, layer):
    model = _conv_net()
    install(model)
    x = torch.rand(1, 3, 8, 9)
    expected = reference(model, x, [layer])[layer]
    auto = ld.compile_plan(ld.channel(layer, 0), model)
    assert auto.runners["model"].describe().startswith("hooks")
    torch.testing.assert_close(auto.forward(x)[Site("model", layer)], expected)
    with pytest.raises(InvalidArgumentError, match="truncate='fx' cannot honour"):
        ld.compile_plan(ld.channel(layer, 0), model, truncate="fx")


def test_hooks_on_submodules_fire_under_fx_and_a_hooked_ancestor_means_hooks():
    model = _conv_net()
    model[1].register_forward_hook(lambda m, i, o: o * 2)  # a leaf before the read site: fx calls it for real
    x = torch.rand(1, 3, 8, 9)
    plan = ld.compile_plan(ld.channel("2", 0), model, truncate="fx")
    torch.testing.assert_close(plan.forward(x)[Site("model", "2")], reference(model, x, ["2"])["2"])
    outer = nn.Sequential(copy.deepcopy(model)).eval()
    outer[0].register_forward_hook(lambda m, i, o: o + 1)  # hooks on a module that contains the read site
    assert ld.compile_plan(ld.channel("0.2", 0), outer).runners["model"].describe().startswith("hooks")
    with pytest.raises(InvalidArgumentError, match="contains the needed"):
        ld.compile_plan(ld.channel("0.2", 0), outer, truncate="fx")
