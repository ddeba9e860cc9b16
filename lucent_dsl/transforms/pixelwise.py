"""Transforms that change pixel values, not positions: gaussian_blur, noise, and `composite`
(RGBA over a random background).
"""
from __future__ import annotations

import dataclasses as dc
import functools as ft
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..args import check_int, check_real, is_real
from ..errors import InvalidArgumentError
from ..models.checks import generator_device
from ..param.transparency import noise_background  # the noise background is a parameterization's draw
from ._common import Dist, Shape, Transform, check_shape, distribution, draw, fail

# --------------------------------------------------------------------------------------------
# Pixel-value transforms


def _blur_sample(sigma: Dist, g: torch.Generator | None, shape: Shape) -> Tensor | None:
    if sigma.choices is None and sigma.lo == sigma.hi:
        return None
    return draw(sigma, g, check_shape("gaussian_blur", shape)[0])


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
    if is_real(sigma):
        s = check_real("sigma", sigma, minimum=0.0, where=call)
        dist = Dist(s, s)
    elif isinstance(sigma, tuple) and len(sigma) == 2:
        dist = distribution(call, "sigma", sigma, minimum=0.0)
    else:
        raise fail(call, f"sigma must be a number >= 0 or a (lo, hi) tuple, got {sigma!r}.")
    if kernel_size is None:
        kernel_size = 2 * math.ceil(3 * dist.hi) + 1
    kernel_size = check_int("kernel_size", kernel_size, minimum=1, where=call)
    if kernel_size % 2 == 0:
        raise fail(call, f"kernel_size must be odd, got {kernel_size!r}.")
    return Transform(ft.partial(_blur_sample, dist), ft.partial(_blur_apply, dist.lo, kernel_size))


def _noise_sample(std: Dist, g: torch.Generator | None, shape: Shape) -> Tensor:
    shape = check_shape("noise", shape)
    s = draw(std, g, shape[0]).view(-1, 1, 1, 1)
    return s * torch.randn(shape, generator=g, device=generator_device(g))


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
    if is_real(std):
        s = check_real("std", std, minimum=0.0, where=call)
        dist = Dist(s, s)
    elif isinstance(std, tuple) and len(std) == 2:
        dist = distribution(call, "std", std, minimum=0.0)
    else:
        raise fail(call, f"std must be a number >= 0 or a (lo, hi) tuple, got {std!r}.")
    return Transform(ft.partial(_noise_sample, dist), _noise_apply)





BACKGROUNDS = ("noise", "uniform", "mixed")


@dc.dataclass(frozen=True)
class _Composite:
    """The `apply` of `composite`: RGBA over a background drawn in `sample`."""

    background: str
    sd: float

    def sample(self, g: torch.Generator | None, shape: torch.Size) -> Tensor:
        if len(shape) != 4 or shape[1] != 4:
            raise InvalidArgumentError(
                "composite() blends RGBA images (B, 4, H, W), e.g. from lucent_dsl.param.alpha(...); got shape "
                f"{tuple(shape)}"
            )
        b, _, h, w = shape
        dev = generator_device(g)
        with torch.no_grad():
            uniform = torch.rand((b, 3, 1, 1), generator=g, device=dev).expand(b, 3, h, w)
            if self.background == "uniform":
                return uniform.contiguous()
            noise = noise_background(h, w, b, self.sd)
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
    c = _Composite(background, check_real("sd", sd, minimum=0.0, where="composite"))
    return Transform(c.sample, c)


# --------------------------------------------------------------------------------------------
# Colour shift (Plug-In Inversion's augmentation; issue 27)


def _color_shift_sample(shift: float, scale: float, g: torch.Generator | None, shape: Shape) -> Tensor:
    b, c = check_shape("color_shift", shape)[:2]
    u = torch.rand((2, b, c, 1, 1), generator=g, device=generator_device(g)) * 2 - 1  # U(-1, 1)
    return torch.stack((u[0] * shift, torch.exp(u[1] * scale)))  # (mu, sigma)


def _color_shift_apply(image: Tensor, params: Tensor) -> Tensor:
    p = params.to(device=image.device, dtype=image.dtype)
    return (image - 0.5) * p[1] + 0.5 + p[0]


def color_shift(shift: float = 0.1, scale: float = 0.2) -> Transform:
    """A random colour shift per image and channel: x -> (x - 0.5) * sigma + 0.5 + mu, with
    mu ~ U(-shift, shift) and sigma = exp(U(-scale, scale)).

    Plug-In Inversion (Ghiasi et al. 2022) shifts and scales each channel of each augmented copy so
    that no single colour cast is optimized; it works on normalized images, this on [0, 1] pixels
    around grey (0.5). The defaults are ours (not the paper's), chosen as modest shifts; benchmarks/README.md
    ("Picture quality as numbers") measured them inside `ensemble(4)` on the MNIST pair.

    Shape:
        (B, C, H, W) -> (B, C, H, W); params: a (2, B, C, 1, 1) tensor (mu, sigma).

    Example:
        >>> t = color_shift(0.0, 0.0)
        >>> x = torch.rand(2, 3, 4, 4)
        >>> torch.allclose(t.apply(x, t.sample(torch.Generator().manual_seed(0), x.shape)), x)
        True
    """
    call = f"color_shift(shift={shift!r}, scale={scale!r})"
    s = check_real("shift", shift, minimum=0.0, where=call)
    k = check_real("scale", scale, minimum=0.0, where=call)
    return Transform(ft.partial(_color_shift_sample, s, k), _color_shift_apply)
