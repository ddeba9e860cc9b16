"""The rows of `bench_picture_quality.py` that judge renders it is given or renders one class at a time: the judge,
naturalness, and early stopping (issue 27). Ours against torch-lucent is `versus_lucent.py`.

- **naturalness**: `lucent_dsl.sanity` on the class renders of a setting. Natural images: the sample-photo crops.
  The sanity check compares a unit's visualizations with natural images that drive the unit (positives) and ones
  that do not (negatives). The unit here is a class logit of the rendering model, so for each class the positives
  are the `k` crops (default 8) that model gives the largest logit of the class, the negatives the `k` smallest
  (its top and bottom "dataset examples" among the crops). Each class's render gets its own similarities, and the
  table shows their mean per layer, `joins_at` of these means (`sanity.joins_at`), and how many classes' own
  reports have joined by that layer. Detectability is `sanity.probe_accuracy` (what `sanity.detectability`
  computes) telling all the setting's renders from all the crops, per layer: 0.5 = indistinguishable.
  The crops are 42 views of 7 photos none of which shows the drawn classes: the positives are the photos that
  look most like the class to the model, not photos of it. Lower detectability and an earlier `joins_at` read as
  more natural; with 8 renders the probe's accuracy moves in steps of 1/16.
- **stopping**: one render per class (class c seeded SEED + c, the same for every rule, so a stopped render is the
  fixed render's prefix) at the fixed step count, with `stop=ld.Plateau()` (its defaults: patience 32, rel_tol
  1e-3 on the smoothed score, warm-up 32) and with `stop=ld.Target(c, p)` on the rendering model; steps used
  (mean, max) and how the renders are judged.

>>> Row("s", "defaults", "m", "self", 2, 8, 1, 2, 0.5, 3.0).line()
'| s | defaults | m | self | 2 | 8 | 1/2 | 2/2 | 0.500 | 3 |'
"""
from __future__ import annotations

import dataclasses as dc
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import lucent_dsl as ld
from lucent_dsl import sanity

SEED = 27

# mobilenet_v2's layers for the naturalness rows: early, middle, late blocks, the last features, the logits
NATURAL_LAYERS = {"mobilenet_v2": ("features.4", "features.10", "features.16", "features.18", "classifier")}


@dc.dataclass(frozen=True)
class Row:
    section: str
    setting: str
    rendered_on: str
    judge: str
    n: int
    steps: int
    top1: int
    top5: int
    p: float
    seconds: float

    def line(self) -> str:
        return (f"| {self.section} | {self.setting} | {self.rendered_on} | {self.judge} | {self.n} | {self.steps} | "
                f"{self.top1}/{self.n} | {self.top5}/{self.n} | {self.p:.3f} | {self.seconds:.0f} |")


def judged(judge: nn.Module, images: Tensor, classes: Sequence[int]) -> tuple[int, int, float]:
    """(top-1 hits, top-5 hits, mean probability of the class) of `judge` on `images` (image i is class i)."""
    with torch.no_grad():
        logits = judge(ld.info_of(judge).preprocess(images)).float()
    want = torch.tensor(list(classes))
    top5 = logits.topk(5, dim=1).indices
    return (int((top5[:, 0] == want).sum()), int((top5 == want[:, None]).any(1).sum()),
            float(logits.softmax(1)[torch.arange(len(want)), want].mean()))


# --- natural images and what a channel reads on them --------------------------------------------------


def photos(side: int, per_photo: int = 6) -> Tensor:
    """Random square crops of the sample photos of scikit-image, scikit-learn and matplotlib, at `side` px."""
    import matplotlib.cbook
    import skimage.data
    from PIL import Image
    from sklearn.datasets import load_sample_images

    arrays = [getattr(skimage.data, n)() for n in ("coffee", "astronaut", "chelsea", "rocket")]
    arrays += list(load_sample_images().images)
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        arrays.append(np.array(Image.open(f).convert("RGB")))
    g = torch.Generator().manual_seed(SEED)
    out = []
    for a in arrays:
        x = torch.from_numpy(np.array(a, copy=True)).permute(2, 0, 1)[None].float() / 255
        h, w = x.shape[-2:]
        for _ in range(per_photo):
            s = int(torch.randint(min(h, w) // 2, min(h, w) + 1, (1,), generator=g))
            top, left = (int(torch.randint(0, d - s + 1, (1,), generator=g)) for d in (h, w))
            out.append(F.interpolate(x[..., top:top + s, left:left + s], size=(side, side), mode="bilinear",
                                     antialias=True))
    return torch.cat(out).clamp(0, 1)


def channel_means(model: nn.Module, layer: str, images: Tensor, channels: Sequence[int], batch: int = 16) -> Tensor:
    """(images, channels): what `channel(layer, c)` scores on each image, unaugmented (the mean over every
    position of a map, or every token of a sequence, in the plan's canonical layout)."""
    from lucent_dsl.plan.forward import layer_reader, read_layers

    reader = layer_reader(model, layer)
    rows = []
    for i in range(0, len(images), batch):
        a = read_layers(model, images[i:i + batch], layer, reader=reader)[layer].float()
        rows.append(a.mean((2, 3)) if a.dim() == 4 else a.mean(1) if a.dim() == 3 else a)
    return torch.cat(rows)[:, list(channels)]


def held_out_digits() -> Tensor:
    """The 1,000 MNIST digits vit_mnist did not train on (100 per class): its channels' natural images."""
    from lucent_dsl.models import vit_mnist as vm

    images, labels = vm.load_digits()
    _, test = vm.split_indices(labels, test_per_class=100, seed=0)
    return images[test]


# --- naturalness --------------------------------------------------------------------------------------------


@dc.dataclass(frozen=True)
class NaturalRow:
    setting: str
    model: str
    layer: str
    n: int
    steps: int
    similarity: sanity.LayerSimilarity  # the mean over classes
    joined_here: int  # classes whose own report has joined the natural path by this layer
    detectability: float
    joins_at: str | None
    seconds: float

    HEADER = ("| section | setting | model:layer | renders | steps | vis~pos | vis~neg | pos~pos | pos~neg | "
              "classes joined by here | detectability | joins_at | render s |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|")

    def line(self) -> str:
        s = self.similarity
        return (f"| naturalness | {self.setting} | {self.model}:{self.layer} | {self.n} | {self.steps} | "
                f"{s.vis_pos:.3f} | {s.vis_neg:.3f} | {s.pos_pos:.3f} | {s.pos_neg:.3f} | "
                f"{self.joined_here}/{self.n} | {self.detectability:.3f} | {self.joins_at or 'never'} | "
                f"{self.seconds:.0f} |")


def class_logits(model: nn.Module, images: Tensor, batch: int = 16) -> Tensor:
    with torch.no_grad():
        return torch.cat([model(ld.info_of(model).preprocess(images[i:i + batch])).float()
                          for i in range(0, len(images), batch)])


def naturalness_rows(setting: str, model_name: str, model: nn.Module, renders: Tensor, classes: Sequence[int],
                     natural: Tensor, *, steps: int, seconds: float, k: int = 8,
                     layers: Sequence[str] | None = None) -> list[NaturalRow]:
    """One row per layer: the per-class path similarities' means, joins_at, detectability (see the docstring)."""
    layers = tuple(layers or NATURAL_LAYERS[model_name])
    if not 2 <= k <= len(natural) // 2:
        raise SystemExit(f"naturalness needs 2 <= k <= half the {len(natural)} natural images, got k={k}")
    vis, nat = (sanity.pooled_activations(model, layers, x) for x in (renders, natural))
    order = class_logits(model, natural).argsort(0, descending=True)  # (images, classes): best crops first
    reports = []
    for i, c in enumerate(classes):
        pos, neg = order[:k, c], order[-k:, c]
        reports.append(sanity.similarity_report({la: vis[la][i:i + 1] for la in layers},
                                                {la: nat[la][pos] for la in layers},
                                                {la: nat[la][neg] for la in layers}))
    fields = ("vis_pos", "vis_neg", "pos_pos", "pos_neg")
    means = tuple(sanity.LayerSimilarity(la, *(statistics.fmean(getattr(r.rows[j], f) for r in reports)
                                               for f in fields)) for j, la in enumerate(layers))
    joins = sanity.joins_at(means)
    joined = [layers.index(r.joins_at) if r.joins_at else len(layers) for r in reports]
    return [NaturalRow(setting, model_name, la, len(classes), steps, means[j], sum(x <= j for x in joined),
                       sanity.probe_accuracy(vis[la], nat[la]), joins, seconds)
            for j, la in enumerate(layers)]


# --- early stopping -----------------------------------------------------------------------------------------


@dc.dataclass(frozen=True)
class StopRow:
    section: str
    setting: str
    rule: str
    rendered_on: str
    judge: str
    steps: int
    used: tuple[int, ...]  # steps done, per class
    stopped: int  # renders the rule ended early
    top1: int
    top5: int
    p: float
    seconds: float

    HEADER = ("| section | setting | rule | rendered on | judge | classes | steps | stopped early | steps used "
              "(mean, max) | top-1 | top-5 | mean p | render s |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|")

    def line(self) -> str:
        n = len(self.used)
        return (f"| {self.section} | {self.setting} | {self.rule} | {self.rendered_on} | {self.judge} | {n} | "
                f"{self.steps} | {self.stopped}/{n} | {statistics.fmean(self.used):.0f}, {max(self.used)} | "
                f"{self.top1}/{n} | {self.top5}/{n} | {self.p:.3f} | {self.seconds:.0f} |")


def stop_rules(p: float) -> tuple[tuple[str, Callable[[int], Any]], ...]:
    """(name, class -> `stop=` value): the fixed step count, Plateau's defaults, Target(class, p)."""
    return (("fixed", lambda c: None), ("Plateau()", lambda c: ld.Plateau()),
            (f"Target(p={p:g})", lambda c: ld.Target(c, p)))


def stopping_rows(section: str, models: Mapping[str, nn.Module], source: str, judges: Sequence[str],
                  classes: Sequence[int], *, size: int, steps: int, setting: str, kwargs: Mapping[str, Any],
                  objective: Callable[[int], ld.Expr], p: float, log: Callable[[str], None]) -> list[StopRow]:
    """One render per class and rule (see the docstring); rows for the source model ("self") and each judge."""
    rows = []
    for rule, stop_of in stop_rules(p):
        start, images, used, stopped = time.perf_counter(), [], [], 0
        for c in classes:
            r = ld.render(objective(c), models[source], size=size, steps=steps, seed=SEED + c, progress=False,
                          **{**kwargs, "stop": stop_of(c)})
            images.append(r.images)
            used.append(r.steps)
            stopped += r.stopped is not None
        seconds, batch = time.perf_counter() - start, torch.cat(images)
        for judge in (source, *judges):
            rows.append(StopRow(section, setting, rule, source, "self" if judge == source else judge, steps,
                                tuple(used), stopped, *judged(models[judge], batch, classes), seconds))
            log(rows[-1].line())
    return rows
