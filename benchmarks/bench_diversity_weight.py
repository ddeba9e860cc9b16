"""IMI's diversity weight per unit (`toolbox.auto_diversity`) on the zoo's MobileNetV2 (issue 27, item 3).

For each channel of `features.14` drawn by bench_picture_quality's seed, the largest weight of the default ladder
whose weakest image of a batch still beats the best of the sample-photo crops (bench_picture_quality.photos) on
that channel; every weight tried with its weakest score, and the time per channel.

    python benchmarks/bench_diversity_weight.py                       # 2 channels, 128 px, 64 steps, batch 4
    python benchmarks/bench_diversity_weight.py --channels 3 42 --steps 128 --refine 2
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from bench_picture_quality import drawn, photos  # noqa: E402
from common import header  # noqa: E402

from lucent_dsl import toolbox, zoo  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layer", default="features.14")
    p.add_argument("--channels", type=int, nargs="*", default=None, help="default: 2 drawn by the seed")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--refine", type=int, default=0)
    args = p.parse_args(argv)
    print(header("IMI diversity weight per unit: toolbox.auto_diversity"))
    model = zoo.load("mobilenet_v2")
    naturals = photos(args.size)
    channels = args.channels if args.channels is not None else drawn(2, 160)
    print(f"{len(naturals)} photo crops at {args.size} px; {args.steps} steps, batch {args.batch}, "
          f"refine {args.refine}, torch threads {torch.get_num_threads()}")
    print("| unit | weight | weakest chosen | best natural | weakest per weight tried | s |")
    print("|---|---|---|---|---|---|")
    for c in channels:
        start = time.perf_counter()
        choice = toolbox.auto_diversity(f"channel({args.layer!r}, {c})", model, naturals, batch=args.batch,
                                        steps=args.steps, size=args.size, refine=args.refine)
        seconds = time.perf_counter() - start
        weakest = f"{float(choice.scores.min()):.3f}" if choice.weight is not None else "-"
        tried = ", ".join(f"{w:g}: {s:.3f}" for w, s in choice.tried)
        print(f"| {choice.unit} | {choice.weight} | {weakest} | {choice.natural_best:.3f} | {tried} | {seconds:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
