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

Names are not silently reused. Registering another function under a live name raises
`InvalidArgumentError` unless `replace=True` is passed; re-running the same definition (a notebook
cell executed again: same qualified name, same code, same default and closure values) keeps the
first registration, so the expressions built before stay equal to the new ones. A term holds the
function it was built with: after `replace=True`, expressions built before keep computing the old
function (and no longer equal their parsed text, which now means the new one).

    >>> @ld.objective(name="center_energy")
    ... def other(a):
    ...     return a.mean((1, 2, 3))
    Traceback (most recent call last):
    ...
    lucent_dsl.errors.InvalidArgumentError: an objective named 'center_energy' is already registered ...
"""
from __future__ import annotations

import dataclasses as dc
import keyword
import numbers
from collections.abc import Callable
from typing import Any, cast

from torch import Tensor

from ..dsl.expr import VOCABULARY, Acts, Array, Expr, Site, Term, check_name, finite, register
from ..errors import InvalidArgumentError, ObjectiveShapeError
from ._term import Batch, check_batch, check_layer, check_model, per_image, tensor_at

_FUNCTIONS: dict[str, Callable[..., Any]] = {}  # name -> the function registered under it now


@dc.dataclass(frozen=True, slots=True, repr=False)
class Custom(Term):
    """A registered user objective: `fn_name(*layers, **params)`, computed by `fn` (compared by identity)."""

    fn_name: str
    layers: tuple[str, ...]
    params: tuple[tuple[str, Any], ...] = ()
    batch: Batch = None
    model: str | None = None
    fn: Callable[..., Any] | None = None  # None: the function registered under fn_name when scored

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
        fn = self.fn if self.fn is not None else _FUNCTIONS[self.fn_name]
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
                f"custom objective {self!r} returned shape {tuple(out.shape)}; return a scalar or one score per row "
                f"({rows},)"
            )
        return per_image(self, out, n, self.batch)


def _number(name: str, value: numbers.Real) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):
        if abs(int(value)) >= 2**63:  # Python cannot print ints of more than 4300 digits, JSON readers lose them
            raise InvalidArgumentError(
                f"parameter {name} of a custom objective is an integer of {int(value).bit_length()} "
                "bits: integers must fit in 64 bits (pass a float)"
            )
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


def _same_value(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)
    return isinstance(a, (int, float, str, bytes, bool)) and a == b  # anything else: only itself


def _cells(f: Any) -> tuple[Any, ...]:
    out = []
    for cell in getattr(f, "__closure__", None) or ():
        try:
            out.append(cell.cell_contents)
        except ValueError:  # an empty cell
            out.append(_cells)
    return tuple(out)


def same_definition(f: Any, g: Any) -> bool:
    """Whether `g` is `f` defined again: same qualified name, equal code, the same default and closure values.

    Example:
        >>> def make():
        ...     def energy(a, *, power=2.0):
        ...         return a.pow(power).mean(1)
        ...     return energy
        >>> same_definition(make(), make()), same_definition(make(), lambda a: a)
        (True, False)
    """
    if f is g:
        return True
    code_f, code_g = getattr(f, "__code__", None), getattr(g, "__code__", None)
    if code_f is None or code_g is None or code_f != code_g:  # code equality: body, names, constants, lines
        return False
    where_f = (getattr(f, "__module__", None), code_f.co_filename)
    where_g = (getattr(g, "__module__", None), code_g.co_filename)
    return (
        getattr(f, "__qualname__", None) == getattr(g, "__qualname__", None)
        and (where_f[0] == where_g[0] or where_f[1] == where_g[1])  # one file imported under two names counts
        and _same_value(f.__defaults__, g.__defaults__)
        and _same_value(f.__kwdefaults__, g.__kwdefaults__)
        and _same_value(_cells(f), _cells(g))
    )


def _hashable(f: Any) -> bool:
    try:
        hash(f)
    except TypeError:
        return False
    return True


def _describe(f: Any) -> str:
    code = getattr(f, "__code__", None)
    where = f" ({code.co_filename}:{code.co_firstlineno})" if code is not None else ""
    return f"{getattr(f, '__module__', '?')}.{getattr(f, '__qualname__', type(f).__name__)}{where}"


def objective(fn: Callable[..., Tensor] | None = None, *, name: str | None = None, replace: bool = False):
    """Register `fn(*activations, **params) -> Tensor` as a vocabulary term named `name` (default: fn's name).

    The returned factory is called with layer names: `factory("layer3", "layer4", power=2, batch=0, model="m")`.
    A name held by another function is refused unless `replace=True` (see the module docstring).
    """
    if not isinstance(replace, bool):
        raise InvalidArgumentError(f"replace must be True or False, got {replace!r}")

    def wrap(f: Callable[..., Tensor]) -> Callable[..., Expr]:
        if not callable(f):
            raise InvalidArgumentError(f"@objective decorates a function of activations, got {f!r}")
        term_name = name if name is not None else getattr(f, "__name__", None)
        if name is None and not (isinstance(term_name, str) and term_name.isidentifier()):
            raise InvalidArgumentError(f"{f!r} has no usable name; pass one: objective(fn, name='my_energy')")
        check_name(term_name)
        term_name = cast(str, term_name)
        existing = VOCABULARY.get(term_name)
        if existing is not None and not getattr(existing, "is_custom_objective", False):
            raise InvalidArgumentError(f"{term_name!r} is a built-in objective; register yours under another name")
        if existing is not None and same_definition(_FUNCTIONS[term_name], f):
            return existing  # the same definition run again: keep the first, so equal expressions stay equal
        if existing is not None and not replace:
            raise InvalidArgumentError(
                f"an objective named {term_name!r} is already registered by {_describe(_FUNCTIONS[term_name])}; "
                f"registering {_describe(f)} under the same name would change what {term_name}(...) computes. "
                f"Pick another name, or pass @objective(name={term_name!r}, replace=True) to replace it "
                "(expressions built before keep the old function)"
            )

        impl = f if _hashable(f) else (lambda *args, **kwargs: f(*args, **kwargs))  # terms hash their function

        def factory(*layers: str, batch: Batch = None, model: str | None = None, **params: Any) -> Expr:
            if not layers:
                raise InvalidArgumentError(f"{term_name}(...) needs at least one layer name")
            ps = tuple(sorted((k, _param(k, v)) for k, v in params.items()))
            layer_names = tuple(check_layer(lay) for lay in layers)
            return Custom(term_name, layer_names, ps, check_batch(batch), check_model(model), impl)

        factory.__name__ = factory.__qualname__ = term_name
        factory.__doc__ = f.__doc__
        factory.is_custom_objective = True  # type: ignore[attr-defined]
        register(term_name, factory, replace=True)
        _FUNCTIONS[term_name] = f
        return factory

    return wrap(fn) if fn is not None else wrap
