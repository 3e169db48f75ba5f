"""What a diagnosis returns: :class:`Verdict`, its statuses, the :class:`Thresholds` behind it, and
:class:`VerdictTracker`, which decides which verdicts to announce."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from transfer_probe.jsonable import to_json
from transfer_probe.store.history import SCHEMA_VERSION
from transfer_probe.store.records import examples

# "suspected" is the first stage of a break: a signal that more measurement should settle before
# anyone stops a run on it. The confirmed statuses stand until the evidence reverses.
STATUSES = ("insufficient_data", "aligned", "suspected", "misaligned", "law_break", "no_transfer")
WARNING_STATUSES = frozenset({"misaligned", "law_break", "no_transfer"})
RECOMMENDATIONS = ("continue", "stop", "wait", "probe again")


@dataclass(frozen=True)
class Thresholds:
    """The decision thresholds of :func:`~transfer_probe.diagnose.diagnose`.

    Break detection is sequential and calibrated per run: ``alpha_run`` is the chance that a healthy
    run (rising or flat, with the recorded noise) gets a confirmed break warning at any probe of a run
    of ``horizon`` probes; ``alpha_suspect`` the same for the first-stage ``suspected`` signal (cheap:
    it asks for more measurement, never for a stop). ``peak_window``: how many probes the running best
    is averaged over. ``z_reverse``: how far (noise SDs) a new probe must exceed the level before a
    confirmed break for the warning to be lifted. ``z_ce``: how far cross-entropy must improve (noise
    SDs) over the same probes for the misalignment contrast. ``z_transfer``: how far above the
    no-pretraining baseline the newest probes must be to count as transfer. ``z_holdout``: how far
    below both laws' predictions (log-law and saturating) the newest probes must be to suspect a
    plateau. ``z_support``: how far below both laws fitted to the earlier probes the mean of the newest
    two must be to confirm a first break signal with them, each of the two at least
    ``z_support_each`` below on its own (one crashed probe cannot carry it); lower than ``z_holdout``
    because it only confirms what the model-free test already suspects. ``z_warmup``: how far above the baseline (or the first probes) a probe must be for
    learning to have started. ``min_effect``: a score difference too small to matter (in points of
    a 0-100 score; a hundredth of that for 0-1 scores): a score below the baseline by less than this,
    while cross-entropy beats the baseline's, reads ``no_transfer`` with ``wait``. ``borderline``: a statistic within this distance of its threshold is
    flagged. ``min_points`` counts probe points after the warm-up; ``min_span_decades`` is the
    smallest log10(newest / oldest tokens) for a verdict.
    """

    alpha_run: float = 0.05
    alpha_suspect: float = 0.3
    horizon: int = 20
    peak_window: int = 3
    z_reverse: float = 1.645
    z_ce: float = 1.645
    z_transfer: float = 1.645
    z_holdout: float = 3.0
    z_support: float = 2.0
    z_support_each: float = 1.0
    z_warmup: float = 2.0
    min_effect: float = 1.0
    borderline: float = 0.5
    min_points: int = 5
    min_span_decades: float = 0.5
    interval: float = 0.9

    def __post_init__(self):
        for name in ("z_reverse", "z_ce", "z_transfer", "z_holdout", "z_support", "z_warmup"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Thresholds.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("alpha_run", "alpha_suspect"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"Thresholds.{name} must be in (0, 1), got {getattr(self, name)!r}")
        if self.alpha_suspect < self.alpha_run:
            raise ValueError(f"Thresholds.alpha_suspect ({self.alpha_suspect}) must be >= alpha_run ({self.alpha_run}): "
                             f"the first signal comes before the confirmed one")
        if self.min_points < 5:
            raise ValueError(f"Thresholds.min_points must be >= 5 (4 to fit the 3-parameter law with a degree "
                             f"of freedom left, 1 to check it), got {self.min_points}")
        if not 5 <= self.horizon <= 200:
            raise ValueError(f"Thresholds.horizon must be in [5, 200] probes, got {self.horizon!r}")
        if not 1 <= self.peak_window <= 10:
            raise ValueError(f"Thresholds.peak_window must be in [1, 10], got {self.peak_window!r}")
        if not 0 < self.interval < 1:
            raise ValueError(f"Thresholds.interval must be in (0, 1), got {self.interval!r}")


DEFAULT_THRESHOLDS = Thresholds()


def with_thresholds(**changes: Any) -> Thresholds:
    """A copy of the default thresholds with some changed: ``diagnose(..., thresholds=with_thresholds(alpha_run=0.01))``."""
    return replace(DEFAULT_THRESHOLDS, **changes)


class MissingColumnError(KeyError, ValueError):
    """A column named on the command line (``--x``, ``--y``, ``--ce``) is not in the table."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass
class Verdict:
    """The diagnosis of one (task, D_f) group at its newest probe.

    ``status`` is one of :data:`STATUSES`; ``recommendation`` one of ``continue | stop | wait | probe
    again``; ``reasons`` are plain sentences with the numbers behind them. ``prediction`` is a dict
    ``{"budget", "mean", "low", "high", "interval", "law"}`` (or ``{"budget", "mean": None, "why"}``),
    ``tokens_to_target`` a dict ``{"target", "mean", "low", "high"}`` (or ``{"target", "mean": None,
    "why": "not reachable ..."}``). ``borderline`` says a decision was within
    ``Thresholds.borderline`` of its threshold. ``stats`` holds the test statistics; ``history`` the
    state at each earlier look (so a standing warning shows when it began).

        >>> v = Verdict(status="aligned", recommendation="continue", task="en-de", finetune_size=2000)
        >>> v.to_dict()["status"]
        'aligned'
    """

    status: str
    recommendation: str
    reasons: list[str] = field(default_factory=list)
    prediction: dict | None = None
    tokens_to_target: dict | None = None
    borderline: bool = False
    task: Any = None
    finetune_size: Any = None
    run_id: Any = None
    tokens: float | None = None
    n_points: int = 0
    more_probes_needed: int = 0
    metric: str = "bleu"
    ce_metric: str | None = "cross_entropy"
    latest: dict = field(default_factory=dict)
    latest_sem: dict = field(default_factory=dict)
    fits: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    break_tokens: float | None = None
    law: str | None = None
    history: list = field(default_factory=list)

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"Verdict.status must be one of {STATUSES}, got {self.status!r}")
        if self.recommendation not in RECOMMENDATIONS:
            raise ValueError(f"Verdict.recommendation must be one of {RECOMMENDATIONS}, got {self.recommendation!r}")

    @property
    def is_warning(self) -> bool:
        """A standing condition the user should act on (a warning that recommends stopping)."""
        return self.status in WARNING_STATUSES and self.recommendation == "stop"

    @property
    def is_suspected(self) -> bool:
        return self.status == "suspected"

    def to_dict(self) -> dict:
        """Plain JSON values (non-finite floats become ``None``): what ``diagnose --json`` prints."""
        from transfer_probe.text import action, format_verdict

        d = {
            "status": self.status,
            "recommendation": self.recommendation,
            "action": action(self),
            "borderline": self.borderline,
            "reasons": list(self.reasons),
            "task": self.task,
            "finetune_size": self.finetune_size,
            "run_id": self.run_id,
            "tokens": self.tokens,
            "n_points": self.n_points,
            "more_probes_needed": self.more_probes_needed,
            "metric": self.metric,
            "ce_metric": self.ce_metric,
            "latest": self.latest,
            "latest_sem": self.latest_sem,
            "prediction": self.prediction,
            "tokens_to_target": self.tokens_to_target,
            "break_tokens": self.break_tokens,
            "law": self.law,
            "fits": self.fits,
            "stats": self.stats,
            "history": self.history,
            "message": format_verdict(self),
        }
        return jsonable(d)

    def to_record(self) -> dict:
        """A history record (``"kind": "verdict"``) for :class:`transfer_probe.store.history.HistoryWriter`."""
        d = self.to_dict()
        df = self.finetune_size
        d["finetune_size"] = {"examples": df} if df is not None and not isinstance(df, Mapping) else df
        return {"schema": SCHEMA_VERSION, "kind": "verdict", "time": time.time(), **d}


class VerdictTracker:
    """Decides which verdicts to announce, so a standing condition is not repeated every probe.

    ``update(verdict)`` returns True when a condition starts, when it changes (to another warning
    status, to or from ``suspected``, or back to ``aligned``: said once so the log shows it is over);
    False while the same condition stands or while there is not enough data. ``final()`` returns the
    standing warnings to restate at the end of training.

        >>> t = VerdictTracker()
        >>> t.update(Verdict(status="aligned", recommendation="continue", task="t", finetune_size=1))
        False
        >>> t.update(Verdict(status="misaligned", recommendation="stop", task="t", finetune_size=1))
        True
        >>> t.update(Verdict(status="misaligned", recommendation="stop", task="t", finetune_size=1))
        False
        >>> [v.status for v in t.final()]
        ['misaligned']
    """

    def __init__(self) -> None:
        self._last: dict[tuple, Verdict] = {}
        self._announced: dict[tuple, str] = {}

    @staticmethod
    def _key(v: Verdict) -> tuple:
        return (v.run_id, v.task, examples(v.finetune_size))

    def update(self, verdict: Verdict) -> bool:
        key = self._key(verdict)
        self._last[key] = verdict
        if verdict.status == "insufficient_data":
            return False
        now = f"{verdict.status}:{verdict.recommendation}"
        before = self._announced.get(key, "aligned:continue")
        if now == before:
            return False
        self._announced[key] = now
        notable = WARNING_STATUSES | {"suspected"}
        return before.split(":")[0] in notable or verdict.status in notable

    @property
    def latest(self) -> dict[tuple, Verdict]:
        """The newest verdict of every (run, task, D_f) seen."""
        return dict(self._last)

    def final(self) -> list[Verdict]:
        """The newest verdict of every group whose condition is a warning, to restate at the end of training."""
        return [v for v in self._last.values() if v.is_warning]


def jsonable(obj: Any) -> Any:
    """Plain JSON values: non-finite floats become ``None``, numpy values Python ones."""
    return to_json(obj)
