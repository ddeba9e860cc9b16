"""Style transfer and texture synthesis (Gatys, Ecker, Bethge 2015, 2016) as objectives + `render`.

`texture(model, style, layers)` renders an image whose Gram matrices at `layers` match the
style image's (`objectives.style`); `style_transfer(model, content, style, layers)` adds a
content term that keeps one layer's activations close to the content image's, and starts from
the content image. Both are one `render`: the objective is printable DSL text, like any other.

Example:
    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
    >>> r = texture(net, torch.rand(1, 3, 16, 16), ["1", "3"], steps=3, progress=False)
    >>> r.images.shape
    torch.Size([1, 3, 16, 16])
"""
from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .. import param as param_lib
from ..dsl.expr import Expr, sum_of
from ..errors import InvalidArgumentError
from ..io.files import load_image
from ..models.info import device_of
from ..objectives import check_layer, l2
from ..objectives.gram import gram, gram_distance, image_gram, style
from ..renderer.phases import RenderResult, render
from ._common import as_rows, has_input_size, image_channels, model_size
from .inversion import activations, layer_names

STARTS = ("content", "noise")


def _weight(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0 <= float(v) < float("inf"):
        raise InvalidArgumentError(f"{name} must be a finite number >= 0, got {v!r}")
    return float(v)


def style_objective(model: nn.Module, style_image: Any, layers: str | Sequence[str], *, weight: float = 1.0) -> Expr:
    """`weight / len(layers) * sum(style(layer, style_image))` with every Gram matrix computed once on `model`.

    Example:
        >>> import torch, torch.nn as nn
        >>> net = nn.Sequential(nn.Conv2d(3, 2, 1))
        >>> style_objective(net, torch.rand(1, 3, 8, 8), "0").gram.shape
        (2, 2)
    """
    names = layer_names(layers)
    w = _weight("style weight", weight) / len(names)
    return sum_of(w * style(name, image_gram(model, style_image, name)) for name in names)


def gram_distances(model: nn.Module, images: Tensor, style_image: Any, layers: str | Sequence[str]) -> Tensor:
    """`style`'s distance |G - G_style|^2 / |G_style|^2 of each image at each layer: (N, len(layers))."""
    names = layer_names(layers)
    acts = activations(model, images.to(device_of(model)), list(names))
    out = []
    for name in names:
        target = image_gram(model, style_image, name).double()
        out.append(gram_distance(gram(as_rows(acts[name], name).double().cpu()), target[None]))
    return torch.stack(out, 1).float()


def texture(
    model: nn.Module,
    style_image: Any,
    layers: str | Sequence[str],
    *,
    size: int | tuple[int, int] | None = None,
    steps: int = 256,
    batch: int = 1,
    transforms: Any = (),
    seed: int = 0,
    progress: bool = True,
    **render_kw: Any,
) -> RenderResult:
    """Texture synthesis: from noise, match `style_image`'s Gram matrices at `layers` (equal weights).

    Args:
        size: the texture's size (default: the model's input size, else the style image's); the
            style image keeps its own size.
        transforms: none by default, as Gatys et al.; `transforms.standard()` pads with grey, and
            that border enters every Gram matrix (measured: at 96 px, 64 steps, the distance fell 1.1-3x
            with it and 5.9-9x without it on MobileNetV2's features.2/4/7). Reflection-padded jitter
            (`[transforms.jitter(4)]`) is harmless.
        **render_kw: passed to `render` (`lr=`, `param=`, `optimizer=`, ...).
    """
    objective = style_objective(model, style_image, layers)
    if size is None and not has_input_size(model):
        h, w = load_image(style_image, channels=image_channels(model)).shape[-2:]
        size = (h, w)
    render_kw.setdefault("preset", "lucid")  # the method's own settings, not what render's "auto" picks
    return render(objective, model, size=model_size(model, size), steps=steps, batch=batch, transforms=transforms,
                  seed=seed, progress=progress, **render_kw)


def style_transfer(
    model: nn.Module,
    content: Any,
    style_image: Any,
    layers: str | Sequence[str],
    *,
    content_layer: str | None = None,
    style_weight: float = 1.0,
    content_weight: float = 1.0,
    size: int | tuple[int, int] | None = None,
    start: str = "content",
    steps: int = 256,
    seed: int = 0,
    progress: bool = True,
    param_kw: dict[str, Any] | None = None,
    **render_kw: Any,
) -> RenderResult:
    """Gatys style transfer: `content`'s layout with `style_image`'s texture, in one render.

    Maximizes `style_weight * mean over layers of style(layer, style_image) - content_weight *
    mean((a - a_content)^2) / mean(a_content^2)` where `a` is the activation at `content_layer` (default:
    the deepest style layer). Both parts are relative, so weight 1 for each balances "one whole
    Gram matrix" against "one whole activation". No random transforms: the content term compares
    positions, which a shift would misalign.

    Args:
        model: an `nn.Module`; its `ModelInfo` gives the preprocessing.
        content: the content image ((1, C, H, W), (C, H, W) in [0, 1], a path, a PIL image); it is
            resized to `size` (default: the model's input size, else its own size).
        style_image: the style image (any size).
        layers: the style layers.
        start: "content" (start from the content image, as usual) or "noise".
        param_kw: options of `param.image` (`kind="pixel"`, `decorrelate=`, ...).
        **render_kw: passed to `render` (`lr=`, `optimizer=`, `thresholds=`, ...).

    Raises:
        InvalidArgumentError, LayerNotFoundError: before any step.
    """
    names = layer_names(layers)
    if start not in STARTS:
        raise InvalidArgumentError(f"start must be one of {STARTS}, got {start!r}")
    if "transforms" in render_kw:
        raise InvalidArgumentError("style_transfer renders without random transforms (the content term compares "
                                   "positions); use texture(...) for a transformed render without content")
    channels = image_channels(model)
    x = load_image(content, channels=channels)
    hw = model_size(model, size) if size is not None or has_input_size(model) else (x.shape[-2], x.shape[-1])
    x = load_image(x, size=hw, channels=channels) if tuple(x.shape[-2:]) != hw else x
    where = check_layer(content_layer) if content_layer is not None else names[-1]
    target = activations(model, x.to(device_of(model)), [where])[where]
    scale = _weight("content_weight", content_weight) / max(float(target.pow(2).mean()), 1e-12)
    objective = style_objective(model, style_image, names, weight=style_weight)
    if scale > 0:
        objective = objective - scale * l2(layer=where, target=target[0].cpu())
    p = param_lib.image(hw, channels=channels, init=x if start == "content" else None, **dict(param_kw or {}))
    render_kw.setdefault("preset", "lucid")
    return render(objective, model, param=p, transforms=[], steps=steps, seed=seed, progress=progress, **render_kw)
