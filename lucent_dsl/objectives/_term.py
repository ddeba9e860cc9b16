"""The shared toolkit of every term: argument checks, layouts, positions, per-image reduction.

Private to the vocabulary package; terms in other rooms import it from here, never `_` names.

Layouts: a plan hands every term its activations in canonical form ((B, C, H, W) maps, (B, T, C)
tokens, (B, C) vectors), keyed by a `LaidSite` that carries the site's `Layout` (prefix tokens and
patch grid included; see `lucent_dsl.models.layouts`). `LayerTerm.read` returns that site, so the helpers
below know the layout instead of guessing it from the rank. A site the plan could not lay out
raises `ObjectiveShapeError` here, naming its shape and asking for `layout=`. Activations passed
outside a plan (a plain dict) fall back to the rank rule, or to the term's own `layout=` if it has one.
"""
from __future__ import annotations

import dataclasses as dc
import numbers
import operator
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import Tensor

from ..dsl.expr import Acts, Array, Site, Term, finite
from ..errors import InvalidArgumentError, ObjectiveShapeError
from ..models.layouts import LaidSite, Layout, Refusal, canonical, parse_layout, token_grid

Batch = int | range | None
T = TypeVar("T")

if TYPE_CHECKING:
    from typing_extensions import dataclass_transform
else:
    def dataclass_transform(**_: Any) -> Callable[[T], T]:
        return lambda f: f


@dataclass_transform(frozen_default=True)
def frozen(cls: type[T]) -> type[T]:
    """A term's dataclass: frozen, slotted, printed by the DSL printer (`repr=False`)."""
    return dc.dataclass(frozen=True, slots=True, repr=False)(cls)


# --- argument checks ------------------------------------------------------------------------


def check_index(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise InvalidArgumentError(f"{what} must be a non-negative int, got {v!r} ({type(v).__name__})")
    i = operator.index(v)
    if i < 0:
        raise InvalidArgumentError(f"{what} must be a non-negative int, got {i}")
    return i


def check_opt_index(v: Any, what: str) -> int | None:
    return None if v is None else check_index(v, what)


def check_batch(v: Any) -> Batch:
    if v is None:
        return None
    if isinstance(v, range):
        if not v or v.start < 0 or v.stop < 0:  # not len(v): it overflows for huge ranges
            raise InvalidArgumentError(f"batch={v!r} must be a non-empty range of non-negative indices")
        return v
    return check_index(v, "batch")


def check_layer(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise InvalidArgumentError(
            f"a layer name must be a non-empty string such as 'layer4' or 'features.14', got {v!r}"
        )
    return v


def check_model(v: Any) -> str | None:
    if v is not None and (not isinstance(v, str) or not v):
        raise InvalidArgumentError(f"model= must be a model name (a string) or None, got {v!r}")
    return v


def check_vector(v: Any, what: str) -> tuple[float, ...]:
    if isinstance(v, (str, bytes)) or not hasattr(v, "__len__") and not isinstance(v, Tensor):
        raise InvalidArgumentError(f"{what} must be a sequence of numbers or a 1-D tensor, got {v!r}")
    if isinstance(v, Tensor):
        if v.dim() != 1:
            raise InvalidArgumentError(f"{what} must be 1-D, got a tensor of shape {tuple(v.shape)}")
        v = v.detach().cpu().tolist()
    out = tuple(finite(x, f"each value of {what}") for x in v)
    if not out:
        raise InvalidArgumentError(f"{what} must not be empty")
    return out


def check_layout(v: Any) -> str | None:
    """A term's `layout=`: None, or an einops pattern of the activation (see `lucent_dsl.models.layouts`), normalized.

    Example:
        >>> check_layout("b  h w c"), check_layout(None)
        ('b h w c', None)
    """
    return None if v is None else parse_layout(v).pattern


CONVENTIONS = ("lucent_dsl", "lucid")
"""`convention=` of the terms whose peers (Lucid, lucent, captum) compute another number under the same name:
"lucent_dsl" (the default: per-image means, what saved recipes mean) or "lucid" (the peers' number, so weights
copied from their notebooks act as strongly as there). objectives.catalog's rows give each conversion."""


def check_convention(v: Any) -> str:
    if v not in CONVENTIONS:
        raise InvalidArgumentError(
            f"convention= must be one of {CONVENTIONS} ('lucid': the number Lucid, lucent and captum compute under "
            f"this name), got {v!r}"
        )
    return v


def check_target(v: Any) -> Array | float:
    if isinstance(v, Array) or isinstance(v, Tensor) or isinstance(v, (list, tuple)):
        return Array.of(v)
    return finite(v, "target")


# --- shared tensor helpers (plain Python checks: free under torch.compile) ---------------------------


def tensor_at(term: Term, acts: Acts, site: Site) -> Tensor:
    a = acts[site]
    if not isinstance(a, Tensor):
        raise ObjectiveShapeError(
            f"{term!r} reads {site}, whose output is a {type(a).__name__}, not a tensor; "
            f"select an entry with '/key' or '/index', e.g. '{site.layer}/0' or '{site.layer}/out'"
        )
    return a


def site_layout(site: Site) -> Layout | None:
    """The layout a plan attached to `site` (None outside a plan)."""
    lay = getattr(site, "layout", None)
    return lay if isinstance(lay, Layout) else None


def layout_of(term: Term, site: Site, a: Tensor) -> str:
    """"maps", "tokens" or "vectors": the site's known layout, else the rank of a canonical activation."""
    lay = getattr(site, "layout", None)
    if isinstance(lay, Refusal):
        how = (f" (state it as an einops pattern: layout= on the term, compile_plan(..., layouts={{{site.layer!r}: "
               "'b h w c'}) or ModelInfo(layouts=...))") if lay.stateable else ""
        raise ObjectiveShapeError(f"{term!r} reads {site}: {lay.why}{how}")
    if isinstance(lay, Layout) and a.dim() == lay.rank:
        return lay.kind
    layouts = {4: "maps", 3: "tokens", 2: "vectors"}
    if a.dim() not in layouts:
        raise ObjectiveShapeError(
            f"{term!r} reads {site} with activation shape {tuple(a.shape)}; supported layouts are "
            "(B, C, H, W) feature maps, (B, tokens, C) sequences and (B, C) vectors"
        )
    return layouts[a.dim()]


def rows_channels_positions(term: Term, site: Site, a: Tensor) -> Tensor:
    """Activations as (rows, channels, positions), whatever the layout (`a` is canonical, see the module docstring)."""
    kind = layout_of(term, site, a)
    if kind == "maps":
        return a.flatten(2)
    if kind == "tokens":
        return a.transpose(1, 2)
    return a.unsqueeze(-1)


def patch_positions(term: Term, site: Site, a: Tensor) -> Tensor:
    """`rows_channels_positions` over the positions a mean runs over: a token sequence's patch grid, without the
    prefix tokens its layout states (CLS, distillation, registers; reach those with token=). All tokens where the
    prefix is not known."""
    cp = rows_channels_positions(term, site, a)
    lay = site_layout(site)
    if lay is not None and lay.kind == "tokens" and lay.prefix and a.dim() == 3 and cp.shape[-1] > lay.prefix:
        return cp[..., lay.prefix:]
    return cp


def check_channel(term: Term, site: Site, index: int, channels: int) -> None:
    if index >= channels:
        raise ObjectiveShapeError(
            f"{term!r}: layer {site} has {channels} channels (0..{channels - 1}), not index {index}"
        )


def check_len(term: Term, site: Site, n: int, channels: int, what: str) -> None:
    if n != channels:
        raise ObjectiveShapeError(f"{term!r}: {what} has {n} values but layer {site} has {channels} channels")


def per_image(term: Term, rows: Tensor, n: int, batch: Batch) -> Tensor:
    """Per-row scores (R,) -> per-image scores (n,): average the crops of each image, mask by batch.

    Rows are crop-major: row k*n + b is crop k of image b.
    """
    r = rows.shape[0]
    if r % n or not r:  # no rows at all: the mean below would be NaN
        raise ObjectiveShapeError(f"{term!r}: the activation has {r} rows, which is not a multiple of the {n} image(s)")
    v = rows.reshape(r // n, n).mean(0) if r != n else rows
    if batch is None:
        return v
    last = batch if isinstance(batch, int) else max(batch[0], batch[-1])  # O(1), even for range(10**9)
    if last >= n:
        raise ObjectiveShapeError(f"{term!r} selects image {last} but the render has {n} image(s) (0..{n - 1})")
    mask = torch.zeros(n, dtype=v.dtype, device=v.device)
    mask[[batch] if isinstance(batch, int) else list(batch)] = 1.0
    return v * mask


def check_rows_of(term: Term, site: Site, a: Tensor, n: int) -> None:
    """Terms that compare the images of a batch need every image's rows (crop-major, see `per_image`)."""
    r = a.shape[0]
    if r < n or r % n:
        raise ObjectiveShapeError(
            f"{term!r}: {site} has {r} rows, which is not a multiple of the {n} image(s) of the render"
        )


def patch_grid(term: Term, site: Site, tokens: int) -> tuple[int, int, int]:
    """(offset, rows, cols) of the patch grid inside a token sequence: the site's layout says how many prefix
    tokens come first (CLS, distillation, registers) and the grid's shape; without one, a square grid after
    0 or 1 CLS token."""
    found = token_grid(site_layout(site), tokens)
    if isinstance(found, str):
        raise ObjectiveShapeError(f"{term!r}: {site} has {found}")
    return found


def position_index(term: Term, site: Site, a: Tensor, x: int | None, y: int | None, token: int | None) -> int:
    """An index that picks one spatial position of every row and channel: a[:, :, pos] of rows_channels_positions."""
    kind = layout_of(term, site, a)
    if kind == "vectors":
        if x is not None or y is not None or token is not None:
            raise ObjectiveShapeError(f"{term!r}: {site} holds (B, C) vectors, which have no x/y position")
        return 0
    if kind == "tokens":
        t = a.shape[1]
        if token is not None:
            if x is not None or y is not None:
                raise InvalidArgumentError(f"{term!r}: give either token= or x/y, not both")
            if token >= t:
                raise ObjectiveShapeError(f"{term!r}: {site} has {t} tokens (0..{t - 1}), not token {token}")
            return token
        offset, h, w = patch_grid(term, site, t)
    else:
        if token is not None:
            raise ObjectiveShapeError(f"{term!r}: token= applies to (B, tokens, C) sequences; {site} is a feature map")
        offset, h, w = 0, a.shape[2], a.shape[3]
    xx = w // 2 if x is None else x
    yy = h // 2 if y is None else y
    if xx >= w or yy >= h:
        raise ObjectiveShapeError(
            f"{term!r}: position x={xx}, y={yy} is outside {site}'s {h}x{w} map (x < {w}, y < {h})"
        )
    return offset + yy * w + xx


def dot_cos(x: Tensor, y: Tensor, power: float) -> Tensor:
    """Lucid's dot(x, y) * max(cos(x, y), 0.1)**power along dim 1."""
    dot = (x * y).sum(1)
    if power == 0:
        return dot
    cos = dot / (x.norm(dim=1) + 1e-6) / (y.norm(dim=1) + 1e-6)
    return dot * cos.clamp(min=0.1) ** power


# --- layer terms ----------------------------------------------------------------------------------


class LayerTerm(Term):
    """A term that reads one layer of one model."""

    __slots__ = ()

    def sites(self) -> tuple[Site, ...]:
        return (Site(self.model, self.layer),)  # type: ignore[attr-defined]

    def read(self, acts: Acts) -> tuple[Site, Tensor]:
        """(the site, with its layout when a plan gave one; the activation in canonical form)."""
        site = self.sites()[0]
        a = tensor_at(self, acts, site)
        site, a = laid_out(self, acts, site, a)
        # Without these checks, integer maps fail deep inside torch's mean() and empty ones score NaN.
        if not a.is_floating_point() or a.layout != torch.strided:
            raise ObjectiveShapeError(
                f"{self!r} reads {site}, whose output holds {a.dtype} values"
                f"{'' if a.layout == torch.strided else f' ({a.layout})'}; objectives need dense floating-point "
                "activations: pick a layer that outputs features, not indices or masks"
            )
        if a.numel() == 0:
            raise ObjectiveShapeError(f"{self!r} reads {site}, whose output is empty (shape {tuple(a.shape)})")
        return site, a


def laid_key(acts: Acts, site: Site) -> Site:
    """The key `site` is stored under in `acts`: the plan's `LaidSite` (it carries the layout), else `site`."""
    return next((key for key in acts if isinstance(key, LaidSite) and key == site), site)


def laid_out(term: Term, acts: Acts, site: Site, a: Tensor) -> tuple[Site, Tensor]:
    """The key a plan stored `site` under (it carries the layout), or the term's own `layout=` applied to a raw
    activation given outside a plan."""
    stated = getattr(term, "layout", None)
    key = laid_key(acts, site)
    if isinstance(key, LaidSite):
        return key, a  # the plan already rearranged `a` (it also applied this term's layout=, see compile_plan)
    if stated is None:
        return site, a
    lay = _parsed(stated)
    return LaidSite(site, lay), canonical(a, lay)


def _parsed(pattern: str) -> Layout:
    if torch.compiler.is_compiling():
        return parse_layout(pattern)
    return _PARSED.get(pattern) or _PARSED.setdefault(pattern, parse_layout(pattern))


_PARSED: dict[str, Layout] = {}
