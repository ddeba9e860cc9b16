"""The units of an explored model and the images each one gets, as atlas-style jobs with their own file names.

A unit is one objective with a name: `channel(layer, c)` for a layer's channel, `class_logit(c)`
for a classifier's output (named by its label), and, for an output that is a map per class (a
segmentation model's `@output/out`), that class's logit inside the central region
(`masked(class_logit(c, layer=...), CENTRAL_BOX)`). Every unit gets three kinds of image:

- `vis`: the objective maximized (seeded exactly like `lucent-dsl atlas`, so a channel's picture
  is the one its atlas shows);
- `neg`: the objective minimized (`-objective`);
- `div`: `DIVERSITY_SET` images rendered together, maximizing the objective minus a diversity term
  (Gram-matrix cosine similarity, in [0, 1]) weighted by `diversity_weight`: the magnitude of the
  unit's own `vis` score, so the two are on one scale whatever the layer's activations are.

Example:
    >>> u = Unit("features.14", 10, "channel('features.14', 10)", "features.14:10")
    >>> [j.filename for j in image_jobs([u])]
    ['features.14_0010.png', 'features.14_0010.neg.png']
    >>> u.page
    'u/features.14_0010.html'
"""
from __future__ import annotations

import dataclasses as dc
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

from torch import nn

from ..atlas import channel_seed, parse_channels, safe_name
from ..dsl.expr import OUTPUT
from ..dsl.printing import to_text
from ..errors import InvalidArgumentError
from ..models.info import info_of
from ..objectives import channel, class_logit, diversity, masked
from ..plan.probe import probe

CENTRAL_BOX = (0.25, 0.25, 0.75, 0.75)
DIVERSITY_SET = 4
NEG = "~neg"  # the job group of a layer's negative images


@dc.dataclass(frozen=True)
class Unit:
    """One unit of the site: its layer, index, objective (DSL text) and display name."""

    layer: str
    index: int
    objective: str
    label: str

    @property
    def slug(self) -> str:
        return f"{safe_name(self.layer)}_{self.index:04d}"

    @property
    def page(self) -> str:
        return f"u/{self.slug}.html"

    @property
    def vis(self) -> str:
        return f"{self.slug}.png"

    @property
    def neg(self) -> str:
        return f"{self.slug}.neg.png"

    def div(self, i: int) -> str:
        return f"{self.slug}.div{i}.png"

    @property
    def top(self) -> str:
        return f"{self.slug}.top.png"

    @property
    def bottom(self) -> str:
        return f"{self.slug}.bottom.png"


class ImageJob(NamedTuple):
    """An atlas job (`run_atlas` renders it) with its own objective and file name.

    `layer` is the job's group in the atlas manifest and grids: the unit's layer, or the layer
    followed by `NEG` for negative images. `channel` is the unit's index.
    """

    layer: str
    channel: int
    seed: int
    objective: str
    filename: str


def image_jobs(units: Sequence[Unit], *, seed: int = 0) -> list[ImageJob]:
    """Every unit's `vis` and `neg` jobs, grouped by layer (positives first)."""
    out: list[ImageJob] = []
    for layer in dict.fromkeys(u.layer for u in units):
        mine = [u for u in units if u.layer == layer]
        out += [ImageJob(layer, u.index, channel_seed(layer, u.index, seed), u.objective, u.vis) for u in mine]
        out += [
            ImageJob(layer + NEG, u.index, channel_seed(layer + NEG, u.index, seed), to_text(-_parse(u.objective)),
                     u.neg)
            for u in mine
        ]
    return out


def diversity_weight(vis_score: float | None) -> float:
    """The weight of a diversity set's diversity term: |score| of the unit's visualization (3 digits), at least 1e-3.

    Example:
        >>> diversity_weight(-0.21349), diversity_weight(None)
        (0.213, 1.0)
    """
    if vis_score is None or math.isnan(vis_score):
        return 1.0
    return max(float(f"{abs(vis_score):.3g}"), 1e-3)


def diversity_objective(unit: Unit, layer: str, weight: float) -> str:
    """The objective of a unit's diversity set: the objective minus `weight` x diversity at `layer`."""
    return to_text(_parse(unit.objective) - weight * diversity(layer))


def diversity_seed(unit: Unit, seed: int = 0) -> int:
    return channel_seed(unit.layer + "~div", unit.index, seed)


def _parse(text: str) -> Any:
    from ..dsl.parser import parse

    return parse(text)


def _rows(model: nn.Module, size: tuple[int, int]) -> dict[str, Any]:
    return {r.name: r for r in probe(model, size)}


def layer_units(model: nn.Module, layer: str, channels: str | None, size: tuple[int, int],
                rows: dict[str, Any] | None = None) -> list[Unit]:
    """The units of `layer` (`channels`: "0:16", "3,7", None for all; see `atlas.parse_channels`).

    Raises:
        LayerNotFoundError / InvalidArgumentError: an unknown layer, or one without a channel axis.
    """
    from ..plan.compiler import compile_plan

    rows = rows if rows is not None else _rows(model, size)
    base = layer.split("/", 1)[0]
    compile_plan(class_logit(0, layer=layer) if base == OUTPUT else channel(layer, 0), model)  # unknown names fail here
    if base == OUTPUT and "/" in layer:
        shape = _selected_shape(rows[OUTPUT].shape, layer)
        count = int(shape.strip("()").split(",")[0])
    else:
        row = rows.get(layer)
        if row is None or row.channels is None:
            raise InvalidArgumentError(
                f"layer {layer!r} outputs {row.shape if row else 'nothing'}, which has no channel axis"
            )
        shape, count = row.shape, row.channels
    maps = shape.count(",") == 2
    labels = info_of(model).labels
    named = base == OUTPUT and labels is not None and len(labels) == count
    out = []
    for c in parse_channels(channels, count):
        name = (f"class {c}" if labels[c] == str(c) else f"{labels[c]} ({c})") if named else f"{layer}:{c}"  # type: ignore[index]
        if base == OUTPUT and maps:  # a map per class: that class inside the central region
            objective = masked(class_logit(c, layer=layer), CENTRAL_BOX)
        elif base == OUTPUT:
            objective = class_logit(c, layer=layer)
        else:
            objective = channel(layer, c)
        out.append(Unit(layer, c, repr(objective), name))
    return out


def _selected_shape(described: str, layer: str) -> str:
    """The shape text of `@output/key` from probe's description `{key: (C, H, W), ...}`."""
    key = layer.split("/", 1)[1]
    for part in described.strip("{}").split("), "):
        name, _, shape = part.partition(": ")
        if name == key:
            return shape if shape.endswith(")") else shape + ")"
    raise InvalidArgumentError(f"{layer!r}: the model output is {described}, which has no entry {key!r}")


def model_units(model: nn.Module, layers: Sequence[str], channels: str | None, size: tuple[int, int]) -> list[Unit]:
    """The units of every layer, layers in the order given.

    Raises:
        InvalidArgumentError: no layers, or two layers whose file names would collide.
    """
    if not layers:
        raise InvalidArgumentError("explore needs at least one layer (--layers features.4,features.14 or @output)")
    owner: dict[str, str] = {}
    for layer in layers:
        if safe_name(layer) in owner:
            raise InvalidArgumentError(f"layers {owner[safe_name(layer)]!r} and {layer!r} would write the same files")
        owner[safe_name(layer)] = layer
    rows = _rows(model, size)
    return [u for layer in layers for u in layer_units(model, layer, channels, size, rows)]
