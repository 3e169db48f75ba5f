"""One probe job: fine-tune a fresh copy of a snapshot on a downstream task, then measure.

The job description is executor-agnostic and picklable: a snapshot, a task, a fine-tuning size and
settings go in, one history record (a dict) comes out. ``inline``, ``process`` and ``ray`` executors
all call :func:`run_probe` on the same :class:`ProbeJob`::

    from transfer_probe.run.probe import FinetuneConfig, ProbeJob, run_probe, failed_record

    job = ProbeJob(snapshot=snap, task=task, finetune_size=64, config=FinetuneConfig(max_steps=60))
    try:
        record = run_probe(job)        # {"kind": "probe", "status": "ok", "metrics": {"bleu": ...}, ...}
    except Exception as err:
        record = failed_record(job, err)

What a probe does, in order: load a fresh model from the snapshot; fine-tune it (the nested
``transformers.Trainer``'s training step, run lean through accelerate: ``run/finetune.py``; the caller's RNG streams, thread count, grad mode and accelerate's global
state are saved first and restored after, so an outer ``Trainer`` running in the same process is
unaffected); teacher-forced cross-entropy on the test split's target tokens; batched greedy
generation (length-sorted batches, KV cache, stop at eos); the task's scores (BLEU, chrF...) with
bootstrap intervals over test sentences.

The parts, each its own module: ``config`` (:class:`FinetuneConfig` and its checks), ``preflight``
(checks before any training step), ``state`` (:func:`isolated_state`), ``finetune`` (the lean
fine-tune), ``generation`` (batched greedy generation). Everything stays importable from here.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from transfer_probe.run.config import _SAMPLINGS, FinetuneConfig
from transfer_probe.run.finetune import Collator as _Collator  # noqa: F401 - old private name
from transfer_probe.run.finetune import finetune
from transfer_probe.run.finetune import precision_flags as _precision_flags  # noqa: F401
from transfer_probe.run.generation import _cut, generate, greedy_generate  # noqa: F401 - _cut: benchmarks
from transfer_probe.run.preflight import check_probe_setup, device_problem
from transfer_probe.run.snapshot import Snapshot
from transfer_probe.run.state import isolated_state
from transfer_probe.tasks.base import score_task

__all__ = ["FinetuneConfig", "ProbeJob", "run_probe", "failed_record", "generate", "greedy_generate",
           "check_probe_setup", "device_problem",
           "isolated_state", "FinetuneDiverged"]

CE_SIGNATURE = "teacher-forced|target-tokens+eos|token-weighted-mean|unit:nats"


@dataclass
class ProbeJob:
    """Everything one probe needs: what to fine-tune, on what, for how long."""

    snapshot: Snapshot
    task: Any  # transfer_probe.tasks.Task
    finetune_size: int
    config: FinetuneConfig = field(default_factory=FinetuneConfig)
    repeat: int = 0
    run_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # copied into the record (e.g. schedule reason)

    @property
    def seed(self) -> int:
        # Independent fine-tunes per repeat, reproducible from (config.seed, repeat).
        return self.config.seed + 1000 * self.repeat


class FinetuneDiverged(RuntimeError):
    """The probe's fine-tune produced a NaN or infinite loss."""


# ---------------------------------------------------------------------------------------------
# Fine-tuning

def _finetune(model, train_features: list[dict], pad_token_id: int, config: FinetuneConfig, seed: int) -> dict:
    """Fine-tune ``model`` in place (the nested ``Trainer``'s step, lean: ``run/finetune.py``);
    return what the record needs, or raise :class:`FinetuneDiverged` on a NaN or infinite loss."""
    if config.max_steps < 1:
        raise ValueError(f"FinetuneConfig.max_steps={config.max_steps} must be >= 1")
    if config.train_sampling not in _SAMPLINGS:
        raise ValueError(f"FinetuneConfig.train_sampling={config.train_sampling!r}; use 'random' or 'group_by_length'")
    out = finetune(model, train_features, pad_token_id, config, seed)
    if not math.isfinite(out["train_loss"]):
        raise FinetuneDiverged(
            f"fine-tuning loss is {out['train_loss']} after {config.max_steps} steps at learning rate "
            f"{config.learning_rate}: the fine-tune diverged; lower FinetuneConfig.learning_rate "
            f"or use precision='no'"
        )
    return out


# ---------------------------------------------------------------------------------------------
# The probe

def _header(job: ProbeJob) -> dict[str, Any]:
    from transfer_probe.store.history import SCHEMA_VERSION

    snap = job.snapshot
    return {
        "schema": SCHEMA_VERSION,
        "kind": "probe",
        "run_id": job.run_id,
        "time": time.time(),
        "step": int(snap.step),
        "tokens": int(snap.tokens),
        "params": dict(snap.params or {}),
        "task": getattr(job.task, "name", str(job.task)),
        "finetune_size": {"examples": int(job.finetune_size)},
        "pretrained": bool(snap.pretrained),
        "repeat": int(job.repeat),
    }


def run_probe(job: ProbeJob) -> dict:
    """Fine-tune a fresh copy of ``job.snapshot`` on ``job.task`` with D_f = ``job.finetune_size``
    examples, measure, and return the history record (``status: "ok"``).

    Raises on failure (bad input: ``ValueError``; a diverged fine-tune: :class:`FinetuneDiverged`);
    executors turn the exception into a record with :func:`failed_record`. The caller's RNG
    streams, thread count, grad mode and accelerate state are left as they were.
    """
    from transfer_probe.metrics import bootstrap_ratio

    t0 = time.perf_counter()
    cpu0 = time.process_time()
    cfg = job.config
    task = job.task
    record = _header(job)
    tokenizer = job.snapshot.load_tokenizer()
    prepared = task.prepare(tokenizer, job.snapshot.load_config())
    train = _training_examples(job, prepared, record)
    timing: dict[str, float] = {}
    with isolated_state(device=cfg.device, num_threads=cfg.num_threads):
        measured = _finetune_and_measure(job, prepared, tokenizer, train, timing)

    t = time.perf_counter()
    seed = cfg.seed + job.repeat  # bootstrap draws: fixed per repeat, independent of the fine-tune
    # every interval of the record at one level, recorded (the fits read errors back from widths)
    hypotheses = measured.hypotheses
    scores, level = score_task(task, hypotheses, prepared, bootstrap=cfg.bootstrap, seed=seed, interval=cfg.interval)
    ce = bootstrap_ratio(measured.nll, measured.counts, bootstrap=cfg.bootstrap, seed=seed, interval=level)
    timing["scoring"] = time.perf_counter() - t

    ft = measured.finetune
    ft_record = {k: ft[k] for k in ("steps", "learning_rate", "batch_size", "seed", "seconds", "precision",
                                    "device", "train_loss", "lr_scheduler_type")}
    record.update(
        status="ok", error=None, **_metric_fields(cfg, scores, ce, level, seed, measured),
        finetune=ft_record, seconds=time.perf_counter() - t0, timing=timing,
        cpu_seconds=time.process_time() - cpu0,  # this process's CPU time: robust to a busy machine
        test_examples=len(prepared.references),
        samples=[{"source": s, "reference": r, "hypothesis": h}
                 for s, r, h in list(zip(prepared.sources, prepared.references, hypotheses, strict=True))[:3]],
    )
    record.update(job.extra)
    return record


def _training_examples(job: ProbeJob, prepared: Any, record: dict[str, Any]) -> list[dict]:
    """The D_f fine-tuning examples of this job (its repeat's subset); their counts go to ``record``."""
    task, cfg = job.task, job.config
    if job.finetune_size > len(prepared.train):
        raise ValueError(f"task {task.name!r}: D_f={job.finetune_size} is larger than its train split "
                         f"({len(prepared.train)} examples)")
    indices = task.train_indices(prepared, job.finetune_size, repeat=job.repeat, seed=cfg.seed,
                                 resample=cfg.resample_data)
    record["finetune_size"] = {"examples": len(indices), "tokens": prepared.total_tokens(indices),
                               "target_tokens": prepared.target_tokens(indices)}
    return [prepared.train[i] for i in indices]


@dataclass
class _Measured:
    """What the fine-tuned model gave, before scoring: the fine-tune's summary, the test targets'
    summed NLL and token counts, the hypotheses, the generation length, the task's own scores."""

    finetune: dict[str, Any]
    nll: Any
    counts: Any
    hypotheses: list[str]
    max_new_tokens: int
    model_scores: Any = None


def _finetune_and_measure(job: ProbeJob, prepared: Any, tokenizer: Any, train: list[dict],
                          timing: dict[str, float]) -> _Measured:
    """Load a fresh model, fine-tune it, and measure it: teacher-forced cross-entropy, greedy
    generation, the task's ``model_scores`` hook. Runs inside :func:`isolated_state`."""
    import torch

    from transfer_probe.metrics import target_cross_entropy

    cfg, task = job.config, job.task
    model = job.snapshot.load_model(seed=cfg.seed)
    if any(p.dtype in (torch.float16, torch.bfloat16) for p in model.parameters()):
        # A checkpoint saved in half precision: fine-tune fp32 master weights under autocast
        # (the Trainer's fp16 grad scaler refuses fp16 weights, and bf16 AdamW updates round away).
        model = model.float()
    ft = _finetune(model, train, prepared.pad_token_id, cfg, job.seed)
    timing["finetune"] = ft["seconds"]
    device = next(model.parameters()).device

    t = time.perf_counter()
    nll, counts = target_cross_entropy(
        model, prepared.test, pad_token_id=prepared.pad_token_id, batch_size=cfg.eval_batch_size,
        is_encoder_decoder=prepared.is_encoder_decoder,
        decoder_start_token_id=prepared.decoder_start_token_id, device=device)
    timing["cross_entropy"] = time.perf_counter() - t

    t = time.perf_counter()
    max_new = cfg.max_new_tokens or prepared.max_new_tokens
    gen_args = dict(eos_token_id=prepared.eos_token_id, pad_token_id=prepared.pad_token_id,
                    max_new_tokens=max_new, batch_size=cfg.eval_batch_size,
                    decoder_start_token_id=prepared.decoder_start_token_id, device=device)
    gen = generate(model, prepared.prompts, num_beams=cfg.num_beams, **gen_args)
    post = getattr(task, "postprocess", None) or str.strip
    hypotheses = [post(h) for h in tokenizer.batch_decode(gen, skip_special_tokens=True)]
    timing["generation"] = time.perf_counter() - t
    # Optional task hook for metrics that need the fine-tuned model itself (CodeTask: pass@k
    # from sampled completions run in the sandbox).
    model_scores = None
    if callable(getattr(task, "model_scores", None)):
        t = time.perf_counter()
        model_scores = task.model_scores(model, tokenizer, prepared, config=cfg, seed=job.seed, device=device)
        timing["model_scores"] = time.perf_counter() - t
    return _Measured(ft, nll, counts, hypotheses, max_new, model_scores)


def _metric_fields(cfg: FinetuneConfig, scores: Any, ce: Any, level: float, seed: int,
                   measured: _Measured) -> dict[str, Any]:
    """The record's ``metrics``, ``metrics_ci``, ``ci_level`` and ``metric_signatures``: the task's
    scores, the cross-entropy, and the model-scores hook's, with how each was measured."""
    from transfer_probe.metrics import BOOTSTRAP_SIGNATURE

    metrics = dict(scores.metrics)
    metrics["cross_entropy"] = ce.score
    ci = dict(scores.metrics_ci)
    if ce.ci is not None:
        ci["cross_entropy"] = list(ce.ci)
    signatures = dict(scores.metric_signatures)
    signatures["cross_entropy"] = CE_SIGNATURE
    signatures["generation"] = (f"{'greedy' if cfg.num_beams <= 1 else f'beam:{cfg.num_beams}'}"
                                f"|max_new_tokens:{measured.max_new_tokens}|stop:eos")
    if measured.model_scores is not None:
        metrics.update(measured.model_scores.metrics)
        ci.update(measured.model_scores.metrics_ci)
        signatures.update(measured.model_scores.metric_signatures)
    if cfg.bootstrap > 0:
        signatures["bootstrap"] = BOOTSTRAP_SIGNATURE.format(interval=level, n=cfg.bootstrap, seed=seed)
    return {"metrics": metrics, "metrics_ci": ci, "ci_level": level, "metric_signatures": signatures}


def failed_record(job: ProbeJob, exc: BaseException) -> dict:
    """The history record of a probe that raised: ``status: "failed"`` and ``error`` as
    ``"<ExceptionType>: <message>"`` (``error_type`` holds the type alone).

    >>> failed_record(job, RuntimeError("CUDA out of memory"))["error"]
    'RuntimeError: CUDA out of memory'
    """
    record = _header(job)
    record.update(
        status="failed",
        error=f"{type(exc).__name__}: {exc}",
        error_type=type(exc).__name__,
        metrics={},
        metrics_ci={},
        finetune={"steps": job.config.max_steps, "learning_rate": job.config.learning_rate,
                  "batch_size": job.config.batch_size, "seed": job.seed},
        seconds=None,
    )
    record.update(job.extra)
    return record
