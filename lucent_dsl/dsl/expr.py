"""Objective expressions: a small algebra of frozen, hashable values.

An objective is a tree of nodes: `Const`, `Scale` (a number times an objective), `Sum`, `Product`
(of two objectives) and `Term` leaves from the vocabulary (`channel`, `neuron`, ...). Operators
only build nodes; nothing is computed until a `Plan` evaluates the tree on activations.

Sign convention (stated once, applied once): objectives are **maximized**. A plan's loss is
`-score`. Penalties (`total_variation`, `l1`, `l2`, `blur`, `diversity`, `alignment`) return a
positive amount that users *subtract*.

Canonical forms keep equality useful: `k * (j * a)` is `Scale(k*j, a)`, `1 * a` is `a`, sums are
flat and carry all their numbers in one trailing `Const`, and `a + 0` is `a`. With these rules
`repr(e)` is DSL text that `parse` (and Python itself) turns back into an equal expression (up to
`printing.REPR_LIMIT` characters; a longer repr abbreviates large vectors, and `printing.to_text` is
always in full). Sums
may be of any length; nesting (scales of sums, products, masks) is refused past `MAX_DEPTH` levels
when a node is built, so printing, parsing and evaluating never run out of stack.

Example:
    >>> from lucent_dsl import channel, neuron, parse
    >>> e = channel("layer4", 12) + 0.5 * neuron("layer3", 5) - channel("layer4", 1) / 4
    >>> e
    channel('layer4', 12) + 0.5 * neuron('layer3', 5) - 0.25 * channel('layer4', 1)
    >>> parse(repr(e)) == e
    True
"""
from __future__ import annotations

import dataclasses as dc
import functools as ft
import keyword
import math
import numbers
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..errors import InvalidArgumentError
from .arrays import Array as Array  # re-exported: a term holds its constants as Arrays, next to Expr
from .sites import IMAGE as IMAGE, INPUT as INPUT, OUTPUT as OUTPUT, Acts as Acts, Site as Site  # re-exported

# How deeply an objective may nest (scales of sums, products, masks inside masks): deeper trees could
# not be printed, parsed back or evaluated without running out of stack, so they are refused when built.
MAX_DEPTH = 64


class Expr:
    """Base of every objective node. Operators build nodes; `==` is structural equality."""

    __slots__ = ()

    def __add__(self, other: Any) -> Expr:
        o = _as_expr_or_none(other)
        return NotImplemented if o is None else sum_of([self, o])

    def __radd__(self, other: Any) -> Expr:
        o = _as_expr_or_none(other)
        return NotImplemented if o is None else sum_of([o, self])

    def __sub__(self, other: Any) -> Expr:
        o = _as_expr_or_none(other)
        return NotImplemented if o is None else sum_of([self, scale(-1.0, o)])

    def __rsub__(self, other: Any) -> Expr:
        o = _as_expr_or_none(other)
        return NotImplemented if o is None else sum_of([o, scale(-1.0, self)])

    def __neg__(self) -> Expr:
        return scale(-1.0, self)

    def __pos__(self) -> Expr:
        return self

    def __mul__(self, other: Any) -> Expr:
        if isinstance(other, Expr):
            return product(self, other)
        if _is_number(other):
            return scale(other, self)
        return NotImplemented

    def __rmul__(self, other: Any) -> Expr:
        if _is_number(other):
            return scale(other, self)
        return NotImplemented

    def __truediv__(self, other: Any) -> Expr:
        if not _is_number(other):
            return NotImplemented
        k = finite(other, "divisor")
        if k == 0:
            raise InvalidArgumentError(f"cannot divide {self!r} by zero")
        return scale(1.0 / k, self)

    def __repr__(self) -> str:
        from .printing import display_text

        return display_text(self)  # abbreviated past printing.REPR_LIMIT characters; printing.to_text is in full


@dc.dataclass(frozen=True, slots=True, repr=False)
class Const(Expr):
    """A constant score (the same for every image)."""

    value: float


@dc.dataclass(frozen=True, slots=True, repr=False)
class Scale(Expr):
    """`k * expr`."""

    k: float
    expr: Expr

    def __post_init__(self) -> None:
        check_depth(self)


@dc.dataclass(frozen=True, slots=True, repr=False)
class Sum(Expr):
    """`terms[0] + terms[1] + ...` (flat: no Sum inside, at most one trailing Const)."""

    terms: tuple[Expr, ...]


@dc.dataclass(frozen=True, slots=True, repr=False)
class Product(Expr):
    """`a * b`, per image."""

    a: Expr
    b: Expr

    def __post_init__(self) -> None:
        check_depth(self)


class Term(Expr):
    """A vocabulary leaf: reads activations at `sites()` and scores each image.

    Subclasses are frozen dataclasses whose fields are the factory's arguments; `name` is the
    factory's vocabulary name and `positional` lists the fields printed positionally.
    """

    __slots__ = ()
    name: ClassVar[str]
    positional: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:  # run by every term dataclass's __init__
        if hasattr(self, "map_inner"):  # a term that holds objectives (masks.masked) nests them
            check_depth(self)

    def sites(self) -> tuple[Site, ...]:
        raise NotImplementedError

    def score(self, acts: Acts, n: int) -> Tensor:
        """Per-image scores, shape (n,), for a render of `n` images. Higher is better."""
        raise NotImplementedError

    def bind(self, info: Any) -> Term:
        """This term specialised to the model it reads (`info`: that model's `ModelInfo`).

        Called once by `compile_plan`; the default returns the term unchanged. `class_logit`
        resolves a class name to its index here.
        """
        return self

    def dsl_args(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """(positional, keyword) arguments such that `VOCABULARY[name](*pos, **kw) == self`."""
        fields = dc.fields(self)  # type: ignore[arg-type]
        pos = tuple(getattr(self, f) for f in self.positional)
        kw = {}
        for f in fields:
            if f.name in self.positional or not f.init:
                continue
            value = getattr(self, f.name)
            default = f.default if f.default is not dc.MISSING else dc.MISSING
            if default is dc.MISSING or value != default or type(value) is not type(default):
                kw[f.name] = value
        return pos, kw


# The vocabulary: DSL name -> factory. Filled by `objectives.BUILTINS` (lucent_dsl/objectives/__init__.py) and by
# @objective.
VOCABULARY: dict[str, Callable[..., Expr]] = {}


# Names that DSL text reads as something else (`range(...)`, `tensor(...)`, constants): no objective may take them.
PARSER_NAMES = frozenset({"range", "tensor"})


def check_name(name: Any) -> str:
    """`name` if DSL text can call it as an objective (`name(...)`), else InvalidArgumentError."""
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name) or name in PARSER_NAMES:
        raise InvalidArgumentError(
            f"objective name {name!r} cannot be called from objective text: use a Python identifier that is not "
            f"a keyword nor one of {sorted(PARSER_NAMES)}, e.g. 'my_energy'"
        )
    return name


def register(name: str, factory: Callable[..., Expr], *, replace: bool = False) -> None:
    """Make `factory` callable from DSL text as `name(...)` (`replace`: over another factory of that name)."""
    check_name(name)
    if name in VOCABULARY and not replace and VOCABULARY[name] is not factory:
        raise InvalidArgumentError(
            f"an objective named {name!r} is already registered; pick another name or pass replace=True"
        )
    VOCABULARY[name] = factory


# --- numbers -------------------------------------------------------------------------------


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def finite(x: Any, what: str) -> float:
    """`x` as a finite float, or InvalidArgumentError naming `what`."""
    if not _is_number(x):
        raise InvalidArgumentError(f"{what} must be a real number, got {x!r} ({type(x).__name__})")
    try:
        v = float(x)
    except OverflowError:
        v = math.inf
    if not math.isfinite(v):
        raise InvalidArgumentError(f"{what} must be finite, got {v!r}")
    return v


def _as_expr_or_none(x: Any) -> Expr | None:
    if isinstance(x, Expr):
        return x
    if _is_number(x):
        return Const(finite(x, "a constant in an objective"))
    return None


def as_expr(x: Any) -> Expr:
    """`x` as an expression (numbers become `Const`)."""
    e = _as_expr_or_none(x)
    if e is None:
        raise InvalidArgumentError(f"expected an objective or a number, got {x!r} ({type(x).__name__})")
    return e


# --- canonical constructors ---------------------------------------------------------------------


def scale(k: float, e: Expr) -> Expr:
    """`k * e` in canonical form."""
    k = finite(k, "an objective weight")
    if isinstance(e, Const):
        return Const(finite(k * e.value, f"the constant {k!r} * {e.value!r}"))
    if isinstance(e, Scale):
        k, e = finite(k * e.k, f"the weight {k!r} * {e.k!r}"), e.expr
    return e if k == 1.0 else Scale(k, e)


def sum_of(items: Iterable[Expr | float]) -> Expr:
    """The flat sum of many objectives, without deep recursion.

    Example:
        >>> from lucent_dsl import channel
        >>> sum_of(channel("conv", i) for i in range(3))
        channel('conv', 0) + channel('conv', 1) + channel('conv', 2)
    """
    terms: list[Expr] = []
    const, has_const = 0.0, False
    for item in items:
        e = as_expr(item)
        for t in e.terms if isinstance(e, Sum) else (e,):
            if isinstance(t, Const):
                const, has_const = const + t.value, True
            else:
                terms.append(t)
    if has_const and (const != 0.0 or not terms):
        terms.append(Const(finite(const, "the sum of the constants in an objective")))
    if not terms:
        return Const(0.0)
    return terms[0] if len(terms) == 1 else Sum(tuple(terms))


def product(a: Expr, b: Expr) -> Expr:
    """`a * b` in canonical form (a constant factor becomes a `Scale`)."""
    if isinstance(a, Const):
        return scale(a.value, b)
    if isinstance(b, Const):
        return scale(b.value, a)
    return Product(a, b)


# --- queries ----------------------------------------------------------------------------------


def walk(e: Expr) -> Iterator[Expr]:
    """Every node of `e`, parents before children (iterative: safe for huge sums)."""
    stack = [e]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, Scale):
            stack.append(node.expr)
        elif isinstance(node, Sum):
            stack.extend(reversed(node.terms))
        elif isinstance(node, Product):
            stack.extend((node.b, node.a))


def terms_of(e: Expr) -> tuple[Term, ...]:
    """The vocabulary leaves of `e`, in order of appearance."""
    return tuple(n for n in walk(e) if isinstance(n, Term))


def top_terms(e: Expr) -> tuple[Expr, ...]:
    """The top-level summands of `e` (used to report a score history per term)."""
    return e.terms if isinstance(e, Sum) else (e,)


@ft.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dc.fields(cls))


def _inner_exprs(t: Term) -> tuple[Expr, ...]:
    """The objectives a term holds as arguments (`masked(expr, ...)`): only terms with a `map_inner` hold any."""
    if not hasattr(t, "map_inner"):
        return ()
    return tuple(v for v in (getattr(t, n) for n in _field_names(type(t))) if isinstance(v, Expr))


def _children(e: Expr) -> tuple[Expr, ...]:
    if isinstance(e, Scale):
        return (e.expr,)
    if isinstance(e, Sum):
        return e.terms
    if isinstance(e, Product):
        return (e.a, e.b)
    return _inner_exprs(e) if isinstance(e, Term) else ()


def depth(e: Expr) -> int:
    """How deeply `e` nests, as its text does: a term is 1, a product, a scale or a term holding objectives adds 1
    (a scale by -1 of a sum or a product adds 2: `-(...)` is a sign around parentheses), a flat sum adds 0.

    Example:
        >>> from lucent_dsl import channel
        >>> a = channel("c", 0)
        >>> depth(a), depth(a + a), depth(2 * (a + 3 * a)), depth(a * (a * a)), depth(a * -(a * a))
        (1, 1, 3, 3, 5)
    """
    found: dict[int, int] = {}
    stack: list[tuple[Expr, bool]] = [(e, False)]
    while stack:  # iterative: deep or wide trees need no recursion
        node, ready = stack.pop()
        kids = _children(node)
        if not ready and kids:
            stack.append((node, True))
            stack.extend((k, False) for k in kids if id(k) not in found)
            continue
        inner = max((found[id(k)] for k in kids), default=0)
        if isinstance(node, (Sum, Const)):
            found[id(node)] = inner
        else:
            sign = isinstance(node, Scale) and node.k == -1.0 and isinstance(node.expr, (Sum, Product))
            found[id(node)] = inner + 1 + sign
    return found[id(e)]


def check_depth(e: Expr) -> None:
    """InvalidArgumentError if `e` nests deeper than `MAX_DEPTH` (checked when nodes are built)."""
    d = depth(e)
    if d > MAX_DEPTH:
        raise InvalidArgumentError(
            f"the objective nests {d} levels deep (scales of sums, products of products, masks inside masks); at most "
            f"{MAX_DEPTH} levels can be printed, parsed back and evaluated. Build it flatter: a sum_of(...) of "
            "weighted terms, with the weights multiplied out"
        )


def map_terms(e: Expr, fn: Callable[[Term], Expr]) -> Expr:
    """Rebuild `e` with every leaf replaced by `fn(leaf)`."""
    if isinstance(e, Term):
        inner = getattr(e, "map_inner", None)  # a term that wraps objectives (masks.masked) maps its leaves
        return inner(lambda x: map_terms(x, fn)) if inner is not None else fn(e)
    if isinstance(e, Scale):
        return scale(e.k, map_terms(e.expr, fn))
    if isinstance(e, Sum):
        return sum_of(map_terms(t, fn) for t in e.terms)
    if isinstance(e, Product):
        return product(map_terms(e.a, fn), map_terms(e.b, fn))
    return e


# --- evaluation ---------------------------------------------------------------------------------


def evaluate(e: Expr, acts: Acts, n: int) -> Tensor:
    """Per-image scores (n,) of expression `e` on activations `acts`: the one interpreter of the tree."""
    if isinstance(e, Term):
        return e.score(acts, n)
    if isinstance(e, Scale):
        return e.k * evaluate(e.expr, acts, n)
    if isinstance(e, Sum):
        values = [evaluate(t, acts, n) for t in e.terms if not isinstance(t, Const)]
        out = values[0] if values else _constant(0.0, acts, n)
        for v in values[1:]:
            out = out + v
        consts = [t.value for t in e.terms if isinstance(t, Const)]
        return out + consts[0] if consts else out
    if isinstance(e, Product):
        return evaluate(e.a, acts, n) * evaluate(e.b, acts, n)
    if isinstance(e, Const):
        return _constant(e.value, acts, n)
    raise TypeError(f"not an objective node: {type(e).__name__}")


def _constant(value: float, acts: Acts, n: int) -> Tensor:
    like = next((a for a in acts.values() if isinstance(a, Tensor) and a.is_floating_point()), None)
    if like is None:
        return torch.full((n,), value)
    return torch.full((n,), value, device=like.device, dtype=like.dtype)
