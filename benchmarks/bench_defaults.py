"""Which render settings reach the most: the spectrum's decay power and the transforms, per zoo model.

The README gallery renders MobileNetV2 with `param.fft(decay_power=1.5)` and EfficientNet-Lite0 with
`decay_power=1.25` and `transforms.robust()`; `render`'s defaults are Lucid's (`decay_power=1`,
`transforms.standard()`). This runs each contender on the same objectives, seeds and steps, in
alternation, and judges every final image with `bench_quality.py`'s evaluator (the model and its
preprocessing, no transforms): the channel mean or class logit, and the class probability. A
default should change only if another setting wins on most objectives of most models.

    python benchmarks/bench_defaults.py                                  # both zoo models, 128 steps, batch 2
    python benchmarks/bench_defaults.py --models mobilenet_v2 --steps 64 --objectives flamingo features.14:10
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_quality import LR, judge, parse_target  # noqa: E402
from common import header  # noqa: E402

from lucent_dsl import (
    param as param_lib,  # noqa: E402
    render,
    transforms as T,
    zoo,
)
from lucent_dsl.models.info import info_of  # noqa: E402

OBJECTIVES = {
    "mobilenet_v2": ("features.7:10", "features.14:10", "features.16:0", "flamingo", "goldfish", "daisy"),
    "efficientnet_lite0": ("_blocks.5:0", "_blocks.10:0", "_blocks.14:0", "goldfish", "daisy", "jellyfish"),
}
CONTENDERS = {  # name -> (decay power, transforms factory)
    "d1 standard": (1.0, T.standard),
    "d1.25 standard": (1.25, T.standard),
    "d1.5 standard": (1.5, T.standard),
    "d1 robust": (1.0, T.robust),
    "d1.25 robust": (1.25, T.robust),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--models", nargs="+", default=list(OBJECTIVES), choices=list(OBJECTIVES))
    ap.add_argument("--objectives", nargs="+", help="default: six per model (channels and classes)")
    ap.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=list(CONTENDERS))
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(header(f"render settings: {args.size} px, {args.steps} steps, batch {args.batch}, seed {args.seed}, "
                 f"Adam {LR}"))
    print("value: channel mean or class logit (one evaluator, no transforms), mean over the batch; "
          "p: class probability; best: the contender with the highest value\n")
    wins = {c: 0 for c in args.contenders}
    for name in args.models:
        model = zoo.load(name)
        labels = info_of(model).labels or ()
        print(f"{name}:\n  {'objective':16s}" + "".join(f" {c:>15s}" for c in args.contenders) + "   best")
        for text in args.objectives or OBJECTIVES[name]:
            target = parse_target(text, labels)
            row = {}
            for c in args.contenders:  # alternate contenders per objective: load falls on all alike
                decay, make = CONTENDERS[c]
                p = param_lib.fft(args.size, batch=args.batch, decay_power=decay)
                start = time.perf_counter()
                images = render(target.ours(), model, param=p, transforms=make(), steps=args.steps, lr=LR,
                                seed=args.seed, progress=False).images
                row[c] = judge(model, target, images, time.perf_counter() - start)
            best = max(row, key=lambda c: float(row[c].value.mean()))
            wins[best] += 1
            cells = "".join(f" {float(j.value.mean()):>8.3f}" + (f" p{float(j.prob.mean()):.2f}" if j.prob is not None
                                                                    else "      ") for j in row.values())
            print(f"  {text:16s}{cells}   {best}", flush=True)
    print("\nwins (highest value): " + ", ".join(f"{c}: {n}" for c, n in wins.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
