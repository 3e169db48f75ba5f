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

import inspect
import logging
import numbers
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from transfer_probe.loop import Outcome, ProbeLoop
from transfer_probe.loop_setup import (
    call_sink,
    check_stop_on,
    make_lines_visible,
    make_sinks,
)
from transfer_probe.run.executors import check_options
from transfer_probe.run.probe import FinetuneConfig, check_probe_setup
from transfer_probe.run.snapshot import unwrap_model
from transfer_probe.schedule import ProbeSchedule, TokenCounter

__all__ = ["TransferProbeCallback"]

logger = logging.getLogger("transfer_probe")

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
        make_lines_visible()
        self.loop = ProbeLoop(
            tasks, schedule=ProbeSchedule(every_tokens=every_tokens, token_points=token_points, on_save=on_save),
            executor=executor, executor_options=executor_options, finetune=finetune, repeats=repeats,
            adaptive_repeats=adaptive_repeats, extra_probes=extra_probes, thresholds=thresholds, baseline=baseline,
            budget_tokens=budget_tokens, target_bleu=target_bleu, keep_snapshots=keep_snapshots, run_id=run_id)
        self.counter = TokenCounter(seq_len=seq_len)
        self.stop_on = check_stop_on(stop_on)
        if end_timeout is not None and (not isinstance(end_timeout, numbers.Real) or end_timeout < 0):
            raise ValueError(f"end_timeout must be a non-negative number of seconds or None, got {end_timeout!r}")
        self.end_timeout = end_timeout
        self.output_dir = output_dir
        self.tokenizer = tokenizer
        self.sinks = make_sinks(sinks)
        self.trainer = trainer
        self._active = False
        self._deferred: tuple[Any, int] | None = None  # (point, step) waiting for the checkpoint in on_save
        self._warned_no_trainer = False
        # Time the training loop spent inside this callback's events (probe work, snapshots); the
        # wait for outstanding probes at the end of training is apart (end_wait_seconds).
        self.blocked_seconds = 0.0

    # What the loop knows, under the names this callback always had.
    tasks = property(lambda self: self.loop.tasks)
    schedule = property(lambda self: self.loop.schedule)
    executor = property(lambda self: self.loop.executor)
    history_path = property(lambda self: self.loop.history_path)
    run_id = property(lambda self: self.loop.run_id)
    records = property(lambda self: self.loop.records)  # results seen in this process
    timing = property(lambda self: self.loop.timing)  # where the blocked time went
    end_wait_seconds = property(lambda self: self.loop.end_wait_seconds)

    # ------------------------------------------------------------------------------------------
    # The Trainer
    def attach(self, trainer: Any) -> TransferProbeCallback:
        """Give the callback its trainer (for ``trainer.log``); adds the callback if missing."""
        self.trainer = trainer
        handler = getattr(trainer, "callback_handler", None)
        if handler is not None and self not in handler.callbacks:
            trainer.add_callback(self)
        return self

    def _discover_trainer(self) -> None:
        """The ``Trainer`` whose method is calling this event, found once.

        A ``TrainerCallback`` is given neither its trainer nor the callback handler (the events' kwargs
        are the model, tokenizer, optimizer, scheduler and data loaders), yet ``trainer.log`` is the one
        way to reach the other callbacks (W&B, TensorBoard...). So the calling frames are asked, once,
        at the first event; ``attach(trainer)`` (or ``trainer=``) makes this unnecessary."""
        if self.trainer is not None:
            return
        from transformers import Trainer

        frame = inspect.currentframe()
        try:
            for _ in range(30):
                if frame is None:
                    return
                if isinstance(frame.f_locals.get("self"), Trainer):
                    self.trainer = frame.f_locals["self"]
                    return
                frame = frame.f_back
        finally:
            del frame

    def on_init_end(self, args, state, control, **kwargs):
        self._discover_trainer()

    # ------------------------------------------------------------------------------------------
    # Start
    def on_train_begin(self, args, state, control, model=None, processing_class=None, train_dataloader=None,
                       **kwargs):
        self._discover_trainer()
        inner = self._check_setup(args, model, processing_class)
        self._active = bool(state.is_world_process_zero)
        if not self._active:
            return  # other ranks: no probe work at all
        self.counter.setup(args, model=inner, train_dataloader=train_dataloader)
        tokens, step = self.counter.tokens(state), int(state.global_step)
        self.loop.tokens_source = self.counter.method
        self.loop.start(Path(self.output_dir or args.output_dir or ".") / "transfer_probe", tokenizer=self.tokenizer,
                        model=inner, resuming=step > 0, step=step, tokens=tokens)
        per_step = self.counter.tokens_per_step if self.counter.method != "trainer" else None
        self.loop.announce(tokens, per_step, int(getattr(state, "max_steps", 0) or 0))
        t = time.perf_counter()
        out = self.loop.catch_up(step)
        self.blocked_seconds += time.perf_counter() - t
        self._report(out, state, control)

    def _check_setup(self, args, model, processing_class) -> Any:
        """``ValueError`` before any training step for a tokenizer, model or setup the probes cannot use;
        returns the unwrapped model."""
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
        loop = self.loop
        check_options(loop.executor_cls, loop.executor_options)
        check_probe_setup(loop.finetune, loop.tasks, inner, tokenizer, executor=loop.executor_cls,
                          executor_options=loop.executor_options)
        world = int(getattr(args, "world_size", 1) or 1)
        if world > 1 and loop.inline:
            raise ValueError(
                f"executor='inline' cannot run under multi-process training (world size {world}): a nested "
                "Trainer on one rank would wait on the other ranks. Use executor='process' (or 'ray')."
            )
        sharded = bool(getattr(args, "fsdp", None)) or bool(getattr(args, "deepspeed", None))
        if sharded and (self.schedule.every_tokens or self.schedule.token_points):
            raise ValueError(
                "under FSDP/DeepSpeed a rank holds only a shard of the weights: probe with on_save=True only "
                "(every_tokens/token_points unset), so snapshots come from the consolidated checkpoint "
                "(FSDP state_dict_type FULL_STATE_DICT; DeepSpeed stage3_gather_16bit_weights_on_model_save)"
            )
        if sharded and loop.inline:
            raise ValueError("under FSDP/DeepSpeed use executor='process' (or 'ray'), not 'inline'")
        return inner

    # ------------------------------------------------------------------------------------------
    # Probe points
    def on_step_end(self, args, state, control, model=None, **kwargs):
        if not self._active:
            return
        t = time.perf_counter()
        try:
            self._report(self.loop.collect(int(state.global_step)), state, control)
            self._maybe_probe(state, control, model, saving=bool(control.should_save))
        finally:
            self.blocked_seconds += time.perf_counter() - t

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        # Epoch-based saving is decided here, after on_step_end.
        if not self._active or not control.should_save or not self.schedule.on_save:
            return
        t = time.perf_counter()
        try:
            self._maybe_probe(state, control, model, saving=True)
        finally:
            self.blocked_seconds += time.perf_counter() - t

    def on_evaluate(self, args, state, control, **kwargs):
        if self._active:
            self._report(self.loop.collect(int(state.global_step)), state, control)

    def _maybe_probe(self, state, control, model, *, saving: bool) -> None:
        step = int(state.global_step)
        point = self.loop.due(self.counter.tokens(state), step, saving=saving)
        if point is None:
            return
        if saving and not self.loop.inline:
            # The Trainer writes a checkpoint at this step: link its files in on_save instead of
            # writing the weights a second time.
            self._deferred = (point, step)
            return
        self._report(self.loop.probe(point, step, model), state, control)

    def on_save(self, args, state, control, model=None, **kwargs):
        if not self._active or self._deferred is None:
            return
        t = time.perf_counter()
        try:
            (point, step), self._deferred = self._deferred, None
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            self.loop.submit(point, step, model, checkpoint=ckpt if ckpt.is_dir() else None)
        finally:
            self.blocked_seconds += time.perf_counter() - t

    # ------------------------------------------------------------------------------------------
    # End
    def on_train_end(self, args, state, control, **kwargs):
        if not self._active or self.executor is None:
            return
        try:
            if self._deferred is not None:  # a save that never came: snapshot from the model now
                (point, step), self._deferred = self._deferred, None
                self.loop.submit(point, step, kwargs.get("model"))
            self._report(self.loop.finish(self.end_timeout, int(state.global_step)), state, control)
        finally:
            for sink in self.sinks:
                try:
                    sink.close()
                except Exception as exc:
                    logger.warning("transfer_probe | closing sink %r failed: %s", sink, exc)
            self._active = False

    # ------------------------------------------------------------------------------------------
    # Reporting what the loop produced
    def _report(self, outcomes: list[Outcome], state, control) -> None:
        """Records and verdicts to the sinks, values through ``trainer.log`` at the step they belong
        to, and ``stop_on``."""
        for o in outcomes:
            try:
                if o.kind == "record":
                    for sink in self.sinks:
                        call_sink(sink, "on_record", o.record)
                    continue
                if o.kind == "verdict":
                    for sink in self.sinks:
                        call_sink(sink, "on_verdict", o.verdict)
                self._trainer_log(o.values, state, at_step=o.step)
            except Exception as exc:  # reporting must never stop training
                logger.warning("transfer_probe | reporting a %s failed: %s: %s", o.kind, type(exc).__name__, exc)
            if o.kind == "verdict":
                self._maybe_stop(o.verdict, o.group, control)

    def _maybe_stop(self, verdict: Any, group: tuple, control) -> None:
        # Only a verdict that recommends stopping stops a run: a first signal ("suspected", "probe
        # again") or a no_transfer that waits for the score to follow CE never does.
        status = getattr(verdict, "status", None)
        if self.stop_on and getattr(verdict, "recommendation", None) == "stop" and (
                status in self.stop_on or "stop" in self.stop_on):
            logger.warning("transfer_probe | stopping pre-training: verdict %r for %s D_f=%s matches stop_on=%s",
                           status, *group, sorted(self.stop_on))
            control.should_training_stop = True

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


# ----------------------------------------------------------------------------------------------
# Helpers


def _tokenizer_of(processing_class: Any) -> Any:
    if processing_class is None:
        return None
    inner = getattr(processing_class, "tokenizer", None)  # a multimodal processor wraps its tokenizer
    return inner if inner is not None else processing_class
