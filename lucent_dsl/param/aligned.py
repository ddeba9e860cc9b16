"""Shared low-resolution parameterization: images of a batch share a common component (aligned renders).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..args import check_int, check_real, check_size
from ..errors import InvalidArgumentError
from ._common import (
    CLAMP_OFFSET,
    ImageParam,
    color_matrix,
    colour,
    float32_irfft2_tables,
    irfft2_ortho,
    randn,
    spectrum_scale,
    squash_by_name,
    to_float32,
)

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
    h, w = check_size(size)
    batch, channels = check_int("batch", batch), check_int("channels", channels)
    sd = check_real("sd", sd, minimum=0.0)
    decay_power = check_real("decay_power", decay_power)
    levels = [("shared", check_int("each factor", f), 1) for f in factors]
    levels += [("ends", check_int("each interpolate factor", g), 2) for g in interpolate]
    names = [f"{kind}_{f}" for kind, f, _ in levels]
    if len(set(names)) != len(names):
        raise InvalidArgumentError(
            f"factors and interpolate must not repeat a value, got {tuple(factors)}, {tuple(interpolate)}"
        )
    finish = squash_by_name(squash)
    offset = CLAMP_OFFSET if squash == "clamp" else 0.0
    m = color_matrix(decorrelate, channels)
    m32 = None if m is None else to_float32(m)
    scale = to_float32(spectrum_scale(h, w, decay_power))
    tables = float32_irfft2_tables(h, w)
    mix = {f: _batch_weights(batch, ends) for _, f, ends in levels}

    def init(generator: torch.Generator | None) -> dict[str, Tensor]:
        leaves = {"detail": randn((batch, channels, h, w // 2 + 1, 2), generator, sd)}
        for (_kind, f, ends), name in zip(levels, names):
            leaves[name] = randn((ends, channels, math.ceil(h / f), math.ceil(w / f)), generator, sd)
        return leaves

    def to_image(leaves: Mapping[str, Tensor]) -> Tensor:
        s = leaves["detail"]
        k = scale.to(s.device, s.dtype)
        # param.fft's magic divisor 4, and its unnormalized inverse (ortho / sqrt(H W) * sqrt(H W) scale)
        x = irfft2_ortho(s[..., 0] * k, s[..., 1] * k, h, w, tables) / (math.sqrt(h * w) * 4.0)
        for (_kind, f, ends), name in zip(levels, names):
            low = leaves[name]
            if ends == 2 or batch > 1:
                low = torch.einsum("ne,echw->nchw", mix[f].to(low.device, low.dtype), low)
            x = x + F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
        x = colour(x, m32)
        return finish(x + offset) if offset else finish(x)

    return ImageParam(init, to_image)
