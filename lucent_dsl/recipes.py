"""Deprecated: caricature, feature inversion and accentuation live in `lucent_dsl.toolbox.inversion`.

`ld.recipes` still names that module. Importing `lucent_dsl.recipes` warns (a FutureWarning naming the new
import) and gives the same objects; this shim will be removed in a later release.
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
