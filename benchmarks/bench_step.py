"""Seconds per optimization step: the floor, our render (eager and compiled), and torch-lucent.

For each model / layer / batch it runs, alternating in rounds (floor, ours eager, ours compiled,
lucent, then again), and prints the median seconds per step of each and their ratios:

- floor: the model's own modules (`compile_plan(..., fuse=False)`: the fx graph cut, NCHW, no
  folding) on a raw (B, 3, 224, 224) pixel leaf, input-only backward, Adam. No parameterization,
  transforms, preprocessing or checks.
- floor-f: the same with our default plan (BatchNorms folded into convolutions, channels-last;
  `lucent_dsl.plan.fold`): the floor of our own runner, so ours/floor-f is the cost of everything else.
- ours: `lucent_dsl.render` with `param.fft(224, batch=B)` (decorrelated colour, sigmoid) and
  `transforms.standard()`; `compile=False`, and `compile=True` timed after a warm-up render that
  compiles (its compile time is reported apart). `--bf16` adds `precision="bf16"` (eager).
- lucent: `lucent.optvis.render.render_vis` with its standard settings (if torch-lucent imports).

Every contender's optimizer is the same Adam (lr 0.05), which stamps the time after each step; see
`common.py`. Random weights (`weights=None`): speed does not depend on them.

    python benchmarks/bench_step.py                 # the full table (see README.md for its cost)
    python benchmarks/bench_step.py --quick         # smoke test, < 1 minute
    python benchmarks/bench_step.py --models resnet18:layer3 --batches 1 --steps 8 --rounds 3
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (sets OMP_WAIT_POLICY before torch starts)
import torch  # noqa: E402
from common import (  # noqa: E402
    DEFAULT_CONFIGS,
    alternate,
    build_model,
    lucent_available,
    make_plan,
    median,
    run_floor,
    run_lucent,
    run_ours,
    set_threads,
)

from lucent_dsl import (
    param as param_lib,  # noqa: E402
    transforms as tf_lib,  # noqa: E402
)


def parse_models(spec: str) -> list[tuple[str, str]]:
    """"resnet18,mobilenet_v2:features.14" -> [(model, layer), ...]; a bare model takes its default layers."""
    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, layer = item.partition(":")
        if layer:
            out.append((name, layer))
        elif name in DEFAULT_CONFIGS:
            out += [(name, lay) for lay in DEFAULT_CONFIGS[name]]
        else:
            raise SystemExit(f"--models: {name!r} has no default layers; write {name}:LAYER")
    return out


def parse_batches(spec: str) -> list[int]:
    return [int(b) for b in spec.split(",") if b.strip()]


def fmt(x: float, digits: int = 3) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def ratio(a: float, b: float) -> str:
    return "-" if a is None or b is None or math.isnan(a) or math.isnan(b) or b == 0 else f"{a / b:.2f}"


HEADER = (f"{'model':<13} {'layer':<12} {'B':>3} | {'floor':>7} {'floor-f':>7} {'ours':>7} {'ours-c':>7} "
          f"{'ours-bf':>7} {'compile':>8} {'lucent':>7} | {'ours/fl':>7} {'ours/flf':>8} {'oursc/fl':>8} "
          f"{'luc/ours':>8} {'luc/oursc':>9} {'luc/bf':>6}")


def row(name: str, layer: str, batch: int, med: dict[str, float], compile_s: float) -> str:
    fl, flf, ours, oc, bf, luc = (med.get(k, float("nan")) for k in ("floor", "floor-f", "ours", "ours-c", "ours-bf16", "lucent"))
    return (f"{name:<13} {layer:<12} {batch:>3} | {fmt(fl):>7} {fmt(flf):>7} {fmt(ours):>7} {fmt(oc):>7} {fmt(bf):>7} "
            f"{fmt(compile_s, 1):>8} {fmt(luc):>7} | {ratio(ours, fl):>7} {ratio(ours, flf):>8} {ratio(oc, fl):>8} "
            f"{ratio(luc, ours):>8} {ratio(luc, oc):>9} {ratio(luc, bf):>6}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="resnet18,mobilenet_v2",
                    help="comma-separated model[:layer] (default: resnet18 layer3/layer4, mobilenet_v2 features.10/features.14)")
    ap.add_argument("--batches", default="1,16", help="comma-separated batch sizes (default 1,16)")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per run at batches < 8 (default 6)")
    ap.add_argument("--steps-large", type=int, default=2, help="timed steps per run at batches >= 8 (default 2)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps per run after the first, batches < 8 (default 1)")
    ap.add_argument("--warmup-large", type=int, default=0, help="the same at batches >= 8 (default 0)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of all contenders (default 3)")
    ap.add_argument("--size", type=int, default=224, help="image size (default 224)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--no-compile", action="store_true", help="skip the compiled render")
    ap.add_argument("--compile-batches", default="1",
                    help="batches that also get a compiled render: comma-separated, or 'all' (default 1: "
                         "each compile costs minutes on a CPU)")
    ap.add_argument("--bf16", action="store_true", help="add our eager render with precision='bf16'")
    ap.add_argument("--no-lucent", action="store_true", help="skip torch-lucent even if it is installed")
    ap.add_argument("--lucent-freeze", action="store_true",
                    help="freeze the model's weights for lucent too (not lucent's documented use; shows what its "
                         "weight gradients cost)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: resnet18:layer3, batch 1, 2 steps, 1 round, no compile")
    args = ap.parse_args(argv)
    if args.quick:
        args.models, args.batches = "resnet18:layer3", "1"
        args.steps, args.warmup, args.rounds, args.no_compile = 2, 1, 1, True

    common.SIZE = args.size
    threads = set_threads(args.threads)
    configs = parse_models(args.models)
    batches = parse_batches(args.batches)
    compile_batches = (set() if args.no_compile else set(batches) if args.compile_batches == "all"
                       else set(parse_batches(args.compile_batches)))
    why_no_lucent = "--no-lucent" if args.no_lucent else lucent_available()

    load0 = os.getloadavg()
    print(common.header("bench_step: seconds per render step, ours vs the floor vs torch-lucent"))
    print(f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, torch threads {threads} "
          f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')})")
    print(f"size {args.size}; per run: timed steps {args.steps}, warm-up {args.warmup} (batch >= 8: {args.steps_large}, "
          f"{args.warmup_large}); "
          f"rounds {args.rounds}; load average at start {load0[0]:.1f}")
    print("lucent: " + ("torch-lucent " + _lucent_version() if why_no_lucent is None else f"skipped ({why_no_lucent})"))
    print("wall seconds per step (time.perf_counter), median over all timed steps of all rounds; "
          "compile = wall time to the end of the first compiled step - median step\n")

    print(HEADER)
    print("-" * len(HEADER), flush=True)
    t_start = time.perf_counter()
    cpu_rows = []
    for name, layer in configs:
        model = build_model(name)
        plan = make_plan(model, layer)
        plain = make_plan(model, layer, fuse=False)
        for batch in batches:
            steps, warmup = (args.steps, args.warmup) if batch < 8 else (args.steps_large, args.warmup_large)
            p = param_lib.fft(args.size, batch=batch)
            t = tf_lib.standard()
            contenders = {
                "floor": lambda: run_floor(plain, batch, steps, warmup),
                "floor-f": lambda: run_floor(plan, batch, steps, warmup),
                "ours": lambda: run_ours(plan, p, t, steps, warmup, compile=False),
            }
            if args.bf16:
                contenders["ours-bf16"] = lambda: run_ours(plan, p, t, steps, warmup, compile=False, precision="bf16")
            compile_s = float("nan")
            if batch in compile_batches:
                # warm-up render: compiles the step (the compile cache keys on plan, p and t)
                warm = run_ours(plan, p, t, 2, 0, compile=True)
                compile_s = warm.first - median(warm.steps)
                contenders["ours-c"] = lambda: run_ours(plan, p, t, steps, warmup, compile=True)
            if why_no_lucent is None:
                contenders["lucent"] = lambda: run_lucent(model, layer, batch, steps, warmup, args.lucent_freeze)
            runs = alternate(contenders, args.rounds)
            wall = {k: median([s for r in rs for s in r.steps]) for k, rs in runs.items()}
            cpu = {k: median([s for r in rs for s in r.cpu]) for k, rs in runs.items()}
            print(row(name, layer, batch, wall, compile_s), flush=True)
            cpu_rows.append(row(name, layer, batch, cpu, float("nan")))
    print("\nthe same runs, process CPU seconds per step (time.process_time: excludes time spent waiting for a core)")
    print(HEADER)
    print("-" * len(HEADER))
    print("\n".join(cpu_rows))
    load1 = os.getloadavg()
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s; load average at end {load1[0]:.1f} "
          f"(1 min), {load1[1]:.1f} (5 min) on {os.cpu_count()} CPUs")
    return 0


def _lucent_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{version('torch-lucent')}, kornia {version('kornia')}"
    except PackageNotFoundError:
        return "(version unknown)"


if __name__ == "__main__":
    sys.exit(main())
