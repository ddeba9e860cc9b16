"""`explore`: a static, browsable site of a model (no server needed; `python -m http.server` serves it).

Steps (each resumable: rerunning the same command redoes only what is missing):

1. the units of the layers (`units.model_units`) and their images, rendered with the atlas
   machinery (`render.render_site_images`: every rank of a torchrun takes its share);
2. with `images`: the dataset examples of every unit in one streaming pass
   (`dataset_examples`, state kept in `examples.state.json`), saved as strips of crops, and the
   sanity check of every unit (`sanity`: its visualization and diversity set against its top and
   bottom examples, layer by layer, plus the linear detectability probe);
3. the pages (`pages`), `site.json` (every unit, file and setting) and `style.css`.

Example:
    >>> diversity_layer("@output", {"@output": "(10)"}, ["conv1", "conv2"])
    'conv2'
    >>> diversity_layer("conv2", {"conv2": "(64, 14, 14)"}, ["conv1"])
    'conv2'
"""
from __future__ import annotations

import dataclasses as dc
import functools as ft
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..dataset_examples import Examples, crops, dataset_examples, image_source
from ..dsl.expr import OUTPUT
from ..io.files import atomic_write, make_grid, save_png
from ..models.info import info_of
from ..plan.probe import default_layers, probe
from ..record.recipe import Recipe
from ..renderer.presets import with_preset
from ..sanity import pooled_activations, probe_accuracy, similarity_report
from . import pages
from .render import (
    IMG,
    load_images,
    read_image_info,
    render_command,
    render_site_images,
)
from .units import DIVERSITY_SET, Unit, model_units

SITE_JSON = "site.json"
EXAMPLES_JSON = "examples.json"
EXAMPLES_STATE = "examples.state.json"
TILE = 64  # pixels per example crop in the strips


def diversity_layer(layer: str, shapes: Mapping[str, str], fallback: Sequence[str]) -> str:
    """The layer a unit's diversity term reads: its own when it is a map, else the deepest of `fallback`."""
    shape = shapes.get(layer.split("/", 1)[0], "")
    return layer if shape.count(",") == 2 or "/" in layer or not fallback else fallback[-1]


def _path_layers(unit_layer: str, maps: Sequence[str], order: Sequence[str]) -> list[str]:
    rank = {name: i for i, name in enumerate(order)}
    layers = list(dict.fromkeys([*maps, unit_layer]))
    return sorted(layers, key=lambda n: (n.startswith(OUTPUT), rank.get(n, len(rank))))


def explore(model: nn.Module, spec: str, layers: Sequence[str], out: str | Path, *, channels: str | None = None,
            images: Any = None, k: int = 9, size: tuple[int, int] | None = None, steps: int = 512, seed: int = 0,
            lr: float | None = None, param: str | None = None, transforms: str | None = None, batch: int = 16,
            device: Any = None, progress: bool = True, timeout: float = 3600.0, ranks: Any = None,
            sanity: bool = True, precision: str = "auto", decay_power: float = 1.0,
            preset: str = "auto") -> dict[str, Any]:
    """Write the site of `model` (built from model spec `spec`, which the recipes name) into `out`.

    `steps` is render's default, so each unit's picture is the one `render` (and the README gallery) makes for its
    objective: at 256 steps MobileNetV2's channels reached 0.90x the activation and its classes p 0.865 instead of
    0.893 (benchmarks/README.md). `precision` is render's; "auto" is resolved once for the whole site
    (`Recipe.resolved`), so every image's recipe records what ran. `decay_power` is the fft parameterization's
    (every image's and set's recipe says it).
    `preset` is render's (`renderer.presets`; "auto": the one render picks for each image's objective on the
    model, so a class unit at "@output" and a channel of a BatchNorm CNN each get theirs): its values fill `lr`,
    `param` and `transforms` where they are None, and every image's recipe names it and replays to its pixels.

    Returns:
        what was done: images and diversity sets rendered, units, and (rank 0) the pages written.

    Raises:
        LayerNotFoundError, InvalidArgumentError: bad layers or channels, before anything is rendered.
    """
    out = Path(out)
    units = model_units(model, layers, channels, size or _size(model))
    base = Recipe(objective=units[0].objective, models=(spec,), size=size, steps=steps, seed=seed,
                  precision=precision, decay_power=decay_power).resolved(model)
    given = {k: v for k, v in (("lr", lr), ("param", param), ("transforms", transforms)) if v is not None}
    settle = ft.partial(with_preset, preset=preset, models=model, given=frozenset(given))
    base = settle(dc.replace(base, **given))
    rows = probe(model, base.size)
    shapes = {r.name: r.shape for r in rows}
    maps = default_layers(model, base.size)
    div_layers = {layer: diversity_layer(layer, shapes, maps) for layer in layers}
    done = render_site_images(units, base, model, out, div_layers, batch=batch, device=device, progress=progress,
                              timeout=timeout, ranks=ranks, settle=settle)
    if done["rank"] != 0:
        return done
    img = out / IMG
    views = {
        u: {
            "scores": {f: read_image_info(img / f)["score"] for f in (u.vis, u.neg, *map(u.div, range(DIVERSITY_SET)))},
            "commands": _commands(u, img),
        }
        for u in units
    }
    found = source = None
    if images is not None:
        source = image_source(images, model, base.size)
        found = _examples(units, model, images, k, base.size, out, progress)
        _write_strips(units, found, source, img)
        if sanity:
            _sanity(units, found, model, source, img, maps, [r.name for r in rows], views)
    firsts: dict[str, Unit] = {}
    for u in units:
        firsts.setdefault(u.layer, u)
    recipes = {layer: settle(dc.replace(base, objective=u.objective)) for layer, u in firsts.items()}
    _write_pages(out, spec, recipes, units, views, found, source)
    return {**done, "units": len(units), "pages": len(units) + len(layers) + 1}


def _size(model: nn.Module) -> tuple[int, int]:
    known = info_of(model).input_size
    return tuple(known) if known else (224, 224)  # type: ignore[return-value]


def _commands(u: Unit, img: Path) -> dict[str, str]:
    vis, neg, div = (read_image_info(img / f)["recipe"] for f in (u.vis, u.neg, u.div(0)))
    return {"visualization": render_command(vis, u.vis), "negative": render_command(neg, u.neg),
            f"diversity set ({DIVERSITY_SET} images, one grid)": render_command(div, f"{u.slug}.div.png")}


def _examples(units: Sequence[Unit], model: nn.Module, images: Any, k: int, size: tuple[int, int] | None, out: Path,
              progress: bool) -> Examples:
    found = dataset_examples([u.objective for u in units], model, images, k=k, size=size, state=out / EXAMPLES_STATE,
                             progress=progress)
    with atomic_write(out / EXAMPLES_JSON, "w") as f:
        f.write(found.to_json())
    return found


def _write_strips(units: Sequence[Unit], found: Examples, source: Any, img: Path) -> None:
    for u, ex in zip(units, found.units):
        for name, side in ((u.top, ex.top), (u.bottom, ex.bottom)):
            tiles = crops(side, source, side=TILE)
            save_png(img / name, make_grid(tiles, ncol=len(side), pad=2))


def _sanity(units: Sequence[Unit], found: Examples, model: nn.Module, source: Any, img: Path, maps: Sequence[str],
            order: Sequence[str], views: dict) -> None:
    channels = min(3, info_of(model).channels)
    wanted = sorted({e.index for ex in found.units for e in (*ex.top, *ex.bottom)})
    all_layers = list(dict.fromkeys(layer for u in units for layer in _path_layers(u.layer, maps, order)))
    natural = pooled_activations(model, all_layers, source.load(wanted))
    row_of = {idx: i for i, idx in enumerate(wanted)}
    for u, ex in zip(units, found.units):
        path = _path_layers(u.layer, maps, order)
        vis = pooled_activations(
            model, path, load_images([img / u.vis, *(img / u.div(i) for i in range(DIVERSITY_SET))], channels)
        )
        pos = {layer: natural[layer][[row_of[e.index] for e in ex.top]] for layer in path}
        neg = {layer: natural[layer][[row_of[e.index] for e in ex.bottom]] for layer in path}
        if len(ex.top) < 2:
            continue
        views[u]["sanity"] = similarity_report(vis, pos, neg)
        both = {layer: torch.cat([pos[layer], neg[layer]]) for layer in path}
        views[u]["detect"] = {layer: probe_accuracy(vis[layer], both[layer]) for layer in path}


def setting(recipes: Mapping[str, Recipe], field: str) -> Any:
    """A setting of the site's layers (`recipes`: layer -> its first image's recipe): one value when all layers
    share it, else "value (layer), ..." (the preset, and what it fills, may differ by layer).

    Example:
        >>> a = Recipe(objective="channel('c', 0)", preset="lucid")
        >>> setting({"c": a, "d": a}, "preset"), setting({"c": a, "@output": a.replace(preset="robust")}, "preset")
        ('lucid', 'lucid (c), robust (@output)')
    """
    values = {layer: getattr(r, field) for layer, r in recipes.items()}
    if len({repr(v) for v in values.values()}) == 1:
        return next(iter(values.values()))
    return ", ".join(f"{v} ({layer})" for layer, v in values.items())


def _write_pages(out: Path, spec: str, recipes: Mapping[str, Recipe], units: Sequence[Unit], views: dict,
                 found: Examples | None, source: Any) -> None:
    by_layer: dict[str, list[Unit]] = {}
    for u in units:
        by_layer.setdefault(u.layer, []).append(u)
    scores = {f: s for u in units for f, s in views[u]["scores"].items()}
    title = f"lucent-dsl explore: {spec}"
    base = next(iter(recipes.values()))
    settings = {
        "model": spec,
        "size": f"{base.size[0]}x{base.size[1]}",  # type: ignore[index]
        "steps": base.steps,
        "seed": base.seed,
        "preset": setting(recipes, "preset"),
        "lr": setting(recipes, "lr"),
        "param": setting(recipes, "param"),
        "transforms": setting(recipes, "transforms"),
        **({"decay power": base.decay_power} if base.decay_power != 1.0 else {}),
        "precision": base.precision,
        "units": len(units),
        "dataset examples": f"{len(found.units[0].top)} per unit from {found.seen} images"
        if found
        else "none (give --images DIR)",
    }
    files = {"style.css": pages.CSS, "index.html": pages.index_html(title, settings, by_layer, scores)}
    for layer, mine in by_layer.items():
        files[pages.layer_page(layer)] = pages.layer_html(title, layer, mine, scores)
    examples = {u: ex for u, ex in zip(units, found.units)} if found else {}
    for i, u in enumerate(units):
        ex = examples.get(u)
        v = views[u]
        view = pages.UnitView(
            u, v["scores"], v["commands"],
            examples=[(source.name(e.index), e.score) for e in ex.top] if ex else (),
            bottom=[(source.name(e.index), e.score) for e in ex.bottom] if ex else (),
            sanity=v.get("sanity"), detect=v.get("detect"),
            prev=units[i - 1] if i > 0 else None, next=units[i + 1] if i + 1 < len(units) else None)
        files[u.page] = pages.unit_html(title, view)
    manifest = {"lucent_dsl_site": 1, "model": spec, "settings": settings,
                "layers": {layer: [{"index": u.index, "label": u.label, "objective": u.objective, "page": u.page,
                                    "images": [u.vis, u.neg, *map(u.div, range(DIVERSITY_SET))],
                                    "sanity": views[u]["sanity"].to_dict() if "sanity" in views[u] else None}
                                   for u in mine] for layer, mine in by_layer.items()}}
    files[SITE_JSON] = json.dumps(manifest, indent=1) + "\n"
    for name, text in files.items():
        with atomic_write(out / name, "w") as f:
            f.write(text)
