"""Read some layers of a model once, without writing an objective: the plan-level reader.

Research methods, the sanity checks, dataset examples and style targets all need "the activations
of these layers for these images": the same truncated, preprocessed forward a render runs, in the
same canonical layout, but no score and no vocabulary term. `layer_reader` compiles that plan once
(a private read of each layer, so a misspelled layer raises `LayerNotFoundError` with suggestions
before any forward);
`read_layers` runs it on one batch, frozen (eval mode, BatchNorms as in a render) and without
gradients, leaving the model as it was.

Example:
    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    >>> read_layers(net, torch.rand(2, 3, 8, 8), ["0"])["0"].shape
    torch.Size([2, 4, 6, 6])
"""
from __future__ import annotations

import contextlib
import dataclasses as dc
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from ..dsl.expr import Acts, Site, Term, sum_of
from ..errors import InvalidArgumentError
from .compiler import Plan, compile_plan
from .fold import frozen_models


@dc.dataclass(frozen=True, slots=True, repr=False)
class _Read(Term):
    """Reads one layer and scores nothing: what a reader compiles instead of a vocabulary term. Not
    registered, so never parsed; it prints as the whole-layer read it stands for, in error messages."""

    name = "layer"
    positional = ("layer",)
    layer: str
    model: str | None = None

    def sites(self) -> tuple[Site, ...]:
        return (Site(self.model, self.layer),)

    def score(self, acts: Acts, n: int) -> Tensor:
        raise NotImplementedError("a layer reader reads activations; it has no score")


class LayerReader(NamedTuple):
    """A plan that reads `layers` of one model, and each layer name's site in its `forward`."""

    plan: Plan
    sites: dict[str, Site]

    def read(self, images: Tensor) -> dict[str, Any]:
        """layer name -> activation of `images` (R, C, H, W in [0, 1], on the plan's device)."""
        acts = self.plan.forward(images)
        return {name: acts[site] for name, site in self.sites.items()}


def layer_reader(model: nn.Module, layers: str | Sequence[str]) -> LayerReader:
    """Compile a plan that reads `layers` of `model` (truncated after the deepest one).

    Raises:
        LayerNotFoundError: a layer the model does not have (with close names).
    """
    names = (layers,) if isinstance(layers, str) else tuple(layers)
    if not names:
        raise InvalidArgumentError("layer_reader needs at least one layer")
    plan = compile_plan(sum_of(_Read(n) for n in names), model)
    by_layer = {s.layer: s for s in plan.sites}
    return LayerReader(plan, {n: by_layer[n] for n in names})


def read_layers(model: nn.Module, images: Tensor, layers: str | Sequence[str], *,
                reader: LayerReader | None = None, grad: bool = False) -> dict[str, Any]:
    """Activations of `images` at `layers`: one frozen, truncated forward with the model's preprocessing.

    Args:
        images: (B, C, H, W) in [0, 1]; moved to the model's device.
        reader: a `layer_reader(model, layers)` compiled once, for a loop over batches.
        grad: keep the autograd graph (for a gradient to the images), else `torch.no_grad()`.

    Returns:
        layer name -> activation (B, ...), in canonical layout, on the model's device.
    """
    if not isinstance(images, Tensor) or images.dim() != 4:
        got = getattr(images, "shape", type(images).__name__)
        raise InvalidArgumentError(f"images must be a (B, C, H, W) tensor in [0, 1], got {got!r}")
    reader = reader or layer_reader(model, layers)
    with frozen_models(list(reader.plan.models.values())), (contextlib.nullcontext() if grad else torch.no_grad()):
        return reader.read(images.to(reader.plan.device))
