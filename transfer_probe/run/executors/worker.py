"""The probe worker process of ``ProcessExecutor``: runs jobs from a pipe, appends their records."""

from __future__ import annotations

import os
import signal
import threading
import time
from multiprocessing.connection import Connection

from transfer_probe.store.history import HistoryWriter

# Environment that makes torch / accelerate / transformers believe they are one rank of a
# distributed run; the worker must not see it (it would try to join the training's process group).
_DIST_ENV = (
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "ROLE_WORLD_SIZE",
    "GROUP_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT",
    "TORCHELASTIC_MAX_RESTARTS", "TORCHELASTIC_USE_AGENT_STORE", "TORCHELASTIC_ERROR_FILE",
    "TORCH_NCCL_ASYNC_ERROR_HANDLING", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE",
    "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_USE_FSDP", "ACCELERATE_DYNAMO_BACKEND",
)


def _exit_with_parent(parent_pid: int, writing: threading.Lock, every: float = 0.2) -> None:
    """End the worker soon after the training process dies (kill -9 included: no message comes).

    An orphaned worker would hold its GPU and cores while the resumed run starts its own, and write
    records nobody judges. Its probe is not lost: the point's snapshot stays in the run's folder and
    the resumed run probes it again. ``writing`` is held while a record is written, so the worker
    never dies in the middle of one.
    """
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(every)
        with writing:
            os._exit(0)

    threading.Thread(target=watch, name="transfer_probe-parent-watch", daemon=True).start()


def _worker_main(fd: str, history_path: str, num_threads: str = "0", parent_pid: str = "0") -> None:
    """Entry point of the worker process: run jobs from the pipe until told to stop (or the training
    process ``parent_pid`` dies; "0": not watched)."""
    conn = Connection(int(fd))
    writing = threading.Lock()
    if int(parent_pid) > 0:
        _exit_with_parent(int(parent_pid), writing)
    for k in _DIST_ENV:
        os.environ.pop(k, None)
    import torch

    if int(num_threads) > 0:
        torch.set_num_threads(int(num_threads))
    # Import the heavy parts now, while the training is still starting, not at the first job
    # (the fine-tune pulls in most of transformers and accelerate: seconds on a busy machine).
    from transfer_probe.run.probe import failed_record, run_probe

    try:
        import transformers

        transformers.Trainer, transformers.TrainingArguments  # noqa: B018 - resolve the lazy imports
    except Exception:  # a broken optional dependency shows up in the first job's record instead
        pass

    history = HistoryWriter(history_path)
    try:
        conn.send(("ready", os.getpid()))
    except (OSError, ValueError):
        return
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return  # the training process is gone
        if msg is None:
            return
        job_id, job = msg
        try:
            record = run_probe(job)
        except Exception as exc:
            record = failed_record(job, exc)
        with writing:
            history.append(record)
            unwritten = history.take_held()  # the parent keeps them and retries (it outlives the worker)
        try:
            conn.send(("done", job_id, record.get("status"), unwritten))
        except (OSError, ValueError):
            history.extend(unwritten)
            history.close()
            return


def _signal_reason(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = {
            "SIGKILL": "killed (the out-of-memory killer, or a user)",
            "SIGSEGV": "segmentation fault",
            "SIGABRT": "aborted",
            "SIGBUS": "bus error",
            "SIGTERM": "terminated",
        }.get(name, "killed by a signal")
        return f"{hint}: {name}"
    return f"exited with code {returncode}"
