"""GPU figures in one short table: compiled step (CUDA graphs) vs the compiled floor vs torch-lucent,
fp32 vs bf16, batch 1 and 16; 64-channel throughput; atlas channels/s at batch 1-64.

Run by `benchmarks/gpu.sh` on one card (under 8 minutes on an H100/H200-class GPU). Every time is
the median over timed steps after warm-up, with `torch.cuda.synchronize()` around the timed region
only (our loop itself does not sync per step). `--device cpu --quick` is a smoke test anywhere.

    python benchmarks/bench_gpu.py                 # on a CUDA machine
    python benchmarks/bench_gpu.py --device cpu --quick
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import torch  # noqa: E402

import lucent_dsl as ld  # noqa: E402
from lucent_dsl.plan.fold import frozen_models  # noqa: E402


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_steps(step, device: str, steps: int, warmup: int) -> float:
    """Median seconds per call of `step()` after `warmup` calls (synchronized per timed call)."""
    for _ in range(warmup):
        step()
    _sync(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def floor_step(plan, batch: int, size: int, device: str, compiled: bool):
    (name, runner), = plan.runners.items()
    layer = plan.sites[0].module_path
    x = (torch.randn(batch, 3, size, size, device=device) * 0.01).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=0.05)

    def loss_of(x):
        return -runner(x)[layer][:, common.CHANNEL].mean()

    fn = torch.compile(loss_of) if compiled else loss_of

    def step():
        opt.zero_grad(set_to_none=True)
        fn(x).backward()
        opt.step()
    return step


def ours_seconds(plan, batch: int, size: int, steps: int, warmup: int, compile_mode, precision: str) -> float:
    stamps: list[float] = []

    class Stamped(torch.optim.Adam):
        def step(self, closure=None):  # type: ignore[override]
            out = super().step(closure)
            stamps.append(time.perf_counter())
            return out

    p = ld.param.fft(size, batch=batch)
    t = ld.transforms.standard()
    ld.render(plan, param=p, transforms=t, steps=warmup + 1, optimizer=lambda ls: Stamped(ls, lr=0.05),
              compile=compile_mode is not None, compile_mode=compile_mode, precision=precision, progress=False)
    stamps.clear()
    t0 = time.perf_counter()
    ld.render(plan, param=p, transforms=t, steps=steps, optimizer=lambda ls: Stamped(ls, lr=0.05),
              compile=compile_mode is not None, compile_mode=compile_mode, precision=precision, progress=False)
    _sync(str(plan.device))
    return (time.perf_counter() - t0) / steps


def lucent_seconds(model, layer: str, batch: int, size: int, steps: int) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from lucent.optvis import objectives, param, render as lrender
        t0 = time.perf_counter()
        lrender.render_vis(model, objectives.channel(layer.replace(".", "_"), common.CHANNEL),
                           param_f=lambda: param.image(size, batch=batch), thresholds=(steps,), show_image=False,
                           progress=False)
    return (time.perf_counter() - t0) / steps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--layer", default="layer3")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.size, args.steps = 64, 3
    dev = args.device
    print(common.header(f"bench_gpu on {dev}"))
    model = common.build_model(args.model).to(dev)
    plan = ld.compile_plan(ld.channel(args.layer, common.CHANNEL), model)
    why = common.lucent_available()
    graphs = "reduce-overhead" if dev.startswith("cuda") else None  # CPU smoke test: eager (a cold compile costs minutes)
    print("| batch | floor compiled s | ours compiled+graphs fp32 | ours bf16 | lucent | ours/floor | lucent/ours |")
    print("|---|---|---|---|---|---|---|")
    for batch in ((1, 2) if args.quick else (1, 16)):
        with frozen_models([model]):
            floor = time_steps(floor_step(plan, batch, args.size, dev, compiled=graphs is not None), dev, args.steps, 5)
        fp32 = ours_seconds(plan, batch, args.size, args.steps, 5, graphs, "fp32")
        bf16 = ours_seconds(plan, batch, args.size, args.steps, 5, graphs, "bf16") if graphs else float("nan")
        luc = lucent_seconds(model, args.layer, batch, args.size, args.steps) if why is None else float("nan")
        print(f"| {batch} | {floor:.4f} | {fp32:.4f} | {bf16:.4f} | {luc:.4f} | {fp32 / floor:.2f} | {luc / fp32:.2f} |")
    # 64 channels of mobilenet_v2 features.10, 128 px, 16 steps: ours in 4 batches of 16 vs lucent one by one
    mnet = common.build_model("mobilenet_v2").to(dev)
    n, steps = (8, 2) if args.quick else (64, 16)
    _sync(dev)
    t0 = time.perf_counter()
    for i in range(0, n, 16):
        ld.render([ld.channel("features.10", c) for c in range(i, min(n, i + 16))], mnet, size=128, steps=steps,
                  progress=False)
    _sync(dev)
    ours_t = time.perf_counter() - t0
    luc_t = float("nan")
    if why is None:
        t0 = time.perf_counter()
        for _ in range(n):
            lucent_seconds(mnet, "features.10", 1, 128, steps)
        luc_t = time.perf_counter() - t0
    print(f"\n{n} channels mobilenet_v2 features.10, 128 px, {steps} steps: ours {n / ours_t:.2f} channels/s, "
          f"lucent {n / luc_t:.2f} channels/s, ratio {luc_t / ours_t:.2f}x")
    if dev.startswith("cuda"):
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
