"""The README's main job on a busy machine: which thread count and OpenMP wait policy should be the default?

Runs `lucent-dsl render 'channel("features.14", 10)' --steps N --out ...` (the README's main job, on the zoo's
MobileNetV2) as a fresh process per run, in each configuration below, alternating the configurations round by
round, first on an idle machine, then while `--load` busy Python processes spin on the CPU (by default one per
core), then while one other PyTorch process multiplies matrices on every core. Prints wall seconds per run (median over rounds) and each configuration's
ratio to the fastest one.

    python benchmarks/bench_threads_under_load.py --steps 64 --rounds 2

Configurations: threads (torch's default = the core count, or 1) x OpenMP's wait policy. "lucent default" is
what `lucent-dsl` does when given nothing (today: torch's threads, and OMP_WAIT_POLICY=PASSIVE set by
`import lucent_dsl` where the user set none), so its row tracks any change of the default. "libgomp default" is
the policy OpenMP picks when none is set (spin a while, then sleep): what `lucent-dsl` ran before it set PASSIVE,
reproduced by loading torch (and OpenMP with it) before lucent_dsl. ACTIVE spins without end.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (sets OMP_WAIT_POLICY/OMP_NUM_THREADS for this process only; the runs get their own)

ROOT = Path(__file__).resolve().parents[1]
# The loads: busy Python loops (one process per core), or another PyTorch job multiplying matrices on every core
# with OpenMP's default policy (a user's other training or render: two OpenMP programs each spinning on the other).
LOADS = {
    "python": ("while True:\n    pass\n", None),
    "torch": ("import torch\na = torch.randn(384, 384)\nwhile True:\n    a @ a\n", 1),
}

UNSET: dict[str, str | None] = {"OMP_WAIT_POLICY": None, "OMP_NUM_THREADS": None}
CORES = ("--threads", str(os.cpu_count() or 1))
# name -> (torch loaded before lucent_dsl, extra CLI args, environment changes; None removes the variable)
CONFIGS: dict[str, tuple[bool, tuple[str, ...], dict[str, str | None]]] = {
    "lucent default": (False, (), UNSET),
    "threads=cores, libgomp default": (True, CORES, UNSET),
    "threads=cores, PASSIVE": (False, CORES, {**UNSET, "OMP_WAIT_POLICY": "PASSIVE"}),
    "threads=cores, ACTIVE": (False, CORES, {**UNSET, "OMP_WAIT_POLICY": "ACTIVE"}),
    "threads=1, libgomp default": (True, ("--threads", "1"), UNSET),
    "threads=1, PASSIVE": (False, ("--threads", "1"), {**UNSET, "OMP_WAIT_POLICY": "PASSIVE"}),
}
TORCH_FIRST = "import sys, torch; from lucent_dsl.cli import main; sys.exit(main())"


def env_for(changes: dict[str, str | None]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in changes}
    env.update({k: v for k, v in changes.items() if v is not None})
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(ROOT)
    return env


def run_once(torch_first: bool, args: tuple[str, ...], changes: dict[str, str | None], steps: int,
             out: Path) -> float:
    start_cmd = ["-c", TORCH_FIRST] if torch_first else ["-m", "lucent_dsl"]
    cmd = [sys.executable, *start_cmd, "render", 'channel("features.14", 10)', "--steps", str(steps),
           "--out", str(out), "-q", *args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env_for(changes), capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return took


def measure(steps: int, rounds: int, out: Path) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for _ in range(rounds):
        for name, (torch_first, args, changes) in CONFIGS.items():
            times[name].append(run_once(torch_first, args, changes, steps, out))
    return {name: statistics.median(ts) for name, ts in times.items()}


def table(title: str, medians: dict[str, float]) -> str:
    best = min(medians.values())
    rows = [f"| {name} | {t:.1f} | {t / best:.2f}x |" for name, t in medians.items()]
    return "\n".join([f"\n{title}", "| configuration | wall s (median) | vs fastest |", "|---|---|---|", *rows])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--load", type=int, default=os.cpu_count() or 1, help="busy processes during the loaded runs")
    a = p.parse_args()
    print(common.header(f"bench_threads_under_load: the README's main job at {a.steps} steps, {a.rounds} rounds"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "channel.png"
        run_once(False, ("--threads", "1"), {}, 1, out)  # warm the file cache (torch, the weights)
        print(table("idle machine", measure(a.steps, a.rounds, out)), flush=True)
        for kind, (code, count) in LOADS.items():
            n = count or a.load
            env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
            load = [subprocess.Popen([sys.executable, "-c", code], env=env) for _ in range(n)]
            try:
                what = f"{n} spinning Python processes" if kind == "python" else "another PyTorch job on every core"
                print(table(f"busy machine ({what})", measure(a.steps, a.rounds, out)), flush=True)
            finally:
                for proc in load:
                    proc.kill()
                    proc.wait()


if __name__ == "__main__":
    main()
