"""The ReLU problem: redirected-ReLU gradients for the first steps of a render (Lucid's override).

A unit whose input is negative for the initial random image gets no gradient through its ReLU,
so its visualization never starts. Lucid's `redirected_relu_grad` (lucid/misc/redirected_relu_grad.py)
changes only the backward pass of the loss being *minimized* (a render's `-score`), separately for
each image of the batch:

- the ordinary ReLU gradient `g * (x >= 0)` is used wherever it is not all zero;
- where it is all zero for an image, the *redirected* gradient is used instead: `g`, except where
  the input is negative and the gradient would push it lower still (`x < 0` and `g > 0`: the
  optimizer steps against the gradient), which is zeroed. For ReLU6 the gradient that would push
  an input above 6 higher still (`x > 6` and `g < 0`) is zeroed as well.

Forward values are unchanged. Lucid applies the override for the first 16 steps; `render(...,
redirect_relu=16)` does the same here.

How: `redirected_relu(models, steps)` temporarily changes the class of every `torch.nn.ReLU` and
`torch.nn.ReLU6` module (exactly those types, not subclasses) to a subclass whose forward uses
the redirected gradient, and restores the class afterwards. Module identity, parameters, buffers,
hooks and the `inplace` flag are untouched, so plans compiled before (their torch.fx graphs call
the very same module objects) see the change too. While redirected, an `inplace=True` ReLU
computes out of place.

Functional calls (`F.relu`, `torch.relu`, `x.relu()`, `F.relu6`: torchvision's GoogLeNet and
Inception call `F.relu` in every `BasicConv2d`) are redirected by `functional_relus()`, which a
render enters around its models' forward only (never around the objective, the parameterization
or the transforms, as Lucid overrides the gradients of the imported model's ops only). It is a
`TorchFunctionMode`, entered only while the render's own `redirected_relu` state (a `ContextVar`, so
per thread and never seen by another render) is active, and left when the forward returns or
raises; `torch.nn.functional.relu` itself is never replaced. Calls written in place
(`torch.relu_(x)`, `x.relu_()`, whose result is often dropped) and `x.clamp(min=0)` are not redirected.

Example:
    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    >>> with redirected_relu(net, steps=1) as state:
    ...     type(net[1]).__name__, state.active
    ('RedirectedReLU', True)
    >>> type(net[1]).__name__
    'ReLU'
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from ..args import check_int
from ..errors import InvalidArgumentError

__all__ = ["RedirectState", "RedirectedReLU", "RedirectedReLU6", "functional_relus", "redirected_relu",
           "redirected_relu_grad"]

LUCID_STEPS = 16  # Lucid overrides the ReLU gradient for its first 16 steps


def redirected_relu_grad(x: Tensor, grad: Tensor, upper: float | None = None) -> Tensor:
    """Lucid's redirected ReLU (or ReLU6 when `upper=6`) gradient for input `x` and output gradient `grad`.

    Per image (first axis): the ordinary gradient if any of it is nonzero, else the redirected one.
    """
    blocked = x < 0
    redirect_off = blocked & (grad > 0)
    if upper is not None:
        above = x > upper
        blocked = blocked | above
        redirect_off = redirect_off | (above & (grad < 0))
    relu_grad = torch.where(blocked, torch.zeros_like(grad), grad)
    redirected = torch.where(redirect_off, torch.zeros_like(grad), grad)
    if relu_grad.dim() < 2:  # no batch axis: one decision for the whole tensor
        return relu_grad if bool(relu_grad.ne(0).any()) else redirected
    passes = relu_grad.flatten(1).ne(0).any(1).view(-1, *([1] * (grad.dim() - 1)))
    return torch.where(passes, relu_grad, redirected)


class _RedirectedFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, upper: float | None) -> Tensor:
        ctx.save_for_backward(x)
        ctx.upper = upper
        return x.clamp(min=0) if upper is None else x.clamp(0, upper)

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> tuple[Tensor, None]:
        (grad,), (x,) = grads, ctx.saved_tensors
        return redirected_relu_grad(x, grad, ctx.upper), None


class RedirectedReLU(nn.ReLU):
    """`nn.ReLU` with Lucid's redirected gradient (set as the class of existing modules, never built)."""

    def forward(self, input: Tensor) -> Tensor:
        return _RedirectedFn.apply(input, None)


class RedirectedReLU6(nn.ReLU6):
    """`nn.ReLU6` with Lucid's redirected ReLU6 gradient."""

    def forward(self, input: Tensor) -> Tensor:
        return _RedirectedFn.apply(input, 6.0)


_SWAPS: dict[type, type] = {nn.ReLU: RedirectedReLU, nn.ReLU6: RedirectedReLU6}


class RedirectState:
    """What `redirected_relu` yields: call `step()` once per optimization step.

    After `steps` calls the modules get their own classes back (`active` becomes False); leaving
    the `with` block restores them in any case, also after an exception.
    """

    def __init__(self, modules: list[nn.Module], steps: int):
        self.modules = modules
        self.steps = steps
        self.done = 0
        self.active = False

    def redirect(self) -> None:
        if self.steps > 0 and not self.active:
            for m in self.modules:
                m.__class__ = _SWAPS[type(m)]
            self.active = True

    def restore(self) -> None:
        if self.active:
            originals = {v: k for k, v in _SWAPS.items()}
            for m in self.modules:
                m.__class__ = originals[type(m)]
            self.active = False

    def step(self) -> None:
        """Count one optimization step; restore the ordinary gradient after the last redirected one."""
        self.done += 1
        if self.done >= self.steps:
            self.restore()


def _modules(models: Any) -> list[nn.Module]:
    if isinstance(models, nn.Module):
        models = [models]
    elif isinstance(models, Mapping):
        models = list(models.values())
    if not isinstance(models, Iterable) or not all(isinstance(m, nn.Module) for m in models):
        raise InvalidArgumentError(f"redirected_relu needs an nn.Module, a list or a dict of them, got {models!r}")
    seen: dict[int, nn.Module] = {}
    for model in models:
        for m in model.modules():
            if type(m) in _SWAPS:  # exactly these types: a subclass may have its own forward
                seen.setdefault(id(m), m)
    return list(seen.values())


# The functional ReLUs: each maps to its upper bound (None: plain ReLU).
_FUNCTIONAL: dict[Any, float | None] = {F.relu: None, torch.relu: None, Tensor.relu: None, F.relu6: 6.0}
_CURRENT: contextvars.ContextVar[RedirectState | None] = contextvars.ContextVar("lucent_dsl_relu", default=None)


class _RedirectFunctional(TorchFunctionMode):
    """Functional ReLU calls take the redirected gradient; everything else runs as it is."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Mapping | None = None) -> Any:
        kwargs = kwargs or {}
        if func in _FUNCTIONAL and args and isinstance(args[0], Tensor) and args[0].is_floating_point():
            return _RedirectedFn.apply(args[0], _FUNCTIONAL[func])  # out of place, as the modules are
        return func(*args, **kwargs)


@contextlib.contextmanager
def functional_relus() -> Iterator[bool]:
    """Redirect functional ReLU calls (`F.relu`, `torch.relu`, `x.relu()`, `F.relu6`) inside this block while this
    thread's `redirected_relu` is active; yields whether it does. A render wraps its models' forward in it.

    Example:
        >>> import torch, torch.nn as nn, torch.nn.functional as F
        >>> net = nn.Linear(2, 2)
        >>> x = torch.ones(1, 2, requires_grad=True)
        >>> with redirected_relu(net, steps=1), functional_relus() as on:
        ...     y = F.relu(x - 5)        # dead everywhere: the ordinary gradient is 0
        >>> (-y.sum()).backward()        # minimizing -y: the redirected gradient lets x grow
        >>> on, bool(x.grad.abs().sum() > 0), F.relu is torch.nn.functional.relu
        (True, True, True)
    """
    state = _CURRENT.get()
    if state is None or not state.active:
        yield False
        return
    with _RedirectFunctional():
        yield True


@contextlib.contextmanager
def redirected_relu(models: Any, steps: int = LUCID_STEPS) -> Iterator[RedirectState]:
    """Redirected-ReLU gradients in `models` (a module, or a list/dict of them) for `steps` steps.

    Args:
        models: the networks whose `nn.ReLU` / `nn.ReLU6` modules to redirect.
        steps: how many `state.step()` calls stay redirected (0: none; the context does nothing).

    Yields:
        a `RedirectState`; call `state.step()` after each optimization step.

    Example:
        >>> import torch, torch.nn as nn
        >>> _ = torch.manual_seed(0)  # the example's weights (the redirected gradient's sign depends on them)
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
        >>> with torch.no_grad():
        ...     _ = net[0].bias.fill_(-10.0)  # every unit dead for any small input
        >>> x = torch.rand(1, 3, requires_grad=True)
        >>> with redirected_relu(net, steps=16) as state:
        ...     (-net(x).sum()).backward()  # the loss: maximize the output
        ...     state.step()
        >>> bool(x.grad.abs().sum() > 0)
        True
    """
    steps = check_int("steps", steps, minimum=0)
    state = RedirectState(_modules(models), steps)
    token = _CURRENT.set(state)  # what functional_relus() redirects on this thread
    state.redirect()
    try:
        yield state
    finally:
        state.restore()
        _CURRENT.reset(token)
