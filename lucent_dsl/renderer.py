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

import collections
import functools as ft
import numbers
import types
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from . import param as param_lib
from . import transforms as tf_lib
from .errors import InvalidArgumentError, NonFiniteError
from .expr import Expr
from .plan import Plan, compile_plan
from .fold import frozen_models
from .relu import redirected_relu
from .result import RenderResult

# compile="auto" on the CPU compiles renders of at least this many steps; None: never. Measured with
# benchmarks/bench_compile.py (2-core AMD EPYC, 1 thread, torch 2.14; see benchmarks/README.md): a cold compile
# costs 75-130 s (minutes under load), and the compiled step is ~8-11% faster for resnet18 (break-even ~5,500
# steps at batch 1, ~300 at batch 16) but 7% to 2x slower for mobilenet_v2, so it never pays there. Since the eager
# runner folds BatchNorms and runs channels-last (lucent_dsl.fold), the compiled step is 1.2-2.7x slower than the
# eager one for both models (benchmarks/bench_step.py). Auto stays off.
CPU_COMPILE_MIN_STEPS: int | None = None
_COMPILED: collections.OrderedDict[tuple, Callable] = collections.OrderedDict()
_COMPILED_MAX = 8


def _cpu_has_bf16() -> bool:
    """Whether oneDNN has native bf16 kernels on this CPU (True when torch cannot tell)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True


def _check_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InvalidArgumentError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _as_transform(transforms: Any) -> tf_lib.Transform:
    if transforms is None:
        return _standard()
    if isinstance(transforms, tf_lib.Transform):
        return transforms
    if isinstance(transforms, Sequence) and not isinstance(transforms, (str, bytes)):
        return tf_lib.chain(*transforms) if transforms else tf_lib.identity()
    if callable(transforms):
        return tf_lib.chain(transforms)
    raise InvalidArgumentError(
        f"transforms must be a Transform, a callable Tensor -> Tensor, or a list of them, got {type(transforms).__name__}"
    )


@ft.lru_cache(maxsize=None)
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


def _loss_fn(plan: Plan, to_image: Callable, apply: Callable, n: int, precision: str) -> Callable:
    """The differentiable part of one step: leaves + transform parameters -> (loss, per-term scores)."""
    def forward(leaves: dict[str, Tensor], tparams: Any) -> tuple[Tensor, Tensor]:
        img = to_image(leaves)
        x = apply(img, tparams)
        if precision == "bf16":
            with torch.autocast(x.device.type, dtype=torch.bfloat16):
                acts = plan.forward(x, raw=img)
            acts = {k: v.float() if isinstance(v, Tensor) else v for k, v in acts.items()}
        else:
            acts = plan.forward(x, raw=img)
        s = plan.scores(acts, n)
        return -s.total, torch.stack(list(s.terms.values()))

    return forward


def _own_code(fn: Callable) -> Callable:
    """`fn` with a code object of its own.

    Dynamo keeps its compiled graphs on the code object, and every `_loss_fn` closure shares one, so
    all entries of `_COMPILED` would count against one `recompile_limit` (8): from the 9th distinct
    plan, parameterization, transform or shape in a process, `compile=True` silently ran eagerly.
    A private code object gives each entry its own dynamo cache, freed with the entry.
    """
    return types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


def _compiled(key: tuple, fn: Callable, mode: str | None) -> Callable:
    if key in _COMPILED:
        _COMPILED.move_to_end(key)
        return _COMPILED[key]
    compiled = torch.compile(_own_code(fn), mode=mode, dynamic=False)
    _COMPILED[key] = compiled
    while len(_COMPILED) > _COMPILED_MAX:
        _COMPILED.popitem(last=False)
    return compiled


def _should_compile(compile: Any, device: torch.device, steps: int) -> bool:
    if compile == "auto":
        return device.type == "cuda" or (CPU_COMPILE_MIN_STEPS is not None and steps >= CPU_COMPILE_MIN_STEPS)
    if isinstance(compile, bool):
        return compile
    raise InvalidArgumentError(f"compile must be True, False or 'auto', got {compile!r}")


def _nonfinite_message(step: int, names: Sequence[str], terms: Tensor, loss: Tensor,
                       grad_culprits: Sequence[str] = ()) -> str:
    terms = terms.detach()
    bad = [f"{name} = {terms[i].tolist()}" for i, name in enumerate(names) if not bool(torch.isfinite(terms[i]).all())]
    if bad:
        where = "; ".join(bad)
    else:
        of = f" of {', '.join(grad_culprits)}" if grad_culprits else ""
        where = f"the gradient{of} (loss = {float(loss.detach()):.4g})"
    return f"step {step}: non-finite value in {where}. Lower lr, add penalties, or pass on_nonfinite='skip'."


def _nonfinite_grad_terms(plan: Plan, to_image: Callable, apply: Callable, leaves: dict[str, Tensor],
                          tparams: Any, n: int) -> list[str]:
    """The top-level terms whose own gradient is not finite (the step is redone eagerly: error path only).

    Each term gets its own backward: through the stacked scores, a zero gradient times an infinite
    local derivative of another term would read as NaN and blame every term.
    """
    img = to_image(leaves)
    acts = plan.forward(apply(img, tparams), raw=img)
    out = []
    for name, value in plan.scores(acts, n).terms.items():
        if not value.requires_grad:
            continue
        grads = torch.autograd.grad(value.sum(), list(leaves.values()), retain_graph=True, allow_unused=True)
        if any(g is not None and not bool(torch.isfinite(g).all()) for g in grads):
            out.append(name)
    return out


def _no_gradient_message(step: int, plan: Plan) -> str:
    if not torch.is_grad_enabled():
        return "render was called under torch.no_grad() (or inference mode); call it where gradients are enabled"
    return (
        f"step {step}: the score of {plan.objective!r} does not depend on the image, so there is nothing to optimize: "
        "the objective is a constant, or it reads layers whose output is cut off from the input (.detach(), "
        "torch.no_grad() inside forward, integer outputs). Read layers that the image flows into."
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
    precision: str = "fp32",
    on_nonfinite: str = "raise",
    progress: bool = True,
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
        seed: seeds every random draw (init and transforms): same seed, same image (bit for bit on the CPU).
        device: where to render (default: the models' device).
        compile: True, False, or "auto" (CUDA always; CPU only if CPU_COMPILE_MIN_STEPS is set, and steps >= it).
        compile_mode: passed to torch.compile (e.g. "reduce-overhead" for CUDA graphs).
        precision: "fp32", or "bf16" (autocast for the models; image parameters and optimizer stay fp32).
            bf16 pays on GPUs and on CPUs with AVX-512 BF16 or AMX; elsewhere it is emulated (slower: a
            warning says so).
        on_nonfinite: "raise" (NonFiniteError naming the step and the term) or "skip" (drop that step).
        progress: show a tqdm progress bar with the current score.
        callback: called as callback(step, images) after each step (images detached).
        redirect_relu: use Lucid's redirected ReLU gradient in the models' nn.ReLU/nn.ReLU6 modules for
            this many first steps (0: never; Lucid: 16), so units dead on the initial image get a gradient
            (see `lucent_dsl.relu`). These steps run eagerly.

    Returns:
        RenderResult. Ctrl-C stops the run cleanly and returns the result so far.
    """
    steps = _check_int("steps", steps)
    redirect_relu = _check_int("redirect_relu", redirect_relu, minimum=0)
    hw = _size(size)
    if precision not in ("fp32", "bf16"):
        raise InvalidArgumentError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    if on_nonfinite not in ("raise", "skip"):
        raise InvalidArgumentError(f"on_nonfinite must be 'raise' or 'skip', got {on_nonfinite!r}")
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not lr > 0 or lr != lr or lr == float("inf"):
        raise InvalidArgumentError(f"lr must be a positive finite number, got {lr!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise InvalidArgumentError(f"seed must be an int, got {seed!r}")
    snaps_at = sorted({_check_int("each threshold", t) for t in (thresholds or ())})
    if snaps_at and snaps_at[-1] > steps:
        raise InvalidArgumentError(f"threshold {snaps_at[-1]} is past the last step ({steps})")

    if isinstance(objective, Plan):
        plan = objective
    else:
        if models is None:
            raise InvalidArgumentError("render needs models: an nn.Module or a mapping name -> nn.Module")
        plan = compile_plan(objective, models)
    dev = torch.device(device) if device is not None else plan.device
    if dev != plan.device and any(True for m in plan.models.values() for _ in m.parameters()):
        raise InvalidArgumentError(f"device={dev} but the models are on {plan.device}; move the models or drop device=")
    if plan.n_images and batch is not None and batch != plan.n_images:
        raise InvalidArgumentError(f"batch={batch} but {plan.n_images} objectives were given (one image each)")
    n = _check_int("batch", plan.n_images or batch or 1)
    if precision == "bf16" and dev.type == "cpu" and not _cpu_has_bf16():
        warnings.warn(
            "precision='bf16' on a CPU without bf16 units (AVX-512 BF16 or AMX): bf16 is emulated there and was "
            "measured 12-16x slower than fp32 (benchmarks/README.md); use precision='fp32' on this machine",
            UserWarning, stacklevel=2)
    if param is None:
        channels = max((info.channels for info in plan.infos.values()), default=3)
        param = _default_param(hw, n, 3 if channels >= 3 else channels)
    image_param = param
    transform = _as_transform(transforms)
    generator = torch.Generator(dev).manual_seed(int(seed))
    leaves = {k: v.detach().to(dev).requires_grad_(True) for k, v in image_param.init(generator).items()}
    with torch.no_grad():
        first = image_param.to_image(leaves)
    if batch is None and not plan.n_images:
        n = first.shape[0]  # a given parameterization sets the batch size
    elif first.shape[0] != n:
        raise InvalidArgumentError(f"the parameterization makes {first.shape[0]} images but the render needs {n}")
    optim = _make_optimizer(optimizer, list(leaves.values()), float(lr))

    fn = _loss_fn(plan, image_param.to_image, transform.apply, n, precision)
    eager = fn  # redirected-ReLU steps: the modules' classes are swapped, which a compiled step would not see
    if _should_compile(compile, dev, steps):
        # The functions themselves, not id(param): the key keeps them alive, so a recycled id of a
        # freed ImageParam or Transform can never hit a step compiled for another one.
        key = (plan.key, image_param.to_image, transform.apply, tuple(first.shape), str(dev), precision, compile_mode)
        fn = _compiled(key, fn, compile_mode)

    history: list[Tensor] = []
    snapshots: dict[int, Tensor] = {}
    skipped: list[int] = []
    interrupted = False
    bar = _progress(steps, progress)
    done = 0
    try:
        with frozen_models(list(plan.models.values())), redirected_relu(list(plan.models.values()), redirect_relu) as relus:
            for step in range(1, steps + 1):
                with torch.no_grad():
                    tparams = transform.sample(generator, first.shape)
                optim.zero_grad(set_to_none=True)
                loss, terms = (eager if relus.active else fn)(leaves, tparams)
                if not loss.requires_grad:
                    raise InvalidArgumentError(_no_gradient_message(step, plan))
                loss.backward()
                grads_ok = torch.stack([torch.isfinite(v.grad).all() for v in leaves.values() if v.grad is not None])
                if not bool(torch.isfinite(loss) & grads_ok.all()):
                    if on_nonfinite == "raise":
                        culprits = () if not bool(torch.isfinite(terms.detach()).all()) else _nonfinite_grad_terms(
                            plan, image_param.to_image, transform.apply, leaves, tparams, n)
                        raise NonFiniteError(_nonfinite_message(step, plan.term_names, terms, loss, culprits))
                    skipped.append(step)
                    optim.zero_grad(set_to_none=True)
                else:
                    optim.step()
                history.append(terms.detach())
                done = step
                relus.step()
                if step in snaps_at or callback is not None:
                    with torch.no_grad():
                        current = image_param.to_image(leaves).detach()
                    if step in snaps_at:
                        snapshots[step] = current.cpu()
                    if callback is not None:
                        callback(step, current)
                if bar is not None:
                    bar.update(1)
                    if step % 10 == 0 or step == steps:
                        bar.set_postfix(score=f"{-float(loss.detach()):.4g}")
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if bar is not None:
            bar.close()
    with torch.no_grad():
        images = image_param.to_image(leaves).detach().cpu()
    stacked = torch.stack(history).cpu() if history else torch.zeros(0, len(plan.term_names), n)
    return RenderResult(
        images=images,
        snapshots=snapshots,
        history={name: stacked[:, i] for i, name in enumerate(plan.term_names)},
        plan=plan,
        seed=int(seed),
        steps=done,
        interrupted=interrupted,
        skipped_steps=tuple(skipped),
    )


def _progress(steps: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is a dependency, but a broken install should not stop a render
        return None
    return tqdm(total=steps, desc="render", leave=False)
