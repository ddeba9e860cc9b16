"""Image parameterizations: pure `ImageParam(init, to_image)` pairs.

An `ImageParam` is two pure functions, like an optax `GradientTransformation`:

- `init(generator)` draws fresh float32 leaves (a `dict[str, Tensor]`, `requires_grad=True`) on
  `generator.device`. All randomness comes from that generator, so a seed replays bit for bit.
- `to_image(leaves)` maps the leaves to an image batch `(B, C, H, W)` in `[0, 1]`. It is plain
  tensor code with every constant (colour matrix, frequency scale, DFT tables) computed once in
  the factory, so `torch.compile(to_image, fullgraph=True)` traces it in a single graph.

Two factories follow Lucid/lucent: `pixel` (one leaf per pixel) and `fft` (Lucid's Fourier
parameterization, a real 2D spectrum whose high frequencies are damped). Both can decorrelate
colours (Lucid's ImageNet matrix, or your own from `color_correlation`), squash with a sigmoid or
a clamp, and start from a given image instead of noise (`init=`), which caricatures and feature
accentuation need.

Why `fft` has two code paths for one transform: torchinductor does not generate code for complex
tensors (it warns and falls back), so under `torch.compile` the inverse FFT is written as real
matrix products, which compile into the graph and run on tensor cores. Eagerly, `torch.fft.irfft2`
is used, because the matmuls cost O(H W (H + W)) and are ~10x slower on a CPU at 512 x 512. The
branch is on `torch.compiler.is_compiling()`, a constant while tracing; both paths agree to float
rounding (tested).

Example:
    >>> import torch
    >>> p = fft((32, 48), batch=2)
    >>> leaves = p.init(torch.Generator().manual_seed(0))
    >>> sorted(leaves)
    ['spectrum']
    >>> img = p.to_image(leaves)
    >>> img.shape, bool(img.min() >= 0), bool(img.max() <= 1)
    (torch.Size([2, 3, 32, 48]), True, True)
"""
from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor

from .errors import InvalidArgumentError

__all__ = ["LUCID_COLOR_CORRELATION", "ImageParam", "color_correlation", "fft", "image", "pixel"]

# Lucid's `color_correlation_svd_sqrt`: U @ diag(sqrt(S)) of the ImageNet pixel colour covariance.
LUCID_COLOR_CORRELATION = (
    (0.26, 0.09, 0.02),
    (0.27, 0.00, -0.05),
    (0.27, -0.09, 0.03),
)

SQUASHES = ("sigmoid", "clamp")
KINDS = ("fft", "pixel")

# Lucid's "magic" divisor of the Fourier image; larger values reduce saturation.
_FFT_MAGIC = 4.0
# Sigmoid inputs are clipped to this range when inverting an init image, so logit stays finite.
_EPS = 1e-4
# The clamp squash is centred here, so small leaves start as a mid-grey image (Lucid adds its
# colour mean in the same place).
_CLAMP_OFFSET = 0.5


class ImageParam(NamedTuple):
    """A pure pair that describes an image to optimize.

    Attributes:
        init: `init(generator) -> leaves`; fresh float32 leaves (requires_grad=True) created on
            `generator.device` (`None` means the global CPU generator).
        to_image: `to_image(leaves) -> image`; the image batch (B, C, H, W) in [0, 1].

    Example:
        >>> import torch
        >>> p = pixel(8, channels=1)
        >>> p.to_image(p.init(torch.Generator().manual_seed(1))).shape
        torch.Size([1, 1, 8, 8])
    """

    init: Callable[[torch.Generator], dict[str, Tensor]]
    to_image: Callable[[Mapping[str, Tensor]], Tensor]


# --------------------------------------------------------------------------- argument checks


def _int(name: str, value: Any, *, minimum: int = 1) -> int:
    if isinstance(value, bool):
        raise InvalidArgumentError(f"{name} must be an int >= {minimum}, got the bool {value!r}")
    try:
        n = operator.index(value)
    except TypeError:
        raise InvalidArgumentError(
            f"{name} must be an int >= {minimum}, got {value!r} of type {type(value).__name__}"
        ) from None
    if n < minimum:
        raise InvalidArgumentError(f"{name} must be an int >= {minimum}, got {n}")
    return n


def _real(name: str, value: Any, *, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise InvalidArgumentError(f"{name} must be a finite real number, got {value!r}")
    if minimum is not None and value < minimum:
        raise InvalidArgumentError(f"{name} must be >= {minimum}, got {value!r}")
    return float(value)


def _size(size: Any) -> tuple[int, int]:
    """`size` as (H, W): an int n means (n, n)."""
    if isinstance(size, (tuple, list)):
        if len(size) != 2:
            raise InvalidArgumentError(f"size must be an int or a pair (H, W), got {size!r}")
        return _int("size[0] (height)", size[0]), _int("size[1] (width)", size[1])
    if isinstance(size, bool) or not isinstance(size, numbers.Integral):
        raise InvalidArgumentError(f"size must be an int or a pair (H, W), got {size!r}")
    n = _int("size", size)
    return n, n


def _squash(name: Any) -> Callable[[Tensor], Tensor]:
    if name == "sigmoid":
        return torch.sigmoid
    if name == "clamp":
        return _clamp_straight_through
    raise InvalidArgumentError(f"squash must be one of {SQUASHES}, got {name!r}")


def _color_matrix(decorrelate: Any, channels: int) -> Tensor | None:
    """The (C, C) float64 colour matrix, or None for no decorrelation."""
    if decorrelate is True:
        return _lucid_matrix() if channels == 3 else None
    if decorrelate is False or decorrelate is None:
        return None
    if isinstance(decorrelate, (str, bytes, numbers.Number)):
        raise InvalidArgumentError(
            "decorrelate must be True, False, or a (C, C) matrix (tensor or nested tuple, e.g. from "
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


def _lucid_matrix() -> Tensor:
    m = torch.tensor(LUCID_COLOR_CORRELATION, dtype=torch.float64)
    return m / torch.linalg.vector_norm(m, dim=0).max()


def _init_image(img: Any, batch: int, channels: int, h: int, w: int) -> Tensor:
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


def _clamp_straight_through(x: Tensor) -> Tensor:
    """Clamp to [0, 1] forward; identity gradient backward (so saturated pixels can recover).

    The value is exactly `clamp(x, 0, 1)`: `x - x.detach()` is exactly zero, it only carries the
    gradient. (The usual `x + (clamp(x) - x).detach()` can round to just outside [0, 1].)
    """
    return x.detach().clamp(0, 1) + (x - x.detach())


def _apply_color(x: Tensor, m: Tensor) -> Tensor:
    """Mix channels: out[:, i] = sum_j m[i, j] * x[:, j]  (lucent's `t @ m.T` over channels last)."""
    return torch.einsum("ij,bjhw->bihw", m, x)


def _unsquash(img: Tensor, squash: str) -> Tensor:
    """Inverse of the squash on [0, 1] (sigmoid inputs clipped to [1e-4, 1 - 1e-4])."""
    if squash == "sigmoid":
        return torch.logit(img.clamp(_EPS, 1 - _EPS))
    return img - _CLAMP_OFFSET


def _pre_squash(img: Tensor, m: Tensor | None, squash: str) -> Tensor:
    """The un-decorrelated values that `_apply_color` and the squash turn into `img` (float64)."""
    x = _unsquash(img, squash)
    if m is None:
        return x
    try:
        m_inv = torch.linalg.inv(m)
    except RuntimeError:
        raise InvalidArgumentError(
            "init needs to invert the decorrelate matrix, but it is singular; use decorrelate=False "
            "or a matrix from images whose channels are not linearly dependent"
        ) from None
    return _apply_color(x, m_inv)


def _finish(x: Tensor, m: Tensor | None, squash: Callable[[Tensor], Tensor], offset: float) -> Tensor:
    if m is not None:
        x = _apply_color(x, m.to(x.device, x.dtype))
    return squash(x + offset) if offset else squash(x)


def _leaf(t: Tensor, device: torch.device) -> Tensor:
    return t.to(device, torch.float32).clone().requires_grad_(True)


def _device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, sd: float) -> Tensor:
    dev = _device(generator)
    return (torch.randn(shape, generator=generator, device=dev, dtype=torch.float32) * sd).requires_grad_(True)


def _angles(n: int, m: int, period: int) -> Tensor:
    """2*pi*(i*j mod period)/period for i < n, j < m, in float64 (exact reduction, no large angles)."""
    ij = (torch.arange(n)[:, None] * torch.arange(m)[None, :]) % period
    return ij.to(torch.float64) * (2 * math.pi / period)


def _freqs(h: int, w: int) -> Tensor:
    """|frequency| of each rfft2 bin, shape (H, W // 2 + 1), cycles per pixel."""
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(w, dtype=torch.float64)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


def _spectrum_scale(h: int, w: int, decay_power: float) -> Tensor:
    """Lucid's `1 / max(freq, 1 / max(H, W)) ** decay_power * sqrt(H * W)`, shape (H, W // 2 + 1)."""
    return 1.0 / _freqs(h, w).clamp(min=1.0 / max(h, w)) ** decay_power * math.sqrt(h * w)


def _irfft2_tables(h: int, w: int) -> tuple[Tensor, Tensor, Tensor]:
    """Real tables (cos_h, sin_h, a) such that `_irfft2(s, ...) == torch.fft.irfft2(complex(s), s=(h, w))`.

    Along W, `a` maps the interleaved (re, im) columns to [real | imag] parts of a C2R transform
    (bins other than DC and Nyquist count twice; imaginary parts of DC and Nyquist drop out since
    sin vanishes there). Along H it is a complex inverse DFT: cos_h @ re - sin_h @ im. The 1/(H*W)
    of the unnormalized inverse is folded into `a`.
    """
    n_fx = w // 2 + 1
    ang_h = _angles(h, h, h)
    weight = torch.full((n_fx, 1), 2.0, dtype=torch.float64)
    weight[0] = 1.0
    if w % 2 == 0:
        weight[-1] = 1.0
    ang_w = _angles(n_fx, w, w)
    p, q = weight * torch.cos(ang_w), weight * torch.sin(ang_w)
    a = torch.zeros(2 * n_fx, 2 * w, dtype=torch.float64)
    a[0::2, :w], a[1::2, :w] = p, -q
    a[0::2, w:], a[1::2, w:] = q, p
    return torch.cos(ang_h), torch.sin(ang_h), a / (h * w)


def _irfft2(spectrum: Tensor, cos_h: Tensor, sin_h: Tensor, a: Tensor) -> Tensor:
    """Inverse real 2D DFT of a (..., H, W // 2 + 1, 2) real/imaginary tensor, as real matmuls.

    Shape:
        spectrum: (..., H, W // 2 + 1, 2) -> (..., H, W)
    """
    w = a.shape[1] // 2
    t = spectrum.flatten(-2) @ a
    return cos_h @ t[..., :w] - sin_h @ t[..., w:]


def _to_float32(t: Tensor) -> Tensor:
    return t.to(torch.float32).contiguous()


# --------------------------------------------------------------------------- factories


def pixel(
    size: int | tuple[int, int],
    *,
    batch: int = 1,
    channels: int = 3,
    sd: float = 0.01,
    decorrelate: bool | Tensor | tuple = True,
    squash: str = "sigmoid",
    init: Tensor | None = None,
) -> ImageParam:
    """One free value per pixel and channel (lucent's `pixel_image` + `to_valid_rgb`).

    `to_image` computes `squash(M @ x)` per pixel, where `M` is the colour matrix.

    Args:
        size: an int n for n x n, or (H, W).
        batch: images in the batch.
        channels: colour channels (decorrelate=True only acts when channels == 3).
        sd: standard deviation of the random leaves.
        decorrelate: True for Lucid's ImageNet colour matrix, False for none, or a (C, C) matrix
            (tensor or nested tuple), e.g. `color_correlation(images)`.
        squash: "sigmoid", or "clamp" (to [0, 1] around a 0.5 offset, with a straight-through
            gradient: the value is clamped, the gradient passes as if it were not).
        init: an image (1 or batch, C, H, W) in [0, 1] to start from instead of noise;
            `to_image(init(g))` then reproduces it (sigmoid: after clipping to [1e-4, 1 - 1e-4]).

    Returns:
        an `ImageParam` whose leaves are `{"pixels": (B, C, H, W)}`.

    Raises:
        InvalidArgumentError: a bad size, batch, channels, sd, squash, decorrelate or init.

    Shape:
        to_image: {"pixels": (B, C, H, W)} -> (B, C, H, W)

    Example:
        >>> import torch
        >>> p = pixel((4, 6), batch=2, squash="clamp")
        >>> p.to_image(p.init(torch.Generator().manual_seed(0))).shape
        torch.Size([2, 3, 4, 6])
        >>> start = torch.full((1, 3, 4, 6), 0.25)
        >>> q = pixel((4, 6), init=start)
        >>> bool(torch.allclose(q.to_image(q.init(torch.Generator())), start, atol=1e-5))
        True

    See also:
        `fft`, which optimizes better for most models; `image`.
    """
    h, w = _size(size)
    batch, channels = _int("batch", batch), _int("channels", channels)
    sd = _real("sd", sd, minimum=0.0)
    squash_fn = _squash(squash)
    m = _color_matrix(decorrelate, channels)
    offset = _CLAMP_OFFSET if squash == "clamp" else 0.0
    start = None
    if init is not None:
        start = _to_float32(_pre_squash(_init_image(init, batch, channels, h, w), m, squash))
    m32 = None if m is None else _to_float32(m)

    def init_fn(generator: torch.Generator | None) -> dict[str, Tensor]:
        if start is not None:
            return {"pixels": _leaf(start, _device(generator))}
        return {"pixels": _randn((batch, channels, h, w), generator, sd)}

    def to_image(leaves: Mapping[str, Tensor]) -> Tensor:
        return _finish(leaves["pixels"], m32, squash_fn, offset)

    return ImageParam(init_fn, to_image)


def fft(
    size: int | tuple[int, int],
    *,
    batch: int = 1,
    channels: int = 3,
    sd: float = 0.01,
    decay_power: float = 1.0,
    decorrelate: bool | Tensor | tuple = True,
    squash: str = "sigmoid",
    init: Tensor | None = None,
) -> ImageParam:
    """Lucid's Fourier parameterization: a damped real 2D spectrum per image and channel.

    `to_image` computes `squash(M @ irfft2(spectrum * scale) / 4)` per pixel, with
    `scale = 1 / max(freq, 1 / max(H, W)) ** decay_power * sqrt(H * W)` over the rfft2
    frequencies (the `sqrt(H * W)` makes the unnormalized inverse unitary, as in Lucid;
    lucent writes the same thing as `norm="ortho"`). Lucent keeps `W // 2 + 2` columns for odd W
    and throws one away; here the spectrum has exactly `W // 2 + 1`.

    Args:
        size: an int n for n x n, or (H, W).
        batch: images in the batch.
        channels: colour channels (decorrelate=True only acts when channels == 3).
        sd: standard deviation of the random spectrum.
        decay_power: how fast the spectrum is damped with frequency (0: white noise).
        decorrelate: True for Lucid's ImageNet colour matrix, False for none, or a (C, C) matrix
            (tensor or nested tuple), e.g. `color_correlation(images)`.
        squash: "sigmoid", or "clamp" (straight-through; see `pixel`).
        init: an image (1 or batch, C, H, W) in [0, 1] to start from instead of noise;
            `to_image(init(g))` then reproduces it (sigmoid: after clipping to [1e-4, 1 - 1e-4]).

    Returns:
        an `ImageParam` whose leaves are `{"spectrum": (B, C, H, W // 2 + 1, 2)}` (real, imaginary).

    Raises:
        InvalidArgumentError: a bad size, batch, channels, sd, decay_power, squash, decorrelate
            or init.

    Shape:
        to_image: {"spectrum": (B, C, H, W // 2 + 1, 2)} -> (B, C, H, W)

    Example:
        >>> import torch
        >>> p = fft((5, 7))
        >>> p.init(torch.Generator().manual_seed(0))["spectrum"].shape
        torch.Size([1, 3, 5, 4, 2])
        >>> p.to_image(p.init(torch.Generator().manual_seed(0))).shape
        torch.Size([1, 3, 5, 7])

    See also:
        `pixel`, `image`, `color_correlation`.
    """
    h, w = _size(size)
    batch, channels = _int("batch", batch), _int("channels", channels)
    sd = _real("sd", sd, minimum=0.0)
    decay_power = _real("decay_power", decay_power)
    squash_fn = _squash(squash)
    m = _color_matrix(decorrelate, channels)
    offset = _CLAMP_OFFSET if squash == "clamp" else 0.0
    scale64 = _spectrum_scale(h, w, decay_power)
    cos_h, sin_h, a = (_to_float32(t) for t in _irfft2_tables(h, w))
    # The magic divisor is folded into the DFT table: one multiply fewer per step.
    a = a / _FFT_MAGIC
    scale = _to_float32(scale64[..., None])
    start = None
    if init is not None:
        x = _pre_squash(_init_image(init, batch, channels, h, w), m, squash)
        z = torch.fft.rfft2(x * _FFT_MAGIC) / scale64
        start = _to_float32(torch.view_as_real(z))
    m32 = None if m is None else _to_float32(m)

    def init_fn(generator: torch.Generator | None) -> dict[str, Tensor]:
        if start is not None:
            return {"spectrum": _leaf(start, _device(generator))}
        return {"spectrum": _randn((batch, channels, h, w // 2 + 1, 2), generator, sd)}

    def to_image(leaves: Mapping[str, Tensor]) -> Tensor:
        s = leaves["spectrum"]
        dev, dt = s.device, s.dtype
        s = s * scale.to(dev, dt)
        if torch.compiler.is_compiling() or dt not in (torch.float32, torch.float64):
            x = _irfft2(s, cos_h.to(dev, dt), sin_h.to(dev, dt), a.to(dev, dt))
        else:
            x = torch.fft.irfft2(torch.view_as_complex(s.contiguous()), s=(h, w)) / _FFT_MAGIC
        return _finish(x, m32, squash_fn, offset)

    return ImageParam(init_fn, to_image)


def image(size: int | tuple[int, int], *, kind: str = "fft", **kw: Any) -> ImageParam:
    """`fft(size, **kw)` or `pixel(size, **kw)`, chosen by `kind`.

    Raises:
        InvalidArgumentError: `kind` is not "fft" or "pixel" (or a bad option, see the factories).

    Example:
        >>> image(16, kind="pixel", batch=2).init(None)["pixels"].shape
        torch.Size([2, 3, 16, 16])
    """
    if kind == "fft":
        return fft(size, **kw)
    if kind == "pixel":
        return pixel(size, **kw)
    raise InvalidArgumentError(f"kind must be one of {KINDS}, got {kind!r}")


def color_correlation(images: Tensor) -> Tensor:
    """The colour matrix of your own images, to pass as `decorrelate=`.

    Computes the channel covariance `S` of all pixels of `images`, its symmetric square root
    `R = U diag(sqrt(l)) U^T` (eigh), and divides by `sqrt(max(l))`. Lucid's constant is the
    other square root `U diag(sqrt(l))` divided by its largest column norm, which is the same
    `sqrt(max(l))`; both give the same `R @ R.T = S / max(l)`, so random leaves get the same
    colour statistics. The symmetric root is unique (no eigenvector sign or order to choose) and
    is diagonal when the channels are independent.

    Args:
        images: (N, C, H, W), typically in [0, 1] (the result does not depend on the scale).

    Returns:
        a float32 (C, C) matrix on the CPU.

    Raises:
        InvalidArgumentError: not a 4-D tensor, fewer than 2 pixels, non-finite values, or
            constant images (zero covariance).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> imgs = torch.rand(4, 3, 16, 16, generator=g)
        >>> m = color_correlation(imgs)
        >>> m.shape
        torch.Size([3, 3])
        >>> p = pixel(16, decorrelate=m)
    """
    if not isinstance(images, Tensor) or images.ndim != 4:
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise InvalidArgumentError(f"images must be a tensor of shape (N, C, H, W), got {got}")
    c = images.shape[1]
    pixels = images.detach().to("cpu", torch.float64).transpose(0, 1).reshape(c, -1)
    if pixels.shape[1] < 2 or c < 1:
        raise InvalidArgumentError(f"images must hold at least 2 pixels and 1 channel, got {tuple(images.shape)}")
    if not bool(torch.isfinite(pixels).all()):
        raise InvalidArgumentError("images contain NaN or infinite values")
    cov = torch.cov(pixels).reshape(c, c)
    evals, evecs = torch.linalg.eigh(cov)
    evals = evals.clamp(min=0)
    top = float(evals.max())
    if top <= 0:
        raise InvalidArgumentError("images have zero colour variance (constant images); no correlation to estimate")
    root = (evecs * evals.sqrt()) @ evecs.T
    return (root / math.sqrt(top)).to(torch.float32)
