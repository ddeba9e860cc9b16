"""One root exception, `LucentError`, and one subclass per kind of mistake.

Every error the library raises on purpose derives from `LucentError`, so a caller can catch
them all with one clause. Errors that are about a bad argument also derive from `ValueError`
(or `KeyError`/`IndexError`/`TypeError` where that is the natural builtin), so generic code
that catches those still works.

Example:
    >>> from lucent_dsl.errors import LucentError, ParseError
    >>> issubclass(ParseError, LucentError)
    True
"""
from __future__ import annotations


class LucentError(Exception):
    """Root of every error raised on purpose by lucent_dsl."""


class ParseError(LucentError, ValueError):
    """Objective text that is not valid DSL (syntax, or something outside the allow-list)."""


class LayerNotFoundError(LucentError, KeyError):
    """A site names a layer that the model does not have. The message lists the closest names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ModelNotFoundError(LucentError, KeyError):
    """A site names a model that is not in the ensemble."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class AmbiguousModelError(LucentError, ValueError):
    """`model=None` with several models given: say which one."""


class ObjectiveShapeError(LucentError, ValueError):
    """A term does not fit the activation it reads (index out of range, unsupported layout, ...)."""


class InvalidArgumentError(LucentError, ValueError):
    """An argument has a wrong value or type (negative steps, NaN weight, wrong image channels, ...)."""


class NonFiniteError(LucentError, FloatingPointError):
    """The loss or the gradient became NaN or infinite during a render."""


class ImageError(LucentError, ValueError):
    """An input image cannot be read or has the wrong shape."""


class WeightsNotFoundError(LucentError, FileNotFoundError):
    """Pretrained weights are not installed; the message gives the command that installs them."""
