"""Channel atlases: one image per channel of some layers, rendered in batches, resumable.

The work is a list of jobs, each `(layer, channel, seed)`. The seed comes from the layer and
the channel (and a base seed), never from where the channel lands in a batch. Every image of a
batched render draws its initial image and its random transforms from its own generator, seeded
with its job's seed, exactly as a one-image render with that seed would. Objectives of a batch
never mix (each reads only its own image, and Adam updates each value from its own gradient),
so a channel's image does not depend on which other channels share its batch: its PNG carries
a one-image recipe, and `lucent-dsl render --recipe DIR/<channel>.png` renders it again. (The
only difference left is floating-point: a convolution over a batch of 16 may round differently
from one over a single image; see `tests/test_cli.py` for the tolerance measured on the CPU.)

Files in the output folder, all written atomically:

- `<layer>_<channel:04d>.png`: one per channel, with its recipe and final score in PNG metadata;
- `grid.png` (one layer) or `<layer>.grid.png` (one per layer): channels in job order, labelled;
- `index.html`: every channel's image with its name (`layer:channel`) and final score;
- `manifest.json`: `{"layers": {"<layer>": {"grid", "channels": {"<c>": {"file", "score", "seed",
  "recipe"}}}}, "models", "run"}`, and for a one-layer atlas also the flat `"layer"`, `"grid"`
  and `"channels"` of format 1; rebuilt from the PNGs by `finish_atlas`.

A channel whose PNG exists (with the same recipe) is never rendered again, so an interrupted
atlas resumes where it stopped. The same split makes sharding simple: `lucent_dsl.distributed`
runs `run_atlas` on each torchrun rank's share of the missing jobs, into the shared folder, and
rank 0 calls `finish_atlas` when all are done (`lucent-dsl atlas` does this in one process too).

Example:
    >>> jobs = atlas_jobs("features.14", range(3))
    >>> [(j.channel, j.filename) for j in jobs]
    [(0, 'features.14_0000.png'), (1, 'features.14_0001.png'), (2, 'features.14_0002.png')]
    >>> jobs[1].seed == channel_seed("features.14", 1)
    True
"""
from __future__ import annotations

import dataclasses as dc
import hashlib
import html
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from . import param as param_lib
from . import transforms as tf_lib
from .errors import InvalidArgumentError, LucentError
from .io import RECIPE_KEY, atomic_write, make_grid, read_png_metadata, save_png
from .models import info_of
from .objectives import channel as channel_term
from .plan import compile_plan, frozen_models
from .recipe import SCORE_KEY, Recipe, default_size, plan_channels
from .render import render

MANIFEST = "manifest.json"
GRID = "grid.png"
INDEX = "index.html"
FORMAT = 2  # 2: "layers" (several layers per atlas), "run", index.html; one-layer manifests keep format 1's keys
_STYLE = (
    "<style>body{font-family:sans-serif;margin:1em}figure{display:inline-block;margin:4px;text-align:center}"
    "figure img{width:112px;height:112px;image-rendering:pixelated}figcaption{font-size:11px}</style>"
)
_GRID_MAX_WIDTH = 4096  # tiles are shrunk so a big atlas's grid stays a viewable image


class AtlasJob(NamedTuple):
    """One channel to render: its layer, index and seed."""

    layer: str
    channel: int
    seed: int

    @property
    def filename(self) -> str:
        return f"{_safe(self.layer)}_{self.channel:04d}.png"

    @property
    def objective(self) -> str:
        return repr(channel_term(self.layer, self.channel))


def _safe(layer: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", layer)


def channel_seed(layer: str, channel: int, base_seed: int = 0) -> int:
    """A seed from (base seed, layer, channel): stable across runs, machines and Python versions."""
    digest = hashlib.sha256(f"{base_seed}|{layer}|{channel}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def atlas_jobs(layer: str, channels: Iterable[int], *, seed: int = 0) -> list[AtlasJob]:
    """The jobs of an atlas of `layer`, one per channel, in the order given (duplicates dropped)."""
    out = []
    seen: set[int] = set()
    for c in channels:
        c = int(c)
        if c < 0:
            raise InvalidArgumentError(f"channel indices must be >= 0, got {c}")
        if c not in seen:
            seen.add(c)
            out.append(AtlasJob(layer, c, channel_seed(layer, c, seed)))
    if not out:
        raise InvalidArgumentError("the atlas has no channels to render")
    return out


def layers_jobs(channels: Mapping[str, Iterable[int]], *, seed: int = 0) -> list[AtlasJob]:
    """The jobs of an atlas of several layers: `{layer: channels}`, layers in the order given.

    Raises:
        InvalidArgumentError: no layers, a layer without channels, or two layers whose names give
            the same file names (`"a/b"` and `"a_b"`).

    Example:
        >>> [j.filename for j in layers_jobs({"features.4": [0], "features.9": [2, 1]})]
        ['features.4_0000.png', 'features.9_0002.png', 'features.9_0001.png']
    """
    jobs: list[AtlasJob] = []
    owner: dict[str, str] = {}
    for layer, chans in channels.items():
        if _safe(layer) in owner:
            raise InvalidArgumentError(
                f"layers {owner[_safe(layer)]!r} and {layer!r} would write the same files ({_safe(layer)}_NNNN.png); "
                "render them into different --out folders"
            )
        owner[_safe(layer)] = layer
        jobs += atlas_jobs(layer, chans, seed=seed)
    if not jobs:
        raise InvalidArgumentError("the atlas has no layers")
    return jobs


def parse_channels(text: str | None, count: int | None) -> list[int]:
    """Channel indices from text: "0:64" (a slice, end excluded), "0:64:4", "3,7,9", "5", ":" or None (all).

    Raises:
        InvalidArgumentError: bad text, or an index at or past `count` (when known).

    Example:
        >>> parse_channels("2:10:3", 16), parse_channels("1,5", None), len(parse_channels(None, 8))
        ([2, 5, 8], [1, 5], 8)
    """
    spec = (text or ":").strip()
    out: list[int] = []
    try:
        for part in spec.split(","):
            part = part.strip()
            if ":" in part:
                bits = [int(b) if b.strip() else None for b in part.split(":")]
                if len(bits) > 3:
                    raise ValueError(part)
                start, stop, step = (bits + [None, None])[:3]
                if stop is None:
                    if count is None:
                        raise InvalidArgumentError(f"channels {spec!r}: give an end, e.g. 0:64")
                    stop = count
                if (start or 0) < 0 or stop < 0 or (step is not None and step <= 0):
                    raise ValueError(part)
                out.extend(range(start or 0, stop, step or 1))
            else:
                out.append(int(part))
    except ValueError:
        raise InvalidArgumentError(f"channels {spec!r}: expected START:STOP[:STEP], a comma list or one index") from None
    bad = [c for c in out if c < 0 or (count is not None and c >= count)]
    if bad:
        raise InvalidArgumentError(f"channels {spec!r}: {bad[0]} is out of range; the layer has {count} channels (0..{(count or 1) - 1})")
    return out


def job_recipe(base: Recipe, job: AtlasJob) -> Recipe:
    """The one-image recipe of a job: the base settings, `channel(layer, c)`, the job's seed."""
    return dc.replace(base, objective=job.objective, seed=job.seed, batch=1, command="render")


# --- probing a model's sites -----------------------------------------------------------------------


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
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
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


# --- per-image random streams ------------------------------------------------------------------------


def _cat(parts: Sequence[Any]) -> Any:
    first = parts[0]
    if first is None:
        return None
    if isinstance(first, Tensor):
        return torch.cat(list(parts))
    if isinstance(first, tuple):
        return tuple(_cat([p[i] for p in parts]) for i in range(len(first)))
    raise InvalidArgumentError(f"cannot batch transform parameters of type {type(first).__name__}")


def seeded_param(kind: str, size: tuple[int, int], gens: Sequence[torch.Generator], channels: int) -> param_lib.ImageParam:
    """A batch whose image i is initialized exactly as a one-image render seeded like `gens[i]`."""
    one = param_lib.image(size, kind=kind, batch=1, channels=channels)

    def init(_generator: Any) -> dict[str, Tensor]:
        leaves = [one.init(g) for g in gens]
        return {k: torch.cat([leaf[k].detach() for leaf in leaves]) for k in leaves[0]}

    return param_lib.ImageParam(init, one.to_image)


def seeded_transforms(kind: str, gens: Sequence[torch.Generator]) -> tf_lib.Transform:
    """Transforms whose image-i parameters come from `gens[i]`, as in a one-image render."""
    base = tf_lib.standard() if kind == "standard" else tf_lib.identity()

    def sample(_generator: Any, shape: torch.Size) -> Any:
        one = torch.Size((1, *shape[1:]))
        return _cat([base.sample(g, one) for g in gens])

    return tf_lib.Transform(sample, base.apply)


# --- running ----------------------------------------------------------------------------------------


def pending(jobs: Sequence[AtlasJob], out_dir: str | Path, base: Recipe) -> list[AtlasJob]:
    """The jobs whose PNG is not in `out_dir` yet.

    Raises:
        InvalidArgumentError: a PNG there was made with another recipe (resuming would mix settings).
    """
    out = []
    for job in jobs:
        path = Path(out_dir) / job.filename
        if not path.exists():
            out.append(job)
            continue
        meta = read_png_metadata(path)
        want = job_recipe(base, job)
        have = Recipe.from_json(meta[RECIPE_KEY]) if RECIPE_KEY in meta else None
        if have != want:
            diff = "no recipe" if have is None else ", ".join(
                f"{f.name} {getattr(have, f.name)!r} instead of {getattr(want, f.name)!r}"
                for f in dc.fields(Recipe) if getattr(have, f.name) != getattr(want, f.name)
            )
            raise InvalidArgumentError(
                f"{str(path)!r} was made with another recipe than this atlas's ({diff}); "
                "use another --out folder, or delete the old images to redo them"
            )
    return out


def run_atlas(
    jobs: Sequence[AtlasJob],
    base: Recipe,
    models: nn.Module,
    out_dir: str | Path,
    *,
    batch: int = 16,
    device: str | torch.device | None = None,
    compile: bool | str = "auto",
    progress: bool = True,
    on_batch: Callable[[list[AtlasJob]], None] | None = None,
) -> int:
    """Render the jobs whose PNG is missing, `batch` channels per render; return how many were rendered.

    `base` gives the settings (models, size, steps, param, transforms, lr, precision); its
    objective, seed and batch are replaced per job. Each PNG is written atomically as soon as
    its batch finishes; nothing of an interrupted batch is written.

    Raises:
        KeyboardInterrupt: Ctrl-C (the finished batches stay on disk).
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise InvalidArgumentError(f"batch must be an int >= 1, got {batch!r}")
    if not isinstance(models, nn.Module):
        raise InvalidArgumentError("an atlas renders the channels of one model; give one --model")
    size = base.size or default_size(models)
    base = dc.replace(base, size=size)
    todo = pending(jobs, out_dir, base)
    dev = torch.device(device) if device is not None else next((p.device for p in models.parameters()), torch.device("cpu"))
    bar = _bar(len(todo), progress, len(jobs) - len(todo))
    done = 0
    try:
        for start in range(0, len(todo), batch):
            chunk = list(todo[start:start + batch])
            plan = compile_plan([job.objective for job in chunk], models)
            gens = [torch.Generator(dev).manual_seed(job.seed) for job in chunk]
            result = render(
                plan,
                steps=base.steps,
                lr=base.lr,
                seed=chunk[0].seed,
                param=seeded_param(base.param, size, gens, plan_channels(plan)),
                transforms=seeded_transforms(base.transforms, gens),
                precision=base.precision,
                device=device,
                compile=compile,
                progress=progress,
            )
            if result.interrupted:
                raise KeyboardInterrupt
            scores = result.scores()
            for i, job in enumerate(chunk):
                recipe = job_recipe(base, job)
                save_png(
                    Path(out_dir) / job.filename,
                    result.images[i:i + 1],
                    metadata={RECIPE_KEY: recipe.to_json(), SCORE_KEY: repr(float(scores[i]))},
                )
            done += len(chunk)
            if bar is not None:
                bar.update(len(chunk))
            if on_batch is not None:
                on_batch(chunk)
    finally:
        if bar is not None:
            bar.close()
    return done


def _bar(total: int, enabled: bool, initial: int):
    if not enabled or not total:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total + initial, initial=initial, desc="atlas", unit="channel")


def grid_filename(layer: str, *, single: bool) -> str:
    """The grid of `layer`: `grid.png` in a one-layer atlas, else `<layer>.grid.png` (never a channel's name)."""
    return GRID if single else f"{_safe(layer)}.grid.png"


def _read(job: AtlasJob, path: Path, side: int | None) -> tuple[Any, dict[str, Any]]:
    """A channel's tile (shrunk to fit `side`) and manifest entry, from one read of its PNG."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()  # PNG text chunks may follow the pixels
        meta = {str(k): str(v) for k, v in getattr(im, "text", {}).items()}
        tile = im.convert("RGB") if im.mode not in ("L", "RGB") else im.copy()
    if side is not None:
        tile.thumbnail((side, side))  # shrink each tile as it is read: a big layer never sits in memory whole
    entry = {
        "file": job.filename,
        "score": float(meta[SCORE_KEY]) if SCORE_KEY in meta else None,
        "seed": job.seed,
        "recipe": json.loads(meta[RECIPE_KEY]) if RECIPE_KEY in meta else None,
    }
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
        if i == 0 and ncol * tile.width > _GRID_MAX_WIDTH:  # an atlas's tiles all have the recipe's size
            side = max(16, _GRID_MAX_WIDTH // ncol)
            tile.thumbnail((side, side))
        tiles.append(tile)
        channels[str(job.channel)] = entry
    grid = make_grid(tiles, ncol=ncol, labels=[str(j.channel) for j in jobs] if labels else None)
    save_png(out / name, grid)
    return {"grid": name, "channels": channels}


def write_manifest(out_dir: str | Path, layers: Mapping[str, Mapping[str, Any]], *,
                   run: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write `manifest.json` and `index.html` from the layers' parts (see `layer_grid`); return the manifest."""
    out = Path(out_dir)
    models: list[str] = []
    for part in layers.values():
        recipe = next(iter(part["channels"].values()), {}).get("recipe") or {}
        if recipe.get("models"):
            models = recipe["models"]
            break
    manifest: dict[str, Any] = {"lucent_dsl_atlas": FORMAT, "models": models}
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
                 run: Mapping[str, Any] | None = None) -> dict[str, Any]:
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
    return write_manifest(out, layers, run=run)


def index_html(manifest: Mapping[str, Any]) -> str:
    """A static page of the atlas: per layer, its grid and every channel with its name and final score."""
    from urllib.parse import quote

    def score(v: Any) -> str:
        return "no score" if v is None else f"{v:.4g}"

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>lucent-dsl atlas: {html.escape(', '.join(manifest['layers']))}</title>",
        _STYLE,
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
