"""What :func:`transfer_probe.compare.compare_runs` returns: each run's forecast at the budget, the odds
of each pair, one group's comparison (its ranking, recommendation and text) and the whole comparison
with the method behind its probabilities."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from transfer_probe.diagnose import fits as F
from transfer_probe.diagnose.verdict import jsonable
from transfer_probe.text import format_tokens, label

METHOD = ("normal approximation: each run's predicted score at the budget is normal with the mean of its "
          "chosen law and the sd of the expected curve (fit uncertainty, widened by the run's own backtest "
          "rms when > 1); P(A beats B) = Phi(d / sqrt(sd_A^2 + sd_B^2)), runs independent")


@dataclass
class RunForecast:
    """One run's predicted score at the budget: ``mean``, its interval ``low``-``high`` (of the expected
    score, at the comparison's ``interval`` level) and ``sd``; ``None`` with ``why`` when there is no
    prediction. ``current`` is the newest probe's value (at ``tokens``); ``law`` the law chosen by the
    backtest, ``interval_scale`` its widening, ``source`` ``"law"`` or ``"measured"``."""

    run_id: str
    tokens: float
    n_points: int
    current: float
    mean: float | None = None
    low: float | None = None
    high: float | None = None
    sd: float | None = None
    law: str | None = None
    source: str | None = None
    interval_scale: float = 1.0
    backtest: dict = field(default_factory=dict)
    noise: float = float("nan")
    why: str = ""
    points: tuple = field(default=((), ()), repr=False)  # (tokens, values) of the probe points
    _fit: Any = field(default=None, repr=False)

    @property
    def predicted(self) -> bool:
        return self.mean is not None

    def curve(self, tokens) -> np.ndarray:
        """The chosen law's curve at ``tokens`` (NaN without one): for plotting the runs side by side."""
        x = np.atleast_1d(np.asarray(tokens, float))
        return F.curve(self._fit, x) if self._fit is not None else np.full(x.shape, np.nan)

    def to_dict(self) -> dict:
        keys = ("run_id", "tokens", "n_points", "current", "mean", "low", "high", "sd", "law", "source",
                "interval_scale", "backtest", "noise", "why")
        return jsonable({k: getattr(self, k) for k in keys})


@dataclass
class PairOdds:
    """Two runs at the budget: ``better`` is the one predicted better, ``p`` = P(better beats other)
    (>= 0.5), ``called`` when ``p >= confidence``; ``text`` reads "a beats b (P = 0.97)" or "a vs b:
    too close to call (P = 0.62)". ``p`` is None when either run has no prediction."""

    better: str
    other: str
    p: float | None
    called: bool
    text: str

    def to_dict(self) -> dict:
        return jsonable({"better": self.better, "other": self.other, "p": self.p, "called": self.called,
                         "text": self.text})


@dataclass
class GroupComparison:
    """The runs of one (task, D_f) group compared at ``budget`` tokens. ``ranking`` lists tiers, best
    first: every run of a tier is beaten by each run of the tier before it (called pairs); runs within
    a tier are too close to call. Runs without a prediction come last, in ``unranked``."""

    task: str
    finetune_size: Any
    metric: str
    higher_is_better: bool
    budget: float
    interval: float
    confidence: float
    runs: list[RunForecast]
    pairs: list[PairOdds]
    ranking: list[list[str]]
    unranked: list[str]
    recommendation: str
    notes: list[str] = field(default_factory=list)

    def p(self, a: str, b: str) -> float | None:
        """P(run ``a`` beats run ``b`` at the budget)."""
        for pr in self.pairs:
            if pr.p is not None and {pr.better, pr.other} == {a, b}:
                return pr.p if pr.better == a else 1.0 - pr.p
        return None

    def run(self, run_id: str) -> RunForecast:
        return next(r for r in self.runs if r.run_id == run_id)

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("task", "finetune_size", "metric", "higher_is_better", "budget",
                                           "interval", "confidence", "ranking", "unranked", "recommendation",
                                           "notes")}
        d["runs"] = [r.to_dict() for r in self.runs]
        d["pairs"] = [p.to_dict() for p in self.pairs]
        return jsonable(d)

    def __str__(self) -> str:
        L = label(self.metric)
        way = "higher" if self.higher_is_better else "lower"
        head = f"{self.task}" + (f" D_f={self.finetune_size}" if self.finetune_size is not None else "")
        lines = [f"{head} | {L} at {format_tokens(self.budget)} tokens ({way} is better; "
                 f"{self.interval:.0%} intervals, called at P >= {self.confidence:g})"]
        width = max(len(r.run_id) for r in self.runs)
        for r in self.runs:
            now = f"{L} {_g(r.current)} at {format_tokens(r.tokens)}"
            if r.predicted:
                how = "measured at the budget" if r.source == "measured" else (
                    f"{r.law} law" + (f", widened x{r.interval_scale:.2g}" if r.interval_scale > 1 else ""))
                lines.append(f"  {r.run_id:<{width}}  {now}: predicted {_g(r.mean)} [{_g(r.low)}, {_g(r.high)}] ({how})")
            else:
                lines.append(f"  {r.run_id:<{width}}  {now}: no prediction ({r.why})")
        lines += [f"  {p.text}" for p in self.pairs]
        if self.ranking:
            lines.append("  ranking: " + "  ".join(f"{i}. {' = '.join(t)}" for i, t in enumerate(self.ranking, 1))
                         + (f"  (unranked: {', '.join(self.unranked)})" if self.unranked else ""))
        lines.append(f"  recommendation: {self.recommendation}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


@dataclass
class RunComparison:
    """What :func:`compare_runs` returns: one :class:`GroupComparison` per (task, D_f), the ``method``
    behind the probabilities and the ``settings`` that produced them. ``cmp[task, df]`` picks a group."""

    groups: list[GroupComparison]
    settings: dict
    method: str = METHOD

    def __getitem__(self, key: tuple) -> GroupComparison:
        task, df = key
        for g in self.groups:
            if str(g.task) == str(task) and str(g.finetune_size) == str(df):
                return g
        raise KeyError(f"no group (task={task!r}, finetune_size={df!r}); groups: "
                       f"{[(g.task, g.finetune_size) for g in self.groups]}")

    def to_dict(self) -> dict:
        return jsonable({"kind": "comparison", "method": self.method, "settings": self.settings,
                         "groups": [g.to_dict() for g in self.groups]})

    def __str__(self) -> str:
        return "\n\n".join([str(g) for g in self.groups] + [f"method: {self.method}"])


def _g(v: float | None) -> str:
    return "?" if v is None or not math.isfinite(v) else f"{v:.4g}"
