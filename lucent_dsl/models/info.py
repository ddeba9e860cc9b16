"""What a model needs around it: preprocessing, input geometry, colour channels, class labels, layouts.

A plain `nn.Module` works as it is (no normalization; its input geometry found by a probe when a
plan is compiled, see `lucent_dsl.models.sizes`). Models from `lucent_dsl.zoo`, or any module passed
through `with_info`, carry a `ModelInfo` that the plan applies before that model's forward, so
each model of an ensemble gets its own preprocessing and its own input size from one image.

Example:
    >>> import torch.nn as nn
    >>> m = with_info(nn.Conv2d(3, 4, 3), ModelInfo(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))
    >>> info_of(m).mean
    (0.5, 0.5, 0.5)
"""
from __future__ import annotations

import dataclasses as dc
import warnings
import weakref
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ..errors import InvalidArgumentError
from .layouts import parse_layout
from .sizes import Geometry, fit

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_ATTR = "lucent_info"


@dc.dataclass(frozen=True)
class ModelInfo:
    """Static facts about a model's input and output.

    Args:
        mean, std: per-channel normalization applied to images in [0, 1] (None: no normalization).
        input_size: (H, W) the model expects (also the default render size).
        resize: resize images of another size to `input_size` before the model (the model takes that
            size only). False for fully convolutional classifiers (adaptive pooling), which then see
            the padded, jittered image at full resolution as in Lucid; resizing it shrinks features and
            measurably lowers the activations reached (benchmarks/bench_quality.py).
        channels: colour channels the model reads (1 for grayscale: RGB images are averaged).
        labels: class names of the output logits, so `class_logit("flamingo")` can be resolved.
        name: a short name for messages and file names.
        geometry: the input sizes the model accepts (`Geometry`: one size, multiples of k, any), when
            `input_size`/`resize` do not say it; None: `input_size` with `resize` means that size only,
            `resize=False` any size, and without `input_size` the plan probes the model.
        layouts: {layer: einops pattern} for sites whose layout the plan should not detect, e.g.
            {"features.3": "b h w c"} (see `lucent_dsl.models.layouts`); stored as sorted pairs.

    Example:
        >>> ModelInfo(input_size=(224, 224)).input_geometry
        Geometry(size=(224, 224), multiple=1, source='stated')
        >>> ModelInfo(layouts={"blocks.0": "b (cls + h w) c"}).layouts
        (('blocks.0', 'b (cls + h w) c'),)
    """

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    input_size: tuple[int, int] | None = None
    channels: int = 3
    labels: tuple[str, ...] | None = None
    name: str | None = None
    resize: bool = True
    geometry: Geometry | None = None
    layouts: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.geometry is not None and not isinstance(self.geometry, Geometry):
            raise InvalidArgumentError(f"ModelInfo geometry must be a Geometry, got {self.geometry!r}")
        pairs = tuple(sorted(dict(self.layouts).items())) if self.layouts else ()
        for layer, pattern in pairs:
            if not isinstance(layer, str) or not layer:
                raise InvalidArgumentError(f"ModelInfo layouts: keys are layer names, got {layer!r}")
            parse_layout(pattern)  # InvalidArgumentError now, not at the first forward
        object.__setattr__(self, "layouts", pairs)

    @property
    def input_geometry(self) -> Geometry | None:
        """The stated input geometry: `geometry`, else what `input_size` and `resize` say (None: not stated)."""
        if self.geometry is not None:
            return self.geometry
        if self.input_size is None:
            return None
        return (
            Geometry((int(self.input_size[0]), int(self.input_size[1])), 1, "stated")
            if self.resize
            else Geometry(None, 1, "stated")
        )

    def preprocess(self, image: Tensor) -> Tensor:
        """Map an image batch in [0, 1] to this model's input: channels, geometry (`geometry.fit`), normalization.

        Shape:
            image: (B, C, H, W) -> (B, self.channels, H', W') with (H', W') a size the model accepts
        """
        x = image
        if x.shape[1] != self.channels:
            if self.channels == 1:
                x = x.mean(dim=1, keepdim=True)
            elif x.shape[1] == 1:
                x = x.expand(-1, self.channels, -1, -1)
            else:
                raise InvalidArgumentError(
                    f"the model{' ' + self.name if self.name else ''} reads {self.channels} channels but the image "
                    f"has {x.shape[1]}; render a {self.channels}-channel image, e.g. "
                    f"param=lucent_dsl.param.fft(size, channels={self.channels})"
                )
        x = fit(x, self.input_geometry)
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
    torchvision's ImageNet normalization: `inferred_info`), else identity preprocessing."""
    info = getattr(module, _ATTR, None)
    if isinstance(info, ModelInfo):
        return info
    return inferred_info(module)


SPEC_ATTR = "_lucent_dsl_spec"  # (spec, weights_state) of a module `specs.build_model` or `zoo.load` built


def stamp_spec(model: nn.Module, spec: str) -> None:
    """Record the spec `model` was built from (how a Python render's recipe names it; see `spec_of`)."""
    object.__setattr__(model, SPEC_ATTR, (spec, weights_state(model)))


def spec_of(model: nn.Module) -> str | None:
    """The spec `specs.build_model` (or `zoo.load`) built `model` from (unnamed, normalized); None for a module made
    elsewhere, or one
    whose weights or structure changed since (a recipe naming the spec would then replay another model)."""
    stamp = getattr(model, SPEC_ATTR, None)
    if not (isinstance(stamp, tuple) and len(stamp) == 2 and isinstance(stamp[0], str)):
        return None
    return stamp[0] if weights_state(model) == stamp[1] else None


def weights_state(model: nn.Module) -> tuple:
    """Each parameter's and buffer's name, storage and version counter: changes when weights are loaded, edited
    in place, replaced or moved (O(1) per tensor; a false "changed" only costs a recipe, never a wrong one)."""
    return tuple((name, t.data_ptr(), t._version, tuple(t.shape))
                 for name, t in [*model.named_parameters(), *model.named_buffers()])


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


# --- preprocessing a model declares itself, when the user attached no ModelInfo --------------------
# - timm models carry `pretrained_cfg` (mean, std, input size): used as is.
# - torchvision's classification, segmentation, detection and video models were all trained on
#   ImageNet-normalized inputs (every `weights.transforms()` normalizes with the ImageNet mean/std),
#   so a module whose class comes from `torchvision.models` gets that normalization.
# - Anything else gets raw [0, 1] pixels. When such a model looks like an ImageNet network (a first
#   convolution over 3 channels and at least `LARGE` parameters), `PreprocessingWarning` says so once
#   per model, with the one-line fix.

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
    """The preprocessing the model itself declares (timm, torchvision), else identity (maybe with a warning).

    Example:
        >>> import torchvision
        >>> inferred_info(torchvision.models.resnet18()).mean
        (0.485, 0.456, 0.406)
    """
    info = _timm_info(model) or _torchvision_info(model)
    if info is not None:
        return info
    if (
        model not in _warned
        and _first_conv_channels(model) == 3
        and sum(p.numel() for p in model.parameters()) >= LARGE
    ):
        _warned.add(model)
        warnings.warn(
            f"{type(model).__name__} has no known preprocessing, so it will see raw [0, 1] pixels. If it was trained "
            "on ImageNet-normalized images, attach it: lucent_dsl.with_info(model, lucent_dsl.ModelInfo("
            "mean=lucent_dsl.models.IMAGENET_MEAN, std=lucent_dsl.models.IMAGENET_STD)); attach ModelInfo() "
            "to silence this for a model that takes raw pixels.", PreprocessingWarning, stacklevel=4)
    return ModelInfo()
