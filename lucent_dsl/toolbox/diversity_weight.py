"""An automatic diversity weight per unit: the largest weight whose weakest image still beats every natural one.

A batch rendered with `unit - w * diversity(layer)` shows several facets of a unit, but each image drives the
unit less as w grows. Zimmermann et al. ("Scale Alone Does not Improve Mechanistic Interpretability in Vision
Models", NeurIPS 2023; the IMI dataset's stimuli) choose w per unit so that the visualizations stay
stronger than the dataset: the largest w for which the *least* activating image of the batch still activates
the unit more than the *most* activating natural image. Their search, and ours:

1. score the unit on every natural image (the best is the bar to beat);
2. render the batch at each weight of a ladder, upward, with the same seed every time, and score each image on
   the unit alone; stop at the first weight whose weakest image does not beat the bar (IMI: w = 0 first, which
   must pass, then 1, 10, 100, ... until one fails);
3. optionally bisect `refine` times between the last weight that passed and the first that failed (IMI: 7).

The weakest score usually falls as w grows, but not always (each weight is its own optimisation). The search
assumes it does, as IMI's does: the ladder stops at its first failure even if a larger weight would pass, and a
bisection keeps the larger half only when its midpoint passes. `DiversityChoice.tried` records every weight
rendered and its weakest score, so a non-monotone unit shows itself there.

Scores are what the unit's own objective scores on one unaugmented image (its compiled `Plan`, fp32, frozen
model), for the naturals and for the renders alike. `diversity` here is a similarity (a penalty, subtracted);
its default convention averages each image's similarity over the n - 1 others, so IMI's weights (lucent's
convention, divided by n) are these times n / (n - 1).

Example:
    >>> import torch, torch.nn as nn
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    >>> naturals = torch.full((2, 3, 16, 16), 0.5)
    >>> c = auto_diversity("channel('1', 0)", net, naturals, weights=(0.0, 0.1, 1.0), steps=4, size=16)
    >>> c.weight is None or bool(c.scores.min() > c.natural_best)  # the chosen weight's weakest image beats them
    True
    >>> c.images.shape, [w for w, _ in c.tried][:1]
    (torch.Size([4, 3, 16, 16]), [0.0])
"""
from __future__ import annotations

import dataclasses as dc
import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..args import check_int, check_real, check_seed, check_size
from ..dsl.expr import IMAGE, Expr, Site, terms_of
from ..dsl.parser import parse
from ..errors import ImageError, InvalidArgumentError
from ..objectives.penalty import Diversity, diversity
from ..plan.compiler import Plan, compile_plan
from ..plan.fold import frozen_models
from ._common import _check_unit_range

IMI_WEIGHTS = (0.0, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5)
"""IMI's ladder (lucent's diversity convention): 0, then 1, 10, ... up to their limit of 999,999."""
DEFAULT_WEIGHTS = (0.0, 1e-2, 1e-1, 1.0, 10.0, 100.0)
"""Ours: 0, then decades from 0.01; the renders stop at the first weight that fails."""
_SET_HERE = ("objective", "models", "size", "steps", "batch", "seed")


@dc.dataclass(frozen=True, eq=False)
class DiversityChoice:
    """What `auto_diversity` chose for one unit.

    Attributes:
        weight: the largest weight tried whose weakest image beat `natural_best`; None when not even the
            first (smallest) weight did (never 0 in its place).
        images: (batch, C, H, W) in [0, 1]: the renders at `weight` (when `weight` is None: at the first weight,
            which did not pass; kept to look at, not to use).
        scores: (batch,): each of `images` scored on the unit alone.
        natural_best: the best natural image's score on the unit (the bar).
        tried: (weight, weakest score) of every render, in the order they ran.
        unit: the unit's DSL text; layer: where the diversity term read.
    """

    weight: float | None
    images: Tensor
    scores: Tensor
    natural_best: float
    tried: tuple[tuple[float, float], ...]
    unit: str
    layer: str

    @property
    def passed(self) -> bool:
        return self.weight is not None

    @property
    def message(self) -> str:
        """One line saying what was chosen and why (or why nothing was)."""
        steps = ", ".join(f"{w:g}: {s:.4g}" for w, s in self.tried)
        if self.weight is None:
            w0, s0 = self.tried[0]
            return (f"{self.unit}: no diversity weight passed: at w={w0:g} the weakest image scores {s0:.4g}, not "
                    f"above the best natural image's {self.natural_best:.4g}; render longer (steps=) or larger "
                    f"(size=), or compare with weaker naturals (weakest score per weight: {steps})")
        return (f"{self.unit}: diversity weight {self.weight:g} at {self.layer}: its weakest image scores "
                f"{float(self.scores.min()):.4g} > the best natural image's {self.natural_best:.4g} "
                f"(weakest score per weight: {steps})")

    def __repr__(self) -> str:
        return f"DiversityChoice(weight={self.weight!r}, natural_best={self.natural_best:.4g}, tried={self.tried!r})"


# --- checks, all before any render -------------------------------------------------------------------------


def check_unit(unit: Any) -> Expr:
    """`unit` as one objective: an `Expr` or DSL text, with no diversity term and no `batch=` selection."""
    if isinstance(unit, str):
        unit = parse(unit)
    if not isinstance(unit, Expr):
        raise InvalidArgumentError(
            f"unit must be one objective (an Expr or DSL text such as \"channel('features.14', 3)\"), got "
            f"{type(unit).__name__}: the batch renders one objective, and its diversity spreads the images")
    for t in terms_of(unit):
        if isinstance(t, Diversity):
            raise InvalidArgumentError(f"unit {unit!r} already holds {t!r}: give the unit alone, auto_diversity "
                                       "adds the diversity term and chooses its weight")
        if getattr(t, "batch", None) is not None:
            raise InvalidArgumentError(f"unit {unit!r}: {t!r} selects one image of the batch; the unit must score "
                                       "every image alike (drop batch=)")
    return unit


def diversity_site(unit: Expr, layer: str | None) -> Site:
    """Where the diversity term reads: `layer`, else the one layer the unit reads (as IMI does)."""
    sites = sorted({s for t in terms_of(unit) for s in t.sites() if s.layer != IMAGE}, key=str)
    if layer is not None:
        models = {s.model for s in sites}
        return Site(models.pop() if len(models) == 1 else None, layer)
    if len(sites) != 1:
        found = ", ".join(map(str, sites)) or "no layer"
        raise InvalidArgumentError(f"unit {unit!r} reads {found}; name the layer whose diversity to weigh: layer=...")
    return sites[0]


def check_weights(weights: Any) -> tuple[float, ...]:
    """The ladder: finite weights >= 0, strictly increasing, at least one."""
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence) or not weights:
        raise InvalidArgumentError(f"weights must be a non-empty sequence of numbers >= 0, got {weights!r}")
    ladder = tuple(check_real(f"weights[{i}]", w, minimum=0.0, where="auto_diversity") for i, w in enumerate(weights))
    if any(b <= a for a, b in zip(ladder, ladder[1:])):
        raise InvalidArgumentError(f"weights must increase strictly (the search climbs them), got {ladder}")
    return ladder


def check_naturals(naturals: Any, channels: int) -> Tensor:
    """(N, C, H, W) floats in [0, 1] with the render's channel count, N >= 1."""
    if not isinstance(naturals, Tensor) or naturals.dim() != 4:
        got = tuple(naturals.shape) if isinstance(naturals, Tensor) else type(naturals).__name__
        raise InvalidArgumentError(f"naturals must be an (N, C, H, W) image tensor in [0, 1], got {got}")
    if naturals.shape[0] == 0:
        raise InvalidArgumentError("naturals is empty: give at least one natural image to beat")
    if naturals.shape[1] != channels:
        raise ImageError(f"naturals have {naturals.shape[1]} channels, the model reads {channels}: give "
                         f"(N, {channels}, H, W) images")
    _check_unit_range(naturals)
    if not bool(torch.isfinite(naturals).all()):
        raise ImageError("naturals hold NaN or inf")
    return naturals.to(torch.float32)


def check_render_kwargs(render_kwargs: dict[str, Any]) -> dict[str, Any]:
    from ..renderer.phases import render

    known = set(inspect.signature(render).parameters) - set(_SET_HERE)
    for k in render_kwargs:
        if k in _SET_HERE:
            raise TypeError(f"auto_diversity sets render's {k}= itself; give it as auto_diversity's own keyword"
                            if k in ("size", "steps", "batch", "seed") else f"auto_diversity got {k}= twice")
        if k not in known:
            raise TypeError(f"auto_diversity() got an unexpected keyword argument {k!r} (render takes "
                            f"{', '.join(sorted(known))})")
    return {"progress": False, **render_kwargs}


# --- scoring and rendering ----------------------------------------------------------------------------------


def unit_scores(plan: Plan, images: Tensor, *, batch: int = 16) -> Tensor:
    """(N,): what the unit's compiled objective scores on each image, unaugmented (fp32, frozen model)."""
    rows = []
    with torch.no_grad(), frozen_models(list(plan.models.values())):
        for i in range(0, len(images), batch):
            x = images[i:i + batch].to(plan.device, torch.float32)
            rows.append(plan.scores(plan.forward(x), len(x)).per_image.float().cpu())
    scores = torch.cat(rows)
    if not bool(torch.isfinite(scores).all()):
        raise ImageError(f"the unit scored NaN or inf on image {int((~torch.isfinite(scores)).nonzero()[0])}")
    return scores


@dc.dataclass(frozen=True, eq=False)
class _Try:
    weight: float
    images: Tensor
    scores: Tensor

    @property
    def weakest(self) -> float:
        return float(self.scores.min())


def _objective(unit: Expr, site: Site, weight: float) -> Expr:
    return unit if weight == 0 else unit - weight * diversity(site.layer, model=site.model)


def search(try_weight: Any, ladder: Sequence[float], bar: float, refine: int) -> tuple[_Try | None, list[_Try]]:
    """IMI's search: climb `ladder` until a weight fails, then bisect `refine` times between the last pass and
    the first failure. Returns (the largest passing try or None, every try in order).

    Example:
        >>> fake = lambda w: _Try(w, torch.zeros(1), torch.tensor([5.0 - w]))   # weakest score 5 - w
        >>> best, tries = search(fake, (0.0, 1.0, 10.0), bar=2.0, refine=3)
        >>> best.weight, [t.weight for t in tries]
        (2.125, [0.0, 1.0, 10.0, 5.5, 3.25, 2.125])
    """
    tries: list[_Try] = []
    best: _Try | None = None
    failed: float | None = None
    for w in ladder:
        t = try_weight(w)
        tries.append(t)
        if not t.weakest > bar:
            failed = w
            break
        best = t
    if best is None or failed is None:
        return best, tries
    lo, hi = best.weight, failed
    for _ in range(refine):
        t = try_weight((lo + hi) / 2)
        tries.append(t)
        if t.weakest > bar:
            best, lo = t, t.weight
        else:
            hi = t.weight
    return best, tries


def auto_diversity(
    unit: Expr | str,
    model: nn.Module,
    naturals: Tensor,
    *,
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    layer: str | None = None,
    refine: int = 0,
    batch: int = 4,
    steps: int = 256,
    size: int | tuple[int, int] = 128,
    seed: int = 0,
    **render_kwargs: Any,
) -> DiversityChoice:
    """The largest diversity weight whose weakest image still beats the best natural image on `unit` (IMI).

    Args:
        unit: one objective (an `Expr` or DSL text, e.g. `"channel('features.14', 3)"`), scoring every image alike.
        model: the `nn.Module` to render for.
        naturals: (N, C, H, W) images in [0, 1] (e.g. a dataset's top examples for the unit); each is scored on
            `unit` as one unaugmented image, and the best score is the bar.
        weights: the ladder, strictly increasing, >= 0 (`IMI_WEIGHTS` is theirs, in lucent's convention). It is
            climbed until a weight fails; weights above the first failure are not rendered.
        layer: where `diversity` reads (default: the one layer `unit` reads).
        refine: bisection steps between the last weight that passed and the first that failed (IMI: 7); each is
            one more render. 0: the chosen weight is one of `weights`.
        batch: images per render (>= 2: diversity compares them).
        steps, size, seed: each render's; every weight renders with the same seed.
        **render_kwargs: passed to `render` (`lr=`, `precision=`, `transforms=`, `progress=` (default False), ...).

    Returns:
        a `DiversityChoice`; its `weight` is None (with `message` saying why) when even the first weight fails.

    Raises:
        InvalidArgumentError, ImageError, LayerNotFoundError, TypeError: bad arguments, before any render.
    """
    unit = check_unit(unit)
    site = diversity_site(unit, layer)
    ladder = check_weights(weights)
    refine = check_int("refine", refine, minimum=0, where="auto_diversity")
    batch = check_int("batch", batch, minimum=2, where="auto_diversity (diversity compares the images of a batch)")
    steps = check_int("steps", steps, where="auto_diversity")
    size = check_size(size, where="auto_diversity")
    seed = check_seed(seed)
    kwargs = check_render_kwargs(render_kwargs)
    scorer = compile_plan(unit, model)
    from ..renderer.phases import image_channels, render

    compile_plan(_objective(unit, site, 1.0), model)  # the diversity layer is checked here, before any render
    bar = float(unit_scores(scorer, check_naturals(naturals, image_channels(scorer))).max())

    def try_weight(w: float) -> _Try:
        result = render(_objective(unit, site, w), model, size=size, steps=steps, batch=batch, seed=seed, **kwargs)
        if result.interrupted:
            raise KeyboardInterrupt
        images = result.images.detach().cpu()
        return _Try(w, images, unit_scores(scorer, images))

    best, tries = search(try_weight, ladder, bar, refine)
    shown = best if best is not None else tries[0]
    return DiversityChoice(
        weight=None if best is None else best.weight, images=shown.images, scores=shown.scores, natural_best=bar,
        tried=tuple((t.weight, t.weakest) for t in tries), unit=repr(unit), layer=str(site))

