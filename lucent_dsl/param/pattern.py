"""CPPN parameterization (Mordvintsev et al. 2018): a small network maps (x, y) to colour.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from ..args import check_int, check_size
from ..errors import InvalidArgumentError
from ..models.checks import generator_device
from ._common import ImageParam, randn

# --------------------------------------------------------------------------- CPPN


def _composite_activation(x: Tensor) -> Tensor:
    """Lucid's CPPN activation: atan(x) and atan(x)^2, each scaled to unit RMS on N(0, 1) inputs."""
    x = torch.atan(x)
    return torch.cat([x / 0.67, x * x / 0.6], -1)


def cppn(
    size: int | tuple[int, int],
    *,
    batch: int = 1,
    channels: int = 3,
    hidden: int = 24,
    layers: int = 8,
    normalize: bool = False,
) -> ImageParam:
    """Lucid's CPPN: a random-weight MLP maps each pixel's (x, y) to a colour.

    Coordinates span [-sqrt(3), sqrt(3)] on the longer side (unit variance; the shorter side keeps
    the aspect ratio). Each of `layers` hidden layers is linear -> [instance norm] -> Lucid's
    composite activation (atan and atan^2, so 2 * hidden features); the output layer is linear ->
    sigmoid and starts at zero (a grey image). Weights start as N(0, 1 / fan_in), biases at 0.
    CPPNs want smaller learning rates than pixel images (Lucid: Adam 0.004-0.005).

    Args:
        size: an int n for n x n, or (H, W).
        batch: images in the batch (each has its own MLP).
        channels: output colour channels.
        hidden: units per hidden layer.
        layers: hidden layers.
        normalize: normalize each hidden layer over the pixels (instance norm, no affine).

    Returns:
        an `ImageParam` whose leaves are `{"w0": (B, 2, hidden), "b0": (B, 1, hidden), "w1": (B, 2 * hidden,
        hidden), ..., "w{layers}": (B, 2 * hidden, channels), "b{layers}": (B, 1, channels)}`, with `at_size`:
        the trained leaves draw the same pattern at any size (the longer side spans the same coordinates).

    Shape:
        to_image: leaves -> (B, channels, H, W)

    Example:
        >>> import torch
        >>> p = cppn((8, 12), layers=2)
        >>> sorted(p.init(torch.Generator().manual_seed(0)))
        ['b0', 'b1', 'b2', 'w0', 'w1', 'w2']
        >>> float(p.to_image(p.init(None)).detach().std())  # the output layer starts at zero: plain grey
        0.0
        >>> p.at_size((32, 48)).to_image(p.init(None)).shape  # the same leaves, drawn at another size
        torch.Size([1, 3, 32, 48])
    """
    h, w = check_size(size)
    batch, channels = check_int("batch", batch), check_int("channels", channels)
    hidden, layers = check_int("hidden", hidden), check_int("layers", layers, minimum=0)
    if not isinstance(normalize, bool):
        raise InvalidArgumentError(f"normalize must be True or False, got {normalize!r}")
    r = math.sqrt(3.0)
    side = max(h, w)
    ys = torch.linspace(-r, r, side)[(side - h) // 2:(side - h) // 2 + h] if h > 1 else torch.zeros(1)
    xs = torch.linspace(-r, r, side)[(side - w) // 2:(side - w) // 2 + w] if w > 1 else torch.zeros(1)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    coords = torch.stack([gx, gy], -1).reshape(1, h * w, 2)
    fans = [2] + [2 * hidden] * layers
    outs = [hidden] * layers + [channels]

    def init(generator: torch.Generator | None) -> dict[str, Tensor]:
        dev = generator_device(generator)
        leaves = {}
        for i, (fan, out) in enumerate(zip(fans, outs)):
            sd = 0.0 if i == layers else math.sqrt(1.0 / fan)
            leaves[f"w{i}"] = randn((batch, fan, out), generator, sd) if sd else torch.zeros(
                (batch, fan, out), device=dev, requires_grad=True)
            leaves[f"b{i}"] = torch.zeros((batch, 1, out), device=dev, requires_grad=True)
        return leaves

    def to_image(leaves: Mapping[str, Tensor]) -> Tensor:
        x = coords.to(leaves["w0"].device, leaves["w0"].dtype).expand(batch, -1, -1)
        for i in range(layers):
            x = torch.baddbmm(leaves[f"b{i}"], x, leaves[f"w{i}"])
            if normalize:
                x = (x - x.mean(1, keepdim=True)) / (x.var(1, keepdim=True, unbiased=False) + 1e-5).sqrt()
            x = _composite_activation(x)
        x = torch.sigmoid(torch.baddbmm(leaves[f"b{layers}"], x, leaves[f"w{layers}"]))
        return x.transpose(1, 2).reshape(batch, channels, h, w)

    def at_size(other: tuple[int, int]) -> ImageParam:  # the same network, sampled on another grid
        return cppn(other, batch=batch, channels=channels, hidden=hidden, layers=layers, normalize=normalize)

    return ImageParam(init, to_image, at_size=at_size)
