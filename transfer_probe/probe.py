"""One probe job: fine-tune a fresh copy of a snapshot on a downstream task, then measure.

The job description is executor-agnostic and picklable: a snapshot, a task, a fine-tuning size and
settings go in, one history record (a dict) comes out. ``inline``, ``process`` and ``ray`` executors
all call :func:`run_probe` on the same :class:`ProbeJob`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from transfer_probe.snapshot import Snapshot

__all__ = ["FinetuneConfig", "ProbeJob", "run_probe", "failed_record"]


@dataclass(frozen=True)
class FinetuneConfig:
    """The fixed fine-tuning budget and measurement settings of every probe.

    Defaults follow what was measured at tiny scale (../shared/SCIENCE.md); see the README's
    configuration reference for how to choose them at real scale.
    """

    max_steps: int = 60
    learning_rate: float = 1e-3
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
