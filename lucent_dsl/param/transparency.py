"""Transparency: RGBA parameterization (`alpha`) and `rgba` (`toolbox.transparency_map` makes the alpha maps).
"""
from __future__ import annotations

import functools as ft
from collections.abc import Mapping

import torch
from torch import Tensor

from ..errors import InvalidArgumentError
from ._common import ImageParam
from .lucid import fft, image

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
    rgb = image(size, kind=kind, batch=batch, channels=3, sd=sd, decorrelate=decorrelate, squash=squash)
    a = image(size, kind=kind, batch=batch, channels=1, sd=sd, decorrelate=False, squash="sigmoid")

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
def noise_background(h: int, w: int, batch: int, sd: float) -> ImageParam:
    return fft((h, w), batch=batch, sd=sd)



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
