"""Two threads rendering one model at once: both renders are right and the model comes back exactly.

Before `fold.frozen_models` counted its holders, the second render saved the first's frozen state
and restored it last: the model stayed in eval mode with every parameter frozen, and BatchNorm
statistics moved while the first render's exit had put the model back in training mode under the
second. A barrier in a forward hook makes the two renders overlap; the longer one ends last.
"""
from __future__ import annotations

import threading
from typing import Any

import torch
from torch import Tensor, nn

import lucent_dsl as ld
from lucent_dsl.plan.fold import frozen_models


class BNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.drop = nn.Dropout(0.5)
        self.out = nn.Conv2d(6, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.drop(torch.relu(self.bn(self.conv(x)))))


def user_state(net: nn.Module) -> dict[str, Any]:
    return {"training": [m.training for m in net.modules()], "requires_grad": [p.requires_grad for p in net.parameters()],
            "tensors": {k: v.clone() for k, v in net.state_dict().items()}}


def assert_same(net: nn.Module, before: dict[str, Any]) -> None:
    after = user_state(net)
    assert after["training"] == before["training"] and after["requires_grad"] == before["requires_grad"]
    for k, v in before["tensors"].items():
        assert torch.equal(after["tensors"][k], v), k


def prepared() -> BNNet:
    net = BNNet().train()
    net.drop.eval()  # the user's own mix of modes and flags
    net.out.bias.requires_grad_(False)
    with torch.no_grad():
        net.bn.running_mean.uniform_(-1, 1)
    return net


def hooked(net: BNNet, hook: Any = lambda *_: None) -> BNNet:
    net.conv.register_forward_pre_hook(hook)  # a hooked conv is not folded with its BatchNorm: the same kernels
    return net


def test_two_threads_render_one_model_and_it_comes_back_exactly():
    """(torch.fx truncation: the hooks runner's capture hooks would also see the other thread's forwards.)"""
    kw = dict(size=12, transforms=[], progress=False)
    steps = {"short": 3, "long": 40}
    alone = {name: ld.render(ld.compile_plan(ld.channel("bn", 1), hooked(prepared())), steps=n, seed=i, **kw)
             for i, (name, n) in enumerate(steps.items())}

    net = prepared()
    before = user_state(net)
    barrier = threading.Barrier(2, timeout=60)
    local = threading.local()

    def meet(*_: Any) -> None:  # each render's first forward waits for the other's: they overlap
        if not getattr(local, "met", False):
            local.met = True
            barrier.wait()

    hooked(net, meet)
    before["training"] = [m.training for m in net.modules()]
    results: dict[str, Any] = {}
    errors: list[BaseException] = []
    # compiled here: torch.fx tracing patches nn.Module.__call__ process-wide, so two traces must not overlap
    plans = {name: ld.compile_plan(ld.channel("bn", 1), net) for name in steps}

    def work(name: str, seed: int) -> None:
        try:
            results[name] = ld.render(plans[name], steps=steps[name], seed=seed, **kw)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(name, i)) for i, name in enumerate(steps)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert_same(net, before)
    # Bit for bit with one torch thread. With more, two renders at once get other splits of each reduction than
    # one alone (OpenMP hands out threads per parallel region), so rounding differs (1.7e-6 seen); a render that
    # read the other thread's activations would be off by far more.
    atol = 0.0 if torch.get_num_threads() == 1 else 1e-4
    for name in steps:
        torch.testing.assert_close(results[name].images, alone[name].images, rtol=0, atol=atol)


def test_nested_and_overlapping_holds_restore_the_first_state():
    net = prepared()
    before = user_state(net)
    a = frozen_models([net])
    b = frozen_models([net.conv, net])  # a submodule held twice in one context too
    a.__enter__()
    b.__enter__()
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    a.__exit__(None, None, None)  # the first holder leaves first: the model stays frozen for the second
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    b.__exit__(None, None, None)
    assert_same(net, before)
