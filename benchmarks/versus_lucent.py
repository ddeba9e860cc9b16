"""Ours against torch-lucent on every row of the quality benchmark, at equal steps and at equal time (issue 27).

A `Contest` is one row: the targets (classes, digits, channels), how each library renders one target for a number
of steps, and how a batch of renders is scored (a `Score`, larger `key` is better). `versus` runs it:

1. every target with each library at S steps, the two alternating target by target on one thread (the machine's
   load falls on both alike; an untimed 2-step render of each goes first);
2. each library again at the other's time: ours round(S * lucent_s / ours_s) steps, lucent
   round(S * ours_s / lucent_s);
3. two verdicts: ours at lucent's time against lucent at S steps, and lucent at ours' time against ours at S.

Ours renders with `ld.render`'s defaults (preset "auto"). lucent renders with `render_vis`'s defaults (FFT image
with decorrelated colour, its standard transforms, Adam lr 0.05) on the model wrapped as
`Sequential(preprocess, model, Identity())`: the preprocess is the model's own (`ModelInfo.preprocess`, the
same our render uses, instead of lucent's fixed ImageNet normalization), and the trailing `Identity` makes
lucent's "labels" (the last module it hooks) the model's output. Two adaptations a lucent user would make:
a 1-channel model gets `param.image(size, channels=1)`, and images under 224 px get `fixed_image_size=size`
(otherwise lucent upsamples them to 224). A channel objective on a token layer (B, N, C) reads the last axis
(lucent's `channel` reads axis 1, which there is the token axis); on a map (B, C, H, W) it is lucent's own.

>>> Score((3, 0.5), "3/4").key > Score((2, 0.9), "2/4").key
True
"""
from __future__ import annotations

import copy
import dataclasses as dc
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from quality_rows import SEED, channel_means, judged
from torch import Tensor, nn

import lucent_dsl as ld


@dc.dataclass(frozen=True)
class Score:
    """How a batch of renders did: `key` orders contenders (larger is better), `text` says it in words."""

    key: tuple[float, ...]
    text: str


@dc.dataclass(frozen=True)
class Contest:
    """One row: `ours(target, steps)` and `lucent(target, steps)` each give one image (1, C, H, W); `score` reads
    the images of all targets, in order."""

    name: str
    targets: tuple[Any, ...]
    ours: Callable[[Any, int], Tensor]
    lucent: Callable[[Any, int], Tensor]
    score: Callable[[Tensor], Score]


class _Preprocess(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.info = ld.info_of(model)

    def forward(self, x: Tensor) -> Tensor:
        return self.info.preprocess(x)


def lucent_model(model: nn.Module) -> nn.Module:
    """`model` as lucent should see it: its own preprocess first, an `Identity` last (lucent's "labels")."""
    return nn.Sequential(_Preprocess(model), copy.deepcopy(model), nn.Identity()).eval().requires_grad_(False)


def lucent_layer(layer: str) -> str:
    """Our dotted module path inside `lucent_model`, as lucent names it ("_"-joined)."""
    return "1_" + layer.replace(".", "_")


def render_lucent(model: nn.Module, objective: Any, size: int, steps: int, seed: int) -> Tensor:
    """lucent's `render_vis` with its defaults on `lucent_model(model)`; one image (1, C, size, size) in [0, 1]."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # kornia 0.4.1: torch.jit.script is deprecated
        from lucent.optvis import param, render as lrender

        channels = ld.info_of(model).channels
        np.random.seed(seed)
        torch.manual_seed(seed)
        images = lrender.render_vis(
            lucent_model(model), objective,
            param_f=lambda: param.image(size, channels=None if channels == 3 else channels),
            optimizer=lambda p: torch.optim.Adam(p, lr=0.05), thresholds=(steps,), preprocess=False,
            fixed_image_size=size if size < 224 else None, show_image=False, progress=False,
        )
    return torch.from_numpy(np.asarray(images[-1], dtype=np.float32)).permute(0, 3, 1, 2)


def lucent_class(index: int) -> Any:
    from lucent.optvis import objectives

    return objectives.channel("labels", index)


def lucent_channel(layer: str, index: int) -> Any:
    """lucent's objective for our `channel(layer, index)`: the mean over a map, or over the tokens (last axis)."""
    from lucent.optvis import objectives

    name = lucent_layer(layer)

    @objectives.wrap_objective()
    def channel_any_layout():
        def inner(hooked):
            a = hooked(name)
            return -(a[..., index] if a.dim() == 3 else a[:, index]).mean()
        return inner

    return channel_any_layout()


def class_contest(name: str, model: nn.Module, targets: Sequence[tuple[int, int]], size: int,
                  judge: nn.Module) -> Contest:
    """Class renders: targets are (class, seed) pairs; ours is `render(class_logit(c), model)` at its defaults;
    scored by the held-out `judge`: (top-1, mean p), as the transfer rows are."""
    classes = [c for c, _ in targets]

    def ours(t: tuple[int, int], steps: int) -> Tensor:
        return ld.render(ld.class_logit(t[0]), model, size=size, steps=steps, seed=t[1], progress=False).images

    def score(images: Tensor) -> Score:
        a, b, p = judged(judge, images, classes)
        n = len(classes)
        return Score((a, p), f"top-1 {a}/{n}, top-5 {b}/{n}, p {p:.3f}")

    return Contest(name, tuple(targets), ours, lambda t, s: render_lucent(model, lucent_class(t[0]), size, s, t[1]),
                   score)


def channel_contest(name: str, model: nn.Module, layer: str, channels: Sequence[int], size: int,
                    natural: Tensor) -> Contest:
    """Channel renders, scored against the best of `natural` per channel: (renders above it, mean margin), the
    margin being (render - best) / |best| (a channel's best natural mean can be negative on a token layer)."""
    best = channel_means(model, layer, natural, channels).max(0).values

    def ours(c: int, steps: int) -> Tensor:
        return ld.render(ld.channel(layer, c), model, size=size, steps=steps, seed=SEED, progress=False).images

    def score(images: Tensor) -> Score:
        got = channel_means(model, layer, images, channels).diagonal()
        beats, margin = int((got > best).sum()), float(((got - best) / best.abs()).mean())
        return Score((beats, margin), f"beat the best natural {beats}/{len(channels)}, margin {margin:+.2f}")

    return Contest(name, tuple(channels), ours,
                   lambda c, s: render_lucent(model, lucent_channel(layer, c), size, s, SEED), score)


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def versus(contest: Contest, steps: int, *, log: Callable[[str], None], clock: str = "wall") -> dict[str, Score]:
    """Run `contest` at `steps` and at equal time; log one line per run and the two verdicts; return the scores."""
    who = {"ours": contest.ours, "lucent": contest.lucent}
    for fn in who.values():
        fn(contest.targets[0], 2)  # untimed: imports and first allocations stay out of the timing
    which = 1 if clock == "cpu" else 0
    images: dict[str, list[Tensor]] = {"ours": [], "lucent": []}
    spent = {"ours": 0.0, "lucent": 0.0}
    for t in contest.targets:  # alternating, target by target
        for name, fn in who.items():
            start = _clocks()
            images[name].append(fn(t, steps))
            spent[name] += _clocks()[which] - start[which]
    scores = {name: contest.score(torch.cat(images[name])) for name in who}
    n = len(contest.targets)
    for name in who:
        log(f"| vs lucent | {contest.name} | {name} | {n} | {steps} | {scores[name].text} | {spent[name]:.0f} |")
    log(f"# {contest.name}: seconds per step by the {clock} clock: ours {spent['ours'] / (n * steps):.4f}, "
        f"lucent {spent['lucent'] / (n * steps):.4f}")
    at = {"ours": max(1, round(steps * spent["lucent"] / spent["ours"])),
          "lucent": max(1, round(steps * spent["ours"] / spent["lucent"]))}
    for name, fn in who.items():
        start = _clocks()
        batch = torch.cat([fn(t, at[name]) for t in contest.targets])
        secs = _clocks()[which] - start[which]
        other = "lucent's" if name == "ours" else "ours'"
        scores[f"{name} at {other} time"] = s = contest.score(batch)
        log(f"| vs lucent, equal time | {contest.name} | {name} at {other} time | {n} | {at[name]} | {s.text} | "
            f"{secs:.0f} |")
    log(verdict(contest.name, "ours at lucent's time", scores["ours at lucent's time"], "lucent", scores["lucent"]))
    log(verdict(contest.name, "lucent at ours' time", scores["lucent at ours' time"], "ours", scores["ours"]))
    return scores


def verdict(row: str, first: str, a: Score, second: str, b: Score) -> str:
    """'# per unit time, ROW: FIRST (a) vs SECOND (b): who is ahead' (keys compared in order)."""
    ka, kb = tuple(round(x, 3) for x in a.key), tuple(round(x, 3) for x in b.key)
    ahead = "tied" if ka == kb else f"{(first if ka > kb else second).split(' ')[0]} ahead"
    return f"# per unit time, {row}: {first} ({a.text}) vs {second} ({b.text}): {ahead}"
