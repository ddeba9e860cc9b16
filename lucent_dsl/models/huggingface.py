"""(stub: filled in by issue 25's work) See `lucent_dsl.models.sources`."""
from __future__ import annotations

from torch import nn

from .info import ModelInfo


def adapt(model: nn.Module) -> nn.Module:
    return model


def declared_info(model: nn.Module) -> ModelInfo | None:
    return None
