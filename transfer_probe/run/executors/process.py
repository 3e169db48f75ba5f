"""``ProcessExecutor``: probes in a background worker process (``worker.py``) while training goes on."""

from __future__ import annotations

import collections
import logging
import os
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection, Pipe
from typing import Any

from transfer_probe.run.executors.base import Executor, ProbeNotFinished, WorkerDied, _as_jobs, _Point
from transfer_probe.run.executors.worker import _DIST_ENV, _signal_reason

logger = logging.getLogger("transfer_probe")


class ProcessExecutor(Executor):
    """Run probes in a background worker process while training continues.

    The worker is a fresh Python interpreter (``subprocess`` + ``exec``, never a ``fork`` of the
    training process with its threads and CUDA context; unlike ``multiprocessing``'s spawn it does
    not re-import the user's ``__main__``, so training scripts need no ``if __name__ == "__main__"``
    guard). It runs one job at a time with the same :func:`~transfer_probe.run.probe.run_probe` as
    ``inline`` and appends each record to the history itself; :meth:`poll` picks them up.

    Args:
        history_path: the history file the worker appends to.
        keep_snapshots: keep snapshot directories after their probes (default: delete them).
        max_pending: probe points allowed to wait behind the running one. When a new point arrives
            and the queue is full, ``overflow`` decides; one warning says so, later drops are only
            counted (``dropped``).
        overflow: ``"coalesce"`` (default): the oldest waiting point is dropped for the new one,
            so the newest weights are probed next; ``"skip"``: the new point is dropped.
        num_threads: torch threads in the worker (default: torch's own choice). On a machine shared
            with training, 1 or 2 leaves the cores to training.
        device: where the worker's probes run: ``None`` (default: as ``FinetuneConfig.device``, else
            accelerate's choice, the first GPU if any), ``"cpu"`` (GPUs hidden), or ``"cuda:N"``
            (only GPU N visible to the worker, e.g. the last one while training uses the others;
            it is ``cuda:0`` inside the worker, so leave ``FinetuneConfig.device`` unset).
        env: extra environment variables for the worker.

    A worker that dies (SIGKILL, segfault, the OOM killer) is noticed within ``poll_interval``
    seconds: its job is recorded as failed with the reason, a warning is logged and a new worker
    takes the next job.
    """

    name = "process"

    def __init__(
        self,
        history_path: str | os.PathLike,
        *,
        keep_snapshots: bool = False,
        max_pending: int = 2,
        overflow: str = "coalesce",
        num_threads: int | None = None,
        device: str | None = None,
        env: dict[str, str] | None = None,
        poll_interval: float = 0.1,
    ):
        super().__init__(history_path, keep_snapshots=keep_snapshots)
        if not isinstance(max_pending, int) or isinstance(max_pending, bool) or max_pending < 1:
            raise ValueError(f"max_pending must be a positive integer (probe points allowed to wait), got {max_pending!r}")
        if overflow not in ("coalesce", "skip"):
            raise ValueError(f"overflow must be 'coalesce' or 'skip', got {overflow!r}")
        if num_threads is not None and (not isinstance(num_threads, int) or num_threads < 1):
            raise ValueError(f"num_threads must be a positive integer or None, got {num_threads!r}")
        if device is not None and not (device == "cpu" or str(device).startswith("cuda")):
            raise ValueError(f"device must be None, 'cpu' or 'cuda:N', got {device!r}")
        self.max_pending = max_pending
        self.overflow = overflow
        self.num_threads = num_threads
        self.device = device
        self.extra_env = dict(env or {})
        self.poll_interval = poll_interval
        self.dropped: list[dict[str, Any]] = []  # points coalesced or skipped: {"step", "tokens", "why"}
        self.restarts = 0
        self.broken: str | None = None  # why the executor gave up on its worker, if it did
        self._failed_starts = 0
        self._worker_started = False
        self._warned_overflow = False
        self._queue: collections.deque[tuple[_Point, list[Any]]] = collections.deque()
        self._running: tuple[str, Any] | None = None  # (job_id, job) sent to the worker
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._closing = False
        self._stop = threading.Event()
        self._idle = threading.Condition(self._lock)
        self._ready = threading.Event()
        self._start_worker()
        self._thread = threading.Thread(target=self._monitor, name="transfer_probe-process-executor", daemon=True)
        self._thread.start()

    # -- public ----------------------------------------------------------------------------
    @property
    def worker_pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None else None

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the worker has imported torch/transformers and can take a job (its start-up
        takes seconds); returns whether it is ready. Never needed for correctness."""
        return self._ready.wait(timeout)

    @property
    def running_job(self) -> Any:
        """The job the worker is running now (``None`` when idle)."""
        with self._lock:
            return self._running[1] if self._running else None

    def submit(self, jobs: Any) -> bool:
        jobs = _as_jobs(jobs)
        if self._closing:
            raise RuntimeError("ProcessExecutor is closed; create a new one")
        if self.broken:
            self._register(jobs)
            for job in jobs:
                self._record_failure(job, WorkerDied(self.broken))
            return True
        with self._lock:
            waiting = len(self._queue)
            new = jobs[0].snapshot
            # The no-pretraining baseline is measured once per run and every verdict compares
            # against it: it is never coalesced or skipped (the queue may hold one point more).
            droppable = [i for i, (pt, _) in enumerate(self._queue) if getattr(pt.snapshot, "pretrained", True)]
            if waiting >= self.max_pending and getattr(new, "pretrained", True) and (
                    droppable or self.overflow == "skip"):
                if self.overflow == "skip":
                    self._note_drop(new, "skipped: queue full")
                    self._warn_overflow(f"the new probe point at step {new.step} is skipped")
                    self._release(_Point(jobs=jobs, snapshot=new))
                    return False
                old, _ = self._queue[droppable[0]]
                del self._queue[droppable[0]]
                self._note_drop(old.snapshot, f"coalesced into step {new.step}")
                self._warn_overflow(
                    f"the waiting probe point at step {old.snapshot.step} is replaced by the newer one at step {new.step}"
                )
                self._forget(old)
            point = self._register(jobs)
            self._queue.append((point, list(jobs)))
            self._idle.notify_all()
        return True

    def close(self, timeout: float | None = None) -> list[dict]:
        """Wait up to ``timeout`` s (``None``: no limit) for the queue to drain, then stop the worker.

        Jobs still running or waiting then are recorded as failed (:class:`ProbeNotFinished`).
        Returns the records not yet polled.
        """
        if self._closing:
            return self.poll()
        self._closing = True
        deadline = None if timeout is None else time.monotonic() + max(0.0, float(timeout))
        with self._idle:
            while self._queue or self._running:
                if not self._thread.is_alive():
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._idle.wait(timeout=min(left, 0.5) if left is not None else 0.5)
        self._stop.set()
        self._thread.join(timeout=10)
        with self._lock:
            unfinished = []
            if self._running:
                unfinished.append(("running", self._running[1]))
                self._running = None
            while self._queue:
                point, jobs = self._queue.popleft()
                unfinished.extend(("waiting", j) for j in jobs)
        self._stop_worker()
        for state, job in unfinished:
            self._record_failure(job, ProbeNotFinished(
                f"probe not finished within end_timeout={timeout}s when training ended (it was {state})"
            ))
        if unfinished:
            logger.warning(
                "transfer_probe | %d probe job(s) did not finish within %ss at the end of training; recorded as "
                "failed. Raise end_timeout to wait longer.", len(unfinished), timeout,
            )
        self.history.flush()
        if self.dropped:
            logger.info("transfer_probe | %d probe point(s) were dropped because probes were slower than the "
                        "schedule (%s)", len(self.dropped), self.overflow)
        return self.poll()

    # -- worker management -------------------------------------------------------------------
    def _worker_env(self) -> dict[str, str]:
        env = dict(os.environ)
        # The worker is a single-process program: it must not believe it is a rank of the run.
        for k in _DIST_ENV:
            env.pop(k, None)
        if self.device == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
        elif self.device is not None and ":" in str(self.device):
            env["CUDA_VISIBLE_DEVICES"] = str(self.device).split(":", 1)[1]
        env.update(self.extra_env)
        return env

    def _start_worker(self) -> None:
        self._worker_started = False
        parent, child = Pipe(duplex=True)
        cmd = [
            sys.executable, "-c",
            "import sys; from transfer_probe.run.executors.worker import _worker_main; _worker_main(*sys.argv[1:])",
            str(child.fileno()), str(self.history_path), str(self.num_threads or 0), str(os.getpid()),
        ]
        # stdout -> stderr: the worker's prints must not mix into the training's stdout stream.
        self._proc = subprocess.Popen(cmd, pass_fds=(child.fileno(),), env=self._worker_env(),
                                      stdout=sys.stderr.fileno() if _has_fileno(sys.stderr) else None,
                                      close_fds=True)
        child.close()
        self._conn = parent

    def _stop_worker(self) -> None:
        proc, conn = self._proc, self._conn
        self._proc, self._conn = None, None
        if conn is not None:
            try:
                conn.send(None)
            except (OSError, ValueError):
                pass
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if conn is not None:
            conn.close()

    def _monitor(self) -> None:
        # One thread owns the worker: dispatches jobs one at a time (so it always knows which job a
        # dead worker was running), reads its messages, and replaces it when it dies.
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception:  # the monitor must survive anything; log and go on
                logger.exception("transfer_probe | process executor monitor error")
                time.sleep(self.poll_interval)

    def _tick(self) -> None:
        """One round of the monitor: hand the worker its next job, then wait ``poll_interval`` for a
        message; without one, see whether the worker died."""
        conn, proc = self._dispatch()
        msg = None
        try:
            if conn is not None and conn.poll(self.poll_interval):
                msg = conn.recv()
        except (EOFError, OSError):
            msg = None
        if msg is not None:
            self._on_message(msg)
        elif proc is not None and proc.poll() is not None:
            self._on_worker_death(proc)
        elif conn is None:
            time.sleep(self.poll_interval)

    def _dispatch(self) -> tuple[Connection | None, subprocess.Popen | None]:
        """Send the next waiting job when the worker is idle; returns the pipe and process to watch."""
        to_send = None
        with self._lock:
            if self._running is None and self._queue:
                if self._proc is None or self._proc.poll() is not None:
                    self._restart_quietly()
                point, jobs = self._queue[0]
                job = jobs.pop(0)
                if not jobs:
                    self._queue.popleft()
                job_id = job.extra["job_id"]
                self._running = (job_id, job)
                to_send = (job_id, job)
            conn, proc = self._conn, self._proc
        if to_send is not None and conn is not None:
            # Outside the lock: pickling a job must never make submit() (the training thread) wait.
            try:
                conn.send(to_send)
            except (OSError, ValueError):
                pass  # the worker is gone; noticed by the caller
        return conn, proc

    def _on_message(self, msg: tuple) -> None:
        kind, job_id = msg[0], msg[1]
        if kind == "ready":
            self._ready.set()
            self._worker_started = True
            self._failed_starts = 0
        elif kind == "done":
            for rec in msg[3] if len(msg) > 3 else ():  # the worker could not write these
                self.history.append(rec)
            with self._lock:
                if self._running and self._running[0] == job_id:
                    self._running = None
                self._idle.notify_all()

    def _on_worker_death(self, proc: subprocess.Popen) -> None:
        """Record the job it was running as failed and start a new worker (or give up after
        ``_MAX_FAILED_STARTS`` deaths before it was ever ready)."""
        with self._lock:
            running, self._running = self._running, None
            reason = _signal_reason(proc.returncode)
            self._proc = None
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        if running is not None:
            job_id, job = running
            self._record_failure(job, WorkerDied(f"probe worker process (pid {proc.pid}) {reason}"))
            logger.warning(
                "transfer_probe | probe worker (pid %d) %s while probing step %s, task %s, D_f=%s; recorded "
                "as failed, starting a new worker", proc.pid, reason, job.snapshot.step,
                getattr(job.task, "name", job.task), job.finetune_size,
            )
        elif not self._stop.is_set():
            logger.warning("transfer_probe | probe worker (pid %d) %s while idle; starting a new one",
                           proc.pid, reason)
        if not self._worker_started:
            self._failed_starts += 1
        if self._failed_starts >= _MAX_FAILED_STARTS:
            self._give_up(f"the probe worker died {self._failed_starts} times before it was ready "
                          f"(last: {reason}); see its output above")
            return
        with self._lock:
            if not self._stop.is_set():
                self._restart_quietly()
            self._idle.notify_all()

    def _give_up(self, why: str) -> None:
        """The worker cannot run here: fail what waits and what comes, never restart again."""
        self.broken = why
        logger.warning("transfer_probe | %s; probes are recorded as failed from now on, training continues", why)
        with self._lock:
            waiting = [j for _, jobs in self._queue for j in jobs]
            self._queue.clear()
            self._idle.notify_all()
        for job in waiting:
            self._record_failure(job, WorkerDied(why))

    def _restart_quietly(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        if self._proc is not None or self._conn is not None:
            self._stop_worker()
        self._start_worker()
        self.restarts += 1

    def _note_drop(self, snapshot: Any, why: str) -> None:
        self.dropped.append({"step": snapshot.step, "tokens": snapshot.tokens, "why": why})

    def _warn_overflow(self, what: str) -> None:
        if self._warned_overflow:
            return
        self._warned_overflow = True
        logger.warning(
            "transfer_probe | probes are slower than the schedule (%d point(s) already waiting): %s. Further "
            "points are %s without another warning. Probe less often (every_tokens, fewer finetune sizes or "
            "repeats), or run probes elsewhere (executor='ray').", self.max_pending, what,
            "coalesced" if self.overflow == "coalesce" else "skipped",
        )

    def __del__(self):  # best effort: never leave a worker behind
        try:
            if not self._closing and self._proc is not None:
                self._stop.set()
                self._proc.kill()
        except Exception:
            pass


def _has_fileno(stream: Any) -> bool:
    try:
        stream.fileno()
        return True
    except (AttributeError, OSError, ValueError):
        return False


# Consecutive worker deaths before it ever became ready after which the executor gives up (a broken
# environment would otherwise restart workers forever).
_MAX_FAILED_STARTS = 3

