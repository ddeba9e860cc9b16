"""The rows of `bench_picture_quality.py` that judge renders it is given or renders one class at a time: the judge,
ours against torch-lucent (equal steps and equal wall time), naturalness, and early stopping (issue 27).

- **vs lucent**: `render_vis` with its defaults and ours with ours, on the same model, classes and steps S, one
  image per render, the two contenders alternating class by class on one thread (so the machine's load falls on
  both alike; an untimed 2-step render of each goes first). Then each gets the other's time: ours renders
  round(S * lucent_s / ours_s) steps, lucent round(S * ours_s / lucent_s), judged alike. "per unit time" compares
  ours at lucent's time with lucent at S steps, on the held-out judge: top-1 first, then mean p. `--clock cpu`
  measures the process's CPU seconds instead of wall seconds (steadier on a shared machine).
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

import torch
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


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


# --- torch-lucent: equal steps, equal time ------------------------------------------------------------------


def lucent_rows(model_name: str, model: nn.Module, judge_name: str, judge: nn.Module, classes: Sequence[int], *,
                steps: int, log: Callable[[str], None], clock: str = "wall") -> list[Row]:
    from bench_quality import Target, lucent_available, run_lucent

    why = lucent_available()
    if why is not None:
        log(f"| vs lucent | torch-lucent does not import here: {why} |")
        return []
    contenders: dict[str, Callable[[int, int], Tensor]] = {
        "ours": lambda c, s: ld.render(ld.class_logit(c), model, size=224, steps=s, seed=SEED, progress=False).images,
        "lucent": lambda c, s: run_lucent(model, Target(str(c), None, c), 224, s, 1, SEED),
    }
    for fn in contenders.values():
        fn(classes[0], 2)  # untimed: one-time costs (imports, first allocations) stay out of the timing

    which = 1 if clock == "cpu" else 0

    def run(who: str, n_steps: int) -> tuple[Tensor, float]:
        start, images = _clocks(), [contenders[who](c, n_steps) for c in classes]
        return torch.cat(images), _clocks()[which] - start[which]

    images: dict[str, list[Tensor]] = {"ours": [], "lucent": []}
    both = {"ours": [0.0, 0.0], "lucent": [0.0, 0.0]}  # wall, cpu
    for c in classes:  # alternating, class by class
        for who, fn in contenders.items():
            start = _clocks()
            images[who].append(fn(c, steps))
            both[who] = [t + b - a for t, a, b in zip(both[who], start, _clocks())]
    seconds = {who: both[who][which] for who in both}

    def rows_of(section: str, who: str, batch: Tensor, secs: float, n_steps: int) -> list[Row]:
        out = []
        for jn, j in ((model_name, model), (judge_name, judge)):
            out.append(Row(section, who, model_name, "self" if jn == model_name else jn, len(classes), n_steps,
                           *judged(j, batch, classes), secs))
            log(out[-1].line())
        return out

    rows = [r for who in contenders for r in rows_of("vs lucent", who, torch.cat(images[who]), seconds[who], steps)]
    per = {who: [t / (len(classes) * steps) for t in ts] for who, ts in both.items()}
    log(f"# seconds per step (one image, {len(classes)} classes x {steps} steps, alternating): wall: ours "
        f"{per['ours'][0]:.4f}, lucent {per['lucent'][0]:.4f}; cpu: ours {per['ours'][1]:.4f}, lucent "
        f"{per['lucent'][1]:.4f}; equal time by the {clock} clock")
    ours_steps = max(1, round(steps * seconds["lucent"] / seconds["ours"]))
    lucent_steps = max(1, round(steps * seconds["ours"] / seconds["lucent"]))
    for who, n_steps in (("ours", ours_steps), ("lucent", lucent_steps)):
        other = "lucent's" if who == "ours" else "ours'"
        rows += rows_of("vs lucent, equal time", f"{who} at {other} time", *run(who, n_steps), n_steps)
    ours_s, lucent_s, ours_at_theirs, theirs_at_ours = [r for r in rows if r.judge == judge_name]
    log(verdict("per unit time", ours_at_theirs, lucent_s))
    log(verdict("per unit time, the other way", theirs_at_ours, ours_s, first="lucent at ours' time",
                second="ours"))
    return rows


def verdict(what: str, a: Row, b: Row, *, first: str = "ours at lucent's time",
            second: str = "lucent") -> str:
    """'# what (judge): first (steps) top-1, p vs second (steps) top-1, p: who is ahead' (top-1, then p)."""
    ahead = "tied" if (a.top1, round(a.p, 3)) == (b.top1, round(b.p, 3)) else (
        f"{first.split(' ')[0]} ahead" if (a.top1, a.p) > (b.top1, b.p) else f"{second.split(' ')[0]} ahead")
    return (f"# {what} (judged by {a.judge}): {first} ({a.steps} steps) top-1 {a.top1}/{a.n}, p {a.p:.3f} vs "
            f"{second} ({b.steps} steps) top-1 {b.top1}/{b.n}, p {b.p:.3f}: {ahead}")


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
