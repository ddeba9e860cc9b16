"""Dataset examples: for many units at once, the natural images (or crops) that score highest and lowest.

An objective is a score, so a unit is any objective (`channel`, `neuron`, `direction`,
`class_logit`, `masked(...)`, sums of them): `dataset_examples` compiles one plan for all of
them (one forward, truncated after the deepest layer any of them reads) and evaluates each
bound objective on each batch with the same interpreter a render uses (`expr.evaluate`). The
pass streams: images are loaded `batch` at a time and only the running top-k and bottom-k of
every unit are kept (memory O(units x k)). With `state=PATH` it writes its running lists there
(atomically, every batch) and a rerun resumes after the last finished batch, when the state was made by
the same pass (units, k, size, model weights, image files and contents); else it starts again and says why.

For a unit that reads one channel of a (B, C, H, W) map (`channel`, `neuron`, or a
`class_logit` of a segmentation output), every example also gets a box: the receptive field
(measured by `receptive_field`, from input gradients) around the arg-max position of the
channel (arg-min for the bottom examples; a neuron's own position), in pixels of the image as
the model saw it. `crops` cuts those boxes out.

Terms that compare the images of a batch (`diversity`, `channel_interpolate`) or select one
image (`batch=`) do not score an image alone; they are refused.

Example:
    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    >>> images = torch.rand(10, 3, 8, 8)
    >>> images[7] = 1.0                                 # a white image
    >>> found = dataset_examples(["channel('0', 0)", "-channel('0', 0)"], net, images, k=3, progress=False)
    >>> [len(u.top) for u in found.units], found.seen
    ([3, 3], 10)
    >>> found.units[0].top[0].score >= found.units[0].top[1].score >= found.units[0].top[2].score
    True
    >>> found.units[1].top[0].index == found.units[0].bottom[0].index  # the conv's output: no ties (ReLU's zeros tie)
    True
"""
from __future__ import annotations

import dataclasses as dc
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .dsl.expr import Expr, Scale, Site, evaluate, sum_of, terms_of
from .dsl.parser import parse
from .dsl.printing import to_text
from .errors import InvalidArgumentError
from .image_sources import IMAGE_SUFFIXES as IMAGE_SUFFIXES, ImageSource, image_source
from .models.info import device_of, info_of
from .objectives.activation import Channel, ClassLogit, Neuron
from .plan.compiler import as_models, bind, compile_plan
from .plan.fold import frozen_models
from .plan.forward import read_layers
from .record.resume import StaleStateWarning, pass_key, resume_state, save_state


class TooFewImagesWarning(UserWarning):
    """Fewer than 2k images: each unit gets n // 2 top and n // 2 bottom examples, never one image in both."""


Box = tuple[int, int, int, int]  # (x0, y0, x1, y1) in pixels, x1/y1 excluded


@dc.dataclass(frozen=True)
class Example:
    """One natural example of a unit: the image's position in the source, its score, its box (None: whole image)."""

    index: int
    score: float
    box: Box | None = None


@dc.dataclass(frozen=True)
class UnitExamples:
    """A unit (its objective as DSL text) with its top examples (highest first) and bottom ones (lowest first)."""

    objective: str
    top: tuple[Example, ...]
    bottom: tuple[Example, ...]


@dc.dataclass(frozen=True)
class Examples:
    """The result of `dataset_examples`: every unit's examples, how many images were seen, their size (H, W)."""

    units: tuple[UnitExamples, ...]
    seen: int
    size: tuple[int, int]

    def to_json(self) -> str:
        """JSON text; `Examples.from_json` reads it back."""
        return json.dumps(dc.asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> Examples:
        d = json.loads(text)
        units = tuple(
            UnitExamples(u["objective"], *(tuple(Example(e["index"], e["score"], tuple(e["box"]) if e["box"] else None)
                                                 for e in u[key]) for key in ("top", "bottom")))
            for u in d["units"]
        )
        return cls(units, int(d["seen"]), tuple(d["size"]))  # type: ignore[arg-type]


# --- receptive fields -----------------------------------------------------------------------------


def receptive_field(model: nn.Module, layer: str, size: tuple[int, int], *, trials: int = 4) -> tuple[int, int]:
    """The receptive field (height, width in input pixels) of the centre position of `layer`'s maps.

    Measured: the extent of the input gradient of all channels at the centre position, united over
    `trials` random images (a max-pool passes gradient to one input of its window, ReLUs to active ones).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.Conv2d(2, 2, 5, padding=2))
        >>> receptive_field(net, "1", (16, 16))
        (7, 7)
    """
    return _grid_and_field(model, layer, size, trials)[1]


def _grid_and_field(
    model: nn.Module, layer: str, size: tuple[int, int], trials: int = 4
) -> tuple[tuple[int, int], tuple[int, int]]:
    gen = torch.Generator().manual_seed(0)
    x = (
        torch.rand(trials, min(3, info_of(model).channels), *size, generator=gen)
        .to(device_of(model))
        .requires_grad_(True)
    )
    a = read_layers(model, x, [layer], grad=True)[layer]
    if not isinstance(a, Tensor) or a.dim() != 4:
        raise InvalidArgumentError(
            f"{layer!r} outputs {getattr(a, 'shape', type(a).__name__)}, not (B, C, H, W) maps; "
            "it has no receptive field"
        )
    a[:, :, a.shape[2] // 2, a.shape[3] // 2].sum().backward()
    grid = (int(a.shape[2]), int(a.shape[3]))
    touched = (x.grad.abs().sum((0, 1)) > 0).nonzero()  # type: ignore[union-attr]
    if not len(touched):
        return grid, size
    (y0, x0), (y1, x1) = touched.min(0).values.tolist(), touched.max(0).values.tolist()
    return grid, (y1 - y0 + 1, x1 - x0 + 1)


def box_at(pos: tuple[int, int], grid: tuple[int, int], size: tuple[int, int], field: tuple[int, int]) -> Box:
    """The `field`-sized box around cell `pos` (row, col) of a `grid` over an image of `size`, kept inside.

    Example:
        >>> box_at((0, 3), (4, 4), (32, 32), (12, 12))  # centred on x = 28, moved left to stay inside
        (20, 0, 32, 12)
    """
    out = []
    for p, g, s, f in zip(pos[::-1], grid[::-1], size[::-1], field[::-1]):
        f = min(f, s)
        centre = (p + 0.5) * s / g
        lo = int(min(max(round(centre - f / 2), 0), s - f))
        out.append((lo, lo + f))
    (x0, x1), (y0, y1) = out
    return x0, y0, x1, y1


def _spatial(bound: Expr) -> tuple[Site, int, tuple[int, int] | None, bool] | None:
    """(site, channel, fixed position or None, whether higher activation scores higher) for a one-channel unit."""
    k, e = (bound.k, bound.expr) if isinstance(bound, Scale) else (1.0, bound)
    if isinstance(e, Neuron) and e.token is None:
        return e.sites()[0], e.index, (-1 if e.y is None else e.y, -1 if e.x is None else e.x), k > 0
    if isinstance(e, Channel):
        return e.sites()[0], e.index, None, k > 0
    if isinstance(e, ClassLogit) and isinstance(e.label, int):
        return e.sites()[0], e.label, None, k > 0
    return None


# --- the streaming pass ---------------------------------------------------------------------------


def _check_unit(text: str, e: Expr) -> None:
    for t in terms_of(e):
        names = {f.name for f in dc.fields(t)}  # type: ignore[arg-type]
        if "batch" not in names and t.sites():
            raise InvalidArgumentError(
                f"{text}: {t!r} compares the images of a batch; a unit must score each image alone"
            )
        batch = getattr(t, "batch", None)
        if "batch" in names and batch is not None:
            raise InvalidArgumentError(f"{text}: {t!r} selects batch={batch!r}; dataset examples score every image")


class _Running:
    """The running top-k / bottom-k of every unit: scores, image indices, positions (row, col or -1)."""

    def __init__(self, units: int, k: int) -> None:
        self.k = k
        self.lists = {
            key: (
                torch.empty(units, 0),
                torch.empty(units, 0, dtype=torch.long),
                torch.empty(units, 0, 2, dtype=torch.long),
            )
            for key in ("top", "bottom")
        }

    def add(self, scores: Tensor, index: Tensor, pos: dict[str, Tensor]) -> None:
        for key, largest in (("top", True), ("bottom", False)):
            s, i, p = self.lists[key]
            s = torch.cat([s, scores], 1)
            i = torch.cat([i, index.expand(scores.shape[0], -1)], 1)
            p = torch.cat([p, pos[key]], 1)
            kk = min(self.k, s.shape[1])
            # One total order, whatever the batch size: top is (score high to low, earlier image first on ties),
            # bottom is exactly its reverse, so the two lists never share an image while 2k <= images.
            if largest:
                order = torch.sort(-s, dim=1, stable=True).indices[:, :kk]
            else:
                later = torch.sort(-i, dim=1, stable=True).indices
                order = later.gather(1, torch.sort(s.gather(1, later), dim=1, stable=True).indices)[:, :kk]
            self.lists[key] = (s.gather(1, order), i.gather(1, order), p.gather(1, order[..., None].expand(-1, -1, 2)))

    def to_dict(self) -> dict[str, Any]:
        return {key: [t.tolist() for t in v] for key, v in self.lists.items()}

    def load(self, d: dict[str, Any]) -> None:
        for key in ("top", "bottom"):
            s, i, p = d[key]
            self.lists[key] = (torch.tensor(s, dtype=torch.float32), torch.tensor(i, dtype=torch.long),
                               torch.tensor(p, dtype=torch.long).reshape(len(s), -1, 2))


def dataset_examples(objectives: Sequence[Expr | str], model: nn.Module, images: Any, *, k: int = 9, batch: int = 64,
                     size: int | tuple[int, int] | None = None, state: str | Path | None = None,
                     progress: bool = True) -> Examples:
    """The top-`k` and bottom-`k` examples of every objective over `images`, in one streaming pass.

    Args:
        objectives: the units, as expressions or DSL text (each scores every image alone).
        model: one `nn.Module` (its `ModelInfo` preprocessing applies).
        images: a folder, a list of files, an (N, C, H, W) tensor in [0, 1], or a dataset (see `image_source`).
        k: examples kept per unit and side (at most half the images: a `TooFewImagesWarning` says when fewer
            are kept, so no image is both a top and a bottom example); batch: images per forward.
        state: a JSON file for the running lists, rewritten after every batch. A rerun resumes from it only when
            it was made by the same pass: the same units, k, size, model (class, preprocessing and weights
            fingerprint) and images (`io.datasets.images_fingerprint`); otherwise a `StaleStateWarning` says what
            changed and the pass starts again from the first image.

    Raises:
        InvalidArgumentError: no objectives, a bad k/batch, fewer than 2 images, or a term that is not a
            per-image score.
    """
    if (
        isinstance(k, bool)
        or not isinstance(k, int)
        or k < 1
        or isinstance(batch, bool)
        or not isinstance(batch, int)
        or batch < 1
    ):
        raise InvalidArgumentError(f"k and batch must be ints >= 1, got k={k!r}, batch={batch!r}")
    exprs = [parse(o) if isinstance(o, str) else o for o in objectives]
    if not exprs or not all(isinstance(e, Expr) for e in exprs):
        raise InvalidArgumentError("dataset_examples needs at least one objective (an expression or DSL text)")
    texts = [to_text(e) for e in exprs]
    for text, e in zip(texts, exprs):
        _check_unit(text, e)
    models = as_models(model)
    bound = [bind(e, models) for e in exprs]
    plan = compile_plan(sum_of([t for e in exprs for t in terms_of(e)]), model)
    source = image_source(images, model, size)
    k = _fewer(k, len(source))
    spatial = [_spatial(b) for b in bound]
    running = _Running(len(exprs), k)
    key = pass_key(texts, k, source.size, model, source.items) if state is not None else {}
    saved = resume_state(state, key)
    if saved is not None:
        running.load(saved["lists"])
    start = 0 if saved is None else int(saved["seen"])
    bar = _bar(len(source), start, progress)
    device = device_of(model)
    try:
        with torch.no_grad(), frozen_models(list(plan.models.values())):
            for lo in range(start, len(source), batch):
                idx = list(range(lo, min(lo + batch, len(source))))
                acts = plan.forward(source.load(idx).to(device))
                scores = torch.stack([evaluate(b, acts, len(idx)).float().cpu() for b in bound])
                if not bool(torch.isfinite(scores).all()):
                    bad = texts[int((~torch.isfinite(scores)).any(1).nonzero()[0])]
                    raise InvalidArgumentError(
                        f"{bad} scored NaN or inf on images {idx[0]}..{idx[-1]}; check the images"
                    )
                running.add(scores, torch.tensor(idx)[None], _positions(spatial, acts, len(idx)))
                if state is not None:
                    save_state(state, key, {"seen": idx[-1] + 1, "lists": running.to_dict()})
                if bar is not None:
                    bar.update(len(idx))
    finally:
        if bar is not None:
            bar.close()
    maps = {s[0] for s in spatial if s is not None and _is_map(plan, s[0], source)}
    fields = {site: _grid_and_field(plan.models[site.model], site.layer, source.size) for site in maps}  # type: ignore[index]
    return Examples(tuple(_unit(t, running, u, spatial[u], fields, source.size) for u, t in enumerate(texts)),
                    len(source), source.size)


def _fewer(k: int, n: int) -> int:
    """k, or n // 2 (with a warning) when n images cannot give k top and k other bottom examples."""
    if n < 2:
        raise InvalidArgumentError(f"dataset examples need at least 2 images (a top and a bottom example), got {n}")
    if 2 * k <= n:
        return k
    warnings.warn(f"only {n} images for k={k} top and {k} bottom examples: showing {n // 2} of each, so that no image "
                  "is both a top and a bottom example (give more images, or a smaller k)", TooFewImagesWarning,
                  stacklevel=3)
    return n // 2


def _is_map(plan: Any, site: Site, source: ImageSource) -> bool:
    with torch.no_grad(), frozen_models(list(plan.models.values())):
        a = plan.forward(source.load([0]).to(plan.device))[site]
    return isinstance(a, Tensor) and a.dim() == 4


def _positions(spatial: list, acts: dict, n: int) -> dict[str, Tensor]:
    out = {key: torch.full((len(spatial), n, 2), -1, dtype=torch.long) for key in ("top", "bottom")}
    for u, s in enumerate(spatial):
        if s is None or not isinstance(acts[s[0]], Tensor) or acts[s[0]].dim() != 4:
            continue
        site, c, fixed, up = s
        a = acts[site]
        h, w = a.shape[2:]
        if fixed is not None:
            y, x = (h // 2 if fixed[0] < 0 else fixed[0]), (w // 2 if fixed[1] < 0 else fixed[1])
            out["top"][u] = out["bottom"][u] = torch.tensor([y, x])
            continue
        m = a[:, c].flatten(1).float().cpu()
        high, low = m.argmax(1), m.argmin(1)
        for key, flat in (("top", high if up else low), ("bottom", low if up else high)):
            out[key][u] = torch.stack([flat // w, flat % w], 1)
    return out


def _unit(text: str, running: _Running, u: int, spatial: Any, fields: dict, size: tuple[int, int]) -> UnitExamples:
    sides = []
    site = spatial[0] if spatial is not None else None
    for key in ("top", "bottom"):
        s, i, p = running.lists[key]
        out = []
        for score, index, (y, x) in zip(s[u].tolist(), i[u].tolist(), p[u].tolist()):
            box = box_at((y, x), fields[site][0], size, fields[site][1]) if site in fields and y >= 0 else None
            out.append(Example(int(index), float(score), box))
        sides.append(tuple(out))
    return UnitExamples(text, sides[0], sides[1])


def _bar(total: int, initial: int, enabled: bool):
    if not enabled or initial >= total:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="examples", unit="image")


def crops(examples: Sequence[Example], source: ImageSource, *, side: int | None = None) -> Tensor:
    """The examples' images, each cut to its box (whole image without one) and resized to `side` (default: the image
    size).

    Returns:
        (len(examples), C, side, side) in [0, 1].
    """
    side = side or max(source.size)
    tiles = []
    for ex in examples:
        x = source.load([ex.index])
        if ex.box is not None:
            x0, y0, x1, y1 = ex.box
            x = x[..., y0:y1, x0:x1]
        tiles.append(
            F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
        )
    return torch.cat(tiles) if tiles else torch.empty(0, source.channels, side, side)


__all__ = ["Example", "Examples", "ImageSource", "StaleStateWarning", "TooFewImagesWarning", "UnitExamples", "box_at",
           "crops", "dataset_examples", "image_source", "receptive_field"]
