"""The BatchNorm-statistics prior (DeepInversion, Yin et al. 2020): a penalty that pulls the statistics of the
image's features towards those the model saw in training, which every BatchNorm layer keeps.

DeepInversion (NVlabs/DeepInversion, `DeepInversionFeatureHook`) hooks each `BatchNorm2d`, takes its input x,
and adds up, over the layers l,

    r_l = || mean(x) - running_mean ||_2 + || var(x) - running_var ||_2      (var biased, per channel)

with the first layer's r weighted by `first_bn_multiplier` (10 in its ImageNet script). It pools the statistics
over its whole batch; a render scores every image on its own, so here `mean` and `var` are each image's,
over its positions (and averaged over the crops of one image, as every term is).

Where it reads: the BatchNorms' *outputs*. In a render a BatchNorm is in eval mode, y = (x - running_mean) /
sqrt(running_var + eps) * weight + bias, so its input's statistics follow exactly from its output's:

    mean(x) - running_mean = (mean(y) - bias) * s / weight,   var(x) = var(y) * (s / weight)^2,
    s = sqrt(running_var + eps)

A BatchNorm that `plan/fold.py` folds into the convolution before it is still read correctly: the folded
convolution computes the BatchNorm's output. (A zero `weight` loses the input; it is refused.)

`batchnorm_prior(model)` reads the model's BatchNorm2d layers when it is built, so it is a Python term of the
algebra (it adds, scales, renders and joins batched renders like any other) but not DSL text: a render with it
carries no recipe.
Subtract it, like every penalty.

Example:
    >>> import torch, torch.nn as nn, lucent_dsl as ld
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4))
    >>> prior = batchnorm_prior(net.eval())
    >>> prior
    batchnorm_prior(('1', '4'))
    >>> r = ld.render(ld.channel("3", 0) - 0.1 * prior, net, size=16, steps=2, progress=False)
    >>> sorted(r.history)
    ["-0.1 * batchnorm_prior(('1', '4'))", "channel('3', 0)"]
"""
from __future__ import annotations

import dataclasses as dc
from typing import Any

import torch
from torch import Tensor, nn

from ..dsl.expr import Acts, Site, Term, finite
from ..errors import InvalidArgumentError, ObjectiveShapeError
from ._term import Batch, check_model, check_rows_of, per_image, tensor_at

__all__ = ["BatchNormPrior", "batchnorm_prior"]


@dc.dataclass(frozen=True, slots=True, repr=False)
class BatchNormPrior(Term):
    """Penalty: sum over BatchNorm2d layers of ||mean(x) - running_mean|| + ||var(x) - running_var||, the first
    layer weighted by `first` (see the module docstring)."""

    name = "batchnorm_prior"
    positional = ("layers",)
    layers: tuple[str, ...]
    first: float = 10.0
    model: str | None = None
    batch: Batch = None
    norms: tuple[nn.BatchNorm2d, ...] = dc.field(default=(), compare=False, hash=False)  # same order as layers

    def sites(self) -> tuple[Site, ...]:
        return tuple(Site(self.model, layer) for layer in self.layers)

    def dsl_args(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        kw: dict[str, Any] = {}
        if self.first != 10.0:
            kw["first"] = self.first
        if self.model is not None:
            kw["model"] = self.model
        if self.batch is not None:
            kw["batch"] = self.batch
        return (self.layers,), kw

    def score(self, acts: Acts, n: int) -> Tensor:
        one = self.batch if isinstance(self.batch, int) else None  # a batched render: read only that image's rows
        total: Tensor | None = None
        for i, (site, bn) in enumerate(zip(self.sites(), self.norms)):
            y = tensor_at(self, acts, site)
            if y.dim() != 4 or y.shape[1] != bn.num_features:
                raise ObjectiveShapeError(f"{self!r}: {site} has shape {tuple(y.shape)}, not (B, "
                                          f"{bn.num_features}, H, W) as its BatchNorm2d")
            if one is not None:
                check_rows_of(self, site, y, n)
                if one >= n:
                    raise ObjectiveShapeError(f"{self!r} selects image {one} but the render has {n} image(s)")
                y = y[one::n]  # rows are crop-major: row k * n + b is crop k of image b
            r = input_distance(y.float(), bn)
            r = r * self.first if i == 0 else r
            total = r if total is None else total + r
        if total is None:
            raise ObjectiveShapeError(f"{self!r} reads no layer")
        if one is None:
            return per_image(self, total, n, self.batch)
        mask = torch.zeros(n, dtype=total.dtype, device=total.device)
        mask[one] = 1.0
        return mask * total.mean()


def _affine(bn: nn.BatchNorm2d, like: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(running_mean, running_var, scale s / weight, bias) as float tensors on `like`'s device."""
    mean, var = bn.running_mean, bn.running_var
    assert mean is not None and var is not None  # checked when the term was built
    weight = bn.weight if bn.weight is not None else torch.ones_like(mean)
    bias = bn.bias if bn.bias is not None else torch.zeros_like(mean)

    def f32(t: Tensor) -> Tensor:
        return t.detach().to(device=like.device, dtype=torch.float32)

    return f32(mean), f32(var), (f32(var) + bn.eps).sqrt() / f32(weight), f32(bias)


def input_distance(y: Tensor, bn: nn.BatchNorm2d) -> Tensor:
    """DeepInversion's r for each row of `y`, the (R, C, H, W) output of eval-mode `bn`: the distance of its
    input's per-row mean and biased variance (over positions) from `bn`'s running statistics. Shape: (R,)."""
    _, running_var, scale, bias = _affine(bn, y)
    flat = y.flatten(2)
    mean_gap = (flat.mean(-1) - bias) * scale  # mean(x) - running_mean
    var_x = flat.var(-1, unbiased=False) * scale**2
    return mean_gap.norm(dim=1) + (var_x - running_var).norm(dim=1)


def batchnorm_prior(model: nn.Module, *, first: float = 10.0, name: str | None = None) -> BatchNormPrior:
    """The BatchNorm-statistics prior of `model`: every `nn.BatchNorm2d` in definition order (the first weighted
    by `first`). `name`: the model's name in an ensemble (None: the only model).

    Raises:
        InvalidArgumentError: `model` has no BatchNorm2d with running statistics, or one has a zero weight.
    """
    if not isinstance(model, nn.Module):
        raise InvalidArgumentError(f"batchnorm_prior reads a model's BatchNorm layers: pass the nn.Module, "
                                   f"got {type(model).__name__}")
    found = [(path, m) for path, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    if not found or any(m.running_mean is None or m.running_var is None for _, m in found):
        what = "no BatchNorm2d layer" if not found else "a BatchNorm2d without running statistics"
        raise InvalidArgumentError(f"batchnorm_prior: {type(model).__name__} has {what}; the prior matches the "
                                   "running statistics BatchNorm layers keep")
    for path, m in found:
        if m.weight is not None and bool((m.weight.detach() == 0).any()):
            raise InvalidArgumentError(f"batchnorm_prior: BatchNorm {path!r} has a zero weight, so its output says "
                                       "nothing about its input there")
    return BatchNormPrior(tuple(p for p, _ in found), finite(first, "first"), check_model(name),
                          norms=tuple(m for _, m in found))
