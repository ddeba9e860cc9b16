"""Recipes: research methods written as objectives + `render`, each a thin function.

- `activations(model, image, layers)`: one frozen, untransformed forward; what the recipes match.
- `caricature(model, image, layers)`: for each layer, an image whose activations there match the
  given image's (Lucid's caricatures / feature inversion), all layers in one batched render.
- `feature_inversion(...)`: `caricature` with `cossim_pow=0` (a pure dot product).
- `accentuate(model, image, objective)`: feature accentuation (Hamblin et al. 2024): start from
  the natural image and push `objective` while an l2 penalty keeps the image, or its activations
  at one layer, close to where it started.

Transforms are *paired*: when a recipe compares the render with the source image at some layer,
and `transforms` are given, the source image becomes image 0 of the render, the same random draw
is applied to it and to every rendered image, and the comparison is made with the *transformed*
source's activations at each step (as Lucid's caricature does). Without transforms (the default)
the source's activations are computed once. Either way the source is not part of the result.

Example:
    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
    >>> image = torch.rand(1, 3, 12, 12)
    >>> r = caricature(net, image, ["0", "2"], steps=4, start="image", progress=False)
    >>> r.images.shape  # one image per layer
    torch.Size([2, 3, 12, 12])
"""
from __future__ import annotations

import dataclasses as dc
import numbers
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils import _pytree as pytree

from .. import param as param_lib, transforms as tf_lib
from ..dsl.expr import Expr, Term, map_terms, sum_of
from ..dsl.parser import parse
from ..errors import InvalidArgumentError
from ..models.info import device_of, info_of
from ..objectives import SourceL2, SourceMatch, activation_match, check_layer, l2
from ..plan.forward import read_layers
from ..renderer.phases import RenderResult, render

__all__ = ["accentuate", "activations", "caricature", "feature_inversion"]

STARTS = ("noise", "image")
ImageLike = Tensor | np.ndarray | Image.Image | str | os.PathLike


# --- inputs ------------------------------------------------------------------------------------------


def _image(model: nn.Module, image: ImageLike, size: Any) -> Tensor:
    """One image as (1, C, H, W) in [0, 1]: C = 1 for grey models, else 3; `size` None: the model's input size."""
    from ..io.files import load_image

    info = info_of(model)
    if isinstance(image, Tensor) and image.dim() == 4 and image.shape[0] != 1:
        raise InvalidArgumentError(f"recipes take one image, (1, C, H, W) or (C, H, W); got shape {tuple(image.shape)}")
    channels = 1 if info.channels == 1 else 3
    x = load_image(image, channels=channels)
    size = info.input_size if size is None else size
    hw = (size, size) if isinstance(size, int) else None if size is None else tuple(size)
    if hw is not None and tuple(x.shape[-2:]) != hw:
        x = load_image(x, size=hw, channels=channels)
    return x


def layer_names(layers: Any) -> tuple[str, ...]:
    """One layer name or a non-empty list of them, checked, as a tuple."""
    if isinstance(layers, str):
        return (check_layer(layers),)
    if not isinstance(layers, Sequence) or not layers:
        raise InvalidArgumentError(f"layers must be a non-empty list of layer names, got {layers!r}")
    return tuple(check_layer(x) for x in layers)


def activations(model: nn.Module, image: Tensor, layers: str | Sequence[str]) -> dict[str, Tensor]:
    """Activations of `image` at `layers`: one forward with the model's preprocessing, no transforms.

    The model runs frozen (eval mode, as in a render) and truncated after the deepest layer, under
    `torch.no_grad()`; its state is left as it was.

    Args:
        model: an `nn.Module` (its `ModelInfo`, if any, gives the preprocessing).
        image: (B, C, H, W) in [0, 1].
        layers: layer names (dotted module paths, "@output", "@input").

    Returns:
        layer name -> activation tensor (B, ...), on the model's device.

    Example:
        >>> import torch, torch.nn as nn
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> activations(net, torch.rand(2, 3, 8, 8), ["0"])["0"].shape
        torch.Size([2, 4, 6, 6])
    """
    names = layer_names(layers)
    if not isinstance(image, Tensor) or image.dim() != 4:
        raise InvalidArgumentError(
            f"image must be a (B, C, H, W) tensor in [0, 1], got {getattr(image, 'shape', image)!r}"
        )
    return read_layers(model, image, names)


# --- paired transforms: the source image rides along as image 0 ------------------------------------------


def _with_source(p: param_lib.ImageParam, source: Tensor) -> param_lib.ImageParam:
    """`p` with `source` (1, C, H, W) prepended to its images: image 0 is the source, a constant."""
    def to_image(leaves: Any) -> Tensor:
        img = p.to_image(leaves)
        return torch.cat([source.to(img.device, img.dtype), img])

    return param_lib.ImageParam(p.init, to_image)


def _shared(t: tf_lib.Transform) -> tf_lib.Transform:
    """`t` with one random draw shared by every image of the batch (crops: crop k is the same for all)."""
    def sample(g: torch.Generator | None, shape: torch.Size) -> Any:
        one = t.sample(g, torch.Size((1, *shape[1:])))
        # rows are crop-major (row k*B + b is crop k of image b): row k of the 1-image draw goes to all b
        return pytree.tree_map(
            lambda v: v.repeat_interleave(shape[0], 0) if isinstance(v, Tensor) and v.dim() else v, one
        )

    return tf_lib.Transform(sample, t.apply)


def _shift_batch(e: Expr) -> Expr:
    """`e` with every `batch=` index moved up by one (image 0 is the source in a paired render)."""
    def shift(t: Term) -> Term:
        b = getattr(t, "batch", None)
        if isinstance(b, int):
            return dc.replace(t, batch=b + 1)  # type: ignore[type-var]
        if isinstance(b, range):
            return dc.replace(t, batch=range(b.start + 1, b.stop + 1, b.step))  # type: ignore[type-var]
        return t

    return map_terms(e, shift)


def _drop_source(r: RenderResult) -> RenderResult:
    return dc.replace(
        r,
        images=r.images[1:],
        snapshots={k: v[1:] for k, v in r.snapshots.items()},
        history={k: v[:, 1:] for k, v in r.history.items()},
    )


def _transform(transforms: Any) -> tf_lib.Transform | None:
    """None or [] (no transforms) -> None; anything else -> one Transform (see `transforms.as_transform_arg`)."""
    if transforms is None or (isinstance(transforms, (list, tuple)) and not transforms):
        return None
    return tf_lib.as_transform_arg(transforms)


def _check_kw(render_kw: dict[str, Any]) -> None:
    taken = sorted(set(render_kw) & {"param", "batch", "size", "models"})
    if taken:
        raise InvalidArgumentError(
            f"the recipe sets {', '.join(taken)} itself; use its own arguments (size=, param_kind=, start=)"
        )


def _param(kind: str, image: Tensor, n: int, init: Tensor | None, param_kw: dict[str, Any]) -> param_lib.ImageParam:
    _, c, h, w = image.shape
    return param_lib.image((h, w), kind=kind, batch=n, channels=c, init=init, **param_kw)


# --- caricature -----------------------------------------------------------------------------------------


def caricature(
    model: nn.Module,
    image: ImageLike,
    layers: str | Sequence[str],
    *,
    steps: int = 256,
    size: int | tuple[int, int] | None = None,
    cossim_pow: float = 1.0,
    start: str = "noise",
    param_kind: str = "fft",
    transforms: Any = None,
    extra: Expr | None = None,
    seed: int = 0,
    progress: bool = True,
    param_kw: dict[str, Any] | None = None,
    **render_kw: Any,
) -> RenderResult:
    """Caricatures: for each layer, an image whose activations there match `image`'s.

    Image `i` of the result maximizes `activation_match(layers[i], target_i, cossim_pow=cossim_pow,
    batch=i)`, where `target_i` is `image`'s activation at `layers[i]` from one forward of the
    preprocessed image (`activations`). All layers render together in one batched render; the
    model runs once per step, truncated after the deepest layer. With `cossim_pow > 0` the match
    rewards the direction of the activations more than their size, so features the layer responds
    to get exaggerated: a caricature of what the model sees at that depth.

    Args:
        model: an `nn.Module`; its `ModelInfo` gives the preprocessing.
        image: the image to caricature, (1, C, H, W) or (C, H, W) in [0, 1], or anything
            `io.load_image` reads (a path, PIL image, array).
        layers: one layer name or a list of them (one image each).
        steps: optimization steps.
        size: (H, W) or an int; the image is resized to it. None: the model's `input_size`, else the
            image's own size.
        cossim_pow: exponent of the cosine factor; 0 is a plain dot product (`feature_inversion`).
        start: "noise" (a random image) or "image" (the parameterization starts at `image`).
        param_kind: "fft" or "pixel" (see `param.image`).
        transforms: None for none (the default), or a `Transform`/list of them, applied *paired*:
            the source image joins the render as image 0, every image gets the same random draw,
            and each target is recomputed from the transformed source at every step.
        extra: an objective added for every image, e.g. `-0.05 * ld.blur()` (shifted past the
            source when paired).
        seed: seeds the initial noise and the transforms.
        progress: show a progress bar.
        param_kw: more options for the parameterization (`decorrelate=`, `squash=`, `sd=`).
        **render_kw: passed to `render` (`lr=`, `optimizer=`, `thresholds=`, `device=`, ...).

    Returns:
        A `RenderResult` with one image per layer, in the order of `layers`; its history has one
        column per layer too.

    Raises:
        InvalidArgumentError, LayerNotFoundError, ObjectiveShapeError: before any step.

    Shape:
        image: (1, C, H, W) -> images: (len(layers), C, *size)

    Example:
        >>> import torch, torch.nn as nn
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
        >>> r = caricature(net, torch.rand(1, 3, 12, 12), ["0", "2"], steps=3, progress=False)
        >>> list(r.plan.history_labels.values())[1][:30]  # display labels abbreviate large tensors to a digest
        "activation_match('2', tensor(<"
        >>> list(r.history)[1][:30]  # history keys are full DSL text: parse(key) gives the summand back
        "activation_match('2', tensor(["

    See also:
        `feature_inversion`, `activations`, `objectives.activation_match`.
    """
    if start not in STARTS:
        raise InvalidArgumentError(f"start must be one of {STARTS}, got {start!r}")
    if isinstance(cossim_pow, bool) or not isinstance(cossim_pow, numbers.Real):
        raise InvalidArgumentError(f"cossim_pow must be a number, got {cossim_pow!r}")
    _check_kw(render_kw)
    render_kw.setdefault("preset", "lucid")  # the method's own settings, not what render's "auto" picks
    names = layer_names(layers)
    source = _image(model, image, size).to(device_of(model))
    n = len(names)
    init = source.cpu() if start == "image" else None
    p = _param(param_kind, source, n, init, dict(param_kw or {}))
    t = _transform(transforms)
    if t is None:
        targets = activations(model, source, names)
        objective: Expr = sum_of(
            activation_match(name, targets[name][0], cossim_pow=float(cossim_pow), batch=i)
            for i, name in enumerate(names)
        )
        if extra is not None:
            objective = objective + extra
        return render(objective, model, param=p, transforms=[], steps=steps, seed=seed, progress=progress, **render_kw)
    objective = sum_of(SourceMatch(name, float(cossim_pow), i + 1) for i, name in enumerate(names))
    if extra is not None:
        objective = objective + _shift_batch(extra)
    r = render(objective, model, param=_with_source(p, source), transforms=_shared(t), steps=steps, seed=seed,
               progress=progress, **render_kw)
    return _drop_source(r)


def feature_inversion(model: nn.Module, image: ImageLike, layers: str | Sequence[str], **kw: Any) -> RenderResult:
    """Feature inversion: exactly `caricature(model, image, layers, cossim_pow=0.0, **kw)`.

    With `cossim_pow=0` the match is a plain dot product with the target activations (Lucid's
    `feature_inversion`). Lucid also blurs the input each step; pass `extra=-0.05 * ld.blur()`
    (or another penalty) for that.
    """
    kw.setdefault("cossim_pow", 0.0)
    return caricature(model, image, layers, **kw)


# --- feature accentuation ----------------------------------------------------------------------------


def accentuate(
    model: nn.Module,
    image: ImageLike,
    objective: Expr | str,
    *,
    steps: int = 128,
    l2_weight: float = 1.0,
    layer: str | None = None,
    size: int | tuple[int, int] | None = None,
    param_kind: str = "fft",
    transforms: Any = None,
    seed: int = 0,
    progress: bool = True,
    param_kw: dict[str, Any] | None = None,
    **render_kw: Any,
) -> RenderResult:
    """Feature accentuation (Hamblin, Fel, Saha, Konkle, Alvarez 2024): push `objective` on a natural image.

    Starts from `image` (the parameterization's `init`) and maximizes

        objective - l2_weight * mean((x - x0)^2) / mean(x0^2)

    where `x` is the rendered image (`layer=None`) or its activations at `layer`, and `x0` is the
    same for `image`. The penalty is relative (divided by the mean square of `x0`), so
    `l2_weight=1` costs one unit of objective for a change as large as the whole signal; the
    objective's own scale (a logit, a channel mean) sets how far the image moves.

    Args:
        model: an `nn.Module`; its `ModelInfo` gives the preprocessing.
        image: (1, C, H, W) or (C, H, W) in [0, 1], or anything `io.load_image` reads.
        objective: an expression (or DSL text) on `model`, e.g. `ld.class_logit("tabby")`.
        steps: optimization steps.
        l2_weight: weight of the relative l2 penalty (>= 0; 0 is an unconstrained render from the image).
        layer: None to keep the pixels close (`l2(target=image)`), or a layer name to keep that
            layer's activations close (`l2(layer=layer, target=activations)`).
        size: (H, W) or an int; the image is resized to it. None: the model's `input_size`, else the image's.
        param_kind: "fft" or "pixel".
        transforms: None for none (the default), or a `Transform`/list of them. With `layer`, they
            are paired: the source image gets the same draw and the penalty compares with its
            transformed activations at every step.
        seed: seeds the transforms.
        progress: show a progress bar.
        param_kw: more options for the parameterization (`decorrelate=`, `squash=`).
        **render_kw: passed to `render` (`lr=`, `optimizer=`, `thresholds=`, ...).

    Returns:
        A `RenderResult` with one image; the history has the objective's terms and the penalty.

    Example:
        >>> import torch, torch.nn as nn
        >>> import lucent_dsl as ld
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
        >>> r = accentuate(net, torch.rand(1, 3, 12, 12), ld.channel("2", 1), steps=3, progress=False)
        >>> r.images.shape
        torch.Size([1, 3, 12, 12])
    """
    if isinstance(objective, str):
        objective = parse(objective)
    if not isinstance(objective, Expr):
        raise InvalidArgumentError(f"objective must be an expression or DSL text, got {type(objective).__name__}")
    if isinstance(l2_weight, bool) or not isinstance(l2_weight, numbers.Real) or not 0 <= l2_weight < float("inf"):
        raise InvalidArgumentError(f"l2_weight must be a finite number >= 0, got {l2_weight!r}")
    _check_kw(render_kw)
    render_kw.setdefault("preset", "lucid")  # the method's own settings, not what render's "auto" picks
    source = _image(model, image, size).to(device_of(model))
    p = _param(param_kind, source, 1, source.cpu(), dict(param_kw or {}))
    t = _transform(transforms)
    weight = float(l2_weight)
    if weight == 0:
        return render(objective, model, param=p, transforms=t or [], steps=steps, seed=seed, progress=progress,
                      **render_kw)
    if layer is None:
        penalty = l2(target=source[0].cpu()) * (weight / max(float(source.pow(2).mean()), 1e-12))
        return render(objective - penalty, model, param=p, transforms=t or [], steps=steps, seed=seed,
                      progress=progress, **render_kw)
    target = activations(model, source, [layer])[layer]
    scale = weight / max(float(target.pow(2).mean()), 1e-12)
    if t is None:
        penalty = l2(layer=layer, target=target[0]) * scale
        return render(objective - penalty, model, param=p, transforms=[], steps=steps, seed=seed,
                      progress=progress, **render_kw)
    paired = _shift_batch(objective) - SourceL2(check_layer(layer), 1) * scale
    r = render(paired, model, param=_with_source(p, source), transforms=_shared(t), steps=steps, seed=seed,
               progress=progress, **render_kw)
    return _drop_source(r)
