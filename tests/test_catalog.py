"""The vocabulary docs cover every term, their examples are DSL that parses back, and README shows the table."""
from __future__ import annotations

from pathlib import Path

import pytest

import lucent_dsl as ld
from lucent_dsl.dsl.expr import VOCABULARY
from lucent_dsl.objectives import BUILTINS
from lucent_dsl.objectives.catalog import ROWS, markdown_table, signature, text_table


def test_every_builtin_has_a_row_and_no_row_is_stale():
    assert set(ROWS) == set(BUILTINS)


@pytest.mark.parametrize("name", sorted(ROWS))
def test_example_is_canonical_dsl_of_its_own_term(name):
    e = ld.parse(ROWS[name].example)
    assert ld.parse(repr(e)) == e
    assert any(getattr(t, "name", None) in (name, "layer" if name == "deepdream" else name)
               for t in __import__("lucent_dsl.dsl.expr", fromlist=["walk"]).walk(e))


def test_signature_matches_the_factory():
    assert signature("channel") == "channel(layer, index, *, batch=None, model=None, layout=None)"
    assert all(signature(n).startswith(n + "(") for n in VOCABULARY if n in ROWS)


def test_readme_table_is_the_generated_one():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert markdown_table() in readme, "README.md's vocabulary table is stale: paste objectives.catalog.markdown_table()"
    assert text_table().count("e.g.") == len(ROWS)
