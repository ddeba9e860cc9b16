"""`lucent-dsl explore MODEL --layers ... --out site/ [--images DIR]`: a browsable static site of a model.

    lucent-dsl explore lenet5_mnist --layers conv2,@output --channels 0:8 --out site/ --images digits/
    torchrun --nproc-per-node=4 -m lucent_dsl explore mobilenet_v2 --layers features.14 --out site/   # 4 ranks

`add_parser(subparsers, parents)` adds the subcommand to `lucent-dsl`'s parser (`parents`: the shared
option parsers, e.g. the quiet/debug and optimization ones); `run(args)` does the work and returns the
exit code. Bad input raises a `LucentError` (the CLI prints one line and exits with 2).

Example:
    >>> import argparse
    >>> p = argparse.ArgumentParser(prog="lucent-dsl"); sub = p.add_subparsers()
    >>> add_parser(sub, [])
    >>> args = p.parse_args(["explore", "lenet5_mnist", "--layers", "conv2,@output", "--out", "site"])
    >>> args.model, args.layers, args.channels, args.run is run
    ('lenet5_mnist', ['conv2', '@output'], '0:8', True)
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError
from .commands import PARAM_NAMES, PRESET_NAMES, TRANSFORM_NAMES, plain_warnings, positive, size_arg


def layer_list(text: str) -> list[str]:
    """Comma-separated layer names, duplicates dropped.

    Example:
        >>> layer_list("conv1, conv2,conv1")
        ['conv1', 'conv2']
    """
    layers = list(dict.fromkeys(part.strip() for part in text.split(",")))
    if not all(layers):
        raise argparse.ArgumentTypeError(f"expected LAYER[,LAYER...] (names from `lucent-dsl layers`), got {text!r}")
    return layers


def add_parser(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add `explore` to `subparsers` (options that `parents` already define are not added again)."""
    p = subparsers.add_parser(
        "explore",
        parents=parents,
        help="a browsable static site of a model: every unit's pictures, examples and sanity check",
        description="Write a static site (index, one page per layer and per unit) into --out. Resumable; under "
        "torchrun the images are split over the ranks. Serve it with `python -m http.server -d SITE`.",
    )
    have = {a for parent in parents for action in parent._actions for a in action.option_strings}

    def add(*names: str, **kw: Any) -> None:
        if not any(n in have for n in names):
            p.add_argument(*names, **kw)

    p.add_argument(
        "model",
        metavar="MODEL",
        help="model spec: a zoo name, torchvision:NAME[:weights=W], timm:NAME, file.py:factory",
    )
    p.add_argument(
        "--layers",
        required=True,
        type=layer_list,
        metavar="L1,L2",
        help="layers to explore; @output for a classifier's "
        "classes, @output/out for a segmentation model's classes (each inside the central region)",
    )
    p.add_argument(
        "--channels",
        default="0:8",
        metavar="SPEC",
        help="units per layer: START:STOP[:STEP], a comma list, or ':' for all (default: 0:8)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="the site's folder (resumes what is there)")
    p.add_argument("--images", metavar="DIR", help="a folder of natural images: dataset examples and the sanity check")
    p.add_argument("--k", type=positive, default=9, help="dataset examples per unit and side (default: 9)")
    p.add_argument("--batch", type=positive, default=16, help="images per batched render (default: 16)")
    p.add_argument(
        "--timeout",
        type=positive,
        default=3600,
        metavar="SECONDS",
        help="under torchrun: how long a rank waits for the others",
    )
    p.add_argument("--no-sanity", dest="sanity", action="store_false", help="skip the sanity check")
    p.add_argument("--param", choices=PARAM_NAMES, default=None,
                   help="image parameterization (default: the preset's)")
    p.add_argument("--preset", choices=("auto", *PRESET_NAMES),
                   default="auto", help="render preset (default: auto, the one render picks for each unit's "
                   "objective and the model)")
    add("--device", help="cpu, cuda, cuda:1, ... (default: cpu; under torchrun cuda:LOCAL_RANK)")
    add("--size", type=size_arg, metavar="N|HxW", help="image size (default: the model's input size, else 224)")
    add("--steps", type=positive, help="optimization steps (default: 512, render's)")
    add("--seed", type=int, help="base seed (default: 0)")
    add("--lr", type=float, help="Adam learning rate (default: the preset's)")
    add("--transforms", choices=TRANSFORM_NAMES,
        help="random transforms (default: the preset's)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Build the model, write the site, print where it is; return 0."""
    from ..atlas import distributed
    from ..explore.site import explore
    from ..models.specs import build_model

    ranks = distributed.ranks_from_env()
    device = distributed.rank_device(getattr(args, "device", None), ranks)
    if device is not None and str(device).startswith("cuda"):
        import torch

        torch.cuda.set_device(device)
    if args.images is not None and not Path(args.images).is_dir():
        raise InvalidArgumentError(f"--images {args.images!r} is not a folder of images")
    model = build_model(args.model, device=device)
    quiet = getattr(args, "quiet", False)
    start = time.perf_counter()
    with plain_warnings():  # a stale examples state or too few images: one line each
        done = explore(
            model,
            args.model,
            args.layers,
            args.out,
            channels=args.channels,
            images=args.images,
            k=args.k,
            size=getattr(args, "size", None),
            steps=getattr(args, "steps", None) or 512,
            seed=getattr(args, "seed", None) or 0,
            lr=getattr(args, "lr", None),
            param=args.param,
            transforms=getattr(args, "transforms", None),
            preset=args.preset,
            batch=args.batch,
            device=device,
            progress=not quiet,
            timeout=float(args.timeout),
            ranks=ranks,
            sanity=args.sanity,
            precision=getattr(args, "precision", None) or "auto",
            decay_power=1.0 if getattr(args, "decay_power", None) is None else args.decay_power,
        )
    if done["rank"] == 0 and not quiet:
        print(f"wrote {done['units']} units of {', '.join(args.layers)} to {args.out} ({done['images_rendered']} of "
              f"{done['images']} images and {done['sets_rendered']} of {done['sets']} diversity sets rendered, "
              f"{time.perf_counter() - start:.1f} s); open {Path(args.out) / 'index.html'} or serve it with "
              f"`python -m http.server -d {args.out}`", flush=True)
    return 0
