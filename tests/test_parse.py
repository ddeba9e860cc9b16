"""The parser and the JSON reader are safe: any input gives an expression or a ParseError, nothing runs."""
from __future__ import annotations

import builtins
import contextlib
import json
import os
import re
import subprocess

import pytest
import strategies as S
from hypothesis import given, settings, strategies as st

import lucent_dsl as ld
from lucent_dsl.dsl.expr import VOCABULARY, Array, Expr
from lucent_dsl.dsl.printing import to_text
from lucent_dsl.dsl.serialize import from_json, to_json
from lucent_dsl.errors import ParseError


def parse_or_error(text: object) -> Expr | ParseError:
    try:
        value = ld.parse(text)  # type: ignore[arg-type]
    except ParseError as err:
        return err
    assert isinstance(value, Expr)
    return value


def caret_column(err: ParseError) -> tuple[str, int]:
    """(quoted source line, caret column in it) of a ParseError message."""
    *_, src, caret = str(err).split("\n")
    assert src.startswith("  ") and caret.startswith("  ") and caret.rstrip().endswith("^")
    assert set(caret[2:].rstrip()) <= {" ", "^"} and caret.count("^") == 1
    return src[2:], caret.index("^") - 2


# --- arbitrary input --------------------------------------------------------------------------------

TOKENS = [
    "channel(", "neuron(", "direction(", "class_logit(", "l2(", "tst_energy(", "range(", "tensor(", "'c'", '"tok"',
    "(", ")", "[", "]", ",", "+", "-", "*", "/", "**", "%", ".", "=", ":", "1", "0", "-1", "2.5", "1e308", "1e-320",
    "9" * 400, "True", "None", "x=", "y=", "batch=", "model=", "shape=", "token=", "cossim_pow=", "layer=", "target=",
    " ", "\n", "lambda", "for", "if", "else", "__import__", "os", "'a' 'b'", "f'{1}'", ":=", "...", "#", "\\", "é",
    "1j", "b'x'", "*[1]", "**{}",
]


@given(st.text())
def test_any_text_gives_an_expression_or_a_parse_error(text):
    parse_or_error(text)


@settings(max_examples=300)
@given(st.lists(st.sampled_from(TOKENS), max_size=25).map("".join))
def test_dsl_like_token_soup_gives_an_expression_or_a_parse_error(text):
    parse_or_error(text)


@given(S.exprs(max_leaves=4), st.data())
def test_mutated_objective_text_gives_an_expression_or_a_parse_error(e, data):
    text = to_text(e)
    i = data.draw(st.integers(0, len(text)))
    j = data.draw(st.integers(i, min(len(text), i + 3)))
    piece = data.draw(st.sampled_from(TOKENS) | st.text(max_size=2))
    parse_or_error(text[:i] + piece + text[j:])


@pytest.mark.parametrize("value", [None, 3, b"channel('c', 1)", ["channel('c', 1)"], ld.channel("c", 1)])
def test_non_text_raises_parse_error(value):
    with pytest.raises(ParseError):
        ld.parse(value)


@pytest.mark.parametrize(
    "text",
    ["", "   \n\t", "(" * 10_000 + "1" + ")" * 10_000, "-" * 100_000 + "1", "x." * 30_000 + "y",
     "channel('c', 1)" + " * 2" * 20_000, "1" * 5000, "channel('c', 1) + " + "1" * 5000, "'a' * 3",
     "channel('c', 1) + 1e400", "1e308 * 10 * channel('c', 1)", "10" * 200 + " / 3", "10" * 200 + " * 1.5",
     "tensor([" + "9" * 400 + "])", "channel('c', 1, batch=range(0, 5, 0))", "channel('c', 1) / 0",
     "channel('c', 1) / channel('c', 2)", "2 / channel('c', 1)", "channel('c', 1) * 'a'", "True * channel('c', 1)",
     "channel('c', 1) + None", "-'a'", "range(3)", "(1, 2)", "tensor([1.0])", "channel", "channel('c', 1, 2, 3)",
     "channel('c', True)", "channel('c', 1, batch=range(3, 1))", "channel(*['c', 1])", "channel(**{})",
     "tensor([[1.0], [1.0, 2.0]])", "tensor([1.0], shape=(2,))", "tensor([], shape=(" + str(2**70) + ", 0))",
     "tensor([1.0], shape=(True,))", "tensor('ab')", "nan * channel('c', 1)", "channel('c', 1) * float('inf')",
     "tst_energy('c', power=1e400)", "tst_energy('c', weights=(1.0, -1e999))", "tst_energy('c', ref=tensor([1e39]))"],
)
def test_malformed_text_raises_parse_error(text):
    with pytest.raises(ParseError):
        ld.parse(text)


def test_parse_error_is_a_lucent_error_and_a_value_error():
    with pytest.raises(ld.LucentError):
        ld.parse("nope")
    with pytest.raises(ValueError):
        ld.parse("nope")


# --- what the parser accepts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("channel('c', 1)", ld.channel("c", 1)),
        ("+channel('c', 1)", ld.channel("c", 1)),
        ("2 * 3 * channel('c', 1)", 6 * ld.channel("c", 1)),
        ("channel('c', 1) / 4 - 1", 0.25 * ld.channel("c", 1) - 1),
        ("(channel('c', 1) + 1) * 2", (ld.channel("c", 1) + 1) * 2),
        ("1 + 2", ld.sum_of([3.0])),
        ("-3", ld.sum_of([-3.0])),
        ("channel('c', 1, batch=range(2))", ld.channel("c", 1, batch=range(2))),
        ("direction('c', [1, 2.5])", ld.direction("c", [1.0, 2.5])),
        ("direction('c', (1, -2))", ld.direction("c", [1.0, -2.0])),
        ("l2(target=tensor([1, 2, 3, 4], shape=(2, 2)))", ld.l2(target=Array.of([[1.0, 2.0], [3.0, 4.0]]))),
        ("neuron('c', 1, x=None, token=None)", ld.neuron("c", 1)),
        ("tst_energy('c', 'd', flag=True, mode='square')", S.tst_energy("c", "d", flag=True, mode="square")),
        ("(channel('c',\n 1)\n - channel('c', 2))", ld.channel("c", 1) - ld.channel("c", 2)),
        ("  channel('c', 1)\r\n", ld.channel("c", 1)),
    ],
)
def test_accepted_forms(text, expected):
    assert ld.parse(text) == expected


# --- nothing runs: code-injection attempts --------------------------------------------------------

INJECTIONS = [
    "__import__('os').system('touch {marker}')",
    "__import__('os')",
    "channel('c', 1) + __import__('os').system('touch {marker}')",
    "channel('c', __import__('os').system('touch {marker}'))",
    "open('{marker}', 'w')",
    "channel(open('{marker}', 'w'), 1)",
    "channel('c', 1).__class__",
    "channel('c', 1).__class__.__init__.__globals__['os'].system('touch {marker}')",
    "().__class__.__bases__[0].__subclasses__()",
    "(lambda: __import__('os').system('touch {marker}'))()",
    "channel('c', (lambda: 1)())",
    "[c for c in ().__class__.__base__.__subclasses__()]",
    "{{k: 1 for k in 'ab'}}",
    "{{1, 2}}",
    "{{'a': 1}}",
    "(x for x in [1])",
    "channel('c', 1)[0]",
    "'touch {marker}'[0]",
    "channel('c', 2 ** 10)",
    "2 ** 10 ** 10 ** 10",
    "f'{{__import__(\"os\").system(\"touch {marker}\")}}'",
    "channel(f'{{1}}', 1)",
    "(y := channel('c', 1))",
    "channel('c', (n := 1))",
    "eval('1')",
    "exec('import os')",
    "getattr(channel, '__globals__')",
    "globals()",
    "breakpoint()",
    "channel('c', 1) if True else 0",
    "channel('c', 1) and 1",
    "not channel('c', 1)",
    "channel('c', 1) < 2",
    "channel('c', 1) @ channel('c', 2)",
    "channel('c', 1) // 2",
    "channel('c', 1) % 2",
    "~channel('c', 1)",
    "...",
    "await channel('c', 1)",
    "x",
    "channel(c, 1)",
]


@contextlib.contextmanager
def sentinels(calls: list[str]):
    """Record (and block) anything that would run code, import a module or touch the system."""
    real_import, real_compile = builtins.__import__, builtins.compile
    allowed = {"torch", "numpy", "math", "ast", "io", "tokenize", "keyword", "difflib", "numbers", "operator"}

    def guarded_import(name, *args, **kwargs):
        if name.split(".")[0] not in allowed and name.split(".")[0] not in {"lucent_dsl", "hypothesis"}:
            calls.append(f"import {name}")
        return real_import(name, *args, **kwargs)

    def guarded_compile(source, filename, mode, flags=0, *args, **kwargs):
        import ast

        if not flags & ast.PyCF_ONLY_AST:  # ast.parse only builds a tree; anything else compiles code
            calls.append(f"compile {mode}")
        return real_compile(source, filename, mode, flags, *args, **kwargs)

    def blocked(what):
        def run(*args, **kwargs):
            calls.append(what)
            raise AssertionError(f"{what} was called")
        return run

    saved = [(builtins, "__import__", guarded_import), (builtins, "compile", guarded_compile),
             (builtins, "eval", blocked("eval")), (builtins, "exec", blocked("exec")),
             (builtins, "open", blocked("open")), (os, "system", blocked("os.system")),
             (subprocess, "Popen", blocked("subprocess.Popen"))]
    originals = [(obj, name, getattr(obj, name)) for obj, name, _ in saved]
    try:
        for obj, name, value in saved:
            setattr(obj, name, value)
        yield
    finally:
        for obj, name, value in originals:
            setattr(obj, name, value)


@pytest.mark.parametrize("template", INJECTIONS)
def test_code_injection_raises_parse_error_and_runs_nothing(template, tmp_path):
    marker = tmp_path / "pwned"
    text = template.format(marker=marker)
    calls: list[str] = []
    with pytest.raises(ParseError) as info:
        with sentinels(calls):
            ld.parse(text)
    assert calls == []
    assert not marker.exists()
    caret_column(info.value)  # every rejection points somewhere


def test_sentinels_catch_what_they_guard(tmp_path):
    calls: list[str] = []
    with sentinels(calls):
        with pytest.raises(AssertionError):
            os.system("true")
        with pytest.raises(AssertionError):
            eval("1")  # noqa: S307 - checks the sentinel itself
    assert calls == ["os.system", "eval"]


# --- error messages: the text, and a caret under the offending column -------------------------------

BAD_PIECES = [  # (text, column of the offending node inside it)
    ("foo", 0), ("x.y", 0), ("a[0]", 0), ("(lambda: 1)", 1), ("[i for i in ()]", 0), ("(2 ** 3)", 3),
    ("f'{1}'", 0), ("(y := 1)", 1), ("{1: 2}", 0), ("(a if b else c)", 1), ("nope(1)", 0), ("1j", 0),
    ("channel('c', -1)", 0), ("range(1.5)", 0), ("tensor([1], shape=(2,))", 0), ("(1, 'a')", 0),
    ("b'x'", 0), ("channel.x(1)", 0), ("~channel('c', 1)", 0),
]
prefix_names = st.text(st.characters(codec="utf-8", exclude_characters="\n\r"), min_size=1, max_size=5)


@given(prefix_names, st.sampled_from(BAD_PIECES), st.sampled_from([" + ", " - ", " * ", " + 2 * "]))
def test_caret_points_at_the_offending_node_in_characters(name, bad, op):
    piece, offset = bad
    prefix = repr(ld.channel(name, 1)) + op
    text = prefix + piece
    with pytest.raises(ParseError) as info:
        ld.parse(text)
    src, col = caret_column(info.value)
    assert src == text
    assert col == len(prefix) + offset, str(info.value)


@pytest.mark.parametrize(
    ("text", "line", "col"),
    [
        ("channel('é', 1) + )", "channel('é', 1) + )", 18),
        ("channel('日本', 1) +", "channel('日本', 1) +", None),  # CPython gives no column for a dangling +
        ("channel('c' 1)", "channel('c' 1)", 8),
        ("(channel('c', 1) +\n  foo)", "  foo)", 2),
        ("(channel('ü', 1)\n + channel('ü', 2)\n + bar.baz)", " + bar.baz)", 3),
        ("(channel('c', 1)\r\n + foo)", " + foo)", 3),
        ("(channel('c', 1)\r + foo)", " + foo)", 3),
        ("(channel('\x0c', 1) +\n foo)", " foo)", 1),
        ("  channel('c', 1) + foo  ", "channel('c', 1) + foo", 18),
    ],
)
def test_caret_lines_and_columns(text, line, col):
    with pytest.raises(ParseError) as info:
        ld.parse(text)
    src, at = caret_column(info.value)
    assert src == line
    if col is not None:
        assert at == col


def test_unknown_names_list_the_vocabulary():
    with pytest.raises(ParseError, match="known names: .*channel.*neuron"):
        ld.parse("chanel('c', 1)")


# --- JSON -------------------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
json_values = st.recursive(
    json_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4), max_leaves=20
)
KEYS = ["term", "args", "kwargs", "const", "scale", "of", "sum", "product", "tuple", "range", "tensor", "shape", "expr"]
TERM_NAMES = sorted(VOCABULARY) + ["nope", "__import__"]


def structured(children):
    """JSON that looks like objective nodes, so the fuzz gets past the first checks."""
    return st.one_of(
        st.dictionaries(st.sampled_from(KEYS), children, max_size=4),
        st.fixed_dictionaries({"term": st.sampled_from(TERM_NAMES), "args": st.lists(children, max_size=4),
                               "kwargs": st.dictionaries(st.sampled_from(["batch", "x", "model", "layer", "cossim_pow",
                                                                          "target", "weights", "ref", "power"]),
                                                         children, max_size=3)}),
        st.fixed_dictionaries({"scale": json_scalars, "of": children}),
        st.fixed_dictionaries({"sum": st.lists(children, max_size=3)}),
        st.fixed_dictionaries({"product": st.lists(children, min_size=2, max_size=2)}),
        st.fixed_dictionaries({"tuple": st.lists(children, max_size=3)}),
        st.fixed_dictionaries({"range": st.lists(st.integers(-3, 10**20) | json_scalars, min_size=3, max_size=3)}),
        st.fixed_dictionaries({"tensor": st.sampled_from(["", "AACAPw==", "AACAPwAAAEA=", "!!", "AAA"]),
                               "shape": st.lists(st.integers(-2, 2**70) | json_scalars, max_size=3)}),
        st.fixed_dictionaries({"const": json_scalars}),
        st.fixed_dictionaries({"expr": children}),
    )


def from_json_or_error(text: str | bytes) -> None:
    try:
        value = from_json(text)
    except ParseError:
        return
    assert isinstance(value, Expr)
    assert from_json(to_json(value)) == value  # whatever it accepts, it can write back


@given(json_values)
def test_random_json_gives_an_expression_or_a_parse_error(value):
    from_json_or_error(json.dumps(value))


@settings(max_examples=300)
@given(st.recursive(json_scalars | st.sampled_from(["c", "@output", "@image"]), structured, max_leaves=12))
def test_objective_shaped_json_gives_an_expression_or_a_parse_error(value):
    from_json_or_error(json.dumps(value))


@given(st.binary() | st.text())
def test_json_garbage_gives_a_parse_error(raw):
    from_json_or_error(raw)


@given(S.exprs(max_leaves=4), st.data())
def test_mutated_json_gives_an_expression_or_a_parse_error(e, data):
    text = to_json(e)
    i = data.draw(st.integers(0, len(text)))
    j = data.draw(st.integers(i, min(len(text), i + 4)))
    from_json_or_error(text[:i] + data.draw(st.sampled_from(['"', "{", "}", "[", "]", ",", "1e999", "-", "null", ""])) + text[j:])


@pytest.mark.parametrize(
    "text",
    ["NaN", '{"const": NaN}', '{"const": Infinity}', '{"scale": 1e308, "of": {"scale": 10, "of": {"term": "channel", '
     '"args": ["c", 1], "kwargs": {}}}}', '{"const": true}', '[]', '{"term": "channel", "args": ["c", 1]}',
     '{"term": "channel", "args": ["c", [1]], "kwargs": {}}', '{"term": "nope", "args": [], "kwargs": {}}',
     '{"range": [0, 1, 0]}', '{"sum": [{"const": 1e308}, {"const": 1e308}]}', "{" * 100_000 + "}" * 100_000,
     '{"of": ' * 5000 + '{"const": 1}' + "}" * 5000,
     '{"term": "tst_energy", "args": ["c"], "kwargs": {"power": NaN}}',
     '{"term": "tst_energy", "args": ["c"], "kwargs": {"": 1}}',
     '{"term": "tst_energy", "args": ["c"], "kwargs": {"if": 1}}'],
)
def test_malformed_json_raises_parse_error(text):
    with pytest.raises(ParseError):
        from_json(text)


# --- edge cases of issue 12: Python's rules, nesting limits, long sums anywhere --------------------------


@pytest.mark.parametrize(
    "text",
    ["channel('0', 0, batch=0, batch=1)", "channel('0', 0, batch=0, model='m', batch=1)",
     "masked(channel('c', 1, batch=0, batch=0), (0, 0, 1, 1))", "tst_energy('c', power=1.0, mode='abs', power=2.0)"],
)
def test_duplicate_keywords_are_refused_like_python_does(text):
    with pytest.raises(SyntaxError, match="keyword argument repeated"):
        compile(text, "<objective>", "eval")  # Python itself rejects the text
    with pytest.raises(ParseError, match="keyword argument repeated") as info:
        ld.parse(text)
    src, col = caret_column(info.value)
    repeated = str(info.value).splitlines()[0].rsplit(" ", 1)[-1]
    assert src == text and text[col:].startswith(repeated + "=") and text.index(repeated + "=") < col


@given(S.exprs(max_leaves=3))
def test_repeating_any_keyword_is_refused(e):
    text = to_text(e)
    for m in re.finditer(r"([a-z_]+)=", text):  # each keyword of the text, written twice
        twice = text[: m.start()] + m.group() + "0, " + text[m.start():]
        with pytest.raises(ParseError, match=f"keyword argument repeated: {m.group(1)}"):
            ld.parse(twice)


@pytest.mark.parametrize(
    ("text", "name"),
    [("channel(features.14, 10)", "features.14"), ("neuron(layer4.0.conv1, 3, x=1)", "layer4.0.conv1"),
     ("channel('c', 1) + channel(blocks.3, 2)", "blocks.3"), ("channel(features.denseblock1, 1)", "features.denseblock1"),
     ("channel(conv, 1)", "conv")],
)
def test_unquoted_layer_names_are_explained(text, name):
    with pytest.raises(ParseError, match="strings in quotes") as info:
        ld.parse(text)
    assert "forgot a comma" not in str(info.value)
    assert repr(name) in str(info.value)
    src, col = caret_column(info.value)
    assert text[col:].startswith(name)


@given(st.sampled_from(["", " ", "  ", "\n"]), st.sampled_from(["", " ", "\t"]), st.sampled_from(["2", "channel('c', 2)"]))
def test_power_is_refused_at_the_operator(before, after, right):
    text = f"(channel('c', 1){before}**{after}{right})"
    with pytest.raises(ParseError, match=r"'\*\*' \(a power\) is not allowed") as info:
        ld.parse(text)
    *_, src, caret = str(info.value).split("\n")
    line = text.split("\n")[-1] if "\n" in before else text
    assert src[2:] == line and src[2:][caret.index("^") - 2:].startswith("**")


@pytest.mark.parametrize("wrap", [
    lambda s: 0.5 * s, lambda s: -s, lambda s: ld.channel("c", 0) - s, lambda s: s * (2 * s),
    lambda s: ld.masked(s, (0.0, 0.0, 0.5, 1.0)), lambda s: ld.channel("c", 0) * (1 - 0.25 * s),
])
def test_long_sums_parse_back_anywhere(wrap):
    e = wrap(ld.sum_of(ld.channel("c", i % 7, batch=i % 3) for i in range(5000)))
    assert ld.parse(repr(e)) == e
    assert from_json(to_json(e)) == e


def deep(kind: str, levels: int) -> Expr:
    """An objective nested `levels` times by one kind of node."""
    a, b = ld.channel("c", 1), ld.neuron("d", 2)
    step = {
        "scale_of_sum": lambda e: 2.0 * (e + a),  # 2.0 * (... + a): a scale and a flat sum per level
        "negated_sum": lambda e: b - (e + a),  # b - (...): a scale by -1 inside a sum
        "right_products": lambda e: a * e,  # a * (a * (...)): parentheses on the right
        "left_products": lambda e: e * b,  # ((...) * b) * b: no parentheses at all
        "masks": lambda e: ld.masked(e, (0.0, 0.0, 1.0, 1.0)),
        "mixed": lambda e: ld.masked(0.5 * (e - b), (0.0, 0.0, 1.0, 0.5)) * a,
    }[kind]
    e: Expr = a
    for _ in range(levels):
        e = step(e)
    return e


KINDS_OF_NESTING = ["scale_of_sum", "negated_sum", "right_products", "left_products", "masks", "mixed"]


@pytest.mark.parametrize("kind", KINDS_OF_NESTING)
def test_the_deepest_objectives_round_trip_and_deeper_ones_are_refused_when_built(kind):
    from lucent_dsl.dsl.expr import MAX_DEPTH, depth

    levels = 0
    e = deep(kind, 0)
    while True:  # grow until the API refuses
        try:
            bigger = deep(kind, levels + 1)
        except ld.InvalidArgumentError as err:
            assert f"at most {MAX_DEPTH} levels" in str(err)
            break
        e, levels = bigger, levels + 1
        assert levels <= MAX_DEPTH
    assert depth(e) <= MAX_DEPTH < depth(e) + (3 if kind == "mixed" else 2)  # refused at the first level too deep
    assert ld.parse(repr(e)) == e and from_json(to_json(e)) == e
    table = {None: {"c": (3, 4, 4), "d": (4, 4, 4)}}
    assert ld.evaluate(e, S.full_acts(table, 1, crops=1), 1).shape == (1,)  # and it evaluates without recursion trouble


@pytest.mark.parametrize("levels", [70, 150, 1000])
def test_deeply_nested_masks_are_refused_as_text_and_json_not_with_a_recursion_error(levels):
    inner = '{"term": "channel", "args": ["c", 1], "kwargs": {}}'
    text = "channel('c', 1)"
    for _ in range(levels):
        inner = f'{{"term": "masked", "args": [{{"expr": {inner}}}, {{"tuple": [0, 0, 1, 1]}}], "kwargs": {{}}}}'
        text = f"masked({text}, (0, 0, 1, 1))"
    with pytest.raises(ParseError, match="nest"):
        from_json(inner)
    with pytest.raises(ParseError, match="nest"):
        ld.parse(text)


def test_json_objects_with_repeated_keys_are_refused():
    good = '{"term": "channel", "args": ["c", 1], "kwargs": {"batch": 0}}'
    assert from_json(good) == ld.channel("c", 1, batch=0)
    for text in ['{"term": "channel", "args": ["c", 1], "kwargs": {"batch": 0, "batch": 1}}',
                 '{"term": "channel", "term": "neuron", "args": ["c", 1], "kwargs": {}}',
                 '{"scale": 2, "scale": 3, "of": {"const": 1}}']:
        with pytest.raises(ParseError, match="repeats the key"):
            from_json(text)


@settings(max_examples=60)
@given(st.lists(st.sampled_from(KINDS_OF_NESTING), min_size=1, max_size=80))
def test_any_nesting_round_trips_or_is_refused_when_built(kinds):
    """The law: parse(repr(e)) == e for every expression the API builds, or the API refuses to build it."""
    a = ld.channel("c", 1)
    steps = {
        "scale_of_sum": lambda e: 2.0 * (e + a), "negated_sum": lambda e: a - (e + a),
        "right_products": lambda e: a * e, "left_products": lambda e: e * a,
        "masks": lambda e: ld.masked(e, (0.0, 0.0, 1.0, 1.0)), "mixed": lambda e: ld.masked(0.5 * (e - a), (0, 0, 1, 1)),
    }
    e: Expr = a
    try:
        for kind in kinds:
            e = steps[kind](e)
    except ld.InvalidArgumentError:
        return
    assert ld.parse(repr(e)) == e
    assert from_json(to_json(e)) == e


def test_a_sum_of_100k_terms_parses_in_bounded_time():
    import time

    e = ld.sum_of(ld.channel("c", i % 6) for i in range(100_000))
    start = time.perf_counter()
    assert ld.parse(repr(e)) == e
    assert time.perf_counter() - start < 60  # linear: ~5 s on a loaded 2-core machine


def python_reading(text: str) -> object:
    """What Python computes for `text` with only the vocabulary, `range` and `tensor` in scope."""
    def tensor(data, shape=None):
        return Array.of(data, shape=tuple(shape) if shape is not None else None)

    scope = {"__builtins__": {}, "range": range, "tensor": tensor, **VOCABULARY}
    return eval(text, scope)  # noqa: S307 - only text that parse accepted, whose names are the vocabulary


def same_reading(text: str) -> None:
    try:
        mine = ld.parse(text)
    except ParseError:
        return
    theirs = python_reading(text)
    assert mine == (theirs if isinstance(theirs, Expr) else ld.sum_of([theirs])), text


NUMBER_SOUP = ["1", "0", "2.5", "1e308", "9007199254740993", "0x1F", "1_000", ".5", "1.", "0e0", "00", "-", "+", "*",
               "/", "(", ")", " ", "channel('c', 1)", "tst_energy('c', power=2)", ",", "0.1", "3"]


@settings(max_examples=300)
@given(st.lists(st.sampled_from(NUMBER_SOUP), min_size=1, max_size=12).map("".join))
def test_what_parse_accepts_python_reads_the_same(text):
    same_reading(text)


@given(S.exprs(max_leaves=4), st.data())
def test_mutated_text_that_parses_reads_as_python_reads_it(e, data):
    text = to_text(e)
    i = data.draw(st.integers(0, len(text)))
    j = data.draw(st.integers(i, min(len(text), i + 3)))
    same_reading(text[:i] + data.draw(st.sampled_from(NUMBER_SOUP)) + text[j:])
