"""How noisy is each probe point? Recorded errors, pooled and floored; a robust scale a trend or a
break cannot inflate (second differences); the noise of a curve with no recorded errors.

Every function here is pure numpy on arrays of one curve (or of many simulated curves, row-wise).
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

# median |N(0,1)| = 0.6745: MAD -> sd
_MAD = 1.482602218505602


def pooled_sem(pts: list[dict], metric: str) -> np.ndarray:
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


PERCENT_METRICS = frozenset({"bleu", "chrf", "ter", "sacrebleu"})


def resolution(values: np.ndarray, loss: bool = False, metric: str | None = None) -> float:
    """The smallest error a point can have: the metric's reporting resolution. Scores in percent
    (BLEU, chrF, accuracy x100) are read to 0.1, fractions to 0.001, losses to 1e-4 nats. The scale
    is known for sacrebleu's metrics, else read off the values."""
    if loss:
        return 1e-4
    if metric in PERCENT_METRICS:
        return 0.05
    v = np.asarray(values, float)
    big = np.any(np.abs(v[np.isfinite(v)]) > 1.5) if np.any(np.isfinite(v)) else False
    return 0.05 if big else 5e-4


def floor_errors(sigma: np.ndarray, res: float) -> np.ndarray:
    """No point is infinitely precise: errors are floored at the resolution and at a quarter of the
    run's median error (a BLEU of exactly 0 has a bootstrap error of 0, not its true noise)."""
    s = np.asarray(sigma, float).copy()
    pos = s[np.isfinite(s) & (s > 0)]
    floor = max(res, 0.25 * float(np.median(pos))) if len(pos) else res
    return np.where(np.isfinite(s), np.maximum(s, floor), s)


def second_differences(y: np.ndarray) -> np.ndarray:
    """y[i-1] - 2 y[i] + y[i+1] along the last axis: a smooth trend (linear in the probe index, as a
    log-law is for log-spaced probes) cancels, a single step or kink touches only two of them."""
    y = np.asarray(y, float)
    return y[..., :-2] - 2.0 * y[..., 1:-1] + y[..., 2:]


def robust_sd(y: np.ndarray) -> np.ndarray | float:
    """Noise sd of a curve with no recorded errors, from its second differences (var = 6 sd^2) with
    the largest one or two left out (a break's kink touches two); consistent for Gaussian noise.
    NaN with fewer than 3 second differences. Works row-wise on a 2-D array."""
    d2 = second_differences(y)
    k = d2.shape[-1]
    if k < 3:
        return np.full(np.shape(y)[:-1], np.nan) if np.ndim(y) > 1 else float("nan")
    keep = k - _drop(k)
    sq = np.sort(d2 ** 2, axis=-1)[..., :keep]
    return np.sqrt(np.mean(sq, axis=-1) / (6.0 * _consistency(k)))


def _drop(k: int) -> int:
    return 1 if k <= 6 else 2


def _consistency(k: int) -> float:
    """E[trimmed mean of d2^2] / (6 sd^2) for k second differences of white noise (simulated once).

    Up to 60 exactly for k; beyond, for the nearest step of a 5% geometric grid, from ~1.2M
    simulated values as at 60: one simulation per k of 20000 runs made a 300-point curve without
    errors take 26 s to diagnose (a simulation at every look) and a 10^5-point one 16 GB. The factor
    moves by < 0.2% across a grid step (0.84 at 60, 0.89 at 100, 0.96 at 400), about the simulation's
    own error; a 0.3% error in it is 0.15% in the noise sd."""
    if k <= 60:
        return _simulated_consistency(k, 20000)
    g = int(round(60 * 1.05 ** round(math.log(k / 60) / math.log(1.05))))
    return _simulated_consistency(g, max(1000, 1_200_000 // g))


@cache
def _simulated_consistency(k: int, runs: int) -> float:
    rng = np.random.default_rng(7)
    d2 = second_differences(rng.standard_normal((runs, k + 2)))
    sq = np.sort(d2 ** 2, axis=-1)[..., :k - _drop(k)]
    return float(np.mean(sq)) / 6.0


def excess_scatter(y: np.ndarray, sigma: np.ndarray) -> np.ndarray | float:
    """How much more the points scatter than their recorded errors say (>= 1; 1 when they do not):
    the robust scale of their standardized second differences. Bootstrap errors over test sentences
    miss the fine-tuning seed noise; this catches it without being inflated by a trend or a break."""
    y = np.asarray(y, float)
    s = np.asarray(sigma, float)
    d2 = second_differences(y)
    if d2.shape[-1] < 3:
        return np.ones(np.shape(y)[:-1]) if np.ndim(y) > 1 else 1.0
    v = s[..., :-2] ** 2 + 4.0 * s[..., 1:-1] ** 2 + s[..., 2:] ** 2
    ratio = _MAD * np.median(np.abs(d2) / np.sqrt(v), axis=-1)
    return np.maximum(ratio, 1.0)


def curve_noise(y: np.ndarray, sigma: np.ndarray, res: float) -> tuple[np.ndarray, float | None]:
    """Each point's noise sd, as the verdicts (and ``compare_runs``) take it: recorded errors scaled up
    by their excess scatter, returning that scale; with none recorded (any non-finite), the robust
    scatter of the points floored at ``res`` (NaN when it cannot be estimated), and scale None."""
    y = np.asarray(y, float)
    s = np.asarray(sigma, float)
    if len(s) and np.all(np.isfinite(s)):
        scale = float(excess_scatter(y, s))
        return s * scale, scale
    sd = float(robust_sd(y))
    if not math.isfinite(sd) and len(y) >= 3:  # too few points for second differences: successive ones
        sd = float(np.std(np.diff(y), ddof=1) / math.sqrt(2))
    return np.full(len(y), max(sd, res) if math.isfinite(sd) else math.nan), None
