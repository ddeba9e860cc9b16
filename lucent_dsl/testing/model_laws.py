"""The laws of `check_objective` that need models: plans (fx and hooks runners) and renders.

`plans`: the fx and hooks runners give the same scores on a random model of the layout's family,
and the gradient reaches the image (finite). `render_refuses`: a model whose layer has a shape the
term does not claim makes `render` raise `ObjectiveShapeError` before any optimizer step, with the
model untouched.

Example:
    >>> from lucent_dsl.testing import ActivationSpec, seeded
    >>> case = Case(channel("L", 1), ActivationSpec("nchw", 3, 2, 2), 2, 1, seeded((2, 3, 2, 2), 0))
    >>> plans(case, seed=0, seen=[])
    >>> render_refuses(case, (3, 2))   # a (B, 3, 2) token sequence: channel reads it, no error expected
    Traceback (most recent call last):
    ...
    AssertionError: law 'wrong shapes' fails for channel('L', 1) on nchw activations ...
"""
from __future__ import annotations

from typing import Any

import torch

from .. import param as param_lib
from ..dsl.expr import IMAGE
from ..errors import ObjectiveShapeError
from ..plan.compiler import compile_plan
from ..renderer.phases import render
from .judging import Case, check_gradient, fail_unless_close, failure, sites_read
from .models import layout_model, shaped_model

__all__ = ["plans", "render_refuses"]


def plans(case: Case, seed: int, seen: list) -> None:
    law, t, n, lay = "plans", case.term, case.n, case.layout
    rows = case.act.shape[0]
    rm = layout_model(lay, seed=seed)
    image_only = all(s.layer == IMAGE for s in sites_read(t))
    shape = (lay.channels, lay.height, lay.width) if image_only else rm.image_shape
    x = torch.rand((rows, *shape), generator=torch.Generator().manual_seed(seed), dtype=lay.dtype).requires_grad_(True)
    values, plan = {}, None
    for mode in ("fx", "hooks"):
        plan = compile_plan(t, rm.module, truncate=mode)
        values[mode] = plan.scores(plan.forward(x), n).per_image
    where = f"{case} through a random {lay.kind} model"
    fail_unless_close(law, where, values["fx"], values["hooks"], "the fx and hooks runners disagree")
    check_gradient(law, where, lambda img: plan.scores(plan.forward(img), n).per_image, x, seen, "image")


class _Spy(torch.optim.Optimizer):
    """An optimizer that only counts its steps (no torch.optim machinery, so nothing is compiled or imported)."""

    def __init__(self, leaves: Any):  # noqa: D107 - Optimizer.__init__ is skipped on purpose
        self.steps = 0
        self.param_groups = [{"params": list(leaves)}]

    def zero_grad(self, set_to_none: bool = True) -> None:
        pass

    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        self.steps += 1


def render_refuses(case: Case, shape: Any) -> None:
    image_only = all(s.layer == IMAGE for s in sites_read(case.term))
    if isinstance(shape, str) or (image_only and len(shape) != 3):
        return  # the rendered image is always (B, C, H, W)
    model = shaped_model(() if image_only else shape)
    size, channels = (tuple(shape[1:]) if image_only else (6, 7)), (shape[0] if image_only else 3)
    before = [p.detach().clone() for p in model.parameters()]
    spies: list[_Spy] = []
    calls: list[int] = []
    try:
        render(case.term, model, param=param_lib.pixel(size, batch=case.n, channels=channels), steps=2,
               transforms=[], optimizer=lambda leaves: spies.append(_Spy(leaves)) or spies[-1], progress=False,
               callback=lambda step, img: calls.append(step), preset="lucid")
    except ObjectiveShapeError:
        pass
    else:
        raise failure("wrong shapes", case, f"render accepted a model whose layer has per-image shape {shape}")
    steps = sum(s.steps for s in spies)
    if steps or calls or any(not torch.equal(a, b) for a, b in zip(before, model.parameters())):
        raise failure("wrong shapes", case, f"render took {steps} optimizer step(s) before refusing shape {shape}")
