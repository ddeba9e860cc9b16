"""Atlas jobs: one `(layer, channel, seed)` each, per-image random streams, and the batched run that skips done PNGs.

Example:
    >>> jobs = atlas_jobs("features.14", range(3))
    >>> [(j.channel, j.filename) for j in jobs]
    [(0, 'features.14_0000.png'), (1, 'features.14_0001.png'), (2, 'features.14_0002.png')]
    >>> jobs[1].seed == channel_seed("features.14", 1)
    True
"""
import dataclasses as dc
import functools as ft
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, cast

import torch
from torch import Tensor, nn

from .. import param as param_lib, transforms as tf_lib
from ..args import check_int
from ..errors import ImageError, InvalidArgumentError
from ..io.files import RECIPE_KEY, read_png_metadata, save_png
from ..models.checks import weights_fingerprint
from ..models.info import device_of
from ..models.specs import default_size
from ..objectives import channel as channel_term
from ..plan.compiler import compile_plan
from ..record.recipe import SCORE_KEY, Recipe
from ..renderer.phases import image_channels, render
from ..renderer.presets import PRESETS
from ..renderer.rerun import render_recipe

MANIFEST = "manifest.json"
GRID = "grid.png"
INDEX = "index.html"
FORMAT = 2  # 2: "layers" (several layers per atlas), "run", index.html; one-layer manifests keep format 1's keys
STYLE = (
    "<style>body{font-family:sans-serif;margin:1em}figure{display:inline-block;margin:4px;text-align:center}"
    "figure img{width:112px;height:112px;image-rendering:pixelated}figcaption{font-size:11px}</style>"
)
GRID_MAX_WIDTH = 4096  # tiles are shrunk so a big atlas's grid stays a viewable image
WEIGHTS_KEY = "lucent_dsl.weights"
"""PNG metadata key of the model's `weights_fingerprint`: a resumed atlas never mixes two versions of a model."""



class AtlasJob(NamedTuple):
    """One channel to render: its layer, index and seed."""

    layer: str
    channel: int
    seed: int

    @property
    def filename(self) -> str:
        return f"{safe_name(self.layer)}_{self.channel:04d}.png"

    @property
    def objective(self) -> str:
        return repr(channel_term(self.layer, self.channel))


def safe_name(layer: str) -> str:
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
        if safe_name(layer) in owner:
            raise InvalidArgumentError(
                f"layers {owner[safe_name(layer)]!r} and {layer!r} would write the same files "
                f"({safe_name(layer)}_NNNN.png); "
                "render them into different --out folders"
            )
        owner[safe_name(layer)] = layer
        jobs += atlas_jobs(layer, chans, seed=seed)
    if not jobs:
        raise InvalidArgumentError("the atlas has no layers")
    return jobs


MAX_UNSIZED_CHANNELS = 1_000_000
"""Most channels `parse_channels` lists when the layer's channel count is not known."""


def _out_of_range(spec: str, index: int, count: int | None) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"channels {spec!r}: {index} is out of range; the layer has {count} channels (0..{(count or 1) - 1})")


def _slice(spec: str, part: str, count: int | None) -> range:
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
    r = range(start or 0, stop, step or 1)
    if count is not None and len(r) and r[-1] >= count:  # checked on the range, before any list is built
        first_bad = r[0] if r[0] >= count else r.start + -(-(count - r.start) // r.step) * r.step
        raise _out_of_range(spec, first_bad, count)
    return r


def parse_channels(text: str | None, count: int | None) -> list[int]:
    """Channel indices from text: "0:64" (a slice, end excluded), "0:64:4", "3,7,9", "5", ":" or None (all).

    Ranges are checked against `count` before they are expanded, so `0:100000000` costs nothing.

    Raises:
        InvalidArgumentError: bad text, an index at or past `count` (when known), or more than
            `MAX_UNSIZED_CHANNELS` channels when `count` is unknown.

    Example:
        >>> parse_channels("2:10:3", 16), parse_channels("1,5", None), len(parse_channels(None, 8))
        ([2, 5, 8], [1, 5], 8)
    """
    spec = (text or ":").strip()
    parts: list[range] = []
    try:
        for part in spec.split(","):
            part = part.strip()
            if ":" in part:
                parts.append(_slice(spec, part, count))
            else:
                c = int(part)
                if c < 0 or (count is not None and c >= count):
                    raise _out_of_range(spec, c, count)
                parts.append(range(c, c + 1))
    except ValueError as e:
        if isinstance(e, InvalidArgumentError):
            raise
        raise InvalidArgumentError(
            f"channels {spec!r}: expected START:STOP[:STEP], a comma list or one index"
        ) from None
    total = sum(len(r) for r in parts)  # with a known count, each range is within the layer already
    if count is None and total > MAX_UNSIZED_CHANNELS:
        raise InvalidArgumentError(f"channels {spec!r} lists {total} channels; at most {MAX_UNSIZED_CHANNELS} "
                                   "when the layer's channel count is unknown")
    return [c for r in parts for c in r]


def job_recipe(base: Recipe, job: AtlasJob) -> Recipe:
    """The one-image recipe of a job: the base settings, `channel(layer, c)`, the job's seed."""
    return dc.replace(base, objective=job.objective, seed=job.seed, batch=1, command="render")


JobRecipes = Callable[[AtlasJob], Recipe]
"""A job -> its one-image recipe (what `run_atlas` renders and stores in the job's PNG)."""


def recipes_of(base: Recipe | JobRecipes, models: nn.Module) -> JobRecipes:
    """`base` as a job -> recipe function (`job_recipe(base, job)` for a Recipe, `base` itself for a function),
    a recipe without a size given the model's (`default_size`): the size every job's PNG records."""
    given = ft.partial(job_recipe, base) if isinstance(base, Recipe) else base
    size = default_size(models)

    def recipe_of(job: AtlasJob) -> Recipe:
        r = given(job)
        return r if r.size is not None else dc.replace(r, size=size)

    return recipe_of



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


def seeded_param(
    kind: str, size: tuple[int, int], gens: Sequence[torch.Generator], channels: int, decay_power: float = 1.0
) -> param_lib.ImageParam:
    """A batch whose image i is initialized exactly as a one-image render seeded like `gens[i]` (an fft's
    spectrum falling as 1/f^`decay_power`, as a recipe's replay builds it)."""
    one = (param_lib.fft(size, batch=1, channels=channels, decay_power=decay_power) if kind == "fft"
           else param_lib.image(size, kind=kind, batch=1, channels=channels))

    def init(_generator: Any) -> dict[str, Tensor]:
        leaves = [one.init(g) for g in gens]
        return {k: torch.cat([leaf[k].detach() for leaf in leaves]) for k in leaves[0]}

    return param_lib.ImageParam(init, one.to_image)


def seeded_transforms(kind: str, gens: Sequence[torch.Generator],
                      size: tuple[int, int] | None = None) -> tf_lib.Transform:
    """Transforms whose image-i parameters come from `gens[i]`, as in a one-image render: `kind` is a recipe's
    name (`transforms.NAMED`; "scaled" and "robust_fit" are made for `size`)."""
    from ..transforms.recipes import SIZED

    if kind in SIZED and size is None:
        raise InvalidArgumentError(f"seeded_transforms({kind!r}) needs the image size it is made for")
    base = tf_lib.named(kind, size or (224, 224))

    def sample(_generator: Any, shape: torch.Size) -> Any:
        one = torch.Size((1, *shape[1:]))
        return _cat([base.sample(g, one) for g in gens])

    return tf_lib.Transform(sample, base.apply)


# --- running ----------------------------------------------------------------------------------------


def _channel_metadata(path: Path) -> dict[str, str]:
    try:
        return read_png_metadata(path, verify=True)
    except ImageError as e:
        raise InvalidArgumentError(
            f"{e}. It is a channel image of this atlas (a disk error or an outside write damaged it): delete it and "
            "run the same command again, which renders just the missing channels"
        ) from None


def pending(jobs: Sequence[AtlasJob], out_dir: str | Path, base: Recipe | JobRecipes, models: nn.Module,
            weights: str | None = None) -> list[AtlasJob]:
    """The jobs whose PNG is not in `out_dir` yet (every PNG there is read whole: checksums verified).

    Raises:
        InvalidArgumentError: a PNG there is damaged, was made with another recipe, or (when `weights`,
            a `weights_fingerprint`, is given) from other weights: resuming would mix them.
    """
    recipe_of = recipes_of(base, models)
    out = []
    for job in jobs:
        path = Path(out_dir) / job.filename
        if not path.exists():
            out.append(job)
            continue
        meta = _channel_metadata(path)
        if weights is not None and meta.get(WEIGHTS_KEY, weights) != weights:
            raise InvalidArgumentError(
                f"{str(path)!r} was rendered from other weights (fingerprint {meta[WEIGHTS_KEY]}, the model now gives "
                f"{weights}): the model file or its checkpoint changed. Use another --out folder, or delete the old "
                "images to redo them"
            )
        want = recipe_of(job)
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
    base: Recipe | JobRecipes,
    models: nn.Module,
    out_dir: str | Path,
    *,
    batch: int = 16,
    device: str | torch.device | None = None,
    compile: bool | str = "auto",
    progress: bool = True,
    on_batch: Callable[[list[AtlasJob]], None] | None = None,
    weights: str | None = None,
) -> int:
    """Render the jobs whose PNG is missing, `batch` channels per render; return how many were rendered.

    `base` gives the settings (models, size, steps, param, transforms, lr, precision, preset); its
    objective, seed and batch are replaced per job. Or `base` is a function job -> that job's one-image
    recipe (`explore`: its preset decided for each image's objective). Each PNG is written atomically as soon
    as its batch finishes, with its recipe, score and the model's `weights_fingerprint` (`weights`, computed
    when None); nothing of an interrupted render is written. Every PNG is what its recipe renders
    (`Recipe.run`): jobs are batched only when their recipes differ in objective and seed alone and a batch
    renders each image as its recipe does (`batches_like_replay`); the others render one at a time. A
    function's recipes without a size get the model's (`default_size`), as a Recipe `base` does.

    Raises:
        KeyboardInterrupt: Ctrl-C (the finished batches stay on disk).
    """
    batch = check_int("batch", batch)
    if not isinstance(models, nn.Module):
        raise InvalidArgumentError("an atlas renders the channels of one model; give one --model")
    recipe_of = recipes_of(base, models)
    weights = weights or weights_fingerprint(models)
    todo = pending(jobs, out_dir, recipe_of, models, weights)
    bar = _bar(len(todo), progress, len(jobs) - len(todo))
    done = 0
    try:
        for start in range(0, len(todo), batch):
            chunk = list(todo[start:start + batch])
            recipes = [recipe_of(job) for job in chunk]
            for group in render_groups(recipes):
                images, scores = _render_jobs([recipes[i] for i in group], models, device, compile, progress)
                for k, i in enumerate(group):
                    save_png(
                        Path(out_dir) / chunk[i].filename,
                        images[k:k + 1],
                        metadata={RECIPE_KEY: recipes[i].to_json(), SCORE_KEY: repr(float(scores[k])),
                                  WEIGHTS_KEY: weights},
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


def batches_like_replay(recipe: Recipe) -> bool:
    """Whether a batch renders `recipe`'s image as the recipe alone does: a parameterization the batch seeds per
    image (`seeded_param`: fft, pixel), and a preset without augmented copies (their colour shifts come from the
    batch's one generator) or prior terms (a BatchNorm prior reads the batch's statistics; a Plan takes none).

    Example:
        >>> r = Recipe(objective="channel('0', 1)", size=(8, 8))
        >>> [batches_like_replay(r.replace(**kw)) for kw in ({}, {"preset": "robust_ensemble"}, {"param": "maco"})]
        [True, False, False]
    """
    p = PRESETS[recipe.preset]
    return recipe.param in ("fft", "pixel") and not p.copies and not p.has_priors


def render_groups(recipes: Sequence[Recipe]) -> list[list[int]]:
    """The renders that make `recipes` (one-image recipes): lists of indices, one batch each. Recipes that
    differ in objective and seed alone share a batch when they `batches_like_replay`; the others render alone.

    Example:
        >>> r = Recipe(objective="channel('0', 1)", size=(8, 8))
        >>> render_groups([r, r.replace(seed=3), r.replace(lr=0.1), r.replace(preset="plugin")])
        [[0, 1], [2], [3]]
    """
    groups: dict[tuple, list[int]] = {}
    alone: list[list[int]] = []
    for i, r in enumerate(recipes):
        if batches_like_replay(r):
            settings = tuple(getattr(r, f.name) for f in dc.fields(r) if f.name not in ("objective", "seed"))
            groups.setdefault(settings, []).append(i)
        else:
            alone.append([i])
    return sorted([*groups.values(), *alone])


def _render_jobs(recipes: Sequence[Recipe], models: nn.Module, device: Any, compile: bool | str,
                 progress: bool) -> tuple[Tensor, Tensor]:
    """The images and scores of one group of `render_groups`."""
    if len(recipes) == 1 and not batches_like_replay(recipes[0]):
        result = render_recipe(recipes[0], models, device=device, compile=compile, progress=False)  # as replayed
    else:
        result = _render_batch(recipes, models, device, compile, progress)
    if result.interrupted:
        raise KeyboardInterrupt
    return result.images, result.scores()


def _render_batch(recipes: Sequence[Recipe], models: nn.Module, device: Any, compile: bool | str,
                  progress: bool) -> Any:
    """One render of one-image recipes equal but for objective and seed: image i initialized and transformed
    exactly as recipe i's own render (`seeded_param`, `seeded_transforms`)."""
    first = recipes[0]
    size = cast(tuple[int, int], first.size)
    dev = torch.device(device) if device is not None else device_of(models)
    plan = compile_plan([cast(str, r.objective) for r in recipes], models)
    gens = [torch.Generator(dev).manual_seed(r.seed) for r in recipes]
    return render(
        plan,
        steps=first.steps,
        lr=first.lr,
        seed=first.seed,
        param=seeded_param(first.param, size, gens, image_channels(plan), first.decay_power),
        transforms=seeded_transforms(first.transforms, gens, size),
        precision=first.precision,
        device=device,
        compile=compile,
        progress=progress,
        schedule=first.schedule,
        betas=first.betas,
        preset=first.preset,
    )


def _bar(total: int, enabled: bool, initial: int):
    if not enabled or not total:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total + initial, initial=initial, desc="atlas", unit="channel")



