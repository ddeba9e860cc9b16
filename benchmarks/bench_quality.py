"""Picture quality against torch-lucent at equal settings: the activation and class probability reached.

For each objective, both libraries render from noise with the same settings: image size, steps,
batch, Fourier parameterization with decorrelated colour, their standard transforms, Adam with
lr 0.05, ImageNet normalization, on the same MobileNetV2 weights (`lucent_dsl.zoo`). The runs
alternate (ours, lucent, ours, lucent, ...) so that load from other processes falls on both alike.

Both final images are then judged by ONE evaluator, ours: the model with its own preprocessing
(ImageNet normalization), no transforms, plain forward hooks. For every image of the batch it
reads the objective's channel mean (or the class logit) and, for class objectives, the softmax
probability of the class. The table shows the mean over the batch (the batch images start from
different noise, so they are independent samples) and the worst one.

`--resized` adds a third contender, "ours+resize": our render with `ModelInfo.resize=True`, so
that the 248 px transformed image is resized back to 224 px before the model (the zoo's
behaviour before `ModelInfo.resize` existed). The model then sees every feature shrunk by 0.9
while the evaluator, like any viewer, looks at the image at scale 1; lucent feeds its ~236 px
transformed image to the model as it is. This column shows what that resize costs.

    python benchmarks/bench_quality.py                   # 224 px, 128 steps, batch 2
    python benchmarks/bench_quality.py --size 128 --steps 64 --objectives features.14:10 flamingo
    python benchmarks/bench_quality.py --resized         # also ours with the old resize to 224 px

lucent is torch-lucent from PyPI, installed apart from our dependencies:
    pip install --no-deps torch-lucent kornia==0.4.1
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import copy
import dataclasses as dc
import functools as ft
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import lucent_dsl as ld
from lucent_dsl import render, zoo
from lucent_dsl.models.info import info_of, with_info

DEFAULT_OBJECTIVES = ("features.7:10", "features.10:0", "features.14:10", "features.16:0", "flamingo", "goldfish")
LR = 0.05


@dc.dataclass(frozen=True)
class Target:
    """One objective, as our DSL and as lucent's, and what the evaluator reads."""

    text: str
    layer: str | None  # None: a class logit
    index: int

    def ours(self) -> ld.Expr:
        return ld.channel(self.layer, self.index) if self.layer else ld.class_logit(self.index)

    def lucent(self):
        from lucent.optvis import objectives

        # lucent's layer names join the module path with "_"; "labels" is its last hooked module (the logits)
        return objectives.channel(self.layer.replace(".", "_") if self.layer else "labels", self.index)


def parse_target(text: str, labels: tuple[str, ...]) -> Target:
    if ":" in text:
        layer, index = text.rsplit(":", 1)
        return Target(text, layer, int(index))
    return Target(text, None, labels.index(text.replace("_", " ")))


@dc.dataclass(frozen=True)
class Judged:
    """The evaluator's reading of a batch: objective value and class probability per image."""

    value: Tensor  # (B,)
    prob: Tensor | None  # (B,), class objectives only
    seconds: float


def judge(model: nn.Module, target: Target, images: Tensor, seconds: float) -> Judged:
    """Our model and preprocessing, no transforms, a plain hook: the same ruler for both libraries."""
    acts: list[Tensor] = []
    hook = model.get_submodule(target.layer).register_forward_hook(lambda m, i, o: acts.append(o)) if target.layer else None
    try:
        with torch.no_grad():
            logits = model(info_of(model).preprocess(images))
    finally:
        if hook is not None:
            hook.remove()
    if target.layer:
        return Judged(acts[0][:, target.index].mean((1, 2)), None, seconds)
    return Judged(logits[:, target.index], logits.softmax(-1)[:, target.index], seconds)


def run_ours(model: nn.Module, target: Target, size: int, steps: int, batch: int, seed: int) -> Tensor:
    """`lucent_dsl.render` with its defaults: `param.fft` (decorrelated, sigmoid), `transforms.standard()`, Adam."""
    return render(target.ours(), model, size=size, steps=steps, batch=batch, lr=LR, seed=seed, progress=False).images


def resized(model: nn.Module) -> nn.Module:
    """A shallow copy of `model` (same weights) whose preprocessing resizes to its input size."""
    return with_info(copy.copy(model), dc.replace(info_of(model), resize=True))


def run_lucent(model: nn.Module, target: Target, size: int, steps: int, batch: int, seed: int) -> Tensor:
    """`lucent.optvis.render.render_vis` with its defaults: `param.image` (FFT, decorrelated), its
    standard transforms, its ImageNet normalization, Adam(lr=0.05).

    lucent hooks every module and never removes the hooks, so each run gets a deep copy. The copy's
    weights are frozen: that changes no image, only saves the weight gradients.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # kornia 0.4.1: torch.jit.script is deprecated
        from lucent.optvis import param, render as lrender

        m = copy.deepcopy(model).eval().requires_grad_(False)
        np.random.seed(seed)
        torch.manual_seed(seed)
        images = lrender.render_vis(
            m, target.lucent(), param_f=lambda: param.image(size, batch=batch),
            optimizer=lambda p: torch.optim.Adam(p, lr=LR), thresholds=(steps,),
            show_image=False, progress=False,
        )
    return torch.from_numpy(np.asarray(images[-1], dtype=np.float32)).permute(0, 3, 1, 2)


def timed(fn, *args) -> tuple[Tensor, float]:
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def _fmt(x: Tensor | None, digits: int) -> str:
    return "-" if x is None else f"{float(x.mean()):.{digits}f} ({float(x.min()):.{digits}f})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--objectives", nargs="+", default=list(DEFAULT_OBJECTIVES),
                    help="'layer:channel' (dotted names) or an ImageNet class name ('_' for spaces)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--batch", type=int, default=2, help="images per render (independent samples)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--resized", action="store_true", help="add ours with ModelInfo.resize=True (slower)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import common

    why = common.lucent_available()
    if why is not None:
        print(f"torch-lucent is not importable ({why}); install it with\n"
              "    pip install --no-deps torch-lucent kornia==0.4.1", file=sys.stderr)
        return 1
    model = zoo.load("mobilenet_v2")
    labels = info_of(model).labels or ()
    targets = [parse_target(t, labels) for t in args.objectives]
    print(common.header("bench_quality: the unit's value reached, ours vs torch-lucent"))
    print(f"MobileNetV2, size {args.size}, {args.steps} steps, batch {args.batch}, seed {args.seed}, "
          f"{torch.get_num_threads()} thread(s), torch {torch.__version__}")
    print("value: channel mean or class logit, read by our evaluator; mean over the batch (worst image)\n")
    contenders = {"ours": ft.partial(run_ours, model), "lucent": ft.partial(run_lucent, model)}
    if args.resized:
        contenders["ours+resize"] = ft.partial(run_ours, resized(model))
    header = f"{'objective':16s}" + "".join(f" {k + ' value':>19s}" for k in contenders)
    header += "".join(f" {k + '/lucent':>18s}" for k in contenders if k != "lucent")
    header += "".join(f" {k + ' p':>19s}" for k in contenders) + "".join(f" {k + ' s':>13s}" for k in contenders)
    print(header)
    print("-" * len(header))
    ratios: dict[str, list[tuple[str, float]]] = {k: [] for k in contenders if k != "lucent"}
    for target in targets:  # every contender on one objective, then the next: the runs alternate
        run = (target, args.size, args.steps, args.batch, args.seed)
        judged = {k: judge(model, target, *timed(fn, *run)) for k, fn in contenders.items()}
        base = float(judged["lucent"].value.mean())
        line = f"{target.text:16s}" + "".join(f" {_fmt(j.value, 3):>19s}" for j in judged.values())
        for k, rs in ratios.items():
            rs.append((target.text, float(judged[k].value.mean()) / base))
            line += f" {rs[-1][1]:>18.2f}"
        line += "".join(f" {_fmt(j.prob, 4):>19s}" for j in judged.values())
        line += "".join(f" {j.seconds:>13.0f}" for j in judged.values())
        print(line, flush=True)
    print()
    for k, rs in ratios.items():
        behind = [t for t, r in rs if r < 1.0]
        print(f"{k} reached at least lucent's value on {len(rs) - len(behind)} of {len(rs)} objectives "
              f"(ratio {min(r for _, r in rs):.2f}-{max(r for _, r in rs):.2f})"
              + (f"; behind on: {', '.join(behind)}" if behind else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
