"""The two Lucid parameterizations, `pixel` and `fft`, the `image` dispatcher and `color_correlation`.

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
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ..args import check_int, check_real, check_size
from ..errors import InvalidArgumentError
from ..models.checks import generator_device
from ._common import (
    CLAMP_OFFSET,
    FFT_MAGIC,
    KINDS,
    ImageParam,
    color_matrix,
    finish_image,
    init_image,
    irfft2,
    irfft2_tables,
    leaf,
    pre_squash,
    randn,
    spectrum_scale,
    squash_by_name,
    to_float32,
)

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
        channels: colour channels (decorrelate=True only acts when channels == 3; for a 4-channel RGB+NIR
            or RGBD model, decorrelate="rgb" decorrelates channels 0-2 and leaves the others independent).
        sd: standard deviation of the random leaves.
        decorrelate: True for Lucid's ImageNet colour matrix, False for none, "rgb" for that matrix on
            channels 0-2 only, or a (C, C) matrix
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
    h, w = check_size(size)
    batch, channels = check_int("batch", batch), check_int("channels", channels)
    sd = check_real("sd", sd, minimum=0.0)
    squash_fn = squash_by_name(squash)
    m = color_matrix(decorrelate, channels)
    offset = CLAMP_OFFSET if squash == "clamp" else 0.0
    start = None
    if init is not None:
        start = to_float32(pre_squash(init_image(init, batch, channels, h, w), m, squash))
    m32 = None if m is None else to_float32(m)

    def init_fn(generator: torch.Generator | None) -> dict[str, Tensor]:
        if start is not None:
            return {"pixels": leaf(start, generator_device(generator))}
        return {"pixels": randn((batch, channels, h, w), generator, sd)}

    def to_image(leaves: Mapping[str, Tensor]) -> Tensor:
        return finish_image(leaves["pixels"], m32, squash_fn, offset)

    return ImageParam(init_fn, to_image, _recipe("pixel", (h, w), batch, channels, 1.0, sd, decorrelate, squash, init))


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
        channels: colour channels (decorrelate=True only acts when channels == 3; for a 4-channel RGB+NIR
            or RGBD model, decorrelate="rgb" decorrelates channels 0-2 and leaves the others independent).
        sd: standard deviation of the random spectrum.
        decay_power: how fast the spectrum is damped with frequency (0: white noise).
        decorrelate: True for Lucid's ImageNet colour matrix, False for none, "rgb" for that matrix on
            channels 0-2 only, or a (C, C) matrix
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
    h, w = check_size(size)
    batch, channels = check_int("batch", batch), check_int("channels", channels)
    sd = check_real("sd", sd, minimum=0.0)
    decay_power = check_real("decay_power", decay_power)
    squash_fn = squash_by_name(squash)
    m = color_matrix(decorrelate, channels)
    offset = CLAMP_OFFSET if squash == "clamp" else 0.0
    scale64 = spectrum_scale(h, w, decay_power)
    cos_h, sin_h, a = (to_float32(t) for t in irfft2_tables(h, w))
    # The magic divisor is folded into the DFT table: one multiply fewer per step.
    a = a / FFT_MAGIC
    # (H, W', 2), not (H, W', 1): a multiply broadcast over the last axis of 2 is ~8x slower on a CPU
    scale = to_float32(scale64[..., None].expand(*scale64.shape, 2).contiguous())
    start = None
    if init is not None:
        x = pre_squash(init_image(init, batch, channels, h, w), m, squash)
        z = torch.fft.rfft2(x * FFT_MAGIC) / scale64
        start = to_float32(torch.view_as_real(z))
    m32 = None if m is None else to_float32(m)

    def init_fn(generator: torch.Generator | None) -> dict[str, Tensor]:
        if start is not None:
            return {"spectrum": leaf(start, generator_device(generator))}
        return {"spectrum": randn((batch, channels, h, w // 2 + 1, 2), generator, sd)}

    scale_fft = scale / FFT_MAGIC  # torch.fft's path: the divisor folded into the spectrum's scale

    def to_image(leaves: Mapping[str, Tensor]) -> Tensor:
        s = leaves["spectrum"]
        dev, dt = s.device, s.dtype
        if torch.compiler.is_compiling() or dt not in (torch.float32, torch.float64):
            x = irfft2(s * scale.to(dev, dt), cos_h.to(dev, dt), sin_h.to(dev, dt), a.to(dev, dt))
        else:
            x = torch.fft.irfft2(torch.view_as_complex((s * scale_fft.to(dev, dt)).contiguous()), s=(h, w))
        return finish_image(x, m32, squash_fn, offset)

    return ImageParam(
        init_fn, to_image, _recipe("fft", (h, w), batch, channels, decay_power, sd, decorrelate, squash, init)
    )


def _recipe(kind: str, size: tuple[int, int], batch: int, channels: int, decay_power: float, sd: float,
            decorrelate: Any, squash: str, init: Any) -> tuple[tuple[str, Any], ...]:
    """`ImageParam.recipe`: the settings a `Recipe` can name, or () when another one was changed."""
    if sd != 0.01 or decorrelate is not True or squash != "sigmoid" or init is not None:
        return ()
    return (
        ("param", kind),
        ("size", size),
        ("batch", batch),
        ("channels", channels),
        ("decay_power", float(decay_power)),
    )


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
