"""Images in and out: every file format lucent_dsl reads or writes lives here.

Writes are atomic (`atomic_write`): a crash or Ctrl-C mid-save never leaves a half-written
PNG where a good one was. A render's recipe travels inside its PNG as text metadata under
`RECIPE_KEY`, so an image can be reproduced from the file alone.

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
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin
from torch import Tensor

from .errors import ImageError, InvalidArgumentError

RECIPE_KEY = "lucent_dsl.recipe"
"""PNG metadata key holding the JSON recipe (objective, model, seed, ...) of a render."""

ImageLike = Tensor | Image.Image | Sequence[Image.Image]
_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, the weights PIL's convert("L") uses
_ACCEPTED = (
    "a path, a PIL image, a numpy array (H, W) or (H, W, C) with C in {1, 3, 4}, "
    "or a tensor (H, W), (C, H, W) or (1, C, H, W)"
)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Write a file all at once: a temp file in the same directory, fsynced, then `os.replace`d.

    On any exception (KeyboardInterrupt included) the temp file is removed and an existing
    `path` is left untouched. Parent directories are created. Text modes use UTF-8.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "sub" / "a.txt"
        >>> with atomic_write(p, "w") as f:
        ...     _ = f.write("hello")
        >>> p.read_text()
        'hello'
    """
    if not mode.startswith("w"):
        raise InvalidArgumentError(f"atomic_write mode must be a write mode ('w', 'wb', ...), got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        f = os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8")
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    try:
        with f:
            # mkstemp creates 0600; give the file the mode a plain open() would have given it.
            os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask())
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
    strip = 0 if labels is None else font.getbbox("Ag|")[3] + 4
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


def _as_image(image: ImageLike) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    tiles = to_pil(image) if isinstance(image, Tensor) else list(image)
    return tiles[0] if len(tiles) == 1 else make_grid(tiles)


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
    info = PngImagePlugin.PngInfo()
    for key, value in (metadata or {}).items():
        if not (isinstance(key, str) and 0 < len(key) < 80 and key.isprintable() and max(map(ord, key)) < 256):
            raise InvalidArgumentError(f"PNG metadata key {key!r} must be 1-79 printable Latin-1 characters")
        if not isinstance(value, str):
            raise InvalidArgumentError(f"PNG metadata value for {key!r} must be str, got {type(value).__name__}")
        info.add_text(key, value, zip=len(value) > 1024)
    pil = _as_image(image)
    with atomic_write(path) as f:
        pil.save(f, format="PNG", pnginfo=info)


def read_png_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """Return the text chunks of a PNG as a dict (see `save_png` for an example)."""
    with _open(path) as im:
        if im.format != "PNG":
            raise ImageError(f"'{path}' is a {im.format} file, not a PNG; only PNGs carry lucent_dsl metadata")
        return {str(k): str(v) for k, v in im.text.items()}


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


def _open(path: str | os.PathLike[str]) -> Image.Image:
    im = None
    try:
        im = Image.open(path)
        im.load()
        return im
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        if im is not None:
            im.close()
        raise ImageError(
            f"cannot read image file '{path}': {e}. Accepted: any format PIL reads (PNG, JPEG, GIF, ...)"
        ) from None


def _from_pil(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16L", "I;16B", "F"):
        return np.asarray(im)  # 16-bit / float data: keep precision, the array path scales it
    if im.mode not in _MODES.values():
        has_alpha = "A" in im.mode or "transparency" in im.info
        im = im.convert("RGBA" if has_alpha else "L" if im.mode == "1" else "RGB")
    return np.asarray(im)


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
        with _open(source) as im:
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
