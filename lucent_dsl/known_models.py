"""Preprocessing taken from the model itself when the user attached no `ModelInfo`.

- timm models carry `pretrained_cfg` (mean, std, input size): used as is.
- torchvision's classification, segmentation, detection and video models were all trained on
  ImageNet-normalized inputs (every `weights.transforms()` normalizes with the ImageNet mean/std),
  so a module whose class comes from `torchvision.models` gets that normalization.
- Anything else gets raw [0, 1] pixels. When such a model looks like an ImageNet network (a first
  convolution over 3 channels and at least `LARGE` parameters), `PreprocessingWarning` says so once
  per model, with the one-line fix.

Example:
    >>> import torchvision
    >>> inferred_info(torchvision.models.resnet18()).mean
    (0.485, 0.456, 0.406)
"""
from __future__ import annotations

import warnings
import weakref
from collections.abc import Mapping

from torch import nn

from .models import IMAGENET_MEAN, IMAGENET_STD, ModelInfo

LARGE = 1_000_000  # parameters: below this, a 3-channel model is treated as a toy and never warned about
_warned: weakref.WeakSet = weakref.WeakSet()


class PreprocessingWarning(UserWarning):
    """A model of ImageNet size has no known preprocessing, so it sees raw [0, 1] pixels."""


def _timm_info(model: nn.Module) -> ModelInfo | None:
    cfg = getattr(model, "pretrained_cfg", None)
    if not isinstance(cfg, Mapping) or "mean" not in cfg:
        return None
    size = cfg.get("input_size")
    channels = int(size[0]) if size else len(cfg["mean"])
    return ModelInfo(tuple(cfg["mean"]), tuple(cfg.get("std", IMAGENET_STD)), None, channels, None,
                     cfg.get("architecture") or type(model).__name__)


def _torchvision_info(model: nn.Module) -> ModelInfo | None:
    if not type(model).__module__.startswith("torchvision.models"):
        return None
    return ModelInfo(IMAGENET_MEAN, IMAGENET_STD, None, 3, None, type(model).__name__)


def _first_conv_channels(model: nn.Module) -> int | None:
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return None if conv is None else conv.in_channels


def inferred_info(model: nn.Module) -> ModelInfo:
    """The preprocessing the model itself declares (timm, torchvision), else identity (maybe with a warning)."""
    info = _timm_info(model) or _torchvision_info(model)
    if info is not None:
        return info
    if model not in _warned and _first_conv_channels(model) == 3 and sum(p.numel() for p in model.parameters()) >= LARGE:
        _warned.add(model)
        warnings.warn(
            f"{type(model).__name__} has no known preprocessing, so it will see raw [0, 1] pixels. If it was trained "
            "on ImageNet-normalized images, attach it: lucent_dsl.with_info(model, lucent_dsl.ModelInfo("
            "mean=lucent_dsl.models.IMAGENET_MEAN, std=lucent_dsl.models.IMAGENET_STD)); attach ModelInfo() "
            "to silence this for a model that takes raw pixels.", PreprocessingWarning, stacklevel=4)
    return ModelInfo()
