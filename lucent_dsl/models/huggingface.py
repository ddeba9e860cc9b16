"""Hugging Face transformers vision models: what they declare about themselves, as a `ModelInfo`.

A transformers model passed to a plan (`ViTModel`, `ViTForImageClassification`, `Dinov2Model`,
`CLIPVisionModel`, `SiglipVisionModel`, `BeitModel`, `SwinModel`, `ConvNextModel`, `ResNetModel`, ...) runs as
it is: `adapt` attaches the `ModelInfo` below unless the user attached one, and changes nothing else.

- preprocessing: the model's image processor (`lucent_dsl.models.hf_processors`: its file, else transformers'
  defaults for the model type);
- input geometry: ViT, DeiT, BEiT, CLIP and SigLIP towers take `config.image_size` only (their position
  embeddings; a render is resized to it); DINOv2 multiples of the patch (it interpolates its embeddings in every
  forward); Swin, ConvNeXt, ResNet and the rest any size, rendered by default at the processor's size;
- prefix tokens, per family: 1 (CLS: ViT, BEiT, DINOv2, CLIP), 2 (DeiT: CLS + distillation), 1 + registers
  (`Dinov2WithRegisters`), 0 (SigLIP); `channel` and `direction` average the patch tokens after them, `token=`
  reaches them (`lucent_dsl.plan.sitemap` finds the layouts, helped by `token_hint`);
- labels: `config.id2label`, unless its names are transformers' placeholders (`LABEL_0`, `LABEL_1`, ...);
- sites: `@output/logits`, `@output/last_hidden_state`, `@output/pooler_output`, `@output/image_embeds` are
  ModelOutput fields; `@output` alone reads the first field (HF's `outputs[0]`: a classifier's logits, else the
  last hidden state), so `class_logit("goldfish")` needs no layer;
- tuple outputs: a layer that returns a tuple (`(hidden_states, attention)`, Swin's stages) is read at its hidden
  state (position 0) unless a selector (`layer/1`) names another entry (`first_entry`).

The input reaches the model as its first positional argument, which is `pixel_values` for every transformers
vision model. transformers itself is imported only where a model's preprocessing is looked up.

Example:
    >>> import transformers
    >>> cfg = transformers.ViTConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8,
    ...                              image_size=32, patch_size=8, id2label={0: "cat", 1: "goldfish"})
    >>> info = declared_info(transformers.ViTForImageClassification(cfg))
    >>> info.mean, info.input_size, info.labels, str(info.geometry)
    ((0.5, 0.5, 0.5), (32, 32), ('cat', 'goldfish'), '32x32 only')
    >>> token_hint(transformers.ViTModel(cfg))   # one CLS token before a 4 x 4 patch grid
    (1, (4, 4))
"""
from __future__ import annotations

import contextlib
import re
import warnings
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ..errors import InvalidArgumentError
from .hf_processors import Preprocessing, model_type_of, name_or_path_of, preprocessing_of
from .info import ModelInfo, PreprocessingWarning, with_info
from .sizes import Geometry

__all__ = ["PREFIX_TOKENS", "AnySize", "adapt", "any_size", "build", "declared_info", "first_entry", "geometry_of",
           "is_transformers", "labels_of", "model_class", "prefix_tokens", "token_hint"]

PREFIX_TOKENS: dict[str, int] = {
    "vit": 1, "vit_msn": 1, "deit": 2, "beit": 1, "data2vec-vision": 1, "dinov2": 1, "dinov2_with_registers": 1,
    "clip_vision_model": 1, "siglip_vision_model": 0,
}
"""Tokens before the patch grid, per model_type (DINOv2 with registers adds `config.num_register_tokens`)."""
_INTERPOLATING = ("dinov2", "dinov2_with_registers")  # position embeddings interpolated in every forward
_PLACEHOLDER = re.compile(r"LABEL_\d+")
_ATTR = "lucent_info"
_warned: weakref.WeakSet = weakref.WeakSet()


def is_transformers(model: nn.Module) -> bool:
    """Whether `model`'s class comes from transformers, or it wraps a transformers model it names `hf_model`
    (`any_size`; a wrapper that keeps the model's layer names can say so the same way, and its sites are then read
    as a transformers model's: tuple outputs at their hidden state)."""
    if type(model).__module__.split(".", 1)[0] == "transformers":
        return True
    inner = getattr(model, "hf_model", None)
    return isinstance(inner, nn.Module) and inner is not model and is_transformers(inner)


def _pair(v: Any) -> tuple[int, int] | None:
    if isinstance(v, int) and not isinstance(v, bool):
        return v, v
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(x, int) for x in v):
        return int(v[0]), int(v[1])
    return None


def prefix_tokens(model: nn.Module) -> int | None:
    """Tokens before the patch grid in the model's token sites (None: not a known token family)."""
    kind = model_type_of(model)
    if kind not in PREFIX_TOKENS:
        return None
    registers = getattr(model.config, "num_register_tokens", 0) if kind == "dinov2_with_registers" else 0
    return PREFIX_TOKENS[kind] + int(registers or 0)


def _image_and_patch(model: nn.Module) -> tuple[tuple[int, int], tuple[int, int]] | None:
    cfg = getattr(model, "config", None)
    image, patch = _pair(getattr(cfg, "image_size", None)), _pair(getattr(cfg, "patch_size", None))
    return (image, patch) if image is not None and patch is not None else None


def geometry_of(model: nn.Module) -> Geometry | None:
    """The input sizes a transformers model takes: its `config.image_size` only (fixed position embeddings),
    multiples of the patch (DINOv2), or None (the plan's probe decides; Swin, ConvNeXt, ResNet take any size)."""
    kind = model_type_of(model)
    sizes = _image_and_patch(model)
    if kind not in PREFIX_TOKENS or sizes is None:
        return None
    image, patch = sizes
    if kind in _INTERPOLATING or isinstance(model, AnySize):
        return Geometry(None, max(patch), "model")
    return Geometry(image, 1, "model")


def token_hint(model: nn.Module) -> tuple[int, tuple[int, int]] | None:
    """(prefix tokens, patch grid) of a fixed-size transformers token model, or None."""
    geometry, sizes, prefix = geometry_of(model), _image_and_patch(model), prefix_tokens(model)
    if geometry is None or geometry.size is None or sizes is None or prefix is None:
        return None
    (h, w), (ph, pw) = sizes
    return prefix, (h // ph, w // pw)


def labels_of(model: nn.Module) -> tuple[str, ...] | None:
    """`config.id2label` as names in index order, for an image classifier (a `...ForImageClassification` class, whose
    `@output` is its logits); None for other models (a base model loaded from a classifier's checkpoint keeps its
    id2label, but its output is not logits) and where the names are transformers' placeholders (`LABEL_0`, ...)."""
    inner = model.hf_model if isinstance(model, AnySize) else model
    if "ForImageClassification" not in type(inner).__name__:
        return None
    id2label = getattr(getattr(model, "config", None), "id2label", None)
    if not isinstance(id2label, Mapping) or not id2label:
        return None
    try:
        by_index = {int(k): str(v) for k, v in id2label.items()}
    except (TypeError, ValueError):
        return None
    if sorted(by_index) != list(range(len(by_index))):
        return None
    names = tuple(by_index[i] for i in range(len(by_index)))
    return None if all(_PLACEHOLDER.fullmatch(n) for n in names) else names


def _warn_once(model: nn.Module, message: str) -> None:
    if model in _warned:
        return
    _warned.add(model)
    warnings.warn(message, PreprocessingWarning, stacklevel=5)


def _check_preprocessing(model: nn.Module, pre: Preprocessing | None) -> None:
    kind, name = model_type_of(model), name_or_path_of(model)
    fix = ("attach it: lucent_dsl.with_info(model, lucent_dsl.ModelInfo(mean=..., std=..., input_size=...)); "
           "ModelInfo() silences this for a model that takes raw pixels")
    if pre is None:
        _warn_once(model, f"{type(model).__name__} (model_type {kind!r}) has no image processor in transformers, so "
                          f"its preprocessing is unknown and it will see raw [0, 1] pixels; {fix}")
    elif name and not pre.source.endswith(".json"):
        _warn_once(model, f"{type(model).__name__} was loaded from {name!r}, but its {'preprocessor_config.json'} "
                          f"was not found there or in the Hugging Face cache, so it gets {pre.source}: mean "
                          f"{pre.mean}, std {pre.std}, which may not be the checkpoint's. Load the processor once "
                          f"(transformers.AutoImageProcessor.from_pretrained({name!r}) caches it), or {fix}")


def declared_info(model: nn.Module) -> ModelInfo | None:
    """The preprocessing, geometry and labels a transformers model declares (None: not a transformers model with a
    config). Warns (`PreprocessingWarning`, once per model) where its preprocessing is unknown or only transformers'
    defaults for a model loaded from a name or folder."""
    kind = model_type_of(model)
    if kind is None or not is_transformers(model):
        return None
    pre = preprocessing_of(model.hf_model if isinstance(model, AnySize) else model)
    _check_preprocessing(model, pre)
    geometry = geometry_of(model)
    fixed = geometry is not None and geometry.size is not None
    size = geometry.size if geometry is not None and geometry.size is not None else (pre.size if pre else None)
    channels = getattr(model.config, "num_channels", 3)
    return ModelInfo(
        mean=pre.mean if pre else None, std=pre.std if pre else None, input_size=size,
        channels=int(channels) if isinstance(channels, int) else 3, labels=labels_of(model),
        name=name_or_path_of(model) or kind, resize=fixed, geometry=geometry)


class AnySize(nn.Module):
    """A transformers model run with `interpolate_pos_encoding=True`: see `any_size`. Its submodules are the model's
    own, under the same names (`layers.3` is `model.layers.3`); the model itself is not a child, and not changed."""

    hf_model: nn.Module

    def __init__(self, model: nn.Module):
        super().__init__()
        object.__setattr__(self, "hf_model", model)  # not registered: its children are registered here instead
        for name, child in model.named_children():
            self.add_module(name, child)
        for name, p in model.named_parameters(recurse=False):
            self.register_parameter(name, p)
        for name, b in model.named_buffers(recurse=False):
            self.register_buffer(name, b)
        self.config = getattr(model, "config", None)

    def forward(self, pixel_values: Tensor) -> Any:
        return self.hf_model(pixel_values, interpolate_pos_encoding=True)


def any_size(model: nn.Module) -> nn.Module:
    """`model` taking any multiple of its patch size, by interpolating its position embeddings
    (`interpolate_pos_encoding=True`, for the ViT, DeiT, BEiT, CLIP and SigLIP towers whose forward takes it).
    By default those models take `config.image_size` only, the size they were trained at; this renders them at
    other sizes (e.g. 384 px for a 224 px ViT), which changes what they compute.

    Example:
        >>> import torch, transformers
        >>> vit = transformers.ViTModel(transformers.ViTConfig(hidden_size=8, num_hidden_layers=1,
        ...     num_attention_heads=2, intermediate_size=8, image_size=32, patch_size=8))
        >>> wide = any_size(vit)
        >>> str(declared_info(wide).geometry), wide.get_submodule("layers.0") is vit.layers[0]
        ('multiples of 8', True)
        >>> tuple(wide(torch.rand(1, 3, 48, 64)).last_hidden_state.shape)   # 1 CLS + a 6 x 8 grid
        (1, 49, 8)
    """
    import inspect

    if not is_transformers(model) or isinstance(model, AnySize):
        raise InvalidArgumentError(f"any_size takes a transformers model, got {type(model).__name__}")
    if "interpolate_pos_encoding" not in inspect.signature(model.forward).parameters:
        raise InvalidArgumentError(f"{type(model).__name__}.forward takes no interpolate_pos_encoding: it takes the "
                                   f"sizes it takes ({geometry_of(model) or 'see lucent-dsl layers'})")
    return AnySize(model)


def adapt(model: nn.Module) -> nn.Module:
    """`model` itself, with its `declared_info` attached unless a `ModelInfo` is attached already (the user's)."""
    if isinstance(getattr(model, _ATTR, None), ModelInfo):
        return model
    info = declared_info(model)
    return with_info(model, info) if info is not None else model


def first_entry(value: Any) -> Any:
    """What a site without a selector reads of a transformers output: a ModelOutput's first field (HF's
    `outputs[0]`), a tuple's first tensor (the hidden state of `(hidden_states, attention)`), else `value`.

    Example:
        >>> import torch
        >>> first_entry((torch.zeros(1, 5, 8), None)).shape, first_entry([1, 2])
        (torch.Size([1, 5, 8]), [1, 2])
    """
    if isinstance(value, Mapping) and hasattr(value, "to_tuple"):  # a ModelOutput: its set fields, in order
        entries = list(value.values())
        return entries[0] if entries else value
    if isinstance(value, tuple) and value and isinstance(value[0], Tensor):
        return value[0]
    return value


# --- the `hf:` model spec ---------------------------------------------------------------------------------------


def model_class(config: Any) -> type:
    """The class an `hf:` spec builds for a config: the one its checkpoint was saved from (`config.architectures`,
    e.g. `ViTForImageClassification` with its head, `Dinov2Model`, `CLIPModel`), else an image classifier where the
    config has real labels, else the base model (`AutoModel`).

    Example:
        >>> import transformers
        >>> model_class(transformers.ViTConfig(architectures=["ViTForImageClassification"])).__name__
        'ViTForImageClassification'
        >>> model_class(transformers.ViTConfig()).__name__
        'AutoModel'
    """
    import transformers

    for name in getattr(config, "architectures", None) or ():
        cls = getattr(transformers, name, None) if isinstance(name, str) else None
        if isinstance(cls, type) and issubclass(cls, nn.Module):
            return cls
    id2label = getattr(config, "id2label", None) or {}
    if id2label and not all(_PLACEHOLDER.fullmatch(str(v)) for v in id2label.values()):
        return transformers.AutoModelForImageClassification
    return transformers.AutoModel


def build(target: str, text: str, *, local: bool) -> nn.Module:
    """The model an `hf:` spec names, with its pretrained weights: `target` is a Hub name (downloads, or reads the
    Hugging Face cache) or a local `save_pretrained` folder. The image processor is fetched with it when it exists,
    so the model's own preprocessing is known (`hf_processors`). Never runs code from the Hub (no
    `trust_remote_code`). The model comes back as transformers built it: `models.sources.adapt` makes it one a
    plan runs (`specs` does).

    Raises:
        InvalidArgumentError: transformers is not installed, no such model or folder, or no network and no cache.
    """
    try:
        import transformers
    except ImportError:
        raise InvalidArgumentError(f"model spec {text!r}: transformers is not installed (pip install "
                                   "'lucent_dsl[hf]')") from None
    source = str(Path(target).expanduser()) if local else target
    if not local and Path(target).exists():  # transformers would read it, though the trust rule saw a download
        raise InvalidArgumentError(f"model spec {text!r} names a Hub model, but {target!r} is also a path here; write "
                                   f"hf:./{target} to load that folder")
    if local and not Path(source).is_dir():
        raise InvalidArgumentError(f"model spec {text!r}: no such folder {source!r} (hf: takes a Hub name, ORG/NAME, "
                                   "or a folder written by save_pretrained, starting with /, . or ~)")
    try:
        config = transformers.AutoConfig.from_pretrained(source)
        cls = model_class(config)
        model = cls.from_pretrained(source, config=config)
    except (OSError, ValueError, KeyError) as e:
        where = "the folder" if local else "the Hugging Face Hub (needs the internet, or the model in the local cache)"
        raise InvalidArgumentError(f"model spec {text!r}: cannot load {source!r} from {where}: {e}") from e
    with contextlib.suppress(Exception):  # a model without an image processor: its preprocessing is then defaults
        transformers.AutoImageProcessor.from_pretrained(source)  # caches preprocessor_config.json (hf_processors)
    if not isinstance(model, nn.Module):
        raise InvalidArgumentError(f"model spec {text!r}: {cls.__name__}.from_pretrained gave a "
                                   f"{type(model).__name__}, not a torch.nn.Module")
    return model
