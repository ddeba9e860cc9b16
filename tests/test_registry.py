"""The custom-objective registry has no hidden state that changes what an expression means.

- A name held by one function is refused to another (InvalidArgumentError naming the name and the way
  out), unless `replace=True` is asked for.
- The same definition run again (a notebook cell executed twice: same qualified name, same code, same
  default and closure values) is accepted and keeps the first registration, so old and new expressions
  stay equal.
- A term computes the function it was built with: after a replacement, old expressions keep their
  meaning, and only new ones (and text parsed from now on) use the new function.
"""
from __future__ import annotations

import itertools
import textwrap
from typing import Any

import pytest
import torch
from hypothesis import given, settings, strategies as st

import lucent_dsl as ld
from lucent_dsl.dsl.expr import VOCABULARY, Site
from lucent_dsl.errors import InvalidArgumentError

_names = itertools.count()
ACTS = {Site(None, "L"): torch.arange(6.0, dtype=torch.float64).reshape(2, 3) + 1}


def fresh(prefix: str = "reg") -> str:
    """A name no other test registers (the registry is process-wide)."""
    return f"{prefix}_{next(_names)}"


def score(e: ld.Expr) -> list[float]:
    return ld.evaluate(e, ACTS, 2).tolist()


def notebook_cell(source: str, name: str) -> Any:
    """Run `source` as a notebook cell would: a fresh `__main__` namespace (what IPython re-executes)."""
    scope: dict[str, Any] = {"__name__": "__main__", "ld": ld}
    exec(compile(textwrap.dedent(source).replace("NAME", name), "<cell>", "exec"), scope)  # noqa: S102
    return scope["factory"]


CELL = """
@ld.objective(name="NAME")
def factory(a, *, power=2.0):
    return a.pow(power).mean(1)
"""


def test_a_notebook_cell_run_twice_keeps_one_definition():
    name = fresh()
    first = notebook_cell(CELL, name)
    old = first("L", power=3.0)
    again = notebook_cell(CELL, name)  # the same cell executed again
    assert again is first and again("L", power=3.0) == old
    assert ld.parse(repr(old)) == old


def test_an_edited_cell_is_refused_unless_replace_is_asked_for():
    name = fresh()
    first = notebook_cell(CELL, name)
    old = first("L")
    before = score(old)
    edited = CELL.replace("a.pow(power).mean(1)", "a.pow(power).sum(1)")
    with pytest.raises(InvalidArgumentError) as info:
        notebook_cell(edited, name)
    message = str(info.value)
    assert repr(name) in message and "replace=True" in message and "another name" in message
    assert VOCABULARY[name] is first and score(old) == before and score(first("L")) == before

    replaced = notebook_cell(edited.replace('name="NAME"', 'name="NAME", replace=True'), name)
    new = replaced("L")
    assert score(old) == before  # an expression built before keeps its meaning
    assert score(new) == pytest.approx([3 * b for b in before])  # the sum of 3 values instead of their mean
    assert old != new and repr(old) == repr(new)
    assert ld.parse(repr(old)) == new  # text means what the name means now
    assert VOCABULARY[name] is replaced


def test_the_same_code_with_other_captured_values_is_another_definition():
    name = fresh()

    def make(power: float, default: float = 2.0):
        def energy(a, *, scale=default):
            return scale * a.pow(power).mean(1)
        return energy

    f = ld.objective(make(2.0), name=name)
    assert ld.objective(make(2.0), name=name) is f  # closure and defaults equal: the same definition
    with pytest.raises(InvalidArgumentError, match="already registered"):
        ld.objective(make(3.0), name=name)  # another closure value
    with pytest.raises(InvalidArgumentError, match="already registered"):
        ld.objective(make(2.0, default=5.0), name=name)  # another default
    assert score(f("L")) == score(ld.parse(f"{name}('L')"))


def test_builtins_keywords_and_parser_names_cannot_be_taken():
    def fn(a):
        return a.mean(1)

    for name in ["channel", "masked", "total_variation"]:
        with pytest.raises(InvalidArgumentError, match="built-in"):
            ld.objective(fn, name=name, replace=True)
        assert VOCABULARY[name] is getattr(ld, name)
    for name in ["lambda", "None", "range", "tensor", "not a name", "1x", ""]:
        with pytest.raises(InvalidArgumentError, match="cannot be called from objective text"):
            ld.objective(fn, name=name)
    with pytest.raises(InvalidArgumentError, match="no usable name"):
        ld.objective(lambda a: a.mean(1))
    with pytest.raises(InvalidArgumentError, match="replace must be True or False"):
        ld.objective(fn, name=fresh(), replace=1)


def test_an_unhashable_callable_still_gives_hashable_terms():
    class Weighted:
        __hash__ = None  # type: ignore[assignment]

        def __init__(self, w: float):
            self.w = w

        def __call__(self, a):
            return self.w * a.mean(1)

    name = fresh()
    f = ld.objective(Weighted(2.0), name=name)
    e = f("L") + f("L")
    assert hash(e) == hash(f("L") + f("L")) and ld.parse(repr(e)) == e
    assert score(f("L")) == [4.0, 10.0]
    with pytest.raises(InvalidArgumentError, match="already registered"):  # no code to compare: only itself
        ld.objective(Weighted(2.0), name=name)


VARIANTS = {"mean": "return a.mean(1)", "sum": "return a.sum(1)", "max": "return a.amax(1)"}
PLAIN = {"mean": lambda a: a.mean(1), "sum": lambda a: a.sum(1), "max": lambda a: a.amax(1)}


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(sorted(VARIANTS)), st.booleans()), min_size=1, max_size=6))
def test_no_registration_changes_what_an_existing_expression_computes(actions):
    """The law: whatever sequence of (re)registrations runs, every expression built so far keeps its scores,
    and text parsed now means the function registered now."""
    name = fresh("law")
    built: list[tuple[ld.Expr, list[float]]] = []
    current: str | None = None
    for variant, replace in actions:
        cell = f"@ld.objective(name='NAME', replace={replace})\ndef factory(a):\n    {VARIANTS[variant]}\n"
        try:
            factory = notebook_cell(cell, name)
        except InvalidArgumentError as err:
            assert current is not None and variant != current and not replace, err
        else:
            assert current is None or variant == current or replace
            current = variant
            e = factory("L")
            built.append((e, score(e)))
        for e, scores in built:
            assert score(e) == scores, e
        assert score(ld.parse(f"{name}('L')")) == PLAIN[current](ACTS[Site(None, "L")]).tolist()  # type: ignore[index]


def test_parameters_print_and_parse_back_or_are_refused():
    """Every parameter a custom term accepts survives repr -> parse and JSON; the rest is refused when built."""
    name = fresh()
    f = ld.objective(lambda a, **kw: a.mean(1), name=name)
    for params in [{"k": 2**63 - 1}, {"k": -(2**63) + 1}, {"w": (1, 2.5, True)}, {"s": "a'\"\\\n"}, {"x": None},
                   {"t": torch.arange(3.0)}, {"f": 1e-300}]:
        e = f("L", **params)
        assert ld.parse(repr(e)) == e and ld.from_json(ld.to_json(e)) == e, params
    for params in [{"k": 2**63}, {"k": 10**5000}, {"w": (1, 10**400)}, {"f": float("nan")}, {"o": object()}]:
        with pytest.raises(InvalidArgumentError):
            f("L", **params)
