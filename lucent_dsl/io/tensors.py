"""Tensors from files (`.npy`, `.pt`, `.pth`, `.bin`): datasets and dictionaries, read safely or refused by name.

A `.pt` file is a pickle. lucent_dsl loads it with `torch.load(weights_only=True)`, which builds
tensors and plain containers and nothing else. When a file holds more than that, torch's own
message advises `weights_only=False`: the one thing never to do with a file from someone else,
since unpickling runs whatever code the file names. `load_tensor_file` replaces that advice with
what is safe (save the tensors alone, `torch.save(tensor)`, or `.npy`). `.npy` files are read with
`allow_pickle=False`. Every malformed file (cut short, not the format its suffix says, an object
array) is an error of the kind the caller names (`ImageError` for datasets by default), never a raw
`UnpicklingError`, `EOFError` or `ValueError`; FIFOs and devices are refused before they are opened.

Example:
    >>> import tempfile, pathlib, torch
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.pt"
    >>> torch.save(torch.zeros(2, 3), p)
    >>> load_tensor_file(p).shape
    torch.Size([2, 3])
    >>> _ = p.write_bytes(b"not a pickle")
    >>> load_tensor_file(p)
    Traceback (most recent call last):
    ...
    lucent_dsl.errors.ImageError: cannot read 'x.pt' as a PyTorch file (...); it is damaged or of another format
"""
from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ImageError, LucentError
from .metadata import check_regular_file

TENSOR_SUFFIXES = (".npy", ".pt", ".pth", ".bin")
"""The suffixes `load_tensor_file` reads."""
_PICKLE_HINT = (
    "it holds Python objects besides tensors, and lucent_dsl loads .pt files with torch.load(weights_only=True), "
    "which builds only tensors and plain containers: unpickling anything else runs code named in the file, so "
    "never turn weights_only off for a file you did not write yourself. Save the tensors alone instead "
    "(torch.save(tensor) or torch.save({'name': tensor})), or as .npy"
)


def load_tensor_file(path: str | os.PathLike[str], *, what: str = "a dataset",
                     error: type[LucentError] = ImageError) -> Any:
    """What a `.npy` (an array) or `.pt`/`.pth`/`.bin` (tensors in plain containers) file holds.

    Raises:
        `error` (ImageError by default): not a regular file, another suffix, a damaged file, a pickle of
            more than tensors (with what to do instead), an object array.
        FileNotFoundError: no such file.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what}: no such file {str(p)!r}")
    try:
        check_regular_file(p, what)
    except ImageError as e:
        raise error(str(e)) from None
    suffix = p.suffix.lower()
    if suffix not in TENSOR_SUFFIXES:
        raise error(f"{what} {str(p)!r}: expected one of {', '.join(TENSOR_SUFFIXES)}, not {suffix or 'no suffix'!r}")
    if suffix == ".npy":
        try:
            return np.load(p, allow_pickle=False)
        except Exception as e:  # noqa: BLE001 - a damaged header fails in numpy's parser (ValueError, TokenError, ...)
            raise error(f"cannot read {p.name!r} as a NumPy .npy file ({_first_line(e)}); it is damaged, of "
                        "another format, or an object array (write numbers: np.save(path, array))") from None
    try:
        with warnings.catch_warnings():  # a damaged file's odd pickle protocol warns before it fails
            warnings.simplefilter("ignore")
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e):
            raise error(f"{what} {p.name!r} is not loaded: {_PICKLE_HINT}") from None
        raise error(f"cannot read {p.name!r} as a PyTorch file ({_unpickling_reason(e)}); it is damaged or of "
                    "another format") from None
    except Exception as e:  # noqa: BLE001 - a damaged file fails anywhere in torch's reader (zip, pickle, storages)
        raise error(f"cannot read {p.name!r} as a PyTorch file ({type(e).__name__}: {_first_line(e)}); it is "
                    "damaged or of another format") from None


def _unpickling_reason(e: BaseException) -> str:
    """torch's reason without its advice (which is to turn weights_only off)."""
    found = [line.strip() for line in str(e).splitlines() if "WeightsUnpickler error" in line or "Unsupported" in line]
    return " ".join(found)[:200] or "not a pickle torch.load(weights_only=True) reads"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__
