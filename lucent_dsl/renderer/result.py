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
from typing import Any, cast

import torch
from torch import Tensor

from ..plan.compiler import Plan

UNREPLAYABLE_KEY = "lucent_dsl.unreplayable"
"""PNG metadata key that says why a saved render carries no recipe."""


@dc.dataclass(frozen=True)
class RenderResult:
    """What a render produced.

    Attributes:
        images: final images (n, C, H, W) in [0, 1], on the CPU.
        snapshots: step -> images, for each requested threshold reached.
        history: DSL text of each distinct top-level summand -> (steps_done, n) per-image scores; the
            series add up to the total score at every step, and `parse(key)` gives the summand back.
        plan: the compiled plan.
        seed: the seed used.
        steps: optimization steps done.
        interrupted: True when Ctrl-C stopped the run early.
        skipped_steps: steps dropped by `on_nonfinite="skip"`.
        precision: what the models ran in ("fp32" or "bf16"; `precision="auto"` resolved).
        recipe: the `record.Recipe` that makes these pixels again (`renderer.provenance`), or None;
            `save` writes it into the PNG, so `lucent-dsl render --recipe out.png` replays it.
        unreplayable: why there is no recipe (a module of your own, a custom parameterization...).
        leaves: the trained parameters of the parameterization (detached, on the CPU), and `param`, the
            `ImageParam` that draws them: `image_at(size)` draws a CPPN's again at another size.
        stopped: at which step and why an early-stopping rule (`render(stop=...)`) ended the run, else None.
        preset: the name of the render preset that ran (`renderer.presets`; "auto" resolved).
    """

    images: Tensor
    snapshots: dict[int, Tensor]
    history: dict[str, Tensor]
    plan: Plan
    seed: int
    steps: int
    interrupted: bool = False
    skipped_steps: tuple[int, ...] = ()
    precision: str = "fp32"
    recipe: Any = None
    unreplayable: tuple[str, ...] = ()
    leaves: dict[str, Tensor] | None = dc.field(default=None, repr=False)
    param: Any = dc.field(default=None, repr=False)
    stopped: str | None = None
    preset: str = "lucid"

    @property
    def pil(self) -> list:
        """The final images as PIL images."""
        from ..io.files import to_pil

        return to_pil(self.images)

    def image_at(self, size: int | tuple[int, int]) -> Tensor:
        """The final images drawn again from the trained leaves at `size` (n or (H, W)), (n, C, H, W) on the CPU.

        Only a parameterization whose leaves do not depend on the size can (`ImageParam.at_size`: `param.cppn`);
        a pixel or Fourier image has a leaf per pixel or frequency of its own size.

        Raises:
            InvalidArgumentError: a bad size, or a parameterization without `at_size`.

        Example:
            >>> import lucent_dsl as ld, torch.nn as nn
            >>> net = nn.Sequential(nn.Conv2d(3, 4, 3))
            >>> r = ld.render("channel('0', 1)", net, param=ld.param.cppn(16, layers=2), steps=2, progress=False)
            >>> r.image_at(40).shape
            torch.Size([1, 3, 40, 40])
        """
        from ..args import check_size
        from ..errors import InvalidArgumentError

        hw = check_size(size)
        at_size = getattr(self.param, "at_size", None)
        if at_size is None or self.leaves is None:
            raise InvalidArgumentError(
                "image_at draws a result again at another size only for a parameterization whose leaves do not "
                "depend on the size (param.cppn); this render's leaves are tied to its "
                f"{tuple(self.images.shape[-2:])} pixels: render again at the size you want (or with param.cppn)")
        with torch.no_grad():
            return at_size(hw).to_image(self.leaves).detach().cpu()

    def scores(self) -> Tensor:
        """Per-image total scores at the last step, shape (n,)."""
        return cast(Tensor, sum(h[-1] for h in self.history.values())) if self.steps else torch.zeros(len(self.images))

    def save(self, path: Any, *, metadata: Mapping[str, str] | None = None) -> None:
        """Write the images as one PNG (a grid for a batch), atomically, with the render's recipe and final score
        in its metadata as the CLI writes them (or, without a recipe, `UNREPLAYABLE_KEY`: why not).

        Grey (1 channel), RGB and RGBA (an alpha render: `param.alpha`) images are written as they are. Images
        of models that read other channel counts (4 for RGB+NIR, 2, 5, ...) are written as `io.grid.channel_tiles`:
        a row per image, its RGB and then each further channel in grey (`self.images` keeps every channel).
        """
        from ..io.files import RECIPE_KEY, save_png
        from ..io.grid import channel_tiles, make_grid
        from ..record.recipe import SCORE_KEY

        meta: dict[str, str] = {}
        if self.recipe is not None:
            meta[RECIPE_KEY] = self.recipe.to_json()
            if self.steps:
                meta[SCORE_KEY] = repr(float(self.scores().sum()))
        elif self.unreplayable:
            meta[UNREPLAYABLE_KEY] = "; ".join(self.unreplayable)
        images: Any = self.images
        c = int(images.shape[1])
        if c not in (1, 3) and (c != 4 or any(info.channels == 4 for info in self.plan.infos.values())):
            tiles = channel_tiles(images)
            images = make_grid(tiles, ncol=len(tiles) // len(images))
        save_png(path, images, metadata={**meta, **(metadata or {})})

    def __repr__(self) -> str:
        """A short summary (shape, steps, final per-term scores averaged over images), not the tensors."""
        label = self.plan.history_labels
        final = (
            ", ".join(f"{label.get(k, k)}: {float(v[-1].mean()):.4g}" for k, v in self.history.items())
            if self.steps
            else ""
        )
        flags = (" interrupted" if self.interrupted else "") + (
            f" skipped={len(self.skipped_steps)}" if self.skipped_steps else ""
        )
        return (f"RenderResult(images={tuple(self.images.shape)}, steps={self.steps}{flags}, seed={self.seed}, "
                f"final={{{final}}})")

    def show(self) -> Any:
        """Display the images: inline in a notebook (IPython), else with PIL's viewer; returns the grid image."""
        from ..io.files import make_grid

        grid = make_grid(self.images)
        try:
            from IPython.display import display  # pyright: ignore[reportMissingImports]
        except ImportError:
            grid.show()
        else:
            display(grid)
        return grid

    def plot(self, ax: Any = None) -> Any:
        """Plot each term's history (mean over images) against the step; needs matplotlib. Returns the axes.

        Without `ax`, a new figure with a constrained layout, so its labels stay whole when it is saved
        (`ax.figure.savefig(...)`); with `ax`, its figure's layout is yours.
        """
        try:
            import matplotlib.pyplot as plt  # pyright: ignore[reportMissingImports]
        except ImportError:
            from ..errors import LucentError

            raise LucentError("RenderResult.plot needs matplotlib: pip install matplotlib") from None
        ax = ax if ax is not None else plt.subplots(figsize=(6, 3.5), layout="constrained")[1]
        steps = torch.arange(1, self.steps + 1)
        label = self.plan.history_labels
        for key, series in self.history.items():
            ax.plot(steps, series.mean(1), label=label.get(key, key))
        if self.history:
            ax.plot(steps, cast(Tensor, sum(self.history.values())).mean(1), "k--", label="total")
        ax.set_xlabel("step")
        ax.set_ylabel("score (mean over images)")
        ax.legend(fontsize="small")
        return ax

    def _repr_png_(self) -> bytes:
        from ..io.files import make_grid

        buf = _io.BytesIO()
        make_grid(self.images).save(buf, format="PNG")
        return buf.getvalue()
