"""Robustness transforms: `Transform(sample, apply)` pairs, joined by `chain`.

A transform is split the kornia way: `sample(generator, shape)` draws every random number as a
tensor, outside any compiled region; `apply(image, params)` is deterministic tensor code that
`torch.compile(fullgraph=True)` traces once. The output shape depends only on the input shape,
never on the draws, so a render compiles its step once.

Geometric transforms (`pad`, `jitter`, `random_scale`, `random_rotate`, `affine`, `crops`) are
per-image 3x3 matrices. `chain` multiplies the matrices of consecutive geometric transforms in
`sample` and `apply` runs a single batched `F.grid_sample` for the whole run, so the image is
interpolated once per step instead of once per transform.

Matrix convention (stated here once). A geometric transform's params are a `(B_out, 3, 3)`
float tensor `M` that maps *output* pixels to *input* pixels (the inverse map, as
`F.affine_grid` uses), in centred pixel coordinates: `x = col - (W - 1) / 2`,
`y = row - (H - 1) / 2`, `y` pointing down. Centred pixels turn into `grid_sample`'s normalized
coordinates (`align_corners=False`, where -1 and +1 are the outer edges of the border pixels) as
`x_norm = 2 x / W`, `y_norm = 2 y / H`; `_Warp.__call__` is the only place that conversion is made.
Angles are in degrees, positive turns the picture counter-clockwise as displayed (as
`torchvision.transforms.v2.functional.rotate`); jitter is in pixels of that transform's input;
scale > 1 zooms in; everything turns and zooms about the image centre.

Example:
    >>> import torch
    >>> t = chain(pad(2), jitter(1), random_rotate((-5.0, 5.0)))
    >>> g = torch.Generator().manual_seed(0)
    >>> image = torch.rand(2, 3, 8, 10)
    >>> params = t.sample(g, image.shape)
    >>> tuple(params.shape)          # one fused matrix per image
    (2, 3, 3)
    >>> tuple(t.apply(image, params).shape)
    (2, 3, 12, 14)
"""
from __future__ import annotations

import dataclasses as dc
import functools as ft
import math
import numbers
import operator
import warnings
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import InvalidArgumentError

__all__ = [
    "Transform",
    "TransformParams",
    "affine",
    "as_transform",
    "chain",
    "crops",
    "gaussian_blur",
    "identity",
    "is_compilable",
    "jitter",
    "noise",
    "pad",
    "random_rotate",
    "random_scale",
    "standard",
]

TransformParams = Any  # a pytree of tensors, or None
Shape = torch.Size

PAD_MODES = ("reflect", "replicate", "constant")
_GRID_PADDING = {"reflect": "reflection", "replicate": "border", "constant": "zeros"}

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
        >>> t = jitter(2)
        >>> image = torch.rand(1, 3, 8, 8)
        >>> out = t.apply(image, t.sample(torch.Generator().manual_seed(0), image.shape))
        >>> out.shape == image.shape
        True
    """

    sample: Callable[[torch.Generator | None, Shape], TransformParams]
    apply: Callable[[Tensor, TransformParams], Tensor]


# --------------------------------------------------------------------------------------------
# Argument checks


def _fail(call: str, message: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"{call}: {message}")


def _is_real(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _check_int(call: str, name: str, v: object, *, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise _fail(call, f"{name} must be an int >= {minimum}, got {v!r}.")
    if v < minimum:
        raise _fail(call, f"{name} must be an int >= {minimum}, got {v!r}.")
    return operator.index(v)


def _check_real(call: str, name: str, v: object, *, minimum: float | None = None,
                positive: bool = False) -> float:
    if not _is_real(v) or not math.isfinite(float(v)):  # type: ignore[arg-type]
        raise _fail(call, f"{name} must be a finite number, got {v!r}.")
    x = float(v)  # type: ignore[arg-type]
    if positive and x <= 0:
        raise _fail(call, f"{name} must be > 0, got {v!r}.")
    if minimum is not None and x < minimum:
        raise _fail(call, f"{name} must be >= {minimum}, got {v!r}.")
    return x


class _Dist(NamedTuple):
    """A per-image distribution of one number: uniform on [lo, hi], or uniform over `choices`."""

    lo: float
    hi: float
    choices: tuple[float, ...] | None = None


def _dist(call: str, name: str, spec: object, *, minimum: float | None = None,
          positive: bool = False, upper: float | None = None) -> _Dist:
    """Parse a tuple `(lo, hi)` as a range and any other iterable as a set of choices."""
    def real(v: object) -> float:
        x = _check_real(call, name, v, minimum=minimum, positive=positive)
        if upper is not None and x > upper:
            raise _fail(call, f"{name} values must be <= {upper}, got {v!r}.")
        return x

    if isinstance(spec, tuple) and len(spec) == 2:
        lo, hi = real(spec[0]), real(spec[1])
        if lo > hi:
            raise _fail(call, f"{name}=(lo, hi) needs lo <= hi, got {spec!r}.")
        return _Dist(lo, hi)
    if isinstance(spec, (str, bytes)) or not isinstance(spec, Iterable):
        raise _fail(call, f"{name} must be a (lo, hi) tuple or a sequence of values, got {spec!r}.")
    values = tuple(real(v) for v in spec)
    if not values:
        raise _fail(call, f"{name} must not be empty, got {spec!r}.")
    return _Dist(min(values), max(values), values)


def _check_shape(what: str, shape: Shape) -> Shape:
    shape = torch.Size(shape)
    if len(shape) != 4:
        raise InvalidArgumentError(
            f"{what}: transforms take image batches of shape (B, C, H, W), got {tuple(shape)}."
        )
    return shape


# --------------------------------------------------------------------------------------------
# Sampling helpers: tensors only, on the generator's device


def _device(g: torch.Generator | None) -> torch.device | None:
    return g.device if g is not None else None


def _draw(d: _Dist, g: torch.Generator | None, n: int) -> Tensor:
    dev = _device(g)
    if d.choices is not None:
        idx = torch.randint(len(d.choices), (n,), generator=g, device=dev)
        return torch.tensor(d.choices, dtype=torch.float32, device=dev)[idx]
    return d.lo + (d.hi - d.lo) * torch.rand(n, generator=g, device=dev)


def _matrix(m00: Tensor, m01: Tensor | float, m02: Tensor | float,
            m10: Tensor | float, m11: Tensor | float, m12: Tensor | float) -> Tensor:
    """Stack per-image entries (tensors of shape (N,) or floats) into (N, 3, 3) matrices."""
    zero = torch.zeros_like(m00)
    rows = [torch.as_tensor(v, dtype=m00.dtype, device=m00.device).expand_as(m00)
            for v in (m00, m01, m02, m10, m11, m12)]
    return torch.stack([*rows, zero, zero, torch.ones_like(m00)], dim=-1).view(-1, 3, 3)


# --------------------------------------------------------------------------------------------
# Geometric transforms: matrices, fused into one grid_sample


_Mode = tuple[str, float]  # (pad mode, fill value for "constant")


class _Geo(NamedTuple):
    """One geometric step: its matrix sampler, its static output shape, its boundary rule."""

    matrix: Callable[[torch.Generator | None, Shape], Tensor]  # (B_out, 3, 3), output -> input
    out_shape: Callable[[Shape], Shape]
    mode: _Mode | None = None  # None: takes the boundary rule of the group it is fused into


def _same_shape(shape: Shape) -> Shape:
    return torch.Size(shape)


@dc.dataclass(frozen=True)
class _Warp:
    """The `apply` of a run of fused geometric steps: one batched `grid_sample`.

    The run reads the source image extended by one boundary rule: the mode of its first step
    that has one (a `pad`), or reflection. `chain` starts a new run at a `pad` whose mode
    differs, since two boundary rules cannot share one sampling.
    """

    ops: tuple[_Geo, ...]

    @property
    def mode(self) -> _Mode | None:
        return next((op.mode for op in self.ops if op.mode is not None), None)

    def out_shape(self, shape: Shape) -> Shape:
        for op in self.ops:
            shape = op.out_shape(shape)
        return torch.Size(shape)

    def sample(self, g: torch.Generator | None, shape: Shape) -> Tensor:
        shape = _check_shape("geometric transform", shape)
        first, *rest = self.ops
        m = first.matrix(g, shape)
        shape = first.out_shape(shape)
        for op in rest:
            step = op.matrix(g, shape)
            # crops multiply the batch, crop-major: row k*B + b continues row b of the batch before
            m = m.repeat(step.shape[0] // m.shape[0], 1, 1) @ step
            shape = op.out_shape(shape)
        return m

    def __call__(self, image: Tensor, m: Tensor) -> Tensor:
        b0, c, h_in, w_in = image.shape
        b1, _, h, w = self.out_shape(image.shape)
        if tuple(m.shape) != (b1, 3, 3):
            raise InvalidArgumentError(
                f"geometric transform: params of shape {tuple(m.shape)} do not fit an image of "
                f"shape {tuple(image.shape)}; expected ({b1}, 3, 3). Sample them with "
                "transform.sample(generator, image.shape)."
            )
        k = b1 // b0
        kind, value = self.mode or ("reflect", 0.0)
        m = m.to(device=image.device, dtype=image.dtype)
        # centred output pixels -> normalized source coordinates: diag(2/W, 2/H, 1) M diag(w/2, h/2, 1)
        rows = torch.tensor([2.0 / w_in, 2.0 / h_in, 1.0], dtype=image.dtype, device=image.device)
        cols = torch.tensor([w / 2.0, h / 2.0, 1.0], dtype=image.dtype, device=image.device)
        theta = (m * rows[:, None] * cols[None, :])[:, :2]
        grid = F.affine_grid(theta, [b1, c, h, w], align_corners=False)
        if k > 1:
            # stack an image's k crops along the grid's height, so the source is not copied k times
            grid = grid.view(k, b0, h, w, 2).transpose(0, 1).reshape(b0, k * h, w, 2)
        source = image - value if value else image
        out = F.grid_sample(source, grid, mode="bilinear", padding_mode=_GRID_PADDING[kind],
                            align_corners=False)
        if value:
            out = out + value
        if k > 1:
            out = out.view(b0, c, k, h, w).permute(2, 0, 1, 3, 4).reshape(b1, c, h, w)
        return out


def _warp(*ops: _Geo) -> Transform:
    w = _Warp(tuple(ops))
    return Transform(w.sample, w)


def _pad_shape(width: int, shape: Shape) -> Shape:
    b, c, h, w = shape
    return torch.Size((b, c, h + 2 * width, w + 2 * width))


def _eye(g: torch.Generator | None, shape: Shape) -> Tensor:
    return torch.eye(3, device=_device(g)).expand(shape[0], 3, 3).contiguous()


def _jitter_matrix(pixels: int, g: torch.Generator | None, shape: Shape) -> Tensor:
    d = torch.randint(-pixels, pixels + 1, (2, shape[0]), generator=g, device=_device(g))
    d = d.to(torch.float32)
    one = torch.ones_like(d[0])
    return _matrix(one, 0.0, -d[0], 0.0, one, -d[1])


def _scale_matrix(scales: _Dist, g: torch.Generator | None, shape: Shape) -> Tensor:
    inv = 1.0 / _draw(scales, g, shape[0])
    return _matrix(inv, 0.0, 0.0, 0.0, inv, 0.0)


def _rotate_matrix(degrees: _Dist, g: torch.Generator | None, shape: Shape) -> Tensor:
    a = torch.deg2rad(_draw(degrees, g, shape[0]))
    cos, sin = torch.cos(a), torch.sin(a)
    # inverse of a counter-clockwise turn as displayed (y points down)
    return _matrix(cos, -sin, 0.0, sin, cos, 0.0)


def pad(width: int, *, mode: str = "reflect", value: float = 0.5) -> Transform:
    """Pad every side by `width` pixels (deterministic; fused with neighbouring geometry).

    Args:
        width: pixels added on each side, an int >= 0.
        mode: "reflect" mirrors about the image edge (the edge pixel repeats, like numpy's
            "symmetric": `grid_sample`'s reflection), "replicate" repeats the edge pixel,
            "constant" fills with `value`. The mode also decides what the rest of a fused run
            reads outside the image (see `chain`).
        value: fill for mode="constant".

    Shape:
        (B, C, H, W) -> (B, C, H + 2 width, W + 2 width)

    Example:
        >>> t = pad(1, mode="constant", value=0.0)
        >>> t.apply(torch.ones(1, 1, 1, 2), t.sample(None, (1, 1, 1, 2)))[0, 0]
        tensor([[0., 0., 0., 0.],
                [0., 1., 1., 0.],
                [0., 0., 0., 0.]])
    """
    call = f"pad(width={width!r}, mode={mode!r})"
    width = _check_int(call, "width", width, minimum=0)
    if mode not in PAD_MODES:
        raise _fail(call, f"mode must be one of {', '.join(map(repr, PAD_MODES))}; got {mode!r}.")
    fill = _check_real(call, "value", value) if mode == "constant" else 0.0
    return _warp(_Geo(_eye, ft.partial(_pad_shape, width), (mode, fill)))


def jitter(pixels: int) -> Transform:
    """Shift each image by its own whole number of pixels in [-pixels, pixels], x and y apart.

    Unlike Lucid's jitter, which crops, the size is kept; pixels shifted in come from the run's
    boundary rule (reflection unless a `pad` in the same chain says otherwise).

    Args:
        pixels: largest shift, an int >= 0. `jitter(0)` is the identity.

    Shape:
        (B, C, H, W) -> (B, C, H, W)

    Example:
        >>> t = jitter(4)
        >>> m = t.sample(torch.Generator().manual_seed(0), (3, 3, 16, 16))
        >>> bool((m[:, :2, 2].abs() <= 4).all())    # the translation column, in pixels
        True
    """
    pixels = _check_int(f"jitter(pixels={pixels!r})", "pixels", pixels, minimum=0)
    return _warp(_Geo(ft.partial(_jitter_matrix, pixels), _same_shape))


def random_scale(scales: Iterable[float] | tuple[float, float]) -> Transform:
    """Zoom each image about its centre by its own factor (> 1 zooms in; the size is kept).

    Args:
        scales: a sequence of factors to pick from uniformly (Lucid's form, e.g. a list), or a
            tuple of exactly two numbers `(lo, hi)`: uniform on that range. All must be > 0.

    Shape:
        (B, C, H, W) -> (B, C, H, W)

    Example:
        >>> t = random_scale([0.9, 1.0, 1.1])        # choices
        >>> u = random_scale((0.9, 1.1))             # a range
        >>> t.sample(torch.Generator().manual_seed(0), (4, 3, 8, 8)).shape
        torch.Size([4, 3, 3])
    """
    d = _dist(f"random_scale({scales!r})", "scales", scales, positive=True)
    return _warp(_Geo(ft.partial(_scale_matrix, d), _same_shape))


def random_rotate(degrees: float | Iterable[float] | tuple[float, float]) -> Transform:
    """Turn each image about its centre by its own angle, in degrees (positive: counter-clockwise).

    Args:
        degrees: a tuple `(lo, hi)`: uniform on that range; any other sequence (list, `range`):
            angles to pick from uniformly (Lucid's form); a single number `d`: the range (-d, d).

    Shape:
        (B, C, H, W) -> (B, C, H, W)

    Example:
        >>> t = random_rotate((-10.0, 10.0))
        >>> u = random_rotate(range(-10, 11))
        >>> t.apply(torch.rand(2, 3, 8, 8), t.sample(None, (2, 3, 8, 8))).shape
        torch.Size([2, 3, 8, 8])
    """
    call = f"random_rotate({degrees!r})"
    if _is_real(degrees):
        d = abs(_check_real(call, "degrees", degrees))
        degrees = (-d, d)
    dist = _dist(call, "degrees", degrees)
    return _warp(_Geo(ft.partial(_rotate_matrix, dist), _same_shape))


_pad, _jitter = pad, jitter  # `affine`'s keyword arguments shadow these factories


def affine(*, pad: int = 0, jitter: int = 0, scale: Iterable[float] | tuple[float, float] = (1.0, 1.0),
           rotate: float | Iterable[float] | tuple[float, float] = (0.0, 0.0),
           mode: str = "reflect", value: float = 0.5) -> Transform:
    """Pad, jitter, zoom and turn in that order, as one fused geometric transform.

    Same as `chain(pad(pad, mode=mode, value=value), jitter(jitter), random_scale(scale),
    random_rotate(rotate))`; see those for the arguments. The defaults are the identity.

    Shape:
        (B, C, H, W) -> (B, C, H + 2 pad, W + 2 pad)

    Example:
        >>> t = affine(pad=4, jitter=2, scale=(0.9, 1.1), rotate=(-5.0, 5.0))
        >>> t.apply(torch.rand(2, 3, 8, 8), t.sample(None, (2, 3, 8, 8))).shape
        torch.Size([2, 3, 16, 16])
    """
    return chain(_pad(pad, mode=mode, value=value), _jitter(jitter), random_scale(scale),
                 random_rotate(rotate))


def _crops_shape(n: int, size: tuple[int, int] | None, shape: Shape) -> Shape:
    b, c, h, w = shape
    return torch.Size((n * b, c, *(size or (h, w))))


def _crops_matrix(n: int, area: _Dist, size: tuple[int, int] | None,
                  g: torch.Generator | None, shape: Shape) -> Tensor:
    b, _, h_in, w_in = shape
    h, w = size or (h_in, w_in)
    side = _draw(area, g, n * b).sqrt()  # crops keep the output's aspect ratio
    u = torch.rand(2, n * b, generator=g, device=_device(g)) * 2 - 1
    cx = u[0] * (1 - side) * w_in / 2
    cy = u[1] * (1 - side) * h_in / 2
    return _matrix(side * w_in / w, 0.0, cx, 0.0, side * h_in / h, cy)


def crops(n: int, *, scale: tuple[float, float] = (0.5, 1.0),
          size: int | tuple[int, int] | None = None) -> Transform:
    """Take `n` random crops of each image and resize each to the input size (or `size`).

    Each crop covers a fraction of the image's area drawn uniformly from `scale`, keeps the
    output's aspect ratio, and lies inside the image. All crops come from one batched
    `grid_sample` (fused with the geometry before and after it in a `chain`).

    Args:
        n: crops per image, an int >= 1.
        scale: `(lo, hi)` range of the area fraction, 0 < lo <= hi <= 1.
        size: output `(H, W)` (an int for square), None for the input's size.

    Shape:
        (B, C, H, W) -> (n B, C, *size): crop-major, row `k * B + b` is crop `k` of image `b`.

    Example:
        >>> t = crops(4, size=8)
        >>> t.apply(torch.rand(2, 3, 16, 12), t.sample(None, (2, 3, 16, 12))).shape
        torch.Size([8, 3, 8, 8])
    """
    call = f"crops(n={n!r}, scale={scale!r}, size={size!r})"
    n = _check_int(call, "n", n, minimum=1)
    if not (isinstance(scale, tuple) and len(scale) == 2):
        raise _fail(call, f"scale must be a (lo, hi) tuple with 0 < lo <= hi <= 1, got {scale!r}.")
    area = _dist(call, "scale", scale, positive=True, upper=1.0)
    if size is not None:
        pair = (size, size) if not isinstance(size, tuple) else size
        if len(pair) != 2:
            raise _fail(call, f"size must be an int or an (H, W) tuple of ints >= 1, got {size!r}.")
        size = (_check_int(call, "size", pair[0], minimum=1), _check_int(call, "size", pair[1], minimum=1))
    return _warp(_Geo(ft.partial(_crops_matrix, n, area, size), ft.partial(_crops_shape, n, size)))


# --------------------------------------------------------------------------------------------
# Pixel-value transforms


def _blur_sample(sigma: _Dist, g: torch.Generator | None, shape: Shape) -> Tensor | None:
    if sigma.choices is None and sigma.lo == sigma.hi:
        return None
    return _draw(sigma, g, _check_shape("gaussian_blur", shape)[0])


def _blur_apply(sigma: float, kernel_size: int, image: Tensor, sigmas: Tensor | None) -> Tensor:
    b, c, h, w = image.shape
    r = kernel_size // 2
    if r == 0:
        return image
    s = (torch.full((b,), sigma, dtype=image.dtype, device=image.device) if sigmas is None
         else sigmas.to(device=image.device, dtype=image.dtype))
    x = torch.arange(-r, r + 1, dtype=image.dtype, device=image.device)
    k = torch.exp(-(x**2) / (2 * s.clamp_min(1e-3)[:, None] ** 2))  # sigma 0: a unit impulse
    k = (k / k.sum(-1, keepdim=True)).repeat_interleave(c, dim=0)  # (B C, K): one per image channel
    # replicate the edges by clamped indexing: inductor (torch 2.14) miscompiles the backward of
    # F.pad(mode="replicate") when it feeds a grouped conv
    rows = torch.arange(-r, h + r, device=image.device).clamp(0, h - 1)
    cols = torch.arange(-r, w + r, device=image.device).clamp(0, w - 1)
    y = image.reshape(1, b * c, h, w)[:, :, rows][:, :, :, cols]
    y = F.conv2d(y, k[:, None, None, :], groups=b * c)
    y = F.conv2d(y, k[:, None, :, None], groups=b * c)
    return y.view(b, c, h, w)


def gaussian_blur(sigma: float | tuple[float, float], *, kernel_size: int | None = None) -> Transform:
    """Separable Gaussian blur, with a fixed sigma or a sigma drawn per image.

    Args:
        sigma: standard deviation in pixels (>= 0; 0 is the identity), or a `(lo, hi)` range
            drawn per image.
        kernel_size: odd int >= 1; None: `2 * ceil(3 * max_sigma) + 1`. Edges are replicated.

    Shape:
        (B, C, H, W) -> (B, C, H, W)

    Example:
        >>> t = gaussian_blur((0.5, 1.5))
        >>> x = torch.ones(2, 3, 8, 8)
        >>> torch.allclose(t.apply(x, t.sample(None, x.shape)), x)
        True
    """
    call = f"gaussian_blur(sigma={sigma!r}, kernel_size={kernel_size!r})"
    if _is_real(sigma):
        s = _check_real(call, "sigma", sigma, minimum=0.0)
        dist = _Dist(s, s)
    elif isinstance(sigma, tuple) and len(sigma) == 2:
        dist = _dist(call, "sigma", sigma, minimum=0.0)
    else:
        raise _fail(call, f"sigma must be a number >= 0 or a (lo, hi) tuple, got {sigma!r}.")
    if kernel_size is None:
        kernel_size = 2 * math.ceil(3 * dist.hi) + 1
    kernel_size = _check_int(call, "kernel_size", kernel_size, minimum=1)
    if kernel_size % 2 == 0:
        raise _fail(call, f"kernel_size must be odd, got {kernel_size!r}.")
    return Transform(ft.partial(_blur_sample, dist), ft.partial(_blur_apply, dist.lo, kernel_size))


def _noise_sample(std: _Dist, g: torch.Generator | None, shape: Shape) -> Tensor:
    shape = _check_shape("noise", shape)
    s = _draw(std, g, shape[0]).view(-1, 1, 1, 1)
    return s * torch.randn(shape, generator=g, device=_device(g))


def _noise_apply(image: Tensor, eps: Tensor) -> Tensor:
    return image + eps.to(device=image.device, dtype=image.dtype)


def noise(std: float | tuple[float, float]) -> Transform:
    """Add Gaussian noise; the noise tensor itself is drawn in `sample`.

    Args:
        std: standard deviation (>= 0), or a `(lo, hi)` range drawn per image.

    Shape:
        (B, C, H, W) -> (B, C, H, W); params: a (B, C, H, W) tensor.

    Example:
        >>> t = noise(0.1)
        >>> t.sample(torch.Generator().manual_seed(0), (2, 3, 4, 4)).shape
        torch.Size([2, 3, 4, 4])
    """
    call = f"noise(std={std!r})"
    if _is_real(std):
        s = _check_real(call, "std", std, minimum=0.0)
        dist = _Dist(s, s)
    elif isinstance(std, tuple) and len(std) == 2:
        dist = _dist(call, "std", std, minimum=0.0)
    else:
        raise _fail(call, f"std must be a number >= 0 or a (lo, hi) tuple, got {std!r}.")
    return Transform(ft.partial(_noise_sample, dist), _noise_apply)


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


def _meta_out_shape(fn: Callable[[Tensor], Tensor], shape: Shape) -> Shape:
    try:
        return torch.Size(fn(torch.empty(shape, device="meta")).shape)
    except Exception:  # noqa: BLE001 - best effort: a callable that meta tensors break keeps the shape
        return torch.Size(shape)


@dc.dataclass(frozen=True)
class _Wrapped:
    """The `apply` of `as_transform(fn)`: ignores params; finds its output shape on meta tensors."""

    fn: Callable[[Tensor], Tensor]

    def __call__(self, image: Tensor, params: None) -> Tensor:
        return self.fn(image)

    def out_shape(self, shape: Shape) -> Shape:
        return _meta_out_shape(self.fn, shape)


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
    return _wrap(fn, stacklevel=3)


def _wrap(fn: Callable[[Tensor], Tensor], *, stacklevel: int) -> Transform:
    warnings.warn(MSG_AS_TRANSFORM.format(fn=fn), UserWarning, stacklevel=stacklevel)
    return Transform(_identity_sample, _Wrapped(fn))


def _out_shape(t: Transform, shape: Shape) -> Shape:
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
            shape = _out_shape(t, shape)
        return tuple(out)

    def __call__(self, image: Tensor, params: tuple[TransformParams, ...]) -> Tensor:
        for t, p in zip(self.parts, params, strict=True):
            image = t.apply(image, p)
        return image

    def out_shape(self, shape: Shape) -> Shape:
        for t in self.parts:
            shape = _out_shape(t, shape)
        return torch.Size(shape)


def _as_part(t: object, i: int) -> Transform:
    if isinstance(t, Transform):
        return t
    if isinstance(t, tuple) and len(t) == 2 and all(map(callable, t)):
        return Transform(*t)
    if callable(t):
        return _wrap(cast("Callable[[Tensor], Tensor]", t), stacklevel=4)  # points at chain's caller
    raise InvalidArgumentError(
        f"chain(...): argument {i} is {t!r} ({type(t).__name__}); expected a Transform, "
        "a (sample, apply) pair, or a callable Tensor -> Tensor."
    )


def _fusable(a: Transform, b: Transform) -> bool:
    if not (isinstance(a.apply, _Warp) and isinstance(b.apply, _Warp)):
        return False
    ma, mb = a.apply.mode, b.apply.mode
    return ma is None or mb is None or ma == mb


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
                parts[-1] = _warp(*parts[-1].apply.ops, *p.apply.ops)  # type: ignore[union-attr]
            else:
                parts.append(p)
    if not parts:
        return identity()
    if len(parts) == 1:
        return parts[0]
    c = _Chained(tuple(parts))
    return Transform(c.sample, c)


def is_compilable(t: Transform) -> bool:
    """False when `t` contains an `as_transform`-wrapped callable that fullgraph compiling may reject.

    Example:
        >>> is_compilable(standard())
        True
    """
    if isinstance(t.apply, _Chained):
        return all(is_compilable(p) for p in t.apply.parts)
    return not isinstance(t.apply, _Wrapped)


STANDARD_SCALES = tuple(1 + (i - 5) / 50 for i in range(11))


def standard() -> Transform:
    """Lucid's `standard_transforms`, fused into one `grid_sample`.

    Contains, in order: `pad(12, mode="constant", value=0.5)`, `jitter(8)`,
    `random_scale(STANDARD_SCALES)` (0.90, 0.92, ..., 1.10), `random_rotate((-10.0, 10.0))`
    (a continuous range where Lucid picks whole degrees), `jitter(4)`. Unlike Lucid the jitters
    shift instead of cropping and the scale keeps the size, so the output is 24 pixels larger
    than the input on each axis, whatever is drawn.

    Shape:
        (B, C, H, W) -> (B, C, H + 24, W + 24)

    Example:
        >>> t = standard()
        >>> t.apply(torch.rand(1, 3, 32, 32), t.sample(None, (1, 3, 32, 32))).shape
        torch.Size([1, 3, 56, 56])
    """
    return chain(
        pad(12, mode="constant", value=0.5),
        jitter(8),
        random_scale(list(STANDARD_SCALES)),
        random_rotate((-10.0, 10.0)),
        jitter(4),
    )
