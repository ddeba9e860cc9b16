"""The tokens of objective text, and `ParseError`s that quote a line with a caret under a column.

One regular expression reads Python's tokens (the subset objective text can use, plus every
operator so that a rejection can name it); columns are counted in characters.

Example:
    >>> kinds, texts, starts = tokens("channel('c', 1) * 2")
    >>> texts, starts[-1]
    (['channel', '(', "'c'", ',', '1', ')', '*', '2', ''], 19)
    >>> print(fail_at("channel('c' 1)", 12, "expected ','"))
    expected ','
      channel('c' 1)
                  ^
"""
from __future__ import annotations

import re

from ..errors import ParseError

__all__ = ["TOKEN", "Rejected", "Tokens", "fail", "fail_at", "source_line", "tokens"]

_STRING = "|".join((
    r"'''[^'\\]*(?:(?:\\.|'(?!''))[^'\\]*)*'''", r'"""[^"\\]*(?:(?:\\.|"(?!""))[^"\\]*)*"""',
    r"'[^'\\\n]*(?:\\.[^'\\\n]*)*'", r'"[^"\\\n]*(?:\\.[^"\\\n]*)*"',
))
_DIGITS, _EXPONENT = r"[0-9](?:_?[0-9])*", r"(?:[eE][-+]?[0-9](?:_?[0-9])*)"
_NUMBER = (rf"0[xXoObB](?:_?[0-9a-fA-F])+|(?:{_DIGITS}\.(?:{_DIGITS})?|\.{_DIGITS}){_EXPONENT}?[jJ]?"
           rf"|{_DIGITS}{_EXPONENT}?[jJ]?")
_OP = r"\*\*=?|//=?|>>=?|<<=?|\.\.\.|->|:=|[-+*/%@&|^=<>!]=|[-+*/%@&|^~<>()\[\]{},:;.=]"
TOKEN = re.compile(
    rf"(?P<space>[ \t\f]+|\\\n)|(?P<comment>#[^\n]*)|(?P<newline>\n)|(?P<string>[rRuUbBfF]{{0,2}}(?:{_STRING}))"
    rf"|(?P<number>{_NUMBER})|(?P<name>[^\W\d]\w*)|(?P<op>{_OP})",
    re.DOTALL,
)
Tokens = tuple[list[str], list[str], list[int]]  # kinds, texts, offsets in characters


class Rejected(Exception):
    """The reading of objective text stopped at character `pos`, for `message`."""

    def __init__(self, pos: int, message: str):
        super().__init__(message)
        self.pos, self.message = pos, message


def tokens(text: str) -> Tokens:
    """The tokens of `text` as (kinds, texts, offsets), without spaces, comments and newlines inside brackets,
    ending with an ("end", "", len(text)) token."""
    kinds: list[str] = []
    texts: list[str] = []
    starts: list[int] = []
    pos = depth = 0
    for m in TOKEN.finditer(text):
        start = m.start()
        if start != pos:  # finditer skips what no token matches
            break
        kind, s = m.lastgroup, m.group()
        pos = m.end()
        if kind == "space" or kind == "comment":
            continue
        if kind == "op" and len(s) == 1:
            depth += s in "([{"
            depth -= depth > 0 and s in ")]}"
        elif kind == "newline" and depth:
            continue
        kinds.append(kind)  # type: ignore[arg-type]
        texts.append(s)
        starts.append(start)
    if pos != len(text):
        raise Rejected(pos, f"unexpected character {text[pos]!r}")
    kinds.append("end")
    texts.append("")
    starts.append(pos)
    return kinds, texts, starts


def source_line(text: str, line: int) -> str:
    """Line `line` (1-based) of `text`, lines split at \\n only, as Python numbers them."""
    # str.splitlines would also split at \f, \x1c, \u2028, ... and quote the wrong line.
    lines = text.split("\n")
    return lines[min(max(line, 1), len(lines)) - 1]


def fail(text: str, col: int | None, message: str, line: int = 1) -> ParseError:
    """A ParseError quoting line `line` of `text` with a caret under character column `col`."""
    src = source_line(text, line)
    col = 0 if col is None else max(0, min(col, len(src)))
    return ParseError(f"{message}\n  {src}\n  {' ' * col}^")


def fail_at(text: str, pos: int, message: str) -> ParseError:
    """A ParseError with the caret under character `pos` of `text`."""
    line = text.count("\n", 0, pos) + 1
    return fail(text, pos - (text.rfind("\n", 0, pos) + 1), message, line)
