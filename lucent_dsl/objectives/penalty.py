"""Penalties and batch terms: total_variation, l1, l2, blur (on the image or any layer), diversity, alignment.

Penalties return a positive amount: subtract them. Lucid, lucent and captum compute other numbers under the
names `diversity`, `total_variation`, `l1`, `l2` (theirs: batch sums; their L2 is a norm; their diversity divides
by n, not n - 1) and `blur_input_each_step` (another kernel and border): `convention="lucid"` computes theirs,
so a weight copied from their notebooks acts as strongly here; the default keeps this library's per-image
means (what saved recipes mean). `objectives.catalog` gives each conversion.

Example:
    >>> channel("conv", 0) - 1e-3 * total_variation()
    channel('conv', 0) - 0.001 * total_variation()
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from ..dsl.expr import IMAGE, Acts, Array, Expr, Site, Term, finite
from ..errors import InvalidArgumentError, ObjectiveShapeError
from ._term import (
    Batch,
    LayerTerm,
    check_batch,
    check_convention,
    check_layer,
    check_model,
    check_rows_of,
    check_target,
    frozen,
    layout_of,
    per_image,
    rows_channels_positions,
)


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
        layout_of(self, site, a)
        check_rows_of(self, site, a, n)
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
    return Alignment(check_layer(layer), ratio, check_model(model))


@frozen
class Diversity(LayerTerm):
    """Similarity (a penalty: subtract it): mean cosine similarity of each image's Gram matrix with the others'."""

    name = "diversity"
    positional = ("layer",)
    layer: str
    model: str | None = None
    convention: str = "lucent_dsl"  # "lucid": each image's similarities summed and divided by n, not by n - 1

    def score(self, acts: Acts, n: int) -> Tensor:
        site, a = self.read(acts)
        cp = rows_channels_positions(self, site, a)
        check_rows_of(self, site, a, n)
        cp = cp[:n]
        if n < 2:
            return cp.new_zeros(n)
        gram = torch.bmm(cp, cp.transpose(1, 2)).flatten(1)
        gram = F.normalize(gram, dim=1)
        sim = gram @ gram.T
        return (sim.sum(1) - sim.diagonal()) / (n - 1 if self.convention == "lucent_dsl" else n)


def diversity(layer: str, *, model: str | None = None, convention: str = "lucent_dsl") -> Expr:
    """How alike the images of a batch are at `layer` (Gram-matrix cosine similarity); subtract it.

    Image i scores the mean of its similarities to the n - 1 others, so the batch totals n/(n-1) times
    Lucid's, lucent's and captum's `diversity`; `convention="lucid"` computes theirs (a weight w there is
    w * (n - 1) / n here with the default).

    Example:
        >>> channel("layer4", 3) - 0.1 * diversity("layer4", convention="lucid")
        channel('layer4', 3) - 0.1 * diversity('layer4', convention='lucid')
    """
    return Diversity(check_layer(layer), check_model(model), check_convention(convention))



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
    layer = check_layer(layer)
    if layer == IMAGE and model is not None:
        raise InvalidArgumentError(f"the rendered image ({IMAGE!r}) belongs to no model; drop model={model!r}")
    return layer, check_model(model)


@frozen
class TotalVariation(ImageTerm):
    """Penalty: mean absolute difference between neighbouring pixels."""

    name = "total_variation"
    layer: str = IMAGE
    batch: Batch = None
    model: str | None = None
    convention: str = "lucent_dsl"  # "lucid": sums over pixels and channels, not means

    def score(self, acts: Acts, n: int) -> Tensor:
        site, a = self.read(acts)
        _need_maps(self, site, a)
        if self.convention == "lucid":  # tf.image.total_variation, summed over the batch by the optimizer
            dx, dy = (a[..., :, 1:] - a[..., :, :-1]).abs(), (a[..., 1:, :] - a[..., :-1, :]).abs()
            return per_image(self, dx.flatten(1).sum(1) + dy.flatten(1).sum(1), n, self.batch)
        # A map one pixel wide (or high) has no neighbours that way: 0, not the NaN of an empty mean.
        dx = (a[..., :, 1:] - a[..., :, :-1]).abs().flatten(1).mean(1) if a.shape[3] > 1 else a.new_zeros(a.shape[0])
        dy = (a[..., 1:, :] - a[..., :-1, :]).abs().flatten(1).mean(1) if a.shape[2] > 1 else a.new_zeros(a.shape[0])
        return per_image(self, dx + dy, n, self.batch)


def total_variation(*, layer: str = IMAGE, batch: Batch = None, model: str | None = None,
                    convention: str = "lucent_dsl") -> Expr:
    """Penalty (subtract it): total variation of the rendered image (mean |dx| + mean |dy|).

    Lucid's and captum's `total_variation` sum over pixels, channels and images instead:
    `convention="lucid"` computes theirs (for C x H x H images theirs is C*H*(H-1) times ours per image).

    Example:
        >>> channel("conv", 1) - 0.01 * total_variation()
        channel('conv', 1) - 0.01 * total_variation()
    """
    layer, model = _penalty_layer(layer, model)
    return TotalVariation(layer, check_batch(batch), model, check_convention(convention))


@frozen
class L1(ImageTerm):
    """Penalty: mean |x - target| (`L2`: mean (x - target)^2)."""

    name = "l1"
    power: ClassVar[int] = 1
    layer: str = IMAGE
    target: float | Array = 0.0
    batch: Batch = None
    model: str | None = None
    convention: str = "lucent_dsl"  # "lucid": l1 sums; l2 is the norm sqrt(1e-6 + sum) of the selected images

    def score(self, acts: Acts, n: int) -> Tensor:
        site, a = self.read(acts)
        _check_rows(self, site, a)
        distance = (a - _broadcast(self, site, a, self.target)).abs().pow(self.power)
        if self.convention == "lucent_dsl":
            return per_image(self, distance.flatten(1).mean(1), n, self.batch)
        sums = per_image(self, distance.flatten(1).sum(1), n, self.batch)
        return sums if self.power == 1 else _norm_shares(self, sums, n)


LUCID_EPS = 1e-6
"""The epsilon under the square root of Lucid's and captum's L2."""


def _norm_shares(term: Term, squares: Tensor, n: int) -> Tensor:
    """Lucid's L2, sqrt(eps + sum of `squares`), shared out over the images (each its part of the squares), so
    the images' scores add up to it exactly (and so does the gradient). It scores the batch as a whole."""
    chosen = per_image(term, squares.new_ones(n), n, getattr(term, "batch", None))
    total = squares.sum() + LUCID_EPS
    return total.sqrt() * (squares + LUCID_EPS * chosen / chosen.sum()) / total


@frozen
class L2(L1):
    """Penalty: mean (x - target)^2."""

    name = "l2"
    power: ClassVar[int] = 2


def _check_rows(term: Term, site: Site, a: Tensor) -> None:
    if a.dim() < 2:
        raise ObjectiveShapeError(
            f"{term!r} needs a batch axis and at least one more; {site} has shape {tuple(a.shape)}"
        )


def _broadcast(term: Term, site: Site, a: Tensor, target: float | Array) -> Tensor | float:
    if not isinstance(target, Array):
        return target
    t = target.tensor.to(device=a.device, dtype=a.dtype)
    if t.dim() == 1 and a.dim() >= 3 and t.shape[0] == a.shape[1]:  # one value per channel (a model's mean colour)
        return t.view(1, -1, *([1] * (a.dim() - 2))).expand_as(a)
    if t.dim() == a.dim() - 1:
        t = t.unsqueeze(0)
    if t.dim() != a.dim() or t.shape[1:] != a.shape[1:] or a.shape[0] % t.shape[0]:
        raise ObjectiveShapeError(
            f"{term!r}: target shape {tuple(t.shape)} does not fit {site} of shape {tuple(a.shape)}"
        )
    return t.repeat(a.shape[0] // t.shape[0], *([1] * (a.dim() - 1)))


def l1(*, layer: str = IMAGE, target: Any = 0.0, batch: Batch = None, model: str | None = None,
       convention: str = "lucent_dsl") -> Expr:
    """Penalty (subtract it): mean absolute distance of the image (or `layer`) from `target`.

    Lucid's and captum's `L1(layer, constant)` is the sum over every value of the batch: `convention="lucid"`.

    Example:
        >>> l1(target=0.5)
        l1(target=0.5)
    """
    layer, model = _penalty_layer(layer, model)
    return L1(layer, check_target(target), check_batch(batch), model, check_convention(convention))


def l2(*, layer: str = IMAGE, target: Any = 0.0, batch: Batch = None, model: str | None = None,
       convention: str = "lucent_dsl") -> Expr:
    """Penalty (subtract it): mean squared distance of the image (or `layer`) from `target`.

    `target`: a number, an array of the image's (or layer's) shape, or one value per channel (DeepInversion's
    image prior: `l2(target=mean)`, towards a model's mean colour; `renderer.presets`).
    Used by feature accentuation: stay close to a natural image, or to its activations. Lucid's and captum's
    `L2(layer, constant)` is a norm of the whole batch, sqrt(1e-6 + sum of squares): `convention="lucid"`
    (each image scores its share of that norm, so the images are scored together).

    Example:
        >>> l2(layer="layer2", target=1.0, model="a")
        l2(layer='layer2', target=1.0, model='a')
    """
    layer, model = _penalty_layer(layer, model)
    return L2(layer, check_target(target), check_batch(batch), model, check_convention(convention))


@frozen
class Blur(ImageTerm):
    """Penalty: squared distance of the image to its own 3x3 box blur (blurred copy held constant)."""

    name = "blur"
    layer: str = IMAGE
    batch: Batch = None
    model: str | None = None
    convention: str = "lucent_dsl"  # "lucid": Lucid's blur_input_each_step (its kernel and border, a half sum)

    def score(self, acts: Acts, n: int) -> Tensor:
        site, a = self.read(acts)
        _need_maps(self, site, a)
        if self.convention == "lucid":
            return per_image(self, 0.5 * (a - lucid_blur(a).detach()).pow(2).flatten(1).sum(1), n, self.batch)
        c = a.shape[1]
        kernel = torch.full((c, 1, 3, 3), 1 / 9, dtype=a.dtype, device=a.device)
        blurred = F.conv2d(F.pad(a, (1, 1, 1, 1), mode="replicate"), kernel, groups=c).detach()
        return per_image(self, (a - blurred).pow(2).flatten(1).mean(1), n, self.batch)


def lucid_blur(a: Tensor) -> Tensor:
    """Lucid's (and lucent's) 3x3 blur of (B, C, H, W) maps: weight 1 at the centre, 0.5 around it, each channel
    alone, zero padding divided out (the border averages over the pixels it has)."""
    c = a.shape[1]
    kernel = torch.full((3, 3), 0.5, dtype=a.dtype, device=a.device)
    kernel[1, 1] = 1.0
    kernel = kernel.expand(c, 1, 3, 3)
    return F.conv2d(a, kernel, padding=1, groups=c) / F.conv2d(torch.ones_like(a), kernel, padding=1, groups=c)


def blur(*, layer: str = IMAGE, batch: Batch = None, model: str | None = None, convention: str = "lucent_dsl") -> Expr:
    """Penalty (subtract it): how far the image is from its blurred self: mean (x - box3x3(x))^2 per image.

    Like Lucid's `blur_input_each_step` in spirit, not in number: theirs is 0.5 * the batch sum of squares
    against a centre-weighted 3x3 blur with its border divided out; `convention="lucid"` computes theirs
    (lucent's returns it negated, as a loss). No constant converts one into the other: the kernels differ.

    Example:
        >>> channel("conv", 0) - 0.01 * blur(convention="lucid")
        channel('conv', 0) - 0.01 * blur(convention='lucid')
    """
    layer, model = _penalty_layer(layer, model)
    return Blur(layer, check_batch(batch), model, check_convention(convention))


@frozen
class Opacity(Term):
    """Mean alpha of an RGBA image (a penalty: subtract it)."""

    name = "opacity"
    batch: Batch = None

    def sites(self) -> tuple[Site, ...]:
        return (Site(None, IMAGE),)

    def score(self, acts: Acts, n: int) -> Tensor:
        a = acts[Site(None, IMAGE)]
        if a.dim() != 4 or a.shape[1] != 4:
            raise ObjectiveShapeError(
                f"{self!r} reads the alpha channel of an RGBA image (B, 4, H, W), but the rendered image has shape "
                f"{tuple(a.shape)}; render with param=lucent_dsl.param.alpha(...)"
            )
        return per_image(self, a[:, 3].flatten(1).mean(1), n, self.batch)


def opacity(*, batch: Batch = None) -> Expr:
    """Penalty (subtract it): the mean alpha of the rendered RGBA image, to favour transparency.

    Example:
        >>> from lucent_dsl import channel
        >>> channel("mixed4a", 10) - 0.5 * opacity()
        channel('mixed4a', 10) - 0.5 * opacity()
    """
    return Opacity(check_batch(batch))
