"""Whole lines or nothing: the low-level I/O under the history file.

- a line is appended only after a newline: a torn tail (a writer died mid-record) is first moved to a
  side file ``<name>.torn-<time>`` next to the file;
- a failed or short write is cut back off, so the file never holds a partial line;
- readers skip a torn line and recover a whole record a writer appended onto one (older versions
  did that on resume).

Writers hold an exclusive ``flock`` on the file while they check the tail and write, so a tail without
its newline under the lock is a dead writer's, never a live one's.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks; one writer per file still works
    fcntl = None

logger = logging.getLogger("transfer_probe")

_DECODER = json.JSONDecoder()


@contextlib.contextmanager
def locked(path: Path) -> Iterator[int]:
    """An fd on ``path`` (created if missing) opened for appending, held under an exclusive lock."""
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)  # releases the lock


def move_torn_tail(fd: int, path: Path) -> Path | None:
    """Move bytes after the last newline to a side file; return its path (``None``: nothing torn)."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return None
    start = _after_last_newline(fd, size)
    tail = os.pread(fd, size - start, start)
    side = _side_file(path, tail)  # first, so a crash here loses nothing
    os.ftruncate(fd, start)
    os.fsync(fd)
    logger.warning(
        "transfer_probe | %s ended with a torn record (%d bytes without a newline: a writer died mid-write); "
        "moved it to %s and continuing after the last complete line", path, len(tail), side)
    return side


def append_line(fd: int, data: bytes) -> None:
    """Write ``data`` at the end and fsync it, or cut the file back to where it was and raise OSError."""
    start = os.fstat(fd).st_size
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)  # may be short (disk full): write the rest, or fail below
            if n <= 0:
                raise OSError(errno.ENOSPC, f"short write: {len(data) - len(view)} of {len(data)} bytes written")
            view = view[n:]
        os.fsync(fd)
    except OSError:
        try:
            os.ftruncate(fd, start)
        except OSError as err:  # the next writer's move_torn_tail still keeps the line whole
            logger.warning("transfer_probe | could not cut a partial record off the history: %s", err)
        raise


def salvage(text: str) -> dict | None:
    """The whole record at the end of a line that is not JSON (one appended onto a torn line), if any."""
    i = text.find("{", 1)
    while i > 0:
        try:
            obj, end = _DECODER.raw_decode(text, i)
        except json.JSONDecodeError:
            pass
        else:
            if isinstance(obj, dict) and not text[end:].strip():
                return obj
        i = text.find("{", i + 1)
    return None


def _after_last_newline(fd: int, size: int) -> int:
    pos = size
    while pos > 0:
        step = min(pos, 65536)
        pos -= step
        i = os.pread(fd, step, pos).rfind(b"\n")
        if i >= 0:
            return pos + i + 1
    return 0


def _side_file(path: Path, data: bytes) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for n in range(1000):
        side = path.with_name(f"{path.name}.torn-{stamp}" + (f"-{n}" if n else ""))
        try:
            with open(side, "xb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            return side
        except FileExistsError:
            continue
    raise FileExistsError(f"too many torn-record side files next to {path}")
