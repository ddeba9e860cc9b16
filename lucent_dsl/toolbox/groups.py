"""Neuron groups (Olah et al., "The Building Blocks of Interpretability", Distill 2018).

A layer's activations on one image, (C, H, W), are factorized with non-negative matrix
factorization (scikit-learn's NMF: the `research` extra) into k groups: `acts[:, p] ~= sum_g
maps[g, p] * directions[g]`. Each group is a direction in channel space (what the group
detects) and a spatial map (where on the image it fires). Every direction is rendered as a
`direction` objective, all groups in one batched run, and each map is shown over the image.

NMF needs non-negative activations: pick a layer after a ReLU (on MobileNetV2 the expansion
and depthwise convolutions, `features.N.conv.0` and `features.N.conv.1`, end in ReLU6; the
block outputs `features.N` do not). `negative="split"` factorizes [relu(a), relu(-a)] instead
and gives each group the direction `positive part - negative part`.

Example:
    >>> import torch
    >>> acts = torch.rand(6, 4, 5)                      # (C, H, W), non-negative
    >>> directions, maps, error = factorize(acts, 2)
    >>> directions.shape, maps.shape, 0 <= error < 1
    (torch.Size([2, 6]), torch.Size([2, 4, 5]), True)
"""
from __future__ import annotations

import dataclasses as dc
import json
import math
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..args import check_int
from ..atlas import channel_seed
from ..dsl.printing import to_text
from ..errors import InvalidArgumentError
from ..io.files import load_image, make_grid, save_png
from ..models.info import device_of
from ..objectives import check_layer, direction
from ._common import (
    Settings,
    as_rows,
    has_input_size,
    image_channels,
    layer_outputs,
    model_size,
    render_each,
    require,
    settings_from,
)

NEGATIVE = ("error", "split")


def factorize(acts: Tensor, k: int, *, seed: int = 0, negative: str = "error",
              max_iter: int = 1000) -> tuple[Tensor, Tensor, float]:
    """NMF of (C, H, W) (or (C, P)) activations into k groups: (directions (k, C), maps (k, H, W), relative error).

    Groups are sorted by their share of the activation (largest first); each direction has unit
    length (its map carries the scale). The error is |acts - maps x directions| / |acts|.

    Raises:
        InvalidArgumentError: negative activations with `negative="error"`, k < 1 or more groups
            than channels or positions.
        MissingExtraError: scikit-learn is not installed.
    """
    k = check_int("k", k)
    if negative not in NEGATIVE:
        raise InvalidArgumentError(f"negative must be one of {NEGATIVE}, got {negative!r}")
    if acts.dim() not in (2, 3):
        raise InvalidArgumentError(f"factorize needs (C, H, W) or (C, P) activations, got shape {tuple(acts.shape)}")
    c, spatial = acts.shape[0], tuple(acts.shape[1:])
    x = acts.detach().to("cpu", torch.float64).reshape(c, -1).T  # (P, C)
    if k > min(x.shape):
        raise InvalidArgumentError(f"k={k} groups, but the activation has only {c} channels and {x.shape[0]} positions")
    low = float(x.min())
    if low < 0 and negative == "error":
        raise InvalidArgumentError(
            f"NMF needs non-negative activations, and this layer goes down to {low:.4g}; pick a layer after a ReLU "
            "(on MobileNetV2: 'features.N.conv.0' or 'features.N.conv.1', not the block output 'features.N'), or "
            "pass negative='split' to factorize the positive and negative parts apart"
        )
    data = torch.cat([x.clamp(min=0), (-x).clamp(min=0)], 1) if low < 0 else x
    decomposition = require("sklearn.decomposition", package="scikit-learn", what="neuron groups (NMF)")
    nmf = decomposition.NMF(n_components=k, init="nndsvda", random_state=int(seed), max_iter=max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: the groups are still usable, and the error is returned
        w = torch.from_numpy(nmf.fit_transform(data.numpy()))  # (P, k)
    h = torch.from_numpy(nmf.components_)  # (k, C or 2C)
    err = float((data - w @ h).norm() / data.norm().clamp(min=1e-12))
    dirs = h[:, :c] - h[:, c:] if low < 0 else h
    norm = dirs.norm(dim=1).clamp(min=1e-12)
    dirs, maps = dirs / norm[:, None], w.T * norm[:, None]
    order = torch.argsort(maps.sum(1), descending=True)
    return dirs[order].float(), maps[order].reshape(k, *spatial).float(), err


@dc.dataclass(frozen=True, eq=False)
class NeuronGroups:
    """The groups of one image at one layer: directions, spatial maps, renders and their objectives."""

    layer: str
    image: Tensor  # (1, C, H, W), the image as the model saw it
    directions: Tensor  # (k, C), unit length
    maps: Tensor  # (k, h, w), non-negative
    error: float
    renders: Tensor  # (k, C, S, S)
    scores: Tensor
    objectives: tuple[str, ...]
    seeds: tuple[int, ...]
    settings: Settings

    @property
    def shares(self) -> Tensor:
        """Each group's share of the summed maps (sums to 1)."""
        mass = self.maps.flatten(1).sum(1)
        return mass / mass.sum().clamp(min=1e-12)

    def overlays(self) -> Tensor:
        """The image shaded by each group's map (bright where the group fires): (k, C, H, W)."""
        h, w = self.image.shape[-2:]
        m = F.interpolate(self.maps[:, None], size=(h, w), mode="bilinear", align_corners=False)
        m = m / m.flatten(1).amax(1).clamp(min=1e-12).view(-1, 1, 1, 1)
        return self.image * (0.15 + 0.85 * m)

    def figure(self) -> Any:
        """A PIL image: each group's render (top row) over its map on the image (bottom row)."""
        side = self.renders.shape[-2:]
        shaded = F.interpolate(self.overlays(), size=side, mode="bilinear", align_corners=False, antialias=True)
        labels = [f"group {i} ({100 * float(s):.0f}%)" for i, s in enumerate(self.shares)]
        return make_grid(torch.cat([self.renders, shaded.clamp(0, 1)]), ncol=len(self.renders),
                         labels=labels + [f"where {i} fires" for i in range(len(self.renders))])

    def manifest(self, spec: str | None = None) -> dict[str, Any]:
        groups = []
        for i, (text, seed) in enumerate(zip(self.objectives, self.seeds)):
            recipe = self.settings.recipe(text, seed, spec)
            groups.append({"share": float(self.shares[i]), "score": float(self.scores[i]), "seed": seed,
                           "objective": text, "recipe": None if recipe is None else recipe.to_dict()})
        return {"kind": "neuron_groups", "layer": self.layer, "k": len(self.objectives), "error": self.error,
                "model": spec, "groups": groups}

    def save(self, path: str | Path, *, spec: str | None = None) -> None:
        """Write `figure()` as a PNG whose metadata holds the manifest (each group's objective and recipe)."""
        save_png(path, self.figure(), metadata={"lucent_dsl.groups": json.dumps(self.manifest(spec), allow_nan=False)})


def neuron_groups(
    model: nn.Module,
    image: Any,
    layer: str,
    k: int = 6,
    *,
    size: int | tuple[int, int] | None = None,
    cossim_pow: float = 1.0,
    negative: str = "error",
    settings: Settings | None = None,
    **render_kw: Any,
) -> NeuronGroups:
    """Factorize `layer`'s activations on `image` into `k` groups and render each group's direction.

    Args:
        model: an `nn.Module` (its `ModelInfo` gives the preprocessing).
        image: (1, C, H, W) or (C, H, W) in [0, 1], or anything `io.load_image` reads.
        layer: a layer with non-negative activations (see the module docstring).
        k: number of groups.
        size: the image is resized to this (default: the model's input size, else its own size).
        cossim_pow: the `direction` objectives' cosine exponent.
        negative: "error" (refuse negative activations) or "split".
        settings: the group renders (`toolbox.Settings`); its `size` is the renders' size (default: the
            image's, `size`), its `seed` seeds NMF and the renders (each group has its own seed, so its recipe
            replays alone), "auto" precision is decided once for every group (`Settings.resolved`).
        **render_kw: the same fields as keywords (`steps=`, `lr=`, ...; the renders' size is `render_size=`),
            the form before `settings=`; beside `settings` they must agree with it.

    Raises:
        InvalidArgumentError, LayerNotFoundError, MissingExtraError: before anything renders.

    Example:
        >>> import torch, torch.nn as nn
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
        >>> g = neuron_groups(net, torch.rand(1, 3, 16, 16), "1", 2, settings=Settings(steps=2, progress=False))
        >>> g.renders.shape, g.maps.shape
        (torch.Size([2, 3, 16, 16]), torch.Size([2, 14, 14]))
    """
    layer = check_layer(layer)
    settings = settings_from(settings, render_kw, where="neuron_groups()", aliases={"render_size": "size"})
    x = load_image(image, channels=image_channels(model))
    hw = model_size(model, size) if size is not None or has_input_size(model) else (x.shape[-2], x.shape[-1])
    if tuple(x.shape[-2:]) != hw:
        x = load_image(x, size=hw, channels=image_channels(model))
    (a,) = list(layer_outputs(model, x.to(device_of(model)), layer))
    cp = as_rows(a, layer)[0].float().cpu()
    acts = cp.reshape(cp.shape[0], *a.shape[2:]) if a.dim() == 4 else cp
    dirs, maps, err = factorize(acts, k, seed=settings.seed, negative=negative)
    settings = settings.resolved(model, default_size=hw)
    texts = tuple(to_text(direction(layer, d, cossim_pow=float(cossim_pow))) for d in dirs)
    seeds = tuple(channel_seed(f"{layer}#groups", i, settings.seed) for i in range(len(texts)))
    renders, scores = render_each(texts, seeds, model, settings)
    if maps.dim() == 2:
        maps = _token_grid(maps)
    return NeuronGroups(layer, x, dirs, maps, err, renders, scores, texts, seeds, settings)


def _token_grid(maps: Tensor) -> Tensor:
    """(k, tokens) maps on their square patch grid (a CLS token first is dropped); else one row of tokens."""
    t = maps.shape[1]
    for offset in (0, 1):
        side = math.isqrt(t - offset)
        if side > 0 and side * side == t - offset:
            return maps[:, offset:].reshape(maps.shape[0], side, side)
    return maps[:, None, :]
