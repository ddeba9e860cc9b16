"""DSL text of expressions: what `repr` prints, abbreviated labels, and the plan's site-named tree.

Printing is the inverse of `parser.parse`: `parse(to_text(e)) == e` for every expression (large
tensors in full). `short_text` abbreviates tensors and vectors of more than 8 values, for labels
and messages only (it does not parse back); `display_text` (what `repr` prints) is `to_text` up to
`REPR_LIMIT` characters and `short_text` beyond, so a term holding a 512-d vector prints in one
line; whatever is written for `parse` (recipes, files, JSON) uses `to_text`. `format_tree` names
sites by a plan's short names.

Example:
    >>> from lucent_dsl import channel, neuron
    >>> to_text(channel("layer4", 12) - 0.5 * neuron("layer3", 5))
    "channel('layer4', 12) - 0.5 * neuron('layer3', 5)"
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from .arrays import Array
from .expr import Const, Expr, Product, Scale, Site, Sum, Term, terms_of, walk

__all__ = ["REPR_LIMIT", "display_text", "format_tree", "format_value", "short_text", "to_text"]

REPR_LIMIT = 400
"""Longest `repr` of an expression printed in full; a longer one is abbreviated (`display_text`)."""
SHORT_VALUES = 8
"""Tensors and vectors with more values than this are abbreviated by `short_text`."""


def format_value(v: Any, *, short: bool = False) -> str:
    """DSL text of one argument value (`short`: large tensors abbreviated, for display only)."""
    if isinstance(v, float):
        return repr(v)
    if short and isinstance(v, tuple) and len(v) > SHORT_VALUES and all(isinstance(x, float) for x in v):
        import hashlib

        head = ", ".join(f"{x:.4g}" for x in v[:3])
        digest = hashlib.sha1(repr(v).encode()).hexdigest()[:8]  # two vectors alike at both ends still differ
        return f"({head}, ..., {v[-1]:.4g} <{len(v)} values, {digest}>)"
    if isinstance(v, tuple):
        inner = ", ".join(format_value(x, short=short) for x in v)
        return f"({inner},)" if len(v) == 1 else f"({inner})"
    if isinstance(v, Expr):  # a term holding a term (masked): its text, in full unless `short`
        return short_text(v) if short else to_text(v)
    if short and isinstance(v, Array) and v.tensor.numel() > SHORT_VALUES:
        import hashlib

        return f"tensor(<{hashlib.sha1(v.key).hexdigest()[:8]}>, shape={format_value(v.shape)})"
    return repr(v)


def _term_text(t: Term, *, short: bool = False) -> str:
    pos, kw = t.dsl_args()
    args = [format_value(v, short=short) for v in pos] + [f"{k}={format_value(v, short=short)}" for k, v in kw.items()]
    return f"{t.name}({', '.join(args)})"


def short_text(e: Expr) -> str:
    """Like `repr(e)`, with large tensors abbreviated to a digest and a shape: for labels and histories.

    Example:
        >>> import torch
        >>> from lucent_dsl import activation_match
        >>> short_text(activation_match("conv", torch.zeros(4, 3, 3)))  # doctest: +ELLIPSIS
        "activation_match('conv', tensor(<...>, shape=(4, 3, 3)))"
    """
    return _print_with(e, lambda t: _term_text(t, short=True))


def to_text(e: Expr) -> str:
    """The DSL text of `e`, in full: `parse(to_text(e)) == e`. Write this wherever the text is read back."""
    return _print_with(e, _term_text)


def display_text(e: Expr) -> str:
    """What `repr(e)` prints: `to_text(e)` when it is at most `REPR_LIMIT` characters, else `short_text(e)`.

    Example:
        >>> from lucent_dsl import direction
        >>> display_text(direction("layer4", [0.5] * 512))
        "direction('layer4', (0.5, 0.5, 0.5, ..., 0.5 <512 values, df399c9f>))"
        >>> len(to_text(direction("layer4", [0.5] * 512)))
        2581
    """
    text = to_text(e)
    if len(text) <= REPR_LIMIT or not any(_abbreviated(v) for t in terms_of(e) for v in _values(t)):
        return text
    return short_text(e)


def _values(t: Term) -> list[Any]:
    pos, kw = t.dsl_args()
    return [*pos, *kw.values()]


def _abbreviated(v: Any) -> bool:
    """Whether `format_value(v, short=True)` shortens `v`."""
    if isinstance(v, Expr):
        return any(_abbreviated(x) for t in terms_of(v) for x in _values(t))
    if isinstance(v, Array):
        return v.tensor.numel() > SHORT_VALUES
    return isinstance(v, tuple) and (
        (len(v) > SHORT_VALUES and all(isinstance(x, float) for x in v)) or any(_abbreviated(x) for x in v)
    )


def format_tree(e: Expr, names: Mapping[Site, str]) -> str:
    """Like `to_text`, with each site printed as its short name from `names` (for `Plan.__str__`)."""

    def leaf(t: Term) -> str:
        pos, kw = t.dsl_args()
        shown = {s.layer: names[s] for s in t.sites() if s in names}
        args = [shown.pop(v) if isinstance(v, str) and v in shown else format_value(v, short=True) for v in pos]
        for k, v in kw.items():
            if isinstance(v, str) and v in shown:
                args.append(f"{k}={shown.pop(v)}")
            elif k != "model" or not t.sites():
                args.append(f"{k}={format_value(v, short=True)}")
        return f"{t.name}({', '.join(list(shown.values()) + args)})"

    text_of: dict[int, str] = {}
    for node in reversed(list(walk(e))):
        if isinstance(node, Term):
            text_of[id(node)] = leaf(node)
    # Reuse the printer's layout rules by printing a twin tree whose leaves print as given.
    return _print_with(e, lambda t: text_of[id(t)])


def _print_with(e: Expr, leaf: Callable[[Term], str]) -> str:
    if isinstance(e, Term):
        return leaf(e)
    if isinstance(e, Const):
        return repr(e.value)
    if isinstance(e, Scale):
        inner = _print_with(e.expr, leaf)
        if isinstance(e.expr, (Sum, Product)):
            inner = f"({inner})"
        return f"-{inner}" if e.k == -1.0 else f"{e.k!r} * {inner}"
    if isinstance(e, Product):
        left, right = _print_with(e.a, leaf), _print_with(e.b, leaf)
        left = f"({left})" if isinstance(e.a, Sum) else left
        right = f"({right})" if isinstance(e.b, (Sum, Scale, Product)) else right
        return f"{left} * {right}"
    if not isinstance(e, Sum):
        raise TypeError(f"not an objective node: {type(e).__name__}")
    out = []
    for i, t in enumerate(e.terms):
        negative = (isinstance(t, Scale) and t.k < 0) or (isinstance(t, Const) and math.copysign(1, t.value) < 0)
        if i and negative:
            neg = -t
            text = _print_with(neg, leaf)
            # -(-1 * (a + b)) is the bare sum a + b: without parentheses `x - a + b` would read back wrong.
            out.append(f" - ({text})" if isinstance(neg, Sum) else " - " + text)
        else:
            out.append((" + " if i else "") + _print_with(t, leaf))
    return "".join(out)
