"""`transforms.standard()` with Lucid's jitter and angles against the old one: the activation and class probability reached.

Lucid's `jitter(d)` is a random crop d pixels smaller, a shift of -d/2..d/2 pixels; `standard()` used
to shift by -d..d (`jitter(8)`, `jitter(4)`: std 4.9 and 2.6 px) and to turn by a continuous angle in
(-10, 10) degrees, where Lucid picks whole degrees with 0 six times as likely. The "lucid" contender
is today's `standard()` (`jitter(4)`, `jitter(2)`, `STANDARD_ANGLES`), the "old" one the former recipe.
Everything else is `render`'s default (FFT, decorrelated colour, Adam 0.05), and both images are judged
by the evaluator of `bench_quality.py` (the model and its preprocessing, no transforms).

    python benchmarks/bench_jitter.py                         # 224 px, 128 steps, batch 2
    python benchmarks/bench_jitter.py --steps 64 --objectives features.14:10 flamingo
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

from bench_quality import DEFAULT_OBJECTIVES, LR, _fmt, judge, parse_target  # noqa: E402
from common import header  # noqa: E402

from lucent_dsl import (  # noqa: E402
    render,
    transforms as T,  # noqa: E402
    zoo,
)
from lucent_dsl.models.info import info_of  # noqa: E402


def old_standard() -> T.Transform:
    """`standard()` before it followed Lucid's distributions: shifts of -8..8 and -4..4 px, continuous angles."""
    return T.chain(T.pad(12, mode="constant", value=0.5), T.jitter(8), T.random_scale(list(T.STANDARD_SCALES)),
                   T.random_rotate((-10.0, 10.0)), T.jitter(4))


CONTENDERS = {"lucid": T.standard, "old": old_standard}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--objectives", nargs="+", default=list(DEFAULT_OBJECTIVES))
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = zoo.load("mobilenet_v2")
    labels = info_of(model).labels or ()
    print(header("transforms.standard() with Lucid's jitter vs the old one"))
    print(f"MobileNetV2, size {args.size}, {args.steps} steps, batch {args.batch}, seed {args.seed}, "
          f"{torch.get_num_threads()} thread(s), torch {torch.__version__}")
    print("value: channel mean or class logit (our evaluator, no transforms); mean over the batch (worst image)\n")
    print(f"{'objective':16s}" + "".join(f" {k + ' value':>19s}" for k in CONTENDERS) + f" {'lucid/old':>10s}"
          + "".join(f" {k + ' p':>19s}" for k in CONTENDERS))
    ratios = []
    for text in args.objectives:
        target = parse_target(text, labels)
        judged = {}
        for name, make in CONTENDERS.items():  # alternate: load from other processes falls on both alike
            start = time.perf_counter()
            images = render(target.ours(), model, size=args.size, steps=args.steps, batch=args.batch, lr=LR,
                            seed=args.seed, transforms=make(), progress=False).images
            judged[name] = judge(model, target, images, time.perf_counter() - start)
        ratio = float(judged["lucid"].value.mean()) / float(judged["old"].value.mean())
        ratios.append(ratio)
        print(f"{text:16s}" + "".join(f" {_fmt(j.value, 3):>19s}" for j in judged.values()) + f" {ratio:>10.2f}"
              + "".join(f" {_fmt(j.prob, 4):>19s}" for j in judged.values()), flush=True)
    print(f"\nlucid/old value ratio: {min(ratios):.2f}-{max(ratios):.2f} (geometric mean "
          f"{float(torch.tensor(ratios).log().mean().exp()):.2f}) over {len(ratios)} objectives")
    return 0


if __name__ == "__main__":
    sys.exit(main())
