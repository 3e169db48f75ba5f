"""The executor interface (see the package docstring) and the history bookkeeping every executor shares."""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transfer_probe.store.history import HistoryWriter, iter_new_records

logger = logging.getLogger("transfer_probe")


class WorkerDied(RuntimeError):
    """The probe worker process ended while running a job (killed, crashed, out of memory)."""


class ProbeNotFinished(TimeoutError):
    """A probe had not finished when the executor was closed (the end of training's timeout)."""


@dataclass
class _Point:
    """The jobs of one probe point; their shared snapshot is released when all have records."""

    jobs: list[Any]
    snapshot: Any
    remaining: set[str] = field(default_factory=set)


def _as_jobs(jobs: Any) -> list[Any]:
    if isinstance(jobs, Sequence) and not isinstance(jobs, (str, bytes)):
        out = list(jobs)
    else:
        out = [jobs]
    if not out:
        raise ValueError("submit() needs at least one ProbeJob")
    return out


class Executor:
    """Base class of executors: the history bookkeeping shared by all of them.

    Subclasses implement :meth:`submit` (calling :meth:`_register` for each accepted point) and may
    override :meth:`close`. Records are matched to jobs by ``job_id`` (set in ``job.extra`` and so
    copied into the record by ``run_probe`` / ``failed_record``).
    """

    name = "base"

    def __new__(cls, *args: Any, **options: Any) -> Executor:
        check_options(cls, options)  # a misspelt option would otherwise be a bare TypeError
        return super().__new__(cls)

    def __init__(self, history_path: str | os.PathLike, *, keep_snapshots: bool = False):
        self.history_path = Path(history_path)
        self.history = HistoryWriter(self.history_path)
        self.keep_snapshots = keep_snapshots
        # Start after what is already in the file: older records are not ours to return.
        self._offset = self.history_path.stat().st_size if self.history_path.exists() else 0
        self._points: dict[str, _Point] = {}  # job_id -> its point
        self._lock = threading.RLock()

    # -- interface -------------------------------------------------------------------------
    def submit(self, jobs: Any) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def poll(self) -> list[dict]:
        with self._lock:
            if not self._points:  # nothing pending: no file to read on this training step
                return []
            new, self._offset = iter_new_records(self.history_path, self._offset)
            # A record a failed write holds in memory is returned now; found in the file later, it is
            # no longer pending and so not returned twice.
            new += self.history.held
            out = []
            for rec in new:
                job_id = rec.get("job_id")
                if job_id is None or job_id not in self._points:
                    continue
                out.append(rec)
                self._job_finished(job_id)
            return out

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._points)

    def close(self, timeout: float | None = None) -> list[dict]:
        self.history.flush()
        return self.poll()

    # -- helpers ---------------------------------------------------------------------------
    # -- for subclasses (executor plugins use these, never the private helpers) ---------------------
    @staticmethod
    def as_jobs(jobs: Any) -> list[Any]:
        """``submit``'s argument as a non-empty list of ``ProbeJob`` (one job or a sequence)."""
        return _as_jobs(jobs)

    def skip(self, jobs: list[Any]) -> None:
        """Jobs this executor will not run (e.g. too many in flight): their snapshot is released unless
        ``keep_snapshots``; no record is written (say why in ``self.dropped``)."""
        self._release(_Point(jobs=jobs, snapshot=jobs[0].snapshot))

    def _register(self, jobs: list[Any]) -> _Point:
        point = _Point(jobs=jobs, snapshot=jobs[0].snapshot)
        with self._lock:
            for job in jobs:
                job_id = job.extra.setdefault("job_id", uuid.uuid4().hex[:12])
                point.remaining.add(job_id)
                self._points[job_id] = point
        return point

    def _job_finished(self, job_id: str) -> None:
        point = self._points.pop(job_id, None)
        if point is None:
            return
        point.remaining.discard(job_id)
        if not point.remaining:
            self._release(point)

    def _release(self, point: _Point) -> None:
        if self.keep_snapshots:
            return
        from transfer_probe.run.snapshot import release_snapshot

        try:
            release_snapshot(point.snapshot)
        except OSError as err:  # never let disk housekeeping break training
            logger.warning("transfer_probe | could not remove snapshot %s: %s", point.snapshot.path, err)

    def _forget(self, point: _Point) -> None:
        """Drop a point that will never run (coalesced away): no records, snapshot released."""
        with self._lock:
            for job_id in list(point.remaining):
                self._points.pop(job_id, None)
            point.remaining.clear()
        self._release(point)

    def _record_failure(self, job: Any, exc: BaseException) -> None:
        from transfer_probe.run.probe import failed_record

        self.history.append(failed_record(job, exc))


def check_options(cls: type, options: dict[str, Any]) -> None:
    """``ValueError`` naming the valid keys when ``options`` has one ``cls(history_path, **options)`` lacks."""
    import inspect

    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(options) - set(params))
    if unknown:
        valid = [n for n, p in params.items() if n not in ("self", "history_path") and p.kind is not p.VAR_POSITIONAL]
        raise ValueError(f"unknown option(s) {', '.join(map(repr, unknown))} for the {getattr(cls, 'name', cls.__name__)} "
                         f"executor (executor_options); valid: {', '.join(valid)}")

