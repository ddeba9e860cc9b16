"""Learning-rate schedules and the default optimizer's settings: render options a recipe records.

A schedule is a pure function of (step, total steps) -> a factor on the base learning rate. The loop
(`renderer.steps.run_steps`) sets every optimizer group's lr to `base * factor` before each step, so it
works with the default Adam and with an optimizer of your own alike.

- `"constant"`: factor 1 (Lucid's and lucent's renders; the default).
- `"cosine"`: from 1 down to 0 along half a cosine (Loshchilov & Hutter 2017, SGDR without restarts);
  DeepInversion renders with a cosine policy (NVlabs/DeepInversion `lr_cosine_policy`).
- `"warmup_cosine"`: linear from 1/w up to 1 over the first `warmup` fraction of the steps (w the warm-up
  steps), then cosine down to 0 (Plug-In Inversion, Ghiasi et al. 2022, warms up, then decays).

`betas` are the default Adam's (beta1, beta2); Plug-In Inversion optimizes with beta1 = 0.5.

Example:
    >>> s = Schedule("warmup_cosine", warmup=0.25)
    >>> [round(s.factor(step, 8), 3) for step in range(1, 9)]
    [0.5, 1.0, 0.933, 0.75, 0.5, 0.25, 0.067, 0.0]
    >>> as_schedule("cosine").factor(1, 4), as_schedule(None).kind
    (1.0, 'constant')
"""
from __future__ import annotations

import dataclasses as dc
import math
import numbers
from typing import Any

from ..args import check_choice
from ..errors import InvalidArgumentError

__all__ = ["DEFAULT_BETAS", "SCHEDULES", "Schedule", "as_schedule", "check_betas"]

SCHEDULES = ("constant", "cosine", "warmup_cosine")
DEFAULT_BETAS = (0.9, 0.999)  # torch.optim.Adam's
DEFAULT_WARMUP = 0.1


@dc.dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule: `kind` (one of `SCHEDULES`) and, for "warmup_cosine", the fraction
    of the steps spent warming up (in (0, 1))."""

    kind: str = "constant"
    warmup: float = 0.0

    def __post_init__(self) -> None:
        check_choice("schedule", self.kind, SCHEDULES)
        w = self.warmup
        if isinstance(w, bool) or not isinstance(w, numbers.Real) or not 0 <= float(w) < 1:
            raise InvalidArgumentError(f"schedule warmup must be a fraction of the steps in [0, 1), got {w!r}")
        if self.kind == "warmup_cosine" and w == 0:
            object.__setattr__(self, "warmup", DEFAULT_WARMUP)
        elif self.kind != "warmup_cosine" and w != 0:
            raise InvalidArgumentError(f"warmup={w} is only for schedule 'warmup_cosine', not {self.kind!r}")
        object.__setattr__(self, "warmup", float(self.warmup))

    def factor(self, step: int, total: int) -> float:
        """The lr factor at `step` (1-based) of `total`: in [0, 1]; 1 throughout for "constant"."""
        if self.kind == "constant" or total <= 1:
            return 1.0
        if self.kind == "cosine":
            t = (step - 1) / (total - 1)  # factor 1 at the first step, 0 at the last
        else:
            warm = max(1, math.ceil(self.warmup * total))
            if step <= warm:
                return step / warm
            t = (step - warm) / max(1, total - warm)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, t))))

    @property
    def text(self) -> str:
        """How a recipe writes it: the kind, with ":warmup" for "warmup_cosine" ("warmup_cosine:0.1")."""
        return f"{self.kind}:{self.warmup!r}" if self.kind == "warmup_cosine" else self.kind


def as_schedule(schedule: Any) -> Schedule:
    """A `Schedule` from one, from None ("constant"), or from a recipe's text ("cosine", "warmup_cosine:0.1")."""
    if schedule is None:
        return Schedule()
    if isinstance(schedule, Schedule):
        return schedule
    if isinstance(schedule, str):
        kind, _, warmup = schedule.partition(":")
        try:
            return Schedule(kind, float(warmup) if warmup else 0.0)
        except ValueError:
            raise InvalidArgumentError(f"schedule {schedule!r}: the warm-up after ':' must be a number") from None
    raise InvalidArgumentError(f"schedule must be one of {SCHEDULES}, 'warmup_cosine:FRACTION' or a Schedule, "
                               f"got {schedule!r}")


def check_betas(betas: Any) -> tuple[float, float]:
    """Adam's (beta1, beta2), each in [0, 1)."""
    try:
        b1, b2 = betas
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"betas must be a pair (beta1, beta2), e.g. (0.5, 0.999); got {betas!r}") from None
    for name, b in (("beta1", b1), ("beta2", b2)):
        if isinstance(b, bool) or not isinstance(b, numbers.Real) or not 0 <= float(b) < 1:
            raise InvalidArgumentError(f"betas: {name} must be a number in [0, 1), got {b!r}")
    return float(b1), float(b2)
