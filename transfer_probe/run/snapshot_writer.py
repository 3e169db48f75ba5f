"""``SnapshotWriter``: writes in-memory snapshots to folders in a background thread, then hands them on.

The training thread only pays for a CPU copy of the weights (``capture_in_memory``); this thread
writes the files and then submits the point's jobs, in the order the points were taken.
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path

from transfer_probe.run.snapshot import Snapshot, write_snapshot

__all__ = ["SnapshotWriter"]

logger = logging.getLogger("transfer_probe")


class SnapshotWriter:
    """Writes in-memory snapshots to directories in a background thread, then hands them on.

    Points are written and submitted in the order they were taken. A failure is logged and skips
    that point; it never reaches the training loop.
    """

    def __init__(self):
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None

    def put(self, snapshot: Snapshot, directory: Path, then) -> None:
        self._queue.put((snapshot, directory, then))
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="transfer_probe-snapshot-writer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                self._queue.task_done()
                return
            snapshot, directory, then = item
            try:
                then(write_snapshot(snapshot, directory))
            except Exception as exc:
                logger.warning("transfer_probe | could not write the snapshot of step %d (%s: %s); skipping "
                               "this point", snapshot.step, type(exc).__name__, exc)
            finally:
                self._queue.task_done()

    def join(self) -> None:
        """Wait until every snapshot put so far is written and handed on."""
        self._queue.join()

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=30)
        self._thread = None
