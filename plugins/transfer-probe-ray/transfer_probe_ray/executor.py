"""``RayExecutor``: probe jobs as Ray tasks, with their own CPUs/GPUs, while training continues.

    from transfer_probe.plugins import get_executor

    RayExecutor = get_executor("ray")
    ex = RayExecutor("out/history.jsonl", address=None, num_gpus_per_probe=0, num_cpus_per_probe=1)
    ex.submit([ProbeJob(snapshot=snap, task=task, finetune_size=df) for df in task.finetune_sizes])
    ...                                   # training goes on; Ray runs the probes
    for record in ex.poll():              # at a later step
        print(record["task"], record["metrics"].get("bleu"))
    ex.close(timeout=600)

The same ``ProbeJob`` and the same :func:`transfer_probe.run.probe.run_probe` as the ``inline`` and
``process`` executors; only where it runs differs. The driver (the training process) keeps the
history: each finished Ray task's record is appended there by :meth:`RayExecutor.poll`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from transfer_probe.run.executors import Executor, ProbeNotFinished

__all__ = ["RayExecutor"]

logger = logging.getLogger("transfer_probe")

# Snapshot directories larger than this are not shipped through the object store (the nodes must
# then see the path, e.g. on a shared file system).
_MAX_SHIP_BYTES = 20 << 30


def _read_dir(path: Path) -> dict[str, bytes]:
    files = {}
    for f in sorted(path.rglob("*")):
        if f.is_file():
            files[f.relative_to(path).as_posix()] = f.read_bytes()
    return files


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _run_job(job: Any, snapshot: Any, files: dict[str, bytes] | None) -> dict:
    """The body of a Ray task: rebuild a shipped snapshot directory locally, run the probe, and
    turn any exception into a failed record (so the driver sees the probe's own error text).

    ``snapshot`` comes separately from the job so the jobs of one point share one copy of the
    weights in the object store."""
    from transfer_probe.run.probe import failed_record, run_probe

    job = dataclasses.replace(job, snapshot=snapshot)
    tmp = None
    try:
        if files is not None:
            tmp = tempfile.mkdtemp(prefix="transfer-probe-ray-")
            for rel, data in files.items():
                target = Path(tmp) / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            job = dataclasses.replace(job, snapshot=dataclasses.replace(job.snapshot, path=Path(tmp)))
        record = run_probe(job)
        record["executor"] = {"name": "ray", "node": os.uname().nodename, "pid": os.getpid()}
        return record
    except Exception as exc:
        return failed_record(job, exc)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


class RayExecutor(Executor):
    """Run probes as Ray tasks on a Ray cluster (``address``) or a local one started for the run.

    Args:
        history_path: the history file; the driver appends each returned record to it.
        keep_snapshots: keep snapshot directories after their probes (default: delete them).
        address: a Ray cluster (``"auto"``, ``"ray://head:10001"``...); ``None`` connects to the
            cluster Ray is already initialized with, else starts a local one (stopped by ``close``).
        num_gpus_per_probe / num_cpus_per_probe: the resources each probe task requests, so
            probes land on nodes that have them (fractions allowed, as in Ray).
        max_pending: probe jobs allowed in flight; a point that would exceed it is skipped
            (``submit`` returns ``False``, with one warning), never an unbounded backlog.
        max_retries: Ray re-runs a task whose worker died this many times (default 0: recorded as
            failed with Ray's reason instead).
        ship_snapshots: send snapshot directories through the object store so nodes need no shared
            file system (default); ``False`` passes the path.
        init_options: extra keyword arguments for ``ray.init`` (e.g. ``{"num_cpus": 2}``).
        remote_options: extra Ray task options (e.g. ``{"memory": 4e9, "runtime_env": {...}}``).
    """

    name = "ray"

    def __init__(
        self,
        history_path: str | os.PathLike,
        *,
        keep_snapshots: bool = False,
        address: str | None = None,
        num_gpus_per_probe: float = 0,
        num_cpus_per_probe: float = 1,
        max_pending: int = 8,
        max_retries: int = 0,
        ship_snapshots: bool = True,
        init_options: dict[str, Any] | None = None,
        remote_options: dict[str, Any] | None = None,
    ):
        try:
            import ray
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("the 'ray' executor needs Ray: pip install 'ray>=2.9'") from e
        if num_gpus_per_probe < 0 or num_cpus_per_probe < 0:
            raise ValueError(f"resources per probe must be >= 0, got num_gpus_per_probe={num_gpus_per_probe}, "
                             f"num_cpus_per_probe={num_cpus_per_probe}")
        if not isinstance(max_pending, int) or max_pending < 1:
            raise ValueError(f"max_pending must be a positive integer, got {max_pending!r}")
        super().__init__(history_path, keep_snapshots=keep_snapshots)
        self._ray = ray
        self.address = address
        self.num_gpus_per_probe = num_gpus_per_probe
        self.num_cpus_per_probe = num_cpus_per_probe
        self.max_pending = max_pending
        self.ship_snapshots = ship_snapshots
        self.dropped: list[dict[str, Any]] = []
        self._warned = False
        self._started_ray = False
        if not ray.is_initialized():
            opts = {"include_dashboard": False, "log_to_driver": False, **(init_options or {})}
            ray.init(address=address, **opts)
            self._started_ray = address is None
        options = {"num_cpus": num_cpus_per_probe, "num_gpus": num_gpus_per_probe, "max_retries": max_retries,
                   **(remote_options or {})}
        self._remote = ray.remote(_run_job).options(**options)
        self._inflight: dict[Any, tuple[str, Any]] = {}  # ObjectRef -> (job_id, job)
        self._closing = False
        self._refs_lock = threading.Lock()

    # -- interface -------------------------------------------------------------------------
    def submit(self, jobs: Any) -> bool:
        jobs = self.as_jobs(jobs)
        if self._closing:
            raise RuntimeError("RayExecutor is closed; create a new one")
        self._collect()
        with self._refs_lock:
            if len(self._inflight) + len(jobs) > self.max_pending:
                snap = jobs[0].snapshot
                self.dropped.append({"step": snap.step, "tokens": snap.tokens, "why": "skipped: too many in flight"})
                if not self._warned:
                    self._warned = True
                    logger.warning(
                        "transfer_probe | ray executor: %d probe jobs already in flight (max_pending=%d); the probe "
                        "point at step %s is skipped. Probes are slower than the schedule: probe less often, add "
                        "resources, or raise max_pending. Further skips are counted in executor.dropped.",
                        len(self._inflight), self.max_pending, snap.step)
                self.skip(jobs)
                return False
        point = self._register(jobs)
        files = None
        snap = point.snapshot
        if self.ship_snapshots and snap.path is not None and Path(snap.path).is_dir():
            if _dir_size(Path(snap.path)) <= _MAX_SHIP_BYTES:
                # Put once, shared by every job of the point; read now, so a later rotation or the
                # release after the probe cannot take the files away from a queued task.
                files = self._ray.put(_read_dir(Path(snap.path)))
        snap_ref = self._ray.put(snap)  # once per point, not once per job
        with self._refs_lock:
            for job in jobs:
                ref = self._remote.remote(dataclasses.replace(job, snapshot=None), snap_ref, files)
                self._inflight[ref] = (job.extra["job_id"], job)
        return True

    def poll(self) -> list[dict]:
        self._collect()
        return super().poll()

    def close(self, timeout: float | None = None) -> list[dict]:
        """Wait up to ``timeout`` s for running probes, record the rest as failed, stop a local Ray."""
        if self._closing:
            return self.poll()
        self._closing = True
        deadline = None if timeout is None else time.monotonic() + max(0.0, float(timeout))
        while True:
            self._collect(wait=0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic())))
            with self._refs_lock:
                left = list(self._inflight.items())
            if not left or (deadline is not None and time.monotonic() >= deadline):
                break
        for ref, (_job_id, job) in left:
            try:
                self._ray.cancel(ref, force=True)
            except Exception:  # already finished or gone: nothing to cancel
                pass
            self._record_failure(job, ProbeNotFinished(f"probe not finished within the end-of-training timeout of {timeout} s"))
        with self._refs_lock:
            self._inflight.clear()
        records = super().poll()
        if self._started_ray:
            self._ray.shutdown()
        return records

    # -- helpers ---------------------------------------------------------------------------
    def _collect(self, wait: float = 0.0) -> None:
        """Append the records of finished Ray tasks to the history."""
        with self._refs_lock:
            refs = list(self._inflight)
        if not refs:
            return
        ready, _ = self._ray.wait(refs, num_returns=len(refs), timeout=wait)
        for ref in ready:
            with self._refs_lock:
                entry = self._inflight.pop(ref, None)
            if entry is None:
                continue
            _job_id, job = entry
            try:
                record = self._ray.get(ref)
            except Exception as exc:  # the worker died, the node was lost, the task was cancelled
                self._record_failure(job, exc)
            else:
                self.history.append(record)
