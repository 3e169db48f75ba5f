"""Scaling laws with honest uncertainty: LogLaw, PowerLaw, TransferLaw, ChinchillaLaw.

Every law has ``.fit(x, y, sigma=None, **options) -> FitResult``::

    >>> from transfer_probe.laws import PowerLaw
    >>> tokens = [1e6, 2e6, 5e6, 1e7, 2e7, 5e7, 1e8]
    >>> loss = [2.0 + 60 * t ** -0.3 for t in tokens]
    >>> fit = PowerLaw().fit(tokens, loss)
    >>> fit.ok, round(fit.params["alpha"], 2)
    (True, 0.3)
    >>> mean, low, high = fit.predict(1e9)            # 90% prediction interval
    >>> fit.inverse(2.5).tokens                       # tokens needed for loss 2.5  # doctest: +SKIP

How the fits are made (Chinchilla approach 3, Isik et al. 2024):

- residuals are taken on log values (``log f(x) - log y``, divided by the relative error ``sigma / y``
  when per-point errors are given) under a Huber loss (delta 0.1 for BLEU-type scores, 1e-3 for
  losses), minimized with lmfit's ``least_squares`` method (``loss="huber"``, ``f_scale=delta``), which
  is the same objective as the papers' Huber-on-log-values minimized with L-BFGS;
- parameters are reparameterized so the literal formulas cannot produce logs of negatives: ``x`` is
  rescaled by its smallest value ``x0`` (so ``log(x / x0) >= 0``), amplitudes are fitted as logs, and
  every parameter is bounded;
- starting points come from a grid scored in one vectorized pass plus data-driven guesses (for the
  power law: E slightly below min(y), then a line through log(y - E) against log x); the best few
  are polished and the best is kept.

Uncertainty: the parameter covariance is ``tau^2 (J^T J)^-1`` with ``J`` the Jacobian of the
*unweighted-by-Huber* standardized log residuals at the optimum (scipy's robust-loss Jacobian is
zeroed for points in the linear Huber regime, which makes lmfit's own covariance meaningless for
delta=1e-3) and ``tau^2`` the residual mean square (the reduced chi-square when measured errors are
given, as lmfit's ``scale_covar``; ``min_noise_scale=1`` floors it at 1).
Prediction intervals add the observation noise to the parameter uncertainty in log space and use
Student-t quantiles with ``n - p`` degrees of freedom. Where the covariance is not sound (singular,
non-finite) or when asked (``uncertainty="bootstrap"``; the default for ``ChinchillaLaw``) the
parameter part comes from a bootstrap instead.

Honesty: ``FitResult.ok`` is False, and ``FitResult.why`` says what to do, when there are too few
points, the x range spans too few decades, the optimizer did not converge, a parameter sits at a
bound, the covariance is singular, or the interval just beyond the data explodes. ``predict`` and
``inverse`` on a fit that is not ok return NaN (never a number that looks confident) unless called
with ``force=True``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import lmfit
import numpy as np
from scipy import stats

__all__ = [
    "LogLaw",
    "PowerLaw",
    "SaturatingLaw",
    "TransferLaw",
    "ChinchillaLaw",
    "FitResult",
    "Inverse",
    "LAWS",
    "get_law",
    "register_law",
    "fit_rows",
]

_DEFAULTS: dict[str, Any] = {
    "huber_delta": None,  # per law
    "min_decades": 1.0,  # smallest span of x (log10 max/min) that identifies a law
    "max_log_halfwidth": math.log(2.0),  # 90% parameter band at 2 x max(x) wider than x2 / /2: "explodes"
    "uncertainty": "auto",  # "auto" | "covariance" | "bootstrap"
    "n_bootstrap": 200,
    "n_starts": 3,  # grid candidates polished
    "seed": 0,
    # with measured errors, the residual scale tau^2 (reduced chi-square) is floored here: 1.0 trusts
    # the errors as a lower bound on the noise; 0.0 lets the scatter decide, as lmfit's scale_covar does
    "min_noise_scale": 0.0,
}


# --------------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Inverse:
    """Tokens (x) needed for the fitted curve to reach a target value, with an interval.

    ``status`` is ``"ok"`` (``tokens`` finite), ``"not_reachable"`` (the fitted curve never gets there:
    a loss target at or below the fitted floor E, a score target <= 0, or a curve that does not move
    toward the target; ``tokens`` is ``inf``) or ``"not_identified"`` (the fit is not ok; every number is
    NaN, read ``why``). ``reachable`` is ``status == "ok"``.

    ``low`` / ``high`` bound the tokens at which the *expected* curve (parameter uncertainty only, at
    the fit's interval level) reaches the target; ``high`` is ``inf`` when the pessimistic edge of the
    band never gets there within ``1e12 x max(x)``; the band is searched from ``min(x)`` up, so ``low`` is at
    least ``min(x)`` unless ``tokens`` itself is smaller. Unpacks as ``tokens, low, high = fit.inverse(y)``.
    """

    tokens: float
    low: float
    high: float
    status: str
    why: str = ""
    target: float = float("nan")
    interval: float = 0.9

    @property
    def reachable(self) -> bool:
        return self.status == "ok"

    def __iter__(self):
        return iter((self.tokens, self.low, self.high))

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "tokens": _jsonable(self.tokens),
            "low": _jsonable(self.low),
            "high": _jsonable(self.high),
            "interval": self.interval,
            "status": self.status,
            "reachable": self.reachable,
            "why": self.why,
        }


def _jsonable(v: float) -> float | None | str:
    # JSON has no inf/nan: write them as strings a reader can float() back.
    if v is None:
        return None
    v = float(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


@dataclass
class FitResult:
    """A fitted law: ask it for predictions, inverses and its own report.

    Attributes: ``law`` (name), ``params`` and ``stderr`` (dicts keyed by the formula's parameter
    names), ``ok`` and ``why``, ``notes`` (things worth knowing that do not invalidate the fit),
    ``n_points``, ``x_range`` (``(min, max)``; for ``ChinchillaLaw`` one pair per input), ``correl``
    (correlations between public parameters), ``noise`` (residual scale in log units), ``dof``,
    ``uncertainty`` (``"covariance"`` or ``"bootstrap"``), ``weighted``, ``lmfit_result`` (the
    ``lmfit.MinimizerResult`` of the final polish, internal parameterization) and ``extra`` (law
    specific, e.g. TransferLaw's transferred data).

    >>> fit = LogLaw().fit([1e4, 3e4, 1e5, 3e5, 1e6, 3e6], [10.1, 14.9, 19.6, 24.0, 28.3, 32.0])
    >>> mean, low, high = fit.predict([1e7, 1e8])                # doctest: +SKIP
    >>> tokens, low, high = fit.inverse(40.0)                    # doctest: +SKIP
    >>> print(fit)                                               # doctest: +SKIP
    """

    law: str
    params: dict[str, float]
    stderr: dict[str, float]
    ok: bool
    why: str
    n_points: int
    x_range: tuple
    notes: list[str] = field(default_factory=list)
    correl: dict[str, float] = field(default_factory=dict)
    noise: float = float("nan")
    dof: int = 0
    uncertainty: str = "covariance"
    weighted: bool = False
    huber_delta: float | None = None
    lmfit_result: Any = field(default=None, repr=False)
    extra: dict[str, Any] = field(default_factory=dict)
    # internal state for evaluation
    _law: Any = field(default=None, repr=False)
    _theta: Any = field(default=None, repr=False)
    _cov: Any = field(default=None, repr=False)
    _boot: Any = field(default=None, repr=False)
    _tau2: float = field(default=float("nan"), repr=False)
    _s_new: float = field(default=1.0, repr=False)
    _sigma_new: float = field(default=float("nan"), repr=False)
    _sigma_y: float = field(default=float("nan"), repr=False)
    _ref: dict = field(default_factory=dict, repr=False)

    # -------------------------------------------------------------------- evaluation
    def _bands(self, X: np.ndarray, interval: float, noise: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """log mean, log half-width (parameter part) and total half-width, in log units."""
        law = self._law
        logf = law._logf(self._theta, X, self._ref)
        if self._boot is not None and len(self._boot):
            samples = law._logf(self._boot, X, self._ref)  # (B, n)
            with np.errstate(invalid="ignore"):
                var_p = np.nanvar(samples, axis=0)
        elif self._cov is not None:
            g = law._grad(self._theta, X, self._ref)
            var_p = np.einsum("ij,jk,ik->i", g, self._cov, g)
        else:
            var_p = np.full_like(logf, np.nan)
        var_p = np.maximum(var_p, 0.0)
        q = _tq(interval, self.dof)
        if not noise:
            var_n = 0.0
        elif self.weighted and self._law.noise_model == "additive" and math.isfinite(self._sigma_new):
            # a new point measured like the fitted ones: its error in y units is the typical measured
            # error, which in log units shrinks where the curve is higher
            var_n = self._tau2 * (self._sigma_new / np.exp(logf)) ** 2
        elif self._law.noise_model == "additive" and math.isfinite(self._sigma_y):
            # scores (BLEU) scatter by about the same amount in y units along the curve
            var_n = (self._sigma_y / np.exp(logf)) ** 2
        else:
            var_n = self._tau2 * self._s_new**2
        return logf, q * np.sqrt(var_p), q * np.sqrt(var_p + var_n)

    def predict(self, x, interval: float = 0.9, *, noise: bool = True, force: bool = False):
        """Mean and prediction interval ``(mean, low, high)`` at ``x`` (scalar -> floats, array -> arrays).

        The interval holds a new measurement at ``x`` with probability ``interval``: parameter
        uncertainty plus observation noise (``noise=False`` gives the band of the expected curve
        only). The mean is the fitted curve. On a fit that is not ok, all three are NaN unless
        ``force=True`` (for plotting a failed fit; the numbers are then not to be trusted).
        For ``ChinchillaLaw`` ``x`` is the pair ``(N, D)``; for ``TransferLaw`` ``(D_F, N)``.
        """
        if not 0 < interval < 1:
            raise ValueError(f"interval must be in (0, 1), got {interval!r}")
        X, scalar = self._law._as_x(x)
        # A fit that failed before it had parameters (e.g. every y <= 0) has nothing to evaluate, forced or not.
        if (not self.ok and not force) or not self._evaluable:
            nan = np.full(X.shape[-1], np.nan)
            out = (nan, nan.copy(), nan.copy())
        else:
            logf, _, hw = self._bands(X, interval, noise)
            out = (np.exp(logf), np.exp(logf - hw), np.exp(logf + hw))
        if scalar:
            return tuple(float(v[0]) for v in out)
        return out

    def __call__(self, x):
        """The fitted curve at ``x`` (no interval, no ok check): for plotting."""
        X, scalar = self._law._as_x(x)
        if not self._evaluable:
            v = np.full(X.shape[-1], np.nan)
        else:
            v = np.exp(self._law._logf(self._theta, X, self._ref))
        return float(v[0]) if scalar else v

    @property
    def _evaluable(self) -> bool:
        # A failed fit has no parameters (NaN theta) and, for token laws, no reference point.
        if self._theta is None or not np.all(np.isfinite(self._theta)):
            return False
        return bool(self._ref) or not isinstance(self._law, _TokenLaw)

    def inverse(self, y: float, interval: float = 0.9, *, force: bool = False) -> Inverse:
        """Tokens needed for the fitted curve to reach ``y`` (LogLaw: score rises to y; PowerLaw: loss
        falls to y). Returns an :class:`Inverse` (``tokens, low, high = fit.inverse(y)`` also works);
        ``tokens`` is ``inf`` with ``status="not_reachable"`` when the curve never gets there and NaN
        with ``status="not_identified"`` when the fit is not ok (unless ``force=True``)."""
        law = self._law
        if not getattr(law, "invertible", False):
            raise TypeError(f"{self.law} law has no inverse (tokens for a target); use predict()")
        y = float(y)
        if (not self.ok and not force) or not self._evaluable:
            return Inverse(math.nan, math.nan, math.nan, "not_identified", f"fit not ok: {self.why}", y, interval)
        tokens, why = law._inverse_mean(self._theta, y, self._ref)
        if not math.isfinite(tokens):
            return Inverse(math.inf, math.nan, math.inf, "not_reachable", why, y, interval)
        # band edges: where the optimistic / pessimistic edge of the curve's band crosses y
        lo_x, hi_x = self.x_range
        grid = np.geomspace(lo_x, hi_x * 1e12, 1200)
        logf, hw, _ = self._bands(grid[None, :] if law.ndim == 2 else grid, interval, noise=False)
        ly = math.log(y) if y > 0 else -math.inf
        if law.direction > 0:
            optimistic, pessimistic = logf + hw, logf - hw
            low = _first_crossing(grid, optimistic - ly)
            high = _first_crossing(grid, pessimistic - ly)
        else:
            optimistic, pessimistic = logf - hw, logf + hw
            low = _first_crossing(grid, ly - optimistic)
            high = _first_crossing(grid, ly - pessimistic)
        low = min(low, tokens)
        high = max(high, tokens)
        return Inverse(tokens, low, high, "ok", "", y, interval)

    def compute_optimal(self, compute, *, force: bool = False):
        """ChinchillaLaw only: compute-optimal ``(N, D)`` for a budget ``C = 6 N D`` FLOPs (scalar or array).

        ``N = G (C/6)**(beta/(alpha+beta))``, ``D = (C/6) / N`` with ``G = (alpha A / (beta B))**(1/(alpha+beta))``
        (Hoffmann et al. 2022, eq. 4). NaN when the fit is not ok, unless ``force=True``.
        """
        fn = getattr(self._law, "_compute_optimal", None)
        if fn is None:
            raise TypeError(f"compute_optimal is defined for the chinchilla law, not for {self.law!r}")
        c = np.asarray(compute, dtype=float)
        if np.any(~(c > 0)):
            raise ValueError(f"compute budget must be positive FLOPs, got {compute!r}")
        if not self.ok and not force:
            n = np.full(c.shape, np.nan)
            d = np.full(c.shape, np.nan)
        else:
            n, d = fn(self.params, c)
        if c.ndim == 0:
            return float(n), float(d)
        return n, d

    # -------------------------------------------------------------------- reporting
    def to_lmfit(self) -> lmfit.Parameters:
        """The public parameters as ``lmfit.Parameters`` (values, ``stderr``, ``correl``), e.g. for
        ``lmfit.printfuncs.fit_report(fit.to_lmfit())`` or to seed another lmfit model."""
        pars = lmfit.Parameters()
        for k, v in self.params.items():
            pars.add(k, value=v)
            pars[k].stderr = self.stderr.get(k)
            pars[k].correl = {}
        for key, c in self.correl.items():
            a, b = key.split(", ")
            pars[a].correl[b] = c
            pars[b].correl[a] = c
        return pars

    def to_dict(self) -> dict:
        """Plain JSON-able dict (inf / nan written as strings)."""
        return {
            "law": self.law,
            "formula": getattr(self._law, "formula", ""),
            "ok": bool(self.ok),
            "why": self.why,
            "notes": list(self.notes),
            "params": {k: _jsonable(v) for k, v in self.params.items()},
            "stderr": {k: _jsonable(v) for k, v in self.stderr.items()},
            "correl": {k: _jsonable(v) for k, v in self.correl.items()},
            "n_points": self.n_points,
            "x_range": _nested_jsonable(self.x_range),
            "noise": _jsonable(self.noise),
            "dof": self.dof,
            "uncertainty": self.uncertainty,
            "weighted": self.weighted,
            "huber_delta": self.huber_delta,
            **({"extra": _nested_jsonable(self.extra)} if self.extra else {}),
        }

    def report(self) -> str:
        """A readable fit report in the style of ``lmfit.fit_report``."""
        law = self._law
        lines = [f"[[{type(law).__name__} fit]] {law.formula}"]
        lines.append(f"    ok:          {'yes' if self.ok else 'NO: ' + self.why}")
        lines.append(f"    points:      {self.n_points}")
        lines.append(f"    x range:     {_fmt_range(self.x_range)}")
        loss = f"Huber delta {self.huber_delta:g} on log y" if self.huber_delta else "least squares on log y"
        lines.append(f"    fit:         {loss}, {'weighted by measured errors' if self.weighted else 'unweighted'}")
        lines.append(f"    noise:       {self.noise:.3g} (log units), dof {self.dof}, uncertainty by {self.uncertainty}")
        for n in self.notes:
            lines.append(f"    note:        {n}")
        lines.append("[[Variables]]")
        width = max(len(k) for k in self.params) if self.params else 1
        for k, v in self.params.items():
            se = self.stderr.get(k, math.nan)
            rel = f" ({abs(se / v) * 100:.1f}%)" if v and math.isfinite(se) and math.isfinite(v) else ""
            lines.append(f"    {k + ':':<{width + 1}}  {v:.6g} +/- {se:.3g}{rel}")
        strong = {k: c for k, c in self.correl.items() if math.isfinite(c) and abs(c) > 0.1}
        if strong:
            lines.append("[[Correlations]] (unreported correlations are < 0.100)")
            for k, c in sorted(strong.items(), key=lambda kv: -abs(kv[1])):
                lines.append(f"    C({k}) = {c:+.3f}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()


def _nested_jsonable(v):
    if isinstance(v, Mapping):
        return {str(k): _nested_jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_nested_jsonable(x) for x in v]
    if isinstance(v, (float, np.floating)):
        return _jsonable(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def _fmt_range(r) -> str:
    if r and isinstance(r[0], (tuple, list)):
        return ", ".join(_fmt_range(x) for x in r)
    lo, hi = r
    if lo > 0 and hi > 0:
        return f"{lo:.3g} to {hi:.3g} ({math.log10(hi / lo):.2f} decades)"
    return f"{lo:.3g} to {hi:.3g}"


def _first_crossing(grid: np.ndarray, d: np.ndarray) -> float:
    """First grid x (log-interpolated) where d goes from < 0 to >= 0; grid[0] if d[0] >= 0; inf if never."""
    ok = np.isfinite(d) & (d >= 0)
    if not ok.any():
        return math.inf
    i = int(np.argmax(ok))
    if i == 0:
        return float(grid[0])
    d0, d1 = d[i - 1], d[i]
    if not np.isfinite(d0) or d1 == d0:
        return float(grid[i])
    w = -d0 / (d1 - d0)
    return float(math.exp(math.log(grid[i - 1]) + w * (math.log(grid[i]) - math.log(grid[i - 1]))))


_TQ_CACHE: dict[tuple[float, int], float] = {}


def _tq(interval: float, dof: int) -> float:
    key = (float(interval), int(dof))
    if key not in _TQ_CACHE:
        p = 0.5 + interval / 2
        _TQ_CACHE[key] = float(stats.t.ppf(p, dof)) if dof > 0 else math.inf
    return _TQ_CACHE[key]


# --------------------------------------------------------------------------------------------------
# the fitting engine shared by all laws
# --------------------------------------------------------------------------------------------------


def _huber_cost(r: np.ndarray, delta: float | None) -> np.ndarray:
    """Huber cost summed over the last axis, as least_squares(loss='huber', f_scale=delta) defines it."""
    if delta is None:
        return np.sum(r * r, axis=-1)
    a = np.abs(r)
    return np.sum(np.where(a <= delta, r * r, 2 * delta * a - delta * delta), axis=-1)


def _lm_fit(resid, jac, theta0, lo, hi, f_scale, max_iter=100, tol=1e-8):
    """Projected Levenberg-Marquardt on the Huber objective by iteratively reweighted least squares.

    A few dozen numpy operations per step: far cheaper than a scipy call for 3-5 parameters, which
    is what lets every fit try several starts. lmfit then polishes the winner (and confirms it).
    Returns (theta, cost, converged).
    """
    th = np.array(theta0, dtype=float)
    with np.errstate(all="ignore"):
        r = resid(th)
        cost = float(_huber_cost(r, f_scale))
        if not np.isfinite(cost):
            return th, math.inf, False
        lam = 1e-3
        p = th.shape[0]
        for _ in range(max_iter):
            J = jac(th)
            if f_scale is None:
                w = np.ones_like(r)
            else:
                a = np.abs(r)
                w = np.where(a <= f_scale, 1.0, f_scale / np.maximum(a, 1e-300))
            Jw = J * w[:, None]
            H = J.T @ Jw
            g = Jw.T @ r
            dH = np.diag(H).copy()
            dH[dH <= 0] = 1e-12
            improved = False
            for _ in range(12):
                try:
                    step = np.linalg.solve(H + lam * np.diag(dH) + 1e-14 * np.eye(p), -g)
                except np.linalg.LinAlgError:
                    lam *= 10
                    continue
                tn = np.clip(th + step, lo, hi)
                rn = resid(tn)
                cn = float(_huber_cost(rn, f_scale))
                if np.isfinite(cn) and cn < cost:
                    improved = True
                    break
                lam *= 10
            if not improved:
                return th, cost, True
            rel = (cost - cn) / max(cost, 1e-300)
            th, r, cost = tn, rn, cn
            lam = max(lam / 10, 1e-9)
            if rel < tol or np.max(np.abs(step)) < 1e-12:
                return th, cost, True
    return th, cost, False


class _Law:
    """Base class: a law is a log-space model ``log f(theta; X)`` with an internal parameterization."""

    name = ""
    formula = ""
    param_names: tuple[str, ...] = ()
    internal_names: tuple[str, ...] = ()
    huber_delta: float | None = 0.1
    ndim = 1  # 2 for laws of two inputs
    direction = +1  # +1: rises with x (scores), -1: falls (losses)
    noise_model = "relative"  # how unweighted observation noise scales: "relative" (log units) or "additive"
    invertible = False
    bound_ok: tuple[tuple[str, str], ...] = ()  # (internal name, "min"|"max") a parameter may sit at
    more_points_hint = "probe at more token counts"

    def __init__(self, **options: Any):
        unknown = set(options) - set(_DEFAULTS) - set(self._extra_options())
        if unknown:
            raise TypeError(f"{type(self).__name__}: unknown option(s) {sorted(unknown)}; valid: {sorted(set(_DEFAULTS) | set(self._extra_options()))}")
        self.options = {**_DEFAULTS, **self._extra_options(), **options}
        if self.options["huber_delta"] is None:
            self.options["huber_delta"] = type(self).huber_delta

    def _extra_options(self) -> dict:
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    # ---- hooks each law implements
    def _as_x(self, x) -> tuple[np.ndarray, bool]:
        arr = np.asarray(x, dtype=float)
        scalar = arr.ndim == 0
        return np.atleast_1d(arr).ravel(), scalar

    def _prepare(self, X: np.ndarray, y: np.ndarray) -> dict:
        return {}

    def _logf(self, theta, X, ref) -> np.ndarray:  # theta (p,) -> (n,), theta (k, p) -> (k, n)
        raise NotImplementedError

    def _grad(self, theta, X, ref) -> np.ndarray:  # (n, p)
        raise NotImplementedError

    def _starts(self, X, y, ref) -> np.ndarray:  # (k, p)
        raise NotImplementedError

    def _bounds(self, X, y, ref) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _public(self, theta, ref) -> dict[str, float]:
        raise NotImplementedError

    def _span_problems(self, X) -> list[str]:
        lo, hi = float(np.min(X)), float(np.max(X))
        need = self.options["min_decades"]
        dec = math.log10(hi / lo) if lo > 0 else 0.0
        if dec < need:
            return [f"{len(X)} points span only {dec:.2f} decades of x ({lo:.3g} to {hi:.3g}); need >= {need:g} "
                    f"decade(s): probe at more widely spaced token counts"]
        return []

    def _x_range(self, X) -> tuple:
        return (float(np.min(X)), float(np.max(X)))

    def _explode_x(self, X) -> np.ndarray:
        return np.array([2.0 * float(np.max(X))])

    def _validate(self, x, y, sigma) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[str]]:
        X, _ = self._as_x(x)
        y = np.atleast_1d(np.asarray(y, dtype=float)).ravel()
        if X.shape[-1] != y.shape[0]:
            raise ValueError(f"{self.name} law: x has {X.shape[-1]} points but y has {y.shape[0]}")
        s = None
        if sigma is not None:
            s = np.atleast_1d(np.asarray(sigma, dtype=float)).ravel()
            if s.shape[0] != y.shape[0]:
                raise ValueError(f"{self.name} law: sigma has {s.shape[0]} values but y has {y.shape[0]}")
        notes: list[str] = []
        keep = np.isfinite(y) & np.all(np.isfinite(np.atleast_2d(X)), axis=0) & np.all(np.atleast_2d(X) > 0, axis=0)
        if s is not None:
            bad = ~(np.isfinite(s) & (s > 0))
            if np.any(bad & keep):
                raise ValueError(f"{self.name} law: sigma must be positive and finite for every point; got "
                                 f"{s[bad & keep].tolist()} (drop sigma to fit unweighted)")
        if not keep.all():
            notes.append(f"{int((~keep).sum())} point(s) with non-finite values or x <= 0 dropped")
        X = X[..., keep]
        y = y[keep]
        if s is not None:
            s = s[keep]
        return X, y, s, notes

    # ---- fitting
    def fit(self, x, y, sigma=None, **options) -> FitResult:
        """Fit the law to points ``(x, y)``; ``sigma`` are optional per-point standard errors of ``y``.

        Options (also accepted by the constructor): ``huber_delta`` (None: plain least squares),
        ``min_decades`` (default 1), ``max_log_halfwidth`` (default log 2), ``uncertainty`` ("auto" |
        "covariance" | "bootstrap"), ``n_bootstrap``, ``n_starts``, ``seed``, ``min_noise_scale``
        (default 0; 1 floors the reduced chi-square of a weighted fit at 1), and for TransferLaw
        ``beta_fixed``.
        """
        if options:
            return type(self)(**{**self.options, **options}).fit(x, y, sigma)
        X, y, s_abs, notes = self._validate(x, y, sigma)
        n, p = y.shape[0], len(self.internal_names)
        if not self.direction and np.any(y <= 0):
            keep = y > 0
            notes.append(f"{int((~keep).sum())} value(s) <= 0 dropped: the law is fitted on log y")
            X, y = X[..., keep], y[keep]
            s_abs = s_abs[keep] if s_abs is not None else None
            n = y.shape[0]
        if self.direction and np.any(y <= 0):
            floor = max(1e-2 * float(np.max(y)), 1e-6) if np.any(y > 0) else None
            if floor is None:
                return self._failed(X, y, notes, "every y value is <= 0; nothing to fit on a log scale")
            notes.append(f"{int((y <= 0).sum())} value(s) <= 0 raised to {floor:.3g} to take logs")
            y = np.maximum(y, floor)
        problems: list[str] = []
        if n < p + 1:
            return self._failed(X, y, notes, f"only {n} point(s); the {self.name} law has {p} parameters and needs at "
                                             f"least {p + 1} ({self.more_points_hint})")
        problems += self._span_problems(X)
        ref = self._prepare(X, y)
        ly = np.log(y)
        weighted = s_abs is not None
        s = s_abs / y if weighted else np.ones(n)  # relative error = sd of log y
        delta = self.options["huber_delta"]
        f_scale = None if delta is None else delta / float(np.median(s))
        lo, hi = self._bounds(X, y, ref)

        def resid(theta):
            return (self._logf(theta, X, ref) - ly) / s

        def jac(theta):
            return self._grad(theta, X, ref) / s[:, None]

        # 1) grid / data-driven starts, scored in one vectorized pass
        starts = np.clip(self._starts(X, y, ref), lo + 1e-9 * (hi - lo), hi - 1e-9 * (hi - lo))
        with np.errstate(all="ignore"):
            R = (self._logf(starts, X, ref) - ly) / s
            cost = _huber_cost(R, f_scale)
        cost = np.where(np.isfinite(cost), cost, np.inf)
        order = np.argsort(cost)[: self.options["n_starts"]]
        # 2) a short run from each of the best few candidates, then the leader runs to convergence
        best, best_cost = None, np.inf
        for i in order:
            if not np.isfinite(cost[i]):
                continue
            th, c, _ = _lm_fit(resid, jac, starts[i], lo, hi, f_scale, max_iter=12 if len(order) > 1 else 100)
            if np.isfinite(c) and c < best_cost:
                best, best_cost = th, c
        if best is not None and len(order) > 1:
            best, best_cost, _ = _lm_fit(resid, jac, best, lo, hi, f_scale)
        if best is None:
            return self._failed(X, y, notes, "the optimizer found no finite solution from any starting point; "
                                             "check that y is positive and moves with x")
        # 3) final polish through lmfit: named, bounded parameters and a MinimizerResult to keep
        lm = self._lmfit_polish(best, lo, hi, resid, jac, f_scale)
        theta = best
        converged = lm is not None and lm.success
        if lm is not None:
            t_lm = np.array([lm.params[k].value for k in self.internal_names])
            if np.all(np.isfinite(t_lm)) and _huber_cost(resid(t_lm), f_scale) <= best_cost:
                theta = t_lm
        converged = converged and bool(np.all(np.isfinite(theta)))
        if not converged:
            problems.append("the optimizer did not converge; add points or check the data for outliers")

        r = resid(theta)
        dof = n - p
        tau2 = float(np.sum(r * r) / dof) if dof > 0 else math.nan
        if weighted:
            # option: let measured errors bound the noise from below (a run of lucky points cannot shrink it)
            tau2 = max(tau2, self.options["min_noise_scale"])
        # parameters at a bound
        span = hi - lo
        for j, name in enumerate(self.internal_names):
            for side, b in (("min", lo[j]), ("max", hi[j])):
                if np.isfinite(b) and abs(theta[j] - b) <= 1e-6 * max(1.0, abs(span[j]) if np.isfinite(span[j]) else 1.0):
                    if (name, side) in self.bound_ok:
                        notes.append(self._bound_note(name, side))
                    else:
                        problems.append(self._bound_problem(name, side, b))
        # covariance from the raw Jacobian (see module docstring)
        J = jac(theta)
        at_bound = [j for j, name in enumerate(self.internal_names) if any(
            abs(theta[j] - b) <= 1e-6 * max(1.0, abs(span[j])) for b in (lo[j], hi[j]) if np.isfinite(b))]
        cov = self._covariance(J, tau2, at_bound)
        mode = self.options["uncertainty"]
        boot = None
        if mode == "bootstrap" or (mode == "auto" and (cov is None or self._prefers_bootstrap())):
            boot = self._bootstrap(X, ly, s, theta, lo, hi, f_scale, ref)
            if boot is None:
                problems.append("the bootstrap refits failed; the parameters are not identified by these points")
            uncertainty = "bootstrap"
        else:
            uncertainty = "covariance"
            if cov is None:
                problems.append("the parameters are not identified (singular covariance): the points do not pin "
                                "down every parameter; add points over a wider range of x")
        if boot is not None:
            cov_int = np.cov(boot, rowvar=False) if len(boot) > 1 else None
        else:
            cov_int = cov
        s_new = float(np.median(s)) if weighted else 1.0
        public = self._public(theta, ref)
        stderr, correl = self._public_uncertainty(theta, ref, cov_int)
        res = FitResult(
            law=self.name, params=public, stderr=stderr, ok=True, why="", n_points=n,
            x_range=self._x_range(X), notes=notes, correl=correl,
            noise=math.sqrt(tau2) * (float(np.median(s)) if weighted else 1.0) if math.isfinite(tau2) else math.nan,
            dof=dof, uncertainty=uncertainty, weighted=weighted, huber_delta=delta, lmfit_result=lm,
            _law=self, _theta=theta, _cov=cov if boot is None else None, _boot=boot, _tau2=tau2, _s_new=s_new,
            _sigma_new=float(np.median(s_abs)) if weighted else math.nan,
            _sigma_y=math.sqrt(float(np.sum((y - np.exp(self._logf(theta, X, ref))) ** 2)) / dof) if dof > 0 else math.nan,
            _ref=ref,
        )
        # does the parameter band explode just beyond the data?
        if not problems and math.isfinite(tau2):
            xe = self._explode_x(X)
            with np.errstate(all="ignore"):
                _, hw, _ = res._bands(xe, 0.9, noise=False)
            limit = self.options["max_log_halfwidth"]
            if not np.all(np.isfinite(hw)) or np.any(hw > limit):
                w = float(np.nanmax(hw)) if np.any(np.isfinite(hw)) else math.inf
                problems.append(
                    f"the 90% band of the curve at 2x the largest x spans a factor {math.exp(w):.3g} either way "
                    f"(limit {math.exp(limit):.3g}): the {n} points do not identify the law; add points at larger x "
                    f"or repeats to cut the noise")
        if problems:
            res.ok = False
            res.why = "; ".join(problems)
        return res

    def _prefers_bootstrap(self) -> bool:
        return False

    def _bound_note(self, name, side) -> str:
        return f"{name} is at its {side} bound"

    bound_messages: dict[tuple[str, str], str] = {}

    def _bound_problem(self, name, side, b) -> str:
        if (name, side) in self.bound_messages:
            return self.bound_messages[(name, side)]
        return (f"parameter {name} ran to its {'lower' if side == 'min' else 'upper'} bound {b:g}: the data do not "
                f"identify it (add points over a wider range of x)")

    def _lmfit_polish(self, theta, lo, hi, resid, jac, f_scale):
        params = lmfit.Parameters()
        for j, name in enumerate(self.internal_names):
            v = float(np.clip(theta[j], lo[j], hi[j]))
            params.add(name, value=v, min=float(lo[j]), max=float(hi[j]))
        names = self.internal_names

        def f(pars):
            return resid(np.array([pars[k].value for k in names]))

        def jf(pars):
            return jac(np.array([pars[k].value for k in names]))

        kws = {"loss": "huber", "f_scale": f_scale} if f_scale is not None else {}
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                return lmfit.minimize(f, params, method="least_squares", jac=jf, nan_policy="omit", max_nfev=400,
                                      **kws)
        except (ValueError, np.linalg.LinAlgError):
            return None

    def _covariance(self, J, tau2, at_bound) -> np.ndarray | None:
        if not math.isfinite(tau2) or not np.all(np.isfinite(J)):
            return None
        H = J.T @ J
        p = H.shape[0]
        # a parameter at its bound is held fixed: it gets no variance (the fit is flagged anyway)
        free = [j for j in range(p) if j not in at_bound]
        if not free:
            return np.zeros((p, p))
        Hf = H[np.ix_(free, free)]
        if not np.all(np.isfinite(Hf)) or np.linalg.cond(Hf) > 1e14:
            return None
        try:
            Cf = np.linalg.inv(Hf) * tau2
        except np.linalg.LinAlgError:
            return None
        if np.any(np.diag(Cf) < 0):
            return None
        C = np.zeros((p, p))
        C[np.ix_(free, free)] = Cf
        return C

    def _bootstrap(self, X, ly, s, theta, lo, hi, f_scale, ref) -> np.ndarray | None:
        """Parameter samples: pairs bootstrap when there are many points, residual bootstrap otherwise."""
        rng = np.random.default_rng(self.options["seed"])
        n = ly.shape[0]
        B = int(self.options["n_bootstrap"])
        fitted = self._logf(theta, X, ref)
        r = (ly - fitted) / s
        r = r - np.mean(r)
        pairs = n >= 30
        out = []
        for _ in range(B):
            if pairs:
                idx = rng.integers(0, n, n)
                Xb, lyb, sb = X[..., idx], ly[idx], s[idx]
            else:
                Xb, sb = X, s
                lyb = fitted + s * r[rng.integers(0, n, n)] * math.sqrt(n / max(n - len(theta), 1))

            def resid(t, Xb=Xb, lyb=lyb, sb=sb):
                return (self._logf(t, Xb, ref) - lyb) / sb

            def jac(t, Xb=Xb, sb=sb):
                return self._grad(t, Xb, ref) / sb[:, None]

            tb, cb, conv = _lm_fit(resid, jac, theta, lo, hi, f_scale, max_iter=100, tol=1e-9)
            if np.isfinite(cb) and np.all(np.isfinite(tb)):
                out.append(tb)
        if len(out) < max(10, B // 2):
            return None
        return np.array(out)

    def _public_uncertainty(self, theta, ref, cov) -> tuple[dict, dict]:
        names = list(self.param_names)
        base = self._public(theta, ref)
        if cov is None:
            return {k: math.nan for k in names}, {}
        # Jacobian of the public parameters wrt the internal ones (central differences)
        p = len(theta)
        T = np.zeros((len(names), p))
        for j in range(p):
            h = 1e-6 * max(1.0, abs(theta[j]))
            tp, tm = theta.copy(), theta.copy()
            tp[j] += h
            tm[j] -= h
            fp, fm = self._public(tp, ref), self._public(tm, ref)
            T[:, j] = [(fp[k] - fm[k]) / (2 * h) for k in names]
        C = T @ cov @ T.T
        se = np.sqrt(np.maximum(np.diag(C), 0.0))
        stderr = {k: float(se[i]) for i, k in enumerate(names)}
        correl = {}
        for i in range(len(names)):
            for j in range(i + 1, len(names)):
                d = se[i] * se[j]
                correl[f"{names[i]}, {names[j]}"] = float(C[i, j] / d) if d > 0 else math.nan
        del base
        return stderr, correl

    def _failed(self, X, y, notes, why) -> FitResult:
        nan = {k: math.nan for k in self.param_names}
        n = int(y.shape[0])
        x_range = self._x_range(X) if n else (math.nan, math.nan)
        return FitResult(law=self.name, params=dict(nan), stderr=dict(nan), ok=False, why=why, n_points=n,
                         x_range=x_range, notes=notes, huber_delta=self.options["huber_delta"], _law=self,
                         _theta=np.full(len(self.internal_names), np.nan), _ref={}, dof=max(n - len(self.internal_names), 0))


# --------------------------------------------------------------------------------------------------
# the laws
# --------------------------------------------------------------------------------------------------


class _TokenLaw(_Law):
    """A law of one variable (tokens D): fitted in u = log(D / min D), so log D >= 0 and the
    parameters stay well scaled whatever the units of D."""

    def _prepare(self, X, y):
        return {"log_x0": float(np.log(np.min(X)))}

    @staticmethod
    def _split(theta, X, ref):
        """The parameters as columns (one row of theta, or k rows at once) and u = log(D / D0)."""
        theta = np.asarray(theta, dtype=float)
        u = np.log(X) - ref["log_x0"]
        if theta.ndim == 2:
            return [theta[:, i:i + 1] for i in range(theta.shape[1])], u[None, :]
        return list(theta), u


class LogLaw(_TokenLaw):
    """BLEU-type score against pre-training tokens: ``f(D) = (log(A * D**alpha))**beta`` (Isik et al. 2024).

    Fitted as ``f = g * (1 + h * log(D / D0))**beta`` with ``D0 = min(D)``: ``g`` is the score at
    ``D0`` (fitted as ``log g``) and ``h = alpha / log(A D0**alpha)`` the relative slope there, which
    turns the curved valley of the literal parameters into a nearly straight one. Huber delta 0.1 on
    log scores. Scores <= 0 are raised to 1% of the largest score before taking logs (noted in
    ``notes``). ``h`` (hence ``alpha``) is bounded at 0: a curve that does not rise has it at its
    bound and ``ok=False``.

    >>> tokens = [1e4, 3e4, 1e5, 3e5, 1e6, 3e6, 1e7]
    >>> bleu = [(0.5 * math.log(t)) ** 1.2 for t in tokens]
    >>> fit = LogLaw().fit(tokens, bleu)
    >>> fit.ok, round(fit.params["beta"], 2)
    (True, 1.2)
    """

    name = "log"
    formula = "y = (log(A * x**alpha))**beta"
    bound_messages = {
        ("h", "min"): "the scores do not rise with x (alpha went to 0): the rising law does not describe these "
                      "points; look for a misaligned pre-training mix, or add repeats if this is noise",
        ("h", "max"): "the curve bends too sharply to identify (alpha ran to its upper bound): add points at "
                      "smaller and larger x",
        ("beta", "min"): "the curvature is not identified (beta ran to its lower bound 0.05): add points at larger "
                         "x or repeats to cut the noise",
        ("beta", "max"): "the curvature is not identified (beta ran to its upper bound 20): add points at larger "
                         "x or repeats to cut the noise",
        ("log_g", "min"): "the fitted score at the first point ran to 0: check the scores",
        ("log_g", "max"): "the fitted score at the first point ran to its upper bound: check the scores",
    }
    param_names = ("A", "alpha", "beta")
    internal_names = ("log_g", "h", "beta")
    huber_delta = 0.1
    direction = +1
    invertible = True
    noise_model = "additive"

    def _logf(self, theta, X, ref):
        (lg, h, beta), u = self._split(theta, X, ref)
        # below the law's zero (1 + h u <= 0, only before D0) the score is 0: a very negative log, not NaN
        return lg + beta * np.log(np.maximum(1.0 + h * u, 1e-300))

    def _grad(self, theta, X, ref):
        lg, h, beta = theta
        u = np.log(X) - ref["log_x0"]
        v = np.maximum(1.0 + h * u, 1e-300)
        return np.column_stack([np.ones_like(u), beta * u / v, np.log(v)])

    def _bounds(self, X, y, ref):
        ly = math.log(float(np.max(y)))
        return np.array([ly - 30.0, 0.0, 0.05]), np.array([ly + 10.0, 1e4, 20.0])

    def _starts(self, X, y, ref):
        # for a fixed beta, y**(1/beta) = c + alpha * u is a straight line: solve it for every beta at once
        u = np.log(X) - ref["log_x0"]
        betas = np.geomspace(0.1, 10.0, 25)
        Z = y[None, :] ** (1.0 / betas[:, None])
        um = u.mean()
        du = u - um
        alpha = (Z - Z.mean(axis=1, keepdims=True)) @ du / max(float(du @ du), 1e-300)
        c = Z.mean(axis=1) - alpha * um
        alpha = np.maximum(alpha, 1e-9)
        c = np.maximum(c, 1e-9)
        return np.column_stack([betas * np.log(c), alpha / c, betas])

    @staticmethod
    def _literal(theta) -> tuple[float, float, float]:
        lg, h, beta = (float(v) for v in theta)
        c = math.exp(lg / beta)  # log(A D0^alpha): the law's log term at D0
        return c, h * c, beta

    def _public(self, theta, ref):
        c, alpha, beta = self._literal(theta)
        # c = log A + alpha * log x0; A itself can be astronomically small, so it is computed in logs
        la = c - alpha * ref["log_x0"]
        return {"A": math.exp(la) if -745 < la < 709 else (0.0 if la <= -745 else math.inf), "alpha": alpha,
                "beta": beta}

    def _inverse_mean(self, theta, y, ref) -> tuple[float, str]:
        c, alpha, beta = self._literal(theta)
        if y <= 0:
            return math.inf, f"target {y:g} <= 0: the law's scores are positive"
        if alpha <= 0:
            return math.inf, "the fitted curve is flat (alpha = 0): it never reaches the target"
        u = (y ** (1.0 / beta) - c) / alpha
        if u > 700:
            return math.inf, f"the target {y:g} lies more than e^700 beyond the data"
        return math.exp(ref["log_x0"] + u), ""


class PowerLaw(_TokenLaw):
    """Downstream cross-entropy (or any loss) against tokens: ``L(D) = E + A / D**alpha``.

    Fitted as ``L = E + exp(a) * (D / D0)**-alpha`` with ``D0 = min(D)``; Huber delta 1e-3 on log
    losses (Chinchilla). Starts: E a fraction of min(L) (0 to 0.99), then a line through
    ``log(L - E)`` against ``log D`` for each. ``E`` may sit at 0 (a pure power law; noted, not an
    error); ``alpha`` at 0 (a flat or rising curve) makes the fit not ok.

    >>> tokens = [1e6, 3e6, 1e7, 3e7, 1e8, 3e8]
    >>> fit = PowerLaw().fit(tokens, [1.5 + 40 * t ** -0.25 for t in tokens])
    >>> fit.ok, round(fit.params["E"], 2), round(fit.params["alpha"], 2)
    (True, 1.5, 0.25)
    >>> fit.inverse(1.0).status                     # below the floor E
    'not_reachable'
    """

    name = "power"
    formula = "y = E + A / x**alpha"
    bound_messages = {
        ("alpha", "min"): "the values do not fall with x (alpha went to 0): the falling power law does not "
                          "describe these points",
        ("alpha", "max"): "the decay is too fast to identify (alpha ran to its upper bound 5): add points at "
                          "smaller x",
        ("E", "max"): "the floor E ran up to the largest value: the points do not fall like a power law",
    }
    param_names = ("E", "A", "alpha")
    internal_names = ("E", "a", "alpha")
    huber_delta = 1e-3
    direction = -1
    invertible = True
    bound_ok = (("E", "min"),)

    def _logf(self, theta, X, ref):
        (E, a, al), u = self._split(theta, X, ref)
        return np.log(E + np.exp(a - al * u))

    def _grad(self, theta, X, ref):
        u = np.log(X) - ref["log_x0"]
        q = np.exp(theta[1] - theta[2] * u)
        f = theta[0] + q
        return np.column_stack([1.0 / f, q / f, -u * q / f])

    def _bounds(self, X, y, ref):
        ly = math.log(float(np.max(y)))
        return np.array([0.0, ly - 40.0, 0.0]), np.array([float(np.max(y)), ly + 40.0, 5.0])

    def _starts(self, X, y, ref):
        u = np.log(X) - ref["log_x0"]
        ymin = float(np.min(y))
        fr = np.array([0.0, 0.25, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99])
        E = fr * ymin
        Z = np.log(np.maximum(y[None, :] - E[:, None], 1e-12 * ymin))
        um = u.mean()
        du = u - um
        slope = (Z - Z.mean(axis=1, keepdims=True)) @ du / max(float(du @ du), 1e-300)
        a = Z.mean(axis=1) - slope * um
        alpha = np.clip(-slope, 1e-3, 5.0)
        return np.column_stack([E, a, alpha])

    def _public(self, theta, ref):
        E, a, alpha = (float(v) for v in theta)
        # exp(a) * (D/D0)^-alpha = A D^-alpha  =>  A = exp(a + alpha log D0)
        la = a + alpha * ref["log_x0"]
        return {"E": E, "A": math.exp(min(la, 709.0)), "alpha": alpha}

    def _bound_note(self, name, side) -> str:
        return "E is at 0: the points show no floor yet (a pure power law); extrapolations assume none"

    def _inverse_mean(self, theta, y, ref) -> tuple[float, str]:
        E, a, alpha = (float(v) for v in theta)
        if y <= E:
            return math.inf, f"target {y:g} is at or below the fitted floor E = {E:.4g}: the curve never gets there"
        if alpha <= 0:
            return math.inf, "the fitted curve is flat (alpha = 0): it never reaches the target"
        u = (a - math.log(y - E)) / alpha
        if u > 700:
            return math.inf, f"the target {y:g} lies more than e^700 beyond the data"
        return math.exp(ref["log_x0"] + u), ""


class SaturatingLaw(_TokenLaw):
    """A score that rises to a ceiling: ``f(D) = C - A / D**alpha``.

    The healthy alternative to the log-law that verdicts weigh against it: real checkpoint curves
    often saturate faster than a log-law extrapolated from early probes, and that overshoot is not a
    broken law. Fitted as ``f = C * (1 - r * (D / D0)**-alpha)`` with ``D0 = min(D)`` and ``0 < r < 1``
    (so the curve is positive on the data); ``A = C * r * D0**alpha``.

    >>> tokens = [1e6, 3e6, 1e7, 3e7, 1e8, 3e8]
    >>> fit = SaturatingLaw().fit(tokens, [60 - 300 * t ** -0.2 for t in tokens])
    >>> fit.ok, round(fit.params["C"], 1), round(fit.params["alpha"], 2)
    (True, 60.0, 0.2)
    """

    name = "saturating"
    formula = "y = C - A / x**alpha"
    bound_messages = {
        ("r", "min"): "the scores do not rise with x: the saturating law does not describe these points",
        ("r", "max"): "the first point sits at 0 on the fitted curve: add points after the warm-up",
        ("alpha", "min"): "the approach to the ceiling is too slow to identify (alpha ran to 0): the ceiling is "
                          "not pinned down by these points",
        ("alpha", "max"): "the curve saturates too abruptly to identify (alpha ran to its upper bound)",
        ("log_C", "max"): "the ceiling ran to its upper bound: the points show no saturation yet",
    }
    param_names = ("C", "A", "alpha")
    internal_names = ("log_C", "r", "alpha")
    huber_delta = 0.1
    direction = +1
    invertible = True
    noise_model = "additive"

    def _logf(self, theta, X, ref):
        (lc, r, al), u = self._split(theta, X, ref)
        return lc + np.log(np.maximum(1.0 - r * np.exp(-al * u), 1e-300))

    def _grad(self, theta, X, ref):
        lc, r, al = theta
        u = np.log(X) - ref["log_x0"]
        e = np.exp(-al * u)
        v = np.maximum(1.0 - r * e, 1e-300)
        return np.column_stack([np.ones_like(u), -e / v, r * u * e / v])

    def _bounds(self, X, y, ref):
        ly = math.log(float(np.max(y)))
        return np.array([ly - 0.5, 1e-6, 1e-3]), np.array([ly + math.log(20.0), 1.0 - 1e-6, 5.0])

    def _starts(self, X, y, ref):
        u = np.log(X) - ref["log_x0"]
        ymax = float(np.max(y))
        rows = []
        for cm in (1.02, 1.1, 1.3, 1.7, 2.5, 5.0):
            C = cm * ymax
            z = np.log(np.maximum(1.0 - y / C, 1e-9))  # log r - alpha u
            du = u - u.mean()
            slope = float(z @ du) / max(float(du @ du), 1e-300)
            al = float(np.clip(-slope, 1e-3, 5.0))
            r = float(np.clip(math.exp(float(np.mean(z + al * u))), 1e-6, 1 - 1e-6))
            rows.append([math.log(C), r, al])
        return np.array(rows)

    def _public(self, theta, ref):
        lc, r, al = (float(v) for v in theta)
        C = math.exp(lc)
        la = math.log(C * r) + al * ref["log_x0"]
        return {"C": C, "A": math.exp(min(la, 709.0)), "alpha": al}

    def _inverse_mean(self, theta, y, ref) -> tuple[float, str]:
        lc, r, al = (float(v) for v in theta)
        C = math.exp(lc)
        if y >= C:
            return math.inf, f"target {y:g} is at or above the fitted ceiling C = {C:.4g}: the curve never gets there"
        q = (1.0 - y / C) / r
        if q >= 1.0:
            return math.exp(ref["log_x0"]), ""
        u = -math.log(q) / al
        if u > 700:
            return math.inf, f"the target {y:g} lies more than e^700 beyond the data"
        return math.exp(ref["log_x0"] + u), ""


class ChinchillaLaw(_Law):
    """Loss across runs of different sizes: ``L(N, D) = E + A / N**alpha + B / D**beta`` (approach 3).

    ``x`` is the pair ``(N, D)`` (parameters, training tokens). Fitted as in Hoffmann et al. 2022 and
    Besiroglu et al. 2024: ``log L = logsumexp(a - alpha log N, b - beta log D, e)`` with
    ``A, B, E = exp(a), exp(b), exp(e)``, Huber delta 1e-3 on log L, loss summed, every start of the
    Chinchilla grid (alpha, beta in 0..2, e in -1..1, a, b in 0..25: 4500 starts) scored in one
    vectorized pass, the best ``n_starts`` (default 10) polished. Uncertainty by bootstrap over runs
    (``n_bootstrap``, default 200) because a Huber fit with delta 1e-3 is close to a median fit, for which
    the Gauss-Newton covariance is no guide.

    >>> import numpy as np
    >>> N, D = np.meshgrid(np.geomspace(1e7, 1e10, 6), np.geomspace(1e9, 1e12, 6))
    >>> L = 1.8 + 480 / N**0.35 + 2000 / D**0.37
    >>> fit = ChinchillaLaw(n_bootstrap=20).fit((N.ravel(), D.ravel()), L.ravel())
    >>> round(fit.params["alpha"], 3), round(fit.params["E"], 3)
    (0.35, 1.8)
    >>> n_opt, d_opt = fit.compute_optimal(5.76e23)  # doctest: +SKIP
    """

    name = "chinchilla"
    formula = "y = E + A / N**alpha + B / D**beta"
    more_points_hint = "add runs of other model sizes and lengths"
    param_names = ("E", "A", "B", "alpha", "beta")
    internal_names = ("e", "a", "b", "alpha", "beta")
    huber_delta = 1e-3
    ndim = 2
    direction = -1

    def _extra_options(self) -> dict:
        return {"n_starts": 10}

    def _as_x(self, x):
        if isinstance(x, np.ndarray) and x.ndim == 2 and x.shape[0] == 2:
            arr = x.astype(float)
            return arr, False
        try:
            n_, d_ = x
        except (TypeError, ValueError):
            raise ValueError(f"chinchilla law: x must be the pair (N, D) of parameter counts and tokens, got {type(x).__name__}") from None
        n_ = np.asarray(n_, dtype=float)
        d_ = np.asarray(d_, dtype=float)
        scalar = n_.ndim == 0 and d_.ndim == 0
        n_, d_ = np.broadcast_arrays(np.atleast_1d(n_).ravel(), np.atleast_1d(d_).ravel())
        return np.vstack([n_, d_]), scalar

    def _logf(self, theta, X, ref):
        theta = np.asarray(theta, dtype=float)
        lN, lD = np.log(X[0]), np.log(X[1])
        if theta.ndim == 2:
            e, a, b, al, be = (theta[:, j : j + 1] for j in range(5))
        else:
            e, a, b, al, be = theta
        t1 = a - al * lN
        t2 = b - be * lD
        t3 = e + 0.0 * t1
        m = np.maximum(np.maximum(t1, t2), t3)
        return m + np.log(np.exp(t1 - m) + np.exp(t2 - m) + np.exp(t3 - m))

    def _grad(self, theta, X, ref):
        e, a, b, al, be = theta
        lN, lD = np.log(X[0]), np.log(X[1])
        t = np.vstack([a - al * lN, b - be * lD, np.full_like(lN, e)])
        w = np.exp(t - t.max(axis=0))
        w /= w.sum(axis=0)
        return np.column_stack([w[2], w[0], w[1], -w[0] * lN, -w[1] * lD])

    def _bounds(self, X, y, ref):
        return np.array([-10.0, -10.0, -10.0, 0.0, 0.0]), np.array([5.0, 60.0, 60.0, 5.0, 5.0])

    def _starts(self, X, y, ref):
        e, a, b, al, be = np.meshgrid(np.arange(-1.0, 1.01, 0.5), np.arange(0.0, 25.1, 5.0),
                                      np.arange(0.0, 25.1, 5.0), np.arange(0.0, 2.01, 0.5),
                                      np.arange(0.0, 2.01, 0.5), indexing="ij")
        return np.column_stack([e.ravel(), a.ravel(), b.ravel(), al.ravel(), be.ravel()])

    def _public(self, theta, ref):
        e, a, b, al, be = (float(v) for v in theta)
        return {"E": math.exp(e), "A": math.exp(min(a, 709.0)), "B": math.exp(min(b, 709.0)), "alpha": al, "beta": be}

    def _span_problems(self, X) -> list[str]:
        out = []
        need = self.options["min_decades"]
        for label, row in (("N (parameters)", X[0]), ("D (tokens)", X[1])):
            lo, hi = float(np.min(row)), float(np.max(row))
            dec = math.log10(hi / lo)
            if dec < need:
                out.append(f"{label} spans only {dec:.2f} decades ({lo:.3g} to {hi:.3g}); need >= {need:g}: "
                           f"add runs of other sizes / lengths")
        return out

    def _x_range(self, X) -> tuple:
        return ((float(np.min(X[0])), float(np.max(X[0]))), (float(np.min(X[1])), float(np.max(X[1]))))

    def _explode_x(self, X) -> np.ndarray:
        return np.array([[2.0 * float(np.max(X[0]))], [2.0 * float(np.max(X[1]))]])

    def _prefers_bootstrap(self) -> bool:
        return True

    @staticmethod
    def _compute_optimal(params: Mapping[str, float], c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        A, B, al, be = params["A"], params["B"], params["alpha"], params["beta"]
        g = (al * A / (be * B)) ** (1.0 / (al + be))
        n = g * (c / 6.0) ** (be / (al + be))
        return n, (c / 6.0) / n


class TransferLaw(_Law):
    """Effective data transferred by pre-training (Hernandez et al. 2021): ``D_T = k * D_F**alpha * N**beta``.

    ``x`` is the pair ``(D_F, N)`` (fine-tuning data size, model parameters), ``y`` the transferred data
    ``D_T = D_E - D_F``, where ``D_E`` is the amount of fine-tuning data a model trained from scratch
    would need to reach the pre-trained model's loss. Fitted by least squares in log space (the law
    is linear there). With a single model size ``N`` the exponent ``beta`` cannot be identified: it
    is held at ``beta_fixed`` (default Hernandez et al.'s text -> Python value 0.38, noted) and ``k``
    is conditional on it.

    :meth:`fit_curves` does the whole analysis from loss curves: reads ``D_E`` off the no-pretraining
    baseline by interpolation, flags ossification (fine-tuned worse than from scratch), fits, and
    reports the data multiplier ``(D_F + D_T) / D_F``.

    >>> import numpy as np
    >>> df, n = np.meshgrid(np.geomspace(1e4, 1e7, 6), [1e7, 1e8, 1e9])
    >>> dt = 1.9e4 * df ** 0.18 * n ** 0.38
    >>> fit = TransferLaw().fit((df.ravel(), n.ravel()), dt.ravel())
    >>> round(fit.params["alpha"], 2), round(fit.params["beta"], 2)
    (0.18, 0.38)
    """

    name = "transfer"
    formula = "D_T = k * D_F**alpha * N**beta"
    more_points_hint = "fine-tune on more data sizes"
    param_names = ("k", "alpha", "beta")
    internal_names = ("log_k", "alpha", "beta")
    huber_delta = None
    ndim = 2
    direction = 0

    def _extra_options(self) -> dict:
        return {"beta_fixed": 0.38}

    _as_x = ChinchillaLaw._as_x

    def fit(self, x, y, sigma=None, **options) -> FitResult:
        if options:
            return type(self)(**{**self.options, **options}).fit(x, y, sigma)
        X, _ = self._as_x(x)
        finite_n = X[1][np.isfinite(X[1]) & (X[1] > 0)]
        if np.unique(finite_n).size < 2:
            law = type(self)(**self.options)
            law.internal_names = ("log_k", "alpha")
            res = _Law.fit(law, x, y, sigma)
            res.notes.append(f"a single model size: beta is held at {self.options['beta_fixed']:g} (Hernandez et al. "
                             f"2021, text -> Python) and k is conditional on it; add model sizes to fit beta")
            return res
        return _Law.fit(self, x, y, sigma)

    def _fixed(self) -> bool:
        return len(self.internal_names) == 2

    def _theta3(self, theta):
        theta = np.asarray(theta, dtype=float)
        if not self._fixed():
            return theta
        b = self.options["beta_fixed"]
        if theta.ndim == 2:
            return np.column_stack([theta, np.full(theta.shape[0], b)])
        return np.array([theta[0], theta[1], b])

    def _logf(self, theta, X, ref):
        t = self._theta3(theta)
        lF, lN = np.log(X[0]), np.log(X[1])
        if t.ndim == 2:
            return t[:, 0:1] + t[:, 1:2] * lF[None, :] + t[:, 2:3] * lN[None, :]
        return t[0] + t[1] * lF + t[2] * lN

    def _grad(self, theta, X, ref):
        lF, lN = np.log(X[0]), np.log(X[1])
        cols = [np.ones_like(lF), lF] + ([] if self._fixed() else [lN])
        return np.column_stack(cols)

    def _bounds(self, X, y, ref):
        lo, hi = np.array([-100.0, -5.0, -5.0]), np.array([100.0, 5.0, 5.0])
        p = len(self.internal_names)
        return lo[:p], hi[:p]

    def _starts(self, X, y, ref):
        # the law is linear in log space: ordinary least squares is the start (and nearly the answer)
        lF, lN = np.log(X[0]), np.log(X[1])
        ly = np.log(y)
        if self._fixed():
            M = np.column_stack([np.ones_like(lF), lF])
            ly = ly - self.options["beta_fixed"] * lN
        else:
            M = np.column_stack([np.ones_like(lF), lF, lN])
        sol, *_ = np.linalg.lstsq(M, ly, rcond=None)
        return sol[None, :]

    def _public(self, theta, ref):
        lk, al, be = (float(v) for v in self._theta3(theta))
        return {"k": math.exp(min(lk, 709.0)), "alpha": al, "beta": be}

    def _span_problems(self, X) -> list[str]:
        return _Law._span_problems(self, X[0])

    def _x_range(self, X) -> tuple:
        return ((float(np.min(X[0])), float(np.max(X[0]))), (float(np.min(X[1])), float(np.max(X[1]))))

    def _explode_x(self, X) -> np.ndarray:
        return np.array([[2.0 * float(np.max(X[0]))], [float(np.max(X[1]))]])

    @staticmethod
    def effective_data(finetune_sizes, pretrained_loss, baseline_sizes, baseline_loss) -> dict:
        """``D_E``, ``D_T = D_E - D_F`` and ossification for pre-trained losses against one baseline curve.

        ``baseline_sizes`` / ``baseline_loss``: the from-scratch model's loss after fine-tuning on each
        amount of data (same model size). ``D_E`` is where that curve reaches the pre-trained loss,
        by linear interpolation in (log D, loss) after making the curve monotone; beyond the largest
        baseline size a power law fitted to the baseline extrapolates it (``extrapolated`` True), or
        ``D_E`` is NaN when that fit is not ok. ``ossified`` marks points where the pre-trained model is
        worse than the from-scratch one at the same D_F (D_T <= 0: pre-training hurt).
        """
        df = np.atleast_1d(np.asarray(finetune_sizes, dtype=float))
        lp = np.atleast_1d(np.asarray(pretrained_loss, dtype=float))
        bs = np.asarray(baseline_sizes, dtype=float)
        bl = np.asarray(baseline_loss, dtype=float)
        if df.shape != lp.shape:
            raise ValueError(f"finetune_sizes ({df.shape[0]}) and pretrained_loss ({lp.shape[0]}) differ in length")
        if bs.shape != bl.shape or bs.size < 2:
            raise ValueError(f"the baseline needs at least 2 (size, loss) points of equal length; got {bs.size} sizes "
                             f"and {bl.size} losses")
        order = np.argsort(bs)
        bs, bl = bs[order], bl[order]
        mono = np.minimum.accumulate(bl)  # a from-scratch curve cannot get worse with more data
        lbs = np.log(bs)
        de = np.full(df.shape, np.nan)
        extrap = np.zeros(df.shape, bool)
        base_at_df = np.interp(np.log(df), lbs, mono)
        power = None
        for i, loss in enumerate(lp):
            if loss >= mono[0]:
                de[i] = bs[0] if loss == mono[0] else np.nan  # worse than the smallest baseline point
            elif loss >= mono[-1]:
                # interp needs increasing abscissae: walk the curve reversed (loss increases)
                de[i] = math.exp(float(np.interp(loss, mono[::-1], lbs[::-1])))
            else:
                if power is None:
                    power = PowerLaw(min_decades=0.0).fit(bs, bl) if bs.size >= 4 else False
                if power and power.ok:
                    inv = power.inverse(loss)
                    if inv.reachable:
                        de[i] = inv.tokens
                        extrap[i] = True
        dt = de - df
        ossified = lp > base_at_df
        return {"finetune_size": df, "effective": de, "transferred": dt, "ossified": ossified,
                "extrapolated": extrap, "multiplier": de / df}

    def fit_curves(self, finetune_sizes, pretrained_loss, baseline_sizes, baseline_loss, n_params,
                   baseline_params=None, **options) -> FitResult:
        """The Hernandez et al. analysis from loss curves; returns the fit of ``D_T = k D_F**alpha N**beta``.

        ``finetune_sizes``, ``pretrained_loss``, ``n_params``: one entry per pre-trained model
        fine-tuned on ``D_F`` examples (``n_params`` may be a scalar). The baseline arrays hold the
        from-scratch curves; ``baseline_params`` (same length, default: all ``n_params``) says which
        model size each baseline point belongs to. ``FitResult.extra`` holds per point
        ``finetune_size``, ``params``, ``effective``, ``transferred``, ``multiplier``, ``ossified``,
        ``extrapolated``; ossified points (and points the baseline cannot place) are left out of the
        fit and named in ``notes``.
        """
        df = np.atleast_1d(np.asarray(finetune_sizes, dtype=float))
        lp = np.atleast_1d(np.asarray(pretrained_loss, dtype=float))
        npar = np.broadcast_to(np.asarray(n_params, dtype=float), df.shape).copy()
        bs = np.asarray(baseline_sizes, dtype=float)
        bl = np.asarray(baseline_loss, dtype=float)
        bp = (np.broadcast_to(np.asarray(baseline_params, dtype=float), bs.shape) if baseline_params is not None
              else np.full(bs.shape, npar[0]))
        if baseline_params is None and np.unique(npar).size > 1:
            raise ValueError("several model sizes in n_params: give baseline_params to say which baseline curve "
                             "belongs to which size")
        keys = ("finetune_size", "effective", "transferred", "ossified", "extrapolated", "multiplier")
        out = {k: np.full(df.shape, np.nan if k not in ("ossified", "extrapolated") else False,
                          dtype=float if k not in ("ossified", "extrapolated") else bool) for k in keys}
        for n_ in np.unique(npar):
            sel = npar == n_
            bsel = bp == n_
            if bsel.sum() < 2:
                raise ValueError(f"no baseline curve (>= 2 points) for model size {n_:g}; baseline sizes given for "
                                 f"{sorted(set(bp.tolist()))}")
            part = self.effective_data(df[sel], lp[sel], bs[bsel], bl[bsel])
            for k in keys:
                out[k][sel] = part[k]
        use = np.isfinite(out["transferred"]) & (out["transferred"] > 0) & ~out["ossified"]
        res = self.fit((df[use], npar[use]), out["transferred"][use], **options)
        oss = df[out["ossified"]]
        if oss.size:
            res.notes.append(f"ossification: at D_F = {', '.join(f'{v:g}' for v in oss)} the pre-trained model is "
                             f"worse than the one trained from scratch; those points are left out")
        lost = df[~use & ~out["ossified"]]
        if lost.size:
            res.notes.append(f"D_F = {', '.join(f'{v:g}' for v in lost)}: the baseline curve cannot place the "
                             f"pre-trained loss (beyond its range and not extrapolable); left out")
        res.extra = {**{k: out[k].tolist() for k in keys}, "params": npar.tolist()}
        return res


# --------------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------------

class _LawRegistry(Mapping):
    """``LAWS``: a read-only view of the laws the plugin manager knows (built-ins and plugins alike).
    The plugin manager is the one registry; this view only spares callers its import."""

    def __getitem__(self, name: str) -> type:
        try:
            return get_law(name)
        except ValueError as err:
            raise KeyError(str(err)) from None

    def __contains__(self, name: object) -> bool:
        return name in list(self)

    def __iter__(self):
        from transfer_probe import plugins

        return iter(plugins.names("law"))

    def __len__(self) -> int:
        from transfer_probe import plugins

        return len(plugins.names("law"))


LAWS: Mapping[str, type] = _LawRegistry()


def register_law(name: str, cls: type) -> None:
    """Make a law class available under ``name`` in this process (``get_law(name)``,
    ``fit_rows(..., law=name)``, ``transfer-probe fit --law name``): registered as an in-process
    plugin, exactly as a ``register_laws`` hook of an installed plugin would."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"law name must be a non-empty string, got {name!r}")
    if not (isinstance(cls, type) and callable(getattr(cls, "fit", None))):
        raise TypeError(f"law {name!r}: expected a class with a .fit(x, y, sigma=None, **options) method, got {cls!r}")
    from transfer_probe import plugins
    from transfer_probe.hookspecs import hookimpl

    class _OneLaw:
        @hookimpl
        def register_laws(self, register):
            register(name, cls)

    plugins.register_plugin(_OneLaw(), name=f"law:{name}")


def get_law(name: str) -> type:
    """The law class registered under ``name`` with the plugin manager: ``get_law("power")().fit(x, y)``.

    >>> get_law("log").__name__
    'LogLaw'
    """
    from transfer_probe import plugins

    try:
        return plugins.get_law(name)
    except plugins.UnknownNameError as err:
        raise ValueError(str(err)) from None


# --------------------------------------------------------------------------------------------------
# fitting rows of a history file or of any table (the CLI's entry point)
# --------------------------------------------------------------------------------------------------


def _is_history(rows: list[Mapping[str, Any]]) -> bool:
    return any(isinstance(r.get("metrics"), Mapping) for r in rows)


def _num(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f


def _model_size(record: Mapping[str, Any]) -> float:
    p = record.get("params")
    if isinstance(p, Mapping):
        return _num(p.get("non_embedding", p.get("total")))
    return _num(p)


def fit_rows(rows: Iterable[Mapping[str, Any]], x: str | Sequence[str] = "tokens", y: str = "bleu",
             law: str = "log", *, sigma: str | None = None, task: str | None = None, finetune_size: Any = None,
             weights: bool = True, at_tokens: float | None = None, **options: Any) -> FitResult:
    """Fit ``law`` to the rows of a history file or of any table (``history.read_history`` /
    ``history.load_table`` output). The CLI's ``fit`` command calls this.

    - History records (rows with a ``metrics`` dict): failed probes are dropped, the repeats of each
      probe point are averaged with ``history.aggregate`` and, when ``weights`` is true and every point
      has a finite standard error, the fit is weighted by those errors (``FitResult.weighted``), which
      also widens the prediction intervals to match. Only pre-trained points enter the log / power /
      chinchilla laws; the rows must be one (task, finetune_size) group, or ``task=`` /
      ``finetune_size=`` pick one. ``law="transfer"`` instead reads, per fine-tuning size, the
      pre-trained loss ``y`` at the last probe (or at ``at_tokens``) against the no-pretraining baseline
      records of the same task and runs :meth:`TransferLaw.fit_curves`.
    - Plain tables: ``x`` and ``y`` are column names (``x`` a pair of names for chinchilla:
      ``("params", "tokens")``; for transfer ``("finetune_size", "params")`` with ``y`` the transferred
      data); ``sigma`` names an optional column of standard errors. Rows missing a value are skipped.

    Raises ``ValueError`` naming a missing column or metric and listing the available ones.

    >>> rows = [{"tokens": t, "loss": 2 + 50 * t ** -0.3} for t in (1e6, 3e6, 1e7, 3e7, 1e8)]
    >>> fit_rows(rows, x="tokens", y="loss", law="power").ok
    True
    """
    rows = rows if isinstance(rows, list) else list(rows)
    if not rows:
        raise ValueError("no rows to fit: the file is empty")
    law_cls = get_law(law)
    if _is_history(rows):
        return _fit_history(rows, x, y, law, law_cls, task=task, finetune_size=finetune_size, weights=weights,
                            at_tokens=at_tokens, **options)
    available = sorted({k for r in rows for k in r})
    if isinstance(x, str) and "," in x:  # the CLI's --x N,D names both columns
        x = tuple(part.strip() for part in x.split(","))
    if getattr(law_cls, "ndim", 1) == 2 and isinstance(x, str):
        if law_cls is ChinchillaLaw and "params" in available and x != "params":
            x = ("params", x)  # the CLI's --x names the token column; the size column is "params"
        else:
            hint = '("params", "tokens")' if law_cls is ChinchillaLaw else '("finetune_size", "params")'
            raise ValueError(f"the {law} law takes two x columns, e.g. x={hint}; available columns: "
                             f"{', '.join(available)}")
    names = [x] if isinstance(x, str) else list(x)
    cols = names + [y] + ([sigma] if sigma else [])
    for c in cols:
        if not any(c in r for r in rows):
            raise ValueError(f"column {c!r} not found; available columns: {', '.join(available)}")
    # Column by column into arrays: no per-row list (a 10^6-row table would hold ~150 MB of them).
    arr = np.column_stack([np.fromiter((_num(r.get(c)) for r in rows), dtype=float, count=len(rows)) for c in cols])
    arr = arr[np.all(np.isfinite(arr), axis=1)]
    if not len(arr):
        raise ValueError(f"no row has numeric values in all of {cols}")
    xs = arr[:, 0] if isinstance(x, str) else tuple(arr[:, i] for i in range(len(names)))
    ys = arr[:, len(names)]
    sg = arr[:, len(names) + 1] if sigma else None
    return law_cls(**options).fit(xs, ys, sg)


def _fit_history(rows, x, y, law_name, law_cls, *, task, finetune_size, weights, at_tokens, **options) -> FitResult:
    from transfer_probe import history

    probes = history.probe_records(rows)
    if not probes:
        raise ValueError("no successful probe records among the rows (every probe failed or none were written)")
    if task is not None:
        probes = [r for r in probes if str(r.get("task")) == str(task)]
    metrics = sorted({m for r in probes for m in (r.get("metrics") or {})})
    if y not in metrics:
        raise ValueError(f"metric {y!r} not found in the probe records; available metrics: {', '.join(metrics) or 'none'}")
    if law_name == "transfer":
        return _fit_history_transfer(probes, y, at_tokens, **options)
    if finetune_size is not None:
        probes = [r for r in probes if str(history.group_key(r)[1]) == str(finetune_size)]
    probes = [r for r in probes if r.get("pretrained", True)]
    groups = sorted({history.group_key(r) for r in probes}, key=str)
    if not groups:
        raise ValueError(f"no pre-trained probe records for task={task!r}, finetune_size={finetune_size!r}")
    if len(groups) > 1:
        listed = ", ".join(f"(task={t!r}, finetune_size={f!r})" for t, f in groups)
        raise ValueError(f"the records hold {len(groups)} groups: {listed}; fit one at a time with task= and "
                         f"finetune_size= (the CLI: --task, --finetune-size)")
    all_points = history.aggregate(probes, metrics=[y])
    points = [p for p in all_points if y in p["mean"]]
    if not points:  # every value null or NaN: say so instead of fitting nothing
        raise ValueError(f"no probe record of (task={groups[0][0]!r}, finetune_size={groups[0][1]!r}) has a numeric "
                         f"{y!r} ({sum(p['n'] for p in all_points)} records: the values are null or NaN)")
    notes = []
    if len(points) < len(all_points):
        notes.append(f"{len(all_points) - len(points)} probe point(s) left out: no numeric {y!r} (null or NaN)")
    runs = sorted({str(p["run_id"]) for p in points})
    if len(runs) > 1 and law_name != "chinchilla":
        notes.append(f"points of {len(runs)} runs fitted together: {', '.join(runs)}")
    if law_name == "chinchilla":
        size = {}
        for r in probes:
            size.setdefault(r.get("run_id"), _model_size(r))
        xs = (np.array([size.get(p["run_id"], math.nan) for p in points]), np.array([p["tokens"] for p in points]))
    else:
        key = x if isinstance(x, str) else x[0]
        if key not in points[0]:
            raise ValueError(f"x {key!r} is not a field of the aggregated probe points; use one of: tokens, step")
        xs = np.array([_num(p[key]) for p in points])
    ys = np.array([p["mean"][y] for p in points])
    sem = np.array([_num(p["sem"].get(y)) for p in points])
    sg = None
    if weights:
        if np.all(np.isfinite(sem) & (sem > 0)):
            sg = sem
        else:
            notes.append(f"unweighted: {int((~(np.isfinite(sem) & (sem > 0))).sum())} point(s) have no standard "
                         f"error (single repeat and no bootstrap interval)")
    res = law_cls(**options).fit(xs, ys, sg)
    res.notes.extend(notes)
    res.extra.setdefault("repeats", [int(p["n"]) for p in points])
    return res


def _fit_history_transfer(probes, y, at_tokens, **options) -> FitResult:
    from transfer_probe import history

    tasks = sorted({str(r.get("task")) for r in probes})
    if len(tasks) > 1:
        raise ValueError(f"the records hold {len(tasks)} tasks: {', '.join(tasks)}; pass task= to pick one")
    points = [p for p in history.aggregate(probes, metrics=[y]) if y in p["mean"]]
    size = {}
    for r in probes:
        size.setdefault(r.get("run_id"), _model_size(r))
    base = [p for p in points if not p["pretrained"]]
    pre = [p for p in points if p["pretrained"]]
    if len(base) < 2:
        raise ValueError("the transfer law needs no-pretraining baseline records (pretrained: false) at >= 2 "
                         f"fine-tuning sizes; found {len(base)}")
    chosen: dict[Any, dict] = {}
    for p in pre:
        if at_tokens is not None and abs(p["tokens"] - at_tokens) > 1e-6 * at_tokens:
            continue
        k = p["finetune_size"]
        if k not in chosen or p["tokens"] > chosen[k]["tokens"]:
            chosen[k] = p
    if not chosen:
        raise ValueError(f"no pre-trained probe points{'' if at_tokens is None else f' at {at_tokens:g} tokens'}")
    pts = sorted(chosen.values(), key=lambda p: _num(p["finetune_size"]))
    return TransferLaw(**options).fit_curves(
        [_num(p["finetune_size"]) for p in pts], [p["mean"][y] for p in pts],
        [_num(p["finetune_size"]) for p in base], [p["mean"][y] for p in base],
        [size.get(p["run_id"], math.nan) for p in pts],
        baseline_params=[size.get(p["run_id"], math.nan) for p in base])
