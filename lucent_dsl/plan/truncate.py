"""Truncated forwards: run a model only as far as its last needed layer.

`make_runner(model, paths)` returns a callable `x -> {path: output}`. Two strategies:

- `FxRunner` (preferred): a `torch.fx` trace in which the needed modules are leaves, cut right
  after the last needed node. Layers past it are not in the graph at all, there are no hooks,
  and the result compiles cleanly with `torch.compile`.
- `HookRunner` (fallback for models that do not trace): forward hooks on the needed modules,
  installed for one call and always removed; the forward stops with a private exception once
  every needed module has made its last call (counted on the first call, which runs to the end).

One semantics on both: a module called more than once is read at its LAST call. Hooks on the
model itself and an instance-level `model.forward = ...` are not part of a traced graph, so such
models (and models with hooks on a module that contains a needed one) run with hooks
("auto"), or are refused with `truncate="fx"`. Submodules' own hooks fire in both runners (a
hooked module is an fx leaf). Captured activations are safe from later in-place ops
(`lucent_dsl.inplace`): what a term reads is what the module returned, and the model is not changed.

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

import contextlib
import functools as ft
import io
import linecache
import weakref
from typing import Any, Protocol

import torch
import torch.fx as fx
import torch.fx.graph_module as fx_graph_module
from torch import Tensor, nn

from ..dsl.expr import OUTPUT
from ..errors import InvalidArgumentError, ObjectiveShapeError
from . import fold, inplace


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
        return fold._has_hooks(m) or super().is_leaf_module(m, qualname)  # hooks fire on leaves only


_ROOT_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs")


_UNWRITABLE = ("\\", '"', "'", "\n", "\r")


def fx_obstacle(model: nn.Module, paths: tuple[str, ...]) -> str | None:
    """Why a traced graph of `model` would not run what `model(x)` runs, or None.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3))
        >>> _ = net.register_forward_hook(lambda m, i, o: o * 2)
        >>> fx_obstacle(net, ("0",))
        'the model has forward hooks or pre-hooks of its own'
    """
    if "forward" in vars(model):
        return "the model's forward is overridden on the instance (model.forward = ...)"
    if any(getattr(model, attr, None) for attr in _ROOT_HOOKS):
        return "the model has forward hooks or pre-hooks of its own"
    odd = next((name for name, _ in model.named_modules() if any(c in name for c in _UNWRITABLE)), None)
    if odd is not None:  # torch.fx writes getattr(self, "<name>") unescaped: the generated code would not run
        return f"module {odd!r} has a name that torch.fx's generated code cannot spell"
    modules = [p for p in paths if p != OUTPUT]
    for name, m in model.named_modules():
        if name and fold._has_hooks(m) and any(p.startswith(name + ".") for p in modules):
            return f"module {name!r} has hooks and contains the needed module(s) inside it"
    return None


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
        outputs: dict[str, Any] = {p: env[last[p]] for p in modules}
        if OUTPUT in paths:
            outputs[OUTPUT] = final
        cut.output(outputs)
        self.graph_module = fx.GraphModule(model, cut)
        keys = [_source_key(self.graph_module)]
        self.pinned = inplace.pin(self.graph_module)  # `h.add_(1)` alone on a line is no dead code
        self.graph_module.graph.eliminate_dead_code()
        self.graph_module.recompile()
        keys.append(_source_key(self.graph_module))
        self.fast, self.folded, self.channels_last, self.checked = None, 0, False, False
        if fuse:
            self.fast = fold.inline(self.graph_module)
            if self.fast is not None:
                keys.append(_source_key(self.fast))
                self.folded = fold.optimize(self.fast)
                keys.append(_source_key(self.fast))
                self.channels_last = fold.has_conv(self.fast)
                self.clones = inplace.protect(self.fast)
                keys.append(_source_key(self.fast))
        if self.fast is None:
            self.clones = inplace.protect(self.graph_module)
            keys.append(_source_key(self.graph_module))
        weakref.finalize(self.graph_module, _forget_sources, [k for k in keys if k.startswith("<eval_with_key>")])
        self.paths = paths
        self.total = sum(1 for n in graph.nodes if n.op == "call_module")
        self.kept = sum(1 for n in self.graph_module.graph.nodes if n.op == "call_module")

    def forward(self, x: Tensor) -> dict[str, Any]:
        if self.fast is None:
            out = self.graph_module(x)
        elif self.channels_last and x.dim() == 4:
            out = self._channels_last(x)
        else:
            out = self.fast(x)
        return {k: v for k, v in out.items() if not k.startswith(inplace.PIN)} if self.pinned else out

    def _channels_last(self, x: Tensor) -> dict[str, Any]:
        fast = self.fast
        assert fast is not None  # channels-last is only chosen for an inlined graph
        if self.checked or torch.compiler.is_compiling():
            return fast(x.contiguous(memory_format=torch.channels_last))
        # First call: a model that calls .view() on a convolution's output cannot run channels-last; it then
        # runs as it is (torch.fx's report of the failed attempt is not shown).
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                out = fast(x.contiguous(memory_format=torch.channels_last))
        except RuntimeError:
            out = fast(x)  # the model's own error, if it fails this way too
            self.channels_last = False
        self.checked = True
        return out

    def describe(self) -> str:
        notes = [f"{self.folded} BatchNorms folded"] if self.folded else []
        notes += ["channels-last"] if self.channels_last else []
        notes += [f"{self.clones} outputs cloned before in-place ops"] if self.clones else []
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
    loader_cache = getattr(getattr(fx_graph_module, "_loader", None), "eval_cache", None)
    for key in keys:
        linecache.cache.pop(key, None)
        if isinstance(loader_cache, dict):
            loader_cache.pop(key, None)


class _StopForward(Exception):
    """Raised by the last needed hook to end a forward early."""


class HookRunner:
    """Forward hooks on the needed modules for the duration of one call.

    The first call runs the whole forward and counts each needed module's calls; later calls stop
    right after the last call of every needed module (a module called twice is read at its second
    call, as by fx). Layers past the deepest needed one never decide whether a render works: if that
    counting forward raises after every needed module has been seen, the error ends it quietly, the
    counts stand, and `describe()` says so. Outputs that something later writes to in place (seen by
    their version counters) are cloned from then on; that first call is repeated with clones.

    Example:
        >>> class Boom(nn.Module):
        ...     def forward(self, x):
        ...         raise ValueError("a head that wants another size")
        >>> run = HookRunner(nn.Sequential(nn.Conv2d(3, 4, 3), Boom()), ("0",))
        >>> sorted(run(torch.rand(1, 3, 8, 8)))
        ['0']
        >>> run.raised_past, "raised ValueError past it" in run.describe()
        ('ValueError', True)
    """

    def __init__(self, model: nn.Module, paths: tuple[str, ...]):
        self.model = model
        self.paths = paths
        self.modules = {p: model.get_submodule(p) for p in paths if p != OUTPUT}
        self.calls: dict[str, int] | None = None  # each needed module's calls per forward (None: not yet counted)
        self.cloning = False
        self.raised_past: str | None = None  # the error that ended the counting forward past the deepest site

    def __call__(self, x: Tensor) -> dict[str, Any]:
        cloning = self.cloning or torch.compiler.is_compiling()
        out, snaps = self._run(x, cloning)
        if not cloning and any(inplace.mutated(s) for s in snaps.values()):
            self.cloning = True
            out, _ = self._run(x, True)
        return out

    def _run(self, x: Tensor, cloning: bool) -> tuple[dict[str, Any], dict[str, list]]:
        out: dict[str, Any] = {}
        snaps: dict[str, list] = {}
        seen = dict.fromkeys(self.modules, 0)
        expected = self.calls
        stop_early = OUTPUT not in self.paths and expected is not None

        def store(path: str, _module: nn.Module, _inputs: Any, output: Any) -> None:
            out[path] = inplace.clone_tree(output) if cloning else output
            if not cloning and not torch.compiler.is_compiling():
                snaps[path] = inplace.snapshot(output)
            seen[path] += 1
            if stop_early and all(seen[p] >= expected[p] for p in seen):  # type: ignore[index]
                raise _StopForward

        handles = [m.register_forward_hook(ft.partial(store, p)) for p, m in self.modules.items()]
        try:
            result = self.model(x)
            if OUTPUT in self.paths:
                out[OUTPUT] = result
        except _StopForward:
            pass
        except Exception as err:
            # Only the counting forward may end this way, and only once every needed module has been seen:
            # what came after them is not part of the plan (a module read twice may be cut at its first call).
            if expected is not None or OUTPUT in self.paths or not all(seen.values()):
                raise
            self.raised_past = type(err).__name__
        finally:
            for h in handles:
                h.remove()
        missing = [p for p in self.modules if p not in out]
        if missing:
            raise ObjectiveShapeError(
                f"layers {missing} never ran during the model's forward; pick layers that forward() calls"
            )
        if expected is None:
            self.calls = seen
        return out, snaps

    def describe(self) -> str:
        if OUTPUT in self.paths:
            return "hooks, full forward"
        counted = f" (calls counted on a forward that raised {self.raised_past} past it)" if self.raised_past else ""
        return f"hooks, forward stopped after the last call of the last needed layer{counted}"


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
    obstacle = fx_obstacle(model, paths) if strategy in ("auto", "fx") else None
    if obstacle is not None and strategy == "fx":
        raise InvalidArgumentError(f"truncate='fx' cannot honour this model: {obstacle}, which a traced graph "
                                   "would skip; use truncate='auto' or 'hooks'")
    if strategy in ("auto", "fx") and obstacle is None:
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
