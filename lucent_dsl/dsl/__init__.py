"""Text <-> Expr: the objective language.

Rooms: `expr` (the frozen nodes, `walk`, `evaluate`, the `VOCABULARY` registry), `sites` (`Site`: where a
term reads, and `@input`, `@output`, `@image`), `arrays` (a constant tensor as a hashable value), `lexer`,
`parser` and `parse_errors` (DSL text in, an allow-list, never `eval`), `printing` (`repr` and abbreviated
labels), `serialize` (JSON in and out). The public names are re-exported by `lucent_dsl` itself
(`ld.parse`, `ld.Expr`, `ld.to_json`, ...).

Example:
    >>> from lucent_dsl.dsl.parser import parse
    >>> parse("2 * channel('conv', 1)") == parse("channel('conv', 1) * 2")
    True
"""
