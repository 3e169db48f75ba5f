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
power law for losses) with its rolling-origin backtest: the verdict's law, and the run is predicted
only when it is trusted. As in the verdict, a law is trusted for a
prediction when it predicted at least 2 of the run's own later probes with an rms error of at most 2.5
noise SDs, and the spread of its prediction is widened by that rms when it exceeds 1 (from 3 checks).

The predictive distribution of a run at the budget (``method="mixture"``, the default) **mixes the
candidate laws**: each law's prediction is normal, with the law's mean there and the standard deviation
of its expected curve (parameter uncertainty of the fit, in whose weights and residual scale the
measured noise enters), widened by its own backtest; the laws are weighted by the likelihood of the
run's own later probes under their rolling-origin (one-step-ahead) predictions, i.e. by the partial
Bayes factor of those probes, with equal prior weights. Why: the log-law and the saturating law can fit
a run's probes equally well and still differ, 3x beyond them, by more than either's band; the law the
verdict chose alone (``method="chosen"``, the method before) leaves that choice out and was
overconfident on close pairs (``benchmarks/README.md``). A law joins the mixture only with a finite
prediction within the score's maximum and 2 checks shared with the chosen law; losses have one law
(the power law), so nothing to mix. ``P(A beats B)`` is exact for the mixtures, the runs independent:
``sum_ij w_Ai w_Bj Phi(d_ij / sqrt(sd_Ai^2 + sd_Bj^2))``, with ``d`` the difference of the means in the
better direction (higher for scores, lower for losses); with one law each it is the normal
approximation ``Phi(d / sqrt(sd_A^2 + sd_B^2))``. It is the probability that A's expected score at the
budget is the better one, not that a single noisy probe there would show it. A pair is *called* when
``P >= confidence`` (default 0.9) for one side; otherwise it reads "too close to call (P = 0.62)" and is
not ranked. When a run has no trusted law but has already reached the budget, its measured point there
stands in (``source = "measured"``). The runs' curves are assumed independent; nothing is assumed
about their laws being the same.

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

from transfer_probe.compare_result import (
    METHOD,
    METHODS,
    GroupComparison,
    PairOdds,
    RunComparison,
    RunForecast,
    _p,
    _ranking,
    _recommend,
)
from transfer_probe.diagnose import fits as F
from transfer_probe.diagnose.noise import curve_noise, floor_errors, pooled_sem, resolution
from transfer_probe.diagnose.tests import warmup_end
from transfer_probe.diagnose.verdict import DEFAULT_THRESHOLDS
from transfer_probe.plugins import higher_is_better
from transfer_probe.store import history
from transfer_probe.text import format_tokens

__all__ = ["compare_runs", "compare_histories", "compare_group", "forecast_run", "p_beats", "RunComparison",
           "GroupComparison", "RunForecast", "PairOdds", "lower_is_better", "METHOD", "METHODS"]


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
                 base: Sequence[float] = (), method: str = "mixture") -> RunForecast:
    """One run's :class:`RunForecast` at ``budget`` from its aggregated probe points (``history.aggregate``);
    ``method``: ``"mixture"`` (the candidate laws mixed) or ``"chosen"`` (the verdict's law alone)."""
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
    beyond = budget > xs[-1]
    chosen = _law_at(ch["kind"], fit, scale, budget, interval, ys, s, lower, metric, beyond)
    if isinstance(chosen, str):
        out.why = chosen
        return _measured(out, xs, ys, s, budget, interval)
    out.source, out.components, out._fit = "law", [chosen], fit
    if method == "mixture":
        out.components, out.mix_note = _mixture(ch, chosen, budget, interval, ys, s, lower, metric, beyond)
    return out.set_components(out.components, interval)


def _law_at(kind: str, fit, scale: float, budget: float, interval: float, ys: np.ndarray, s: np.ndarray,
            lower: bool, metric: str, beyond: bool) -> dict | str:
    """One law's predictive distribution at the budget: normal, the fit's mean and the sd of the expected
    curve widened ``scale`` times by its backtest; or why it cannot be used (the verdict's own test)."""
    mean, sd = F.curve_sd(fit, np.array([budget]))
    mean, sd = float(mean[0]), float(sd[0]) * scale
    if not (math.isfinite(mean) and math.isfinite(sd)):
        return f"the {kind} law gives no finite prediction at {format_tokens(budget)} tokens"
    q = float(norm.ppf(0.5 + interval / 2))
    problem = F.prediction_problem(mean, mean - q * sd, mean + q * sd, ys, s,
                                   ceiling=F.score_ceiling(ys, lower, metric), beyond_data=beyond)
    if problem is not None:
        return problem
    return {"law": kind, "weight": 1.0, "mean": mean, "sd": sd, "scale": scale, "fit": fit}


def _mixture(ch: dict, chosen: dict, budget: float, interval: float, ys: np.ndarray, s: np.ndarray, lower: bool,
             metric: str, beyond: bool) -> tuple[list[dict], str]:
    """The candidate laws' predictive distributions at the budget, mixed: each law weighted by the
    likelihood of the run's own later probes under its rolling-origin predictions (the backtest's
    one-step-ahead normals, on the probes both laws were checked on), i.e. by the partial Bayes factor
    the later probes give; equal prior weights. A law joins only with a usable prediction of its own
    (finite, within the score's maximum) and at least 2 shared checks; the note says which laws were
    mixed or why not."""
    comps, left = [chosen], []
    bt0 = ch["backtest"]
    for kind, c in ch["candidates"].items():
        if kind == chosen["law"]:
            continue
        bt = c["backtest"]
        shared = sorted(set(bt0.get("at", ())) & set(bt.get("at", ())))
        if not c["usable"] or len(shared) < F.TRUST_MIN_CHECKS:
            left.append(f"the {kind} law " + (F.why(c["fit"]) if not c["usable"] else
                                               f"was checked on {len(shared)} of the same later probes"))
            continue
        # no width test for the other law: a wide prediction is the model uncertainty the mix carries
        other = _law_at(kind, c["fit"], F.trust(c["fit"], bt)[1], budget, interval, ys, s, lower, metric, False)
        if isinstance(other, str):
            left.append(f"the {kind} law left out: {other}")
            continue
        loglik = np.array([_loglik(bt0, shared), _loglik(bt, shared)])
        w = np.exp(loglik - loglik.max())
        w /= w.sum()
        comps = [{**chosen, "weight": float(w[0])}, {**other, "weight": float(w[1])}]
    note = ("laws mixed by how well each predicted the run's later probes" if len(comps) > 1
            else f"{chosen['law']} law alone" + (f" ({'; '.join(left)})" if left else ""))
    return comps, note


def _loglik(bt: dict, at: list[int]) -> float:
    """Log density of the run's probes ``at`` under the backtest's one-step-ahead predictions."""
    i = [bt["at"].index(k) for k in at]
    z, sd = np.asarray(bt["z"], float)[i], np.asarray(bt["sd"], float)[i]
    return float(np.sum(norm.logpdf(z) - np.log(sd)))


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
    out.source = "measured"
    out.why = f"no trusted law ({out.why}); the measured probe at {format_tokens(x[i])} tokens stands in"
    return out.set_components([{"law": None, "weight": 1.0, "mean": float(y[i]), "sd": float(s[i])}], interval)


# --------------------------------------------------------------------------------------------------
# runs side by side
# --------------------------------------------------------------------------------------------------


def p_beats(a: RunForecast, b: RunForecast, higher: bool = True) -> float | None:
    """P(run ``a``'s expected score at the budget is better than ``b``'s), the runs independent: over each
    pair of their laws' normal components, weighted, ``Phi(d / sqrt(sd_a^2 + sd_b^2))`` (one component
    each: the normal approximation of the chosen laws). None when either has no prediction."""
    if not (a.predicted and b.predicted):
        return None
    p = 0.0
    for ca in a.components or [{"weight": 1.0, "mean": a.mean, "sd": a.sd}]:
        for cb in b.components or [{"weight": 1.0, "mean": b.mean, "sd": b.sd}]:
            d = (ca["mean"] - cb["mean"]) * (1.0 if higher else -1.0)
            sd = math.hypot(ca["sd"], cb["sd"])
            p += ca["weight"] * cb["weight"] * (float(norm.cdf(d / sd)) if sd > 0 else float(d > 0) + 0.5 * (d == 0))
    return p


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


def compare_group(task: str, df: Any, run_points: Mapping[str, list[dict]], base: Sequence[float], metric: str,
                  budget: float | None, *, higher: bool, interval: float, confidence: float,
                  method: str = "mixture") -> GroupComparison:
    """The runs of one (task, D_f) group: ``run_points`` maps each run to its aggregated probe points."""
    if budget is None:  # the furthest any run has got: no run is compared beyond what another has seen
        budget = max(max(p["tokens"] for p in pts) for pts in run_points.values())
    runs = [forecast_run(rid, pts, metric, float(budget), lower=not higher, interval=interval, base=base,
                         method=method) for rid, pts in run_points.items()]
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
                 task: str | None = None, finetune_size: Any = None, method: str = "mixture") -> RunComparison:
    """Compare several runs' predicted scores at a common budget, per (task, D_f) group.

    ``records``: probe records of two or more runs (told apart by ``run_id``), e.g. several history
    files read with ``history.read_history`` and concatenated, or a mapping ``{label: records}`` (the
    label then names the run). ``budget_tokens``: where to compare (default: per group, the most tokens
    any run has reached). ``metric``: default the first score recorded (bleu, chrf, exact_match,
    pass@1, accuracy), else ``cross_entropy``, else the only metric recorded; its direction is read from its name
    (:func:`lower_is_better`) unless ``higher_is_better`` says. A pair is called at ``P >= confidence``.
    ``method``: ``"mixture"`` (default: each run's candidate laws mixed, weighted by their backtest) or
    ``"chosen"`` (the verdict's law alone, as before; narrower, overconfident on close pairs).

    Raises ``ValueError`` for fewer than two runs, an unknown metric, or bad settings.
    """
    if not 0.5 < confidence < 1:
        raise ValueError(f"confidence must be in (0.5, 1): the probability at which a pair is called; got {confidence!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
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
                                    interval=interval, confidence=confidence, method=method))
    settings = {"budget_tokens": budget_tokens, "metric": metric, "higher_is_better": higher,
                "confidence": confidence, "interval": interval, "runs": runs, "method": method}
    return RunComparison(groups, settings, METHODS[method])


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
