"""Gradient-weighted terms: `facet`, the facet term of faceted feature visualization.

Goh et al. (2021, "Multimodal Neurons in Artificial Neural Networks", Distill, appendix "Faceted
Feature Visualization") steer a unit's visualization towards a theme (faces, text, ...) with a
linear probe `w` trained at an earlier layer. Writing the unit's objective as `f(g(x))`, with
`g(x)` the earlier layer's activation, they maximize

    f(g(x)) + w . (g(x) * grad f(g(x)))

The gradient acts as a filter: only the parts of `g(x)` that the unit uses count towards the
facet. `facet(expr, layer, w)` is the second summand, with `expr` as `f` and `layer` as `g`;
`toolbox.facets.faceted` adds the first. As in OpenAI's released code (CLIP-featurevis,
`example_facets.py`, the `attr` objective) the gradient is held constant (no second derivative)
and only its positive part is kept (`rectify=False`: the signed gradient of the article's
formula). Per image and crop:

    sum_{c, p} w[c] * a[c, p] * relu(d f / d a[c, p])

with `a` the activation at `layer` (the sum over positions is the released code's for a probe
without positions; every crop is scored as if it were rendered alone, then crops are averaged).

The gradient is taken inside the objective, so the term needs activations that are on the
autograd path from `layer` to the layers `expr` reads: a render's (gradients on, not under
`torch.compile`, which the renderer then skips), or a plain dict in which `expr` reads `layer`
itself. Anything else raises `ObjectiveShapeError` naming the reason, never a silent zero.

Example:
    >>> import torch
    >>> from lucent_dsl import channel, parse
    >>> t = facet(channel("features.16", 7), "features.6", [0.5, -1.0, 2.0])
    >>> t
    facet(channel('features.16', 7), 'features.6', (0.5, -1.0, 2.0))
    >>> parse(repr(t)) == t
    True
    >>> same = facet(channel("c", 0), "c", [2.0, 0.0])          # expr reads the facet layer itself
    >>> a = torch.ones(1, 2, 2, 2)
    >>> float(same.score({Site(None, "c"): a}, 1))                # 2 * sum_p a[0, p] * (1 / 4)
    2.0
"""
from __future__ import annotations

import dataclasses as dc
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..dsl.expr import IMAGE, Acts, Expr, Site, Term, evaluate, map_terms, terms_of
from ..errors import InvalidArgumentError, ObjectiveShapeError
from ._term import (
    Batch,
    LayerTerm,
    check_batch,
    check_layer,
    check_len,
    check_model,
    check_vector,
    frozen,
    laid_key,
    per_image,
    rows_channels_positions,
)

__all__ = ["Facet", "facet"]


@frozen
class Facet(LayerTerm):
    """`sum_{c,p} w[c] * a[c, p] * relu(grad_a f)[c, p]` at `layer`, `f` = `expr` (see the module docstring).

    Attributes:
        expr: the unit's objective `f` (any expression reading layers at or after `layer`).
        layer: the earlier layer `g` the probe was trained at.
        weights: the probe's weights, one per channel of `layer`.
        rectify: keep only the positive part of the gradient (the released code); False: the signed gradient.
    """

    name = "facet"
    positional = ("expr", "layer", "weights")
    differentiates: ClassVar[bool] = True  # the renderer runs it eagerly (see the module docstring)
    expr: Expr
    layer: str
    weights: tuple[float, ...]
    rectify: bool = True
    batch: Batch = None
    model: str | None = None

    def __post_init__(self) -> None:
        # The unit reads this term's model: binding (and unbinding, for a recipe) this term names its unit's too.
        object.__setattr__(self, "expr", map_terms(self.expr, self._named))

    def _named(self, t: Term) -> Expr:
        if getattr(t, "model", self.model) == self.model or all(s.layer == IMAGE for s in t.sites()):
            return t
        return dc.replace(t, model=self.model)  # type: ignore[type-var]

    def dsl_args(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The unit prints without its model: it is this term's (`model=`), which the factory gives it back."""
        pos, kw = Term.dsl_args(self)
        if self.model is None:
            return pos, kw
        bare = map_terms(self.expr, lambda t: dc.replace(t, model=None) if getattr(t, "model", None) else t)  # type: ignore[type-var]
        return (bare, *pos[1:]), kw

    def sites(self) -> tuple[Site, ...]:
        inner = (s for t in terms_of(self.expr) for s in t.sites())
        return tuple(dict.fromkeys([Site(self.model, self.layer), *inner]))  # its own first: `read` reads it

    def bind(self, info: Any) -> Term:
        """The unit bound too (class names resolved): the plan binds this term as one leaf."""
        return dc.replace(self, expr=map_terms(self.expr, lambda t: t.bind(info)))

    def score(self, acts: Acts, n: int) -> Tensor:
        site, a = self.read(acts)
        grad = self._gradient(acts, site, a, n)
        cp = rows_channels_positions(self, site, a)
        gp = rows_channels_positions(self, site, grad)
        check_len(self, site, len(self.weights), cp.shape[1], "the probe's weights")
        g = gp.clamp(min=0) if self.rectify else gp
        w = torch.tensor(self.weights, dtype=cp.dtype, device=cp.device).view(1, -1, 1)
        return per_image(self, (w * cp * g).sum((1, 2)), n, self.batch)

    def _gradient(self, acts: Acts, site: Site, a: Tensor, n: int) -> Tensor:
        """d f / d a, held constant; each crop's as if it were rendered alone (f averages the crops)."""
        crops = max(1, a.shape[0] // n)
        if a.requires_grad and torch.is_grad_enabled():
            f = evaluate(self.expr, acts, n)
            grad = _grad(f, a) if f.requires_grad else None
        else:  # activations without a graph (a plain dict): f re-read on a copy of `a` that records one
            with torch.enable_grad():
                leaf = a.detach().requires_grad_(True)
                inner = dict(acts)
                inner[laid_key(acts, site)] = leaf
                f = evaluate(self.expr, inner, n)
                grad = _grad(f, leaf) if f.requires_grad else None
        if grad is None:
            why = ("gradients are off (torch.no_grad() or inference mode)" if not torch.is_grad_enabled() else
                   f"{site}'s activation, as the plan read it, is not on the autograd path to the layers "
                   f"{', '.join(str(s) for t in terms_of(self.expr) for s in t.sites())} that the unit reads: the unit "
                   "reads an earlier layer, the plan read a copy (a module output written in place later, or "
                   "rearranged to its canonical layout), or the step is compiled (render with compile=False)")
            raise ObjectiveShapeError(f"{self!r} needs the gradient of its unit's objective at {site}, but {why}. "
                                      "Read the output of a block (e.g. 'features.6', 'blocks.3') upstream of the unit")
        return grad.detach() * crops


def _grad(f: Tensor, a: Tensor) -> Tensor | None:
    """d f.sum() / d a. When nothing downstream used `a` and `a` is a clone (`plan.inplace` reads a clone of an
    output that a later op writes in place), the model computed on the tensor it was cloned from: the gradient is
    taken at that tensor's autograd edge, i.e. with respect to the value `a` holds."""
    grad = torch.autograd.grad(f.sum(), a, retain_graph=True, allow_unused=True)[0]
    node = a.grad_fn
    if grad is None and node is not None and type(node).__name__.startswith("CloneBackward"):
        source, index = node.next_functions[0]
        if source is not None:
            edge = torch.autograd.graph.GradientEdge(source, index)
            grad = torch.autograd.grad(f.sum(), edge, retain_graph=True, allow_unused=True)[0]
    return grad


def facet(expr: Expr, layer: str, weights: Sequence[float] | Tensor, *, rectify: bool = True, batch: Batch = None,
          model: str | None = None) -> Expr:
    """The facet term of `expr` at the earlier `layer`: probe `weights` dotted with activation * relu(gradient).

    Args:
        expr: the unit's objective `f`, e.g. `channel('features.16', 7)`; it reads the same model.
        layer: the layer the probe was trained at (upstream of what `expr` reads).
        weights: one weight per channel of `layer` (a probe's `w`, see `toolbox.facets.train_probe`).
        rectify: keep the positive part of the gradient (OpenAI's code); False: the signed gradient (the article).
        batch, model: as every term's; `model` defaults to the one `expr` names.

    Raises:
        InvalidArgumentError: `expr` is no objective, reads another model, or holds a facet itself.
        ObjectiveShapeError (when scored): see the module docstring.

    Example:
        >>> from lucent_dsl import neuron
        >>> facet(neuron("blocks.9", 3), "blocks.4", (1.0, -1.0), rectify=False, model="vit")
        facet(neuron('blocks.9', 3), 'blocks.4', (1.0, -1.0), rectify=False, model='vit')
    """
    if not isinstance(expr, Expr):
        raise InvalidArgumentError(f"facet(...) takes the unit's objective first, e.g. channel('features.16', 7); "
                                   f"got {expr!r} ({type(expr).__name__})")
    if not isinstance(rectify, bool):
        raise InvalidArgumentError(f"rectify must be True or False, got {rectify!r}")
    leaves = terms_of(expr)
    if not leaves:
        raise InvalidArgumentError(f"facet(...) needs a unit objective that reads a layer, got the constant {expr!r}")
    if any(isinstance(t, Facet) for t in leaves):
        raise InvalidArgumentError("facet(...) inside facet(...): add the facet terms side by side instead")
    model = check_model(model)
    named = {t.model for t in leaves if getattr(t, "model", None) is not None}  # type: ignore[attr-defined]
    if len(named - {model}) > (0 if model is not None else 1):
        raise InvalidArgumentError(
            f"facet(...) reads the gradient of its unit inside one model; the unit reads models {sorted(named)} "
            f"{f'but the facet names {model!r}' if model is not None else ''}".rstrip())
    return Facet(expr, check_layer(layer), check_vector(weights, "the probe's weights"), rectify, check_batch(batch),
                 model if model is not None else next(iter(named), None))
