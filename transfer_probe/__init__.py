"""transfer_probe: probe downstream transfer while pre-training, fit scaling laws, warn on misalignment.

    from transfer_probe import TransferProbeCallback, TranslationTask

    probe = TransferProbeCallback(
        tasks=[TranslationTask.from_files("train.jsonl", "test.jsonl", source="en", target="de",
                                          finetune_sizes=[2_000, 20_000])],
        every_tokens=50_000_000,
        budget_tokens=2e10,
    )
    trainer = Trainer(..., callbacks=[probe])

The numeric core (``transfer_probe.laws``, ``transfer_probe.diagnose``, ``transfer_probe.store.history``)
imports neither torch nor transformers; the public names below are imported lazily so that
``import transfer_probe.laws`` stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "TransferProbeCallback": "transfer_probe.callback",
    "TranslationTask": "transfer_probe.tasks",
    "CodeTask": "transfer_probe.tasks",
    "FinetuneConfig": "transfer_probe.run.probe",
    "hookimpl": "transfer_probe.hookspecs",
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:  # pragma: no cover
    from transfer_probe.callback import TransferProbeCallback as TransferProbeCallback
    from transfer_probe.hookspecs import hookimpl as hookimpl
    from transfer_probe.run.probe import FinetuneConfig as FinetuneConfig
    from transfer_probe.tasks import CodeTask as CodeTask
    from transfer_probe.tasks import TranslationTask as TranslationTask


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'transfer_probe' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
