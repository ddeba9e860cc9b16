"""The recipe of a Python render: the `record.Recipe` that makes the same pixels, when it can be known.

`render` calls `recipe_of` with what it was given; `RenderResult.recipe` holds the answer and
`RenderResult.save` writes it into the PNG (as the CLI does), so `lucent-dsl render --recipe out.png`
replays a notebook's picture. A model not built by `zoo.load` or `specs.build_model` (your own
module), or one whose weights changed after it was built (`models.spec_of`), is recorded as to be
supplied (`Recipe.supplied`: its name, class and `weights_fingerprint`): everything else is written,
and `lucent-dsl render --recipe x.png --model SPEC` (or `recipe.run(model)`) replays it with the model
given. What a recipe cannot name leaves `recipe` None and says why in `RenderResult.unreplayable`
(the PNG then carries that note instead of a recipe):

- a parameterization other than `param.fft` / `param.pixel` / `param.maco(standardize=True)` at their
  defaults (size, batch, channels and `decay_power` may be anything), transforms other than
  `transforms.standard()`, `scaled(size)` at the render's size, `robust()`, `maco_crops()` or none, an
  optimizer other than the preset's (the default Adam), `redirect_relu`, a `Preset` value of your own (the
  recipe records a preset by name: `renderer.presets`);
- an objective with `@objective` terms (a reader would have to register them), or whose text is longer
  than `parse` reads (`parser.MAX_TEXT`); a plan compiled with non-default options.

Example:
    >>> import lucent_dsl as ld
    >>> from lucent_dsl.models.specs import build_model
    >>> net = build_model("torchvision:alexnet")
    >>> r = ld.render("channel('features.0', 0)", net, size=32, steps=2, progress=False)
    >>> r.recipe.models, r.recipe.objective, r.recipe.steps
    (('torchvision:alexnet',), "channel('features.0', 0)", 2)
    >>> import torch.nn as nn
    >>> own = ld.render("channel('0', 0)", nn.Sequential(nn.Conv2d(3, 4, 3)), size=8, steps=1, progress=False)
    >>> own.recipe.models, [(name, cls) for name, cls, _ in own.recipe.supplied]
    ((), [('model', 'torch.nn.modules.container.Sequential')])
    >>> ld.render("channel('0', 0)", nn.Sequential(nn.Conv2d(3, 4, 3)), size=8, steps=1, progress=False,
    ...           optimizer=torch.optim.SGD).unreplayable
    ('an optimizer other than the default Adam',)
"""
from __future__ import annotations

import dataclasses as dc
from collections.abc import Sequence
from typing import Any, cast

import torch

__all__ = ["recipe_of"]

_DEFAULT_OPTIONS = (("truncate", "auto"), ("fuse", True))


def _models(plan: Any) -> tuple[tuple[str, ...], tuple[tuple[str, str, str], ...]]:
    """(the specs of the models a spec names, the (name, class, weights fingerprint) of those to be supplied)."""
    from ..models.checks import weights_fingerprint
    from ..models.info import spec_of
    from ..plan.compiler import DEFAULT_MODEL_NAME

    specs, supplied = [], []
    for name, model in plan.models.items():
        spec = spec_of(model)
        if spec is None:  # a module of your own, or one changed after it was built: the reader supplies it
            cls = type(model)
            supplied.append((name, f"{cls.__module__}.{cls.__qualname__}", weights_fingerprint(model)))
        else:
            specs.append(spec if name == DEFAULT_MODEL_NAME and len(plan.models) == 1 else f"{name}={spec}")
    return tuple(specs), tuple(supplied)


def _unbound(plan: Any, source: Any = None) -> Any:
    """The plan's objective as the user wrote it for one unnamed model (binding added model='model').

    `source`: the objective the user gave, when the plan's holds more (a preset's prior terms, which the recipe
    names by the preset); it is bound as the plan's was, so both record the same text."""
    from ..dsl.expr import map_terms
    from ..dsl.parser import parse
    from ..plan.compiler import DEFAULT_MODEL_NAME, batched, bind

    objective = plan.objective
    if source is not None:
        expr = parse(source) if isinstance(source, str) else batched(source) if isinstance(source, Sequence) else source
        objective = bind(expr, plan.models)
    if list(plan.models) != [DEFAULT_MODEL_NAME]:
        return objective

    def unbind(t: Any) -> Any:
        fields = {f.name for f in dc.fields(t)} if dc.is_dataclass(t) else set()
        return dc.replace(t, model=None) if "model" in fields and t.model == DEFAULT_MODEL_NAME else t  # pyright: ignore[reportArgumentType, reportAttributeAccessIssue]

    return map_terms(objective, unbind)


def _objective(plan: Any, source: Any = None) -> tuple[str | None, list[str]]:
    from ..dsl.expr import terms_of
    from ..objectives import BUILTINS

    objective = _unbound(plan, source)
    own = sorted({t.name for t in terms_of(objective)} - set(BUILTINS))
    if own:
        return None, [f"the objective uses @objective terms ({', '.join(own)}) that a reader would have to register"]
    # Built-in terms print as text that parses back to them (tests/test_pipeline_law.py, test_objectives.py), so
    # the text is not parsed again here: that would cost seconds for objectives that carry large tensors.
    from ..dsl.printing import to_text

    text = to_text(objective)
    from ..dsl.parser import MAX_TEXT

    if len(text) > MAX_TEXT:
        return None, [f"the objective's text is {len(text)} characters long, more than parse reads ({MAX_TEXT})"]
    return text, []


def _param(param: Any, size: tuple[int, int], n: int, channels: int) -> tuple[dict[str, Any], list[str]]:
    if param is None:
        return {"param": "fft", "decay_power": 1.0}, []
    got = dict(getattr(param, "recipe", ()) or ())
    if not got:
        return {}, ["a parameterization a recipe cannot name (only param.fft and param.pixel with their default "
                    "sd, decorrelate, squash and no init)"]
    if got["size"] != size or got["batch"] != n or got["channels"] != channels:
        return {}, [f"the parameterization's size/batch/channels {got['size']}/{got['batch']}/{got['channels']} are "
                    f"not the render's {size}/{n}/{channels}"]
    return {"param": got["param"], "decay_power": got["decay_power"]}, []


def _transforms(transforms: Any, size: tuple[int, int]) -> tuple[str | None, list[str]]:
    from ..record.recipe import TRANSFORMS
    from ..transforms import Transform
    from ..transforms.recipes import SIZED

    if transforms is None:
        return "standard", []
    if isinstance(transforms, Sequence) and not isinstance(transforms, (str, Transform)) and len(transforms) == 0:
        return "none", []
    kind, _, made_for = transforms.name.partition(":") if isinstance(transforms, Transform) else ("", "", "")
    if kind in SIZED and made_for:
        if made_for == f"{size[0]}x{size[1]}":
            return kind, []
        return None, [f"transforms.{kind} made for {made_for} rendering a {size[0]}x{size[1]} image (a recipe's "
                      f"{kind!r} is made for its size)"]
    if isinstance(transforms, Transform) and transforms.name in TRANSFORMS:
        return transforms.name, []
    return None, ["transforms other than transforms.standard() (the default), scaled(size), robust(), "
                  "robust_fit(size), maco_crops() or none"]


def _optimizer_fields(schedule: Any, betas: tuple[float, float] | None) -> dict[str, Any]:
    """The recipe's `schedule` and `betas` (left at their defaults when the render left them)."""
    fields: dict[str, Any] = {}
    if schedule is not None and schedule.kind != "constant":
        fields["schedule"] = schedule.text
    if betas is not None:
        fields["betas"] = tuple(betas)
    return fields


def recipe_of(
    plan: Any,
    *,
    size: tuple[int, int],
    n: int,
    channels: int,
    steps: int,
    seed: int,
    lr: float,
    precision: str,
    param: Any,
    transforms: Any,
    optimizer: Any,
    redirect_relu: int,
    schedule: Any = None,
    betas: tuple[float, float] | None = None,
    preset: str | None = "lucid",
    source: Any = None,
) -> tuple[Any, tuple[str, ...]]:
    """(the `Recipe` that replays this render, or None; why not, as short sentences).

    `preset`: the name of the preset that ran (None: a `Preset` value of your own, which a recipe cannot name);
    `source`: the objective as given, when the plan's adds the preset's prior terms to it."""
    from ..record.recipe import Recipe

    models, supplied = _models(plan)
    objective, why = _objective(plan, source)
    param_fields, more = _param(param, size, n, channels)
    why += more
    transform_kind, more = _transforms(transforms, size)
    why += more
    if preset is None:
        why.append("a Preset value of your own (a recipe names only the presets of renderer.presets.PRESETS)")
    if optimizer is not None:
        why.append("an optimizer other than the default Adam")
    if redirect_relu:
        why.append("redirect_relu (a recipe has no field for it)")
    if steps < 1:
        why.append("it was interrupted before its first step (a recipe renders at least one)")
    if tuple(plan.options) != _DEFAULT_OPTIONS:
        why.append(f"a plan compiled with options {dict(plan.options)} (a recipe compiles with the defaults)")
    if why:
        return None, tuple(why)
    recipe = Recipe(
        objective=objective,
        models=models,
        size=size,
        steps=steps,
        seed=seed,
        lr=lr,
        batch=n,
        precision=precision,
        transforms=cast(str, transform_kind),
        threads=torch.get_num_threads(),
        supplied=supplied,
        **param_fields,
        **_optimizer_fields(schedule, betas),
        preset=preset or "lucid",  # None (a Preset of your own) is unreplayable: `why` returned above
    )
    return recipe, ()
