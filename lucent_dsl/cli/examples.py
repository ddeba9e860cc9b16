"""`lucent-dsl examples DIR --layer L --channels ...`: the natural images that drive each unit most and least.

    lucent-dsl examples photos/ --layer features.14 --channels 0:16 --out examples/
    lucent-dsl examples digits/ --model lenet5_mnist --objective 'class_logit("3")' --k 16 --out ex/

One streaming pass over the folder (`dataset_examples`), resumable (`OUT/examples.state.json`): a rerun
resumes only the same pass (units, k, size, model weights, image files); else it warns and starts again.
Writes `OUT/examples.json` (every unit's top and bottom examples: file, score, box) and per unit
`OUT/<unit>.top.png` and `.bottom.png` (the examples' crops, highest or lowest first).

Example:
    >>> import argparse
    >>> p = argparse.ArgumentParser(prog="lucent-dsl"); sub = p.add_subparsers()
    >>> add_parser(sub, [])
    >>> args = p.parse_args(["examples", "photos", "--layer", "features.14", "--channels", "0:4", "--out", "ex"])
    >>> args.layer, args.channels, args.k, args.run is run
    ('features.14', '0:4', 9, True)
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError
from .commands import plain_warnings, positive, size_arg

TILE = 64


def add_parser(subparsers: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add `examples` to `subparsers` (options that `parents` already define are not added again)."""
    p = subparsers.add_parser(
        "examples",
        parents=parents,
        help="the natural images (or crops) that drive units most and least",
        description="Score every image of DIR for every unit in one streaming pass; keep the top and "
        "bottom k. Rerunning the same command resumes an interrupted pass.",
    )
    have = {a for parent in parents for action in parent._actions for a in action.option_strings}

    def add(*names: str, **kw: Any) -> None:
        if not any(n in have for n in names):
            p.add_argument(*names, **kw)

    p.add_argument("images", metavar="DIR", help="a folder of images (searched recursively)")
    p.add_argument("--layer", metavar="LAYER", help="the layer whose channels are the units")
    p.add_argument("--channels", metavar="SPEC", help="START:STOP[:STEP], a comma list, or one index (default: all)")
    p.add_argument(
        "--objective", action="append", metavar="TEXT", help="a unit given as objective DSL text; repeatable"
    )
    p.add_argument("--k", type=positive, default=9, help="examples per unit and side (default: 9)")
    p.add_argument("--batch", type=positive, default=64, help="images per forward (default: 64)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add("--model", action="append", metavar="SPEC", help="model spec (default: the zoo's default)")
    add("--device", help="cpu, cuda, ... (default: cpu)")
    add("--size", type=size_arg, metavar="N|HxW", help="image size (default: the model's input size, else 224)")
    p.set_defaults(run=run)


def _units(args: argparse.Namespace, model: Any) -> list[str]:
    from ..atlas import parse_channels
    from ..objectives import channel
    from ..plan.probe import channel_count

    units = list(args.objective or [])
    if args.layer:
        count = channel_count(model, args.layer, getattr(args, "size", None))
        units += [repr(channel(args.layer, c)) for c in parse_channels(args.channels, count)]
    elif args.channels:
        raise InvalidArgumentError("--channels needs --layer (the layer whose channels they are)")
    if not units:
        raise InvalidArgumentError("give the units: --layer L [--channels SPEC], or --objective TEXT (repeatable)")
    return units


def run(args: argparse.Namespace) -> int:
    """Find the examples, write examples.json and the strips, print a summary; return 0."""
    from ..atlas import safe_name
    from ..dataset_examples import crops, dataset_examples, image_source
    from ..io.files import atomic_write, make_grid, save_png
    from ..models.specs import build_models

    model = build_models(getattr(args, "model", None) or (), device=getattr(args, "device", None))
    if isinstance(model, dict):
        raise InvalidArgumentError(f"examples reads one model, got {len(model)}; give one --model")
    if not Path(args.images).is_dir():
        raise InvalidArgumentError(f"{args.images!r} is not a folder of images")
    units = _units(args, model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    quiet = getattr(args, "quiet", False)
    start = time.perf_counter()
    with plain_warnings():  # a stale state file or too few images: one line each
        found = dataset_examples(units, model, args.images, k=args.k, batch=args.batch,
                                 size=getattr(args, "size", None), state=out / "examples.state.json",
                                 progress=not quiet)
    source = image_source(args.images, model, found.size)
    doc = json.loads(found.to_json())
    for i, (u, entry) in enumerate(zip(found.units, doc["units"])):
        stem = f"unit{i:04d}_{safe_name(u.objective)[:60]}"
        for side in ("top", "bottom"):
            examples = getattr(u, side)
            save_png(
                out / f"{stem}.{side}.png", make_grid(crops(examples, source, side=TILE), ncol=len(examples), pad=2)
            )
            for e in entry[side]:
                e["file"] = source.name(e["index"])
            entry[f"{side}_png"] = f"{stem}.{side}.png"
    with atomic_write(out / "examples.json", "w") as f:
        json.dump(doc, f, indent=1)
    if not quiet:
        for u in found.units:
            best = ", ".join(f"{source.name(e.index)} ({e.score:.3g})" for e in u.top[:3])
            print(f"{u.objective}: {best}{', ...' if len(u.top) > 3 else ''}")
        print(
            f"wrote {out / 'examples.json'} and {2 * len(found.units)} strips: {len(found.units)} units x "
            f"{found.seen} images in {time.perf_counter() - start:.1f} s",
            flush=True,
        )
    return 0
