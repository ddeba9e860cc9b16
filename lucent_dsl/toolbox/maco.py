"""The full MACO method (Fel et al., "Unlocking Feature Visualization for Deeper Networks with
MAgnitude Constrained Optimization", NeurIPS 2023), as xplique implements it.

Only the Fourier phase is optimized; the magnitude is a fixed natural-image spectrum
(`param.maco`, with xplique's standardization). Each step takes `crops` random square crops of
the image: centres at 0.5 + N(0, 0.15) of the image's width and height, sides N(box, 0.05)
clipped to [0.05, 1], where `box` falls linearly from 50% to 5% of the image over the run. Each
crop is resized to the model's input size, gets Gaussian noise N(0, noise) plus uniform noise in
(-noise/2, noise/2), and the objective is averaged over the crops. The optimizer is NAdam at a
high learning rate (1.0), and |gradient of the objective w.r.t. the image| is summed over the
steps into a transparency map: where the image matters to the objective.

Randomness is drawn outside the step, as tensors (crop matrices, noise), and step-dependent
schedules (box size, noise level) only change the values of those tensors: a compiled step
(`compile=True`) compiles once for the whole run.

Noise is in units of the [0, 1] image; xplique's default 0.08 is in its (-1, 1) model range,
which is 0.04 here.

Example:
    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    >>> r = maco_method("channel('1', 2)", net, size=32, crop_size=16, crops=4, steps=3, progress=False)
    >>> r.images.shape, r.transparency.shape, len(r.history)
    (torch.Size([1, 3, 32, 32]), torch.Size([1, 3, 32, 32]), 3)
"""
from __future__ import annotations

import dataclasses as dc
import math
import numbers
from collections.abc import Callable
from typing import Any, TypeGuard

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import param as param_lib
from ..args import check_int
from ..dsl.expr import Expr
from ..errors import InvalidArgumentError, NonFiniteError
from ..plan.compiler import Plan, compile_plan
from ..plan.fold import frozen_models
from ._common import model_size

CENTRE_STD = 0.15  # xplique: crop centres at 0.5 + N(0, 0.15) of the image side
BOX_STD = 0.05  # xplique: crop sides N(box, 0.05), clipped to [BOX_MIN, 1]
BOX_MIN = 0.05
DEFAULT_BOX = (0.5, 0.05)  # xplique: linspace(0.5, 0.05, steps)
DEFAULT_NOISE = 0.04  # xplique's 0.08 on a (-1, 1) range


def schedule(spec: float | tuple[float, float] | Tensor, steps: int, what: str) -> Tensor:
    """A (steps,) float32 tensor: a constant, a linear ramp `(start, end)`, or given values.

    Example:
        >>> [round(v, 3) for v in schedule((0.5, 0.05), 4, "box").tolist()]
        [0.5, 0.35, 0.2, 0.05]
    """
    if isinstance(spec, Tensor):
        if spec.shape != (steps,) or not bool(torch.isfinite(spec).all()):
            raise InvalidArgumentError(
                f"{what}: a schedule tensor must hold {steps} finite values, got shape {tuple(spec.shape)}")
        return spec.detach().to("cpu", torch.float32)
    if isinstance(spec, tuple) and len(spec) == 2 and all(_real(v) for v in spec):
        return torch.linspace(float(spec[0]), float(spec[1]), steps, dtype=torch.float32)
    if _real(spec):
        return torch.full((steps,), float(spec), dtype=torch.float32)
    raise InvalidArgumentError(f"{what} must be a number, a (start, end) pair or a ({steps},) tensor, got {spec!r}")


def _real(v: Any) -> TypeGuard[float]:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def crop_matrices(g: torch.Generator, n: int, box: Tensor, image_hw: tuple[int, int],
                  crop_hw: tuple[int, int]) -> Tensor:
    """(n, 3, 3) matrices (the transforms' convention: output pixel -> source pixel, centred) of MACO's crops.

    `box` is a 0-d tensor: the mean crop side as a fraction of the image.
    """
    dev = g.device
    h, w = image_hw
    centre = torch.randn(2, n, generator=g, device=dev) * CENTRE_STD
    side = (torch.randn(n, generator=g, device=dev) * BOX_STD + box.to(dev)).clamp(BOX_MIN, 1.0)
    zero, one = torch.zeros(n, device=dev), torch.ones(n, device=dev)
    rows = [side * w / crop_hw[1], zero, centre[0] * w, zero, side * h / crop_hw[0], centre[1] * h, zero, zero, one]
    return torch.stack(rows, -1).view(n, 3, 3)


def crop(image: Tensor, m: Tensor, crop_hw: tuple[int, int], fill: float = 0.5) -> Tensor:
    """Crops of one image (1, C, H, W) by (n, 3, 3) matrices, each resized to `crop_hw`, `fill` outside: (n, C, h,
    w)."""
    _, c, h_in, w_in = image.shape
    n, (h, w) = m.shape[0], crop_hw
    m = m.to(image.device, image.dtype)
    rows = torch.tensor([2.0 / w_in, 2.0 / h_in, 1.0], dtype=image.dtype, device=image.device)
    cols = torch.tensor([w / 2.0, h / 2.0, 1.0], dtype=image.dtype, device=image.device)
    theta = (m * rows[:, None] * cols[None, :])[:, :2]
    grid = F.affine_grid(theta, [n, c, h, w], align_corners=False).reshape(1, n * h, w, 2)  # one source, n crops
    out = F.grid_sample(image - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill
    return out.view(c, n, h, w).transpose(0, 1)


@dc.dataclass(frozen=True)
class MacoResult:
    """What `maco_method` produced: the image, the accumulated |gradient| (the transparency), the score per step."""

    images: Tensor  # (1, C, H, W) in [0, 1]
    transparency: Tensor  # (1, C, H, W): sum over steps of |d objective / d image|
    history: Tensor  # (steps,): the objective averaged over the step's crops
    plan: Plan
    seed: int
    steps: int

    def alpha(self, *, quantile: float = 0.99) -> Tensor:
        """The transparency summed over channels and divided by its `quantile`, clipped: (1, 1, H, W) in [0, 1]."""
        t = self.transparency.sum(1, keepdim=True)
        top = torch.quantile(t.flatten(), quantile).clamp(min=1e-12)
        return (t / top).clamp(0, 1)

    def rgba(self, **kw: Any) -> Tensor:
        """The image with `alpha()` as its alpha channel: (1, C + 1, H, W), ready for `io.save_png`."""
        return torch.cat([self.images, self.alpha(**kw)], 1)


def _loss(plan: Plan, crop_hw: tuple[int, int]) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    def loss(image: Tensor, mats: Tensor, noise: Tensor) -> Tensor:
        x = crop(image, mats, crop_hw) + noise
        return -plan.scores(plan.forward(x, raw=image), 1).total

    return loss


def maco_method(
    objective: Expr | str,
    model: Any,
    *,
    size: int | tuple[int, int] = 512,
    crop_size: int | tuple[int, int] | None = None,
    crops: int = 32,
    steps: int = 256,
    lr: float = 1.0,
    box: float | tuple[float, float] | Tensor = DEFAULT_BOX,
    noise: float | tuple[float, float] | Tensor = DEFAULT_NOISE,
    magnitude: Tensor | None = None,
    seed: int = 0,
    device: Any = None,
    compile: bool = False,
    compile_backend: str = "inductor",
    progress: bool = True,
) -> MacoResult:
    """Render one image for `objective` with the MACO method (see the module docstring).

    Args:
        objective: an expression or DSL text (one image: terms with `batch=` other than 0 are refused).
        model: an `nn.Module` or a mapping name -> module (an ensemble sees the same crops).
        size: the image (an int or (H, W)); xplique: 512.
        crop_size: what each crop is resized to (default: the first model's input size, else 224).
        crops: crops per step (xplique: 32).
        steps: optimization steps (xplique: 256).
        lr: NAdam's learning rate on the standardized phase (xplique: 1.0).
        box: the mean crop side per step, a fraction of the image: a number, (start, end) for a
            linear ramp (default (0.5, 0.05), xplique's), or a (steps,) tensor.
        noise: the noise level per step, in [0, 1] image units, same forms (default 0.04).
        magnitude: the fixed spectrum (C, H', W') (default: the shipped natural one, 3 channels).
        seed: seeds the phase and every crop and noise draw.
        compile: `torch.compile` the crop + forward + loss part of the step (once: the schedules are
            tensors); `compile_backend` as torch.compile's `backend`.

    Raises:
        InvalidArgumentError, LayerNotFoundError: before any step. NonFiniteError: a NaN or inf loss.
    """
    from ..models.specs import default_size

    steps, crops = check_int("steps", steps), check_int("crops", crops)
    if not _real(lr) or lr <= 0:
        raise InvalidArgumentError(f"lr must be a positive finite number, got {lr!r}")
    plan = compile_plan(objective, model)
    if plan.n_images not in (None, 1):
        raise InvalidArgumentError(f"MACO renders one image; got {plan.n_images} objectives")
    first = next(iter(plan.models.values()))
    hw = model_size(first, size)
    crop_hw = default_size(first) if crop_size is None else model_size(first, crop_size)
    boxes, noises = schedule(box, steps, "box"), schedule(noise, steps, "noise")
    if float(boxes.min()) <= 0 or float(noises.min()) < 0:
        raise InvalidArgumentError("box sizes must be > 0 and noise levels >= 0")
    channels = min(3, max((i.channels for i in plan.infos.values()), default=3))
    p = param_lib.maco(hw, magnitude=magnitude, channels=channels, standardize=True,
                       decorrelate=channels == 3)
    dev = torch.device(device) if device is not None else plan.device
    if dev != plan.device and any(True for m in plan.models.values() for _ in m.parameters()):
        raise InvalidArgumentError(f"device={dev} but the models are on {plan.device}; move the models or drop device=")
    g = torch.Generator(dev).manual_seed(int(seed))
    leaves = {k: v.detach().to(dev).requires_grad_(True) for k, v in p.init(g).items()}
    opt = torch.optim.NAdam(list(leaves.values()), lr=float(lr))
    loss_fn = _loss(plan, crop_hw)
    if compile:
        loss_fn = torch.compile(loss_fn, backend=compile_backend, dynamic=False)
    transparency = torch.zeros((1, channels, *hw), device=dev)
    history = []
    bar = _bar(steps, progress)
    with frozen_models(list(plan.models.values())):
        for i in range(steps):
            with torch.no_grad():
                mats = crop_matrices(g, crops, boxes[i], hw, crop_hw)
                sigma = noises[i].to(dev)
                shape = (crops, channels, *crop_hw)
                jitter = torch.randn(shape, generator=g, device=dev) * sigma
                jitter += (torch.rand(shape, generator=g, device=dev) - 0.5) * sigma
            opt.zero_grad(set_to_none=True)
            image = p.to_image(leaves)
            # the loss from the image as a leaf (its gradient is the transparency; a compiled step takes
            # leaves), then that gradient on through the parameterization to the phase
            pixels = image.detach().requires_grad_(True)
            loss = loss_fn(pixels, mats, jitter)
            if not bool(torch.isfinite(loss)):
                raise NonFiniteError(f"MACO step {i + 1}: the loss is {float(loss)}; lower lr")
            (grad,) = torch.autograd.grad(loss, pixels)
            image.backward(grad)
            transparency += grad.detach().abs()
            opt.step()
            history.append(-loss.detach())
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    with torch.no_grad():
        final = p.to_image(leaves).detach().cpu()
    return MacoResult(final, transparency.cpu(), torch.stack(history).cpu(), plan, int(seed), steps)


def _bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="maco", leave=False)
