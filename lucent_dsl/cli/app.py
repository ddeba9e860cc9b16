"""`lucent-dsl`: the command line. Argument parsing only; the work is done by the modules it calls.

    lucent-dsl render 'channel("features.14", 10)' --steps 256 --out channel.png
    lucent-dsl render --recipe channel.png --out again.png        # the same image, from its metadata
    lucent-dsl layers --model mobilenet_v2
    lucent-dsl atlas features.14 --channels 0:64 --out atlas/
    torchrun --nproc-per-node=4 -m lucent_dsl atlas features.4,features.14 --out atlas/   # split over 4 ranks
    lucent-dsl caricature photo.jpg --layers features.10 features.14 --out caricature.png
    lucent-dsl accentuate photo.jpg 'channel("features.14", 10)' --out accent.png

Objectives are DSL text, read by `lucent_dsl.parse` (an allow-list; nothing is evaluated).
Models are specs (`lucent_dsl.models.specs.build_models`): zoo names, `torchvision:NAME[:weights=W]`,
`timm:NAME`, `path/to/file.py:factory`, `name=SPEC` for ensembles. Every PNG written carries its
recipe, and every file is written atomically.

Exit codes: 0 success, 2 bad input (a bad objective, layer, spec, setting or file), 130 Ctrl-C
(what was rendered is saved first), 1 anything unexpected. Errors are one line on stderr
(`error: ...`); `--debug` adds the traceback. The command bodies are in `cli.commands`
(and `cli.examples`, `cli.explore`, `cli.toolbox`).

A recipe read with `--recipe` is data (`lucent_dsl.trust`): it builds only zoo models and
torchvision/timm architectures with random weights unless `--allow file,download,image` says
otherwise, or `--model` / `--image` replace what it names.

Example:
    >>> one_line(ValueError("a bad layer\\n  did you mean 'features.4'?"))
    "a bad layer did you mean 'features.4'?"
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

from ..errors import LucentError
from . import commands
from .commands import EXIT_INTERRUPTED, EXIT_OK, UsageError as _UsageError, positive as _positive, size_arg

EXIT_UNEXPECTED = 1
EXIT_BAD_INPUT = 2
_BAD_INPUT = (LucentError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)
__all__ = ["EXIT_BAD_INPUT", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_UNEXPECTED", "build_parser", "main", "one_line"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, and no SystemExit, so main() returns 2
        raise _UsageError(f"{message} (see {self.prog} --help)")


# --- parsing ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `lucent-dsl` (all options default to None: recipes fill them in)."""
    common = _Parser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress bars or summaries")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="print tracebacks on errors")
    common.add_argument("--threads", type=_positive, default=argparse.SUPPRESS, metavar="N",
                        help="torch CPU threads (default: torch's; a replayed recipe uses the count it records). "
                             "Pixels are bit-for-bit only with the same count; on a shared machine 1 is often fastest")

    models = _Parser(add_help=False)
    models.add_argument(
        "--model", action="append", metavar="SPEC",
        help="zoo name (default: the zoo's default), torchvision:NAME[:weights=W], timm:NAME, "
             "path/to/file.py:factory, or name=SPEC; repeat for an ensemble",
    )
    models.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cpu)")
    models.add_argument(
        "--allow", action="append", metavar="WHAT[,WHAT]",
        help="allow what is off by default: file, download, image (what a --recipe asks for: a Python model file, "
             "pretrained weights to download, an input image to read), large (settings above the caps: steps > "
             "100000, size > 4096, batch > 256, > 1000 GIF frames), memory (a render estimated to need more memory "
             "than is free), or all",
    )
    models.add_argument("--size", type=size_arg, metavar="N|HxW",
                        help="image size (default: the model's input size, else 224)")

    optim = _Parser(add_help=False)
    optim.add_argument("--steps", type=_positive, help="optimization steps (default: 512)")
    optim.add_argument("--seed", type=int, help="random seed (default: 0)")
    optim.add_argument("--lr", type=float, help="Adam learning rate (default: 0.05)")
    optim.add_argument("--transforms", choices=commands.TRANSFORM_NAMES,
                       help="random jitter/scale/rotate: transforms.standard() (the lucid preset's), "
                            "transforms.robust() (twice the jitter, zoom 0.7-1.3, +-20 degrees), "
                            "transforms.robust_fit(size) (robust read at the image's size: 0.77x the pixels at 224), "
                            "transforms.scaled(size) (standard's pixel amounts in proportion to the image: for "
                            "images far from 224 px), maco (MACO's crops), or none (caricature's and accentuate's "
                            "default)")
    optim.add_argument("--no-transforms", dest="transforms", action="store_const", const="none",
                       help="--transforms none")
    optim.add_argument("--precision", choices=("auto", "fp32", "bf16"),
                       help="model precision (default: auto = bf16 on CUDA and where a CPU has native bf16 and it "
                            "was measured faster, else fp32)")
    optim.add_argument("--decay-power", type=float, metavar="P",
                       help="fft parameterization: the spectrum falls as 1/f^P (default 1, Lucid's; the README "
                            "gallery uses 1.5 for MobileNetV2 and 1.25 for EfficientNet-Lite0)")
    optim.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                       help="torch.compile the step: auto = on CUDA only (on the CPU it was measured slower than "
                            "the eager folded step)")

    parser = _Parser(
        prog="lucent-dsl", parents=[common],
        description="Feature visualization for PyTorch: render what a network's units respond to.",
        epilog="Objectives are DSL text, e.g. 'channel(\"features.14\", 10) - 1e-3 * total_variation()'.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("render", parents=[common, models, optim], help="render an image that maximizes an objective")
    p.add_argument("objective", nargs="?", help="objective DSL text (optional with --recipe)")
    p.add_argument("--recipe", metavar="FILE",
                   help="a recipe JSON file, or an image written by lucent-dsl (PNG, JPEG, WebP); flags override it. A "
                        "recipe may build zoo models and torchvision/timm architectures with random weights; anything "
                        "else (a model file, a download, an input image) needs --allow, --model or --image")
    p.add_argument("--image", metavar="FILE", help="with --recipe: the input image of a caricature/accentuate recipe")
    p.add_argument("--batch", type=_positive, help="images to render (default: 1)")
    p.add_argument("--param", choices=commands.PARAM_NAMES, help="image parameterization (default: the preset's)")
    p.add_argument("--preset", choices=("auto", *commands.PRESET_NAMES),
                   help="render method (lucent_dsl.renderer.presets; default: auto, picked for the objective and "
                        "the model); flags "
                        "win over it. With --recipe: replaces the recipe's preset name only")
    p.add_argument("--out", metavar="IMAGE",
                   help="output image, .png, .jpg or .webp, with its recipe "
                        "(default: render.png, unless --gif is given)")
    p.add_argument("--gif", metavar="GIF", help="also write an animation of the optimization")
    p.add_argument("--every", type=_positive, metavar="N", help="GIF frame every N steps (default: steps / 50)")
    p.set_defaults(run=commands.render)

    p = sub.add_parser("layers", parents=[common, models], help="list every site of a model, with output shapes")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=commands.layers)

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
    p.set_defaults(run=commands.atlas)

    p = sub.add_parser("caricature", parents=[common, models, optim], help="exaggerate what a model sees in an image")
    p.add_argument("image", help="input image file")
    p.add_argument("--param", choices=("fft", "pixel"), help="image parameterization (default: fft)")
    p.add_argument("--layers", nargs="+", metavar="LAYER",
                   help="layers to caricature, one image each (default: 4 spread over the model's depth)")
    p.add_argument("--out", required=True, metavar="IMAGE", help="output image (.png, .jpg or .webp)")
    p.set_defaults(run=commands.caricature)

    p = sub.add_parser("accentuate", parents=[common, models, optim], help="push an image towards an objective")
    p.add_argument("image", help="input image file")
    p.add_argument("objective", help="objective DSL text")
    p.add_argument("--param", choices=("fft", "pixel"), help="image parameterization (default: fft)")
    p.add_argument("--out", required=True, metavar="IMAGE", help="output image (.png, .jpg or .webp)")
    p.set_defaults(run=commands.accentuate)
    p = sub.add_parser("objectives", parents=[common],
                       help="print the objective vocabulary (arguments, formula, layouts)")
    p.set_defaults(run=_cmd_objectives)
    from . import examples as examples_command, explore as explore_command

    examples_command.add_parser(sub, [common, models])
    explore_command.add_parser(sub, [common, optim])
    from . import toolbox as toolbox_command

    toolbox_command.add_parser(sub, [common, models, optim])
    return parser


def _cmd_objectives(args: argparse.Namespace) -> int:
    from ..objectives.catalog import text_table

    print(text_table())
    return EXIT_OK


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
        from ..record.resources import torch_threads

        wanted = getattr(args, "threads", None)
        with torch_threads(wanted) as threads:  # the caller's count restored after
            if wanted:
                args.threads = threads  # what torch granted
            return args.run(args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `lucent-dsl objectives | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
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
