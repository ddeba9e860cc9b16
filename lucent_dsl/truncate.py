"""Truncated forwards: run a model only as far as its last needed layer.

`make_runner(model, paths)` returns a callable `x -> {path: output}`. Two strategies:

- `FxRunner` (preferred): a `torch.fx` trace in which the needed modules are leaves, cut right
  after the last needed node. Layers past it are not in the graph at all, there are no hooks,
  and the result compiles cleanly with `torch.compile`.
- `HookRunner` (fallback for models that do not trace): forward hooks on the needed modules,
  installed for one call and always removed; the last hook stops the forward with a private
  exception.

Example:
    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
    >>> run = make_runner(net, ("1",))
    >>> sorted(run(torch.rand(1, 3, 8, 8)))
    ['1']
    >>> run.describe()
    'fx graph cut after 1 (2 of 3 modules run, channels-last)'
"""
from __future__ import annotations

import functools as ft
import linecache
import weakref
from typing import Any, Protocol

import torch
import torch.fx as fx
from torch import Tensor, nn

from . import fold
from .errors import ObjectiveShapeError
from .expr import OUTPUT


class Runner(Protocol):
    def __call__(self, x: Tensor) -> dict[str, Any]: ...

    def describe(self) -> str: ...


class _Tracer(fx.Tracer):
    def __init__(self, leaves: set[str]):
        super().__init__()
        self.leaves = leaves

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if qualname in self.leaves:
            return True
        if any(leaf.startswith(qualname + ".") for leaf in self.leaves):
            return False  # trace through the ancestors of a needed module
        return super().is_leaf_module(m, qualname)


class FxRunner(nn.Module):
    """A traced copy of the model's forward that returns the needed outputs and stops there."""

    def __init__(self, model: nn.Module, paths: tuple[str, ...], *, fuse: bool = True):
        super().__init__()
        modules = tuple(p for p in paths if p != OUTPUT)
        graph = _Tracer(set(modules)).trace(model)
        last = {n.target: n for n in graph.nodes if n.op == "call_module" and n.target in modules}
        missing = [p for p in modules if p not in last]
        if missing:
            raise RuntimeError(f"modules {missing} do not appear as calls in the traced graph")
        cut = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        pending = set(last.values())
        final = None
        for node in graph.nodes:
            if node.op == "output":
                final = fx.map_arg(node.args[0], lambda n: env[n])
                break
            env[node] = cut.node_copy(node, lambda n: env[n])
            pending.discard(node)
            if not pending and OUTPUT not in paths:
                break
        outputs = {p: env[last[p]] for p in modules}
        if OUTPUT in paths:
            outputs[OUTPUT] = final
        cut.output(outputs)
        self.graph_module = fx.GraphModule(model, cut)
        keys = [_source_key(self.graph_module)]
        self.graph_module.graph.eliminate_dead_code()
        self.graph_module.recompile()
        keys.append(_source_key(self.graph_module))
        self.fast, self.folded, self.channels_last = None, 0, False
        if fuse:
            self.fast = fold.inline(self.graph_module)
            if self.fast is not None:
                keys.append(_source_key(self.fast))
                self.folded = fold.optimize(self.fast)
                keys.append(_source_key(self.fast))
                self.channels_last = fold.has_conv(self.fast)
        weakref.finalize(self.graph_module, _forget_sources, [k for k in keys if k.startswith("<eval_with_key>")])
        self.paths = paths
        self.total = sum(1 for n in graph.nodes if n.op == "call_module")
        self.kept = sum(1 for n in self.graph_module.graph.nodes if n.op == "call_module")

    def forward(self, x: Tensor) -> dict[str, Any]:
        if self.fast is None:
            return self.graph_module(x)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.fast(x)

    def describe(self) -> str:
        notes = [f"{self.folded} BatchNorms folded"] if self.folded else []
        notes += ["channels-last"] if self.channels_last else []
        extra = "".join(f", {n}" for n in notes)
        if OUTPUT in self.paths:
            return f"fx graph, full forward ({self.kept} modules{extra})"
        deepest = max(self.paths, key=lambda p: [n.target for n in self.graph_module.graph.nodes].index(p))
        return f"fx graph cut after {deepest} ({self.kept} of {self.total} modules run{extra})"


def _source_key(gm: fx.GraphModule) -> str:
    return type(gm).forward.__code__.co_filename


def _forget_sources(keys: list[str]) -> None:
    """Drop the generated source that torch.fx keeps for tracebacks of a dead GraphModule.

    torch.fx stores every recompiled forward's source in `linecache` and in its own loader's
    cache and never frees it: without this, each plan would leak a few KB for the life of the
    process (200 renders: 400 entries).
    """
    loader_cache = getattr(getattr(fx.graph_module, "_loader", None), "eval_cache", None)
    for key in keys:
        linecache.cache.pop(key, None)
        if isinstance(loader_cache, dict):
            loader_cache.pop(key, None)


class _StopForward(Exception):
    """Raised by the last needed hook to end a forward early."""


class HookRunner:
    """Forward hooks on the needed modules for the duration of one call; stops after the last one."""

    def __init__(self, model: nn.Module, paths: tuple[str, ...]):
        self.model = model
        self.paths = paths
        self.modules = {p: model.get_submodule(p) for p in paths if p != OUTPUT}

    def __call__(self, x: Tensor) -> dict[str, Any]:
        out: dict[str, Any] = {}
        stop_early = OUTPUT not in self.paths

        def store(path: str, _module: nn.Module, _inputs: Any, output: Any) -> None:
            out[path] = output
            if stop_early and len(out) == len(self.modules):
                raise _StopForward

        handles = [m.register_forward_hook(ft.partial(store, p)) for p, m in self.modules.items()]
        try:
            result = self.model(x)
            if not stop_early:
                out[OUTPUT] = result
        except _StopForward:
            pass
        finally:
            for h in handles:
                h.remove()
        missing = [p for p in self.modules if p not in out]
        if missing:
            raise ObjectiveShapeError(
                f"layers {missing} never ran during the model's forward; pick layers that forward() calls"
            )
        return out

    def describe(self) -> str:
        if OUTPUT in self.paths:
            return "hooks, full forward"
        return "hooks, forward stopped after the last needed layer"


class _NoForward:
    """For a model of which only the (preprocessed) input is read."""

    def __call__(self, x: Tensor) -> dict[str, Any]:
        return {}

    def describe(self) -> str:
        return "not run (only its input is read)"


def make_runner(model: nn.Module, paths: tuple[str, ...], *, strategy: str = "auto", fuse: bool = True) -> Runner:
    """A truncated forward of `model` that returns the outputs of `paths` (module paths or "@output").

    `strategy`: "fx", "hooks" or "auto" (fx when the model traces, else hooks).
    `fuse`: on fx graphs, fold eval-mode BatchNorms into the convolutions before them and run
    channels-last (`lucent_dsl.fold`; same values up to float rounding).
    """
    if not paths:
        return _NoForward()
    if strategy in ("auto", "fx"):
        # Each module's own flag, not model.train(was): that would put a user's eval-mode submodules in train mode.
        modes = [(m, m.training) for m in model.modules()]
        try:
            model.eval()  # trace the eval-mode control flow: plans run models in eval mode
            return FxRunner(model, paths, fuse=fuse)
        except Exception:
            if strategy == "fx":
                raise
        finally:
            for m, mode in modes:
                m.training = mode
    return HookRunner(model, paths)
