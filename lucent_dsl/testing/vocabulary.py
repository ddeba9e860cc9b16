"""One hypothesis `Builder` per built-in term (`BUILDERS`), and `custom_builder` for your own terms.

A builder draws a term that fits the layers it is given: indices in range, vectors as long as the
layer has channels, positions inside the grid, batch selections inside the render's images. The
layouts a builder reads (`kinds`) are those the built-in terms read by rank: NCHW maps, token
sequences with 0 or 1 prefix token (a square grid, for positions and masks), vectors. A term that
is told its layout (`layout=`) can add "nhwc" to its kinds.

Example:
    >>> from hypothesis import given
    >>> from lucent_dsl.testing import ActivationSpec
    >>> b = BUILDERS["neuron"]
    >>> @given(b.draw(None, {"conv": ActivationSpec("nchw", 6, 5, 7)}, 2, None))
    ... def check(t):
    ...     assert t.index < 6 and (t.x is None or t.x < 7) and (t.y is None or t.y < 5)
    >>> check()
"""
from __future__ import annotations

import dataclasses as dc
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import torch
from hypothesis import strategies as st
from torch import Tensor

from .. import objectives as ob
from ..dsl.expr import OUTPUT, Array, Expr, Term
from ..errors import InvalidArgumentError
from .shapes import RANK_LAYOUTS, ActivationSpec, arrays, batch_selectors

__all__ = ["BUILDERS", "MASKABLE", "Builder", "custom_builder", "maker", "takes_keyword"]

small_floats = st.floats(-2.0, 2.0, allow_nan=False, width=32)


def _anything(lay: ActivationSpec) -> bool:
    return True


@dc.dataclass(frozen=True)
class Builder:
    """How to draw one vocabulary term.

    Attributes:
        draw: `(model, layers, n, image) -> strategy of terms`; `layers` ({name: ActivationSpec})
            holds only the layers that fit, `image` is the rendered image's spec when the term may read it.
        kinds: the layouts of the layers the term reads.
        image: "no" (layers only), "also" (a layer or the rendered image) or "only" (the image).
        fits: a further condition on a layer's (or the image's) layout.
        selectable: the term takes `batch=`, so batched renders can use it.
    """

    draw: Callable[..., st.SearchStrategy[Expr]]
    kinds: tuple[str, ...] = RANK_LAYOUTS
    image: str = "no"
    fits: Callable[[ActivationSpec], bool] = _anything
    selectable: bool = True

    def layers(self, layers: Mapping[str, ActivationSpec]) -> dict[str, ActivationSpec]:
        if self.image == "only":
            return {}
        return {k: v for k, v in layers.items() if v.kind in self.kinds and self.fits(v)}

    def reads_image(self, image: ActivationSpec | None) -> bool:
        return image is not None and self.image != "no" and image.kind == "nchw" and self.fits(image)

    def available(self, layers: Mapping[str, ActivationSpec], image: ActivationSpec | None) -> bool:
        return bool(self.layers(layers)) or self.reads_image(image)


# --- pieces of terms ---------------------------------------------------------------------------------


def _kw(draw: st.DrawFn, model: Any, n: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if n is not None:
        b = draw(batch_selectors(n))
        if b is not None:
            out["batch"] = b
    if model is not None:
        out["model"] = model
    return out


def _pick(draw: st.DrawFn, layers: Mapping[str, ActivationSpec]) -> tuple[str, ActivationSpec]:
    name = draw(st.sampled_from(sorted(layers)))
    return name, layers[name]


def _index(draw: st.DrawFn, lay: ActivationSpec) -> int:
    return draw(st.integers(0, lay.channels - 1))


def _vector(draw: st.DrawFn, lay: ActivationSpec) -> list[float]:
    # not all zero: a zero direction has no gradient, which is right but useless to test
    return draw(st.lists(small_floats, min_size=lay.channels, max_size=lay.channels).filter(any))


def _position(draw: st.DrawFn, lay: ActivationSpec) -> dict[str, int]:
    """x=/y=/token= keywords that pick a position inside `lay` (none: the default centre)."""
    out: dict[str, int | None] = {}
    if lay.kind == "tokens" and (lay.height * lay.width == 0 or draw(st.booleans())):
        out = {"token": draw(st.integers(0, lay.tokens - 1))}
    elif lay.kind != "vectors":
        out = {
            "x": draw(st.none() | st.integers(0, lay.width - 1)),
            "y": draw(st.none() | st.integers(0, lay.height - 1)),
        }
    return {key: v for key, v in out.items() if v is not None}


def _image_or_layer(draw: st.DrawFn, model: Any, layers: Mapping[str, ActivationSpec], image: ActivationSpec | None):
    """layer=/model= keywords of a penalty: the rendered image (no model) or one of `layers`."""
    if image is not None and (not layers or draw(st.booleans())):
        return {}, image
    layer, lay = _pick(draw, layers)
    return ({"layer": layer} | ({"model": model} if model is not None else {})), lay


# --- one builder per built-in term --------------------------------------------------------------------


@st.composite
def _channel(draw, model, layers, n, image):
    layer, lay = _pick(draw, layers)
    return ob.channel(layer, _index(draw, lay), **_kw(draw, model, n))


@st.composite
def _neuron(draw, model, layers, n, image):
    layer, lay = _pick(draw, layers)
    return ob.neuron(layer, _index(draw, lay), **_position(draw, lay), **_kw(draw, model, n))


@st.composite
def _layer(draw, model, layers, n, image):
    layer, _ = _pick(draw, layers)
    return draw(st.sampled_from((ob.layer, ob.deepdream)))(layer, **_kw(draw, model, n))


@st.composite
def _direction(draw, model, layers, n, image):
    layer, lay = _pick(draw, layers)
    pw = draw(st.sampled_from((0.0, 1.0, 2.5)))
    return ob.direction(layer, _vector(draw, lay), cossim_pow=pw, **_kw(draw, model, n))


@st.composite
def _direction_neuron(draw, model, layers, n, image):
    layer, lay = _pick(draw, layers)
    pw = draw(st.sampled_from((0.0, 1.0)))
    return ob.direction_neuron(layer, _vector(draw, lay), cossim_pow=pw, **_position(draw, lay), **_kw(draw, model, n))


@st.composite
def _channel_weight(draw, model, layers, n, image):
    layer, lay = _pick(draw, layers)
    return ob.channel_weight(layer, _vector(draw, lay), **_kw(draw, model, n))


@st.composite
def _neuron_weight(draw, model, layers, n, image):
    layer, lay = _pick(draw, layers)
    return ob.neuron_weight(layer, _vector(draw, lay), **_position(draw, lay), **_kw(draw, model, n))


@st.composite
def _channel_interpolate(draw, model, layers, n, image):
    (l1, s1), (l2, s2) = _pick(draw, layers), _pick(draw, layers)
    return ob.channel_interpolate(l1, _index(draw, s1), l2, _index(draw, s2), **_kw(draw, model, None))


@st.composite
def _alignment(draw, model, layers, n, image):
    layer, _ = _pick(draw, layers)
    return ob.alignment(layer, decay_ratio=draw(st.sampled_from((2.0, 0.5, 3))), **_kw(draw, model, None))


@st.composite
def _diversity(draw, model, layers, n, image):
    layer, _ = _pick(draw, layers)
    return ob.diversity(layer, **_kw(draw, model, None))


@st.composite
def _class_logit(draw, model, layers, n, image):
    layer, lay = _pick(draw, layers)
    kw = {} if layer == OUTPUT and draw(st.booleans()) else {"layer": layer}
    return ob.class_logit(_index(draw, lay), **kw, **_kw(draw, model, n))


@st.composite
def _activation_match(draw, model, layers, n, image):
    layer, lay = _pick(draw, layers)
    target = draw(arrays((n, *lay.shape) if draw(st.booleans()) else lay.shape))
    pw = draw(st.sampled_from((0.0, 1.0)))
    return ob.activation_match(layer, target, cossim_pow=pw, **_kw(draw, model, n))


def _image_penalty(fn: Callable[..., Expr]) -> Callable[..., st.SearchStrategy[Expr]]:
    @st.composite
    def build(draw, model, layers, n, image):
        kw, _ = _image_or_layer(draw, model, layers, image)
        return fn(**kw, **_kw(draw, None, n))
    return build


def _distance(fn: Callable[..., Expr]) -> Callable[..., st.SearchStrategy[Expr]]:
    @st.composite
    def build(draw, model, layers, n, image):
        kw, lay = _image_or_layer(draw, model, layers, image)
        target = draw(st.one_of(st.just(None), small_floats, arrays(lay.shape)))
        if target is not None:
            kw["target"] = target
        return fn(**kw, **_kw(draw, None, n))
    return build


@st.composite
def _opacity(draw, model, layers, n, image):
    return ob.opacity(**_kw(draw, None, n))


@st.composite
def _source(draw, model, layers, n, image, fn):
    layer, _ = _pick(draw, layers)
    kw = {"cossim_pow": draw(st.sampled_from((0.0, 1.0, 2.0)))} if fn is ob.source_match else {}
    return fn(layer, **kw, **_kw(draw, model, n))


@st.composite
def _masks(draw) -> Any:
    """A box (x0, y0, x1, y1) in eighths of the image, or a small (H, W) tensor in [0, 1] that is not all zero."""
    if draw(st.booleans()):
        x0, y0 = draw(st.integers(0, 7)), draw(st.integers(0, 7))
        x1, y1 = draw(st.integers(x0 + 1, 8)), draw(st.integers(y0 + 1, 8))
        return (x0 / 8, y0 / 8, x1 / 8, y1 / 8)
    h, w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    m = torch.rand((h, w), generator=torch.Generator().manual_seed(draw(st.integers(0, 2**16))))
    m.view(-1)[draw(st.integers(0, h * w - 1))] = 1.0
    return m


@st.composite
def _style(draw, model, layers, n, image):
    layer, lay = _pick(draw, layers)
    a = torch.randn(
        (lay.channels, lay.channels + 1), generator=torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    )
    return ob.style(layer, a @ a.T / (lay.channels + 1), **_kw(draw, model, n))  # a Gram matrix: symmetric, >= 0


# Per-image, selectable terms that `masked` wraps (those whose activations have positions to mask).
MASKABLE = ("channel", "neuron", "layer", "direction", "direction_neuron", "channel_weight", "neuron_weight",
            "class_logit", "activation_match", "l1", "l2")


@st.composite
def _masked(draw, model, layers, n, image):
    layer, lay = _pick(draw, layers)
    from .terms import term  # terms draws from BUILDERS: imported here, not at the top

    inner = draw(term({model: {layer: lay}}, n, names=MASKABLE))
    return ob.masked(inner, draw(_masks()), normalize=draw(st.booleans()))


# Per-image, selectable terms whose gradient `facet` takes (each reads the facet's own layer in these draws,
# so the gradient exists on plain activations too).
FACETABLE = ("channel", "neuron", "layer", "direction", "direction_neuron", "channel_weight", "neuron_weight",
             "activation_match")


@st.composite
def _facet(draw, model, layers, n, image):
    layer, lay = _pick(draw, layers)
    from .terms import term  # terms draws from BUILDERS: imported here, not at the top

    inner = draw(term({model: {layer: lay}}, n, names=FACETABLE, batches=False))  # the facet selects images
    return ob.facet(inner, layer, _vector(draw, lay), rectify=draw(st.booleans()), **_kw(draw, model, n))


def _has_grid(lay: ActivationSpec) -> bool:
    """Maps, or tokens whose square patch grid today's vocabulary finds (0 or 1 prefix token)."""
    return lay.kind == "nchw" or (lay.kind == "tokens" and lay.height == lay.width > 0 and lay.prefix <= 1)


def _rgba(lay: ActivationSpec) -> bool:
    return lay.channels == 4


BUILDERS: dict[str, Builder] = {
    "channel": Builder(_channel),
    "neuron": Builder(_neuron),
    "layer": Builder(_layer),
    "direction": Builder(_direction),
    "direction_neuron": Builder(_direction_neuron),
    "channel_weight": Builder(_channel_weight),
    "neuron_weight": Builder(_neuron_weight),
    "channel_interpolate": Builder(_channel_interpolate, selectable=False),
    "alignment": Builder(_alignment, selectable=False),
    "diversity": Builder(_diversity, selectable=False),
    "class_logit": Builder(_class_logit),
    "activation_match": Builder(_activation_match),
    "total_variation": Builder(_image_penalty(ob.total_variation), kinds=("nchw",), image="also"),
    "blur": Builder(_image_penalty(ob.blur), kinds=("nchw",), image="also"),
    "l1": Builder(_distance(ob.l1), image="also"),
    "l2": Builder(_distance(ob.l2), image="also"),
    "opacity": Builder(_opacity, kinds=(), image="only", fits=_rgba),
    "masked": Builder(_masked, kinds=("nchw", "tokens"), fits=_has_grid),
    "source_match": Builder(lambda model, layers, n, image: _source(model, layers, n, image, ob.source_match)),
    "source_l2": Builder(lambda model, layers, n, image: _source(model, layers, n, image, ob.source_l2)),
    "style": Builder(_style),
    "facet": Builder(_facet),
}


# --- user terms ----------------------------------------------------------------------------------------


def takes_keyword(fn: Any, name: str, *, explicitly: bool = False) -> bool:
    """Whether `fn` (a factory or a Term dataclass) takes a keyword `name` (`explicitly`: by name, not **kw)."""
    if isinstance(fn, type) and dc.is_dataclass(fn):
        return any(f.name == name for f in dc.fields(fn))
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name or (p.kind is p.VAR_KEYWORD and not explicitly) for p in params)


def maker(target: Any) -> Callable[..., Expr]:
    """`target(*layers, **kw)` for a factory; for a Term dataclass, `cls(layer=layers[0], **kw)`."""
    if isinstance(target, type) and issubclass(target, Term):
        fields = {f.name for f in dc.fields(target)}  # type: ignore[arg-type]

        def make(*layers: str, **kw: Any) -> Expr:
            if "layer" in fields and layers:
                kw["layer"] = layers[0]
            return target(**kw)

        return make
    if not callable(target):
        raise InvalidArgumentError(f"expected an objective factory or a Term subclass, got {target!r}")
    return cast(Callable[..., Expr], target)


def _resolve(v: Any, lay: ActivationSpec) -> st.SearchStrategy[Any]:
    if isinstance(v, st.SearchStrategy):
        return v
    if callable(v) and not isinstance(v, (Tensor, Array)):
        v = v(lay)
        return v if isinstance(v, st.SearchStrategy) else st.just(v)
    return st.just(v)


def custom_builder(target: Any, *, args: Mapping[str, Any] | None = None, optional: Mapping[str, Any] | None = None,
                   kinds: Sequence[str] = RANK_LAYOUTS, layers: tuple[int, int] = (1, 1),
                   fits: Callable[[ActivationSpec], bool] = _anything) -> Builder:
    """A `Builder` for your own term: `target` is an `@objective` factory, any `factory(layer, **kw)`,
    or a Term dataclass (built as `cls(layer=..., **kw)`).

    `args` are keywords always given, `optional` keywords given or left out; each value is a constant,
    a strategy, or a function of the (first) layer's `ActivationSpec` that returns one, e.g.
    `{"index": lambda spec: st.integers(0, spec.channels - 1)}`. `layers`: how many layer names it takes.
    `batch=` and `model=` are drawn when the target takes them.

    Example:
        >>> from hypothesis import given
        >>> from lucent_dsl.testing import term
        >>> b = custom_builder(channel, args={"index": lambda spec: st.integers(0, spec.channels - 1)})
        >>> @given(term({None: {"conv": (6, 5, 7)}}, 2, builders={"mine": b}))
        ... def check(t):
        ...     assert t.layer == "conv" and t.index < 6
        >>> check()
    """
    make, args, optional = maker(target), dict(args or {}), dict(optional or {})
    batch, model = takes_keyword(target, "batch"), takes_keyword(target, "model")

    @st.composite
    def build(draw, model_name, table_layers, n, image):
        names = draw(
            st.lists(st.sampled_from(sorted(table_layers)), min_size=layers[0], max_size=layers[1], unique=True)
        )
        lay = table_layers[names[0]] if names else image
        kw = {k: draw(_resolve(v, lay)) for k, v in args.items()}
        kw |= draw(st.fixed_dictionaries({}, optional={k: _resolve(v, lay) for k, v in optional.items()}))
        extra = _kw(draw, model_name if model else None, n if batch else None)
        return make(*names, **kw, **extra)

    return Builder(build, kinds=tuple(kinds), fits=fits, selectable=batch)
