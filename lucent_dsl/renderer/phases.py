"""`render`: optimize an image so that a plan's objective is as high as possible.

One step: parameterization -> random transforms -> each model's preprocessing -> truncated
forwards -> plan loss -> gradient with respect to the image parameters only (the models are
frozen for the duration of the render) -> optimizer step. Random transform parameters are drawn
outside the (optionally compiled) step as tensors, so the compiled step has static shapes and
compiles once per plan, parameterization, transforms, shape and device.

Example:
    >>> import torch.nn as nn
    >>> from lucent_dsl import channel, param
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))
    >>> result = render(channel("2", 3), net, size=32, steps=8, progress=False)
    >>> result.images.shape, len(result.history["channel('2', 3)"])
    (torch.Size([1, 3, 32, 32]), 8)
"""
from __future__ import annotations

import dataclasses as dc
import functools as ft
import numbers
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from .. import param as param_lib, transforms as tf_lib
from ..dsl.expr import Expr
from ..errors import InvalidArgumentError
from ..models.checks import normalize_device
from ..plan.compiler import Plan, compile_plan, history_rows
from ..plan.fold import frozen_models
from . import steps as steps_lib
from .provenance import recipe_of
from .relu import redirected_relu
from .result import RenderResult

# compile="auto" on the CPU compiles renders of at least this many steps; None: never. Measured with
# benchmarks/bench_compile.py (2-core AMD EPYC, 1 thread, torch 2.14; see benchmarks/README.md): a cold compile
# costs 75-130 s (minutes under load), and the compiled step is ~8-11% faster for resnet18 (break-even ~5,500
# steps at batch 1, ~300 at batch 16) but 7% to 2x slower for mobilenet_v2, so it never pays there. Since the eager
# runner folds BatchNorms and runs channels-last (lucent_dsl.fold), the compiled step is 1.2-2.7x slower than the
# eager one for both models (benchmarks/bench_step.py). Auto stays off.
CPU_COMPILE_MIN_STEPS: int | None = None
_LIVE_PLANS: weakref.WeakValueDictionary[tuple, Plan] = weakref.WeakValueDictionary()  # key -> a plan still in use


def _cpu_has_bf16(strict: bool = False) -> bool:
    """Whether oneDNN has native bf16 kernels on this CPU (when torch cannot tell: not `strict`)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return not strict


def _check_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InvalidArgumentError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _as_transform(transforms: Any) -> tf_lib.Transform:
    return _standard() if transforms is None else tf_lib.as_transform_arg(transforms)


@ft.cache
def _standard() -> tf_lib.Transform:
    return tf_lib.standard()


@ft.lru_cache(maxsize=32)
def _default_param(size: tuple[int, int], batch: int, channels: int) -> param_lib.ImageParam:
    return param_lib.fft(size, batch=batch, channels=channels)


def _size(size: Any) -> tuple[int, int]:
    if isinstance(size, Sequence) and len(size) == 2:
        return _check_int("size[0]", size[0]), _check_int("size[1]", size[1])
    s = _check_int("size", size)
    return s, s


def _make_optimizer(optimizer: Any, leaves: list[Tensor], lr: float) -> torch.optim.Optimizer:
    if optimizer is None:
        return torch.optim.Adam(leaves, lr=lr)
    if isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer):
        return optimizer(leaves, lr=lr)
    if callable(optimizer):
        opt = optimizer(leaves)
        if not isinstance(opt, torch.optim.Optimizer):
            raise InvalidArgumentError(f"optimizer factory returned {type(opt).__name__}, not a torch.optim.Optimizer")
        return opt
    raise InvalidArgumentError(
        "optimizer must be a torch.optim.Optimizer class or a function params -> optimizer, "
        f"e.g. lambda p: torch.optim.Adam(p, lr=0.05); got {optimizer!r}"
    )



def _should_compile(compile: Any, device: torch.device, steps: int) -> bool:
    if compile == "auto":
        return device.type == "cuda" or (CPU_COMPILE_MIN_STEPS is not None and steps >= CPU_COMPILE_MIN_STEPS)
    if isinstance(compile, bool):
        return compile
    raise InvalidArgumentError(f"compile must be True, False or 'auto', got {compile!r}")


# precision="auto" picks bf16 only where it was measured to pay (issue 18, AVX-512 BF16 CPU, 1 thread, 224 px,
# batch 1: resnet18 layer3 0.029 s/step in bf16 vs 0.044 in fp32; mobilenet_v2 features.14 0.038 vs 0.031, slower,
# because oneDNN's bf16 depthwise convolutions are slow) and only on work large enough for it to matter.
AUTO_BF16_MIN_PIXELS = 128 * 128  # per step (images x crops x H x W at the model input is larger still)


def _has_depthwise(plan: Plan) -> bool:
    return any(isinstance(m, torch.nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels
               for model in plan.models.values() for m in model.modules())


def resolve_precision(precision: str, plan: Plan, device: torch.device, size: tuple[int, int], n: int) -> str:
    """"auto" -> "bf16" on CUDA GPUs with bf16, and on CPUs with native bf16 for plans without depthwise
    convolutions and at least `AUTO_BF16_MIN_PIXELS` pixels per step; "fp32" everywhere else.

    Example:
        >>> import torch.nn as nn
        >>> plan = compile_plan(channel("0", 1), nn.Sequential(nn.Conv2d(3, 4, 3)))
        >>> resolve_precision("auto", plan, torch.device("cpu"), (16, 16), 1)
        'fp32'
    """
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu" and _cpu_has_bf16(strict=True) and n * size[0] * size[1] >= AUTO_BF16_MIN_PIXELS \
            and not _has_depthwise(plan):
        return "bf16"
    return "fp32"


def image_channels(plan: Plan) -> int:
    """Colour channels of the rendered image: 3, or fewer when every model reads fewer (grayscale)."""
    return min(3, max((info.channels for info in plan.infos.values()), default=3))


class Settings(NamedTuple):
    """`render`'s arguments after checking (phase 1)."""

    steps: int
    size: tuple[int, int]
    lr: float
    seed: int
    precision: str
    on_nonfinite: str
    snaps_at: tuple[int, ...]
    redirect_relu: int


class Setup(NamedTuple):
    """Everything the loop needs (phase 2)."""

    plan: Plan
    n: int
    image_param: param_lib.ImageParam
    transform: tf_lib.Transform
    apply: Callable  # (image, params) -> what plan.forward reads: `transform.apply`, or `steps.model_inputs`'
    generator: torch.Generator
    leaves: dict[str, Tensor]
    shape: torch.Size
    optim: torch.optim.Optimizer
    step: Callable
    eager: Callable
    precision: str  # "fp32" or "bf16": "auto" resolved


def check_settings(*, steps: Any, size: Any, lr: Any, seed: Any, precision: Any, on_nonfinite: Any,
                   thresholds: Any, redirect_relu: Any) -> Settings:
    """Phase 1: every argument checked before any model runs."""
    steps = _check_int("steps", steps)
    if precision not in ("auto", "fp32", "bf16"):
        raise InvalidArgumentError(f"precision must be 'auto', 'fp32' or 'bf16', got {precision!r}")
    if on_nonfinite not in ("raise", "skip"):
        raise InvalidArgumentError(f"on_nonfinite must be 'raise' or 'skip', got {on_nonfinite!r}")
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not lr > 0 or lr != lr or lr == float("inf"):
        raise InvalidArgumentError(f"lr must be a positive finite number, got {lr!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise InvalidArgumentError(f"seed must be an int, got {seed!r}")
    if not 0 <= seed < 2**63:
        raise InvalidArgumentError(f"seed must be in 0 .. 2**63 - 1 (torch.Generator's range), got {seed}")
    snaps_at = tuple(sorted({_check_int("each threshold", t) for t in (thresholds or ())}))
    if snaps_at and snaps_at[-1] > steps:
        raise InvalidArgumentError(f"threshold {snaps_at[-1]} is past the last step ({steps})")
    return Settings(steps, _size(size), float(lr), int(seed), precision, on_nonfinite, snaps_at,
                    _check_int("redirect_relu", redirect_relu, minimum=0))


def _plan_of(objective: Any, models: Any) -> Plan:
    if isinstance(objective, Plan):
        return objective
    if models is None:
        raise InvalidArgumentError("render needs models: an nn.Module or a mapping name -> nn.Module")
    plan = compile_plan(objective, models)
    # An equal plan still in use (held by a RenderResult, say) brings its compiled steps along.
    return _LIVE_PLANS.setdefault(plan.key, plan)


def set_up(plan: Plan, s: Settings, *, batch: Any, param: Any, transforms: Any, optimizer: Any, device: Any,
           compile: Any, compile_mode: str | None) -> Setup:
    """Phase 2: device, batch size, parameterization, transforms, optimizer and the (compiled) step."""
    dev = normalize_device(device) if device is not None else plan.device
    if dev != plan.device and any(True for m in plan.models.values() for _ in m.parameters()):
        raise InvalidArgumentError(f"device={dev} but the models are on {plan.device}; move the models or drop device=")
    if plan.n_images and batch is not None and batch != plan.n_images:
        raise InvalidArgumentError(f"batch={batch} but {plan.n_images} objectives were given (one image each)")
    n = _check_int("batch", plan.n_images or batch or 1)
    s = s._replace(precision=resolve_precision(s.precision, plan, dev, s.size, n))
    if s.precision == "bf16" and dev.type == "cpu" and not _cpu_has_bf16():
        warnings.warn(
            "precision='bf16' on a CPU without bf16 units (AVX-512 BF16 or AMX): bf16 is emulated there and was "
            "measured 12-16x slower than fp32 (benchmarks/README.md); use precision='fp32' on this machine",
            UserWarning, stacklevel=3)
    image_param = param if param is not None else _default_param(s.size, n, image_channels(plan))
    transform = _as_transform(transforms)
    generator = torch.Generator(dev).manual_seed(s.seed)
    leaves = {k: v.detach().to(dev).requires_grad_(True) for k, v in image_param.init(generator).items()}
    with torch.no_grad():
        first = image_param.to_image(leaves)
    if batch is None and not plan.n_images:
        n = first.shape[0]  # a given parameterization sets the batch size
    elif first.shape[0] != n:
        raise InvalidArgumentError(f"the parameterization makes {first.shape[0]} images but the render needs {n}")
    apply = steps_lib.model_inputs(plan, transform, first.shape)
    optim = _make_optimizer(optimizer, list(leaves.values()), s.lr)
    eager = steps_lib.loss_fn(plan, image_param.to_image, apply, n, s.precision)
    step = eager  # redirected-ReLU steps stay eager: they swap module classes, which a compiled step would not see
    if _should_compile(compile, dev, s.steps):
        # The functions themselves, not their ids: a recycled id of a freed ImageParam never hits another's step.
        key = (image_param.to_image, apply, tuple(first.shape), str(dev), s.precision, compile_mode)
        step = steps_lib.compiled_step(plan, key, eager, compile_mode)
    return Setup(plan, n, image_param, transform, apply, generator, leaves, first.shape, optim, step, eager, s.precision)


def build_result(setup: Setup, s: Settings, record: steps_lib.StepRecord) -> RenderResult:
    """Phase 4: the final images and the per-term history (equal summands added up under one key)."""
    with torch.no_grad():
        images = setup.image_param.to_image(setup.leaves).detach().cpu()
    plan = setup.plan
    rows = torch.stack(record.rows).cpu() if record.rows else torch.zeros(0, len(plan.term_names), setup.n)
    return RenderResult(
        images=images,
        snapshots=record.snapshots,
        history=history_rows(plan.history_keys, rows),
        plan=plan,
        seed=s.seed,
        steps=record.done,
        interrupted=record.interrupted,
        skipped_steps=tuple(record.skipped),
        precision=setup.precision,
    )


def render(
    objective: Expr | str | Sequence[Expr | str] | Plan,
    models: Any = None,
    *,
    size: int | tuple[int, int] = 224,
    steps: int = 512,
    batch: int | None = None,
    param: param_lib.ImageParam | None = None,
    transforms: Any = None,
    optimizer: Any = None,
    lr: float = 0.05,
    thresholds: Sequence[int] | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    compile: bool | str = "auto",
    compile_mode: str | None = None,
    precision: str = "auto",
    on_nonfinite: str = "raise",
    progress: bool | str = True,
    callback: Callable[[int, Tensor], None] | None = None,
    redirect_relu: int = 0,
) -> RenderResult:
    """Render images that maximize `objective` on `models`.

    Args:
        objective: an expression, DSL text, a compiled `Plan`, or a list of objectives (one image each).
        models: an `nn.Module` or a mapping name -> module (ignored when `objective` is a Plan).
        size: image size (int or (H, W)) of the default parameterization.
        steps: optimization steps.
        batch: number of images (default: 1, or one per objective of a list).
        param: an `ImageParam` (default: `param.fft(size, batch=batch)` with decorrelated colour).
        transforms: a `Transform`, a callable, or a list of them (default: `transforms.standard()`; [] for none).
        optimizer: a torch optimizer class or a function params -> optimizer (default: Adam).
        lr: learning rate of the default optimizer.
        thresholds: steps after which to keep a snapshot of the images.
        seed: seeds every random draw (init and transforms): same seed, same image (bit for bit on the CPU
            with the same torch build and thread count).
        device: where to render (default: the models' device).
        compile: True, False, or "auto" (CUDA always; CPU only if CPU_COMPILE_MIN_STEPS is set, and steps >= it).
            Compiled steps are kept on the plan: render a `Plan` again (or keep a result whose plan is equal)
            to reuse one.
        compile_mode: passed to torch.compile (e.g. "reduce-overhead" for CUDA graphs).
        precision: "auto" (see `resolve_precision`: bf16 on CUDA, and on CPUs with native bf16 where it
            was measured faster; fp32 elsewhere), "fp32", or "bf16" (autocast for the models; image
            parameters and optimizer stay fp32; on a CPU without bf16 units it is emulated and slower: a
            warning says so). `RenderResult.precision` says what ran.
        on_nonfinite: "raise" (NonFiniteError naming the step and the term) or "skip" (drop that step).
        progress: True: a tqdm progress bar with the current total score, and one summary line when it ends
            (the same quantity); "bar": the bar only (the CLI prints its own line); False: nothing.
        callback: called as callback(step, images) after each step (images detached).
        redirect_relu: use Lucid's redirected ReLU gradient in the models' nn.ReLU/nn.ReLU6 modules for
            this many first steps (0: never; Lucid: 16), so units dead on the initial image get a gradient
            (see `lucent_dsl.relu`). These steps run eagerly.

    Returns:
        RenderResult; `history` has one series per distinct top-level summand, and the series add up
        to the total score at every step. Ctrl-C stops the run cleanly and returns the result so far.
    """
    s = check_settings(steps=steps, size=size, lr=lr, seed=seed, precision=precision, on_nonfinite=on_nonfinite,
                       thresholds=thresholds, redirect_relu=redirect_relu)
    plan = _plan_of(objective, models)
    setup = set_up(plan, s, batch=batch, param=param, transforms=transforms, optimizer=optimizer, device=device,
                   compile=compile, compile_mode=compile_mode)
    bar = _progress(s.steps, progress)
    models_run = list(plan.models.values())

    def sample() -> Any:
        with torch.no_grad():
            return setup.transform.sample(setup.generator, setup.shape)

    try:
        with frozen_models(models_run), redirected_relu(models_run, s.redirect_relu) as relus:
            record = steps_lib.run_steps(plan, setup.step, setup.eager, leaves=setup.leaves, optim=setup.optim,
                                         sample=sample, to_image=setup.image_param.to_image, steps=s.steps,
                                         on_nonfinite=s.on_nonfinite, relus=relus, snaps_at=s.snaps_at,
                                         callback=callback, bar=bar, apply=setup.apply, n=setup.n,
                                         precision=setup.precision)
    finally:
        if bar is not None:
            bar.close()
    result = build_result(setup, s, record)
    recipe, why = recipe_of(plan, size=tuple(result.images.shape[-2:]), n=setup.n, channels=int(result.images.shape[1]),
                            steps=result.steps if result.interrupted else s.steps, seed=s.seed, lr=s.lr,
                            precision=setup.precision, param=param, transforms=transforms, optimizer=optimizer,
                            redirect_relu=s.redirect_relu)
    if result.skipped_steps:
        recipe, why = None, (*why, "steps were skipped (on_nonfinite='skip'); a replay would raise there")
    result = dc.replace(result, recipe=recipe, unreplayable=why)
    if bar is not None and progress != "bar":
        _summary(result)
    return result


def _progress(steps: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is a dependency, but a broken install should not stop a render
        return None
    return tqdm(total=steps, desc="render", leave=False)


def _summary(result: RenderResult) -> None:
    """One line left after the progress bar: the same quantity the bar showed (the total score)."""
    import sys

    total = float(result.scores().sum()) if result.steps else float("nan")
    state = " (interrupted)" if result.interrupted else ""
    print(f"render: {result.steps} steps{state}, score {total:.4g}", file=sys.stderr)
