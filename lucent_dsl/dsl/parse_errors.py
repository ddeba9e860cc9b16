"""Why objective text was rejected: the message and the caret of a `ParseError`.

The reader in `parser` stops at the first token it cannot take (`Rejected`). `explain` then asks,
in this order: is the text Python at all (Python's own syntax error, or the hint that layer names
are strings in quotes)? Which construct outside the allow-list comes first (read from Python's
syntax tree, which is only built, never compiled)? Otherwise the reader's own complaint stands.

Example:
    >>> from lucent_dsl import parse
    >>> parse("channel('c', 1) ** 2")
    Traceback (most recent call last):
    ...
    lucent_dsl.errors.ParseError: '**' (a power) is not allowed in objective text; write the number out ...
      channel('c', 1) ** 2
                      ^
    >>> parse("channel('0', 0, batch=0, batch=1)")
    Traceback (most recent call last):
    ...
    lucent_dsl.errors.ParseError: keyword argument repeated: batch
      channel('0', 0, batch=0, batch=1)
                               ^
"""
from __future__ import annotations

import ast
import warnings

from ..errors import ParseError
from .lexer import TOKEN, Rejected, fail, fail_at, source_line

__all__ = ["explain"]


def _unquoted_layer(text: str) -> tuple[int, str] | None:
    """A dotted layer name written without quotes that Python misreads (`features.14`: a name, then .14)."""
    pos, run, start, broken = 0, "", 0, False
    while pos < len(text):
        m = TOKEN.match(text, pos)
        if m is None:
            break
        kind, s = m.lastgroup, m.group()
        joins = run and m.start() == start + len(run) and (kind in ("name", "number") or s == ".")
        if joins:
            run += s
            broken = broken or (kind == "number" and s.startswith("."))
        else:
            if broken:
                break
            run, start, broken = (s, m.start(), False) if kind == "name" else ("", 0, False)
        pos = m.end()
    if not broken:
        return None
    return start, f"layer names are strings in quotes: write {run!r}, not {run}"


def explain(text: str, rejected: Rejected) -> ParseError:
    """The ParseError for `text`, whose reading stopped with `rejected`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(text, mode="eval")  # a syntax tree only: nothing is compiled or run
    except SyntaxError as err:
        hint = _unquoted_layer(text)
        if hint is not None:
            return fail_at(text, *hint)
        message = err.msg if err.msg.startswith("invalid syntax") else f"invalid syntax: {err.msg}"
        return fail(text, (err.offset or 1) - 1, message, err.lineno or 1)
    except (RecursionError, MemoryError, ValueError, OverflowError):  # too deep or too long for Python itself
        tree = None
    if tree is not None:
        found = _first_outside(text, tree)
        if found is not None:
            return fail_at(text, *found)
    return fail_at(text, rejected.pos, rejected.message)


# --- the first construct outside the allow-list, in reading order ----------------------------------

_SYMBOLS = {ast.Pow: "**", ast.FloorDiv: "//", ast.Mod: "%", ast.MatMult: "@", ast.BitOr: "|", ast.BitAnd: "&",
            ast.BitXor: "^", ast.LShift: "<<", ast.RShift: ">>"}
_WHAT = {
    "Lambda": "a lambda",
    "ListComp": "a comprehension",
    "SetComp": "a comprehension",
    "DictComp": "a comprehension",
    "GeneratorExp": "a generator",
    "IfExp": "x if c else y",
    "NamedExpr": ":=",
    "Compare": "a comparison",
    "BoolOp": "and/or",
    "JoinedStr": "an f-string",
    "Subscript": "indexing",
    "Dict": "a dict",
    "Set": "a set",
    "Starred": "* unpacking",
    "Await": "await",
    "Yield": "yield",
    "YieldFrom": "yield",
    "Slice": "a slice",
}
_ALLOWED = " in objective text (only objective calls, literals and + - * /)"


def _offset(text: str, line: int, byte_col: int) -> int:
    """The character offset in `text` of an ast position (ast columns count UTF-8 bytes)."""
    start = 0
    for _ in range(line - 1):
        start = text.index("\n", start) + 1
    src = source_line(text, line)
    return start + len(src.encode()[:byte_col].decode(errors="ignore"))


def _at(text: str, node: ast.AST) -> int:
    return _offset(text, getattr(node, "lineno", 1), getattr(node, "col_offset", 0))


def _operator_at(text: str, node: ast.BinOp, symbol: str) -> int:
    pos = _offset(text, node.left.end_lineno or 1, node.left.end_col_offset or 0)
    end = _at(text, node.right)
    while pos < end:
        m = TOKEN.match(text, pos)
        if m is None:
            break
        if m.lastgroup == "op" and m.group() == symbol:
            return pos
        pos = m.end()
    return _at(text, node)


def _is_dotted(node: ast.AST) -> bool:
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name)


def _outside(text: str, node: ast.AST) -> tuple[int, str] | None:
    """(offset, message) if `node` itself is outside the allow-list."""
    if isinstance(node, ast.Constant):
        ok = isinstance(node.value, (int, float, str, bool)) or node.value is None
        return None if ok else (_at(text, node), f"literal {node.value!r} is not allowed")
    if isinstance(node, ast.BinOp):
        symbol = _SYMBOLS.get(type(node.op))
        if symbol == "**":
            return _operator_at(text, node, symbol), ("'**' (a power) is not allowed in objective text; write the "
                                                      "number out (1e-3, not 10 ** -3): only + - * / are")
        if symbol is not None:
            return _operator_at(text, node, symbol), f"the operator {symbol!r} is not allowed{_ALLOWED}"
        return None
    if isinstance(node, ast.UnaryOp):
        ok = isinstance(node.op, (ast.USub, ast.UAdd))
        return (
            None
            if ok
            else (
                _at(text, node),
                f"unary {'~' if isinstance(node.op, ast.Invert) else 'not'} is not allowed{_ALLOWED}",
            )
        )
    if isinstance(node, (ast.Tuple, ast.List)):
        return None
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name):
            return _at(text, node.func), "only objective names can be called (no attributes or expressions)"
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            return _at(text, node), "* and ** arguments are not allowed"
        seen: set[str] = set()
        for k in node.keywords:
            if k.arg in seen:
                return _at(text, k), f"keyword argument repeated: {k.arg}"
            seen.add(k.arg)  # type: ignore[arg-type]
        return None
    if isinstance(node, ast.Name):
        return _at(text, node), (f"name {node.id!r} is not allowed here; call an objective such as channel(...), "
                                 f"and write layer names as strings in quotes: {node.id!r}")
    if isinstance(node, ast.Attribute):
        source = ast.get_source_segment(text, node) or ""
        hint = f"; layer names are strings in quotes: write {source!r}, not {source}" if _is_dotted(node) else ""
        return _at(text, node), f"Attribute is not allowed{_ALLOWED}{hint}"
    kind = type(node).__name__
    what = f" ({_WHAT[kind]})" if kind in _WHAT else ""
    return _at(text, node), f"{kind} is not allowed{_ALLOWED}{what}"


def _first_outside(text: str, tree: ast.Expression) -> tuple[int, str] | None:
    """The first construct (parents before children, left to right) that the reader does not accept."""
    stack: list[ast.AST] = [tree.body]
    while stack:  # iterative: Python accepts sums deeper than the recursion limit
        node = stack.pop()
        found = _outside(text, node)
        if found is not None:
            return found
        if isinstance(node, ast.BinOp):
            stack += [node.right, node.left]
        elif isinstance(node, ast.UnaryOp):
            stack.append(node.operand)
        elif isinstance(node, (ast.Tuple, ast.List)):
            stack += reversed(node.elts)
        elif isinstance(node, ast.Call):
            stack += [k.value for k in reversed(node.keywords)] + list(reversed(node.args))
    return None
