"""Terms that read units of a layer: channel, neuron, layer (deepdream), class_logit, channel_interpolate.

Example:
    >>> channel("layer4", 12) + 0.5 * neuron("layer3", 5)
    channel('layer4', 12) + 0.5 * neuron('layer3', 5)
"""
from __future__ import annotations

import dataclasses as dc
import difflib
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..dsl.expr import OUTPUT, Acts, Expr, Site, Term
from ..errors import InvalidArgumentError, ObjectiveShapeError
from ._term import (
    Batch,
    LayerTerm,
    check_batch,
    check_channel,
    check_convention,
    check_index,
    check_layer,
    check_layout,
    check_model,
    check_opt_index,
    frozen,
    layout_of,
    patch_positions,
    per_image,
    position_index,
    rows_channels_positions,
    tensor_at,
)


@frozen
class Channel(LayerTerm):
    """Mean activation of one channel."""

    name = "channel"
    positional = ("layer", "index")
    layer: str
    index: int
    batch: Batch = None
    model: str | None = None
    layout: str | None = None  # einops pattern of the activation, when the plan should not detect it

    def score(self, acts: Acts, n: int) -> Tensor:
        site, a = self.read(acts)
        cp = patch_positions(self, site, a)
        check_channel(self, site, self.index, cp.shape[1])
        return per_image(self, cp[:, self.index].mean(-1), n, self.batch)


def channel(
    layer: str, index: int, *, batch: Batch = None, model: str | None = None, layout: str | None = None
) -> Expr:
    """Mean activation of channel `index` of `layer` (over positions, or the patch tokens after the prefix tokens a
    token site's layout states: CLS, distillation, registers).

    Example:
        >>> channel("features.14", 10, batch=0)
        channel('features.14', 10, batch=0)
    """
    return Channel(
        check_layer(layer),
        check_index(index, "channel index"),
        check_batch(batch),
        check_model(model),
        check_layout(layout),
    )


@frozen
class Neuron(LayerTerm):
    """One channel at one position: the centre by default (true centre on non-square maps)."""

    name = "neuron"
    positional = ("layer", "index")
    layer: str
    index: int
    x: int | None = None
    y: int | None = None
    token: int | None = None
    batch: Batch = None
    model: str | None = None
    layout: str | None = None  # einops pattern of the activation, when the plan should not detect it
    convention: str = "lucent_dsl"  # "lucid": x is the row and y the column, as in Lucid and captum

    def score(self, acts: Acts, n: int) -> Tensor:
        site, a = self.read(acts)
        cp = rows_channels_positions(self, site, a)
        check_channel(self, site, self.index, cp.shape[1])
        col, row = (self.x, self.y) if self.convention == "lucent_dsl" else (self.y, self.x)
        pos = position_index(self, site, a, col, row, self.token)
        return per_image(self, cp[:, self.index, pos], n, self.batch)


def neuron(layer: str, index: int, *, x: int | None = None, y: int | None = None, token: int | None = None,
           batch: Batch = None, model: str | None = None, layout: str | None = None,
           convention: str = "lucent_dsl") -> Expr:
    """Activation of channel `index` at column `x`, row `y` (default: the centre, W//2 and H//2).

    On (B, tokens, C) sequences x/y index the square patch grid (after a CLS token if there is one)
    and `token=` picks a token directly (`token=0`: the CLS token). x is the column as in lucent (and in
    image coordinates); Lucid's and captum's `neuron(..., x=a, y=b)` read row a, column b, which is
    `neuron(..., x=b, y=a)` here, or `convention="lucid"` (x the row). The default centre is the same in all.

    Example:
        >>> neuron("layer3", 5, x=2)
        neuron('layer3', 5, x=2)
    """
    return Neuron(
        check_layer(layer),
        check_index(index, "channel index"),
        check_opt_index(x, "x"),
        check_opt_index(y, "y"),
        check_opt_index(token, "token"),
        check_batch(batch),
        check_model(model),
        check_layout(layout),
        check_convention(convention),
    )


@frozen
class Layer(LayerTerm):
    """Mean of squared activations of a whole layer (DeepDream)."""

    name = "layer"
    positional = ("layer",)
    layer: str
    batch: Batch = None
    model: str | None = None
    layout: str | None = None  # einops pattern of the activation, when the plan should not detect it

    def score(self, acts: Acts, n: int) -> Tensor:
        site, a = self.read(acts)
        layout_of(self, site, a)
        return per_image(self, a.pow(2).flatten(1).mean(1), n, self.batch)


def layer(layer: str, *, batch: Batch = None, model: str | None = None, layout: str | None = None) -> Expr:
    """Mean of squared activations of `layer` (`deepdream` is the same objective).

    Example:
        >>> deepdream("layer3") == layer("layer3")
        True
    """
    return Layer(check_layer(layer), check_batch(batch), check_model(model), check_layout(layout))


deepdream = layer



@frozen
class ChannelInterpolate(Term):
    """Image i of n optimizes (1 - t_i) * channel1 + t_i * channel2 with t_i = i / (n - 1)."""

    name = "channel_interpolate"
    positional = ("layer1", "index1", "layer2", "index2")
    layer1: str
    index1: int
    layer2: str
    index2: int
    model: str | None = None

    def sites(self) -> tuple[Site, ...]:
        return (Site(self.model, self.layer1), Site(self.model, self.layer2))

    def score(self, acts: Acts, n: int) -> Tensor:
        s1, s2 = self.sites()
        a1 = Channel(self.layer1, self.index1, None, self.model).score({s1: tensor_at(self, acts, s1)}, n)
        a2 = Channel(self.layer2, self.index2, None, self.model).score({s2: tensor_at(self, acts, s2)}, n)
        t = torch.linspace(0.0, 1.0, n, dtype=a1.dtype, device=a1.device) if n > 1 else a1.new_zeros(1)
        return (1 - t) * a1 + t * a2


def channel_interpolate(layer1: str, index1: int, layer2: str, index2: int, *, model: str | None = None) -> Expr:
    """Interpolate across the batch from one channel to another (render with batch >= 2).

    Example:
        >>> channel_interpolate("layer3", 1, "layer4", 2)
        channel_interpolate('layer3', 1, 'layer4', 2)
    """
    return ChannelInterpolate(
        check_layer(layer1),
        check_index(index1, "index1"),
        check_layer(layer2),
        check_index(index2, "index2"),
        check_model(model),
    )



@frozen
class ClassLogit(LayerTerm):
    """A class logit of the model output (or of any (B, classes[, H, W]) layer)."""

    name = "class_logit"
    positional = ("label",)
    label: int | str
    layer: str = OUTPUT
    batch: Batch = None
    model: str | None = None
    layout: str | None = None  # einops pattern of the activation, when the plan should not detect it

    def score(self, acts: Acts, n: int) -> Tensor:
        site, a = self.read(acts)
        if not isinstance(self.label, int):
            raise ObjectiveShapeError(
                f"{self!r}: label {self.label!r} was not resolved to an index; compile a plan first"
            )
        cp = rows_channels_positions(self, site, a)
        check_channel(self, site, self.label, cp.shape[1])
        return per_image(self, cp[:, self.label].mean(-1), n, self.batch)

    def bind(self, info: Any) -> ClassLogit:
        """This term with a label name replaced by its index in the model's labels."""
        return self.resolve(info.labels)

    def resolve(self, labels: Sequence[str] | None) -> ClassLogit:
        """This term with a label name replaced by its index in `labels`."""
        if isinstance(self.label, int):
            return self
        if not labels:
            raise InvalidArgumentError(
                f"{self!r} names class {self.label!r}, but the model has no labels; use the class index, "
                "or attach labels with lucent_dsl.with_info(model, ModelInfo(labels=...))"
            )
        lowered = [lab.lower() for lab in labels]
        if self.label.lower() in lowered:
            return dc.replace(self, label=lowered.index(self.label.lower()))
        # Labels that list synonyms ("goldfish, Carassius auratus": Hugging Face's ImageNet id2label) match any of them.
        named = [i for i, lab in enumerate(lowered) if self.label.lower() in (p.strip() for p in lab.split(","))]
        if len(named) == 1:
            return dc.replace(self, label=named[0])
        if named:
            listed = ", ".join(f"{i} ({labels[i]!r})" for i in named)
            raise InvalidArgumentError(f"{self!r}: {len(named)} classes are called {self.label!r}: {listed}; give the "
                                       "index or the full name")
        names = {part.strip(): i for i, lab in enumerate(lowered) for part in (lab, *lab.split(","))}
        close = difflib.get_close_matches(self.label.lower(), list(names), n=5, cutoff=0.5)
        found = list(dict.fromkeys(names[c] for c in close))
        hint = f" Did you mean: {', '.join(repr(labels[i]) for i in found)}?" if found else ""
        raise InvalidArgumentError(f"{self!r}: the model has no class named {self.label!r}.{hint}")


def class_logit(
    label: int | str, *, layer: str = OUTPUT, batch: Batch = None, model: str | None = None, layout: str | None = None
) -> Expr:
    """The logit of class `label` (an index, or a name when the model carries labels).

    Example:
        >>> class_logit("flamingo", model="effnet")
        class_logit('flamingo', model='effnet')
    """
    if isinstance(label, str):
        if not label:
            raise InvalidArgumentError("class label must be a non-empty name or an index")
    else:
        label = check_index(label, "class index")
    return ClassLogit(label, check_layer(layer), check_batch(batch), check_model(model), check_layout(layout))
