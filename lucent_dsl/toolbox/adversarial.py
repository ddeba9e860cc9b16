"""Adversarial examples in a few lines of torch: `fgsm` and `pgd` in an L-infinity ball.

Both work on images in [0, 1]: each model's own preprocessing (`info_of(model)`: resize,
normalization, grey) is part of the attacked function, so `eps` is in pixel units whatever the
model normalizes to. The model runs frozen (eval mode, no parameter gradients) and comes back
exactly as it was: training flags, `requires_grad`, weights and buffers, no `.grad` left behind.

Example:
    >>> import torch, torch.nn as nn
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    >>> x = torch.rand(2, 3, 4, 4)
    >>> adv = fgsm(net, x, torch.tensor([1, 3]), eps=0.03)
    >>> bool((adv - x).abs().max() <= 0.03 + 1e-6), bool(adv.min() >= 0), bool(adv.max() <= 1)
    (True, True, True)
"""
from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..args import check_int
from ..errors import InvalidArgumentError
from ..models.info import info_of
from ..plan.fold import frozen_models

__all__ = ["fgsm", "pgd"]


def _check(image: Any, eps: Any) -> tuple[Tensor, float, bool]:
    if not isinstance(image, Tensor) or image.dim() not in (3, 4) or not image.is_floating_point():
        raise InvalidArgumentError(
            f"image must be a float tensor (B, C, H, W) or (C, H, W) in [0, 1], got {getattr(image, 'shape', image)!r}"
        )
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not 0 <= float(eps) < float("inf"):
        raise InvalidArgumentError(f"eps must be a finite number >= 0 (pixel units, e.g. 8/255), got {eps!r}")
    single = image.dim() == 3
    x = image.detach()[None] if single else image.detach()
    if x.numel() and (float(x.min()) < -1e-6 or float(x.max()) > 1 + 1e-6):
        raise InvalidArgumentError(
            f"image must be in [0, 1], got values in [{float(x.min()):.4g}, {float(x.max()):.4g}]"
        )
    return x.clamp(0, 1), float(eps), single


def _labels(model: nn.Module, label: Any, n: int, device: torch.device) -> Tensor:
    """Class indices (n,) from an int, a class name, a sequence of them, or a tensor."""
    names = info_of(model).labels
    items = label.tolist() if isinstance(label, Tensor) else label
    if isinstance(items, (int, str)):
        items = [items] * n
    if not isinstance(items, Sequence) or len(items) != n:
        raise InvalidArgumentError(f"label must be one class or one per image ({n}), got {label!r}")
    out = []
    for item in items:
        if isinstance(item, str):
            if not names or item not in names:
                raise InvalidArgumentError(
                    f"class name {item!r} is not one of the model's labels; pass the class index"
                )
            item = names.index(item)
        if isinstance(item, bool) or not isinstance(item, numbers.Integral) or item < 0:
            raise InvalidArgumentError(f"a class label must be an index >= 0 or a class name, got {item!r}")
        out.append(int(item))
    return torch.tensor(out, dtype=torch.long, device=device)


def _loss_grad(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Gradient of the summed cross-entropy with respect to the image `x` (the model is frozen)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(info_of(model).preprocess(x))
        if not isinstance(logits, Tensor) or logits.dim() != 2:
            raise InvalidArgumentError(
                f"the model must return (B, classes) logits, got {getattr(logits, 'shape', type(logits))!r}"
            )
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), x)
    return grad


def _like(model: nn.Module, x: Tensor) -> Tensor:
    """`x` on the model's device, in its floating dtype."""
    t = next((t for t in list(model.parameters()) + list(model.buffers()) if t.is_floating_point()), x)
    return x.to(t.device, t.dtype)


def fgsm(model: nn.Module, image: Tensor, label: Any, eps: float, *, targeted: bool = False) -> Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015): one step of size `eps` along sign(grad).

    Args:
        model: returns (B, classes) logits; its `ModelInfo` preprocessing is applied.
        image: (B, C, H, W) or (C, H, W) in [0, 1].
        label: the true class (untargeted) or the target class (`targeted=True`): an index, a class
            name, or one per image (a list or a (B,) tensor).
        eps: L-infinity radius in pixel units.
        targeted: move towards `label` instead of away from it.

    Returns:
        The adversarial image, same shape as `image`, in [0, 1], within `eps` of it, on its device.
    """
    x, eps, single = _check(image, eps)
    x = _like(model, x)
    dev = x.device
    y = _labels(model, label, x.shape[0], dev)
    with frozen_models([model]):
        g = _loss_grad(model, x, y)
    adv = (x - eps * g.sign() if targeted else x + eps * g.sign()).clamp(0, 1)
    out = adv.to(image.device, image.dtype)
    return out[0] if single else out


def pgd(model: nn.Module, image: Tensor, label: Any, *, eps: float, alpha: float, steps: int,
        targeted: bool = False, random_start: bool = False, seed: int = 0) -> Tensor:
    """Projected gradient descent (Madry et al. 2018): `steps` signed steps of `alpha`, each projected
    back into the L-infinity ball of radius `eps` around `image` and into [0, 1].

    Args:
        model, image, label, eps, targeted: as in `fgsm`.
        alpha: step size in pixel units (e.g. 2.5 * eps / steps).
        steps: number of steps (>= 1).
        random_start: start from a uniform random point of the ball (Madry's PGD), drawn from `seed`.
        seed: seeds the random start.

    Returns:
        The adversarial image, same shape as `image`, in [0, 1], within `eps` of it, on its device.
    """
    x, eps, single = _check(image, eps)
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 < alpha < float("inf"):
        raise InvalidArgumentError(f"alpha must be a finite number > 0, got {alpha!r}")
    steps = check_int("steps", steps)
    x = _like(model, x)
    dev = x.device
    y = _labels(model, label, x.shape[0], dev)
    adv = x
    if random_start:
        g = torch.Generator(dev).manual_seed(int(seed))
        noise = torch.rand(x.shape, generator=g, device=dev, dtype=x.dtype) * 2 - 1
        adv = (x + eps * noise).clamp(0, 1)
    with frozen_models([model]):
        for _ in range(int(steps)):
            step = float(alpha) * _loss_grad(model, adv, y).sign()
            adv = adv - step if targeted else adv + step
            adv = torch.minimum(torch.maximum(adv, x - eps), x + eps).clamp(0, 1)
    out = adv.to(image.device, image.dtype)
    return out[0] if single else out
