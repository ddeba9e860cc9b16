"""`compile_plan`: an objective plus one or more models -> one truncated forward and one loss.

The plan binds every site to a model (`model=None` only when there is exactly one), checks every
layer name before anything runs, resolves class names to indices, runs only the models that the
objective reads, each truncated after its deepest needed layer, and evaluates the objective with
a single structural interpreter (`evaluate`).

At compile time a probe (`lucent_dsl.plan.sitemap`) finds each model's input geometry (the image is
mapped to it, per model, as the last preprocessing step) and each site's layout; `forward` hands
terms every activation in canonical form ((B, C, H, W), (B, T, C), (B, C)), so a channels-last map
or a token grid with prefix tokens is never read on the wrong axis. A module called more than once
is read at its last call, by every runner; what a term reads is what the module returned, even if
a later op writes to it in place (`lucent_dsl.plan.truncate`).

Example:
    >>> import torch.nn as nn
    >>> from lucent_dsl import channel, neuron
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Conv2d(8, 2, 1))
    >>> plan = compile_plan(channel("1", 3) + 0.5 * neuron("3", 2), net)
    >>> print(plan)
    Plan  models=(model)
      t0 = model:1
      t1 = model:3
      model: fx graph cut after 3 (4 of 5 modules run, channels-last)
      score = channel(t0, 3) + 0.5 * neuron(t1, 2)
      loss  = -score
"""
from __future__ import annotations

import collections
import dataclasses as dc
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from ..dsl.expr import INPUT, Acts, Expr, Site, Term, evaluate, map_terms, sum_of, terms_of, top_terms
from ..dsl.parser import parse
from ..dsl.printing import format_tree, short_text, to_text
from ..errors import InvalidArgumentError, ObjectiveShapeError
from ..models.huggingface import first_entry
from ..models.info import ModelInfo, info_of
from ..models.layouts import LaidSite, Layout, Refusal, canonical, layout_at, parse_layout
from ..models.sizes import Geometry
from ..models.sources import reads_first_entry
from . import sitemap
from .binding import (  # re-exported: compile_plan binds first
    DEFAULT_MODEL_NAME as DEFAULT_MODEL_NAME,
    IMAGE_SITE as IMAGE_SITE,
    as_models as as_models,
    bind as bind,
)
from .truncate import Runner, make_runner


class Scores(NamedTuple):
    """Scores of one evaluation.

    Attributes:
        total: scalar, the sum over images of `per_image`.
        per_image: (n,), the objective's score of each image.
        rows: (T, n), one row per top-level summand, index-aligned with `Plan.term_names`.
        terms: history key -> (n,): rows of equal summands added up under one key (`Plan.history_keys`).
    """

    total: Tensor
    per_image: Tensor
    rows: Tensor
    terms: dict[str, Tensor]


def history_keys(names: Sequence[str]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """(key, summand indices) for each distinct summand text; equal summands share one key.

    The key of k equal summands is their sum's DSL text, so `parse(key)` is exactly what the row adds up.

    Example:
        >>> history_keys(["channel('2', 1)", "neuron('0', 0)", "channel('2', 1)"])
        (("channel('2', 1) + channel('2', 1)", (0, 2)), ("neuron('0', 0)", (1,)))
    """
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        groups.setdefault(name, []).append(i)
    return tuple((name if len(ix) == 1 else " + ".join([name] * len(ix)), tuple(ix))
                 for name, ix in groups.items())


def history_rows(keys: Sequence[tuple[str, tuple[int, ...]]], rows: Tensor) -> dict[str, Tensor]:
    """Index-aligned rows (..., T, n) -> {history key: (..., n)}, adding up the rows of each key."""
    return {key: rows[..., list(ix), :].sum(-2) for key, ix in keys}


def batched(objectives: Sequence[Expr | str]) -> Expr:
    """One objective per image: `objectives[i]` applied to image i of a batched render.

    Example:
        >>> from lucent_dsl import channel
        >>> batched([channel("conv", 0), channel("conv", 1)])
        channel('conv', 0, batch=0) + channel('conv', 1, batch=1)
    """
    def at(i: int, t: Term) -> Term:
        if not any(f.name == "batch" for f in dc.fields(t)):  # type: ignore[arg-type]
            raise InvalidArgumentError(
                f"{t!r} scores the whole batch; it cannot be one image's objective in a batched render"
            )
        if t.batch is not None:  # type: ignore[attr-defined]
            raise InvalidArgumentError(
                f"{t!r} already selects batch={t.batch!r}; batched renders assign images themselves"  # type: ignore[attr-defined]
            )
        return dc.replace(t, batch=i)  # type: ignore[type-var]

    items = [parse(o) if isinstance(o, str) else o for o in objectives]
    if not items:
        raise InvalidArgumentError("batched objectives: the list is empty")
    return sum_of(map_terms(o, lambda t, i=i: at(i, t)) for i, o in enumerate(items))


# --- the plan ----------------------------------------------------------------------------------------


def _select(value: Any, site: Site, first: bool = False) -> Any:
    if first and not site.selectors:
        value = first_entry(value)
    for sel in site.selectors:
        if isinstance(value, Mapping):
            if sel not in value:
                raise ObjectiveShapeError(f"{site}: the output is a dict with keys {list(value)}, not {sel!r}")
            value = value[sel]
        elif isinstance(value, (list, tuple)):
            if not sel.isdigit() or int(sel) >= len(value):
                raise ObjectiveShapeError(
                    f"{site}: the output is a {type(value).__name__} of {len(value)}; select 0..{len(value) - 1}"
                )
            value = value[int(sel)]
        else:
            raise ObjectiveShapeError(f"{site}: cannot select {sel!r} from a {type(value).__name__}")
    if isinstance(value, Mapping) and not site.selectors:
        raise ObjectiveShapeError(
            f"{site} returns a dict with keys {list(value)}; name one, e.g. '{site.layer}/{next(iter(value), 'out')}'"
        )
    return value


def _device_of(models: Mapping[str, nn.Module]) -> torch.device:
    devices = {}
    for name, m in models.items():
        for t in list(m.parameters()) + list(m.buffers()):
            devices.setdefault(t.device, name)
    if len(devices) > 1:
        listing = ", ".join(f"{d} ({n})" for d, n in devices.items())
        raise InvalidArgumentError(f"the models' weights are on different devices: {listing}; move them to one device")
    return next(iter(devices), torch.device("cpu"))


@dc.dataclass(frozen=True, eq=False)
class Plan:
    """A compiled objective: which sites of which models to read, how far to run each model, and the loss.

    Attributes:
        objective: the bound expression (models named, labels resolved).
        models: only the models that the objective reads, by name.
        infos: each model's preprocessing and labels.
        sites: every site read, sorted.
        runners: each model's truncated forward.
        term_names: the DSL text of each top-level summand (`to_text`: parses back; for per-term histories).
        term_labels: the same with large tensors abbreviated (`short_text`): for messages and plots, not keys.
        n_images: the batch size a batched objective needs (None: any).
        options: how the runners were built (`truncate`, `fuse`, stated `layouts`); part of the plan's identity.
        layouts: each site's `Layout` (or `Refusal`), stated or found by the compile-time probe.
        steps: compiled render steps of this plan (see `lucent_dsl.renderer.steps`); they live and die with it.
        firsts: sites read at their first entry when their output is a tuple or a ModelOutput (sites of transformers
            models without a selector: `lucent_dsl.models.huggingface.first_entry`).
    """

    objective: Expr
    models: dict[str, nn.Module]
    infos: dict[str, ModelInfo]
    sites: tuple[Site, ...]
    runners: dict[str, Runner]
    term_names: tuple[str, ...]
    n_images: int | None = None
    options: tuple[tuple[str, Any], ...] = ()
    layouts: dict[Site, Layout | Refusal] = dc.field(default_factory=dict, repr=False)
    term_labels: tuple[str, ...] = dc.field(default=(), repr=False)
    steps: collections.OrderedDict = dc.field(default_factory=collections.OrderedDict, repr=False)
    firsts: frozenset[Site] = dc.field(default=frozenset(), repr=False)

    @property
    def key(self) -> tuple:
        return (self.objective, tuple((k, id(m)) for k, m in self.models.items()), self.options)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Plan) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    @property
    def device(self) -> torch.device:
        return _device_of(self.models)

    def forward(self, image: Tensor | Mapping[str, Tensor], *, raw: Tensor | None = None) -> dict[Site, Any]:
        """Run every needed model (each with its own preprocessing, truncated) on `image`.

        Args:
            image: (R, C, H, W) in [0, 1], after random transforms (R = crops x images); or a mapping
                model name -> its own such image (`steps.model_inputs`), for every model the plan runs.
            raw: the rendered image before transforms, for `@image` penalties (default: `image`; needed
                with a mapping).

        Returns:
            site -> activation, in canonical layout; the keys are `LaidSite`s (equal to the plain sites)
            that tell the terms each site's layout.
        """
        acts: dict[Site, Any] = {}
        if isinstance(image, Mapping) and IMAGE_SITE in self.sites and raw is None:
            raise InvalidArgumentError("Plan.forward: pass raw= (the image before transforms) with per-model images")
        for name, runner in self.runners.items():
            x = self.infos[name].preprocess(image[name] if isinstance(image, Mapping) else image)
            mine = [s for s in self.sites if s.model == name]
            outs = runner(x) if any(s.module_path != INPUT for s in mine) else {}
            hw = (int(x.shape[-2]), int(x.shape[-1]))
            for s in mine:
                value = _select(x if s.module_path == INPUT else outs[s.module_path], s, s in self.firsts)
                lay = self.layouts.get(s)
                if lay is None:
                    acts[s] = value
                    continue
                if isinstance(lay, Layout) and isinstance(value, Tensor) and value.dim() == lay.rank:
                    value = canonical(value, lay)
                acts[LaidSite(s, layout_at(lay, hw))] = value
        if IMAGE_SITE in self.sites:
            acts[IMAGE_SITE] = image if raw is None else raw
        return acts

    @property
    def history_keys(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """(history key, indices into `term_names`): see `history_keys`."""
        return history_keys(self.term_names)

    @property
    def history_labels(self) -> dict[str, str]:
        """History key -> its display label (`term_labels` of its summands)."""
        short = self.term_labels
        return {key: " + ".join([short[ix[0]]] * len(ix)) for key, ix in self.history_keys}

    def scores(self, acts: Acts, n: int) -> Scores:
        """Per-summand, per-image and total scores for a render of `n` images."""
        rows = torch.stack([evaluate(t, acts, n) for t in top_terms(self.objective)])
        per_image = rows.sum(0)
        return Scores(per_image.sum(), per_image, rows, history_rows(self.history_keys, rows))

    def loss(self, acts: Acts, n: int) -> Tensor:
        """`-score`: objectives are maximized, the optimizer minimizes this."""
        return -evaluate(self.objective, acts, n).sum()

    def __str__(self) -> str:
        short = {s: f"t{i}" for i, s in enumerate(self.sites)}
        lines = [f"Plan  models=({', '.join(self.models)})"]
        lines += [f"  {short[s]} = {s}" for s in self.sites]
        unusual = {s: lay for s, lay in self.layouts.items() if isinstance(lay, Refusal) or not lay.canonical}
        if unusual:
            lines.append("  layouts: " + ", ".join(f"{short[s]} = {lay}" for s, lay in unusual.items()))
        for name, r in self.runners.items():
            g = self.infos[name].input_geometry
            lines.append(f"  {name}: {r.describe()}" + (f"; input {g}" if g is not None and g != _ANY else ""))
        lines.append(f"  score = {format_tree(self.objective, short)}")
        lines.append("  loss  = -score")
        return "\n".join(lines)


def _stated_layouts(bound: Expr, models: Mapping[str, nn.Module], layouts: Mapping[str, str] | None,
                    sites: Sequence[Site]) -> dict[Site, Layout]:
    """Layouts the user gave: `ModelInfo.layouts`, then `compile_plan(layouts=)`, then a term's own `layout=`."""
    by_text: dict[Site, str] = {}
    for s in sites:
        if s.model is not None and s.model in models:
            for layer, p in info_of(models[s.model]).layouts:
                if layer == s.layer:
                    by_text[s] = p
    for key, pattern in (layouts or {}).items():
        if not isinstance(key, str) or not isinstance(pattern, str):
            raise InvalidArgumentError(f"layouts= maps layer names to einops patterns, got {key!r}: {pattern!r}")
        model, _, layer = key.rpartition(":") if ":" in key else (None, "", key)
        hits = [s for s in sites if s.layer == layer and (model is None or s.model == model)]
        if not hits:
            raise InvalidArgumentError(f"layouts= names {key!r}, which the objective does not read "
                                       f"(it reads {', '.join(str(s) for s in sites) or 'nothing'})")
        by_text.update({s: pattern for s in hits})
    leaves: list[Term] = []
    map_terms(bound, lambda t: leaves.append(t) or t)
    own: dict[Site, str] = {}
    for t in leaves:
        pattern = getattr(t, "layout", None)
        if pattern is None:
            continue
        for s in t.sites():
            if own.setdefault(s, pattern) != pattern:
                raise InvalidArgumentError(f"two terms read {s} with different layouts: {own[s]!r} and {pattern!r}")
    by_text.update(own)
    return {s: parse_layout(p) for s, p in by_text.items()}


_ANY = Geometry()


def compile_plan(objective: Expr | str | Sequence[Expr | str], models: Any, *, truncate: str = "auto",
                 fuse: bool = True, layouts: Mapping[str, str] | None = None) -> Plan:
    """Compile `objective` for `models` (one nn.Module, or a mapping name -> module for an ensemble).

    Args:
        objective: an expression, DSL text, or a list of them (one per image: a batched render).
        models: an `nn.Module` (named "model") or a mapping name -> `nn.Module`.
        truncate: "auto" (fx graph cut, hooks if the model does not trace), "fx", or "hooks".
        fuse: on fx graphs, fold eval-mode BatchNorms into the preceding convolutions and run them
            channels-last (`lucent_dsl.plan.fold`: same activations up to float rounding, ~1.7x faster on
            MobileNetV2 on a CPU). False runs the model's own modules one by one.
        layouts: {layer or "model:layer": einops pattern} for sites whose layout should not be detected,
            e.g. {"features.3": "b h w c"} (see `lucent_dsl.models.layouts`).

    Raises:
        LayerNotFoundError, ModelNotFoundError, AmbiguousModelError, InvalidArgumentError: before any forward.
    """
    n_images = None
    if isinstance(objective, str):
        objective = parse(objective)
    elif isinstance(objective, Sequence):
        n_images = len(objective)
        objective = batched(objective)
    if not isinstance(objective, Expr):
        raise InvalidArgumentError(
            f"objective must be an expression, DSL text or a list of them, got {type(objective).__name__}"
        )
    if truncate not in ("auto", "fx", "hooks"):
        raise InvalidArgumentError(f"truncate={truncate!r}; use 'auto', 'fx' or 'hooks'")
    all_models = as_models(models)
    bound = bind(objective, all_models)
    sites = tuple(sorted({s for t in terms_of(bound) for s in t.sites()}, key=lambda s: (s.model or "", s.layer)))
    used = {name: m for name, m in all_models.items() if any(s.model == name for s in sites)}
    _device_of(used)
    runners = {
        name: make_runner(
            m, tuple(sorted({s.module_path for s in sites if s.model == name} - {INPUT})), strategy=truncate, fuse=fuse
        )
        for name, m in used.items()
    }
    stated = _stated_layouts(bound, used, layouts, sites)
    infos: dict[str, ModelInfo] = {}
    found: dict[Site, Layout | Refusal] = {}
    for name, m in used.items():
        info = info_of(m)
        resolved = sitemap.resolve(m, info, runners[name], [s for s in sites if s.model == name], stated)
        infos[name] = (info if info.input_geometry is not None or resolved.geometry is None
                       else dc.replace(info, geometry=resolved.geometry))
        found.update(resolved.layouts)
    firsts = frozenset(s for s in sites if s.model in used and reads_first_entry(used[s.model]) and not s.selectors
                       and s.module_path != INPUT)
    options = (("truncate", truncate), ("fuse", bool(fuse)))
    if layouts:
        options += (("layouts", tuple(sorted(layouts.items()))),)
    return Plan(
        objective=bound,
        models=used,
        infos=infos,
        sites=sites,
        runners=runners,
        term_names=tuple(to_text(t) for t in top_terms(objective)),
        term_labels=tuple(short_text(t) for t in top_terms(objective)),
        n_images=n_images,
        options=options,
        layouts=found,
        firsts=firsts,
    )
