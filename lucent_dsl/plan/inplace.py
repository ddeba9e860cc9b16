"""In-place safety: a captured activation is what its module returned, whatever runs after it.

`ReLU(inplace=True)`, `x.add_(y)`, `torch.relu_(x)` or `out += identity` after a read site would
change the tensor a term reads. Models are never modified to avoid it (their `inplace` flags stay
as they are); instead:

- fx graphs (`protect`): an alias analysis finds every output node that a later node may mutate
  (in place, or through a view or a module that returns its input) and reads a clone taken right
  after it. Other outputs cost nothing. Modules opaque to the graph (custom leaves) are assumed to
  mutate and alias their inputs, so the analysis errs towards a clone, never towards a wrong value.
- hooks (`snapshot`, `mutated`): the tensor version counters recorded at each hook show whether
  something later wrote to a captured tensor; the hooks runner then takes clones (see `truncate`).

Example:
    >>> import torch, torch.fx as fx, torch.nn as nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(inplace=True))
    >>> gm = fx.symbolic_trace(net)          # ReLU(inplace=True) writes to the convolution's output
    >>> out, conv = [n for n in gm.graph.nodes if n.op == "output" or n.target == "0"][::-1]
    >>> out.args = ({"0": conv, "1": out.args[0]},)
    >>> _ = gm.recompile()
    >>> protect(gm)
    1
    >>> x = torch.randn(1, 3, 4, 4)
    >>> bool(gm(x)["0"].min() < 0)   # the convolution's output, not the ReLU's
    True
"""
from __future__ import annotations

import operator
from typing import Any

import torch
import torch.fx as fx
from torch import Tensor, nn
from torch.fx.node import map_arg

__all__ = ["PIN", "clone_tree", "may_mutate", "mutated", "pin", "protect", "snapshot"]

PIN = "@inplace/"  # output keys of pinned in-place nodes (never a module path)

# Ops whose result may share storage with their first input.
_VIEW_METHODS = {
    "view",
    "view_as",
    "reshape",
    "reshape_as",
    "flatten",
    "unflatten",
    "transpose",
    "permute",
    "squeeze",
    "unsqueeze",
    "expand",
    "expand_as",
    "narrow",
    "select",
    "split",
    "chunk",
    "unbind",
    "t",
    "T",
    "mT",
    "contiguous",
    "detach",
    "as_strided",
    "unfold",
    "movedim",
    "swapaxes",
    "swapdims",
    "diagonal",
    "float",
    "to",
    "type",
    "type_as",
    "real",
    "imag",
    "view_as_real",
    "data",
    "__getitem__",
    "split_with_sizes",
    "tensor_split",
    "align_as",
    "refine_names",
}
_VIEW_FUNCTIONS = {operator.getitem, torch.flatten, torch.reshape, torch.transpose, torch.permute, torch.squeeze,
                   torch.unsqueeze, torch.narrow, torch.select, torch.split, torch.chunk, torch.unbind, torch.t,
                   torch.movedim, torch.swapaxes, torch.diagonal, torch.detach, torch.as_strided, torch.tensor_split}
# Modules that return a new tensor computed from their inputs (never their input itself, never writing to it).
_FRESH_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear, nn.Bilinear, nn.BatchNorm1d,
                  nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm2d, nn.MaxPool2d, nn.AvgPool2d,
                  nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool1d, nn.Upsample, nn.Embedding,
                  nn.MultiheadAttention, nn.Softmax, nn.LogSoftmax, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh,
                  nn.Softplus, nn.PixelShuffle, nn.LocalResponseNorm, nn.GLU, nn.PReLU)


def _inplace_flag(target: Any) -> bool:
    return getattr(target, "inplace", False) is True


def _module(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    try:
        return gm.get_submodule(node.target)  # type: ignore[arg-type]
    except AttributeError:
        return None


def _is_inplace_name(name: str) -> bool:
    return (name.endswith("_") and not name.endswith("__")) or name in (
        "__setitem__",
        "__iadd__",
        "__isub__",
        "__imul__",
        "__itruediv__",
        "__ior__",
        "__iand__",
    )


def may_mutate(gm: fx.GraphModule, node: fx.Node) -> list[fx.Node]:
    """The input nodes that `node` may write to (in place)."""
    args = [a for a in node.all_input_nodes]
    if node.op == "call_method":
        first = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
        return [first] if first is not None and _is_inplace_name(str(node.target)) else []
    if node.op == "call_function":
        name = getattr(node.target, "__name__", "")
        first = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
        if node.target in (operator.setitem,) or name in ("iadd", "isub", "imul", "itruediv", "ior", "iand"):
            return [first] if first is not None else []
        if node.kwargs.get("inplace") is True or node.kwargs.get("out") is not None:
            return args
        if name.endswith("_") and not name.endswith("__") and first is not None:
            return [first]
        return []
    if node.op == "call_module":
        m = _module(gm, node)
        if m is None or _inplace_flag(m):
            return args
        if isinstance(m, _FRESH_MODULES) or type(m).__module__.startswith("torch.nn.modules"):
            return []
        return args  # an opaque module: it may write to what it is given
    return []


def _may_alias(gm: fx.GraphModule, node: fx.Node) -> list[fx.Node]:
    """The input nodes whose storage `node`'s result may share."""
    if node.op == "call_method":
        first = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
        name = str(node.target)
        return [first] if first is not None and (name in _VIEW_METHODS or _is_inplace_name(name)) else []
    if node.op == "call_function":
        first = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
        if node.target in _VIEW_FUNCTIONS or node.kwargs.get("inplace") is True:
            return [first] if first is not None else []
        name = getattr(node.target, "__name__", "")
        if name.endswith("_") and not name.endswith("__") and first is not None:
            return [first]
        return []
    if node.op == "call_module":
        m = _module(gm, node)
        if m is not None and not _inplace_flag(m) and isinstance(m, _FRESH_MODULES):
            return []
        return list(node.all_input_nodes)  # Identity, Flatten, Dropout in eval, in-place activations, opaque modules
    return []


def _groups(gm: fx.GraphModule) -> dict[fx.Node, fx.Node]:
    """Union-find over nodes that may share storage: node -> its group's root."""
    parent: dict[fx.Node, fx.Node] = {}

    def find(n: fx.Node) -> fx.Node:
        while parent.get(n, n) is not n:
            parent[n] = parent.get(parent[n], parent[n])
            n = parent[n]
        return n

    for node in gm.graph.nodes:
        for src in _may_alias(gm, node):
            a, b = find(node), find(src)
            if a is not b:
                parent[a] = b
    return {n: find(n) for n in gm.graph.nodes}


def protect(gm: fx.GraphModule) -> int:
    """Make every output of `gm` the value it had when computed: clone those that a later node may mutate.

    Rewrites `gm` in place (recompiled) and returns the number of clones inserted.
    """
    graph = gm.graph
    out = next(n for n in graph.nodes if n.op == "output")
    returned = out.args[0]
    targets = ([v for k, v in returned.items() if not str(k).startswith(PIN)] if isinstance(returned, dict)
               else list(out.all_input_nodes))
    order = {n: i for i, n in enumerate(graph.nodes)}
    group = _groups(gm)
    last_write: dict[fx.Node, int] = {}  # group root -> position of the last node that may write to it
    for node in graph.nodes:
        for victim in may_mutate(gm, node):
            root = group[victim]
            last_write[root] = max(last_write.get(root, -1), order[node])
    clones: dict[fx.Node, fx.Node] = {}
    for node in dict.fromkeys(n for n in targets if isinstance(n, fx.Node)):
        if last_write.get(group[node], -1) > order[node]:
            with graph.inserting_after(node):
                clones[node] = graph.call_method("clone", (node,))
    if clones:
        out.args = (map_arg(out.args[0], lambda n: clones.get(n, n)),)
        graph.lint()
        gm.recompile()
    return len(clones)


def pin(gm: fx.GraphModule) -> int:
    """Keep the in-place ops whose result is unused (`h.add_(1)` on its own line) from dead-code elimination.

    torch.fx deems a method call pure, so `eliminate_dead_code` would drop the write, and every later read of `h`
    would differ from the model's own forward. Each such node joins the output dict under a key starting with
    `PIN` (the runner drops those keys). Returns how many were pinned.
    """
    out = next(n for n in gm.graph.nodes if n.op == "output")
    if not isinstance(out.args[0], dict):
        return 0
    loose = [n for n in gm.graph.nodes if n.op != "output" and not n.users and may_mutate(gm, n)]
    if loose:
        out.args = ({**out.args[0], **{f"{PIN}{i}": n for i, n in enumerate(loose)}},)
        gm.recompile()
    return len(loose)


def snapshot(value: Any) -> list[tuple[Tensor, int]]:
    """(tensor, version) for every tensor in a hook's output, to check later with `mutated`."""
    out = []
    for t in _tensors(value):
        try:
            out.append((t, t._version))
        except RuntimeError:  # inference-mode tensors have no version counter (and cannot be written to)
            continue
    return out


def mutated(snap: list[tuple[Tensor, int]]) -> bool:
    """Whether any tensor of a `snapshot` was written to since."""
    return any(t._version != v for t, v in snap)


def clone_tree(value: Any) -> Any:
    """`value` with every tensor cloned (dicts, lists and tuples rebuilt)."""
    if isinstance(value, Tensor):
        return value.clone()
    if isinstance(value, dict):
        pairs = [(k, clone_tree(v)) for k, v in value.items()]
        try:
            return type(value)(pairs)
        except TypeError:
            return dict(pairs)
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(clone_tree(v) for v in value)
    return value


def _tensors(value: Any) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []
