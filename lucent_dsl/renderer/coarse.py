"""Coarse-to-fine rendering: optimize a small image first, then upsample it and go on at the next size.

Plug-In Inversion (Ghiasi et al. 2022) and "What do vision transformers learn?" render at a low resolution
first and grow the image, so that the large shapes settle before the detail. `coarse_to_fine` runs one
`render` per stage, all in render's default Fourier parameterization: stage k starts from the image of
stage k - 1, upsampled (bilinear) to its size, as `param.fft(size, init=image)` (the spectrum that
reproduces the upsampled image). Each stage gets a fresh optimizer, and its own
schedule when `schedule=` is given.

The result is the last stage's `RenderResult`, with the history of every stage joined (`steps` counts all of
them) and no recipe: a recipe names one size (`unreplayable` says so).

Example:
    >>> import torch.nn as nn, lucent_dsl as ld
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    >>> r = coarse_to_fine(ld.channel("0", 1), net, sizes=(8, 16), steps=(3, 2), progress=False)
    >>> r.images.shape, r.steps, len(r.history["channel('0', 1)"])
    (torch.Size([1, 3, 16, 16]), 5, 5)
"""
from __future__ import annotations

import dataclasses as dc
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .. import param as param_lib
from ..args import check_int, check_size
from ..errors import InvalidArgumentError
from .phases import render
from .result import RenderResult

__all__ = ["coarse_to_fine"]


def _stages(sizes: Any, steps: Any) -> list[tuple[tuple[int, int], int]]:
    if isinstance(sizes, (int, str)) or not isinstance(sizes, Sequence) or len(sizes) < 1:
        raise InvalidArgumentError(f"sizes must be a sequence of image sizes, smallest first, e.g. (56, 112, 224); "
                                   f"got {sizes!r}")
    hw = [check_size(s) for s in sizes]
    if any(b[0] < a[0] or b[1] < a[1] for a, b in zip(hw, hw[1:])):
        raise InvalidArgumentError(f"sizes must grow stage by stage (coarse to fine), got {sizes!r}")
    counts = [steps] * len(hw) if isinstance(steps, int) else list(steps)
    if len(counts) != len(hw):
        raise InvalidArgumentError(f"steps: one count per size ({len(hw)}), or one int for every stage; got {steps!r}")
    return [(s, check_int("steps", n)) for s, n in zip(hw, counts)]


def coarse_to_fine(objective: Any, models: Any = None, *, sizes: Sequence[int | tuple[int, int]],
                   steps: int | Sequence[int], **render_kwargs: Any) -> RenderResult:
    """Render at each size of `sizes` in turn, each stage starting from the last one's image, upsampled.

    Args:
        objective, models: as in `render`.
        sizes: image sizes, smallest first (an int n for n x n, or (H, W)).
        steps: steps per stage (one int for every stage, or one per size).
        render_kwargs: any other `render` argument except size, steps and param (seed, lr, transforms,
            schedule, betas, stop, ...).

    Raises:
        InvalidArgumentError: sizes that shrink, a steps list of another length, or size/steps/param given twice.
    """
    taken = sorted({"size", "steps", "param"} & set(render_kwargs))
    if taken:
        raise InvalidArgumentError(f"coarse_to_fine sets {', '.join(taken)} itself, stage by stage; "
                                   "pass sizes= and steps= instead")
    stages = _stages(sizes, steps)
    results: list[RenderResult] = []
    for size, count in stages:
        image_param = None
        if results:
            previous = results[-1].images
            start = F.interpolate(previous, size=size, mode="bilinear", antialias=True, align_corners=False)
            image_param = param_lib.fft(size, batch=previous.shape[0], channels=previous.shape[1],
                                        init=start.clamp(0, 1))
        results.append(render(objective, models, size=size, steps=count, param=image_param, **render_kwargs))
        if results[-1].interrupted or results[-1].stopped:
            break
    return _joined(results)


def _joined(results: list[RenderResult]) -> RenderResult:
    last = results[-1]
    history = {k: torch.cat([r.history[k] for r in results]) for k in last.history}
    sizes = " -> ".join(f"{r.images.shape[-2]}x{r.images.shape[-1]}" for r in results)
    return dc.replace(last, history=history, steps=sum(r.steps for r in results), recipe=None,
                      unreplayable=(f"a coarse-to-fine render ({sizes}); a recipe names one size",))
