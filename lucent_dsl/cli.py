"""`lucent-dsl`: the command line. Argument parsing only; the work is done by the modules it calls.

    lucent-dsl render 'channel("features.14", 10)' --steps 256 --out channel.png
    lucent-dsl render --recipe channel.png --out again.png        # the same image, from its metadata
    lucent-dsl layers --model mobilenet_v2
    lucent-dsl atlas features.14 --channels 0:64 --out atlas/
    torchrun --nproc-per-node=4 -m lucent_dsl atlas features.4,features.14 --out atlas/   # split over 4 ranks
    lucent-dsl caricature photo.jpg --layers features.10 features.14 --out caricature.png
    lucent-dsl accentuate photo.jpg 'channel("features.14", 10)' --out accent.png

Objectives are DSL text, read by `lucent_dsl.parse` (an allow-list; nothing is evaluated).
Models are specs (`lucent_dsl.recipe.build_models`): zoo names, `torchvision:NAME[:weights=W]`,
`timm:NAME`, `path/to/file.py:factory`, `name=SPEC` for ensembles. Every PNG written carries its
recipe, and every file is written atomically.

Exit codes: 0 success, 2 bad input (a bad objective, layer, spec, setting or file), 130 Ctrl-C,
1 anything unexpected. Errors are one line on stderr (`error: ...`); `--debug` adds the traceback.
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from .errors import ImageError, InvalidArgumentError, LucentError

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
_BAD_INPUT = (LucentError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


class _UsageError(LucentError):
    """A command line that argparse rejects."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, and no SystemExit, so main() returns 2
        raise _UsageError(f"{message} (see {self.prog} --help)")


# --- parsing ----------------------------------------------------------------------------------------


def _size(text: str) -> tuple[int, int]:
    try:
        parts = [int(p) for p in text.lower().replace(",", "x").split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected N or HxW (height x width), e.g. 224 or 160x224, got {text!r}")
    return parts[0], parts[1]


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return n


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `lucent-dsl` (all options default to None: recipes fill them in)."""
    common = _Parser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars or summaries")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="print tracebacks on errors")

    models = _Parser(add_help=False)
    models.add_argument(
        "--model", action="append", metavar="SPEC",
        help="zoo name (default: the zoo's default), torchvision:NAME[:weights=W], timm:NAME, "
             "path/to/file.py:factory, or name=SPEC; repeat for an ensemble",
    )
    models.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cpu)")
    models.add_argument("--size", type=_size, metavar="N|HxW", help="image size (default: the model's input size, else 224)")

    optim = _Parser(add_help=False)
    optim.add_argument("--steps", type=_positive, help="optimization steps (default: 512)")
    optim.add_argument("--seed", type=int, help="random seed (default: 0)")
    optim.add_argument("--lr", type=float, help="Adam learning rate (default: 0.05)")
    optim.add_argument("--transforms", choices=("standard", "none"),
                       help="random jitter/scale/rotate: transforms.standard() (render's default) or none "
                            "(caricature's and accentuate's default)")
    optim.add_argument("--no-transforms", dest="transforms", action="store_const", const="none", help="--transforms none")
    optim.add_argument("--precision", choices=("fp32", "bf16"), help="model precision (default: fp32)")
    optim.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                       help="torch.compile the step: auto = on CUDA, or on the CPU for long runs")

    parser = _Parser(
        prog="lucent-dsl", parents=[common],
        description="Feature visualization for PyTorch: render what a network's units respond to.",
        epilog="Objectives are DSL text, e.g. 'channel(\"features.14\", 10) - 1e-3 * total_variation()'.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("render", parents=[common, models, optim], help="render an image that maximizes an objective")
    p.add_argument("objective", nargs="?", help="objective DSL text (optional with --recipe)")
    p.add_argument("--recipe", metavar="FILE", help="a recipe JSON file, or a PNG written by lucent-dsl; flags override it")
    p.add_argument("--batch", type=_positive, help="images to render (default: 1)")
    p.add_argument("--param", choices=("fft", "pixel"), help="image parameterization (default: fft)")
    p.add_argument("--out", metavar="PNG", help="output PNG (default: render.png, unless --gif is given)")
    p.add_argument("--gif", metavar="GIF", help="also write an animation of the optimization")
    p.add_argument("--every", type=_positive, metavar="N", help="GIF frame every N steps (default: steps / 50)")
    p.set_defaults(run=_cmd_render)

    p = sub.add_parser("layers", parents=[common, models], help="list every site of a model, with output shapes")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=_cmd_layers)

    p = sub.add_parser(
        "atlas", parents=[common, models, optim],
        help="one image per channel of some layers, a grid per layer and an index.html (runs under torchrun too)",
        description="Render one image per channel. Under `torchrun --nproc-per-node=N -m lucent_dsl atlas ...` "
                    "the channels are split over the ranks (each on cuda:LOCAL_RANK when CUDA is available); "
                    "rerunning the same command renders only what is missing.",
    )
    p.add_argument("layer", metavar="LAYER[,LAYER...]", help="layer names, comma-separated (see `lucent-dsl layers`)")
    p.add_argument("--channels", metavar="SPEC",
                   help="START:STOP[:STEP], a comma list, or one index, for every layer (default: all)")
    p.add_argument("--batch", type=_positive, default=16, help="channels per batched render (default: 16)")
    p.add_argument("--param", choices=("fft", "pixel"), help="image parameterization (default: fft)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (resumes what is there)")
    p.add_argument("--timeout", type=_positive, default=3600, metavar="SECONDS",
                   help="under torchrun: how long a rank waits for the others to finish a batch before "
                        "giving up (default: 3600; make it longer than one batch takes)")
    p.set_defaults(run=_cmd_atlas)

    p = sub.add_parser("caricature", parents=[common, models, optim], help="exaggerate what a model sees in an image")
    p.add_argument("image", help="input image file")
    p.add_argument("--param", choices=("fft", "pixel"), help="image parameterization (default: fft)")
    p.add_argument("--layers", nargs="+", metavar="LAYER",
                   help="layers to caricature, one image each (default: 4 spread over the model's depth)")
    p.add_argument("--out", required=True, metavar="PNG", help="output PNG")
    p.set_defaults(run=_cmd_caricature)

    p = sub.add_parser("accentuate", parents=[common, models, optim], help="push an image towards an objective")
    p.add_argument("image", help="input image file")
    p.add_argument("objective", help="objective DSL text")
    p.add_argument("--param", choices=("fft", "pixel"), help="image parameterization (default: fft)")
    p.add_argument("--out", required=True, metavar="PNG", help="output PNG")
    p.set_defaults(run=_cmd_accentuate)
    return parser


# --- commands ---------------------------------------------------------------------------------------


def _say(args: argparse.Namespace, text: str) -> None:
    if not getattr(args, "quiet", False):
        print(text, flush=True)


def _compile_flag(args: argparse.Namespace) -> bool | str:
    return {"auto": "auto", "on": True, "off": False}[args.compile]


def _overrides(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    keys = ("size", "steps", "seed", "lr", "transforms", "precision", "batch", "param")
    out = {k: getattr(args, k, None) for k in keys}
    if args.model:
        out["models"] = tuple(args.model)
    out.update(extra)
    return {k: v for k, v in out.items() if v is not None}


def _save(path: str, images: Any, recipe: Any, score: float | None) -> None:
    from .io import RECIPE_KEY, save_png
    from .replay import SCORE_KEY

    meta = {RECIPE_KEY: recipe.to_json()}
    if score is not None:
        meta[SCORE_KEY] = repr(score)
    save_png(path, images, metadata=meta)


def _run_and_save(args: argparse.Namespace, recipe: Any, out: str | None, gif: str | None = None,
                  every: int | None = None, models: Any = None) -> int:
    """Build the recipe's models (unless given), render, write the PNG (and GIF); Ctrl-C writes nothing."""
    if models is None:
        models = recipe.build_models(device=args.device)
    recipe = recipe.resolved(models)
    thresholds = None
    if gif:
        every = every or max(1, recipe.steps // 50)
        thresholds = sorted({*range(every, recipe.steps + 1, every), recipe.steps})
    start = time.perf_counter()
    result = recipe.run(models, device=args.device, compile=_compile_flag(args),
                        progress=not getattr(args, "quiet", False), thresholds=thresholds)
    if result.interrupted:
        raise KeyboardInterrupt
    scores = [float(s) for s in result.scores()]
    if out:
        _save(out, result.images, recipe, scores[0] if len(scores) == 1 else None)
    if gif:
        from .io import save_gif

        save_gif(gif, [result.snapshots[t] for t in sorted(result.snapshots)])
    wrote = " and ".join(p for p in (out, gif) if p)
    shown = ", ".join(f"{s:.4g}" for s in scores[:8]) + (", ..." if len(scores) > 8 else "")
    _say(args, f"wrote {wrote}: score {shown} after {result.steps} steps in {time.perf_counter() - start:.1f} s")
    return EXIT_OK


def _cmd_render(args: argparse.Namespace) -> int:
    from .replay import Recipe

    if args.every and not args.gif:
        raise _UsageError("--every sets the GIF frame interval; give --gif too")
    if args.recipe:
        recipe = Recipe.load(args.recipe)
        changes = _overrides(args, objective=args.objective)
        recipe = recipe.replace(**changes)
    elif args.objective is None:
        raise _UsageError("render needs an OBJECTIVE (DSL text) or --recipe FILE")
    else:
        recipe = Recipe(**_overrides(args, objective=args.objective))
    out = args.out or (None if args.gif else "render.png")
    return _run_and_save(args, recipe, out, args.gif, args.every)


def _cmd_layers(args: argparse.Namespace) -> int:
    import json

    from .atlas import probe
    from .specs import build_models

    built = build_models(args.model or (), device=args.device)
    ensemble = built if isinstance(built, dict) else {None: built}
    report = {}
    for name, model in ensemble.items():
        report[name] = probe(model, args.size)
    if args.json:
        out = {str(k or "model"): [r._asdict() for r in rows] for k, rows in report.items()}
        print(json.dumps(out if len(out) > 1 else next(iter(out.values())), indent=1))
        return EXIT_OK
    for name, rows in report.items():
        if name is not None:
            print(f"model {name}:")
        table = [("name", "type", "output shape", "channels")]
        for r in rows:
            kind = r.type + (f" (called {r.calls}x)" if r.calls > 1 else "")
            table.append((r.name, kind, r.shape, "-" if r.channels is None else str(r.channels)))
        widths = [max(len(row[i]) for row in table) for i in range(3)]
        for row in table:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[3].rjust(8))
    return EXIT_OK


def _layer_list(text: str) -> list[str]:
    layers = list(dict.fromkeys(part.strip() for part in text.split(",")))
    if not all(layers):
        raise _UsageError(f"atlas: expected LAYER[,LAYER...] (names from `lucent-dsl layers`), got {text!r}")
    return layers


def _cmd_atlas(args: argparse.Namespace) -> int:
    from . import atlas
    from .atlas import distributed
    from .replay import Recipe
    from .specs import build_models

    ranks = distributed.ranks_from_env()
    device = distributed.rank_device(args.device, ranks)
    if device is not None and device.startswith("cuda"):
        import torch

        torch.cuda.set_device(device)
    models = build_models(args.model or (), device=device)
    if isinstance(models, dict):
        raise InvalidArgumentError(f"an atlas renders one model's channels, got {len(models)} models; give one --model")
    layers = _layer_list(args.layer)
    base = Recipe(**_overrides(args, objective=atlas.AtlasJob(layers[0], 0, 0).objective, batch=None, seed=None)).resolved(models)
    counts = atlas.channel_counts(models, layers, base.size)
    jobs = atlas.layers_jobs({layer: atlas.parse_channels(args.channels, counts[layer]) for layer in layers},
                             seed=args.seed or 0)
    quiet = getattr(args, "quiet", False)
    start = time.perf_counter()
    run = distributed.render_atlas(jobs, base, models, args.out, batch=args.batch, device=device,
                                   compile=_compile_flag(args), progress=not quiet, timeout=args.timeout, ranks=ranks)
    if run.manifest is not None:
        skipped = len(jobs) - run.rendered
        by = f" by {run.world_size} processes" if run.world_size > 1 else ""
        speed = f", {run.rendered / run.seconds:.3g} channels/s" if run.rendered and run.seconds > 0 else ""
        grids = [info["grid"] for info in run.manifest["layers"].values()]
        shown = ", ".join(str(Path(args.out) / g) for g in grids[:3]) + (", ..." if len(grids) > 3 else "")
        _say(args, f"wrote {len(jobs)} channels of {', '.join(layers)} to {args.out} ({run.rendered} rendered{by} "
                   f"in {run.seconds:.1f} s{speed}" + (f", {skipped} already there" if skipped else "")
                   + f"; {time.perf_counter() - start:.1f} s in all); see {Path(args.out) / atlas.INDEX}, {shown} "
                   f"and {Path(args.out) / atlas.MANIFEST}")
    return EXIT_OK


def _image_path(text: str) -> str:
    path = Path(text).expanduser()
    if not path.is_file():
        raise ImageError(f"no such image file: {text!r}")
    return str(path.resolve())


def _cmd_caricature(args: argparse.Namespace) -> int:
    from .atlas import default_layers
    from .replay import Recipe
    from .specs import build_models

    image = _image_path(args.image)
    models = build_models(args.model or (), device=args.device)
    if isinstance(models, dict):
        raise InvalidArgumentError(f"caricature takes one model, got {len(models)}; give one --model")
    layers = tuple(args.layers or default_layers(models, args.size))
    recipe = Recipe(**_overrides(args, command="caricature", image=image, layers=layers,
                                 transforms=args.transforms or "none"))
    return _run_and_save(args, recipe, args.out, models=models)


def _cmd_accentuate(args: argparse.Namespace) -> int:
    from .replay import Recipe

    recipe = Recipe(**_overrides(args, command="accentuate", image=_image_path(args.image), objective=args.objective,
                                 transforms=args.transforms or "none"))
    return _run_and_save(args, recipe, args.out)


# --- entry point ------------------------------------------------------------------------------------


def one_line(err: BaseException) -> str:
    """An error message on one line; a parse error's caret becomes "at column N of '<text>'"."""
    lines = [line for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    if len(lines) >= 3 and lines[-1].strip() == "^":
        col = len(lines[-1]) - len(lines[-1].lstrip()) - (len(lines[-2]) - len(lines[-2].lstrip()))
        return f"{' '.join(s.strip() for s in lines[:-2])} (at column {col + 1} of {lines[-2].strip()!r})"
    return " ".join(s.strip() for s in lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run `lucent-dsl` with `argv` (default: sys.argv[1:]); return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        debug = getattr(args, "debug", False)
        return args.run(args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit as e:  # --help, --version
        return e.code if isinstance(e.code, int) else EXIT_OK if e.code is None else EXIT_BAD_INPUT
    except _BAD_INPUT as e:
        if debug:
            traceback.print_exc()
        print(f"error: {one_line(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as e:  # noqa: BLE001 - the one place that turns any failure into one line
        if debug:
            traceback.print_exc()
        hint = "" if debug else " (run with --debug for the traceback)"
        print(f"error: unexpected {type(e).__name__}: {one_line(e)}{hint}", file=sys.stderr)
        return EXIT_UNEXPECTED


if __name__ == "__main__":
    sys.exit(main())
