"""The house keeps its shape: no import cycles outside the allowed ones, nothing imports upward, a short top level.

Counts come from the package's own imports, read with `ast` (imports inside functions included, `if TYPE_CHECKING:`
blocks excluded). `python tests/test_structure.py` prints the counts.

Before issue 24 (the flat layout): 7 cycles (the largest 7 modules wide), 42 modules at the top level, and 10
imports running upward against the order below (6 against the order ARCHITECTURE.md stated then). After: the 3
allowed cycles, 10 top-level modules, none upward.
"""
from __future__ import annotations

import ast
import importlib
import pathlib
import subprocess
import sys

import pytest

import lucent_dsl

ROOT = pathlib.Path(__file__).resolve().parent.parent / "lucent_dsl"

# ARCHITECTURE.md's order, lowest first: a module may import its own rank or a lower one, never a higher one.
# A module's rank is that of the longest prefix listed here.
LAYERS: list[tuple[str, ...]] = [
    ("lucent_dsl.errors", "lucent_dsl.args"),
    ("lucent_dsl.dsl",),
    ("lucent_dsl.io",),
    ("lucent_dsl.models", "lucent_dsl.zoo", "lucent_dsl.zoo_weights"),
    ("lucent_dsl.plan",),
    ("lucent_dsl.objectives", "lucent_dsl.param", "lucent_dsl.transforms"),
    ("lucent_dsl.record",),
    ("lucent_dsl.renderer",),
    ("lucent_dsl.dataset_examples", "lucent_dsl.image_sources", "lucent_dsl.sanity"),
    ("lucent_dsl.atlas",),
    ("lucent_dsl.toolbox",),
    ("lucent_dsl.replay",),
    ("lucent_dsl.explore",),
    ("lucent_dsl.testing",),
    ("lucent_dsl.cli",),
    ("lucent_dsl", "lucent_dsl.__main__", "lucent_dsl.recipes", "lucent_dsl.adversarial"),  # the face and shims
]
# Cycles allowed: a class's repr delegates to its printer, and the testing toolkit's two halves. (testing.laws <->
# testing.model_laws ended when the case and the verdicts both use moved into testing.judging.)
ALLOWED_CYCLES = [
    {"lucent_dsl.dsl.expr", "lucent_dsl.dsl.printing"},
    {"lucent_dsl.testing.terms", "lucent_dsl.testing.vocabulary"},
]
MAX_TOP_LEVEL = 14


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from (n for orelse in node.orelse for n in _imports_of(orelse))
            continue
        yield from _imports_of(node)


def _imports_of(node: ast.AST):
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
    else:
        yield from _imports(node)


def graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (a `from pkg import name` counts `pkg.name` when that is a module)."""
    files = {module_name(p): p for p in ROOT.rglob("*.py")}
    packages = {module_name(p) for p in ROOT.rglob("__init__.py")}
    edges: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        package = mod if mod in packages else mod.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    base_name = ".".join(base + ([node.module] if node.module else []))
                else:
                    base_name = node.module or ""
                targets = [f"{base_name}.{a.name}" if f"{base_name}.{a.name}" in files else base_name
                           for a in node.names]
            for t in targets:
                while t and t not in files:
                    t = t.rpartition(".")[0]
                if t and t != mod:
                    edges[mod].add(t)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def simple_cycles(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Pairs (a, b) that import each other (the two-module cycles)."""
    return sorted((a, b) for a in edges for b in edges[a] if a < b and a in edges[b])


def rank(mod: str) -> int:
    best, best_len = len(LAYERS) - 1, -1
    for r, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (mod == p or mod.startswith(p + ".")) and len(p) > best_len:
                best, best_len = r, len(p)
    return best


def upward(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    # A package's face may import its own rooms; a room may import its package's face.
    return sorted((a, b) for a in edges for b in edges[a]
                  if rank(b) > rank(a) and not b.startswith(a + ".") and not a.startswith(b + "."))


def top_level() -> list[str]:
    return sorted(p.name for p in ROOT.glob("*.py"))


def test_no_cycles_but_the_allowed_ones():
    bad = [c for c in cycles(graph()) if not any(c <= ok for ok in ALLOWED_CYCLES)]
    assert not bad, f"import cycles: {bad}"


def test_nothing_imports_upward():
    assert not upward(graph()), "imports against ARCHITECTURE.md's order (module, imported): " + str(upward(graph()))


def test_top_level_is_short():
    assert len(top_level()) <= MAX_TOP_LEVEL, top_level()


# --- the import paths users rely on keep working ----------------------------------------------------------

PUBLIC_PATHS = [
    "lucent_dsl.zoo", "lucent_dsl.testing", "lucent_dsl.toolbox", "lucent_dsl.dataset_examples", "lucent_dsl.sanity",
    "lucent_dsl.io", "lucent_dsl.param", "lucent_dsl.transforms", "lucent_dsl.models", "lucent_dsl.objectives.masks",
    "lucent_dsl.explore.site", "lucent_dsl.explore.browser", "lucent_dsl.replay", "lucent_dsl.cli",
]
# Old path -> the module that now holds its names (the old path warns with a FutureWarning naming it).
MOVED = {"lucent_dsl.recipes": "lucent_dsl.toolbox.inversion", "lucent_dsl.adversarial": "lucent_dsl.toolbox.adversarial"}


@pytest.mark.parametrize("path", PUBLIC_PATHS)
def test_public_paths_import(path):
    importlib.import_module(path)


def test_the_console_entry_point_and_replay_recipe_stay():
    from lucent_dsl.cli import main
    from lucent_dsl.record.recipe import Recipe as Value
    from lucent_dsl.replay import Recipe, run

    assert callable(main) and Recipe is Value and Recipe.run is run


@pytest.mark.parametrize("old, new", sorted(MOVED.items()))
def test_a_moved_module_warns_and_gives_the_same_objects(old, new, monkeypatch):
    monkeypatch.delitem(sys.modules, old, raising=False)
    with pytest.warns(FutureWarning, match=new.replace(".", r"\.")):
        shim = importlib.import_module(old)
    target = importlib.import_module(new)
    assert shim.__all__ and all(getattr(shim, name) is getattr(target, name) for name in target.__all__)
    assert getattr(lucent_dsl, old.rpartition(".")[2]) in (shim, target)


def test_atlas_no_longer_re_exports_the_probe_but_its_old_names_warn():
    from lucent_dsl import atlas
    from lucent_dsl.plan import probe

    moved = ("SiteInfo", "channel_count", "channel_counts", "default_layers", "probe", "probe_size")
    assert not set(moved) & set(atlas.__all__) and not set(moved) & set(vars(atlas))
    for name in moved:
        with pytest.warns(FutureWarning, match=rf"from lucent_dsl\.plan\.probe import {name}"):
            assert getattr(atlas, name) is getattr(probe, name)


def test_importing_the_package_leaves_the_zoo_for_python_m():
    # `python -m lucent_dsl.zoo install` must run zoo as a fresh module (runpy warns when it is already imported).
    code = "import sys, lucent_dsl; assert 'lucent_dsl.zoo' not in sys.modules, 'import lucent_dsl imports the zoo'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_param_transparency_map_warns_and_is_the_toolbox_one():
    with pytest.warns(FutureWarning, match=r"lucent_dsl\.toolbox\.transparency_map"):
        f = lucent_dsl.param.transparency_map
    assert f is lucent_dsl.transparency_map


if __name__ == "__main__":
    g = graph()
    cs = cycles(g)
    print(f"modules: {len(g)}  top-level modules: {len(top_level())}")
    print(f"import cycles (strongly connected components): {len(cs)}")
    for c in cs:
        print("  ", sorted(c))
    print(f"two-module cycles: {len(simple_cycles(g))}")
    up = upward(g)
    print(f"upward imports against LAYERS: {len(up)}")
    for a, b in up:
        print(f"   {a} -> {b}")
