"""Image datasets as they come from files: the one scaling rule, and the fingerprint a resumed pass checks.

`unit_images(t, what)` turns an array of pixels read from a file (`.npy`, `.pt`) into float images
in [0, 1] by one documented rule, and says what it did:

- integers (uint8, int16, int32, ...) in 0..255 are 0-255 pixels: divided by 255 (the note says so);
- floats in [0, 1] are taken as they are;
- anything else is refused: floats outside [0, 1] (200.0 is not a pixel value lucent_dsl can guess a
  scale for: 0-255 floats, a mean/std normalization and raw logits all look alike), NaN or inf,
  integers outside 0..255, booleans and complex numbers.

`images_fingerprint(items)` is what a resumable pass over images (`dataset_examples`' state file)
records, so a rerun after the images changed starts again instead of reporting the old scores:

- a tensor: sha256 of its dtype, shape and bytes (in memory, so hashing all of it is cheap);
- files: every file's name, size and modification time (one `stat` each: any ordinary rewrite changes
  the time), plus sha256 of the contents of `SAMPLE_FILES` of them spread evenly over the list, which
  catches a copy that kept the time (`cp -p`, `rsync -a`) when it hits the sample. Hashing every byte
  would read the whole dataset again on every rerun of a finished pass; this costs one `stat` per file.

Example:
    >>> import torch
    >>> x, note = unit_images(torch.tensor([[[[0, 255]]]], dtype=torch.int32), "pixels.npy")
    >>> x.tolist(), note
    ([[[[0.0, 1.0]]]], 'pixels.npy holds int32 values in 0..255: divided by 255 to give images in [0, 1]')
    >>> unit_images(torch.full((1, 1, 2, 2), 0.5), "x.pt")[1] is None
    True
    >>> images_fingerprint(torch.zeros(2, 3)) == images_fingerprint(torch.zeros(2, 3))
    True
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import ImageError

SAMPLE_FILES = 32
"""How many files' contents `images_fingerprint` hashes (evenly spread; all of them when there are fewer)."""


def unit_images(t: Tensor, what: str) -> tuple[Tensor, str | None]:
    """`t` as float32 images in [0, 1] by the module's rule, and a note when it was scaled (else None).

    Raises:
        ImageError: values the rule does not convert, with what to do instead.
    """
    if t.dtype == torch.bool or t.is_complex():
        raise ImageError(f"{what} holds {t.dtype} values, not pixels; give uint8 0..255 or floats in [0, 1]")
    if t.numel() == 0:
        return t.float(), None
    if not t.is_floating_point():
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi > 255:
            raise ImageError(f"{what} holds {str(t.dtype).removeprefix('torch.')} values in {lo}..{hi}, outside "
                             "0..255: integers are read as 0-255 pixels; rescale them to uint8 0..255 or floats "
                             "in [0, 1]")
        return t.float() / 255, (f"{what} holds {str(t.dtype).removeprefix('torch.')} values in 0..255: divided "
                                 "by 255 to give images in [0, 1]")
    x = t.float()
    if not bool(torch.isfinite(x).all()):
        raise ImageError(f"{what} holds NaN or inf values; images are floats in [0, 1]")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        raise ImageError(
            f"{what} holds float values in {lo:.4g}..{hi:.4g}, outside [0, 1]: floats are read as they are, never "
            "rescaled by a guess. For 0-255 pixels save x / 255 (or uint8 values, which are divided by 255); "
            "undo a mean/std normalization first (the model's own preprocessing is applied to [0, 1] images)"
        )
    return x, None


def images_fingerprint(items: Tensor | Sequence[str]) -> str:
    """A short hash of a tensor's contents, or of a file list's names, sizes, times and a sample of contents.

    Raises:
        ImageError: a file that cannot be read.
    """
    h = hashlib.sha256()
    if isinstance(items, Tensor):
        t = items.detach().cpu().contiguous()
        h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        return h.hexdigest()[:16]
    paths = [str(p) for p in items]
    try:
        for p in paths:
            st = os.stat(p)
            h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        for p in _sample(paths):
            with open(p, "rb") as f:
                for block in iter(lambda f=f: f.read(1 << 20), b""):
                    h.update(block)
    except OSError as e:
        raise ImageError(f"cannot read {e.filename!r}: {e.strerror}") from None
    return h.hexdigest()[:16]


def _sample(paths: Sequence[str]) -> list[str]:
    if len(paths) <= SAMPLE_FILES:
        return list(paths)
    step = (len(paths) - 1) / (SAMPLE_FILES - 1)
    return [paths[round(i * step)] for i in range(SAMPLE_FILES)]


__all__ = ["SAMPLE_FILES", "images_fingerprint", "unit_images"]
