"""Atomic writes: a file appears whole or not at all, and a killed writer leaves nothing behind for long.

`atomic_write` writes a temp file in the target's folder, fsyncs it and `os.replace`s it over the
target, so a crash or Ctrl-C mid-save never leaves a half-written file where a good one was. A temp
file names its host and process (`.NAME.HOST-PID-XXXXXXXX.tmp`): what a process killed mid-write
(SIGKILL, the OOM killer) left is removed by the next `atomic_write` into that folder on the same
host (`remove_stale_temps`, once per folder and process), and a write in progress is never touched.

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_write(p, "w") as f:
    ...     _ = f.write("whole")
    >>> [q.name for q in p.parent.iterdir()], p.read_text()
    (['a.txt'], 'whole')
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ..errors import InvalidArgumentError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Write a file all at once: a temp file in the same directory, fsynced, then `os.replace`d.

    On any exception (KeyboardInterrupt included) the temp file is removed and an existing
    `path` is left untouched. Parent directories are created. Text modes use UTF-8.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "sub" / "a.txt"
        >>> with atomic_write(p, "w") as f:
        ...     _ = f.write("hello")
        >>> p.read_text()
        'hello'
    """
    if not mode.startswith("w"):
        raise InvalidArgumentError(f"atomic_write mode must be a write mode ('w', 'wb', ...), got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        if path.exists():  # keep the mode of the file it replaces
            os.fchmod(fd, path.stat().st_mode & 0o7777)
        f = os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8")
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    try:
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


_TEMP = re.compile(r"^\..+\.([0-9a-f]{6})-(\d+)-[0-9a-f]{8}\.tmp$")
_CLEANED: set[str] = set()


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # someone else's process, or unknowable: leave its file alone
    return True


def remove_stale_temps(folder: str | os.PathLike[str]) -> list[str]:
    """Remove the temp files `atomic_write` left in `folder` when its process was killed; return their names.

    Only files of `atomic_write`'s own naming whose process ran on this host and is gone are removed: a write
    in progress (this or another process, or another host on a shared disk) is never touched.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / f".a.png.{_host_tag()}-999999999-0123abcd.tmp").write_bytes(b"half")  # no such process
        >>> _ = (d / ".notes.tmp").write_bytes(b"not ours")
        >>> [name.split("-", 1)[1] for name in remove_stale_temps(d)], sorted(p.name for p in d.iterdir())
        (['999999999-0123abcd.tmp'], ['.notes.tmp'])
    """
    host, removed = _host_tag(), []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP.match(entry.name)
        if m and m.group(1) == host and not _alive(int(m.group(2))):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(entry.name)
    return removed


def _create_temp(path: Path) -> tuple[int, str]:
    """A new `.NAME.HOST-PID-XXXXXXXX.tmp` next to `path`, created as a plain open() would (mode 0o666 less the
    umask, applied by the kernel: the process umask is never read or changed). The first write into a folder
    removes what killed writers left there (`remove_stale_temps`)."""
    folder = str(path.parent.resolve())
    if folder not in _CLEANED:
        remove_stale_temps(folder)
        _CLEANED.add(folder)
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a temporary file next to {str(path)!r}")
