"""Subprocesses that a test starts are always reaped, whatever the test's outcome.

A `Popen` left running (or killed but never waited for) outlives its test; its object's finalizer then raises a
ResourceWarning inside whichever test runs next, and the suite's `filterwarnings = error` fails that test. A child
that is still running when its test ends first gets SIGABRT: started with `PYTHONFAULTHANDLER=1` (`faulthandler_env`),
it prints every thread's Python stack to its stderr, which this prints, so a hang says where it hung.

    with reaped(subprocess.Popen([...], env=faulthandler_env(env), stdout=PIPE, stderr=PIPE, text=True)) as proc:
        ...
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping

# Generous: on a loaded 2-core machine (another process busy on both cores) starting Python, importing torch and
# building a model took minutes, not seconds.
START_TIMEOUT = 600.0
END_TIMEOUT = 300.0


def faulthandler_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """`env` (default: this process's) with Python's fault handler on, so SIGABRT prints the child's stacks."""
    return {**(os.environ if env is None else env), "PYTHONFAULTHANDLER": "1"}


@contextlib.contextmanager
def reaped(proc: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """Yield `proc`; on the way out stop it if it still runs (SIGABRT, then SIGKILL), wait, and close its pipes."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGABRT)
            try:
                _, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            print(f"subprocess {proc.args!r} was still running; its stderr:\n{err}", file=sys.stderr)
        proc.communicate()  # waits, drains and closes stdout/stderr
