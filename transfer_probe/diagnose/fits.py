"""The laws as the verdicts use them: fits that never raise, the curve and its band at given tokens,
a rolling-origin backtest (does the law predict this run's own next probes?), the choice between the
log-law and its saturating alternative, and the prediction / tokens-to-target at the budget."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from transfer_probe.diagnose.verdict import jsonable
from transfer_probe.text import format_tokens

# Fits on the earlier points are used only through their prediction and its band at the held-out
# points: a narrow token span or a wide band just beyond the data lowers the test's power (the band
# enters the statistic) but does not make it wrong, so those two honesty checks of the laws are off.
HOLDOUT_OPTIONS = {"min_decades": 0.0, "max_log_halfwidth": 50.0, "n_starts": 1}


def fit_law(kind: str, x: np.ndarray, y: np.ndarray, sigma: np.ndarray | None, **options: Any):
    from transfer_probe import laws

    law = {"log": laws.LogLaw, "saturating": laws.SaturatingLaw, "power": laws.PowerLaw}[kind]()
    if sigma is not None and not (np.all(np.isfinite(sigma)) and np.all(sigma > 0)):
        sigma = None
    try:
        return law.fit(x, y, sigma=sigma, **options)
    except (ValueError, RuntimeError, FloatingPointError, np.linalg.LinAlgError) as err:
        return FailedFit(f"{type(err).__name__}: {err}")


def usable(fit) -> bool:
    """A fit whose curve is finite: ok, or flagged only for what the tests cope with (a parameter at a
    bound is then held fixed by the law's covariance; a wide band enters the statistic)."""
    if fit is None or isinstance(fit, FailedFit):
        return False
    if getattr(fit, "ok", False):
        return True
    xr = getattr(fit, "x_range", None)
    try:
        return bool(np.all(np.isfinite(curve(fit, np.asarray(xr, float)))))
    except (TypeError, ValueError):
        return False


class FailedFit:
    ok = False
    params: dict = {}
    stderr: dict = {}

    def __init__(self, why: str):
        self.why = why

    def to_dict(self) -> dict:
        return {"ok": False, "why": self.why}


def curve(fit, x) -> np.ndarray:
    """The fitted curve at x (mean only)."""
    x = np.asarray(x, float)
    if callable(fit):
        return np.asarray(fit(x), dtype=float)
    return np.asarray(fit.predict(x, interval=0.5)[0], dtype=float)


def curve_sd(fit, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of the fitted curve (parameter uncertainty only, not the noise of
    a new observation) at x, in y units.

    ``FitResult.predict(noise=False)`` gives the band of the expected curve in log space with a
    Student-t quantile on the fit's degrees of freedom; dividing the log half-width by that quantile
    gives the standard deviation, which the delta method turns into y units.
    """
    from scipy.stats import t as _t

    interval = 0.6826894921370859
    try:
        mean, lo, hi = fit.predict(np.asarray(x, float), interval=interval, noise=False, force=True)
    except TypeError:  # a law without the noise switch: its prediction band is used as it is
        mean, lo, hi = fit.predict(np.asarray(x, float), interval=interval)
    mean, lo, hi = (np.atleast_1d(np.asarray(v, float)) for v in (mean, lo, hi))
    dof = int(getattr(fit, "dof", 0) or 0)
    q = float(_t.ppf(0.5 + interval / 2, dof)) if dof > 0 else 1.0
    with np.errstate(all="ignore"):
        if np.all(mean > 0) and np.all(lo > 0):
            sd = mean * (np.log(hi) - np.log(lo)) / (2 * q)
        else:
            sd = (hi - lo) / (2 * q)
    sd = np.where(np.isfinite(sd), sd, np.inf)
    return mean, sd


def holdout_z(fit, x, y, sigma) -> tuple[float, list[dict]]:
    """Standardized deviation of held-out points from the fit's prediction.

    Curve errors of neighbouring held-out points are almost fully correlated (same parameters),
    observation noises independent: the mean deviation has variance mean(sd_curve)^2 + mean(sigma^2)/k.
    """
    mean, sd = curve_sd(fit, x)
    d = np.asarray(y, float) - mean
    k = len(d)
    var = float(np.mean(sd)) ** 2 + float(np.sum(np.asarray(sigma, float) ** 2)) / k ** 2
    z = float(np.mean(d) / math.sqrt(var)) if var > 0 and math.isfinite(var) else float("nan")
    pred = [{"tokens": float(xi), "mean": float(mi), "sd_curve": float(si)} for xi, mi, si in zip(x, mean, sd, strict=False)]
    return z, pred


def probes_to_span(x: np.ndarray, decades: float) -> int:
    """How many more probes, continuing the current spacing, until x spans ``decades``."""
    if len(x) < 2:
        return 0 if len(x) == 0 else 1
    need = x[0] * 10 ** decades
    if x[-1] >= need:
        return 0
    r = x[-1] / x[-2]
    step = x[-1] - x[-2]
    log_spaced = len(x) >= 3 and abs(math.log(r) - math.log(x[-2] / x[-3])) < 0.1 * abs(math.log(r)) and r > 1.05
    if log_spaced:
        return int(math.ceil(math.log(need / x[-1]) / math.log(r)))
    if step <= 0:
        return 1
    return int(math.ceil((need - x[-1]) / step))


def predict_at(fit, budget: float, interval: float, scale: float = 1.0) -> dict:
    """The fit's prediction at ``budget`` with its interval widened ``scale`` times around the mean
    (the calibration the run's own backtest asks for)."""
    try:
        mean, lo, hi = fit.predict(np.array([budget]), interval=interval, force=True)
        mean, lo, hi = (float(np.atleast_1d(v)[0]) for v in (mean, lo, hi))
        lo, hi = mean - scale * (mean - lo), mean + scale * (hi - mean)
    except Exception as err:  # noqa: BLE001 - a prediction failure is reported, not raised
        return {"budget": budget, "mean": None, "why": f"{type(err).__name__}: {err}"}
    if not math.isfinite(mean):
        return {"budget": budget, "mean": None, "why": "the fitted law gives no finite value there"}
    return {"budget": budget, "mean": mean, "low": lo, "high": hi, "interval": interval}


def prediction_problem(mean: float, low: float, high: float, y: np.ndarray, s: np.ndarray, *,
                       ceiling: float | None = None, beyond_data: bool = True) -> str | None:
    """Why a law's prediction cannot be used, or None: an interval wider than the run's own range
    allows (twice its spread plus four noise SDs), or, for a bounded score, a mean beyond its maximum
    (``ceiling``: 100 for BLEU/chrF/accuracy in percent, 1 for fractions). The verdict and
    ``compare_runs`` both ask it, so they trust the same predictions."""
    if ceiling is not None and math.isfinite(mean) and mean > ceiling * 1.001:
        return f"the law predicts {mean:.3g}, beyond the score's maximum ({ceiling:g}): it cannot hold that far"
    if beyond_data:
        width = high - low
        if not (math.isfinite(width) and width <= 2 * (np.max(y) - np.min(y)) + 4 * float(np.median(s))):
            return f"the interval at the budget is too wide to use ({low:.3g}-{high:.3g})"
    return None


def score_ceiling(y: np.ndarray, loss: bool, metric: str | None = None) -> float | None:
    """The largest value a score can take (None for losses): 100 for percent scores, 1 for fractions."""
    if loss:
        return None
    from transfer_probe.diagnose.noise import resolution

    return 100.0 if resolution(y, metric=metric) >= 0.05 else 1.0


def tokens_to_target(fit, target: float, interval: float, x_now: float) -> dict:
    """Tokens at which the fitted score reaches ``target``, with an interval read off the prediction
    band (where its upper edge reaches the target: optimistic; its lower edge: pessimistic).

    Searched on a log grid from the newest tokens to 1e6 times them; beyond that it is "not reachable".
    """
    grid = np.geomspace(x_now / 1e3, x_now * 1e6, 721)
    try:
        mean, lo, hi = (np.asarray(v, float) for v in fit.predict(grid, interval=interval))
    except Exception as err:  # noqa: BLE001 - a prediction failure is reported, not raised
        return {"target": target, "mean": None, "why": f"not computable: {type(err).__name__}: {err}"}

    def first(curve):
        idx = np.nonzero(np.isfinite(curve) & (curve >= target))[0]
        return float(grid[idx[0]]) if len(idx) else None

    m = None
    try:  # the law's own inverse (transfer_probe.laws.Inverse) is exact and has its own band
        try:
            res = fit.inverse(target, interval=interval)
        except TypeError:
            res = fit.inverse(target)
    except (AttributeError, TypeError, ValueError, ArithmeticError):
        res = None
    if res is not None and hasattr(res, "status"):
        if res.status == "ok":
            hi_t = float(res.high)
            return {"target": target, "mean": float(res.tokens), "low": float(res.low),
                    "high": hi_t if math.isfinite(hi_t) else float("inf"), "interval": interval}
        if res.status == "not_reachable":
            return {"target": target, "mean": None, "why": f"not reachable: {res.why}"}
    elif res is not None:
        res = res[0] if isinstance(res, (tuple, list)) else res
        res = res.get("mean") if isinstance(res, Mapping) else res
        try:
            m = float(res) if res is not None and math.isfinite(float(res)) else None
        except (TypeError, ValueError):
            m = None
    if m is None:
        m = first(mean)
    if m is None:
        return {"target": target, "mean": None,
                "why": f"not reachable: the fitted law stays below {target:g} up to {format_tokens(grid[-1])} tokens"}
    low, high = first(hi), first(lo)
    return {"target": target, "mean": m, "low": low if low is not None else m,
            "high": high if high is not None else float("inf"), "interval": interval}


def fit_dict(fit) -> dict | None:
    if fit is None:
        return None
    try:
        return jsonable(fit.to_dict())
    except Exception as err:  # noqa: BLE001
        return {"ok": bool(getattr(fit, "ok", False)), "why": f"to_dict failed: {err}"}


def why(fit) -> str:
    return "no fit" if fit is None else str(getattr(fit, "why", "") or "not identified")


def backtest(kind: str, x: np.ndarray, y: np.ndarray, s: np.ndarray, n_back: int = 4, min_fit: int = 4) -> dict:
    """Rolling-origin backtest: fit the law on the first k probes, predict probe k, for the newest
    ``n_back`` probes. Returns the errors, each standardized by its own prediction sd (curve band and
    the point's noise), ``n``, ``max_abs_err``, ``rms_z`` and ``coverage`` of the 90% intervals; ``at``
    and ``sd``: the probes checked and those prediction sds (compare_runs weighs the laws by them)."""
    errs, zs, at, sds = [], [], [], []
    for k in range(max(min_fit, len(x) - n_back), len(x)):
        fit = fit_law(kind, x[:k], y[:k], s[:k], **HOLDOUT_OPTIONS)
        if not usable(fit):
            continue
        mean, sd = curve_sd(fit, x[k:k + 1])
        if not (np.isfinite(mean[0]) and np.isfinite(sd[0])):
            continue
        err = float(y[k] - mean[0])
        errs.append(err)
        at.append(k)
        sds.append(math.hypot(float(sd[0]), float(s[k])))
        zs.append(err / sds[-1])
    if not errs:
        return {"n": 0}
    z = np.array(zs)
    return {"n": len(errs), "errors": [round(e, 4) for e in errs], "z": [round(float(v), 3) for v in z],
            "max_abs_err": float(np.max(np.abs(errs))), "mean_abs_err": float(np.mean(np.abs(errs))),
            "rms_z": float(np.sqrt(np.mean(z ** 2))), "coverage": float(np.mean(np.abs(z) <= 1.645)),
            "at": at, "sd": sds}


# A law earns a prediction by predicting the run's own later probes: at least 2 rolling-origin checks
# with an rms error of at most 2.5 noise SDs; from 3 checks on, its bands widen by that rms (the
# bands alone are too narrow on real curves).
TRUST_MIN_CHECKS, TRUST_MAX_RMS, WIDEN_MIN_CHECKS = 2, 2.5, 3


def trust(fit, bt: dict) -> tuple[bool, float]:
    """Whether ``fit`` is trusted for a prediction given its backtest ``bt``, and the factor its
    prediction intervals are widened by."""
    n, rms = bt.get("n", 0), bt.get("rms_z", math.inf)
    scale = max(1.0, rms) if n >= WIDEN_MIN_CHECKS else 1.0
    return bool(usable(fit) and n >= TRUST_MIN_CHECKS and rms <= TRUST_MAX_RMS), scale


def choose_law(x: np.ndarray, y: np.ndarray, s: np.ndarray, kinds=("log", "saturating")) -> dict:
    """Fit each candidate law, backtest it, and keep the one that predicted this run's own later
    probes best (mean absolute error; the log-law of Isik et al. on ties). Returns the chosen
    ``kind``, its full ``fit`` and ``backtest``, and every candidate's summary (with its own ``fit``
    and ``backtest``: compare_runs mixes the candidates)."""
    cands = {kind: {"fit": fit_law(kind, x, y, s), "backtest": backtest(kind, x, y, s)} for kind in kinds}

    def score(kind):
        c = cands[kind]
        if not usable(c["fit"]):
            return math.inf
        return c["backtest"]["mean_abs_err"] if c["backtest"].get("n") else 1e6

    best = min(kinds, key=lambda k: (score(k), kinds.index(k)))
    return {"kind": best, **cands[best],
            "candidates": {k: {"usable": usable(c["fit"]), "mae": score(k), **c} for k, c in cands.items()}}


def below_laws(x: np.ndarray, y: np.ndarray, s: np.ndarray, k: int, kinds=("log", "saturating")) -> dict | None:
    """How far (in SDs of prediction and noise) the newest ``k`` probes sit below what each law,
    fitted to the probes before them, predicts: ``{kind: z}`` for their mean and ``{kind_each: z}``
    for the least deviant of them alone, positive when below. None when a law cannot be fitted to the
    earlier probes (fewer than 4, or no finite curve)."""
    if len(x) - k < 4:
        return None
    out = {}
    for kind in kinds:
        fit = fit_law(kind, x[:-k], y[:-k], s[:-k], **HOLDOUT_OPTIONS)
        if not usable(fit):
            return None
        z, _ = holdout_z(fit, x[-k:], y[-k:], s[-k:])
        if not math.isfinite(z):
            return None
        mean, sd = curve_sd(fit, x[-k:])
        each = (mean - y[-k:]) / np.sqrt(sd ** 2 + s[-k:] ** 2)  # each probe's own shortfall
        out[kind] = -z
        out[f"{kind}_each"] = float(np.min(each)) if np.all(np.isfinite(each)) else float("nan")
    return out


def law_support(x: np.ndarray, y: np.ndarray, z_rise: float, z_each: float = 1.0):
    """The laws' backing for a first break signal at look ``t``, as ``replay`` asks for it: how far the
    newest two probes sit below both laws fitted to the probes before them (the smaller of the two),
    provided each of the two is below both laws on its own (by ``z_each`` SDs).
    Only where the earlier probes rose beyond noise (by ``z_rise`` SDs, first three against the three
    before the suffix): a law fitted to a flat, noisy stretch extrapolates a rise the data never had."""
    def support(t: int, sd: np.ndarray) -> float:
        if t < 5:
            return float("nan")
        w0, w1 = 1.0 / sd[:3] ** 2, 1.0 / sd[t - 4:t - 1] ** 2
        m0, m1 = float(np.sum(w0 * y[:3]) / np.sum(w0)), float(np.sum(w1 * y[t - 4:t - 1]) / np.sum(w1))
        if (m1 - m0) / math.sqrt(1.0 / np.sum(w0) + 1.0 / np.sum(w1)) <= z_rise:
            return float("nan")
        b = below_laws(x[:t + 1], y[:t + 1], sd[:t + 1], 2)
        # each of the two probes must be below both laws on its own: one crashed probe is not a break
        if not b or not min(b["log_each"], b["saturating_each"]) > z_each:
            return float("nan")
        return min(b["log"], b["saturating"])

    return support
