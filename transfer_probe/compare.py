"""Which of my runs should I continue? Several runs (candidate mixtures, sizes, lengths) compared at a
common token budget, per (task, D_f)::

    >>> from transfer_probe.compare import compare_runs
    >>> cmp = compare_runs(records, budget_tokens=2e10)          # doctest: +SKIP
    >>> print(cmp)                                                # doctest: +SKIP
    >>> cmp.groups[0].recommendation                              # doctest: +SKIP
    'continue mix-b: it beats mix-a at 2e10 tokens (P = 0.97)'

How each run is predicted (the verdict's own machinery, :mod:`transfer_probe.diagnose`): its probe
points (repeats averaged), their noise (recorded errors pooled, floored and scaled up by their excess
scatter; without recorded errors the robust scatter of successive points), the warm-up left out, then
the law that predicted the run's own later probes best (log-law or saturating law for scores, the
power law for losses) with its rolling-origin backtest. As in the verdict, a law is trusted for a
prediction when it predicted at least 2 of the run's own later probes with an rms error of at most 2.5
noise SDs, and the spread of its prediction is widened by that rms when it exceeds 1 (from 3 checks).

The predictive distribution of a run at the budget is the fitted law's mean there and the standard
deviation of the expected curve (parameter uncertainty of the fit, in whose weights and residual scale
the measured noise enters), widened by the backtest. ``P(A beats B)`` is computed by the **normal
approximation**: the two runs' predictions are independent normals, so ``P = Phi(d / sqrt(sd_A^2 +
sd_B^2))`` with ``d`` the difference of the means in the better direction (higher for scores, lower for
losses). It is the probability that A's expected score at the budget is the better one, not that a
single noisy probe there would show it. A pair is *called* when ``P >= confidence`` (default 0.9) for
one side; otherwise it reads "too close to call (P = 0.62)" and is not ranked. When a run has no
trusted law but has already reached the budget, its measured point there stands in (``source =
"measured"``). The runs' curves are assumed independent; nothing is assumed about their laws being
the same.

Limits: a law extrapolated far beyond a run's tokens can be wrong in ways its band does not show (the
backtest checks only short steps ahead); a learning-rate schedule that anneals at the end of a run
gives a late drop no law of the early points predicts. ``benchmarks/README.md`` ("Which run to
continue") reports how often the calls were right on real and synthetic pairs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import norm

from transfer_probe.compare_result import METHOD, GroupComparison, PairOdds, RunComparison, RunForecast
from transfer_probe.diagnose import fits as F
from transfer_probe.diagnose.noise import curve_noise, floor_errors, pooled_sem, resolution
from transfer_probe.diagnose.tests import warmup_end
from transfer_probe.diagnose.verdict import DEFAULT_THRESHOLDS
from transfer_probe.plugins import higher_is_better
from transfer_probe.store import history
from transfer_probe.text import format_tokens

__all__ = ["compare_runs", "compare_histories", "compare_group", "forecast_run", "p_beats", "RunComparison",
           "GroupComparison", "RunForecast", "PairOdds", "lower_is_better", "METHOD"]


_SCORES = ("bleu", "chrf", "exact_match", "pass@1", "accuracy", "acc", "score")


def lower_is_better(metric: str) -> bool:
    """Whether a metric improves downward, as its registration says (``plugins.higher_is_better``),
    else read off its name: ``cross_entropy``, ``eval/downstream_bpb/piqa_bpb``, ``ce`` are; ``bleu``,
    ``acc`` not. Pass ``higher_is_better=`` to :func:`compare_runs` for a name this cannot read."""
    return not higher_is_better(metric)


# --------------------------------------------------------------------------------------------------
# one run at the budget
# --------------------------------------------------------------------------------------------------


def _noise(pts: list[dict], y: np.ndarray, metric: str, lower: bool) -> tuple[np.ndarray, bool]:
    """Per-point noise sd, as the verdict measures it (``diagnose.noise.curve_noise``)."""
    res = resolution(y, loss=lower, metric=metric)
    s, scale = curve_noise(y, floor_errors(pooled_sem(pts, metric), res), res)
    return s, scale is not None


def _warmup(y: np.ndarray, s: np.ndarray, base: list[float], sign: float, res: float) -> int:
    """Probes still at the no-pretraining (or starting) level: left out of the law fits."""
    level = float(np.mean(base)) if base else None
    level_sd = float(np.std(base, ddof=1) / math.sqrt(len(base))) if len(base) > 1 else float(np.median(s))
    w = warmup_end(sign * y, s, None if level is None else sign * level, level_sd, DEFAULT_THRESHOLDS.z_warmup, res)
    return len(y) if w is None else w


def forecast_run(run_id: str, pts: list[dict], metric: str, budget: float, *, lower: bool, interval: float,
                 base: Sequence[float] = ()) -> RunForecast:
    """One run's :class:`RunForecast` at ``budget`` from its aggregated probe points (``history.aggregate``)."""
    pts = sorted((p for p in pts if p["tokens"] > 0 and math.isfinite(p["mean"].get(metric, math.nan))),
                 key=lambda p: p["tokens"])
    x = np.array([p["tokens"] for p in pts], float)
    y = np.array([p["mean"][metric] for p in pts], float)
    out = RunForecast(str(run_id), float(x[-1]) if len(x) else math.nan, len(x), float(y[-1]) if len(y) else math.nan,
                      points=(x.tolist(), y.tolist()))
    if len(x) < 3:
        out.why = f"{len(x)} probe point(s) with a numeric {metric!r}; a law needs 6 (4 to fit, 2 to check)"
        return out
    sign = -1.0 if lower else 1.0
    s, _ = _noise(pts, y, metric, lower)
    w = _warmup(y, s, list(base), sign, resolution(y, loss=lower, metric=metric)) if np.all(np.isfinite(s)) else 0
    xs, ys, ps = x[w:], y[w:], pts[w:]
    s = _noise(ps, ys, metric, lower)[0] if len(ys) >= 3 else s[w:]
    out.noise = float(np.median(s)) if len(s) else math.nan
    if len(xs) < 6 or not np.all(np.isfinite(s)):
        out.why = ("no probe rose above the starting level beyond noise (warm-up, or no transfer)" if not len(xs)
                   else f"{len(xs)} probe points after the warm-up; a trusted law needs 6 (4 to fit, 2 to check)"
                   if len(xs) < 6 else "the noise of the points cannot be estimated")
        return _measured(out, xs, ys, s, budget, interval)
    ch = F.choose_law(xs, ys, s, kinds=("power",) if lower else ("log", "saturating"))
    fit, bt = ch["fit"], ch["backtest"]
    out.law, out.backtest = ch["kind"], {k: bt[k] for k in ("n", "mean_abs_err", "rms_z") if k in bt}
    n_bt, rms = bt.get("n", 0), bt.get("rms_z", math.inf)
    trusted, scale = F.trust(fit, bt)
    if not trusted:
        out.why = (F.why(fit) if not F.usable(fit) else
                   f"the {ch['kind']} law missed the run's own later probes (rms {rms:.2g} noise SDs over {n_bt})"
                   if n_bt else f"the {ch['kind']} law could not be checked on the run's own probes")
        return _measured(out, xs, ys, s, budget, interval)
    out.interval_scale = scale
    mean, sd = F.curve_sd(fit, np.array([budget]))
    mean, sd = float(mean[0]), float(sd[0]) * out.interval_scale
    if not (math.isfinite(mean) and math.isfinite(sd)):
        out.why = f"the {ch['kind']} law gives no finite prediction at {format_tokens(budget)} tokens"
        return _measured(out, xs, ys, s, budget, interval)
    q = float(norm.ppf(0.5 + interval / 2))
    # the verdict's own test of a usable prediction: a compared run is trusted as its verdict trusts it
    problem = F.prediction_problem(mean, mean - q * sd, mean + q * sd, ys, s,
                                   ceiling=F.score_ceiling(ys, lower, metric), beyond_data=budget > xs[-1])
    if problem is not None:
        out.why = problem
        return _measured(out, xs, ys, s, budget, interval)
    out.mean, out.sd, out.low, out.high = mean, sd, mean - q * sd, mean + q * sd
    out.source, out._fit = "law", fit
    return out


def _measured(out: RunForecast, x: np.ndarray, y: np.ndarray, s: np.ndarray, budget: float,
              interval: float) -> RunForecast:
    """Without a trusted law, a run that has already reached the budget still has its measured point
    there (within 10% of the budget's tokens): it stands in with its noise sd."""
    near = np.nonzero(np.abs(np.log(x / budget)) <= math.log(1.1))[0] if len(x) else []
    if not len(near):
        return out
    i = int(near[np.argmin(np.abs(np.log(x[near] / budget)))])
    if not math.isfinite(s[i]):
        return out
    q = float(norm.ppf(0.5 + interval / 2))
    out.mean, out.sd = float(y[i]), float(s[i])
    out.low, out.high, out.source = out.mean - q * out.sd, out.mean + q * out.sd, "measured"
    out.why = f"no trusted law ({out.why}); the measured probe at {format_tokens(x[i])} tokens stands in"
    return out


# --------------------------------------------------------------------------------------------------
# runs side by side
# --------------------------------------------------------------------------------------------------


def p_beats(a: RunForecast, b: RunForecast, higher: bool = True) -> float | None:
    """P(run ``a``'s expected score at the budget is better than ``b``'s): the normal approximation of
    :data:`METHOD`. None when either has no prediction."""
    if not (a.predicted and b.predicted):
        return None
    d = (a.mean - b.mean) * (1.0 if higher else -1.0)
    sd = math.hypot(a.sd, b.sd)
    return float(norm.cdf(d / sd)) if sd > 0 else (1.0 if d > 0 else 0.0 if d < 0 else 0.5)


def _pairs(runs: list[RunForecast], higher: bool, confidence: float) -> list[PairOdds]:
    """Every pair of runs: P(the one predicted better beats the other), normal approximation."""
    out = []
    for i, a in enumerate(runs):
        for b in runs[i + 1:]:
            if not (a.predicted and b.predicted):
                missing = a.run_id if not a.predicted else b.run_id
                out.append(PairOdds(a.run_id, b.run_id, None, False,
                                    f"{a.run_id} vs {b.run_id}: cannot compare ({missing} has no prediction)"))
                continue
            p = p_beats(a, b, higher)
            best, other, p = (a, b, p) if p >= 0.5 else (b, a, 1.0 - p)
            called = p >= confidence
            text = (f"{best.run_id} beats {other.run_id} (P {_p(p)})" if called else
                    f"{best.run_id} vs {other.run_id}: too close to call (P {_p(p)})")
            out.append(PairOdds(best.run_id, other.run_id, p, called, text))
    return out


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


def compare_group(task: str, df: Any, run_points: Mapping[str, list[dict]], base: Sequence[float], metric: str,
                  budget: float | None, *, higher: bool, interval: float, confidence: float) -> GroupComparison:
    """The runs of one (task, D_f) group: ``run_points`` maps each run to its aggregated probe points."""
    if budget is None:  # the furthest any run has got: no run is compared beyond what another has seen
        budget = max(max(p["tokens"] for p in pts) for pts in run_points.values())
    runs = [forecast_run(rid, pts, metric, float(budget), lower=not higher, interval=interval, base=base)
            for rid, pts in run_points.items()]
    pairs = _pairs(runs, higher, confidence)
    tiers = _ranking(runs, pairs, higher)
    unranked = [r.run_id for r in runs if not r.predicted]
    notes = []
    if len(runs) < 2:
        notes.append(f"only {len(runs)} run has probes of this group: nothing to compare it with")
    far = [r.run_id for r in runs if r.source == "law" and budget > 10 * r.tokens]
    if far:
        notes.append(f"{', '.join(far)}: predicted more than 10x beyond their newest probe; a law checked only "
                     f"a probe or two ahead may not hold that far")
    return GroupComparison(task, df, metric, higher, float(budget), interval, confidence, runs, pairs, tiers,
                           unranked, _recommend(tiers, pairs, unranked, float(budget), runs), notes)


# --------------------------------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------------------------------


def compare_runs(records: Iterable[Mapping[str, Any]] | Mapping[str, Iterable[Mapping[str, Any]]],
                 budget_tokens: float | None = None, *, metric: str | None = None,
                 higher_is_better: bool | None = None, confidence: float = 0.9, interval: float = 0.9,
                 task: str | None = None, finetune_size: Any = None) -> RunComparison:
    """Compare several runs' predicted scores at a common budget, per (task, D_f) group.

    ``records``: probe records of two or more runs (told apart by ``run_id``), e.g. several history
    files read with ``history.read_history`` and concatenated, or a mapping ``{label: records}`` (the
    label then names the run). ``budget_tokens``: where to compare (default: per group, the most tokens
    any run has reached). ``metric``: default the first score recorded (bleu, chrf, exact_match,
    pass@1, accuracy), else ``cross_entropy``, else the only metric recorded; its direction is read from its name
    (:func:`lower_is_better`) unless ``higher_is_better`` says. A pair is called at ``P >= confidence``.

    Raises ``ValueError`` for fewer than two runs, an unknown metric, or bad settings.
    """
    if not 0.5 < confidence < 1:
        raise ValueError(f"confidence must be in (0.5, 1): the probability at which a pair is called; got {confidence!r}")
    if not 0 < interval < 1:
        raise ValueError(f"interval must be in (0, 1), got {interval!r}")
    if budget_tokens is not None and not (math.isfinite(float(budget_tokens)) and float(budget_tokens) > 0):
        raise ValueError(f"budget_tokens must be a positive, finite number of tokens, got {budget_tokens!r}")
    recs = _labelled(records)
    if task is not None:
        recs = [r for r in recs if str(r.get("task")) == str(task)]
    if finetune_size is not None:
        recs = [r for r in recs if str(history.group_key(r)[1]) == str(finetune_size)]
    runs = sorted({str(r.get("run_id")) for r in recs if r.get("pretrained", True)})
    if len(runs) < 2:
        raise ValueError(f"compare_runs needs the probe records of at least two runs; found {len(runs)} "
                         f"({', '.join(runs) or 'none'}): give several history files, or records with different run_id")
    metric = metric or _pick_metric(recs)
    have = {m for r in recs for m in (r.get("metrics") or {})}
    if metric not in have:
        raise ValueError(f"metric {metric!r} is in no probe record; recorded: {', '.join(sorted(have)) or 'none'}")
    higher = (not lower_is_better(metric)) if higher_is_better is None else bool(higher_is_better)
    groups = []
    for (t, df), (run_points, base) in _grouped(recs, metric).items():
        groups.append(compare_group(t, df, run_points, base, metric, budget_tokens, higher=higher,
                                    interval=interval, confidence=confidence))
    settings = {"budget_tokens": budget_tokens, "metric": metric, "higher_is_better": higher,
                "confidence": confidence, "interval": interval, "runs": runs}
    return RunComparison(groups, settings)


def _labelled(records) -> list[dict]:
    if isinstance(records, Mapping):
        return [{**r, "run_id": str(name)} for name, recs in records.items() for r in history.probe_records(recs)]
    return history.probe_records(records)


def _pick_metric(recs: list[dict]) -> str:
    have = {m for r in recs for m in (r.get("metrics") or {})}
    for name in (*_SCORES, "cross_entropy"):
        if name in have:
            return name
    if len(have) == 1:  # the only metric recorded: nothing to choose between
        return next(iter(have))
    raise ValueError(f"no score among the recorded metrics {sorted(have)}; name one with metric=... (CLI: --metric)")


def _grouped(recs: list[dict], metric: str) -> dict[tuple, tuple[dict[str, list[dict]], list[float]]]:
    """{(task, D_f): ({run_id: aggregated points}, baseline values)}; a pretrained probe at 0 tokens is
    a probe of the random init, so it joins the baseline."""
    out: dict[tuple, tuple[dict[str, list[dict]], list[float]]] = {}
    for p in history.aggregate(recs, metrics=[metric]):
        if metric not in p["mean"]:
            continue
        run_points, base = out.setdefault((p["task"], p["finetune_size"]), ({}, []))
        if p["pretrained"] and p["tokens"] > 0:
            run_points.setdefault(str(p["run_id"]), []).append(p)
        else:
            base.extend(p["values"][metric])
    return {k: v for k, v in sorted(out.items(), key=lambda kv: str(kv[0])) if v[0]}


def compare_histories(paths: Sequence[str | Path], budget_tokens: float | None = None, **options: Any) -> RunComparison:
    """:func:`compare_runs` on history files (what ``transfer-probe compare RUN_HISTORY...`` calls). Each
    file is read in one pass (``history.read_points``); when two files hold the same ``run_id``, their
    runs are told apart by the file's name (``name:run_id``)."""
    per_file = {str(p): history.read_points(p) for p in paths}
    ids = {str(p): {str(r.get("run_id")) for r in recs if r.get("kind", "probe") == "probe"}
           for p, recs in per_file.items()}
    clash = {i for p in ids for q in ids if p != q for i in ids[p] & ids[q]}
    names = _file_labels(list(per_file))
    recs = []
    for p, rows in per_file.items():
        for r in rows:
            if str(r.get("run_id")) in clash:
                r = {**r, "run_id": f"{names[p]}:{r.get('run_id')}"}
            recs.append(r)
    return compare_runs(recs, budget_tokens, **options)


def _file_labels(paths: list[str]) -> dict[str, str]:
    """The shortest path ends that tell the files apart: runs/a/history.jsonl, runs/b/... -> a/history, b/history."""
    parts = {p: Path(p).with_suffix("").parts for p in paths}
    for k in range(1, max(len(v) for v in parts.values()) + 1):
        names = {p: "/".join(v[-k:]) for p, v in parts.items()}
        if len(set(names.values())) == len(names):
            return names
    return {p: p for p in paths}
