"""Rendering what a recipe records: the inverse of `provenance` for the "render" command.

`provenance.recipe_of` turns a render's arguments into a `record.Recipe`; `render_recipe` turns a recipe
back into the same render (its parameterization, transforms, optimizer settings and preset, with the preset's
copies and prior terms), given the models. `replay.run` calls it after the trust rule has built them; the
atlas calls it for an image that cannot share a batch (`atlas.jobs.render_groups`).

Example:
    >>> import torch.nn as nn
    >>> from lucent_dsl.record.recipe import Recipe
    >>> r = Recipe(objective="channel('0', 1)", size=(8, 8), steps=2, preset="plugin")
    >>> out = render_recipe(r, nn.Sequential(nn.Conv2d(3, 4, 3)), progress=False)
    >>> out.images.shape, out.preset
    (torch.Size([1, 3, 8, 8]), 'plugin')
"""
from __future__ import annotations

from typing import Any

from .. import param as param_lib
from ..errors import InvalidArgumentError
from ..models.specs import default_size
from ..plan import compile_plan
from ..record.recipe import Recipe
from . import phases, presets  # phases.render read at call time, so a patched render is the one run


def make_param(kind: str, size: tuple[int, int], batch: int, channels: int, decay_power: float = 1.0) -> Any:
    """The parameterization a recipe names; None for plain "fft" (render's default, which it caches)."""
    if kind == "fft" and decay_power == 1.0:
        return None
    if kind == "fft":
        return param_lib.fft(size, batch=batch, channels=channels, decay_power=decay_power)
    return presets.make_param(kind, size, batch, channels)


def make_transforms(kind: str) -> Any:
    """The transforms a recipe names, as render's `transforms`: the name, which render builds at its size
    (`transforms.named`), or [] for none.

    Example:
        >>> make_transforms("none"), make_transforms("scaled")
        ([], 'scaled')
    """
    return [] if kind == "none" else kind


def render_recipe(recipe: Recipe, models: Any, *, device: Any = None, compile: bool | str = "auto",
                  progress: bool = True, thresholds: Any = None, callback: Any = None) -> Any:
    """The `RenderResult` of a "render" recipe on `models` (an nn.Module or a mapping name -> module).

    Raises:
        InvalidArgumentError: a recipe of another command, or without an objective.
    """
    if recipe.command != "render" or recipe.objective is None:
        raise InvalidArgumentError(f"render_recipe renders a 'render' recipe with an objective, got a "
                                   f"{recipe.command!r} recipe{'' if recipe.objective else ' without one'}")
    size = recipe.size or default_size(models)
    plan = compile_plan(recipe.objective, models)
    image_param = make_param(recipe.param, size, recipe.batch, phases.image_channels(plan), recipe.decay_power)
    preset = presets.PRESETS[recipe.preset]
    if image_param is None and preset.param != "fft":  # the recipe's plain fft, not the preset's own
        image_param = param_lib.fft(size, batch=recipe.batch, channels=phases.image_channels(plan))
    return phases.render(
        # the preset's prior terms go into the objective: render compiles it (a Plan cannot take them)
        (recipe.objective if preset.has_priors else plan),
        models if preset.has_priors else None,
        size=size,
        batch=recipe.batch,
        param=image_param,
        transforms=make_transforms(recipe.transforms),
        device=device,
        compile=compile,
        precision=recipe.precision,
        schedule=recipe.schedule,
        betas=recipe.betas,
        preset=recipe.preset,
        steps=recipe.steps,
        seed=recipe.seed,
        lr=recipe.lr,
        progress=progress,
        thresholds=thresholds,
        callback=callback,
    )
