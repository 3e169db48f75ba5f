"""``ProbeLoop``: the probe loop, without a Trainer.

due -> snapshot -> jobs -> executor -> records -> verdicts -> adaptive repeats / extra probes ->
resume. ``TransferProbeCallback`` drives it from Trainer events and ``transfer_probe.posthoc``
from checkpoint folders; anything else can drive it from its own loop::

    loop = ProbeLoop([task], schedule=ProbeSchedule(every_tokens=1_000_000), executor="inline")
    loop.start("out/transfer_probe", tokenizer=tokenizer, model=model)
    loop.catch_up(step=0)                       # the no-pretraining baseline (and, on resume, what
    for step in ...:                            # a killed run left unjudged)
        point = loop.due(tokens_seen, step)
        if point is not None:
            for outcome in loop.probe(point, step, model):
                print(outcome.kind, outcome.values)
    loop.finish(timeout=600, step=step)

What the loop knows is kept in memory (``records``, ``run_records``); the history file is read
once, at ``start``, and stays the durable truth. Methods return :class:`Outcome` objects for the
caller to report (tracker values at the step they belong to, sinks, stopping rules); the readable
lines go to the ``transfer_probe`` logger.
"""

from __future__ import annotations

import copy
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transfer_probe.loop_setup import (
    announce_schedule,
    check_settings,
    check_tasks,
    resolve_executor,
)
from transfer_probe.loop_verdicts import Outcome, VerdictStep, _df, _log_line, _log_values
from transfer_probe.run.probe import FinetuneConfig, ProbeJob
from transfer_probe.run.snapshot import (
    RunSnapshots,
    Snapshot,
    capture_in_memory,
    count_parameters,
    find_interrupted_run,
    release_snapshot,
    snapshot_from_checkpoint,
    unwrap_model,
)
from transfer_probe.run.snapshot_writer import SnapshotWriter
from transfer_probe.schedule import ProbePoint, ProbeSchedule
from transfer_probe.store.history import HISTORY_FILENAME, HistoryWriter, read_history

__all__ = ["Outcome", "ProbeLoop"]

logger = logging.getLogger("transfer_probe")


class ProbeLoop:
    """One run's probes: when, on which weights, where they run, what their results lead to.

    Args are those of :class:`~transfer_probe.TransferProbeCallback` of the same names (tasks,
    executor, executor_options, finetune, repeats, adaptive_repeats, extra_probes, thresholds,
    baseline, budget_tokens, target_bleu, keep_snapshots, run_id), plus ``schedule`` (a
    ``ProbeSchedule``; ``None`` when the caller decides the points itself, as posthoc does),
    ``verdicts`` (diagnose new results; posthoc leaves that to its caller) and ``log_records`` (one
    readable line per record in the ``transfer_probe`` logger). Bad settings raise ``ValueError`` here.
    """

    def __init__(self, tasks: Sequence[Any], *, schedule: ProbeSchedule | None = None,
                 executor: str | type = "inline", executor_options: dict[str, Any] | None = None,
                 finetune: FinetuneConfig | None = None, repeats: int = 1, adaptive_repeats: int = 0,
                 extra_probes: int = 0, thresholds: Any = None, baseline: bool = True,
                 budget_tokens: float | None = None, target_bleu: float | None = None,
                 keep_snapshots: bool = False, run_id: str | None = None, verdicts: bool = True,
                 log_records: bool = True):
        self.tasks = check_tasks(tasks)
        self.schedule = schedule
        # Resolved once: the class, and whether its probes run in this thread before submit returns
        # (then snapshots stay in memory and the model at the step probed is still there).
        self.executor_cls = resolve_executor(executor)
        self.inline = getattr(self.executor_cls, "name", None) == "inline"
        self.executor_options = dict(executor_options or {})
        self.finetune = finetune if finetune is not None else FinetuneConfig()
        self.repeats, self.adaptive_repeats, self.extra_probes = check_settings(
            self.finetune, repeats=repeats, adaptive_repeats=adaptive_repeats, extra_probes=extra_probes,
            budget_tokens=budget_tokens, target_bleu=target_bleu)
        self.thresholds = thresholds
        self.baseline = bool(baseline)
        self.budget_tokens, self.target_bleu = budget_tokens, target_bleu
        self.keep_snapshots = bool(keep_snapshots)
        self.run_id = run_id
        self.verdicts_on, self.log_records = bool(verdicts), bool(log_records)
        self.tokenizer: Any = None
        self.tokens_source: str | None = None  # how tokens seen are counted (recorded with each point)
        # Run state (set at start).
        self.history_path: Path | None = None
        self.executor: Any = None
        self.snapshots_dir: Path | None = None
        self.current: tuple[Any, int] | None = None  # (model, step) while probing it in this thread
        self.records: list[dict] = []  # results seen by this loop in this process
        self.run_records: list[dict] = []  # every record of this run (resumed ones too), as written
        self.timing: dict[str, float] = defaultdict(float)  # snapshot, submit, poll, diagnose
        self.end_wait_seconds = 0.0
        self._history: HistoryWriter | None = None
        self._writer: SnapshotWriter | None = None
        self._run_snapshots: RunSnapshots | None = None
        self._verdicts: VerdictStep | None = None
        self._done_steps: set[int] = set()
        self._recorded: set[tuple] = set()  # (step, pretrained, task, D_f, repeat) with a record
        self._last_probe_step: int | None = None
        self._resuming = False
        self._model_config: Any = None
        self._params: dict[str, int] = {}

    # ------------------------------------------------------------------------------------------
    # Start
    def start(self, root: str | Path, *, tokenizer: Any = None, model: Any = None, resuming: bool = False,
              step: int = 0, tokens: int = 0, history: str | Path | None = None, read: bool = True,
              snapshots: bool = True) -> None:
        """Open the run under ``root``: its history (``history``, default ``root/history.jsonl``) is read
        once (``read=False``: a new run that needs nothing from it), the ``run_id`` picked or kept, the
        run's snapshot folder ``root/snapshots/<run_id>`` claimed (``snapshots=False``: the caller's
        snapshots are folders of its own), the executor started. ``resuming``: training goes on at ``step``."""
        root = Path(root)
        self.tokenizer = tokenizer
        if model is not None:
            inner = unwrap_model(model)
            self._model_config = copy.deepcopy(getattr(inner, "config", None))
            self._params = count_parameters(inner)
        self.history_path = Path(history) if history is not None else root / HISTORY_FILENAME
        self._history = HistoryWriter(self.history_path)
        self._writer = SnapshotWriter()
        self._resuming = bool(resuming)
        self._read_history(step, tokens, root / "snapshots", read=read)
        # This run's own snapshot folder, locked while it lives; only dead runs' folders are cleaned.
        if self._run_snapshots is not None:  # an earlier run of this loop that raised
            self._run_snapshots.release()
            self._run_snapshots = None
        if snapshots:
            self._run_snapshots = RunSnapshots.claim(root / "snapshots", self.run_id,
                                                     keep_snapshots=self.keep_snapshots)
            self.snapshots_dir = self._run_snapshots.path
        if self.schedule is not None:
            self.schedule.start(tokens)
        self.executor = self.executor_cls(self.history_path, keep_snapshots=self.keep_snapshots,
                                          **self.executor_options)
        self._verdicts = VerdictStep(thresholds=self.thresholds, budget_tokens=self.budget_tokens,
                                     target_bleu=self.target_bleu, adaptive_repeats=self.adaptive_repeats,
                                     extra_probes=self.extra_probes) if self.verdicts_on else None
        if self.schedule is not None:
            logger.info("transfer_probe | run %s: probing %s (%s executor); history %s", self.run_id,
                        self.schedule.describe(), getattr(self.executor, "name", self.executor_cls.__name__),
                        self.history_path)

    def _read_history(self, step: int, tokens: int, snapshots_root: Path, *, read: bool) -> None:
        """Continue a run found in the history when resuming (the run whose process died, else the last one)."""
        every = []
        if read and self.history_path.exists():
            try:
                every = read_history(self.history_path)
            except ValueError as err:
                raise ValueError(f"cannot resume from {self.history_path}: {err}") from None
        records = [r for r in every if r.get("kind", "probe") == "probe"]
        if self.run_id is None:
            # A killed run may have no record yet, and the last record may be another live run's.
            interrupted = find_interrupted_run(snapshots_root) if self._resuming else None
            if interrupted is not None:
                self.run_id = interrupted
            elif self._resuming and records:
                self.run_id = str(records[-1].get("run_id"))
            else:
                self.run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        # What this run knows, kept in memory from here on (the file stays the durable truth).
        self.run_records = [r for r in every if str(r.get("run_id")) == self.run_id]
        mine = [r for r in self.run_records if r.get("kind", "probe") == "probe"]
        self._done_steps = {int(r.get("step") or 0) for r in mine if r.get("pretrained", True)}
        self._recorded = {_job_key(r) for r in mine}
        if self._resuming:
            logger.info(
                "transfer_probe | resuming run %s at step %d (%d tokens); %d probe records in the history, "
                "steps already probed are not probed again", self.run_id, step, tokens, len(mine),
            )

    def catch_up(self, step: int) -> list[Outcome]:
        """After ``start``: on resume, probe again the points a dead process submitted that have no
        record (their snapshots are still in the run's folder) and judge the records it never judged;
        then the no-pretraining baseline, once per run."""
        out = self._finish_interrupted(step)
        if self.baseline:
            snap = Snapshot(tokens=0, step=0, params=self._params, config=self._model_config,
                            pretrained=False, tokenizer=self.tokenizer)
            jobs = self.unrecorded(self.jobs(snap, {"reasons": ["baseline"]}))
            if jobs:
                self.executor.submit(jobs)
        return out + self.collect(step)

    def _finish_interrupted(self, step: int) -> list[Outcome]:
        for snap in self._run_snapshots.leftovers() if self._run_snapshots is not None else ():
            jobs = self.unrecorded(self.jobs(snap, {"reasons": ["resubmitted: no record before the restart"]}))
            # a fresh start (same run_id) has no use for older weights
            if not jobs or not self._resuming:
                if not self.keep_snapshots:
                    release_snapshot(snap)
                continue
            logger.info("transfer_probe | step %d was submitted before the restart and has %d probe(s) without a "
                        "record; probing again from its snapshot", snap.step, len(jobs))
            self.executor.submit(jobs)
            self._done_steps.add(snap.step)
        unjudged: dict[tuple, dict] = {}
        for r in self.run_records if self._resuming else []:
            if r.get("kind", "probe") == "verdict":
                unjudged.pop((str(r.get("task")), _df(r)), None)
            elif r.get("kind", "probe") == "probe" and r.get("status") == "ok" and r.get("pretrained", True):
                unjudged[(str(r.get("task")), _df(r))] = r
        return self._judge(list(unjudged.values()), step) if unjudged else []

    # ------------------------------------------------------------------------------------------
    # Probe points
    def due(self, tokens: int, step: int, *, saving: bool = False) -> ProbePoint | None:
        """The probe point at ``step`` (``tokens`` seen), or ``None``: not due, already probed at this
        step, or a step that has records in the history (a resumed run)."""
        if self._last_probe_step == step or self.schedule is None:
            return None
        point = self.schedule.due(tokens, saving=saving)
        if point is None:
            return None
        if step in self._done_steps:
            logger.info("transfer_probe | step %d already has probe records in the history; not probing again", step)
            return None
        self._last_probe_step = step
        return point

    def probe(self, point: ProbePoint, step: int, model: Any) -> list[Outcome]:
        """Snapshot ``model``, submit the point and report what is back; with an inline executor the
        re-measurements a verdict asks for (adaptive repeats) are done and reported here too."""
        self.current = (model, step)
        try:
            self.submit(point, step, model)
            out = self.collect(step)
            # The adaptive budget bounds the rounds: each may ask for another.
            for _ in range(self.adaptive_repeats):
                if not self.inline or not self.executor.pending:
                    break
                out += self.collect(step)
            return out
        finally:
            self.current = None

    def submit(self, point: ProbePoint, step: int, model: Any, checkpoint: Path | None = None) -> None:
        """Snapshot the weights at ``step`` (from ``checkpoint`` when the Trainer just saved one) and
        hand the point's jobs to the executor. A snapshot that cannot be taken skips the point."""
        inner = unwrap_model(model)
        t_snap = time.perf_counter()
        sched = self._schedule_info(point)
        try:
            snap = self._snapshot(point.tokens, step, inner, checkpoint)
            if snap is None:
                # The training thread only pays for a CPU copy; a writer thread writes the files and
                # then submits the jobs (in order).
                mem = capture_in_memory(inner, tokens=point.tokens, step=step, tokenizer=self.tokenizer)
                self._writer.put(mem, self.snapshots_dir / f"step-{step}",
                                 lambda snap: self.executor.submit(self.jobs(snap, sched)))
                self.timing["snapshot"] += time.perf_counter() - t_snap
                self._done_steps.add(step)
                return
        except Exception as exc:  # a snapshot that cannot be taken must not stop training
            logger.warning("transfer_probe | could not snapshot step %d for probing: %s: %s; skipping this point",
                           step, type(exc).__name__, exc)
            return
        t = time.perf_counter()
        self.timing["snapshot"] += t - t_snap
        self.executor.submit(self.jobs(snap, sched))
        self.timing["submit"] += time.perf_counter() - t
        self._done_steps.add(step)

    def _snapshot(self, tokens: int, step: int, inner: Any, checkpoint: Path | None) -> Snapshot | None:
        """In memory (inline), hard-linked from the checkpoint, or ``None``: to be written by the writer."""
        if self.inline:
            return capture_in_memory(inner, tokens=tokens, step=step, tokenizer=self.tokenizer)
        if checkpoint is None:
            return None
        try:
            return snapshot_from_checkpoint(checkpoint, self.snapshots_dir / f"step-{step}", tokens=tokens,
                                            step=step, params=count_parameters(inner), tokenizer=self.tokenizer)
        except ValueError as err:
            logger.warning("transfer_probe | %s; saving the snapshot from the model instead", err)
            return None

    def _schedule_info(self, point: ProbePoint) -> dict:
        return {"reasons": list(point.reasons), "covered": list(point.covered), "tokens_source": self.tokens_source}

    def jobs(self, snap: Snapshot, schedule: dict | None = None, extra: dict | None = None) -> list[ProbeJob]:
        """One job per (task, D_f, repeat) on ``snap``; ``extra`` goes into each record."""
        more = {"schedule": schedule} if schedule is not None else {}
        return [ProbeJob(snapshot=snap, task=task, finetune_size=df, config=self.finetune, repeat=r,
                         run_id=self.run_id, extra={**more, **(extra or {})})
                for task in self.tasks for df in task.finetune_sizes for r in range(self.repeats)]

    def submit_jobs(self, jobs: list[ProbeJob]) -> None:
        """Hand jobs the caller built (``jobs``) on snapshots of its own (posthoc: checkpoint folders)."""
        self.executor.submit(jobs)

    def unrecorded(self, jobs: list[ProbeJob]) -> list[ProbeJob]:
        """The jobs that have no record in this run's history yet."""
        return [j for j in jobs if (int(j.snapshot.step), bool(j.snapshot.pretrained), str(j.task.name),
                                    int(j.finetune_size), int(j.repeat)) not in self._recorded]

    # ------------------------------------------------------------------------------------------
    # Results
    def collect(self, step: int) -> list[Outcome]:
        """The records back from the executor since the last call, and what they lead to; ``step``:
        where the caller is now (a late result says so in its line)."""
        if self.executor is None:
            return []
        t = time.perf_counter()
        records = self.executor.poll()
        self.timing["poll"] += time.perf_counter() - t
        return self._handle(records, step)

    def keep(self, rec: dict) -> None:
        """Append a record of this run to the history and to what the loop knows."""
        self._history.append(rec)
        self.run_records.append(rec)

    def _handle(self, records: list[dict], step: int) -> list[Outcome]:
        if not records:
            return []
        out = []
        for rec in records:
            self.records.append(rec)
            self.run_records.append(rec)
            self._recorded.add(_job_key(rec))
            if self.log_records:
                _log_line(rec, step, self.repeats)
            out.append(Outcome("record", record=rec))
        # One value set per probe point (tokens, pretrained): repeats averaged.
        groups: dict[tuple, list[dict]] = defaultdict(list)
        for rec in records:
            groups[(rec.get("tokens"), rec.get("step"), bool(rec.get("pretrained", True)))].append(rec)
        for (tokens, rec_step, pretrained), recs in groups.items():
            values = _log_values(recs, pretrained)
            if pretrained:
                values["transfer_probe/tokens"] = float(tokens or 0)
                values["transfer_probe/step"] = float(rec_step or 0)
            # plotted at the step probed, not the step the result arrived (process executor); the
            # no-pretraining baseline belongs at step 0
            out.append(Outcome("point", values, int(rec_step or 0) if pretrained else 0))
        return out + self._judge(records, step)

    def _judge(self, records: list[dict], step: int) -> list[Outcome]:
        if self._verdicts is None:
            return []
        t = time.perf_counter()
        out = self._verdicts.judge(self, records, step) + self._verdicts.data_transferred(self, records)
        self.timing["diagnose"] += time.perf_counter() - t
        return out

    # ------------------------------------------------------------------------------------------
    # End
    def finish(self, timeout: float | None = None, step: int = 0) -> list[Outcome]:
        """Wait up to ``timeout`` s for outstanding probes (what does not finish is recorded as
        failed), release the run's folder, report the last results and the warnings still standing."""
        if self.executor is None:
            return []
        t = time.perf_counter()
        self._writer.join()
        self._writer.close()
        records = self.executor.close(timeout=timeout)
        if self._run_snapshots is not None:
            self._run_snapshots.release()
        self.end_wait_seconds = time.perf_counter() - t
        out = self._handle(records, step)
        try:
            # "Say it at the end": marked so they do not read as a repeat of the probe that raised them.
            for line in self._verdicts.final_lines() if self._verdicts is not None else []:
                logger.info("transfer_probe | end of training, still standing: %s", line)
        except Exception as exc:  # diagnosis must never break the end of training
            logger.warning("transfer_probe | final verdict summary failed: %s", exc)
        return out

    @property
    def unwritten(self) -> list[dict]:
        """Records the executor's history writer still holds (disk full, read-only) after ``finish``."""
        history = getattr(self.executor, "history", None)
        return list(getattr(history, "held", []) or [])

    def announce(self, tokens: int, per_step: int | None, max_steps: int) -> None:
        """Say at the start when the schedule cannot reach a verdict before the end of training
        (``per_step``: tokens per step when known; ``max_steps``: the training's last step, 0 if unknown)."""
        if self.schedule is not None:
            announce_schedule(self.schedule, self.thresholds, tokens, per_step, max_steps)


def _job_key(rec: dict) -> tuple:
    try:
        return (int(rec.get("step") or 0), bool(rec.get("pretrained", True)), str(rec.get("task")),
                int(_df(rec)), int(rec.get("repeat") or 0))
    except (TypeError, ValueError):
        return ()
