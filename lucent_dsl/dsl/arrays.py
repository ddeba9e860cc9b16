"""`Array`: a constant tensor inside an objective (a direction, a target, a mask), as a hashable value.

Example:
    >>> import torch
    >>> Array.of(torch.ones(2, 2)) == Array.of([[1.0, 1.0], [1.0, 1.0]])
    True
    >>> Array.of([1.0, 2.0])
    tensor([1.0, 2.0], shape=(2,))
"""
from __future__ import annotations

import dataclasses as dc
import math
from typing import Any

import torch
from torch import Tensor

from ..errors import InvalidArgumentError

__all__ = ["Array"]


@dc.dataclass(frozen=True, slots=True, eq=False, repr=False)
class Array:
    """A constant tensor inside an expression (a direction, target activations), compared by value.

    Equality and hashing use the shape and the exact float32 bytes, so expressions that hold
    arrays stay hashable values. Prints as `tensor([...], shape=(...))`, which `parse` reads.
    """

    tensor: Tensor
    key: bytes

    @staticmethod
    def of(value: Any, *, shape: tuple[int, ...] | None = None) -> Array:
        if isinstance(value, Array):
            return value
        try:
            t = torch.as_tensor(value, dtype=torch.float32).detach().cpu().contiguous()
        except (TypeError, ValueError, RuntimeError) as err:
            raise InvalidArgumentError(f"expected numbers or a tensor, got {type(value).__name__}: {err}") from None
        if shape is not None:
            if math.prod(shape) != t.numel():
                raise InvalidArgumentError(
                    f"tensor data has {t.numel()} values but shape={tuple(shape)} needs {math.prod(shape)}"
                )
            try:
                t = t.reshape(shape)
            except RuntimeError as err:
                raise InvalidArgumentError(f"bad tensor shape {tuple(shape)}: {err}") from None
        if not bool(torch.isfinite(t).all()):
            raise InvalidArgumentError("a tensor in an objective contains NaN or infinite values")
        return Array(t, repr(tuple(t.shape)).encode() + t.numpy().tobytes())

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.tensor.shape)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Array) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        data = ", ".join(repr(float(v)) for v in self.tensor.flatten().tolist())
        return f"tensor([{data}], shape={self.shape!r})"
