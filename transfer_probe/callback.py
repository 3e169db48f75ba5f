"""The Trainer-facing part: ``TransferProbeCallback``.

Add it to any ``transformers.Trainer``. At each probe point (by pre-training tokens seen) it takes a
snapshot of the weights, hands one probe job per (task, fine-tuning size D_f, repeat) to an
executor, and reports every result: one readable line in the ``transfer_probe`` logger, the numbers
through ``trainer.log`` (so W&B, TensorBoard, MLflow... show them), a record in the history file and,
when ``transfer_probe.diagnose`` is available, a verdict (fitted law, prediction, warning).

Usage::

    from transformers import Trainer, TrainingArguments
    from transfer_probe import TransferProbeCallback, TranslationTask, FinetuneConfig
    from transfer_probe.schedule import log_points

    probe = TransferProbeCallback(
        tasks=[TranslationTask.from_files("en-de.train.jsonl", "en-de.test.jsonl", source="en",
                                          target="de", finetune_sizes=[2_000, 20_000])],
        every_tokens=50_000_000,                  # and/or token_points=log_points(1e7, 2e10, 12), on_save=True
        executor="process",                       # "inline" (blocks training) | "process" | "ray"
        finetune=FinetuneConfig(max_steps=300, learning_rate=3e-4),
        budget_tokens=2e10, target_bleu=25.0,     # what the verdicts predict for
        stop_on=["misaligned"],                   # optional: stop pre-training on such a verdict
    )
    trainer = Trainer(model=model, args=TrainingArguments(..., include_num_input_tokens_seen=True),
                      train_dataset=train, processing_class=tokenizer, callbacks=[probe])
    trainer.train()

``trainer.log``: a ``TrainerCallback`` is not given its trainer, so the callback finds it when the
Trainer first calls it (``on_init_end`` when passed in ``callbacks=[...]``, else ``on_train_begin``):
it is the ``Trainer`` whose method is calling the callback. Nothing to do in the usual case; with a
custom training loop call ``probe.attach(trainer)``. Keys are namespaced by task and D_f, with the
tokens axis alongside (a late result from the process executor is logged at the current step with
its own tokens)::

    transfer_probe/en-de/df=2000/bleu, .../chrf, .../cross_entropy, transfer_probe/tokens,
    transfer_probe/step, transfer_probe/en-de/df=2000/baseline/bleu (the no-pretraining baseline)

Distributed training: only the world-process-zero decides and does probe work (snapshots, jobs,
logging); other ranks return at once from every event, so no probe work enters the training's
collectives. Use ``executor="process"`` (or ``"ray"``) there: a probe fine-tuning through accelerate
inside a rank of a DDP run would wait on the other ranks. Under FSDP or DeepSpeed a rank holds a
shard, so probe ``on_save=True`` only: snapshots are then hard-linked from the consolidated
checkpoint (``fsdp_config={"state_dict_type": "FULL_STATE_DICT"}``, DeepSpeed ZeRO-3
``stage3_gather_16bit_weights_on_model_save``).

Devices: a probe fine-tunes where ``FinetuneConfig.device`` says (default ``None``: accelerate's
choice, the first GPU if there is one, else CPU). With ``executor="process"`` you can instead pin the
worker with ``executor_options={"device": "cuda:7"}`` (only that GPU is visible to it; leave
``FinetuneConfig.device`` unset then) or ``{"device": "cpu"}``.

Resume: the history is the record of what was probed. On ``trainer.train(resume_from_checkpoint=...)``
the callback continues that run (same ``run_id``), starts the schedule at the checkpoint's tokens,
and skips any step that already has records, so no probe point is lost or recorded twice. With the
process executor, a point submitted before a kill whose probes have no record is probed again from
its snapshot (kept in the run's folder, ``snapshots/<run_id>/``), and records the dead process never
judged get their verdict at once.
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
import numbers
import queue
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from transfer_probe.run.executors import EXECUTORS, Executor, check_options
from transfer_probe.run.probe import FinetuneConfig, ProbeJob, check_probe_setup
from transfer_probe.run.snapshot import (
    RunSnapshots,
    Snapshot,
    capture_in_memory,
    find_interrupted_run,
    release_snapshot,
    snapshot_from_checkpoint,
    unwrap_model,
    write_snapshot,
)
from transfer_probe.schedule import ProbePoint, ProbeSchedule, TokenCounter
from transfer_probe.store.history import HISTORY_FILENAME, HistoryWriter, read_history
from transfer_probe.text import format_tokens

__all__ = ["TransferProbeCallback"]

logger = logging.getLogger("transfer_probe")


class _ProgressSafeHandler(logging.StreamHandler):
    """Writes through tqdm when it is there, so a line is not glued to the Trainer's progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm.auto import tqdm

            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging must never raise into training
            self.handleError(record)


def _make_lines_visible() -> None:
    """A plain script configures no logging, so INFO lines of the library would vanish (Python's
    last-resort handler shows WARNING and above only). Like transformers' own library logger, give
    ours a handler then, at INFO; leave everything alone when the program configured logging."""
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = _ProgressSafeHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)

STOP_ON_CHOICES = ("misaligned", "law_break", "no_transfer", "stop")


class TransferProbeCallback(TrainerCallback):
    """Probe downstream transfer while pre-training (see the module docstring for a full example).

    Args:
        tasks: downstream tasks (``TranslationTask``, ``CodeTask``, any ``transfer_probe.tasks.Task``);
            each probes every one of its ``finetune_sizes`` (D_f). Names must be unique.
        every_tokens: probe every N pre-training tokens seen.
        token_points: probe at these token counts (for example ``log_points(1e6, 1e9, 10)``).
        on_save: also probe at every checkpoint save (the probe happens in ``on_step_end`` of the
            saving step, so the checkpoint's history contains it).
        executor: ``"inline"`` (runs in the callback; training waits), ``"process"`` (a background
            worker process; training continues), or any name registered by a plugin (``"ray"``), or
            an executor class.
        executor_options: keyword arguments for the executor (e.g. ``{"max_pending": 2,
            "num_threads": 1, "device": "cuda:7"}`` for ``process``).
        finetune: the fine-tuning budget and measurement settings of every probe
            (:class:`~transfer_probe.run.probe.FinetuneConfig`; defaults are for tiny models).
        repeats: independent fine-tunes per (point, task, D_f), different seeds (and data subsets
            with ``FinetuneConfig(resample_data=True)``); fits use their mean and spread.
        adaptive_repeats: a cost cap, in fine-tunes over the whole run, for re-measuring suspected or
            borderline points: when a verdict is ``suspected`` (a first break signal) or a warning is borderline, the
            callback first runs ``max(repeats, 2)`` more fine-tunes at the newest point and warns only
            if the verdict stands. Needs the point's weights: the inline executor (still at that
            step) or ``keep_snapshots=True``. Default 0: off.
        extra_probes: a cap, in probe points over the whole run, on extra probes after a first break
            signal: when a verdict is ``suspected``, one more probe is scheduled halfway (in log
            tokens) to the next scheduled point, so the signal is confirmed or cleared sooner.
            Default 0: off.
        thresholds: the decision thresholds of the verdicts (``transfer_probe.diagnose.Thresholds``;
            default ``DEFAULT_THRESHOLDS``, calibrated in benchmarks/README.md).
        baseline: also probe a randomly initialized model of the same config, once per run
            (records with ``pretrained: false``; needed for the transfer law).
        budget_tokens: the pre-training tokens you plan; verdicts predict the metric there.
        target_bleu: a score you want; verdicts estimate the tokens needed to reach it.
        output_dir: where ``transfer_probe/history.jsonl`` (and snapshots) go; default the Trainer's
            ``args.output_dir``.
        stop_on: verdicts that stop pre-training (``control.should_training_stop``): any of
            ``"misaligned"``, ``"law_break"``, ``"no_transfer"``, or ``"stop"`` (any verdict whose
            recommendation is stop). Only a verdict recommending ``stop`` stops: a first signal
            (``suspected``) never does, nor a ``no_transfer`` that waits. Default: never stop.
        keep_snapshots: keep snapshot directories after their probes (default: delete them).
        tokenizer: the tokenizer the probes use; default the Trainer's ``processing_class``.
        seq_len: tokens per training example, to count tokens seen when
            ``include_num_input_tokens_seen`` is off (default: read from the data or model config).
        end_timeout: seconds to wait at the end of training for probes still running (``None``:
            wait for all); what does not finish is recorded as failed.
        run_id: identifies this run in the history (default: new per run, kept on resume).
        sinks: where records and verdicts also go (``"jsonl:path"``, ``"webhook:url"``, sink objects).
        trainer: the Trainer, when you want to give it explicitly (it is found automatically).

    Raises ``ValueError`` at construction for bad settings and tasks, and at ``on_train_begin``
    (before any training step) for a tokenizer or model that does not fit the tasks.
    """

    def __init__(
        self,
        tasks: Sequence[Any],
        *,
        every_tokens: int | None = None,
        token_points: Iterable[int] | None = None,
        on_save: bool = False,
        executor: str | type = "inline",
        executor_options: dict[str, Any] | None = None,
        finetune: FinetuneConfig | None = None,
        repeats: int = 1,
        adaptive_repeats: int = 0,
        extra_probes: int = 0,
        thresholds: Any = None,
        baseline: bool = True,
        budget_tokens: float | None = None,
        target_bleu: float | None = None,
        output_dir: str | None = None,
        stop_on: Iterable[str] | None = None,
        keep_snapshots: bool = False,
        tokenizer: Any = None,
        seq_len: int | None = None,
        end_timeout: float | None = 1800.0,
        run_id: str | None = None,
        sinks: Iterable[Any] | None = None,
        trainer: Any = None,
    ):
        _make_lines_visible()
        self.tasks = _check_tasks(tasks)
        self.schedule = ProbeSchedule(every_tokens=every_tokens, token_points=token_points, on_save=on_save)
        self.counter = TokenCounter(seq_len=seq_len)
        self.executor_cls = _resolve_executor(executor)
        self.executor_options = dict(executor_options or {})
        if finetune is None:
            finetune = FinetuneConfig()
        if not isinstance(finetune, FinetuneConfig):
            raise ValueError(f"finetune must be a transfer_probe.FinetuneConfig, got {type(finetune).__name__}")
        self.finetune = finetune
        if not isinstance(repeats, numbers.Integral) or isinstance(repeats, bool) or repeats < 1:
            raise ValueError(f"repeats must be a positive integer (fine-tunes per probe point), got {repeats!r}")
        self.repeats = int(repeats)
        if not isinstance(adaptive_repeats, numbers.Integral) or isinstance(adaptive_repeats, bool) \
                or adaptive_repeats < 0:
            raise ValueError(f"adaptive_repeats must be a non-negative integer (extra fine-tunes over the run), "
                             f"got {adaptive_repeats!r}")
        self.adaptive_repeats = int(adaptive_repeats)
        self._adaptive_left = self.adaptive_repeats
        if not isinstance(extra_probes, numbers.Integral) or isinstance(extra_probes, bool) or extra_probes < 0:
            raise ValueError(f"extra_probes must be a non-negative integer (extra probe points over the run), "
                             f"got {extra_probes!r}")
        self.extra_probes = int(extra_probes)
        self._extra_left = self.extra_probes
        self.thresholds = thresholds
        self._current: tuple[Any, int] | None = None  # (model, step) during the event that probes it
        self._adaptive_warned = False
        self.baseline = bool(baseline)
        for name, v in (("budget_tokens", budget_tokens), ("target_bleu", target_bleu)):
            if v is not None and (not isinstance(v, numbers.Real) or isinstance(v, bool)
                                  or not math.isfinite(v) or v <= 0):
                raise ValueError(f"{name} must be a positive number or None, got {v!r}")
        self.budget_tokens = budget_tokens
        self.target_bleu = target_bleu
        self.stop_on = _check_stop_on(stop_on)
        if end_timeout is not None and (not isinstance(end_timeout, numbers.Real) or end_timeout < 0):
            raise ValueError(f"end_timeout must be a non-negative number of seconds or None, got {end_timeout!r}")
        self.end_timeout = end_timeout
        self.output_dir = output_dir
        self.keep_snapshots = bool(keep_snapshots)
        self.tokenizer = tokenizer
        self.run_id = run_id
        self.sinks = _make_sinks(sinks)
        self.trainer = trainer

        # Run state (set at on_train_begin).
        self.history_path: Path | None = None
        self.executor: Executor | None = None
        self._history: HistoryWriter | None = None
        self._active = False
        self._done_steps: set[int] = set()
        self._last_probe_step: int | None = None
        self._deferred: tuple[ProbePoint, int] | None = None
        self._model_config: Any = None
        self._tracker: Any = None
        self._warned_no_trainer = False
        # Time the training loop spent inside this callback's events (probe work, snapshots), and
        # the wait for outstanding probes at the end of training (not counted as blocked).
        self.blocked_seconds = 0.0
        # Where the blocked time went: snapshot, submit, poll, report (log lines, trainer.log), diagnose.
        self.timing: dict[str, float] = defaultdict(float)
        self.end_wait_seconds = 0.0
        self.records: list[dict] = []  # results seen by this callback in this process
        self._mine: list[dict] = []  # every record of this run (resumed ones too), as written
        self._run_snapshots: RunSnapshots | None = None
        self._recorded: set[tuple] = set()  # (step, pretrained, task, D_f, repeat) with a record in the history

    # ------------------------------------------------------------------------------------------
    # Trainer discovery
    def attach(self, trainer: Any) -> TransferProbeCallback:
        """Give the callback its trainer (for ``trainer.log``); adds the callback if missing."""
        self.trainer = trainer
        handler = getattr(trainer, "callback_handler", None)
        if handler is not None and self not in handler.callbacks:
            trainer.add_callback(self)
        return self

    def _discover_trainer(self) -> None:
        if self.trainer is not None:
            return
        try:
            from transformers import Trainer
        except ImportError:  # pragma: no cover
            return
        frame = inspect.currentframe()
        try:
            depth = 0
            while frame is not None and depth < 30:
                candidate = frame.f_locals.get("self")
                if isinstance(candidate, Trainer):
                    self.trainer = candidate
                    return
                frame = frame.f_back
                depth += 1
        finally:
            del frame

    def on_init_end(self, args, state, control, **kwargs):
        self._discover_trainer()

    # ------------------------------------------------------------------------------------------
    # Start
    def on_train_begin(self, args, state, control, model=None, processing_class=None, train_dataloader=None,
                       **kwargs):
        self._discover_trainer()
        tokenizer = self.tokenizer if self.tokenizer is not None else _tokenizer_of(processing_class)
        if tokenizer is None:
            raise ValueError(
                "TransferProbeCallback needs a tokenizer: pass Trainer(processing_class=tokenizer) or "
                "TransferProbeCallback(tokenizer=tokenizer)"
            )
        self.tokenizer = tokenizer
        inner = unwrap_model(model) if model is not None else None
        config = getattr(inner, "config", None)
        if config is None:
            raise ValueError("TransferProbeCallback: the Trainer's model has no .config (a transformers model is needed)")
        for task in self.tasks:
            task.validate(tokenizer, config)
        if isinstance(self.executor_cls, type):
            check_options(self.executor_cls, dict(self.executor_options or {}))
        check_probe_setup(self.finetune, self.tasks, inner, tokenizer, executor=self.executor_cls,
                          executor_options=self.executor_options)
        self._model_config = copy.deepcopy(config)
        world = int(getattr(args, "world_size", 1) or 1)
        if world > 1 and self.executor_cls.__name__ == "InlineExecutor":
            raise ValueError(
                f"executor='inline' cannot run under multi-process training (world size {world}): a nested "
                "Trainer on one rank would wait on the other ranks. Use executor='process' (or 'ray')."
            )
        if _is_sharded(args) and (self.schedule.every_tokens or self.schedule.token_points):
            raise ValueError(
                "under FSDP/DeepSpeed a rank holds only a shard of the weights: probe with on_save=True only "
                "(every_tokens/token_points unset), so snapshots come from the consolidated checkpoint "
                "(FSDP state_dict_type FULL_STATE_DICT; DeepSpeed stage3_gather_16bit_weights_on_model_save)"
            )
        if _is_sharded(args) and self.executor_cls.__name__ == "InlineExecutor":
            raise ValueError("under FSDP/DeepSpeed use executor='process' (or 'ray'), not 'inline'")
        self._active = bool(state.is_world_process_zero)
        if not self._active:
            return  # other ranks: no probe work at all
        self.counter.setup(args, model=inner, train_dataloader=train_dataloader)
        root = Path(self.output_dir or args.output_dir or ".") / "transfer_probe"
        self.history_path = root / HISTORY_FILENAME
        self._history = HistoryWriter(self.history_path)
        self._writer = _SnapshotWriter()
        tokens = self.counter.tokens(state)
        self._resume_from_history(state, tokens, root / "snapshots")
        # This run's own snapshot folder, locked while it lives; only dead runs' folders are cleaned.
        if self._run_snapshots is not None:  # an earlier train() of this callback that raised
            self._run_snapshots.release()
        self._run_snapshots = RunSnapshots.claim(root / "snapshots", self.run_id, keep_snapshots=self.keep_snapshots)
        self._snapshots_dir = self._run_snapshots.path
        self.schedule.start(tokens)
        self.executor = self.executor_cls(self.history_path, keep_snapshots=self.keep_snapshots,
                                          **self.executor_options)
        self._init_diagnosis()
        logger.info("transfer_probe | run %s: probing %s (%s executor); history %s", self.run_id,
                    self.schedule.describe(), getattr(self.executor, "name", self.executor_cls.__name__),
                    self.history_path)
        self._announce_schedule_size(state, tokens)
        t = time.perf_counter()
        self._finish_interrupted(state, control)
        if self.baseline:
            snap = Snapshot(tokens=0, step=0, params=_params_of(inner), config=self._model_config,
                            pretrained=False, tokenizer=self.tokenizer)
            jobs = self._unrecorded(self._jobs(snap, {"reasons": ["baseline"]}))
            if jobs:
                self.executor.submit(jobs)
        self.blocked_seconds += time.perf_counter() - t
        self._collect(state, control)

    def _announce_schedule_size(self, state, tokens: int) -> None:
        """Say at the start when the schedule cannot reach a verdict before the end of training."""
        per_step = self.counter.tokens_per_step if self.counter.method != "trainer" else None
        max_steps = int(getattr(state, "max_steps", 0) or 0)
        if self.schedule.every_tokens is not None and not per_step:
            return  # tokens per step unknown until training runs: nothing exact to say
        end = max_steps * per_step if per_step and max_steps > 0 else max(self.schedule.token_points or (0,))
        if per_step and max_steps > 0:
            n = _probe_steps(self.schedule, int(tokens) // per_step, max_steps, per_step)
        else:  # tokens per step unknown: the points themselves (several crossed in one step probe once)
            n = self.schedule.count_between(int(tokens), int(end))
        if n is None:
            return
        from transfer_probe.diagnose import DEFAULT_THRESHOLDS

        need = (self.thresholds or DEFAULT_THRESHOLDS).min_points
        if n < need:
            logger.warning("transfer_probe | only %d probe point%s scheduled up to %s tokens; a verdict needs at least "
                           "%d after the warm-up: every verdict will read insufficient_data. Add points "
                           "(token_points=log_points(...), a smaller every_tokens)", n, "" if n == 1 else "s",
                           format_tokens(end), need)
        else:
            logger.info("transfer_probe | %d probe points scheduled up to %s tokens; a verdict needs at least %d "
                        "after the warm-up", n, format_tokens(end), need)

    def _resume_from_history(self, state, tokens: int, snapshots_root: Path) -> None:
        """Continue a run found in the history when resuming (the run whose process died, else the last one)."""
        every = []
        if self.history_path.exists():
            try:
                every = read_history(self.history_path)
            except ValueError as err:
                raise ValueError(f"cannot resume from {self.history_path}: {err}") from None
        records = [r for r in every if r.get("kind", "probe") == "probe"]
        resuming = state.global_step > 0
        if self.run_id is None:
            # A killed run may have no record yet, and the last record may be another live run's.
            interrupted = find_interrupted_run(snapshots_root) if resuming else None
            if interrupted is not None:
                self.run_id = interrupted
            elif resuming and records:
                self.run_id = str(records[-1].get("run_id"))
            else:
                self.run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        mine = [r for r in records if str(r.get("run_id")) == self.run_id]
        # What this run knows, kept in memory from here on (the file stays the durable truth): the
        # verdicts read it instead of re-reading the whole history at every probe point.
        self._mine = [r for r in every if str(r.get("run_id")) == self.run_id]
        self._done_steps = {int(r.get("step") or 0) for r in mine if r.get("pretrained", True)}
        self._recorded = {_job_key(r) for r in mine}
        if resuming:
            logger.info(
                "transfer_probe | resuming run %s at step %d (%d tokens); %d probe records in the history, "
                "steps already probed are not probed again", self.run_id, state.global_step, tokens, len(mine),
            )

    def _unrecorded(self, jobs: list[ProbeJob]) -> list[ProbeJob]:
        """The jobs of a point that have no record in this run's history yet."""
        return [j for j in jobs if (int(j.snapshot.step), bool(j.snapshot.pretrained), str(j.task.name),
                                    int(j.finetune_size), int(j.repeat)) not in self._recorded]

    def _finish_interrupted(self, state, control) -> None:
        """On resume after a process died: probe again the points it submitted that have no record (their
        snapshots are still in the run's folder), and judge the records it never judged."""
        resuming = state.global_step > 0  # a fresh start (same run_id) has no use for older weights
        for snap in self._run_snapshots.leftovers():
            jobs = self._unrecorded(self._jobs(snap, {"reasons": ["resubmitted: no record before the restart"]}))
            if not jobs or not resuming:
                if not self.keep_snapshots:
                    release_snapshot(snap)
                continue
            logger.info("transfer_probe | step %d was submitted before the restart and has %d probe(s) without a "
                        "record; probing again from its snapshot", snap.step, len(jobs))
            self.executor.submit(jobs)
            self._done_steps.add(snap.step)
        unjudged: dict[tuple, dict] = {}
        for r in read_history(self.history_path) if resuming and self.history_path.exists() else []:
            if str(r.get("run_id")) != self.run_id:
                continue
            if r.get("kind", "probe") == "verdict":
                unjudged.pop((str(r.get("task")), _df(r)), None)
            elif r.get("kind", "probe") == "probe" and r.get("status") == "ok" and r.get("pretrained", True):
                unjudged[(str(r.get("task")), _df(r))] = r
        if unjudged:
            self._diagnose(list(unjudged.values()), state, control)

    # ------------------------------------------------------------------------------------------
    # Probe points
    def on_step_end(self, args, state, control, model=None, **kwargs):
        if not self._active:
            return
        t = time.perf_counter()
        try:
            self._collect(state, control)
            self._maybe_probe(args, state, control, model, saving=bool(control.should_save))
        finally:
            self.blocked_seconds += time.perf_counter() - t

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        # Epoch-based saving is decided here, after on_step_end.
        if not self._active or not control.should_save or not self.schedule.on_save:
            return
        t = time.perf_counter()
        try:
            self._maybe_probe(args, state, control, model, saving=True)
        finally:
            self.blocked_seconds += time.perf_counter() - t

    def on_evaluate(self, args, state, control, **kwargs):
        if self._active:
            self._collect(state, control)

    def _maybe_probe(self, args, state, control, model, *, saving: bool) -> None:
        step = int(state.global_step)
        if self._last_probe_step == step:
            return
        point = self.schedule.due(self.counter.tokens(state), saving=saving)
        if point is None:
            return
        if step in self._done_steps:
            logger.info("transfer_probe | step %d already has probe records in the history; not probing again", step)
            return
        self._last_probe_step = step
        if getattr(self.executor, "name", "") != "inline" and saving:
            # The Trainer writes a checkpoint at this step: link its files in on_save instead of
            # writing the weights a second time.
            self._deferred = (point, step)
            return
        self._current = (model, step)
        try:
            self._submit(point, step, model, checkpoint=None)
            self._collect(state, control)
            # Inline re-measurements (adaptive repeats) are already done: report them at this step,
            # which may ask for another round; the adaptive budget bounds the rounds.
            for _ in range(self.adaptive_repeats):
                if getattr(self.executor, "name", "") != "inline" or not self.executor.pending:
                    break
                self._collect(state, control)
        finally:
            self._current = None

    def on_save(self, args, state, control, model=None, **kwargs):
        if not self._active or self._deferred is None:
            return
        t = time.perf_counter()
        try:
            point, step = self._deferred
            self._deferred = None
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            self._submit(point, step, model, checkpoint=ckpt if ckpt.is_dir() else None)
        finally:
            self.blocked_seconds += time.perf_counter() - t

    def _submit(self, point: ProbePoint, step: int, model, checkpoint: Path | None) -> None:
        inner = unwrap_model(model)
        tokens = point.tokens
        t_snap = time.perf_counter()
        try:
            if getattr(self.executor, "name", "") == "inline":
                snap = capture_in_memory(inner, tokens=tokens, step=step, tokenizer=self.tokenizer)
            else:
                target = self._snapshots_dir / f"step-{step}"
                snap = None
                if checkpoint is not None:
                    try:
                        snap = snapshot_from_checkpoint(checkpoint, target, tokens=tokens, step=step,
                                                        params=_params_of(inner), tokenizer=self.tokenizer)
                    except ValueError as err:
                        logger.warning("transfer_probe | %s; saving the snapshot from the model instead", err)
                if snap is None:
                    # The training thread only pays for a CPU copy; a writer thread writes the
                    # files and then submits the jobs (in order).
                    mem = capture_in_memory(inner, tokens=tokens, step=step, tokenizer=self.tokenizer)
                    sched = self._schedule_info(point)
                    self._writer.put(mem, target, lambda snap: self.executor.submit(self._jobs(snap, sched)))
                    self.timing["snapshot"] += time.perf_counter() - t_snap
                    self._done_steps.add(step)
                    return
        except Exception as exc:  # a snapshot that cannot be taken must not stop training
            logger.warning("transfer_probe | could not snapshot step %d for probing: %s: %s; skipping this point",
                           step, type(exc).__name__, exc)
            return
        t = time.perf_counter()
        self.timing["snapshot"] += t - t_snap
        self.executor.submit(self._jobs(snap, self._schedule_info(point)))
        self.timing["submit"] += time.perf_counter() - t
        self._done_steps.add(step)

    def _schedule_info(self, point: ProbePoint) -> dict:
        return {"reasons": list(point.reasons), "covered": list(point.covered), "tokens_source": self.counter.method}

    def _jobs(self, snap: Snapshot, schedule: dict) -> list[ProbeJob]:
        return [
            ProbeJob(snapshot=snap, task=task, finetune_size=df, config=self.finetune, repeat=r,
                     run_id=self.run_id, extra={"schedule": schedule})
            for task in self.tasks
            for df in task.finetune_sizes
            for r in range(self.repeats)
        ]

    # ------------------------------------------------------------------------------------------
    # End
    def on_train_end(self, args, state, control, **kwargs):
        if not self._active or self.executor is None:
            return
        t = time.perf_counter()
        try:
            if self._deferred is not None:  # a save that never came: snapshot from the model now
                point, step = self._deferred
                self._deferred = None
                self._submit(point, step, kwargs.get("model"), checkpoint=None)
            self._writer.join()
            self._writer.close()
            records = self.executor.close(timeout=self.end_timeout)
            self._run_snapshots.release()
            self.end_wait_seconds = time.perf_counter() - t
            self._handle(records, state, control)
            if self._tracker is not None and hasattr(self._tracker, "final"):
                try:
                    # "Say it at the end": the warnings still standing, marked so they do not read
                    # as a repeat of the probe that raised them.
                    for line in _lines(self._tracker.final()):
                        logger.info("transfer_probe | end of training, still standing: %s", line)
                except Exception as exc:  # diagnosis must never break the end of training
                    logger.warning("transfer_probe | final verdict summary failed: %s", exc)
        finally:
            for sink in self.sinks:
                try:
                    sink.close()
                except Exception as exc:
                    logger.warning("transfer_probe | closing sink %r failed: %s", sink, exc)
            self._active = False

    # ------------------------------------------------------------------------------------------
    # Results
    def _collect(self, state, control) -> None:
        if self.executor is None:
            return
        t = time.perf_counter()
        records = self.executor.poll()
        self.timing["poll"] += time.perf_counter() - t
        if records:
            self._handle(records, state, control)

    def _handle(self, records: list[dict], state, control) -> None:
        if not records:
            return
        step = int(state.global_step)
        for rec in records:
            self.records.append(rec)
            self._mine.append(rec)
            self._log_line(rec, step)
            for sink in self.sinks:
                _safe(sink, "on_record", rec)
        # One trainer.log per probe point (tokens, pretrained): repeats averaged.
        groups: dict[tuple, list[dict]] = defaultdict(list)
        for rec in records:
            groups[(rec.get("tokens"), rec.get("step"), bool(rec.get("pretrained", True)))].append(rec)
        for (tokens, rec_step, pretrained), recs in groups.items():
            logs = _log_values(recs, pretrained)
            if pretrained:
                logs["transfer_probe/tokens"] = float(tokens or 0)
                logs["transfer_probe/step"] = float(rec_step or 0)
            # plotted at the step probed, not the step the result arrived (process executor); the
            # no-pretraining baseline belongs at step 0
            self._trainer_log(logs, state, at_step=int(rec_step or 0) if pretrained else 0)
        t = time.perf_counter()
        self._diagnose(records, state, control)
        self._data_transferred(records, state)
        self.timing["diagnose"] += time.perf_counter() - t

    def _log_line(self, rec: dict, step: int) -> None:
        head = f"transfer_probe | {rec.get('task')} D_f={_df(rec)} | tokens {format_tokens(rec.get('tokens'))}"
        if not rec.get("pretrained", True):
            head += " (no pretraining)"
        if self.repeats > 1:
            head += f" | repeat {rec.get('repeat', 0)}"
        late = rec.get("pretrained", True) and rec.get("step") is not None and int(rec["step"]) != step
        if rec.get("status") != "ok":
            logger.warning("%s | probe failed: %s; training continues", head, rec.get("error"))
            return
        m = rec.get("metrics") or {}
        parts = []
        for key, label in (("bleu", "BLEU"), ("chrf", "chrF"), ("cross_entropy", "CE")):
            if _finite(m.get(key)):
                parts.append(f"{label} {float(m[key]):.{2 if key == 'cross_entropy' else 1}f}")
        parts += [f"{k} {float(v):.3g}" for k, v in m.items()
                  if k not in ("bleu", "chrf", "cross_entropy") and _finite(v)]
        tail = f" | {rec.get('seconds', 0) or 0:.1f}s"
        if late:
            tail += f" (probe of step {rec['step']}, reported at step {step})"
        logger.info("%s | %s%s", head, " ".join(parts), tail)

    def _trainer_log(self, logs: dict[str, float], state, at_step: int | None = None) -> None:
        """``trainer.log(logs)``, at step ``at_step`` when given. Every integration (TensorBoard, W&B,
        MLflow, the log history) takes the step from ``state.global_step``, so that is set to the step
        the values belong to for the duration of the call, and restored."""
        if not logs:
            return
        step = int(state.global_step) if at_step is None else int(at_step)
        if self.trainer is not None and hasattr(self.trainer, "log"):
            # Trainer.log ends in on_log, which clears control.should_log: inside on_step_end that would
            # swallow this step's own training-loss log (merged into the next one). Keep the flag.
            control = getattr(self.trainer, "control", None)
            should_log = getattr(control, "should_log", None)
            now = state.global_step
            tstate = getattr(self.trainer, "state", state)
            try:
                state.global_step = tstate.global_step = step
                self.trainer.log(dict(logs))
            finally:
                state.global_step = tstate.global_step = now
            if control is not None and should_log is not None:
                control.should_log = should_log
            return
        # No trainer found (a custom loop): keep the numbers in the state's log history at least.
        state.log_history.append({**logs, "step": step})
        if not self._warned_no_trainer:
            self._warned_no_trainer = True
            logger.warning("transfer_probe | no Trainer found to log through; call probe.attach(trainer) so "
                           "results reach W&B/TensorBoard. They are in the history file and state.log_history.")

    # ------------------------------------------------------------------------------------------
    # Diagnosis
    def _init_diagnosis(self) -> None:
        try:
            from transfer_probe import diagnose  # noqa: F401
        except ImportError:
            self._diag = None
            return
        self._diag = diagnose
        tracker_cls = getattr(diagnose, "VerdictTracker", None)
        self._tracker = tracker_cls() if tracker_cls is not None else None

    def _diagnose(self, new: list[dict], state, control) -> None:
        diag = getattr(self, "_diag", None)
        # Baseline results alone give nothing to diagnose (a verdict is about the pretrained curve).
        if diag is None or not any(r.get("status") == "ok" and r.get("pretrained", True) for r in new):
            return
        try:
            mine = [r for r in self._mine if str(r.get("run_id")) == self.run_id]
            verdicts = diag.diagnose_all(mine, budget_tokens=self.budget_tokens, target=self.target_bleu,
                                        **({"thresholds": self.thresholds} if self.thresholds is not None else {}))
        except Exception as exc:  # a diagnosis bug must never stop training
            logger.warning("transfer_probe | diagnosis failed: %s: %s", type(exc).__name__, exc)
            return
        touched = {(str(r.get("task")), _df(r)) for r in new if r.get("status") == "ok" and r.get("pretrained", True)}
        tokens = max(float(r.get("tokens") or 0) for r in new)
        # the verdict is about the newest probe point: trackers show it at that point's step
        probed = max((int(r.get("step") or 0) for r in new if r.get("pretrained", True)), default=None)
        for key, verdict in verdicts.items():
            task, df = str(key[0]), key[1]
            if (task, df) not in touched:
                continue
            if self._remeasure(task, df, verdict, mine):
                continue
            try:
                text = diag.format_verdict(verdict)
                warn = self._tracker.update(verdict) if self._tracker is not None else False
                # The tracker also flags a warning that ended: said once, at INFO.
                (logger.warning if warn and (getattr(verdict, "is_warning", False) or getattr(verdict, "is_suspected", False))
                 else logger.info)("%s", text)
                rec = dict(verdict.to_record())
                rec.setdefault("run_id", self.run_id)
                rec.setdefault("step", int(state.global_step))
                rec.setdefault("tokens", tokens)
                self._history.append(rec)
                self._mine.append(rec)
                for sink in self.sinks:
                    _safe(sink, "on_verdict", verdict)
                self._trainer_log(_verdict_values(task, df, verdict), state, at_step=probed)
            except Exception as exc:
                logger.warning("transfer_probe | reporting the verdict for %s D_f=%s failed: %s", task, df, exc)
                continue
            if getattr(verdict, "status", None) == "suspected":
                self._extra_probe(task, df, tokens)
            # Only a verdict that recommends stopping stops a run: a first signal ("suspected", "probe
            # again") or a no_transfer that waits for the score to follow CE never does.
            if self.stop_on and getattr(verdict, "recommendation", None) == "stop" and (
                    getattr(verdict, "status", None) in self.stop_on or "stop" in self.stop_on):
                logger.warning("transfer_probe | stopping pre-training: verdict %r for %s D_f=%s matches stop_on=%s",
                               getattr(verdict, "status", None), task, df, sorted(self.stop_on))
                control.should_training_stop = True


    def _data_transferred(self, new: list[dict], state) -> None:
        """What pre-training is worth in fine-tuning examples (transfer_probe.transferred), for tasks with
        >= 2 D_f and a baseline: a log line, tracker values and a ``"kind": "transfer"`` history record
        per (task, D_f) that got a new pre-trained result."""
        multi = {t.name for t in self.tasks if len(getattr(t, "finetune_sizes", ()) or ()) >= 2}
        touched = sorted({(str(r.get("task")), _df(r)) for r in new if r.get("status") == "ok"
                          and r.get("pretrained", True) and str(r.get("task")) in multi}, key=str)
        if not touched or not self.baseline or self._history is None:
            return
        try:
            from transfer_probe.transferred import data_transferred

            mine = [r for r in self._mine if str(r.get("run_id")) == self.run_id]
            result = data_transferred(mine)
            for task, df in touched:
                tt = result.tasks.get(task)
                point = tt.latest(df) if tt is not None and tt.ok else None
                if point is None:
                    continue
                logger.info("transfer_probe | %s | %s", task, tt.line(df, _unit(self.tasks, task)))
                rec = {"kind": "transfer", "run_id": self.run_id, **point.to_dict(), "finetune_size": df,
                       "growth": tt.growth[point.finetune_size].to_dict(), "baseline_method": tt.baseline.method,
                       "noise": tt.noise}
                rec["transfer_status"] = rec.pop("status")  # a record's "status" is a probe's ok / failed
                self._history.append(rec)
                self._mine.append(rec)
                self._trainer_log(_transfer_values(task, df, point), state, at_step=point.step)
        except Exception as exc:  # an analysis bug must never stop training
            logger.warning("transfer_probe | data transferred failed: %s: %s", type(exc).__name__, exc)

    def _extra_probe(self, task_name: str, df: Any, tokens: float) -> None:
        """After a first break signal, probe once more before the next scheduled point (extra_probes)."""
        if self._extra_left <= 0 or tokens <= 0:
            return
        nxt = self.schedule.next_point(int(tokens))
        if nxt is None:
            return
        mid = max(int(math.sqrt(tokens * nxt)), (self.schedule.last_tokens or 0) + 1)
        if mid >= nxt:
            return
        point = self.schedule.add_point(mid)
        self._extra_left -= 1
        logger.info("transfer_probe | %s D_f=%s | first signal of a break: an extra probe at %s tokens, before the "
                    "next scheduled one at %s (extra probes: %d of %d left)", task_name, df, format_tokens(point),
                    format_tokens(nxt), self._extra_left, self.extra_probes)

    def _remeasure(self, task_name: str, df: Any, verdict: Any, records: list[dict]) -> bool:
        """Hold a borderline warning and run more fine-tunes at its newest point (adaptive repeats).

        Returns True when more measurements were submitted: the warning waits for them.
        """
        status = getattr(verdict, "status", None)
        # A first signal ("suspected") is exactly what re-measuring settles; so is a borderline warning.
        if self._adaptive_left <= 0 or not (status == "suspected" or (
                getattr(verdict, "borderline", False) and status in {"misaligned", "law_break", "no_transfer"})):
            return False
        pts = [r for r in records if r.get("kind", "probe") == "probe" and r.get("pretrained", True)
               and str(r.get("task")) == task_name and _df(r) == df]
        if not pts:
            return False
        newest = max(pts, key=lambda r: float(r.get("tokens") or 0))
        step, tokens = int(newest.get("step") or 0), float(newest.get("tokens") or 0)
        at_point = [r for r in pts if int(r.get("step") or 0) == step]
        snap = None
        if self._current is not None and self._current[1] == step:
            # Inline: the model has not moved since this point was probed.
            snap = capture_in_memory(unwrap_model(self._current[0]), tokens=int(tokens), step=step,
                                     tokenizer=self.tokenizer)
        elif self.keep_snapshots and (self._snapshots_dir / f"step-{step}").is_dir():
            from transfer_probe.run.snapshot import load_snapshot

            snap = load_snapshot(self._snapshots_dir / f"step-{step}")
        if snap is None:
            if not self._adaptive_warned:
                self._adaptive_warned = True
                logger.warning("transfer_probe | adaptive_repeats: the weights of step %d are gone, so the borderline "
                               "verdict cannot be re-measured; use executor='inline' or keep_snapshots=True", step)
            return False
        task = next(t for t in self.tasks if t.name == task_name)
        extra = min(max(self.repeats, 2), self._adaptive_left)
        first = 1 + max(int(r.get("repeat") or 0) for r in at_point)
        jobs = [ProbeJob(snapshot=snap, task=task, finetune_size=int(df), config=self.finetune, repeat=first + i,
                         run_id=self.run_id, extra={"schedule": {"reasons": ["adaptive_repeat"]}})
                for i in range(extra)]
        self._adaptive_left -= extra
        what = "first signal of a break (suspected)" if status == "suspected" else f"borderline {status}"
        logger.info("transfer_probe | %s D_f=%s | %s at %s tokens: measuring %d more fine-tune(s) "
                    "there before warning (adaptive repeats: %d of %d left)", task_name, df,
                    what, format_tokens(tokens), extra, self._adaptive_left, self.adaptive_repeats)
        self.executor.submit(jobs)
        return True


# ----------------------------------------------------------------------------------------------
# Helpers


class _SnapshotWriter:
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


def _check_tasks(tasks: Any) -> list[Any]:
    if tasks is None or isinstance(tasks, (str, bytes)):
        raise ValueError("tasks must be a list of tasks, e.g. [TranslationTask.from_files(...)]")
    if not isinstance(tasks, Iterable):
        tasks = [tasks]
    tasks = list(tasks) if isinstance(tasks, Iterable) else [tasks]
    if not tasks:
        raise ValueError("tasks is empty; give at least one task, e.g. [TranslationTask.from_files(...)]")
    names = []
    for t in tasks:
        missing = [a for a in ("name", "finetune_sizes", "validate", "prepare", "score") if not hasattr(t, a)]
        if missing:
            raise ValueError(f"{t!r} is not a transfer_probe task (missing {', '.join(missing)}); "
                             "use TranslationTask or implement transfer_probe.tasks.Task")
        sizes = list(t.finetune_sizes)
        if not sizes or any(not isinstance(s, numbers.Integral) or s <= 0 for s in sizes):
            raise ValueError(f"task {t.name!r}: finetune_sizes must be positive integers, got {sizes!r}")
        t.validate()
        names.append(str(t.name))
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"task names must be unique (they key the history and the logs); repeated: {dup}")
    return tasks


def _resolve_executor(executor: Any) -> type:
    if isinstance(executor, type):
        if not all(hasattr(executor, a) for a in ("submit", "poll", "close")):
            raise ValueError(f"executor class {executor.__name__} lacks submit/poll/close (see transfer_probe.run.executors)")
        return executor
    if not isinstance(executor, str):
        raise ValueError(f"executor must be a name ('inline', 'process', 'ray', ...) or a class, got {executor!r}")
    try:
        from transfer_probe.plugins import get_executor

        cls = get_executor(executor)
    except ImportError:
        cls = EXECUTORS.get(executor)
    except Exception as err:  # unknown name: the plugin manager's message lists the valid ones
        raise ValueError(str(err).strip("'\"")) from None
    if cls is None:
        raise ValueError(f"unknown executor {executor!r}; valid: {', '.join(EXECUTORS)}")
    return cls


def _check_stop_on(stop_on: Any) -> frozenset[str]:
    if stop_on is None:
        return frozenset()
    if isinstance(stop_on, str):
        stop_on = [stop_on]
    values = frozenset(str(s) for s in stop_on)
    bad = sorted(values - set(STOP_ON_CHOICES))
    if bad:
        raise ValueError(f"stop_on has unknown verdicts {bad}; choose from {list(STOP_ON_CHOICES)}")
    return values


def _make_sinks(sinks: Any) -> list[Any]:
    if not sinks:
        return []
    from transfer_probe.plugins import create_sink

    out = []
    for spec in sinks:
        try:
            out.append(create_sink(spec))
        except Exception as err:
            raise ValueError(f"sink {spec!r}: {err}") from None
    return out


def _safe(sink: Any, method: str, arg: Any) -> None:
    fn = getattr(sink, method, None)
    if fn is None:
        return
    try:
        fn(arg)
    except Exception as exc:
        logger.warning("transfer_probe | sink %r failed in %s: %s", sink, method, exc)


def _tokenizer_of(processing_class: Any) -> Any:
    if processing_class is None:
        return None
    inner = getattr(processing_class, "tokenizer", None)  # a multimodal processor wraps its tokenizer
    return inner if inner is not None else processing_class


def _is_sharded(args: Any) -> bool:
    fsdp = getattr(args, "fsdp", None)
    return bool(fsdp) or bool(getattr(args, "deepspeed", None))


def _params_of(model: Any) -> dict[str, int]:
    from transfer_probe.run.snapshot import count_parameters

    return count_parameters(model) if model is not None else {}


def _df(rec: dict) -> Any:
    fs = rec.get("finetune_size")
    return fs.get("examples") if isinstance(fs, dict) else fs


def _job_key(rec: dict) -> tuple:
    try:
        return (int(rec.get("step") or 0), bool(rec.get("pretrained", True)), str(rec.get("task")),
                int(_df(rec)), int(rec.get("repeat") or 0))
    except (TypeError, ValueError):
        return ()


def _finite(v: Any) -> bool:
    try:
        return v is not None and not isinstance(v, bool) and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _probe_steps(schedule: ProbeSchedule, start_step: int, end_step: int, per_step: int) -> int | None:
    """How many steps in (start_step, end_step] will probe (several points crossed by one step probe
    once); None when it depends on the run (on_save)."""
    if schedule.on_save:
        return None
    steps: set[int] = {-(-int(p) // per_step) for p in schedule.token_points}
    steps = {k for k in steps if start_step < k <= end_step}
    e = schedule.every_tokens
    if e is None:
        return len(steps)
    if e <= per_step:  # every step crosses a multiple
        return end_step - start_step
    first, last = start_step * per_step // e + 1, end_step * per_step // e
    hosts = max(0, last - first + 1)  # each multiple lands on its own step when e > per_step
    extra = sum(1 for k in steps if (k * per_step) // e == ((k - 1) * per_step) // e)
    return hosts + extra


def _log_values(recs: list[dict], pretrained: bool) -> dict[str, float]:
    """``transfer_probe/<task>/df=<n>[/baseline]/<metric>``: mean over the repeats in ``recs``."""
    sums: dict[str, list[float]] = defaultdict(list)
    for r in recs:
        prefix = f"transfer_probe/{r.get('task')}/df={_df(r)}" + ("" if pretrained else "/baseline")
        if r.get("status") != "ok":
            sums[f"{prefix}/failed"].append(1.0)
            continue
        for k, v in (r.get("metrics") or {}).items():
            if _finite(v):
                sums[f"{prefix}/{k}"].append(float(v))
    return {k: sum(v) / len(v) for k, v in sums.items()}


def _verdict_values(task: str, df: Any, verdict: Any) -> dict[str, float]:
    prefix = f"transfer_probe/{task}/df={df}/verdict"
    out: dict[str, float] = {}
    if getattr(verdict, "status", None) is not None:
        out[f"{prefix}/warning"] = 1.0 if getattr(verdict, "is_warning", False) else 0.0
        # Trackers plot numbers: the status and the recommendation as codes (legend in the README).
        from transfer_probe.diagnose import RECOMMENDATIONS, STATUSES

        if verdict.status in STATUSES:
            out[f"{prefix}/status"] = float(STATUSES.index(verdict.status))
        if getattr(verdict, "recommendation", None) in RECOMMENDATIONS:
            out[f"{prefix}/recommendation"] = float(RECOMMENDATIONS.index(verdict.recommendation))
    pred = getattr(verdict, "prediction", None)
    if isinstance(pred, dict):
        for k in ("mean", "value", "low", "high"):
            if _finite(pred.get(k)):
                out[f"{prefix}/prediction_{k}"] = float(pred[k])
    elif isinstance(pred, (tuple, list)) and pred and all(_finite(x) for x in pred[:3]):
        for name, x in zip(("mean", "low", "high"), pred, strict=False):
            out[f"{prefix}/prediction_{name}"] = float(x)
    ttt = getattr(verdict, "tokens_to_target", None)
    if isinstance(ttt, dict):
        ttt = ttt.get("mean", ttt.get("value"))
    if _finite(ttt):
        out[f"{prefix}/tokens_to_target"] = float(ttt)
    return out


def _unit(tasks: list[Any], name: str) -> str:
    from transfer_probe.tasks import TranslationTask

    return "pairs" if any(t.name == name and isinstance(t, TranslationTask) for t in tasks) else "examples"


def _transfer_values(task: str, df: Any, point: Any) -> dict[str, float]:
    """``transfer_probe/<task>/df=<n>/data_transferred`` (with ``_low`` / ``_high``), ``data_multiplier``,
    ``ossified`` (1/0): the finite ones."""
    prefix = f"transfer_probe/{task}/df={df}"
    vals = {"data_transferred": point.transferred, "data_transferred_low": point.low,
            "data_transferred_high": point.high, "data_multiplier": point.multiplier,
            "ossified": 1.0 if point.ossified else 0.0}
    return {f"{prefix}/{k}": float(v) for k, v in vals.items() if _finite(v)}


def _lines(obj: Any) -> list[str]:
    if obj is None:
        return []
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        obj = list(obj.values())
    out = []
    for v in obj:
        if isinstance(v, str):
            out.append(v)
        else:
            try:
                from transfer_probe.diagnose import format_verdict

                out.append(format_verdict(v))
            except Exception:
                out.append(str(v))
    return out
