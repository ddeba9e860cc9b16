"""Picture quality as numbers (issue 27): do class renders transfer to a model that took no part, do channel
renders beat the best natural image on their channel, and how do we compare with torch-lucent.

Rows of the table, each a render setting on one model judged by another (or by the same one, "self"):

- **transfer, ImageNet**: `class_logit(c)` for classes drawn by a fixed seed (27) from the 1,000, rendered on
  one zoo model and judged by the other: mobilenet_v2 -> efficientnet_lite0 and back. top-1/top-5: how many
  renders the judge names as their class (in its top 5); p: the judge's mean softmax probability of the class.
- **transfer, MNIST**: the ten digits, vit_mnist -> lenet5_mnist (and lenet5_mnist_adv) and back, at 28 px.
- **channels vs photos**: channels drawn by the seed, rendered on a layer; the render's channel mean next to the
  largest channel mean over natural images: crops of the sample photos that ship with scikit-image, scikit-learn
  and matplotlib (ImageNet models), or the 1,000 held-out MNIST digits (vit_mnist). beats: renders above it.
- **vs torch-lucent**, on every row above (`versus_lucent.py` says how): both directions of ImageNet classes, the
  MNIST digits, and the channels of mobilenet_v2, vit_mnist and vit_s_focus; each library with its defaults, at
  equal steps, then at equal time, with two "per unit time" verdict lines per row (needs
  `pip install --no-deps --target DIR torch-lucent kornia==0.4.1` and DIR on PYTHONPATH).
- **naturalness**: `lucent_dsl.sanity`'s path similarity (per layer, and `joins_at`) and detectability of
  mobilenet_v2's class renders of a setting against the sample-photo crops (`quality_rows` says how positives
  and negatives are chosen).
- **explore**: the explore site's pictures against the gallery's (render's defaults), unit by unit on mobilenet_v2.
- **stopping**: one render per class with `stop=ld.Plateau()` and `stop=ld.Target(c, p)` against the fixed step
  count: steps used, judged alike. MNIST (vit_mnist -> lenet5_mnist) and ImageNet (mobilenet_v2 -> lite0).

Each setting renders all its classes as one batch (one image per objective, each from its own noise), but for the
stopping rows and torch-lucent (one render per class). A `Setting` carries any of render's keywords.

Cost of the newer parts, in CPU seconds of one torch thread here (AMD EPYC, bf16; wall time was ~1.5-2x that
on the loaded 2 cores): with `--quick`, stopping 135 s (MNIST 10 x 256 steps ~25 s; 8 mobilenet_v2 classes x
128 steps, one render per class and rule), naturalness 29 s with `--settings defaults` (bn-prior adds its
renders). In the full run naturalness reuses the imagenet section's renders (seconds), stopping renders 8 classes
x 256 steps (~5 min); the lucent rows' costs are in benchmarks/README.md.

    python benchmarks/bench_picture_quality.py --quick       # 8 classes, 64 steps: a few minutes
    python benchmarks/bench_picture_quality.py               # 32 classes, 256 steps
    python benchmarks/bench_picture_quality.py --only mnist --mnist-steps 256
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import dataclasses as dc  # noqa: E402
import functools  # noqa: E402
import inspect  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import header, lucent_available  # noqa: E402
from quality_rows import (  # noqa: E402
    NaturalRow,
    Row,
    StopRow,
    channel_means,
    held_out_digits,
    judged,
    naturalness_rows,
    photos,
    stopping_rows,
)
from versus_lucent import channel_contest, class_contest, versus  # noqa: E402

import lucent_dsl as ld  # noqa: E402
from lucent_dsl import zoo  # noqa: E402

SEED = 27


BENCH_KEYWORDS = ("objective", "models", "size", "steps", "seed", "progress")  # render's, set by the benchmark


@dc.dataclass(frozen=True)
class Setting:
    """A render setting: any of render's keyword arguments (pairs, or a mapping: `Setting("cosine", {"schedule":
    "cosine"})`, `Setting("preset plugin", (("preset", "plugin"),))`), passed to `ld.render` as they are; K augmented
    copies (0: the default transforms), and the weight of the BatchNorm-statistics prior subtracted from the
    objective (0: none). `problem()` says before anything renders why render would refuse the keywords."""

    name: str
    kwargs: tuple[tuple[str, Any], ...] = ()
    copies: int = 0
    prior: float = 0.0
    light: bool = False  # size-keeping transforms for small images instead of `standard()`
    none: bool = False  # no transforms at all

    def __post_init__(self) -> None:
        object.__setattr__(self, "kwargs", tuple(dict(self.kwargs).items()))

    def problem(self) -> str | None:
        """Why these keywords cannot go to `ld.render` (None: they can)."""
        params = inspect.signature(ld.render).parameters
        keys = [k for k, _ in self.kwargs]
        ours = [k for k in keys if k in BENCH_KEYWORDS]
        if ours:
            return f"setting {self.name!r} carries {ours}: the benchmark sets {', '.join(BENCH_KEYWORDS)} itself"
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            unknown = [k for k in keys if k not in params]
            if unknown:
                return (f"setting {self.name!r} carries {unknown}, not keywords of lucent_dsl.render here; it takes "
                        f"{', '.join(k for k in params if k not in BENCH_KEYWORDS)}")
        if "transforms" in keys and (self.copies or self.light or self.none):
            return f"setting {self.name!r} sets the transforms twice: a 'transforms' keyword and copies/light/none"
        return None

    def render_kwargs(self) -> dict[str, Any]:
        out = dict(self.kwargs)
        base = light_transforms() if self.light else None
        if self.copies:
            out["transforms"] = ld.transforms.ensemble(self.copies, base)
        elif base is not None:
            out["transforms"] = base
        elif self.none:
            out["transforms"] = []
        return out

    def objective(self, term: ld.Expr, model: nn.Module) -> ld.Expr:
        return term - self.prior * ld.batchnorm_prior(model) if self.prior else term


def light_transforms() -> ld.transforms.Transform:
    """`standard()` pads 12 px a side: on a 28 px digit the model then reads the content at 28/52 of its size.
    These keep the size: shifts of up to 2 px, a zoom in 0.9-1.1, a turn in -10..10 degrees."""
    t = ld.transforms
    return t.chain(t.jitter(2), t.random_scale((0.9, 1.1)), t.random_rotate((-10.0, 10.0)))


_PLUGIN = (("schedule", "warmup_cosine"), ("betas", (0.5, 0.999)))
SETTINGS = {
    "defaults": Setting("defaults"),  # preset "auto": what a render without settings runs
    **{f"preset:{name}": Setting(f"preset:{name}", (("preset", name),)) for name in ld.PRESETS},
    "cosine+b1=0.5": Setting("cosine+b1=0.5", _PLUGIN),
    "ensemble4+cosine+b1=0.5": Setting("ensemble4+cosine+b1=0.5", _PLUGIN, copies=4),
    "bn-prior": Setting("bn-prior", prior=0.01),
    "light-tf": Setting("light-tf", light=True),
    "no-tf": Setting("no-tf", none=True),
    "light-tf+ensemble4+cosine+b1=0.5": Setting("light-tf+ensemble4+cosine+b1=0.5", _PLUGIN, copies=4, light=True),
}


def drawn(count: int, population: int, seed: int = SEED) -> list[int]:
    """`count` distinct indices of `population`, fixed by the seed before anything runs."""
    return sorted(torch.randperm(population, generator=torch.Generator().manual_seed(seed))[:count].tolist())


def render_classes(model: nn.Module, classes: Sequence[int], *, size: int, steps: int, setting: Setting,
                   batch: int, cache: dict[Any, tuple[Tensor, float]] | None = None,
                   name: str = "") -> tuple[Tensor, float]:
    """One image per class, rendered `batch` classes at a time; (images, wall seconds). With a `cache` (and the
    model's `name`), a second call with the same arguments returns the first's renders."""
    key = (name, setting.name, tuple(classes), size, steps, batch)
    if cache is not None and key in cache:
        return cache[key]
    start, out = time.perf_counter(), []
    for i in range(0, len(classes), batch):
        chunk = [setting.objective(ld.class_logit(c), model) for c in classes[i:i + batch]]
        out.append(ld.render(chunk, model, size=size, steps=steps, seed=SEED + i, progress=False,
                             **setting.render_kwargs()).images)
    done = torch.cat(out), time.perf_counter() - start
    if cache is not None:
        cache[key] = done
    return done


def transfer_rows(section: str, models: dict[str, nn.Module], pairs: Sequence[tuple[str, Sequence[str]]],
                  classes: Sequence[int], *, size: int, steps: int, settings: Sequence[Setting], batch: int,
                  log: Callable[[str], None], cache: dict[Any, tuple[Tensor, float]] | None = None) -> list[Row]:
    rows = []
    for setting in settings:
        for source, judges in pairs:
            if setting.prior and not any(isinstance(m, nn.BatchNorm2d) for m in models[source].modules()):
                continue  # the prior needs BatchNorms
            images, seconds = render_classes(models[source], classes, size=size, steps=steps, setting=setting,
                                             batch=batch, cache=cache, name=source)
            for judge in (source, *judges):
                top1, top5, p = judged(models[judge], images, classes)
                rows.append(Row(section, setting.name, source, "self" if judge == source else judge, len(classes),
                                steps, top1, top5, p, seconds))
                log(rows[-1].line())
    return rows


# --- channels against natural images ------------------------------------------------------------------------


@dc.dataclass(frozen=True)
class ChannelRow:
    model: str
    layer: str
    setting: str
    steps: int
    channels: tuple[int, ...]
    rendered: tuple[float, ...]
    best_natural: tuple[float, ...]
    seconds: float

    def line(self) -> str:
        beats = sum(r > b for r, b in zip(self.rendered, self.best_natural))
        pairs = ", ".join(f"{r:.2f}/{b:.2f}" for r, b in zip(self.rendered, self.best_natural))
        return (f"| channels | {self.setting} | {self.model}:{self.layer} | {len(self.channels)} | {self.steps} | "
                f"{beats}/{len(self.channels)} | {pairs} | {self.seconds:.0f} |")


def channel_row(name: str, model: nn.Module, layer: str, channels: Sequence[int], natural: Tensor, *, size: int,
                steps: int, setting: Setting) -> ChannelRow:
    start = time.perf_counter()
    images = ld.render([ld.channel(layer, c) for c in channels], model, size=size, steps=steps, seed=SEED,
                       progress=False, **setting.render_kwargs()).images
    seconds = time.perf_counter() - start
    rendered = channel_means(model, layer, images, channels).diagonal()
    best = channel_means(model, layer, natural, channels).max(0).values
    return ChannelRow(name, layer, setting.name, steps, tuple(channels), tuple(rendered.tolist()),
                      tuple(best.tolist()), seconds)


# --- main ---------------------------------------------------------------------------------------------------


SECTIONS = ("imagenet", "mnist", "channels", "lucent", "naturalness", "stopping", "explore")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="8 ImageNet classes, 64 steps, 2 channels per layer")
    ap.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    ap.add_argument("--classes", type=int, default=None, help="ImageNet classes (default 32; --quick 8)")
    ap.add_argument("--steps", type=int, default=None, help="ImageNet render steps (default 256; --quick 64)")
    ap.add_argument("--mnist-steps", type=int, default=256)
    ap.add_argument("--mnist-seeds", type=int, default=3,
                    help="each digit rendered this many times (seeds 27, 37, ...): 10 x this renders per row")
    ap.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=None,
                    help="default: every setting but bn-prior on MNIST (no BatchNorms there); defaults and bn-prior "
                         "on ImageNet, the channels and naturalness; stopping: light-tf on MNIST, defaults on ImageNet")
    ap.add_argument("--batch", type=int, default=8, help="ImageNet classes rendered at once")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lucent-classes", type=int, default=None,
                    help="vs lucent: ImageNet classes, one render each (default 8; --quick 4)")
    ap.add_argument("--lucent-rows", nargs="+", choices=LUCENT_ROWS, default=list(LUCENT_ROWS),
                    help="vs lucent: which rows (default all)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="vs lucent, equal time: wall seconds or the process's CPU seconds")
    ap.add_argument("--natural-k", type=int, default=8, help="naturalness: positive and negative crops per class")
    ap.add_argument("--stop-classes", type=int, default=8, help="stopping: ImageNet classes (one render each)")
    ap.add_argument("--stop-steps", type=int, default=None, help="stopping: ImageNet steps (default: --steps, >= 128)")
    ap.add_argument("--stop-p", type=float, default=0.9, help="stopping: Target's class probability")
    ap.add_argument("--explore-steps", type=int, default=None, help="explore: the site's steps (default: explore's)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    n_classes = args.classes or (8 if args.quick else 32)
    steps = args.steps or (64 if args.quick else 256)
    every = [SETTINGS[s] for s in (args.settings or [k for k in SETTINGS if k != "bn-prior"])]
    cheap = [SETTINGS[s] for s in (args.settings or ("defaults", "bn-prior"))]
    stopping = {"MNIST": [SETTINGS[s] for s in (args.settings or ("light-tf",))],
                "ImageNet": [SETTINGS[s] for s in (args.settings or ("defaults",))]}
    problems = {p for st in (*every, *cheap, *stopping["MNIST"], *stopping["ImageNet"]) if (p := st.problem())}
    if problems:
        ap.error("; ".join(sorted(problems)))
    net = functools.lru_cache(maxsize=None)(zoo.load)
    renders: dict[Any, tuple[Tensor, float]] = {}  # ImageNet class renders, shared by imagenet and naturalness
    print(header("picture quality (benchmarks/bench_picture_quality.py)"), flush=True)
    print(f"# argv: {' '.join(sys.argv[1:]) or '(none)'} | seed {SEED}", flush=True)
    log = ft_print
    if {"mnist", "imagenet"} & set(args.only):
        print("| section | setting | rendered on | judge | classes | steps | top-1 | top-5 | mean p | render s |")
        print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    if "mnist" in args.only:
        mnist = {n: net(n) for n in ("vit_mnist", "lenet5_mnist", "lenet5_mnist_adv")}
        transfer_rows("MNIST", mnist, [("vit_mnist", ("lenet5_mnist", "lenet5_mnist_adv")),
                                       ("lenet5_mnist", ("vit_mnist",))],
                      list(range(10)) * args.mnist_seeds, size=28, steps=args.mnist_steps, settings=every, batch=10,
                      log=log)
    if "imagenet" in args.only:
        classes = drawn(n_classes, 1000)
        print(f"# ImageNet classes (seed {SEED}): {classes}", flush=True)
        nets = {n: net(n) for n in ("mobilenet_v2", "efficientnet_lite0")}
        transfer_rows("ImageNet", nets, [("mobilenet_v2", ("efficientnet_lite0",)),
                                         ("efficientnet_lite0", ("mobilenet_v2",))],
                      classes, size=224, steps=steps, settings=cheap, batch=args.batch, log=log, cache=renders)
    if "lucent" in args.only:
        lucent_section(args, n_classes, steps, net, log)
    if "channels" in args.only:
        channel_section(args, cheap, steps, net, log)
    if "naturalness" in args.only:
        classes, natural = drawn(n_classes, 1000), photos(224)
        print(f"\n# naturalness: mobilenet_v2's class renders of {len(classes)} classes against {len(natural)} "
              f"photo crops; positives/negatives: the {args.natural_k} crops it gives the largest/smallest logit of "
              f"the class\n{NaturalRow.HEADER}", flush=True)
        for setting in cheap:
            images, seconds = render_classes(net("mobilenet_v2"), classes, size=224, steps=steps, setting=setting,
                                             batch=args.batch, cache=renders, name="mobilenet_v2")
            for row in naturalness_rows(setting.name, "mobilenet_v2", net("mobilenet_v2"), images, classes, natural,
                                        steps=steps, seconds=seconds, k=args.natural_k):
                log(row.line())
    if "stopping" in args.only:
        print(f"\n{StopRow.HEADER}", flush=True)
        jobs = [("MNIST", ("vit_mnist", "lenet5_mnist"), list(range(10)), 28, args.mnist_steps),
                ("ImageNet", ("mobilenet_v2", "efficientnet_lite0"), drawn(min(n_classes, args.stop_classes), 1000),
                 224, args.stop_steps or max(steps, 128))]
        for section, (source, judge), classes, size, st in jobs:
            models = {source: net(source), judge: net(judge)}
            for setting in stopping[section]:
                if setting.prior and section == "MNIST":
                    continue  # the prior needs BatchNorms
                stopping_rows(section, models, source, (judge,), classes, size=size, steps=st, setting=setting.name,
                              kwargs=setting.render_kwargs(), p=args.stop_p, log=log,
                              objective=lambda c, s=setting, m=models[source]: s.objective(ld.class_logit(c), m))
    if "explore" in args.only:
        explore_section(net, n_units=2 if args.quick else 4, n_classes=4 if args.quick else 8, log=log,
                        steps=args.explore_steps)
    return 0


def explore_section(net: Callable[[str], nn.Module], *, n_units: int, n_classes: int,
                    log: Callable[[str], None], steps: int | None = None) -> None:
    """The explore site's default pictures against the gallery's (issue 27, item 5), unit by unit on mobilenet_v2:
    each unit's image as the site renders it (its recipe: explore's default steps, the preset "auto" picks for the
    image, the unit's seed; `Recipe.run` is what a site PNG replays to; `steps` instead of explore's default when
    given) and as the gallery does (render's defaults, 512 steps, the same seed). Channels of features.14 are scored by their channel mean against the best photo;
    classes at "@output" by efficientnet_lite0 (top-1, mean p)."""
    import inspect as insp

    from lucent_dsl.atlas.jobs import channel_seed
    from lucent_dsl.explore.site import explore
    from lucent_dsl.record.recipe import Recipe
    from lucent_dsl.renderer.presets import with_preset

    model, judge = net("mobilenet_v2"), net("efficientnet_lite0")
    site_steps = steps or insp.signature(explore).parameters["steps"].default
    units = [("features.14", c, ld.channel("features.14", c)) for c in drawn(n_units, 160)]
    units += [("@output", c, ld.class_logit(c)) for c in drawn(n_classes, 1000)]
    images: dict[str, list[Tensor]] = {"explore": [], "gallery": []}
    spent = {"explore": 0.0, "gallery": 0.0}
    for layer, c, term in units:
        seed = channel_seed(layer, c)
        recipe = with_preset(Recipe(objective=repr(term), models=("mobilenet_v2",), size=(224, 224), steps=site_steps,
                                    seed=seed).resolved(model), "auto", model)
        for who in ("explore", "gallery"):
            start = time.perf_counter()
            result = (recipe.run(model, progress=False) if who == "explore"
                      else ld.render(term, model, seed=seed, progress=False))
            images[who].append(result.images)
            spent[who] += time.perf_counter() - start
    best = channel_means(model, "features.14", photos(224), [c for layer, c, _ in units if layer != "@output"])
    best = best.max(0).values
    log(f"\n# explore's defaults ({site_steps} steps) vs the gallery's (512): mobilenet_v2, {n_units} channels of "
        f"features.14, {n_classes} classes judged by efficientnet_lite0\n| renders | channels: beat the best photo, "
        "mean channel value | classes: top-1, top-5, p | render s |\n|---|---|---|---|")
    for who, parts in images.items():
        got = torch.cat(parts)
        chans = channel_means(model, "features.14", got[:n_units], [c for _, c, _ in units[:n_units]]).diagonal()
        a, b, p = judged(judge, got[n_units:], [c for _, c, _ in units[n_units:]])
        log(f"| {who} | {int((chans > best).sum())}/{n_units}, {float(chans.mean()):.2f} | {a}/{n_classes}, "
            f"{b}/{n_classes}, p {p:.3f} | {spent[who]:.0f} |")


VIT_MNIST_LAYER = "encoder.layers.encoder_layer_3"
VIT_FOCUS_LAYER = "backbone.encoder.layer.8.Add_1"


def channel_section(args: argparse.Namespace, cheap: Sequence[Setting], steps: int,
                    net: Callable[[str], nn.Module], log: Callable[[str], None]) -> None:
    per_layer = 2 if args.quick else 8
    print("\n| section | setting | model:layer | channels | steps | beat the best natural image | "
          "render / best natural, per channel | render s |")
    print("|---|---|---|---|---|---|---|---|", flush=True)
    jobs = [("vit_mnist", net("vit_mnist"), VIT_MNIST_LAYER, drawn(per_layer, 64), held_out_digits(), 28,
             args.mnist_steps)]
    natural = photos(224)
    jobs.append(("mobilenet_v2", net("mobilenet_v2"), "features.14", drawn(per_layer, 160), natural, 224, steps))
    if zoo.installed("vit_s_focus"):  # ~1 s a step on one CPU thread for 2 channels: fewer of both
        jobs.append(("vit_s_focus", net("vit_s_focus"), VIT_FOCUS_LAYER,
                     drawn(2 if args.quick else 4, 384), natural, 224, 32 if args.quick else 64))
    for name, model, layer, chans, nat, size, st in jobs:
        extra = [SETTINGS["light-tf"], SETTINGS["no-tf"]] if size == 28 and args.settings is None else []
        for setting in [*cheap, *extra]:
            if setting.prior:
                continue  # a class-render setting
            log(channel_row(name, model, layer, chans, nat, size=size, steps=st, setting=setting).line())


LUCENT_ROWS = ("classes", "classes-back", "digits", "channels-mobilenet_v2", "channels-vit_mnist",
              "channels-vit_s_focus")


def lucent_section(args: argparse.Namespace, n_classes: int, steps: int, net: Callable[[str], nn.Module],
                   log: Callable[[str], None]) -> None:
    """Ours against torch-lucent on each row (`versus_lucent`): equal steps, then equal time."""
    why = lucent_available()
    if why is not None:
        log(f"# vs lucent: torch-lucent does not import here: {why}")
        return
    print("\n| section | row | contender | renders | steps | score | render s |\n|---|---|---|---|---|---|---|",
          flush=True)
    classes = drawn(min(n_classes, args.lucent_classes or (4 if args.quick else 8)), 1000)
    per_layer = 2 if args.quick else 4
    contests = {
        "classes": lambda: class_contest(
            "classes mobilenet_v2 -> efficientnet_lite0", net("mobilenet_v2"), [(c, SEED) for c in classes], 224,
            net("efficientnet_lite0")),
        "classes-back": lambda: class_contest(
            "classes efficientnet_lite0 -> mobilenet_v2", net("efficientnet_lite0"), [(c, SEED) for c in classes],
            224, net("mobilenet_v2")),
        "digits": lambda: class_contest(
            "digits vit_mnist -> lenet5_mnist", net("vit_mnist"),
            [(d, SEED + 10 * k) for k in range(args.mnist_seeds) for d in range(10)], 28, net("lenet5_mnist")),
        "channels-mobilenet_v2": lambda: channel_contest(
            "channels mobilenet_v2:features.14", net("mobilenet_v2"), "features.14", drawn(per_layer, 160), 224,
            photos(224)),
        "channels-vit_mnist": lambda: channel_contest(
            "channels vit_mnist:encoder.layers.encoder_layer_3", net("vit_mnist"), VIT_MNIST_LAYER,
            drawn(per_layer, 64), 28, held_out_digits()),
        "channels-vit_s_focus": lambda: channel_contest(
            "channels vit_s_focus:layer.8", net("vit_s_focus"), VIT_FOCUS_LAYER, drawn(2, 384), 224, photos(224)),
    }
    for row in args.lucent_rows:
        if row == "channels-vit_s_focus" and not zoo.installed("vit_s_focus"):
            log("# vs lucent: vit_s_focus is not installed (python -m lucent_dsl.zoo install)")
            continue
        row_steps = args.mnist_steps if row in ("digits", "channels-vit_mnist") else (
            min(steps, 64) if row == "channels-vit_s_focus" else steps)
        versus(contests[row](), row_steps, log=log, clock=args.clock)


def ft_print(line: str) -> None:
    print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
