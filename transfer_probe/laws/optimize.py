"""The one objective every law minimizes, and how it is minimized.

Objective: the Huber loss (``scipy.special.huber``, threshold ``f_scale``) of the standardized log
residuals, summed; plain squares when ``f_scale`` is None. It is ``2 * cost`` of
``scipy.optimize.least_squares(loss="huber", f_scale=f_scale)``.

Optimizer: ``least_squares`` (trust-region reflective, bounds, analytic Jacobian) takes the fit to
convergence, through lmfit for the main fit (:meth:`_Law._lmfit_minimize`, whose ``MinimizerResult``
the fit keeps) and directly for every bootstrap refit (:func:`least_squares_fit`, the same options).

Only the short exploratory runs from the best few starts stay hand-written (:func:`explore`): a
``least_squares`` call costs ~0.25 ms before its first step and ~0.2-0.4 ms per step on these 3-5
parameter problems, so running it from the 3 best starts took 10-21 ms per law (trf, 20 points,
measured on the 2-core reference machine at load 7) against 3.5-4.4 ms for these numpy steps, and
the fit budget is 20 ms for a PowerLaw and a LogLaw fit together. The exploration only picks the
start; ``least_squares`` decides the answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special
from scipy.optimize import least_squares


def huber_cost(r: np.ndarray, f_scale: float | None) -> np.ndarray:
    """The objective, summed over the last axis (so a (k, n) array of residuals scores k starts)."""
    if f_scale is None:
        return np.sum(r * r, axis=-1)
    return 2.0 * np.sum(special.huber(f_scale, r), axis=-1)


def least_squares_kws(f_scale: float | None) -> dict:
    """The loss options of every least_squares call (lmfit passes them through unchanged)."""
    return {"loss": "huber", "f_scale": f_scale} if f_scale is not None else {}


def least_squares_fit(resid, jac, x0, lo, hi, f_scale, max_nfev: int = 400) -> tuple[np.ndarray, float, bool]:
    """``least_squares`` from ``x0`` (clipped into the bounds): ``(theta, objective, converged)``."""
    x0 = np.clip(np.asarray(x0, dtype=float), lo, hi)
    try:
        with np.errstate(all="ignore"):
            r = least_squares(resid, x0, jac=jac, bounds=(lo, hi), max_nfev=max_nfev, **least_squares_kws(f_scale))
    except (ValueError, np.linalg.LinAlgError):  # non-finite residuals at x0
        return x0, math.inf, False
    return r.x, 2.0 * float(r.cost), bool(r.status > 0)


def explore(resid, jac, theta0, lo, hi, f_scale, steps: int = 12) -> tuple[np.ndarray, float]:
    """A few projected Levenberg-Marquardt steps on the Huber objective (reweighted least squares).

    Only to rank starts cheaply (see the module docstring for the measured reason); returns
    ``(theta, objective)``.
    """
    th = np.array(theta0, dtype=float)
    with np.errstate(all="ignore"):
        r = resid(th)
        cost = float(huber_cost(r, f_scale))
        if not np.isfinite(cost):
            return th, math.inf
        lam, p = 1e-3, th.shape[0]
        for _ in range(steps):
            J = jac(th)
            w = np.ones_like(r) if f_scale is None else np.minimum(1.0, f_scale / np.maximum(np.abs(r), 1e-300))
            H, g = J.T @ (J * w[:, None]), (J * w[:, None]).T @ r
            dH = np.diag(H).copy()
            dH[dH <= 0] = 1e-12
            for _ in range(12):
                try:
                    step = np.linalg.solve(H + lam * np.diag(dH) + 1e-14 * np.eye(p), -g)
                except np.linalg.LinAlgError:
                    lam *= 10
                    continue
                tn = np.clip(th + step, lo, hi)
                rn = resid(tn)
                cn = float(huber_cost(rn, f_scale))
                if np.isfinite(cn) and cn < cost:
                    break
                lam *= 10
            else:
                return th, cost
            rel = (cost - cn) / max(cost, 1e-300)
            th, r, cost = tn, rn, cn
            lam = max(lam / 10, 1e-9)
            if rel < 1e-8 or np.max(np.abs(step)) < 1e-12:
                break
    return th, cost


@dataclass
class _Problem:
    """The points of one fit in the form the optimizer sees: log values, their sd, bounds, scale."""

    law: Any
    X: np.ndarray
    y: np.ndarray
    s_abs: np.ndarray | None  # measured standard errors of y, or None
    notes: list
    ref: dict
    ly: np.ndarray
    s: np.ndarray  # sd of log y (relative errors), ones when unweighted
    lo: np.ndarray
    hi: np.ndarray
    f_scale: float | None

    @property
    def n(self) -> int:
        return int(self.y.shape[0])

    def resid(self, theta, X=None, ly=None, s=None):
        X, ly, s = (self.X, self.ly, self.s) if X is None else (X, ly, s)
        return (self.law._logf(theta, X, self.ref) - ly) / s

    def start_costs(self, starts: np.ndarray, chunk_values: int = 1 << 21) -> np.ndarray:
        """The objective at each of ``starts`` (k, p), summed over blocks of points: (k, n) at once
        would hold 200 MB per array for 25 starts on a 10^6-point table. Non-finite costs are inf."""
        k = max(1, starts.shape[0])
        step = max(1, chunk_values // k)
        cost = np.zeros(starts.shape[0])
        with np.errstate(all="ignore"):
            for i in range(0, self.n, step):
                part = slice(i, i + step)
                r = (self.law._logf(starts, self.X[..., part], self.ref) - self.ly[part]) / self.s[part]
                cost += huber_cost(r, self.f_scale)
        return np.where(np.isfinite(cost), cost, np.inf)

    def start_points(self, most: int = 20_000) -> np.ndarray | slice:
        """Which points the starts are computed from: all of them, or ``most`` spread evenly over the
        x order for a large table (the starts only pick where least_squares begins)."""
        if self.n <= most:
            return slice(None)
        x = self.X if self.X.ndim == 1 else self.X[-1]
        return np.argsort(x, kind="stable")[np.linspace(0, self.n - 1, most).astype(int)]

    def jac(self, theta, X=None, s=None):
        X, s = (self.X, self.s) if X is None else (X, s)
        return self.law._grad(theta, X, self.ref) / s[:, None]

    def at_bound(self, theta) -> list[tuple[int, str, float]]:
        """(index, "min"|"max", bound) of each parameter sitting at a bound."""
        span = self.hi - self.lo
        out = []
        for j in range(len(theta)):
            tol = 1e-6 * max(1.0, abs(span[j]) if np.isfinite(span[j]) else 1.0)
            for side, b in (("min", self.lo[j]), ("max", self.hi[j])):
                if np.isfinite(b) and abs(theta[j] - b) <= tol:
                    out.append((j, side, float(b)))
        return out
