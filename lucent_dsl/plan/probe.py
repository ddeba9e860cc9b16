"""Probing a model: every addressable site with its type, output shape, layout, channels and calls.

One forward with a hook on every module, and a second one at another size the model accepts, so
each site's layout is known (`lucent_dsl.models.layouts.detect`: the axes that change are spatial) and
its channel count is read on the right axis (the last one of a channels-last map).
Used by `lucent-dsl layers`, the atlas (channel counts) and the recipes (default layers).

Example:
    >>> import torch.nn as nn
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(2))
    >>> [(r.name, r.layout, r.channels) for r in probe(net, 64)]
    [('@input', 'b c h w', 3), ('0', 'b c h w', 8), ('1', 'b c (h w)', 8), ('@output', 'b c (h w)', 8)]
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from ..errors import InvalidArgumentError, LucentError
from ..models import architectures, sizes as geo
from ..models.huggingface import first_entry
from ..models.info import device_of, info_of
from ..models.layouts import Layout, Refusal, detect
from ..models.sources import adapt, reads_first_entry
from .fold import frozen_models
from .forward import layer_reader


class SiteInfo(NamedTuple):
    """One addressable site of a model, as seen in one probe forward."""

    name: str
    type: str
    shape: str  # without the batch dimension; "not run" for modules forward() never calls
    channels: int | None
    calls: int
    layout: str = "-"  # the einops pattern of the output ("b h w c", "b (1 + h w) c", ...); "?" if unknown


def _layout(
    outs: list[Any], sizes: list[tuple[int, int]], module: nn.Module | None, model: nn.Module
) -> Layout | Refusal | None:
    shapes = [tuple(o.shape) for o in outs if isinstance(o, Tensor)]
    if not shapes or len(shapes) != len(outs):
        return None
    hint = architectures.module_hint(module, len(shapes[0]))
    return detect(
        shapes,
        sizes[: len(shapes)],
        shapes[0][0],
        module_hint=hint,
        token_hint=architectures.token_hint(model),
        widths=architectures.feature_widths(module),
    )


def _channels_of(x: Any, lay: Layout | Refusal | None) -> int | None:
    if not isinstance(x, Tensor):
        return None
    if isinstance(lay, Layout):
        return int(x.shape[lay.axes.index("c")])
    return None if isinstance(lay, Refusal) else _channels(x)


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


def hooked_forward(model: nn.Module, size: tuple[int, int], named: Sequence[tuple[str, nn.Module]],
                   hook: Callable[[str, Any], None]) -> tuple[Tensor, Any]:
    """One probe forward: a mid-grey (1, C, H, W) image of `size` through the model's preprocessing and the
    whole model, frozen (eval mode, as in a render) and without gradients, calling `hook(name, output)` after
    each module of `named`; the hooks are removed afterwards. Returns (the model's input, its output).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> shapes = {}
        >>> _ = hooked_forward(net, (8, 8), list(net.named_children()), lambda n, o: shapes.update({n: o.shape}))
        >>> shapes["1"]
        torch.Size([1, 4, 6, 6])
    """
    info = info_of(model)
    handles = [m.register_forward_hook(lambda _m, _i, o, n=n: hook(n, o)) for n, m in named]
    try:
        with torch.no_grad(), frozen_models([model]):
            x = info.preprocess(torch.full((1, info.channels, *size), 0.5, device=device_of(model)))
            out = model(x)
    finally:
        for handle in handles:
            handle.remove()
    return x, out


def _forward(
    model: nn.Module, named: list[tuple[str, nn.Module]], size: tuple[int, int]
) -> tuple[Any, dict, dict, Any]:
    seen: dict[str, Any] = {}
    calls: dict[str, int] = {}

    def hook(name: str, out: Any) -> None:
        seen[name] = out
        calls[name] = calls.get(name, 0) + 1

    x, out = hooked_forward(model, size, named, hook)
    return x, seen, calls, out


def probe(model: nn.Module, size: int | tuple[int, int] | None = None) -> list[SiteInfo]:
    """Every site of `model`: `@input`, each named submodule in definition order, `@output`.

    One forward of a grey image (the model's input size, or `size`) with a hook on every module, and
    one more at another size the model accepts (for the layouts; skipped when the model takes one size
    only or refuses it); the hooks are removed afterwards, and the model's train/eval flags are restored.
    For modules called more than once, the shape is that of the last call (the one objectives read). A
    transformers model's tuple outputs get the layout and channels of their first entry (what a term reads).
    """
    model = adapt(model)  # the preprocessing and geometry a library declares, as a plan runs the model
    first = first_entry if reads_first_entry(model) else (lambda v: v)
    h, w = probe_size(model, size)
    info = info_of(model)
    named = [(n, m) for n, m in model.named_modules() if n]
    try:
        x, seen, calls, out = _forward(model, named, (h, w))
    except LucentError:
        raise
    except Exception as e:
        raise InvalidArgumentError(
            f"a probe forward of a (1, {info.channels}, {h}, {w}) image failed: {type(e).__name__}: {e}; try another "
            "--size"
        ) from e
    sizes = [(h, w)]
    runs = [(x, seen, out)]
    g = info.input_geometry or architectures.geometry_of(model)
    for above in (False, True) if g is None or not g.fixed else ():
        second = geo.probe_sizes((h, w), g.multiple if g is not None else 1, above)
        if second is None:
            continue
        try:
            x2, seen2, _, out2 = _forward(model, named, second)
        except Exception:  # noqa: BLE001 - the layouts then come from one size
            continue
        sizes.append(tuple(x2.shape[-2:]))
        runs.append((x2, seen2, out2))
        break
    sizes[0] = tuple(x.shape[-2:])

    def row(name: str, kind: str, pick: Any, module: nn.Module | None, n_calls: int) -> SiteInfo:
        values = [pick(r) for r in runs]
        read = [first(v) for v in values]
        lay = _layout(read, sizes, module, model)
        return SiteInfo(name, kind, _describe(values[0]), _channels_of(read[0], lay), n_calls,
                        "-" if lay is None else str(lay))

    rows = [row("@input", "input", lambda r: r[0], None, 1)]
    for n, m in named:
        if n in seen:
            rows.append(row(n, type(m).__name__, lambda r, n=n: r[1].get(n), m, calls[n]))
        else:
            rows.append(SiteInfo(n, type(m).__name__, "not run", None, 0))
    rows.append(row("@output", type(model).__name__, lambda r: r[2], None, 1))
    return rows


def default_layers(model: nn.Module, size: int | tuple[int, int] | None = None, n: int = 4) -> list[str]:
    """`n` layers spread over the model's depth: feature-map sites at the shallowest nesting that has
    at least `n` of them (for MobileNetV2: features.4, features.9, features.14, features.18)."""
    maps = [r.name for r in probe(model, size)[1:-1] if r.layout in ("b c h w", "b h w c")]
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


def channel_counts(
    model: nn.Module, layers: Sequence[str], size: int | tuple[int, int] | None = None
) -> dict[str, int]:
    """Number of channels of each layer, from one probe forward (see `channel_count`)."""
    layer_reader(model, layers)  # LayerNotFoundError with suggestions
    rows = {r.name: r for r in probe(model, size)}
    out = {}
    for layer in layers:
        row = rows.get(layer)
        if row is None or row.channels is None:
            raise InvalidArgumentError(
                f"layer {layer!r} outputs {row.shape if row else 'nothing'}, which has no channel axis"
            )
        out[layer] = row.channels
    return out



