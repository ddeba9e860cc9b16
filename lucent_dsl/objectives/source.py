"""Terms whose target is image 0 of the render at the same step: source_match, source_l2.

Paired renders (`recipes.caricature`, `recipes.accentuate`) put the source photo first in the batch
and share every random draw with it, so crop k of each image is compared with crop k of the source.

Example:
    >>> source_match("features.4") - 0.5 * source_l2("features.4")
    source_match('features.4') - 0.5 * source_l2('features.4')
"""
from __future__ import annotations

from torch import Tensor

from ..dsl.expr import Acts, Expr, Term, finite
from ..errors import ObjectiveShapeError
from ._term import (
    Batch,
    LayerTerm,
    check_batch,
    check_layer,
    check_layout,
    check_model,
    dot_cos,
    frozen,
    layout_of,
    per_image,
    rows_channels_positions,
)


def source_rows(term: Term, a: Tensor, n: int) -> Tensor:
    """For every row (crop k of image b), the same crop of image 0 (the source), detached."""
    if a.shape[0] % n:
        raise ObjectiveShapeError(f"{term!r}: {a.shape[0]} rows is not a multiple of the {n} images")
    k = a.shape[0] // n
    src = a.detach().reshape(k, n, *a.shape[1:])[:, :1]
    return src.expand(k, n, *a.shape[1:]).reshape(a.shape)


@frozen
class SourceMatch(LayerTerm):
    """`activation_match` whose target is image 0's activations at the same step (paired transforms)."""

    name = "source_match"
    positional = ("layer",)
    layer: str
    cossim_pow: float = 1.0
    batch: Batch = None
    model: str | None = None
    layout: str | None = None  # einops pattern of the activation, when the plan should not detect it

    def score(self, acts: Acts, n: int) -> Tensor:
        site, a = self.read(acts)
        cp, tcp = rows_channels_positions(self, site, a), rows_channels_positions(self, site, source_rows(self, a, n))
        return per_image(self, dot_cos(cp, tcp, self.cossim_pow).mean(-1), n, self.batch)


@frozen
class SourceL2(LayerTerm):
    """`l2` whose target is image 0's activations at the same step (paired transforms); a penalty."""

    name = "source_l2"
    positional = ("layer",)
    layer: str
    batch: Batch = None
    model: str | None = None
    layout: str | None = None  # einops pattern of the activation, when the plan should not detect it

    def score(self, acts: Acts, n: int) -> Tensor:
        site, a = self.read(acts)
        layout_of(
            self, site, a
        )  # a (B,) or (B, C, D, H, W) activation is no layout: ObjectiveShapeError, not IndexError
        return per_image(self, (a - source_rows(self, a, n)).pow(2).flatten(1).mean(1), n, self.batch)


def source_match(
    layer: str, *, cossim_pow: float = 1.0, batch: Batch = None, model: str | None = None, layout: str | None = None
) -> Expr:
    """Match image 0's activations of `layer` (dot x cos^power, Lucid's activation match).

    Example:
        >>> source_match("layer3", cossim_pow=2.0)
        source_match('layer3', cossim_pow=2.0)
    """
    return SourceMatch(
        check_layer(layer),
        finite(cossim_pow, "cossim_pow"),
        check_batch(batch),
        check_model(model),
        check_layout(layout),
    )


def source_l2(layer: str, *, batch: Batch = None, model: str | None = None, layout: str | None = None) -> Expr:
    """Penalty (subtract it): mean squared distance to image 0's activations of `layer`.

    Example:
        >>> source_l2("layer3")
        source_l2('layer3')
    """
    return SourceL2(check_layer(layer), check_batch(batch), check_model(model), check_layout(layout))
