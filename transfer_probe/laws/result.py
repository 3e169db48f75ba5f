"""What a fit gives back: :class:`FitResult` (parameters with errors, predictions with intervals,
inverse, reports) and :class:`Inverse`."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import lmfit
import numpy as np
from scipy import stats
from scipy.optimize import brentq

from transfer_probe.jsonable import to_json

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


def _jsonable(v: Any) -> Any:
    """A fit result's value as JSON: inf / nan as strings a reader can float() back."""
    return to_json(v, nonfinite="string")


_nested_jsonable = _jsonable  # the same conversion, for nested values


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

    >>> from transfer_probe.laws import LogLaw
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
        return bool(self._ref) or not getattr(self._law, "needs_reference", False)

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
        d = law.direction  # the optimistic edge is above the curve for a rising score, below for a loss

        def gap(edge):  # edge's distance past the target at log x (the grid's formula at one point)
            def f(lx):
                lf, h, _ = self._bands(np.array([math.exp(lx)]), interval, noise=False)
                return float(d * (lf[0] + edge * d * h[0]) - d * ly)
            return f

        low = _first_crossing(grid, d * (logf + d * hw) - d * ly, gap(+1))
        high = _first_crossing(grid, d * (logf - d * hw) - d * ly, gap(-1))
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
    @property
    def at_bound(self) -> dict[str, float]:
        """Public parameters the fit left at a bound of their range, with their value there: e.g.
        ``{"E": 0.0}`` for a power law with no floor, ``{"alpha": 0.0}`` for a log-law on falling scores.

        Read off the final lmfit parameters' bounds (same tolerance as the fit's own check); a public
        parameter counts when its internal one has its name or when the bound makes it exactly 0
        (LogLaw's alpha = h * c). Printing such a value with a standard error would be meaningless
        (``E=2.8e-16+-0``); reports say "at its bound" instead. Empty without an lmfit result.
        """
        law, lm, theta = self._law, self.lmfit_result, self._theta
        if law is None or lm is None or theta is None or not np.all(np.isfinite(theta)):
            return {}
        snapped = np.array(theta, dtype=float)
        hit = set()
        for j, name in enumerate(law.internal_names):
            par = lm.params.get(name)
            if par is None:
                continue
            span = par.max - par.min if np.isfinite(par.max - par.min) else 1.0
            for b in (par.min, par.max):
                if np.isfinite(b) and abs(snapped[j] - b) <= 1e-6 * max(1.0, abs(span)):
                    snapped[j] = b
                    hit.add(name)
        if not hit:
            return {}
        public = law._public(snapped, self._ref)
        return {k: float(public[k]) for k in law.param_names
                if k in hit or (public[k] == 0 and self.params.get(k) != 0)}

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
            "at_bound": {k: _jsonable(v) for k, v in self.at_bound.items()},
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
        bound = self.at_bound
        for k, v in self.params.items():
            if k in bound:  # its error is no error (held there, or the spread of a value pinned at 0)
                lines.append(f"    {k + ':':<{width + 1}}  {bound[k]:.6g} (at its bound)")
                continue
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



def _fmt_range(r) -> str:
    if r and isinstance(r[0], (tuple, list)):
        return ", ".join(_fmt_range(x) for x in r)
    lo, hi = r
    if lo > 0 and hi > 0:
        return f"{lo:.3g} to {hi:.3g} ({math.log10(hi / lo):.2f} decades)"
    return f"{lo:.3g} to {hi:.3g}"


def _first_crossing(grid: np.ndarray, d: np.ndarray, f=None) -> float:
    """First x where ``d`` (sampled on ``grid``) goes from < 0 to >= 0: ``grid[0]`` if ``d[0] >= 0``, inf if
    never. The grid brackets the first crossing; ``brentq`` on ``f`` (the same difference at any
    ``log x``) finds it exactly. Without ``f`` (or a bracket brentq refuses), the grid point after it."""
    ok = np.isfinite(d) & (d >= 0)
    if not ok.any():
        return math.inf
    i = int(np.argmax(ok))
    if i == 0:
        return float(grid[0])
    if f is None or not np.isfinite(d[i - 1]):
        return float(grid[i])
    try:
        return math.exp(brentq(f, math.log(grid[i - 1]), math.log(grid[i]), xtol=1e-12))
    except ValueError:  # the point evaluation disagrees in sign with the grid's at an end (rounding)
        return float(grid[i])


@functools.lru_cache(maxsize=256)
def _tq(interval: float, dof: int) -> float:
    """Student-t quantile for a two-sided ``interval`` with ``dof`` degrees of freedom (cached: the
    bands ask for the same few values thousands of times in a bootstrap)."""
    return float(stats.t.ppf(0.5 + interval / 2, dof)) if dof > 0 else math.inf
