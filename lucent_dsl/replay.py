"""Running a recipe: build what the trust rule allows, then `render` or a toolbox method.

A `Recipe` (`lucent_dsl.record.recipe`, re-exported here) is data that sits below the renderer: the
renderer writes one next to each image. Running it sits above the renderer and the toolbox, here;
`Recipe.run` is this module's `run`, attached to the class when this module is imported (and
`import lucent_dsl` imports it).

Example:
    >>> import torch.nn as nn
    >>> r = Recipe(objective="channel('0', 1)", size=(8, 8), steps=2)
    >>> run(r, nn.Sequential(nn.Conv2d(3, 4, 3)), progress=False).images.shape
    torch.Size([1, 3, 8, 8])
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from . import transforms as tf_lib
from .errors import InvalidArgumentError
from .models.checks import check_models
from .models.specs import build_models, default_size
from .record.recipe import (
    COMMANDS as COMMANDS,
    FORMAT as FORMAT,
    PARAMS as PARAMS,
    PRECISIONS as PRECISIONS,
    SCORE_KEY as SCORE_KEY,
    TRANSFORMS as TRANSFORMS,
    Recipe as Recipe,
    supply_message,
)
from .record.resources import check_model_specs, torch_threads
from .renderer import rerun
from .toolbox import inversion


def run(
    recipe: Recipe,
    models: nn.Module | Mapping[str, nn.Module] | None = None,
    *,
    device: str | torch.device | None = None,
    compile: bool | str = "auto",
    progress: bool = True,
    thresholds: Sequence[int] | None = None,
    callback: Callable[[int, Tensor], None] | None = None,
    allow: str | Sequence[str] | None = None,
) -> Any:
    """Render `recipe` (building its models unless given) and return the `RenderResult`.

    The trust rule applies first (`Recipe.check_trusted`, with `allow`): given `models` are the
    caller's own, so only the recipe's image (and the caps) are checked then. A recipe whose models
    are to be supplied (`Recipe.supplied`: a render of a module of your own) runs only with `models`
    given; a `SuppliedModelWarning` says when their weights fingerprint (or class) is not the recorded one:
    the replay then renders the model given, and its pixels differ from the file's.

    Raises:
        UntrustedRecipeError: the recipe asks for what `allow` does not name.
        InvalidArgumentError: a recipe with supplied models and no `models`.
        LucentError: a bad objective, layer or setting.
    """
    if models is None and recipe.supplied:
        raise InvalidArgumentError(supply_message(recipe))
    recipe.check_trusted(allow, models=models is None)
    if models is None:
        check_model_specs(recipe.models, device=device, allow=allow or ())
        models = build_models(recipe.models, device=device)
    check_models(models)
    check_supplied(recipe, models)
    with torch_threads(recipe.threads):  # the pixels depend on it (reductions split per thread); restored after
        return _replay(recipe, models, device, compile, progress, thresholds, callback)


Recipe.run = run  # `recipe.run(...)`; see `record.recipe.Recipe.run`


class SuppliedModelWarning(UserWarning):
    """A model given to replay a recipe is not the one it recorded (other weights or class): the pixels differ."""


def check_supplied(recipe: Recipe, models: nn.Module | Mapping[str, nn.Module]) -> None:
    """Warn (`SuppliedModelWarning`) for each model of `recipe.supplied` whose weights fingerprint or class differs
    from what `models` gives under its name (one module stands for the recipe's one model).

    Raises:
        InvalidArgumentError: `models` lacks a supplied model's name.
    """
    from .models.checks import weights_fingerprint

    for name, cls, fingerprint in recipe.supplied:
        model = models if isinstance(models, nn.Module) else models.get(name)
        if model is None:
            raise InvalidArgumentError(f"the recipe's model {name!r} (a {cls}) is to be supplied, but the models "
                                       f"given are {sorted(cast(Mapping, models))}")
        have = f"{type(model).__module__}.{type(model).__qualname__}"
        got = weights_fingerprint(model)
        if (have, got) != (cls, fingerprint):
            warnings.warn(
                f"the model given for {name!r} is a {have} with weights fingerprint {got}; the recipe recorded a {cls} "
                f"with {fingerprint}: this replay renders the model given, and its pixels will differ from the "
                "recorded image's", SuppliedModelWarning, stacklevel=3)


def _replay(recipe: Recipe, models: Any, device: Any, compile: Any, progress: bool, thresholds: Any,
            callback: Any) -> Any:
    if recipe.command == "render":
        return rerun.render_recipe(recipe, models, device=device, compile=compile, progress=progress,
                                   thresholds=thresholds, callback=callback)
    size = recipe.size or default_size(models)
    common: dict[str, Any] = {"steps": recipe.steps, "seed": recipe.seed, "lr": recipe.lr, "progress": progress,
                              "thresholds": thresholds, "callback": callback, "device": device, "compile": compile}
    return _run_method(recipe, models, size, common)


def _run_method(recipe: Recipe, models: Any, size: tuple[int, int], common: dict[str, Any]) -> Any:
    if not isinstance(models, nn.Module):
        raise InvalidArgumentError(f"{recipe.command} takes one model, got an ensemble of {len(models)}")
    kwargs = dict(common, size=size, param_kind=recipe.param, precision=recipe.precision)
    if recipe.transforms != "none":  # paired: the source image gets the same draw
        kwargs["transforms"] = tf_lib.named(recipe.transforms, size)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if recipe.command == "caricature":
        return inversion.caricature(models, cast(str, recipe.image), list(recipe.layers), **kwargs)
    return inversion.accentuate(models, cast(str, recipe.image), cast(str, recipe.objective), **kwargs)

