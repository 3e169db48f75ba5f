"""One snapshot folder per run (:class:`RunSnapshots`, ``snapshots/<run_id>/``), locked with ``flock``
while its process lives: cleanup at the start of a run removes only folders whose process died,
a second live run is named in a warning, and a resumed run finds the folder of the run it continues
(:func:`find_interrupted_run`) and the snapshots its dead process left."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path

from transfer_probe.run.snapshot.core import Snapshot
from transfer_probe.run.snapshot.directory import MARKER_FILENAME, load_snapshot

logger = logging.getLogger("transfer_probe")

OWNER_FILENAME = "owner.json"
_LOCK_FILENAME = ".lock"


def _lock(folder: Path) -> int | None:
    """An exclusive ``flock`` on ``folder/.lock``: the fd, or None while another process holds it.

    The kernel drops the lock when its process dies, however it dies (kill -9 included), so a lock
    that can be taken means the folder's run is over; pid files would lie after a pid is reused.
    """
    import fcntl

    fd = os.open(folder / _LOCK_FILENAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held (EWOULDBLOCK), or a file system without locks: assume it is alive
        os.close(fd)
        return None
    return fd


def _owner(folder: Path) -> dict:
    try:
        return json.loads((folder / OWNER_FILENAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _snapshot_dirs(folder: Path) -> list[Path]:
    return sorted(c for c in folder.iterdir() if (c / MARKER_FILENAME).is_file())


def find_interrupted_run(root: str | os.PathLike) -> str | None:
    """The run_id of the newest run in ``root`` whose process died before its end (its folder is not
    locked and not marked ended): the run a ``resume_from_checkpoint`` continues."""
    root = Path(root)
    found: list[tuple[float, str]] = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        owner = _owner(folder) if folder.is_dir() else {}
        if not owner.get("run_id") or owner.get("ended"):
            continue
        fd = _lock(folder)
        if fd is None:
            continue  # alive: another run, not ours
        os.close(fd)
        found.append((float(owner.get("started") or 0), str(owner["run_id"])))
    return max(found)[1] if found else None


class RunSnapshots:
    """The snapshot folder of one live run, ``<root>/<run_id>/``, locked while the run lives.

    :meth:`claim` makes the folder and cleans ``root``: folders whose process died are removed
    (unless ``keep_snapshots``), folders of live runs are left alone and named in a warning (two
    trainings writing to the same output directory), and a run resumed under its own ``run_id``
    takes its folder back with the snapshots its dead process left (:meth:`leftovers`: points
    submitted whose probes may have no record). :meth:`release` at the end of training.
    """

    def __init__(self, path: Path, fd: int):
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def claim(cls, root: str | os.PathLike, run_id: str, *, keep_snapshots: bool = False) -> RunSnapshots:
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        removed, live = _clean_root(root, skip=run_id, keep_snapshots=keep_snapshots)
        for name in (run_id, f"{run_id}-{os.getpid()}"):  # the second one: a live namesake holds the first
            path = root / name
            path.mkdir(exist_ok=True)
            fd = _lock(path)
            if fd is not None:
                break
            live.append(_owner(path) or {"run_id": run_id})
        else:
            raise RuntimeError(f"cannot lock a snapshot folder for run {run_id} in {root}")
        for child in path.iterdir():  # half-written by the dead process's snapshot writer
            if child.is_dir() and child.name.startswith(".") and ".tmp-" in child.name:
                shutil.rmtree(child, ignore_errors=True)
        owner = {"run_id": run_id, "pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        (path / OWNER_FILENAME).write_text(json.dumps(owner) + "\n", encoding="utf-8")
        if removed:
            logger.info("transfer_probe | removed %d snapshot(s) left by %s", sum(removed.values()), "; ".join(
                f"{why} ({n})" for why, n in removed.items()))
        for other in live:
            logger.warning(
                "transfer_probe | another live run uses %s: run %s (pid %s on %s). Its snapshots are left "
                "alone and this run's go to %s; both append to the same history (told apart by run_id). "
                "Give each training its own output_dir.", root.parent, other.get("run_id", "?"),
                other.get("pid", "?"), other.get("host", "?"), path.name)
        return cls(path, fd)

    def leftovers(self) -> list[Snapshot]:
        """The snapshots in this folder, by step: after a resume, those the dead process left."""
        out = []
        for d in _snapshot_dirs(self.path):
            try:
                out.append(load_snapshot(d))
            except (OSError, ValueError, KeyError) as err:
                logger.warning("transfer_probe | unreadable snapshot %s (%s); removing it", d, err)
                shutil.rmtree(d, ignore_errors=True)
        return sorted(out, key=lambda s: s.step)

    def release(self) -> None:
        """The run ended: unlock, and remove the folder unless snapshots are kept in it."""
        if self._fd is None:
            return
        try:
            if _snapshot_dirs(self.path):  # kept on purpose (keep_snapshots): not an orphan
                owner = {**_owner(self.path), "ended": time.time()}
                (self.path / OWNER_FILENAME).write_text(json.dumps(owner) + "\n", encoding="utf-8")
            else:
                shutil.rmtree(self.path, ignore_errors=True)
        finally:
            os.close(self._fd)
            self._fd = None


def _clean_root(root: Path, *, skip: str, keep_snapshots: bool) -> tuple[dict[str, int], list[dict]]:
    """Remove what dead processes left in ``root``; return {why: snapshots removed} and live owners."""
    removed: dict[str, int] = {}
    live: list[dict] = []
    for child in sorted(root.iterdir()):
        if not child.is_dir():
            continue
        if (child / MARKER_FILENAME).is_file() or (child.name.startswith(".") and ".tmp-" in child.name):
            # The layout before per-run folders: only an older version writes here.
            if not keep_snapshots:
                shutil.rmtree(child, ignore_errors=True)
                removed["an earlier version's run"] = removed.get("an earlier version's run", 0) + 1
            continue
        if child.name == skip or not (child / _LOCK_FILENAME).exists():
            continue
        fd = _lock(child)
        if fd is None:
            if _owner(child).get("pid") != os.getpid():  # an earlier train() of this process is not "another run"
                live.append(_owner(child) or {"run_id": child.name})
            continue
        try:
            owner = _owner(child)
            if keep_snapshots or owner.get("ended"):
                continue  # snapshots kept on purpose
            n = len(_snapshot_dirs(child))
            shutil.rmtree(child, ignore_errors=True)
            if n:
                why = f"run {owner.get('run_id', child.name)} (pid {owner.get('pid', '?')}, no longer running)"
                removed[why] = n
        finally:
            os.close(fd)
    return removed, live
