"""Executors: where probe jobs run. ``inline`` blocks training; ``process`` runs beside it.

Every executor implements the same small interface (:class:`Executor`), so the callback does not
care where a probe runs and a third-party executor (the Ray one in ``plugins/``) plugs in by name:

- ``Executor(history_path, *, keep_snapshots=False, **options)``: probe records go to the history
  file at ``history_path`` (the executor, or its worker, appends them);
- ``submit(jobs) -> bool``: one probe point, a ``ProbeJob`` or a list of them sharing a snapshot;
  ``False`` when the executor declined the point (queue full, see ``overflow``);
- ``poll() -> list[dict]``: the records of submitted jobs that reached the history since the last
  poll (each job's record comes back exactly once, ``ok`` or ``failed``);
- ``pending``: jobs submitted whose record has not been returned by ``poll`` yet;
- ``close(timeout=None) -> list[dict]``: wait up to ``timeout`` seconds for outstanding jobs, record
  the ones that did not finish as failed, stop, and return the records not yet polled.

A job's snapshot directory (if any) is deleted once every job of its point has a record, unless
``keep_snapshots=True``. ``submit`` may be called from a background thread (the callback's snapshot
writer submits a point once its files are written), so an executor must be thread-safe there.

Example::

    from transfer_probe.run.executors import ProcessExecutor

    ex = ProcessExecutor("out/transfer_probe/history.jsonl", max_pending=2)
    ex.submit([ProbeJob(snapshot=snap, task=task, finetune_size=df) for df in task.finetune_sizes])
    ...                                    # training goes on
    for record in ex.poll():               # at a later step
        print(record["task"], record["metrics"].get("bleu"))
    ex.close(timeout=600)

The plugin manager is the one registry of executors by name, built-ins included
(``transfer_probe.plugins.get_executor("process")``).

The package: ``base.py`` (the interface and its history bookkeeping, ``check_options``),
``inline.py``, ``process.py`` (the worker's keeper) and ``worker.py`` (the worker process itself).
"""

from __future__ import annotations

from transfer_probe.run.executors.base import Executor, ProbeNotFinished, WorkerDied, check_options
from transfer_probe.run.executors.inline import InlineExecutor
from transfer_probe.run.executors.process import ProcessExecutor
from transfer_probe.run.executors.worker import _worker_main  # noqa: F401 - the worker's old entry point

__all__ = ["Executor", "InlineExecutor", "ProcessExecutor", "WorkerDied", "ProbeNotFinished", "check_options"]
