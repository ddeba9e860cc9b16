"""`RenderResult`: what a render produced, as a frozen value (images, per-term history, the plan).

Example:
    >>> import torch.nn as nn, lucent_dsl as ld
    >>> r = ld.render(ld.channel("0", 1), nn.Sequential(nn.Conv2d(3, 4, 3)), size=16, steps=2, progress=False)
    >>> r.images.shape
    torch.Size([1, 3, 16, 16])
"""
from __future__ import annotations

import dataclasses as dc
import io as _io
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from .plan import Plan


@dc.dataclass(frozen=True)
class RenderResult:
    """What a render produced.

    Attributes:
        images: final images (n, C, H, W) in [0, 1], on the CPU.
        snapshots: step -> images, for each requested threshold reached.
        history: DSL text of each top-level term -> (steps_done, n) per-image scores.
        plan: the compiled plan.
        seed: the seed used.
        steps: optimization steps done.
        interrupted: True when Ctrl-C stopped the run early.
    """

    images: Tensor
    snapshots: dict[int, Tensor]
    history: dict[str, Tensor]
    plan: Plan
    seed: int
    steps: int
    interrupted: bool = False
    skipped_steps: tuple[int, ...] = ()

    @property
    def pil(self) -> list:
        """The final images as PIL images."""
        from .io import to_pil

        return to_pil(self.images)

    def scores(self) -> Tensor:
        """Per-image total scores at the last step, shape (n,)."""
        return sum(h[-1] for h in self.history.values()) if self.steps else torch.zeros(len(self.images))

    def save(self, path: Any, *, metadata: Mapping[str, str] | None = None) -> None:
        """Write the images as one PNG (a grid for a batch), atomically."""
        from .io import save_png

        save_png(path, self.images, metadata=metadata)

    def _repr_png_(self) -> bytes:
        from .io import make_grid

        buf = _io.BytesIO()
        make_grid(self.images).save(buf, format="PNG")
        return buf.getvalue()
