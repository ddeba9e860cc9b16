"""The preprocessing of a Hugging Face transformers vision model, from its own image processor where it can be read.

Where the numbers come from, in this order (`Preprocessing.source` says which one was used):

1. the model's `preprocessor_config.json`, read offline: in the folder the model was loaded from (`save_pretrained`
   output), or in the Hugging Face cache for a Hub name (`AutoImageProcessor.from_pretrained(name)` puts it there;
   `from_pretrained` of a model alone does not);
2. the defaults transformers itself declares for the config's `model_type` (its image processor class from the
   auto mapping, built without arguments): exact for ViT, DeiT, BEiT, CLIP and SigLIP checkpoints, but not
   always a checkpoint's own numbers (transformers' ConvNeXt/ResNet/Swin/DINOv2 processors default to other
   statistics than those checkpoints ship), so a model loaded from a name or folder whose processor config was
   not found gets a `PreprocessingWarning` saying which defaults it got and how to load its own;
3. nothing (a model type without an image processor): None, and the caller warns.

Example:
    >>> p = Preprocessing((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), (224, 224), "bilinear", "ViTImageProcessor defaults")
    >>> p.size, p.source
    ((224, 224), 'ViTImageProcessor defaults')
    >>> processor_size({"height": 256, "width": 256}, {"height": 224, "width": 224}, True)
    (224, 224)
"""
from __future__ import annotations

import dataclasses as dc
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["ALIASES", "Preprocessing", "from_processor", "processor_class", "preprocessing_of", "processor_size"]

PROCESSOR_FILE = "preprocessor_config.json"
ALIASES = {
    "clip_vision_model": "clip",
    "siglip_vision_model": "siglip",
    "siglip2_vision_model": "siglip2",
    "dinov2_with_registers": "dinov2",
    "clipseg_vision_model": "clipseg",
}
"""Vision towers and variants whose model_type has no image processor of its own: the family they take it from."""


@dc.dataclass(frozen=True)
class Preprocessing:
    """What a model's image processor does before the model, as far as a render needs it.

    Args:
        mean, std: per-channel normalization of [0, 1] images (None: the processor does not normalize).
        size: (H, W) of the images the model is given (the crop, when the processor crops), or None.
        resample: the processor's resampling filter ("bilinear", "bicubic", ...), for reference: renders resize
            bilinearly (`lucent_dsl.models.sizes.fit`).
        source: where the numbers come from (a file, or transformers' defaults for a class).
    """

    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    size: tuple[int, int] | None
    resample: str | None
    source: str


def _get(d: Any, key: str) -> Any:
    if d is None:
        return None
    return d.get(key) if isinstance(d, Mapping) else getattr(d, key, None)


def processor_size(size: Any, crop: Any, crops: bool | None) -> tuple[int, int] | None:
    """(H, W) a processor hands the model: its crop when it crops, else its fixed size or shortest edge."""
    for d in ((crop, size) if crops and crop is not None else (size,)):
        h, w = _get(d, "height"), _get(d, "width")
        if isinstance(h, int) and isinstance(w, int):
            return h, w
        edge = _get(d, "shortest_edge")
        if isinstance(edge, int):
            return edge, edge
    if isinstance(size, int):
        return size, size
    return None


def _resample_name(value: Any) -> str | None:
    if value is None:
        return None
    name = getattr(value, "name", None)
    if name is None:
        names = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
        return names.get(int(value)) if isinstance(value, int) else str(value)
    return str(name).lower()


def from_processor(processor: Any, source: str) -> Preprocessing:
    """The `Preprocessing` of a transformers image processor (or a dict of its settings)."""
    normalizes = _get(processor, "do_normalize") is not False
    mean, std = _get(processor, "image_mean"), _get(processor, "image_std")
    if isinstance(mean, (int, float)):
        mean = (float(mean),) * 3
    if isinstance(std, (int, float)):
        std = (float(std),) * 3
    size = processor_size(_get(processor, "size"), _get(processor, "crop_size"), _get(processor, "do_center_crop"))
    return Preprocessing(
        tuple(float(v) for v in mean) if normalizes and mean is not None else None,
        tuple(float(v) for v in std) if normalizes and std is not None else None,
        size, _resample_name(_get(processor, "resample")), source)


def processor_class(model_type: str) -> type | None:
    """The image processor class transformers maps `model_type` (or the family it belongs to) to, or None."""
    import importlib

    import transformers

    mapping = getattr(importlib.import_module("transformers.models.auto.image_processing_auto"),
                      "IMAGE_PROCESSOR_MAPPING_NAMES", {})
    for kind in (model_type, ALIASES.get(model_type)):
        names = mapping.get(kind) if kind else None
        if isinstance(names, Mapping):
            names = [names.get("torchvision"), names.get("pil"), *names.values()]
        elif isinstance(names, str):
            names = [names]
        for name in names or ():
            cls = getattr(transformers, name, None) if isinstance(name, str) else None
            if isinstance(cls, type):
                return cls
    return None


def local_processor_file(name_or_path: str) -> Path | None:
    """The `preprocessor_config.json` of a model folder, or of a Hub name already in the local cache (no download)."""
    if not name_or_path:
        return None
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        found = folder / PROCESSOR_FILE
        return found if found.is_file() else None
    if os.path.isabs(name_or_path) or name_or_path.startswith("."):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - a dependency of transformers
        return None
    try:
        cached = try_to_load_from_cache(name_or_path, PROCESSOR_FILE)
    except Exception:  # noqa: BLE001 - not a valid repo id: nothing cached under it
        return None
    return Path(cached) if isinstance(cached, str) and Path(cached).is_file() else None


def _read_file(path: Path) -> Preprocessing:
    from transformers import AutoImageProcessor

    try:
        processor = AutoImageProcessor.from_pretrained(str(path.parent), local_files_only=True)
    except Exception:  # noqa: BLE001 - a processor class this transformers lacks: its settings are in the file
        import json

        processor = json.loads(path.read_text())
    return from_processor(processor, f"{path}")


def model_type_of(model: nn.Module) -> str | None:
    """`model.config.model_type`, or None for a module without a transformers config."""
    kind = _get(getattr(model, "config", None), "model_type")
    return kind if isinstance(kind, str) and kind else None


def name_or_path_of(model: nn.Module) -> str:
    """The Hub name or folder a model was loaded from ("" for one built from a config)."""
    name = getattr(model, "name_or_path", None) or _get(getattr(model, "config", None), "_name_or_path")
    return str(name) if name else ""


def preprocessing_of(model: nn.Module) -> Preprocessing | None:
    """The model's preprocessing: its processor file (offline), else transformers' defaults for its model_type, else
    None (see the module docstring).

    Example:
        >>> import transformers
        >>> vit = transformers.ViTModel(transformers.ViTConfig(hidden_size=8, num_hidden_layers=1,
        ...                             num_attention_heads=2, intermediate_size=8, image_size=32, patch_size=8))
        >>> p = preprocessing_of(vit)
        >>> p.mean, p.size, p.source
        ((0.5, 0.5, 0.5), (224, 224), "transformers' defaults for model_type 'vit' (ViTImageProcessor)")
    """
    kind = model_type_of(model)
    if kind is None:
        return None
    found = local_processor_file(name_or_path_of(model))
    if found is not None:
        return _read_file(found)
    cls = processor_class(kind)
    if cls is None:
        return None
    return from_processor(cls(), f"transformers' defaults for model_type {kind!r} ({cls.__name__})")
