"""Activation layouts: which axis of a site's tensor is the batch, the channel, the positions.

A `Layout` is written as an einops pattern of the raw activation. The axis names are `b`
(images), `c` (channels), `h`, `w` (a map's rows and columns) and `t` (tokens); a token axis may
be written as its patch grid after prefix tokens, `(P + h w)`, where `P` lists the tokens before
the grid, as a count or one name per token:

| pattern                 | what it is                                                   |
| ----------------------- | ------------------------------------------------------------ |
| `b c h w`               | feature maps (PyTorch's convolutions)                        |
| `b h w c`               | channels-last maps (torchvision Swin `features.N`, timm Swin, MambaOut, ConvNeXt blocks) |
| `b (1 + h w) c`         | tokens: one CLS token, then a row-major patch grid (a ViT)   |
| `b (cls dist + h w) c`  | two prefix tokens (DeiT distilled); `b (cls 4 + h w) c`: CLS + 4 registers |
| `b (h w) c`, `b t c`    | tokens without a prefix; tokens whose grid is not stated     |
| `b c t`, `b c (h w)`    | channels-first tokens (1-d convolutions)                     |
| `b c`                   | vectors (pooled features, logits)                            |

Terms read every activation in a canonical form (`b c h w`, `b t c` or `b c`): the plan rearranges
each site with einops once per forward (`canonical`). Layouts are stated (`layout=` on a term,
`ModelInfo(layouts=...)`, `compile_plan(..., layouts=...)`), taken from the model, or detected by
a probe (`detect`): run at two input sizes, the axes that change are spatial. A site whose layout
cannot be told apart gets a `Refusal`, and a term that reads it raises `ObjectiveShapeError` naming
its shape and asking for `layout=`.

Example:
    >>> import torch
    >>> lay = parse_layout("b h w c")
    >>> lay.kind, tuple(canonical(torch.zeros(2, 7, 5, 16), lay).shape)
    ('maps', (2, 16, 7, 5))
    >>> parse_layout("b (cls 4 + h w) c").prefix
    5
"""
from __future__ import annotations

import dataclasses as dc
import math
import re
from typing import Any

import einops
from torch import Tensor

from ..dsl.expr import Site
from ..errors import InvalidArgumentError, ObjectiveShapeError

__all__ = ["CANONICAL", "Layout", "LaidSite", "Refusal", "canonical", "detect", "layout_at", "parse_layout",
           "token_grid"]

CANONICAL = {"maps": "b c h w", "tokens": "b t c", "vectors": "b c"}
MAX_PREFIX = 16  # prefix tokens a probe may find before a patch grid (CLS, distillation, registers)
MAX_PREFIX_ONE_SIZE = 8  # from one input size: more would make every grid up to 4x4 ambiguous
_AXIS = re.compile(r"\(([^()]*)\)|[^\s()]+")


@dc.dataclass(frozen=True)
class Layout:
    """How one site's activation is laid out (see the module docstring).

    Attributes:
        pattern: the einops pattern of the raw tensor, e.g. "b h w c" or "b (1 + h w) c".
        kind: "maps", "tokens" or "vectors".
        axes: the raw axes with token groups collapsed to `t`, e.g. ("b", "t", "c").
        prefix: tokens before the patch grid (None: not known; a square grid after 0 or 1 is assumed).
        grid: (rows, cols) of the patch grid, when known for the current input.
        stride: input pixels per grid cell (rows, cols) and whether cells round up, to find the
            grid at another input size (tokens of models that take any size).
        source: where it came from: "stated", "model", "module", "probe" or "rank".
        guess: with `prefix` None, whether a square grid after 0 or 1 CLS token may be assumed (False where a
            probe saw that several prefix counts fit: x/y then need the layout stated).
    """

    pattern: str
    kind: str
    axes: tuple[str, ...]
    prefix: int | None = None
    grid: tuple[int, int] | None = None
    stride: tuple[float, float, bool] | None = None
    source: str = "stated"
    guess: bool = True

    @property
    def rank(self) -> int:
        return len(self.axes)

    @property
    def canonical(self) -> bool:
        return " ".join(self.axes) == CANONICAL[self.kind]

    def __str__(self) -> str:
        return self.pattern


@dc.dataclass(frozen=True)
class Refusal:
    """A site whose layout is unknown or unsupported: `why` says what was seen and what to state."""

    why: str
    source: str = "probe"
    stateable: bool = True  # whether stating a layout would help (not for rank-5 or windowed outputs)
    kind = "refused"

    def __str__(self) -> str:
        return "?"


def parse_layout(pattern: str, source: str = "stated") -> Layout:
    """A `Layout` from its einops pattern (see the module docstring for the grammar).

    Raises:
        InvalidArgumentError: not a pattern of one of the supported layouts.
    """
    if not isinstance(pattern, str) or not pattern.strip():
        raise InvalidArgumentError(f"layout= must be an einops pattern such as 'b h w c', got {pattern!r}")
    text = " ".join(pattern.split())
    axes: list[str] = []
    prefix, grid_axes = None, False
    for m in _AXIS.finditer(text):
        group = m.group(1)
        if group is None:
            axes.append(m.group(0))
            continue
        head, plus, tail = group.rpartition("+")
        if tail.split() != ["h", "w"] or (plus and not head.split()):
            raise _bad(pattern, f"the group ({group}) is not a patch grid '(h w)' or '(P + h w)'")
        prefix = sum(int(p) if p.isdigit() else 1 for p in head.split()) if plus else 0
        grid_axes = True
        axes.append("t")
    if "".join(_AXIS.sub("", text).split()):
        raise _bad(pattern, "unbalanced parentheses")
    kinds = {("b", "c", "h", "w"): "maps", ("b", "c", "t"): "tokens", ("b", "c"): "vectors"}
    kind = kinds.get(tuple(sorted(axes)))
    if kind is None or len(set(axes)) != len(axes):
        raise _bad(pattern, f"its axes are {' '.join(axes)}")
    if kind == "tokens" and not grid_axes:
        prefix = None
    return Layout(text, kind, tuple(axes), prefix, source=source)


def _bad(pattern: str, why: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"layout {pattern!r}: {why}. A layout names each axis of the activation: 'b c h w' or 'b h w c' for "
        "maps, 'b t c', 'b (h w) c' or 'b (1 + h w) c' (one CLS token before the grid) for tokens, 'b c' for vectors"
    )


def canonical(a: Tensor, layout: Layout) -> Tensor:
    """`a` rearranged from `layout` to its canonical form ("b c h w", "b t c" or "b c"); a view when possible."""
    if a.dim() != layout.rank:
        raise ObjectiveShapeError(
            f"layout {layout.pattern!r} has {layout.rank} axes but the activation has shape {tuple(a.shape)}"
        )
    if layout.canonical:
        return a
    return einops.rearrange(a, f"{' '.join(layout.axes)} -> {CANONICAL[layout.kind]}")


def layout_at(layout: Layout | Refusal, input_hw: tuple[int, int]) -> Layout | Refusal:
    """`layout` with its token grid for a model input of `input_hw` pixels (from its stride, when known)."""
    if not isinstance(layout, Layout) or layout.stride is None:
        return layout
    sh, sw, up = layout.stride
    return dc.replace(layout, grid=(_cells(input_hw[0], sh, up), _cells(input_hw[1], sw, up)))


def token_grid(layout: Layout | None, tokens: int) -> tuple[int, int, int] | str:
    """(offset, rows, cols) of the patch grid in a sequence of `tokens`, or why there is none.

    Example:
        >>> token_grid(parse_layout("b (cls dist + h w) c"), 198), token_grid(None, 17)
        ((2, 14, 14), (1, 4, 4))
    """
    prefix = None if layout is None else layout.prefix
    grid = None if layout is None else layout.grid
    if layout is not None and prefix is None and not layout.guess:
        return (f"{tokens} tokens, and the probe found several ways to split them into prefix tokens and a patch "
                "grid; state the layout, e.g. layout='b (cls 4 + h w) c' for a CLS token and 4 registers, or give "
                "token= to pick a token")
    offsets = (0, 1) if prefix is None else (prefix,)
    for p in offsets:
        n = tokens - p
        if n <= 0:
            continue
        if grid is not None and grid[0] * grid[1] == n:
            return p, grid[0], grid[1]
        side = math.isqrt(n)
        if side * side == n:
            return p, side, side
    if prefix is None:
        return (f"{tokens} tokens are not a square patch grid (with or without one CLS token); state the layout, "
                "e.g. layout='b (cls dist + h w) c' for two prefix tokens, or give token= to pick a token")
    return (f"{tokens} tokens are not {prefix} prefix tokens and a "
            f"{'x'.join(map(str, grid)) if grid else 'square'} patch grid")


# --- detection ----------------------------------------------------------------------------------------


class LaidSite(Site):
    """A `Site` that carries its layout: equal to (and hashing like) the plain site, so `acts[site]` finds it.

    The plan keys its activations with these, so a term that reads a site knows how it is laid out.
    """

    __slots__ = ("layout",)

    def __init__(self, site: Site, layout: Layout | Refusal | None):
        object.__setattr__(self, "model", site.model)
        object.__setattr__(self, "layer", site.layer)
        object.__setattr__(self, "layout", layout)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Site) and self.model == other.model and self.layer == other.layer

    def __hash__(self) -> int:
        return hash((self.model, self.layer))

    def __repr__(self) -> str:
        return f"Site(model={self.model!r}, layer={self.layer!r})"

    def __reduce__(self) -> Any:
        return Site, (self.model, self.layer)


def _plausible(h: int, w: int, size: tuple[int, int]) -> bool:
    """Whether an h x w grid can be `size` divided by one stride (rounded either way)."""
    if h < 1 or w < 1 or h > size[0] or w > size[1]:
        return False
    lo = max(size[0] / (h + 1), size[1] / (w + 1))
    hi = min(size[0] / (h - 1) if h > 1 else math.inf, size[1] / (w - 1) if w > 1 else math.inf)
    return lo < hi


def _cells(pixels: int, stride: float, up: bool) -> int:
    return math.ceil(pixels / stride - 1e-6) if up else math.floor(pixels / stride + 1e-6)


def _token_solutions(ts: list[int], sizes: list[tuple[int, int]]) -> set[tuple[int, int, int, float, float, bool]]:
    """(prefix, rows, cols at sizes[0], row stride, col stride, rounds up) with ts[i] = prefix + grid area at
    sizes[i] for every probed size."""
    out = set()
    h0, w0 = sizes[0]
    for p in range(0, min(MAX_PREFIX if len(sizes) > 1 else MAX_PREFIX_ONE_SIZE, ts[0] - 1) + 1):
        n = ts[0] - p
        pairs = {(d, n // d) for d in range(1, math.isqrt(n) + 1) if n % d == 0}
        for h, w in pairs | {(b, a) for a, b in pairs}:
            if not _plausible(h, w, sizes[0]):
                continue
            for up in (True, False):
                sh, sw = h0 / h, w0 / w
                if all(t - p == _cells(H, sh, up) * _cells(W, sw, up) for t, (H, W) in zip(ts, sizes)):
                    out.add((p, h, w, round(sh, 6), round(sw, 6), up))
    return out


def _group(prefix: int) -> str:
    return f"({prefix} + h w)" if prefix else "(h w)"


def _tokens(axes: tuple[str, ...], shapes: list[tuple[int, ...]], sizes: list[tuple[int, int]], source: str,
            hint: tuple[int, tuple[int, int]] | None) -> Layout:
    ts = [s[axes.index("t")] for s in shapes]
    pattern = " ".join(axes)
    if hint is not None and len(set(ts)) == 1 and ts[0] == hint[0] + hint[1][0] * hint[1][1]:
        p, grid = hint
        return Layout(pattern.replace("t", _group(p)), "tokens", axes, p, grid, None, "model")
    # Tokens that do not change with the input size (the model resizes inside) say nothing about a grid.
    sols = _token_solutions(ts, sizes) if len(sizes) == 1 or len(set(ts)) > 1 else set()
    exact = {s for s in sols if s[1] * sizes[0][1] == s[2] * sizes[0][0]}  # the input's aspect, no rounding
    sols = exact if len({s[0] for s in exact}) == 1 else sols
    if len({s[0] for s in sols}) == 1 and (len(sizes) > 1 or len({s[:3] for s in sols}) == 1):
        # The solutions agree on every probed size: prefer strides that round up, then the squarest cells.
        p, h, w, sh, sw, up = min(sols, key=lambda s: (not s[5], abs(s[3] - s[4])))
        stride = (sh, sw, up) if len(sizes) > 1 else None
        return Layout(pattern.replace("t", _group(p)), "tokens", axes, p, (h, w), stride, source)
    # No grid follows the input (the model resizes inside: the documented guess applies), or several do (refuse x/y).
    return Layout(pattern, "tokens", axes, None, source="rank" if source == "probe" else source, guess=not sols)


def _by_width(fits: list[tuple[str, ...]], shape: tuple[int, ...], widths: frozenset[int]) -> list[tuple[str, ...]]:
    """Of several readings, those whose channel count is one of the module's feature widths (if any is)."""
    if len(fits) < 2:
        return fits
    known = [axes for axes in fits if shape[axes.index("c")] in widths]
    return known or fits


def detect(shapes: list[tuple[int, ...]], sizes: list[tuple[int, int]], batch: int = 1, *,
           module_hint: str | None = None, token_hint: tuple[int, tuple[int, int]] | None = None,
           widths: frozenset[int] = frozenset()) -> Layout | Refusal:
    """The layout of one site from its output shapes at one or two probe input sizes (batch `batch`).

    With two sizes the axes that change are spatial. With one (a model of one fixed size) the spatial
    axes of a map are the pair that is the input divided by one stride; `module_hint` (the pattern
    the site's module type implies, e.g. "b h w c" for an `nn.Linear` on a map) and `token_hint`
    ((prefix, grid) the model states) settle what the shapes cannot; when two readings fit one size,
    the one whose channel count is among the module's `widths` (its Linear/norm/conv widths) wins.
    A map whose shape does not follow the input at all (pooled to a fixed size) is taken as PyTorch's
    (B, C, H, W).

    Example:
        >>> detect([(1, 14, 14, 96), (1, 12, 10, 96)], [(224, 224), (192, 160)]).pattern
        'b h w c'
        >>> detect([(1, 197, 64), (1, 122, 64)], [(224, 224), (176, 176)]).pattern
        'b (1 + h w) c'
        >>> detect([(1, 56, 56, 56)], [(224, 224)])
        Refusal(why='shape (1, 56, 56, 56) could be (B, C, H, W) or (B, H, W, C); ...', source='probe', stateable=True)
    """
    first = shapes[0]
    seen = " / ".join(str(tuple(s)) for s in shapes)
    if len({len(s) for s in shapes}) != 1 or len(first) not in (2, 3, 4):
        return Refusal(f"shape {seen}; supported layouts are (B, C, H, W) feature maps (or channels-last maps), "
                       "(B, tokens, C) sequences and (B, C) vectors", stateable=False)
    if any(s[0] != batch for s in shapes):
        return Refusal(f"shape {seen} for {batch} image(s): the first axis is not one row per image "
                       "(windows or heads folded into the batch); read a layer whose output is batch-first",
                       stateable=False)
    rank = len(first)
    changed = [i for i in range(1, rank) if len({s[i] for s in shapes}) > 1]
    if rank == 2:
        if changed:
            return Refusal(f"shape {seen}: a vector whose length changes with the input size (flattened positions)")
        return Layout("b c", "vectors", ("b", "c"), source="probe" if len(shapes) > 1 else "rank")
    if rank == 4:
        by_change = {(2, 3): ("b", "c", "h", "w"), (1, 2): ("b", "h", "w", "c")}
        axes = by_change.get((changed[0], changed[1])) if len(changed) == 2 else None
        if axes is not None:
            return Layout(" ".join(axes), "maps", axes, source="probe")
        if changed:
            return Refusal(
                f"shape {seen}: axes {changed} change with the input size; state the layout, e.g. layout='b h w c'"
            )
        if module_hint is not None:
            return dc.replace(parse_layout(module_hint), source="module")
        if len(shapes) > 1:  # the same shape at two input sizes: the map does not follow the input (pooled to a size)
            return Layout("b c h w", "maps", ("b", "c", "h", "w"), source="rank")
        fits = [axes for axes, (h, w) in ((("b", "c", "h", "w"), first[2:]), (("b", "h", "w", "c"), first[1:3]))
                if _plausible(h, w, sizes[0])]
        fits = _by_width(fits, first, widths)
        if len(fits) == 1:
            return Layout(" ".join(fits[0]), "maps", fits[0], source="probe")
        return Refusal(f"shape {seen} could be (B, C, H, W) or (B, H, W, C); state the layout, e.g. layout=\"b h w c\"")
    btc, bct = ("b", "t", "c"), ("b", "c", "t")
    if changed == [1] or changed == [2]:
        return _tokens(btc if changed == [1] else bct, shapes, sizes, "probe", token_hint)
    if changed:
        return Refusal(f"shape {seen}: both axes change with the input size; state the layout, e.g. layout='b t c'")
    if module_hint in ("b t c", "b c t"):
        return _tokens(btc if module_hint == "b t c" else bct, shapes, sizes, "module", token_hint)
    if len(shapes) > 1:  # the same tokens at two input sizes: no grid follows the input; channels last, as usual
        return _tokens(btc, shapes, sizes, "rank", token_hint)
    # One size: the token axis is the one that splits into (few) prefix tokens and a grid of the input's shape.
    sols = {axes: _token_solutions([first[axes.index("t")]], sizes) for axes in (btc, bct)}
    exact = [axes for axes, found in sols.items() if any(q[1] * sizes[0][1] == q[2] * sizes[0][0] for q in found)]
    fits = exact if len(exact) == 1 else [axes for axes, found in sols.items() if found]
    if token_hint is not None and first[1] == token_hint[0] + token_hint[1][0] * token_hint[1][1]:
        fits = [btc]
    fits = _by_width(fits, first, widths)
    if len(fits) == 2:
        return Refusal(f"shape {seen} could be (B, T, C) or (B, C, T) tokens; state the layout, e.g. layout='b t c'")
    return _tokens(fits[0] if fits else btc, shapes, sizes, "probe" if fits else "rank", token_hint)
