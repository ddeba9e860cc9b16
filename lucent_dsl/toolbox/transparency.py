"""MACO's transparency map: which pixels of a render its objective needs, as an alpha map.

A research method run after a render (Fel et al. 2023): the gradient of the plan's score with respect to
the final image, over random transforms; `param.rgba` turns it into a PNG-ready RGBA image.

Example:
    >>> import torch, torch.nn as nn
    >>> from lucent_dsl import compile_plan, transforms
    >>> plan = compile_plan("channel('0', 1)", nn.Sequential(nn.Conv2d(3, 4, 3)))
    >>> m = transparency_map(plan, images=torch.rand(1, 3, 8, 8), transforms=transforms.identity(), samples=1)
    >>> m.shape, float(m.max()) <= 1.0
    (torch.Size([1, 1, 8, 8]), True)
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .. import transforms as tf_lib
from ..args import check_int, check_real
from ..errors import InvalidArgumentError
from ..plan.compiler import Plan
from ..plan.fold import frozen_models
from ..transforms import Transform

__all__ = ["transparency_map"]


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
