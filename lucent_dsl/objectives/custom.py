"""`@objective`: turn a function of activations into a vocabulary term.

The decorated function receives one activation tensor per layer argument (rows = images, or
crops of images) plus its keyword parameters, and returns a scalar or one score per row. The
result joins the algebra, the plan, `repr`, `parse` and JSON under the function's name.

Example:
    >>> import lucent_dsl as ld
    >>> @ld.objective
    ... def center_energy(a, *, power=2.0):
    ...     return a[..., a.shape[-2] // 2, a.shape[-1] // 2].abs().pow(power).mean(1)
    >>> e = center_energy("layer3", power=3.0) - ld.total_variation()
    >>> e
    center_energy('layer3', power=3.0) - total_variation()
    >>> ld.parse(repr(e)) == e
    True
"""
from __future__ import annotations

import dataclasses as dc
import keyword
import numbers
from typing import Any, Callable

from torch import Tensor

from ..errors import InvalidArgumentError, ObjectiveShapeError
from ..expr import VOCABULARY, Acts, Array, Expr, Site, Term, finite, register
from ._term import Batch, check_batch, check_layer, check_model, per_image, tensor_at

_FUNCTIONS: dict[str, Callable[..., Any]] = {}


@dc.dataclass(frozen=True, slots=True, repr=False)
class Custom(Term):
    """A registered user objective: `fn_name(*layers, **params)`."""

    fn_name: str
    layers: tuple[str, ...]
    params: tuple[tuple[str, Any], ...] = ()
    batch: Batch = None
    model: str | None = None

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.fn_name

    def sites(self) -> tuple[Site, ...]:
        return tuple(Site(self.model, lay) for lay in self.layers)

    def dsl_args(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        kw: dict[str, Any] = dict(self.params)
        if self.batch is not None:
            kw["batch"] = self.batch
        if self.model is not None:
            kw["model"] = self.model
        return self.layers, kw

    def score(self, acts: Acts, n: int) -> Tensor:
        fn = _FUNCTIONS[self.fn_name]
        args = [tensor_at(self, acts, s) for s in self.sites()]
        like = args[0] if args else None
        # Tensor parameters are stored as `Array` values (hashable); the function gets a tensor back.
        params = {
            k: (v.tensor.to(device=like.device, dtype=like.dtype) if like is not None and like.is_floating_point()
                else v.tensor) if isinstance(v, Array) else v
            for k, v in self.params
        }
        out = fn(*args, **params)
        rows = args[0].shape[0] if args else n
        if not isinstance(out, Tensor):
            raise ObjectiveShapeError(
                f"custom objective {self!r} returned a {type(out).__name__}, not a tensor; return a 0-d tensor "
                f"(one score for the batch) or one score per row ({rows},)"
            )
        if out.dim() == 0:  # a batch-level score, shared equally by the images
            return per_image(self, (out / n).expand(n), n, self.batch)
        if out.shape != (rows,):
            raise ObjectiveShapeError(
                f"custom objective {self!r} returned shape {tuple(out.shape)}; return a scalar or one score per row ({rows},)"
            )
        return per_image(self, out, n, self.batch)


def _number(name: str, value: numbers.Real) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    return finite(value, f"parameter {name}")  # NaN would break equality, inf printing and JSON


def _param(name: str, value: Any) -> Any:
    if not name.isidentifier() or keyword.iskeyword(name):  # JSON can name any key
        raise InvalidArgumentError(f"parameter name {name!r} of a custom objective is not a Python identifier")
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, numbers.Real):
        return _number(name, value)
    if isinstance(value, (list, tuple)) and all(isinstance(v, numbers.Real) for v in value):
        return tuple(_number(name, v) for v in value)
    if isinstance(value, (Tensor, Array)):
        return Array.of(value)
    raise InvalidArgumentError(
        f"parameter {name}={value!r} of a custom objective must be a number, string, bool, None, "
        "a tuple of numbers or a tensor (so the objective stays a printable, hashable value)"
    )


def objective(fn: Callable[..., Tensor] | None = None, *, name: str | None = None):
    """Register `fn(*activations, **params) -> Tensor` as a vocabulary term named `name` (default: fn's name).

    The returned factory is called with layer names: `factory("layer3", "layer4", power=2, batch=0, model="m")`.
    """

    def wrap(f: Callable[..., Tensor]) -> Callable[..., Expr]:
        term_name = name or f.__name__

        def factory(*layers: str, batch: Batch = None, model: str | None = None, **params: Any) -> Expr:
            if not layers:
                raise InvalidArgumentError(f"{term_name}(...) needs at least one layer name")
            ps = tuple(sorted((k, _param(k, v)) for k, v in params.items()))
            return Custom(term_name, tuple(check_layer(lay) for lay in layers), ps, check_batch(batch), check_model(model))

        factory.__name__ = factory.__qualname__ = term_name
        factory.__doc__ = f.__doc__
        existing = VOCABULARY.get(term_name)
        if existing is not None and not getattr(existing, "is_custom_objective", False):
            raise InvalidArgumentError(f"{term_name!r} is a built-in objective; register yours under another name")
        factory.is_custom_objective = True  # type: ignore[attr-defined]
        _FUNCTIONS[term_name] = f
        register(term_name, factory, replace=True)
        return factory

    return wrap(fn) if fn is not None else wrap
