"""Faceted feature visualization (Goh et al. 2021, "Multimodal Neurons in Artificial Neural Networks").

A unit that fires for several kinds of images (a face and its name, a shop front and its shelves)
is drawn towards one of them by a linear probe at an earlier layer, trained to tell the user's
images of that kind (the facet) from generic ones. Three parts, each usable alone:

- `train_probe(model, layer, facet_images, generic_images)`: logistic regression on the layer's
  activations, averaged over positions; full-batch L-BFGS in float64 from zeros, so the same images
  give the same probe. Returns a frozen `FacetProbe` (weights, bias, layer, the model's spec, the
  training accuracy and, with 5 or more images per set, the accuracy on a held-out fifth).
- `faceted(unit, probe, weight=...)`: `unit + weight * facet(unit, probe.layer, probe.weights)`, the
  article's objective `f(g(x)) + w . (g(x) * grad f(g(x)))` (`objectives.attribution.facet`).
- `render_faceted(model, unit, probe)`: that objective rendered, a `RenderResult` whose recipe replays
  it; `weight=(lo, hi)` ramps the facet's weight over the batch as OpenAI's code does.

Images are (N, C, H, W) tensors in [0, 1] or image files / folders (loaded at the model's input
size). The two sets must have the same image size: a probe could otherwise separate them by size.

Example:
    >>> import torch, torch.nn as nn
    >>> from lucent_dsl import channel
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3), nn.ReLU())
    >>> bright, dark = 0.6 + 0.4 * torch.rand(6, 3, 12, 12), 0.4 * torch.rand(6, 3, 12, 12)
    >>> probe = train_probe(net, "1", bright, dark)
    >>> probe.accuracy, probe.holdout_accuracy, len(probe.weights)
    (1.0, 1.0, 8)
    >>> faceted(channel("3", 0), probe, weight=0.5).terms[1].expr.layer
    '1'
"""
from __future__ import annotations

import dataclasses as dc
import json
import math
import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..args import check_int
from ..dsl.expr import Expr, sum_of
from ..dsl.parser import parse
from ..errors import ImageError, InvalidArgumentError
from ..io.files import load_image
from ..models.info import spec_of
from ..objectives import check_layer, facet, l2
from ..renderer.phases import RenderResult, render
from ._common import Settings, collect, image_channels, model_size, settings_from

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MIN_FOR_HOLDOUT = 5  # images per set before a fifth of them is held out


@dc.dataclass(frozen=True)
class FacetProbe:
    """A linear probe at `layer`: `logit = weights . mean_p a[:, p] + bias` (positive: the facet).

    Attributes:
        layer: where it reads (a layer name of the model it was trained on).
        weights, bias: the logistic regression, on the layer's activations averaged over positions.
        model: the model's spec (`models.spec_of`), when known: `render_faceted` refuses another model.
        accuracy: on the images it was trained on; holdout_accuracy: on the held-out ones (None: too few).
        counts: (facet images, generic images) in all.
        penalty: the L2 strength it was trained with.
    """

    layer: str
    weights: tuple[float, ...]
    bias: float
    model: str | None
    accuracy: float
    holdout_accuracy: float | None
    counts: tuple[int, int]
    penalty: float

    def term(self, unit: Expr | str, *, rectify: bool = True) -> Expr:
        """The facet term of `unit` (`objectives.facet`) with these weights."""
        return facet(_objective(unit), self.layer, self.weights, rectify=rectify)

    def logits(self, model: nn.Module, images: Any, *, batch: int = 32) -> Tensor:
        """The probe's logit for each image (N,): how much the model sees the facet in it."""
        x = collect(model, as_images(images, model), self.layer, position="mean", batch=batch).double()
        if x.shape[1] != len(self.weights):
            raise InvalidArgumentError(f"the probe has {len(self.weights)} weights but {self.layer!r} has {x.shape[1]} "
                                       "channels: it was trained on another model")
        return (x @ torch.tensor(self.weights, dtype=torch.float64) + self.bias).float()

    def to_json(self) -> str:
        return json.dumps(dc.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> FacetProbe:
        try:
            d = json.loads(text)
            return cls(d["layer"], tuple(float(v) for v in d["weights"]), float(d["bias"]), d["model"],
                       float(d["accuracy"]), d["holdout_accuracy"], tuple(d["counts"]), float(d["penalty"]))
        except (ValueError, KeyError, TypeError) as err:
            raise InvalidArgumentError(f"not a facet probe's JSON ({type(err).__name__}: {err})") from None


# --- images ------------------------------------------------------------------------------------------


def as_images(source: Any, model: nn.Module, *, size: Any = None, what: str = "images") -> Tensor:
    """(N, C, H, W) float32 in [0, 1] from a tensor, or from image files / a folder (loaded at `size`, default the
    model's input size), with C the model's colour channels."""
    if isinstance(source, Tensor):
        if source.dim() != 4 or not source.is_floating_point():
            raise InvalidArgumentError(f"{what} must be an (N, C, H, W) float tensor in [0, 1], got "
                                       f"{source.dtype} of shape {tuple(source.shape)}")
        if source.shape[0] == 0:
            raise InvalidArgumentError(f"{what}: the set is empty (0 images); a probe needs images of both kinds")
        lo, hi = float(source.min()), float(source.max())
        if not (0.0 <= lo and hi <= 1.0):
            raise InvalidArgumentError(f"{what} must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}] (divide 0-255 "
                                       "images by 255)")
        return source.detach().to(torch.float32)
    files = _image_files(source, what)
    hw = model_size(model, size)
    return torch.cat([load_image(p, size=hw, channels=image_channels(model)) for p in files])


def _image_files(source: Any, what: str) -> list[Path]:
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise ImageError(f"{what}: the folder {str(path)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            return files
        if not path.is_file():
            raise ImageError(f"{what}: {str(path)!r} is neither an image file nor a folder")
        return [path]
    if isinstance(source, Sequence) and source and all(isinstance(p, (str, Path)) for p in source):
        return [f for p in source for f in _image_files(p, what)]
    raise InvalidArgumentError(f"{what} must be an (N, C, H, W) tensor in [0, 1], an image folder or a list of image "
                               f"files, got {type(source).__name__}")


# --- the probe ---------------------------------------------------------------------------------------


def train_probe(model: nn.Module, layer: str, facet_images: Any, generic_images: Any, *, penalty: float = 1.0,
                holdout: bool = True, seed: int = 0, size: Any = None, batch: int = 32) -> FacetProbe:
    """A logistic-regression probe at `layer` that tells `facet_images` (label 1) from `generic_images` (label 0).

    The features are the layer's activations averaged over positions (the published probes read pooled
    activations of an earlier layer; see the README for where ours differ), divided by their overall
    standard deviation while fitting (the weights are returned for the raw activations). The loss is
    each set's mean log-loss, weighted equally whatever the set sizes, plus `penalty / 2 * |v|^2 / N` on
    the scaled weights (`penalty=1` is scikit-learn's default C=1 with balanced classes).

    Args:
        facet_images, generic_images: (N, C, H, W) tensors in [0, 1] of one size, or image files / folders.
        penalty: the L2 strength (> 0).
        holdout: with `MIN_FOR_HOLDOUT` or more images in each set, hold out a fifth of each (drawn with `seed`)
            and report the probe's accuracy on them; the probe is trained on the rest.
        size: the size image files are loaded at (default: the model's input size).

    Raises:
        InvalidArgumentError: an empty set, sets of different image sizes, values outside [0, 1].
        LayerNotFoundError: a layer the model does not have (before any forward).
        ObjectiveShapeError: a layer whose output is no (B, C, H, W) map, (B, T, C) sequence or (B, C) vector.
    """
    layer = check_layer(layer)
    penalty = _positive(penalty, "penalty")
    pos = as_images(facet_images, model, size=size, what="facet_images")
    neg = as_images(generic_images, model, size=size, what="generic_images")
    if pos.shape[1:] != neg.shape[1:]:
        raise InvalidArgumentError(
            f"facet_images are {tuple(pos.shape[1:])} per image but generic_images are {tuple(neg.shape[1:])}: give "
            "both sets one size and colour format (the probe could otherwise tell them apart by size alone)")
    x = collect(model, torch.cat([pos, neg]), layer, position="mean", batch=check_int("batch", batch)).double()
    y = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))]).double()
    train, held = _split(y, holdout, seed)
    w, b = fit_logistic(x[train], y[train], penalty)
    accuracy = _accuracy(x[train], y[train], w, b)
    held_acc = _accuracy(x[held], y[held], w, b) if len(held) else None
    return FacetProbe(layer, tuple(float(v) for v in w), float(b), spec_of(model), accuracy, held_acc,
                      (len(pos), len(neg)), penalty)


def fit_logistic(x: Tensor, y: Tensor, penalty: float, *, max_iter: int = 500) -> tuple[Tensor, float]:
    """(weights (C,), bias) of a class-balanced, L2-penalized logistic regression of labels `y` on `x` (N, C).

    Deterministic: float64, full-batch L-BFGS with a strong-Wolfe line search, from zeros.

    Example:
        >>> x = torch.tensor([[0.0], [1.0], [3.0], [4.0]], dtype=torch.float64); y = torch.tensor([0.0, 0.0, 1.0, 1.0])
        >>> w, b = fit_logistic(x, y, 1.0)
        >>> bool(w[0] > 0), bool(((x @ w + b) > 0).double().eq(y).all())
        (True, True)
    """
    x, y = x.double(), y.double()
    scale = float(x.std()) if x.numel() > 1 and float(x.std()) > 1e-12 else 1.0
    z = x / scale
    n_pos, n_neg = float(y.sum()), float((1 - y).sum())
    per = torch.where(y > 0, 0.5 / max(n_pos, 1.0), 0.5 / max(n_neg, 1.0))  # each set weighs one half
    v = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    c = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([v, c], lr=1.0, max_iter=max_iter, tolerance_grad=1e-12, tolerance_change=1e-14,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        logits = z @ v + c
        loss = (per * torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")).sum()
        loss = loss + penalty / (2 * len(y)) * (v * v).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return (v.detach() / scale), float(c.detach())


def _accuracy(x: Tensor, y: Tensor, w: Tensor, b: float) -> float:
    return float(((x @ w + b > 0).double() == y).double().mean())


def _split(y: Tensor, holdout: bool, seed: int) -> tuple[Tensor, Tensor]:
    """(training rows, held-out rows): a fifth of each set held out when every set has enough images."""
    if not isinstance(holdout, bool):
        raise InvalidArgumentError(f"holdout must be True or False, got {holdout!r}")
    sets = [torch.nonzero(y == k).flatten() for k in (1.0, 0.0)]
    if not holdout or min(len(s) for s in sets) < MIN_FOR_HOLDOUT:
        return torch.arange(len(y)), torch.zeros(0, dtype=torch.long)
    gen = torch.Generator().manual_seed(int(seed))
    train, held = [], []
    for s in sets:
        order = s[torch.randperm(len(s), generator=gen)]
        k = max(1, round(len(s) / 5))
        held.append(order[:k])
        train.append(order[k:])
    return torch.cat(train).sort().values, torch.cat(held).sort().values


# --- the objective and its render ---------------------------------------------------------------------


def faceted(unit: Expr | str, probe: FacetProbe, *, weight: float = 1.0, rectify: bool = True) -> Expr:
    """`unit + weight * facet(unit, probe.layer, probe.weights)`: the unit steered towards the probe's facet.

    Example:
        >>> p = FacetProbe("features.6", (1.0, -1.0), 0.0, None, 1.0, None, (4, 4), 1.0)
        >>> faceted("channel('features.16', 7)", p, weight=2)
        channel('features.16', 7) + 2.0 * facet(channel('features.16', 7), 'features.6', (1.0, -1.0))
    """
    e = _objective(unit)
    return e + _real(weight, "weight") * probe.term(e, rectify=rectify)


def render_faceted(model: nn.Module, unit: Expr | str, probe: FacetProbe, *, weight: float | tuple[float, float] = 1.0,
                   images: int = 1, l2_weight: float = 0.0, rectify: bool = True, settings: Settings | None = None,
                   **render_kw: Any) -> RenderResult:
    """Render `unit` steered towards `probe`'s facet: `faceted(unit, probe, weight) - l2_weight * l2(target=0.5)`.

    Args:
        weight: the facet's weight; a pair (lo, hi) gives image i of `images` the weight lo + (hi - lo) * i / (n - 1)
            (OpenAI's code renders 9 images from 0.1 to 5.0).
        images: how many images (one render, one batch).
        l2_weight: the published image penalty, `l2_weight * mean (x - 0.5)^2` subtracted (their 10; ours 0).
        settings: the render (`toolbox.Settings`: size, steps, lr, param, transforms, precision, seed, device,
            progress; `compile` must stay off); **render_kw: the same as keywords.

    Returns:
        the `RenderResult`, with a recipe when the model has a spec.

    Raises:
        InvalidArgumentError: a probe trained on another model (by spec), bad weights.

    Example:
        >>> import torch, torch.nn as nn
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))
        >>> p = FacetProbe("1", (1.0, 0.0, -1.0, 0.5), 0.0, None, 1.0, None, (4, 4), 1.0)
        >>> r = render_faceted(net, "channel('2', 1)", p, weight=(0.5, 2.0), images=2, size=16, steps=2,
        ...                    progress=False)
        >>> r.images.shape, list(r.history)[0]
        (torch.Size([2, 3, 16, 16]), "channel('2', 1)")
    """
    s = settings_from(settings, render_kw, where="render_faceted()").resolved(model)
    spec = spec_of(model)
    if probe.model is not None and spec is not None and probe.model != spec:
        raise InvalidArgumentError(f"the probe was trained on model {probe.model!r}, not {spec!r}: train one on this "
                                   "model (train_probe)")
    objective = _facet_objective(_objective(unit), probe, weight, check_int("images", images), rectify)
    if l2_weight:
        objective = objective - _real(l2_weight, "l2_weight") * l2(target=0.5)
    from .. import param as param_lib

    size = s.size or model_size(model, None)
    param = None if s.param == "fft" else param_lib.image(size, kind=s.param, batch=images,
                                                          channels=image_channels(model))
    return render(objective, model, size=size, steps=s.steps, batch=images, param=param, lr=s.lr, seed=s.seed,
                  transforms=None if s.transforms == "standard" else [], precision=s.precision, device=s.device,
                  compile=s.compile, progress=s.progress, preset="lucid")


def _facet_objective(unit: Expr, probe: FacetProbe, weight: Any, images: int, rectify: bool) -> Expr:
    if not isinstance(weight, tuple):
        return faceted(unit, probe, weight=weight, rectify=rectify)
    if len(weight) != 2:
        raise InvalidArgumentError(f"weight must be a number or a pair (lo, hi) ramped over the images, got {weight!r}")
    lo, hi = (_real(v, "weight") for v in weight)
    ramp = [lo + (hi - lo) * i / (images - 1) if images > 1 else lo for i in range(images)]
    term = probe.term(unit, rectify=rectify)
    return sum_of([unit, *(k * dc.replace(term, batch=i) for i, k in enumerate(ramp))])  # type: ignore[type-var]


def _objective(unit: Any) -> Expr:
    e = parse(unit) if isinstance(unit, str) else unit
    if not isinstance(e, Expr):
        raise InvalidArgumentError(f"the unit must be an objective or DSL text such as \"channel('features.16', 7)\", "
                                   f"got {unit!r}")
    return e


def _real(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
        raise InvalidArgumentError(f"{what} must be a finite number, got {v!r}")
    return float(v)


def _positive(v: Any, what: str) -> float:
    x = _real(v, what)
    if x <= 0:
        raise InvalidArgumentError(f"{what} must be > 0, got {v!r}")
    return x
