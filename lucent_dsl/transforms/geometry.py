"""Geometric transforms as per-image 3x3 matrices, fused into one `grid_sample`: pad, jitter,
random_scale, random_rotate, affine, crops.

Matrix convention (stated here once). A geometric transform's params are a `(B_out, 3, 3)`
float tensor `M` that maps *output* pixels to *input* pixels (the inverse map, as
`F.affine_grid` uses), in centred pixel coordinates: `x = col - (W - 1) / 2`,
`y = row - (H - 1) / 2`, `y` pointing down. Centred pixels turn into `grid_sample`'s normalized
coordinates (`align_corners=False`, where -1 and +1 are the outer edges of the border pixels) as
`x_norm = 2 x / W`, `y_norm = 2 y / H`; `Warp.__call__` is the only place that conversion is made.
Angles are in degrees, positive turns the picture counter-clockwise as displayed (as
`torchvision.transforms.v2.functional.rotate`); jitter is in pixels of that transform's input;
scale > 1 zooms in; everything turns and zooms about the image centre.

"""
from __future__ import annotations

import dataclasses as dc
import functools as ft
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..args import check_int, check_real, is_real
from ..errors import InvalidArgumentError
from ..models.checks import generator_device
from ._common import (
    GRID_PADDING,
    PAD_MODES,
    Dist,
    Geo,
    Mode,
    Shape,
    Transform,
    check_shape,
    distribution,
    draw,
    fail,
    matrix,
    same_shape,
)


@dc.dataclass(frozen=True)
class Warp:
    """The `apply` of a run of fused geometric steps: one batched `grid_sample`.

    The run reads the source image extended by one boundary rule: the mode of its first step
    that has one (a `pad`), or reflection. `chain` starts a new run at a `pad` whose mode
    differs, since two boundary rules cannot share one sampling.

    `size` (H, W), when given, samples the same output canvas at H x W points instead of the
    canvas's own pixels: the warp and a bilinear resize to that size in one sampling (see
    `compose.sampled_at`); `sample` draws exactly the same matrices either way.
    """

    ops: tuple[Geo, ...]
    size: tuple[int, int] | None = None

    @property
    def mode(self) -> Mode | None:
        return next((op.mode for op in self.ops if op.mode is not None), None)

    def canvas_shape(self, shape: Shape) -> Shape:
        """The output canvas of the ops (what `out_shape` is without `size`)."""
        for op in self.ops:
            shape = op.out_shape(shape)
        return torch.Size(shape)

    def out_shape(self, shape: Shape) -> Shape:
        b, c, h, w = self.canvas_shape(shape)
        return torch.Size((b, c, *self.size)) if self.size is not None else torch.Size((b, c, h, w))

    def sample(self, g: torch.Generator | None, shape: Shape) -> Tensor:
        shape = check_shape("geometric transform", shape)
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
        b1, _, h, w = self.canvas_shape(image.shape)
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
        h, w = self.size or (h, w)  # from here on: the sampled output's size
        grid = affine_grid(theta, h, w)
        if k > 1:
            # stack an image's k crops along the grid's height, so the source is not copied k times
            grid = grid.view(k, b0, h, w, 2).transpose(0, 1).reshape(b0, k * h, w, 2)
        source = image - value if value else image
        out = F.grid_sample(source, grid, mode="bilinear", padding_mode=GRID_PADDING[kind],
                            align_corners=False)
        if value:
            out = out + value
        if k > 1:
            out = out.view(b0, c, k, h, w).permute(2, 0, 1, 3, 4).reshape(b1, c, h, w)
        return out


def affine_grid(theta: Tensor, h: int, w: int) -> Tensor:
    """`F.affine_grid(theta, (B, C, h, w), align_corners=False)` as one broadcast add (2-4x faster on a CPU
    than its batched matrix product with a 3-wide inner dimension; equal to float rounding).

    Example:
        >>> theta = torch.tensor([[[0.9, -0.2, 0.1], [0.3, 1.1, -0.05]]])
        >>> ref = F.affine_grid(theta, [1, 3, 5, 7], align_corners=False)
        >>> bool(torch.allclose(affine_grid(theta, 5, 7), ref, atol=1e-6))
        True
    """
    xs = torch.linspace(-1, 1, w, device=theta.device, dtype=theta.dtype) * ((w - 1) / w)  # pixel centres, as
    ys = torch.linspace(-1, 1, h, device=theta.device, dtype=theta.dtype) * ((h - 1) / h)  # affine_grid has them
    along_x = theta[:, None, None, :, 0] * xs[None, None, :, None]  # (B, 1, w, 2)
    along_y = theta[:, None, None, :, 1] * ys[None, :, None, None] + theta[:, None, None, :, 2]  # (B, h, 1, 2)
    return along_x + along_y


def warp(*ops: Geo) -> Transform:
    w = Warp(tuple(ops))
    return Transform(w.sample, w)


def _pad_shape(width: int, shape: Shape) -> Shape:
    b, c, h, w = shape
    return torch.Size((b, c, h + 2 * width, w + 2 * width))


def _eye(g: torch.Generator | None, shape: Shape) -> Tensor:
    return torch.eye(3, device=generator_device(g)).expand(shape[0], 3, 3).contiguous()


def _jitter_matrix(pixels: int, g: torch.Generator | None, shape: Shape) -> Tensor:
    d = torch.randint(-pixels, pixels + 1, (2, shape[0]), generator=g, device=generator_device(g))
    d = d.to(torch.float32)
    one = torch.ones_like(d[0])
    return matrix(one, 0.0, -d[0], 0.0, one, -d[1])


def _scale_matrix(scales: Dist, g: torch.Generator | None, shape: Shape) -> Tensor:
    inv = 1.0 / draw(scales, g, shape[0])
    return matrix(inv, 0.0, 0.0, 0.0, inv, 0.0)


def _rotate_matrix(degrees: Dist, g: torch.Generator | None, shape: Shape) -> Tensor:
    a = torch.deg2rad(draw(degrees, g, shape[0]))
    cos, sin = torch.cos(a), torch.sin(a)
    # inverse of a counter-clockwise turn as displayed (y points down)
    return matrix(cos, -sin, 0.0, sin, cos, 0.0)


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
    width = check_int("width", width, minimum=0, where=call)
    if mode not in PAD_MODES:
        raise fail(call, f"mode must be one of {', '.join(map(repr, PAD_MODES))}; got {mode!r}.")
    fill = check_real("value", value, where=call) if mode == "constant" else 0.0
    return warp(Geo(_eye, ft.partial(_pad_shape, width), (mode, fill)))


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
    pixels = check_int("pixels", pixels, minimum=0, where=f"jitter(pixels={pixels!r})")
    return warp(Geo(ft.partial(_jitter_matrix, pixels), same_shape))


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
    d = distribution(f"random_scale({scales!r})", "scales", scales, positive=True)
    return warp(Geo(ft.partial(_scale_matrix, d), same_shape))


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
    if is_real(degrees):
        d = abs(check_real("degrees", degrees, where=call))
        degrees = (-d, d)
    dist = distribution(call, "degrees", degrees)
    return warp(Geo(ft.partial(_rotate_matrix, dist), same_shape))


def _crops_shape(n: int, size: tuple[int, int] | None, shape: Shape) -> Shape:
    b, c, h, w = shape
    return torch.Size((n * b, c, *(size or (h, w))))


def _crops_matrix(n: int, area: Dist, size: tuple[int, int] | None,
                  g: torch.Generator | None, shape: Shape) -> Tensor:
    b, _, h_in, w_in = shape
    h, w = size or (h_in, w_in)
    side = draw(area, g, n * b).sqrt()  # crops keep the output's aspect ratio
    u = torch.rand(2, n * b, generator=g, device=generator_device(g)) * 2 - 1
    cx = u[0] * (1 - side) * w_in / 2
    cy = u[1] * (1 - side) * h_in / 2
    return matrix(side * w_in / w, 0.0, cx, 0.0, side * h_in / h, cy)


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
    n = check_int("n", n, minimum=1, where=call)
    if not (isinstance(scale, tuple) and len(scale) == 2):
        raise fail(call, f"scale must be a (lo, hi) tuple with 0 < lo <= hi <= 1, got {scale!r}.")
    area = distribution(call, "scale", scale, positive=True, upper=1.0)
    if size is not None:
        pair = (size, size) if not isinstance(size, tuple) else size
        if len(pair) != 2:
            raise fail(call, f"size must be an int or an (H, W) tuple of ints >= 1, got {size!r}.")
        size = (check_int("size", pair[0], minimum=1, where=call), check_int("size", pair[1], minimum=1, where=call))
    return warp(Geo(ft.partial(_crops_matrix, n, area, size), ft.partial(_crops_shape, n, size)))
