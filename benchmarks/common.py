"""Shared pieces of the benchmarks: thread settings, models, a timing optimizer, the contenders.

Import this module before torch anywhere else in a benchmark: it sets `OMP_WAIT_POLICY=PASSIVE`
and `OMP_NUM_THREADS` before OpenMP starts, so a shared machine is not spun on by idle threads.

Every contender is timed the same way: its optimizer is a `TimedAdam`, which records
`time.perf_counter()` (and `time.process_time()`) right after each `step()`. The gap between two consecutive stamps is one
whole iteration of that contender's loop (random draws, zero_grad, forward, backward, checks and
the Adam update), measured from outside without changing the loop. The first `warmup` gaps of a
run are dropped; the gap before the first stamp (setup, and compilation on a cold compile) is kept
apart as `first`.

On a machine shared with other processes, wall time per step includes the time the process waits
for a core; process CPU time does not, so with one torch thread it is the steadier measure of the
work a step does (it still feels cache and memory-bandwidth contention).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import copy  # noqa: E402
import dataclasses as dc  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import lucent_dsl as ld  # noqa: E402
from lucent_dsl import (
    param as param_lib,  # noqa: E402
    render,  # noqa: E402
    transforms as tf_lib,  # noqa: E402
)
from lucent_dsl.models.info import IMAGENET_MEAN, IMAGENET_STD, ModelInfo, with_info  # noqa: E402
from lucent_dsl.plan.compiler import Plan, compile_plan
from lucent_dsl.plan.fold import frozen_models  # noqa: E402

SIZE = 224
LR = 0.05
SEED = 0
CHANNEL = 0

# model name -> its layers benchmarked (our dotted names; lucent replaces "." with "_")
DEFAULT_CONFIGS: dict[str, tuple[str, ...]] = {
    "resnet18": ("layer3", "layer4"),
    "mobilenet_v2": ("features.10", "features.14"),
}


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what `platform` knows."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def native_bf16() -> bool:
    """Whether oneDNN reports native bf16 kernels on this CPU (AVX-512 BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def header(title: str) -> str:
    """The first lines every benchmark prints: what machine, which torch, how many threads."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (f"# {title}\n# CPU: {cpu_model()} | capability {torch.backends.cpu.get_cpu_capability()} | native bf16: "
            f"{'yes' if native_bf16() else 'no'} | torch {torch.__version__} | torch threads {torch.get_num_threads()} "
            f"| {os.cpu_count()} CPUs | GPU: {gpu}")


def set_threads(n: int = 1) -> int:
    torch.set_num_threads(n)
    return torch.get_num_threads()


def build_model(name: str) -> nn.Module:
    """A torchvision model with random weights (speed does not depend on them), in eval mode.

    It carries the same `ModelInfo` as `lucent_dsl.zoo` gives ImageNet models: ImageNet
    normalization and a 224 x 224 input, so our render resizes the transformed image (248 px after
    `transforms.standard()`) back to 224 and the truncated model sees exactly the floor's shape.
    """
    import torchvision.models as tvm

    torch.manual_seed(SEED)
    model = getattr(tvm, name)(weights=None).eval()
    return with_info(model, ModelInfo(IMAGENET_MEAN, IMAGENET_STD, (SIZE, SIZE), 3, None, name))


class TimedAdam(torch.optim.Adam):
    """`torch.optim.Adam` that stamps `time.perf_counter()` and `time.process_time()` after every `step()`."""

    def __init__(self, params, lr: float = LR, **kw):
        super().__init__(params, lr=lr, **kw)
        self.stamps: list[tuple[float, float]] = []

    def step(self, closure=None):  # type: ignore[override]
        out = super().step(closure)
        self.stamps.append(clock())
        return out


def clock() -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds over all its threads)."""
    return time.perf_counter(), time.process_time()


@dc.dataclass
class Run:
    """One run: per-step seconds after warm-up, wall (`steps`) and process CPU time (`cpu`), and
    the wall time from the call to the end of its first step (`first`: setup, and compilation)."""

    steps: list[float]
    cpu: list[float]
    first: float


def _run_from(start: tuple[float, float], stamps: Sequence[tuple[float, float]], warmup: int) -> Run:
    if not stamps:
        raise RuntimeError("the optimizer never stepped")
    keep = slice(warmup, None) if len(stamps) - 1 > warmup else slice(-1, None)
    wall = [b[0] - a[0] for a, b in zip(stamps, stamps[1:])][keep]
    cpu = [b[1] - a[1] for a, b in zip(stamps, stamps[1:])][keep]
    return Run(wall, cpu, stamps[0][0] - start[0])


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


# ------------------------------------------------------------------------------------------ contenders


def make_plan(model: nn.Module, layer: str, fuse: bool = True) -> Plan:
    """The benchmark's plan; `fuse=False` runs the model's own modules (no BatchNorm folding, NCHW)."""
    return compile_plan(ld.channel(layer, CHANNEL), model, fuse=fuse)


def run_floor(plan: Plan, batch: int, steps: int, warmup: int) -> Run:
    """The floor: the plan's own truncated forward on a raw pixel leaf, input-only backward, Adam.

    No parameterization, no transforms, no preprocessing, no checks: the least a step can cost
    with that plan's runner (the model's own modules for `make_plan(..., fuse=False)`).
    """
    (name, runner), = plan.runners.items()
    site = plan.sites[0]
    model = plan.models[name]
    g = torch.Generator().manual_seed(SEED)
    x = (torch.randn(batch, 3, SIZE, SIZE, generator=g) * 0.01).requires_grad_(True)
    opt = TimedAdam([x])
    with frozen_models([model]):
        start = clock()
        for _ in range(warmup + steps + 1):
            opt.zero_grad(set_to_none=True)
            a = runner(x)[site.module_path]
            loss = -a[:, CHANNEL].mean((1, 2)).sum()
            loss.backward()
            opt.step()
    return _run_from(start, opt.stamps, warmup)


def run_ours(plan: Plan, p: param_lib.ImageParam, t: tf_lib.Transform, steps: int, warmup: int,
             compile: bool, precision: str = "fp32") -> Run:
    """`lucent_dsl.render` with the given parameterization and transforms (reused objects, so a
    compiled step is found in render's cache after the first call)."""
    opts: list[TimedAdam] = []

    def factory(leaves):
        opts.append(TimedAdam(leaves))
        return opts[-1]

    start = clock()
    render(plan, size=SIZE, steps=warmup + steps + 1, param=p, transforms=t, optimizer=factory,
           seed=SEED, compile=compile, precision=precision, progress=False)
    return _run_from(start, opts[0].stamps, warmup)


def lucent_available() -> str | None:
    """None when torch-lucent imports, else why not."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import lucent.optvis.render  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure means: skip lucent
        return f"{type(e).__name__}: {e}"
    return None


def run_lucent(model: nn.Module, layer: str, batch: int, steps: int, warmup: int, freeze: bool = False) -> Run:
    """`lucent.optvis.render.render_vis` with its standard settings: `param.image(224, batch=B)`
    (FFT, decorrelated), its standard transforms, ImageNet normalization, Adam(lr=0.05).

    lucent hooks every module of the model it is given and never removes the hooks, so each run
    gets a fresh deep copy (the hooks would otherwise pile up, and slow our own runs too).
    `freeze=False` is lucent's documented use (`model.eval()` only): weight gradients are then
    computed every step, as they are for a lucent user.
    """
    import numpy as np

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from lucent.optvis import objectives, param, render as lrender

    m = copy.deepcopy(model).eval()
    if freeze:
        for w in m.parameters():
            w.requires_grad_(False)
    opts: list[TimedAdam] = []

    def factory(params):
        opts.append(TimedAdam(params))
        return opts[-1]

    np.random.seed(SEED)
    torch.manual_seed(SEED)
    start = clock()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # kornia 0.4.1: torch.jit.script is deprecated
        lrender.render_vis(
            m, objectives.channel(layer.replace(".", "_"), CHANNEL),
            param_f=lambda: param.image(SIZE, batch=batch), optimizer=factory,
            thresholds=(warmup + steps + 1,), show_image=False, progress=False,
        )
    return _run_from(start, opts[0].stamps, warmup)


def alternate(contenders: dict[str, Callable[[], Run]], rounds: int) -> dict[str, list[Run]]:
    """Run every contender once per round, in the same order each round (A B C A B C ...), so
    that load from other processes falls on all of them alike."""
    out: dict[str, list[Run]] = {k: [] for k in contenders}
    for _ in range(rounds):
        for k, f in contenders.items():
            out[k].append(f())
    return out
