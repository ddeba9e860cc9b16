"""A sanity check for visualizations: do they travel the network's path the way natural images do?

Geirhos et al. ("Don't trust your eyes", ICML 2024) found that natural images of a class follow
a shared path through a network, while feature visualizations of that class may join it only in
the last layers. `path_similarity` measures this, layer by layer.

The metric. At each layer every image becomes one vector: its activations averaged over space
(maps (B, C, H, W) over H and W, sequences (B, T, C) over tokens; (B, C) vectors as they are).
The similarity of two images is the Spearman rank correlation of their vectors (ties get their
average rank), and a group similarity is the mean over all pairs. Four numbers per layer:

- `vis_pos`: visualizations vs natural images that drive the unit (e.g. its top dataset examples);
- `vis_neg`: visualizations vs natural images that do not (e.g. its bottom examples);
- `pos_pos`: the driving natural images among themselves (pairs of distinct images): the natural path;
- `pos_neg`: driving vs non-driving natural images (how much of the similarity any two images share).

The one-number summary, `joins_at`, is the first layer from which on (at it and every later layer
given) the visualizations are on the natural path: at least `threshold` (default 0.5) times as
similar to the driving images as these are among themselves (`vis_pos >= t * pos_pos`), and at
least `threshold` times as selective (`vis_pos - vis_neg >= t * (pos_pos - pos_neg)`, and > 0).
None: the visualizations never join the natural path.

`detectability` is the complementary probe: a linear classifier (a ridge classifier: L2-regularized
least squares on standardized pooled activations, balanced classes, evaluated by stratified k-fold
cross-validation)
that tells visualizations from natural images; its balanced held-out accuracy per layer is near
0.5 where the two are indistinguishable and near 1 where the visualizations are off the natural
manifold.

Example:
    >>> import torch, torch.nn as nn
    >>> torch.manual_seed(0) and None
    >>> net = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3))
    >>> pos, neg = torch.rand(6, 3, 12, 12), torch.rand(6, 3, 12, 12)
    >>> report = path_similarity(net, ["0", "2"], pos[:2], pos[2:], neg)  # "visualizations" that are natural
    >>> [row.layer for row in report.rows], report.joins_at
    (['0', '2'], '0')
"""
from __future__ import annotations

import dataclasses as dc
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .errors import InvalidArgumentError, ObjectiveShapeError
from .plan.forward import layer_reader, read_layers


@dc.dataclass(frozen=True)
class LayerSimilarity:
    """One layer's mean Spearman similarities (see the module docstring)."""

    layer: str
    vis_pos: float
    vis_neg: float
    pos_pos: float
    pos_neg: float


@dc.dataclass(frozen=True)
class PathReport:
    """Per-layer similarities (in the order given) and the summary: the layer where the visualizations join."""

    rows: tuple[LayerSimilarity, ...]
    joins_at: str | None
    threshold: float = 0.5

    def table(self) -> str:
        """A plain-text table, one row per layer.

        Example:
            >>> print(PathReport((LayerSimilarity("conv1", 0.1, 0.05, 0.9, 0.6),), None).table())
            layer  vis~pos  vis~neg  pos~pos  pos~neg
            conv1    0.100    0.050    0.900    0.600
            the visualizations do not join the natural path (threshold 0.5)
        """
        width = max([5] + [len(r.layer) for r in self.rows])
        lines = [f"{'layer':<{width}}  vis~pos  vis~neg  pos~pos  pos~neg"]
        lines += [
            f"{r.layer:<{width}}  {r.vis_pos:7.3f}  {r.vis_neg:7.3f}  {r.pos_pos:7.3f}  {r.pos_neg:7.3f}"
            for r in self.rows
        ]
        lines.append(f"the visualizations join the natural path at {self.joins_at}" if self.joins_at
                     else f"the visualizations do not join the natural path (threshold {self.threshold:g})")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return dc.asdict(self)


# --- features --------------------------------------------------------------------------------------


def pooled_activations(
    model: nn.Module, layers: Sequence[str], images: Tensor, *, batch: int = 32
) -> dict[str, Tensor]:
    """Each layer's activations of `images` (N, C, H, W in [0, 1]), averaged over space: {layer: (N, channels)}.

    One truncated forward per batch reads every layer (the model's preprocessing applies).

    Raises:
        LayerNotFoundError: a layer the model does not have.
        ObjectiveShapeError: a layer whose output is not a (B, C, H, W), (B, T, C) or (B, C) tensor.
    """
    if not layers:
        raise InvalidArgumentError("path_similarity needs at least one layer")
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[0] == 0:
        raise InvalidArgumentError(
            "images must be a non-empty (N, C, H, W) tensor in [0, 1], got "
            f"{getattr(images, 'shape', type(images).__name__)}"
        )
    reader = layer_reader(model, layers)
    out: dict[str, list[Tensor]] = {layer: [] for layer in layers}
    for lo in range(0, images.shape[0], batch):
        acts = read_layers(model, images[lo:lo + batch], layers, reader=reader)
        for layer in layers:
            out[layer].append(_pool(layer, acts[layer]))
    return {layer: torch.cat(parts) for layer, parts in out.items()}


def _pool(layer: str, a: Any) -> Tensor:
    if not isinstance(a, Tensor) or a.dim() not in (2, 3, 4) or not a.is_floating_point():
        raise ObjectiveShapeError(
            f"layer {layer!r} outputs {getattr(a, 'shape', type(a).__name__)}; path_similarity reads "
            "(B, C, H, W) maps, (B, T, C) sequences or (B, C) vectors"
        )
    pooled = a.mean((2, 3)) if a.dim() == 4 else a.mean(1) if a.dim() == 3 else a
    return pooled.float().cpu()


def ranks(x: Tensor) -> Tensor:
    """Row-wise ranks, 0-based, ties given their average rank.

    Example:
        >>> ranks(torch.tensor([[3.0, 1.0, 3.0, 2.0]]))
        tensor([[2.5000, 0.0000, 2.5000, 1.0000]])
    """
    out = torch.empty_like(x, dtype=torch.float64)
    for i, row in enumerate(x):
        _, inverse, counts = torch.unique(row, sorted=True, return_inverse=True, return_counts=True)
        ends = counts.cumsum(0).double()
        out[i] = (ends - (counts.double() + 1) / 2)[inverse]
    return out.float()


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """The Spearman correlation of every row of `a` (n, d) with every row of `b` (m, d): an (n, m) matrix.

    Example:
        >>> spearman(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[10.0, 20.0, 30.0], [3.0, 2.0, 1.0]]))
        tensor([[ 1., -1.]])
    """
    def standard(x: Tensor) -> Tensor:
        r = ranks(x).double()
        r = r - r.mean(1, keepdim=True)
        return r / r.norm(dim=1, keepdim=True).clamp_min(1e-12)

    return (standard(a) @ standard(b).T).float()


def _mean_pairs(a: Tensor, b: Tensor, same: bool) -> float:
    c = spearman(a, b)
    if same:
        n = c.shape[0]
        if n < 2:
            raise InvalidArgumentError(
                "path_similarity needs at least 2 driving natural images (pos~pos compares pairs)"
            )
        return float((c.sum() - c.diagonal().sum()) / (n * (n - 1)))
    return float(c.mean())


# --- the check ------------------------------------------------------------------------------------


def similarity_report(vis: Mapping[str, Tensor], pos: Mapping[str, Tensor], neg: Mapping[str, Tensor], *,
                      threshold: float = 0.5) -> PathReport:
    """`path_similarity` from pooled activations ({layer: (n, channels)}, see `pooled_activations`), layers in `vis`'s
    order."""
    rows = tuple(
        LayerSimilarity(
            layer,
            _mean_pairs(vis[layer], pos[layer], False),
            _mean_pairs(vis[layer], neg[layer], False),
            _mean_pairs(pos[layer], pos[layer], True),
            _mean_pairs(pos[layer], neg[layer], False),
        )
        for layer in vis
    )
    return PathReport(rows, joins_at(rows, threshold), threshold)


def joins_at(rows: Sequence[LayerSimilarity], threshold: float = 0.5) -> str | None:
    """The first layer from which on the visualizations stay on the natural path (see the module docstring)."""
    on = [r.vis_pos >= threshold * r.pos_pos and r.vis_pos - r.vis_neg >= max(threshold * (r.pos_pos - r.pos_neg), 1e-9)
          for r in rows]
    first = None
    for i in range(len(rows) - 1, -1, -1):
        if not on[i]:
            break
        first = rows[i].layer
    return first


def path_similarity(
    model: nn.Module,
    layers: Sequence[str],
    visualizations: Tensor,
    positives: Tensor,
    negatives: Tensor,
    *,
    threshold: float = 0.5,
) -> PathReport:
    """How similar, layer by layer, `visualizations` are to natural images that drive a unit (`positives`)
    and to natural images that do not (`negatives`), next to the natural images among themselves.

    All three are (N, C, H, W) batches in [0, 1]; `layers` in network order. See the module docstring
    for the metric and for `joins_at`.
    """
    if not 0 < threshold <= 1:
        raise InvalidArgumentError(f"threshold must be in (0, 1], got {threshold!r}")
    feats = [pooled_activations(model, layers, x) for x in (visualizations, positives, negatives)]
    return similarity_report(*feats, threshold=threshold)


# --- detectability ----------------------------------------------------------------------------------


def _folds(labels: Tensor, k: int) -> list[Tensor]:
    """Stratified folds: each class's indices dealt round-robin (in a fixed shuffled order)."""
    gen = torch.Generator().manual_seed(0)
    fold_of = torch.empty_like(labels)
    for c in (0, 1):
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        fold_of[idx] = torch.arange(len(idx)) % k
    return [(fold_of == f).nonzero().flatten() for f in range(k)]


def _fit_predict(x: Tensor, y: Tensor, test: Tensor, l2: float) -> Tensor:
    """A ridge classifier: least squares on +-1 labels with an L2 penalty, balanced class weights, solved in closed
    form."""
    mean, std = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-6)
    x, test = (x - mean) / std, (test - mean) / std
    target = y * 2 - 1
    weight = torch.where(y == 1, 0.5 / y.sum(), 0.5 / (1 - y).sum()) * len(y)  # balanced classes
    xb = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1) * weight.sqrt()[:, None]
    tb = target * weight.sqrt()
    # the dual form (n x n): cheap when there are more features than images, as there usually are
    alpha = torch.linalg.solve(xb @ xb.T + l2 * len(y) * torch.eye(len(y), dtype=x.dtype), tb)
    w = xb.T @ alpha
    testb = torch.cat([test, torch.ones(len(test), 1, dtype=x.dtype)], 1)
    return (testb @ w > 0).double()


def probe_accuracy(vis: Tensor, natural: Tensor, *, folds: int = 5, l2: float = 1.0) -> float:
    """Balanced held-out accuracy of a linear probe telling `vis` rows (n, d) from `natural` rows (m, d)."""
    x = torch.cat([vis, natural]).double()
    y = torch.cat([torch.ones(len(vis)), torch.zeros(len(natural))]).double()
    k = min(folds, len(vis), len(natural))
    if k < 2:
        raise InvalidArgumentError(
            f"detectability needs at least 2 visualizations and 2 natural images, got {len(vis)} and {len(natural)}"
        )
    pred = torch.empty_like(y)
    for test in _folds(y.long(), k):
        train = torch.ones(len(y), dtype=torch.bool)
        train[test] = False
        pred[test] = _fit_predict(x[train], y[train], x[test], l2)
    recall = [float((pred[y == c] == c).double().mean()) for c in (1, 0)]
    return sum(recall) / 2


def detectability(model: nn.Module, layers: Sequence[str], visualizations: Tensor, naturals: Tensor, *,
                  folds: int = 5) -> dict[str, float]:
    """Per layer, how well a linear probe tells visualizations from natural images: balanced accuracy in [0, 1]
    (0.5: indistinguishable; 1: every visualization is detected, i.e. off the natural manifold).

    Example:
        >>> import torch.nn as nn
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3))
        >>> bright, dark = 0.5 + 0.5 * torch.rand(6, 3, 10, 10), 0.5 * torch.rand(6, 3, 10, 10)
        >>> detectability(net, ["0"], bright, dark, folds=3)
        {'0': 1.0}
    """
    vis, nat = (pooled_activations(model, layers, x) for x in (visualizations, naturals))
    return {layer: probe_accuracy(vis[layer], nat[layer], folds=folds) for layer in layers}


__all__ = ["LayerSimilarity", "PathReport", "detectability", "joins_at", "path_similarity", "pooled_activations",
           "probe_accuracy", "ranks", "similarity_report", "spearman"]
