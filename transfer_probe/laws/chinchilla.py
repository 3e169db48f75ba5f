""":class:`ChinchillaLaw`: loss across runs of different sizes, ``L(N, D) = E + A/N^alpha + B/D^beta``."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from transfer_probe.laws.engine import _Law


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
    public_exprs = {"E": "exp(e)", "A": "exp(min(a, 709.0))", "B": "exp(min(b, 709.0))"}
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
