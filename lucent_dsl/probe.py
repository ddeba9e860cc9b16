"""Probing a model: every addressable site with its type, output shape, channels and calls, from one forward.

Used by `lucent-dsl layers`, the atlas (channel counts) and the recipes (default layers).
"""
from __future__ import annotations

import math

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from .errors import InvalidArgumentError, LucentError
from .models import device_of, info_of
from .objectives import channel as channel_term
from .plan import compile_plan
from .fold import frozen_models


class SiteInfo(NamedTuple):
    """One addressable site of a model, as seen in one probe forward."""

    name: str
    type: str
    shape: str  # without the batch dimension; "not run" for modules forward() never calls
    channels: int | None
    calls: int


def _channels(x: Any) -> int | None:
    # the layout rule objectives use: (B, C, H, W) maps, (B, tokens, C) sequences, (B, C) vectors
    dim = {4: 1, 3: 2, 2: 1}.get(x.ndim) if isinstance(x, Tensor) else None
    return None if dim is None else int(x.shape[dim])


def _describe(x: Any) -> str:
    if isinstance(x, Tensor):
        return "(" + ", ".join(str(d) for d in x.shape[1:]) + ")"
    if isinstance(x, dict):
        return "{" + ", ".join(f"{k}: {_describe(v)}" for k, v in x.items()) + "}"
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(_describe(v) for v in x) + "]"
    return type(x).__name__


def probe_size(model: nn.Module, size: int | tuple[int, int] | None = None) -> tuple[int, int]:
    if size is None:
        known = info_of(model).input_size
        return (int(known[0]), int(known[1])) if known else (224, 224)
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def probe(model: nn.Module, size: int | tuple[int, int] | None = None) -> list[SiteInfo]:
    """Every site of `model`: `@input`, each named submodule in definition order, `@output`.

    One forward of a grey image (the model's input size, or `size`) with a hook on every module;
    the hooks are removed afterwards, and the model's train/eval flags are restored. For modules
    called more than once, the shape is that of the last call (the one objectives read).
    """
    h, w = probe_size(model, size)
    info = info_of(model)
    device = device_of(model)
    seen: dict[str, Any] = {}
    calls: dict[str, int] = {}

    def hook(name: str, _m: nn.Module, _i: Any, out: Any) -> None:
        seen[name] = out
        calls[name] = calls.get(name, 0) + 1

    named = [(n, m) for n, m in model.named_modules() if n]
    handles = [m.register_forward_hook(lambda m, i, o, n=n: hook(n, m, i, o)) for n, m in named]
    try:
        with torch.no_grad(), frozen_models([model]):
            x = info.preprocess(torch.full((1, info.channels, h, w), 0.5, device=device))
            out = model(x)
    except LucentError:
        raise
    except Exception as e:
        raise InvalidArgumentError(
            f"a probe forward of a (1, {info.channels}, {h}, {w}) image failed: {type(e).__name__}: {e}; try another --size"
        ) from e
    finally:
        for handle in handles:
            handle.remove()
    rows = [SiteInfo("@input", "input", _describe(x), _channels(x), 1)]
    for n, m in named:
        if n in seen:
            rows.append(SiteInfo(n, type(m).__name__, _describe(seen[n]), _channels(seen[n]), calls[n]))
        else:
            rows.append(SiteInfo(n, type(m).__name__, "not run", None, 0))
    rows.append(SiteInfo("@output", type(model).__name__, _describe(out), _channels(out), 1))
    return rows


def default_layers(model: nn.Module, size: int | tuple[int, int] | None = None, n: int = 4) -> list[str]:
    """`n` layers spread over the model's depth: feature-map sites at the shallowest nesting that has
    at least `n` of them (for MobileNetV2: features.4, features.9, features.14, features.18)."""
    maps = [r.name for r in probe(model, size)[1:-1] if r.shape.count(",") == 2 and r.shape.startswith("(")]
    if not maps:
        raise InvalidArgumentError("the model has no (C, H, W) feature maps; name layers explicitly")
    for depth in range(max(name.count(".") for name in maps) + 1):
        level = [name for name in maps if name.count(".") == depth]
        if len(level) >= n:
            break
    else:
        level = maps
    k = min(n, len(level))
    return [level[math.ceil(len(level) * (i + 1) / k) - 1] for i in range(k)]


def channel_count(model: nn.Module, layer: str, size: int | tuple[int, int] | None = None) -> int:
    """Number of channels of `layer` (a probe forward), with an error that lists close names."""
    return channel_counts(model, [layer], size)[layer]


def channel_counts(model: nn.Module, layers: Sequence[str], size: int | tuple[int, int] | None = None) -> dict[str, int]:
    """Number of channels of each layer, from one probe forward (see `channel_count`)."""
    for layer in layers:
        compile_plan(channel_term(layer, 0), model)  # LayerNotFoundError with suggestions
    rows = {r.name: r for r in probe(model, size)}
    out = {}
    for layer in layers:
        row = rows.get(layer)
        if row is None or row.channels is None:
            raise InvalidArgumentError(f"layer {layer!r} outputs {row.shape if row else 'nothing'}, which has no channel axis")
        out[layer] = row.channels
    return out



