"""The property tests once more on fresh examples, in every CI run (issue 28, item 18).

The suite's property tests run one derandomized sample (conftest's "ci" profile), so CI never flakes, but it never
looks past that sample either. This test runs the property tests of `MODULES` again in a subprocess under the
"explore" profile (`LUCENT_EXPLORE=1`): a fresh seed each run, at most `EXAMPLES` examples per test (a test's own
larger budget is capped). A failure names the seed and the command that replays it; `LUCENT_EXPLORE_SEED=N` replays
seed N here.
"""
from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.procs import START_TIMEOUT

ROOT = Path(__file__).resolve().parents[1]
MODULES = ("tests/test_expr.py", "tests/test_parse.py", "tests/test_fuzz_plan.py", "tests/test_objectives.py",
           "tests/test_layouts.py", "tests/test_plan.py", "tests/test_io.py", "tests/test_transforms.py")
"""Fast property tests over the language, the plan, the layouts, the files and the transforms."""
EXAMPLES = 8


def explore_command(seed: int) -> list[str]:
    return [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", "-m", "hypothesis",
            f"--hypothesis-seed={seed}", *MODULES]


@pytest.mark.skipif(bool(os.environ.get("LUCENT_EXPLORE")), reason="already exploring")
def test_the_property_tests_hold_on_fresh_examples():
    seed = int(os.environ.get("LUCENT_EXPLORE_SEED") or secrets.randbelow(2**32))
    env = {**os.environ, "LUCENT_EXPLORE": "1", "LUCENT_EXPLORE_EXAMPLES": str(EXAMPLES),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(explore_command(seed), cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=START_TIMEOUT, check=False)
    replay = (f"LUCENT_EXPLORE=1 LUCENT_EXPLORE_EXAMPLES={EXAMPLES} python -m pytest -m hypothesis "
              f"--hypothesis-seed={seed} {' '.join(MODULES)}   (or LUCENT_EXPLORE_SEED={seed} pytest {__file__})")
    print(f"explored the property tests with seed {seed}")
    assert proc.returncode == 0, f"exploring with seed {seed} failed; replay it with:\n{replay}\n\n{proc.stdout[-8000:]}"
    ran = re.search(r"(\d+) passed", proc.stdout)
    assert ran and int(ran.group(1)) >= 50, proc.stdout[-2000:]  # the property tests ran, not a deselected nothing
