"""What a model needs around it: preprocessing, input size, colour channels, class labels.

A plain `nn.Module` works as it is (no normalization, any input size). Models from `lucent_dsl.zoo`,
or any module passed through `with_info`, carry a `ModelInfo` that the plan applies before that
model's forward, so each model of an ensemble gets its own preprocessing.

Example:
    >>> import torch.nn as nn
    >>> m = with_info(nn.Conv2d(3, 4, 3), ModelInfo(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))
    >>> info_of(m).mean
    (0.5, 0.5, 0.5)
"""
from __future__ import annotations

import dataclasses as dc

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import InvalidArgumentError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_ATTR = "lucent_info"


@dc.dataclass(frozen=True)
class ModelInfo:
    """Static facts about a model's input and output.

    Args:
        mean, std: per-channel normalization applied to images in [0, 1] (None: no normalization).
        input_size: (H, W) the model expects (also the default render size).
        resize: resize images of another size to `input_size` before the model. False for fully
            convolutional classifiers (adaptive pooling), which then see the padded, jittered image at
            full resolution as in Lucid; resizing it shrinks features and measurably lowers the
            activations reached (benchmarks/bench_quality.py).
        channels: colour channels the model reads (1 for grayscale: RGB images are averaged).
        labels: class names of the output logits, so `class_logit("flamingo")` can be resolved.
        name: a short name for messages and file names.
    """

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    input_size: tuple[int, int] | None = None
    channels: int = 3
    labels: tuple[str, ...] | None = None
    name: str | None = None
    resize: bool = True

    def preprocess(self, image: Tensor) -> Tensor:
        """Map an image batch in [0, 1] to this model's input.

        Shape:
            image: (B, C, H, W) -> (B, self.channels, *self.input_size)
        """
        x = image
        if x.shape[1] != self.channels:
            if self.channels == 1:
                x = x.mean(dim=1, keepdim=True)
            elif x.shape[1] == 1:
                x = x.expand(-1, self.channels, -1, -1)
            else:
                raise InvalidArgumentError(
                    f"the model {self.name or ''} reads {self.channels} channels but the image has "
                    f"{x.shape[1]}; render with channels={self.channels}"
                )
        if self.resize and self.input_size is not None and tuple(x.shape[-2:]) != tuple(self.input_size):
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False, antialias=False)
        if self.mean is not None:
            mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
            std = torch.tensor(self.std or (1.0,) * len(self.mean), dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
            x = (x - mean) / std
        return x


def with_info(module: nn.Module, info: ModelInfo) -> nn.Module:
    """Attach `info` to `module` (in place) and return the module."""
    object.__setattr__(module, _ATTR, info)
    return module


def info_of(module: nn.Module) -> ModelInfo:
    """The `ModelInfo` attached to `module`, else what the model declares itself (timm's `pretrained_cfg`,
    torchvision's ImageNet normalization: `lucent_dsl.known_models`), else identity preprocessing."""
    info = getattr(module, _ATTR, None)
    if isinstance(info, ModelInfo):
        return info
    from .known_models import inferred_info

    return inferred_info(module)


def non_inplace(model: nn.Module) -> nn.Module:
    """Turn off every `inplace=True` flag of `model`'s modules (in place), so a hook on a conv or norm
    layer records that layer's output rather than what a later in-place activation made of it."""
    for module in model.modules():
        if getattr(module, "inplace", False) is True:
            module.inplace = False  # type: ignore[assignment]
    return model


def device_of(model: nn.Module) -> torch.device:
    """The device of `model`'s first parameter or buffer (the CPU for a module without tensors).

    Example:
        >>> device_of(nn.Linear(2, 2))
        device(type='cpu')
    """
    return next((t.device for t in (*model.parameters(), *model.buffers())), torch.device("cpu"))
