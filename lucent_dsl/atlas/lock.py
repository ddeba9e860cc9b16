"""One atlas run per output folder: a lock file that names the run holding it.

`folder_lock(DIR)` takes an exclusive `flock` on `DIR/.lucent_dsl.lock` and writes the holder's
pid, host, start time and command into it. A second run on the same folder (from this machine or
another that shares the folder, where the file system supports locks) fails at once with
`FolderLockedError`, naming the holder, instead of deleting the first run's temp files or
rendering the same channels twice. The kernel drops the lock when the holder exits, even on
SIGKILL, so a crashed run never blocks the next one; the file is removed when the run ends.

Example:
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> with folder_lock(d):
    ...     with folder_lock(d):  # doctest: +ELLIPSIS
    ...         pass
    Traceback (most recent call last):
    ...
    lucent_dsl.atlas.lock.FolderLockedError: ...is being written by another lucent-dsl atlas run (pid ...
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from ..errors import InvalidArgumentError

LOCK = ".lucent_dsl.lock"


class FolderLockedError(InvalidArgumentError):
    """Another atlas run holds the output folder."""


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 65536).decode("utf-8") or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        return "a process that has not written its name yet"
    return (
        f"pid {info.get('pid')} on host {info.get('host')!r}, since {info.get('started')}: {info.get('command', '?')}"
    )


def _refusal(out: Path, path: Path, fd: int) -> FolderLockedError:
    return FolderLockedError(
        f"{str(out)!r} is being written by another lucent-dsl atlas run ({_holder(fd)}); wait for it to finish, "
        f"or use another --out. (If no such process runs, delete {str(path)!r}.)"
    )


def check_unlocked(folder: str | os.PathLike[str]) -> None:
    """Refuse at once when another run holds `folder` (a cheap early check; `folder_lock` takes it for real).

    Raises:
        FolderLockedError: the message names the holder.
    """
    import fcntl

    out = Path(folder)
    path = out / LOCK
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except (FileNotFoundError, NotADirectoryError):
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # shared: never blocks another checker
    except OSError:
        raise _refusal(out, path, fd) from None
    finally:
        os.close(fd)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold `folder`'s lock until exit (see the module docstring); yields the lock file's path.

    Raises:
        FolderLockedError: another run holds it (the message names its pid, host and command).
    """
    import fcntl

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            error = _refusal(out, path, fd)
            os.close(fd)
            raise error from None
        try:  # the holder we waited on may have removed the file: then lock the new one
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": datetime.datetime.now().isoformat(timespec="seconds"), "command": " ".join(sys.argv)[:500]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode("utf-8"), 0)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # before the unlock: a run that locks this inode next sees it is gone and retries
        os.close(fd)
