"""Peak memory of a render step: the floor, ours and lucent, at batch 1 and 16, each in a fresh process.

Each measurement is a child process that builds the model (resnet18 random weights by default, with
ImageNet preprocessing, 224 px), records its peak RSS (`ru_maxrss`; on CUDA `max_memory_allocated`),
runs `--steps` steps of one contender, and prints the increase of the peak. The contenders are the
ones of `bench_step.py`: "floor" (the model's own modules, truncated, on a raw pixel leaf, input-only
backward, Adam: what a hand-written loop costs), "floor-f" (the same on our folded runner), "ours"
(`render` with its defaults: FFT, decorrelated colour, standard transforms) and "lucent" (`render_vis`
with its standard settings). Processes alternate floor, floor-f, ours, lucent.

    python benchmarks/bench_memory.py                                   # resnet18 layer3, batch 1 and 16
    python benchmarks/bench_memory.py --model mobilenet_v2 --layer features.14 --batches 1 16 64
    python benchmarks/bench_memory.py --device cuda

lucent is torch-lucent from PyPI: `pip install --no-deps torch-lucent kornia==0.4.1`.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
CONTENDERS = ("floor", "floor-f", "ours", "lucent")


def _peak_mb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(contender: str, model_name: str, layer: str, batch: int, steps: int, device: str) -> dict:
    """One measurement (runs in a fresh process): the peak's increase over the model's own footprint."""
    sys.path.insert(0, str(HERE.parent))
    sys.path.insert(0, str(HERE))
    import common
    import torch

    torch.set_num_threads(1)
    model = common.build_model(model_name).to(device)
    plan = common.make_plan(model, layer, fuse=contender != "floor")
    with torch.no_grad():  # one forward first, so lazy allocations of the model itself are not counted
        model(torch.zeros(1, 3, 224, 224, device=device))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = _peak_mb(device)
    if contender in ("floor", "floor-f"):
        common.run_floor(plan, batch, steps, 0)
    elif contender == "ours":
        from lucent_dsl import param as param_lib, transforms as tf_lib

        common.run_ours(plan, param_lib.fft(224, batch=batch), tf_lib.standard(), steps, 0, compile=False)
    else:
        common.run_lucent(model, layer, batch, steps, 0, freeze=True)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return {"contender": contender, "batch": batch, "increase_mb": _peak_mb(device) - before}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--layer", default="layer3")
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--child", nargs=2, metavar=("CONTENDER", "BATCH"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        out = child(args.child[0], args.model, args.layer, int(args.child[1]), args.steps, args.device)
        print(json.dumps(out))
        return 0
    sys.path.insert(0, str(HERE))
    import torch
    from common import header, lucent_available

    torch.set_num_threads(1)
    contenders = [c for c in CONTENDERS if c != "lucent" or lucent_available() is None]
    print(header(f"peak memory increase: {args.model} {args.layer}, 224 px, {args.steps} steps, "
                 f"{args.device}, fresh process each"))
    what = "max_memory_allocated" if args.device.startswith("cuda") else "peak RSS (ru_maxrss)"
    print(f"{what} increase in MB over the built model\n")
    print(f"{'batch':>6s}" + "".join(f" {c:>9s}" for c in contenders) + f" {'ours/floor':>11s} {'ours/floor-f':>13s}"
          + (f" {'lucent/ours':>12s}" if "lucent" in contenders else ""))
    for batch in args.batches:
        row = {}
        for c in contenders:
            cmd = [sys.executable, __file__, "--model", args.model, "--layer", args.layer, "--steps", str(args.steps),
                   "--device", args.device, "--child", c, str(batch)]
            done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            if done.returncode != 0:
                raise SystemExit(f"{c} at batch {batch} failed:\n{done.stderr[-2000:]}")
            row[c] = json.loads(done.stdout.strip().splitlines()[-1])["increase_mb"]
        line = (f"{batch:>6d}" + "".join(f" {row[c]:>9.0f}" for c in contenders)
                + f" {row['ours'] / row['floor']:>11.2f}" + f" {row['ours'] / row['floor-f']:>13.2f}")
        if "lucent" in row:
            line += f" {row['lucent'] / row['ours']:>12.2f}"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
