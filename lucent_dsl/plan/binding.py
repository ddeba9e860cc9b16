"""Binding: an objective made concrete for the models it reads, before anything runs.

`as_models` turns what a caller passes (one `nn.Module`, or a mapping name -> module) into the named
models of a plan, each through `models.sources.adapt`; `bind` then names the model of every term
(`model=None` only when there is exactly one), checks every layer it reads against that model's
submodules (a misspelt layer fails here, with the closest names), and lets each term specialise
itself to its model (`Term.bind`: a class name becomes its index; `bind_model`: clip_text embeds its
text). `compile_plan` binds first; dataset examples and a render's recipe bind the same way.

Example:
    >>> import torch.nn as nn
    >>> from lucent_dsl import channel
    >>> models = as_models(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))
    >>> list(models)
    ['model']
    >>> bind(channel("1", 2) + 0.5 * channel("0", 1), models)
    channel('1', 2, model='model') + 0.5 * channel('0', 1, model='model')
    >>> bind(channel("2", 2), models)
    Traceback (most recent call last):
    ...
    lucent_dsl.errors.LayerNotFoundError: channel('2', 2) reads layer '2' of model 'model', which has no such ...
"""
from __future__ import annotations

import dataclasses as dc
import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from ..dsl.expr import IMAGE, INPUT, OUTPUT, Expr, Site, Term, map_terms
from ..errors import AmbiguousModelError, InvalidArgumentError, LayerNotFoundError, ModelNotFoundError
from ..models.info import info_of
from ..models.sources import adapt

DEFAULT_MODEL_NAME = "model"
IMAGE_SITE = Site(None, IMAGE)


def as_models(models: Any) -> dict[str, nn.Module]:
    """One module or a mapping name -> module, as a dict (a single module is named "model")."""
    if isinstance(models, nn.Module):
        return {DEFAULT_MODEL_NAME: adapt(models)}
    if isinstance(models, Mapping):
        if not models:
            raise InvalidArgumentError("no models given: pass an nn.Module or a mapping name -> nn.Module")
        out = {}
        for name, m in models.items():
            if not isinstance(name, str) or not name or ":" in name:
                raise InvalidArgumentError(f"model names must be non-empty strings without ':', got {name!r}")
            if not isinstance(m, nn.Module):
                raise InvalidArgumentError(f"model {name!r} is a {type(m).__name__}, not a torch.nn.Module")
            out[name] = adapt(m)
        return out
    raise InvalidArgumentError(
        f"models must be a torch.nn.Module or a mapping name -> nn.Module, got {type(models).__name__}"
    )


def _closest(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=5, cutoff=0.5)
    if not close:
        close = difflib.get_close_matches(name.replace("_", "."), choices, n=5, cutoff=0.3)
    if close:
        return "Did you mean: " + ", ".join(repr(c) for c in close) + "?"
    return (
        "Valid names include: " + ", ".join(repr(c) for c in list(choices)[:8]) + (", ..." if len(choices) > 8 else "")
    )


def _bind_model(t: Term, model: str | None, models: Mapping[str, nn.Module]) -> str:
    if model is None:
        if len(models) == 1:
            return next(iter(models))
        raise AmbiguousModelError(
            f"{t!r} does not say which model it reads, and there are {len(models)}: "
            f"{', '.join(repr(m) for m in models)}. Add model=... to the term."
        )
    if model not in models:
        raise ModelNotFoundError(
            f"{t!r} reads model {model!r}, which is not in the ensemble {list(models)}. {_closest(model, list(models))}"
        )
    return model


def _check_layer(t: Term, site: Site, module: nn.Module, names: Sequence[str]) -> None:
    path = site.module_path
    if path in (INPUT, OUTPUT) or path in names:
        return
    hint = _closest(path, [n for n in names if n] + [OUTPUT])
    raise LayerNotFoundError(
        f"{t!r} reads layer {path!r} of model {site.model!r}, which has no such submodule. {hint} "
        f"(`lucent-dsl layers` lists every layer; {OUTPUT!r} is the model output)"
    )


def bind(objective: Expr, models: Mapping[str, nn.Module]) -> Expr:
    """`objective` with every model named, every layer checked and every class name resolved."""
    names = {name: [n for n, _ in m.named_modules()] for name, m in models.items()}

    def bind_term(t: Term) -> Term:
        fields = {f.name for f in dc.fields(t)}  # type: ignore[arg-type]
        if not t.sites() or all(s == IMAGE_SITE for s in t.sites()):
            return t
        model = _bind_model(t, t.model if "model" in fields else None, models)  # type: ignore[attr-defined]
        bound = dc.replace(t, model=model) if "model" in fields else t  # type: ignore[type-var]
        for s in bound.sites():
            if s.module_path == IMAGE:
                continue
            _check_layer(t, s, models[model], names[model])
        bound = bound.bind(info_of(models[model]))
        reach = getattr(bound, "bind_model", None)  # a term that needs the module itself (clip_text: its text tower)
        return reach(models[model]) if callable(reach) else bound  # pyright: ignore[reportReturnType]

    return map_terms(objective, bind_term)


__all__ = ["DEFAULT_MODEL_NAME", "IMAGE_SITE", "as_models", "bind"]
