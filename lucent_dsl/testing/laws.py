"""`check_objective`: the laws every objective obeys, checked with hypothesis in one call.

The laws, each run on random activations of every layout the term claims (and on small random
models of those layout families):

- *scores*: one finite score per image, in the activations' dtype, a pure function whose gradient
  reaches the activation and is finite; `k * t`, `t + t`, `t * t`, `-t` evaluate to what they say.
- *per image* (scope "image"): changing image j leaves every other image's score and gradient
  alone; crops of an image are averaged. Scope "source": the same, except that every image may
  read image 0 (paired renders); scope "batch": the images are scored together (no such law).
- *batch*: `batch=` selects exactly the images it names (the others score 0), selecting an image
  past the render raises `ObjectiveShapeError`, `batched([t] * n)` is `t`; a term without
  `batch=` is refused by `batched`.
- *algebra*: `parse(repr(t)) == t`, `from_json(to_json(t)) == t`, equal hashes, the same values.
- *layouts*: the same grid of activations scores the same in every layout the term claims.
- *wrong shapes*: tuple/dict outputs and the `wrong_shapes=` you name raise `ObjectiveShapeError`;
  with `strict_shapes=True` (the default for built-in terms only) so do all ranks and layouts it does not
  claim, and `render` raises it before any optimizer step. A correct term that reads any rank (say a
  mean over every axis but the batch) passes by default.
- *plans*: the fx and hooks runners (`compile_plan(..., truncate="fx" / "hooks")`) give the same
  scores, and the gradient reaches the image and is finite.

Example:
    >>> check_objective(layer, max_examples=2)    # a built-in: it draws its own arguments
    >>> @objective
    ... def doc_first_channel(a):
    ...     return a[:, 0].reshape(a.shape[0], -1).mean(1)   # axis 1: the channels of maps and vectors only
    >>> check_objective(doc_first_channel, accepts_ranks=(1, 5), max_examples=10)
    Traceback (most recent call last):
    ...
    AssertionError: law 'layouts' fails for doc_first_channel('L') on tokens activations ...
"""
from __future__ import annotations

import dataclasses as dc
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import hypothesis
import torch
from hypothesis import strategies as st
from torch import Tensor

from ..dsl.expr import IMAGE, VOCABULARY, Expr, Site, evaluate, map_terms
from ..dsl.parser import parse
from ..dsl.printing import to_text
from ..dsl.serialize import from_json, to_json
from ..errors import InvalidArgumentError, ObjectiveShapeError, ParseError
from ..objectives.custom import Custom
from ..plan.compiler import batched
from .judging import Case, check_gradient, close, fail_unless_close, failure, run_law, sites_read
from .shapes import (
    LAYOUTS,
    RANK_LAYOUTS,
    ActivationSpec,
    activation_specs,
    batch_selectors,
    seeded,
    selected,
    unsupported_shapes,
)
from .terms import leaves_of, with_batch
from .vocabulary import BUILDERS, Builder, custom_builder, takes_keyword

__all__ = ["SCOPES", "Case", "Claims", "check_gradient", "check_objective", "close", "fail_unless_close", "failure",
           "run_law", "sites_read"]

SCOPES = ("image", "source", "batch")
DTYPES = (torch.float64, torch.float32)


@dc.dataclass(frozen=True)
class Claims:
    """What a term claims about itself: the domain on which its laws are checked (see `check_objective`)."""

    layouts: tuple[str, ...] = RANK_LAYOUTS
    scope: str = "image"
    min_images: int = 1
    channels: tuple[int, int] = (1, 6)
    prefix_tokens: tuple[int, ...] = (0, 1)
    accepts_ranks: tuple[int, ...] = ()
    tell_layout: Callable[[ActivationSpec], Mapping[str, Any]] | None = None
    wrong_shapes: st.SearchStrategy | None = None
    dtypes: tuple[torch.dtype, ...] = DTYPES
    strict_shapes: bool = True  # refuse every rank and layout not claimed (not only `wrong_shapes`)

    def __post_init__(self) -> None:
        bad = [k for k in self.layouts if k not in LAYOUTS]
        if bad or not self.layouts:
            raise InvalidArgumentError(f"layouts must be a non-empty subset of {LAYOUTS}, got {self.layouts!r}")
        if self.scope not in SCOPES:
            raise InvalidArgumentError(f"scope must be one of {SCOPES}, got {self.scope!r}")
        if self.tell_layout is None and "nhwc" in self.layouts:
            raise InvalidArgumentError(
                "NHWC maps have the rank of NCHW maps: a term that claims 'nhwc' must be told its layout; give it a "
                "layout= keyword (einops patterns, told as spec.pattern) or pass tell_layout=lambda spec: {...}"
            )

    def tell(self, lay: ActivationSpec) -> dict[str, Any]:
        return dict(self.tell_layout(lay)) if self.tell_layout is not None else {}


def _retell(e: Expr, kw: Mapping[str, Any]) -> Expr:
    """`e` with its leaves told the layout keywords `kw`."""
    if not kw:
        return e

    def tell(t: Any) -> Any:
        if isinstance(t, Custom):
            return dc.replace(t, params=tuple(sorted({**dict(t.params), **kw}.items())))
        if all(any(f.name == k for f in dc.fields(t)) for k in kw):
            return dc.replace(t, **kw)
        raise InvalidArgumentError(f"{t!r} has no field {sorted(kw)} to be told its layout")
    return map_terms(e, tell)


def _builtin(target: Any) -> str | None:
    name = getattr(target, "name" if isinstance(target, type) else "__name__", None)
    if name not in BUILDERS:
        return None
    if isinstance(target, type):
        return name if target.__module__.startswith("lucent_dsl.objectives") else None
    return name if VOCABULARY.get(name) is target else None


def _term_source(target: Any, args: Mapping[str, Any] | None, builder: Builder | None,
                 claims: Claims) -> Callable[[ActivationSpec, int], st.SearchStrategy[Expr]]:
    """`(layout, n) -> strategy of terms` that read layer "L" (or the image) of that layout."""
    name = None if args or builder else _builtin(target)

    def strategy(lay: ActivationSpec, n: int) -> st.SearchStrategy[Expr]:
        b = builder or (BUILDERS[name] if name else
                        custom_builder(target, args={**(args or {}), **claims.tell(lay)}, kinds=LAYOUTS))
        told = bool(claims.tell(lay))
        # A built-in term told its layout reads an NHWC map as the NCHW map it is rearranged to: draw it as one.
        seen = dc.replace(lay, kind="nchw") if told and name and lay.kind == "nhwc" else lay
        layers, image = {"L": seen}, lay if lay.kind == "nchw" else None
        if not b.available(layers, image):
            raise InvalidArgumentError(f"{target!r} claims {lay.kind} layouts but no term of it fits {lay}")
        drawn = b.draw(None, b.layers(layers), n, image if b.reads_image(image) else None)
        return drawn.map(lambda t: _retell(t, claims.tell(lay))) if name or builder else drawn
    return strategy


@st.composite
def _cases(draw, terms: Callable, claims: Claims, kinds: Sequence[str], *, min_n: int = 1) -> Case:
    lay = draw(activation_specs(kinds, channels=claims.channels, sides=(1, 4), prefix=claims.prefix_tokens,
                                dtypes=claims.dtypes))
    n = draw(st.integers(max(claims.min_images, min_n), max(claims.min_images, min_n, 3)))
    crops = draw(st.integers(1, 2))
    t = draw(terms(lay, n))
    return Case(t, lay, n, crops, lay.tensor(crops * n, seed=draw(st.integers(0, 2**16))))


# --- the laws, on activations -------------------------------------------------------------------------


def _scores(case: Case, data: st.DataObject, seen: list) -> None:
    law, t, n = "scores", case.term, case.n
    act = case.act.detach().requires_grad_(True)
    s = evaluate(t, case.acts(act), n)
    if not isinstance(s, Tensor) or s.shape != (n,) or s.dtype != act.dtype:
        got = f"{tuple(s.shape)} {s.dtype}" if isinstance(s, Tensor) else type(s).__name__
        raise failure(law, case, f"the score must be one {act.dtype} value per image, shape ({n},); got {got}")
    if not bool(torch.isfinite(s).all()):
        raise failure(law, case, f"non-finite score {s.tolist()}")
    if not torch.equal(evaluate(t, case.acts(act), n), s):
        raise failure(law, case, "two evaluations on the same activations differ: the score is not a pure function")
    check_gradient(law, case, lambda a: evaluate(t, case.acts(a), n), act, seen, "activation")
    k = data.draw(st.floats(-4, 4).filter(lambda v: v != 0), label="k")
    for what, e, expected in (("k * t", k * t, k * s), ("t + t", t + t, 2 * s), ("t * t", t * t, s * s),
                              ("-t", -t, -s)):
        fail_unless_close(law, case, evaluate(e, case.acts(act), n), expected, f"{what} (k = {k})")


def _rows_of(image: int, n: int, rows: int) -> list[int]:
    return list(range(image, rows, n))


def _per_image(case: Case, data: st.DataObject, source: bool) -> None:
    law, t, n, rows = "per image", case.term, case.n, case.act.shape[0]
    act = case.act.detach().requires_grad_(True)
    s = evaluate(t, case.acts(act), n)
    j = data.draw(st.integers(1 if source else 0, n - 1), label="changed image")
    other = case.act.detach().clone()
    other[_rows_of(j, n, rows)] = seeded((len(_rows_of(j, n, rows)), *other.shape[1:]), j + 1, other.dtype)
    s2 = evaluate(t, case.acts(other), n)
    keep = [i for i in range(n) if i != j]
    fail_unless_close(law, case, s2[keep], s[keep], f"changing image {j} changed the scores of images {keep}")
    for i in range(n):
        g = torch.autograd.grad(s[i], act, retain_graph=True, allow_unused=True)[0] if s.requires_grad else None
        leak = [b for b in range(n) if b != i and g is not None and float(g[_rows_of(b, n, rows)].abs().sum()) > 0]
        if leak:
            raise failure(law, case, f"the gradient of image {i}'s score reaches images {leak}")
    if case.crops > 1:
        per_crop = torch.stack([evaluate(t, case.acts(act[k * n:(k + 1) * n]), n) for k in range(case.crops)])
        fail_unless_close(law, case, s, per_crop.mean(0), "the score of all crops is not the mean of each crop's")


def _batch(case: Case, data: st.DataObject) -> None:
    law, t, n = "batch", case.term, case.n
    if not all(any(f.name == "batch" for f in dc.fields(cast(Any, leaf))) for leaf in leaves_of(t)):
        try:
            batched([t])
        except InvalidArgumentError:
            return
        raise failure(law, case, "the term takes no batch=, yet batched([term]) accepted it")
    base = with_batch(t, None)
    b = data.draw(batch_selectors(n), label="batch")
    full, part = evaluate(base, case.acts(), n), evaluate(with_batch(t, b), case.acts(), n)
    picked = selected(b, n)
    mask = torch.tensor([1.0 if i in picked else 0.0 for i in range(n)], dtype=full.dtype)
    if not torch.equal(part * (1 - mask), torch.zeros_like(part)):
        raise failure(law, case, f"batch={b!r} must score 0 on the other images; got {part.tolist()}")
    fail_unless_close(law, case, part * mask, full * mask, f"batch={b!r} changed the selected images' scores")
    try:
        evaluate(with_batch(t, n), case.acts(), n)
    except ObjectiveShapeError:
        pass
    else:
        raise failure(law, case, f"batch={n} selects an image past the render's {n}; it must raise ObjectiveShapeError")
    fail_unless_close(law, case, evaluate(batched([base] * n), case.acts(), n), full, "batched([t] * n) is not t")


def _algebra(case: Case, data: st.DataObject) -> None:
    law, t = "algebra", case.term
    other = data.draw(st.floats(-3, 3), label="constant")
    for e in (t, 0.5 * t - t * t + other):
        text = to_text(e)
        try:
            back = parse(text)
        except ParseError as err:
            raise failure(
                law,
                case,
                f"repr {text!r} does not parse back ({err}); make the term with @lucent_dsl.objective "
                "or register its factory with lucent_dsl.dsl.expr.register(name, factory)",
            ) from None
        if back != e or hash(back) != hash(e) or to_text(back) != text:
            raise failure(law, case, f"parse(repr(e)) gives {back!r}, not an equal expression with the same hash")
        back = from_json(to_json(e))
        if back != e or hash(back) != hash(e):
            raise failure(
                law, case, f"from_json(to_json(e)) gives {back!r}, not an equal expression with the same hash"
            )
    if not torch.equal(evaluate(parse(to_text(t)), case.acts(), case.n), evaluate(t, case.acts(), case.n)):
        raise failure(law, case, "the term read back from its repr scores differently")


def _wrong_shapes(claims: Claims) -> st.SearchStrategy | None:
    """Per-image shapes (or "tuple"/"dict" outputs) that the term must refuse with ObjectiveShapeError."""
    options = []
    ranks = [r for r in (0, 4) if r + 1 not in claims.accepts_ranks] if claims.strict_shapes else []
    if ranks:
        options.append(unsupported_shapes(ranks))
    unclaimed = [k for k in RANK_LAYOUTS
                 if k not in claims.layouts and {"nchw": 4, "tokens": 3, "vectors": 2}[k] not in claims.accepts_ranks]
    if unclaimed and claims.strict_shapes:
        options.append(activation_specs(unclaimed, channels=(1, 6), sides=(1, 4), prefix=(0, 1)).map(lambda s: s.shape))
    if claims.wrong_shapes is not None:
        options.append(claims.wrong_shapes)
    return st.one_of(*options) if options else None


def _wrong(case: Case, shape: Any, seed: int) -> dict[Site, Any] | None:
    """The case's sites filled with activations of the wrong `shape`; None where that cannot happen."""
    image_only = all(s.layer == IMAGE for s in sites_read(case.term))
    if isinstance(shape, str):  # a layer that returns several outputs; the rendered image is always a tensor
        if image_only:
            return None
        a = case.act.detach()
        return case.acts((a, a) if shape == "tuple" else {"out": a})
    return case.acts(seeded((case.act.shape[0], *shape), seed, case.act.dtype))


def _refuses(case: Case, data: st.DataObject, shapes: st.SearchStrategy | None) -> None:
    law = "wrong shapes"
    outputs = st.sampled_from(("tuple", "dict"))
    shape = data.draw(outputs if shapes is None else shapes | outputs, label="wrong shape")
    acts = _wrong(case, shape, data.draw(st.integers(0, 99)))
    if acts is None:
        return
    try:
        evaluate(case.term, acts, case.n)
    except ObjectiveShapeError:
        return
    except Exception as err:
        raise failure(law, case, f"on a {shape} activation it raised {type(err).__name__} ({err}), "
                    "not ObjectiveShapeError") from None
    raise failure(law, case, f"it scored activations of per-image shape {shape}, which it does not claim; "
                "raise ObjectiveShapeError (or claim that layout; this law runs with strict_shapes=True)")


def _layouts(terms: Callable, claims: Claims, data: st.DataObject) -> None:
    """One grid of activations, seen in every claimed layout, scores the same in each."""
    side, c = data.draw(st.integers(1, 3), label="side"), data.draw(st.integers(*claims.channels), label="channels")
    n = data.draw(st.integers(claims.min_images, max(claims.min_images, 3)), label="images")
    lays = {k: ActivationSpec(k, c, side, side, dtype=torch.float64) for k in claims.layouts
            if (k != "vectors" or side == 1) and (k != "tokens" or 0 in claims.prefix_tokens)}
    if len(lays) < 2:
        return
    grid = seeded((n, c, side, side), data.draw(st.integers(0, 2**16)), torch.float64)
    base = data.draw(st.sampled_from(sorted(lays)), label="drawn for")
    t = data.draw(terms(lays[base], n), label="term")
    case = Case(t, lays[base], n, 1, lays[base].from_grid(grid))
    ref = evaluate(t, case.acts(), n)
    for lay in lays.values():
        other = Case(_retell(t, claims.tell(lay)), lay, n, 1, lay.from_grid(grid))
        try:
            value = evaluate(other.term, other.acts(), n)
        except ObjectiveShapeError:
            continue  # e.g. token= on a map, or a target of another layout's shape
        fail_unless_close("layouts", other, value, ref, f"the same grid laid out as {base} scores differently")


def _pattern(spec: ActivationSpec) -> dict[str, Any]:
    return {"layout": spec.pattern}


def _never(seen: list, what: str, target: Any) -> None:
    if not seen:
        name = getattr(target, "__name__", repr(target))
        raise AssertionError(f"law 'scores' fails for {name}: in no example did a gradient reach the {what}; "
                             "its score does not depend on what it reads")


def _strict_by_default(target: Any, args: Mapping[str, Any] | None, builder: Builder | None) -> bool:
    """Built-in terms claim exact layouts and are held to them; a user's term is, only when asked."""
    return builder is None and not args and _builtin(target) is not None


def check_objective(target: Any, *, args: Mapping[str, Any] | None = None, layouts: Sequence[str] = RANK_LAYOUTS,
                    scope: str = "image", min_images: int = 1, channels: tuple[int, int] = (1, 6),
                    prefix_tokens: Sequence[int] = (0, 1), accepts_ranks: Sequence[int] = (),
                    tell_layout: Callable[[ActivationSpec], Mapping[str, Any]] | None = None,
                    wrong_shapes: st.SearchStrategy | None = None, builder: Builder | None = None,
                    models: bool = True, max_examples: int = 25, settings: hypothesis.settings | None = None,
                    strict_shapes: bool | None = None) -> None:
    """Check every law of the module docstring for `target`; AssertionError names the counterexample.

    Args:
        target: a built-in factory or Term class (it draws its own arguments), an `@objective`
            factory, any `factory(layer, **kw) -> Expr`, or a Term dataclass (`cls(layer=..., **kw)`).
        args: keyword arguments: constants, strategies, or functions of the activation's `ActivationSpec`
            returning either, e.g. `{"index": lambda spec: st.integers(0, spec.channels - 1)}`.
        layouts: the layouts it reads, of "nchw", "nhwc", "tokens", "vectors".
        scope: "image" (each image scored alone), "source" (and image 0), "batch" (together).
        min_images: fewest images it needs (2 for terms that compare images).
        channels: (lo, hi) channel counts it claims.
        prefix_tokens: prefix-token counts (CLS, registers) it reads on token sequences.
        accepts_ranks: activation ranks (with the batch axis) it also accepts, beyond its layouts.
        tell_layout: `spec -> keywords` that tell the term its layout, needed for "nhwc"; a term with
            a `layout=` keyword is told `{"layout": spec.pattern}` (an einops pattern) by default.
        wrong_shapes: more per-image shapes that it must refuse with ObjectiveShapeError.
        strict_shapes: also require ObjectiveShapeError on every rank (0-D and 4-D per image) and layout it
            does not claim. Default (None): True for a built-in term (they claim exact layouts), False for
            your own, which may well read any rank correctly.
        builder: a `Builder` (e.g. `custom_builder(...)`) that draws the terms, instead of `target` and `args`.
        models: also check plans on random models and renders (slower).
        max_examples: examples per law (laws on models run a fifth of them).
        settings: hypothesis settings the laws start from (default: the current profile).

    Raises:
        AssertionError: a law fails; the message names the law, the term and the activation.
        InvalidArgumentError: the claims themselves are inconsistent.
    """
    if tell_layout is None and builder is None and takes_keyword(target, "layout", explicitly=True):
        tell_layout = _pattern  # a term with layout= is told each layout's einops pattern
    claims = Claims(
        tuple(layouts),
        scope,
        min_images,
        cast(tuple[int, int], tuple(channels)),
        tuple(prefix_tokens),
        tuple(accepts_ranks),
        tell_layout,
        wrong_shapes,
        strict_shapes=_strict_by_default(target, args, builder) if strict_shapes is None else bool(strict_shapes),
    )
    few, terms = max(2, max_examples // 5), _term_source(target, args, builder, claims)
    for kind in claims.layouts:  # a claim that no term fits is the caller's mistake: say so before any law runs
        side = 1 if kind == "vectors" else 2
        terms(
            ActivationSpec(kind, claims.channels[0], side, side, claims.prefix_tokens[0] if kind == "tokens" else 0), 1
        )
    cases, shapes, seen = _cases(terms, claims, claims.layouts), _wrong_shapes(claims), []

    def values(data: st.DataObject) -> None:
        case = data.draw(cases, label="case")
        steps = [("scores", lambda: _scores(case, data, seen))]
        if scope != "batch" and case.n > 1:
            steps.append(("per image", lambda: _per_image(case, data, scope == "source")))
        steps += [("batch", lambda: _batch(case, data)), ("algebra", lambda: _algebra(case, data))]
        steps.append(("wrong shapes", lambda shapes=shapes: _refuses(case, data, shapes)))
        for law, step in steps:
            try:
                step()
            except AssertionError:
                raise
            except Exception as err:
                raise failure(law, case, f"{type(err).__name__} on activations it claims: {err}") from err

    run_law("values", max_examples, values, settings)
    _never(seen, "activation", target)
    run_law("layouts", max(2, max_examples // 2), lambda data: _layouts(terms, claims, data), settings)
    if not models:
        return
    from .model_laws import plans, render_refuses

    for kind in claims.layouts:
        one, seen = _cases(terms, claims, (kind,)), []
        run_law("plans", few, lambda data, one=one, seen=seen: plans(data.draw(one, label="case"),
                                                                       data.draw(st.integers(0, 99)), seen), settings)
        _never(seen, f"image (through {kind} models)", target)
    if shapes is not None:
        run_law("wrong shapes", few, lambda data: render_refuses(data.draw(cases, label="case"),
                                                                  data.draw(shapes, label="wrong shape")), settings)
