"""A term holding a large vector or tensor prints short (repr, str, messages) and in full where it is read back
(`to_text`, JSON, recipes): issue 28, item 13."""
from __future__ import annotations

import torch

import lucent_dsl as ld
from lucent_dsl.dsl.printing import to_text
from lucent_dsl.dsl.serialize import from_json, to_json
from lucent_dsl.record.recipe import Recipe


@ld.objective
def tst_weighted(a, *, w):
    return (a.flatten(1)[:, : w.numel()] * w.to(a.dtype)).sum(1)


def big_objective() -> ld.Expr:
    g = torch.Generator().manual_seed(0)
    vec, w = torch.randn(512, generator=g), torch.randn(8, 8, 8, generator=g)
    return ld.channel("L", 1) + ld.direction("L", vec) - 0.5 * tst_weighted("L", w=w)


def test_a_512_d_vector_and_a_tensor_argument_print_short_and_read_back_in_full():
    e = big_objective()
    assert len(to_text(e)) > 10_000  # what repr printed before
    shown = repr(e)
    assert len(shown) < 400 and str(e) == shown and "\n" not in shown
    assert shown.startswith("channel('L', 1) + direction('L', (") and "<512 values, " in shown and "shape=(8, 8, 8)" in shown
    assert ld.parse(to_text(e)) == e and from_json(to_json(e)) == e


def test_small_objectives_still_print_as_text_that_parses_back():
    e = ld.direction("L", [0.5] * 8) - ld.l2(target=[1.0, 2.0])
    assert repr(e) == to_text(e) and ld.parse(repr(e)) == e


def test_a_recipe_keeps_the_full_text():
    builtin = ld.channel("L", 1) + ld.direction("L", torch.linspace(-1, 1, 512))  # a recipe holds built-ins only
    assert "<512 values, " in repr(builtin)
    r = Recipe(objective=to_text(builtin))
    assert ld.parse(r.objective) == builtin
    assert ld.parse(Recipe.from_json(r.to_json()).objective) == builtin
