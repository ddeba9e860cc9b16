"""Redirected ReLU: dead units get a gradient only while redirected; the model comes back exactly as it was."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import lucent_dsl as ld
from lucent_dsl import render
from lucent_dsl.errors import InvalidArgumentError
from lucent_dsl.renderer.relu import RedirectedReLU, redirected_relu, redirected_relu_grad


def dead_net(seed: int = 0) -> nn.Sequential:
    """Channel 0 of layer "1" is dead for grey-ish images (pre-activation -1 + sum(w x) with w in [0, 0.1]).

    It comes alive only where the image gets bright: what a render can find with a gradient.
    """
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 1), nn.ReLU6(inplace=True))
    with torch.no_grad():
        net[0].weight[0].uniform_(0.0, 0.1)
        net[0].bias[0] = -1.0
    return net


def snapshot(model: nn.Module) -> dict:
    return {
        "modules": [(name, id(m), type(m), dict(vars(m))) for name, m in model.named_modules()],
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
                     for m in model.modules()),
    }


def assert_unchanged(a: dict, b: dict) -> None:
    assert [m[:3] for m in a["modules"]] == [m[:3] for m in b["modules"]]
    for (_, _, _, va), (_, _, _, vb) in zip(a["modules"], b["modules"]):
        assert va.keys() == vb.keys()
        assert va.get("inplace") == vb.get("inplace")
    assert a["hooks"] == b["hooks"]
    assert a["state"].keys() == b["state"].keys()
    for k in a["state"]:
        assert torch.equal(a["state"][k], b["state"][k]), k


def input_grad(net: nn.Module, x: torch.Tensor, loss) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    loss(net, x).backward()
    return x.grad


def dead_channel(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The loss that maximizes the dead channel (as in render: loss = -score)."""
    return -net[:2](x)[:, 0].mean()


def grey_ish(seed: int = 1) -> torch.Tensor:
    return 0.6 * torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(seed))


def test_dead_units_get_gradient_only_while_redirected():
    net = dead_net()
    x = grey_ish()
    assert float(net[:2](x)[:, 0].max().detach()) == 0.0  # dead
    assert torch.equal(input_grad(net, x, dead_channel), torch.zeros_like(x))
    with redirected_relu(net, steps=2) as state:
        assert type(net[1]) is RedirectedReLU
        g = input_grad(net, x, dead_channel)
        assert float(g.abs().sum()) > 0
        state.step()
        assert state.active
        state.step()  # the second (last) redirected step: the ordinary gradient is back
        assert not state.active
        assert type(net[1]) is nn.ReLU
        assert torch.equal(input_grad(net, x, dead_channel), torch.zeros_like(x))
    assert torch.equal(input_grad(net, x, dead_channel), torch.zeros_like(x))


def test_forward_values_and_live_gradients_are_unchanged():
    net = dead_net()
    x = grey_ish()
    live = lambda n, x: -n(x)[:, 1:].sum()
    want_out, want_grad = net(x).detach(), input_grad(net, x, live)
    with redirected_relu(net):
        assert torch.equal(net(x), want_out)
        assert torch.allclose(input_grad(net, x, live), want_grad, atol=1e-6)


def test_model_is_restored_exactly_even_after_an_error():
    net = dead_net()
    net[1].register_forward_hook(lambda m, i, o: None)
    before = snapshot(net)
    with pytest.raises(RuntimeError, match="boom"), redirected_relu({"a": net, "b": net}, steps=5):
        assert type(net[3]).__name__ == "RedirectedReLU6"
        raise RuntimeError("boom")
    assert_unchanged(before, snapshot(net))
    assert net[3].inplace is True


def test_only_exact_relu_types_are_swapped():
    class MyReLU(nn.ReLU):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) * 2

    net = nn.Sequential(nn.ReLU(), MyReLU(), nn.GELU())
    with redirected_relu(net):
        assert [type(m).__name__ for m in net] == ["RedirectedReLU", "MyReLU", "GELU"]
    assert [type(m) for m in net] == [nn.ReLU, MyReLU, nn.GELU]


def test_zero_steps_does_nothing_and_bad_steps_raise():
    net = dead_net()
    with redirected_relu(net, steps=0) as state:
        assert not state.active and type(net[1]) is nn.ReLU
    with pytest.raises(InvalidArgumentError), redirected_relu(net, steps=-1):
        pass
    with pytest.raises(InvalidArgumentError), redirected_relu("net"):
        pass


def test_lucid_definition():
    x = torch.tensor([[-1.0, -2.0, 3.0], [-1.0, -1.0, -1.0]])
    g = torch.tensor([[0.5, -0.5, 0.0], [0.5, -0.5, -2.0]])
    # row 0: the ordinary gradient is all zero (x < 0, or g = 0) -> redirected: keep g < 0 at x < 0
    # row 1: every input negative -> redirected as well
    out = redirected_relu_grad(x, g)
    assert torch.equal(out, torch.tensor([[0.0, -0.5, 0.0], [0.0, -0.5, -2.0]]))
    # a row where the ordinary gradient passes keeps it (no redirection)
    x2, g2 = torch.tensor([[-1.0, 2.0]]), torch.tensor([[-1.0, 1.0]])
    assert torch.equal(redirected_relu_grad(x2, g2), torch.tensor([[0.0, 1.0]]))
    # ReLU6: above 6, only gradient pushing the input down (g > 0) passes
    x6, g6 = torch.tensor([[7.0, 7.0, -1.0]]), torch.tensor([[1.0, -1.0, -1.0]])
    assert torch.equal(redirected_relu_grad(x6, g6, 6.0), torch.tensor([[1.0, 0.0, -1.0]]))


def test_works_through_a_compiled_plans_fx_graph():
    net = dead_net()
    plan = ld.compile_plan(ld.channel("1", 0), net)  # the fx graph holds the same ReLU objects
    x = grey_ish()[:1].requires_grad_(True)
    with redirected_relu(net):
        plan.loss(plan.forward(x), 1).backward()
    assert float(x.grad.abs().sum()) > 0


def test_render_redirect_relu_revives_a_dead_channel():
    net = dead_net()
    before = snapshot(net)
    plain = render(ld.channel("1", 0), net, size=8, steps=30, lr=0.5, transforms=[], progress=False)
    assert float(plain.history["channel('1', 0)"].abs().max()) == 0.0  # never gets a gradient
    revived = render(ld.channel("1", 0), net, size=8, steps=30, lr=0.5, transforms=[], progress=False,
                     redirect_relu=16)
    assert float(revived.history["channel('1', 0)"][-1, 0]) > 0.0
    assert_unchanged(before, snapshot(net))
    with pytest.raises(InvalidArgumentError, match="redirect_relu"):
        render(ld.channel("1", 0), net, size=8, steps=1, redirect_relu=-1, progress=False)


# --- issue 28, item 10: functional ReLUs (torchvision GoogLeNet's BasicConv2d calls F.relu) -----------------------

F_RELU = torch.nn.functional.relu


def dead_input_gradient() -> float:
    """The gradient F.relu gives a dead input when minimizing -relu: 0 unless something redirects it."""
    x = torch.full((1, 3), -1.0, requires_grad=True)
    (-torch.nn.functional.relu(x).sum()).backward()
    return float(x.grad.abs().sum())


def dead_googlenet() -> nn.Module:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    net = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False)
    with torch.no_grad():
        net.conv1.bn.bias.fill_(-1e3)  # conv1's F.relu is dead for every image
    return net.eval()


def test_redirect_reaches_googlenets_functional_relus_and_leaves_f_relu_alone():
    net = dead_googlenet()
    before = snapshot(net)
    kw = dict(size=32, steps=1, lr=0.5, transforms=[], progress=False, seed=0)
    plain = render(ld.channel("conv1", 0), net, **kw)
    revived = render(ld.channel("conv1", 0), net, redirect_relu=1, **kw)
    later = render(ld.channel("conv1", 0), net, **{**kw, "steps": 2})
    assert torch.equal(plain.images, later.images)  # F.relu's own gradient is 0: nothing moves (Adam)
    assert not torch.equal(revived.images, plain.images)  # the redirected one reached the image
    assert torch.nn.functional.relu is F_RELU and dead_input_gradient() == 0.0
    assert_unchanged(before, snapshot(net))


class Boom(nn.Module):
    def forward(self, x):
        x = torch.nn.functional.relu(x)
        raise RuntimeError("boom inside the forward")


def test_an_exception_mid_render_leaves_f_relu_ordinary():
    net = nn.Sequential(nn.Conv2d(3, 2, 1), Boom())
    with pytest.raises(Exception, match="boom"):
        render(ld.channel("1", 0), net, size=8, steps=2, redirect_relu=2, transforms=[], progress=False)
    assert torch.nn.functional.relu is F_RELU and dead_input_gradient() == 0.0
    from lucent_dsl.renderer.relu import functional_relus

    with functional_relus() as on:
        assert not on  # no render of this thread is redirecting


def test_a_redirecting_render_in_one_thread_does_not_reach_another():
    import threading

    from lucent_dsl.renderer.relu import functional_relus

    inside, done, seen = threading.Event(), threading.Event(), {}

    def redirecting():
        with redirected_relu(nn.Linear(1, 1), steps=1), functional_relus() as on:
            seen["on"] = on
            seen["here"] = dead_input_gradient()
            inside.set()
            done.wait(30)

    t = threading.Thread(target=redirecting)
    t.start()
    try:
        assert inside.wait(30)
        seen["other thread"] = dead_input_gradient()
    finally:
        done.set()
        t.join(30)
    assert seen == {"on": True, "here": 3.0, "other thread": 0.0}
