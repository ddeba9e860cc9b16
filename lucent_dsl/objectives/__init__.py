"""The vocabulary: one frozen `Term` node and one lowercase factory per objective, in one registry.

Every term scores each image of a render separately (a tensor of shape `(n,)`); `batch=` (an int
or a range) restricts a term to some images, the others score 0. `model=` names a model of an
ensemble (`None`: the only model).

Rooms: `activation` (units of a layer), `directions` (directions in activation space), `penalty`
(image and batch penalties), `masks` (spatial masks), `source` (paired renders), `gram` (`style`:
Gram-matrix match), `custom` (the `@objective` decorator). `_term` is the toolkit they share. A new built-in term goes
in the room
of its kind and gets one line in `BUILTINS` below; `parse`, JSON and the docs table then know it.
Room `text`: `clip_text`, the cosine with a prompt's embedding through a CLIP-like model's text tower.

Example:
    >>> e = channel("layer4", 12) + 0.5 * neuron("layer3", 5) - 0.1 * diversity("layer4")
    >>> e
    channel('layer4', 12) + 0.5 * neuron('layer3', 5) - 0.1 * diversity('layer4')
"""
from __future__ import annotations

from collections.abc import Callable

from ..dsl.expr import Expr, register
from ._term import Batch, LayerTerm, check_layer
from .activation import (
    Channel,
    ChannelInterpolate,
    ClassLogit,
    Layer,
    Neuron,
    channel,
    channel_interpolate,
    class_logit,
    deepdream,
    layer,
    neuron,
)
from .attribution import Facet, facet
from .batchnorm import BatchNormPrior, batchnorm_prior  # Python-only: it reads a model's BatchNorms (issue 27)
from .custom import Custom, objective
from .directions import (
    ActivationMatch,
    ChannelWeight,
    Direction,
    DirectionNeuron,
    NeuronWeight,
    activation_match,
    channel_weight,
    direction,
    direction_neuron,
    neuron_weight,
)
from .gram import style
from .masks import Masked, box_mask, masked
from .penalty import (
    L1,
    L2,
    Alignment,
    Blur,
    Diversity,
    ImageTerm,
    Opacity,
    TotalVariation,
    alignment,
    blur,
    diversity,
    l1,
    l2,
    opacity,
    total_variation,
)
from .source import SourceL2, SourceMatch, source_l2, source_match
from .text import ClipText, clip_text

BUILTINS: dict[str, Callable[..., Expr]] = {
    "channel": channel, "neuron": neuron, "layer": layer, "deepdream": deepdream, "direction": direction,
    "direction_neuron": direction_neuron, "channel_weight": channel_weight, "neuron_weight": neuron_weight,
    "channel_interpolate": channel_interpolate, "alignment": alignment, "diversity": diversity,
    "class_logit": class_logit, "activation_match": activation_match, "total_variation": total_variation,
    "l1": l1, "l2": l2, "blur": blur, "opacity": opacity, "masked": masked, "source_match": source_match,
    "source_l2": source_l2, "style": style,
}
BUILTINS["facet"] = facet  # objectives/attribution.py: faceted feature visualization (Goh et al. 2021)
BUILTINS["clip_text"] = clip_text  # objectives.text (CLIP-like models)
VOCABULARY_FACTORIES = BUILTINS  # the name the conformance tests use
for _name, _factory in BUILTINS.items():
    register(_name, _factory)

__all__ = [
    "ActivationMatch",
    "Alignment",
    "BUILTINS",
    "Batch",
    "Blur",
    "Channel",
    "ChannelInterpolate",
    "ChannelWeight",
    "check_layer",
    "ClassLogit",
    "ClipText",
    "Custom",
    "Direction",
    "DirectionNeuron",
    "Diversity",
    "ImageTerm",
    "L1",
    "L2",
    "Layer",
    "LayerTerm",
    "Masked",
    "Neuron",
    "NeuronWeight",
    "Opacity",
    "SourceL2",
    "SourceMatch",
    "TotalVariation",
    "VOCABULARY_FACTORIES",
    "activation_match",
    "alignment",
    "blur",
    "box_mask",
    "channel",
    "channel_interpolate",
    "channel_weight",
    "class_logit",
    "clip_text",
    "deepdream",
    "direction",
    "direction_neuron",
    "diversity",
    "l1",
    "l2",
    "layer",
    "masked",
    "neuron",
    "neuron_weight",
    "objective",
    "opacity",
    "source_l2",
    "source_match",
    "style",
    "total_variation",
    "Facet",
    "facet",
]
__all__ += ["BatchNormPrior", "batchnorm_prior"]
