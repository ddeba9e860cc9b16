"""Image sources: a folder, a list of files, a tensor or a dataset, as images in a fixed order loaded on demand.

`image_source(images, model, size)` reads what a user passes as "images" (to `dataset_examples`, the
`examples` command, the explore site) once, and gives an `ImageSource`: the images in a fixed order, at
one size and with the model's colour channels, loaded a batch at a time (`load(indices)`), so a pass
over thousands of files never holds them all. Files are resized so the short side fits and centre-cropped;
`dataset_examples.crops` cuts an example's box out of its source.

Example:
    >>> import torch, torch.nn as nn
    >>> source = image_source(torch.rand(5, 3, 16, 16), nn.Conv2d(3, 4, 3), size=8)
    >>> len(source), source.size, source.channels, tuple(source.load([0, 4]).shape), source.name(2)
    (5, (8, 8), 3, (2, 3, 8, 8), '#2')
"""
from __future__ import annotations

import dataclasses as dc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import ImageError
from .io.files import load_image
from .models.info import info_of

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dc.dataclass(frozen=True)
class ImageSource:
    """Images in a fixed order, loaded on demand at `size` with `channels` colour channels.

    `items` holds file paths (a folder's images, sorted by name) or is a tensor (N, C, H, W) in [0, 1].
    Files are resized so the short side fits and centre-cropped to `size`.
    """

    items: Any
    size: tuple[int, int]
    channels: int

    def __len__(self) -> int:
        return len(self.items)

    def load(self, indices: Sequence[int]) -> Tensor:
        """The images at `indices`, (len(indices), channels, H, W)."""
        if isinstance(self.items, Tensor):
            x = self.items[list(indices)].float()
            if x.shape[1] != self.channels:
                x = x.mean(1, keepdim=True) if self.channels == 1 else x.expand(-1, self.channels, -1, -1)
            if tuple(x.shape[-2:]) != self.size:
                x = F.interpolate(x, size=self.size, mode="bilinear", antialias=True, align_corners=False)
            return x.clamp(0, 1)
        return torch.cat([_load_fitted(self.items[i], self.size, self.channels) for i in indices])

    def name(self, index: int) -> str:
        """What example `index` is: a file name, or `#index` for a tensor."""
        return Path(self.items[index]).name if not isinstance(self.items, Tensor) else f"#{index}"


def _load_fitted(path: Any, size: tuple[int, int], channels: int) -> Tensor:
    x = load_image(path, channels=channels)
    h, w = x.shape[-2:]
    s = max(size[0] / h, size[1] / w)
    nh, nw = max(size[0], round(h * s)), max(size[1], round(w * s))
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - size[0]) // 2, (nw - size[1]) // 2
    return x[..., top:top + size[0], left:left + size[1]].clamp(0, 1)


def image_source(images: Any, model: nn.Module, size: int | tuple[int, int] | None = None) -> ImageSource:
    """`images` (a folder, a list of files, a tensor (N, C, H, W), or a dataset of tensors / (tensor, label)) as an
    `ImageSource`.

    The size is `size`, else the model's input size, else a tensor's own size, else 224; the channels are the model's.

    Raises:
        ImageError: a folder without images, or items that are not images.
    """
    info = info_of(model)
    own = tuple(images.shape[-2:]) if isinstance(images, Tensor) and images.dim() == 4 else (224, 224)
    hw = (size, size) if isinstance(size, int) else tuple(size) if size else tuple(info.input_size or own)
    channels = min(3, info.channels)
    if isinstance(images, (str, Path)):
        folder = Path(images)
        if not folder.is_dir():
            raise ImageError(f"{str(folder)!r} is not a folder of images")
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise ImageError(f"{str(folder)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return ImageSource(tuple(str(p) for p in files), hw, channels)  # type: ignore[arg-type]
    if isinstance(images, Tensor):
        if images.dim() != 4 or not images.is_floating_point() or images.shape[0] == 0:
            raise ImageError(
                f"an image tensor must be a non-empty float (N, C, H, W) batch in [0, 1], got {images.dtype} "
                f"{tuple(images.shape)}"
            )
        lo, hi = float(images.min()), float(images.max())
        if not (lo >= -1e-6 and hi <= 1 + 1e-6):  # 0-255 floats would be clamped to white, silently
            raise ImageError(f"image values must lie in [0, 1], got {lo:.4g}..{hi:.4g}; divide 0-255 data by 255")
        return ImageSource(images.detach().cpu(), hw, channels)  # type: ignore[arg-type]
    if isinstance(images, Sequence) and images and all(isinstance(p, (str, Path)) for p in images):
        return ImageSource(tuple(str(p) for p in images), hw, channels)  # type: ignore[arg-type]
    try:
        items = [item[0] if isinstance(item, (tuple, list)) else item for item in images]
        stacked = torch.stack([torch.as_tensor(t, dtype=torch.float32) for t in items])
    except (TypeError, RuntimeError, ValueError) as e:
        raise ImageError(
            f"cannot read images from a {type(images).__name__}: {e}; give a folder, files or a (N, C, H, W) tensor"
        ) from None
    return image_source(stacked, model, size)


__all__ = ["IMAGE_SUFFIXES", "ImageSource", "image_source"]
