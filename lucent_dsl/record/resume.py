"""The state an interrupted pass resumes from, and the key that says which pass made it.

A resumable pass (`dataset_examples`, so `lucent-dsl examples` and `explore --images`) writes its progress
next to a key naming everything its results depend on: the units, k, the image size, the model (class,
preprocessing, weights fingerprint) and the images (`io.datasets.images_fingerprint`). A state file whose key
differs was made by another pass: `resume_state` warns (`StaleStateWarning`, naming what changed) and the pass
starts again, so no old example or score is ever reported as this pass's.

Example:
    >>> import tempfile, pathlib, torch, torch.nn as nn
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "state.json"
    >>> key = pass_key(["channel('0', 1)"], 3, (8, 8), nn.Conv2d(3, 2, 1), torch.zeros(6, 3, 8, 8))
    >>> save_state(path, key, {"seen": 4})
    >>> resume_state(path, key)
    {'seen': 4}
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from ..io.datasets import images_fingerprint
from ..io.files import atomic_write
from ..models.checks import weights_fingerprint
from ..models.info import info_of

STATE_FORMAT = 2  # 2: the key names the model (weights fingerprint) and the images' contents

KEY_NAMES = {"format": "the state file's format", "units": "the units", "k": "k", "size": "the image size",
             "model": "the model (its weights, class or preprocessing)", "images": "the images (their files or "
             "contents)"}
"""Each field of a pass key, as a warning names it when it changed."""


class StaleStateWarning(UserWarning):
    """A state file was made by another pass (other model, images, units or settings): the pass starts again."""


def pass_key(units: Sequence[str], k: int, size: Sequence[int], model: nn.Module, images: Any) -> dict[str, Any]:
    """What a state file must match to be resumed, as JSON reads it back (tuples become lists)."""
    info = info_of(model)
    key = {"format": STATE_FORMAT, "units": list(units), "k": k, "size": list(size),
           "model": {"class": f"{type(model).__module__}.{type(model).__qualname__}",
                     "weights": weights_fingerprint(model), "mean": info.mean, "std": info.std,
                     "channels": info.channels},
           "images": {"count": len(images), "fingerprint": images_fingerprint(images)}}
    return json.loads(json.dumps(key))


def resume_state(state: str | Path | None, key: dict[str, Any]) -> dict[str, Any] | None:
    """The progress saved in `state` by the pass `key` names, else None (no file yet; or another pass's, with a
    `StaleStateWarning` naming what changed)."""
    if state is None or not Path(state).is_file():
        return None
    try:
        d = json.loads(Path(state).read_text())
        have = d.get("key") if isinstance(d, dict) else None
    except (ValueError, OSError, UnicodeDecodeError):
        d, have = None, None
    if have != key or not isinstance(d, dict):
        changed = [name for field, name in KEY_NAMES.items() if not isinstance(have, dict) or have.get(field)
                   != key[field]]
        warnings.warn(
            f"{str(state)!r} holds the state of another examples pass ({', '.join(changed) or 'unreadable'} changed): "
            "starting again from the first image, so no old example or score is reported",
            StaleStateWarning, stacklevel=3)
        return None
    return {name: value for name, value in d.items() if name != "key"}


def save_state(state: str | Path, key: dict[str, Any], progress: dict[str, Any]) -> None:
    """Write `progress` (JSON fields beside "key") with `key`, atomically (a kill leaves the previous state)."""
    with atomic_write(state, "w") as f:
        json.dump({"key": key, **progress}, f)
