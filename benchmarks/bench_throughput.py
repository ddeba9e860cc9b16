"""Channels per second for many channels of one layer: ours in batched renders vs lucent one by one.

Default (issue 18, item 4): 64 channels of mobilenet_v2 `features.10` (random weights), 128 px,
16 steps. Ours renders them as `--batch`-image batched objectives (`ld.render([channel(L, c) for c in
chunk], ...)`: one truncated forward per step for the whole batch); torch-lucent's `render_vis` has no
batched objectives across channels, so it renders each channel separately, as its users do. The two
alternate for `--rounds` rounds; process CPU seconds (steadier than wall time on a shared machine,
with one torch thread) and wall seconds are both reported, with the ratio ours/lucent in channels/s.

    python benchmarks/bench_throughput.py                    # 64 channels, batches of 16
    python benchmarks/bench_throughput.py --channels 16 --rounds 1 --steps 8    # quick
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (sets OMP_WAIT_POLICY before torch starts)

import lucent_dsl as ld  # noqa: E402
from lucent_dsl.models.info import IMAGENET_MEAN, IMAGENET_STD, ModelInfo, with_info  # noqa: E402


def ours(model, layer: str, channels: list[int], size: int, steps: int, batch: int) -> None:
    for i in range(0, len(channels), batch):
        chunk = channels[i:i + batch]
        ld.render([ld.channel(layer, c) for c in chunk], model, size=size, steps=steps, progress=False,
                  precision="fp32", compile=False)


def lucent(model, layer: str, channels: list[int], size: int, steps: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from lucent.optvis import objectives, param, render as lrender

        for c in channels:
            lrender.render_vis(model, objectives.channel(layer.replace(".", "_"), c),
                               param_f=lambda: param.image(size), thresholds=(steps,), show_image=False,
                               progress=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="mobilenet_v2")
    ap.add_argument("--layer", default="features.10")
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    common.set_threads(args.threads)
    print(common.header("bench_throughput: channels/s, ours batched vs torch-lucent one render per channel"))
    why = common.lucent_available()
    model = common.build_model(args.model)
    with_info(model, ModelInfo(IMAGENET_MEAN, IMAGENET_STD, None, 3, None, args.model, resize=False))
    channels = list(range(args.channels))
    print(f"{args.model} {args.layer}, {args.channels} channels, {args.size} px, {args.steps} steps, "
          f"ours in batches of {args.batch}; {args.rounds} alternating round(s)")
    results: dict[str, list[tuple[float, float]]] = {"ours": [], "lucent": []}
    for _ in range(args.rounds):
        for name in ("ours", "lucent"):
            if name == "lucent" and why is not None:
                continue
            w0, c0 = time.perf_counter(), time.process_time()
            if name == "ours":
                ours(model, args.layer, channels, args.size, args.steps, args.batch)
            else:
                lucent(model, args.layer, channels, args.size, args.steps)
            results[name].append((time.perf_counter() - w0, time.process_time() - c0))
    print("| contender | wall s (best) | CPU s (best) | channels/s (CPU) |")
    print("|---|---|---|---|")
    best = {}
    for name, runs in results.items():
        if not runs:
            print(f"| {name} | not run ({why}) | | |")
            continue
        wall, cpu = min(r[0] for r in runs), min(r[1] for r in runs)
        best[name] = cpu
        print(f"| {name} | {wall:.1f} | {cpu:.1f} | {args.channels / cpu:.2f} |")
    if len(best) == 2:
        print(f"ratio ours/lucent in channels per CPU second: {best['lucent'] / best['ours']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
