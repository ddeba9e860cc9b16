"""What a render decides from the machine it runs on, as values and pure functions.

Every capability decision (the precision `"auto"` picks, whether `compile="auto"` compiles, whether the
non-finite check is deferred to a device-side flag, whether bf16 is emulated) reads one `Hardware`
value, made once per render by `Hardware.of(device)` from torch's probes. The decisions are pure
functions of that value, so the suite tests them on every machine class (a CUDA GPU with and without
bf16, a CPU with native bf16, an AVX2 CPU) whatever machine it runs on, and can run a CPU render down
the path a GPU would take.

Example:
    >>> AVX2 = Hardware("cpu", bf16=False)
    >>> AMPERE = Hardware("cuda", bf16=True)
    >>> auto_precision(AVX2, depthwise=False, pixels=224 * 224), auto_precision(AMPERE, depthwise=True, pixels=1)
    ('fp32', 'bf16')
    >>> defers_nonfinite_check(AMPERE, "raise"), defers_nonfinite_check(AVX2, "raise")
    (True, False)
"""
from __future__ import annotations

import dataclasses as dc
from collections.abc import Iterable

import torch
from torch import nn

# precision="auto" on a CPU picks bf16 only where it was measured to pay (benchmarks/README.md, "precision='auto'
# by machine class"; 2-core AVX-512 BF16 EPYC, one thread, bench_step.py): resnet18 layer3 ran 1.2x faster in bf16 at
# 64 px, 1.6x at 128 px, 1.7x at 224 px (1.85x at batch 16); mobilenet_v2 features.14 (depthwise convolutions, slow
# in oneDNN's bf16) 1.29x slower at 224 px, batch 1 (1.08x faster at batch 16: too little to pick it by default).
AUTO_BF16_MIN_PIXELS = 64 * 64  # per step (images x H x W of the rendered image); smaller work was not measured

# compile="auto" on the CPU compiles renders of at least this many steps; None: never (benchmarks/README.md: since
# the eager runner folds BatchNorms and runs channels-last, the compiled step was 1.2-2.7x slower on the CPU).
CPU_COMPILE_MIN_STEPS: int | None = None


@dc.dataclass(frozen=True)
class Hardware:
    """The facts about a device that a render's decisions depend on.

    Attributes:
        device_type: "cpu", "cuda", "mps", ...
        bf16: native bf16 arithmetic: a CUDA GPU that supports it (compute capability 8 and up), or a CPU
            whose oneDNN has bf16 kernels (AVX-512 BF16 or AMX). Elsewhere bf16 is emulated, and slow.
    """

    device_type: str
    bf16: bool

    @classmethod
    def of(cls, device: torch.device) -> Hardware:
        """Read from torch's probes (`torch.cuda.is_bf16_supported`, oneDNN's bf16 check)."""
        if device.type == "cuda":
            return cls("cuda", bf16=bool(torch.cuda.is_bf16_supported()))
        if device.type == "cpu":
            return cls("cpu", bf16=cpu_has_bf16(strict=True))
        return cls(device.type, bf16=False)


def cpu_has_bf16(strict: bool = False) -> bool:
    """Whether oneDNN has native bf16 kernels on this CPU (when torch cannot tell: not `strict`)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return not strict


def auto_precision(hw: Hardware, *, depthwise: bool, pixels: int) -> str:
    """What `precision="auto"` means on `hw`: bf16 on CUDA GPUs with bf16; on CPUs with native bf16 for
    models without depthwise convolutions and at least `AUTO_BF16_MIN_PIXELS` rendered pixels per step;
    fp32 everywhere else.

    Example:
        >>> auto_precision(Hardware("cpu", bf16=True), depthwise=True, pixels=224 * 224)
        'fp32'
    """
    if hw.device_type == "cuda":
        return "bf16" if hw.bf16 else "fp32"
    if hw.device_type == "cpu" and hw.bf16 and pixels >= AUTO_BF16_MIN_PIXELS and not depthwise:
        return "bf16"
    return "fp32"


def has_depthwise(models: Iterable[nn.Module]) -> bool:
    """Whether any model has a depthwise convolution (groups == in_channels > 1)."""
    return any(isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels
               for model in models for m in model.modules())


def resolve_precision(precision: str, models: Iterable[nn.Module], device: torch.device, size: tuple[int, int],
                      n: int, hw: Hardware | None = None) -> str:
    """"auto" -> `auto_precision` on `hw` (default: `Hardware.of(device)`) for these models and `n` images of
    `size`; "fp32" and "bf16" as they are. A render and a recipe resolve "auto" by this one rule, so what a file
    records is what ran.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3))
        >>> resolve_precision("auto", [net], torch.device("cpu"), (224, 224), 1, Hardware("cpu", bf16=True))
        'bf16'
        >>> resolve_precision("auto", [net], torch.device("cpu"), (16, 16), 1, Hardware("cpu", bf16=True))
        'fp32'
    """
    if precision != "auto":
        return precision
    models = list(models)
    hw = hw or Hardware.of(device)
    return auto_precision(hw, depthwise=has_depthwise(models), pixels=n * size[0] * size[1])


def bf16_is_emulated(hw: Hardware, precision: str) -> bool:
    """Whether `precision` asks for bf16 on a CPU without bf16 units (it runs, 12-16x slower: a warning)."""
    return precision == "bf16" and hw.device_type == "cpu" and not hw.bf16


def auto_compiles(hw: Hardware, steps: int) -> bool:
    """What `compile="auto"` means on `hw`: always on CUDA; on the CPU only past `CPU_COMPILE_MIN_STEPS`."""
    if hw.device_type == "cuda":
        return True
    return CPU_COMPILE_MIN_STEPS is not None and steps >= CPU_COMPILE_MIN_STEPS


def defers_nonfinite_check(hw: Hardware, on_nonfinite: str) -> bool:
    """Whether the per-step non-finite check folds into a device-side flag read every few steps.

    On CUDA a per-step `bool(...)` would stall the GPU; on the CPU a host read costs nothing. "skip" must
    decide before every optimizer step, so it never defers.
    """
    return on_nonfinite == "raise" and hw.device_type == "cuda"
