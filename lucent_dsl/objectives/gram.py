"""Style and texture (Gatys et al. 2015): match a layer's Gram matrix, `style(layer, image)`.

The Gram matrix of an activation with C channels at P positions is `G = A A^T / P`, shape
(C, C): which channels fire together, wherever they fire. It keeps the texture of an image
and forgets the layout. `style` scores how close the render's Gram matrix is to a target one:

    score = -|G - G_target|^2 / |G_target|^2        (Frobenius norms; 0 is a perfect match)

so it is maximized like every objective, is scale-free (one unit is "as far as the whole target
Gram"), and joins the algebra: `channel(...) + 0.5 * style("features.4", photo, net=model)`.
The term holds only the target Gram matrix (an `Array`), so `repr`, `parse` and JSON round-trip
it; the factory computes it from an image with `net=`, or takes a Gram matrix directly.

Example:
    >>> import torch
    >>> e = style("conv", torch.eye(2))
    >>> e
    style('conv', tensor([1.0, 0.0, 0.0, 1.0], shape=(2, 2)))
    >>> from lucent_dsl import parse
    >>> parse(repr(e)) == e
    True
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..dsl.expr import Acts, Array, Expr
from ..errors import InvalidArgumentError, ObjectiveShapeError
from ._term import (
    Batch,
    LayerTerm,
    check_batch,
    check_layer,
    check_layout,
    check_model,
    frozen,
    per_image,
    rows_channels_positions,
)

# How far a 2-D target may be from symmetric (relative) and still be read as a Gram matrix.
SYMMETRY_TOLERANCE = 1e-4


def gram(acts: Tensor) -> Tensor:
    """Gram matrices of (R, C, P) activations (rows, channels, positions): `A A^T / P`, shape (R, C, C).

    Example:
        >>> gram(torch.ones(1, 2, 4))
        tensor([[[1., 1.],
                 [1., 1.]]])
    """
    return torch.bmm(acts, acts.transpose(1, 2)) / acts.shape[-1]


def gram_distance(g: Tensor, target: Tensor) -> Tensor:
    """`|g - target|^2 / |target|^2` per leading index: `style`'s distance (0 when equal)."""
    diff = (g - target).pow(2).flatten(1).sum(1)
    return diff / target.pow(2).sum()


@frozen
class Style(LayerTerm):
    """-|Gram - target|^2 / |target|^2 at one layer, per row, averaged over the crops of each image."""

    name = "style"
    positional = ("layer", "gram")
    layer: str
    gram: Array
    batch: Batch = None
    model: str | None = None
    layout: str | None = None  # einops pattern of the activation, when the plan should not detect it

    def score(self, acts: Acts, n: int) -> Tensor:
        site, a = self.read(acts)
        cp = rows_channels_positions(self, site, a)
        c = cp.shape[1]
        if self.gram.shape != (c, c):
            raise ObjectiveShapeError(
                f"style on {site}: the target Gram matrix is {self.gram.shape[0]}x{self.gram.shape[1]} but the layer "
                f"has {c} channels; compute it at the same layer of the same model (style(layer, image, net=model))"
            )
        target = self.gram.tensor.to(device=cp.device, dtype=cp.dtype)
        return per_image(self, -gram_distance(gram(cp), target.unsqueeze(0)), n, self.batch)


def _check_gram(t: Tensor) -> Array:
    if t.shape[0] != t.shape[1]:
        raise InvalidArgumentError(
            f"style: a 2-D target must be a (C, C) Gram matrix, got shape {tuple(t.shape)}; pass an image with "
            "net=model instead"
        )
    scale = float(t.abs().max())
    if scale == 0:
        raise InvalidArgumentError("style: the target Gram matrix is all zeros (the layer is silent on that image); "
                                   "pick another layer or image")
    if float((t - t.T).abs().max()) > SYMMETRY_TOLERANCE * scale or float(t.diagonal().min()) < 0:
        raise InvalidArgumentError(
            f"style: the {t.shape[0]}x{t.shape[1]} target is not a Gram matrix (a Gram matrix is symmetric with a "
            "non-negative diagonal); to match an image's style pass the image, as (1, C, H, W) or (C, H, W), "
            "with net=model"
        )
    return Array.of(t)


def image_gram(net: nn.Module, image: Any, layer: str) -> Tensor:
    """The Gram matrix (C, C) of `image`'s activations at `layer` of `net` (one untransformed forward).

    `image` is a (1, C, H, W) or (C, H, W) tensor in [0, 1], or anything `io.load_image` reads;
    it keeps its size (the Gram matrix averages over positions). With several crops or images
    in a batch, their Gram matrices are averaged.

    Example:
        >>> import torch.nn as nn
        >>> image_gram(nn.Sequential(nn.Conv2d(3, 4, 3)), torch.rand(1, 3, 8, 8), "0").shape
        torch.Size([4, 4])
    """
    from ..io.files import load_image
    from ..models.info import info_of
    from ..plan.forward import read_layers

    if not isinstance(net, nn.Module):
        raise InvalidArgumentError(
            f"net must be the torch.nn.Module whose layer {layer!r} the style reads, got {type(net).__name__}")
    channels = 1 if info_of(net).channels == 1 else 3
    if isinstance(image, Tensor) and image.dim() == 4 and image.shape[0] > 1:
        x = torch.cat([load_image(im, channels=channels) for im in image])
    else:
        x = load_image(image, channels=channels)
    a = read_layers(net, x, [layer])[layer]
    if not isinstance(a, Tensor) or a.dim() not in (2, 3, 4) or not a.is_floating_point():
        raise ObjectiveShapeError(f"style: layer {layer!r} gives {getattr(a, 'shape', type(a).__name__)}; a Gram "
                                  "matrix needs (B, C, H, W) maps, (B, tokens, C) sequences or (B, C) vectors")
    cp = {4: lambda t: t.flatten(2), 3: lambda t: t.transpose(1, 2), 2: lambda t: t.unsqueeze(-1)}[a.dim()](a)
    return gram(cp.double()).mean(0).float().cpu()


def style(
    layer: str,
    image: Any,
    *,
    net: nn.Module | None = None,
    batch: Batch = None,
    model: str | None = None,
    layout: str | None = None,
) -> Expr:
    """Match the style (Gram matrix) of `image` at `layer`: `-|G - G_image|^2 / |G_image|^2`, at most 0.

    Args:
        layer: the layer whose channel correlations are matched (shallow layers: colours and fine
            texture; deeper ones: larger motifs). Any layout: maps, tokens, vectors.
        image: the style image ((1, C, H, W) or (C, H, W) in [0, 1], a path, a PIL image), read by
            `net`; or directly a target Gram matrix (C, C) (symmetric, from `image_gram`).
        net: the model that reads `layer`, to compute the image's Gram matrix; not needed for a
            Gram matrix. In an ensemble, name the model with `model=` too.
        batch, model: as for every term.

    Raises:
        InvalidArgumentError: an image without `net`, a 2-D target that is not a Gram matrix, an
            all-zero Gram matrix.

    Example:
        >>> import torch, torch.nn as nn
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> e = style("1", torch.rand(1, 3, 16, 16), net=net)
        >>> e.gram.shape
        (4, 4)
    """
    layer = check_layer(layer)
    if isinstance(image, (Array, list, tuple)):
        image = Array.of(image).tensor
    if isinstance(image, Tensor) and image.dim() == 2:
        target = _check_gram(image.detach().to("cpu", torch.float32))
    else:
        if net is None:
            raise InvalidArgumentError(
                f"style({layer!r}, image) needs the network to compute the image's Gram matrix: "
                f"style({layer!r}, image, net=model), or pass a Gram matrix from objectives.style.image_gram"
            )
        target = _check_gram(image_gram(net, image, layer))
    return Style(layer, target, check_batch(batch), check_model(model), check_layout(layout))
