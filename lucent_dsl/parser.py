"""`parse`: DSL text -> expression, through an allow-list. Nothing is ever evaluated as code.

Allowed: calls to vocabulary names (`channel(...)`, custom `@objective`s) with literal arguments
and keyword arguments, numbers, strings, `None`, `True`/`False`, tuples/lists of those, `range(...)`,
`tensor([...], shape=(...))`, `+ - * /` and unary `-`/`+`. Everything else (names, attributes,
subscripts, lambdas, comprehensions, `**`, ...) raises `ParseError` pointing at the column.

The value of the text is what Python would compute with the vocabulary in scope, so
`parse(repr(e)) == e` for every expression `e`.

Example:
    >>> parse("channel('layer4', 12) - 1e-3 * total_variation()")
    channel('layer4', 12) - 0.001 * total_variation()
    >>> parse("__import__('os')")
    Traceback (most recent call last):
    ...
    lucent_dsl.errors.ParseError: '__import__' is not an objective name; known names: activation_match, ...
      __import__('os')
      ^
"""
from __future__ import annotations

import ast
import io
import keyword
import numbers
import tokenize
from typing import Any

from .errors import LucentError, ParseError
from .expr import VOCABULARY, Array, Expr, as_expr, sum_of

_MAX_TEXT = 2_000_000


def _source_line(text: str, line: int) -> str:
    # Python numbers lines at \n only (parse() turns \r\n and \r into \n); str.splitlines would also
    # split at \f, \x1c, \u2028, ... and quote the wrong line.
    lines = text.split("\n")
    return lines[min(max(line, 1), len(lines)) - 1]


def _fail(text: str, col: int | None, message: str, line: int = 1) -> ParseError:
    src = _source_line(text, line)
    col = 0 if col is None else max(0, min(col, len(src)))
    return ParseError(f"{message}\n  {src}\n  {' ' * col}^")


def parse(text: str) -> Expr:
    """Parse DSL text into an objective expression (never evaluates code)."""
    if not isinstance(text, str):
        raise ParseError(f"expected objective text (a str), got {type(text).__name__}")
    if len(text) > _MAX_TEXT:
        raise ParseError(f"objective text is {len(text)} characters long; at most {_MAX_TEXT} are accepted")
    if not text.strip():
        raise ParseError("empty objective text; try for example: channel('features.14', 10)")
    text = text.strip().replace("\r\n", "\n").replace("\r", "\n")  # what Python's tokenizer does
    signs = None
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as err:
        raise _fail(text, (err.offset or 1) - 1, f"invalid syntax: {err.msg}", err.lineno or 1) from None
    except RecursionError:
        # A long flat sum is a deep left-nested BinOp that CPython cannot turn into ast objects.
        split = _split_long_sum(text)
        if split is None:
            raise ParseError("objective text is nested too deeply") from None
        tree, signs = split
    except (ValueError, MemoryError, OverflowError) as err:
        raise ParseError(f"cannot parse objective text: {type(err).__name__}: {err}") from None
    try:
        reader = _Reader(text)
        if signs is None:
            value = reader.read(tree.body)
        else:
            value = reader.combine(tree.body, list(zip(tree.body.elts, signs)))  # type: ignore[attr-defined]
    except RecursionError:
        raise ParseError("objective text is nested too deeply") from None
    if isinstance(value, Expr):
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            return as_expr(value)
        except LucentError as err:
            raise ParseError(f"{err}\n  {text}") from None
    raise ParseError(f"the text is a {type(value).__name__}, not an objective\n  {text}")


class _Reader:
    def __init__(self, text: str):
        self.text = text

    def fail(self, node: ast.AST, message: str) -> ParseError:
        line = getattr(node, "lineno", 1)
        # ast columns count UTF-8 bytes; the caret is placed in characters.
        col = len(_source_line(self.text, line).encode()[: getattr(node, "col_offset", 0)].decode(errors="ignore"))
        return _fail(self.text, col, message, line)

    def read(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            if isinstance(node.value, (int, float, str, bool)) or node.value is None:
                return node.value
            raise self.fail(node, f"literal {node.value!r} is not allowed")
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
            return self.read_sum(node)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.Div)):
            left, right = self.read(node.left), self.read(node.right)
            return self.apply(node, left, right)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = self.read(node.operand)
            if isinstance(value, bool) or not isinstance(value, (numbers.Real, Expr)):
                raise self.fail(node, f"unary {'-' if isinstance(node.op, ast.USub) else '+'} needs a number or an objective")
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, (ast.Tuple, ast.List)):
            return tuple(self.read(e) for e in node.elts)
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.Name):
            raise self.fail(node, f"name {node.id!r} is not allowed here; call an objective such as channel(...)")
        kind = type(node).__name__
        raise self.fail(node, f"{kind} is not allowed in objective text (only objective calls, literals and + - * /)")

    def read_sum(self, node: ast.BinOp) -> Any:
        # Left-nested chains of + and - are read iteratively, so long sums need no deep recursion.
        chain: list[tuple[ast.AST, bool]] = []
        cur: ast.AST = node
        while isinstance(cur, ast.BinOp) and isinstance(cur.op, (ast.Add, ast.Sub)):
            chain.append((cur.right, isinstance(cur.op, ast.Sub)))
            cur = cur.left
        return self.combine(node, [(cur, False)] + chain[::-1])

    def combine(self, node: ast.AST, parts: list[tuple[ast.AST, bool]]) -> Any:
        """The sum of `parts` (node, negated?), in order."""
        items = []
        for sub, negative in parts:
            value = self.read(sub)
            if isinstance(value, bool) or not isinstance(value, (numbers.Real, Expr)):
                raise self.fail(sub, f"cannot add or subtract a {type(value).__name__}")
            items.append(-value if negative else value)
        if all(not isinstance(v, Expr) for v in items):
            total = 0.0 if any(isinstance(v, float) for v in items) else 0
            try:
                for v in items:
                    total = total + v
            except OverflowError as err:
                raise self.fail(node, f"number out of range: {err}") from None
            return total
        try:
            return sum_of(items)
        except LucentError as err:
            raise self.fail(node, str(err)) from None

    def apply(self, node: ast.BinOp, left: Any, right: Any) -> Any:
        for value, side in ((left, node.left), (right, node.right)):
            if isinstance(value, bool) or not isinstance(value, (numbers.Real, Expr)):
                raise self.fail(side, f"cannot multiply or divide a {type(value).__name__}")
        try:
            if isinstance(node.op, ast.Mult):
                return left * right
            if isinstance(right, Expr):
                raise self.fail(node.right, "can only divide by a number, not by an objective")
            if not isinstance(left, Expr) and right == 0:
                raise self.fail(node.right, "division by zero")
            return left / right
        except LucentError as err:
            if isinstance(err, ParseError):
                raise
            raise self.fail(node, str(err)) from None
        except OverflowError as err:  # int * float, int / int past the float range
            raise self.fail(node, f"number out of range: {err}") from None

    def call(self, node: ast.Call) -> Any:
        if not isinstance(node.func, ast.Name):
            raise self.fail(node.func, "only objective names can be called (no attributes or expressions)")
        fname = node.func.id
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            raise self.fail(node, "* and ** arguments are not allowed")
        args = [self.read(a) for a in node.args]
        kwargs = {k.arg: self.read(k.value) for k in node.keywords}
        if fname == "range":
            if kwargs or not 1 <= len(args) <= 3 or any(isinstance(a, bool) or not isinstance(a, int) for a in args):
                raise self.fail(node, "range(...) takes 1 to 3 integers")
            if len(args) == 3 and args[2] == 0:
                raise self.fail(node, "range(...) step must not be zero")
            return range(*args)
        if fname == "tensor":
            if len(args) != 1 or set(kwargs) - {"shape"}:
                raise self.fail(node, "tensor(...) takes a list of numbers and an optional shape=(...)")
            try:
                shape = kwargs.get("shape")
                return Array.of(_numbers(args[0]), shape=tuple(shape) if shape is not None else None)
            except (LucentError, TypeError, OverflowError) as err:
                raise self.fail(node, f"bad tensor(...): {err}") from None
        factory = VOCABULARY.get(fname)
        if factory is None:
            known = ", ".join(sorted(VOCABULARY))
            raise self.fail(node.func, f"{fname!r} is not an objective name; known names: {known}")
        try:
            return factory(*args, **kwargs)
        except Exception as err:  # factories only validate: any failure is a bad argument
            raise self.fail(node, f"{fname}(...): {err}") from None


def _numbers(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_numbers(v) for v in value]
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"expected numbers, got {value!r}")
    return value


def _split_long_sum(text: str) -> tuple[ast.Expression, list[bool]] | None:
    """`a + b - c ...` read as the tuple `a, b, c ...` plus the signs, or None if `text` is not a flat sum.

    Every top-level binary `+`/`-` becomes a `,` of the same width, so the column of each node
    (and so each error caret) stays where it is in `text`.
    """
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError, ValueError):
        return None
    line_starts = [0]
    for line in io.StringIO(text).readlines():
        line_starts.append(line_starts[-1] + len(line))
    operand_types = {tokenize.NAME, tokenize.NUMBER, tokenize.STRING}
    skip = {tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING}
    chars, signs = list(text), [False]
    depth, prev = 0, None
    for tok in tokens:
        if tok.type in skip:
            continue
        if tok.type == tokenize.OP:
            if tok.string in "([{":
                depth += 1
            elif tok.string in ")]}":
                depth -= 1
            elif depth == 0 and tok.string == ",":
                return None  # a tuple, not a sum
            elif depth == 0 and tok.string in "+-" and prev is not None and (
                (prev.type == tokenize.OP and prev.string in ")]}")
                or (prev.type in operand_types and not (keyword.iskeyword(prev.string) and prev.string not in ("True", "False", "None")))
            ):
                at = line_starts[tok.start[0] - 1] + tok.start[1]
                if chars[at] != tok.string:
                    return None
                chars[at] = ","
                signs.append(tok.string == "-")
        prev = tok
    if len(signs) < 2:
        return None
    try:
        tree = ast.parse("".join(chars), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return None
    if not isinstance(tree.body, ast.Tuple) or len(tree.body.elts) != len(signs):
        return None
    return tree, signs
