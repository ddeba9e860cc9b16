"""Terms that read a direction in activation space: direction, direction_neuron, channel_weight,
neuron_weight, activation_match.

`direction` and `direction_neuron` are Lucid's (dot * cos^cossim_pow); `cosine=True` makes them lucent's
(the cosine similarity alone, which ignores how strongly the layer fires).

Example:
    >>> direction("layer4", [1.0, 0.0, -1.0])
    direction('layer4', (1.0, 0.0, -1.0))
    >>> direction("layer4", [1.0, 0.0, -1.0], cosine=True)
    direction('layer4', (1.0, 0.0, -1.0), cosine=True)
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..dsl.expr import Acts, Array, Expr, finite
from ..errors import InvalidArgumentError, ObjectiveShapeError
from ._term import (
    Batch,
    LayerTerm,
    check_batch,
    check_layer,
    check_layout,
    check_len,
    check_model,
    check_opt_index,
    check_vector,
    dot_cos,
    frozen,
    patch_positions,
    per_image,
    position_index,
    rows_channels_positions,
)


@frozen
class Direction(LayerTerm):
    """dot(activation, vector) * cos^power, averaged over positions (Lucid's `direction`)."""

    name = "direction"
    positional = ("layer", "vector")
    layer: str
    vector: tuple[float, ...]
    cossim_pow: float = 0.0
    batch: Batch = None
    model: str | None = None
    layout: str | None = None  # einops pattern of the activation, when the plan should not detect it
    cosine: bool = False  # lucent's direction: the cosine similarity alone

    def score(self, acts: Acts, n: int) -> Tensor:
        site, a = self.read(acts)
        cp = patch_positions(self, site, a)
        check_len(self, site, len(self.vector), cp.shape[1], "the direction vector")
        v = torch.tensor(self.vector, dtype=cp.dtype, device=cp.device).view(1, -1, 1)
        along = cosine_similarity(cp, v) if self.cosine else dot_cos(cp, v, self.cossim_pow)
        return per_image(self, along.mean(-1), n, self.batch)


def cosine_similarity(x: Tensor, y: Tensor) -> Tensor:
    """The cosine similarity along dim 1, as lucent's `direction` computes it (torch.nn.CosineSimilarity)."""
    return torch.nn.functional.cosine_similarity(x, y, dim=1)


def check_cosine(cosine: Any, cossim_pow: float) -> bool:
    if not isinstance(cosine, bool):
        raise InvalidArgumentError(f"cosine= must be True or False, got {cosine!r}")
    if cosine and cossim_pow != 0:
        raise InvalidArgumentError(
            f"cosine=True scores the cosine similarity alone; cossim_pow={cossim_pow} weighs the dot product by a "
            "power of it (Lucid's direction): give one or the other"
        )
    return cosine


def direction(layer: str, vector: Sequence[float] | Tensor, *, cossim_pow: float = 0.0, batch: Batch = None,
              model: str | None = None, layout: str | None = None, cosine: bool = False) -> Expr:
    """Activation along `vector` in channel space: dot * max(cos, 0.1)**cossim_pow, mean over positions.

    This is Lucid's `direction` (and `direction_cossim`, the same function there). lucent's `direction` is
    the cosine similarity alone, mean over positions: `cosine=True`.

    Example:
        >>> direction("layer2", [1.0, 0.0, -1.0], cossim_pow=1)
        direction('layer2', (1.0, 0.0, -1.0), cossim_pow=1.0)
    """
    power = finite(cossim_pow, "cossim_pow")
    return Direction(check_layer(layer), check_vector(vector, "the direction vector"), power,
                     check_batch(batch), check_model(model), check_layout(layout), check_cosine(cosine, power))


@frozen
class DirectionNeuron(LayerTerm):
    """`direction` at one position."""

    name = "direction_neuron"
    positional = ("layer", "vector")
    layer: str
    vector: tuple[float, ...]
    x: int | None = None
    y: int | None = None
    token: int | None = None
    cossim_pow: float = 0.0
    batch: Batch = None
    model: str | None = None
    layout: str | None = None  # einops pattern of the activation, when the plan should not detect it
    cosine: bool = False  # lucent's direction_neuron: the cosine similarity alone

    def score(self, acts: Acts, n: int) -> Tensor:
        site, a = self.read(acts)
        cp = rows_channels_positions(self, site, a)
        check_len(self, site, len(self.vector), cp.shape[1], "the direction vector")
        pos = position_index(self, site, a, self.x, self.y, self.token)
        v = torch.tensor(self.vector, dtype=cp.dtype, device=cp.device).view(1, -1)
        at = cp[:, :, pos]
        along = cosine_similarity(at, v) if self.cosine else dot_cos(at, v, self.cossim_pow)
        return per_image(self, along, n, self.batch)


def direction_neuron(layer: str, vector: Sequence[float] | Tensor, *, x: int | None = None, y: int | None = None,
                     token: int | None = None, cossim_pow: float = 0.0, batch: Batch = None,
                     model: str | None = None, layout: str | None = None, cosine: bool = False) -> Expr:
    """`direction` at one position (default: the centre); `cosine=True`: lucent's, the cosine similarity alone.

    Example:
        >>> direction_neuron("layer2", [1, 2], x=0, y=0)
        direction_neuron('layer2', (1.0, 2.0), x=0, y=0)
    """
    power = finite(cossim_pow, "cossim_pow")
    return DirectionNeuron(check_layer(layer), check_vector(vector, "the direction vector"), check_opt_index(x, "x"),
                           check_opt_index(y, "y"), check_opt_index(token, "token"), power,
                           check_batch(batch), check_model(model), check_layout(layout), check_cosine(cosine, power))


@frozen
class ChannelWeight(LayerTerm):
    """Mean over channels and positions of activation * per-channel weight (lucent's `channel_weight`)."""

    name = "channel_weight"
    positional = ("layer", "weights")
    layer: str
    weights: tuple[float, ...]
    batch: Batch = None
    model: str | None = None
    layout: str | None = None  # einops pattern of the activation, when the plan should not detect it

    def score(self, acts: Acts, n: int) -> Tensor:
        site, a = self.read(acts)
        cp = patch_positions(self, site, a)
        check_len(self, site, len(self.weights), cp.shape[1], "the weights")
        w = torch.tensor(self.weights, dtype=cp.dtype, device=cp.device).view(1, -1, 1)
        return per_image(self, (cp * w).mean((1, 2)), n, self.batch)


def channel_weight(layer: str, weights: Sequence[float] | Tensor, *, batch: Batch = None,
                   model: str | None = None, layout: str | None = None) -> Expr:
    """Weighted channels: mean of activation * weight[channel].

    Example:
        >>> channel_weight("conv", [0.5, -1.0])
        channel_weight('conv', (0.5, -1.0))
    """
    return ChannelWeight(
        check_layer(layer),
        check_vector(weights, "the weights"),
        check_batch(batch),
        check_model(model),
        check_layout(layout),
    )


@frozen
class NeuronWeight(LayerTerm):
    """`channel_weight` at one position."""

    name = "neuron_weight"
    positional = ("layer", "weights")
    layer: str
    weights: tuple[float, ...]
    x: int | None = None
    y: int | None = None
    token: int | None = None
    batch: Batch = None
    model: str | None = None
    layout: str | None = None  # einops pattern of the activation, when the plan should not detect it

    def score(self, acts: Acts, n: int) -> Tensor:
        site, a = self.read(acts)
        cp = rows_channels_positions(self, site, a)  # every token: position_index counts the prefix tokens too
        check_len(self, site, len(self.weights), cp.shape[1], "the weights")
        pos = position_index(self, site, a, self.x, self.y, self.token)
        w = torch.tensor(self.weights, dtype=cp.dtype, device=cp.device).view(1, -1)
        return per_image(self, (cp[:, :, pos] * w).mean(1), n, self.batch)


def neuron_weight(
    layer: str,
    weights: Sequence[float] | Tensor,
    *,
    x: int | None = None,
    y: int | None = None,
    token: int | None = None,
    batch: Batch = None,
    model: str | None = None,
    layout: str | None = None,
) -> Expr:
    """Weighted channels at one position (default: the centre).

    Example:
        >>> neuron_weight("conv", [1, 0], y=1)
        neuron_weight('conv', (1.0, 0.0), y=1)
    """
    return NeuronWeight(
        check_layer(layer),
        check_vector(weights, "the weights"),
        check_opt_index(x, "x"),
        check_opt_index(y, "y"),
        check_opt_index(token, "token"),
        check_batch(batch),
        check_model(model),
        check_layout(layout),
    )



@frozen
class ActivationMatch(LayerTerm):
    """dot(activation, target) * cos^power per position, mean over positions (Lucid's caricature objective)."""

    name = "activation_match"
    positional = ("layer", "target")
    layer: str
    target: Array
    cossim_pow: float = 1.0
    batch: Batch = None
    model: str | None = None
    layout: str | None = None  # einops pattern of the activation, when the plan should not detect it

    def score(self, acts: Acts, n: int) -> Tensor:
        site, a = self.read(acts)
        cp = rows_channels_positions(self, site, a)
        t = self.target.tensor.to(device=cp.device, dtype=cp.dtype)
        if t.dim() == a.dim() - 1:
            t = t.unsqueeze(0)
        if t.dim() != a.dim() or t.shape[1:] != a.shape[1:] or t.shape[0] not in (1, n, a.shape[0]):
            raise ObjectiveShapeError(
                f"activation_match on {site}: target shape {tuple(self.target.shape)} does not fit activations "
                f"of shape {tuple(a.shape)}; give one image's activations {tuple(a.shape[1:])} or one per image"
            )
        tcp = rows_channels_positions(self, site, t)
        if tcp.shape[0] not in (1, cp.shape[0]):
            tcp = tcp.repeat(cp.shape[0] // tcp.shape[0], 1, 1)
        return per_image(self, dot_cos(cp, tcp, self.cossim_pow).mean(-1), n, self.batch)


def activation_match(layer: str, target: Any, *, cossim_pow: float = 1.0, batch: Batch = None,
                     model: str | None = None, layout: str | None = None) -> Expr:
    """Match `target` activations at `layer`: dot * max(cos, 0.1)**cossim_pow over channels, mean over positions.

    `target` is one image's activations (without the batch axis) or one per image.

    Example:
        >>> import torch
        >>> activation_match("fc", torch.tensor([1.0, 2.0]))
        activation_match('fc', tensor([1.0, 2.0], shape=(2,)))
    """
    return ActivationMatch(check_layer(layer), Array.of(target), finite(cossim_pow, "cossim_pow"), check_batch(batch),
                           check_model(model), check_layout(layout))
