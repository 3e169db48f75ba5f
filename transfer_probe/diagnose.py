"""Verdicts: is the pre-training run aligned with the downstream task, has the BLEU law broken?

One (task, D_f) group of history records goes in, a :class:`Verdict` comes out::

    >>> from transfer_probe.diagnose import diagnose, format_verdict
    >>> v = diagnose(records, budget_tokens=2e10, target=25.0)       # doctest: +SKIP
    >>> v.status, v.recommendation                                    # doctest: +SKIP
    ('aligned', 'continue')
    >>> print(format_verdict(v))                                      # doctest: +SKIP
    transfer_probe | en-de D_f=2000 | tokens 1.2e9 | BLEU 18.4 CE 2.31 | law: BLEU=(log(A*D^a))^b fits ...

The rules (Isik et al. 2024, section 3.5), each made a test against the measured noise:

- ``insufficient_data``: fewer probe points than the law can be identified from and checked with
  (4 to fit the 3-parameter law, 1 to check it; one more when no errors were measured), or they
  span too little of the token range, or the law is not identified yet. Recommendation ``wait``,
  with how many more probes.
- ``misaligned``: BLEU broke its law while downstream cross-entropy still follows its power law.
  "Broke" is any of three tests, each in units of the measured noise: *stopped improving* (a law
  that goes flat before the newest two probes fits all probes better than the rising law, by more
  than ``z_break`` in signed root chi-square), *fell* (the newest point is below the best of the few
  before it by more than ``z_break`` standard errors of the difference), *left the prediction
  interval* (the newest point is below the law fitted to the earlier points by more than
  ``z_holdout`` standard deviations of prediction and noise combined).
- ``law_break``: the same BLEU break without that contrast (cross-entropy broke too, or was not
  recorded).
- ``no_transfer``: the newest pretrained probes are not better than the no-pretraining baseline by
  more than ``z_transfer`` standard errors.
- ``aligned``: none of the above; prediction at the budget with its interval, tokens to the target.

"Noise" is the standard error of each aggregated point (repeats, or the bootstrap interval of a
single probe; :func:`transfer_probe.history.aggregate`). When a point has none, the residual scatter
of the law fitted to the earlier points is used instead. When the scatter around the law is
significantly larger than the recorded errors claim (a chi-square test), the errors are scaled up by
the Birge ratio: bootstrap intervals over test sentences do not see fine-tuning seed noise.

The thresholds (:class:`Thresholds`) were calibrated on synthetic curve families
(``benchmarks/bench_diagnose.py``; figures in ``benchmarks/README.md``): false alarms on aligned curves
against detection of breaks within two probes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from transfer_probe.history import SCHEMA_VERSION, aggregate, group_key, probe_records

__all__ = [
    "STATUSES",
    "WARNING_STATUSES",
    "Thresholds",
    "DEFAULT_THRESHOLDS",
    "Verdict",
    "diagnose",
    "diagnose_all",
    "diagnose_rows",
    "format_verdict",
    "VerdictTracker",
    "MissingColumnError",
]

STATUSES = ("insufficient_data", "aligned", "misaligned", "law_break", "no_transfer")
WARNING_STATUSES = frozenset({"misaligned", "law_break", "no_transfer"})
RECOMMENDATIONS = ("continue", "stop", "wait")

# Score metrics tried, in order, when the caller names none (higher is better for all of them).
_SCORE_CANDIDATES = ("bleu", "chrf", "exact_match", "pass@1", "accuracy", "acc", "score")
_LABELS = {"bleu": "BLEU", "chrf": "chrF", "cross_entropy": "CE", "exact_match": "exact match",
           "accuracy": "accuracy", "bpb": "bits/byte"}
_LONG_LABELS = {"cross_entropy": "cross-entropy", "bpb": "bits-per-byte"}


@dataclass(frozen=True)
class Thresholds:
    """The decision thresholds of :func:`diagnose`, in units of noise standard deviations.

    ``z_break``: the threshold of the "stopped improving" and "fell below the earlier peak" tests;
    ``z_holdout``: the threshold of the hold-out test (newest point against the prediction of the law
    fitted to the earlier ones; higher because the extrapolated prediction adds its own
    uncertainty and this test adds the fewest detections per false alarm). ``z_ce``: how far above its power law (or above its
    earlier minimum) cross-entropy must be to count as broken too. ``z_transfer``: how far above the
    baseline the newest probes must be to count as transfer. ``borderline``: a decision whose
    statistic lies within this distance of its threshold is flagged ``borderline`` (more repeats at
    that point would settle it). ``min_points`` counts probe points with ``tokens > 0``;
    ``min_span_decades`` is the smallest log10(newest / oldest tokens) for a verdict.
    ``peak_window``: how many earlier points the "fell below its peak" test looks back over.
    """

    z_break: float = 2.0
    z_holdout: float = 3.5
    z_ce: float = 1.645
    z_transfer: float = 1.645
    borderline: float = 0.5
    min_points: int = 5
    min_span_decades: float = 0.5
    peak_window: int = 3
    interval: float = 0.9

    def __post_init__(self):
        for name in ("z_break", "z_holdout", "z_ce", "z_transfer"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Thresholds.{name} must be > 0, got {getattr(self, name)!r}")
        if self.min_points < 5:
            raise ValueError(f"Thresholds.min_points must be >= 5 (4 to fit the 3-parameter law with a degree "
                             f"of freedom left, 1 to check it), got {self.min_points}")
        if not 0 < self.interval < 1:
            raise ValueError(f"Thresholds.interval must be in (0, 1), got {self.interval!r}")


DEFAULT_THRESHOLDS = Thresholds()


class MissingColumnError(KeyError, ValueError):
    """A column named on the command line (``--x``, ``--y``, ``--ce``) is not in the table."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass
class Verdict:
    """The diagnosis of one (task, D_f) group at its newest probe.

    ``status`` is one of :data:`STATUSES`; ``recommendation`` one of ``continue | stop | wait``;
    ``reasons`` are plain sentences with the numbers behind them. ``prediction`` is a dict
    ``{"budget", "mean", "low", "high", "interval"}`` (or ``{"budget", "mean": None, "why"}``),
    ``tokens_to_target`` a dict ``{"target", "mean", "low", "high"}`` (or ``{"target", "mean": None,
    "why": "not reachable ..."}``). ``borderline`` says a decision was within
    ``Thresholds.borderline`` of its threshold. ``stats`` holds the test statistics.

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

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"Verdict.status must be one of {STATUSES}, got {self.status!r}")
        if self.recommendation not in RECOMMENDATIONS:
            raise ValueError(f"Verdict.recommendation must be one of {RECOMMENDATIONS}, got {self.recommendation!r}")

    @property
    def is_warning(self) -> bool:
        return self.status in WARNING_STATUSES

    def to_dict(self) -> dict:
        """Plain JSON values (non-finite floats become ``None``): what ``diagnose --json`` prints."""
        d = {
            "status": self.status,
            "recommendation": self.recommendation,
            "action": _ACTIONS[self.status] if self.status != "aligned" else _aligned_action(self),
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
            "fits": self.fits,
            "stats": self.stats,
            "message": format_verdict(self),
        }
        return _jsonable(d)

    def to_record(self) -> dict:
        """A history record (``"kind": "verdict"``) for :class:`transfer_probe.history.HistoryWriter`."""
        d = self.to_dict()
        df = self.finetune_size
        d["finetune_size"] = {"examples": df} if df is not None and not isinstance(df, Mapping) else df
        return {"schema": SCHEMA_VERSION, "kind": "verdict", "time": time.time(), **d}


# --------------------------------------------------------------------------------------------------
# Public entry points


def diagnose(
    records: Iterable[Mapping[str, Any]],
    budget_tokens: float | None = None,
    target: float | None = None,
    *,
    metric: str | None = None,
    ce: str | None = "cross_entropy",
    thresholds: Thresholds | None = None,
) -> Verdict:
    """Diagnose one (task, D_f) group: its pretrained probe records plus its baseline records.

    ``metric`` is the score (higher is better; default ``bleu``, else the first of chrF, exact
    match, pass@1, accuracy found); ``ce`` the cross-entropy-type metric (lower is better) used for
    the misalignment contrast, ``None`` to ignore it. ``budget_tokens``: where to predict the score;
    ``target``: a score whose token cost is estimated.

        >>> recs = [{"task": "t", "finetune_size": 50, "tokens": d, "metrics": {"bleu": b}}
        ...         for d, b in [(1e8, 10.0), (2e8, 10.5)]]
        >>> diagnose(recs).status
        'insufficient_data'

    Raises ``ValueError`` when the records hold several (task, D_f) groups or several runs, or
    no successful pretrained probe.
    """
    th = thresholds or DEFAULT_THRESHOLDS
    recs = probe_records(records)
    pre = [r for r in recs if r.get("pretrained", True)]
    if not pre:
        raise ValueError("diagnose: no successful probe record of a pretrained model among the records "
                         "(baseline-only or failed probes cannot be diagnosed)")
    groups = sorted({group_key(r) for r in pre}, key=str)
    if len(groups) > 1:
        raise ValueError(f"diagnose: the records mix {len(groups)} (task, D_f) groups {groups}; pass one "
                         f"group, or use diagnose_all(records) to get a verdict per group")
    task, df = groups[0]
    base = [r for r in recs if not r.get("pretrained", True)]
    base_groups = {group_key(r) for r in base}
    if base_groups - {(task, df)}:
        raise ValueError(f"diagnose: baseline records of other groups {sorted(base_groups - {(task, df)}, key=str)} "
                         f"mixed with group {(task, df)}; pass only this group's baseline")
    runs = sorted({str(r.get("run_id")) for r in pre})
    if len(runs) > 1:
        raise ValueError(f"diagnose: the records of group {(task, df)} come from {len(runs)} runs {runs}; "
                         f"diagnose one run at a time (filter on record['run_id'])")
    if metric is None:
        metric = _pick_metric(pre)
    elif not any(metric in (r.get("metrics") or {}) for r in pre):
        have = sorted({m for r in pre for m in (r.get("metrics") or {})})
        raise ValueError(f"diagnose: metric {metric!r} is in no probe record of {(task, df)}; recorded: {have}")
    if ce is not None and not any(ce in (r.get("metrics") or {}) for r in pre):
        ce = None
    return _Diagnosis(pre, base, task, df, pre[0].get("run_id"), metric, ce, budget_tokens, target, th).run()


def diagnose_all(
    records: Iterable[Mapping[str, Any]],
    budget_tokens: float | None = None,
    target: float | None = None,
    **kwargs: Any,
) -> dict[tuple[str, Any], Verdict]:
    """A verdict per (task, D_f) group of a whole history (baseline records go to their group).

        >>> verdicts = diagnose_all(read_history("history.jsonl"), budget_tokens=2e10)   # doctest: +SKIP
        >>> verdicts[("en-fr", 2000)].status                                              # doctest: +SKIP
        'misaligned'

    Keyword arguments go to :func:`diagnose` (``metric``, ``ce``, ``thresholds``).
    """
    recs = probe_records(records)
    pre: dict[tuple, list[dict]] = {}
    base: dict[tuple, list[dict]] = {}
    for r in recs:
        (pre if r.get("pretrained", True) else base).setdefault(group_key(r), []).append(r)
    if not pre:
        raise ValueError("diagnose_all: no successful probe record of a pretrained model in the history")
    return {key: diagnose(pre[key] + base.get(key, []), budget_tokens, target, **kwargs)
            for key in sorted(pre, key=str)}


def diagnose_rows(
    rows: Sequence[Mapping[str, Any]],
    x: str = "tokens",
    y: str = "bleu",
    ce: str | None = "cross_entropy",
    budget_tokens: float | None = None,
    target: float | None = None,
    **kwargs: Any,
) -> Verdict:
    """Diagnose a plain table (CSV / JSON Lines rows): ``x`` tokens column, ``y`` score column, ``ce``
    cross-entropy-type column (lower is better; ``None`` to ignore; the default ``cross_entropy`` is
    skipped quietly when absent, any other missing name is an error).

    Optional columns: ``{y}_sem`` / ``{ce}_sem`` (standard errors), ``pretrained`` (false marks
    no-pretraining baseline rows), ``task``. Rows sharing a tokens value are repeats.

        >>> rows = [{"tokens": d, "bleu": b} for d, b in [(1e8, 10.0), (2e8, 12.0)]]
        >>> diagnose_rows(rows).status
        'insufficient_data'
    """
    rows = [r for r in rows if isinstance(r, Mapping)]
    if not rows:
        raise ValueError("diagnose_rows: the table has no rows")
    cols = list(dict.fromkeys(k for r in rows for k in r))
    for flag, name in (("--x", x), ("--y", y)):
        if name not in cols:
            raise MissingColumnError(f"column {name!r} ({flag}) is not in the table; columns: {', '.join(map(str, cols))}")
    if ce is not None and ce not in cols:
        if ce != "cross_entropy":
            raise MissingColumnError(f"column {ce!r} (--ce) is not in the table; columns: {', '.join(map(str, cols))} "
                                     f"(use --ce none to diagnose without a cross-entropy contrast)")
        ce = None
    tasks = {str(r.get("task")) for r in rows if r.get("task") is not None}
    task = tasks.pop() if len(tasks) == 1 else "table"
    recs = []
    for i, r in enumerate(rows):
        tokens = _num(r.get(x))
        score = _num(r.get(y))
        if tokens is None:
            raise ValueError(f"row {i + 1}: column {x!r} must be a number of tokens, got {r.get(x)!r}")
        if score is None:
            continue
        metrics = {y: score}
        ci = {}
        for name in (y, ce):
            if name is None:
                continue
            v = _num(r.get(name))
            if v is None:
                continue
            metrics[name] = v
            s = _num(r.get(f"{name}_sem"))
            if s is not None and s > 0:
                ci[name] = [v - 1.645 * s, v + 1.645 * s]
        pretrained = r.get("pretrained", True)
        if isinstance(pretrained, str):
            pretrained = pretrained.strip().lower() not in {"false", "0", "no", ""}
        elif isinstance(pretrained, float):
            pretrained = bool(pretrained)
        recs.append({"run_id": "table", "task": task, "finetune_size": None, "tokens": tokens,
                     "pretrained": bool(pretrained), "status": "ok", "metrics": metrics,
                     "metrics_ci": ci, "repeat": 0})
    if not recs:
        raise ValueError(f"diagnose_rows: no row has a numeric {y!r}")
    # Repeats: CSV rows have no repeat index; count rows sharing a tokens value.
    seen: dict[tuple, int] = {}
    for rec in recs:
        k = (rec["tokens"], rec["pretrained"])
        rec["repeat"] = seen.get(k, 0)
        seen[k] = rec["repeat"] + 1
    return diagnose(recs, budget_tokens, target, metric=y, ce=ce, **kwargs)


# --------------------------------------------------------------------------------------------------
# The diagnosis itself


class _Diagnosis:
    """One run of the rules; kept as an object so each step can read the shared arrays."""

    def __init__(self, pre, base, task, df, run_id, metric, ce, budget, target, th: Thresholds):
        self.th = th
        self.task, self.df, self.run_id = task, df, run_id
        self.metric, self.ce = metric, ce
        self.budget, self.target = budget, target
        names = [metric] + ([ce] if ce else [])
        pts = aggregate(pre, metrics=names)
        # A pretrained probe at 0 tokens is a probe of the random init: it is the baseline.
        zero = [p for p in pts if p["tokens"] <= 0]
        self.pts = [p for p in pts if p["tokens"] > 0 and metric in p["mean"]]
        self.base_pts = aggregate(base, metrics=names) + zero
        self.reasons: list[str] = []
        self.stats: dict[str, Any] = {}
        self.fits: dict[str, Any] = {}
        self.borderline = False
        self.x = np.array([p["tokens"] for p in self.pts], dtype=float)
        self.y = np.array([p["mean"][metric] for p in self.pts], dtype=float)
        self.s = _pooled_sem(self.pts, metric)
        self.L = _LABELS.get(metric, metric)

    # -- helpers -----------------------------------------------------------------------------------
    def verdict(self, status: str, recommendation: str, **kw) -> Verdict:
        latest = dict(self.pts[-1]["mean"]) if self.pts else {}
        latest_sem = {k: v for k, v in (self.pts[-1]["sem"] if self.pts else {}).items()}
        return Verdict(
            status=status, recommendation=recommendation, reasons=self.reasons, borderline=self.borderline,
            task=self.task, finetune_size=self.df, run_id=self.run_id,
            tokens=float(self.x[-1]) if len(self.x) else None, n_points=len(self.pts),
            metric=self.metric, ce_metric=self.ce, latest=latest, latest_sem=latest_sem,
            fits=self.fits, stats=self.stats, **kw,
        )

    def near(self, stat: float, threshold: float) -> bool:
        return math.isfinite(stat) and abs(stat - threshold) < self.th.borderline

    # -- the rules ---------------------------------------------------------------------------------
    def run(self) -> Verdict:
        th = self.th
        n = len(self.pts)
        known_noise = bool(np.all(np.isfinite(self.s))) if n else False
        need_points = th.min_points + (0 if known_noise else 1)
        more = max(0, need_points - n)
        span = math.log10(self.x[-1] / self.x[0]) if n >= 2 else 0.0
        more = max(more, _probes_to_span(self.x, th.min_span_decades))
        self.stats.update(n_points=n, span_decades=round(span, 3), noise_known=known_noise)
        if more > 0:
            why = []
            if n < need_points:
                why.append(f"{n} probe point{'s' if n != 1 else ''} with tokens > 0, the law needs {need_points} "
                           f"(4 to fit, 1 to check{'' if known_noise else ', 1 to estimate the noise: no errors were recorded'})")
            if span < th.min_span_decades:
                why.append(f"they span {10 ** span:.2g}x in tokens ({span:.2f} decades), a verdict needs "
                           f"{10 ** th.min_span_decades:.2g}x ({th.min_span_decades:g} decades)")
            self.reasons.append("; ".join(why) + f": about {more} more probe{'s' if more != 1 else ''} needed")
            self._baseline_note()
            return self.verdict("insufficient_data", "wait", more_probes_needed=more)

        sigma = self.s.copy()
        if not known_noise:
            # No measured errors: the residual scatter of the law on all points is the noise.
            scatter = _residual_scatter("log", self.x, self.y)
            if not math.isfinite(scatter):
                self.reasons.append(f"the {self.L} law cannot be fitted to the {n} points to estimate the noise "
                                    f"(no errors were recorded; {_why(_fit_law('log', self.x, self.y, None))})")
                return self.verdict("insufficient_data", "wait", more_probes_needed=1)
            missing = int(np.sum(~np.isfinite(sigma)))
            if np.any(np.isfinite(sigma)):
                sigma = np.where(np.isfinite(sigma), sigma, np.nanmedian(sigma))
                self.reasons.append(f"no errors recorded for {missing} of {n} points: the median error of the "
                                    f"others used for them ({np.nanmedian(self.s):.3g} {self.L})")
            else:
                sigma = np.full(n, scatter)
                self.reasons.append(f"no errors recorded: noise taken from the scatter around the law "
                                    f"({scatter:.3g} {self.L})")
        self.sigma = sigma
        self.stats["noise"] = float(np.median(sigma))

        self.full = self._fit("log", self.x, self.y, self.sigma)
        self.fits[self.metric] = _fit_dict(self.full)
        broke = self._bleu_break()
        if broke is None:  # the law is not identified from the earlier points
            if self._no_transfer():  # needs no law
                return self.verdict("no_transfer", "stop")
            return self.verdict("insufficient_data", "wait", more_probes_needed=1)
        if broke:
            return self._classify_break()

        if self._no_transfer():
            return self.verdict("no_transfer", "stop")
        return self._aligned()

    # -- BLEU break --------------------------------------------------------------------------------
    def _bleu_break(self) -> bool | None:
        """The three break tests (hold-out, fell below the peak, stopped improving). True if one is
        past its threshold, None when the law cannot be fitted to the earlier points."""
        th, n = self.th, len(self.pts)
        tests = []
        any_ok = False
        for k in (1,):
            m = n - k
            # A law fitted to 4 points (1 degree of freedom) extrapolates with a band its linearized
            # covariance understates: calibration showed most false alarms there.
            if m < self.th.min_points:
                continue
            fit = self._fit("log", self.x[:m], self.y[:m], self.sigma[:m], **_HOLDOUT_OPTIONS)
            if not _usable(fit):
                self.stats[f"holdout{k}"] = {"ok": False, "why": _why(fit)}
                continue
            any_ok = True
            scale = self._birge(fit, self.x[:m], self.y[:m], self.sigma[:m], f"holdout{k}")
            z, pred = _holdout_z(fit, self.x[m:], self.y[m:], self.sigma[m:] * scale)
            if not math.isfinite(z):
                self.stats[f"holdout{k}"] = {"ok": False, "why": "no finite prediction band"}
                continue
            self.stats[f"holdout{k}"] = {"ok": True, "fit_ok": bool(fit.ok), "z": round(z, 3),
                                         "scale": round(scale, 3), "predicted": pred,
                                         "observed": self.y[m:].tolist()}
            if k == 1:
                self.fits[f"{self.metric}_earlier"] = _fit_dict(fit)
            tests.append((z, f"holdout{k}", m, pred, scale))
        if not any_ok and n - 1 < self.th.min_points and _usable(self.full):
            any_ok = True  # too few earlier points for the hold-out test; the other tests still run
        if not any_ok:
            self.reasons.append(f"the {self.L} law is not identified from the {n - 1} earlier points "
                                f"({_why_stats(self.stats)}): 1 more probe needed")
            return None
        # "falls beyond its noise": the newest point against the best of the few points before it.
        lo = max(0, n - 1 - th.peak_window)
        j = lo + int(np.argmax(self.y[lo:n - 1]))
        # Errors that the earlier points show to be too small (Birge ratio of the hold-out fit) are
        # scaled up here too: bootstrap intervals alone miss the fine-tuning seed noise.
        dscale = next((t[4] for t in tests if t[1] == "holdout1"), 1.0)
        zd = float((self.y[-1] - self.y[j]) / (dscale * math.hypot(self.sigma[-1], self.sigma[j])))
        self.stats["decline"] = {"z": round(zd, 3), "peak_tokens": float(self.x[j]), "peak": float(self.y[j]),
                                 "scale": round(dscale, 3)}
        tests.append((zd, "decline", j, None, dscale))
        # "stops improving": a law that goes flat after probe b (the later probes are then repeated
        # measurements of the law at b) against the law on all points; same number of parameters.
        if _usable(self.full):
            chi_law = _chi2(self.full, self.x, self.y, self.sigma)
            for b in (n - 3,):
                if b + 1 < th.min_points - 1:
                    continue
                xp = np.concatenate([self.x[:b + 1], np.full(n - b - 1, self.x[b])])
                fp = self._fit("log", xp, self.y, self.sigma, **_HOLDOUT_OPTIONS)
                if not _usable(fp):
                    continue
                r2 = ((self.y - _curve(fp, xp)) / self.sigma) ** 2
                chi_flat = float(np.sum(r2))
                scale2 = _birge2(chi_flat, n - 3, r2)
                delta = (chi_law - chi_flat) / scale2
                zc = -math.sqrt(delta) if delta > 0 else math.sqrt(-delta)
                cont = float(_curve(fp, self.x[-1:])[0])  # where the law of the plateau fit would be now
                self.stats[f"plateau{n - 1 - b}"] = {"z": round(zc, 3), "delta_chi2": round(delta, 3),
                                                     "scale": round(math.sqrt(scale2), 3), "law_now": cont}
                tests.append((zc, f"plateau{n - 1 - b}", b, cont, math.sqrt(scale2)))

        # Each test has its threshold; the decisive one is the one furthest past (or nearest to) it.
        def limit(name):
            return th.z_holdout if name.startswith("holdout") else th.z_break

        z, which, m, pred, scale = min(tests, key=lambda t: t[0] + limit(t[1]))
        thr = limit(which)
        self.stats["tests"] = {t[1]: round(t[0], 3) for t in tests}
        self.exceeded = [t[1] for t in tests if t[0] < -limit(t[1])]
        self.n_exceeded = len(self.exceeded)
        self.stats["z_bleu"] = round(z, 3)
        self.stats["threshold"] = thr
        if self.near(z, -thr):
            self.borderline = True
        if z >= -thr:
            self._aligned_reason = (which, z, m, pred)
            return False
        sd_txt = "noise SDs"
        if which.startswith("plateau"):
            b = m
            k = n - 1 - b
            self.break_at = float(self.x[b + 1])
            self.from_idx = b
            self.pred_last = pred
            self.reasons.append(
                f"{self.L} stopped rising after {_tok(self.x[b])} tokens: the newest {k} probe{'s' if k > 1 else ''} "
                f"({', '.join(f'{v:.3g}' for v in self.y[b + 1:])}) sit at the {self.y[b]:.3g} reached there, where the "
                f"law would be at {pred:.3g} by now; a law that stops at {_tok(self.x[b])} fits the {n} probes better "
                f"than one that keeps rising ({-z:.1f} SDs, threshold {thr:g})")
        elif which == "decline":
            self.break_at = float(self.x[-1])
            self.from_idx = m
            self.reasons.append(
                f"{self.L} fell from {self.y[m]:.3g} (at {_tok(self.x[m])} tokens) to {self.y[-1]:.3g} "
                f"(at {_tok(self.x[-1])}), {-z:.1f} {sd_txt} of the difference (threshold {thr:g})")
        else:
            self.break_at = float(self.x[m])
            self.from_idx = m - 1
            mean_pred = pred[0]["mean"] if len(pred) == 1 else float(np.mean([p["mean"] for p in pred]))
            self.pred_last = pred[-1]["mean"]
            obs = float(np.mean(self.y[m:]))
            what = (f"{self.L} {obs:.3g} at {_tok(self.x[-1])} tokens" if n - m == 1 else
                    f"{self.L} averaged {obs:.3g} over the newest {n - m} probes ({_tok(self.x[m])}-{_tok(self.x[-1])} tokens)")
            self.reasons.append(
                f"{what} is {-z:.1f} noise SDs below the {mean_pred:.3g} predicted by the law fitted to the "
                f"{m} earlier probes (threshold {thr:g})"
                + (f"; errors scaled up x{scale:.2g} because the earlier points scatter more than their error bars"
                   if scale > 1.0 else ""))
        self.break_kind = which
        self.break_m = m + 1 if which.startswith("plateau") else m
        return True

    def _classify_break(self) -> Verdict:
        y0, y1 = self.y[self.from_idx], self.y[-1]
        head = f"{self.L} {y0:.3g} -> {y1:.3g}"
        if self.break_kind != "decline":
            head += f" (the law predicted {self.pred_last:.3g})"
        if self.ce is None:
            self.reasons.append("no cross-entropy recorded to tell a misaligned run from a broken probe")
            return self._law_break(head, ce_txt="no cross-entropy to contrast")
        ce_state = self._ce_follows()
        if ce_state is None:
            self.reasons.append("cross-entropy has too few points to check its power law")
            return self._law_break(head, ce_txt="cross-entropy not checkable")
        follows, c0, c1 = ce_state
        CE = _LONG_LABELS.get(self.ce, self.ce)
        self.stats["contrast"] = {"ce_from": c0, "ce_to": c1, "ce_follows": follows}
        if follows:
            self.reasons.append(f"{CE} still follows its power law ({c0:.3g} -> {c1:.3g}): the pre-training data "
                                f"improves the task's likelihood but not the {self.L}, the misalignment signature "
                                f"(Isik et al. 2024)")
            self.stats["message"] = (f"{self.L} law broken at {_tok(self.break_at)} tokens: {head} while "
                                     f"{CE} still follows its power law ({c0:.3g} -> {c1:.3g}); pre-training data "
                                     f"looks misaligned with {self.task if self.task not in (None, 'table', 'None') else 'the task'}")
            return self.verdict("misaligned", "stop", break_tokens=self.break_at)
        self.reasons.append(f"{CE} moved with {self.L} ({c0:.3g} -> {c1:.3g}), breaking its power law too: no "
                            f"misalignment contrast; the run or the probe may be unstable")
        return self._law_break(head, ce_txt=f"{CE} broke too ({c0:.3g} -> {c1:.3g})")

    def _law_break(self, head: str, ce_txt: str) -> Verdict:
        n = len(self.pts)
        # Confirmed: the two-probe test broke, or two tests agree; one point out alone may be noise.
        confirmed = self.n_exceeded >= 2 or "plateau2" in self.exceeded
        self.stats["message"] = f"{self.L} law broken at {_tok(self.break_at)} tokens: {head}; {ce_txt}"
        rec = "stop" if confirmed and not self.borderline else "wait"
        if rec == "wait":
            self.reasons.append(f"one point out of the law ({n} probes): wait for the next probe to confirm")
        return self.verdict("law_break", rec, break_tokens=self.break_at)

    def _ce_follows(self) -> tuple[bool, float, float] | None:
        """Does cross-entropy still follow its power law at the newest point(s)?"""
        th = self.th
        cp = [(p["tokens"], p["mean"][self.ce], p["sem"].get(self.ce, float("nan")))
              for p in self.pts if self.ce in p["mean"]]
        if len(cp) < 2:
            return None
        cx = np.array([c[0] for c in cp])
        cy = np.array([c[1] for c in cp])
        cs = _pooled_sem([p for p in self.pts if self.ce in p["mean"]], self.ce)
        k = max(1, len(self.pts) - self.break_m) if self.break_kind != "decline" else 1
        k = min(k, 2)
        m = len(cp) - k
        if not np.all(np.isfinite(cs)):
            sc = _residual_scatter("power", cx, cy)
            if not math.isfinite(sc):
                sc = float(np.std(np.diff(cy))) / math.sqrt(2) if len(cy) > 2 else float("nan")
            cs = np.where(np.isfinite(cs), cs, sc)
        # CE at the same probe the BLEU change is read from (or the nearest earlier one).
        i0 = int(np.searchsorted(cx, self.x[self.from_idx], side="right")) - 1
        c0 = float(cy[max(0, i0)])
        c1 = float(cy[-1])
        zs = []
        if m >= 4:
            fit = self._fit("power", cx[:m], cy[:m], cs[:m], **_HOLDOUT_OPTIONS)
            if _usable(fit):
                scale = self._birge(fit, cx[:m], cy[:m], cs[:m], "ce_holdout")
                z, _ = _holdout_z(fit, cx[m:], cy[m:], cs[m:] * scale)
                zs.append(z)
                self.fits[f"{self.ce}_earlier"] = _fit_dict(fit)
        # Model-free: CE rose above its best of the few points before.
        lo = max(0, len(cy) - 1 - th.peak_window)
        j = lo + int(np.argmin(cy[lo:-1]))
        if math.isfinite(cs[-1]) and math.isfinite(cs[j]):
            zs.append(float((cy[-1] - cy[j]) / math.hypot(cs[-1], cs[j])))
        if not zs:
            return None
        zc = max(zs)
        self.stats["z_ce"] = round(zc, 3)
        if self.near(zc, th.z_ce):
            self.borderline = True
        # The contrast needs cross-entropy to have improved over the same probes, not only to stay
        # within its noise of the law.
        return zc <= th.z_ce and c1 < c0, c0, c1

    # -- noise -------------------------------------------------------------------------------------
    def _birge(self, fit, x, y, sigma, key) -> float:
        """Scale for the errors when the points scatter around the fit significantly more than their
        error bars say (chi-square above its 95% quantile); 1 otherwise."""
        dof = len(x) - 3
        if dof < 1:
            return 1.0
        r2 = ((np.asarray(y, float) - _curve(fit, x)) / np.asarray(sigma, float)) ** 2
        return math.sqrt(_birge2(float(np.sum(r2)), dof, r2))

    # -- transfer ----------------------------------------------------------------------------------
    def _baseline(self) -> tuple[float, float] | None:
        vals, sems = [], []
        for p in self.base_pts:
            v = p["values"].get(self.metric) if "values" in p else None
            if v:
                vals.extend(v)
                sems.append(p["sem"].get(self.metric, float("nan")))
        if not vals:
            return None
        b = float(np.mean(vals))
        # The pretrained probes' per-repeat variance (the same fine-tuning noise), per point sigma^2 * n.
        n_rep = np.array([p["n"] for p in self.pts], dtype=float)
        sig = getattr(self, "sigma", None)
        pooled = float(np.median(sig ** 2 * n_rep)) if sig is not None and len(sig) else float("nan")
        if len(vals) > 1:
            v = float(np.var(vals, ddof=1))
            if math.isfinite(pooled):  # shrink the few baseline repeats toward it, as for every point
                d = len(vals) - 1
                v = (d * v + 8.0 * pooled) / (d + 8.0)
            sb = math.sqrt(v / len(vals))
        elif sems and math.isfinite(sems[0]):
            sb = float(sems[0])
        else:  # one baseline probe without an error: assume the pretrained probes' noise
            sb = float(np.median(self.sigma)) if hasattr(self, "sigma") else float("nan")
        return b, sb

    def _baseline_note(self):
        bl = self._baseline()
        if bl is not None and len(self.pts):
            self.reasons.append(f"baseline without pre-training: {self.L} {bl[0]:.3g}; newest probe {self.y[-1]:.3g}")

    def _no_transfer(self) -> bool:
        bl = self._baseline()
        if bl is None:
            self.stats["z_transfer"] = None
            return False
        b, sb = bl
        k = min(2, len(self.y))
        ybar = float(np.mean(self.y[-k:]))
        sbar = float(math.sqrt(np.sum(self.sigma[-k:] ** 2)) / k)
        z = (ybar - b) / math.hypot(sbar, sb) if math.isfinite(sb) else (ybar - b) / sbar
        self.stats["z_transfer"] = round(float(z), 3)
        self.stats["baseline"] = {"mean": b, "sem": sb}
        if self.near(z, self.th.z_transfer):
            self.borderline = True
        what = f"the newest {k} probes" if k > 1 else "the newest probe"
        if z < self.th.z_transfer:
            rel = "below" if ybar < b else "above"
            self.reasons.append(
                f"{what} ({self.L} {ybar:.3g}) {'are' if k > 1 else 'is'} {abs(ybar - b):.3g} {rel} the no-pretraining "
                f"baseline ({b:.3g}), {z:+.1f} standard errors (needs > {self.th.z_transfer:g} to count as transfer)")
            self.stats["message"] = (f"no transfer at {_tok(self.x[-1])} tokens: {self.L} {ybar:.3g} vs "
                                     f"{b:.3g} without pre-training ({z:+.1f} SE)")
            return True
        self.reasons.append(f"{what} beat the no-pretraining baseline ({ybar:.3g} vs {b:.3g}, {z:+.1f} SE)")
        return False

    # -- aligned -----------------------------------------------------------------------------------
    def _aligned(self) -> Verdict:
        th, n = self.th, len(self.pts)
        which, z, m, pred = getattr(self, "_aligned_reason", (None, float("nan"), 0, None))
        if which and which.startswith("holdout"):
            self.reasons.insert(0, f"{self.L} follows the log-law: the newest {n - m} probe{'s' if n - m > 1 else ''} "
                                   f"{'are' if n - m > 1 else 'is'} {z:+.1f} noise SDs from the prediction of the "
                                   f"{m} earlier ones (warning below {-th.z_holdout:g})")
        elif getattr(self.full, "ok", False):
            self.reasons.insert(0, f"{self.L} follows the log-law over {n} probes")
        else:
            # Not "follows the law": no break was found, but the law itself is not identified yet.
            self.reasons.insert(0, f"no break detected over {n} probes; the log-law itself is not identified yet")
        rec = "continue"
        prediction = tokens_to_target = None
        full = self.full
        if not getattr(full, "ok", False):
            why = _why(full)
            self.reasons.append(f"no prediction yet: the law fitted to all {n} probes is not trusted ({why})")
            if self.budget is not None:
                prediction = {"budget": float(self.budget), "mean": None, "why": why}
            if self.target is not None:
                tokens_to_target = {"target": float(self.target), "mean": None, "why": f"not identified: {why}"}
            return self.verdict("aligned", rec, prediction=prediction, tokens_to_target=tokens_to_target)
        if self.budget is not None:
            prediction = _predict(full, float(self.budget), th.interval)
            if prediction.get("mean") is not None:
                self.reasons.append(f"predicted {self.L} at {_tok(self.budget)} tokens: {prediction['mean']:.3g} "
                                    f"[{prediction['low']:.3g}, {prediction['high']:.3g}] ({th.interval:.0%} interval)")
                if self.budget < self.x[-1]:
                    self.reasons.append(f"the budget {_tok(self.budget)} is already passed ({_tok(self.x[-1])} tokens seen)")
        if self.target is not None:
            tokens_to_target = _inverse(full, float(self.target), th.interval, float(self.x[-1]))
            tt = tokens_to_target
            if tt.get("mean") is None:
                self.reasons.append(f"{self.L} {self.target:g}: {tt['why']}")
                if str(tt.get("why", "")).startswith("not reachable"):
                    rec = "stop"
            else:
                self.reasons.append(f"{self.L} {self.target:g} expected after {_tok(tt['mean'])} tokens "
                                    f"[{_tok(tt['low'])}, {_tok(tt['high'])}] ({th.interval:.0%} interval)")
                if prediction and prediction.get("high") is not None and prediction["high"] < self.target:
                    rec = "stop"
                    self.reasons.append(f"the target {self.target:g} is out of reach within the budget "
                                        f"{_tok(self.budget)} (even the upper bound {prediction['high']:.3g} is below)")
        return self.verdict("aligned", rec, prediction=prediction, tokens_to_target=tokens_to_target)

    # -- fitting -----------------------------------------------------------------------------------
    def _fit(self, kind: str, x, y, sigma, **options):
        return _fit_law(kind, np.asarray(x, float), np.asarray(y, float), np.asarray(sigma, float), **options)


# --------------------------------------------------------------------------------------------------
# Numeric helpers (work on the FitResult of transfer_probe.laws)


# Fits on the earlier points are used only through their prediction and its band at the held-out
# points: a narrow token span or a wide band just beyond the data lowers the test's power (the band
# enters the statistic) but does not make it wrong, so those two honesty checks of the laws are off.
_HOLDOUT_OPTIONS = {"min_decades": 0.0, "max_log_halfwidth": 50.0, "n_starts": 1}


def _fit_law(kind: str, x: np.ndarray, y: np.ndarray, sigma: np.ndarray | None, **options: Any):
    from transfer_probe import laws

    law = laws.LogLaw() if kind == "log" else laws.PowerLaw()
    if sigma is not None and not (np.all(np.isfinite(sigma)) and np.all(sigma > 0)):
        sigma = None
    try:
        return law.fit(x, y, sigma=sigma, **options)
    except (ValueError, RuntimeError, FloatingPointError, np.linalg.LinAlgError) as err:
        return _FailedFit(f"{type(err).__name__}: {err}")


def _usable(fit) -> bool:
    """A fit whose curve is finite: ok, or flagged only for what the tests cope with (a parameter at a
    bound is then held fixed by the law's covariance; a wide band enters the statistic)."""
    if fit is None or isinstance(fit, _FailedFit):
        return False
    if getattr(fit, "ok", False):
        return True
    xr = getattr(fit, "x_range", None)
    try:
        return bool(np.all(np.isfinite(_curve(fit, np.asarray(xr, float)))))
    except (TypeError, ValueError):
        return False


class _FailedFit:
    ok = False
    params: dict = {}
    stderr: dict = {}

    def __init__(self, why: str):
        self.why = why

    def to_dict(self) -> dict:
        return {"ok": False, "why": self.why}


def _chi2(fit, x, y, sigma) -> float:
    return float(np.sum(((np.asarray(y, float) - _curve(fit, x)) / np.asarray(sigma, float)) ** 2))


def _birge2(chi2: float, dof: int, r2: np.ndarray | None = None) -> float:
    """Squared error scale: when chi2 is significantly above its dof (95% quantile), the smaller of
    chi2/dof and the robust median-based ratio median(r^2)/0.455 (one broken point alone must not
    inflate the noise that is to judge it), at least 1; else 1."""
    if dof < 1 or not math.isfinite(chi2):
        return 1.0
    from scipy.stats import chi2 as _chi2dist

    if chi2 <= _chi2dist.ppf(0.95, dof):
        return 1.0
    ratio = chi2 / dof
    if r2 is not None and len(r2) >= 3:
        ratio = min(ratio, float(np.median(r2)) / 0.4549364231195724)
    return max(1.0, ratio)


def _curve(fit, x) -> np.ndarray:
    """The fitted curve at x (mean only)."""
    x = np.asarray(x, float)
    if callable(fit):
        return np.asarray(fit(x), dtype=float)
    return np.asarray(fit.predict(x, interval=0.5)[0], dtype=float)


def _residual_scatter(kind: str, x, y) -> float:
    """Noise estimate from the residuals of the law fitted to all points (needs >= 1 dof)."""
    if len(x) < 4:
        return float("nan")
    fit = _fit_law(kind, np.asarray(x, float), np.asarray(y, float), None)
    if not _usable(fit):
        return float("nan")
    mean = _curve(fit, x)
    r = np.asarray(y, float) - mean
    return float(math.sqrt(np.sum(r ** 2) / (len(x) - 3)))


def _curve_sd(fit, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of the fitted curve (parameter uncertainty only, not the noise of
    a new observation) at x, in y units.

    ``FitResult.predict(noise=False)`` gives the band of the expected curve in log space with a
    Student-t quantile on the fit's degrees of freedom; dividing the log half-width by that quantile
    gives the standard deviation, which the delta method turns into y units.
    """
    from scipy.stats import t as _t

    interval = 0.6826894921370859
    try:
        mean, lo, hi = fit.predict(np.asarray(x, float), interval=interval, noise=False, force=True)
    except TypeError:  # a law without the noise switch: its prediction band is used as it is
        mean, lo, hi = fit.predict(np.asarray(x, float), interval=interval)
    mean, lo, hi = (np.atleast_1d(np.asarray(v, float)) for v in (mean, lo, hi))
    dof = int(getattr(fit, "dof", 0) or 0)
    q = float(_t.ppf(0.5 + interval / 2, dof)) if dof > 0 else 1.0
    with np.errstate(all="ignore"):
        if np.all(mean > 0) and np.all(lo > 0):
            sd = mean * (np.log(hi) - np.log(lo)) / (2 * q)
        else:
            sd = (hi - lo) / (2 * q)
    sd = np.where(np.isfinite(sd), sd, np.inf)
    return mean, sd


def _holdout_z(fit, x, y, sigma) -> tuple[float, list[dict]]:
    """Standardized deviation of held-out points from the fit's prediction.

    Curve errors of neighbouring held-out points are almost fully correlated (same parameters),
    observation noises independent: the mean deviation has variance mean(sd_curve)^2 + mean(sigma^2)/k.
    """
    mean, sd = _curve_sd(fit, x)
    d = np.asarray(y, float) - mean
    k = len(d)
    var = float(np.mean(sd)) ** 2 + float(np.sum(np.asarray(sigma, float) ** 2)) / k ** 2
    z = float(np.mean(d) / math.sqrt(var)) if var > 0 and math.isfinite(var) else float("nan")
    pred = [{"tokens": float(xi), "mean": float(mi), "sd_curve": float(si)} for xi, mi, si in zip(x, mean, sd, strict=False)]
    return z, pred


def _pooled_sem(pts: list[dict], metric: str) -> np.ndarray:
    """Per-point standard errors, shrunk toward the run's pooled repeat variance.

    A standard error from 2-3 repeats is itself very uncertain (1-2 degrees of freedom); taken raw, a
    chance small one makes a false alarm. Each per-repeat variance is pooled with the others', weighted
    by degrees of freedom (a bootstrap error of a single probe counts as well determined).
    """
    n = np.array([p["n"] for p in pts], dtype=float)
    s = np.array([p["sem"].get(metric, float("nan")) for p in pts], dtype=float)
    fin = np.isfinite(s) & (s > 0)
    if not np.any(fin):
        return np.full(len(pts), np.nan)
    v = s ** 2 * n  # per-repeat variance
    dof = np.where(n > 1, n - 1, 30.0)
    pooled = float(np.sum((dof * v)[fin]) / np.sum(dof[fin]))
    prior = 8.0  # pseudo-degrees of freedom of the pooled variance: a point's own 2 dof weigh 20%
    shrunk = np.where(fin, (dof * np.where(fin, v, 0) + prior * pooled) / (dof + prior), np.nan)
    return np.sqrt(shrunk / n)


def _probes_to_span(x: np.ndarray, decades: float) -> int:
    """How many more probes, continuing the current spacing, until x spans ``decades``."""
    if len(x) < 2:
        return 0 if len(x) == 0 else 1
    need = x[0] * 10 ** decades
    if x[-1] >= need:
        return 0
    r = x[-1] / x[-2]
    step = x[-1] - x[-2]
    log_spaced = len(x) >= 3 and abs(math.log(r) - math.log(x[-2] / x[-3])) < 0.1 * abs(math.log(r)) and r > 1.05
    if log_spaced:
        return int(math.ceil(math.log(need / x[-1]) / math.log(r)))
    if step <= 0:
        return 1
    return int(math.ceil((need - x[-1]) / step))


def _predict(fit, budget: float, interval: float) -> dict:
    try:
        mean, lo, hi = fit.predict(np.array([budget]), interval=interval)
        mean, lo, hi = (float(np.atleast_1d(v)[0]) for v in (mean, lo, hi))
    except Exception as err:  # noqa: BLE001 - a prediction failure is reported, not raised
        return {"budget": budget, "mean": None, "why": f"{type(err).__name__}: {err}"}
    if not math.isfinite(mean):
        return {"budget": budget, "mean": None, "why": "the fitted law gives no finite value there"}
    return {"budget": budget, "mean": mean, "low": lo, "high": hi, "interval": interval}


def _inverse(fit, target: float, interval: float, x_now: float) -> dict:
    """Tokens at which the fitted score reaches ``target``, with an interval read off the prediction
    band (where its upper edge reaches the target: optimistic; its lower edge: pessimistic).

    Searched on a log grid from the newest tokens to 1e6 times them; beyond that it is "not reachable".
    """
    grid = np.geomspace(x_now / 1e3, x_now * 1e6, 721)
    try:
        mean, lo, hi = (np.asarray(v, float) for v in fit.predict(grid, interval=interval))
    except Exception as err:  # noqa: BLE001 - a prediction failure is reported, not raised
        return {"target": target, "mean": None, "why": f"not computable: {type(err).__name__}: {err}"}

    def first(curve):
        idx = np.nonzero(np.isfinite(curve) & (curve >= target))[0]
        return float(grid[idx[0]]) if len(idx) else None

    m = None
    try:  # the law's own inverse (transfer_probe.laws.Inverse) is exact and has its own band
        try:
            res = fit.inverse(target, interval=interval)
        except TypeError:
            res = fit.inverse(target)
    except (AttributeError, TypeError, ValueError, ArithmeticError):
        res = None
    if res is not None and hasattr(res, "status"):
        if res.status == "ok":
            hi_t = float(res.high)
            return {"target": target, "mean": float(res.tokens), "low": float(res.low),
                    "high": hi_t if math.isfinite(hi_t) else float("inf"), "interval": interval}
        if res.status == "not_reachable":
            return {"target": target, "mean": None, "why": f"not reachable: {res.why}"}
    elif res is not None:
        res = res[0] if isinstance(res, (tuple, list)) else res
        res = res.get("mean") if isinstance(res, Mapping) else res
        try:
            m = float(res) if res is not None and math.isfinite(float(res)) else None
        except (TypeError, ValueError):
            m = None
    if m is None:
        m = first(mean)
    if m is None:
        return {"target": target, "mean": None,
                "why": f"not reachable: the fitted law stays below {target:g} up to {_tok(grid[-1])} tokens"}
    low, high = first(hi), first(lo)
    return {"target": target, "mean": m, "low": low if low is not None else m,
            "high": high if high is not None else float("inf"), "interval": interval}


def _fit_dict(fit) -> dict | None:
    if fit is None:
        return None
    try:
        return _jsonable(fit.to_dict())
    except Exception as err:  # noqa: BLE001
        return {"ok": bool(getattr(fit, "ok", False)), "why": f"to_dict failed: {err}"}


def _why(fit) -> str:
    return "no fit" if fit is None else str(getattr(fit, "why", "") or "not identified")


def _why_stats(stats: dict) -> str:
    for k in ("holdout1", "holdout2"):
        if isinstance(stats.get(k), dict) and stats[k].get("why"):
            return stats[k]["why"]
    return "not identified"


def _pick_metric(recs: list[Mapping[str, Any]]) -> str:
    have = {m for r in recs for m in (r.get("metrics") or {})}
    for name in _SCORE_CANDIDATES:
        if name in have:
            return name
    raise ValueError(f"diagnose: no score metric among {sorted(have)}; name one with metric=... "
                     f"(higher is better, e.g. 'bleu')")


def _num(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _jsonable(obj: Any) -> Any:
    if obj is None or isinstance(obj, (bool, str, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if hasattr(obj, "item"):
        try:
            return _jsonable(obj.item())
        except (TypeError, ValueError):
            pass
    if hasattr(obj, "to_dict"):
        return _jsonable(obj.to_dict())
    return str(obj)


# --------------------------------------------------------------------------------------------------
# Text


_ACTIONS = {
    "insufficient_data": "wait for more probes",
    "misaligned": "stop or change the mixture",
    "law_break": "check the run and the probe",
    "no_transfer": "stop: pre-training on this data does not help this task",
}


def _aligned_action(v: Verdict) -> str:
    return "continue" if v.recommendation == "continue" else "stop: the target is out of reach within the budget"


def _tok(x: float | None) -> str:
    """Tokens as 1.2e9, 2e10, 3.1e4."""
    if x is None or not math.isfinite(float(x)):
        return "inf" if x is not None and float(x) > 0 else "?"
    x = float(x)
    if x == 0:
        return "0"
    e = int(math.floor(math.log10(abs(x))))
    m = round(x / 10 ** e, 1)
    if m >= 10:
        m, e = m / 10, e + 1
    ms = f"{m:.1f}".rstrip("0").rstrip(".")
    return f"{ms}e{e}"


def format_verdict(verdict: Verdict, *, prefix: bool = True) -> str:
    """The one-line log text of a verdict (``prefix=False`` drops the ``transfer_probe [WARNING]`` head,
    for loggers whose format already names it).

        >>> v = Verdict(status="insufficient_data", recommendation="wait", task="en-fr",
        ...             finetune_size=50, tokens=8.2e4, n_points=2, more_probes_needed=2,
        ...             latest={"bleu": 18.1})
        >>> format_verdict(v)
        'transfer_probe | en-fr D_f=50 | tokens 8.2e4 | BLEU 18.1 | 2 points, 2 more probes needed for a verdict | wait'
    """
    v = verdict
    head = []
    if prefix:
        head.append("transfer_probe WARNING" if v.is_warning else "transfer_probe")
    who = str(v.task) if v.task is not None else "table"
    if v.finetune_size is not None:
        df = v.finetune_size.get("examples") if isinstance(v.finetune_size, Mapping) else v.finetune_size
        who += f" D_f={df}"
    head.append(who)
    L = _LABELS.get(v.metric, v.metric)
    border = " (borderline: within the noise margin of the threshold; more repeats at this point would settle it)" \
        if v.borderline else ""
    msg = v.stats.get("message") if isinstance(v.stats, Mapping) else None
    if v.is_warning:
        text = (msg or (v.reasons[0] if v.reasons else v.status)) + border
        return " | ".join(head + [text, _ACTIONS[v.status]])
    vals = []
    for name in (v.metric, "chrf" if v.metric != "chrf" else None, v.ce_metric):
        if name and name in (v.latest or {}):
            val = v.latest[name]
            sem = (v.latest_sem or {}).get(name)
            dig = 3 if name == v.ce_metric else 1
            s = f"{_LABELS.get(name, name)} {val:.{dig}f}"
            if sem is not None and math.isfinite(sem) and sem > 0:
                s += f"±{sem:.{dig}f}"
            vals.append(s)
    parts = head + [f"tokens {_tok(v.tokens)}"] + ([" ".join(vals)] if vals else [])
    if v.status == "insufficient_data":
        parts.append(f"{v.n_points} point{'s' if v.n_points != 1 else ''}, "
                     f"{v.more_probes_needed} more probe{'s' if v.more_probes_needed != 1 else ''} needed for a verdict")
        parts.append("wait")
        return " | ".join(parts)
    fit_ok = (v.fits.get(v.metric) or {}).get("ok", True) if isinstance(v.fits, Mapping) else True
    law = f"law: {L}=(log(A*D^a))^b {'fits' if fit_ok else 'not identified yet'} ({v.n_points} points)"
    pr = v.prediction
    if pr and pr.get("mean") is not None:
        law += f", predicts {pr['mean']:.1f} [{pr['low']:.1f}, {pr['high']:.1f}] at {_tok(pr['budget'])}"
    tt = v.tokens_to_target
    if tt:
        if tt.get("mean") is not None:
            law += f"; {L} {tt['target']:g} after {_tok(tt['mean'])} tokens"
        elif str(tt.get("why", "")).startswith("not reachable"):
            law += f"; {L} {tt['target']:g} not reachable"
        else:
            law += f"; {L} {tt['target']:g} not predictable yet"
    parts.append(law + border)
    parts.append(_aligned_action(v))
    return " | ".join(parts)


# --------------------------------------------------------------------------------------------------
# When to warn


class VerdictTracker:
    """Decides which verdicts to announce, so a standing condition is not repeated every probe.

    ``update(verdict)`` returns True when a warning condition starts, when it changes (to another
    warning status, or back to ``aligned``: said once so the log shows it is over); False while the
    same condition stands or while there is not enough data. ``final()`` returns the standing
    warnings to restate at the end of training.

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
        df = v.finetune_size.get("examples") if isinstance(v.finetune_size, Mapping) else v.finetune_size
        return (v.run_id, v.task, df)

    def update(self, verdict: Verdict) -> bool:
        key = self._key(verdict)
        self._last[key] = verdict
        if verdict.status == "insufficient_data":
            return False
        before = self._announced.get(key, "aligned")
        now = verdict.status
        if now == before:
            return False
        self._announced[key] = now
        return before in WARNING_STATUSES or now in WARNING_STATUSES

    @property
    def latest(self) -> dict[tuple, Verdict]:
        """The newest verdict of every (run, task, D_f) seen."""
        return dict(self._last)

    def final(self) -> list[Verdict]:
        """The newest verdict of every group whose condition is a warning (misaligned, law_break,
        no_transfer), to restate at the end of training."""
        return [v for v in self._last.values() if v.is_warning]


def with_thresholds(**changes: Any) -> Thresholds:
    """A copy of the default thresholds with some changed: ``diagnose(..., thresholds=with_thresholds(z_break=3))``."""
    return replace(DEFAULT_THRESHOLDS, **changes)
