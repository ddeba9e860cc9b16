"""The red team's catalogue (benchmarks/red_team.py, issue 28): every bad input in it is refused cleanly.

A refusal is exit code 2 and one `error: ...` line from the CLI, or a `LucentError` from Python; an input that is
accepted, fails another way, hangs or runs code fails this test, which names it.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "red_team.py"


def _red_team():
    spec = importlib.util.spec_from_file_location("red_team", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["red_team"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_bad_input_of_the_catalogue_is_refused_cleanly():
    red = _red_team()
    cases = red.catalogue()
    areas = {c.area for c in cases}
    assert len(cases) >= 100 and len(areas) >= 6, (len(cases), areas)
    not_refused = []
    for case in cases:
        outcome, detail = red.run_case(case, 120.0)
        if outcome != "refused":
            not_refused.append(f"{case.area} / {case.name}: {outcome}: {detail[:200]}")
    assert not not_refused, "\n".join(not_refused)
