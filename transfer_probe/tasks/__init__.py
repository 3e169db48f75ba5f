"""Downstream tasks: the :class:`Task` protocol and the built-in :class:`TranslationTask`.

``CodeTask`` lives in ``transfer_probe.tasks.code`` and is imported lazily.
"""

from __future__ import annotations

from typing import Any

from transfer_probe.tasks.base import PreparedTask, Task, TaskScores, TextPairTask
from transfer_probe.tasks.translation import TranslationTask

__all__ = ["Task", "PreparedTask", "TaskScores", "TextPairTask", "TranslationTask", "CodeTask"]


def __getattr__(name: str) -> Any:
    if name == "CodeTask":
        from transfer_probe.tasks.code import CodeTask

        return CodeTask
    raise AttributeError(f"module 'transfer_probe.tasks' has no attribute {name!r}")
