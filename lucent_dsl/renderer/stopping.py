"""Early stopping: rules that end a render before its last step, and say at which step and why.

A rule is a frozen value; `rule.monitor(plan)` makes a fresh monitor for one render, which the loop
(`renderer.steps.run_steps`) calls after each optimizer step as `monitor(step, score, grad_norm, image)`;
it returns None to go on, or the reason to stop (`RenderResult.stopped` then reads "step 143: ...").

- `Plateau(patience, rel_tol, on, smoothing)`: the objective (or the image gradient's norm) has stopped
  changing. The series is smoothed by an exponential moving average (factor `smoothing`); the render
  stops once the smoothed value moved by less than `rel_tol` of its size over the last `patience`
  steps. Steps before `patience + warmup` never stop. On "grad_norm" it stops when the smoothed norm
  fell below `rel_tol` times its largest smoothed value (the step has nothing left to follow).
  IMI-style rules stop on a smoothed gradient norm; their exact rule and constants were not found, so these
  defaults are ours, and what they save or cost has not been measured yet.
- `Target(label, p, model, every)`: a class probability passed `p`. Every `every` steps the model sees the
  current image (untransformed, with its own preprocessing) and the softmax of its logits is read at
  `label` (an index or one of the model's labels); the render stops once every image passes `p`.

Example:
    >>> rule = Plateau(patience=4, rel_tol=0.01, warmup=0)
    >>> watch = rule.monitor(None)
    >>> said = [watch(step, 1.0, None, None) for step in range(1, 7)]
    >>> said.index(next(s for s in said if s)) + 1, said[4]
    (5, 'plateau: the smoothed score moved 0% over the last 4 steps (< 1%)')
"""
from __future__ import annotations

import dataclasses as dc
import math
import numbers
from collections import deque
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..args import check_choice, check_int
from ..errors import InvalidArgumentError

__all__ = ["Monitor", "Plateau", "Target", "check_stop"]

Monitor = Callable[[int, float, "float | None", Callable[[], Tensor]], "str | None"]


def _fraction(name: str, value: Any, *, upper: float = 1.0) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < float(value) < upper:
        raise InvalidArgumentError(f"{name} must be a number in (0, {upper:g}), got {value!r}")
    return float(value)


@dc.dataclass(frozen=True)
class Plateau:
    """Stop once the smoothed objective (on="score") or gradient norm (on="grad_norm") stops changing."""

    patience: int = 32
    rel_tol: float = 1e-3
    on: str = "score"
    smoothing: float = 0.9
    warmup: int = 32

    def __post_init__(self) -> None:
        check_int("patience", self.patience)
        check_int("warmup", self.warmup, minimum=0)
        _fraction("rel_tol", self.rel_tol)
        _fraction("smoothing", self.smoothing)
        check_choice("on", self.on, ("score", "grad_norm"))

    @property
    def needs_grad_norm(self) -> bool:
        return self.on == "grad_norm"

    def monitor(self, plan: Any) -> Monitor:
        history: deque[float] = deque(maxlen=self.patience + 1)
        state = {"ema": math.nan, "peak": 0.0}

        def watch(step: int, score: float, grad_norm: float | None, image: Any) -> str | None:
            value = score if self.on == "score" else float(grad_norm if grad_norm is not None else math.nan)
            if not math.isfinite(value):
                return None
            ema = value if math.isnan(state["ema"]) else self.smoothing * state["ema"] + (1 - self.smoothing) * value
            state["ema"] = ema
            state["peak"] = max(state["peak"], abs(ema))
            history.append(ema)
            if step < self.patience + self.warmup or len(history) <= self.patience:
                return None
            if self.on == "grad_norm":
                if abs(ema) < self.rel_tol * state["peak"]:
                    return (f"plateau: the smoothed gradient norm fell to {abs(ema) / state['peak']:.3g} of its "
                            f"peak (< {self.rel_tol:g})")
                return None
            moved = abs(history[-1] - history[0]) / max(abs(history[-1]), 1e-12)
            if moved < self.rel_tol:
                return (f"plateau: the smoothed score moved {100 * moved:.3g}% over the last {self.patience} steps "
                        f"(< {100 * self.rel_tol:.3g}%)")
            return None

        return watch


@dc.dataclass(frozen=True)
class Target:
    """Stop once `model`'s softmax probability of `label` passes `p` on every image (checked every `every` steps).

    `model`: the plan's model name (None: its only model); `label`: a class index or one of its labels."""

    label: int | str
    p: float = 0.9
    model: str | None = None
    every: int = 8

    def __post_init__(self) -> None:
        _fraction("p", self.p)
        check_int("every", self.every)
        if isinstance(self.label, bool) or not isinstance(self.label, (int, str)):
            raise InvalidArgumentError(f"Target label must be a class index or a label, got {self.label!r}")

    needs_grad_norm = False

    def monitor(self, plan: Any) -> Monitor:
        name, model, info = self._model(plan)
        index = self._index(info)

        def watch(step: int, score: float, grad_norm: float | None, image: Callable[[], Tensor]) -> str | None:
            if step % self.every:
                return None
            with torch.no_grad():
                x = image()
                logits = model(info.preprocess(x))
            if not isinstance(logits, Tensor) or logits.ndim != 2:
                raise InvalidArgumentError(f"Target: model {name!r} does not return (batch, classes) logits")
            p = logits.float().softmax(1)[:, index]
            if bool((p >= self.p).all()):
                return f"target: {name} gives class {self.label!r} probability {float(p.min()):.3f} >= {self.p:g}"
            return None

        return watch

    def _model(self, plan: Any) -> tuple[str, Any, Any]:
        if plan is None:
            raise InvalidArgumentError("Target needs the render's plan to find its model")
        models = dict(plan.models)
        if self.model is None and len(models) != 1:
            raise InvalidArgumentError(f"Target(model=None) needs a plan of one model; name one of {sorted(models)}")
        name = self.model if self.model is not None else next(iter(models))
        if name not in models:
            raise InvalidArgumentError(f"Target: no model {name!r} in the plan; its models are {sorted(models)}")
        return name, models[name], plan.infos[name]

    def _index(self, info: Any) -> int:
        if isinstance(self.label, int):
            return self.label
        labels = info.labels or ()
        if self.label not in labels:
            raise InvalidArgumentError(f"Target: {self.label!r} is not one of the model's labels "
                                       f"(it has {len(labels)}; pass an index instead)")
        return labels.index(self.label)


def check_stop(stop: Any) -> Plateau | Target | None:
    """`render`'s `stop=`: None, a `Plateau` or a `Target`."""
    if stop is None or isinstance(stop, (Plateau, Target)):
        return stop
    raise InvalidArgumentError(
        f"stop must be None, lucent_dsl.Plateau(...) or lucent_dsl.Target(label, p), got {stop!r}")
