"""The toolkit every transform shares: `Transform`, argument checks, random draws, 3x3 matrices.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..args import check_real
from ..errors import InvalidArgumentError
from ..models.checks import generator_device

TransformParams = Any  # a pytree of tensors, or None
Shape = torch.Size

PAD_MODES = ("reflect", "replicate", "constant")
GRID_PADDING = {"reflect": "reflection", "replicate": "border", "constant": "zeros"}

MSG_AS_TRANSFORM = (
    "as_transform({fn!r}): lucent_dsl cannot see inside this callable. Under torch.compile it may "
    "cost a graph break (an error with fullgraph=True), and any randomness it has ignores the "
    "render's torch.Generator, so the run cannot be replayed. Prefer lucent_dsl.transforms "
    "(jitter, random_scale, random_rotate, gaussian_blur, noise, crops) where one fits."
)


class Transform(NamedTuple):
    """A robustness transform as a pure pair of functions.

    Attributes:
        sample: `(generator, shape) -> params`: draws every random number for an image batch of
            that shape as tensors on `generator.device` (None: the default CPU generator). Each
            image of the batch gets its own draw.
        apply: `(image, params) -> image`: deterministic tensor code; the output shape depends
            only on `image.shape`.

    Shape:
        image: (B, C, H, W) -> (B', C, H', W'), with B' a multiple of B (only `crops` changes it).

    Example:
        >>> from lucent_dsl.transforms import jitter
        >>> t = jitter(2)
        >>> image = torch.rand(1, 3, 8, 8)
        >>> out = t.apply(image, t.sample(torch.Generator().manual_seed(0), image.shape))
        >>> out.shape == image.shape
        True
    """

    sample: Callable[[torch.Generator | None, Shape], TransformParams]
    apply: Callable[[Tensor, TransformParams], Tensor]
    name: str = ""  # a recipe's name for it ("standard", "robust"; see `replay.Recipe.transforms`), "" if none


# --------------------------------------------------------------------------------------------
# Argument checks


def fail(call: str, message: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"{call}: {message}")


class Dist(NamedTuple):
    """A per-image distribution of one number: uniform on [lo, hi], or uniform over `choices`."""

    lo: float
    hi: float
    choices: tuple[float, ...] | None = None


def distribution(call: str, name: str, spec: object, *, minimum: float | None = None,
          positive: bool = False, upper: float | None = None) -> Dist:
    """Parse a tuple `(lo, hi)` as a range and any other iterable as a set of choices."""
    def real(v: object) -> float:
        x = check_real(name, v, minimum=minimum, positive=positive, where=call)
        if upper is not None and x > upper:
            raise fail(call, f"{name} values must be <= {upper}, got {v!r}.")
        return x

    if isinstance(spec, tuple) and len(spec) == 2:
        lo, hi = real(spec[0]), real(spec[1])
        if lo > hi:
            raise fail(call, f"{name}=(lo, hi) needs lo <= hi, got {spec!r}.")
        return Dist(lo, hi)
    if isinstance(spec, (str, bytes)) or not isinstance(spec, Iterable):
        raise fail(call, f"{name} must be a (lo, hi) tuple or a sequence of values, got {spec!r}.")
    values = tuple(real(v) for v in spec)
    if not values:
        raise fail(call, f"{name} must not be empty, got {spec!r}.")
    return Dist(min(values), max(values), values)


def check_shape(what: str, shape: Shape) -> Shape:
    shape = torch.Size(shape)
    if len(shape) != 4:
        raise InvalidArgumentError(
            f"{what}: transforms take image batches of shape (B, C, H, W), got {tuple(shape)}."
        )
    return shape


# --------------------------------------------------------------------------------------------
# Sampling helpers: tensors only, on the generator's device


def draw(d: Dist, g: torch.Generator | None, n: int) -> Tensor:
    dev = generator_device(g)
    if d.choices is not None:
        idx = torch.randint(len(d.choices), (n,), generator=g, device=dev)
        return torch.tensor(d.choices, dtype=torch.float32, device=dev)[idx]
    return d.lo + (d.hi - d.lo) * torch.rand(n, generator=g, device=dev)


def matrix(m00: Tensor, m01: Tensor | float, m02: Tensor | float,
            m10: Tensor | float, m11: Tensor | float, m12: Tensor | float) -> Tensor:
    """Stack per-image entries (tensors of shape (N,) or floats) into (N, 3, 3) matrices."""
    zero = torch.zeros_like(m00)
    rows = [torch.as_tensor(v, dtype=m00.dtype, device=m00.device).expand_as(m00)
            for v in (m00, m01, m02, m10, m11, m12)]
    return torch.stack([*rows, zero, zero, torch.ones_like(m00)], dim=-1).view(-1, 3, 3)


# --------------------------------------------------------------------------------------------
# Geometric transforms: matrices, fused into one grid_sample


Mode = tuple[str, float]  # (pad mode, fill value for "constant")


class Geo(NamedTuple):
    """One geometric step: its matrix sampler, its static output shape, its boundary rule."""

    matrix: Callable[[torch.Generator | None, Shape], Tensor]  # (B_out, 3, 3), output -> input
    out_shape: Callable[[Shape], Shape]
    mode: Mode | None = None  # None: takes the boundary rule of the group it is fused into


def same_shape(shape: Shape) -> Shape:
    return torch.Size(shape)
