"""What the image side of a render step costs, lever by lever (issue 18, item 1).

The image side is everything of a step except the model: the FFT parameterization (spectrum scale,
inverse FFT, colour decorrelation, sigmoid), `transforms.standard()` (one `grid_sample`), the model's
preprocessing (resize to 224, ImageNet normalization), forward and backward, at 224 px. The model is
replaced by a fixed random linear read-out, so only the image side is timed.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_image_side.py [--batches 1,16] [--rounds 15]

Contenders, alternated step by step:
- `before`: the image side as it was before this benchmark (2026-12-02 morning): `F.affine_grid`
  (a batched matrix product with a 3-wide inner dimension), the warp's 248 px output bilinearly
  resized to 224 by the preprocessing, the spectrum scale broadcast over the real/imaginary axis,
  Lucid's magic divisor applied after the inverse FFT;
- `+fused`: `before` with the resize done by the warp itself (`transforms.sampled_at`);
- `+grid`: `before` with the sampling grid as one broadcast add (`transforms.geometry.affine_grid`);
- `+scale`: `before` with the spectrum scale stored (H, W', 2) and the divisor folded into it;
- `ours`: the library as it is (all three), i.e. what `render` runs;
- `model`: for scale, the folded mobilenet_v2 truncated after `features.10` (forward + input backward on
  a 224 px leaf: bench_step's floor-f), so `ours / model` is the image side's share of a step.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (sets the thread environment before torch starts)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from lucent_dsl import (
    param as param_lib,  # noqa: E402
    transforms as tf_lib,
)
from lucent_dsl.param import _common as pc  # noqa: E402
from lucent_dsl.plan.fold import frozen_models  # noqa: E402
from lucent_dsl.transforms import geometry  # noqa: E402

SIZE = 224


def old_fft(batch: int):
    """`param.fft(224, batch=batch).to_image` as written before: (H, W', 1) scale, divisor after the FFT."""
    scale = pc.to_float32(pc.spectrum_scale(SIZE, SIZE, 1.0)[..., None])
    m = pc.to_float32(pc.color_matrix(True, 3))

    def to_image(leaves):
        s = leaves["spectrum"] * scale
        x = torch.fft.irfft2(torch.view_as_complex(s.contiguous()), s=(SIZE, SIZE)) / pc.FFT_MAGIC
        return pc.finish_image(x, m, torch.sigmoid, 0.0)

    return to_image


def side(batch: int, *, fused: bool, grid: bool, scale: bool):
    """(leaves, step function) of one contender."""
    p = param_lib.fft(SIZE, batch=batch)
    to_image = p.to_image if scale else old_fft(batch)
    t = tf_lib.standard()
    if fused:
        t = tf_lib.sampled_at(t, (SIZE, SIZE))
    info = common.ModelInfo(common.IMAGENET_MEAN, common.IMAGENET_STD, (SIZE, SIZE))
    g = torch.Generator().manual_seed(0)
    leaves = {k: v.detach().requires_grad_(True) for k, v in p.init(g).items()}
    readout = torch.randn(batch, 3, SIZE, SIZE, generator=g)
    old_grid = lambda theta, h, w: F.affine_grid(theta, [theta.shape[0], 1, h, w], align_corners=False)  # noqa: E731

    def step():
        mine = geometry.affine_grid
        if not grid:
            geometry.affine_grid = old_grid
        try:
            x = info.preprocess(t.apply(to_image(leaves), t.sample(g, (batch, 3, SIZE, SIZE))))
            (x * readout).sum().backward()
        finally:
            geometry.affine_grid = mine
        for v in leaves.values():
            v.grad = None

    return step


def model_step(batch: int):
    model = common.build_model("mobilenet_v2")
    plan = common.make_plan(model, "features.10")
    (runner,) = plan.runners.values()
    x = torch.randn(batch, 3, SIZE, SIZE).requires_grad_(True)

    def step():
        with frozen_models([model]):
            runner(x)["features.10"][:, 0].mean().backward()
        x.grad = None

    return step


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--rounds", type=int, default=15, help="timed steps per contender (batch 16: a third)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    common.set_threads(a.threads)
    print(common.header("bench_image_side: the image side of a step (parameterization, transforms, preprocessing)"))
    print("process CPU ms per forward + backward, median; model = mobilenet_v2 features.10 folded (floor-f)\n")
    names = ("before", "+fused", "+grid", "+scale", "ours", "model")
    print(f"{'B':>3} | " + " ".join(f"{n:>8}" for n in names) + " | before/ours  ours/model  before/model")
    for batch in (int(b) for b in a.batches.split(",")):
        steps = {
            "before": side(batch, fused=False, grid=False, scale=False),
            "+fused": side(batch, fused=True, grid=False, scale=False),
            "+grid": side(batch, fused=False, grid=True, scale=False),
            "+scale": side(batch, fused=False, grid=False, scale=True),
            "ours": side(batch, fused=True, grid=True, scale=True),
            "model": model_step(batch),
        }
        times: dict[str, list[float]] = {n: [] for n in names}
        rounds = a.rounds if batch < 8 else max(3, a.rounds // 3)
        for i in range(rounds + 1):
            for n in names:
                start = time.process_time()
                steps[n]()
                if i:  # the first round warms up
                    times[n].append(1000 * (time.process_time() - start))
        med = {n: statistics.median(v) for n, v in times.items()}
        print(f"{batch:>3} | " + " ".join(f"{med[n]:8.2f}" for n in names)
              + f" | {med['before'] / med['ours']:11.2f} {med['ours'] / med['model']:11.2f} {med['before'] / med['model']:13.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
