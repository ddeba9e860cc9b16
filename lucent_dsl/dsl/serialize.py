"""JSON round-trips of expressions, for recipes and reproducibility.

The JSON form mirrors the DSL: a leaf is `{"term": name, "args": [...], "kwargs": {...}}` and is
rebuilt by calling the vocabulary factory, so JSON and text accept exactly the same objectives.

Example:
    >>> from lucent_dsl import channel, total_variation
    >>> e = channel("layer4", 12, batch=range(0, 2)) - 0.01 * total_variation()
    >>> from_json(to_json(e)) == e
    True
"""
from __future__ import annotations

import base64
import json
import numbers
from typing import Any

import numpy as np

from ..errors import LucentError, ParseError
from .expr import MAX_DEPTH, VOCABULARY, Array, Const, Expr, Product, Scale, Sum, Term, as_expr, product, scale, sum_of


def _value(v: Any) -> Any:
    if isinstance(v, Expr):  # an objective inside a term, e.g. masks.masked(expr, mask)
        return {"expr": _node(v)}
    if isinstance(v, tuple):
        return {"tuple": [_value(x) for x in v]}
    if isinstance(v, range):
        return {"range": [v.start, v.stop, v.step]}
    if isinstance(v, Array):
        data = base64.b64encode(v.tensor.numpy().astype("<f4").tobytes()).decode()
        return {"tensor": data, "shape": list(v.shape)}
    return v


def _node(e: Expr) -> Any:
    if isinstance(e, Term):
        pos, kw = e.dsl_args()
        return {"term": e.name, "args": [_value(v) for v in pos], "kwargs": {k: _value(v) for k, v in kw.items()}}
    if isinstance(e, Const):
        return {"const": e.value}
    if isinstance(e, Scale):
        return {"scale": e.k, "of": _node(e.expr)}
    if isinstance(e, Sum):
        return {"sum": [_node(t) for t in e.terms]}
    if isinstance(e, Product):
        return {"product": [_node(e.a), _node(e.b)]}
    raise TypeError(f"not an objective: {e!r}")


def to_json(e: Expr, **dumps_kwargs: Any) -> str:
    """The JSON text of `e`."""
    return json.dumps(_node(e), allow_nan=False, **dumps_kwargs)


_MAX_JSON_DEPTH = 4 * MAX_DEPTH  # JSON nodes and values inside each other (a term's arguments count too)


def _read_value(v: Any, depth: int) -> Any:
    if depth > _MAX_JSON_DEPTH:
        raise ParseError("objective JSON is nested too deeply")
    if isinstance(v, dict):
        if set(v) == {"expr"}:
            return _read(v["expr"], depth + 1)
        if set(v) == {"tuple"} and isinstance(v["tuple"], list):
            return tuple(_read_value(x, depth + 1) for x in v["tuple"])
        if set(v) == {"range"} and isinstance(v["range"], list) and len(v["range"]) == 3:
            if not all(isinstance(x, int) and not isinstance(x, bool) for x in v["range"]) or v["range"][2] == 0:
                raise ParseError(f"bad range in JSON: {v!r}")
            return range(*v["range"])
        if set(v) == {"tensor", "shape"} and isinstance(v["tensor"], str) and isinstance(v["shape"], list):
            raw = base64.b64decode(v["tensor"].encode(), validate=True)
            if len(raw) % 4:
                raise ParseError("tensor data in JSON is not a whole number of float32 values")
            return Array.of(np.frombuffer(raw, dtype="<f4").copy(), shape=tuple(v["shape"]))
        raise ParseError(f"unknown value in JSON: {v!r}"[:300])
    if isinstance(v, list):
        raise ParseError("lists in JSON values must be wrapped as {'tuple': [...]}")
    return v


def _read(node: Any, depth: int = 0) -> Expr:
    if depth > _MAX_JSON_DEPTH:
        raise ParseError("objective JSON is nested too deeply")
    if not isinstance(node, dict):
        raise ParseError(f"expected a JSON object for an objective node, got {type(node).__name__}")
    keys = set(node)
    if keys == {"const"} and isinstance(node["const"], numbers.Real) and not isinstance(node["const"], bool):
        return as_expr(node["const"])
    if keys == {"scale", "of"}:
        return scale(node["scale"], _read(node["of"], depth + 1))
    if keys == {"sum"} and isinstance(node["sum"], list):
        return sum_of(_read(t, depth + 1) for t in node["sum"])
    if keys == {"product"} and isinstance(node["product"], list) and len(node["product"]) == 2:
        return product(_read(node["product"][0], depth + 1), _read(node["product"][1], depth + 1))
    if keys == {"term", "args", "kwargs"} and isinstance(node["args"], list) and isinstance(node["kwargs"], dict):
        factory = VOCABULARY.get(node["term"]) if isinstance(node["term"], str) else None
        if factory is None:
            raise ParseError(f"unknown objective {node['term']!r} in JSON; known: {', '.join(sorted(VOCABULARY))}")
        args = [_read_value(a, depth + 1) for a in node["args"]]
        return factory(*args, **{k: _read_value(v, depth + 1) for k, v in node["kwargs"].items()})
    raise ParseError(f"not an objective node: {json.dumps(node)[:200]}")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are unique (json.loads would silently keep the last of `{"batch": 0, "batch": 1}`)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ParseError(f"objective JSON repeats the key {key!r} in one object; each key may appear once")
        out[key] = value
    return out


def from_json(text: str | bytes) -> Expr:
    """Rebuild an expression from `to_json` output. Malformed input raises `ParseError`.

    Example:
        >>> from_json('{"term": "channel", "args": ["c", 1], "kwargs": {"batch": 0, "batch": 1}}')
        Traceback (most recent call last):
        ...
        lucent_dsl.errors.ParseError: objective JSON repeats the key 'batch' in one object; each key may appear once
    """
    try:
        return _read(json.loads(text, object_pairs_hook=_unique_keys))
    except ParseError:
        raise
    except LucentError as err:
        raise ParseError(f"invalid objective JSON: {err}") from None
    except RecursionError:  # json.loads itself, before any depth check of ours
        raise ParseError("objective JSON is nested too deeply") from None
    except (ValueError, TypeError, OverflowError, KeyError, RuntimeError) as err:
        raise ParseError(f"invalid objective JSON: {type(err).__name__}: {err}"[:500]) from None
