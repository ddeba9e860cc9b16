"""Atlas throughput: channels per second for 1 and 2 CPU processes, and per batch size on one GPU.

CPU: runs the real command, `python -m lucent_dsl atlas ...` (1 process) and
`torchrun --standalone --nproc-per-node=2 -m lucent_dsl atlas ...` (2 processes), one thread each
(`OMP_NUM_THREADS=1`, `OMP_WAIT_POLICY=PASSIVE`), each into a fresh folder, and reads the
timings the atlas writes (`manifest.json`'s `run`, and the per-batch `seconds` of each
`manifest.rank{R}.json`). Two rates are printed:

- steady: channels rendered after each rank's first batch, divided by the time they took, summed
  over ranks. The first batch of a process pays one-off costs (torch.optim imports torch._dynamo,
  10+ s on a loaded machine; a compile when compiling), which a long atlas amortizes away. This
  is the figure to size a cluster with.
- all-in: every channel over the whole render phase (first batches included; process start and
  model building are not included, the `wall` column has them).

`channel-steps/s` = channels/s x steps: time per channel grows linearly with steps, so an atlas
with S steps renders at (channel-steps/s) / S channels per second.

GPU (when CUDA is available): one process, `atlas.run_atlas` on `cuda:0`, for each batch size
(default 1, 2, 4, ..., 64): 3 batches, the first one (compile, warm-up) not timed.

    python benchmarks/bench_atlas.py                       # CPU 1 and 2 processes; GPU batches if CUDA
    python benchmarks/bench_atlas.py --quick               # a smoke test
    python benchmarks/bench_atlas.py --model torchvision:resnet50 --layer layer4 --size 224 --steps 4 \\
        --channels 0:8 --batch 2                           # a resnet50 figure on the CPU (slow)
    python benchmarks/bench_atlas.py --no-cpu --gpu-model torchvision:resnet50 --gpu-layer layer4
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return env


def steady_rate(rank_docs: list[dict]) -> float | None:
    """Channels/s after each rank's first batch, summed over ranks (None: too few batches)."""
    total = 0.0
    for doc in rank_docs:
        times = sorted({e["seconds"] for e in doc["channels"]})
        if len(times) < 2:
            return None
        first = times[0]
        later = [e for e in doc["channels"] if e["seconds"] > first]
        total += len(later) / (times[-1] - first)
    return total


def run_cpu(procs: int, args: argparse.Namespace) -> dict:
    """One atlas run with `procs` processes into a fresh folder; its timings."""
    with tempfile.TemporaryDirectory(prefix="bench_atlas_") as tmp:
        out = Path(tmp) / "atlas"
        cli = ["atlas", args.layer, "--model", args.model, "--channels", args.channels, "--size", str(args.size),
               "--steps", str(args.steps), "--batch", str(args.batch), "--compile", args.compile,
               "--out", str(out), "-q", "--device", "cpu"]
        if procs == 1:
            cmd = [sys.executable, "-m", "lucent_dsl", *cli]
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}",
                   "-m", "lucent_dsl", *cli]
        start = time.perf_counter()
        done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
        run = json.loads((out / "manifest.json").read_text())["run"]
        ranks = [json.loads((out / f"manifest.rank{r}.json").read_text()) for r in range(procs)]
    return {"procs": procs, "channels": run["rendered"], "seconds": run["seconds"],
            "all_in": run["channels_per_second"], "steady": steady_rate(ranks), "wall": wall}


def bench_gpu(args: argparse.Namespace) -> list[dict]:
    import torch

    from lucent_dsl import atlas
    from lucent_dsl.models.specs import build_models
    from lucent_dsl.plan.probe import channel_count
    from lucent_dsl.replay import Recipe

    model = build_models([args.gpu_model], device="cuda:0")
    base = Recipe(objective=atlas.AtlasJob(args.gpu_layer, 0, 0).objective, models=(args.gpu_model,),
                  size=(args.gpu_size, args.gpu_size), steps=args.gpu_steps).resolved(model)
    count = channel_count(model, args.gpu_layer, base.size)
    rows = []
    for b in args.gpu_batches:
        n = 3 * b
        if n > count:
            print(f"  batch {b}: skipped ({args.gpu_layer} has {count} channels < 3 batches)")
            continue
        jobs = atlas.atlas_jobs(args.gpu_layer, range(n))
        stamps: list[float] = []

        def on_batch(_chunk, stamps=stamps):
            torch.cuda.synchronize()
            stamps.append(time.perf_counter())

        with tempfile.TemporaryDirectory(prefix="bench_atlas_gpu_") as tmp:
            torch.cuda.synchronize()
            start = time.perf_counter()
            atlas.run_atlas(jobs, base, model, tmp, batch=b, device="cuda:0", compile=args.gpu_compile_flag,
                            progress=False, on_batch=on_batch)
        rate = 2 * b / (stamps[-1] - stamps[0])
        rows.append({"batch": b, "first_batch_s": stamps[0] - start, "steady": rate,
                     "channel_steps": rate * args.gpu_steps, "mem_gib": torch.cuda.max_memory_allocated() / 2**30})
        torch.cuda.reset_peak_memory_stats()
        print(f"  batch {b:3d}: {rate:8.3f} channels/s  {rate * args.gpu_steps:10.1f} channel-steps/s  "
              f"(first batch {stamps[0] - start:6.1f} s, peak {rows[-1]['mem_gib']:.1f} GiB)", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="torchvision:mobilenet_v2")
    p.add_argument("--layer", default="features.4")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--channels", default="0:24")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--compile", choices=("auto", "on", "off"), default="off")
    p.add_argument("--procs", default="1,2", help="process counts on the CPU (default: 1,2)")
    p.add_argument("--no-cpu", action="store_true")
    p.add_argument("--gpu-model", default="torchvision:resnet50")
    p.add_argument("--gpu-layer", default="layer4", help="default: resnet50's last block, the whole network (the dearest channels)")
    p.add_argument("--gpu-size", type=int, default=224)
    p.add_argument("--gpu-steps", type=int, default=32)
    p.add_argument("--gpu-batches", default="1,2,4,8,16,32,64")
    p.add_argument("--gpu-compile", choices=("auto", "on", "off"), default="auto")
    p.add_argument("--quick", action="store_true", help="tiny settings: a smoke test")
    args = p.parse_args()
    if args.quick:
        args.size, args.steps, args.channels, args.batch = 32, 4, "0:8", 2
        args.gpu_steps, args.gpu_batches = 4, "1,2"
    args.gpu_batches = [int(b) for b in args.gpu_batches.split(",") if b.strip()]
    args.gpu_compile_flag = {"auto": "auto", "on": True, "off": False}[args.gpu_compile]

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import common

    print(common.header("bench_atlas: channels per second, 1 and 2 CPU processes (and GPU batches)"))
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "")
    if not args.no_cpu:
        print(f"CPU, one thread per process: {args.model} {args.layer}, channels {args.channels}, "
              f"{args.size}x{args.size}, {args.steps} steps, batch {args.batch}, compile {args.compile}")
        print(f"  {'procs':>5} {'channels':>8} {'steady ch/s':>11} {'ch-steps/s':>10} {'all-in ch/s':>11} {'render s':>8} {'wall s':>7}")
        for procs in [int(n) for n in args.procs.split(",")]:
            r = run_cpu(procs, args)
            steady = "-" if r["steady"] is None else f"{r['steady']:.3f}"
            steps = "-" if r["steady"] is None else f"{r['steady'] * args.steps:.3g}"
            print(f"  {procs:>5} {r['channels']:>8} {steady:>11} {steps:>10} {r['all_in']:>11.3f} "
                  f"{r['seconds']:>8.1f} {r['wall']:>7.1f}", flush=True)
    if torch.cuda.is_available():
        print(f"GPU {torch.cuda.get_device_name(0)}: {args.gpu_model} {args.gpu_layer}, {args.gpu_size}x{args.gpu_size}, "
              f"{args.gpu_steps} steps, compile {args.gpu_compile}")
        bench_gpu(args)
    else:
        print("no CUDA device: GPU batch sizes not measured (run this script on a GPU machine)")


if __name__ == "__main__":
    main()
