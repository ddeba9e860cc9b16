"""Input geometry: the image sizes a model accepts, and the last step that maps an image to them.

A model accepts any size (a convnet with adaptive pooling), one fixed size (a ViT's position
embeddings: 224 for `vit_b_16`, DINOv2 its own `img_size`), or sizes divisible by k (patches,
windows: HRNet 32). The geometry comes from `ModelInfo` when the user states it, from the model
where it says so (`lucent_dsl.models.architectures`), and otherwise from a probe at compile time
(`search`): the model is run on the base size and then on sizes that are odd multiples of
1, 2, 4, 7, 8, 14, 16, 28, 32, 56 and 112 (below the base, then above it, for models with a
minimum size); the first that works gives k, none gives the base size.

Mapping (`fit`, the last step of each model's preprocessing, so one image serves an ensemble of
a ViT and a convnet): the transformed image is resized bilinearly to the size the model accepts
(the nearest multiple of k, or the fixed size). A resize keeps the whole picture in view, including
what the random transforms moved towards the border, and costs nothing when the size already fits;
a crop would leave the margins of the image unoptimized for that model. Models of any size see the
image as it is (resizing shrinks features and measurably lowers the activations reached; see
`ModelInfo.resize`).

Example:
    >>> import torch
    >>> Geometry(multiple=32).target(248, 250), Geometry(size=(224, 224)).target(248, 248)
    ((256, 256), (224, 224))
    >>> tuple(fit(torch.rand(1, 3, 248, 248), Geometry(size=(224, 224))).shape)
    (1, 3, 224, 224)
"""
from __future__ import annotations

import dataclasses as dc
from collections.abc import Callable, Iterator

import torch.nn.functional as F
from torch import Tensor

from ..errors import InvalidArgumentError

__all__ = ["CANDIDATES", "Geometry", "fit", "probe_sizes", "search"]

CANDIDATES = (1, 2, 4, 7, 8, 14, 16, 28, 32, 56, 112)
"""Divisors a probe tries, smallest first (patch sizes 14/16, strides 32, MaxViT-style windows 7 x 2^k)."""
MIN_STEP = 32  # probe sizes differ from the base by at least this many pixels, so every stride-32 map changes


@dc.dataclass(frozen=True)
class Geometry:
    """The input sizes a model accepts.

    Args:
        size: (H, W), the one size the model accepts; None if it accepts more than one.
        multiple: otherwise, sizes divisible by this (1: any size).
        source: where it came from ("stated", "model" or "probe"); not part of equality.
    """

    size: tuple[int, int] | None = None
    multiple: int = 1
    source: str = dc.field(default="stated", compare=False)

    def __post_init__(self) -> None:
        if self.size is not None:
            size = (self.size, self.size) if isinstance(self.size, int) else tuple(int(s) for s in self.size)
            if len(size) != 2 or min(size) < 1:
                raise InvalidArgumentError(f"Geometry size must be (H, W) of positive ints, got {self.size!r}")
            object.__setattr__(self, "size", size)
        if isinstance(self.multiple, bool) or not isinstance(self.multiple, int) or self.multiple < 1:
            raise InvalidArgumentError(f"Geometry multiple must be a positive int, got {self.multiple!r}")

    @property
    def fixed(self) -> bool:
        return self.size is not None

    def accepts(self, h: int, w: int) -> bool:
        return (h, w) == self.size if self.size else h % self.multiple == 0 and w % self.multiple == 0

    def target(self, h: int, w: int) -> tuple[int, int]:
        """The size an h x w image is mapped to."""
        if self.size is not None:
            return self.size
        k = self.multiple
        return max(k, round(h / k) * k), max(k, round(w / k) * k)

    def __str__(self) -> str:
        if self.size is not None:
            return f"{self.size[0]}x{self.size[1]} only"
        return "any size" if self.multiple == 1 else f"multiples of {self.multiple}"


def fit(image: Tensor, geometry: Geometry | None) -> Tensor:
    """`image` (B, C, H, W) resized (bilinear) to the nearest size `geometry` accepts; unchanged if it fits."""
    if geometry is None:
        return image
    h, w = image.shape[-2:]
    size = geometry.target(int(h), int(w))
    if size == (h, w):
        return image
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=False)


def resize_target(geometry: Geometry | None, h: int, w: int) -> tuple[int, int] | None:
    """The size `fit` resizes an h x w image to under `geometry`, or None when it keeps the image as it is
    (a render then samples its transforms at that size directly: `steps.model_inputs`).

    Example:
        >>> resize_target(Geometry((224, 224), 1, "stated"), 248, 248), resize_target(None, 248, 248)
        ((224, 224), None)
    """
    if geometry is None:
        return None
    size = geometry.target(h, w)
    return None if size == (h, w) or geometry.target(*size) != size else size


def _odd_multiples(base: int, k: int, steps: int, above: bool) -> list[int]:
    """Odd multiples of k at least `steps` multiples away from `base`: below it, or above it (up to 3x)."""
    q = base // k
    if above:
        return [(q + j) * k for j in range(steps, 2 * q + 2) if (q + j) % 2 == 1 and (q + j) * k <= 3 * base]
    # Not below half the base: tiny inputs give 1x1 maps that broadcast against a fixed-size embedding.
    return [(q - j) * k for j in range(steps, q) if (q - j) % 2 == 1 and (q - j) * k >= max(MIN_STEP, base // 2)]


def probe_sizes(base: tuple[int, int], k: int, above: bool = False) -> tuple[int, int] | None:
    """A second probe size for multiples of k: odd multiples (no larger divisor passes by luck), rows and
    columns moved by different amounts (>= MIN_STEP pixels), so the axes of rows and columns tell apart.
    Below `base` (cheaper), or above it (`above`: for models with a minimum size).

    Example:
        >>> probe_sizes((224, 224), 1), probe_sizes((224, 224), 32), probe_sizes((64, 64), 1, above=True)
        ((191, 189), (160, 160), (97, 99))
    """
    if base[0] % k or base[1] % k or k > min(base) // 2:
        return None
    steps = -(-MIN_STEP // k)
    rows, cols = _odd_multiples(base[0], k, steps, above), _odd_multiples(base[1], k, steps, above)
    if not rows or not cols:
        return None
    h = rows[0]
    w = next((c for c in cols if c != h), cols[0])
    return h, w


def candidates(base: tuple[int, int]) -> Iterator[tuple[int, tuple[int, int]]]:
    """(k, size) pairs a geometry search tries, smallest k first; below the base, then above it."""
    for k in CANDIDATES:
        for above in (False, True):
            size = probe_sizes(base, k, above)
            if size is not None:
                yield k, size


def search(works: Callable[[tuple[int, int]], bool], base: tuple[int, int]) -> Geometry:
    """The geometry of a model that runs at `base`: the smallest k whose probe size `works`, else `base` only.

    Example:
        >>> search(lambda hw: hw[0] % 32 == 0 and hw[1] % 32 == 0, (224, 224))
        Geometry(size=None, multiple=32, source='probe')
        >>> search(lambda hw: hw == (224, 224), (224, 224)).size
        (224, 224)
    """
    for k, size in candidates(base):
        if works(size):
            return Geometry(None, k, "probe")
    return Geometry(base, 1, "probe")
