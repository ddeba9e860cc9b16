"""Transparency: RGBA parameterization (`alpha`), `transparency_map` and `rgba`.
"""
from __future__ import annotations

import functools as ft
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..errors import InvalidArgumentError
from ._common import ImageParam, check_int, check_real
from .lucid import fft, image

if TYPE_CHECKING:
    from ..transforms import Transform


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
    from .. import transforms as tf_lib
    from ..plan.compiler import Plan
    from ..plan.fold import frozen_models

    plan = result if isinstance(result, Plan) else getattr(result, "plan", None)
    if not isinstance(plan, Plan):
        raise InvalidArgumentError(f"transparency_map needs a RenderResult or a Plan, got {type(result).__name__}")
    if images is None:
        images = getattr(result, "images", None)
    if not isinstance(images, Tensor) or images.ndim != 4:
        raise InvalidArgumentError("transparency_map needs images (n, C, H, W): pass images= with a Plan")
    samples = check_int("samples", samples)
    blur = check_real("blur", blur, minimum=0.0)
    if not 0.0 < quantile <= 1.0:
        raise InvalidArgumentError(f"quantile must be in (0, 1], got {quantile!r}")
    if transforms is None:
        transforms = tf_lib.standard()
        if images.shape[1] == 4:
            transforms = tf_lib.chain(tf_lib.composite(), transforms)
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
