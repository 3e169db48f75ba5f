"""What pre-training is worth for a task, in fine-tuning examples: the effective data transferred
(Hernandez et al. 2021, "Scaling Laws for Transfer").

Records of one run in, a :class:`TransferResult` out; no Trainer, no torch::

    >>> from transfer_probe.store.history import read_history
    >>> from transfer_probe.transferred import data_transferred
    >>> res = data_transferred(read_history("run/transfer_probe/history.jsonl"))   # doctest: +SKIP
    >>> print(res)                                                                   # doctest: +SKIP
    >>> p = res.tasks["en-fr"].latest(64)                                            # doctest: +SKIP
    >>> p.transferred, p.low, p.high, p.multiplier                                   # doctest: +SKIP

The method (docs/data_transferred.md has the formulas, the check against the paper's text -> python
fit and the limits):

1. **From-scratch curve** ``L0(D_F)``: the no-pretraining probes (``pretrained: false``, one per
   fine-tuning size) give downstream cross-entropy against fine-tuning examples. With >= 4 sizes over
   >= 1 decade a :class:`~transfer_probe.laws.PowerLaw` ``E + A / D**alpha`` is fitted through them;
   with 2-3 sizes (the usual case: a 3-parameter law cannot be fitted to 2 points) the curve is the
   straight line in log-log between the points (a pure power law per segment), extended past both
   ends by its end segments.
2. **Effective data** ``D_E = L0^-1(L_p)``: the fine-tuning examples a from-scratch model would need
   to reach the pre-trained probe's CE ``L_p``; ``D_T = D_E - D_F`` is what pre-training is worth, and
   ``D_E / D_F = (D_F + D_T) / D_F`` the data multiplier.
3. **Interval**: the CE noise of every point (recorded: repeats / bootstrap, pooled and floored as the
   verdicts do; otherwise the scatter along pre-training) is propagated by Monte Carlo through the
   log-log curve (baseline points and ``L_p`` drawn together), or, for the power law, the fit's own
   inverse band and the shift of ``L_p`` by its noise are combined in quadrature in log space.
4. **Ossification**: ``D_T < 0``: the pre-trained model fine-tuned on ``D_F`` examples is worse than
   the from-scratch one (``status`` "ossified" when the whole interval is below 0).
5. **Growth with pre-training**: per ``D_F``, ``log D_E`` against ``log D_p`` (weighted least
   squares): the exponent over the whole run, and over the newest probes whether ``D_E`` (hence the
   multiplier) is still growing, flat or declining, or there is not enough evidence to say.
6. **Across D_F**: :class:`~transfer_probe.laws.TransferLaw` ``D_T = k D_F**alpha N**beta`` at the
   newest probe point (one model size: beta held at the paper's 0.38, k conditional on it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from scipy import stats

from transfer_probe.diagnose.noise import excess_scatter, floor_errors, pooled_sem, robust_sd
from transfer_probe.laws import FitResult, TransferLaw
from transfer_probe.store.history import aggregate, probe_records
from transfer_probe.text import format_count  # noqa: F401 (importable from here, as before)
from transfer_probe.transferred_baseline import BaselineCurve, baseline_curve
from transfer_probe.transferred_result import REACH, Growth, TaskTransfer, TransferPoint, TransferResult

__all__ = ["data_transferred", "fit_across_runs", "TransferResult", "TaskTransfer", "TransferPoint", "Growth",
           "BaselineCurve", "baseline_curve", "format_count", "REACH"]

GROWTH_WINDOW = 5  # newest probe points that say whether D_E is still growing
FLAT_SLOPE = 0.1  # |d log D_E / d log D_p| below this (D_E moves < 26% per 10x tokens) is "flat"
CE_RESOLUTION = 1e-4  # nats: no CE is more precise than this (as the verdicts floor it)


# --------------------------------------------------------------------------------------------------
# the analysis


def data_transferred(records: Iterable[Mapping[str, Any]], *, metric: str = "cross_entropy", interval: float = 0.9,
                     task: str | None = None, run_id: Any = None, n_draws: int = 2000,
                     seed: int = 0) -> TransferResult:
    """Effective data transferred for every task of one run's history records (see the module docstring).

    ``records``: history records (probe records are picked; verdicts and other kinds are skipped) of one
    run, or of several with ``run_id`` naming one. ``metric``: the downstream loss (lower is better).
    ``interval``: level of the intervals. ``n_draws`` / ``seed``: the Monte Carlo of the log-log curve.
    A task without no-pretraining probes at >= 2 fine-tuning sizes gets a :class:`TaskTransfer` whose
    ``why`` says so. Raises ``ValueError`` for several runs without ``run_id`` or bad settings.
    """
    if not 0 < interval < 1:
        raise ValueError(f"interval must be in (0, 1), got {interval!r}")
    if not isinstance(n_draws, int) or n_draws < 100:
        raise ValueError(f"n_draws must be an integer >= 100 (Monte Carlo draws), got {n_draws!r}")
    probes = probe_records(records)
    if run_id is not None:
        probes = [r for r in probes if str(r.get("run_id")) == str(run_id)]
    runs = sorted({str(r.get("run_id")) for r in probes})
    if len(runs) > 1:
        raise ValueError(f"the records hold {len(runs)} runs ({', '.join(runs)}): the data transferred is per run; "
                         f"pass run_id= to pick one (several model sizes: fit_across_runs)")
    if task is not None:
        probes = [r for r in probes if str(r.get("task")) == str(task)]
    out = {}
    for name in sorted({str(r.get("task")) for r in probes}):
        mine = [r for r in probes if str(r.get("task")) == name]
        out[name] = _task_transfer(name, mine, metric, interval, seed, n_draws)
    settings = {"metric": metric, "interval": interval, "n_draws": n_draws, "seed": seed, "run_id": runs[0] if runs
                else None, "growth_window": GROWTH_WINDOW, "flat_slope": FLAT_SLOPE}
    return TransferResult(out, settings)


def _n_params(recs: list[Mapping[str, Any]]) -> float:
    for r in recs:
        p = r.get("params")
        v = p.get("non_embedding", p.get("total")) if isinstance(p, Mapping) else p
        try:
            if v is not None and math.isfinite(float(v)) and float(v) > 0:
                return float(v)
        except (TypeError, ValueError):
            continue
    return math.nan


def _task_transfer(name: str, recs: list[dict], metric: str, interval: float, seed: int, n_draws: int) -> TaskTransfer:
    pts = [p for p in aggregate(recs, metrics=[metric]) if metric in p["mean"]]
    base = {}
    for p in pts:
        if not p["pretrained"]:
            base.setdefault(float(p["finetune_size"]), p)  # one from-scratch point per D_F
    pre = [p for p in pts if p["pretrained"] and p["tokens"] > 0 and float(p["finetune_size"]) > 0]
    n_params = _n_params(recs)
    if len(base) < 2:
        return TaskTransfer(name, n_params, why=f"needs no-pretraining probes (pretrained: false) at >= 2 fine-tuning "
                            f"sizes to trace the from-scratch curve; found {len(base)} (give the task >= 2 "
                            f"finetune_sizes and keep baseline=True)")
    sd, noise = _noise(pre, list(base.values()), metric)
    sizes = sorted(base)
    curve = baseline_curve(sizes, [base[d]["mean"][metric] for d in sizes], [sd[id(base[d])] for d in sizes])
    points = []
    for p in sorted(pre, key=lambda p: (p["tokens"], float(p["finetune_size"]))):
        df = float(p["finetune_size"])
        loss = float(p["mean"][metric])
        # draws seeded per point: a point's interval does not depend on which other points are there
        rng = np.random.default_rng([seed, int(p["tokens"]), int(df)])
        de, lo, hi = curve.effective(loss, sd[id(p)], interval, rng, n_draws)
        b = base[df]["mean"][metric] if df in base else curve.loss_at(df)
        points.append(TransferPoint(name, df, float(p["tokens"]), p.get("step"), loss, sd[id(p)], float(b), de, lo, hi,
                                    bool(de > sizes[-1] or de < sizes[0]), interval, sizes[-1]))
    growth = {df: _growth([q for q in points if q.finetune_size == df], df, interval)
              for df in sorted({q.finetune_size for q in points})}
    return TaskTransfer(name, n_params, curve, points, growth, _law_at_newest(points, n_params, interval), noise)


def _noise(pre: list[dict], base: list[dict], metric: str) -> tuple[dict[int, float], str]:
    """CE noise sd per point (keyed by id): recorded errors pooled and floored as the verdicts do, scaled
    up per D_F where the pre-trained curve scatters more than they say; else the scatter along
    pre-training; else NaN."""
    allp = pre + base
    s = floor_errors(pooled_sem(allp, metric), CE_RESOLUTION)
    recorded = bool(np.any(np.isfinite(s)))
    if recorded:  # a point without its own error (one repeat, no bootstrap) is measured like the others
        s = np.where(np.isfinite(s), s, float(np.median(s[np.isfinite(s)])))
    sd = {id(p): float(v) for p, v in zip(allp, s, strict=True)}
    how = []
    for df in sorted({float(p["finetune_size"]) for p in pre}):
        series = sorted((p for p in pre if float(p["finetune_size"]) == df), key=lambda p: p["tokens"])
        y = np.array([p["mean"][metric] for p in series])
        mates = series + [b for b in base if float(b["finetune_size"]) == df]
        if recorded:
            ys = np.array([sd[id(p)] for p in series])
            k = float(excess_scatter(y, ys)) if np.all(np.isfinite(ys)) else 1.0
            if k > 1.0:
                how.append(f"x{k:.2g} at D_f={format_count(df)} for scatter beyond them")
                for p in mates:
                    sd[id(p)] *= k
            continue
        r = float(robust_sd(y))
        if math.isfinite(r):
            how.append(f"{r:.3g} at D_f={format_count(df)}")
            for p in mates:
                sd[id(p)] = max(r, CE_RESOLUTION)
    if recorded:
        return sd, "recorded (repeats / bootstrap), pooled" + (": " + ", ".join(how) if how else "")
    if how:
        return sd, ("estimated from the scatter of the pre-trained CE along pre-training (no repeats or bootstrap "
                    "recorded): " + ", ".join(how))
    return sd, ("unknown: one fine-tune per point, no bootstrap, too few probes to read it off the curve: no "
                "intervals (use repeats >= 2 or FinetuneConfig(bootstrap=200))")


def _wls(x: np.ndarray, y: np.ndarray, s: np.ndarray) -> tuple[float, float, int]:
    """Slope of y on x and its standard error (weighted by 1/s when every s is known; the scale is
    the larger of the errors and the scatter), and the degrees of freedom."""
    dof = len(x) - 2
    if dof < 1 or np.ptp(x) == 0:
        return math.nan, math.nan, max(dof, 0)
    weighted = bool(np.all(np.isfinite(s) & (s > 0)))
    w = 1.0 / s if weighted else np.ones_like(x)
    coef, cov = np.polyfit(x, y, 1, w=w, cov="unscaled")
    chi2 = float(np.sum((w * (y - np.polyval(coef, x))) ** 2)) / dof
    scale = max(chi2, 1.0) if weighted else chi2
    return float(coef[0]), math.sqrt(max(float(cov[0, 0]) * scale, 0.0)), dof


def _growth(points: list[TransferPoint], df: float, interval: float) -> Growth:
    finite = [p for p in points if 0 < p.effective < math.inf]
    # past REACH x the largest from-scratch size the curve gives no number (only a lower bound): a
    # slope through such points is a slope of the extrapolation, not of the data (D_p^192 was seen)
    use = sorted((p for p in finite if p.effective <= REACH * p.largest_baseline), key=lambda p: p.tokens)
    g = Growth(df, len(use))
    if len(use) < 3:
        past = len(finite) - len(use)
        g.why = (f"{len(use)} probe point(s) with a D_E the from-scratch curve can read at D_f={format_count(df)}"
                 f"{f' ({past} past its reach)' if past else ''}; the trend needs >= 3")
        return g
    z = float(stats.norm.ppf(0.5 + interval / 2))
    x = np.log10([p.tokens for p in use])
    y = np.log10([p.effective for p in use])
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.array([(math.log10(p.effective_high) - math.log10(p.effective_low)) / (2 * z)
                      if p.effective_low > 0 else math.nan for p in use])
    s = np.where(np.isfinite(s), s, np.nan)
    e, se_e, dof_e = _wls(x, y, s)
    if math.isfinite(se_e):
        t = float(stats.t.ppf(0.5 + interval / 2, dof_e))
        g.exponent, g.exponent_low, g.exponent_high = e, e - t * se_e, e + t * se_e
    g.window = min(GROWTH_WINDOW, len(use))
    b, se, dof = _wls(x[-g.window:], y[-g.window:], s[-g.window:])
    if not math.isfinite(se):
        g.why = "the newest points do not determine a slope (same tokens?)"
        return g
    t = float(stats.t.ppf(0.5 + interval / 2, dof))
    g.slope, g.low, g.high = b, b - t * se, b + t * se
    if g.low > 0:
        g.status = "growing"
    elif g.high < 0:
        g.status = "declining"
    elif -FLAT_SLOPE < g.low and g.high < FLAT_SLOPE:
        g.status = "flat"
    else:
        g.why = (f"slope {b:.2f} [{g.low:.2f}, {g.high:.2f}] over the last {g.window} probes holds both growth and "
                 f"no growth")
    return g


def _law_at_newest(points: list[TransferPoint], n_params: float, interval: float) -> FitResult | None:
    """TransferLaw across D_F at each D_F's newest point with positive D_T (beta held: one model size)."""
    newest = {}
    for p in points:
        if p.finetune_size not in newest or p.tokens > newest[p.finetune_size].tokens:
            newest[p.finetune_size] = p
    use = [p for p in newest.values() if 0 < p.transferred < math.inf]
    if not use or not math.isfinite(n_params):
        return None
    z = float(stats.norm.ppf(0.5 + interval / 2))
    dt = np.array([p.transferred for p in use])
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.array([dt[i] * (math.log(p.high) - math.log(p.low)) / (2 * z) if p.low > 0 else math.nan
                      for i, p in enumerate(use)])
    sigma = s if np.all(np.isfinite(s) & (s > 0)) else None
    return TransferLaw().fit((np.array([p.finetune_size for p in use]), np.full(len(use), n_params)), dt, sigma)


def fit_across_runs(results: Iterable[TransferResult], task: str, **options: Any) -> FitResult:
    """``D_T = k D_F**alpha N**beta`` over several runs of different model sizes (Hernandez et al.'s fit):
    each run's newest point per D_F with positive D_T; ``options`` go to :class:`TransferLaw`.

    Raises ``ValueError`` when no run has a converted point for ``task``."""
    df, n, dt = [], [], []
    for res in results:
        t = res.tasks.get(task)
        if t is None or not t.ok:
            continue
        for size in sorted(t.growth):
            p = t.latest(size)
            if p is not None and 0 < p.transferred < math.inf and math.isfinite(t.n_params):
                df.append(p.finetune_size)
                n.append(t.n_params)
                dt.append(p.transferred)
    if not dt:
        raise ValueError(f"no run has a positive data transferred for task {task!r}")
    return TransferLaw(**options).fit((np.array(df), np.array(n)), np.array(dt))
