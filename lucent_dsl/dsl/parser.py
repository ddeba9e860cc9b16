"""`parse`: DSL text -> expression, through an allow-list. Nothing is ever evaluated as code.

Allowed: calls to vocabulary names (`channel(...)`, custom `@objective`s) with literal arguments
and keyword arguments, numbers, strings, `None`, `True`/`False`, tuples/lists of those, `range(...)`,
`tensor([...], shape=(...))`, `+ - * /` and unary `-`/`+`. Everything else (names, attributes,
subscripts, lambdas, comprehensions, `**`, ...) raises `ParseError` pointing at the column.

The value of the text is what Python would compute with the vocabulary in scope, so
`parse(repr(e)) == e` for every expression `e`. The reader is a small tokenizer and a
precedence parser of its own: chains of `+ - * /` are read in a loop, so a sum of 100,000 terms,
inside parentheses or not, needs no deep recursion; brackets and signs may nest `MAX_NESTING`
levels (the objectives the API builds nest at most `expr.MAX_DEPTH`). Python's own parser is
consulted only to explain a rejection: its syntax errors, then the first construct outside the
allow-list, come before the reader's own complaint.

Example:
    >>> parse("channel('layer4', 12) - 1e-3 * total_variation()")
    channel('layer4', 12) - 0.001 * total_variation()
    >>> parse("__import__('os')")
    Traceback (most recent call last):
    ...
    lucent_dsl.errors.ParseError: '__import__' is not an objective name; known names: activation_match, ...
      __import__('os')
      ^
    >>> parse("channel(features.14, 10)")
    Traceback (most recent call last):
    ...
    lucent_dsl.errors.ParseError: layer names are strings in quotes: write 'features.14', not features.14
      channel(features.14, 10)
              ^
"""
from __future__ import annotations

import ast
import functools as ft
import keyword
import numbers
import unicodedata
import warnings
from typing import Any

from ..errors import LucentError, ParseError
from .expr import VOCABULARY, Array, Expr, as_expr, sum_of
from .lexer import Rejected, Tokens, tokens
from .parse_errors import explain

MAX_TEXT = 2_000_000
MAX_NESTING = 100  # brackets and unary signs inside each other (the API's objectives print fewer than 70)


def parse(text: str) -> Expr:
    """Parse DSL text into an objective expression (never evaluates code)."""
    if not isinstance(text, str):
        raise ParseError(f"expected objective text (a str), got {type(text).__name__}")
    if len(text) > MAX_TEXT:
        raise ParseError(f"objective text is {len(text)} characters long; at most {MAX_TEXT} are accepted")
    if not text.strip():
        raise ParseError("empty objective text; try for example: channel('features.14', 10)")
    text = text.strip().replace("\r\n", "\n").replace("\r", "\n")  # what Python's tokenizer does
    try:
        value = _Reader(tokens(text)).read()
    except Rejected as err:
        raise explain(text, err) from None
    except RecursionError:  # the nesting limit keeps far below the stack; a last guard
        raise ParseError("objective text is nested too deeply") from None
    if isinstance(value, Expr):
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            return as_expr(value)
        except LucentError as err:
            raise ParseError(f"{err}\n  {text}") from None
    raise ParseError(f"the text is a {type(value).__name__}, not an objective\n  {text}")


@ft.lru_cache(maxsize=4096)
def _string_value(token: str) -> str:
    if token[0] in "'\"" and "\\" not in token and token[:3] not in ("'''", '"""'):
        return token[1:-1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an invalid escape warns in Python and reads the same here
        value = ast.literal_eval(token)  # one string literal: nothing but a literal can be read
    if not isinstance(value, str):
        raise ValueError(f"literal {value!r} is not a string")
    return value


def _string(token: str, pos: int) -> str:
    try:
        return _string_value(token)
    except (SyntaxError, ValueError) as err:
        raise Rejected(pos, f"bad string literal {token[:40]}: {err}") from None


def _number(token: str, pos: int) -> int | float:
    if token[-1] in "jJ":
        raise Rejected(pos, f"literal {token} is not allowed (complex numbers are not objective weights)")
    try:
        if token.isdigit() and (token[0] != "0" or not token.strip("0")):  # 0123 is no Python number
            return int(token)
        if token[:2].lower() not in ("0x", "0o", "0b") and ("." in token or "e" in token or "E" in token):
            return float(token)
        return int(token, 0)
    except ValueError as err:
        raise Rejected(pos, f"bad number {token[:40]}: {err}") from None


def _kind(value: Any) -> str:
    return type(value).__name__


class _Reader:
    """Reads and evaluates the token list at once; any step outside the allow-list raises `Rejected`."""

    def __init__(self, toks: Tokens):
        self.kinds, self.texts, self.starts = toks
        self.i = 0

    def at(self, s: str, ahead: int = 0) -> bool:
        """Whether the next token (or the one `ahead` after it) is operator `s` (no other token reads as one)."""
        return self.texts[self.i + ahead] == s

    def pos(self) -> int:
        return self.starts[self.i]

    def read(self) -> Any:
        value = self.expression(0)
        if self.at(","):  # a tuple at the top level (Python's reading; never an objective)
            items = [value]
            while self.at(","):
                self.i += 1
                if self.kinds[self.i] in ("newline", "end"):
                    break
                items.append(self.expression(0))
            value = tuple(items)
        while self.kinds[self.i] == "newline":
            self.i += 1
        if self.kinds[self.i] != "end":
            raise Rejected(self.pos(), f"unexpected {self.texts[self.i]!r} after the objective")
        return value

    def expression(self, depth: int) -> Any:
        """A chain `a + b - c ...` of products, read in a loop."""
        start = self.pos()
        parts: list[tuple[Any, bool, int]] = []
        negative = False
        while True:
            at = self.starts[self.i]
            parts.append((self.product(depth), negative, at))
            s = self.texts[self.i]
            if s != "+" and s != "-":
                break
            negative = s == "-"
            self.i += 1
        return parts[0][0] if len(parts) == 1 else self.combine(start, parts)

    def combine(self, start: int, parts: list[tuple[Any, bool, int]]) -> Any:
        items = []
        for value, negative, at in parts:
            if isinstance(value, bool) or not isinstance(value, (numbers.Real, Expr)):
                raise Rejected(at, f"cannot add or subtract a {_kind(value)}")
            items.append(-value if negative else value)
        # Numbers before the first objective add up as Python adds them (ints exactly, left to right); from
        # there on Python's `+` is sum_of's, which folds the constants left to right in one pass.
        lead = next((i for i, v in enumerate(items) if isinstance(v, Expr)), len(items))
        total = items[0]
        try:
            for v in items[1:lead]:
                total = total + v
        except OverflowError as err:
            raise Rejected(start, f"number out of range: {err}") from None
        if lead == len(items):
            return total
        try:
            return sum_of(items if lead == 0 else [total, *items[lead:]])
        except LucentError as err:
            raise Rejected(start, str(err)) from None

    def product(self, depth: int) -> Any:
        """A chain `a * b / c ...` of signed operands, read in a loop."""
        start = self.pos()
        value = self.signed(depth)
        while True:
            op = self.texts[self.i]
            if op != "*" and op != "/":
                return value
            self.i += 1
            at = self.pos()
            value = self.apply(op, value, self.signed(depth), start, at)

    def apply(self, op: str, left: Any, right: Any, start: int, at: int) -> Any:
        for value, where in ((left, start), (right, at)):
            if isinstance(value, bool) or not isinstance(value, (numbers.Real, Expr)):
                raise Rejected(where, f"cannot multiply or divide a {_kind(value)}")
        try:
            if op == "*":
                return left * right
            if isinstance(right, Expr):
                raise Rejected(at, "can only divide by a number, not by an objective")
            if not isinstance(left, Expr) and right == 0:
                raise Rejected(at, "division by zero")
            return left / right
        except LucentError as err:
            raise Rejected(start, str(err)) from None
        except OverflowError as err:  # int * float, int / int past the float range
            raise Rejected(start, f"number out of range: {err}") from None

    def signed(self, depth: int) -> Any:
        signs = []
        while self.texts[self.i] in ("+", "-"):
            signs.append((self.texts[self.i], self.starts[self.i]))
            self.i += 1
        if depth + len(signs) > MAX_NESTING:
            raise Rejected(self.pos(), f"objective text is nested too deeply (more than {MAX_NESTING} levels)")
        value = self.primary(depth + len(signs))
        if self.texts[self.i] == "**":
            raise Rejected(self.pos(), "'**' is not allowed")
        for sign, at in reversed(signs):
            if isinstance(value, bool) or not isinstance(value, (numbers.Real, Expr)):
                raise Rejected(at, f"unary {sign} needs a number or an objective")
            value = -value if sign == "-" else +value
        return value

    def primary(self, depth: int) -> Any:
        kind, s, at = self.kinds[self.i], self.texts[self.i], self.starts[self.i]
        self.i += 1
        if kind == "number":
            value: Any = _number(s, at)
        elif kind == "string":
            value = self.strings(s, at)
        elif kind == "name":
            value = self.name(s, at, depth)
        elif kind == "op" and s in ("(", "["):
            value = self.bracket(s, at, depth)
        else:
            raise Rejected(at, f"expected a number, a string, an objective call or '(', got {s or 'the end'!r}")
        if self.texts[self.i] in (".", "[", "("):
            raise Rejected(at, "only objective names can be called, and nothing can be indexed or have attributes")
        return value

    def strings(self, first: str, at: int) -> str:
        parts = [(first, at)]
        while self.kinds[self.i] == "string":  # 'a' 'b' is 'ab', as in Python
            parts.append((self.texts[self.i], self.starts[self.i]))
            self.i += 1
        out = []
        for token, where in parts:
            prefix = token[: len(token) - len(token.lstrip("rRuUbBfF"))].lower()
            if "b" in prefix or "f" in prefix:
                raise Rejected(where, f"{'bytes' if 'b' in prefix else 'f-string'} literals are not allowed")
            out.append(_string(token, where))
        return "".join(out)

    def name(self, s: str, at: int, depth: int) -> Any:
        constants = {"True": True, "False": False, "None": None}
        if s in constants:
            return constants[s]
        ident = s if s.isascii() else unicodedata.normalize("NFKC", s)  # Python's reading of identifiers
        if keyword.iskeyword(s) or keyword.iskeyword(ident) or not ident.isidentifier():
            raise Rejected(at, f"{s!r} is not allowed in objective text")
        if self.at("("):
            return self.call(ident, at, depth)
        raise Rejected(at, f"name {ident!r} is not allowed here; call an objective such as channel(...)")

    def bracket(self, open_: str, at: int, depth: int) -> Any:
        if depth + 1 > MAX_NESTING:
            raise Rejected(at, f"objective text is nested too deeply (more than {MAX_NESTING} levels)")
        close = ")" if open_ == "(" else "]"
        items, commas = [], 0
        while not self.at(close):
            items.append(self.expression(depth + 1))
            if self.at(","):
                self.i, commas = self.i + 1, commas + 1
            elif not self.at(close):
                raise Rejected(self.pos(), f"expected ',' or {close!r}")
        self.i += 1
        if open_ == "(" and len(items) == 1 and not commas:
            return items[0]  # parentheses around one value
        return tuple(items)  # a tuple or a list (both read as tuples)

    def call(self, fname: str, at: int, depth: int) -> Any:
        self.i += 1  # the "("
        if depth + 1 > MAX_NESTING:
            raise Rejected(at, f"objective text is nested too deeply (more than {MAX_NESTING} levels)")
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        while not self.at(")"):
            kind, s, where = self.kinds[self.i], self.texts[self.i], self.starts[self.i]
            if s in ("*", "**"):
                raise Rejected(at, "* and ** arguments are not allowed")
            if kind == "name" and self.at("=", 1) and not keyword.iskeyword(s):
                key = s if s.isascii() else unicodedata.normalize("NFKC", s)
                if key in kwargs:
                    raise Rejected(where, f"keyword argument repeated: {key}")
                self.i += 2
                kwargs[key] = self.expression(depth + 1)
            elif kwargs:
                raise Rejected(where, "positional argument follows keyword argument")
            else:
                args.append(self.expression(depth + 1))
            if self.at(","):
                self.i += 1
            elif not self.at(")"):
                raise Rejected(self.pos(), "expected ',' or ')'")
        self.i += 1
        return _call(fname, at, args, kwargs)


def _call(fname: str, at: int, args: list[Any], kwargs: dict[str, Any]) -> Any:
    if fname == "range":
        if kwargs or not 1 <= len(args) <= 3 or any(isinstance(a, bool) or not isinstance(a, int) for a in args):
            raise Rejected(at, "range(...) takes 1 to 3 integers")
        if len(args) == 3 and args[2] == 0:
            raise Rejected(at, "range(...) step must not be zero")
        return range(*args)
    if fname == "tensor":
        if len(args) != 1 or set(kwargs) - {"shape"}:
            raise Rejected(at, "tensor(...) takes a list of numbers and an optional shape=(...)")
        try:
            shape = kwargs.get("shape")
            return Array.of(_numbers(args[0]), shape=tuple(shape) if shape is not None else None)
        except (LucentError, TypeError, OverflowError) as err:
            raise Rejected(at, f"bad tensor(...): {err}") from None
    factory = VOCABULARY.get(fname)
    if factory is None:
        raise Rejected(at, f"{fname!r} is not an objective name; known names: {', '.join(sorted(VOCABULARY))}")
    try:
        return factory(*args, **kwargs)
    except Exception as err:  # factories only validate: any failure is a bad argument
        raise Rejected(at, f"{fname}(...): {err}") from None


def _numbers(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_numbers(v) for v in value]
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"expected numbers, got {value!r}")
    return value
