"""The examples in the package's docstrings run and print what they show."""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import lucent_dsl

MODULES = sorted(f"lucent_dsl.{m.name}" for m in pkgutil.iter_modules(lucent_dsl.__path__) if m.name != "__main__")


def test_every_module_is_listed():
    assert "lucent_dsl.fold" in MODULES and "lucent_dsl.render" in MODULES and len(MODULES) >= 20


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, verbose=False, report=True, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples of {name} failed (see stdout)"
