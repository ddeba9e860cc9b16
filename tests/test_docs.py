"""The examples in the package's docstrings run and print what they show."""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import lucent_dsl

MODULES = sorted(m.name for m in pkgutil.walk_packages(lucent_dsl.__path__, "lucent_dsl.") if not m.name.endswith("__main__"))


def test_every_module_is_listed():
    assert "lucent_dsl.plan.fold" in MODULES and "lucent_dsl.renderer.phases" in MODULES and len(MODULES) >= 20


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    # Examples may use any public `lucent_dsl` name (as `from lucent_dsl import *` would give) besides the module's own.
    public = {n: getattr(lucent_dsl, n) for n in lucent_dsl.__all__ if n not in vars(module)}
    result = doctest.testmod(module, verbose=False, report=True, optionflags=doctest.ELLIPSIS, extraglobs=public)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples of {name} failed (see stdout)"
