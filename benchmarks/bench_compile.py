"""Is `compile=True` worth it on the CPU? Compile time against the per-step saving, and the break-even.

For one model / layer / batch (default resnet18 layer3, batch 1, 224 px, FFT parameterization,
`transforms.standard()`), it measures:

1. cold compile: the first `render(compile=True)` in a fresh process with an empty inductor cache
   (a new `TORCHINDUCTOR_CACHE_DIR`, unless --warm-cache), as time to the end of the first step
   minus a steady compiled step;
2. warm compile: the same after `torch._dynamo.reset()` and clearing render's cache, so dynamo
   traces again but inductor finds its compiled code on disk (what a second process pays);
3. seconds per step, eager and compiled, alternating in rounds.

break-even steps = compile seconds / (eager step - compiled step): the run length from which
compiling saves time overall. Compare with `lucent_dsl.renderer.phases.CPU_COMPILE_MIN_STEPS`.

    python benchmarks/bench_compile.py                      # resnet18 layer3, batch 1
    python benchmarks/bench_compile.py --batch 16 --steps 3 --rounds 2
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

if "--warm-cache" not in sys.argv:
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="lucent_dsl_bench_inductor_")

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (sets OMP_WAIT_POLICY before torch starts)
import torch  # noqa: E402
from common import alternate, build_model, make_plan, median, run_ours, set_threads  # noqa: E402

from lucent_dsl import (
    param as param_lib,  # noqa: E402
    transforms as tf_lib,  # noqa: E402
)
from lucent_dsl.renderer.phases import CPU_COMPILE_MIN_STEPS  # noqa: E402


def _compile_once(plan, p, t, steps: int) -> tuple[float, float, float]:
    """(compile seconds, wall seconds, main-process CPU seconds) of one render that compiles."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    run = run_ours(plan, p, t, steps, 0, compile=True)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return run.first - median(run.steps), wall, cpu


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--layer", default="layer3")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per run (default 8)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds eager / compiled (default 3)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warm-cache", action="store_true",
                    help="keep the usual inductor cache dir (default: a fresh one, so the first compile is cold)")
    args = ap.parse_args(argv)

    common.SIZE = args.size
    threads = set_threads(args.threads)
    print(common.header("bench_compile: cold compile cost vs steps saved"))
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, torch threads {threads}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; load average {os.getloadavg()[0]:.1f}")
    print(f"{args.model} {args.layer}, batch {args.batch}, {args.size} px, fft + standard(); "
          f"inductor cache {os.environ.get('TORCHINDUCTOR_CACHE_DIR', '(default)')}")
    model = build_model(args.model)
    plan = make_plan(model, args.layer)
    p, t = param_lib.fft(args.size, batch=args.batch), tf_lib.standard()

    run_ours(plan, p, t, 2, 0, compile=False)  # eager warm-up: allocator, oneDNN primitives
    cold, cold_wall, cold_cpu = _compile_once(plan, p, t, 3)
    print(f"compile, first in this process: {cold:.1f} s (render wall {cold_wall:.1f} s, "
          f"main-process CPU {cold_cpu:.1f} s)", flush=True)
    torch._dynamo.reset()
    plan.steps.clear()  # compiled steps live on their plan (renderer.steps.compiled_step)
    warm, warm_wall, warm_cpu = _compile_once(plan, p, t, 3)
    print(f"compile again, inductor cache on disk: {warm:.1f} s (render wall {warm_wall:.1f} s, "
          f"main-process CPU {warm_cpu:.1f} s)", flush=True)

    runs = alternate({
        "eager": lambda: run_ours(plan, p, t, args.steps, args.warmup, compile=False),
        "compiled": lambda: run_ours(plan, p, t, args.steps, args.warmup, compile=True),
    }, args.rounds)
    eager = median([s for r in runs["eager"] for s in r.steps])
    comp = median([s for r in runs["compiled"] for s in r.steps])
    per_round = {k: [round(median(r.steps), 4) for r in rs] for k, rs in runs.items()}
    saving = eager - comp
    print(f"wall per step: eager {eager:.4f} s, compiled {comp:.4f} s, saving {saving * 1e3:.1f} ms "
          f"({100 * saving / eager:.1f}%); per-round medians {per_round}")
    cpu_e = median([s for r in runs["eager"] for s in r.cpu])
    cpu_c = median([s for r in runs["compiled"] for s in r.cpu])
    print(f"process CPU per step: eager {cpu_e:.4f} s, compiled {cpu_c:.4f} s, "
          f"saving {(cpu_e - cpu_c) * 1e3:.1f} ms ({100 * (cpu_e - cpu_c) / cpu_e:.1f}%)")
    for label, c in (("cold", cold), ("warm cache", warm)):
        if saving > 0:
            print(f"break-even ({label}): {c:.1f} s / {saving:.4f} s = {c / saving:.0f} steps")
        else:
            print(f"break-even ({label}): never (compiled is not faster)")
    print(f"CPU_COMPILE_MIN_STEPS = {CPU_COMPILE_MIN_STEPS}; load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
