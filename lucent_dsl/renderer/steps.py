"""The optimization loop of a render: one differentiable step, its compiled-step cache, the non-finite policy.

`renderer.render` checks arguments and sets up; this module owns what happens at every step:
parameterization -> transforms -> each model's preprocessing -> truncated forwards -> per-summand
scores (index-aligned with `Plan.term_names`) -> backward -> optimizer step.

Compiled steps live on the `Plan` they were compiled for (`plan.steps`), never in a global table,
so dropping a plan (and every `RenderResult` that holds it) frees its models and its compiled code.

Non-finite values: on the CPU the check runs every step (a host sync costs nothing there). On CUDA
a per-step `bool(...)` would stall the GPU, so with `on_nonfinite="raise"` the check is folded into
a device-side flag that is read every `CUDA_CHECK_EVERY` steps and at the end (the error still
names the first bad step); `"skip"` must decide before each optimizer step, so it syncs every step.
Which one runs is `Setup.deferred_check` (`hardware.defers_nonfinite_check`), so the CPU tests can
run the deferred path too.

Example:
    >>> import torch, torch.nn as nn, lucent_dsl as ld
    >>> plan = ld.compile_plan(ld.channel("0", 1), nn.Sequential(nn.Conv2d(3, 4, 3)))
    >>> fn = loss_fn(plan, lambda leaves: leaves["x"].sigmoid(), lambda x, p: x, 1, "fp32")
    >>> loss, rows = fn({"x": torch.zeros(1, 3, 8, 8, requires_grad=True)}, None)
    >>> tuple(rows.shape)
    (1, 1)
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses as dc
import signal
import threading
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..dsl.expr import evaluate, top_terms
from ..errors import InvalidArgumentError, NonFiniteError
from ..models.sizes import resize_target
from ..plan.compiler import Plan
from ..transforms import Transform, sampled_at
from ..transforms.compose import out_shape
from .relu import functional_relus

CUDA_CHECK_EVERY = 32  # steps between device-to-host reads of the non-finite flag on CUDA
STEPS_PER_PLAN = 8  # compiled steps kept per plan (distinct parameterization / transform / shape)


_LOW = (torch.bfloat16, torch.float16)  # activation dtypes autocast can return; the terms score in float32


def forward_at(plan: Plan, x: Tensor | Mapping[str, Tensor], image: Tensor, precision: str) -> dict:
    """`plan.forward(x, raw=image)` in `precision`: the one place a render's models run under bf16 autocast.

    `x` is whatever the step's `apply` made: one tensor, a per-model mapping (`model_inputs`), or an empty
    mapping for a plan that reads only the image. The autocast device is the rendered image's, which every
    shape of `x` shares; floating activations come back as float32, so the terms always score in fp32.

    Example:
        >>> import torch, torch.nn as nn, lucent_dsl as ld
        >>> plan = ld.compile_plan(ld.channel("0", 1), nn.Sequential(nn.Conv2d(3, 4, 3)))
        >>> img = torch.rand(1, 3, 8, 8)
        >>> [v.dtype for v in forward_at(plan, {"model": img}, img, "bf16").values()]
        [torch.float32]
    """
    if precision != "bf16":
        return plan.forward(x, raw=image)
    with torch.autocast(image.device.type, dtype=torch.bfloat16):
        acts = plan.forward(x, raw=image)
    return {k: v.float() if isinstance(v, Tensor) and v.dtype in _LOW else v for k, v in acts.items()}


def loss_fn(plan: Plan, to_image: Callable, apply: Callable, n: int, precision: str, *,
            redirect: bool = False) -> Callable:
    """The differentiable part of one step: (leaves, transform params) -> (loss, (T, n) per-summand scores).

    `redirect`: the models' functional ReLUs take the redirected gradient while a `redirected_relu` is active
    (`relu.functional_relus`, around the models' forward only; never compiled).
    """
    def forward(leaves: dict[str, Tensor], tparams: Any) -> tuple[Tensor, Tensor]:
        img = to_image(leaves)
        x = apply(img, tparams)
        if redirect:
            with functional_relus():
                acts = forward_at(plan, x, img, precision)
        else:
            acts = forward_at(plan, x, img, precision)
        s = plan.scores(acts, n)
        return -s.total, s.rows

    return forward


@dc.dataclass(frozen=True)
class ModelInputs:
    """`(image, params) -> {model name: its transformed image}`: the transform applied once per distinct
    `apply`, each model reading the one sampled at the size its preprocessing resizes to (`model_inputs`)."""

    groups: tuple[tuple[Callable, tuple[str, ...]], ...]  # (apply, the models that read its output)

    def __call__(self, image: Tensor, params: Any) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for apply, names in self.groups:
            x = apply(image, params)
            for name in names:
                out[name] = x
        return out


def model_inputs(plan: Plan, transform: Transform, shape: Sequence[int]) -> Callable:
    """What a step applies to the rendered image: `transform.apply`, or, when some model resizes the
    transformed image and the transform ends in a geometric run, a `ModelInputs` that samples that
    model's input straight at its size (`transforms.sampled_at`: one interpolation instead of two, and
    no resize to run forward and backward). Each model gets the same image whichever other models
    the plan reads, so a term scores the same alone or in an ensemble.

    Example:
        >>> import torch.nn as nn, lucent_dsl as ld
        >>> from lucent_dsl.models import ModelInfo, with_info
        >>> from lucent_dsl.transforms import standard
        >>> net = with_info(nn.Sequential(nn.Conv2d(3, 4, 3)), ModelInfo(input_size=(32, 32)))
        >>> apply = model_inputs(ld.compile_plan(ld.channel("0", 1), net), standard(), (1, 3, 32, 32))
        >>> [(a.size, names) for a, names in apply.groups]
        [((32, 32), ('model',))]
    """
    _, _, h, w = out_shape(transform, torch.Size(shape))
    by_apply: dict[Any, list[str]] = {}
    for name in plan.runners:
        size = resize_target(plan.infos[name].input_geometry, int(h), int(w))
        sized = sampled_at(transform, size) if size is not None else None
        by_apply.setdefault((sized or transform).apply, []).append(name)
    if list(by_apply) == [transform.apply]:
        return transform.apply
    return ModelInputs(tuple((apply, tuple(names)) for apply, names in by_apply.items()))


def _own_code(fn: Callable) -> Callable:
    """`fn` with a code object of its own: dynamo keeps compiled graphs per code object, so every
    `loss_fn` closure would otherwise count against one shared `recompile_limit`."""
    return types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


def compiled_step(plan: Plan, key: tuple, fn: Callable, mode: str | None) -> Callable:
    """`torch.compile(fn)`, cached on `plan` under `key` (an LRU of `STEPS_PER_PLAN` entries)."""
    cache: collections.OrderedDict = plan.steps
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    cache[key] = compiled = torch.compile(_own_code(fn), mode=mode, dynamic=False)
    while len(cache) > STEPS_PER_PLAN:
        cache.popitem(last=False)
    return compiled


def nonfinite_message(step: int, names: Sequence[str], rows: Tensor, loss: Tensor, culprits: Sequence[str] = ()) -> str:
    rows = rows.detach()
    bad = [f"{name} = {rows[i].tolist()}" for i, name in enumerate(names) if not bool(torch.isfinite(rows[i]).all())]
    if bad:
        where = "; ".join(bad)
    else:
        of = f" of {', '.join(culprits)}" if culprits else ""
        where = f"the gradient{of} (loss = {float(loss.detach()):.4g})"
    return f"step {step}: non-finite value in {where}. Lower lr, add penalties, or pass on_nonfinite='skip'."


def nonfinite_grad_terms(plan: Plan, to_image: Callable, apply: Callable, leaves: dict[str, Tensor],
                         tparams: Any, n: int, precision: str = "fp32") -> list[str]:
    """The summands whose own gradient is not finite (the step is redone eagerly: error path only).

    Each summand is evaluated and differentiated on its own: through the stacked rows, a zero gradient
    times an infinite local derivative of another summand would read as NaN and blame every one.
    """
    img = to_image(leaves)
    acts = forward_at(plan, apply(img, tparams), img, precision)
    out = []
    for name, term in zip(plan.term_labels, top_terms(plan.objective)):
        value = evaluate(term, acts, n)
        if not value.requires_grad:
            continue
        grads = torch.autograd.grad(value.sum(), list(leaves.values()), retain_graph=True, allow_unused=True)
        if any(g is not None and not bool(torch.isfinite(g).all()) for g in grads):
            out.append(name)
    return out


def no_gradient_message(step: int, plan: Plan) -> str:
    if not torch.is_grad_enabled():
        return "render was called under torch.no_grad() (or inference mode); call it where gradients are enabled"
    return (
        f"step {step}: the score of {plan.objective!r} does not depend on the image, so there is nothing to optimize: "
        "the objective is a constant, or it reads layers whose output is cut off from the input (.detach(), "
        "torch.no_grad() inside forward, integer outputs). Read layers that the image flows into."
    )


class Setup(NamedTuple):
    """Everything the loop needs, made by `renderer.set_up`."""

    plan: Plan
    n: int
    image_param: Any  # an ImageParam: init(generator) -> leaves, to_image(leaves) -> images
    transform: Transform
    apply: Callable  # (image, params) -> what plan.forward reads: `transform.apply`, or `model_inputs`'
    generator: torch.Generator
    leaves: dict[str, Tensor]
    shape: torch.Size
    optim: torch.optim.Optimizer
    step: Callable  # the (compiled) `loss_fn`
    eager: Callable  # the same, never compiled (redirected-ReLU steps)
    precision: str  # "fp32" or "bf16": "auto" resolved
    deferred_check: bool  # the non-finite check is a device-side flag (`hardware.defers_nonfinite_check`)

    def sample(self) -> Any:
        """This step's random transform parameters (drawn outside the compiled step: static shapes)."""
        with torch.no_grad():
            return self.transform.sample(self.generator, self.shape)


class StepRecord(NamedTuple):
    """What the loop produced: index-aligned per-summand rows of every step, snapshots, skipped steps."""

    rows: list[Tensor]
    snapshots: dict[int, Tensor]
    skipped: list[int]
    done: int
    interrupted: bool
    last_score: float | None
    stopped: str | None = None  # why an early-stopping rule ended the run ("step 143: plateau: ...")


class _NonFiniteFlag:
    """Device-side record of the first non-finite step, read by the host only every `every` steps."""

    def __init__(self, device: torch.device, every: int):
        self.first = torch.zeros((), dtype=torch.long, device=device)  # 0: none seen yet
        self.every = every

    def note(self, step: int, ok: Tensor) -> None:
        self.first = torch.where((self.first == 0) & ~ok, torch.full_like(self.first, step), self.first)

    def due(self, step: int, last: int) -> bool:
        return step % self.every == 0 or step == last


@contextlib.contextmanager
def ctrl_c_between_steps() -> Iterator[Callable[[], bool]]:
    """Ctrl-C (SIGINT) is noted while a step runs and acted on before the next one, so an interrupted render's
    images are exactly `done` steps' worth (a KeyboardInterrupt between the optimizer's update and the step count
    would save an image one step ahead of its recipe). Only where Python's default handler is in place, in the
    main thread; elsewhere the interrupt arrives as usual. Yields `pressed() -> bool`."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield lambda: False
        return
    pressed: list[bool] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(True))
    try:
        yield lambda: bool(pressed)
    finally:
        signal.signal(signal.SIGINT, previous)


def run_steps(setup: Setup, *, steps: int, on_nonfinite: str, snaps_at: Sequence[int], relus: Any,
              callback: Callable | None, bar: Any, lr_factor: Callable[[int, int], float] | None = None,
              stop: Callable | None = None, grad_norm: bool = False) -> StepRecord:
    """The loop. Ctrl-C ends it cleanly; every finished step's scores are kept.

    `lr_factor(step, steps)` scales every optimizer group's initial lr before each step (`renderer.schedule`);
    `stop(step, score, grad_norm, image)` may end the run after a step, saying why (`renderer.stopping`);
    `grad_norm`: compute the image gradient's norm for it (else it gets None)."""
    plan, leaves, optim, to_image = setup.plan, setup.leaves, setup.optim, setup.image_param.to_image
    rows: list[Tensor] = []
    snapshots: dict[int, Tensor] = {}
    skipped: list[int] = []
    device = next(iter(leaves.values())).device
    flag = _NonFiniteFlag(device, CUDA_CHECK_EVERY) if setup.deferred_check and on_nonfinite == "raise" else None
    done, score, stopped = 0, None, None
    found = [group.get("lr") for group in optim.param_groups] if lr_factor is not None else []
    if any(not isinstance(lr, (int, float)) for lr in found):
        raise InvalidArgumentError("schedule= scales each optimizer group's 'lr', and this optimizer has a group "
                                   "without a numeric one; drop schedule= or give the optimizer an lr")
    base_lrs = [float(lr) for lr in found if isinstance(lr, (int, float))]
    try:
        with ctrl_c_between_steps() as pressed:
            for step in range(1, steps + 1):
                if pressed():
                    raise KeyboardInterrupt
                if lr_factor is not None:
                    factor = lr_factor(step, steps)
                    for group, base in zip(optim.param_groups, base_lrs):
                        group["lr"] = base * factor
                tparams = setup.sample()
                optim.zero_grad(set_to_none=True)
                loss, step_rows = (setup.eager if relus.active else setup.step)(leaves, tparams)
                if not loss.requires_grad:
                    raise InvalidArgumentError(no_gradient_message(step, plan))
                loss.backward()
                ok = torch.isfinite(loss) & torch.stack([torch.isfinite(v.grad).all() for v in leaves.values()
                                                         if v.grad is not None]).all()
                if flag is not None:
                    flag.note(step, ok)
                    optim.step()
                    if flag.due(step, steps) and int(flag.first):
                        raise NonFiniteError(f"step {int(flag.first)}: the loss or its gradient became non-finite "
                                             "(checked on the GPU every few steps). Lower lr, add penalties, or pass "
                                             "on_nonfinite='skip'.")
                elif not bool(ok):
                    if on_nonfinite == "raise":
                        culprits = () if not bool(torch.isfinite(step_rows.detach()).all()) else (
                            nonfinite_grad_terms(plan, to_image, setup.apply, leaves, tparams, setup.n,
                                                 setup.precision))
                        raise NonFiniteError(nonfinite_message(step, plan.term_labels, step_rows, loss, culprits))
                    skipped.append(step)
                    optim.zero_grad(set_to_none=True)
                else:
                    optim.step()
                rows.append(step_rows.detach())
                done = step
                relus.step()
                if step in snaps_at or callback is not None:
                    with torch.no_grad():
                        current = to_image(leaves).detach()
                    if step in snaps_at:
                        snapshots[step] = current.cpu()
                    if callback is not None:
                        callback(step, current)
                if bar is not None:
                    bar.update(1)
                    if step % 10 == 0 or step == steps:
                        score = -float(loss.detach())
                        bar.set_postfix(score=f"{score:.4g}")
                if stop is not None:
                    grads = [v.grad.flatten() for v in leaves.values() if v.grad is not None] if grad_norm else []
                    norm = float(torch.cat(grads).norm()) if grads else None
                    why = stop(step, -float(loss.detach()), norm, lambda: to_image(leaves).detach())
                    if why is not None:
                        stopped = f"step {step}: {why}"
                        break
    except KeyboardInterrupt:
        return StepRecord(rows, snapshots, skipped, done, True, score)
    return StepRecord(rows, snapshots, skipped, done, False, score, stopped)
