"""MACO (Fel et al. 2023): optimize only the Fourier phase; the magnitude is a natural-image spectrum.
"""
from __future__ import annotations

import functools as ft
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..args import check_int, check_size
from ..errors import InvalidArgumentError
from ..models.checks import generator_device
from ._common import (
    NATURAL_MAGNITUDE_PATH,
    ImageParam,
    apply_color,
    clamp_straight_through,
    color_matrix,
    colour,
    even_part,
    float32_irfft2_tables,
    irfft2_ortho,
    odd_part,
    squash_linear,
    to_float32,
)

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
    m = color_matrix(decorrelate, x.shape[1])
    if m is not None:
        try:
            x = apply_color(x, torch.linalg.inv(m))
        except RuntimeError:
            raise InvalidArgumentError("the decorrelate matrix is singular; use decorrelate=False") from None
    mag = torch.fft.fft2(x, norm="ortho").abs().mean(0)
    mag[:, 0, 0] = 0.0
    if size is not None:
        mag = _resample(mag, *check_size(size))
    return mag.to(torch.float32)


def _resample(mag: Tensor, h: int, w: int) -> Tensor:
    """A magnitude spectrum (C, H0, W0) at another grid size, by frequency in cycles per pixel.

    With the orthonormal DFT, the expected magnitude at a given frequency does not depend on the
    image size, so the spectrum is interpolated (bilinear, in the centred layout) at the target's
    frequencies and made even again.
    """
    h0, w0 = mag.shape[-2:]
    if (h0, w0) == (h, w):
        return even_part(mag.to(torch.float64))
    centred = torch.fft.fftshift(mag.to(torch.float64), dim=(-2, -1))

    def coords(n: int, n0: int) -> Tensor:
        f = torch.fft.fftshift(torch.fft.fftfreq(n, dtype=torch.float64))
        index = f * n0 + n0 // 2  # the source index of frequency f in the centred layout
        return 2 * index / max(n0 - 1, 1) - 1  # grid_sample's align_corners=True coordinates

    gy, gx = torch.meshgrid(coords(h, h0), coords(w, w0), indexing="ij")
    grid = torch.stack([gx, gy], -1)[None]
    out = F.grid_sample(centred[None], grid, mode="bilinear", padding_mode="border", align_corners=True)[0]
    return even_part(torch.fft.ifftshift(out, dim=(-2, -1)))


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
                "the shipped magnitude is for 3 colour channels; pass magnitude=natural_magnitude(images) for "
                f"{channels}"
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
    mag = even_part(magnitude.to(phase.device, phase.dtype))[..., : w // 2 + 1]
    return _maco_image(phase, mag, float32_irfft2_tables(h, w))


def _maco_image(phase: Tensor, half_magnitude: Tensor, tables: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    h, w = phase.shape[-2:]
    q = odd_part(phase)[..., : w // 2 + 1]
    mag = half_magnitude.to(phase.device, phase.dtype)
    return irfft2_ortho(mag * torch.cos(q), mag * torch.sin(q), h, w, tables)




def maco(
    size: int | tuple[int, int],
    *,
    magnitude: Tensor | np.ndarray | None = None,
    batch: int = 1,
    channels: int = 3,
    decorrelate: bool | Tensor | tuple = True,
    squash: str = "sigmoid",
    standardize: bool = False,
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
        standardize: as xplique's MACO: each image's phase is standardized (zero mean, unit std)
            before use, and each pre-colour image is standardized too, then coloured and squashed
            with a plain `sigmoid` (no gain), so the contrast is the same whatever the magnitude's
            scale and the phase's size (Adam's or NAdam's steps are then relative to it). Off: the
            phase is in radians and the image has the magnitude's own (natural) contrast.

    Returns:
        an `ImageParam` whose leaves are `{"phase": (B, C, H, W)}`, drawn uniformly in [-pi, pi). With
        `standardize` and the other settings at their defaults, a recipe names it "maco" (`ImageParam.recipe`).

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
    h, w = check_size(size)
    batch, channels = check_int("batch", batch), check_int("channels", channels)
    finish = squash_linear(squash)
    m = color_matrix(decorrelate, channels)
    m32 = None if m is None else to_float32(m)
    mag = to_float32(_magnitude(magnitude, channels, h, w))  # even: resampling makes it so
    half = mag[..., : w // 2 + 1].contiguous()
    tables = float32_irfft2_tables(h, w)

    def init(generator: torch.Generator | None) -> dict[str, Tensor]:
        u = torch.rand((batch, channels, h, w), generator=generator, device=generator_device(generator))
        return {"phase": ((u * 2 - 1) * math.pi).requires_grad_(True)}

    def to_image(leaves: Mapping[str, Tensor]) -> Tensor:
        return finish(colour(_maco_image(leaves["phase"], half, tables), m32))

    def to_image_standardized(leaves: Mapping[str, Tensor]) -> Tensor:
        phase = leaves["phase"]
        x = _maco_image(_standardized(phase), half, tables)
        y = colour(_standardized(x), m32)
        return torch.sigmoid(y) if squash == "sigmoid" else clamp_straight_through(y + 0.5)

    # A recipe names "maco" at xplique's settings (standardized, the shipped magnitude, Lucid's colours, sigmoid).
    named = standardize and magnitude is None and decorrelate is True and squash == "sigmoid"
    recipe = (("param", "maco"), ("size", (h, w)), ("batch", batch), ("channels", channels),
              ("decay_power", 1.0)) if named else ()
    return ImageParam(init, to_image_standardized if standardize else to_image, recipe)


def _standardized(x: Tensor) -> Tensor:
    """Each image of a batch with zero mean and unit standard deviation over its channels and pixels."""
    flat = x.flatten(1)
    mean, std = flat.mean(1), flat.std(1)
    return (x - mean.view(-1, 1, 1, 1)) / (std.view(-1, 1, 1, 1) + 1e-5)
