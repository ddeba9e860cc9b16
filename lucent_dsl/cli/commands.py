"""The work behind each `lucent-dsl` subcommand (`cli` parses the arguments and calls these).

Every command checks what it can before the first optimization step: the trust rule for recipes
read from files (`trust`), the caps and the memory a render needs (`resources`), the device and
the models (`checks`), the output files (writable, room, a format their extension names). Ctrl-C
during a render saves what was rendered (its recipe says the steps done, and is marked
interrupted), says where, and exits 130.

Example:
    >>> size_arg("32x48"), size_arg("64")
    ((32, 48), (64, 64))
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import ImageError, InvalidArgumentError, LucentError

EXIT_OK = 0
PRESET_NAMES = ("lucid", "deepinversion", "plugin", "maco", "robust", "prior", "robust_ensemble")
"""`--preset`'s names besides "auto" (`renderer.presets.PRESETS`; kept here so the parser imports no torch)."""
TRANSFORM_NAMES = ("standard", "scaled", "robust", "robust_fit", "maco", "none")
"""`--transforms`' names (`transforms.NAMED`, every name a recipe may record), kept here for the same reason."""
PARAM_NAMES = ("fft", "pixel", "maco")
"""`--param`'s names for a render (`record.recipe.PARAMS`)."""
EXIT_INTERRUPTED = 130


def size_arg(text: str) -> tuple[int, int]:
    """`--size` of every subcommand: N (a square) or HxW (also H,W)."""
    try:
        parts = [int(p) for p in text.lower().replace(",", "x").split("x")]
    except ValueError:
        parts = []
    parts = parts * 2 if len(parts) == 1 else parts
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected N or HxW (height x width), e.g. 224 or 160x224, got {text!r}")
    return parts[0], parts[1]


def positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return n


class UsageError(LucentError):
    """A command line that argparse rejects, or options that do not go together."""


def say(args: argparse.Namespace, text: str) -> None:
    if not getattr(args, "quiet", False):
        print(text, flush=True)


@contextlib.contextmanager
def plain_warnings() -> Iterator[None]:
    """Warnings shown as one line, `warning: <message>`, rather than Python's file:line and source text."""
    import warnings

    before = warnings.formatwarning
    warnings.formatwarning = lambda message, *_args, **_kw: f"warning: {message}\n"
    try:
        yield
    finally:
        warnings.formatwarning = before


def _allowed(args: argparse.Namespace) -> frozenset[str]:
    from ..record.trust import KINDS, parse_allow

    allowed = parse_allow(getattr(args, "allow", None))
    unknown = sorted(allowed - set(KINDS))
    if unknown:
        raise UsageError(f"--allow {','.join(unknown)}: unknown; allow any of {', '.join(KINDS)}, or all")
    return allowed


def _bar(args: argparse.Namespace) -> bool | str:
    """What a command's render shows: the bar alone (the command prints its own summary), or nothing with -q."""
    return False if getattr(args, "quiet", False) else "bar"


def _compile_flag(args: argparse.Namespace) -> bool | str:
    return {"auto": "auto", "on": True, "off": False}[args.compile]


def _device(args: argparse.Namespace) -> str | None:
    from ..models.checks import resolve_device

    return resolve_device(args.device)


def overrides(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    from ..args import check_seed

    if getattr(args, "seed", None) is not None:
        check_seed(args.seed, "--seed")
    keys = ("size", "steps", "seed", "lr", "transforms", "precision", "batch", "param", "decay_power", "threads")
    out = {k: getattr(args, k, None) for k in keys}
    if args.model:
        out["models"] = tuple(args.model)
    out.update(extra)
    return {k: v for k, v in out.items() if v is not None}


def fresh_recipe(args: argparse.Namespace, **extra: Any) -> Any:
    """The recipe of a command given on the command line (not read from a file): the flags over `Recipe`'s
    defaults, with `precision="auto"` when `--precision` is absent, as in Python's `render`."""
    from ..record.recipe import Recipe

    return Recipe(**{"precision": "auto", **overrides(args, **extra)})


def image_path(text: str) -> str:
    from ..io.files import image_size

    path = Path(text).expanduser()
    if not path.is_file():
        raise ImageError(f"no such image file: {text!r}")
    image_size(path)  # readable, and not too large: checked from the header, before any model is built
    return str(path.resolve())


# --- outputs ---------------------------------------------------------------------------------------------


def check_outputs(out: str | None, gif: str | None) -> None:
    """Formats by extension, no file written twice, writable folders: before any model is built."""
    from ..io.files import image_format
    from ..record.resources import check_writable

    if gif and out and Path(out).expanduser().resolve() == Path(gif).expanduser().resolve():
        raise UsageError(f"--gif and --out are both {out!r}: the GIF would replace the image; give two names")
    if gif and Path(gif).suffix.lower() != ".gif":
        raise UsageError(f"--gif {gif!r}: the animation is a GIF; give a file name ending in .gif")
    if out:
        check_writable(out)
        image_format(out)
    if gif:
        check_writable(gif, what="--gif")


def _output_bytes(size: tuple[int, int], batch: int, frames: int) -> tuple[int, int]:
    pixels = (size[0] + 4) * (size[1] + 4) * 4 * max(1, batch)  # a grid: padding; worst case no compression
    return pixels + 2**20, frames * pixels + 2**20


def save(path: str, images: Any, recipe: Any, score: float | None, interrupted: tuple[int, int] | None = None) -> None:
    from ..io.files import RECIPE_KEY, save_image
    from ..record.recipe import SCORE_KEY

    d = recipe.to_dict()
    if interrupted is not None:
        d["interrupted"] = {"steps_done": interrupted[0], "steps_asked": interrupted[1]}
    meta = {RECIPE_KEY: json.dumps(d, allow_nan=False)}
    if score is not None:
        meta[SCORE_KEY] = repr(score)
    save_image(path, images, metadata=meta)


# --- render, caricature, accentuate ------------------------------------------------------------------------


def _layers_read(recipe: Any) -> list[str] | None:
    from ..dsl.expr import terms_of
    from ..dsl.parser import parse

    if recipe.command == "caricature":
        return list(recipe.layers)
    paths = {s.module_path for t in terms_of(parse(recipe.objective)) for s in t.sites()}
    paths -= {"@image", "@input"}
    return None if not paths or "@output" in paths else sorted(paths)


def run_and_save(args: argparse.Namespace, recipe: Any, out: str | None, gif: str | None = None,
                 every: int | None = None, models: Any = None, preset: str | None = None) -> int:
    """Check, build (unless `models`), render, write the image (and GIF); Ctrl-C writes what was rendered.

    `preset`: a fresh render's `--preset` ("auto" decided for the models built): its values fill the recipe's
    fields that no flag gave (`renderer.presets.with_preset`)."""
    from ..models.checks import check_models
    from ..models.specs import build_models
    from ..record.resources import check_caps, check_memory, check_model_specs, check_writable

    allowed = _allowed(args)
    device = _device(args)
    if models is None:
        check_model_specs(recipe.models, device=device, allow=allowed)
        models = build_models(recipe.models, device=device)  # the trust rule was checked by the caller
    check_models(models)
    recipe = recipe.resolved(models)
    if preset is not None:
        from ..renderer.presets import with_preset

        recipe = with_preset(recipe, preset, models, given=overrides(args))
    if recipe.threads is None:
        import torch

        recipe = recipe.replace(threads=torch.get_num_threads())  # recorded: the pixels depend on it
    thresholds = None
    if gif:
        every = every or max(1, recipe.steps // 50)
        thresholds = sorted({*range(every, recipe.steps + 1, every), recipe.steps})
    frames = len(thresholds or ())
    n = recipe.images
    check_caps(steps=recipe.steps, size=recipe.size, batch=n, frames=frames, allow="large" in allowed)
    check_memory(models, recipe.size, n, frames=frames, layers=_layers_read(recipe), device=device,
                 allow="memory" in allowed)
    out_bytes, gif_bytes = _output_bytes(recipe.size, n, frames)
    if out:
        check_writable(out, need_bytes=out_bytes)
    if gif:
        check_writable(gif, need_bytes=gif_bytes, what="--gif")
    start = time.perf_counter()
    result = recipe.run(models, device=device, compile=_compile_flag(args), progress=_bar(args),
                        thresholds=thresholds, allow="all")
    if result.precision != recipe.precision:  # the file records what ran (resolved() decided it by render's rule)
        recipe = recipe.replace(precision=result.precision)
    if recipe.supplied:  # replayed with --model: the new file names the models by those specs
        recipe = recipe.replace(supplied=())
    scores = [float(s) for s in result.scores()]
    score = scores[0] if len(scores) == 1 else None
    if result.interrupted:
        return _save_interrupted(args, recipe, result, out, gif, score)
    if out:
        save(out, result.images, recipe, score)
    if gif:
        from ..io.files import save_gif

        save_gif(gif, [result.snapshots[t] for t in sorted(result.snapshots)])
    wrote = " and ".join(p for p in (out, gif) if p)
    shown = ", ".join(f"{s:.4g}" for s in scores[:8]) + (", ..." if len(scores) > 8 else "")
    say(args, f"wrote {wrote}: score {shown} after {result.steps} steps in {time.perf_counter() - start:.1f} s")
    return EXIT_OK


def _save_interrupted(args: argparse.Namespace, recipe: Any, result: Any, out: str | None, gif: str | None,
                      score: float | None) -> int:
    if result.steps == 0:
        print("error: interrupted before the first step; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    done = recipe.replace(steps=result.steps)  # replays exactly: the first N steps do not depend on the total
    wrote = []
    if out:
        save(out, result.images, done, score, interrupted=(result.steps, recipe.steps))
        wrote.append(out)
    if gif and result.snapshots:
        from ..io.files import save_gif

        save_gif(gif, [result.snapshots[t] for t in sorted(result.snapshots)])
        wrote.append(gif)
    where = f"wrote what was rendered to {' and '.join(wrote)}" if wrote else "nothing was written (no --out)"
    print(f"error: interrupted after {result.steps} of {recipe.steps} steps; {where} (its recipe has steps="
          f"{result.steps} and is marked interrupted)", file=sys.stderr)
    return EXIT_INTERRUPTED


def render(args: argparse.Namespace) -> int:
    from ..record.recipe import Recipe
    from ..record.resources import check_caps

    if args.every and not args.gif:
        raise UsageError("--every sets the GIF frame interval; give --gif too")
    if args.image and not args.recipe:
        raise UsageError("--image replaces a recipe's input image; give --recipe too (or use caricature/accentuate)")
    allowed = _allowed(args)
    out = args.out or (None if args.gif else "render.png")
    check_outputs(out, args.gif)
    _device(args)
    if args.recipe:
        extra = {"objective": args.objective, "image": image_path(args.image) if args.image else None}
        if getattr(args, "preset", None) == "auto":
            raise UsageError("--preset auto with --recipe: a recipe records the preset that ran; name one "
                             f"({', '.join(PRESET_NAMES)}) or leave --preset out")
        extra["preset"] = getattr(args, "preset", None)
        recipe = Recipe.load(args.recipe).replace(**overrides(args, **extra))
        if recipe.supplied and not args.model:
            from ..record.recipe import supply_message

            raise UsageError(f"{args.recipe}: {supply_message(recipe)}")
        recipe.check_trusted(sorted(allowed), source=str(args.recipe), models=not args.model, image=not args.image)
    elif args.objective is None:
        raise UsageError("render needs an OBJECTIVE (DSL text) or --recipe FILE")
    else:
        recipe = fresh_recipe(args, objective=args.objective)
        check_caps(steps=recipe.steps, size=recipe.size, batch=recipe.batch, allow="large" in allowed)
    fresh_preset = None if args.recipe else (getattr(args, "preset", None) or "auto")
    with plain_warnings():  # e.g. a supplied --model with other weights than the recipe's: one line
        return run_and_save(args, recipe, out, args.gif, args.every, preset=fresh_preset)


def caricature(args: argparse.Namespace) -> int:
    from ..models.specs import build_models
    from ..plan.probe import default_layers

    check_outputs(args.out, None)
    image = image_path(args.image)
    models = build_models(args.model or (), device=_device(args))
    if isinstance(models, dict):
        raise InvalidArgumentError(f"caricature takes one model, got {len(models)}; give one --model")
    layers = tuple(args.layers or default_layers(models, args.size))
    recipe = fresh_recipe(args, command="caricature", image=image, layers=layers, transforms=args.transforms or "none")
    return run_and_save(args, recipe, args.out, models=models)


def accentuate(args: argparse.Namespace) -> int:

    check_outputs(args.out, None)
    recipe = fresh_recipe(args, command="accentuate", image=image_path(args.image), objective=args.objective,
                          transforms=args.transforms or "none")
    return run_and_save(args, recipe, args.out)


# --- layers, atlas -----------------------------------------------------------------------------------------------


def layers(args: argparse.Namespace) -> int:
    from ..models.checks import check_models
    from ..models.specs import build_models
    from ..plan.probe import probe

    built = build_models(args.model or (), device=_device(args))
    check_models(built)
    ensemble = built if isinstance(built, dict) else {None: built}
    report = {name: probe(model, args.size) for name, model in ensemble.items()}
    if args.json:
        out = {str(k or "model"): [r._asdict() for r in rows] for k, rows in report.items()}
        print(json.dumps(out if len(out) > 1 else next(iter(out.values())), indent=1))
        return EXIT_OK
    for name, rows in report.items():
        if name is not None:
            print(f"model {name}:")
        table = [("name", "type", "output shape", "layout", "channels")]
        for r in rows:
            kind = r.type + (f" (called {r.calls}x)" if r.calls > 1 else "")
            table.append((r.name, kind, r.shape, r.layout, "-" if r.channels is None else str(r.channels)))
        widths = [max(len(row[i]) for row in table) for i in range(4)]
        for row in table:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[4].rjust(8))
    return EXIT_OK


def layer_list(text: str) -> list[str]:
    layers = list(dict.fromkeys(part.strip() for part in text.split(",")))
    if not all(layers):
        raise UsageError(f"atlas: expected LAYER[,LAYER...] (names from `lucent-dsl layers`), got {text!r}")
    return layers


def atlas(args: argparse.Namespace) -> int:
    from .. import atlas as atlas_lib
    from ..atlas import distributed
    from ..atlas.lock import check_unlocked
    from ..models.checks import check_models, resolve_device
    from ..models.specs import build_models
    from ..record.resources import check_caps, check_memory, check_writable

    allowed = _allowed(args)
    layers = layer_list(args.layer)
    check_caps(steps=args.steps, size=args.size, batch=args.batch, allow="large" in allowed)
    check_writable(args.out, folder=True)
    ranks = distributed.ranks_from_env()
    if ranks.rank == 0:  # rank 0 takes the folder's lock (render_atlas); the other ranks may see it held
        check_unlocked(args.out)  # another run on this folder: refused before any model is built
    device = resolve_device(distributed.rank_device(args.device, ranks))
    if device is not None and device.startswith("cuda"):
        import torch

        torch.cuda.set_device(device)
    models = build_models(args.model or (), device=device)
    if isinstance(models, dict):
        raise InvalidArgumentError(f"an atlas renders one model's channels, got {len(models)} models; give one --model")
    check_models(models)
    base = fresh_recipe(args, objective=atlas_lib.AtlasJob(layers[0], 0, 0).objective, batch=None,
                        seed=None).resolved(models)
    check_caps(size=base.size, allow="large" in allowed)
    counts = atlas_lib.channel_counts(models, layers, base.size)
    jobs = atlas_lib.layers_jobs({layer: atlas_lib.parse_channels(args.channels, counts[layer]) for layer in layers},
                                 seed=args.seed or 0)
    check_memory(models, base.size, min(args.batch, len(jobs)), layers=layers, device=device,
                 allow="memory" in allowed)
    start = time.perf_counter()
    try:
        run = distributed.render_atlas(jobs, base, models, args.out, batch=args.batch, device=device,
                                       compile=_compile_flag(args), progress=_bar(args),
                                       timeout=args.timeout, ranks=ranks)
    except KeyboardInterrupt:
        there = sum((Path(args.out) / job.filename).exists() for job in jobs)
        print(f"error: interrupted; {there} of {len(jobs)} channel images are in {args.out} (finished batches are "
              "kept): run the same command again to render the rest", file=sys.stderr)
        return EXIT_INTERRUPTED
    if run.manifest is not None:
        _atlas_summary(args, layers, jobs, run, start)
    return EXIT_OK


def _atlas_summary(args: argparse.Namespace, layers: Sequence[str], jobs: Sequence[Any], run: Any,
                   start: float) -> None:
    from .. import atlas as atlas_lib

    skipped = len(jobs) - run.rendered
    by = f" by {run.world_size} processes" if run.world_size > 1 else ""
    speed = f", {run.rendered / run.seconds:.3g} channels/s" if run.rendered and run.seconds > 0 else ""
    grids = [info["grid"] for info in run.manifest["layers"].values()]
    shown = ", ".join(str(Path(args.out) / g) for g in grids[:3]) + (", ..." if len(grids) > 3 else "")
    say(args, f"wrote {len(jobs)} channels of {', '.join(layers)} to {args.out} ({run.rendered} rendered{by} "
              f"in {run.seconds:.1f} s{speed}" + (f", {skipped} already there" if skipped else "")
              + f"; {time.perf_counter() - start:.1f} s in all); see {Path(args.out) / atlas_lib.INDEX}, {shown} "
              f"and {Path(args.out) / atlas_lib.MANIFEST}")
