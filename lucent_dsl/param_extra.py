"""More parameterizations (`ImageParam(init, to_image)` pairs, as in `param`) and transparency.

- `maco`: MACO (Fel et al. 2023, "Unlocking Feature Visualization for Deeper Networks with
  MAgnitude-Constrained Optimization"): only the *phase* of the Fourier spectrum is optimized;
  the magnitude is fixed to the average spectrum of natural images (`natural_magnitude`). The
  default magnitude ships with the package (`data/natural_magnitude.npy`, made by
  `examples/make_natural_magnitude.py` from the sample photos of scikit-image and matplotlib);
  nothing is downloaded.
- `cppn`: Lucid's compositional pattern-producing network: a small random-weight MLP of the pixel
  coordinates; the leaves are the MLP's weights (one MLP per image).
- `shared`: Lucid's aligned interpolation: low-resolution components shared by the whole batch
  (a Laplacian pyramid: each level upsampled to full size and summed), components interpolated
  linearly from the first image to the last, and a per-image detail image.
- `alpha` + `composite`: RGBA images whose alpha channel blends them over a fresh random
  background at every step (Lucid's `collapse_alpha`), and the `opacity()` term to penalize alpha.
- `transparency_map`: MACO's gradient-magnitude transparency, |d score / d image| averaged over
  random transforms of a rendered image.

The pre-squash signal of every parameterization here is decorrelated colour (Lucid's matrix by
default), mapped to [0, 1] by a squash, as in `param`.

Example:
    >>> import torch
    >>> p = maco((32, 48), batch=2)
    >>> img = p.to_image(p.init(torch.Generator().manual_seed(0)))
    >>> img.shape, bool(img.min() >= 0), bool(img.max() <= 1)
    (torch.Size([2, 3, 32, 48]), True, True)
"""
from __future__ import annotations

import dataclasses as dc
import functools as ft
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from . import param as param_lib
from .errors import InvalidArgumentError, ObjectiveShapeError
from .expr import IMAGE, Acts, Expr, Site, Term, register
from .objectives import Batch, _batch, per_image
from .param import (
    _CLAMP_OFFSET,
    ImageParam,
    _apply_color,
    _clamp_straight_through,
    _color_matrix,
    _device,
    _int,
    _irfft2,
    _irfft2_tables,
    _randn,
    _real,
    _size,
    _to_float32,
)
from .transforms import Transform

__all__ = [
    "NATURAL_MAGNITUDE_PATH", "Opacity", "alpha", "composite", "cppn", "default_magnitude", "maco", "maco_image",
    "natural_magnitude", "opacity", "rgba", "shared", "transparency_map",
]

NATURAL_MAGNITUDE_PATH = os.path.join(os.path.dirname(__file__), "data", "natural_magnitude.npy")
BACKGROUNDS = ("noise", "uniform", "mixed")
# The squash slope: sigmoid(4 y) ~ 0.5 + y near mid-grey, so a pre-squash signal with the statistics of
# (photo - mean) in decorrelated colour gives an image with a photo's contrast.
_SIGMOID_GAIN = 4.0


# --------------------------------------------------------------------------- shared pieces


def _squash_linear(squash: str) -> Callable[[Tensor], Tensor]:
    """A squash to [0, 1] whose value near mid-grey is 0.5 + y (slope 1)."""
    if squash == "sigmoid":
        return lambda y: torch.sigmoid(_SIGMOID_GAIN * y)
    if squash == "clamp":
        return lambda y: _clamp_straight_through(y + _CLAMP_OFFSET)
    raise InvalidArgumentError(f"squash must be one of {param_lib.SQUASHES}, got {squash!r}")


def _colour(x: Tensor, m: Tensor | None) -> Tensor:
    return x if m is None else _apply_color(x, m.to(x.device, x.dtype))


def _irfft2_ortho(re: Tensor, im: Tensor, h: int, w: int, tables: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """Orthonormal inverse real 2D DFT of (..., H, W // 2 + 1) real and imaginary parts.

    Eagerly `torch.fft.irfft2`; under torch.compile, real matrix products (inductor does not
    generate code for complex tensors), as `param.fft` does.
    """
    if torch.compiler.is_compiling() or re.dtype not in (torch.float32, torch.float64):
        cos_h, sin_h, a = (t.to(re.device, re.dtype) for t in tables)
        return _irfft2(torch.stack([re, im], -1), cos_h, sin_h, a) * math.sqrt(h * w)
    return torch.fft.irfft2(torch.complex(re, im), s=(h, w), norm="ortho")


def _odd(p: Tensor) -> Tensor:
    """The odd part of p over the DFT grid: q[k, l] = (p[k, l] - p[-k, -l]) / 2 (indices mod H, W).

    A phase with q[-k, -l] = -q[k, l] makes `magnitude * exp(i q)` Hermitian (when the magnitude is
    even), so the inverse DFT is real and its DFT has exactly that magnitude; self-conjugate bins
    (DC, Nyquist) get phase 0.
    """
    flipped = torch.roll(torch.flip(p, dims=(-2, -1)), shifts=(1, 1), dims=(-2, -1))
    return (p - flipped) / 2


def _even(m: Tensor) -> Tensor:
    return (m + torch.roll(torch.flip(m, dims=(-2, -1)), shifts=(1, 1), dims=(-2, -1))) / 2


# --------------------------------------------------------------------------- MACO


def natural_magnitude(images: Tensor, *, size: int | tuple[int, int] | None = None,
                      decorrelate: bool | Tensor | tuple = True, window: bool = True) -> Tensor:
    """The average magnitude spectrum of `images`, in the space `maco` builds images in.

    Each image's mean colour is removed (MACO optimizes no mean: the DC bin is 0), colours are
    decorrelated with the inverse of the `decorrelate` matrix (Lucid's by default, as `maco`), and
    |fft2| (orthonormal) is averaged over the images. With `window=True` each image is first
    multiplied by a 2-D Hann window (rescaled to keep its energy): the DFT treats an image as
    periodic, and without a window the jump between opposite borders adds energy along the two
    frequency axes, which MACO then paints as a fine horizontal and vertical cross-hatch.

    Args:
        images: (N, C, H, W) in [0, 1]: your own photos, e.g. from the dataset the model was trained on.
        size: resample the spectrum to this size (int or (H, W)); default: the images' size.
        decorrelate: True (Lucid's matrix), False, or a (C, C) matrix; use the same value in `maco`.
        window: taper the borders with a Hann window before the DFT.

    Returns:
        float32 (C, H, W) magnitude, unshifted (the DFT's order: DC at [0, 0]).

    Raises:
        InvalidArgumentError: not an (N, C, H, W) tensor, non-finite values, or a singular matrix.

    Example:
        >>> import torch
        >>> m = natural_magnitude(torch.rand(4, 3, 16, 16))
        >>> m.shape, float(m[:, 0, 0].abs().max())
        (torch.Size([3, 16, 16]), 0.0)
    """
    if not isinstance(images, Tensor) or images.ndim != 4:
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise InvalidArgumentError(f"images must be a tensor of shape (N, C, H, W), got {got}")
    x = images.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise InvalidArgumentError("images contain NaN or infinite values")
    x = x - x.mean((2, 3), keepdim=True)
    if window:
        hann = torch.outer(torch.hann_window(x.shape[2], periodic=False, dtype=torch.float64),
                           torch.hann_window(x.shape[3], periodic=False, dtype=torch.float64))
        x = x * (hann / hann.pow(2).mean().sqrt().clamp(min=1e-12))
    m = _color_matrix(decorrelate, x.shape[1])
    if m is not None:
        try:
            x = _apply_color(x, torch.linalg.inv(m))
        except RuntimeError:
            raise InvalidArgumentError("the decorrelate matrix is singular; use decorrelate=False") from None
    mag = torch.fft.fft2(x, norm="ortho").abs().mean(0)
    mag[:, 0, 0] = 0.0
    if size is not None:
        mag = _resample(mag, *_size(size))
    return mag.to(torch.float32)


def _resample(mag: Tensor, h: int, w: int) -> Tensor:
    """A magnitude spectrum (C, H0, W0) at another grid size, by frequency in cycles per pixel.

    With the orthonormal DFT, the expected magnitude at a given frequency does not depend on the
    image size, so the spectrum is interpolated (bilinear, in the centred layout) at the target's
    frequencies and made even again.
    """
    h0, w0 = mag.shape[-2:]
    if (h0, w0) == (h, w):
        return _even(mag.to(torch.float64))
    centred = torch.fft.fftshift(mag.to(torch.float64), dim=(-2, -1))

    def coords(n: int, n0: int) -> Tensor:
        f = torch.fft.fftshift(torch.fft.fftfreq(n, dtype=torch.float64))
        index = f * n0 + n0 // 2  # the source index of frequency f in the centred layout
        return 2 * index / max(n0 - 1, 1) - 1  # grid_sample's align_corners=True coordinates

    gy, gx = torch.meshgrid(coords(h, h0), coords(w, w0), indexing="ij")
    grid = torch.stack([gx, gy], -1)[None]
    out = F.grid_sample(centred[None], grid, mode="bilinear", padding_mode="border", align_corners=True)[0]
    return _even(torch.fft.ifftshift(out, dim=(-2, -1)))


@ft.lru_cache(maxsize=1)
def default_magnitude() -> Tensor:
    """The shipped natural-image magnitude spectrum (3, 128, 128), for Lucid's colour decorrelation.

    Computed once by `examples/make_natural_magnitude.py` from the sample photos that ship with
    scikit-image and matplotlib, with `natural_magnitude`; read from `NATURAL_MAGNITUDE_PATH`.
    """
    arr = np.load(NATURAL_MAGNITUDE_PATH, allow_pickle=False)
    return torch.from_numpy(arr.astype(np.float32))


def _magnitude(magnitude: Any, channels: int, h: int, w: int) -> Tensor:
    if magnitude is None:
        if channels != 3:
            raise InvalidArgumentError(
                f"the shipped magnitude is for 3 colour channels; pass magnitude=natural_magnitude(images) for {channels}"
            )
        magnitude = default_magnitude()
    try:
        m = torch.as_tensor(magnitude).detach().to("cpu", torch.float64)
    except (TypeError, ValueError, RuntimeError) as e:
        raise InvalidArgumentError(f"magnitude could not be read as a tensor: {e}") from None
    if m.ndim == 2:
        m = m.expand(channels, -1, -1)
    if m.ndim != 3 or m.shape[0] != channels:
        raise InvalidArgumentError(
            f"magnitude must have shape ({channels}, H, W) (or (H, W)), the full unshifted DFT grid as "
            f"natural_magnitude returns it; got {tuple(m.shape)}"
        )
    if not bool(torch.isfinite(m).all()) or float(m.min()) < 0:
        raise InvalidArgumentError("magnitude must be finite and non-negative")
    return _resample(m, h, w)


def maco_image(phase: Tensor, magnitude: Tensor) -> Tensor:
    """The pre-squash image of MACO: irfft2(magnitude * exp(i * odd(phase))), orthonormal.

    Its DFT has exactly the magnitude `magnitude` (made even first), whatever the phase: this is
    the constraint MACO optimizes under.

    Shape:
        phase: (B, C, H, W); magnitude: (C, H, W) -> (B, C, H, W)
    """
    h, w = phase.shape[-2:]
    mag = _even(magnitude.to(phase.device, phase.dtype))[..., : w // 2 + 1]
    return _maco_image(phase, mag, _tables(h, w))


def _maco_image(phase: Tensor, half_magnitude: Tensor, tables: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    h, w = phase.shape[-2:]
    q = _odd(phase)[..., : w // 2 + 1]
    mag = half_magnitude.to(phase.device, phase.dtype)
    return _irfft2_ortho(mag * torch.cos(q), mag * torch.sin(q), h, w, tables)


@ft.lru_cache(maxsize=16)
def _tables(h: int, w: int) -> tuple[Tensor, Tensor, Tensor]:
    return tuple(_to_float32(t) for t in _irfft2_tables(h, w))  # type: ignore[return-value]


def maco(
    size: int | tuple[int, int],
    *,
    magnitude: Tensor | np.ndarray | None = None,
    batch: int = 1,
    channels: int = 3,
    decorrelate: bool | Tensor | tuple = True,
    squash: str = "sigmoid",
) -> ImageParam:
    """MACO: optimize the phase of the Fourier spectrum under a fixed (natural) magnitude.

    `to_image` computes `squash(M @ maco_image(phase, magnitude))`: the magnitude never changes,
    so the image keeps natural-image energy at every frequency however long it is optimized,
    which is what makes MACO work on deep networks without other regularizers. Phases are odd
    over the DFT grid so the image is real; the mean colour is mid-grey (the DC bin of a natural
    magnitude is 0). The phase is in radians: learning rates around 0.05-0.5 suit Adam.

    Args:
        size: an int n for n x n, or (H, W).
        magnitude: (C, H', W') full, unshifted magnitude spectrum (`natural_magnitude(images)`),
            resampled to `size` by frequency; default: the shipped natural-photo spectrum.
        batch: images in the batch (each with its own phase).
        channels: colour channels.
        decorrelate: the colour matrix (True: Lucid's); the magnitude must be computed with the same.
        squash: "sigmoid" (sigmoid(4 y): slope 1 at grey) or "clamp" (0.5 + y, straight-through).

    Returns:
        an `ImageParam` whose leaves are `{"phase": (B, C, H, W)}`, drawn uniformly in [-pi, pi).

    Raises:
        InvalidArgumentError: a bad size, batch, channels, magnitude, decorrelate or squash.

    Shape:
        to_image: {"phase": (B, C, H, W)} -> (B, C, H, W)

    Example:
        >>> import torch
        >>> p = maco(16, magnitude=natural_magnitude(torch.rand(2, 3, 16, 16)))
        >>> p.init(torch.Generator().manual_seed(0))["phase"].shape
        torch.Size([1, 3, 16, 16])
    """
    h, w = _size(size)
    batch, channels = _int("batch", batch), _int("channels", channels)
    finish = _squash_linear(squash)
    m = _color_matrix(decorrelate, channels)
    m32 = None if m is None else _to_float32(m)
    mag = _to_float32(_magnitude(magnitude, channels, h, w))  # even: resampling makes it so
    half = mag[..., : w // 2 + 1].contiguous()
    tables = _tables(h, w)

    def init(generator: torch.Generator | None) -> dict[str, Tensor]:
        u = torch.rand((batch, channels, h, w), generator=generator, device=_device(generator))
        return {"phase": ((u * 2 - 1) * math.pi).requires_grad_(True)}

    def to_image(leaves: Mapping[str, Tensor]) -> Tensor:
        return finish(_colour(_maco_image(leaves["phase"], half, tables), m32))

    return ImageParam(init, to_image)


# --------------------------------------------------------------------------- CPPN


def _composite_activation(x: Tensor) -> Tensor:
    """Lucid's CPPN activation: atan(x) and atan(x)^2, each scaled to unit RMS on N(0, 1) inputs."""
    x = torch.atan(x)
    return torch.cat([x / 0.67, x * x / 0.6], -1)


def cppn(
    size: int | tuple[int, int],
    *,
    batch: int = 1,
    channels: int = 3,
    hidden: int = 24,
    layers: int = 8,
    normalize: bool = False,
) -> ImageParam:
    """Lucid's CPPN: a random-weight MLP maps each pixel's (x, y) to a colour.

    Coordinates span [-sqrt(3), sqrt(3)] on the longer side (unit variance; the shorter side keeps
    the aspect ratio). Each of `layers` hidden layers is linear -> [instance norm] -> Lucid's
    composite activation (atan and atan^2, so 2 * hidden features); the output layer is linear ->
    sigmoid and starts at zero (a grey image). Weights start as N(0, 1 / fan_in), biases at 0.
    CPPNs want smaller learning rates than pixel images (Lucid: Adam 0.004-0.005).

    Args:
        size: an int n for n x n, or (H, W).
        batch: images in the batch (each has its own MLP).
        channels: output colour channels.
        hidden: units per hidden layer.
        layers: hidden layers.
        normalize: normalize each hidden layer over the pixels (instance norm, no affine).

    Returns:
        an `ImageParam` whose leaves are `{"w0": (B, 2, hidden), "b0": (B, 1, hidden), "w1": (B, 2 * hidden,
        hidden), ..., "w{layers}": (B, 2 * hidden, channels), "b{layers}": (B, 1, channels)}`.

    Shape:
        to_image: leaves -> (B, channels, H, W)

    Example:
        >>> import torch
        >>> p = cppn((8, 12), layers=2)
        >>> sorted(p.init(torch.Generator().manual_seed(0)))
        ['b0', 'b1', 'b2', 'w0', 'w1', 'w2']
        >>> float(p.to_image(p.init(None)).detach().std())  # the output layer starts at zero: plain grey
        0.0
    """
    h, w = _size(size)
    batch, channels = _int("batch", batch), _int("channels", channels)
    hidden, layers = _int("hidden", hidden), _int("layers", layers, minimum=0)
    if not isinstance(normalize, bool):
        raise InvalidArgumentError(f"normalize must be True or False, got {normalize!r}")
    r = math.sqrt(3.0)
    side = max(h, w)
    ys = torch.linspace(-r, r, side)[(side - h) // 2:(side - h) // 2 + h] if h > 1 else torch.zeros(1)
    xs = torch.linspace(-r, r, side)[(side - w) // 2:(side - w) // 2 + w] if w > 1 else torch.zeros(1)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    coords = torch.stack([gx, gy], -1).reshape(1, h * w, 2)
    fans = [2] + [2 * hidden] * layers
    outs = [hidden] * layers + [channels]

    def init(generator: torch.Generator | None) -> dict[str, Tensor]:
        dev = _device(generator)
        leaves = {}
        for i, (fan, out) in enumerate(zip(fans, outs)):
            sd = 0.0 if i == layers else math.sqrt(1.0 / fan)
            leaves[f"w{i}"] = _randn((batch, fan, out), generator, sd) if sd else torch.zeros(
                (batch, fan, out), device=dev, requires_grad=True)
            leaves[f"b{i}"] = torch.zeros((batch, 1, out), device=dev, requires_grad=True)
        return leaves

    def to_image(leaves: Mapping[str, Tensor]) -> Tensor:
        x = coords.to(leaves["w0"].device, leaves["w0"].dtype).expand(batch, -1, -1)
        for i in range(layers):
            x = torch.baddbmm(leaves[f"b{i}"], x, leaves[f"w{i}"])
            if normalize:
                x = (x - x.mean(1, keepdim=True)) / (x.var(1, keepdim=True, unbiased=False) + 1e-5).sqrt()
            x = _composite_activation(x)
        x = torch.sigmoid(torch.baddbmm(leaves[f"b{layers}"], x, leaves[f"w{layers}"]))
        return x.transpose(1, 2).reshape(batch, channels, h, w)

    return ImageParam(init, to_image)


# --------------------------------------------------------------------------- shared / aligned


def _batch_weights(n: int, ends: int) -> Tensor:
    """(n, ends) linear interpolation weights from the first to the last image (ends = 1 or 2)."""
    if ends == 1 or n == 1:
        return torch.ones(n, 1) if ends == 1 else torch.tensor([[1.0, 0.0]])
    t = torch.linspace(0.0, 1.0, n)
    return torch.stack([1 - t, t], 1)


def shared(
    size: int | tuple[int, int],
    batch: int,
    *,
    factors: Sequence[int] = (2, 4, 8, 16),
    interpolate: Sequence[int] = (8, 16),
    sd: float = 0.01,
    decay_power: float = 1.0,
    channels: int = 3,
    decorrelate: bool | Tensor | tuple = True,
    squash: str = "sigmoid",
) -> ImageParam:
    """Aligned interpolation (Lucid): shared low-resolution levels plus per-image detail.

    The pre-squash image `i` of the batch is

        detail_i + sum_f up(shared_f) + sum_g up((1 - t_i) * first_g + t_i * last_g),   t_i = i / (batch - 1)

    where `detail_i` is a per-image Fourier image (as `param.fft`), each `shared_f` is one
    (H/f, W/f) image shared by the whole batch and each `first_g`/`last_g` pair a (H/g, W/g) image
    blended linearly across the batch; `up` is bilinear upsampling. Summed, the levels are a
    Laplacian pyramid that every image shares, so images of an interpolation (e.g. rendered with
    `channel_interpolate`) stay aligned: the same layout, changing smoothly.

    Args:
        size: an int n for n x n, or (H, W).
        batch: images in the batch.
        factors: downsampling factors of the shared levels.
        interpolate: downsampling factors of the levels blended from the first to the last image.
        sd: standard deviation of every random leaf.
        decay_power: the detail image's spectrum damping (see `param.fft`).
        channels, decorrelate, squash: as in `param.fft`.

    Returns:
        an `ImageParam` with leaves `{"detail": (B, C, H, W // 2 + 1, 2), "shared_f": (1, C, ceil(H/f),
        ceil(W/f)) for f in factors, "ends_g": (2, C, ceil(H/g), ceil(W/g)) for g in interpolate}`.

    Shape:
        to_image: leaves -> (B, C, H, W)

    Example:
        >>> import torch
        >>> p = shared(32, 4)
        >>> sorted(p.init(None))
        ['detail', 'ends_16', 'ends_8', 'shared_16', 'shared_2', 'shared_4', 'shared_8']
        >>> p.to_image(p.init(None)).shape
        torch.Size([4, 3, 32, 32])
    """
    h, w = _size(size)
    batch, channels = _int("batch", batch), _int("channels", channels)
    sd = _real("sd", sd, minimum=0.0)
    decay_power = _real("decay_power", decay_power)
    levels = [("shared", _int("each factor", f), 1) for f in factors]
    levels += [("ends", _int("each interpolate factor", g), 2) for g in interpolate]
    names = [f"{kind}_{f}" for kind, f, _ in levels]
    if len(set(names)) != len(names):
        raise InvalidArgumentError(f"factors and interpolate must not repeat a value, got {tuple(factors)}, {tuple(interpolate)}")
    finish = param_lib._squash(squash)
    offset = _CLAMP_OFFSET if squash == "clamp" else 0.0
    m = _color_matrix(decorrelate, channels)
    m32 = None if m is None else _to_float32(m)
    scale = _to_float32(param_lib._spectrum_scale(h, w, decay_power))
    tables = _tables(h, w)
    mix = {f: _batch_weights(batch, ends) for _, f, ends in levels}

    def init(generator: torch.Generator | None) -> dict[str, Tensor]:
        leaves = {"detail": _randn((batch, channels, h, w // 2 + 1, 2), generator, sd)}
        for (kind, f, ends), name in zip(levels, names):
            leaves[name] = _randn((ends, channels, math.ceil(h / f), math.ceil(w / f)), generator, sd)
        return leaves

    def to_image(leaves: Mapping[str, Tensor]) -> Tensor:
        s = leaves["detail"]
        k = scale.to(s.device, s.dtype)
        # param.fft's magic divisor 4, and its unnormalized inverse (ortho / sqrt(H W) * sqrt(H W) scale)
        x = _irfft2_ortho(s[..., 0] * k, s[..., 1] * k, h, w, tables) / (math.sqrt(h * w) * 4.0)
        for (kind, f, ends), name in zip(levels, names):
            low = leaves[name]
            if ends == 2 or batch > 1:
                low = torch.einsum("ne,echw->nchw", mix[f].to(low.device, low.dtype), low)
            x = x + F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
        x = _colour(x, m32)
        return finish(x + offset) if offset else finish(x)

    return ImageParam(init, to_image)


# --------------------------------------------------------------------------- transparency


def alpha(
    size: int | tuple[int, int],
    *,
    batch: int = 1,
    kind: str = "fft",
    sd: float = 0.01,
    decorrelate: bool | Tensor | tuple = True,
    squash: str = "sigmoid",
) -> ImageParam:
    """RGBA images: `param.image(...)` colour plus an alpha channel (Lucid's `image(..., alpha=True)`).

    The alpha channel is its own (non-decorrelated) image of the same kind, squashed by a
    sigmoid, so it starts near 0.5. Models read RGB: put `composite()` first in the transforms, so
    every step sees the image over a fresh random background; subtract `opacity()` to favour
    transparency. The final `RenderResult.images` are RGBA and save as RGBA PNGs.

    Returns:
        an `ImageParam` with the leaves of the two images prefixed `rgb.` and `alpha.`.

    Shape:
        to_image: leaves -> (B, 4, H, W)

    Example:
        >>> import torch
        >>> p = alpha(16, batch=2)
        >>> sorted(p.init(None))
        ['alpha.spectrum', 'rgb.spectrum']
        >>> p.to_image(p.init(None)).shape
        torch.Size([2, 4, 16, 16])
    """
    rgb = param_lib.image(size, kind=kind, batch=batch, channels=3, sd=sd, decorrelate=decorrelate, squash=squash)
    a = param_lib.image(size, kind=kind, batch=batch, channels=1, sd=sd, decorrelate=False, squash="sigmoid")

    def init(generator: torch.Generator | None) -> dict[str, Tensor]:
        out = {f"rgb.{k}": v for k, v in rgb.init(generator).items()}  # type: ignore[arg-type]
        out.update({f"alpha.{k}": v for k, v in a.init(generator).items()})  # type: ignore[arg-type]
        return out

    def to_image(leaves: Mapping[str, Tensor]) -> Tensor:
        c = rgb.to_image({k[4:]: v for k, v in leaves.items() if k.startswith("rgb.")})
        t = a.to_image({k[6:]: v for k, v in leaves.items() if k.startswith("alpha.")})
        return torch.cat([c, t], 1)

    return ImageParam(init, to_image)


@ft.lru_cache(maxsize=8)
def _noise_param(h: int, w: int, batch: int, sd: float) -> ImageParam:
    return param_lib.fft((h, w), batch=batch, sd=sd)


@dc.dataclass(frozen=True)
class _Composite:
    """The `apply` of `composite`: RGBA over a background drawn in `sample`."""

    background: str
    sd: float

    def sample(self, g: torch.Generator | None, shape: torch.Size) -> Tensor:
        if len(shape) != 4 or shape[1] != 4:
            raise InvalidArgumentError(
                f"composite() blends RGBA images (B, 4, H, W), e.g. from param_extra.alpha(...); got shape {tuple(shape)}"
            )
        b, _, h, w = shape
        dev = _device(g)
        with torch.no_grad():
            uniform = torch.rand((b, 3, 1, 1), generator=g, device=dev).expand(b, 3, h, w)
            if self.background == "uniform":
                return uniform.contiguous()
            noise = _noise_param(h, w, b, self.sd)
            bg = noise.to_image(noise.init(g)).detach()  # type: ignore[arg-type]
            if self.background == "noise":
                return bg
            pick = torch.rand((b, 1, 1, 1), generator=g, device=dev) < 0.5
            return torch.where(pick, bg, uniform)

    def __call__(self, image: Tensor, bg: Tensor) -> Tensor:
        a = image[:, 3:4]
        return a * image[:, :3] + (1 - a) * bg.to(image.device, image.dtype)

    def out_shape(self, shape: torch.Size) -> torch.Size:
        return torch.Size((shape[0], 3, *shape[2:]))


def composite(background: str = "noise", *, sd: float = 0.5) -> Transform:
    """Blend RGBA images over a random background, new at every step (Lucid's `collapse_alpha`).

    Put it first: `transforms.chain(composite(), transforms.standard())`.

    Args:
        background: "noise" (Lucid: a random Fourier image with spectrum sd `sd`, decorrelated
            colour, sigmoid), "uniform" (one random colour per image), or "mixed" (each image
            draws one of the two).
        sd: the noise background's spectrum standard deviation (higher: more contrast).

    Shape:
        (B, 4, H, W) -> (B, 3, H, W); params: the (B, 3, H, W) background.

    Example:
        >>> import torch
        >>> t = composite("uniform")
        >>> img = torch.rand(2, 4, 8, 8)
        >>> t.apply(img, t.sample(torch.Generator().manual_seed(0), img.shape)).shape
        torch.Size([2, 3, 8, 8])
    """
    if background not in BACKGROUNDS:
        raise InvalidArgumentError(f"background must be one of {BACKGROUNDS}, got {background!r}")
    c = _Composite(background, _real("sd", sd, minimum=0.0))
    return Transform(c.sample, c)


@dc.dataclass(frozen=True, slots=True, repr=False)
class Opacity(Term):
    """Mean alpha of an RGBA image (a penalty: subtract it)."""

    name = "opacity"
    batch: Batch = None

    def sites(self) -> tuple[Site, ...]:
        return (Site(None, IMAGE),)

    def score(self, acts: Acts, n: int) -> Tensor:
        a = acts[Site(None, IMAGE)]
        if a.dim() != 4 or a.shape[1] != 4:
            raise ObjectiveShapeError(
                f"{self!r} reads the alpha channel of an RGBA image (B, 4, H, W), but the rendered image has shape "
                f"{tuple(a.shape)}; render with param=param_extra.alpha(...)"
            )
        return per_image(self, a[:, 3].flatten(1).mean(1), n, self.batch)


def opacity(*, batch: Batch = None) -> Expr:
    """Penalty (subtract it): the mean alpha of the rendered RGBA image, to favour transparency.

    Example:
        >>> from lucent_dsl import channel
        >>> channel("mixed4a", 10) - 0.5 * opacity()
        channel('mixed4a', 10) - 0.5 * opacity()
    """
    return Opacity(_batch(batch))


register("opacity", opacity)


def transparency_map(
    result: Any,
    *,
    images: Tensor | None = None,
    transforms: Transform | None = None,
    samples: int = 8,
    blur: float = 1.0,
    quantile: float = 0.99,
    seed: int = 0,
) -> Tensor:
    """MACO's transparency: how much each pixel matters to the objective, as an alpha map in [0, 1].

    For `samples` random transforms of the rendered image, the gradient of the plan's total score
    with respect to the image is taken; |gradient| summed over channels and averaged over the
    samples, blurred (Gaussian, `blur` pixels) and divided by its `quantile` per image. MACO
    accumulates the same |gradient| over the optimization steps; taking it at the final image over
    random transforms needs no change to the render loop.

    Args:
        result: a `RenderResult` (its `plan` and `images` are used), or a `Plan` with `images=`.
        images: the images to explain (default: `result.images`), (n, C, H, W) in [0, 1].
        transforms: default: the render default `transforms.standard()` (with `composite()` first
            for RGBA images).
        samples: random transforms to average over.
        blur: Gaussian blur sigma in pixels (0: none).
        quantile: this quantile of each map becomes 1 (values above are clipped).
        seed: seeds the transforms.

    Returns:
        (n, 1, H, W) float32 on the CPU; `rgba(images, map)` makes a PNG-ready RGBA image.
    """
    from . import transforms as tf_lib
    from .plan import Plan, frozen_models

    plan = result if isinstance(result, Plan) else getattr(result, "plan", None)
    if not isinstance(plan, Plan):
        raise InvalidArgumentError(f"transparency_map needs a RenderResult or a Plan, got {type(result).__name__}")
    if images is None:
        images = getattr(result, "images", None)
    if not isinstance(images, Tensor) or images.ndim != 4:
        raise InvalidArgumentError("transparency_map needs images (n, C, H, W): pass images= with a Plan")
    samples = _int("samples", samples)
    blur = _real("blur", blur, minimum=0.0)
    if not 0.0 < quantile <= 1.0:
        raise InvalidArgumentError(f"quantile must be in (0, 1], got {quantile!r}")
    if transforms is None:
        transforms = tf_lib.standard()
        if images.shape[1] == 4:
            transforms = tf_lib.chain(composite(), transforms)
    dev = plan.device
    img = images.detach().to(dev, torch.float32).requires_grad_(True)
    n = img.shape[0]
    gen = torch.Generator(dev).manual_seed(int(seed))
    total = torch.zeros_like(img[:, :1])
    with frozen_models(list(plan.models.values())):
        for _ in range(samples):
            with torch.no_grad():
                params = transforms.sample(gen, img.shape)
            x = transforms.apply(img, params)
            score = plan.scores(plan.forward(x, raw=img), n).total
            (grad,) = torch.autograd.grad(score, img)
            total += grad.abs().sum(1, keepdim=True)
    out = total.detach() / samples
    if blur > 0:
        out = tf_lib.gaussian_blur(blur).apply(out, None)
    top = torch.quantile(out.flatten(1), quantile, dim=1).clamp(min=1e-12).view(-1, 1, 1, 1)
    return (out / top).clamp(0, 1).cpu()


def rgba(images: Tensor, alpha_map: Tensor) -> Tensor:
    """RGB images with an alpha channel (RGBA input: its alpha is multiplied by `alpha_map`).

    Shape:
        images: (n, 3 or 4, H, W), alpha_map: (n or 1, 1, H, W) -> (n, 4, H, W)
    """
    if images.ndim != 4 or images.shape[1] not in (3, 4) or alpha_map.ndim != 4 or alpha_map.shape[1] != 1:
        raise InvalidArgumentError(
            f"rgba needs images (n, 3 or 4, H, W) and an alpha map (n, 1, H, W), got {tuple(images.shape)} "
            f"and {tuple(alpha_map.shape)}"
        )
    a = alpha_map.to(images.device, images.dtype).expand(images.shape[0], 1, *images.shape[2:])
    if images.shape[1] == 4:
        a = a * images[:, 3:]
    return torch.cat([images[:, :3], a], 1)
