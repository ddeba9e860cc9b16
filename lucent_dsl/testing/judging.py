"""Judging a law: the case it runs on, running it under hypothesis, and the verdicts it may reach.

Every law of `check_objective` (`laws`, `model_laws`) and of `check_param` / `check_transform`
(`param_laws`) is a body run by `run_law` under hypothesis: an AssertionError is its verdict, any other
error becomes one that names the law. A law on a term draws a `Case` (the term, the activation it
reads, the render's images and crops) and judges it with `close` (equal up to the dtype's rounding),
`fail_unless_close`, `check_gradient` (finite, and reaching what the score changes with) and
`failure`, so every failing law reads the same way: the law, the counterexample, what went wrong.

Example:
    >>> import torch
    >>> close(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.00001]))
    True
    >>> fail_unless_close("scores", "my_term", torch.tensor([1.0]), torch.tensor([1.5]), "the score")
    Traceback (most recent call last):
    ...
    AssertionError: law 'scores' fails for my_term: the score: got [1.0], expected [1.5]
    >>> x, seen = torch.ones(3, requires_grad=True), []
    >>> check_gradient("scores", "a sum", lambda a: a.sum(0, keepdim=True), x, seen, "activation")
    >>> check_gradient("scores", "a detached sum", lambda a: a.detach().sum(0, keepdim=True), x, seen, "activation")
    Traceback (most recent call last):
    ...
    AssertionError: law 'scores' fails for a detached sum: the score changes with the activation but no gradient ...
"""
from __future__ import annotations

import dataclasses as dc
from collections.abc import Callable
from typing import Any, cast

import hypothesis
import torch
from hypothesis import strategies as st
from torch import Tensor

from ..dsl.expr import Expr, Site
from .shapes import ActivationSpec, seeded
from .terms import leaves_of

__all__ = ["Case", "check_gradient", "close", "fail_unless_close", "failure", "run_law", "sites_read"]


@dc.dataclass(frozen=True, eq=False)
class Case:
    """One counterexample candidate: a term, the activation it reads, the render's images and crops."""

    term: Expr
    layout: ActivationSpec
    n: int
    crops: int
    act: Tensor

    def acts(self, act: Any = None) -> dict[Site, Any]:
        a = self.act if act is None else act
        return {s: a for s in sites_read(self.term)}

    def __str__(self) -> str:
        return (f"{self.term!r} on {self.layout.kind} activations of shape {tuple(self.act.shape)} "
                f"({str(self.act.dtype).replace('torch.', '')}), {self.n} image(s) x {self.crops} crop(s)")


def sites_read(e: Expr) -> tuple[Site, ...]:
    return tuple(dict.fromkeys(s for t in leaves_of(e) for s in t.sites()))


def failure(law: str, where: Any, detail: str) -> AssertionError:
    return AssertionError(f"law '{law}' fails for {where}: {detail}")


def close(actual: Tensor, expected: Tensor) -> bool:
    """`actual` is `expected` up to the rounding of their dtype (relative to the larger of 1 and |expected|)."""
    a, e = actual.detach().double(), expected.detach().double()
    tol = 1e-9 if actual.dtype == torch.float64 else 1e-4
    scale = max(1.0, float(e.abs().max()) if e.numel() else 1.0)
    return a.shape == e.shape and bool(((a - e).abs() <= tol * scale).all())


def fail_unless_close(law: str, where: Any, actual: Tensor, expected: Tensor, what: str) -> None:
    """AssertionError unless `actual` is `expected` up to the rounding of their dtype."""
    if not close(actual, expected):
        raise failure(law, where, f"{what}: got {actual.detach().tolist()}, expected {expected.detach().tolist()}")


def run_law(name: str, examples: int, body: Callable[[st.DataObject], None],
            parent: hypothesis.settings | None = None) -> None:
    """Run `body(data)` under hypothesis; any error other than an AssertionError becomes one naming the law."""
    def run(data: st.DataObject) -> None:
        try:
            with torch.enable_grad():
                body(data)
        except AssertionError:
            raise
        except Exception as err:
            raise AssertionError(f"law '{name}': {type(err).__name__}: {err}") from err

    run.__name__ = run.__qualname__ = "law_" + name.replace(" ", "_")
    checks = hypothesis.settings(parent, max_examples=examples, deadline=None, report_multiple_bugs=False,
                                 suppress_health_check=cast(Any, list(hypothesis.HealthCheck)))
    checks(hypothesis.given(st.data())(run))()


def _gradient_nearby(score: Callable[[Tensor], Tensor], x: Tensor) -> bool:
    """Whether a gradient reaches `x` a little way off: true at a kink (|a - t| where a == t exactly), false for a
    score that never passes one (a .detach())."""
    nudged = (x.detach() + 1e-3 * seeded(tuple(x.shape), 11, x.dtype)).requires_grad_(True)
    s = score(nudged)
    if not s.requires_grad:
        return False
    g = torch.autograd.grad(s.sum(), nudged, allow_unused=True)[0]
    return g is not None and bool(torch.isfinite(g).all()) and float(g.abs().sum()) > 0


def check_gradient(law: str, where: Any, score: Callable[[Tensor], Tensor], x: Tensor, seen: list, what: str) -> None:
    """The gradient of the score with respect to `x` is finite; where it is zero, so is the score's change.

    A zero gradient is right where the score ignores `x` there (a neuron outside a mask, the total
    variation of a 1 x 1 map); `seen` collects the examples where it was not zero.
    """
    s = score(x)
    # Weighted, not s.sum(): scores may add up to a constant (each image minus the batch mean).
    w = 0.5 + torch.rand(s.shape, generator=torch.Generator().manual_seed(3), dtype=s.dtype)
    g = torch.autograd.grad((s * w).sum(), x, allow_unused=True)[0] if s.requires_grad else None
    if g is not None and not bool(torch.isfinite(g).all()):
        raise failure(law, where, f"the gradient with respect to the {what} is not finite")
    if g is not None and float(g.abs().sum()) > 0:
        seen.append(True)
        return
    moved = score(x.detach() + 0.5 * seeded(tuple(x.shape), 7, x.dtype))
    if not close(moved, s) and not _gradient_nearby(score, x):
        raise failure(law, where, f"the score changes with the {what} but no gradient reaches it "
                    "(a .detach(), an integer or another non-differentiable step)")
