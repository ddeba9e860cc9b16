"""The full MACO method (`toolbox.maco_method`) against our FFT render, judged by `bench_quality.py`'s evaluator.

"fft" is `render`'s default (FFT, decorrelated colour, `transforms.standard()`, Adam 0.05) at 224 px;
"maco" is `maco_method` at 224 px with the crops resized to the model's input size, NAdam lr 1.0,
noise 0.04 and xplique's crop schedule (mean side 50% -> 5% of the image), or the schedules given
with `--boxes`. Every image is judged by ONE evaluator (`bench_quality.judge`: the model with its
preprocessing, no transforms, a plain hook on the whole image): the channel mean or class logit,
and the class probability. MACO renders one image per seed; FFT renders `--seeds` images in one batch.

    python benchmarks/bench_maco.py                                  # MobileNetV2, 4 objectives
    python benchmarks/bench_maco.py --models efficientnet_lite0 --objectives flamingo goldfish
    python benchmarks/bench_maco.py --boxes 0.5,0.05 1.0,0.5 --crops 8 --steps 256
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

from bench_quality import LR, _fmt, judge, parse_target  # noqa: E402
from common import header  # noqa: E402

from lucent_dsl import render, zoo  # noqa: E402
from lucent_dsl.models.info import info_of  # noqa: E402
from lucent_dsl.toolbox import maco_method  # noqa: E402

DEFAULT_OBJECTIVES = ("features.7:10", "features.14:10", "flamingo", "goldfish")


def _box(text: str) -> tuple[float, float]:
    start, end = (float(v) for v in text.split(","))
    return start, end


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["mobilenet_v2"])
    ap.add_argument("--objectives", nargs="+", default=list(DEFAULT_OBJECTIVES))
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--crops", type=int, default=4)
    ap.add_argument("--boxes", nargs="+", type=_box, default=[(0.5, 0.05)], help="MACO crop schedules START,END")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(header("the MACO method vs our FFT render"))
    print(f"size {args.size}, {args.steps} steps, MACO {args.crops} crops/step, {args.seeds} seed(s), "
          f"{torch.get_num_threads()} thread(s), torch {torch.__version__}")
    print("value: channel mean or class logit read by bench_quality's evaluator (whole image, no transforms); "
          "mean over seeds (worst)\n")
    names = ["fft"] + [f"maco {a:g}->{b:g}" for a, b in args.boxes]
    print(f"{'model':18s} {'objective':16s}" + "".join(f" {n + ' value':>22s}" for n in names)
          + "".join(f" {n + ' p':>20s}" for n in names) + "".join(f" {n + ' s':>14s}" for n in names))
    for name in args.models:
        model = zoo.load(name)
        labels = info_of(model).labels or ()
        for text in args.objectives:
            if ":" in text and name != "mobilenet_v2" and not text.startswith(("blocks", "conv")):
                continue  # layer names are MobileNetV2's; other models get class objectives only
            target = parse_target(text, labels)
            judged = []
            start = time.perf_counter()
            images = render(target.ours(), model, size=args.size, steps=args.steps, batch=args.seeds, lr=LR,
                            progress=False).images
            judged.append(judge(model, target, images, time.perf_counter() - start))
            for box in args.boxes:
                start = time.perf_counter()
                images = torch.cat([maco_method(target.ours(), model, size=args.size, crops=args.crops,
                                                steps=args.steps, box=box, seed=s, progress=False).images
                                    for s in range(args.seeds)])
                judged.append(judge(model, target, images, time.perf_counter() - start))
            print(f"{name:18s} {text:16s}" + "".join(f" {_fmt(j.value, 3):>22s}" for j in judged)
                  + "".join(f" {_fmt(j.prob, 4):>20s}" for j in judged)
                  + "".join(f" {j.seconds:>14.0f}" for j in judged), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
