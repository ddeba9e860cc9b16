"""Hypothesis strategies: objective expression trees over the whole vocabulary, and activation shapes.

A *table* says which layers exist and what one image's activation looks like there:
`{model name or None: {layer: shape without the batch axis}}`. Rank 3 is a (C, H, W) map, rank 2 a
(tokens, C) sequence, rank 1 a (C,) vector. `term(table, n)` draws one valid vocabulary term for it
(indices in range, vectors as long as the layer has channels, positions inside the map, batch
selections inside the `n` images), `exprs(table, n)` draws whole trees, and `full_acts(table, n)`
builds random activations for every site of the table, so any drawn tree can be evaluated.
"""
from __future__ import annotations

import dataclasses as dc
import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

import torch
from hypothesis import strategies as st

import lucent_dsl as ld
from lucent_dsl.errors import InvalidArgumentError
from lucent_dsl.expr import IMAGE, OUTPUT, Array, Const, Expr, Site, sum_of

Shape = tuple[int, ...]
Table = Mapping[Any, Mapping[str, Shape]]

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
KINDS = ("maps", "tokens", "vectors")


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


# --- shapes ----------------------------------------------------------------------------------------


def kind(shape: Shape) -> str:
    """The layout of one image's activation shape."""
    return {3: "maps", 2: "tokens", 1: "vectors"}[len(shape)]


def channels(shape: Shape) -> int:
    return shape[-1] if kind(shape) == "tokens" else shape[0]


def token_grid(tokens: int) -> tuple[int, int] | None:
    """(offset, side) of a square patch grid in `tokens` (offset 1: a CLS token first)."""
    for offset in (0, 1):
        side = math.isqrt(max(tokens - offset, 0))
        if side > 0 and side * side == tokens - offset:
            return offset, side
    return None


def _non_square(lo: int = 1, hi: int = 7) -> st.SearchStrategy[tuple[int, int]]:
    return st.integers(lo, hi).flatmap(lambda h: st.tuples(st.just(h), st.integers(lo, hi).filter(lambda w: w != h)))


def maps_shapes(max_channels: int = 6) -> st.SearchStrategy[Shape]:
    """(C, H, W) with H != W."""
    return st.tuples(st.integers(1, max_channels), _non_square()).map(lambda t: (t[0], *t[1]))


def token_shapes(max_channels: int = 6) -> st.SearchStrategy[Shape]:
    """(T, C) with T a square patch grid, with or without a CLS token first."""
    grids = st.tuples(st.integers(1, 4), st.sampled_from((0, 1))).map(lambda t: t[0] * t[0] + t[1])
    return st.tuples(grids, st.integers(1, max_channels))


def vector_shapes(max_channels: int = 8) -> st.SearchStrategy[Shape]:
    return st.tuples(st.integers(1, max_channels))


SHAPES = {"maps": maps_shapes, "tokens": token_shapes, "vectors": vector_shapes}


def shapes(kinds: tuple[str, ...] = KINDS) -> st.SearchStrategy[Shape]:
    """One image's activation shape of one of `kinds`."""
    return st.one_of(*(SHAPES[k]() for k in kinds))


def unsupported_shapes() -> st.SearchStrategy[Shape]:
    """Per-image shapes of rank 0 (a (B,) activation) and rank 4 (a (B, C, D, H, W) volume)."""
    return st.one_of(st.just(()), st.tuples(*(st.integers(1, 3) for _ in range(4))))


def batches(n: int) -> st.SearchStrategy[int | range | None]:
    """`batch=` values that select images of a render of `n`."""
    ranges = st.tuples(st.integers(0, n - 1), st.integers(1, n), st.integers(1, 2)).filter(
        lambda t: t[0] < t[1]
    ).map(lambda t: range(*t))
    return st.one_of(st.none(), st.integers(0, n - 1), ranges)


def seeded(shape: Shape, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def arrays(shape: Shape) -> st.SearchStrategy[Array]:
    """Random constant tensors of `shape`, as the expressions hold them."""
    return st.integers(0, 2**16).map(lambda seed: Array.of(seeded(shape, seed)))


# --- terms ----------------------------------------------------------------------------------------

small_floats = st.floats(-2.0, 2.0, allow_nan=False, width=32)


def _layers(layers: Mapping[str, Shape], kinds: tuple[str, ...] = KINDS) -> list[str]:
    return sorted(name for name, shape in layers.items() if kind(shape) in kinds)


def _vector(draw: st.DrawFn, shape: Shape) -> list[float]:
    # not all zero: a zero direction has no gradient, which is right but useless to test
    return draw(st.lists(small_floats, min_size=channels(shape), max_size=channels(shape)).filter(any))


def _position(draw: st.DrawFn, shape: Shape) -> dict[str, int]:
    """x=/y=/token= keywords that pick a position inside `shape` (none: the default centre)."""
    k = kind(shape)
    out: dict[str, int | None] = {}
    if k == "maps":
        out = {"x": draw(st.none() | st.integers(0, shape[2] - 1)), "y": draw(st.none() | st.integers(0, shape[1] - 1))}
    elif k == "tokens":
        grid = token_grid(shape[0])
        if grid is None or draw(st.booleans()):
            out = {"token": draw(st.integers(0, shape[0] - 1))}
        else:
            out = {"x": draw(st.none() | st.integers(0, grid[1] - 1)), "y": draw(st.none() | st.integers(0, grid[1] - 1))}
    return {key: v for key, v in out.items() if v is not None}


def _kw(draw: st.DrawFn, model: Any, n: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if n is not None:
        b = draw(batches(n))
        if b is not None:
            out["batch"] = b
    if model is not None:
        out["model"] = model
    return out


def _pick(draw: st.DrawFn, layers: Mapping[str, Shape], kinds: tuple[str, ...] = KINDS) -> tuple[str, Shape]:
    name = draw(st.sampled_from(_layers(layers, kinds)))
    return name, layers[name]


@st.composite
def _channel(draw, model, layers, n, image):
    layer, shape = _pick(draw, layers)
    return ld.channel(layer, draw(st.integers(0, channels(shape) - 1)), **_kw(draw, model, n))


@st.composite
def _neuron(draw, model, layers, n, image):
    layer, shape = _pick(draw, layers)
    return ld.neuron(layer, draw(st.integers(0, channels(shape) - 1)), **_position(draw, shape), **_kw(draw, model, n))


@st.composite
def _layer(draw, model, layers, n, image):
    layer, _ = _pick(draw, layers)
    return draw(st.sampled_from((ld.layer, ld.deepdream)))(layer, **_kw(draw, model, n))


@st.composite
def _direction(draw, model, layers, n, image):
    layer, shape = _pick(draw, layers)
    pw = draw(st.sampled_from((0.0, 1.0, 2.5)))
    return ld.direction(layer, _vector(draw, shape), cossim_pow=pw, **_kw(draw, model, n))


@st.composite
def _direction_neuron(draw, model, layers, n, image):
    layer, shape = _pick(draw, layers)
    pw = draw(st.sampled_from((0.0, 1.0)))
    return ld.direction_neuron(layer, _vector(draw, shape), cossim_pow=pw, **_position(draw, shape), **_kw(draw, model, n))


@st.composite
def _channel_weight(draw, model, layers, n, image):
    layer, shape = _pick(draw, layers)
    return ld.channel_weight(layer, _vector(draw, shape), **_kw(draw, model, n))


@st.composite
def _neuron_weight(draw, model, layers, n, image):
    layer, shape = _pick(draw, layers)
    return ld.neuron_weight(layer, _vector(draw, shape), **_position(draw, shape), **_kw(draw, model, n))


@st.composite
def _channel_interpolate(draw, model, layers, n, image):
    (l1, s1), (l2, s2) = _pick(draw, layers), _pick(draw, layers)
    i1, i2 = draw(st.integers(0, channels(s1) - 1)), draw(st.integers(0, channels(s2) - 1))
    return ld.channel_interpolate(l1, i1, l2, i2, **_kw(draw, model, None))


@st.composite
def _alignment(draw, model, layers, n, image):
    layer, _ = _pick(draw, layers)
    ratio = draw(st.sampled_from((2.0, 0.5, 3)))
    return ld.alignment(layer, decay_ratio=ratio, **_kw(draw, model, None))


@st.composite
def _diversity(draw, model, layers, n, image):
    layer, _ = _pick(draw, layers)
    return ld.diversity(layer, **_kw(draw, model, None))


@st.composite
def _class_logit(draw, model, layers, n, image):
    layer, shape = _pick(draw, layers)
    kw = {} if layer == OUTPUT and draw(st.booleans()) else {"layer": layer}
    return ld.class_logit(draw(st.integers(0, channels(shape) - 1)), **kw, **_kw(draw, model, n))


@st.composite
def _activation_match(draw, model, layers, n, image):
    layer, shape = _pick(draw, layers)
    per_image = draw(st.booleans())
    target = draw(arrays((n, *shape) if per_image else shape))
    pw = draw(st.sampled_from((0.0, 1.0)))
    return ld.activation_match(layer, target, cossim_pow=pw, **_kw(draw, model, n))


def _image_or_layer(draw, model, layers, image, kinds) -> tuple[dict[str, Any], Shape]:
    """layer= and model= keywords of a penalty: the rendered image (no model) or a layer of `kinds`."""
    options = _layers(layers, kinds)
    if image is not None and (not options or draw(st.booleans())):
        return {}, image
    layer = draw(st.sampled_from(options))
    return ({"layer": layer} | ({"model": model} if model is not None else {})), layers[layer]


@st.composite
def _total_variation(draw, model, layers, n, image):
    kw, _ = _image_or_layer(draw, model, layers, image, ("maps",))
    return ld.total_variation(**kw, **_kw(draw, None, n))


@st.composite
def _blur(draw, model, layers, n, image):
    kw, _ = _image_or_layer(draw, model, layers, image, ("maps",))
    return ld.blur(**kw, **_kw(draw, None, n))


@st.composite
def _lp(draw, model, layers, n, image, fn):
    kw, shape = _image_or_layer(draw, model, layers, image, KINDS)
    target = draw(st.one_of(st.just(None), small_floats, arrays(shape)))
    if target is not None:
        kw["target"] = target
    return fn(**kw, **_kw(draw, None, n))


@st.composite
def _custom(draw, model, layers, n, image):
    names = draw(st.lists(st.sampled_from(_layers(layers)), min_size=1, max_size=2, unique=True))
    params = draw(st.fixed_dictionaries({}, optional={
        "power": st.sampled_from((1.0, 2.0, 2)),
        "mode": st.sampled_from(("abs", "square")),
        "flag": st.booleans(),
        "weights": st.lists(small_floats, min_size=1, max_size=3).map(tuple).filter(lambda w: abs(sum(w)) > 1e-3),
        "ref": arrays((2,)),
    }))
    return tst_energy(*names, **params, **_kw(draw, model, n))


def _penalty(fn: Callable[..., Expr]) -> Callable[..., st.SearchStrategy[Expr]]:
    return lambda model, layers, n, image: _lp(model, layers, n, image, fn)


# name -> (layer kinds it can read (None: it can read the image instead), strategy builder)
BUILDERS: dict[str, tuple[tuple[str, ...] | None, Callable[..., st.SearchStrategy[Expr]]]] = {
    "channel": (KINDS, _channel),
    "neuron": (KINDS, _neuron),
    "layer": (KINDS, _layer),
    "direction": (KINDS, _direction),
    "direction_neuron": (KINDS, _direction_neuron),
    "channel_weight": (KINDS, _channel_weight),
    "neuron_weight": (KINDS, _neuron_weight),
    "channel_interpolate": (KINDS, _channel_interpolate),
    "alignment": (KINDS, _alignment),
    "diversity": (KINDS, _diversity),
    "class_logit": (KINDS, _class_logit),
    "activation_match": (KINDS, _activation_match),
    "total_variation": (("maps",), _total_variation),
    "blur": (("maps",), _blur),
    "l1": (KINDS, _penalty(ld.l1)),
    "l2": (KINDS, _penalty(ld.l2)),
    "tst_energy": (KINDS, _custom),
}
IMAGE_TERMS = ("total_variation", "blur", "l1", "l2")
# Terms that score the batch as a whole (no batch=): they cannot be one image's objective.
WHOLE_BATCH_TERMS = ("channel_interpolate", "alignment", "diversity")


@st.composite
def term(draw, table: Table = TABLE, n: int = N_IMAGES, *, image: Shape | None = IMAGE_SHAPE,
         names: tuple[str, ...] | None = None, batches: bool = True) -> Expr:
    """One vocabulary term that fits `table` (and the rendered image of shape `image`).

    `batches=False`: no term selects images with batch= (for `batched`, which sets it).
    """
    model = draw(st.sampled_from(sorted(table, key=lambda m: "" if m is None else m)))
    layers = table[model]
    options = [
        name for name in (names or BUILDERS)
        if _layers(layers, BUILDERS[name][0]) or (image is not None and name in IMAGE_TERMS)
    ]
    name = draw(st.sampled_from(options))
    t = draw(BUILDERS[name][1](model, layers, n, image))
    if not batches and getattr(t, "batch", None) is not None:
        t = dc.replace(t, batch=None)
    return t


def _safe(op: Callable[..., Expr]) -> Callable[[tuple], Expr]:
    """`op(*args)`, or its first argument when the weights overflow (1e308 * 1e308)."""
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


def exprs(table: Table = TABLE, n: int = N_IMAGES, *, image: Shape | None = IMAGE_SHAPE,
          consts: st.SearchStrategy[float] = st.floats(-10, 10),
          weights: st.SearchStrategy[float] = st.floats(-4, 4),
          divisors: st.SearchStrategy[float] = st.floats(0.25, 4) | st.floats(-4, -0.25),
          max_leaves: int = 6, names: tuple[str, ...] | None = None,
          with_consts: bool = True, batches: bool = True) -> st.SearchStrategy[Expr]:
    """Expression trees: terms and constants joined by + - * / and unary minus, sums and products."""
    leaves = term(table, n, image=image, names=names, batches=batches)
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
            st.lists(children, min_size=1, max_size=4).map(_safe_sum),
        ]
        if with_consts:
            ops.append(st.tuples(consts, children).map(_safe(operator.sub)))
        return st.one_of(*ops)

    return st.recursive(leaves, extend, max_leaves=max_leaves)


any_float = st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def random_tables(draw) -> dict[Any, dict[str, Shape]]:
    """Tables with arbitrary layer and model names (quotes, backslashes, unicode, '/', ...)."""
    names = st.text(min_size=1, max_size=6).filter(lambda s: not s.startswith("@"))  # "@image" etc. are reserved
    layer_table = st.dictionaries(names, shapes(), min_size=1, max_size=3)
    models = draw(st.lists(st.none() | names, min_size=1, max_size=2, unique=True))
    return {m: draw(layer_table) for m in models}


@st.composite
def wild_exprs(draw) -> Expr:
    """Expressions for round trips: arbitrary names and any finite float as weight or constant."""
    table = draw(random_tables())
    return draw(exprs(table, N_IMAGES, consts=any_float, weights=any_float,
                      divisors=any_float.filter(lambda v: v != 0), max_leaves=8))


# --- activations ----------------------------------------------------------------------------------


def sites(table: Table, image: Shape | None = IMAGE_SHAPE) -> dict[Site, Shape]:
    """Every site of `table` (and the image), with its per-image shape."""
    out = {Site(m, layer): shape for m, layers in table.items() for layer, shape in layers.items()}
    if image is not None:
        out[Site(None, IMAGE)] = image
    return out


def full_acts(table: Table = TABLE, n: int = N_IMAGES, *, crops: int = CROPS, seed: int = 0,
              image: Shape | None = IMAGE_SHAPE, dtype: torch.dtype = torch.float64,
              requires_grad: bool = False) -> dict[Site, torch.Tensor]:
    """Random activations (rows = crops * n, crop-major) for every site of `table`."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for site, shape in sorted(sites(table, image).items(), key=lambda kv: (kv[0].model or "", kv[0].layer)):
        out[site] = torch.randn((crops * n, *shape), generator=g, dtype=dtype).requires_grad_(requires_grad)
    return out
