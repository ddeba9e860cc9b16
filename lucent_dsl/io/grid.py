"""Tensors to PIL images, and tiles into one labelled grid (what atlases and batched renders save).

Example:
    >>> import torch
    >>> make_grid(torch.rand(4, 3, 8, 8), ncol=4, pad=1).size
    (37, 10)
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from ..errors import ImageError, InvalidArgumentError

_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def to_pil(images: Tensor) -> list[Image.Image]:
    """Convert a (B, C, H, W) or (C, H, W) float tensor in [0, 1] (clamped) to PIL images.

    C = 1, 3, 4 gives modes L, RGB, RGBA. NaN becomes 0.

    Example:
        >>> [im.mode for im in to_pil(torch.zeros(2, 1, 4, 4))]
        ['L', 'L']
    """
    x = images.detach().to("cpu", torch.float32)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] not in _MODES:
        raise ImageError(
            f"to_pil expects (B, C, H, W) or (C, H, W) with C in {{1, 3, 4}}, got shape {tuple(images.shape)}"
        )
    arr = (x.nan_to_num(0.0).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in arr]


def channel_tiles(images: Tensor) -> Tensor:
    """Each image of a (B, C, H, W) batch as tiles that any viewer shows: its RGB (channels 0-2, when C >= 3)
    and then every other channel as a grey tile, each (3, H, W). For images of models that read C != 3
    channels (RGB+NIR, hyperspectral), which a PNG cannot hold as they are (4 channels would read as alpha).

    Example:
        >>> channel_tiles(torch.rand(2, 4, 8, 8)).shape   # 2 images x (RGB + 1 grey)
        torch.Size([4, 3, 8, 8])
        >>> channel_tiles(torch.rand(1, 2, 8, 8)).shape   # 2 grey tiles
        torch.Size([2, 3, 8, 8])
    """
    if images.ndim != 4:
        raise ImageError(f"channel_tiles needs a (B, C, H, W) batch, got shape {tuple(images.shape)}")
    rgb = 3 if images.shape[1] >= 3 else 0
    per_image = ([images[:, :rgb]] if rgb else []) + [
        images[:, c : c + 1].expand(-1, 3, -1, -1) for c in range(rgb, images.shape[1])
    ]
    return torch.stack(per_image, 1).flatten(0, 1)


def make_grid(
    images: Tensor | Sequence[Image.Image],
    *,
    ncol: int | None = None,
    pad: int = 2,
    labels: Sequence[str] | None = None,
    background: int | tuple[int, ...] = 255,
) -> Image.Image:
    """Tile images into one, `ncol` columns (near-square by default), `pad` pixels around each tile.

    With `labels`, a strip of text in PIL's default font is drawn under each tile (too long
    labels are cut). Cell size is the largest tile; the grid is
    `ncol * w + (ncol + 1) * pad` wide and `nrow * (h + strip) + (nrow + 1) * pad` high.

    Example:
        >>> make_grid(torch.rand(4, 3, 8, 8), ncol=4, pad=1).size
        (37, 10)
    """
    tiles = to_pil(images) if isinstance(images, Tensor) else list(images)
    if not tiles:
        raise InvalidArgumentError("make_grid needs at least one image")
    if labels is not None and len(labels) != len(tiles):
        raise InvalidArgumentError(f"make_grid got {len(labels)} labels for {len(tiles)} images")
    if pad < 0 or (ncol is not None and ncol < 1):
        raise InvalidArgumentError(f"make_grid needs pad >= 0 and ncol >= 1, got pad={pad}, ncol={ncol}")
    ncol = min(ncol or math.ceil(math.sqrt(len(tiles))), len(tiles))
    nrow = math.ceil(len(tiles) / ncol)
    w, h = max(t.width for t in tiles), max(t.height for t in tiles)
    mode = _grid_mode({t.mode for t in tiles})
    bands = Image.getmodebands(mode)
    fill = (background,) * bands if isinstance(background, int) else tuple(background)
    grey = sum(fill[:3]) / len(fill[:3])
    ink = (0 if grey > 127 else 255,) * min(bands, 3) + (255,) * (bands == 4)  # opaque text
    font = ImageFont.load_default()
    strip = 0 if labels is None else int(font.getbbox("Ag|")[3]) + 4
    size = (ncol * w + (ncol + 1) * pad, nrow * (h + strip) + (nrow + 1) * pad)
    grid = Image.new(mode, size, fill if bands > 1 else fill[0])
    draw = ImageDraw.Draw(grid)
    for i, tile in enumerate(tiles):
        x, y = pad + (i % ncol) * (w + pad), pad + (i // ncol) * (h + strip + pad)
        grid.paste(tile.convert(mode), (x, y))
        if labels is not None:
            text = _fit(" ".join(str(labels[i]).split()), font, w)
            draw.text((x, y + h + 2), text, fill=ink if bands > 1 else ink[0], font=font)
    return grid


def _grid_mode(modes: set[str]) -> str:
    if len(modes) == 1 and modes <= set(_MODES.values()):
        return modes.pop()
    return "RGBA" if any("A" in m for m in modes) else "RGB"


def _fit(text: str, font: Any, width: int) -> str:
    """Cut `text` until it fits in `width` pixels, so a label never runs into its neighbour's."""
    while text and font.getlength(text) > width:
        text = text[:-1]
    return text
