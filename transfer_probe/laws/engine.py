"""The fitting engine shared by every law: :class:`_Law` (reparameterized least squares with a Huber
loss on log values, starts, covariance or bootstrap, the honesty checks) and its options. The
objective and the optimizer are in :mod:`transfer_probe.laws.optimize`."""

from __future__ import annotations

import math
import warnings
from typing import Any

import lmfit
import numpy as np
from uncertainties import covariance_matrix

from transfer_probe.laws.optimize import _Problem, explore, huber_cost, least_squares_fit, least_squares_kws
from transfer_probe.laws.result import FitResult

_DEFAULTS: dict[str, Any] = {
    "huber_delta": None,  # per law
    "min_decades": 1.0,  # smallest span of x (log10 max/min) that identifies a law
    "max_log_halfwidth": math.log(2.0),  # 90% parameter band at 2 x max(x) wider than x2 / /2: "explodes"
    "uncertainty": "auto",  # "auto" | "covariance" | "bootstrap"
    "n_bootstrap": 200,
    "n_starts": 3,  # grid candidates explored
    "seed": 0,
    # with measured errors, the residual scale tau^2 (reduced chi-square) is floored here: 1.0 trusts
    # the errors as a lower bound on the noise; 0.0 lets the scatter decide, as lmfit's scale_covar does
    "min_noise_scale": 0.0,
}



class _Law:
    """Base class: a law is a log-space model ``log f(theta; X)`` with an internal parameterization.

    ``public_exprs`` writes each reported parameter as an lmfit constraint expression in the internal
    parameters and the reference constants (``log_x0``); lmfit evaluates them and propagates the
    covariance to their errors (``Parameters.create_uvars``). A name missing from it is an internal one.
    """

    name = ""
    formula = ""
    param_names: tuple[str, ...] = ()
    internal_names: tuple[str, ...] = ()
    public_exprs: dict[str, str] = {}
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

    def _constants(self, ref) -> dict[str, float]:
        """Fixed values the public expressions may use besides the internal parameters."""
        return dict(ref)

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

    # ---- fitting, in steps: points -> problem -> optimum -> uncertainty -> result
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
        P = self._problem(x, y, sigma)
        if isinstance(P, FitResult):
            return P
        problems = self._span_problems(P.X)
        theta, lm = self._optimize(P)
        if theta is None:
            return self._failed(P.X, P.y, P.notes, "the optimizer found no finite solution from any starting point; "
                                                   "check that y is positive and moves with x")
        if not (lm is not None and lm.success and np.all(np.isfinite(theta))):
            problems.append("the optimizer did not converge; add points or check the data for outliers")
        res = self._result(P, theta, lm, problems)
        self._check_explosion(res, P, problems)
        if problems:
            res.ok = False
            res.why = "; ".join(problems)
        return res

    def _problem(self, x, y, sigma) -> _Problem | FitResult:
        """Validated points on a log scale (values <= 0 dropped or raised), or the failed result."""
        X, y, s_abs, notes = self._validate(x, y, sigma)
        if not self.direction and np.any(y <= 0):
            keep = y > 0
            notes.append(f"{int((~keep).sum())} value(s) <= 0 dropped: the law is fitted on log y")
            X, y = X[..., keep], y[keep]
            s_abs = s_abs[keep] if s_abs is not None else None
        if self.direction and np.any(y <= 0):
            if not np.any(y > 0):
                return self._failed(X, y, notes, "every y value is <= 0; nothing to fit on a log scale")
            floor = max(1e-2 * float(np.max(y)), 1e-6)
            notes.append(f"{int((y <= 0).sum())} value(s) <= 0 raised to {floor:.3g} to take logs")
            y = np.maximum(y, floor)
        n, p = y.shape[0], len(self.internal_names)
        if n < p + 1:
            return self._failed(X, y, notes, f"only {n} point(s); the {self.name} law has {p} parameters and needs at "
                                             f"least {p + 1} ({self.more_points_hint})")
        ref = self._prepare(X, y)
        s = s_abs / y if s_abs is not None else np.ones(n)  # relative error = sd of log y
        delta = self.options["huber_delta"]
        lo, hi = self._bounds(X, y, ref)
        return _Problem(self, X, y, s_abs, notes, ref, np.log(y), s, lo, hi,
                        None if delta is None else delta / float(np.median(s)))

    def _optimize(self, P: _Problem):
        """Every start scored at once; a few projected steps from the best ``n_starts``, the winner's
        run on to convergence, then least_squares through lmfit from there (kept when it is no worse).
        Returns ``(theta, MinimizerResult)``."""
        lo, hi = P.lo, P.hi
        some = P.start_points()
        starts = np.clip(self._starts(P.X[..., some], P.y[some], P.ref), lo + 1e-9 * (hi - lo), hi - 1e-9 * (hi - lo))
        cost = P.start_costs(starts)
        best, best_cost = None, np.inf
        order = np.argsort(cost)[: self.options["n_starts"]]
        for i in order:
            if not np.isfinite(cost[i]):
                continue
            th, c = explore(P.resid, P.jac, starts[i], lo, hi, P.f_scale, steps=12 if len(order) > 1 else 100)
            if np.isfinite(c) and c < best_cost:
                best, best_cost = th, c
        if best is None:
            return None, None
        if len(order) > 1:  # projected steps land a parameter exactly on its bound, which trf never does
            best, best_cost = explore(P.resid, P.jac, best, lo, hi, P.f_scale, steps=100)
        lm = self._lmfit_minimize(best, P)
        if lm is not None:
            t_lm = np.array([lm.params[k].value for k in self.internal_names])
            if np.all(np.isfinite(t_lm)) and huber_cost(P.resid(t_lm), P.f_scale) <= best_cost:
                return t_lm, lm
        return best, lm

    def _lmfit_minimize(self, theta, P: _Problem):
        params = lmfit.Parameters()
        for j, name in enumerate(self.internal_names):
            params.add(name, value=float(np.clip(theta[j], P.lo[j], P.hi[j])), min=float(P.lo[j]), max=float(P.hi[j]))
        names = self.internal_names

        def f(pars):
            return P.resid(np.array([pars[k].value for k in names]))

        def jf(pars):
            return P.jac(np.array([pars[k].value for k in names]))

        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                return lmfit.minimize(f, params, method="least_squares", jac=jf, nan_policy="omit", max_nfev=400,
                                      **least_squares_kws(P.f_scale))
        except (ValueError, np.linalg.LinAlgError):
            return None

    def _result(self, P: _Problem, theta, lm, problems: list[str]) -> FitResult:
        """Residual scale, bound checks, covariance or bootstrap, public parameters: the FitResult."""
        r = P.resid(theta)
        n, dof = P.n, P.n - len(theta)
        tau2 = float(np.sum(r * r) / dof) if dof > 0 else math.nan
        weighted = P.s_abs is not None
        if weighted:  # option: measured errors bound the noise from below (lucky points cannot shrink it)
            tau2 = max(tau2, self.options["min_noise_scale"])
        hits = P.at_bound(theta)
        for j, side, b in hits:
            name = self.internal_names[j]
            if (name, side) in self.bound_ok:
                P.notes.append(self._bound_note(name, side))
            else:
                problems.append(self._bound_problem(name, side, b))
        cov = self._covariance(P.jac(theta), tau2, sorted({j for j, _, _ in hits}))
        mode, boot = self.options["uncertainty"], None
        by_bootstrap = mode == "bootstrap" or (mode == "auto" and (cov is None or self._prefers_bootstrap()))
        if by_bootstrap:
            boot = self._bootstrap(P, theta)
            if boot is None:
                problems.append("the bootstrap refits failed; the parameters are not identified by these points")
        elif cov is None:
            problems.append("the parameters are not identified (singular covariance): the points do not pin "
                            "down every parameter; add points over a wider range of x")
        cov_int = cov if boot is None else (np.cov(boot, rowvar=False) if len(boot) > 1 else None)
        public, stderr, correl = self._public_uncertainty(theta, P.ref, cov_int)
        s_med = float(np.median(P.s)) if weighted else 1.0
        sigma_y = float(np.sum((P.y - np.exp(self._logf(theta, P.X, P.ref))) ** 2)) / dof if dof > 0 else math.nan
        return FitResult(
            law=self.name, params=public, stderr=stderr, ok=True, why="", n_points=n, x_range=self._x_range(P.X),
            notes=P.notes, correl=correl, noise=math.sqrt(tau2) * s_med if math.isfinite(tau2) else math.nan,
            dof=dof, uncertainty="bootstrap" if by_bootstrap else "covariance",
            weighted=weighted, huber_delta=self.options["huber_delta"], lmfit_result=lm, _law=self, _theta=theta,
            _cov=cov if boot is None else None, _boot=boot, _tau2=tau2, _s_new=s_med,
            _sigma_new=float(np.median(P.s_abs)) if weighted else math.nan, _sigma_y=math.sqrt(sigma_y), _ref=P.ref)

    def _check_explosion(self, res: FitResult, P: _Problem, problems: list[str]) -> None:
        """Does the parameter band explode just beyond the data? (Only asked of an otherwise sound fit.)"""
        if problems or not math.isfinite(res._tau2):
            return
        with np.errstate(all="ignore"):
            _, hw, _ = res._bands(self._explode_x(P.X), 0.9, noise=False)
        limit = self.options["max_log_halfwidth"]
        if not np.all(np.isfinite(hw)) or np.any(hw > limit):
            w = float(np.nanmax(hw)) if np.any(np.isfinite(hw)) else math.inf
            problems.append(
                f"the 90% band of the curve at 2x the largest x spans a factor {math.exp(w):.3g} either way "
                f"(limit {math.exp(limit):.3g}): the {P.n} points do not identify the law; add points at larger x "
                f"or repeats to cut the noise")

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

    def _covariance(self, J, tau2, at_bound) -> np.ndarray | None:
        """``tau2 (J^T J)^-1`` from the raw Jacobian (see the package docstring); parameters at a bound
        are held fixed (no variance; the fit is flagged anyway)."""
        if not math.isfinite(tau2) or not np.all(np.isfinite(J)):
            return None
        p = J.shape[1]
        free = [j for j in range(p) if j not in at_bound]
        if not free:
            return np.zeros((p, p))
        Hf = (J.T @ J)[np.ix_(free, free)]
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

    def _bootstrap(self, P: _Problem, theta) -> np.ndarray | None:
        """Parameter samples: pairs bootstrap when there are many points, residual bootstrap otherwise;
        each refit is the main fit's least_squares, started at the fitted parameters."""
        rng = np.random.default_rng(self.options["seed"])
        n, B = P.n, int(self.options["n_bootstrap"])
        fitted = self._logf(theta, P.X, P.ref)
        r = (P.ly - fitted) / P.s
        r = r - np.mean(r)
        out = []
        for _ in range(B):
            if n >= 30:  # pairs
                idx = rng.integers(0, n, n)
                Xb, lyb, sb = P.X[..., idx], P.ly[idx], P.s[idx]
            else:
                Xb, sb = P.X, P.s
                lyb = fitted + P.s * r[rng.integers(0, n, n)] * math.sqrt(n / max(n - len(theta), 1))
            tb, cb, _ = least_squares_fit(lambda t, Xb=Xb, lyb=lyb, sb=sb: P.resid(t, Xb, lyb, sb),
                                          lambda t, Xb=Xb, sb=sb: P.jac(t, Xb, sb), theta, P.lo, P.hi, P.f_scale)
            if np.isfinite(cb) and np.all(np.isfinite(tb)):
                out.append(tb)
        if len(out) < max(10, B // 2):
            return None
        return np.array(out)

    def _lmfit_params(self, theta, ref) -> lmfit.Parameters:
        """The internal parameters (varied), the reference constants (fixed) and the public ones
        (``public_exprs``), as lmfit parameters: lmfit evaluates the public values and errors."""
        pars = lmfit.Parameters()
        for j, name in enumerate(self.internal_names):
            pars.add(name, value=float(theta[j]))
        for name, v in self._constants(ref).items():
            if name not in pars:
                pars.add(name, value=float(v), vary=False)
        for name in self.param_names:
            if name not in pars:
                pars.add(name, expr=self.public_exprs[name])
        return pars

    def _public(self, theta, ref) -> dict[str, float]:
        with np.errstate(all="ignore"):
            pars = self._lmfit_params(theta, ref)
        return {k: float(pars[k].value) for k in self.param_names}

    def _public_uncertainty(self, theta, ref, cov) -> tuple[dict, dict, dict]:
        """Public values, standard errors and correlations, propagated by lmfit from the internal
        covariance ``cov`` (NaN errors and no correlations without one)."""
        names = list(self.param_names)
        with np.errstate(all="ignore"):
            pars = self._lmfit_params(theta, ref)
            public = {k: float(pars[k].value) for k in names}
            if cov is None:
                return public, {k: math.nan for k in names}, {}
            uv = pars.create_uvars(covar=cov)
            C = np.array(covariance_matrix([uv[k] for k in names]), dtype=float)
        se = np.sqrt(np.maximum(np.diag(C), 0.0))
        stderr = {k: float(se[i]) for i, k in enumerate(names)}
        correl = {}
        for i in range(len(names)):
            for j in range(i + 1, len(names)):
                d = se[i] * se[j]
                correl[f"{names[i]}, {names[j]}"] = float(C[i, j] / d) if d > 0 else math.nan
        return public, stderr, correl

    def _failed(self, X, y, notes, why) -> FitResult:
        nan = {k: math.nan for k in self.param_names}
        n = int(y.shape[0])
        x_range = self._x_range(X) if n else (math.nan, math.nan)
        return FitResult(law=self.name, params=dict(nan), stderr=dict(nan), ok=False, why=why, n_points=n,
                         x_range=x_range, notes=notes, huber_delta=self.options["huber_delta"], _law=self,
                         _theta=np.full(len(self.internal_names), np.nan), _ref={}, dof=max(n - len(self.internal_names), 0))
