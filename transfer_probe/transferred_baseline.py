"""The from-scratch curve ``L0(D_F)`` of :mod:`transfer_probe.transferred` (step 1 of its method): the
no-pretraining probes' cross-entropy against fine-tuning examples, a power law through 4+ sizes over a
decade, else straight lines in log-log between the points; and how it is read backwards (``D_E``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from transfer_probe.jsonable import to_json
from transfer_probe.laws import FitResult, PowerLaw


def _loglog_invert(log_d: np.ndarray, log_l: np.ndarray, target: np.ndarray) -> np.ndarray:
    """log D where each row's piecewise-linear (log D, log L) curve reaches ``target`` (one per row).

    Rows are made non-increasing first (a from-scratch curve cannot get worse with more data); past
    the ends the end segments extend. A flat end segment never reaches a lower target (``inf``) and
    is above any higher one from D -> 0 (``-inf``)."""
    log_l = np.minimum.accumulate(log_l, axis=1)
    n = log_l.shape[1]
    j = np.clip((log_l >= target[:, None]).sum(axis=1) - 1, 0, n - 2)
    rows = np.arange(log_l.shape[0])
    l0, l1 = log_l[rows, j], log_l[rows, j + 1]
    slope = (l1 - l0) / (log_d[j + 1] - log_d[j])
    with np.errstate(divide="ignore", invalid="ignore"):
        out = log_d[j] + (target - l0) / slope
    flat = ~(slope < 0)
    return np.where(flat, np.where(target < l0, np.inf, np.where(target > l0, -np.inf, log_d[j])), out)


@dataclass
class BaselineCurve:
    """The from-scratch curve ``L0(D_F)`` and how it is read: ``method`` "power_law" (``fit`` holds
    the :class:`FitResult`) or "log_log" (straight lines between the points in log-log), ``why`` says
    why that method."""

    sizes: np.ndarray
    losses: np.ndarray
    sds: np.ndarray
    method: str
    why: str
    fit: FitResult | None = None

    def loss_at(self, d: float) -> float:
        if self.method == "power_law":
            return float(self.fit(d))
        ll = np.minimum.accumulate(np.log(self.losses))
        ld = np.log(self.sizes)
        x = math.log(d)
        j = int(np.clip(np.searchsorted(ld, x) - 1, 0, len(ld) - 2))
        return math.exp(ll[j] + (ll[j + 1] - ll[j]) * (x - ld[j]) / (ld[j + 1] - ld[j]))

    def effective(self, loss: float, sd: float, interval: float, rng: np.random.Generator,
                  n_draws: int) -> tuple[float, float, float]:
        """``D_E`` where the curve reaches ``loss``, with an ``interval`` band (NaN when no noise is known)."""
        if self.method == "power_law":
            return self._effective_power(loss, sd, interval)
        ld, ll = np.log(self.sizes), np.log(self.losses)
        de = float(np.exp(_loglog_invert(ld, ll[None, :], np.array([math.log(loss)]))[0]))
        known = np.isfinite(self.sds).all() and math.isfinite(sd)
        if not known:
            return de, math.nan, math.nan
        # the baseline points and the pre-trained loss drawn together from their noise
        base = self.losses[None, :] + self.sds[None, :] * rng.standard_normal((n_draws, len(self.sizes)))
        tgt = loss + sd * rng.standard_normal(n_draws)
        tiny = 1e-9 * float(np.min(self.losses))
        with np.errstate(over="ignore"):
            draws = np.exp(_loglog_invert(ld, np.log(np.maximum(base, tiny)), np.log(np.maximum(tgt, tiny))))
        q = (1 - interval) / 2
        lo, hi = np.quantile(draws, [q, 1 - q], method="inverted_cdf")
        return de, float(min(lo, de)), float(max(hi, de))

    def _effective_power(self, loss: float, sd: float, interval: float) -> tuple[float, float, float]:
        inv = self.fit.inverse(loss, interval)
        if not inv.reachable:
            return math.inf, math.inf, math.inf
        de = inv.tokens
        if not math.isfinite(sd):
            return de, math.nan, math.nan
        z = float(stats.norm.ppf(0.5 + interval / 2))
        # the curve's own band (parameter uncertainty) and the shift of L_p by its noise, in quadrature
        noisy_lo = self.fit.inverse(loss + z * sd, interval).tokens
        noisy_hi = self.fit.inverse(loss - z * sd, interval).tokens if loss - z * sd > 0 else math.inf
        with np.errstate(divide="ignore"):
            w_lo = math.hypot(math.log(de / inv.low), math.log(de / noisy_lo))
            w_hi = math.hypot(math.log(inv.high / de), math.log(noisy_hi / de))
        return de, de * math.exp(-w_lo), (de * math.exp(w_hi) if math.isfinite(w_hi) else math.inf)

    def to_dict(self) -> dict:
        return to_json({"method": self.method, "why": self.why, "sizes": self.sizes.tolist(),
                        "losses": self.losses.tolist(), "sds": self.sds.tolist(),
                        **({"fit": self.fit.to_dict()} if self.fit is not None else {})}, nonfinite="string")


def baseline_curve(sizes, losses, sds=None) -> BaselineCurve:
    """The from-scratch curve through ``(sizes, losses)`` (``sds``: their noise, NaN when unknown).

    A :class:`PowerLaw` when >= 4 sizes span >= 1 decade and its fit is ok; otherwise log-log lines."""
    d = np.asarray(sizes, float)
    y = np.asarray(losses, float)
    s = np.full(d.shape, np.nan) if sds is None else np.asarray(sds, float)
    if d.shape != y.shape or d.shape != s.shape or d.size < 2:
        raise ValueError(f"the from-scratch curve needs >= 2 (size, loss) points of equal length; got {d.size} sizes, "
                         f"{y.size} losses, {s.size} sds")
    if np.any(~(d > 0)) or np.any(~(y > 0)) or np.unique(d).size != d.size:
        raise ValueError(f"from-scratch sizes must be distinct and > 0 and losses > 0; got sizes {d.tolist()}, "
                         f"losses {y.tolist()}")
    order = np.argsort(d)
    d, y, s = d[order], y[order], s[order]
    decades = math.log10(d[-1] / d[0])
    if d.size >= 4 and decades >= 1.0:
        sigma = s if np.all(np.isfinite(s) & (s > 0)) else None
        fit = PowerLaw().fit(d, y, sigma)
        if fit.ok:
            return BaselineCurve(d, y, s, "power_law", f"{d.size} from-scratch sizes over {decades:.1f} decades: "
                                 f"the power law E + A/D^alpha is fitted through them", fit)
        why = f"the power law E + A/D^alpha fitted to the {d.size} from-scratch sizes is not ok ({fit.why})"
    else:
        why = (f"{d.size} from-scratch sizes over {decades:.1f} decades: too few for the power law E + A/D^alpha "
               f"(>= 4 over >= 1 decade)")
    return BaselineCurve(d, y, s, "log_log", why + "; read as straight lines between them in log-log (a pure power "
                         "law per segment, the end segments extended), which gives too little D_E (too little "
                         "transfer) past the largest size if the true curve flattens toward a floor")
