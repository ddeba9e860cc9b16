"""The vocabulary: one frozen `Term` node and one lowercase factory per objective.

Every term scores each image of a render separately (a tensor of shape `(n,)`); `batch=` (an int
or a range) restricts a term to some images, the others score 0. `model=` names a model of an
ensemble (`None`: the only model).

Activation layouts are recognised by rank, and every term says which axis is the channel:

==========  ===================  ===============  =================================
rank        layout               channel axis     positions
==========  ===================  ===============  =================================
4           (B, C, H, W) maps    1                H x W; `neuron` x/y = column/row
3           (B, T, C) tokens     2 (last)         T tokens; `neuron` x/y on the patch
                                                  grid (square, optional CLS first)
2           (B, C) vectors       1                one
==========  ===================  ===============  =================================

Any other rank raises `ObjectiveShapeError` instead of silently indexing the wrong axis.

Example:
    >>> e = channel("layer4", 12) + 0.5 * neuron("layer3", 5) - 0.1 * diversity("layer4")
    >>> e
    channel('layer4', 12) + 0.5 * neuron('layer3', 5) - 0.1 * diversity('layer4')
"""
from __future__ import annotations

import dataclasses as dc
import difflib
import math
import numbers
import operator
from collections.abc import Sequence
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import InvalidArgumentError, ObjectiveShapeError
from .expr import IMAGE, OUTPUT, Acts, Array, Expr, Site, Term, finite, register

Batch = int | range | None
frozen = dc.dataclass(frozen=True, slots=True, repr=False)


# --- argument checks ------------------------------------------------------------------------


def _index(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise InvalidArgumentError(f"{what} must be a non-negative int, got {v!r} ({type(v).__name__})")
    i = operator.index(v)
    if i < 0:
        raise InvalidArgumentError(f"{what} must be a non-negative int, got {i}")
    return i


def _opt_index(v: Any, what: str) -> int | None:
    return None if v is None else _index(v, what)


def _batch(v: Any) -> Batch:
    if v is None:
        return None
    if isinstance(v, range):
        if not v or v.start < 0 or v.stop < 0:  # not len(v): it overflows for huge ranges
            raise InvalidArgumentError(f"batch={v!r} must be a non-empty range of non-negative indices")
        return v
    return _index(v, "batch")


def _layer(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise InvalidArgumentError(f"a layer name must be a non-empty string such as 'layer4' or 'features.14', got {v!r}")
    return v


def _model(v: Any) -> str | None:
    if v is not None and (not isinstance(v, str) or not v):
        raise InvalidArgumentError(f"model= must be a model name (a string) or None, got {v!r}")
    return v


def _vector(v: Any, what: str) -> tuple[float, ...]:
    if isinstance(v, (str, bytes)) or not hasattr(v, "__len__") and not isinstance(v, Tensor):
        raise InvalidArgumentError(f"{what} must be a sequence of numbers or a 1-D tensor, got {v!r}")
    if isinstance(v, Tensor):
        if v.dim() != 1:
            raise InvalidArgumentError(f"{what} must be 1-D, got a tensor of shape {tuple(v.shape)}")
        v = v.detach().cpu().tolist()
    out = tuple(finite(x, f"each value of {what}") for x in v)
    if not out:
        raise InvalidArgumentError(f"{what} must not be empty")
    return out


def _target(v: Any) -> Array | float:
    if isinstance(v, Array) or isinstance(v, Tensor) or isinstance(v, (list, tuple)):
        return Array.of(v)
    return finite(v, "target")


# --- shared tensor helpers (plain Python checks: free under torch.compile) ---------------------------


def _act(term: Term, acts: Acts, site: Site) -> Tensor:
    a = acts[site]
    if not isinstance(a, Tensor):
        raise ObjectiveShapeError(
            f"{term!r} reads {site}, whose output is a {type(a).__name__}, not a tensor; "
            f"select an entry with '/key' or '/index', e.g. '{site.layer}/0' or '{site.layer}/out'"
        )
    return a


def _layout(term: Term, site: Site, a: Tensor) -> str:
    layouts = {4: "maps", 3: "tokens", 2: "vectors"}
    if a.dim() not in layouts:
        raise ObjectiveShapeError(
            f"{term!r} reads {site} with activation shape {tuple(a.shape)}; supported layouts are "
            "(B, C, H, W) feature maps, (B, tokens, C) sequences and (B, C) vectors"
        )
    return layouts[a.dim()]


def _cp(term: Term, site: Site, a: Tensor) -> Tensor:
    """Activations as (rows, channels, positions), whatever the layout."""
    kind = _layout(term, site, a)
    if kind == "maps":
        return a.flatten(2)
    if kind == "tokens":
        return a.transpose(1, 2)
    return a.unsqueeze(-1)


def _check_channel(term: Term, site: Site, index: int, channels: int) -> None:
    if index >= channels:
        raise ObjectiveShapeError(f"{term!r}: layer {site} has {channels} channels (0..{channels - 1}), not index {index}")


def _check_len(term: Term, site: Site, n: int, channels: int, what: str) -> None:
    if n != channels:
        raise ObjectiveShapeError(f"{term!r}: {what} has {n} values but layer {site} has {channels} channels")


def per_image(term: Term, rows: Tensor, n: int, batch: Batch) -> Tensor:
    """Per-row scores (R,) -> per-image scores (n,): average the crops of each image, mask by batch.

    Rows are crop-major: row k*n + b is crop k of image b.
    """
    r = rows.shape[0]
    if r % n or not r:  # no rows at all: the mean below would be NaN
        raise ObjectiveShapeError(f"{term!r}: the activation has {r} rows, which is not a multiple of the {n} image(s)")
    v = rows.reshape(r // n, n).mean(0) if r != n else rows
    if batch is None:
        return v
    last = batch if isinstance(batch, int) else max(batch[0], batch[-1])  # O(1), even for range(10**9)
    if last >= n:
        raise ObjectiveShapeError(f"{term!r} selects image {last} but the render has {n} image(s) (0..{n - 1})")
    mask = torch.zeros(n, dtype=v.dtype, device=v.device)
    mask[[batch] if isinstance(batch, int) else list(batch)] = 1.0
    return v * mask


def _check_rows_of(term: Term, site: Site, a: Tensor, n: int) -> None:
    """Terms that compare the images of a batch need every image's rows (crop-major, see `per_image`)."""
    r = a.shape[0]
    if r < n or r % n:
        raise ObjectiveShapeError(
            f"{term!r}: {site} has {r} rows, which is not a multiple of the {n} image(s) of the render"
        )


def _grid(term: Term, site: Site, tokens: int) -> tuple[int, int, int]:
    """(offset, rows, cols) of the square patch grid inside a token sequence (CLS tokens first)."""
    for offset in (0, 1):
        side = math.isqrt(tokens - offset)
        if side * side == tokens - offset and side > 0:
            return offset, side, side
    raise ObjectiveShapeError(
        f"{term!r}: {site} has {tokens} tokens, which is not a square patch grid (with or without one "
        "CLS token); give token= to pick a token directly"
    )


def _position(term: Term, site: Site, a: Tensor, x: int | None, y: int | None, token: int | None) -> tuple:
    """An index that picks one spatial position of every row and channel: a[:, :, pos] of _cp."""
    kind = _layout(term, site, a)
    if kind == "vectors":
        if x is not None or y is not None or token is not None:
            raise ObjectiveShapeError(f"{term!r}: {site} holds (B, C) vectors, which have no x/y position")
        return 0
    if kind == "tokens":
        t = a.shape[1]
        if token is not None:
            if x is not None or y is not None:
                raise InvalidArgumentError(f"{term!r}: give either token= or x/y, not both")
            if token >= t:
                raise ObjectiveShapeError(f"{term!r}: {site} has {t} tokens (0..{t - 1}), not token {token}")
            return token
        offset, h, w = _grid(term, site, t)
    else:
        if token is not None:
            raise ObjectiveShapeError(f"{term!r}: token= applies to (B, tokens, C) sequences; {site} is a feature map")
        offset, h, w = 0, a.shape[2], a.shape[3]
    xx = w // 2 if x is None else x
    yy = h // 2 if y is None else y
    if xx >= w or yy >= h:
        raise ObjectiveShapeError(f"{term!r}: position x={xx}, y={yy} is outside {site}'s {h}x{w} map (x < {w}, y < {h})")
    return offset + yy * w + xx


def _dot_cos(x: Tensor, y: Tensor, power: float) -> Tensor:
    """Lucid's dot(x, y) * max(cos(x, y), 0.1)**power along dim 1."""
    dot = (x * y).sum(1)
    if power == 0:
        return dot
    cos = dot / (x.norm(dim=1) + 1e-6) / (y.norm(dim=1) + 1e-6)
    return dot * cos.clamp(min=0.1) ** power


# --- layer terms ----------------------------------------------------------------------------------


class LayerTerm(Term):
    """A term that reads one layer of one model."""

    __slots__ = ()

    def sites(self) -> tuple[Site, ...]:
        return (Site(self.model, self.layer),)  # type: ignore[attr-defined]

    def read(self, acts: Acts) -> tuple[Site, Tensor]:
        site = self.sites()[0]
        a = _act(self, acts, site)
        # Without these checks, integer maps fail deep inside torch's mean() and empty ones score NaN.
        if not a.is_floating_point() or a.layout != torch.strided:
            raise ObjectiveShapeError(
                f"{self!r} reads {site}, whose output holds {a.dtype} values"
                f"{'' if a.layout == torch.strided else f' ({a.layout})'}; objectives need dense floating-point "
                "activations: pick a layer that outputs features, not indices or masks"
            )
        if a.numel() == 0:
            raise ObjectiveShapeError(f"{self!r} reads {site}, whose output is empty (shape {tuple(a.shape)})")
        return site, a


@frozen
class Channel(LayerTerm):
    """Mean activation of one channel."""

    name = "channel"
    positional = ("layer", "index")
    layer: str
    index: int
    batch: Batch = None
    model: str | None = None

    def score(self, acts: Acts, n: int) -> Tensor:
        site, a = self.read(acts)
        cp = _cp(self, site, a)
        _check_channel(self, site, self.index, cp.shape[1])
        return per_image(self, cp[:, self.index].mean(-1), n, self.batch)


def channel(layer: str, index: int, *, batch: Batch = None, model: str | None = None) -> Expr:
    """Mean activation of channel `index` of `layer` (over positions or tokens).

    Example:
        >>> channel("features.14", 10, batch=0)
        channel('features.14', 10, batch=0)
    """
    return Channel(_layer(layer), _index(index, "channel index"), _batch(batch), _model(model))


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

    def score(self, acts: Acts, n: int) -> Tensor:
        site, a = self.read(acts)
        cp = _cp(self, site, a)
        _check_channel(self, site, self.index, cp.shape[1])
        pos = _position(self, site, a, self.x, self.y, self.token)
        return per_image(self, cp[:, self.index, pos], n, self.batch)


def neuron(layer: str, index: int, *, x: int | None = None, y: int | None = None, token: int | None = None,
           batch: Batch = None, model: str | None = None) -> Expr:
    """Activation of channel `index` at column `x`, row `y` (default: the centre, W//2 and H//2).

    On (B, tokens, C) sequences x/y index the square patch grid (after a CLS token if there is one)
    and `token=` picks a token directly (`token=0`: the CLS token).

    Example:
        >>> neuron("layer3", 5, x=2)
        neuron('layer3', 5, x=2)
    """
    return Neuron(_layer(layer), _index(index, "channel index"), _opt_index(x, "x"), _opt_index(y, "y"),
                  _opt_index(token, "token"), _batch(batch), _model(model))


@frozen
class Layer(LayerTerm):
    """Mean of squared activations of a whole layer (DeepDream)."""

    name = "layer"
    positional = ("layer",)
    layer: str
    batch: Batch = None
    model: str | None = None

    def score(self, acts: Acts, n: int) -> Tensor:
        site, a = self.read(acts)
        _layout(self, site, a)
        return per_image(self, a.pow(2).flatten(1).mean(1), n, self.batch)


def layer(layer: str, *, batch: Batch = None, model: str | None = None) -> Expr:
    """Mean of squared activations of `layer` (`deepdream` is the same objective).

    Example:
        >>> deepdream("layer3") == layer("layer3")
        True
    """
    return Layer(_layer(layer), _batch(batch), _model(model))


deepdream = layer


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

    def score(self, acts: Acts, n: int) -> Tensor:
        site, a = self.read(acts)
        cp = _cp(self, site, a)
        _check_len(self, site, len(self.vector), cp.shape[1], "the direction vector")
        v = torch.tensor(self.vector, dtype=cp.dtype, device=cp.device).view(1, -1, 1)
        return per_image(self, _dot_cos(cp, v, self.cossim_pow).mean(-1), n, self.batch)


def direction(layer: str, vector: Sequence[float] | Tensor, *, cossim_pow: float = 0.0, batch: Batch = None,
              model: str | None = None) -> Expr:
    """Activation along `vector` in channel space: dot * max(cos, 0.1)**cossim_pow, mean over positions.

    Example:
        >>> direction("layer2", [1.0, 0.0, -1.0], cossim_pow=1)
        direction('layer2', (1.0, 0.0, -1.0), cossim_pow=1.0)
    """
    return Direction(_layer(layer), _vector(vector, "the direction vector"), finite(cossim_pow, "cossim_pow"),
                     _batch(batch), _model(model))


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

    def score(self, acts: Acts, n: int) -> Tensor:
        site, a = self.read(acts)
        cp = _cp(self, site, a)
        _check_len(self, site, len(self.vector), cp.shape[1], "the direction vector")
        pos = _position(self, site, a, self.x, self.y, self.token)
        v = torch.tensor(self.vector, dtype=cp.dtype, device=cp.device).view(1, -1)
        return per_image(self, _dot_cos(cp[:, :, pos], v, self.cossim_pow), n, self.batch)


def direction_neuron(layer: str, vector: Sequence[float] | Tensor, *, x: int | None = None, y: int | None = None,
                     token: int | None = None, cossim_pow: float = 0.0, batch: Batch = None,
                     model: str | None = None) -> Expr:
    """`direction` at one position (default: the centre).

    Example:
        >>> direction_neuron("layer2", [1, 2], x=0, y=0)
        direction_neuron('layer2', (1.0, 2.0), x=0, y=0)
    """
    return DirectionNeuron(_layer(layer), _vector(vector, "the direction vector"), _opt_index(x, "x"),
                           _opt_index(y, "y"), _opt_index(token, "token"), finite(cossim_pow, "cossim_pow"),
                           _batch(batch), _model(model))


@frozen
class ChannelWeight(LayerTerm):
    """Mean over channels and positions of activation * per-channel weight (lucent's `channel_weight`)."""

    name = "channel_weight"
    positional = ("layer", "weights")
    layer: str
    weights: tuple[float, ...]
    batch: Batch = None
    model: str | None = None

    def score(self, acts: Acts, n: int) -> Tensor:
        site, a = self.read(acts)
        cp = _cp(self, site, a)
        _check_len(self, site, len(self.weights), cp.shape[1], "the weights")
        w = torch.tensor(self.weights, dtype=cp.dtype, device=cp.device).view(1, -1, 1)
        return per_image(self, (cp * w).mean((1, 2)), n, self.batch)


def channel_weight(layer: str, weights: Sequence[float] | Tensor, *, batch: Batch = None,
                   model: str | None = None) -> Expr:
    """Weighted channels: mean of activation * weight[channel].

    Example:
        >>> channel_weight("conv", [0.5, -1.0])
        channel_weight('conv', (0.5, -1.0))
    """
    return ChannelWeight(_layer(layer), _vector(weights, "the weights"), _batch(batch), _model(model))


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

    def score(self, acts: Acts, n: int) -> Tensor:
        site, a = self.read(acts)
        cp = _cp(self, site, a)
        _check_len(self, site, len(self.weights), cp.shape[1], "the weights")
        pos = _position(self, site, a, self.x, self.y, self.token)
        w = torch.tensor(self.weights, dtype=cp.dtype, device=cp.device).view(1, -1)
        return per_image(self, (cp[:, :, pos] * w).mean(1), n, self.batch)


def neuron_weight(layer: str, weights: Sequence[float] | Tensor, *, x: int | None = None, y: int | None = None,
                  token: int | None = None, batch: Batch = None, model: str | None = None) -> Expr:
    """Weighted channels at one position (default: the centre).

    Example:
        >>> neuron_weight("conv", [1, 0], y=1)
        neuron_weight('conv', (1.0, 0.0), y=1)
    """
    return NeuronWeight(_layer(layer), _vector(weights, "the weights"), _opt_index(x, "x"), _opt_index(y, "y"),
                        _opt_index(token, "token"), _batch(batch), _model(model))


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
        a1 = Channel(self.layer1, self.index1, None, self.model).score({s1: _act(self, acts, s1)}, n)
        a2 = Channel(self.layer2, self.index2, None, self.model).score({s2: _act(self, acts, s2)}, n)
        t = torch.linspace(0.0, 1.0, n, dtype=a1.dtype, device=a1.device) if n > 1 else a1.new_zeros(1)
        return (1 - t) * a1 + t * a2


def channel_interpolate(layer1: str, index1: int, layer2: str, index2: int, *, model: str | None = None) -> Expr:
    """Interpolate across the batch from one channel to another (render with batch >= 2).

    Example:
        >>> channel_interpolate("layer3", 1, "layer4", 2)
        channel_interpolate('layer3', 1, 'layer4', 2)
    """
    return ChannelInterpolate(_layer(layer1), _index(index1, "index1"), _layer(layer2), _index(index2, "index2"),
                              _model(model))


@frozen
class Alignment(LayerTerm):
    """Penalty: squared distance between the activations of neighbouring images, decaying with distance."""

    name = "alignment"
    positional = ("layer",)
    layer: str
    decay_ratio: float = 2.0
    model: str | None = None

    def score(self, acts: Acts, n: int) -> Tensor:
        site, a = self.read(acts)
        _layout(self, site, a)
        _check_rows_of(self, site, a, n)
        a = a[:n]  # the first crop of each image
        out = a.new_zeros(n)
        for d in range(1, min(5, n)):
            dist = (a[:-d] - a[d:]).pow(2).flatten(1).mean(1) / self.decay_ratio**d
            out = out + F.pad(dist, (0, d)) / 2 + F.pad(dist, (d, 0)) / 2
        return out


def alignment(layer: str, *, decay_ratio: float = 2.0, model: str | None = None) -> Expr:
    """Penalty (subtract it) that keeps neighbouring images of a batch alike at `layer`.

    Example:
        >>> alignment("layer3", decay_ratio=3)
        alignment('layer3', decay_ratio=3.0)
    """
    ratio = finite(decay_ratio, "decay_ratio")
    if ratio <= 0:
        raise InvalidArgumentError(f"decay_ratio must be positive, got {ratio}")
    return Alignment(_layer(layer), ratio, _model(model))


@frozen
class Diversity(LayerTerm):
    """Similarity (a penalty: subtract it): mean cosine similarity of each image's Gram matrix with the others'."""

    name = "diversity"
    positional = ("layer",)
    layer: str
    model: str | None = None

    def score(self, acts: Acts, n: int) -> Tensor:
        site, a = self.read(acts)
        cp = _cp(self, site, a)
        _check_rows_of(self, site, a, n)
        cp = cp[:n]
        if n < 2:
            return cp.new_zeros(n)
        gram = torch.bmm(cp, cp.transpose(1, 2)).flatten(1)
        gram = F.normalize(gram, dim=1)
        sim = gram @ gram.T
        return (sim.sum(1) - sim.diagonal()) / (n - 1)


def diversity(layer: str, *, model: str | None = None) -> Expr:
    """How alike the images of a batch are at `layer` (Gram-matrix cosine similarity); subtract it.

    Example:
        >>> channel("layer4", 3) - 0.1 * diversity("layer4")
        channel('layer4', 3) - 0.1 * diversity('layer4')
    """
    return Diversity(_layer(layer), _model(model))


@frozen
class ClassLogit(LayerTerm):
    """A class logit of the model output (or of any (B, classes[, H, W]) layer)."""

    name = "class_logit"
    positional = ("label",)
    label: int | str
    layer: str = OUTPUT
    batch: Batch = None
    model: str | None = None

    def score(self, acts: Acts, n: int) -> Tensor:
        site, a = self.read(acts)
        if not isinstance(self.label, int):
            raise ObjectiveShapeError(f"{self!r}: label {self.label!r} was not resolved to an index; compile a plan first")
        cp = _cp(self, site, a)
        _check_channel(self, site, self.label, cp.shape[1])
        return per_image(self, cp[:, self.label].mean(-1), n, self.batch)

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
        close = difflib.get_close_matches(self.label.lower(), lowered, n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(repr(labels[lowered.index(c)]) for c in close)}?" if close else ""
        raise InvalidArgumentError(f"{self!r}: the model has no class named {self.label!r}.{hint}")


def class_logit(label: int | str, *, layer: str = OUTPUT, batch: Batch = None, model: str | None = None) -> Expr:
    """The logit of class `label` (an index, or a name when the model carries labels).

    Example:
        >>> class_logit("flamingo", model="effnet")
        class_logit('flamingo', model='effnet')
    """
    if isinstance(label, str):
        if not label:
            raise InvalidArgumentError("class label must be a non-empty name or an index")
    else:
        label = _index(label, "class index")
    return ClassLogit(label, _layer(layer), _batch(batch), _model(model))


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

    def score(self, acts: Acts, n: int) -> Tensor:
        site, a = self.read(acts)
        cp = _cp(self, site, a)
        t = self.target.tensor.to(device=cp.device, dtype=cp.dtype)
        if t.dim() == a.dim() - 1:
            t = t.unsqueeze(0)
        if t.dim() != a.dim() or t.shape[1:] != a.shape[1:] or t.shape[0] not in (1, n, a.shape[0]):
            raise ObjectiveShapeError(
                f"activation_match on {site}: target shape {tuple(self.target.shape)} does not fit activations "
                f"of shape {tuple(a.shape)}; give one image's activations {tuple(a.shape[1:])} or one per image"
            )
        tcp = _cp(self, site, t)
        if tcp.shape[0] not in (1, cp.shape[0]):
            tcp = tcp.repeat(cp.shape[0] // tcp.shape[0], 1, 1)
        return per_image(self, _dot_cos(cp, tcp, self.cossim_pow).mean(-1), n, self.batch)


def activation_match(layer: str, target: Any, *, cossim_pow: float = 1.0, batch: Batch = None,
                     model: str | None = None) -> Expr:
    """Match `target` activations at `layer`: dot * max(cos, 0.1)**cossim_pow over channels, mean over positions.

    `target` is one image's activations (without the batch axis) or one per image.

    Example:
        >>> import torch
        >>> activation_match("fc", torch.tensor([1.0, 2.0]))
        activation_match('fc', tensor([1.0, 2.0], shape=(2,)))
    """
    return ActivationMatch(_layer(layer), Array.of(target), finite(cossim_pow, "cossim_pow"), _batch(batch),
                           _model(model))


# --- penalties on the image (or on any layer) -------------------------------------------------------


class ImageTerm(LayerTerm):
    """A penalty that reads the rendered image by default (`layer="@image"`), or any layer."""

    __slots__ = ()

    def sites(self) -> tuple[Site, ...]:
        return (Site(None if self.layer == IMAGE else self.model, self.layer),)  # type: ignore[attr-defined]


def _need_maps(term: Term, site: Site, a: Tensor) -> None:
    if a.dim() != 4:
        raise ObjectiveShapeError(f"{term!r} needs (B, C, H, W) images or maps, {site} has shape {tuple(a.shape)}")


def _penalty_layer(layer: str, model: str | None) -> tuple[str, str | None]:
    layer = _layer(layer)
    if layer == IMAGE and model is not None:
        raise InvalidArgumentError(f"the rendered image ({IMAGE!r}) belongs to no model; drop model={model!r}")
    return layer, _model(model)


@frozen
class TotalVariation(ImageTerm):
    """Penalty: mean absolute difference between neighbouring pixels."""

    name = "total_variation"
    layer: str = IMAGE
    batch: Batch = None
    model: str | None = None

    def score(self, acts: Acts, n: int) -> Tensor:
        site, a = self.read(acts)
        _need_maps(self, site, a)
        # A map one pixel wide (or high) has no neighbours that way: 0, not the NaN of an empty mean.
        dx = (a[..., :, 1:] - a[..., :, :-1]).abs().flatten(1).mean(1) if a.shape[3] > 1 else a.new_zeros(a.shape[0])
        dy = (a[..., 1:, :] - a[..., :-1, :]).abs().flatten(1).mean(1) if a.shape[2] > 1 else a.new_zeros(a.shape[0])
        return per_image(self, dx + dy, n, self.batch)


def total_variation(*, layer: str = IMAGE, batch: Batch = None, model: str | None = None) -> Expr:
    """Penalty (subtract it): total variation of the rendered image (mean |dx| + mean |dy|).

    Example:
        >>> channel("conv", 1) - 0.01 * total_variation()
        channel('conv', 1) - 0.01 * total_variation()
    """
    layer, model = _penalty_layer(layer, model)
    return TotalVariation(layer, _batch(batch), model)


@frozen
class L1(ImageTerm):
    """Penalty: mean |x - target| (`L2`: mean (x - target)^2)."""

    name = "l1"
    power: ClassVar[int] = 1
    layer: str = IMAGE
    target: float | Array = 0.0
    batch: Batch = None
    model: str | None = None

    def score(self, acts: Acts, n: int) -> Tensor:
        site, a = self.read(acts)
        _check_rows(self, site, a)
        distance = (a - _broadcast(self, site, a, self.target)).abs().pow(self.power)
        return per_image(self, distance.flatten(1).mean(1), n, self.batch)


@frozen
class L2(L1):
    """Penalty: mean (x - target)^2."""

    name = "l2"
    power: ClassVar[int] = 2


def _check_rows(term: Term, site: Site, a: Tensor) -> None:
    if a.dim() < 2:
        raise ObjectiveShapeError(f"{term!r} needs a batch axis and at least one more; {site} has shape {tuple(a.shape)}")


def _broadcast(term: Term, site: Site, a: Tensor, target: float | Array) -> Tensor | float:
    if not isinstance(target, Array):
        return target
    t = target.tensor.to(device=a.device, dtype=a.dtype)
    if t.dim() == a.dim() - 1:
        t = t.unsqueeze(0)
    if t.dim() != a.dim() or t.shape[1:] != a.shape[1:] or a.shape[0] % t.shape[0]:
        raise ObjectiveShapeError(f"{term!r}: target shape {tuple(t.shape)} does not fit {site} of shape {tuple(a.shape)}")
    return t.repeat(a.shape[0] // t.shape[0], *([1] * (a.dim() - 1)))


def l1(*, layer: str = IMAGE, target: Any = 0.0, batch: Batch = None, model: str | None = None) -> Expr:
    """Penalty (subtract it): mean absolute distance of the image (or `layer`) from `target`.

    Example:
        >>> l1(target=0.5)
        l1(target=0.5)
    """
    layer, model = _penalty_layer(layer, model)
    return L1(layer, _target(target), _batch(batch), model)


def l2(*, layer: str = IMAGE, target: Any = 0.0, batch: Batch = None, model: str | None = None) -> Expr:
    """Penalty (subtract it): mean squared distance of the image (or `layer`) from `target`.

    Used by feature accentuation: stay close to a natural image, or to its activations.

    Example:
        >>> l2(layer="layer2", target=1.0, model="a")
        l2(layer='layer2', target=1.0, model='a')
    """
    layer, model = _penalty_layer(layer, model)
    return L2(layer, _target(target), _batch(batch), model)


@frozen
class Blur(ImageTerm):
    """Penalty: squared distance of the image to its own 3x3 box blur (blurred copy held constant)."""

    name = "blur"
    layer: str = IMAGE
    batch: Batch = None
    model: str | None = None

    def score(self, acts: Acts, n: int) -> Tensor:
        site, a = self.read(acts)
        _need_maps(self, site, a)
        c = a.shape[1]
        kernel = torch.full((c, 1, 3, 3), 1 / 9, dtype=a.dtype, device=a.device)
        blurred = F.conv2d(F.pad(a, (1, 1, 1, 1), mode="replicate"), kernel, groups=c).detach()
        return per_image(self, (a - blurred).pow(2).flatten(1).mean(1), n, self.batch)


def blur(*, layer: str = IMAGE, batch: Batch = None, model: str | None = None) -> Expr:
    """Penalty (subtract it): how far the image is from its blurred self (Lucid's blur_input_each_step).

    Example:
        >>> channel("conv", 0) - blur()
        channel('conv', 0) - blur()
    """
    layer, model = _penalty_layer(layer, model)
    return Blur(layer, _batch(batch), model)


VOCABULARY_FACTORIES: dict[str, Callable[..., Expr]] = {
    "channel": channel, "neuron": neuron, "layer": layer, "deepdream": deepdream, "direction": direction,
    "direction_neuron": direction_neuron, "channel_weight": channel_weight, "neuron_weight": neuron_weight,
    "channel_interpolate": channel_interpolate, "alignment": alignment, "diversity": diversity,
    "class_logit": class_logit, "activation_match": activation_match, "total_variation": total_variation,
    "l1": l1, "l2": l2, "blur": blur,
}
for _name, _factory in VOCABULARY_FACTORIES.items():
    register(_name, _factory)
