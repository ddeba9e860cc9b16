"""Argument checks for every room: ints, real numbers, sizes, seeds and choices, with one wording.

Each check returns the value in its plain form (an `int`, a `float`, an (H, W) pair) or raises
`InvalidArgumentError` naming the argument, what it must be and what it got. `where` names the call
(`"pad()"`, `"recipe"`) and prefixes the message; bools are never numbers here (`True` is not a size).

Example:
    >>> check_size(64)
    (64, 64)
    >>> check_int("steps", 0, where="recipe")
    Traceback (most recent call last):
    ...
    lucent_dsl.errors.InvalidArgumentError: recipe: steps must be an integer >= 1, got 0
"""
from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence
from typing import Any, TypeVar

from .errors import InvalidArgumentError

SEED_MAX = 2**63 - 1
"""The largest seed: torch.Generator takes seeds in 0 .. 2**63 - 1."""

T = TypeVar("T")


def _error(where: str | None, message: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"{where}: {message}" if where else message)


def is_real(v: object) -> bool:
    """A real number that is not a bool."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def check_int(name: str, value: Any, *, minimum: int = 1, where: str | None = None) -> int:
    """`value` as an int >= `minimum` (anything `operator.index` takes, a 0-d integer tensor too; not a bool)."""
    try:
        n = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        n = None
    if n is None:
        kind = "" if value is None or isinstance(value, (bool, float, str)) else f" of type {type(value).__name__}"
        raise _error(where, f"{name} must be an integer >= {minimum}, got {value!r}{kind}")
    if n < minimum:
        raise _error(where, f"{name} must be an integer >= {minimum}, got {value!r}")
    return n


def check_real(name: str, value: Any, *, minimum: float | None = None, positive: bool = False,
               maximum: float | None = None, where: str | None = None) -> float:
    """`value` as a finite float, optionally > 0, >= `minimum`, <= `maximum`."""
    if not is_real(value) or not math.isfinite(float(value)):
        raise _error(where, f"{name} must be a finite number, got {value!r}")
    x = float(value)
    if positive and x <= 0:
        raise _error(where, f"{name} must be > 0, got {value!r}")
    if minimum is not None and x < minimum:
        raise _error(where, f"{name} must be >= {minimum}, got {value!r}")
    if maximum is not None and x > maximum:
        raise _error(where, f"{name} must be <= {maximum}, got {value!r}")
    return x


def check_size(size: Any, *, name: str = "size", where: str | None = None) -> tuple[int, int]:
    """`size` as (H, W): an int n means (n, n), a pair is (height, width).

    Example:
        >>> check_size([96, 128])
        (96, 128)
    """
    if isinstance(size, Sequence) and not isinstance(size, str):
        if len(size) != 2:
            raise _error(where, f"{name} must be an int or a pair (H, W), got {size!r}")
        return (check_int(f"{name}[0] (height)", size[0], where=where),
                check_int(f"{name}[1] (width)", size[1], where=where))
    if isinstance(size, bool) or not isinstance(size, numbers.Integral):
        raise _error(where, f"{name} must be an int or a pair (H, W), got {size!r}")
    n = check_int(name, size, where=where)
    return n, n


def check_seed(seed: Any, name: str = "seed") -> int:
    """`seed` as an int in 0 .. 2**63 - 1 (torch.Generator's range).

    Example:
        >>> check_seed(-1)
        Traceback (most recent call last):
        ...
        lucent_dsl.errors.InvalidArgumentError: seed must be in 0 .. 2**63 - 1 = ... (torch.Generator's range), got -1
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise InvalidArgumentError(f"{name} must be an integer in 0 .. 2**63 - 1, got {seed!r}")
    if not 0 <= int(seed) <= SEED_MAX:
        raise InvalidArgumentError(
            f"{name} must be in 0 .. 2**63 - 1 = {SEED_MAX} (torch.Generator's range), got {seed}"
        )
    return int(seed)


def check_choice(name: str, value: T, choices: Sequence[T], *, where: str | None = None) -> T:
    """`value` if it is one of `choices`."""
    if value not in choices:
        raise _error(where, f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")
    return value
