"""Spatial masks: restrict any objective to a region of the image (`masked`).

`masked(expr, mask)` is a vocabulary term that wraps other objectives. Before the inner terms
read an activation, it is multiplied by the mask, resized to that activation's grid:

==========================  ==============================================================
activation                  where the mask goes
==========================  ==============================================================
(B, C, H, W) maps           resized to H x W (shrinking: the mean of the mask pixels under
                            each cell; growing: bilinear; a box: the exact fraction of each
                            cell that the box covers)
(B, T, C) tokens            resized to the square patch grid; tokens outside the grid (a
                            CLS token first) lie outside every region and get weight 0
(B, C) vectors              ObjectiveShapeError: a vector has no positions to mask
==========================  ==============================================================

How it averages. With `normalize=True` (the default) the activation is multiplied by
`m / mean(m)`, the mean taken over all positions (tokens) of that grid. Terms that average over
positions (`channel`, `class_logit`, `direction` with `cossim_pow=0`, `channel_weight`) then
return the *mask-weighted mean over the region*: `sum(a * m) / sum(m)`, the same number whatever
the region's size, so objectives on regions of different sizes can be added without reweighting.
Nonlinear terms see the rescaled activation (`layer` squares it). With `normalize=False` the
activation is multiplied by `m` alone: averaging terms return `sum(a * m) / positions`, the region
mean times the fraction of the map it covers; use it for position terms such as `neuron`, which
then read 0 outside the region.

The mask is a constant of the objective: a box `(x0, y0, x1, y1)` in fractions of the image width
and height (0 = left/top edge, 1 = right/bottom edge), or an (H, W) tensor in [0, 1] stored as an
`Array`. `repr`, `parse` and JSON round-trip both. The mask lies over the image that the model
sees, after the render's random transforms (as in Lucid: jitter moves the image under a fixed
region). Keep tensor masks small (e.g. 32 x 32): they are resized to each activation anyway, and
they are printed in full by `repr` and in score histories.

Example:
    >>> from lucent_dsl import class_logit
    >>> e = masked(class_logit(16, layer="@output/out"), (0.25, 0.25, 0.75, 0.75))
    >>> e
    masked(class_logit(16, layer='@output/out'), (0.25, 0.25, 0.75, 0.75))
    >>> from lucent_dsl import parse
    >>> parse(repr(e)) == e
    True
"""
from __future__ import annotations

import dataclasses as dc
import functools as ft
import math
import numbers
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..dsl.expr import Acts, Array, Const, Expr, Site, Term, evaluate, terms_of
from ..errors import InvalidArgumentError, ObjectiveShapeError
from ._term import laid_key, layout_of, patch_grid

__all__ = ["Masked", "box_mask", "masked"]

Box = tuple[float, float, float, float]


@dc.dataclass(frozen=True, slots=True, repr=False)
class Masked(Term):
    """The objective `expr`, reading activations multiplied by a spatial mask.

    Attributes:
        expr: the inner objective (any expression).
        mask: a box `(x0, y0, x1, y1)` in fractions of width/height, or an (H, W) `Array` in [0, 1].
        normalize: divide the resized mask by its mean (see the module docstring).
    """

    name = "masked"
    positional = ("expr", "mask")
    expr: Expr
    mask: Box | Array
    normalize: bool = True

    def sites(self) -> tuple[Site, ...]:
        return tuple(dict.fromkeys(s for t in terms_of(self.expr) for s in t.sites()))

    def map_inner(self, fn: Callable[[Expr], Expr]) -> Expr:
        """This mask around `fn(expr)`: how `map_terms` (and so plan binding) reaches the inner terms."""
        return masked(fn(self.expr), self.mask, normalize=self.normalize)

    def score(self, acts: Acts, n: int) -> Tensor:
        inner = dict(acts)
        for site in self.sites():
            a = acts.get(site)
            if isinstance(a, Tensor):
                inner[site] = a * self.weights(laid_key(acts, site), a)  # the plan's key knows the layout
        return evaluate(self.expr, inner, n)

    def weights(self, site: Site, a: Tensor) -> Tensor:
        """The mask as a tensor that broadcasts against activation `a` (rank 4 or 3) of `site`."""
        kind = layout_of(self, site, a)
        if kind == "vectors":
            raise ObjectiveShapeError(
                f"{self!r} reads {site}, whose activation {tuple(a.shape)} holds (B, C) vectors: there are no "
                "positions to mask. Mask a feature map or a token sequence, or move masked(...) inside"
            )
        if kind == "maps":
            w = _weights(self, a.shape[2], a.shape[3], 0)
            return w.to(device=a.device, dtype=a.dtype).view(1, 1, a.shape[2], a.shape[3])
        offset, h, w_ = patch_grid(self, site, a.shape[1])
        w = _weights(self, h, w_, offset)
        return w.to(device=a.device, dtype=a.dtype).view(1, a.shape[1], 1)


@ft.lru_cache(maxsize=256)
def _resized(term: Masked, h: int, w: int, offset: int) -> Tensor:
    """The flat weights of `term`'s mask on an h x w grid after `offset` tokens outside the grid.

    Plain tensor code without data-dependent branches, so that torch.compile traces it; eagerly it
    is computed once per grid size. A valid mask always covers part of some cell (a box has a
    positive area, a tensor mask a positive value), so the mean is positive.
    """
    mask = term.mask
    grid = box_mask(mask, h, w) if isinstance(mask, tuple) else _resize(mask.tensor, h, w)
    flat = torch.cat([torch.zeros(offset), grid.flatten()])
    return flat / flat.mean().clamp(min=1e-12) if term.normalize else flat


def _weights(term: Masked, h: int, w: int, offset: int) -> Tensor:
    # Dynamo would skip the cache and warn; tracing the plain function gives the same constant.
    if torch.compiler.is_compiling():
        return _resized.__wrapped__(term, h, w, offset)
    return _resized(term, h, w, offset)


def _resize(m: Tensor, h: int, w: int) -> Tensor:
    if tuple(m.shape) == (h, w):
        return m.clone()
    if h <= m.shape[0] and w <= m.shape[1]:
        # Shrinking: each cell gets the mean of the mask pixels under it (a hard edge stays hard at
        # integer ratios, unlike an antialiasing filter that reaches across it).
        out = F.adaptive_avg_pool2d(m[None, None], (h, w))
    else:
        out = F.interpolate(m[None, None], size=(h, w), mode="bilinear", align_corners=False)
    return out[0, 0].clamp(0.0, 1.0)


def box_mask(box: Box, h: int, w: int) -> Tensor:
    """The (h, w) mask of a box `(x0, y0, x1, y1)` given in fractions of the width and height.

    Each cell gets the fraction of its area that the box covers, so a box that ends inside a cell
    weighs that cell partially and the sum of the mask is exactly `(x1 - x0) * (y1 - y0) * h * w`.

    Example:
        >>> box_mask((0.0, 0.0, 0.5, 0.25), 2, 4)  # the box covers half of the first row's height
        tensor([[0.5000, 0.5000, 0.0000, 0.0000],
                [0.0000, 0.0000, 0.0000, 0.0000]])
    """
    x0, y0, x1, y1 = _box(box)
    return _coverage(y0, y1, h)[:, None] * _coverage(x0, x1, w)[None, :]


def _coverage(lo: float, hi: float, n: int) -> Tensor:
    """Fraction of each of n equal cells of [0, 1] that lies inside [lo, hi]."""
    edges = torch.arange(n + 1, dtype=torch.float64) / n
    inside = (edges[1:].clamp(max=hi) - edges[:-1].clamp(min=lo)).clamp(min=0)
    return (inside * n).to(torch.float32)


def _box(v: Any) -> Box:
    if len(v) != 4 or any(isinstance(x, bool) or not isinstance(x, numbers.Real) for x in v):
        raise InvalidArgumentError(f"a box mask is 4 numbers (x0, y0, x1, y1) in fractions of width/height, got {v!r}")
    x0, y0, x1, y1 = (float(x) for x in v)
    if not all(math.isfinite(x) for x in (x0, y0, x1, y1)) or not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
        raise InvalidArgumentError(
            f"box {tuple(v)!r} must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 (fractions of width and height; "
            "(0, 0, 0.5, 1) is the left half)"
        )
    return x0, y0, x1, y1


def _mask(v: Any) -> Box | Array:
    if isinstance(v, (tuple, list)) and len(v) == 4 and all(isinstance(x, numbers.Real) for x in v):
        return _box(v)
    if isinstance(v, (str, bytes)) or v is None:
        raise InvalidArgumentError(f"mask must be an (H, W) tensor in [0, 1] or a box (x0, y0, x1, y1), got {v!r}")
    arr = Array.of(v)
    t = arr.tensor
    while t.dim() > 2 and t.shape[0] == 1:  # (1, H, W) and (1, 1, H, W) are accepted as (H, W)
        t = t[0]
    if t.dim() != 2 or t.numel() == 0:
        raise InvalidArgumentError(f"a tensor mask must have shape (H, W), got {tuple(arr.shape)}")
    if float(t.min()) < 0.0 or float(t.max()) > 1.0:
        raise InvalidArgumentError(f"mask values must lie in [0, 1], got [{float(t.min()):.4g}, {float(t.max()):.4g}]")
    if float(t.max()) == 0.0:
        raise InvalidArgumentError("the mask is all zeros: it selects no region")
    return arr if t.shape == arr.tensor.shape else Array.of(t)


def masked(expr: Expr, mask: Any, *, normalize: bool = True) -> Expr:
    """`expr` restricted to a region: every activation it reads is multiplied by `mask` first.

    Args:
        expr: any objective (a term, a sum, ...). Constants are returned unchanged.
        mask: an (H, W) tensor/array in [0, 1] (any size: resized to each activation), or a box
            `(x0, y0, x1, y1)` in fractions of the image width and height.
        normalize: True: weights `m / mean(m)`, so averaging terms give the region's weighted mean;
            False: weights `m` (see the module docstring).

    Returns:
        a `Masked` term.

    Raises:
        InvalidArgumentError: `expr` is not an objective, or a bad mask.
        ObjectiveShapeError (when scored): an inner layer holds (B, C) vectors or a token count that
            is no square grid.

    Shape:
        mask: (H, W); activations (B, C, h, w) get an (h, w) mask, (B, T, C) a (T,) one.

    Example:
        >>> import torch
        >>> from lucent_dsl import channel
        >>> left = torch.zeros(4, 4); left[:, :2] = 1
        >>> masked(channel("features.3", 5), left, normalize=False)
        masked(channel('features.3', 5), tensor([1.0, 1.0, 0.0, 0.0, ..., 0.0, 0.0], shape=(4, 4)), normalize=False)
    """
    if not isinstance(expr, Expr):
        raise InvalidArgumentError(
            f"masked(...) wraps an objective such as channel('layer4', 3), got {expr!r} ({type(expr).__name__})"
        )
    if not isinstance(normalize, bool):
        raise InvalidArgumentError(f"normalize must be True or False, got {normalize!r}")
    m = _mask(mask)
    if isinstance(expr, Const):
        return expr
    return Masked(expr, m, normalize)



