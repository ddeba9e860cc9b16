"""What a model says about itself: its input geometry and the layouts of its sites, where it says so.

torchvision: `VisionTransformer` takes its `image_size` only and has one CLS token before an
`image_size // patch_size` grid; `MaxVit` is built for one input size (its partition layers store
the grid). timm: `dynamic_img_size` models take multiples of the patch (any size with
`dynamic_img_pad`), `PatchEmbed(strict_img_size=True)` its `img_size`, `pretrained_cfg
["fixed_input_size"]` its `input_size`; `num_prefix_tokens` tokens come before `patch_embed.grid_size`,
and `feature_info` modules are laid out as `output_fmt` says (NHWC for Swin and MambaOut).
transformers: what `lucent_dsl.models.huggingface` states per family (`config.image_size`, prefix tokens).
Everything else is left to the probe (`lucent_dsl.plan.sitemap`).

Module types settle a map's layout when a probe cannot: convolutions, BatchNorm and pooling
output (B, C, H, W); `nn.Linear` and `nn.LayerNorm` act on the last axis, so on a rank-4
activation that axis is the channel (torchvision Swin blocks, ConvNeXt's channels-last MLPs).

Example:
    >>> import torch.nn as nn
    >>> module_hint(nn.LayerNorm(8), 4), module_hint(nn.Conv2d(3, 8, 3), 4), module_hint(nn.ReLU(), 4)
    ('b h w c', 'b c h w', None)
"""
from __future__ import annotations

from typing import Any

from torch import nn

from . import huggingface
from .sizes import Geometry

__all__ = ["feature_widths", "geometry_of", "map_hints", "module_hint", "token_hint"]

_CHANNELS_FIRST = (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm, nn.MaxPool2d,
                   nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Upsample, nn.PixelShuffle,
                   nn.LocalResponseNorm, nn.Dropout2d)
_LAST_AXIS = (nn.Linear, nn.LayerNorm) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())
_CHANNELS_FIRST_1D = (nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d, nn.AvgPool1d)


def module_hint(module: nn.Module | None, rank: int) -> str | None:
    """The layout a module's type implies for an output of `rank` axes, or None."""
    if module is None:
        return None
    if rank == 4 and isinstance(module, _CHANNELS_FIRST):
        return "b c h w"
    if rank == 4 and isinstance(module, _LAST_AXIS):
        return "b h w c"
    if rank == 3 and isinstance(module, _LAST_AXIS):
        return "b t c"
    if rank == 3 and isinstance(module, _CHANNELS_FIRST_1D):
        return "b c t"
    return None


def feature_widths(module: nn.Module | None) -> frozenset[int]:
    """The feature widths a module and its submodules compute (Linear outputs, norm widths, conv channels): the
    channel count of its output is likely among them, its token count is not.

    Example:
        >>> sorted(feature_widths(nn.Sequential(nn.LayerNorm(12), nn.Linear(12, 24))))
        [12, 24]
    """
    out: set[int] = set()
    for m in module.modules() if module is not None else ():
        if isinstance(m, nn.Linear):
            out.add(m.out_features)
        elif isinstance(m, (nn.LayerNorm, nn.GroupNorm)):
            out.add(int(m.normalized_shape[-1]) if isinstance(m, nn.LayerNorm) else m.num_channels)
        elif isinstance(m, (nn.Conv1d, nn.Conv2d)):
            out.add(m.out_channels)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            out.add(m.num_features)
    return frozenset(out)


def _pair(v: Any) -> tuple[int, int] | None:
    if isinstance(v, int):
        return v, v
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(x, int) for x in v):
        return int(v[0]), int(v[1])
    return None


def _timm_patch_embed(model: nn.Module) -> nn.Module | None:
    pe = getattr(model, "patch_embed", None) or getattr(model, "stem", None)
    return pe if pe is not None and _pair(getattr(pe, "img_size", None)) is not None else None


def _torchvision(model: nn.Module) -> tuple[Geometry, tuple[int, tuple[int, int]] | None] | None:
    try:
        from torchvision.models import MaxVit, VisionTransformer
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return None
    if isinstance(model, VisionTransformer):
        side = model.image_size // model.patch_size
        return Geometry((model.image_size, model.image_size), 1, "model"), (1, (side, side))
    if isinstance(model, MaxVit):
        first = next(
            (m for m in model.modules() if _pair(getattr(m, "grid_size", None)) and hasattr(m, "n_partitions")), None
        )
        if first is not None:  # blocks[0] runs at 1/4 of the input (a stride-2 stem, a stride-2 MBConv)
            gh, gw = _pair(first.grid_size)  # type: ignore[misc]
            return Geometry((4 * gh, 4 * gw), 1, "model"), None
    return None


def _timm(model: nn.Module) -> tuple[Geometry | None, tuple[int, tuple[int, int]] | None]:
    cfg = getattr(model, "pretrained_cfg", None)
    if not isinstance(cfg, dict) or "architecture" not in cfg:
        return None, None
    pe = _timm_patch_embed(model)
    prefix = getattr(model, "num_prefix_tokens", None)
    if getattr(model, "dynamic_img_size", False) and pe is not None:
        patch = _pair(getattr(pe, "patch_size", None)) or (1, 1)
        multiple = 1 if getattr(pe, "dynamic_img_pad", False) else max(patch)
        return Geometry(None, multiple, "model"), None
    size = None
    if pe is not None and getattr(pe, "strict_img_size", False):
        size = _pair(pe.img_size)
    elif cfg.get("fixed_input_size"):
        # The size the model was built for, when it stores it; `input_size` of the config may be another one
        # (create_model(..., img_size=64)), so a model that does not say is left to the probe.
        size = _pair(getattr(model, "img_size", None))
    hint = None
    grid = _pair(getattr(pe, "grid_size", None)) if pe is not None else None
    if isinstance(prefix, int) and grid is not None and size is not None:
        hint = (prefix, grid)
    return (Geometry(size, 1, "model") if size else None), hint


def geometry_of(model: nn.Module) -> Geometry | None:
    """The input geometry `model` states (torchvision ViT/MaxViT, timm), or None.

    Example:
        >>> import torchvision
        >>> geometry_of(torchvision.models.vit_b_16())
        Geometry(size=(224, 224), multiple=1, source='model')
        >>> geometry_of(torchvision.models.resnet18()) is None
        True
    """
    if huggingface.is_transformers(model):
        return huggingface.geometry_of(model)
    tv = _torchvision(model)
    return tv[0] if tv is not None else _timm(model)[0]


def token_hint(model: nn.Module) -> tuple[int, tuple[int, int]] | None:
    """(prefix tokens, patch grid) of a fixed-size token model that states them, or None."""
    if huggingface.is_transformers(model):
        return huggingface.token_hint(model)
    tv = _torchvision(model)
    return tv[1] if tv is not None else _timm(model)[1]


def map_hints(model: nn.Module) -> dict[str, str]:
    """{module path: layout} of a timm model's `feature_info` modules, laid out as its `output_fmt` says."""
    info = getattr(model, "feature_info", None)
    fmt = getattr(model, "output_fmt", None)
    fmt = getattr(fmt, "name", fmt)  # timm's Format enum or a plain string
    if not isinstance(info, list) or fmt not in ("NHWC", "NCHW"):
        return {}
    pattern = "b h w c" if fmt == "NHWC" else "b c h w"
    return {f["module"]: pattern for f in info if isinstance(f, dict) and isinstance(f.get("module"), str)}
