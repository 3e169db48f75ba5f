"""The laws of one variable, pre-training tokens D: :class:`LogLaw` (BLEU), :class:`PowerLaw`
(cross-entropy) and :class:`SaturatingLaw`."""

from __future__ import annotations

import math

import numpy as np

from transfer_probe.laws.engine import _Law

# --------------------------------------------------------------------------------------------------
# the laws
# --------------------------------------------------------------------------------------------------


class _TokenLaw(_Law):
    """A law of one variable (tokens D): fitted in u = log(D / min D), so log D >= 0 and the
    parameters stay well scaled whatever the units of D."""

    needs_reference = True  # evaluable only with the reference point D0 of its fit

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
    # c = exp(log_g / beta) is log(A D0^alpha), the law's log term at D0; A can be astronomically small
    # (clipped where exp would overflow, as the other laws' exprs are: a float's largest exponent is 709)
    public_exprs = {"A": "exp(min(exp(min(log_g / beta, 709.0)) * (1 - h * log_x0), 709.0))",
                    "alpha": "h * exp(min(log_g / beta, 709.0))"}
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
    # exp(a) * (D/D0)^-alpha = A D^-alpha  =>  A = exp(a + alpha log D0)
    public_exprs = {"A": "exp(min(a + alpha * log_x0, 709.0))"}
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
    public_exprs = {"C": "exp(log_C)", "A": "exp(min(log(exp(log_C) * r) + alpha * log_x0, 709.0))"}
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
