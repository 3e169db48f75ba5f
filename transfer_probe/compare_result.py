"""What :func:`transfer_probe.compare.compare_runs` returns: each run's forecast at the budget, the odds
of each pair, one group's comparison (its ranking, recommendation and text) and the whole comparison
with the method behind its probabilities."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy.optimize import brentq
from scipy.stats import norm

from transfer_probe.diagnose import fits as F
from transfer_probe.diagnose.verdict import jsonable
from transfer_probe.text import format_tokens, label

METHODS = {
    "mixture": ("mixture of the laws: each run's predicted score at the budget mixes its candidate laws' normal "
                "predictions (mean of the law, sd of its expected curve widened by its own backtest rms when > 1), "
                "each law weighted by the likelihood of the run's own later probes under its one-step-ahead "
                "backtest; P(A beats B) = sum over the laws' pairs of w_A w_B Phi(d / sqrt(sd_A^2 + sd_B^2)), "
                "runs independent"),
    "chosen": ("normal approximation: each run's predicted score at the budget is normal with the mean of its "
               "chosen law and the sd of the expected curve (fit uncertainty, widened by the run's own backtest "
               "rms when > 1); P(A beats B) = Phi(d / sqrt(sd_A^2 + sd_B^2)), runs independent"),
}
METHOD = METHODS["mixture"]


@dataclass
class RunForecast:
    """One run's predicted score at the budget: ``mean``, its interval ``low``-``high`` (of the expected
    score, at the comparison's ``interval`` level) and ``sd``; ``None`` with ``why`` when there is no
    prediction. ``current`` is the newest probe's value (at ``tokens``); ``law`` the law chosen by the
    backtest (the verdict's law), ``interval_scale`` its widening, ``source`` ``"law"`` or ``"measured"``.
    ``components``: the normal predictions mixed (``law``, ``weight``, ``mean``, ``sd``), whose mixture
    gives ``mean``, ``sd`` and the interval; ``mix_note`` says which laws were mixed or why one alone."""

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
    components: list = field(default_factory=list, repr=False)
    mix_note: str = ""
    _fit: Any = field(default=None, repr=False)  # the verdict's law's fit (report_fits reads its parameters)

    @property
    def predicted(self) -> bool:
        return self.mean is not None

    @property
    def mixes(self) -> str:
        """"log law 0.62 + saturating law 0.38", or "" for a single law or a measured point."""
        laws = [c for c in self.components if c.get("law")]
        return " + ".join(f"{c['law']} law {c['weight']:.2f}" for c in laws) if len(laws) > 1 else ""

    def set_components(self, comps: list[dict], interval: float) -> RunForecast:
        """Predict the mixture of ``comps``: its mean, sd (law of total variance) and central interval."""
        w, m, s = (np.array([c[k] for c in comps], float) for k in ("weight", "mean", "sd"))
        self.components = comps
        self.mean = float(w @ m)
        self.sd = float(math.sqrt(max(w @ (s ** 2 + m ** 2) - self.mean ** 2, 0.0)))
        self.low, self.high = (_mixture_quantile(w, m, s, 0.5 + side * interval / 2) for side in (-1, 1))
        return self

    def chosen_only(self, interval: float) -> RunForecast:
        """This forecast as ``method="chosen"`` gives it: the verdict's law (or the measured point) alone."""
        if len(self.components) < 2:
            return self
        keep = [{**c, "weight": 1.0} for c in self.components if c["law"] == self.law]
        return replace(self, mix_note=f"{self.law} law alone").set_components(keep, interval)

    def curve(self, tokens) -> np.ndarray:
        """The predicted mean curve at ``tokens`` (the laws' curves, weighted; NaN without a law): for
        plotting the runs side by side."""
        x = np.atleast_1d(np.asarray(tokens, float))
        laws = [c for c in self.components if c.get("fit") is not None]
        if not laws:
            return np.full(x.shape, np.nan)
        return sum(c["weight"] * F.curve(c["fit"], x) for c in laws)

    def to_dict(self) -> dict:
        keys = ("run_id", "tokens", "n_points", "current", "mean", "low", "high", "sd", "law", "source",
                "interval_scale", "backtest", "noise", "why", "mix_note")
        d = {k: getattr(self, k) for k in keys}
        d["components"] = [{k: c.get(k) for k in ("law", "weight", "mean", "sd")} for c in self.components]
        return jsonable(d)


def _mixture_quantile(w: np.ndarray, m: np.ndarray, s: np.ndarray, q: float) -> float:
    """The q-quantile of a mixture of normals (closed form for one)."""
    if len(w) == 1 or np.allclose(m, m[0]) and np.allclose(s, s[0]):
        return float(m[0] + norm.ppf(q) * s[0])
    s = np.maximum(s, 1e-12 * (1 + np.abs(m)))  # a law with no band: a point mass, its CDF a (near) step
    z = float(norm.ppf(q))
    lo, hi = float(np.min(m + z * s)), float(np.max(m + z * s))  # the quantile lies between the components'
    if not hi > lo:
        return lo
    return float(brentq(lambda v: float(w @ norm.cdf((v - m) / s)) - q, lo, hi))


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
                    f"mix of the {r.mixes}; the verdict's law: {r.law}" if r.mixes else
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


# ---------------------------------------------------------------- ranking and recommendation text


def _p(p: float) -> str:
    """"= 0.62", "= 0.997", "> 0.999": two decimals, three near 1, never a bare 1.00."""
    return "> 0.999" if p > 0.9995 else f"= {p:.3f}" if p > 0.995 else f"= {p:.2f}"


def _ranking(runs: list[RunForecast], pairs: list[PairOdds], higher: bool) -> list[list[str]]:
    """Tiers, best first: a run opens a new tier only when every run of the current tier beats it."""
    beats = {(p.better, p.other) for p in pairs if p.called}
    order = sorted((r for r in runs if r.predicted), key=lambda r: -r.mean if higher else r.mean)
    tiers: list[list[str]] = []
    for r in order:
        if tiers and not all((t, r.run_id) in beats for t in tiers[-1]):
            tiers[-1].append(r.run_id)
        else:
            tiers.append([r.run_id])
    return tiers


def _recommend(tiers: list[list[str]], pairs: list[PairOdds], unranked: list[str], budget: float,
               runs: list[RunForecast]) -> str:
    at = f"at {format_tokens(budget)} tokens"
    if not tiers:
        return f"no recommendation: no run has a prediction {at} (" + "; ".join(
            f"{r.run_id}: {r.why}" for r in runs) + ")"
    odds = {(p.better, p.other): p.p for p in pairs if p.p is not None}
    top, rest = tiers[0], [r for t in tiers[1:] for r in t]
    if len(top) == 1:
        text = f"continue {top[0]}"
        if rest:
            weakest = min(rest, key=lambda r: odds[(top[0], r)])
            text += (f": it beats {', '.join(rest)} {at} (P {_p(odds[(top[0], weakest)])}"
                     + (f" against {weakest})" if len(rest) > 1 else ")"))
    else:
        close = [f"{a} vs {b} P {_p(odds.get((a, b), odds.get((b, a), 0.5)))}"
                 for i, a in enumerate(top) for b in top[i + 1:]]
        text = (f"too close to call between {', '.join(top)} {at} ({'; '.join(close)}): continue "
                f"{'both' if len(top) == 2 else 'them'}, or probe more before choosing")
        if rest:
            text += f"; drop {', '.join(rest)} (beaten)"
    if unranked:
        text += f"; {', '.join(unranked)}: no prediction, not compared"
    return text
