"""Render presets: the anchors' methods as one value each, and the "auto" policy that picks one per model.

A `Preset` bundles what a method sets (parameterization, transforms, augmented copies, optimizer, learning rate,
schedule, Adam's betas) with the prior terms it adds to the objective. `render(..., preset=...)` takes a name of
`PRESETS`, "auto" (`auto_preset`: the policy table below) or a `Preset` value; every argument given to render
explicitly wins over the preset's. `PRESETS` and `auto_preset` are the one place to tune them: the measured
numbers live in benchmarks/README.md.

- "lucid": Olah et al. 2017 (lucid.optvis.render): `param.fft`, `transforms.standard()`, Adam 0.05. Exactly
  render's defaults before presets: a render with it is bit for bit the one without presets.
- "deepinversion": Yin et al. CVPR 2020 (NVlabs/DeepInversion): pixels, `transforms.scaled`, Adam (0.5, 0.9)
  on a cosine schedule, an l2 image prior towards the model's mean colour and the BatchNorm-statistics prior.
- "plugin": Ghiasi et al. 2022, "Plug-In Inversion" (arXiv 2201.12961): `param.fft`, 4 copies a step each with
  its own `color_shift` (`transforms.ensemble(4, scaled)`), Adam (0.5, 0.999), warm-up then cosine; no priors.
- "maco": Fel et al. NeurIPS 2023 (xplique): `param.maco(standardize=True)` (phase only, natural magnitude),
  `transforms.maco_crops()`, NAdam at 1.0. `toolbox.maco_method` is the full loop (shrinking crops, several a
  step, the transparency map); see `maco_crops` for what differs.
- "robust" (ours, measured): "lucid" with `transforms.robust()`. On the zoo's BatchNorm CNNs its class renders
  transfer better than "lucid" in the same time (benchmarks/README.md, "Presets").
- "prior" (ours, measured): `param.fft`, `transforms.scaled`, Adam (0.5, 0.9), DeepInversion's l2 image prior
  alone. On the zoo's MNIST ViT its class renders transfer best: "auto" picks it for token models.
- "robust_ensemble" (ours, measured): 2 colour-shifted copies a step (`transforms.ensemble`) of `robust_fit(size)`
  (robust read at the image's size). Best per unit of time on the zoo's ImageNet pair: "auto"'s for class logits.

Example:
    >>> import dataclasses as dc, torch.nn as nn
    >>> PRESETS["lucid"].lr, PRESETS["maco"].optimizer
    (0.05, 'nadam')
    >>> cnn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    >>> auto_preset(cnn, (224, 224), "class_logit(2)"), auto_preset(cnn, (224, 224), "channel('0', 2)")
    ('robust_ensemble', 'lucid')
    >>> auto_preset(nn.TransformerEncoderLayer(8, 2), (32, 32), "channel('linear1', 0)")
    'prior'
    >>> dc.replace(PRESETS["deepinversion"], image_prior=2.0).has_priors
    True
"""
from __future__ import annotations

import dataclasses as dc
import functools as ft
import numbers
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import nn

from .. import param as param_lib, transforms as tf_lib
from ..args import check_choice, check_size
from ..errors import InvalidArgumentError
from ..record.recipe import PARAMS, TRANSFORMS

__all__ = ["AUTO", "PRESETS", "Preset", "Resolved", "auto_preset", "is_clip_model", "is_token_model", "prior_terms",
           "reads_output", "resolve", "with_preset"]

AUTO = "auto"
OPTIMIZERS = ("adam", "nadam")
SMALL_IMAGE = 64
"""Below this many pixels a side, "auto" never uses `standard()` or `robust()` (their 12 and 16 px pads shrink a
small image's content): a preset whose transforms are "standard", "robust" or "robust_fit" runs with "scaled"."""
_PADDED = ("standard", "robust", "robust_fit")
PLAN_FALLBACK = "lucid"
"""What "auto" runs for a compiled `Plan` when its own choice adds prior terms (a Plan cannot take them)."""


@dc.dataclass(frozen=True)
class Preset:
    """One render method's settings. A frozen value: vary one with `dataclasses.replace`.

    Attributes:
        name: the preset's name (a recipe records it when the value is one of `PRESETS`).
        source: the paper or code it follows.
        param: the parameterization when render's `param` is not given: "fft" (`param.fft`), "pixel"
            (`param.pixel`) or "maco" (`param.maco(standardize=True)`), at the render's size, batch and channels.
        transforms: the transforms when render's `transforms` is not given, by recipe name: "standard", "scaled"
            (`transforms.scaled(size)`), "robust", "maco" (`transforms.maco_crops()`) or "none".
        copies: augmented copies per image per step (0: none). Above 0 the transforms (the preset's or the ones
            given) are wrapped in `transforms.ensemble(copies, ...)`: each copy its own draw and `color_shift`.
        lr: the learning rate when render's `lr` is not given.
        schedule: the learning-rate schedule ("constant", "cosine", "warmup_cosine") when `schedule` is not given.
        betas: the optimizer's (beta1, beta2) when neither `betas` nor `optimizer` is given.
        optimizer: "adam" (`torch.optim.Adam`) or "nadam" (`torch.optim.NAdam`), when `optimizer` is not given.
        image_prior: weight of DeepInversion's l2 image prior, `image_prior * l2(target=MEAN)` subtracted from the
            objective; MEAN is the first model's preprocessing mean per channel (`info_of(model).mean`), 0.0 for
            a model that reads unnormalized [0, 1] pixels.
        tv: weight of `total_variation()`, subtracted.
        bn_prior: weight of `batchnorm_prior(model)` (first layer weighted 10, its default), subtracted once per
            model given that has BatchNorm2d layers with running statistics (models without are left alone).
    """

    name: str
    source: str
    param: str = "fft"
    transforms: str = "standard"
    copies: int = 0
    lr: float = 0.05
    schedule: str = "constant"
    betas: tuple[float, float] = (0.9, 0.999)
    optimizer: str = "adam"
    image_prior: float = 0.0
    tv: float = 0.0
    bn_prior: float = 0.0

    def __post_init__(self) -> None:
        where = f"Preset {self.name!r}"
        check_choice("param", self.param, PARAMS, where=where)
        check_choice("transforms", self.transforms, TRANSFORMS, where=where)
        check_choice("optimizer", self.optimizer, OPTIMIZERS, where=where)
        from .schedule import as_schedule, check_betas

        as_schedule(self.schedule)
        object.__setattr__(self, "betas", check_betas(self.betas))
        if isinstance(self.copies, bool) or not isinstance(self.copies, int) or self.copies < 0:
            raise InvalidArgumentError(f"{where}: copies must be an int >= 0, got {self.copies!r}")
        for field in ("lr", "image_prior", "tv", "bn_prior"):
            v = getattr(self, field)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0 <= float(v) < float("inf") \
                    or (field == "lr" and v == 0):
                raise InvalidArgumentError(f"{where}: {field} must be a finite number >= 0 (lr > 0), got {v!r}")

    @property
    def has_priors(self) -> bool:
        """Whether the preset adds terms to the objective (then a compiled `Plan` cannot take it)."""
        return bool(self.image_prior or self.tv or self.bn_prior)


PRESETS: dict[str, Preset] = {
    "lucid": Preset("lucid", "Olah et al. 2017, Feature Visualization; lucid.optvis.render"),
    "deepinversion": Preset(
        "deepinversion", "Yin et al. CVPR 2020, Dreaming to Distill (NVlabs/DeepInversion)", param="pixel",
        transforms="scaled", schedule="cosine", betas=(0.5, 0.9), image_prior=8.0, bn_prior=0.01),
    "plugin": Preset(
        "plugin", "Ghiasi et al. 2022, Plug-In Inversion (arXiv 2201.12961)", transforms="scaled", copies=4,
        schedule="warmup_cosine", betas=(0.5, 0.999)),
    "maco": Preset(
        "maco", "Fel et al. NeurIPS 2023, MACO (xplique)", param="maco", transforms="maco", lr=1.0,
        optimizer="nadam"),
    "robust": Preset("robust", "ours: Lucid's transformation robustness, stronger (transforms.robust)",
                     transforms="robust"),
    "prior": Preset("prior", "ours: DeepInversion's l2 image prior (Yin et al. 2020) on Lucid's fft image",
                    transforms="scaled", betas=(0.5, 0.9), image_prior=8.0),
    "robust_ensemble": Preset("robust_ensemble", "ours: 'robust' read at the image's size, with Plug-In Inversion's "
                              "augmentation ensembling (2 colour-shifted copies a step)", transforms="robust_fit",
                              copies=2),
}
# record.recipe.PRESETS lists these names for recipes (it sits below the renderer); tests/test_presets.py keeps
# the two equal.


# --- the "auto" policy -------------------------------------------------------------------------------


def _models_of(models: Any) -> dict[str, nn.Module]:
    if isinstance(models, nn.Module):
        return {"model": models}
    if isinstance(models, Mapping):
        return {str(k): m for k, m in models.items() if isinstance(m, nn.Module)}
    return {}


def is_token_model(model: nn.Module) -> bool:
    """A ViT, CLIP image tower or MLP: it has an attention module (`nn.MultiheadAttention`, or a class whose name
    ends in "Attention", as timm's, transformers' and open_clip's do), or it has `nn.Linear` layers and no
    `nn.Conv2d` but at most one patch embedding (kernel = stride > 1).

    Example:
        >>> is_token_model(nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.Flatten(), nn.Linear(8, 2)))
        True
        >>> is_token_model(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()))
        False
    """
    modules = list(model.modules())
    if any(isinstance(m, nn.MultiheadAttention) or type(m).__name__.endswith("Attention") for m in modules):
        return True
    convs = [m for m in modules if isinstance(m, nn.Conv2d)]
    patchify = len(convs) <= 1 and all(c.kernel_size == c.stride and c.kernel_size != (1, 1) for c in convs)
    return patchify and any(isinstance(m, nn.Linear) for m in modules)


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def auto_preset(models: Any, size: int | tuple[int, int], objective: Any) -> str:
    """The preset "auto" runs for `objective` on `models` (an nn.Module or a mapping name -> module) at `size`.

    The policy, first match wins (the lead tunes it from benchmarks/README.md's measurements):

    =====================================================================  ===================
    models, objective                                                      preset
    =====================================================================  ===================
    any model is a CLIP image side (`is_clip_model`)                       "lucid"
    any model has an `nn.BatchNorm2d`, the objective reads a model's       "robust_ensemble"
    output (`reads_output`: a class logit)
    any model has an `nn.BatchNorm2d` (a CNN), inner layers only           "lucid"
    any model is a token model (`is_token_model`)                          "prior"
    otherwise (a plain CNN)                                                "lucid"
    =====================================================================  ===================

    Why (benchmarks/README.md, "Presets"): on the zoo's ImageNet pair, class renders with "robust_ensemble"
    transferred best per unit of time (32 classes at 512 steps: 31/32 top-1, p 0.926, 0.070 s a step; copies of
    `robust()` took 0.094 for p 0.899; 912 steps of "robust" gave 30/32, p 0.891); channel renders, scored by the
    activation they reach, did best per unit of time with "lucid" (the lightest transforms, one copy a step); on the
    zoo's MNIST ViT, "prior", for its digits and its channels. CLIP keeps "lucid", the setting of the published CLIP
    feature visualizations (Goh et al. 2021): no trained CLIP weights are reachable offline to measure another, and
    the image prior's fixed weight would swamp `clip_text`'s cosine (at most 1).

    Besides the table, `resolve` applies one rule to the choice: below `SMALL_IMAGE` (64) pixels a side the
    transforms "standard", "robust", "robust_fit" become "scaled" (`transforms.scaled`), and for a compiled Plan a
    preset with prior terms becomes `PLAN_FALLBACK`.
    """
    check_size(size)
    found = list(_models_of(models).values())
    if any(is_clip_model(m) for m in found):
        return "lucid"
    if any(_has_batchnorm(m) for m in found):
        return "robust_ensemble" if reads_output(objective) else "lucid"
    if any(is_token_model(m) for m in found):
        return "prior"
    return "lucid"


def reads_output(objective: Any) -> bool:
    """Whether `objective` (DSL text, an Expr, a list of them, or a compiled Plan) reads some model's output
    (`class_logit`, or any term at "@output"), as a class render does, rather than inner layers only.

    Example:
        >>> reads_output("channel('features.14', 3) + 0.5 * class_logit(1)"), reads_output(["neuron('fc', 2)"])
        (True, False)
    """
    from ..dsl.expr import OUTPUT, Expr, terms_of
    from ..dsl.parser import parse
    from ..plan.compiler import Plan

    if isinstance(objective, Plan):
        sites = objective.sites
    else:
        items = objective if isinstance(objective, (list, tuple)) else [objective]
        exprs = [parse(o) if isinstance(o, str) else o for o in items]
        sites = [s for e in exprs if isinstance(e, Expr) for t in terms_of(e) for s in t.sites()]
    return any(s.layer.split("/")[0] == OUTPUT for s in sites)  # "@output", or "@output/out" of a dict output


def is_clip_model(model: nn.Module) -> bool:
    """A CLIP-like model's image side: our `ClipImage` wrapper, an open_clip module, or a transformers CLIP or
    SigLIP module.

    Example:
        >>> is_clip_model(nn.Linear(2, 2))
        False
    """
    from ..models.clip import ClipImage

    where = type(model).__module__
    return isinstance(model, ClipImage) or where.startswith(
        ("open_clip.", "transformers.models.clip.", "transformers.models.siglip"))


# --- prior terms --------------------------------------------------------------------------------------


def prior_terms(preset: Preset, models: Any) -> tuple[Any, ...]:
    """`preset`'s prior terms for `models` (`Expr`s, each to subtract); () when it adds none.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
        >>> prior_terms(PRESETS["deepinversion"], net)
        (8.0 * l2(), 0.01 * batchnorm_prior(('1',)))
    """
    from ..models.info import info_of
    from ..objectives import l2, total_variation
    from ..objectives.batchnorm import batchnorm_prior

    given = _models_of(models)
    terms: list[Any] = []
    if preset.image_prior:
        mean = next((info_of(m).mean for m in given.values() if info_of(m).mean is not None), None)
        terms.append(float(preset.image_prior) * l2(target=tuple(mean) if mean is not None else 0.0))
    if preset.tv:
        terms.append(float(preset.tv) * total_variation())
    if preset.bn_prior:
        single = isinstance(models, nn.Module)
        for name, m in given.items():
            if any(isinstance(b, nn.BatchNorm2d) and b.running_mean is not None for b in m.modules()):
                terms.append(float(preset.bn_prior) * batchnorm_prior(m, name=None if single else name))
    return tuple(terms)


def with_priors(objective: Any, prior: tuple[Any, ...]) -> Any:
    """`objective` minus each term of `prior`, for DSL text, an Expr, or a list of them (each one)."""
    from ..dsl.parser import parse

    def one(o: Any) -> Any:
        return ft.reduce(lambda a, t: a - t, prior, parse(o) if isinstance(o, str) else o)

    if not prior:
        return objective
    if isinstance(objective, (list, tuple)):
        return [one(o) for o in objective]
    return one(objective)


# --- resolving a render's settings ------------------------------------------------------------------


class Resolved(NamedTuple):
    """What a render runs after its preset and its explicit arguments met (`resolve`).

    `param`, `transforms`, `optimizer` and `betas` are in the form render's set-up takes (None: render's cached
    defaults, the fft parameterization, `standard()` and Adam with torch's betas); `param_kind` names the
    parameterization to build when `param` is None; `base_transforms` is what the recipe records (before copies).
    """

    preset: Preset
    name: str | None  # the recorded name: one of PRESETS, or None for a Preset value of your own
    param: Any
    param_kind: str
    transforms: Any
    base_transforms: Any
    optimizer: Any
    lr: float
    schedule: Any
    adam_betas: tuple[float, float] | None  # the default Adam's, for set-up (None with an optimizer)
    betas: tuple[float, float] | None  # what the recipe records (None: torch's defaults)
    prior: tuple[Any, ...]  # the terms subtracted from the objective


def preset_of(preset: Any, models: Any, size: Any, objective: Any, *,
              plan: bool = False) -> tuple[Preset, str | None]:
    """(the `Preset` a `preset=` argument names, its recorded name or None), "auto" decided for `objective` on
    `models`."""
    if isinstance(preset, Preset):
        if plan and preset.has_priors:
            raise _plan_refusal(preset.name)
        return preset, next((k for k, p in PRESETS.items() if p == preset), None)
    check_choice("preset", preset, (AUTO, *PRESETS))
    name = auto_preset(models, size, objective) if preset == AUTO else preset
    if plan and PRESETS[name].has_priors:
        if preset != AUTO:
            raise _plan_refusal(name)
        name = PLAN_FALLBACK
    return PRESETS[name], name


def _plan_refusal(name: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"preset {name!r} adds prior terms to the objective, which a compiled Plan cannot take: pass the "
        f"objective and the models (render(objective, models, preset=...)), or add the terms to the objective "
        f"yourself and give a preset without them, e.g. dataclasses.replace(PRESETS[{name!r}], image_prior=0.0, "
        "tv=0.0, bn_prior=0.0)")


def _preset_transforms(asked: Any, p: Preset, size: tuple[int, int]) -> str:
    """The preset's transforms by name, with "auto"'s small-image rule (see `auto_preset`)."""
    small = asked == AUTO and min(size) < SMALL_IMAGE and p.transforms in _PADDED
    return "scaled" if small else p.transforms


@ft.lru_cache(maxsize=32)
def _transform_named(name: str, size: tuple[int, int]) -> Any:
    """A recipe's transform name as render's `transforms` (None: render's cached `standard()`). Cached: the same
    Transform for the same name and size, so a compiled step is found again (its key holds the functions)."""
    check_choice("transforms", name, TRANSFORMS)
    return None if name == "standard" else () if name == "none" else tf_lib.named(name, size)


@ft.lru_cache(maxsize=32)
def _copies(copies: int, name: str, size: tuple[int, int]) -> Any:
    base = _transform_named(name, size)
    return tf_lib.ensemble(copies, tf_lib.standard() if base is None else tf_lib.as_transform_arg(base))


def _nadam(params: Any, *, lr: float, betas: tuple[float, float]) -> torch.optim.Optimizer:
    return torch.optim.NAdam(params, lr=lr, betas=betas)


def resolve(preset: Any, models: Any, size: Any, explicit: Mapping[str, Any], *, objective: Any,
            plan: bool = False) -> Resolved:
    """Meet `preset` ("auto", a name, or a `Preset`; "auto" looks at `objective` and `models`) with render's
    `explicit` arguments (`param`, `transforms`, `optimizer`, `lr`, `schedule`, `betas`; None: the preset's).
    Pure: nothing is rendered.

    Raises:
        InvalidArgumentError: an unknown preset name, or a preset with prior terms for a compiled Plan (`plan`).

    Example:
        >>> r = resolve("plugin", None, 32, {"lr": 0.1}, objective="channel('0', 1)")
        >>> r.name, r.lr, r.betas, r.schedule, r.base_transforms.name
        ('plugin', 0.1, (0.5, 0.999), 'warmup_cosine', 'scaled:32x32')
    """
    hw = check_size(size)
    p, name = preset_of(preset, models, hw, objective, plan=plan)
    transforms = explicit.get("transforms")
    if transforms is None:
        transforms = _preset_transforms(preset, p, hw)
    named = isinstance(transforms, str)
    base = _transform_named(transforms, hw) if named else transforms
    full = base
    if p.copies:
        full = _copies(p.copies, transforms, hw) if named else tf_lib.ensemble(p.copies, tf_lib.as_transform_arg(base))
    from .schedule import DEFAULT_BETAS, check_betas

    optimizer, betas = explicit.get("optimizer"), explicit.get("betas")
    lr = explicit["lr"] if explicit.get("lr") is not None else p.lr
    adam_betas = betas
    if optimizer is None:
        betas = check_betas(p.betas if betas is None else betas)
        adam_betas = None if betas == DEFAULT_BETAS else betas
        if p.optimizer == "nadam":
            optimizer, adam_betas = ft.partial(_nadam, lr=float(lr), betas=betas), None
    schedule = explicit["schedule"] if explicit.get("schedule") is not None else p.schedule
    recorded = None if betas is None or tuple(betas) == DEFAULT_BETAS else check_betas(betas)
    return Resolved(p, name, explicit.get("param"), p.param, full, base, optimizer, lr, schedule, adam_betas,
                    recorded, prior_terms(p, models) if p.has_priors and not plan else ())


def make_param(kind: str, size: tuple[int, int], batch: int, channels: int) -> Any:
    """The parameterization a preset or a recipe names, at render's size, batch and channels
    (None for "fft": render's cached default).

    Example:
        >>> make_param("maco", (8, 8), 1, 3).recipe[0]
        ('param', 'maco')
    """
    if kind == "fft":
        return None
    if kind == "maco":
        return param_lib.maco(size, batch=batch, channels=channels, standardize=True)
    return param_lib.image(size, kind=check_choice("param", kind, PARAMS), batch=batch, channels=channels)


def with_preset(recipe: Any, preset: str, models: Any, given: Any = ()) -> Any:
    """`recipe` (a `record.Recipe` with its size resolved) rendered with `preset`: its name recorded ("auto"
    decided for its objective on `models`) and the preset's values in the fields not in `given` (the command
    line's flags), so the recipe says what runs. The preset's optimizer, copies and prior terms come from its
    name when it runs.

    Example:
        >>> from lucent_dsl.record.recipe import Recipe
        >>> r = with_preset(Recipe(objective="channel('0', 1)", size=(32, 32)), "plugin", None, given={"lr"})
        >>> r.preset, r.transforms, r.schedule, r.betas
        ('plugin', 'scaled', 'warmup_cosine:0.1', (0.5, 0.999))
    """
    from .schedule import as_schedule

    hw = check_size(recipe.size)
    p, name = preset_of(preset, models, hw, recipe.objective)
    values = {"param": p.param, "transforms": _preset_transforms(preset, p, hw), "lr": p.lr,
              "schedule": as_schedule(p.schedule).text, "betas": p.betas}
    return dc.replace(recipe, preset=name, **{k: v for k, v in values.items() if k not in set(given)})
