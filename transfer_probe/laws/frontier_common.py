"""What the three frontier approaches share: their options and checks, the line through the frontier
points (``log N_opt`` and ``log D_opt`` on ``log C``) and the bootstrap summary that makes a
:class:`~transfer_probe.laws.frontier_result.FrontierResult`. Used by :mod:`frontier_envelope`
(approach 1), :mod:`frontier_isoflop` (approach 2), :mod:`frontier_law` (approach 3) and
:mod:`frontier` (tables)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from transfer_probe.laws.frontier_result import FrontierResult

_DEFAULTS: dict[str, Any] = {
    "interval": 0.9,
    "n_bootstrap": 200,
    "seed": 0,
    "budget_tol": 0.05,  # approach 2: half-width of a budget in decades of C (+-12%)
    "min_runs": 5,  # approach 2: runs a budget needs (a parabola has 3 parameters)
    "grid": 1500,  # approach 1: log-spaced computes (Hoffmann used 1500)
    "estimator": "switch",  # approach 1: "switch" or "grid"
}


def _options(given: Mapping[str, Any], allowed: Sequence[str]) -> dict[str, Any]:
    unknown = set(given) - set(allowed)
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)}; valid: {sorted(allowed)}")
    opts = {k: _DEFAULTS[k] for k in allowed if k in _DEFAULTS} | dict(given)
    if not 0 < opts.get("interval", 0.9) < 1:
        raise ValueError(f"interval must be in (0, 1), got {opts['interval']!r}")
    if int(opts.get("n_bootstrap", 1)) < 0:
        raise ValueError(f"n_bootstrap must be >= 0, got {opts['n_bootstrap']!r}")
    if opts.get("estimator", "switch") not in ("switch", "grid"):
        raise ValueError(f"estimator must be 'switch' or 'grid', got {opts['estimator']!r}")
    return opts


def _line(logc: np.ndarray, logn: np.ndarray) -> np.ndarray:
    """``(a, log_kN, b, log_kD)`` by least squares of log N_opt and log D_opt (= log C/6N_opt) on log C."""
    a, kn = np.polyfit(logc, logn, 1)
    b, kd = np.polyfit(logc, logc - math.log(6.0) - logn, 1)
    return np.array([a, kn, b, kd])


def _result(approach: int, est: np.ndarray, boot: list, opts: Mapping[str, Any], points: list[dict],
            excluded: list[dict], notes: list[str], compute_range, settings: dict, envelope=None) -> FrontierResult:
    level = float(opts["interval"])
    n_boot = int(opts["n_bootstrap"])
    samples = np.array([s for s in boot if s is not None]).reshape(-1, 4)
    failed = n_boot - len(samples)
    q = [(1 - level) / 2, (1 + level) / 2]
    if len(samples) >= 2:
        a_iv = tuple(float(v) for v in np.quantile(samples[:, 0], q))
        b_iv = tuple(float(v) for v in np.quantile(samples[:, 2], q))
        sd = samples.std(axis=0, ddof=1)
    else:
        a_iv = b_iv = (math.nan, math.nan)
        sd = np.full(4, math.nan)
        notes = [*notes, "no interval: n_bootstrap < 2"] if n_boot < 2 else notes
    ok, why = True, ""
    if n_boot >= 2 and failed > n_boot / 2:
        ok, why = False, (f"{failed} of {n_boot} bootstrap resamples left too few frontier points to fit a line: "
                          f"the interval rests on a minority of resamples; add runs")
    elif failed:
        notes = [*notes, f"{failed} of {n_boot} bootstrap resamples left too few points and were skipped"]
    names = ("a", "log_kN", "b", "log_kD")
    return FrontierResult(
        approach=approach, a=float(est[0]), a_interval=a_iv, b=float(est[2]), b_interval=b_iv,
        params={k: float(v) for k, v in zip(names, est, strict=True)}, stderr={k: float(v) for k, v in zip(names, sd, strict=True)},
        interval=level, points=points, compute_range=tuple(float(v) for v in compute_range), excluded=excluded,
        notes=list(notes), settings={**settings, "interval": level, "n_bootstrap": n_boot, "seed": opts.get("seed"),
                                     "bootstrap_failed": failed},
        ok=ok, why=why, envelope=envelope or {}, _boot=samples if len(samples) else None)


def _positive(name: str, v) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(v, dtype=float)).ravel()
    if not np.all(np.isfinite(arr) & (arr > 0)):
        bad = arr[~(np.isfinite(arr) & (arr > 0))][:3]
        raise ValueError(f"{name} must be positive and finite; found {', '.join(f'{b:g}' for b in bad)}")
    return arr


def _same_length(**arrays: np.ndarray) -> None:
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"inputs differ in length: {lengths}")


def _runs(n, compute, y, **more) -> tuple[np.ndarray, ...]:
    """``n`` and ``compute`` checked positive, ``y`` (and ``more``) as flat arrays of one length."""
    n, c = _positive("model size N", n), _positive("compute C", compute)
    y = np.atleast_1d(np.asarray(y, dtype=float)).ravel()
    extra = {k: np.atleast_1d(np.asarray(v, dtype=object)).ravel() for k, v in more.items()}
    _same_length(n=n, compute=c, y=y, **extra)
    return (n, c, y, *extra.values())
