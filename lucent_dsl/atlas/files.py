"""Atlas files: per-layer grids, the manifest rebuilt from the PNGs, and index.html.

Example:
    >>> grid_filename("features.4", single=False), grid_filename("features.4", single=True)
    ('features.4.grid.png', 'grid.png')
"""
import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError
from ..io.files import RECIPE_KEY, atomic_write, make_grid, save_png
from ..record.recipe import SCORE_KEY
from .jobs import FORMAT, GRID, GRID_MAX_WIDTH, INDEX, MANIFEST, STYLE, AtlasJob, safe_name


def grid_filename(layer: str, *, single: bool) -> str:
    """The grid of `layer`: `grid.png` in a one-layer atlas, else `<layer>.grid.png` (never a channel's name)."""
    return GRID if single else f"{safe_name(layer)}.grid.png"


def _read(job: AtlasJob, path: Path, side: int | None) -> tuple[Any, dict[str, Any]]:
    """A channel's tile (shrunk to fit `side`) and manifest entry, from one read of its PNG."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()  # PNG text chunks may follow the pixels
            meta = {str(k): str(v) for k, v in getattr(im, "text", {}).items()}
            tile = im.convert("RGB") if im.mode not in ("L", "RGB") else im.copy()
        score = float(meta[SCORE_KEY]) if SCORE_KEY in meta else None
        recipe = json.loads(meta[RECIPE_KEY]) if RECIPE_KEY in meta else None  # damaged metadata: a ValueError
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise InvalidArgumentError(
            f"cannot read the channel image {str(path)!r} ({e}): delete it and run the same command again, which "
            "renders just the missing channels"
        ) from None
    if side is not None:
        tile.thumbnail((side, side))  # shrink each tile as it is read: a big layer never sits in memory whole
    entry = {"file": job.filename, "score": score, "seed": job.seed, "recipe": recipe}
    return tile, entry


def _check_complete(jobs: Sequence[AtlasJob], out: Path) -> None:
    missing = [job.filename for job in jobs if not (out / job.filename).exists()]
    if missing:
        raise InvalidArgumentError(
            f"{len(missing)} of {len(jobs)} channel images are missing (the first: {str(out / missing[0])!r}); "
            "the atlas is not finished: run the same command again"
        )


def by_layer(jobs: Sequence[AtlasJob]) -> dict[str, list[AtlasJob]]:
    """The jobs grouped by layer, layers and channels in job order."""
    out: dict[str, list[AtlasJob]] = {}
    for job in jobs:
        out.setdefault(job.layer, []).append(job)
    return out


def layer_grid(jobs: Sequence[AtlasJob], out_dir: str | Path, name: str, *, labels: bool = True) -> dict[str, Any]:
    """Write the grid of one layer's channels (in job order) as `out_dir/name`.

    Returns the layer's manifest part, `{"grid": name, "channels": {"<c>": {"file", "score",
    "seed", "recipe"}}}`, read from the PNGs in the same pass.

    Raises:
        InvalidArgumentError: a job's PNG is missing.
    """
    out = Path(out_dir)
    _check_complete(jobs, out)
    ncol = math.ceil(math.sqrt(len(jobs)))
    side: int | None = None
    tiles, channels = [], {}
    for i, job in enumerate(jobs):
        tile, entry = _read(job, out / job.filename, side)
        if i == 0 and ncol * tile.width > GRID_MAX_WIDTH:  # an atlas's tiles all have the recipe's size
            side = max(16, GRID_MAX_WIDTH // ncol)
            tile.thumbnail((side, side))
        tiles.append(tile)
        channels[str(job.channel)] = entry
    grid = make_grid(tiles, ncol=ncol, labels=[str(j.channel) for j in jobs] if labels else None)
    save_png(out / name, grid)
    return {"grid": name, "channels": channels}


def write_manifest(out_dir: str | Path, layers: Mapping[str, Mapping[str, Any]], *,
                   run: Mapping[str, Any] | None = None, weights: str | None = None) -> dict[str, Any]:
    """Write `manifest.json` and `index.html` from the layers' parts (see `layer_grid`); return the manifest.

    `weights`: the model's `checks.weights_fingerprint`, stored as the manifest's `"weights"`.
    """
    out = Path(out_dir)
    models: list[str] = []
    for part in layers.values():
        recipe = next(iter(part["channels"].values()), {}).get("recipe") or {}
        if recipe.get("models"):
            models = recipe["models"]
            break
    manifest: dict[str, Any] = {"lucent_dsl_atlas": FORMAT, "models": models}
    if weights is not None:
        manifest["weights"] = weights
    if len(layers) == 1:  # a one-layer atlas keeps the flat layout of format 1 too
        layer, part = next(iter(layers.items()))
        manifest.update(layer=layer, grid=part["grid"], channels=part["channels"])
    manifest["layers"] = {layer: dict(part) for layer, part in layers.items()}
    if run is not None:
        manifest["run"] = dict(run)
    with atomic_write(out / MANIFEST, "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    with atomic_write(out / INDEX, "w") as f:
        f.write(index_html(manifest))
    return manifest


def finish_atlas(jobs: Sequence[AtlasJob], out_dir: str | Path, *, labels: bool = True,
                 run: Mapping[str, Any] | None = None, weights: str | None = None) -> dict[str, Any]:
    """Write the grid(s) (see `grid_filename`), `manifest.json` and `index.html` from the channel
    PNGs in `out_dir`; return the manifest. `run` is stored as the manifest's `run`.

    Raises:
        InvalidArgumentError: a job's PNG is missing (run `run_atlas` first), or no jobs.
    """
    out = Path(out_dir)
    groups = by_layer(jobs)
    if not groups:
        raise InvalidArgumentError("the atlas has no channels")
    _check_complete(jobs, out)
    single = len(groups) == 1
    layers = {layer: layer_grid(ljobs, out, grid_filename(layer, single=single), labels=labels)
              for layer, ljobs in groups.items()}
    return write_manifest(out, layers, run=run, weights=weights)


def index_html(manifest: Mapping[str, Any]) -> str:
    """A static page of the atlas: per layer, its grid and every channel with its name and final score."""
    from urllib.parse import quote

    def score(v: Any) -> str:
        return "no score" if v is None else f"{v:.4g}"

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>lucent-dsl atlas: {html.escape(', '.join(manifest['layers']))}</title>",
        STYLE,
        "</head><body>",
        (f"<p>models: {html.escape(', '.join(manifest.get('models') or []))}; "
         f"{sum(len(v['channels']) for v in manifest['layers'].values())} channels</p>"),
    ]
    for layer, info in manifest["layers"].items():
        parts.append(f'<h2 id="{html.escape(layer, quote=True)}">{html.escape(layer)} '
                     f'({len(info["channels"])} channels, <a href="{quote(info["grid"])}">grid</a>)</h2>')
        for c, e in info["channels"].items():
            name = html.escape(f"{layer}:{c}")
            parts.append(
                f'<figure id="{html.escape(layer, quote=True)}:{c}"><a href="{quote(e["file"])}">'
                f'<img src="{quote(e["file"])}" alt="{name}" loading="lazy"></a>'
                f"<figcaption>{name}<br>score {score(e['score'])}</figcaption></figure>"
            )
    parts.append("</body></html>\n")
    return "\n".join(parts)


