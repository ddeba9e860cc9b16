"""Small random models of each layout family, for plan-level laws: their layer "L" has a known layout.

- `layout_model(ActivationSpec("nchw", ...))`: convolution, BatchNorm (random statistics, so folding
  matters), tanh, pooled to the grid; "L" is a 1x1 convolution.
- `"nhwc"`: the same stem, permuted channels-last; "L" is a Linear on the channel axis (ConvNeXt).
- `"tokens"`: patch embedding, `prefix` learned tokens (CLS, registers) before the patch grid;
  "L" is a pre-norm MLP block with token mixing, so every token depends on every patch (ViT).
- `"vectors"`: convolution, global pooling; "L" is a Linear layer (an MLP head).
- `shaped_model(shape)`: "L" outputs any per-image shape, including ranks no term reads.

Each model ends in a head after "L" (so truncation matters), traces with torch.fx, runs with hooks,
is in eval mode and has the layout's dtype. `random_models()` draws them.

Example:
    >>> m = layout_model(ActivationSpec("tokens", channels=6, height=2, width=2, prefix=3))
    >>> image = torch.rand(2, *image_shape(m.layout))
    >>> tuple(m.module.L(m.module.embed(image)).shape)
    (2, 7, 6)
"""
from __future__ import annotations

import dataclasses as dc
import math
from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from hypothesis import strategies as st
from torch import Tensor, nn

from ..errors import InvalidArgumentError
from .shapes import LAYOUTS, ActivationSpec, activation_specs

__all__ = ["RandomModel", "image_shape", "layout_model", "random_models", "shaped_model"]

WIDTH = 8  # channels of every stem


@dc.dataclass(frozen=True, eq=False)
class RandomModel:
    """A random network whose layer `layer` outputs activations of `layout`, and its input shape (C, H, W)."""

    module: nn.Module
    layout: ActivationSpec
    image_shape: tuple[int, int, int]
    layer: str = "L"


def image_shape(layout: ActivationSpec) -> tuple[int, int, int]:
    """A non-square RGB input a little larger than the layout's grid (pooled down to it)."""
    return 3, 2 * max(layout.height, 1) + 2, 2 * max(layout.width, 1) + 3


def _stem() -> nn.Sequential:
    bn = nn.BatchNorm2d(WIDTH)
    with torch.no_grad():
        cast(Tensor, bn.running_mean).normal_(0, 0.1)
        cast(Tensor, bn.running_var).uniform_(0.5, 1.5)
        bn.weight.normal_(1, 0.2)
        bn.bias.normal_(0, 0.1)
    return nn.Sequential(nn.Conv2d(3, WIDTH, 3, padding=1), bn, nn.Tanh())


class _Maps(nn.Module):
    def __init__(self, lay: ActivationSpec):
        super().__init__()
        self.embed = nn.Sequential(_stem(), nn.AdaptiveAvgPool2d((lay.height, lay.width)))
        self.L = nn.Conv2d(WIDTH, lay.channels, 1)
        self.head = nn.Linear(lay.channels, 5)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.tanh(self.L(self.embed(x))).mean((2, 3)))


class _ChannelsLast(nn.Module):
    def __init__(self, lay: ActivationSpec):
        super().__init__()
        self.stem = nn.Sequential(_stem(), nn.AdaptiveAvgPool2d((lay.height, lay.width)))
        self.L = nn.Linear(WIDTH, lay.channels)
        self.head = nn.Linear(lay.channels, 5)

    def embed(self, x: Tensor) -> Tensor:
        return self.stem(x).permute(0, 2, 3, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.tanh(self.L(self.embed(x))).mean((1, 2)))


class _Block(nn.Module):
    """Pre-norm token mixing (each token plus a projection of the mean token) and an MLP."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mix = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        t = t + self.mix(self.norm(t).mean(1, keepdim=True))
        return t + self.mlp(self.norm(t))


class _Tokens(nn.Module):
    def __init__(self, lay: ActivationSpec):
        super().__init__()
        if lay.height * lay.width == 0:
            raise InvalidArgumentError(f"{lay}: a token model needs a patch grid")
        self.patches = nn.Sequential(_stem(), nn.AdaptiveAvgPool2d((lay.height, lay.width)))
        self.proj = nn.Linear(WIDTH, lay.channels)
        self.prefix = nn.Parameter(torch.randn(1, lay.prefix, lay.channels) * 0.5)
        self.L = _Block(lay.channels)
        self.head = nn.Linear(lay.channels, 5)

    def embed(self, x: Tensor) -> Tensor:
        t = self.proj(self.patches(x).flatten(2).transpose(1, 2))
        return torch.cat([self.prefix.expand(t.shape[0], -1, -1), t], 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.L(self.embed(x))[:, 0])


class _Vectors(nn.Module):
    def __init__(self, lay: ActivationSpec):
        super().__init__()
        self.stem = _stem()
        self.L = nn.Linear(WIDTH, lay.channels)
        self.head = nn.Linear(lay.channels, 5)

    def embed(self, x: Tensor) -> Tensor:
        return self.stem(x).mean((2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.tanh(self.L(self.embed(x))))


_FAMILIES = {"nchw": _Maps, "nhwc": _ChannelsLast, "tokens": _Tokens, "vectors": _Vectors}


def layout_model(layout: ActivationSpec, *, seed: int = 0) -> RandomModel:
    """A random network of `layout`'s family whose layer "L" outputs (B, *layout.shape) on `image_shape(layout)`
    inputs."""
    with torch.random.fork_rng(devices=[]):  # seeded weights, and the caller's random state untouched
        torch.manual_seed(seed)
        module = _FAMILIES[layout.kind](layout).to(layout.dtype).eval()
    return RandomModel(module, layout, image_shape(layout))


class _Project(nn.Module):
    def __init__(self, features: int, shape: tuple[int, ...]):
        super().__init__()
        self.shape = shape
        self.linear = nn.Linear(features, max(math.prod(shape), 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x).reshape(x.shape[0], *self.shape)


class _Shaped(nn.Module):
    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.stem = _stem()
        self.L = _Project(WIDTH * 4, shape)

    def forward(self, x: Tensor) -> Tensor:
        return self.L(F.adaptive_avg_pool2d(self.stem(x), 2).flatten(1)).flatten(1).sum(1)


def shaped_model(shape: Sequence[int], *, seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A random network whose layer "L" outputs (B, *shape) for any (B, 3, H, W) image, whatever the rank.

    Example:
        >>> shaped_model(()).L(torch.rand(2, 32)).shape, shaped_model((2, 1, 3, 4)).L(torch.rand(2, 32)).shape
        (torch.Size([2]), torch.Size([2, 2, 1, 3, 4]))
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _Shaped(tuple(int(s) for s in shape)).to(dtype).eval()


@st.composite
def random_models(draw, kinds: Sequence[str] = LAYOUTS, **layout_kw) -> RandomModel:
    """Random models of the families in `kinds` (keywords as for `activation_specs`; small sides by default)."""
    layout_kw.setdefault("sides", (1, 5))
    layout_kw.setdefault("channels", (1, 16))
    lay = draw(activation_specs(kinds, **layout_kw))
    return layout_model(lay, seed=draw(st.integers(0, 2**16)))
