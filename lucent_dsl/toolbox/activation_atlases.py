"""Activation atlases (Carter, Armstrong, Schubert, Johnson, Olah; Distill 2019).

One activation vector per dataset image at one layer (a random position of each image's map,
as in the article) is laid out in 2-D (t-SNE, PCA or UMAP, from scikit-learn / umap-learn: the
`research` extra), the layout is binned into a `grid x grid` square, and every cell that holds
at least `min_count` images is rendered: its mean activation vector becomes a direction
objective (`direction_neuron` at the centre, Lucid's choice, or `direction` over all positions).
Cells render in batches; each image draws its initial noise and its transforms from its own
seed, so every cell's PNG carries a one-image recipe that `lucent-dsl render --recipe` replays.

`ActivationAtlas.save(out)` writes `atlas.png` (the cells at their grid positions on white),
`cells/r<row>_c<col>.png`, `manifest.json` (cells, counts, label counts, scores, recipes) and
`index.html`.

Example:
    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
    >>> layout = torch.rand(40, 2)
    >>> cells = bin_layout(layout, torch.rand(40, 8), 2, min_count=3)
    >>> sum(c.count for c in cells) == 40, cells[0].vector.shape
    (True, torch.Size([8]))
"""
from __future__ import annotations

import dataclasses as dc
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..args import check_int
from ..atlas import channel_seed
from ..dsl.printing import to_text
from ..errors import InvalidArgumentError
from ..io.files import RECIPE_KEY, atomic_write, save_png
from ..objectives import check_layer, direction, direction_neuron
from ..record.recipe import SCORE_KEY
from ._common import Settings, collect, escape, render_each, require, settings_from

LAYOUTS = ("tsne", "pca", "umap")
OBJECTIVES = ("neuron", "channel")
ATLAS_PNG, MANIFEST, INDEX, CELLS = "atlas.png", "manifest.json", "index.html", "cells"


# --- layout and binning ---------------------------------------------------------------------------------


def normalize_layout(layout: np.ndarray, *, low: float = 1.0, high: float = 99.0, margin: float = 0.1) -> np.ndarray:
    """Scale each axis to [0, 1] between its `low` and `high` percentiles (widened by `margin`), clipping outliers.

    Lucid's `normalize_layout`: a few far-off points must not squeeze everything else into one cell.
    """
    lo, hi = np.percentile(layout, low, axis=0), np.percentile(layout, high, axis=0)
    span = hi - lo
    lo, hi = lo - margin * span, hi + margin * span
    out = np.clip(layout, lo, hi) - lo
    return out / np.where(hi - lo > 0, hi - lo, 1.0)


def layout_2d(vectors: Tensor, *, method: str = "tsne", seed: int = 0, **options: Any) -> Tensor:
    """A 2-D layout of (N, C) vectors in [0, 1]^2: t-SNE (default), PCA, or UMAP (cosine metric, as Lucid).

    `options` go to the reducer (`sklearn.manifold.TSNE`, `sklearn.decomposition.PCA`, `umap.UMAP`).
    UMAP compiles itself with numba on first use in a process (minutes on a small CPU); t-SNE on
    5,000 vectors takes one to two minutes on one core; PCA is instant but mixes more.

    Raises:
        MissingExtraError: scikit-learn (or umap-learn) is not installed.

    Example:
        >>> xy = layout_2d(torch.randn(50, 6), method="pca")
        >>> xy.shape, bool(xy.min() >= 0), bool(xy.max() <= 1)
        (torch.Size([50, 2]), True, True)
    """
    if method not in LAYOUTS:
        raise InvalidArgumentError(f"method must be one of {LAYOUTS}, got {method!r}")
    x = vectors.detach().to("cpu", torch.float32).numpy()
    if x.ndim != 2 or x.shape[0] < 3:
        raise InvalidArgumentError(f"a layout needs (N, C) vectors with N >= 3, got shape {x.shape}")
    if method == "pca":
        decomposition = require("sklearn.decomposition", package="scikit-learn", what="an activation atlas layout")
        xy = decomposition.PCA(2, random_state=seed, **options).fit_transform(x)
    elif method == "tsne":
        manifold = require("sklearn.manifold", package="scikit-learn", what="an activation atlas layout")
        kw = dict(init="pca", metric="cosine", random_state=seed, perplexity=min(30.0, (x.shape[0] - 1) / 3))
        xy = manifold.TSNE(2, **(kw | options)).fit_transform(x)
    else:
        umap = require("umap", package="umap-learn", extra="research-umap", what="a UMAP layout")
        kw = dict(
            n_components=2, n_neighbors=min(50, x.shape[0] - 1), min_dist=0.05, metric="cosine", random_state=seed
        )
        xy = umap.UMAP(**(kw | options)).fit_transform(x)
    return torch.from_numpy(normalize_layout(np.asarray(xy, dtype=np.float64)).astype(np.float32))


@dc.dataclass(frozen=True, eq=False)
class Cell:
    """One grid cell of an atlas: where it is, which images fell in it, their mean activation, their labels."""

    row: int
    col: int
    members: tuple[int, ...]
    vector: Tensor
    label_counts: tuple[tuple[str, int], ...] = ()

    @property
    def count(self) -> int:
        return len(self.members)

    @property
    def dominant(self) -> tuple[str, float] | None:
        """The most common label and its share of the cell (None without labels)."""
        if not self.label_counts:
            return None
        label, k = self.label_counts[0]
        return label, k / self.count

    @property
    def filename(self) -> str:
        return f"{CELLS}/r{self.row:03d}_c{self.col:03d}.png"


def bin_layout(layout: Tensor, vectors: Tensor, grid: int, *, min_count: int = 5,
               labels: Sequence[Any] | None = None) -> tuple[Cell, ...]:
    """Cells of a `grid x grid` binning of a [0, 1]^2 layout that hold >= `min_count` points, row-major.

    Row is the bin of the layout's second coordinate (top to bottom), column the bin of the first.
    """
    grid, min_count = check_int("grid", grid), check_int("min_count", min_count)
    if layout.dim() != 2 or layout.shape[1] != 2 or layout.shape[0] != vectors.shape[0]:
        raise InvalidArgumentError(
            f"layout must be (N, 2) for (N, C) vectors, got {tuple(layout.shape)} and {tuple(vectors.shape)}")
    if labels is not None and len(labels) != layout.shape[0]:
        raise InvalidArgumentError(f"labels has {len(labels)} entries for {layout.shape[0]} vectors")
    ij = (layout.clamp(0, 1) * grid).long().clamp(max=grid - 1)
    key = ij[:, 1] * grid + ij[:, 0]
    cells = []
    for k in torch.unique(key).tolist():
        members = torch.nonzero(key == k).flatten()
        if len(members) < min_count:
            continue
        counts = Counter(str(labels[i]) for i in members.tolist()) if labels is not None else Counter()
        cells.append(Cell(k // grid, k % grid, tuple(members.tolist()), vectors[members].float().mean(0),
                          tuple(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))))
    if not cells:
        raise InvalidArgumentError(f"no cell of the {grid}x{grid} grid holds {min_count} or more of the "
                                   f"{layout.shape[0]} points; use a smaller grid or min_count")
    return tuple(cells)


# --- the atlas ------------------------------------------------------------------------------------------------


@dc.dataclass(frozen=True, eq=False)
class ActivationAtlas:
    """An activation atlas: the layout, the cells, one rendered image and DSL objective per cell."""

    layer: str
    grid: int
    method: str
    layout: Tensor
    cells: tuple[Cell, ...]
    images: Tensor
    scores: Tensor
    objectives: tuple[str, ...]
    seeds: tuple[int, ...]
    settings: Settings

    def canvas(self, *, background: float = 1.0) -> Tensor:
        """The cell images at their grid positions: (C, grid * H, grid * W), `background` where no cell is."""
        c, h, w = self.images.shape[1:]
        out = torch.full((c, self.grid * h, self.grid * w), float(background))
        for cell, img in zip(self.cells, self.images):
            out[:, cell.row * h:(cell.row + 1) * h, cell.col * w:(cell.col + 1) * w] = img
        return out

    def manifest(self, spec: str | None = None) -> dict[str, Any]:
        cells = []
        for cell, text, seed, score in zip(self.cells, self.objectives, self.seeds, self.scores.tolist()):
            recipe = self.settings.recipe(text, seed, spec)
            cells.append({"row": cell.row, "col": cell.col, "count": cell.count, "file": cell.filename,
                          "score": float(score), "seed": seed, "labels": dict(cell.label_counts),
                          "recipe": None if recipe is None else recipe.to_dict()})
        return {"kind": "activation_atlas", "layer": self.layer, "grid": self.grid, "method": self.method,
                "points": int(self.layout.shape[0]), "image": ATLAS_PNG, "model": spec, "cells": cells}

    def save(self, out_dir: str | Path, *, spec: str | None = None) -> Path:
        """Write atlas.png, cells/*.png (with their recipes when `spec` names the model), manifest.json, index.html."""
        out = Path(out_dir)
        (out / CELLS).mkdir(parents=True, exist_ok=True)
        manifest = self.manifest(spec)
        for i, entry in enumerate(manifest["cells"]):
            meta = {SCORE_KEY: repr(entry["score"])}
            if entry["recipe"] is not None:
                meta[RECIPE_KEY] = json.dumps(entry["recipe"], allow_nan=False)
            else:
                meta["lucent_dsl.objective"] = self.objectives[i]
            save_png(out / entry["file"], self.images[i:i + 1], metadata=meta)
        save_png(out / ATLAS_PNG, self.canvas())
        with atomic_write(out / MANIFEST, "w") as f:
            json.dump(manifest, f, indent=1, allow_nan=False)
        with atomic_write(out / INDEX, "w") as f:
            f.write(index_html(manifest))
        return out / INDEX


def index_html(manifest: dict[str, Any]) -> str:
    """A page with the whole atlas and every cell at its grid position, its count and its labels."""
    g = manifest["grid"]
    tiles = []
    for c in manifest["cells"]:
        labels = ", ".join(f"{k}: {v}" for k, v in list(c["labels"].items())[:3])
        title = f"row {c['row']}, col {c['col']}: {c['count']} images" + (f" ({labels})" if labels else "")
        tiles.append(f'<a href="{escape(c["file"])}" title="{escape(title)}" style="grid-row:{c["row"] + 1};'
                     f'grid-column:{c["col"] + 1}"><img src="{escape(c["file"])}" alt="{escape(title)}"></a>')
    return ("<!doctype html><meta charset='utf-8'><title>activation atlas</title><style>body{font-family:sans-serif;"
            f"margin:1em}}.g{{display:grid;grid-template-columns:repeat({g},64px);grid-template-rows:repeat({g},64px);"
            "gap:1px;background:#eee;width:max-content}.g img{width:64px;height:64px;image-rendering:pixelated}</style>"
            f"<h1>Activation atlas of {escape(manifest['layer'])}</h1><p>{manifest['points']} activations, "
            f"{escape(manifest['method'])} layout, {g}x{g} grid, {len(manifest['cells'])} cells"
            f"{' of ' + escape(manifest['model']) if manifest.get('model') else ''}. Hover a cell for its count and "
            f"labels; click for its PNG (with its recipe).</p><div class='g'>{''.join(tiles)}</div>"
            f"<p><img src='{escape(manifest['image'])}' alt='the whole atlas' style='max-width:100%'></p>")


def cell_objective(layer: str, vector: Tensor, kind: str, cossim_pow: float) -> str:
    """The DSL text a cell renders: `direction_neuron` (centre position) or `direction` (all positions)."""
    make = direction_neuron if kind == "neuron" else direction
    return to_text(make(layer, vector, cossim_pow=cossim_pow))


def activation_atlas(
    model: nn.Module,
    images: Any,
    layer: str,
    *,
    grid: int = 10,
    method: str = "tsne",
    min_count: int = 5,
    labels: Sequence[Any] | None = None,
    position: str = "random",
    objective: str = "neuron",
    cossim_pow: float = 1.0,
    vectors: Tensor | None = None,
    layout: Tensor | None = None,
    settings: Settings | None = None,
    **render_kw: Any,
) -> ActivationAtlas:
    """Render an activation atlas of `layer` over `images`.

    Args:
        model: an `nn.Module` (its `ModelInfo` gives preprocessing and the default render size).
        images: (N, C, H, W) in [0, 1], or an iterable of such batches (streamed); ignored when
            `vectors` is given.
        layer: the layer to map.
        grid: cells per side.
        method: "tsne", "pca" or "umap" (see `layout_2d`); ignored when `layout` is given.
        min_count: cells with fewer images are left empty (Lucid: more than 5).
        labels: one label per image (class names, digits): counted per cell, shown in the page.
        position: which position of a map gives an image's vector ("random", "center", "mean").
        objective: "neuron" (`direction_neuron` at the centre, Lucid's) or "channel" (`direction`).
        cossim_pow: the objectives' cosine exponent (Lucid's atlases: 2; 0: a plain dot product).
        vectors, layout: precomputed (N, C) activations and their (N, 2) layout in [0, 1].
        settings: the cell renders (`toolbox.Settings`: size, steps, lr, param, transforms, precision,
            batch of cells per render, device, compile, progress); its `seed` is the base seed of the
            activation sampling, the layout and every cell's render. "auto" precision is decided once for
            every cell (`Settings.resolved`).
        **render_kw: the same fields as keywords (`size=`, `steps=`, ...), the form before `settings=`;
            beside `settings` they must agree with it.

    Raises:
        InvalidArgumentError, LayerNotFoundError, MissingExtraError: before anything renders.
    """
    layer = check_layer(layer)
    if objective not in OBJECTIVES:
        raise InvalidArgumentError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    settings = settings_from(settings, render_kw, where="activation_atlas()").resolved(model)
    seed = settings.seed
    vecs = (
        collect(model, images, layer, position=position, seed=seed)
        if vectors is None
        else vectors.detach().float().cpu()
    )
    if vecs.dim() != 2:
        raise InvalidArgumentError(f"vectors must be (N, C), got shape {tuple(vecs.shape)}")
    xy = layout_2d(vecs, method=method, seed=seed) if layout is None else layout.detach().float().cpu()
    cells = bin_layout(xy, vecs, grid, min_count=min_count, labels=labels)
    texts = tuple(cell_objective(layer, c.vector, objective, float(cossim_pow)) for c in cells)
    seeds = tuple(channel_seed(f"{layer}#atlas{grid}", c.row * grid + c.col, seed) for c in cells)
    rendered, scores = render_each(texts, seeds, model, settings)
    return ActivationAtlas(layer, grid, "given" if layout is not None else method, xy, cells, rendered, scores,
                           texts, seeds, settings)
