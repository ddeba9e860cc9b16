"""Tiny CPU models for the plan tests: each one exercises one way a real network is built.

- `conv_net()`: an `nn.Sequential` of convolutions (layers "0".."5"), logits at the end.
- `Branchy`: a custom module with two branches merged, a module called twice (`act`), a pooled head.
- `TinyViT`: patch embedding, a CLS token and two blocks producing (B, tokens, C) activations.
- `DictOut`: returns `{"out": logits, "aux": maps}`; its submodule `inner` also returns a dict.
- `Tripwire`: its `late` layer raises `TripwireError` when called, so truncation can be checked.
- `Exploding`: raises as soon as its forward is called (an ensemble member that must never run).
- `Untraceable`: data-dependent control flow, so torch.fx cannot trace it (the hooks fallback).

All are deterministic for a given seed and small enough for hypothesis to run hundreds of forwards.
"""
from __future__ import annotations

import functools
import os

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGE_SHAPE = (3, 10, 14)  # C, H, W: deliberately non-square
N_CLASSES = 7
LABELS = ("cat", "dog", "flamingo", "goldfish", "tabby cat", "tiger", "zebra")


class TripwireError(RuntimeError):
    """A layer past the deepest needed one was called."""


def _seeded(seed: int) -> None:
    torch.manual_seed(seed)


def conv_net(seed: int = 0) -> nn.Sequential:
    _seeded(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),  # 0: (6, 10, 14)
        nn.ReLU(),  # 1
        nn.Conv2d(6, 8, 3, stride=2, padding=1),  # 2: (8, 5, 7)
        nn.Tanh(),  # 3
        nn.Conv2d(8, N_CLASSES, 1),  # 4: (7, 5, 7)
        nn.AdaptiveAvgPool2d(1),  # 5: (7, 1, 1)
        nn.Flatten(),  # 6: (7,)
    ).eval()


class Branchy(nn.Module):
    """stem -> (left | right) -> merged -> act (called twice) -> head; `act` and `pool` have no weights."""

    def __init__(self, seed: int = 0):
        super().__init__()
        _seeded(seed)
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.left = nn.Sequential(nn.Conv2d(6, 4, 3, padding=1), nn.ReLU())
        self.right = nn.Conv2d(6, 4, 1)
        self.act = nn.Tanh()
        self.merge = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.head = nn.Linear(8, N_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.stem(x))
        h = torch.cat([self.left(h), self.right(h)], dim=1)
        h = self.act(self.merge(h))
        return self.head(h.mean((2, 3)))


class Block(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.mlp(self.norm(x))


class TinyViT(nn.Module):
    """Resizes to 8x8, patches of 2x2: a 4x4 grid of 16 patch tokens after one CLS token (17 tokens)."""

    def __init__(self, seed: int = 0, dim: int = 8):
        super().__init__()
        _seeded(seed)
        self.patch = nn.Conv2d(3, dim, 2, stride=2)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.1)
        self.blocks = nn.Sequential(Block(dim), Block(dim))
        self.head = nn.Linear(dim, N_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, size=(8, 8), mode="bilinear", align_corners=False)
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1)
        t = self.blocks(t)
        return self.head(t[:, 0])


class Inner(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        f = self.conv(x)
        return {"feat": f, "gate": torch.sigmoid(f.mean(1, keepdim=True))}


class DictOut(nn.Module):
    """Returns {"out": (B, classes) logits, "aux": (B, 5, H, W) maps}; `inner` returns a dict too."""

    def __init__(self, seed: int = 0):
        super().__init__()
        _seeded(seed)
        self.inner = Inner()
        self.post = nn.Conv2d(5, 5, 3, padding=1)
        self.head = nn.Linear(5, N_CLASSES)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        d = self.inner(x)
        h = self.post(d["feat"] * d["gate"])
        return {"out": self.head(h.mean((2, 3))), "aux": h}


def _trip(module: nn.Module, args: object) -> None:
    raise TripwireError("the layer after the deepest needed one was called")


class Tripwire(nn.Module):
    """`late` raises when called (a pre-hook, so that torch.fx still sees it as an ordinary leaf)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        _seeded(seed)
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1))
        self.late = nn.Conv2d(6, 6, 1)
        self.late.register_forward_pre_hook(_trip)

    def forward(self, x: Tensor) -> Tensor:
        return self.late(self.features(x)).mean((2, 3))


class Exploding(nn.Module):
    """An ensemble member whose forward must never run."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x: Tensor) -> Tensor:
        raise TripwireError("a model that the objective does not read was run")


class Untraceable(nn.Module):
    """Control flow on tensor values: torch.fx cannot trace it, so plans fall back to hooks."""

    def __init__(self, seed: int = 0):
        super().__init__()
        _seeded(seed)
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.c = nn.Conv2d(4, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.a(x)
        if h.detach().mean().item() > 1e9:  # never true, but fx cannot know
            h = -h
        return self.c(F.relu(self.b(h)))


def all_hook_outputs(model: nn.Module, x: Tensor) -> tuple[dict[str, object], object]:
    """The naive reference (what lucent does): a hook on EVERY module, one full forward.

    Returns ({module path: its output (last call wins)}, model output). All hooks are removed.
    """
    outs: dict[str, object] = {}
    handles = []
    for name, m in model.named_modules():
        def store(_m: nn.Module, _i: object, o: object, name: str = name) -> None:
            outs[name] = o

        handles.append(m.register_forward_hook(store))
    try:
        result = model(x)
    finally:
        for h in handles:
            h.remove()
    return outs, result


def hook_count(*models: nn.Module) -> int:
    """Forward hooks currently installed anywhere in `models`."""
    return sum(len(m._forward_hooks) for model in models for m in model.modules())


def select(value: object, selectors: tuple[str, ...]) -> object:
    """`value["out"]` / `value[0]` for each selector of a site (the reference for `Site.selectors`)."""
    for sel in selectors:
        value = value[sel] if isinstance(value, dict) else value[int(sel)]  # type: ignore[index]
    return value


def layer_table(model: nn.Module, layers: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    """{layer: one image's activation shape} for `layers` ("@input", "@output", "inner/feat", ...)."""
    x = torch.rand(1, *IMAGE_SHAPE)
    with torch.no_grad():
        outs, result = all_hook_outputs(model, x)
    table = {}
    for layer in layers:
        path, *selectors = layer.split("/")
        value = x if path == "@input" else result if path == "@output" else outs[path]
        table[layer] = tuple(select(value, tuple(selectors)).shape[1:])  # type: ignore[union-attr]
    return table


@functools.cache
def zoo_model(name: str) -> nn.Module:
    """`lucent_dsl.zoo.load(name)`, loaded once; skips the test when the weights are missing, except under CI,
    where CI installs them and a skip would hide a broken install step."""
    from lucent_dsl import zoo
    from lucent_dsl.errors import WeightsNotFoundError

    try:
        return zoo.load(name)
    except WeightsNotFoundError as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(e))
