"""The suite's hypothesis strategies: the public toolkit `lucent_dsl.testing`, with the suite's defaults.

Everything is re-exported from `lucent_dsl.testing` (so the toolkit our users get is the one our
tests run); this module only adds the suite's table of layers, its image shape, and `tst_energy`,
a custom objective with every kind of parameter, which joins the vocabulary's builders.

A *table* says which layers exist and what one image's activation looks like there:
`{model name or None: {layer: shape without the batch axis, or a ActivationSpec}}`. Rank 3 is a (C, H, W)
map, rank 2 a (tokens, C) sequence, rank 1 a (C,) vector.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from hypothesis import strategies as st

import lucent_dsl as ld
import lucent_dsl.testing as T
from lucent_dsl.dsl.expr import OUTPUT
from lucent_dsl.testing import (  # noqa: F401 - re-exported for the tests
    LAYOUTS,
    RANK_LAYOUTS,
    ActivationSpec,
    activation_specs,
    arrays,
    as_spec,
    batch_selectors,
    check_objective,
    check_param,
    check_transform,
    image_batches,
    layout_model,
    leaves_of,
    random_models,
    random_tables,
    seeded,
    selected,
    shaped_model,
    sites_of,
    unsupported_shapes,
    with_batch,
)

Shape = tuple[int, ...]

N_IMAGES = 3
CROPS = 2
IMAGE_SHAPE: Shape = (3, 6, 8)  # non-square

# Every layer has its own channel count, so an objective that reads the wrong axis gets caught.
LAYERS: dict[str, Shape] = {
    "conv": (6, 5, 7),  # maps, H != W
    "block.conv2": (5, 4, 3),  # maps, H > W
    "tokens": (10, 4),  # a CLS token + a 3x3 patch grid, 4 channels
    "fc": (7,),  # vectors
    OUTPUT: (9,),  # logits
}
TABLE: dict[Any, dict[str, Shape]] = {
    None: LAYERS,
    "a": LAYERS,
    "b": {k: v for k, v in LAYERS.items() if k != "fc"},
}
KINDS = RANK_LAYOUTS
small_floats = st.floats(-2.0, 2.0, allow_nan=False, width=32)


@ld.objective
def tst_energy(*acts, power=1.0, mode="abs", flag=False, weights=(), ref=None):
    """A custom objective with every kind of parameter (number, string, bool, tuple, tensor)."""
    out = 0.0
    for a in acts:
        v = a.reshape(a.shape[0], -1)
        v = v.abs() if mode == "abs" else v * v
        out = out + v.pow(power).mean(1)
    if flag:
        out = out * 0.5
    if weights:
        out = out * sum(weights)
    if ref is not None:
        out = out + ref.sum()
    return out


TST_ENERGY_PARAMS = {
    "power": st.sampled_from((1.0, 2.0, 2)),
    "mode": st.sampled_from(("abs", "square")),
    "flag": st.booleans(),
    "weights": st.lists(small_floats, min_size=1, max_size=3).map(tuple).filter(lambda w: abs(sum(w)) > 1e-3),
    "ref": arrays((2,)),
}
BUILDERS: dict[str, T.Builder] = {
    **T.BUILDERS,
    "tst_energy": T.custom_builder(tst_energy, optional=TST_ENERGY_PARAMS, layers=(1, 2)),
}
# Terms that score the batch as a whole (no batch=): they cannot be one image's objective.
WHOLE_BATCH_TERMS = tuple(name for name, b in BUILDERS.items() if not b.selectable)


# --- the toolkit with the suite's defaults --------------------------------------------------------------


def term(table: Mapping = TABLE, n: int = N_IMAGES, *, image: Any = IMAGE_SHAPE, **kw: Any) -> st.SearchStrategy:
    return T.term(table, n, image=image, builders=kw.pop("builders", BUILDERS), **kw)


def exprs(table: Mapping = TABLE, n: int = N_IMAGES, *, image: Any = IMAGE_SHAPE, **kw: Any) -> st.SearchStrategy:
    return T.exprs(table, n, image=image, builders=kw.pop("builders", BUILDERS), **kw)


def wild_exprs() -> st.SearchStrategy:
    return T.wild_exprs(N_IMAGES, builders=BUILDERS)


def full_acts(table: Mapping = TABLE, n: int = N_IMAGES, *, crops: int = CROPS, seed: int = 0,
              image: Any = IMAGE_SHAPE, dtype: torch.dtype = torch.float64,
              requires_grad: bool = False) -> dict:
    return T.full_acts(table, n, crops=crops, seed=seed, image=image, dtype=dtype, requires_grad=requires_grad)


batches = batch_selectors


# --- per-image shapes -----------------------------------------------------------------------------------


def kind(shape: Shape) -> str:
    """The layout of one image's activation shape ("nchw", "tokens" or "vectors")."""
    return as_spec(shape).kind


def channels(shape: Shape) -> int:
    return as_spec(shape).channels


def maps_shapes(max_channels: int = 6) -> st.SearchStrategy[Shape]:
    """(C, H, W) with H != W."""
    sides = st.integers(1, 7).flatmap(lambda h: st.tuples(st.just(h), st.integers(1, 7).filter(lambda w: w != h)))
    return st.tuples(st.integers(1, max_channels), sides).map(lambda t: (t[0], *t[1]))


def shapes(kinds: tuple[str, ...] = KINDS) -> st.SearchStrategy[Shape]:
    """One image's activation shape of one of `kinds` (tokens: a square grid after 0 or 1 CLS token)."""
    return activation_specs(kinds, channels=(1, 6), sides=(1, 4), prefix=(0, 1)).map(lambda lay: lay.shape)
