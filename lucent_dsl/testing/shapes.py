"""Activation specs, and hypothesis strategies for the tensors, images and batch selectors that fill them.

An `ActivationSpec` says what one image's activation at a site looks like: `"nchw"` feature maps
`(C, H, W)`, `"nhwc"` channels-last maps `(H, W, C)`, `"tokens"` sequences `(prefix + H * W, C)`
(a patch grid after `prefix` CLS or register tokens) and `"vectors"` `(C,)`, plus the dtype;
`spec.pattern` is its einops pattern in the notation of `lucent_dsl.models.layouts` ("b h w c",
"b (1 + h w) c", ...), for terms told their layout with `layout=`. Every activation tensor has
rows first: `crops * images` rows, crop-major (row `k * n + b` is crop `k` of image `b`). Read by
rank alone (activations outside a plan, terms without `layout=`), rank 4 is NCHW, rank 3 tokens
with 0 or 1 prefix token, rank 2 vectors; `ActivationSpec.of` is that reading.

Example:
    >>> spec = ActivationSpec("tokens", channels=8, height=3, width=3, prefix=1)
    >>> spec.shape, spec.tensor(2).shape, spec.pattern
    ((10, 8), torch.Size([2, 10, 8]), 'b (1 + h w) c')
    >>> ActivationSpec.of((10, 8)) == spec
    True
    >>> grid = torch.rand(2, 8, 3, 3)
    >>> torch.equal(spec.to_grid(spec.from_grid(grid)), grid)
    True
"""
from __future__ import annotations

import dataclasses as dc
import math
from collections.abc import Sequence

import torch
from hypothesis import strategies as st
from torch import Tensor

from ..dsl.expr import Array
from ..errors import InvalidArgumentError

__all__ = [
    "LAYOUTS", "RANK_LAYOUTS", "ActivationSpec", "activation_specs", "activations", "arrays", "batch_selectors",
    "image_batches", "seeded", "selected", "unsupported_shapes",
]

LAYOUTS = ("nchw", "nhwc", "tokens", "vectors")
RANK_LAYOUTS = ("nchw", "tokens", "vectors")  # the layouts told apart by rank alone (today's vocabulary)
Shape = tuple[int, ...]


@dc.dataclass(frozen=True)
class ActivationSpec:
    """One image's activation at a site: layout kind, channels, spatial grid, prefix tokens, dtype.

    Attributes:
        kind: "nchw", "nhwc", "tokens" or "vectors".
        channels: C.
        height, width: the spatial grid (the patch grid of tokens; 1 x 1 for vectors). A token
            sequence without a patch grid has height = width = 0 and all its tokens in `prefix`.
        prefix: tokens before the patch grid (CLS, register tokens); tokens only.
        dtype: the activations' floating-point dtype.
    """

    kind: str
    channels: int
    height: int = 1
    width: int = 1
    prefix: int = 0
    dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        if self.kind not in LAYOUTS:
            raise InvalidArgumentError(f"layout kind must be one of {LAYOUTS}, got {self.kind!r}")
        if self.channels < 1 or self.height < 0 or self.width < 0 or self.prefix < 0:
            raise InvalidArgumentError(f"{self}: channels must be >= 1 and the grid and prefix >= 0")
        if self.kind != "tokens" and (self.prefix or self.height * self.width == 0):
            raise InvalidArgumentError(f"{self}: only token sequences have prefix tokens or an empty grid")
        if self.kind == "vectors" and (self.height, self.width) != (1, 1):
            raise InvalidArgumentError(f"{self}: vectors have a 1 x 1 grid")
        if self.kind == "tokens" and self.tokens == 0:
            raise InvalidArgumentError(f"{self}: a token sequence needs at least one token")

    @property
    def tokens(self) -> int:
        return self.prefix + self.height * self.width

    @property
    def pattern(self) -> str:
        """The einops pattern of the raw activation, as `lucent_dsl.models.layouts` writes it."""
        if self.kind == "tokens":
            grid = "h w" if self.height * self.width else ""
            if not grid:
                return "b t c"
            return f"b ({self.prefix} + {grid}) c" if self.prefix else f"b ({grid}) c"
        return {"nchw": "b c h w", "nhwc": "b h w c", "vectors": "b c"}[self.kind]

    @property
    def shape(self) -> Shape:
        """One image's activation shape (without the rows axis)."""
        c, h, w = self.channels, self.height, self.width
        return {"nchw": (c, h, w), "nhwc": (h, w, c), "tokens": (self.tokens, c), "vectors": (c,)}[self.kind]

    def tensor(self, rows: int, *, seed: int = 0, requires_grad: bool = False) -> Tensor:
        """Standard-normal activations (rows, *shape), the same for the same seed."""
        return seeded((rows, *self.shape), seed, self.dtype).requires_grad_(requires_grad)

    def from_grid(self, grid: Tensor, prefix_tokens: Tensor | None = None) -> Tensor:
        """(R, C, H, W) maps in this layout; prefix tokens (R, prefix, C) default to zeros."""
        if tuple(grid.shape[1:]) != (self.channels, self.height, self.width):
            raise InvalidArgumentError(f"{self}: a grid of shape {tuple(grid.shape)} does not fit")
        if self.kind == "nchw":
            return grid
        if self.kind == "nhwc":
            return grid.permute(0, 2, 3, 1)
        if self.kind == "vectors":
            return grid[:, :, 0, 0]
        seq = grid.flatten(2).transpose(1, 2)
        if prefix_tokens is None:
            prefix_tokens = grid.new_zeros(grid.shape[0], self.prefix, self.channels)
        return torch.cat([prefix_tokens, seq], 1)

    def to_grid(self, a: Tensor) -> Tensor:
        """The (R, C, H, W) maps of activations in this layout (prefix tokens dropped)."""
        if self.kind == "nchw":
            return a
        if self.kind == "nhwc":
            return a.permute(0, 3, 1, 2)
        if self.kind == "vectors":
            return a[:, :, None, None]
        return a[:, self.prefix:].transpose(1, 2).reshape(a.shape[0], self.channels, self.height, self.width)

    @staticmethod
    def of(shape: Sequence[int], dtype: torch.dtype = torch.float32) -> ActivationSpec:
        """The layout of a per-image shape as today's vocabulary reads it (by rank).

        Example:
            >>> ActivationSpec.of((6, 5, 7)).kind, ActivationSpec.of((7, 4)).prefix, ActivationSpec.of((9,)).channels
            ('nchw', 7, 9)
        """
        shape = tuple(int(s) for s in shape)
        if len(shape) == 3:
            return ActivationSpec("nchw", *shape, dtype=dtype)
        if len(shape) == 1:
            return ActivationSpec("vectors", shape[0], dtype=dtype)
        if len(shape) == 2:
            t, c = shape
            for prefix in (0, 1):
                side = math.isqrt(max(t - prefix, 0))
                if side > 0 and side * side == t - prefix:
                    return ActivationSpec("tokens", c, side, side, prefix, dtype)
            return ActivationSpec("tokens", c, 0, 0, t, dtype)  # no patch grid: token= picks a token
        raise InvalidArgumentError(f"per-image shape {shape} is no layout: rank 1 (vectors), 2 (tokens) or 3 (maps)")


def seeded(shape: Shape, seed: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard-normal values of `shape`, the same for the same seed.

    Example:
        >>> torch.equal(seeded((2, 3), 7), seeded((2, 3), 7))
        True
    """
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _span(lo_hi: tuple[int, int]) -> st.SearchStrategy[int]:
    return st.integers(lo_hi[0], lo_hi[1])


@st.composite
def activation_specs(draw, kinds: Sequence[str] = LAYOUTS, *, channels: tuple[int, int] = (1, 64),
            sides: tuple[int, int] = (1, 14), prefix: Sequence[int] = range(6), square: bool = False,
            dtypes: Sequence[torch.dtype] = (torch.float32,)) -> ActivationSpec:
    """Layouts of `kinds`: maps of any H x W (`square=True`: H == W), ViT-like square patch grids after
    `prefix` tokens (CLS, registers), vectors; C in `channels`, sides in `sides`.

    Example:
        >>> from hypothesis import given
        >>> @given(activation_specs(("tokens",), channels=(2, 4)))
        ... def check(lay):
        ...     assert lay.kind == "tokens" and 2 <= lay.channels <= 4 and lay.height == lay.width
        >>> check()
    """
    kind = draw(st.sampled_from(tuple(kinds)))
    c = draw(_span(channels))
    dtype = draw(st.sampled_from(tuple(dtypes)))
    if kind == "vectors":
        return ActivationSpec(kind, c, dtype=dtype)
    h = draw(_span(sides))
    w = h if square or kind == "tokens" else draw(_span(sides))
    p = draw(st.sampled_from(tuple(prefix))) if kind == "tokens" else 0
    return ActivationSpec(kind, c, h, w, p, dtype)


@st.composite
def activations(draw, kinds: Sequence[str] = LAYOUTS, *, rows: tuple[int, int] = (1, 4),
                **layout_kw) -> tuple[ActivationSpec, Tensor]:
    """(layout, activation tensor (rows, *layout.shape)) pairs; keywords as for `activation_specs`."""
    lay = draw(activation_specs(kinds, **layout_kw))
    return lay, lay.tensor(draw(_span(rows)), seed=draw(st.integers(0, 2**16)))


def unsupported_shapes(ranks: Sequence[int] = (0, 4)) -> st.SearchStrategy[Shape]:
    """Per-image shapes of no layout: rank 0 (a (B,) activation) and rank 4 (a (B, C, D, H, W) volume)."""
    return st.one_of(*(st.tuples(*(st.integers(1, 3) for _ in range(r))) for r in ranks))


def batch_selectors(n: int) -> st.SearchStrategy[int | range | None]:
    """`batch=` values that select images of a render of `n`: None (all), an index, or a range.

    Example:
        >>> from hypothesis import given
        >>> @given(batch_selectors(3))
        ... def check(b):
        ...     assert b is None or set([b] if isinstance(b, int) else b) <= {0, 1, 2}
        >>> check()
    """
    ranges = st.tuples(st.integers(0, n - 1), st.integers(1, n), st.integers(1, 2)).filter(
        lambda t: t[0] < t[1]
    ).map(lambda t: range(*t))
    return st.one_of(st.none(), st.integers(0, n - 1), ranges)


def selected(batch: int | range | None, n: int) -> list[int]:
    """The images of a render of `n` that `batch=` selects."""
    return list(range(n)) if batch is None else [batch] if isinstance(batch, int) else list(batch)


def arrays(shape: Shape) -> st.SearchStrategy[Array]:
    """Random constant tensors of `shape`, as expressions hold them (targets, directions)."""
    return st.integers(0, 2**16).map(lambda seed: Array.of(seeded(shape, seed)))


@st.composite
def image_batches(draw, n: tuple[int, int] = (1, 4), *, channels: Sequence[int] = (3,),
                  sizes: tuple[int, int] = (4, 16), dtype: torch.dtype = torch.float32) -> Tensor:
    """Image batches (n, C, H, W) in [0, 1]: noise, smooth gradients, or flat grey (an edge case).

    Example:
        >>> from hypothesis import given
        >>> @given(image_batches(channels=(4,)))
        ... def check(x):
        ...     assert x.shape[1] == 4 and 0 <= float(x.min()) <= float(x.max()) <= 1
        >>> check()
    """
    b, c = draw(_span(n)), draw(st.sampled_from(tuple(channels)))
    h, w = draw(_span(sizes)), draw(_span(sizes))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    kind = draw(st.sampled_from(("noise", "smooth", "flat")))
    if kind == "noise":
        return torch.rand((b, c, h, w), generator=g, dtype=dtype)
    if kind == "flat":
        return torch.full((b, c, h, w), draw(st.sampled_from((0.0, 0.5, 1.0))), dtype=dtype)
    ramp = torch.linspace(0, 1, w, dtype=dtype).view(1, 1, 1, w) * torch.linspace(0, 1, h, dtype=dtype).view(1, 1, h, 1)
    return (0.5 * ramp + 0.5 * torch.rand((b, c, 1, 1), generator=g, dtype=dtype)).clamp(0, 1)
