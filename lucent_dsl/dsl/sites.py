"""Sites: where a term reads activations, a layer of a model, and the three layers every model has.

A `Site` names a layer by its dotted module path, optionally followed by selectors into a dict or
tuple output (`"@output/out"`, `"backbone/0"`), and the model it belongs to (`None` until a plan
binds it, when there is only one). Besides a model's own layers, a term may read `INPUT` (the image
after that model's preprocessing), `OUTPUT` (what the model returns) and `IMAGE` (the rendered image,
before random transforms). `Acts` is what a forward hands the terms: site -> activation.

Example:
    >>> s = Site("resnet", "@output/out")
    >>> str(s), s.module_path, s.selectors
    ('resnet:@output/out', '@output', ('out',))
    >>> Site(None, IMAGE) == Site(None, "@image")
    True
"""
from __future__ import annotations

import dataclasses as dc
from collections.abc import Mapping

from torch import Tensor

INPUT = "@input"  # a model's input, after that model's preprocessing
OUTPUT = "@output"  # a model's output (dict/tuple outputs: "@output/out", "@output/0")
IMAGE = "@image"  # the rendered image, before random transforms (read by the image penalties)


@dc.dataclass(frozen=True, slots=True)
class Site:
    """Where a term reads activations: a layer (dotted module path) of a model.

    `layer` may end in selectors for dict/tuple outputs: `"@output/out"`, `"backbone/0"`.
    `model=None` means "the only model" until a plan binds it.

    Example:
        >>> str(Site("resnet", "layer4")), str(Site(None, "@output/out"))
        ('resnet:layer4', '@output/out')
    """

    model: str | None
    layer: str

    @property
    def module_path(self) -> str:
        return self.layer.split("/", 1)[0]

    @property
    def selectors(self) -> tuple[str, ...]:
        return tuple(self.layer.split("/")[1:])

    def __str__(self) -> str:
        return f"{self.model}:{self.layer}" if self.model else self.layer


Acts = Mapping[Site, Tensor]


__all__ = ["IMAGE", "INPUT", "OUTPUT", "Acts", "Site"]
