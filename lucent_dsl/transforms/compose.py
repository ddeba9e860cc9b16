"""Joining transforms: identity, as_transform, chain (fuses consecutive geometric ones), is_compilable,
as_transform_arg. The ready-made recipes built with them (`standard()`, `scaled`, `robust()`, ...) are in
`transforms.recipes`.

Example:
    >>> from lucent_dsl.transforms import jitter, pad
    >>> t = chain(pad(2), jitter(1), identity())
    >>> t.apply(torch.rand(1, 3, 8, 8), t.sample(None, (1, 3, 8, 8))).shape
    torch.Size([1, 3, 12, 12])
"""
from __future__ import annotations

import dataclasses as dc
import warnings
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import Tensor

from ..errors import InvalidArgumentError
from ._common import MSG_AS_TRANSFORM, Shape, Transform, TransformParams
from .geometry import Warp, warp

# --------------------------------------------------------------------------------------------
# Combinators


def _identity_sample(g: torch.Generator | None, shape: Shape) -> None:
    return None


def _identity_apply(image: Tensor, params: None) -> Tensor:
    return image


def identity() -> Transform:
    """The transform that returns its input (`chain` drops it).

    Example:
        >>> x = torch.rand(1, 3, 4, 4)
        >>> t = identity()
        >>> t.apply(x, t.sample(None, x.shape)) is x
        True
    """
    return Transform(_identity_sample, _identity_apply)


def meta_out_shape(fn: Callable[[Tensor], Tensor], shape: Shape) -> Shape:
    try:
        return torch.Size(fn(torch.empty(shape, device="meta")).shape)
    except Exception:  # noqa: BLE001 - best effort: a callable that meta tensors break keeps the shape
        return torch.Size(shape)


@dc.dataclass(frozen=True)
class Wrapped:
    """The `apply` of `as_transform(fn)`: ignores params; finds its output shape on meta tensors."""

    fn: Callable[[Tensor], Tensor]

    def __call__(self, image: Tensor, params: None) -> Tensor:
        return self.fn(image)

    def out_shape(self, shape: Shape) -> Shape:
        return meta_out_shape(self.fn, shape)


def as_transform(fn: Callable[[Tensor], Tensor]) -> Transform:
    """Wrap any `Tensor -> Tensor` callable (a torchvision v2 transform, say) as a Transform.

    `sample` returns None; `apply(image, None)` is `fn(image)`. Wrapping warns once (a
    `UserWarning`): the callable may cost a graph break under torch.compile and its randomness
    ignores the render's generator. A Transform is returned unchanged, without a warning.

    Raises:
        InvalidArgumentError: `fn` is not callable.

    Example:
        >>> import warnings
        >>> from torchvision.transforms import v2
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     t = as_transform(v2.RandomHorizontalFlip(p=1.0))
        >>> x = torch.rand(1, 3, 4, 4)
        >>> torch.equal(t.apply(x, t.sample(None, x.shape)), x.flip(-1))
        True
    """
    if isinstance(fn, Transform):
        return fn
    if not callable(fn):
        raise InvalidArgumentError(
            f"as_transform({fn!r}): expected a callable Tensor -> Tensor or a Transform, "
            f"got {type(fn).__name__}."
        )
    return wrap(fn, stacklevel=3)


def wrap(fn: Callable[[Tensor], Tensor], *, stacklevel: int) -> Transform:
    warnings.warn(MSG_AS_TRANSFORM.format(fn=fn), UserWarning, stacklevel=stacklevel)
    return Transform(_identity_sample, Wrapped(fn))


def out_shape(t: Transform, shape: Shape) -> Shape:
    f = getattr(t.apply, "out_shape", None)
    return f(shape) if f is not None else torch.Size(shape)


@dc.dataclass(frozen=True)
class _Chained:
    """The `apply` of a chain: threads the image through its parts; params are a tuple."""

    parts: tuple[Transform, ...]

    def sample(self, g: torch.Generator | None, shape: Shape) -> tuple[TransformParams, ...]:
        out = []
        shape = torch.Size(shape)
        for t in self.parts:
            out.append(t.sample(g, shape))
            shape = out_shape(t, shape)
        return tuple(out)

    def __call__(self, image: Tensor, params: tuple[TransformParams, ...]) -> Tensor:
        for t, p in zip(self.parts, params, strict=True):
            image = t.apply(image, p)
        return image

    def out_shape(self, shape: Shape) -> Shape:
        for t in self.parts:
            shape = out_shape(t, shape)
        return torch.Size(shape)


def _as_part(t: object, i: int) -> Transform:
    if isinstance(t, Transform):
        return t
    if isinstance(t, tuple) and len(t) == 2 and all(map(callable, t)):
        return Transform(*t)
    if callable(t):
        return wrap(cast("Callable[[Tensor], Tensor]", t), stacklevel=4)  # points at chain's caller
    raise InvalidArgumentError(
        f"chain(...): argument {i} is {t!r} ({type(t).__name__}); expected a Transform, "
        "a (sample, apply) pair, or a callable Tensor -> Tensor."
    )


def _fusable(a: Transform, b: Transform) -> bool:
    """Whether geometric runs `a` then `b` can be one sampling: the same boundary rule, and `a` not resampled
    to a size (`sampled_at`: `b` reads that resized image, which one sampling of `a`'s canvas cannot give)."""
    if not (isinstance(a.apply, Warp) and isinstance(b.apply, Warp)) or a.apply.size is not None:
        return False
    ma, mb = a.apply.mode, b.apply.mode
    return ma is None or mb is None or ma == mb


def _fused(a: Warp, b: Warp) -> Transform:
    """`a` then `b` as one geometric run, sampled at `b`'s size when it has one."""
    t = warp(*a.ops, *b.ops)
    return t if b.size is None else cast(Transform, sampled_at(t, b.size))


def chain(*transforms: Transform | Callable[[Tensor], Tensor]) -> Transform:
    """Apply transforms in order, fusing consecutive geometric ones into one `grid_sample`.

    Plain callables are wrapped with `as_transform` (which warns). Nested chains are flattened
    and `identity()` parts dropped. Consecutive geometric transforms (`pad`, `jitter`,
    `random_scale`, `random_rotate`, `affine`, `crops`) become one part whose params are the
    product of their per-image matrices; the run reads the source image once, with the
    boundary rule of its first `pad` (reflection if none). So `chain(pad(12, mode="constant"),
    jitter(8))` fills what the jitter shifts in with the constant too, as Lucid's pad-then-crop
    does; a `pad` with a different mode starts a new run.

    Returns:
        A Transform; its params are the single part's params, or a tuple with one entry per part.

    Raises:
        InvalidArgumentError: an argument is neither a Transform nor callable.

    Example:
        >>> from lucent_dsl.transforms import gaussian_blur, jitter, pad, random_scale
        >>> t = chain(pad(4), jitter(2), random_scale((0.9, 1.1)), gaussian_blur(0.5))
        >>> p = t.sample(torch.Generator().manual_seed(0), (2, 3, 8, 8))
        >>> len(p), tuple(p[0].shape)      # two parts: the fused geometry, then the blur
        (2, (2, 3, 3))
    """
    parts: list[Transform] = []
    for i, arg in enumerate(transforms):
        t = _as_part(arg, i)
        for p in t.apply.parts if isinstance(t.apply, _Chained) else (t,):
            if p.apply is _identity_apply:
                continue
            if parts and _fusable(parts[-1], p):
                parts[-1] = _fused(cast(Warp, parts[-1].apply), cast(Warp, p.apply))
            else:
                parts.append(p)
    if not parts:
        return identity()
    if len(parts) == 1:
        return parts[0]
    c = _Chained(tuple(parts))
    return Transform(c.sample, c)


def sampled_at(t: Transform, size: tuple[int, int]) -> Transform | None:
    """`t` with its output sampled at `size` (H, W) by its last `grid_sample`, or None when `t` does not
    end in a geometric run (then resize after it).

    `sampled_at(t, s).apply(x, p)` is `t.apply(x, p)` bilinearly resized to `s`, done in one sampling:
    the fused geometry reads the source at the resized output's pixel centres, so the double
    interpolation (and the resize's forward and backward) is skipped. The params, and the random
    draws that make them, are the same as `t`'s. A render gives each model that resizes the
    transformed image its input sampled this way (`steps.model_inputs`). Its name is `t`'s with "@HxW" (a
    recipe cannot name it: a render given it records why it is not replayable).

    Example:
        >>> from lucent_dsl.transforms import jitter, pad
        >>> t = chain(pad(4), jitter(2))
        >>> x = torch.rand(1, 3, 16, 16)
        >>> p = t.sample(torch.Generator().manual_seed(0), x.shape)
        >>> tuple(sampled_at(t, (16, 16)).apply(x, p).shape), tuple(t.apply(x, p).shape)
        ((1, 3, 16, 16), (1, 3, 24, 24))
    """
    size = (int(size[0]), int(size[1]))
    name = f"{t.name}@{size[0]}x{size[1]}" if t.name else ""  # not the recipe name of `t`: it samples otherwise
    if isinstance(t.apply, Warp):
        w = dc.replace(t.apply, size=size)
        return t._replace(sample=w.sample, apply=w, name=name)
    if isinstance(t.apply, _Chained) and isinstance(t.apply.parts[-1].apply, Warp):
        last = sampled_at(t.apply.parts[-1], size)
        c = _Chained((*t.apply.parts[:-1], cast(Transform, last)))
        return t._replace(sample=c.sample, apply=c, name=name)
    return None


def is_compilable(t: Transform) -> bool:
    """False when `t` contains an `as_transform`-wrapped callable that fullgraph compiling may reject.

    Example:
        >>> from lucent_dsl.transforms import standard
        >>> is_compilable(standard())
        True
    """
    if isinstance(t.apply, _Chained):
        return all(is_compilable(p) for p in t.apply.parts)
    return not isinstance(t.apply, Wrapped)


def as_transform_arg(transforms: Any) -> Transform:
    """A `transforms=` argument as one Transform: a Transform, a callable, or a list of them ([] = none).

    Example:
        >>> as_transform_arg([]) == identity()
        True
    """
    if isinstance(transforms, Transform):
        return transforms
    if isinstance(transforms, (list, tuple)):
        return chain(*transforms) if transforms else identity()
    if callable(transforms):
        return chain(cast(Callable[[Tensor], Tensor], transforms))
    raise InvalidArgumentError(
        "transforms must be a Transform, a callable Tensor -> Tensor, or a list of them, got "
        f"{type(transforms).__name__}"
    )
