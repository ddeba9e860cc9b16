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
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, cast

import torch
from torch import Tensor, nn

from .. import param as param_lib, transforms as tf_lib
from ..args import check_choice, check_int, check_real, check_seed, check_size
from ..dsl.expr import Expr
from ..errors import InvalidArgumentError
from ..models import hardware as hw_lib
from ..models.checks import check_models, normalize_device
from ..plan.compiler import Plan, compile_plan, history_rows
from ..plan.fold import frozen_models
from . import presets as presets_lib, schedule as schedule_lib, steps as steps_lib, stopping as stopping_lib
from .provenance import recipe_of
from .relu import redirected_relu
from .result import RenderResult
from .steps import Setup

_LIVE_PLANS: weakref.WeakValueDictionary[tuple, Plan] = weakref.WeakValueDictionary()  # key -> a plan still in use


def _as_transform(transforms: Any) -> tf_lib.Transform:
    return _standard() if transforms is None else tf_lib.as_transform_arg(transforms)


@ft.cache
def _standard() -> tf_lib.Transform:
    return tf_lib.standard()


@ft.lru_cache(maxsize=32)
def _default_param(size: tuple[int, int], batch: int, channels: int) -> param_lib.ImageParam:
    return param_lib.fft(size, batch=batch, channels=channels)


def _make_optimizer(optimizer: Any, leaves: list[Tensor], lr: float,
                    betas: tuple[float, float] | None = None) -> torch.optim.Optimizer:
    if optimizer is None:
        return torch.optim.Adam(leaves, lr=lr, betas=betas or schedule_lib.DEFAULT_BETAS)
    if betas is not None:
        raise InvalidArgumentError("betas= sets the default Adam's; with optimizer= given, set them there "
                                   "(e.g. lambda p: torch.optim.Adam(p, lr=0.05, betas=(0.5, 0.999)))")
    if isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer):
        return cast(Any, optimizer)(leaves, lr=lr)  # a torch.optim class: (params, lr=...)
    if callable(optimizer):
        opt = optimizer(leaves)
        if not isinstance(opt, torch.optim.Optimizer):
            raise InvalidArgumentError(f"optimizer factory returned {type(opt).__name__}, not a torch.optim.Optimizer")
        return opt
    raise InvalidArgumentError(
        "optimizer must be a torch.optim.Optimizer class or a function params -> optimizer, "
        f"e.g. lambda p: torch.optim.Adam(p, lr=0.05); got {optimizer!r}"
    )



def _should_compile(compile: Any, hw: hw_lib.Hardware, steps: int) -> bool:
    if compile == "auto":
        return hw_lib.auto_compiles(hw, steps)
    if isinstance(compile, bool):
        return compile
    raise InvalidArgumentError(f"compile must be True, False or 'auto', got {compile!r}")


def _compilable(plan: Plan, compile: Any) -> bool:
    """False for objectives that differentiate inside the step (`facet`): torch.compile would hand them activations
    off the autograd path. compile="auto" then runs eagerly; compile=True is refused."""
    from ..dsl.expr import map_terms

    found: list[Any] = []
    map_terms(plan.objective, lambda t: (found.append(t) if getattr(t, "differentiates", False) else None) or t)
    if found and compile is True:
        raise InvalidArgumentError(f"{found[0]!r} takes a gradient inside the objective, which a compiled step cannot "
                                   "do; render it with compile=False (or 'auto', which then runs eagerly)")
    return not found


def resolve_precision(precision: str, plan: Plan, device: torch.device, size: tuple[int, int], n: int,
                      hw: hw_lib.Hardware | None = None) -> str:
    """`hardware.resolve_precision` for the models `plan` runs.

    Example:
        >>> import torch.nn as nn
        >>> plan = compile_plan(channel("0", 1), nn.Sequential(nn.Conv2d(3, 4, 3)))
        >>> resolve_precision("auto", plan, torch.device("cpu"), (16, 16), 1)
        'fp32'
        >>> resolve_precision("auto", plan, torch.device("cpu"), (16, 16), 1, hw_lib.Hardware("cuda", bf16=True))
        'bf16'
    """
    return hw_lib.resolve_precision(precision, plan.models.values(), device, size, n, hw)


def image_channels(plan: Plan) -> int:
    """Channels of the rendered image: the count every model reads when they agree (1 for grayscale, 4 for an
    RGB+NIR model); else 3, or fewer when every model reads fewer (RGB images are averaged for a grayscale one)."""
    counts = {info.channels for info in plan.infos.values()}
    if len(counts) == 1:
        return counts.pop()
    return min(3, max(counts, default=3))


class CheckedArgs(NamedTuple):
    """`render`'s arguments after checking (phase 1)."""

    steps: int
    size: tuple[int, int]
    lr: float
    seed: int
    precision: str
    on_nonfinite: str
    snaps_at: tuple[int, ...]
    redirect_relu: int


def check_args(*, steps: Any, size: Any, lr: Any, seed: Any, precision: Any, on_nonfinite: Any,
               thresholds: Any, redirect_relu: Any) -> CheckedArgs:
    """Phase 1: every argument checked before any model runs."""
    steps = check_int("steps", steps)
    check_choice("precision", precision, ("auto", "fp32", "bf16"))
    check_choice("on_nonfinite", on_nonfinite, ("raise", "skip"))
    lr = check_real("lr", lr, positive=True)
    seed = check_seed(seed)
    snaps_at = tuple(sorted({check_int("each threshold", t) for t in (thresholds or ())}))
    if snaps_at and snaps_at[-1] > steps:
        raise InvalidArgumentError(f"threshold {snaps_at[-1]} is past the last step ({steps})")
    return CheckedArgs(steps, check_size(size), lr, seed, precision, on_nonfinite, snaps_at,
                       check_int("redirect_relu", redirect_relu, minimum=0))


def _plan_of(objective: Any, models: Any) -> Plan:
    if isinstance(objective, Plan):
        _check_drivable(dict(objective.models))  # a plan compiled elsewhere meets the same check
        return objective
    if models is None:
        raise InvalidArgumentError("render needs models: an nn.Module or a mapping name -> nn.Module")
    _check_drivable(models)
    plan = compile_plan(objective, models)
    # An equal plan still in use (held by a RenderResult, say) brings its compiled steps along.
    return _LIVE_PLANS.setdefault(plan.key, plan)


def _check_no_outer_autocast(dev: torch.device) -> None:
    """Refuse a render inside the caller's `torch.autocast`: it would run the parameterization, the transforms and
    the objective in low precision too, which no `precision` names, so the result and its recipe could not say
    what ran (and a replay would differ). render's own `precision="bf16"` autocasts the models alone."""
    if torch.is_autocast_enabled(dev.type):
        dtype = str(torch.get_autocast_dtype(dev.type)).removeprefix("torch.")
        raise InvalidArgumentError(
            f"render was called inside torch.autocast({dev.type!r}, dtype={dtype}), which render does not record: "
            "call it outside the autocast and pass precision='bf16' (render autocasts the models to bf16 itself, "
            "and the result and its recipe say so) or precision='fp32'"
        )


def _check_drivable(models: Any) -> None:
    """Models render cannot drive (weights on the meta device, float16/bfloat16/float64 parameters, TorchScript)
    are refused by name before the plan's probe runs them; models on several devices get `compile_plan`'s message."""
    given = {"model": models} if isinstance(models, nn.Module) else dict(models) if isinstance(models, Mapping) else {}
    modules = {name: m for name, m in given.items() if isinstance(m, nn.Module)}
    devices = {t.device for m in modules.values() for t in [*m.parameters(), *m.buffers()][:1]}
    if len(devices) <= 1:
        check_models(modules)


def set_up(plan: Plan, s: CheckedArgs, *, batch: Any, param: Any, transforms: Any, optimizer: Any, device: Any,
           compile: Any, compile_mode: str | None, hardware: hw_lib.Hardware | None = None,
           betas: tuple[float, float] | None = None) -> Setup:
    """Phase 2: device, batch size, parameterization, transforms, optimizer and the (compiled) step.

    Every machine-dependent decision reads `hardware` (default: `Hardware.of(device)`)."""
    dev = normalize_device(device) if device is not None else plan.device
    if dev != plan.device and any(True for m in plan.models.values() for _ in m.parameters()):
        raise InvalidArgumentError(f"device={dev} but the models are on {plan.device}; move the models or drop device=")
    if plan.n_images and batch is not None and batch != plan.n_images:
        raise InvalidArgumentError(f"batch={batch} but {plan.n_images} objectives were given (one image each)")
    n = check_int("batch", plan.n_images or batch or 1)
    _check_no_outer_autocast(dev)
    hw = hardware or hw_lib.Hardware.of(dev)
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
    # "auto" decided on the image the parameterization makes (a given param's size, not `size=`'s default)
    image_hw = (int(first.shape[-2]), int(first.shape[-1]))
    s = s._replace(precision=resolve_precision(s.precision, plan, dev, image_hw, n, hw))
    if hw_lib.bf16_is_emulated(hw, s.precision):
        warnings.warn(
            "precision='bf16' on a CPU without bf16 units (AVX-512 BF16 or AMX): bf16 is emulated there and was "
            "measured 12-16x slower than fp32 (benchmarks/README.md); use precision='fp32' on this machine",
            UserWarning, stacklevel=3)
    apply = steps_lib.model_inputs(plan, transform, first.shape)
    optim = _make_optimizer(optimizer, list(leaves.values()), s.lr, betas)
    eager = steps_lib.loss_fn(plan, image_param.to_image, apply, n, s.precision, redirect=True)
    step = eager  # redirected-ReLU steps stay eager: they swap module classes, which a compiled step would not see
    if _should_compile(compile, hw, s.steps) and _compilable(plan, compile):
        # The functions themselves, not their ids: a recycled id of a freed ImageParam never hits another's step.
        key = (image_param.to_image, apply, tuple(first.shape), str(dev), s.precision, compile_mode)
        plain = steps_lib.loss_fn(plan, image_param.to_image, apply, n, s.precision)  # compiled: no redirect
        step = steps_lib.compiled_step(plan, key, plain, compile_mode)
    return Setup(plan, n, image_param, transform, apply, generator, leaves, first.shape, optim, step, eager,
                 s.precision, hw_lib.defers_nonfinite_check(hw, s.on_nonfinite))


def build_result(setup: Setup, s: CheckedArgs, record: steps_lib.StepRecord) -> RenderResult:
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
        leaves={k: v.detach().cpu() for k, v in setup.leaves.items()},  # no step runs after this one
        param=setup.image_param,
        stopped=record.stopped,
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
    lr: float | None = None,
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
    schedule: str | schedule_lib.Schedule | None = None,
    betas: tuple[float, float] | None = None,
    stop: stopping_lib.Plateau | stopping_lib.Target | None = None,
    preset: str | presets_lib.Preset = "auto",
) -> RenderResult:
    """Render images that maximize `objective` on `models`.

    Args:
        objective: an expression, DSL text, a compiled `Plan`, or a list of objectives (one image each).
        models: an `nn.Module` or a mapping name -> module (ignored when `objective` is a Plan).
        size: image size (int or (H, W)) of the default parameterization.
        steps: optimization steps.
        batch: number of images (default: 1, or one per objective of a list).
        param: an `ImageParam` (default: the preset's; "lucid": `param.fft(size, batch=batch)` with
            decorrelated colour).
        transforms: a `Transform`, a callable, a list of them ([] for none), or a recipe's name for one
            ("standard", "scaled", "robust", "maco", "none"); default: the preset's ("lucid": `transforms.standard()`).
        optimizer: a torch optimizer class or a function params -> optimizer (default: the preset's; Adam).
        lr: learning rate of the default optimizer (default: the preset's; 0.05).
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
            warning says so). `RenderResult.precision` says what ran. Inside the caller's own
            `torch.autocast` render refuses (InvalidArgumentError): that autocast would reach the image and
            the objective too, which no precision names, so neither the result nor its recipe could say what ran.
        on_nonfinite: "raise" (NonFiniteError naming the step and the term) or "skip" (drop that step).
        progress: True: a tqdm progress bar with the current total score, and one summary line when it ends
            (the same quantity); "bar": the bar only (the CLI prints its own line); False: nothing.
        callback: called as callback(step, images) after each step (images detached).
        redirect_relu: use Lucid's redirected ReLU gradient in the models' nn.ReLU/nn.ReLU6 modules for
            this many first steps (0: never; Lucid: 16), so units dead on the initial image get a gradient
            (see `lucent_dsl.relu`). These steps run eagerly.
        schedule: the learning-rate schedule (`renderer.schedule`): "constant", "cosine", "warmup_cosine" (10%
            warm-up) or a `Schedule("warmup_cosine", warmup=0.2)`; None: the preset's ("lucid": "constant").
        betas: the default Adam's (beta1, beta2) (None: the preset's; "lucid": torch's (0.9, 0.999); Plug-In
            Inversion: (0.5, 0.999)).
        stop: an early-stopping rule (`renderer.stopping`): `Plateau(...)` or `Target(label, p)`; the result's
            `stopped` says at which step and why, and `steps` counts the steps done.
        preset: the render method (`renderer.presets`): "auto" (the default: `presets.auto_preset` picks one for
            the objective and the models), "lucid" (render's settings before presets, bit for bit),
            "deepinversion", "plugin", "maco", "robust", "prior", "robust_ensemble", or a `Preset` value (e.g.
            `dataclasses.replace(PRESETS["deepinversion"], image_prior=2.0)`).
            Every argument given explicitly wins over the preset's; the preset's prior terms are subtracted from
            the objective (from each, for a list). A Plan cannot take prior terms: a preset with them is refused
            ("auto" then picks `presets.PLAN_FALLBACK`). `RenderResult.preset` and the recipe say which ran.

    Returns:
        RenderResult; `history` has one series per distinct top-level summand, and the series add up
        to the total score at every step. Ctrl-C stops the run cleanly and returns the result so far.
    """
    if lr is not None:
        lr = check_real("lr", lr, positive=True)
    is_plan = isinstance(objective, Plan)
    image_size = dict(getattr(param, "recipe", ()) or ()).get("size") or check_size(size)  # a given param's size
    chosen = presets_lib.resolve(preset, objective.models if is_plan else models, image_size,
                                 {"param": param, "transforms": transforms, "optimizer": optimizer, "lr": lr,
                                  "schedule": schedule, "betas": betas}, objective=objective, plan=is_plan)
    s = check_args(steps=steps, size=size, lr=chosen.lr, seed=seed, precision=precision, on_nonfinite=on_nonfinite,
                   thresholds=thresholds, redirect_relu=redirect_relu)
    sched = schedule_lib.as_schedule(chosen.schedule)
    betas = schedule_lib.check_betas(chosen.adam_betas) if chosen.adam_betas is not None else None
    stop = stopping_lib.check_stop(stop)
    plan = _plan_of(presets_lib.with_priors(objective, chosen.prior), models)
    image_param = chosen.param
    if image_param is None and chosen.param_kind != "fft":  # "fft": render's cached default, as before presets
        n = check_int("batch", plan.n_images or batch or 1)
        image_param = presets_lib.make_param(chosen.param_kind, s.size, n, image_channels(plan))
    setup = set_up(plan, s, batch=batch, param=image_param, transforms=chosen.transforms, optimizer=chosen.optimizer,
                   device=device, compile=compile, compile_mode=compile_mode, betas=betas)
    monitor = stop.monitor(plan) if stop is not None else None
    bar = _progress(s.steps, progress)
    models_run = list(plan.models.values())
    try:
        with frozen_models(models_run), redirected_relu(models_run, s.redirect_relu) as relus:
            record = steps_lib.run_steps(setup, steps=s.steps, on_nonfinite=s.on_nonfinite, snaps_at=s.snaps_at,
                                         relus=relus, callback=callback, bar=bar,
                                         lr_factor=None if sched.kind == "constant" else sched.factor,
                                         stop=monitor, grad_norm=stop is not None and stop.needs_grad_norm)
    finally:
        if bar is not None:
            bar.close()
    result = build_result(setup, s, record)
    image_hw = (int(result.images.shape[-2]), int(result.images.shape[-1]))
    recipe, why = recipe_of(plan, size=image_hw, n=setup.n, channels=int(result.images.shape[1]),
                            steps=result.steps if result.interrupted or result.stopped else s.steps, seed=s.seed,
                            lr=s.lr, precision=setup.precision, param=image_param, transforms=chosen.base_transforms,
                            optimizer=optimizer, redirect_relu=s.redirect_relu, schedule=sched, betas=chosen.betas,
                            preset=chosen.name, source=objective if chosen.prior else None)
    if (result.interrupted or result.stopped) and sched.kind != "constant" and recipe is not None:
        recipe, why = None, (*why, f"the {sched.kind} schedule ran for {s.steps} steps but stopped after "
                                   f"{result.steps}; a replay of {result.steps} steps would schedule them otherwise")
    if result.skipped_steps:
        recipe, why = None, (*why, "steps were skipped (on_nonfinite='skip'); a replay would raise there")
    result = dc.replace(result, recipe=recipe, unreplayable=why, preset=chosen.name or chosen.preset.name)
    if bar is not None and progress != "bar":
        _summary(result)
    return result


def _progress(steps: int, enabled: bool | str):
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
