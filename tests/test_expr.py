"""Contracts of the expression algebra: laws checked by evaluation, canonical forms, round trips."""
from __future__ import annotations

import dataclasses as dc
import math
import operator

import numpy as np
import pytest
import strategies as S
import torch
from hypothesis import given, settings, strategies as st

import lucent_dsl as ld
from lucent_dsl.dsl.expr import (
    VOCABULARY,
    Array,
    Const,
    Expr,
    Product,
    Scale,
    Sum,
    Term,
    as_expr,
    evaluate,
    map_terms,
    scale,
    sum_of,
    terms_of,
    top_terms,
    walk,
)
from lucent_dsl.dsl.printing import to_text
from lucent_dsl.dsl.serialize import from_json, to_json
from lucent_dsl.errors import InvalidArgumentError

N = S.N_IMAGES
seeds = st.integers(0, 2**16)
weights = st.floats(-4, 4)
nonzero = st.floats(0.25, 4) | st.floats(-4, -0.25)


def ev(e: Expr, seed: int) -> torch.Tensor:
    return evaluate(e, S.full_acts(seed=seed), N)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, *parts: torch.Tensor) -> None:
    """Equal up to float64 rounding, relative to the largest value involved."""
    size = max([1.0] + [float(t.abs().max()) for t in (actual, expected, *parts)])
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-9 * size)


def py_eval(text: str) -> object:
    """Python's own reading of DSL text, with only the vocabulary in scope (the printer's promise)."""
    scope = {"__builtins__": {}, "range": range, "tensor": lambda data, shape: Array.of(data, shape=shape)}
    return eval(text, scope | dict(VOCABULARY))  # noqa: S307 - the test checks that repr is Python


# --- laws, checked by evaluating on random activations ---------------------------------------------


@given(S.exprs(), S.exprs(), seeds)
def test_sum_evaluates_to_sum_of_values(a, b, seed):
    va, vb = ev(a, seed), ev(b, seed)
    assert_close(ev(a + b, seed), va + vb, va, vb)
    assert_close(ev(b + a, seed), va + vb, va, vb)
    assert_close(ev(a - b, seed), va - vb, va, vb)


@given(S.exprs(), weights, seeds)
def test_scaling_scales_values(a, k, seed):
    va = ev(a, seed)
    assert_close(ev(k * a, seed), k * va, va)
    assert_close(ev(a * k, seed), k * va, va)


@given(S.exprs(), seeds)
def test_negation_is_exact(a, seed):
    assert torch.equal(ev(-a, seed), -ev(a, seed))
    assert torch.equal(ev(+a, seed), ev(a, seed))


@given(S.exprs(), S.exprs(), seeds)
def test_products_multiply_per_image(a, b, seed):
    va, vb = ev(a, seed), ev(b, seed)
    assert_close(ev(a * b, seed), va * vb, va * vb)


@given(S.exprs(), nonzero, seeds)
def test_division_by_a_number(a, k, seed):
    va = ev(a, seed)
    assert_close(ev(a / k, seed), va / k, va)


@given(st.lists(S.exprs(max_leaves=3), min_size=0, max_size=6), seeds)
def test_sum_of_many(items, seed):
    total = ev(sum_of(items), seed)
    expected = sum((ev(e, seed) for e in items), torch.zeros(N, dtype=torch.float64))
    assert_close(total, expected, *[ev(e, seed) for e in items])


@given(S.exprs(), seeds)
def test_values_are_per_image_float64_like_the_activations(e, seed):
    v = ev(e, seed)
    assert v.shape == (N,)
    assert v.dtype == torch.float64  # constants follow the activations' dtype
    assert bool(torch.isfinite(v).all())


@given(S.exprs(), seeds)
def test_top_terms_add_up(e, seed):
    parts = [ev(t, seed) for t in top_terms(e)]
    assert_close(ev(e, seed), sum(parts), *parts)


# --- canonical forms ------------------------------------------------------------------------------


def _check_canonical(e: Expr) -> None:
    for node in walk(e):
        if isinstance(node, Sum):
            assert len(node.terms) >= 2
            assert not any(isinstance(t, Sum) for t in node.terms)
            assert not any(isinstance(t, Const) for t in node.terms[:-1])
            assert not (isinstance(node.terms[-1], Const) and node.terms[-1].value == 0)
        elif isinstance(node, Scale):
            assert node.k != 1.0 and math.isfinite(node.k)
            assert not isinstance(node.expr, (Scale, Const))
        elif isinstance(node, Product):
            assert not isinstance(node.a, Const) and not isinstance(node.b, Const)
        elif isinstance(node, Const):
            assert math.isfinite(node.value)
        else:
            assert isinstance(node, Term)


@settings(max_examples=30)
@given(S.wild_exprs())
def test_operators_build_canonical_forms(e):
    _check_canonical(e)
    _check_canonical(ld.parse(to_text(e)))


@given(S.exprs(), weights, weights)
def test_canonical_identities(a, k, j):
    assert 1 * a == a and a * 1.0 == a and a / 1 == a
    assert a + 0 == a and 0 + a == a and a - 0.0 == a
    assert +a is a
    assert -(-a) == a  # noqa: B002 - a double negation, not a decrement
    if isinstance(a, (Term, Sum, Product)):
        assert k * (j * a) == scale(k * j, a)
        assert (k * (j * a)).k == k * j  # type: ignore[attr-defined]


@given(S.exprs())
def test_map_terms_identity_and_walk(e):
    assert map_terms(e, lambda t: t) == e
    assert terms_of(e) == tuple(n for n in walk(e) if isinstance(n, Term))
    assert list(walk(e))[0] is e


def test_sum_of_folds_constants_and_flattens():
    a, b = ld.channel("c", 0), ld.channel("c", 1)
    assert sum_of([]) == Const(0.0)
    assert sum_of([1, 2.5]) == Const(3.5)
    assert sum_of([a, 1, sum_of([b, 2])]) == Sum((a, b, Const(3.0)))
    assert sum_of([a, 1, -1]) == a
    assert a - b == Sum((a, Scale(-1.0, b)))


# --- equality, hashing, immutability ---------------------------------------------------------------


@given(S.exprs())
def test_equality_is_structural_and_hashable(e):
    twin = ld.parse(to_text(e))
    assert (e == twin) is True and (e != twin) is False
    assert hash(e) == hash(twin)
    assert {e: 1}[twin] == 1


def test_expressions_are_frozen():
    e = ld.channel("c", 1)
    with pytest.raises(dc.FrozenInstanceError):
        e.index = 2  # type: ignore[misc]
    with pytest.raises(dc.FrozenInstanceError):
        (2 * e).k = 3.0  # type: ignore[misc]


def test_arrays_compare_by_value():
    assert Array.of(torch.ones(2, 2)) == Array.of([[1.0, 1.0], [1.0, 1.0]])
    assert Array.of(torch.ones(4)) != Array.of(torch.ones(2, 2))  # same bytes, other shape
    assert hash(Array.of([1.0, 2.0])) == hash(Array.of(np.array([1.0, 2.0])))
    with pytest.raises(InvalidArgumentError):
        Array.of([1.0, float("nan")])
    with pytest.raises(InvalidArgumentError):
        Array.of([1.0, 2.0], shape=(3,))


# --- printing and round trips ----------------------------------------------------------------------


@settings(max_examples=30)
@given(S.wild_exprs())
def test_parse_of_repr_round_trips(e):
    back = ld.parse(to_text(e))
    assert back == e
    assert hash(back) == hash(e)
    assert to_text(back) == to_text(e)


@settings(max_examples=30)
@given(S.wild_exprs())
def test_json_round_trips(e):
    text = to_json(e)
    back = from_json(text)
    assert back == e
    assert hash(back) == hash(e)
    assert to_json(back) == text


@settings(max_examples=30)
@given(S.wild_exprs())
def test_python_reads_repr_to_an_equal_expression(e):
    value = py_eval(to_text(e))
    assert (value if isinstance(value, Expr) else as_expr(value)) == e  # a lone constant reads as a number


@given(S.exprs(), seeds)
def test_round_trips_keep_values(e, seed):
    assert torch.equal(ev(ld.parse(to_text(e)), seed), ev(e, seed))
    assert torch.equal(ev(from_json(to_json(e)), seed), ev(e, seed))


@pytest.mark.parametrize(
    ("build", "text"),
    [
        (lambda a, b, c: c - (a + b), "channel('c', 2) - (channel('c', 0) + channel('c', 1))"),
        (lambda a, b, c: c - 2 * (a + b), "channel('c', 2) - 2.0 * (channel('c', 0) + channel('c', 1))"),
        (lambda a, b, c: c - a * b, "channel('c', 2) - channel('c', 0) * channel('c', 1)"),
        (lambda a, b, c: -(a + b) * c, "-(channel('c', 0) + channel('c', 1)) * channel('c', 2)"),
        (lambda a, b, c: a * (b * c), "channel('c', 0) * (channel('c', 1) * channel('c', 2))"),
        (lambda a, b, c: a * -b, "channel('c', 0) * (-channel('c', 1))"),
        (lambda a, b, c: 1 - a / 4, "-0.25 * channel('c', 0) + 1.0"),
    ],
)
def test_repr_parenthesizes_where_needed(build, text):
    e = build(*(ld.channel("c", i) for i in range(3)))
    assert repr(e) == text
    assert ld.parse(text) == e and py_eval(text) == e


def test_sum_of_ten_thousand_terms():
    e = sum_of(ld.channel("conv", i % 6, batch=i % N) * (1 + i % 3) for i in range(10_000))
    assert isinstance(e, Sum) and len(e.terms) == 10_000
    assert len(list(walk(e))) > 10_000 and len(terms_of(e)) == 10_000
    text = repr(e)
    back = ld.parse(text)
    assert back == e and hash(back) == hash(e)
    assert from_json(to_json(e)) == e
    v = evaluate(e, S.full_acts(), N)
    assert v.shape == (N,) and bool(torch.isfinite(v).all())


def test_long_sum_errors_still_point_at_the_bad_summand():
    text = " - ".join(["channel('c', 1)"] * 3000 + ["foo"])
    with pytest.raises(ld.ParseError) as info:
        ld.parse(text)
    caret_line = str(info.value).splitlines()[-1]
    assert caret_line.index("^") - 2 == text.index("foo")


# --- numbers: bools are not numbers, weights are finite -------------------------------------------

binary_ops = [operator.add, operator.sub, operator.mul, operator.truediv]


@pytest.mark.parametrize("op", binary_ops)
@pytest.mark.parametrize("flag", [True, False, np.True_])
def test_bool_is_not_a_number(op, flag):
    e = ld.channel("c", 1)
    with pytest.raises(TypeError):
        op(e, flag)
    if op is not operator.truediv:
        with pytest.raises(TypeError):
            op(flag, e)


@pytest.mark.parametrize("op", [operator.add, operator.sub, operator.mul])
@pytest.mark.parametrize("other", ["1", None, [1.0], 1j])
def test_other_operands_are_type_errors(op, other):
    e = ld.channel("c", 1)
    with pytest.raises(TypeError):
        op(e, other)
    with pytest.raises(TypeError):
        op(other, e)


def test_cannot_divide_by_an_objective():
    with pytest.raises(TypeError):
        ld.channel("c", 1) / ld.channel("c", 2)  # type: ignore[operator]
    with pytest.raises(TypeError):
        2 / ld.channel("c", 2)  # type: ignore[operator]


@pytest.mark.parametrize("op", binary_ops + [lambda e, k: k * e, lambda e, k: k + e, lambda e, k: k - e])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, np.float64("nan"), np.float32("inf")])
def test_non_finite_numbers_raise(op, bad):
    with pytest.raises(InvalidArgumentError):
        op(ld.channel("c", 1), bad)


@pytest.mark.parametrize(
    "build",
    [
        lambda e: e / 0,
        lambda e: e / 0.0,
        lambda e: e / 5e-324,  # 1 / k overflows
        lambda e: 1e308 * (10 * e),  # the merged weight overflows
        lambda e: e + 1e308 + 1e308,  # the folded constant overflows
        lambda e: 1e200 * (e + 1) * 1e200 - e,
        lambda e: sum_of([e, 2**2000]),
    ],
)
def test_overflowing_weights_raise(build):
    with pytest.raises(InvalidArgumentError):
        build(ld.channel("c", 1))


@given(S.exprs(), st.sampled_from([math.nan, math.inf, -math.inf]))
def test_non_finite_weight_never_enters_a_tree(e, bad):
    for op in binary_ops:
        with pytest.raises(InvalidArgumentError):
            op(e, bad)


def test_numpy_numbers_are_numbers():
    e = ld.channel("c", 1)
    assert np.float32(2.0) * e == 2.0 * e
    assert e / np.int64(4) == 0.25 * e
    assert e + np.float64(1.5) == e + 1.5


@settings(max_examples=25)
@given(S.exprs(), S.exprs())
def test_operators_return_exprs(a, b):
    for value in (a + b, a - b, a * b, -a, 2 * a, a / 2, 1 - a, sum_of([a, b])):
        assert isinstance(value, Expr)


# --- nesting depth: bounded when built, so that printing, parsing and evaluating never recurse too deep --------


@given(S.exprs(), S.exprs(), nonzero.filter(lambda k: k != 1.0))
def test_depth_follows_the_nodes(a, b, k):
    from lucent_dsl.dsl.expr import depth

    assert depth(a + b) == max(depth(a), depth(b))  # a flat sum adds no level
    if not isinstance(a, (Const, Scale)):
        assert depth(k * a) == depth(a) + 1 + (k == -1 and isinstance(a, (Sum, Product)))  # -(...): sign and parentheses
    if not isinstance(a, Const) and not isinstance(b, Const):
        assert depth(a * b) == max(depth(a), depth(b)) + 1
    assert depth(-(-a)) == depth(a)  # noqa: B002 - a double negation, not a decrement


def test_building_past_the_depth_limit_is_refused_with_a_clear_error():
    from lucent_dsl.dsl.expr import MAX_DEPTH

    a = ld.channel("c", 1)
    e: Expr = a
    for _ in range(MAX_DEPTH - 1):
        e = a * e
    assert ld.parse(repr(e)) == e
    with pytest.raises(InvalidArgumentError, match=f"nests {MAX_DEPTH + 1} levels deep.*at most {MAX_DEPTH}"):
        a * e
    with pytest.raises(InvalidArgumentError, match="nests"):
        2.0 * (e + a)
    assert (e + a) - a * a == sum_of([e, a, -(a * a)])  # flat sums of deep summands stay within the limit


def test_dead_names_are_gone():
    import lucent_dsl.dsl.expr as expr

    assert not hasattr(expr, "RESERVED") and not hasattr(Expr, "sum")
