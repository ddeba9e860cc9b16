"""Inference rewrites of a traced, truncated forward: BatchNorm folded into convolutions, channels-last.

During a render the models are frozen in eval mode, so an `nn.BatchNorm2d` that follows an
`nn.Conv2d` (or an `F.conv2d` on a module's parameters, as EfficientNet's own convolution class
does) is an affine map per channel and can be folded into the convolution's weight and bias:

    w' = w * g / sqrt(var + eps)          b' = (b - mean) * g / sqrt(var + eps) + beta

One convolution then does the work of two modules, forward and backward, and the activations run
channels-last (NHWC), the layout oneDNN's CPU kernels prefer. On the 2-core CPU of
`benchmarks/bench_step.py` this made MobileNetV2's truncated forward + input backward 1.5x (batch 1)
to 1.8x (batch 16) faster, and resnet18's 1.2-1.3x.

The folded weights are computed from the live modules at every call, so editing or moving the
model after a plan was compiled is seen at the next forward. Inside `weights_frozen()` (which
`render` enters through `plan.frozen_models`) they are computed once and reused until the
context ends. A pair is run as the two
original modules whenever the BatchNorm is in training mode or either module has hooks, so user
hooks always fire.

`optimize(gm, keep)` rewrites a `torch.fx.GraphModule` in place; `keep` are output nodes whose own
value must survive (a captured convolution is never folded away).

Example:
    >>> import torch, torch.fx as fx, torch.nn as nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    >>> gm = fx.symbolic_trace(net)
    >>> optimize(gm)
    1
    >>> x = torch.rand(1, 3, 8, 8)
    >>> torch.allclose(gm(x), net(x), atol=1e-5)
    True
"""
from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator, Sequence
from typing import Any, cast

import torch
import torch.fx as fx
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["FoldedConvBN", "FunctionalConv", "has_conv", "inline", "optimize", "weights_frozen"]

# The modules whose weights this thread's (or task's) open render has promised not to change: a context,
# not a process-wide counter, so another thread's render of another model never sees a stale cache.
_FROZEN: contextvars.ContextVar[tuple[frozenset[int], list]] = contextvars.ContextVar(
    "lucent_frozen", default=(frozenset(), [])
)


@contextlib.contextmanager
def weights_frozen(models: Sequence[nn.Module] = ()) -> Iterator[None]:
    """Promise that no weight of `models` changes or trains until exit: their folded weights are cached
    meanwhile, and dropped at exit (`frozen_models` enters it after setting `requires_grad=False`).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
        >>> with weights_frozen([net]):
        ...     id(net[0]) in _FROZEN.get()[0]
        True
    """
    ids, cached = _FROZEN.get()
    token = _FROZEN.set((ids | {id(m) for model in models for m in model.modules()}, []))
    try:
        yield
    finally:
        for m in _FROZEN.get()[1]:
            m._folded = None  # computed under this promise only; a copy of the weights need not outlive it
        _FROZEN.reset(token)


class FoldedConvBN(nn.Module):
    """`bn(conv(x))` as one convolution with folded weights (eval mode, no hooks); otherwise the two modules."""

    def __init__(self, conv: nn.Conv2d | FunctionalConv, bn: nn.BatchNorm2d):
        super().__init__()
        self.conv, self.bn = conv, bn
        self._folded: tuple[Tensor, Tensor] | None = None

    def _unfoldable(self) -> bool:
        c, b = self.conv, self.bn
        return (b.training or b.running_mean is None or b.running_var is None
                or _has_hooks(c) or _has_hooks(b))

    def fold(self) -> tuple[Tensor, Tensor]:
        """The folded (weight, bias), differentiable with respect to the modules' tensors."""
        c, b = self.conv, self.bn
        mean, var = cast(Tensor, b.running_mean), cast(Tensor, b.running_var)  # not None: see `unfoldable`
        scale = torch.rsqrt(var + b.eps)
        if b.weight is not None:
            scale = scale * b.weight
        weight = c.weight * scale.reshape(-1, *([1] * (c.weight.dim() - 1))).to(c.weight.dtype)
        bias = -mean * scale if c.bias is None else (c.bias - mean) * scale
        if b.bias is not None:
            bias = bias + b.bias
        return weight, bias.to(c.weight.dtype)

    def _cached_fold(self) -> tuple[Tensor, Tensor]:
        frozen, cached = _FROZEN.get()
        if id(self.conv) not in frozen or id(self.bn) not in frozen:
            return self.fold()  # outside a render of this model the weights may change (or train) between calls
        if self._folded is None:
            with torch.no_grad():
                weight, bias = self.fold()
                if weight.dim() == 4:
                    weight = weight.contiguous(memory_format=torch.channels_last)
            self._folded = (weight, bias)
            cached.append(self)
        return self._folded

    def forward(self, x: Tensor) -> Tensor:
        if self._unfoldable():
            return self.bn(self.conv(x))
        weight, bias = self.fold() if torch.compiler.is_compiling() else self._cached_fold()
        return self.conv._conv_forward(x, weight, bias)


def _has_hooks(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
                or getattr(m, "_backward_pre_hooks", None))


class _Inliner(fx.Tracer):
    """Traces through every module except torch.nn's own layers and modules with hooks (their hooks
    must still fire). With `keep_untraceable`, subclasses of torch.nn layers that do not trace on their
    own (a BatchNorm2d subclass with control flow in its forward) stay whole too."""

    def __init__(self, keep_untraceable: bool):
        super().__init__()
        self.keep_untraceable = keep_untraceable

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if _has_hooks(m) or super().is_leaf_module(m, qualname):
            return True
        containers = (nn.Module, nn.Sequential, nn.ModuleList, nn.ModuleDict)
        if not self.keep_untraceable or not any(
                c.__module__.startswith("torch.nn") and c not in containers for c in type(m).__mro__):
            return False
        try:
            fx.Tracer().trace(m)
        except Exception:
            return True
        return False


def inline(gm: fx.GraphModule) -> fx.GraphModule | None:
    """`gm` traced again through its leaf modules down to torch.nn's own layers (None if that fails).

    Modules with hooks stay whole. A module that does not trace (control flow on tensor values) is
    retried as a leaf when it subclasses a torch.nn layer.
    """
    for keep_untraceable in (False, True):
        try:
            return fx.GraphModule(gm, _Inliner(keep_untraceable).trace(gm))
        except Exception:
            continue
    return None


class FunctionalConv(nn.Module):
    """A traced `F.conv2d(x, owner.weight, owner.bias, ...)` call seen as a convolution module.

    Models with their own convolution classes (EfficientNet's static "same" padding, ...) trace
    through to `F.conv2d` on their parameters; this reads those parameters live from `owner`.
    """

    owner: nn.Module

    def __init__(self, owner: nn.Module, weight: str, bias: str | None, stride: Any, padding: Any,
                 dilation: Any, groups: int):
        super().__init__()
        self.__dict__["owner"] = owner  # not a child: its parameters stay the model's own
        self.weight_name, self.bias_name = weight, bias
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups

    @property
    def weight(self) -> Tensor:
        return self.owner.get_parameter(self.weight_name)

    @property
    def bias(self) -> Tensor | None:
        return None if self.bias_name is None else self.owner.get_parameter(self.bias_name)

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    def _conv_forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.weight, self.bias)


_CONV2D_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_CONV2D_DEFAULTS = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}


def _conv_of(gm: fx.GraphModule, node: fx.Node) -> tuple[nn.Module, fx.Node] | None:
    """(convolution, its input node) when `node` is a plain Conv2d call or an `F.conv2d` on parameters."""
    if node.op == "call_module":
        conv = gm.get_submodule(str(node.target))
        ok = type(conv) is nn.Conv2d and len(node.args) == 1 and not node.kwargs and isinstance(node.args[0], fx.Node)
        return (conv, cast(fx.Node, node.args[0])) if ok else None
    if node.op != "call_function" or node.target not in (F.conv2d, torch.conv2d):
        return None
    args = {**_CONV2D_DEFAULTS, **dict(zip(_CONV2D_ARGS, node.args)), **node.kwargs}
    weight, bias = args.get("weight"), args["bias"]
    params = [a for a in (weight, bias) if a is not None]
    if not isinstance(args.get("input"), fx.Node) or not all(
        isinstance(a, fx.Node) and a.op == "get_attr" for a in params
    ):
        return None
    if any(isinstance(args[k], fx.Node) for k in ("stride", "padding", "dilation", "groups")):
        return None
    if not isinstance(weight, fx.Node):
        return None
    try:
        gm.get_parameter(str(weight.target))
        if bias is not None:
            gm.get_parameter(str(bias.target))
    except AttributeError:
        return None  # a buffer or a computed tensor: not a frozen weight
    conv = FunctionalConv(gm, str(weight.target), None if bias is None else str(bias.target),
                          args["stride"], args["padding"], args["dilation"], args["groups"])
    return conv, args["input"]


def optimize(gm: fx.GraphModule, keep: frozenset[fx.Node] = frozenset()) -> int:
    """Fold every eval-foldable 2-d convolution -> BatchNorm2d pair of `gm` in place; returns how many.

    Only exact `nn.BatchNorm2d` modules are folded: subclasses (timm's BatchNormAct2d, ...) may do more.
    """
    folded = 0
    for node in list(gm.graph.nodes):
        bn = gm.get_submodule(node.target) if node.op == "call_module" else None
        if type(bn) is not nn.BatchNorm2d or len(node.args) != 1 or node.kwargs or not bn.track_running_stats:
            continue
        src = node.args[0]
        found = _conv_of(gm, src) if isinstance(src, fx.Node) else None
        if found is None or len(src.users) != 1 or src in keep or found[0].out_channels != bn.num_features:
            continue
        name = f"_folded_{folded}"
        gm.add_submodule(name, FoldedConvBN(cast("nn.Conv2d | FunctionalConv", found[0]), bn))
        with gm.graph.inserting_before(node):
            fused = gm.graph.call_module(name, (found[1],))
        node.replace_all_uses_with(fused)
        gm.graph.erase_node(node)
        gm.graph.erase_node(src)
        folded += 1
    if folded:
        gm.graph.eliminate_dead_code()
        gm.graph.lint()
        gm.recompile()
    return folded


def has_conv(gm: fx.GraphModule) -> bool:
    """True when `gm` runs a 2-d convolution (channels-last then pays on the CPU)."""
    return any(isinstance(m, (nn.Conv2d, FoldedConvBN)) for m in gm.modules()) or any(
        n.op == "call_function" and n.target in (F.conv2d, torch.conv2d) for n in gm.graph.nodes)


# Frozen state shared by every open frozen_models() context, across threads: id -> [object, count, saved flag].
_FREEZE_LOCK = threading.Lock()
_FROZEN_STATE: dict[int, list] = {}


def _hold(objects: Sequence[Any], attr: str) -> None:
    for obj in objects:
        entry = _FROZEN_STATE.setdefault(id(obj), [obj, 0, getattr(obj, attr)])
        entry[1] += 1


def _release(objects: Sequence[Any], attr: str) -> None:
    for obj in objects:
        entry = _FROZEN_STATE[id(obj)]
        entry[1] -= 1
        if not entry[1]:
            del _FROZEN_STATE[id(obj)]
            if attr == "training":
                obj.training = entry[2]
            else:
                obj.requires_grad_(entry[2])


@contextlib.contextmanager
def frozen_models(models: Sequence[nn.Module]) -> Iterator[None]:
    """Eval mode and `requires_grad=False` for every module and parameter, restored exactly on exit.

    Only the image gets gradients during a render; the user's flags come back even after an exception.
    Renders of one model in several threads at once are safe: the first context to take a module or
    parameter saves its flag, the model stays frozen while any context holds it, and the last one
    to leave restores the flag (so no thread ever saves, or restores, another's frozen state).

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout()).train()
        >>> with frozen_models([net]), frozen_models([net]):
        ...     net.training, net[0].weight.requires_grad
        (False, False)
        >>> net.training, net[0].weight.requires_grad
        (True, True)
    """
    modules = list({id(m): m for model in models for m in model.modules()}.values())
    params = list({id(q): q for model in models for q in model.parameters()}.values())
    with _FREEZE_LOCK:
        _hold(modules, "training")
        _hold(params, "requires_grad")
        try:
            for model in models:
                model.eval()
            for q in params:
                q.requires_grad_(False)
        except BaseException:
            _release(modules, "training")
            _release(params, "requires_grad")
            raise
    try:
        with weights_frozen(models):
            yield
    finally:
        with _FREEZE_LOCK:
            _release(modules, "training")
            _release(params, "requires_grad")
