"""Subprocesses that a test starts are always reaped, whatever the test's outcome.

A `Popen` left running (or killed but never waited for) outlives its test; its object's finalizer then raises a
ResourceWarning inside whichever test runs next, and the suite's `filterwarnings = error` fails that test.

    with reaped(subprocess.Popen([...], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)) as proc:
        ...
"""
from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator

# Generous: on a loaded 2-core machine (another process busy on both cores) starting Python, importing torch and
# building a model took minutes, not seconds.
START_TIMEOUT = 600.0
END_TIMEOUT = 300.0


@contextlib.contextmanager
def reaped(proc: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """Yield `proc`; on the way out kill it if it still runs, then wait for it and close its pipes."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()  # waits, drains and closes stdout/stderr
