"""Deprecated: caricature, feature inversion and accentuation live in `lucent_dsl.toolbox.inversion`.

`ld.recipes` still names that module. Importing `lucent_dsl.recipes` warns (a FutureWarning naming the new
import) and gives the same objects; this shim will be removed in a later release.

Example:
    >>> import importlib, warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     old = importlib.reload(importlib.import_module("lucent_dsl.recipes"))
    >>> new = importlib.import_module("lucent_dsl.toolbox.inversion")
    >>> caught[0].category.__name__, old.caricature is new.caricature
    ('FutureWarning', True)
"""
import warnings

from .toolbox import inversion as _new

__all__ = list(_new.__all__)

warnings.warn("lucent_dsl.recipes moved to lucent_dsl.toolbox.inversion: import from there (or from "
              "lucent_dsl.toolbox); this module will be removed", FutureWarning, stacklevel=2)


def __getattr__(name: str):
    return getattr(_new, name)


def __dir__() -> list[str]:
    return dir(_new)
