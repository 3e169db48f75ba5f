"""``FinetuneConfig``: the fixed fine-tuning budget and measurement settings of every probe, and the
checks of each field (at construction: a bad setting would otherwise show only as every probe of
the run failing, long after training started). What the machine offers is checked later, by
:func:`transfer_probe.run.preflight.check_probe_setup`."""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class FinetuneConfig:
    """The fixed fine-tuning budget and measurement settings of every probe.

    Defaults follow what was measured at tiny scale (../shared/SCIENCE.md); see the README's
    configuration reference for how to choose them at real scale.
    """

    max_steps: int = 60
    # 3e-4, not 1e-3: at 1e-3 a randomly initialized tiny model already reached BLEU 17 on the
    # demo task, hiding transfer (experiments/README.md); 1e-4 to 3e-4 is also usual at real scale.
    learning_rate: float = 3e-4
    batch_size: int = 32
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    lr_scheduler_type: str = "constant"
    seed: int = 0
    # Generation: greedy, batched; ``None`` means derived from the longest test target.
    max_new_tokens: int | None = None
    eval_batch_size: int = 64
    num_beams: int = 1
    # Mixed precision where the hardware supports it: "auto" | "bf16" | "fp16" | "no".
    precision: str = "auto"
    # Device for the fine-tune: None lets accelerate choose; "cpu", "cuda:1", ...
    device: str | None = None
    # Bootstrap resamples of test sentences for metric intervals (0 disables).
    bootstrap: int = 200
    # Draw a different subset of D_f examples for each repeat (else the same first D_f examples).
    resample_data: bool = False
    # Torch intra-op threads during the probe (None: leave as is); restored afterwards.
    num_threads: int | None = None
    # "random": the Trainer's plain shuffle; "group_by_length": batches of similar length (less
    # padding for long, varied examples, but less varied batches for small D_f).
    train_sampling: str = "random"
    # Width of the bootstrap intervals recorded in ``metrics_ci``.
    interval: float = 0.9

    def __post_init__(self) -> None:
        # Checked here, not when a probe runs: a bad setting would otherwise show only as every
        # probe of the run failing, long after training started.
        _check_config(self)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Schedulers TrainingArguments accepts but a probe's fine-tune cannot run: it has no evaluation
# (no metric to step on) and FinetuneConfig passes no lr_scheduler_kwargs.
_SCHEDULERS_UNSUPPORTED = {
    "reduce_lr_on_plateau": "it steps on an evaluation metric, which a probe's fine-tune does not compute",
    "greedy": "it steps on an evaluation metric, which a probe's fine-tune does not compute",
    "cosine_with_min_lr": "it needs min_lr in lr_scheduler_kwargs, which FinetuneConfig does not pass",
    "cosine_warmup_with_min_lr": "it needs min_lr in lr_scheduler_kwargs, which FinetuneConfig does not pass",
    "warmup_stable_decay": "it needs num_decay_steps in lr_scheduler_kwargs, which FinetuneConfig does not pass",
}
_PRECISIONS = ("auto", "bf16", "fp16", "no", "fp32")
_SAMPLINGS = ("random", "group_by_length")


def _int_at_least(cfg: FinetuneConfig, name: str, low: int, *, optional: bool = False) -> None:
    v = getattr(cfg, name)
    if optional and v is None:
        return
    if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < low:
        what = f"an integer >= {low}" + (" or None" if optional else "")
        raise ValueError(f"FinetuneConfig.{name}={v!r} must be {what}")


def _real_in(cfg: FinetuneConfig, name: str, low: float, high: float, *, open_low: bool, open_high: bool,
             what: str) -> None:
    v = getattr(cfg, name)
    ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
    ok = ok and (v > low if open_low else v >= low) and (v < high if open_high else v <= high)
    if not ok:
        raise ValueError(f"FinetuneConfig.{name}={v!r} must be {what}")


def _check_config(cfg: FinetuneConfig) -> None:
    """``ValueError`` naming the first bad field of ``cfg`` (what the machine offers is checked
    later, by :func:`check_probe_setup`: a Ray worker may have devices the driver lacks)."""
    _int_at_least(cfg, "max_steps", 1)
    _int_at_least(cfg, "batch_size", 1)
    _int_at_least(cfg, "eval_batch_size", 1)
    _int_at_least(cfg, "num_beams", 1)
    _int_at_least(cfg, "bootstrap", 0)
    _int_at_least(cfg, "seed", 0)
    _int_at_least(cfg, "max_new_tokens", 1, optional=True)
    _int_at_least(cfg, "num_threads", 1, optional=True)
    inf = math.inf
    _real_in(cfg, "learning_rate", 0, inf, open_low=True, open_high=True, what="a positive, finite number")
    _real_in(cfg, "weight_decay", 0, inf, open_low=False, open_high=True, what="a finite number >= 0")
    _real_in(cfg, "warmup_ratio", 0, 1, open_low=False, open_high=True,
             what="in [0, 1) (a fraction of max_steps)")
    _real_in(cfg, "interval", 0, 1, open_low=True, open_high=True,
             what="in (0, 1) (the level of the bootstrap intervals, e.g. 0.9)")
    if cfg.precision is not None and str(cfg.precision).lower() not in _PRECISIONS:  # None: "no"
        raise ValueError(f"FinetuneConfig.precision={cfg.precision!r}; use one of {', '.join(map(repr, _PRECISIONS))}")
    if cfg.train_sampling not in _SAMPLINGS:
        raise ValueError(f"FinetuneConfig.train_sampling={cfg.train_sampling!r}; use 'random' or 'group_by_length'")
    _check_scheduler(cfg.lr_scheduler_type)
    if cfg.device is not None:
        import torch

        try:
            device = torch.device(cfg.device)
        except (RuntimeError, TypeError, ValueError) as err:
            raise ValueError(f"FinetuneConfig.device={cfg.device!r} is not a device: {err}") from None
        if str(cfg.precision).lower() == "fp16" and device.type == "cpu":
            raise ValueError("FinetuneConfig.precision='fp16' needs a CUDA device; use 'bf16' or 'no' on CPU")


def _check_scheduler(name: Any) -> None:
    from transformers.trainer_utils import SchedulerType

    known = [s.value for s in SchedulerType]
    if name in _SCHEDULERS_UNSUPPORTED:
        raise ValueError(f"FinetuneConfig.lr_scheduler_type={name!r} cannot be used by a probe: "
                         f"{_SCHEDULERS_UNSUPPORTED[name]}")
    if name not in known:
        usable = [k for k in known if k not in _SCHEDULERS_UNSUPPORTED]
        raise ValueError(f"FinetuneConfig.lr_scheduler_type={name!r} is not a scheduler; use one of "
                         f"{', '.join(usable)}")
