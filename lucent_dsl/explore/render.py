"""Rendering a site's images with the atlas machinery: resumable, atomic PNGs with recipes, shardable with torchrun.

`vis` and `neg` images are atlas jobs (`units.ImageJob`) rendered by `atlas.render_atlas` into `SITE/img/`: in
batches where the recipe allows (`atlas.jobs.batches_like_replay`), each PNG written atomically with its one-image
recipe and final score, missing ones only, split over the torchrun ranks. The diversity sets (`DIVERSITY_SET` images
optimized together) cannot share a batch with other units, so each is one render of its own recipe (`batch=4`); the
missing sets are dealt round-robin over the ranks (`atlas.shard`), and each image is saved as `<unit>.div<i>.png`
carrying the whole set's recipe, so
`lucent-dsl render --recipe SITE/img/<unit>.div0.png` renders the four again.

Example:
    >>> base = Recipe(objective="channel('conv2', 0)", models=("lenet5_mnist",), size=(28, 28), steps=8)
    >>> u = Unit("conv2", 3, "channel('conv2', 3)", "conv2:3")
    >>> r = diversity_recipe(base, u, "conv2", 0.25)
    >>> r.objective, r.batch
    ("channel('conv2', 3) - 0.25 * diversity('conv2')", 4)
"""
from __future__ import annotations

import dataclasses as dc
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atlas import WEIGHTS_KEY, distributed, shard
from ..atlas.jobs import job_recipe as atlas_job_recipe
from ..errors import ImageError, InvalidArgumentError
from ..io.files import RECIPE_KEY, read_png_metadata, save_png
from ..models.checks import weights_fingerprint
from ..record.recipe import SCORE_KEY, Recipe
from .units import (
    DIVERSITY_SET,
    Unit,
    diversity_objective,
    diversity_seed,
    diversity_weight,
    image_jobs,
)

IMG = "img"
INDEX_KEY = "lucent_dsl.batch_index"


def diversity_recipe(base: Recipe, unit: Unit, layer: str, weight: float) -> Recipe:
    """The recipe of a unit's diversity set: the base settings, the objective minus `weight` x diversity at `layer`,
    batch 4."""
    return dc.replace(base, objective=diversity_objective(unit, layer, weight), seed=diversity_seed(unit, base.seed),
                      batch=DIVERSITY_SET, command="render")


def diversity_recipes(units: Sequence[Unit], base: Recipe, img: Path, layers: dict[str, str]) -> dict[Unit, Recipe]:
    """Every unit's diversity recipe, its weight taken from the score stored in the unit's `vis` PNG."""
    return {u: diversity_recipe(base, u, layers[u.layer], diversity_weight(read_image_info(img / u.vis)["score"]))
            for u in units}


def _stored(path: Path) -> tuple[Recipe | None, str | None]:
    """A set image's recipe and weights fingerprint (None, None: missing or unreadable, so rendered again)."""
    try:
        meta = read_png_metadata(path)
    except Exception:  # noqa: BLE001 - an unreadable file is one to render again
        return None, None
    return (Recipe.from_json(meta[RECIPE_KEY]) if RECIPE_KEY in meta else None), meta.get(WEIGHTS_KEY)


def missing_sets(recipes: dict[Unit, Recipe], img: Path, weights: str | None = None) -> list[Unit]:
    """The units whose diversity set is not complete in `img` with its recipe (a changed recipe is redone).

    Raises:
        InvalidArgumentError: a set image rendered from other weights than `weights` (a `weights_fingerprint`),
            as the atlas refuses its channel images: a site never mixes two versions of a model.
    """
    out = []
    for u, want in recipes.items():
        stored = [_stored(img / u.div(i)) for i in range(DIVERSITY_SET)]
        for i, (_, had) in enumerate(stored):
            if weights is not None and had is not None and had != weights:
                raise InvalidArgumentError(
                    f"{str(img / u.div(i))!r} was rendered from other weights (fingerprint {had}, the model now gives "
                    f"{weights}): use another --out folder, or delete the old images to redo them")
        if any(recipe != want for recipe, _ in stored):
            out.append(u)
    return out


def render_sets(units: Sequence[Unit], recipes: dict[Unit, Recipe], model: nn.Module, img: Path, *,
                device: Any = None, progress: bool = True, weights: str | None = None) -> int:
    """Render the diversity sets of `units` (all of them: pass only the missing ones); return how many. Each image
    carries its set's recipe, its score and the model's `weights_fingerprint` (`weights`, computed when None)."""
    weights = weights or weights_fingerprint(model)
    bar = None
    if progress and units:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(units), desc="diversity sets", unit="unit")
    try:
        for u in units:
            recipe = recipes[u]
            result = recipe.run(model, device=device, progress=False)
            if result.interrupted:
                raise KeyboardInterrupt
            scores = result.scores()
            for i in range(DIVERSITY_SET):
                save_png(img / u.div(i), result.images[i:i + 1],
                         metadata={RECIPE_KEY: recipe.to_json(), SCORE_KEY: repr(float(scores[i])), INDEX_KEY: str(i),
                                   WEIGHTS_KEY: weights})
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return len(units)


def render_site_images(units: Sequence[Unit], base: Recipe, model: nn.Module, out: Path, layers: dict[str, str], *,
                       batch: int = 16, device: Any = None, progress: bool = True, timeout: float = 3600.0,
                       ranks: Any = None, settle: Callable[[Recipe], Recipe] | None = None) -> dict[str, Any]:
    """Render every missing image of the site into `out/img/` (on every torchrun rank); return what was done.

    `layers[unit.layer]` is the layer the unit's diversity term reads. `settle` completes each image's and
    set's recipe once its objective is in (`explore`: the preset "auto" picks for that objective); None keeps
    `base`'s settings. Every rank calls this with the same arguments; afterwards all ranks have met at a
    barrier, so rank 0 can write the pages.
    """
    img = out / IMG
    img.mkdir(parents=True, exist_ok=True)
    jobs = image_jobs(units, seed=base.seed)
    done = settle or (lambda r: r)

    def job_recipe(job: Any) -> Recipe:
        return done(atlas_job_recipe(base, job))

    with distributed.process_group(ranks, timeout) as group:
        run = distributed.render_atlas(jobs, job_recipe, model, img, batch=batch, device=device,  # type: ignore[arg-type]
                                       progress=progress, timeout=timeout, ranks=group.ranks)
        me = group.ranks
        recipes = {u: done(r) for u, r in diversity_recipes(units, base, img, layers).items()}  # every rank reads
        weights = weights_fingerprint(model)                                                    # the vis PNGs
        todo = missing_sets(recipes, img, weights)  # every rank reads the same files: a refusal stops all of them
        todo = [units[i] for i in group.broadcast([units.index(u) for u in todo])]
        sets = render_sets(shard(todo, me.rank, me.world_size), recipes, model, img, device=device,
                           progress=progress and me.rank == 0, weights=weights)
        group.barrier()
        return {"rank": me.rank, "world_size": me.world_size, "images_rendered": run.rendered, "images": len(jobs),
                "sets_rendered": len(todo), "sets": len(units), "mine": run.mine + sets}


def read_image_info(path: Path) -> dict[str, Any]:
    """A site image's score and recipe, from its PNG metadata."""
    meta = read_png_metadata(path)
    try:
        return {"score": float(meta[SCORE_KEY]) if SCORE_KEY in meta else None,
                "recipe": json.loads(meta[RECIPE_KEY]) if RECIPE_KEY in meta else None}
    except ValueError as e:
        raise ImageError(f"{str(path)!r} carries damaged lucent_dsl metadata ({e}); delete it and run the same "
                         "command again, which renders just what is missing") from None


def load_images(paths: Sequence[Path], channels: int) -> torch.Tensor:
    """Site PNGs as one (N, channels, H, W) batch in [0, 1]."""
    from ..io.files import load_image

    return torch.cat([load_image(p, channels=channels) for p in paths])


def render_command(recipe: dict[str, Any] | None, out: str) -> str:
    """The `lucent-dsl render` command line that renders `recipe` (a recipe's JSON dict) again, into `out`.

    Example:
        >>> r = Recipe(objective="channel('conv2', 0)", models=("lenet5_mnist",), size=(28, 28))
        >>> print(render_command(r.to_dict(), "x.png"))
        lucent-dsl render "channel('conv2', 0)" --model lenet5_mnist --size 28x28 ... --precision fp32 --out x.png
    """
    if not recipe:
        return "(no recipe stored)"
    parts = ["lucent-dsl", "render", shell_quote(recipe["objective"])]
    for m in recipe.get("models") or ():
        parts += ["--model", shell_quote(m)]
    if recipe.get("size"):
        parts += ["--size", f"{recipe['size'][0]}x{recipe['size'][1]}"]
    parts += ["--steps", str(recipe["steps"]), "--seed", str(recipe["seed"]),
              "--preset", recipe.get("preset", "lucid"),  # always: the CLI's own default is "auto"
              "--lr", f"{recipe['lr']:g}", "--param", recipe["param"], "--transforms", recipe["transforms"]]
    if recipe.get("batch", 1) != 1:
        parts += ["--batch", str(recipe["batch"])]
    if recipe.get("decay_power", 1.0) != 1.0:
        parts += ["--decay-power", f"{recipe['decay_power']:g}"]
    parts += ["--precision", recipe.get("precision", "fp32")]  # always: the CLI's own default is "auto"
    return " ".join(parts + ["--out", shell_quote(out)])


def shell_quote(text: str) -> str:
    """`text` as one shell word: as it is when safe, in double quotes when it holds single quotes only.

    Example:
        >>> print(shell_quote("channel('conv2', 0)"), shell_quote("a.png"), shell_quote("it's $HOME"))
        "channel('conv2', 0)" a.png 'it'"'"'s $HOME'
    """
    import shlex

    quoted = shlex.quote(text)
    if quoted == text or "'" not in text or any(c in text for c in '"$`\\!'):
        return quoted
    return f'"{text}"'
