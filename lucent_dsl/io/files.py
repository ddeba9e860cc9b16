"""Images in and out: every file format lucent_dsl reads or writes lives here.

Writes are atomic (`atomic_write`, from `io.atomic`): a crash or Ctrl-C mid-save never leaves a
half-written PNG where a good one was, and what a killed writer left is removed by the next write.
A render's recipe travels inside its image as metadata under `RECIPE_KEY` (PNG text chunks; a JPEG
comment or WebP XMP with `save_image`), so an image can be reproduced from the file alone;
`read_metadata` reads it without decoding a single pixel.

Input images are checked before their pixels are decoded: at most `MAX_IMAGE_PIXELS` pixels (a
164 KB PNG can claim 13000 x 13000), and PIL's errors become `ImageError`. 32-bit integer images
are read as 16-bit data when their values fit, else refused (never clipped to white).

Conventions: tensors are channels-first, (B, C, H, W) or (C, H, W), float in [0, 1];
numpy arrays are channels-last, (H, W) or (H, W, C), as PIL and imageio give them.

Example:
    >>> import torch
    >>> grid = make_grid(torch.rand(5, 3, 8, 8), pad=2)
    >>> grid.size  # 3 columns x 2 rows of 8-pixel tiles, 2 pixels around each
    (32, 22)
"""
from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, PngImagePlugin
from torch import Tensor

from ..errors import ImageError, InvalidArgumentError
from . import metadata as _meta
from .atomic import atomic_write as atomic_write, remove_stale_temps as remove_stale_temps
from .grid import make_grid, to_pil

RECIPE_KEY = "lucent_dsl.recipe"
"""PNG metadata key holding the JSON recipe (objective, model, seed, ...) of a render."""
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
"""What `save_image` writes, by extension."""
MAX_IMAGE_PIXELS = 64_000_000
"""The largest input image read (width x height), checked before its pixels are decoded."""

ImageLike = Tensor | Image.Image | Sequence[Image.Image]
_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, the weights PIL's convert("L") uses
_ACCEPTED = (
    "a path, a PIL image, a numpy array (H, W) or (H, W, C) with C in {1, 3, 4}, "
    "or a tensor (H, W), (C, H, W) or (1, C, H, W)"
)


def _as_image(image: ImageLike) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    tiles = to_pil(image) if isinstance(image, Tensor) else list(image)
    return tiles[0] if len(tiles) == 1 else make_grid(tiles)


def _png_info(metadata: Mapping[str, str] | None) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    for key, value in (metadata or {}).items():
        if not (isinstance(key, str) and 0 < len(key) < 80 and key.isprintable() and max(map(ord, key)) < 256):
            raise InvalidArgumentError(f"PNG metadata key {key!r} must be 1-79 printable Latin-1 characters")
        if not isinstance(value, str):
            raise InvalidArgumentError(f"PNG metadata value for {key!r} must be str, got {type(value).__name__}")
        info.add_text(key, value, zip=len(value) > 1024)
    return info


def save_png(path: str | os.PathLike[str], image: ImageLike, *, metadata: Mapping[str, str] | None = None) -> None:
    """Save a tensor batch (a grid if B > 1), a PIL image or a list of them as a PNG, atomically.

    `metadata` is written as PNG text chunks (iTXt when not Latin-1, compressed when long);
    read it back with `read_png_metadata`. Keys are 1-79 Latin-1 characters.

    Example:
        >>> import tempfile, json, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.png"
        >>> save_png(p, torch.rand(3, 8, 8), metadata={RECIPE_KEY: json.dumps({"steps": 8})})
        >>> read_png_metadata(p)
        {'lucent_dsl.recipe': '{"steps": 8}'}
    """
    info = _png_info(metadata)
    pil = _as_image(image)
    with atomic_write(path) as f:
        pil.save(f, format="PNG", pnginfo=info)


def image_format(path: str | os.PathLike[str]) -> str:
    """The format `save_image` writes for `path`'s extension: "PNG", "JPEG" or "WEBP".

    Raises:
        InvalidArgumentError: another extension (the message lists the ones written).

    Example:
        >>> image_format("a.JPG"), image_format("b.webp")
        ('JPEG', 'WEBP')
    """
    suffix = Path(path).suffix.lower()
    if suffix not in IMAGE_FORMATS:
        raise InvalidArgumentError(
            f"cannot write {str(path)!r}: lucent_dsl writes images as {', '.join(IMAGE_FORMATS)} "
            f"(the extension names the format), not {suffix or 'a file without an extension'!r}"
        )
    return IMAGE_FORMATS[suffix]


def save_image(path: str | os.PathLike[str], image: ImageLike, *, metadata: Mapping[str, str] | None = None) -> None:
    """Save in the format the extension names (`image_format`), atomically, with `metadata`.

    PNG: text chunks (`save_png`). JPEG (quality 95, no chroma subsampling; no alpha): the metadata
    as JSON in a comment segment. WebP (lossless): the metadata as JSON in an XMP packet.
    `read_metadata` reads all three back.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.jpg"
        >>> save_image(p, torch.rand(3, 8, 8), metadata={RECIPE_KEY: "{}"})
        >>> read_metadata(p)
        {'lucent_dsl.recipe': '{}'}
    """
    fmt = image_format(path)
    if fmt == "PNG":
        return save_png(path, image, metadata=metadata)
    _png_info(metadata)  # the same key and value rules everywhere
    pil = _as_image(image)
    if fmt == "JPEG":
        if "A" in pil.mode:
            raise InvalidArgumentError(f"cannot write {str(path)!r}: JPEG has no alpha channel; write a .png or .webp")
        kwargs: dict[str, Any] = {"quality": 95, "subsampling": 0, "comment": _meta.encode_json_comment(metadata or {})}
    else:
        kwargs = {"lossless": True, "xmp": _meta.encode_xmp(metadata or {})}
    with atomic_write(path) as f:
        pil.save(f, format=fmt, **kwargs)


def read_png_metadata(path: str | os.PathLike[str], *, verify: bool = False) -> dict[str, str]:
    """Return the text chunks of a PNG as a dict (see `save_png` for an example), without decoding
    its pixels; `verify` also checks every chunk's checksum.

    Raises:
        ImageError: a missing, damaged or non-PNG file.
    """
    kind = _sniff(path)
    if kind != "PNG":
        raise ImageError(f"'{path}' is a {kind or 'non-image'} file, not a PNG; only PNGs carry lucent_dsl metadata")
    return _meta.png_text(path, verify=verify)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The metadata `save_image` wrote: PNG text chunks, a JPEG comment or WebP XMP; pixels are not decoded.

    Raises:
        ImageError: a missing or damaged file, or not a PNG, JPEG or WebP.
    """
    kind = _sniff(path)
    if kind == "PNG":
        return _meta.png_text(path)
    if kind is None:
        raise ImageError(
            f"'{path}' is not a PNG, JPEG or WebP file; those are the images that carry lucent_dsl metadata"
        )
    with _lazy(path) as im:
        if kind == "JPEG":
            return _meta.decode_json_comment(im.info.get("comment"))
        return _meta.decode_xmp(im.info.get("xmp"))


def _sniff(path: str | os.PathLike[str]) -> str | None:
    try:
        return _meta.sniff(path)
    except OSError as e:
        raise ImageError(f"cannot read image file '{path}': {e}") from None


def save_gif(
    path: str | os.PathLike[str], frames: Sequence[ImageLike], *, duration_ms: int = 100, loop: int = 0
) -> None:
    """Save frames (tensors or PIL images; a batch becomes a grid) as an animated GIF, atomically.

    All frames must have the same size. `loop=0` loops forever. GIF holds 256 colours per frame
    and no alpha, so frames are converted to RGB and quantized; PIL merges identical consecutive
    frames into one longer frame.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.gif"
        >>> save_gif(p, [torch.full((3, 4, 4), v) for v in (0.0, 0.5, 1.0)])
        >>> with Image.open(p) as im:
        ...     im.n_frames
        3
    """
    pils = [_as_image(f).convert("RGB") for f in frames]
    if not pils:
        raise InvalidArgumentError("save_gif needs at least one frame")
    if len({p.size for p in pils}) > 1:
        raise InvalidArgumentError(f"save_gif frames must share one size, got {sorted({p.size for p in pils})}")
    with atomic_write(path) as f:
        pils[0].save(f, format="GIF", save_all=True, append_images=pils[1:], duration=duration_ms, loop=loop)


@contextlib.contextmanager
def _lazy(path: str | os.PathLike[str]) -> Iterator[Image.Image]:
    """The image opened (header only, pixels not decoded), its size checked against `MAX_IMAGE_PIXELS`."""
    im = None
    _meta.check_regular_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below, with our own limit
            im = Image.open(path)
    except Image.DecompressionBombError as e:
        raise ImageError(f"{path} is too large ({e}); lucent_dsl reads images of at most {MAX_IMAGE_PIXELS / 1e6:.1f} "
                         "million pixels (lucent_dsl.io.MAX_IMAGE_PIXELS): shrink it first") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(
            f"cannot read image file '{path}': {e}. Accepted: any format PIL reads (PNG, JPEG, GIF, ...)"
        ) from None
    with im:
        check_image_size(im.width, im.height, str(path))
        yield im


def check_image_size(width: int, height: int, what: str = "the image") -> None:
    """Refuse an image of more than `MAX_IMAGE_PIXELS` pixels, before its pixels are decoded.

    Example:
        >>> check_image_size(13000, 13000, "big.png")
        Traceback (most recent call last):
        ...
        lucent_dsl.errors.ImageError: big.png is 13000 x 13000 = 169.0 million pixels; lucent_dsl reads ...
    """
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageError(
            f"{what} is {width} x {height} = {width * height / 1e6:.1f} million pixels; lucent_dsl reads images of "
            f"at most {MAX_IMAGE_PIXELS / 1e6:.1f} million pixels (lucent_dsl.io.MAX_IMAGE_PIXELS): shrink it first"
        )


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(height, width) of an image file, read from its header (pixels are not decoded).

    Raises:
        ImageError: unreadable, or larger than `MAX_IMAGE_PIXELS`.
    """
    with _lazy(path) as im:
        return im.height, im.width


def _decode(im: Image.Image, path: Any) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # `_lazy` checked the size
            im.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageError(
            f"cannot read image file '{path}': {e}. Accepted: any format PIL reads (PNG, JPEG, GIF, ...)"
        ) from None


def _from_pil(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16L", "I;16B", "F"):
        return np.asarray(im)  # 16-bit / float data: keep precision, the array path scales it
    if im.mode == "I":
        return _int32_as_uint16(np.asarray(im))
    if im.mode not in _MODES.values():
        has_alpha = "A" in im.mode or "transparency" in im.info
        im = im.convert("RGBA" if has_alpha else "L" if im.mode == "1" else "RGB")
    return np.asarray(im)


def _int32_as_uint16(arr: np.ndarray) -> np.ndarray:
    """32-bit integer pixels (TIFF, old 16-bit PNG readers): 16-bit data when in 0..65535, else refused
    (a PIL convert would clip them to 255: an all-white image)."""
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    if lo < 0 or hi > 65535:
        raise ImageError(
            f"32-bit integer image with values in [{lo}, {hi}]: lucent_dsl reads integer images of 8 bits (0-255) "
            "or 16 bits (0-65535); convert it to one of those, or to float in [0, 1]"
        )
    return arr.astype(np.uint16)


def _from_array(arr: np.ndarray) -> Tensor:
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in _MODES:
        raise ImageError(f"cannot load an array of shape {arr.shape}; accepted: {_ACCEPTED}")
    # copy: PIL's arrays are read-only, and the result must not alias the caller's memory
    return _scale(torch.from_numpy(np.array(arr)).permute(2, 0, 1), f"array of shape {arr.shape}")


def _scale(x: Tensor, what: str) -> Tensor:
    if x.dtype == torch.uint8:
        return x.float() / 255
    if x.dtype == torch.uint16:
        return x.to(torch.float32) / 65535
    if x.dtype == torch.bool:
        return x.float()
    if not x.is_floating_point():
        raise ImageError(
            f"cannot load {what} with dtype {x.dtype}; accepted: uint8 (0-255), uint16, bool or float in [0, 1]"
        )
    x = x.to(torch.float32)
    lo, hi = (float(x.min()), float(x.max())) if x.numel() else (0.0, 0.0)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo >= -1e-4 and hi <= 1 + 1e-4):
        raise ImageError(
            f"float {what} has values in [{lo:g}, {hi:g}]; expected [0, 1] (divide 0-255 data by 255, or pass uint8)"
        )
    return x.clamp(0, 1)


def _convert_channels(x: Tensor, channels: int) -> Tensor:
    c = x.shape[0]
    rgb = x[:3] if c >= 3 else x[:1].expand(3, -1, -1)
    if channels == 1:
        return x[:1] if c == 1 else torch.einsum("c,chw->hw", torch.tensor(_LUMA), rgb)[None]
    alpha = x[3:] if c == 4 else torch.ones_like(x[:1])
    return rgb if channels == 3 else torch.cat([rgb, alpha])


def load_image(
    source: str | os.PathLike[str] | Image.Image | np.ndarray | Tensor,
    *,
    size: int | tuple[int, int] | None = None,
    channels: int = 3,
) -> Tensor:
    """Load an image as a (1, channels, H, W) float32 tensor in [0, 1].

    `source` is a path, a PIL image, a numpy array ((H, W) or (H, W, C), uint8, uint16 or float
    in [0, 1]) or a tensor ((H, W), (C, H, W) or (1, C, H, W)). Grey <-> RGB(A) conversion uses
    PIL's luma weights; dropping alpha does not composite. `size` (int for a square, or (H, W))
    resizes with antialiased bilinear interpolation.

    Raises:
        ImageError: unreadable or missing file, unsupported shape or dtype.

    Shape:
        Output: (1, channels, H, W), or (1, channels, *size).

    Example:
        >>> load_image(np.zeros((4, 6), np.uint8), size=(2, 3), channels=4).shape
        torch.Size([1, 4, 2, 3])
    """
    if channels not in _MODES:
        raise InvalidArgumentError(f"channels must be 1, 3 or 4, got {channels!r}")
    if isinstance(source, (str, os.PathLike)):
        with _lazy(source) as im:
            _decode(im, source)
            x = _from_array(_from_pil(im))
    elif isinstance(source, Image.Image):
        x = _from_array(_from_pil(source))
    elif isinstance(source, np.ndarray):
        x = _from_array(source)
    elif isinstance(source, Tensor):
        t = source.detach().cpu()
        t = t[None] if t.ndim == 2 else t[0] if t.ndim == 4 and t.shape[0] == 1 else t
        if t.ndim != 3 or t.shape[0] not in _MODES:
            raise ImageError(f"cannot load a tensor of shape {tuple(source.shape)}; accepted: {_ACCEPTED}")
        x = _scale(t, f"tensor of shape {tuple(source.shape)}")
    else:
        raise ImageError(f"cannot load an image from {type(source).__name__}; accepted: {_ACCEPTED}")
    x = _convert_channels(x, channels)[None]
    if size is not None:
        hw = (size, size) if isinstance(size, int) else tuple(size)
        if len(hw) != 2 or not all(isinstance(s, int) and s > 0 for s in hw):
            raise InvalidArgumentError(f"size must be a positive int or (H, W), got {size!r}")
        x = F.interpolate(x, size=hw, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    return x.contiguous()
