"""``InlineExecutor``: each probe runs in the calling thread, before ``submit`` returns."""

from __future__ import annotations

from typing import Any

from transfer_probe.run.executors.base import Executor, _as_jobs


class InlineExecutor(Executor):
    """Run each probe in the calling thread, before ``submit`` returns (training waits).

    Simplest and exact: nothing runs beside the training. Not usable under multi-process training
    (a probe's fine-tune on one rank would join the other ranks' collectives); use ``process`` there.
    """

    name = "inline"

    def submit(self, jobs: Any) -> bool:
        from transfer_probe.run.probe import run_probe

        jobs = _as_jobs(jobs)
        self._register(jobs)
        for job in jobs:
            try:
                record = run_probe(job)
            except Exception as exc:  # any probe failure (incl. OOM, NaN loss) becomes a record
                self._record_failure(job, exc)
            else:
                self.history.append(record)
        return True

