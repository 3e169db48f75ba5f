"""The checks and set-up of :class:`~transfer_probe.loop.ProbeLoop`: its settings, tasks and executor
(a clear ``ValueError`` at construction), the visible log lines, and how many steps a schedule probes."""

from __future__ import annotations

import logging
import math
import numbers
import sys
from collections.abc import Iterable
from typing import Any

from transfer_probe.plugins import get_executor
from transfer_probe.run.probe import FinetuneConfig
from transfer_probe.schedule import ProbeSchedule
from transfer_probe.text import format_tokens

logger = logging.getLogger("transfer_probe")

STOP_ON_CHOICES = ("misaligned", "law_break", "no_transfer", "stop")


class _ProgressSafeHandler(logging.StreamHandler):
    """Writes through tqdm when it is there, so a line is not glued to the Trainer's progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm.auto import tqdm

            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging must never raise into training
            self.handleError(record)


def make_lines_visible() -> None:
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


def _count(name: str, value: Any, least: int, what: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < least:
        kind = "a positive" if least > 0 else "a non-negative"
        raise ValueError(f"{name} must be {kind} integer ({what}), got {value!r}")
    return int(value)


def check_settings(finetune: Any, *, repeats: Any, adaptive_repeats: Any, extra_probes: Any,
                   budget_tokens: Any, target_bleu: Any) -> tuple[int, int, int]:
    """``(repeats, adaptive_repeats, extra_probes)`` as integers, after checking every setting."""
    if not isinstance(finetune, FinetuneConfig):
        raise ValueError(f"finetune must be a transfer_probe.FinetuneConfig, got {type(finetune).__name__}")
    counts = (_count("repeats", repeats, 1, "fine-tunes per probe point"),
              _count("adaptive_repeats", adaptive_repeats, 0, "extra fine-tunes over the run"),
              _count("extra_probes", extra_probes, 0, "extra probe points over the run"))
    for name, v in (("budget_tokens", budget_tokens), ("target_bleu", target_bleu)):
        if v is not None and (not isinstance(v, numbers.Real) or isinstance(v, bool)
                              or not math.isfinite(v) or v <= 0):
            raise ValueError(f"{name} must be a positive number or None, got {v!r}")
    return counts


def check_tasks(tasks: Any) -> list[Any]:
    if tasks is None or isinstance(tasks, (str, bytes)):
        raise ValueError("tasks must be a list of tasks, e.g. [TranslationTask.from_files(...)]")
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


def resolve_executor(executor: Any) -> type:
    """The executor class for a name (``"inline"``, ``"process"``, a plugin's ``"ray"``) or a class."""
    if isinstance(executor, type):
        if not all(hasattr(executor, a) for a in ("submit", "poll", "close")):
            raise ValueError(f"executor class {executor.__name__} lacks submit/poll/close (see transfer_probe.run.executors)")
        return executor
    if not isinstance(executor, str):
        raise ValueError(f"executor must be a name ('inline', 'process', 'ray', ...) or a class, got {executor!r}")
    try:  # the one registry: built-ins and plugins alike
        return get_executor(executor)
    except Exception as err:  # unknown name: the plugin manager's message lists the valid ones
        raise ValueError(str(err).strip("'\"")) from None


def probe_steps(schedule: ProbeSchedule, start_step: int, end_step: int, per_step: int) -> int | None:
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


def announce_schedule(schedule: ProbeSchedule, thresholds: Any, tokens: int, per_step: int | None,
                      max_steps: int) -> None:
    """Say at the start when the schedule cannot reach a verdict before the end of training
    (``per_step``: tokens per step when known; ``max_steps``: the training's last step, 0 if unknown)."""
    if schedule.every_tokens is not None and not per_step:
        return  # tokens per step unknown until training runs: nothing exact to say
    end = max_steps * per_step if per_step and max_steps > 0 else max(schedule.token_points or (0,))
    if per_step and max_steps > 0:
        n = probe_steps(schedule, int(tokens) // per_step, max_steps, per_step)
    else:  # tokens per step unknown: the points themselves (several crossed in one step probe once)
        n = schedule.count_between(int(tokens), int(end))
    if n is None:
        return
    from transfer_probe.diagnose import DEFAULT_THRESHOLDS

    need = (thresholds or DEFAULT_THRESHOLDS).min_points
    if n < need:
        logger.warning("transfer_probe | only %d probe point%s scheduled up to %s tokens; a verdict needs at least "
                       "%d after the warm-up: every verdict will read insufficient_data. Add points "
                       "(token_points=log_points(...), a smaller every_tokens)", n, "" if n == 1 else "s",
                       format_tokens(end), need)
    else:
        logger.info("transfer_probe | %d probe points scheduled up to %s tokens; a verdict needs at least %d "
                    "after the warm-up", n, format_tokens(end), need)


# The callback's stopping rule and sinks, checked at its construction


def check_stop_on(stop_on: Any) -> frozenset[str]:
    if stop_on is None:
        return frozenset()
    if isinstance(stop_on, str):
        stop_on = [stop_on]
    values = frozenset(str(s) for s in stop_on)
    bad = sorted(values - set(STOP_ON_CHOICES))
    if bad:
        raise ValueError(f"stop_on has unknown verdicts {bad}; choose from {list(STOP_ON_CHOICES)}")
    return values


def make_sinks(sinks: Any) -> list[Any]:
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


def call_sink(sink: Any, method: str, arg: Any) -> None:
    fn = getattr(sink, method, None)
    if fn is None:
        return
    try:
        fn(arg)
    except Exception as exc:
        logger.warning("transfer_probe | sink %r failed in %s: %s", sink, method, exc)
