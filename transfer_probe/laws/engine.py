"""The fitting engine shared by every law: :class:`_Law` (reparameterized least squares with a Huber
loss on log values, starts, covariance or bootstrap, the honesty checks) and its options."""

from __future__ import annotations

import math
import warnings
from typing import Any

import lmfit
import numpy as np

from transfer_probe.laws.result import FitResult

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
