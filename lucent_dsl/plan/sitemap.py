"""The compile-time probe: each model's input geometry and the layout of every site a plan reads.

`resolve` runs the plan's own truncated forward (so what is probed is what renders) on a random
image, without gradients, in eval mode, with the model's own hooks set aside (a probe is not one
of the model's forwards: user hooks never see it), at one or two sizes:

1. the geometry: stated (`ModelInfo`), said by the model (`lucent_dsl.models.architectures`), or found by
   `geometry.search` from the base size (`ModelInfo.input_size`, else 224);
2. the layouts: stated (`layout=` on a term, `compile_plan(..., layouts=...)`, `ModelInfo.layouts`),
   else `layouts.detect` from the shapes at the base size and at a second legal size (the axes
   that change are spatial), helped by the module types and what the model says.

A model that runs at none of the probe sizes keeps an unknown geometry (images pass unchanged)
and its sites fall back to the rank rule. Results are cached per model (weakly) and per set of
sites, keyed by the model's module structure.

Example:
    >>> import torch.nn as nn
    >>> from lucent_dsl.dsl.expr import Site
    >>> from lucent_dsl.models import ModelInfo
    >>> from lucent_dsl.plan.truncate import make_runner
    >>> net = nn.Sequential(nn.PixelUnshuffle(4), nn.Conv2d(48, 8, 1), nn.Flatten(2))   # sizes divisible by 4
    >>> r = resolve(net, ModelInfo(), make_runner(net, ("1", "2")), [Site("m", "1"), Site("m", "2")], {})
    >>> str(r.geometry), [str(r.layouts[s]) for s in (Site("m", "1"), Site("m", "2"))]
    ('multiples of 4', ['b c h w', 'b c (h w)'])
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses as dc
import io
import re
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..dsl.expr import INPUT, OUTPUT, Site
from ..errors import InvalidArgumentError, LucentError, ObjectiveShapeError
from ..models import architectures, sizes as geo
from ..models.huggingface import first_entry
from ..models.info import ModelInfo, device_of
from ..models.layouts import Layout, Refusal, detect, parse_layout
from ..models.sizes import Geometry
from ..models.sources import reads_first_entry
from .fold import frozen_models

__all__ = ["DEFAULT_BASE", "Resolved", "resolve", "select"]

DEFAULT_BASE = (224, 224)
FALLBACK_BASES = ((64, 64), (32, 32))  # tried when a model of unstated geometry does not run at 224
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
               "_forward_pre_hooks_with_kwargs")
_CACHE: weakref.WeakKeyDictionary[nn.Module, collections.OrderedDict] = weakref.WeakKeyDictionary()


@dc.dataclass(frozen=True)
class Resolved:
    """What a probe found for one model: its geometry (None: unknown), each site's layout, the probe sizes."""

    geometry: Geometry | None
    layouts: dict[Site, Layout | Refusal]
    sizes: tuple[tuple[int, int], ...] = ()


def select(value: Any, site: Site, first: bool = False) -> Any:
    """The entry of a module output that `site`'s selectors name (None where there is no such entry); with `first`
    (transformers models), a site without selectors reads a tuple or ModelOutput at its first entry."""
    if first and not site.selectors:
        value = first_entry(value)
    for sel in site.selectors:
        if isinstance(value, Mapping):
            value = value.get(sel)
        elif isinstance(value, (list, tuple)) and sel.isdigit() and int(sel) < len(value):
            value = value[int(sel)]
        else:
            return None
    return value


@contextlib.contextmanager
def hooks_set_aside(model: nn.Module) -> Iterator[None]:
    """Every module's forward hooks moved out of the way (and put back, even after an exception)."""
    saved = []
    for m in model.modules():
        for attr in _HOOK_DICTS:
            d = getattr(m, attr, None)
            if d:
                saved.append((m, attr, d))
                object.__setattr__(m, attr, type(d)())
    try:
        yield
    finally:
        for m, attr, d in saved:
            object.__setattr__(m, attr, d)


def _input(info: ModelInfo, size: tuple[int, int], device: torch.device) -> Tensor:
    x = torch.rand((1, info.channels, *size), generator=torch.Generator().manual_seed(0)).to(device)
    if info.mean is not None:
        mean = torch.tensor(info.mean, device=device).view(1, -1, 1, 1)
        std = torch.tensor(info.std or (1.0,) * len(info.mean), device=device).view(1, -1, 1, 1)
        x = (x - mean) / std
    return x


class _Prober:
    """Runs the runner at a size; remembers the output shapes of every size that worked."""

    def __init__(self, model: nn.Module, info: ModelInfo, runner: Any, sites: Sequence[Site]):
        self.model, self.info, self.runner, self.sites = model, info, runner, sites
        self.device = device_of(model)
        self.shapes: dict[tuple[int, int], dict[Site, tuple[int, ...] | None]] = {}
        self.first_error: Exception | None = None

    def __call__(self, size: tuple[int, int]) -> bool:
        try:
            # torch.fx prints the generated code of a failing graph to stderr: a refused size is no news here.
            with torch.no_grad(), hooks_set_aside(self.model), contextlib.redirect_stderr(io.StringIO()):
                outs = self.runner(_input(self.info, size, self.device))
        except LucentError:
            raise  # the plan's own error (a layer that never runs): not a size the model refuses
        except Exception as e:  # noqa: BLE001 - any failure of the model's forward means "not this size"
            self.first_error = self.first_error or e
            return False
        shapes = {}
        first = reads_first_entry(self.model)
        for s in self.sites:
            v = select(outs.get(s.module_path), s, first)
            shapes[s] = tuple(v.shape) if isinstance(v, Tensor) else None
        self.shapes[size] = shapes
        return True


def _structure(model: nn.Module) -> tuple:
    return tuple((name, type(m), id(m)) for name, m in model.named_modules())


def _base(info: ModelInfo, geometry: Geometry | None) -> tuple[int, int]:
    if geometry is not None and geometry.size is not None:
        return geometry.size
    base = tuple(info.input_size) if info.input_size is not None else DEFAULT_BASE
    if geometry is not None:
        base = geometry.target(*base)
    return int(base[0]), int(base[1])


def _probe(model: nn.Module, info: ModelInfo, runner: Any, sites: Sequence[Site]) -> tuple[Geometry | None, dict]:
    with frozen_models([model]):  # eval mode, and BatchNorms folded once for every probe size
        return _probe_frozen(model, info, runner, sites)


def _probe_frozen(
    model: nn.Module, info: ModelInfo, runner: Any, sites: Sequence[Site]
) -> tuple[Geometry | None, dict]:
    geometry = info.input_geometry or architectures.geometry_of(model)
    probe = _Prober(model, info, runner, sites)
    base = _base(info, geometry)
    bases = [base] + ([b for b in FALLBACK_BASES if b != base] if geometry is None else [])
    base = next((b for b in bases if probe(b)), None)
    if base is None:
        _refuse_channel_mismatch(model, info, probe.first_error)
        return geometry, {}
    if geometry is None:
        geometry = geo.search(probe, base)
    elif not geometry.fixed:
        for above in (False, True):  # a smaller second size first; a larger one for models with a minimum size
            second = geo.probe_sizes(base, geometry.multiple, above)
            if second is not None and probe(second):
                break
    return geometry, probe.shapes


_CHANNELS = re.compile(r"expected input\[[^\]]*\] to have (\d+) channels, but got (\d+) channels")


def _refuse_channel_mismatch(model: nn.Module, info: ModelInfo, error: Exception | None) -> None:
    """A model that ran at no probe size because its first convolution wants other colour channels than the image
    has (a grayscale model given no `ModelInfo`): say so now, with the fix, not at the render's first step."""
    found = _CHANNELS.search(str(error)) if error is not None else None
    if found is None or int(found.group(2)) != info.channels:
        return
    want = int(found.group(1))
    raise InvalidArgumentError(
        f"the model {info.name or type(model).__name__} reads {want} colour channel{'s' * (want != 1)} but would be "
        f"given {info.channels} (its first convolution refused the probe image: {found.group(0)}); attach its input: "
        f"lucent_dsl.with_info(model, lucent_dsl.ModelInfo(channels={want}))")


def _module(model: nn.Module, path: str) -> nn.Module | None:
    try:
        return model.get_submodule(path) if path not in (INPUT, OUTPUT) else (model if path == OUTPUT else None)
    except AttributeError:
        return None


def _hint(model: nn.Module, site: Site, rank: int, maps: Mapping[str, str]) -> str | None:
    module = None if site.selectors else _module(model, site.module_path)
    if module is None or module is model:
        return None
    return architectures.module_hint(module, rank) or (maps.get(site.module_path) if rank == 4 else None)


def _layout(model: nn.Module, site: Site, shapes: dict, stated: Layout | None, maps: Mapping[str, str],
            tokens: Any) -> Layout | Refusal | None:
    sizes = [size for size, by_site in shapes.items() if by_site.get(site) is not None]
    seen = [shapes[size][site] for size in sizes]
    if stated is not None:
        if seen and len(seen[0]) != stated.rank:
            raise ObjectiveShapeError(f"layout {stated.pattern!r} of {site} has {stated.rank} axes, but its "
                                      f"activation has shape {seen[0]}")
        if seen and stated.kind == "tokens" and stated.prefix is not None:
            found = detect(seen, sizes)
            if isinstance(found, Layout) and found.prefix == stated.prefix and found.axes == stated.axes:
                return dc.replace(stated, grid=found.grid, stride=found.stride)
        return stated
    if not seen:
        return None
    module = None if site.selectors else _module(model, site.module_path)
    return detect(seen, sizes, 1, module_hint=_hint(model, site, len(seen[0]), maps), token_hint=tokens,
                  widths=architectures.feature_widths(module))


def resolve(model: nn.Module, info: ModelInfo, runner: Any, sites: Sequence[Site],
            stated: Mapping[Site, Layout]) -> Resolved:
    """Geometry and layouts for the `sites` of one model (see the module docstring).

    Raises:
        InvalidArgumentError: a stated layout that does not fit its site's activation.
    """
    module_sites = tuple(sorted({s for s in sites if s.module_path != INPUT}, key=lambda s: s.layer))
    layouts: dict[Site, Layout | Refusal] = {
        s: parse_layout("b c h w", "stated") for s in sites if s.module_path == INPUT
    }
    if not module_sites:
        return Resolved(info.input_geometry or architectures.geometry_of(model), layouts)
    key = (_structure(model), module_sites, info.input_geometry, info.input_size, info.channels, type(runner))
    per_model = _CACHE.setdefault(model, collections.OrderedDict())
    if key not in per_model:
        per_model[key] = _probe(model, info, runner, module_sites)
        while len(per_model) > 32:
            per_model.popitem(last=False)
    geometry, shapes = per_model[key]
    maps, tokens = architectures.map_hints(model), architectures.token_hint(model)
    for s in module_sites:
        found = _layout(model, s, shapes, stated.get(s), maps, tokens)
        if found is not None:
            layouts[s] = found
    return Resolved(geometry, layouts, tuple(shapes))
