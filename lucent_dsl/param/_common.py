"""The toolkit every parameterization shares: `ImageParam`, argument checks, colour, squashes, DFT tables.
"""
from __future__ import annotations

import functools as ft
import math
import numbers
import os
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..errors import InvalidArgumentError
from ..models.checks import generator_device

# Lucid's `color_correlation_svd_sqrt`: U @ diag(sqrt(S)) of the ImageNet pixel colour covariance.
LUCID_COLOR_CORRELATION = (
    (0.26, 0.09, 0.02),
    (0.27, 0.00, -0.05),
    (0.27, -0.09, 0.03),
)

SQUASHES = ("sigmoid", "clamp")
KINDS = ("fft", "pixel")

# Lucid's "magic" divisor of the Fourier image; larger values reduce saturation.
FFT_MAGIC = 4.0
# Sigmoid inputs are clipped to this range when inverting an init image, so logit stays finite.
EPS = 1e-4
# The clamp squash is centred here, so small leaves start as a mid-grey image (Lucid adds its
# colour mean in the same place).
CLAMP_OFFSET = 0.5


class ImageParam(NamedTuple):
    """A pure pair that describes an image to optimize.

    Attributes:
        init: `init(generator) -> leaves`; fresh float32 leaves (requires_grad=True) created on
            `generator.device` (`None` means the global CPU generator).
        to_image: `to_image(leaves) -> image`; the image batch (B, C, H, W) in [0, 1].
        recipe: what a `replay.Recipe` needs to build it again ((key, value) pairs: param, size, batch,
            channels, decay_power), set by `fft` and `pixel` at settings a recipe can name; () otherwise.
        at_size: `at_size((H, W)) -> ImageParam`, the same parameterization drawing the same leaves at another
            size, for one whose leaves do not depend on the size (`pattern.cppn`); None otherwise. A
            `RenderResult` keeps its leaves, so `result.image_at(size)` draws a trained CPPN at any size.

    Example:
        >>> import torch
        >>> from lucent_dsl.param import pixel
        >>> p = pixel(8, channels=1)
        >>> p.to_image(p.init(torch.Generator().manual_seed(1))).shape
        torch.Size([1, 1, 8, 8])
    """

    init: Callable[[torch.Generator], dict[str, Tensor]]
    to_image: Callable[[Mapping[str, Tensor]], Tensor]
    recipe: tuple[tuple[str, Any], ...] = ()
    at_size: Callable[[tuple[int, int]], ImageParam] | None = None


# --------------------------------------------------------------------------- argument checks


def squash_by_name(name: Any) -> Callable[[Tensor], Tensor]:
    if name == "sigmoid":
        return torch.sigmoid
    if name == "clamp":
        return clamp_straight_through
    raise InvalidArgumentError(f"squash must be one of {SQUASHES}, got {name!r}")


def color_matrix(decorrelate: Any, channels: int) -> Tensor | None:
    """The (C, C) float64 colour matrix, or None for no decorrelation."""
    if decorrelate is True:
        return lucid_matrix() if channels == 3 else None
    if decorrelate is False or decorrelate is None:
        return None
    if decorrelate == "rgb":
        return rgb_first_matrix(channels)
    if isinstance(decorrelate, (str, bytes, numbers.Number)):
        raise InvalidArgumentError(
            "decorrelate must be True, False, \"rgb\" or a (C, C) matrix (tensor or nested tuple, e.g. from "
            f"color_correlation(images)), got {decorrelate!r}"
        )
    try:
        m = torch.as_tensor(decorrelate, dtype=torch.float64).detach().cpu().clone()
    except (TypeError, ValueError, RuntimeError) as e:
        raise InvalidArgumentError(f"decorrelate could not be read as a matrix: {e}") from None
    if m.shape != (channels, channels):
        raise InvalidArgumentError(
            f"decorrelate must be a ({channels}, {channels}) matrix for channels={channels}, "
            f"got shape {tuple(m.shape)}"
        )
    if not bool(torch.isfinite(m).all()):
        raise InvalidArgumentError("decorrelate contains NaN or infinite values")
    return m


def rgb_first_matrix(channels: int) -> Tensor:
    """`decorrelate="rgb"`: Lucid's colour matrix on channels 0-2 (RGB), the others independent (RGB+NIR, RGB+depth).

    Only the user knows that the first three channels are RGB, so `decorrelate=True` never assumes it for
    channels != 3.

    Example:
        >>> m = rgb_first_matrix(4)
        >>> m.shape, bool((m[:3, :3] == lucid_matrix()).all()), m[3].tolist()
        (torch.Size([4, 4]), True, [0.0, 0.0, 0.0, 1.0])
    """
    if channels < 3:
        raise InvalidArgumentError(f'decorrelate="rgb" needs RGB in channels 0-2, but the image has {channels}')
    return torch.block_diag(lucid_matrix(), torch.eye(channels - 3, dtype=torch.float64))


def lucid_matrix() -> Tensor:
    m = torch.tensor(LUCID_COLOR_CORRELATION, dtype=torch.float64)
    return m / torch.linalg.vector_norm(m, dim=0).max()


def init_image(img: Any, batch: int, channels: int, h: int, w: int) -> Tensor:
    """The init image as float64 (batch, C, H, W), checked and clipped to [0, 1]."""
    expected = f"(1 or {batch}, {channels}, {h}, {w})"
    if not isinstance(img, Tensor):
        raise InvalidArgumentError(f"init must be an image tensor of shape {expected}, got {type(img).__name__}")
    if img.ndim != 4 or img.shape[0] not in (1, batch) or tuple(img.shape[1:]) != (channels, h, w):
        raise InvalidArgumentError(f"init must have shape {expected}, got {tuple(img.shape)}")
    x = img.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise InvalidArgumentError("init contains NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise InvalidArgumentError(f"init must be an image in [0, 1], got values in [{lo:.4g}, {hi:.4g}]")
    return x.clamp(0, 1).expand(batch, -1, -1, -1)


# --------------------------------------------------------------------------- pure pieces


def clamp_straight_through(x: Tensor) -> Tensor:
    """Clamp to [0, 1] forward; identity gradient backward (so saturated pixels can recover).

    The value is exactly `clamp(x, 0, 1)`: `x - x.detach()` is exactly zero, it only carries the
    gradient. (The usual `x + (clamp(x) - x).detach()` can round to just outside [0, 1].)
    """
    return x.detach().clamp(0, 1) + (x - x.detach())


def apply_color(x: Tensor, m: Tensor) -> Tensor:
    """Mix channels: out[:, i] = sum_j m[i, j] * x[:, j]  (lucent's `t @ m.T` over channels last)."""
    return torch.einsum("ij,bjhw->bihw", m, x)


def unsquash(img: Tensor, squash: str) -> Tensor:
    """Inverse of the squash on [0, 1] (sigmoid inputs clipped to [1e-4, 1 - 1e-4])."""
    if squash == "sigmoid":
        return torch.logit(img.clamp(EPS, 1 - EPS))
    return img - CLAMP_OFFSET


def pre_squash(img: Tensor, m: Tensor | None, squash: str) -> Tensor:
    """The un-decorrelated values that `apply_color` and the squash turn into `img` (float64)."""
    x = unsquash(img, squash)
    if m is None:
        return x
    try:
        m_inv = torch.linalg.inv(m)
    except RuntimeError:
        raise InvalidArgumentError(
            "init needs to invert the decorrelate matrix, but it is singular; use decorrelate=False "
            "or a matrix from images whose channels are not linearly dependent"
        ) from None
    return apply_color(x, m_inv)


def finish_image(x: Tensor, m: Tensor | None, squash: Callable[[Tensor], Tensor], offset: float) -> Tensor:
    if m is not None:
        x = apply_color(x, m.to(x.device, x.dtype))
    return squash(x + offset) if offset else squash(x)


def leaf(t: Tensor, device: torch.device | None) -> Tensor:
    return t.to(device, torch.float32).clone().requires_grad_(True)


def randn(shape: tuple[int, ...], generator: torch.Generator | None, sd: float) -> Tensor:
    dev = generator_device(generator)
    return (torch.randn(shape, generator=generator, device=dev, dtype=torch.float32) * sd).requires_grad_(True)


def angles(n: int, m: int, period: int) -> Tensor:
    """2*pi*(i*j mod period)/period for i < n, j < m, in float64 (exact reduction, no large angles)."""
    ij = (torch.arange(n)[:, None] * torch.arange(m)[None, :]) % period
    return ij.to(torch.float64) * (2 * math.pi / period)


def freqs(h: int, w: int) -> Tensor:
    """|frequency| of each rfft2 bin, shape (H, W // 2 + 1), cycles per pixel."""
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(w, dtype=torch.float64)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


def spectrum_scale(h: int, w: int, decay_power: float) -> Tensor:
    """Lucid's `1 / max(freq, 1 / max(H, W)) ** decay_power * sqrt(H * W)`, shape (H, W // 2 + 1)."""
    return 1.0 / freqs(h, w).clamp(min=1.0 / max(h, w)) ** decay_power * math.sqrt(h * w)


def irfft2_tables(h: int, w: int) -> tuple[Tensor, Tensor, Tensor]:
    """Real tables (cos_h, sin_h, a) such that `irfft2(s, ...) == torch.fft.irfft2(complex(s), s=(h, w))`.

    Along W, `a` maps the interleaved (re, im) columns to [real | imag] parts of a C2R transform
    (bins other than DC and Nyquist count twice; imaginary parts of DC and Nyquist drop out since
    sin vanishes there). Along H it is a complex inverse DFT: cos_h @ re - sin_h @ im. The 1/(H*W)
    of the unnormalized inverse is folded into `a`.
    """
    n_fx = w // 2 + 1
    ang_h = angles(h, h, h)
    weight = torch.full((n_fx, 1), 2.0, dtype=torch.float64)
    weight[0] = 1.0
    if w % 2 == 0:
        weight[-1] = 1.0
    ang_w = angles(n_fx, w, w)
    p, q = weight * torch.cos(ang_w), weight * torch.sin(ang_w)
    a = torch.zeros(2 * n_fx, 2 * w, dtype=torch.float64)
    a[0::2, :w], a[1::2, :w] = p, -q
    a[0::2, w:], a[1::2, w:] = q, p
    return torch.cos(ang_h), torch.sin(ang_h), a / (h * w)


def irfft2(spectrum: Tensor, cos_h: Tensor, sin_h: Tensor, a: Tensor) -> Tensor:
    """Inverse real 2D DFT of a (..., H, W // 2 + 1, 2) real/imaginary tensor, as real matmuls.

    Shape:
        spectrum: (..., H, W // 2 + 1, 2) -> (..., H, W)
    """
    w = a.shape[1] // 2
    t = spectrum.flatten(-2) @ a
    return cos_h @ t[..., :w] - sin_h @ t[..., w:]


def to_float32(t: Tensor) -> Tensor:
    return t.to(torch.float32).contiguous()




NATURAL_MAGNITUDE_PATH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "natural_magnitude.npy")
# The squash slope: sigmoid(4 y) ~ 0.5 + y near mid-grey, so a pre-squash signal with the statistics of
# (photo - mean) in decorrelated colour gives an image with a photo's contrast.
SIGMOID_GAIN = 4.0


# --------------------------------------------------------------------------- shared pieces


def squash_linear(squash: str) -> Callable[[Tensor], Tensor]:
    """A squash to [0, 1] whose value near mid-grey is 0.5 + y (slope 1)."""
    if squash == "sigmoid":
        return lambda y: torch.sigmoid(SIGMOID_GAIN * y)
    if squash == "clamp":
        return lambda y: clamp_straight_through(y + CLAMP_OFFSET)
    raise InvalidArgumentError(f"squash must be one of {SQUASHES}, got {squash!r}")


def colour(x: Tensor, m: Tensor | None) -> Tensor:
    return x if m is None else apply_color(x, m.to(x.device, x.dtype))


def irfft2_ortho(re: Tensor, im: Tensor, h: int, w: int, tables: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """Orthonormal inverse real 2D DFT of (..., H, W // 2 + 1) real and imaginary parts.

    Eagerly `torch.fft.irfft2`; under torch.compile, real matrix products (inductor does not
    generate code for complex tensors), as `param.fft` does.
    """
    if torch.compiler.is_compiling() or re.dtype not in (torch.float32, torch.float64):
        cos_h, sin_h, a = (t.to(re.device, re.dtype) for t in tables)
        return irfft2(torch.stack([re, im], -1), cos_h, sin_h, a) * math.sqrt(h * w)
    return torch.fft.irfft2(torch.complex(re, im), s=(h, w), norm="ortho")


def odd_part(p: Tensor) -> Tensor:
    """The odd part of p over the DFT grid: q[k, l] = (p[k, l] - p[-k, -l]) / 2 (indices mod H, W).

    A phase with q[-k, -l] = -q[k, l] makes `magnitude * exp(i q)` Hermitian (when the magnitude is
    even), so the inverse DFT is real and its DFT has exactly that magnitude; self-conjugate bins
    (DC, Nyquist) get phase 0.
    """
    flipped = torch.roll(torch.flip(p, dims=(-2, -1)), shifts=(1, 1), dims=(-2, -1))
    return (p - flipped) / 2


def even_part(m: Tensor) -> Tensor:
    return (m + torch.roll(torch.flip(m, dims=(-2, -1)), shifts=(1, 1), dims=(-2, -1))) / 2


@ft.lru_cache(maxsize=16)
def float32_irfft2_tables(h: int, w: int) -> tuple[Tensor, Tensor, Tensor]:
    """`irfft2_tables` in float32, cached per size (MACO and shared parameterizations)."""
    return tuple(to_float32(t) for t in irfft2_tables(h, w))  # type: ignore[return-value]
