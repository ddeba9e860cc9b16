"""Hypothesis strategies for objectives: a builder per vocabulary term, expression trees, batched lists.

A *table* says which sites exist: `{model name or None: {layer: ActivationSpec or per-image shape}}` (a
shape is read as today's vocabulary reads it, `ActivationSpec.of`). `term(table, n)` draws one term that
fits the table (indices in range, vectors as long as the layer has channels, positions inside the
grid, batch selections inside the `n` images of a render), `exprs(table, n)` draws whole trees
(sums with repeated summands, products, scales, quotients), `batched_lists(table, n)` one
per-image objective per image, and `full_acts(table, n)` random activations for every site, so
that any drawn tree can be evaluated. `builders=` (default: `vocabulary.BUILDERS`, one per
built-in term) says which terms may appear; add yours with `vocabulary.custom_builder`.

Example:
    >>> from hypothesis import given
    >>> table = {None: {"conv": (6, 5, 7), "fc": (9,)}}
    >>> @given(exprs(table, 2, image=(3, 8, 8)))
    ... def check(e):
    ...     assert evaluate(e, full_acts(table, 2, image=(3, 8, 8)), 2).shape == (2,)
    >>> check()
"""
from __future__ import annotations

import dataclasses as dc
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import torch
from hypothesis import strategies as st
from torch import Tensor

from ..dsl.expr import IMAGE, Const, Expr, Site, Term, map_terms, sum_of
from ..errors import InvalidArgumentError
from .shapes import RANK_LAYOUTS, ActivationSpec
from .vocabulary import BUILDERS, Builder

__all__ = [
    "Table", "as_spec", "as_table", "batched_lists", "exprs", "full_acts", "leaves_of", "random_tables", "sites_of",
    "term", "wild_exprs", "with_batch",
]

Table = Mapping[Any, Mapping[str, Any]]


# --- tables ------------------------------------------------------------------------------------------


def as_spec(v: Any) -> ActivationSpec:
    return v if isinstance(v, ActivationSpec) else ActivationSpec.of(v)


def as_table(table: Table) -> dict[Any, dict[str, ActivationSpec]]:
    """`table` with every per-image shape read as a `ActivationSpec`."""
    return {m: {layer: as_spec(v) for layer, v in layers.items()} for m, layers in table.items()}


def sites_of(table: Table, image: Any = None) -> dict[Site, ActivationSpec]:
    """Every site of `table` (and the rendered image, when its layout is given), with its layout."""
    out = {Site(m, layer): lay for m, layers in as_table(table).items() for layer, lay in layers.items()}
    if image is not None:
        out[Site(None, IMAGE)] = as_spec(image)
    return out


def full_acts(table: Table, n: int, *, crops: int = 2, seed: int = 0, image: Any = None,
              dtype: torch.dtype = torch.float64, requires_grad: bool = False) -> dict[Site, Tensor]:
    """Random activations (crops * n rows, crop-major) for every site of `table` (and the image)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for site, lay in sorted(sites_of(table, image).items(), key=lambda kv: (kv[0].model or "", kv[0].layer)):
        out[site] = torch.randn((crops * n, *lay.shape), generator=g, dtype=dtype).requires_grad_(requires_grad)
    return out

# --- terms and trees -------------------------------------------------------------------------------------


def leaves_of(e: Expr) -> list[Term]:
    """The vocabulary leaves of `e`, including those inside terms that wrap objectives (`masked`)."""
    out: list[Term] = []
    map_terms(e, lambda t: (out.append(t), t)[1])
    return out


def with_batch(e: Expr, batch: int | range | None) -> Expr:
    """`e` with `batch=` set on every leaf (InvalidArgumentError if a leaf takes no `batch=`)."""
    def set_batch(t: Term) -> Term:
        if not any(f.name == "batch" for f in dc.fields(t)):  # type: ignore[arg-type]
            raise InvalidArgumentError(f"{t!r} takes no batch=; it scores the whole batch")
        return dc.replace(t, batch=batch)  # type: ignore[type-var]
    return map_terms(e, set_batch)


@st.composite
def term(draw, table: Table, n: int = 3, *, image: Any = None, names: Sequence[str] | None = None,
         batches: bool = True, builders: Mapping[str, Builder] | None = None) -> Expr:
    """One vocabulary term that fits `table` (and the rendered image of layout `image`, if given).

    `names`: only these builders; `batches=False`: no term selects images (for `batched`, which does).
    """
    builders = BUILDERS if builders is None else builders
    tab, img = as_table(table), None if image is None else as_spec(image)
    model = draw(st.sampled_from(sorted(tab, key=lambda m: "" if m is None else m)))
    options = [name for name in (names or builders) if builders[name].available(tab[model], img)]
    if not options:
        raise InvalidArgumentError(f"no term of {sorted(names or builders)} fits the layers {tab[model]} (image {img})")
    b = builders[draw(st.sampled_from(options))]
    t = draw(b.draw(model, b.layers(tab[model]), n, img if b.reads_image(img) else None))
    if not batches:
        t = map_terms(
            t,
            lambda leaf: dc.replace(cast(Any, leaf), batch=None) if getattr(leaf, "batch", None) is not None else leaf,
        )
    return t


def _safe(op: Callable[..., Expr]) -> Callable[[tuple], Expr]:
    """`op(*args)`, or its first objective when the weights overflow (1e308 * 1e308)."""
    def apply(args: tuple) -> Expr:
        try:
            return op(*args)
        except InvalidArgumentError:
            return args[0] if isinstance(args[0], Expr) else args[1]
    return apply


def _safe_sum(xs: list) -> Expr:
    """`sum_of(xs)`, or its first item when the constants overflow (1e308 + 1e308)."""
    try:
        return sum_of(xs)
    except InvalidArgumentError:
        return xs[0]


def exprs(table: Table, n: int = 3, *, image: Any = None,
          consts: st.SearchStrategy[float] = st.floats(-10, 10),
          weights: st.SearchStrategy[float] = st.floats(-4, 4),
          divisors: st.SearchStrategy[float] = st.floats(0.25, 4) | st.floats(-4, -0.25),
          max_leaves: int = 6, names: Sequence[str] | None = None, with_consts: bool = True,
          batches: bool = True, builders: Mapping[str, Builder] | None = None) -> st.SearchStrategy[Expr]:
    """Expression trees over `table`: terms and constants joined by + - * / and unary minus, sums with
    repeated summands (`a + a`), products and scales."""
    leaves = term(table, n, image=image, names=names, batches=batches, builders=builders)
    if with_consts:
        leaves = leaves | consts.map(Const)

    def extend(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
        pairs = st.tuples(children, children)
        ops = [
            pairs.map(_safe(operator.add)),
            pairs.map(_safe(operator.sub)),
            pairs.map(_safe(operator.mul)),
            st.tuples(weights, children).map(_safe(operator.mul)),
            st.tuples(children, weights).map(_safe(operator.mul)),
            st.tuples(children, divisors).map(_safe(operator.truediv)),
            children.map(operator.neg),
            children.map(lambda e: _safe_sum([e, e])),
            st.lists(children, min_size=1, max_size=4).map(_safe_sum),
        ]
        if with_consts:
            ops.append(st.tuples(consts, children).map(_safe(operator.sub)))
        return st.one_of(*ops)

    return st.recursive(leaves, extend, max_leaves=max_leaves)


def batched_lists(table: Table, n: int = 3, *, image: Any = None, max_leaves: int = 3,
                  builders: Mapping[str, Builder] | None = None) -> st.SearchStrategy[list[Expr]]:
    """Lists of `n` per-image objectives (no constants, no batch=), for `batched` and `compile_plan([...])`."""
    builders = BUILDERS if builders is None else builders
    names = tuple(name for name, b in builders.items() if b.selectable)
    one = exprs(table, n, image=image, names=names, with_consts=False, batches=False, max_leaves=max_leaves,
                builders=builders)
    return st.lists(one, min_size=n, max_size=n)


any_float = st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def random_tables(draw) -> dict[Any, dict[str, ActivationSpec]]:
    """Tables with arbitrary layer and model names (quotes, backslashes, unicode, '/', ...)."""
    from .shapes import activation_specs

    names = st.text(min_size=1, max_size=6).filter(lambda s: not s.startswith("@"))  # "@image" etc. are reserved
    lays = activation_specs(RANK_LAYOUTS, channels=(1, 6), sides=(1, 4), prefix=(0, 1))
    layer_table = st.dictionaries(names, lays, min_size=1, max_size=3)
    models = draw(st.lists(st.none() | names, min_size=1, max_size=2, unique=True))
    return {m: draw(layer_table) for m in models}


@st.composite
def wild_exprs(draw, n: int = 3, builders: Mapping[str, Builder] | None = None) -> Expr:
    """Expressions for round trips: arbitrary names and any finite float as weight or constant."""
    return draw(exprs(draw(random_tables()), n, consts=any_float, weights=any_float,
                      divisors=any_float.filter(lambda v: v != 0), max_leaves=8, builders=builders))
