"""What pre-training is worth for a task, in fine-tuning examples: the effective data transferred
(Hernandez et al. 2021, "Scaling Laws for Transfer").

Records of one run in, a :class:`TransferResult` out; no Trainer, no torch::

    >>> from transfer_probe.store.history import read_history
    >>> from transfer_probe.transferred import data_transferred
    >>> res = data_transferred(read_history("run/transfer_probe/history.jsonl"))   # doctest: +SKIP
    >>> print(res)                                                                   # doctest: +SKIP
    >>> p = res.tasks["en-fr"].latest(64)                                            # doctest: +SKIP
    >>> p.transferred, p.low, p.high, p.multiplier                                   # doctest: +SKIP

The method (docs/data_transferred.md has the formulas, the check against the paper's text -> python
fit and the limits):

1. **From-scratch curve** ``L0(D_F)``: the no-pretraining probes (``pretrained: false``, one per
   fine-tuning size) give downstream cross-entropy against fine-tuning examples. With >= 4 sizes over
   >= 1 decade a :class:`~transfer_probe.laws.PowerLaw` ``E + A / D**alpha`` is fitted through them;
   with 2-3 sizes (the usual case: a 3-parameter law cannot be fitted to 2 points) the curve is the
   straight line in log-log between the points (a pure power law per segment), extended past both
   ends by its end segments.
2. **Effective data** ``D_E = L0^-1(L_p)``: the fine-tuning examples a from-scratch model would need
   to reach the pre-trained probe's CE ``L_p``; ``D_T = D_E - D_F`` is what pre-training is worth, and
   ``D_E / D_F = (D_F + D_T) / D_F`` the data multiplier.
3. **Interval**: the CE noise of every point (recorded: repeats / bootstrap, pooled and floored as the
   verdicts do; otherwise the scatter along pre-training) is propagated by Monte Carlo through the
   log-log curve (baseline points and ``L_p`` drawn together), or, for the power law, the fit's own
   inverse band and the shift of ``L_p`` by its noise are combined in quadrature in log space.
4. **Ossification**: ``D_T < 0``: the pre-trained model fine-tuned on ``D_F`` examples is worse than
   the from-scratch one (``status`` "ossified" when the whole interval is below 0).
5. **Growth with pre-training**: per ``D_F``, ``log D_E`` against ``log D_p`` (weighted least
   squares): the exponent over the whole run, and over the newest probes whether ``D_E`` (hence the
   multiplier) is still growing, flat or declining, or there is not enough evidence to say.
6. **Across D_F**: :class:`~transfer_probe.laws.TransferLaw` ``D_T = k D_F**alpha N**beta`` at the
   newest probe point (one model size: beta held at the paper's 0.38, k conditional on it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from transfer_probe.diagnose.noise import excess_scatter, floor_errors, pooled_sem, robust_sd
from transfer_probe.jsonable import to_json
from transfer_probe.laws import FitResult, PowerLaw, TransferLaw
from transfer_probe.store.history import aggregate, probe_records
from transfer_probe.text import format_tokens

__all__ = ["data_transferred", "fit_across_runs", "TransferResult", "TaskTransfer", "TransferPoint", "Growth",
           "BaselineCurve", "baseline_curve", "format_count"]

REACH = 10.0  # the from-scratch curve places D_E up to this factor past its largest size; beyond, a floor only
GROWTH_WINDOW = 5  # newest probe points that say whether D_E is still growing
FLAT_SLOPE = 0.1  # |d log D_E / d log D_p| below this (D_E moves < 26% per 10x tokens) is "flat"
CE_RESOLUTION = 1e-4  # nats: no CE is more precise than this (as the verdicts floor it)


def format_count(x: float) -> str:
    """Examples as a person reads them: 64, 850, 12k, 1.2M, 3.4B; ``inf``; negative counts keep their sign.

        >>> format_count(12345), format_count(850), format_count(-31.2), format_count(2.5e6)
        ('12k', '850', '-31', '2.5M')
    """
    if x is None or not math.isfinite(float(x)):
        return "?" if x is None or math.isnan(float(x)) else ("inf" if x > 0 else "-inf")
    a = abs(float(x))
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if a >= div * 0.9995:
            return f"{x / div:.2g}{suffix}" if a < 100 * div else f"{x / div:.0f}{suffix}"
    return f"{x:.0f}" if a >= 10 else f"{x:.2g}"


def _multiple(m: float) -> str:
    """A data multiplier: 1.3, 31, 450, 1.3e4 (the token format beyond 10,000)."""
    if not math.isfinite(m) or m >= 1e4:
        return format_tokens(m)
    return f"{m:.2g}" if m < 100 else f"{m:.0f}"


# --------------------------------------------------------------------------------------------------
# the from-scratch curve


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
        return _json({"method": self.method, "why": self.why, "sizes": self.sizes.tolist(),
                                 "losses": self.losses.tolist(), "sds": self.sds.tolist(),
                                 **({"fit": self.fit.to_dict()} if self.fit is not None else {})})


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


# --------------------------------------------------------------------------------------------------
# results


@dataclass
class TransferPoint:
    """One pre-trained probe point converted to data: ``effective`` D_E, ``transferred`` D_T = D_E - D_F
    with ``low`` / ``high`` (NaN: the CE noise is unknown), ``multiplier`` D_E / D_F with its own
    bounds, ``ossified`` (D_T < 0: worse than from scratch) and ``status``: "transfer" (the interval is
    above 0), "ossified" (below 0), "unclear" (it holds 0), "beyond_floor" (the pre-trained CE is below
    the from-scratch power law's floor E: no amount of from-scratch data reaches it)."""

    task: str
    finetune_size: float
    tokens: float
    step: int | None
    loss: float
    loss_sd: float
    baseline_loss: float
    effective: float
    effective_low: float
    effective_high: float
    extrapolated: bool
    interval: float = 0.9
    largest_baseline: float = math.inf  # the largest from-scratch D_F probed

    @property
    def transferred(self) -> float:
        return self.effective - self.finetune_size

    @property
    def low(self) -> float:
        return self.effective_low - self.finetune_size

    @property
    def high(self) -> float:
        return self.effective_high - self.finetune_size

    @property
    def multiplier(self) -> float:
        return self.effective / self.finetune_size

    @property
    def multiplier_low(self) -> float:
        return self.effective_low / self.finetune_size

    @property
    def multiplier_high(self) -> float:
        return self.effective_high / self.finetune_size

    @property
    def ossified(self) -> bool:
        return bool(self.transferred < 0)

    @property
    def status(self) -> str:
        if math.isinf(self.effective):
            return "beyond_floor"
        if math.isnan(self.low):
            return "ossified" if self.ossified else "transfer"
        return "transfer" if self.low > 0 else "ossified" if self.high < 0 else "unclear"

    def text(self, unit: str = "examples") -> str:
        """One readable sentence, e.g. "pre-training so far is worth ~12k en-fr pairs [8k, 17k] at D_f=64 (x190 the fine-tuning data)"."""
        what = f"{self.task} {unit}"
        at = f"at D_f={format_count(self.finetune_size)}"
        if self.status == "beyond_floor":
            return (f"pre-training so far is worth more {what} than any amount reaches from scratch {at}: CE "
                    f"{self.loss:.3g} is below the from-scratch curve's floor")
        if self.effective > REACH * self.largest_baseline:
            floor = REACH * self.largest_baseline - self.finetune_size
            return (f"pre-training so far is worth over {format_count(floor)} {what} {at} (x{_multiple(REACH * self.largest_baseline / self.finetune_size)}+ the "
                    f"fine-tuning data): past {REACH:g}x the largest from-scratch D_f probed "
                    f"({format_count(self.largest_baseline)}) the curve cannot say how much more; probe from "
                    f"scratch at larger D_f")
        band = ("(no interval: CE noise unknown; use repeats >= 2 or a bootstrap)" if math.isnan(self.low)
                else f"[{format_count(self.low)}, {format_count(self.high)}]")
        head = f"pre-training so far is worth ~{format_count(self.transferred)} {what} {band} {at}"
        if self.status == "ossified":
            return (f"{head}: worse than training from scratch (ossification: CE {self.loss:.3g} against "
                    f"{self.baseline_loss:.3g} from scratch)")
        tail = f" (x{_multiple(self.multiplier)} the fine-tuning data)"
        if self.status == "unclear":
            tail += ": not distinguishable from training from scratch"
        return head + tail + (" (read past the from-scratch sizes probed: a rough figure)" if self.extrapolated else "")

    def to_dict(self) -> dict:
        return _json({
            "task": self.task, "finetune_size": self.finetune_size, "tokens": self.tokens, "step": self.step,
            "loss": self.loss, "loss_sd": self.loss_sd, "baseline_loss": self.baseline_loss,
            "effective": self.effective, "effective_low": self.effective_low, "effective_high": self.effective_high,
            "transferred": self.transferred, "low": self.low, "high": self.high, "multiplier": self.multiplier,
            "multiplier_low": self.multiplier_low, "multiplier_high": self.multiplier_high,
            "ossified": self.ossified, "status": self.status, "extrapolated": self.extrapolated,
            "largest_baseline": self.largest_baseline, "interval": self.interval})


@dataclass
class Growth:
    """How ``D_E`` (hence D_T and the multiplier, D_F being fixed) grows with pre-training tokens D_p.

    ``exponent`` (and ``exponent_low`` / ``_high``): the slope of log D_E against log D_p over all
    points; ``slope`` / ``low`` / ``high``: over the newest ``window`` points, which decide ``status``:
    "growing" (interval above 0), "declining" (below 0), "flat" (inside +-FLAT_SLOPE) or
    "insufficient_evidence" (``why`` says what is missing)."""

    finetune_size: float
    n_points: int
    window: int = 0
    slope: float = math.nan
    low: float = math.nan
    high: float = math.nan
    exponent: float = math.nan
    exponent_low: float = math.nan
    exponent_high: float = math.nan
    status: str = "insufficient_evidence"
    why: str = ""

    def text(self) -> str:
        if self.status == "insufficient_evidence":
            return f"growth with pre-training: insufficient evidence ({self.why})"
        verb = {"growing": "still growing", "flat": "flat", "declining": "declining"}[self.status]
        return (f"D_E {verb}: ~D_p^{self.slope:.2f} [{self.low:.2f}, {self.high:.2f}] over the last {self.window} "
                f"probes")

    def to_dict(self) -> dict:
        return _json(dict(self.__dict__))


@dataclass
class TaskTransfer:
    """One task of one run: its from-scratch ``baseline`` curve, the converted ``points`` (all
    pre-trained probe points, every D_F), ``growth`` per D_F, the across-D_F ``law`` fit at the newest
    point, ``noise`` (how the CE noise was obtained). ``why`` is set (and the rest empty) when the task
    cannot be converted (fewer than 2 from-scratch sizes)."""

    task: str
    n_params: float = math.nan
    baseline: BaselineCurve | None = None
    points: list[TransferPoint] = field(default_factory=list)
    growth: dict[float, Growth] = field(default_factory=dict)
    law: FitResult | None = None
    noise: str = ""
    why: str = ""

    @property
    def ok(self) -> bool:
        return not self.why

    def latest(self, finetune_size: float) -> TransferPoint | None:
        pts = [p for p in self.points if p.finetune_size == float(finetune_size)]
        return max(pts, key=lambda p: p.tokens) if pts else None

    def line(self, finetune_size: float, unit: str = "examples") -> str:
        """The log line's text for the newest point at ``finetune_size`` (empty when there is none)."""
        p = self.latest(finetune_size)
        if p is None:
            return ""
        g = self.growth.get(float(finetune_size))
        return p.text(unit) + (f"; {g.text()}" if g is not None else "")

    def to_dict(self) -> dict:
        return _json({
            "task": self.task, "ok": self.ok, "why": self.why, "n_params": self.n_params, "noise": self.noise,
            "baseline": self.baseline.to_dict() if self.baseline is not None else None,
            "points": [p.to_dict() for p in self.points],
            "growth": {str(_int(k)): g.to_dict() for k, g in self.growth.items()},
            "law": self.law.to_dict() if self.law is not None else None})

    def __str__(self) -> str:
        if not self.ok:
            return f"{self.task}: data transferred not computed: {self.why}"
        lines = [f"{self.task}: data transferred by pre-training (N = {self.n_params:.3g} parameters)",
                 f"  from-scratch curve: {self.baseline.method} ({self.baseline.why})", f"  CE noise: {self.noise}"]
        for df in sorted(self.growth):
            lines.append(f"  D_f={format_count(df)}: {self.line(df)}")
            lines.append("    " + "; ".join(f"{format_count(p.tokens)} tokens: {format_count(p.transferred)}"
                                            for p in sorted(self.points, key=lambda p: p.tokens)
                                            if p.finetune_size == df))
        if self.law is not None:
            state = "ok" if self.law.ok else f"not ok: {self.law.why}"
            pars = ", ".join(f"{k} {v:.3g}" for k, v in self.law.params.items())
            lines.append(f"  across D_f: D_T = k D_F^alpha N^beta: {pars} ({state})")
            lines += [f"    note: {n}" for n in self.law.notes]
        return "\n".join(lines)


@dataclass
class TransferResult:
    """Per task, a :class:`TaskTransfer`; ``settings`` records what produced the numbers."""

    tasks: dict[str, TaskTransfer]
    settings: dict[str, Any]

    def to_dict(self) -> dict:
        return {"kind": "data_transferred", "settings": _json(self.settings),
                "tasks": {k: t.to_dict() for k, t in self.tasks.items()}}

    def __str__(self) -> str:
        return "\n".join(str(t) for t in self.tasks.values()) or "no task with probe records"


def _json(v: Any) -> Any:
    """JSON values in FitResult.to_dict's convention: inf / nan as the strings "inf", "-inf", "nan"."""
    return to_json(v, nonfinite="string")


def _int(v: float) -> Any:
    return int(v) if float(v).is_integer() else v


# --------------------------------------------------------------------------------------------------
# the analysis


def data_transferred(records: Iterable[Mapping[str, Any]], *, metric: str = "cross_entropy", interval: float = 0.9,
                     task: str | None = None, run_id: Any = None, n_draws: int = 2000,
                     seed: int = 0) -> TransferResult:
    """Effective data transferred for every task of one run's history records (see the module docstring).

    ``records``: history records (probe records are picked; verdicts and other kinds are skipped) of one
    run, or of several with ``run_id`` naming one. ``metric``: the downstream loss (lower is better).
    ``interval``: level of the intervals. ``n_draws`` / ``seed``: the Monte Carlo of the log-log curve.
    A task without no-pretraining probes at >= 2 fine-tuning sizes gets a :class:`TaskTransfer` whose
    ``why`` says so. Raises ``ValueError`` for several runs without ``run_id`` or bad settings.
    """
    if not 0 < interval < 1:
        raise ValueError(f"interval must be in (0, 1), got {interval!r}")
    if not isinstance(n_draws, int) or n_draws < 100:
        raise ValueError(f"n_draws must be an integer >= 100 (Monte Carlo draws), got {n_draws!r}")
    probes = probe_records(records)
    if run_id is not None:
        probes = [r for r in probes if str(r.get("run_id")) == str(run_id)]
    runs = sorted({str(r.get("run_id")) for r in probes})
    if len(runs) > 1:
        raise ValueError(f"the records hold {len(runs)} runs ({', '.join(runs)}): the data transferred is per run; "
                         f"pass run_id= to pick one (several model sizes: fit_across_runs)")
    if task is not None:
        probes = [r for r in probes if str(r.get("task")) == str(task)]
    out = {}
    for name in sorted({str(r.get("task")) for r in probes}):
        mine = [r for r in probes if str(r.get("task")) == name]
        out[name] = _task_transfer(name, mine, metric, interval, seed, n_draws)
    settings = {"metric": metric, "interval": interval, "n_draws": n_draws, "seed": seed, "run_id": runs[0] if runs
                else None, "growth_window": GROWTH_WINDOW, "flat_slope": FLAT_SLOPE}
    return TransferResult(out, settings)


def _n_params(recs: list[Mapping[str, Any]]) -> float:
    for r in recs:
        p = r.get("params")
        v = p.get("non_embedding", p.get("total")) if isinstance(p, Mapping) else p
        try:
            if v is not None and math.isfinite(float(v)) and float(v) > 0:
                return float(v)
        except (TypeError, ValueError):
            continue
    return math.nan


def _task_transfer(name: str, recs: list[dict], metric: str, interval: float, seed: int, n_draws: int) -> TaskTransfer:
    pts = [p for p in aggregate(recs, metrics=[metric]) if metric in p["mean"]]
    base = {}
    for p in pts:
        if not p["pretrained"]:
            base.setdefault(float(p["finetune_size"]), p)  # one from-scratch point per D_F
    pre = [p for p in pts if p["pretrained"] and p["tokens"] > 0 and float(p["finetune_size"]) > 0]
    n_params = _n_params(recs)
    if len(base) < 2:
        return TaskTransfer(name, n_params, why=f"needs no-pretraining probes (pretrained: false) at >= 2 fine-tuning "
                            f"sizes to trace the from-scratch curve; found {len(base)} (give the task >= 2 "
                            f"finetune_sizes and keep baseline=True)")
    sd, noise = _noise(pre, list(base.values()), metric)
    sizes = sorted(base)
    curve = baseline_curve(sizes, [base[d]["mean"][metric] for d in sizes], [sd[id(base[d])] for d in sizes])
    points = []
    for p in sorted(pre, key=lambda p: (p["tokens"], float(p["finetune_size"]))):
        df = float(p["finetune_size"])
        loss = float(p["mean"][metric])
        # draws seeded per point: a point's interval does not depend on which other points are there
        rng = np.random.default_rng([seed, int(p["tokens"]), int(df)])
        de, lo, hi = curve.effective(loss, sd[id(p)], interval, rng, n_draws)
        b = base[df]["mean"][metric] if df in base else curve.loss_at(df)
        points.append(TransferPoint(name, df, float(p["tokens"]), p.get("step"), loss, sd[id(p)], float(b), de, lo, hi,
                                    bool(de > sizes[-1] or de < sizes[0]), interval, sizes[-1]))
    growth = {df: _growth([q for q in points if q.finetune_size == df], df, interval)
              for df in sorted({q.finetune_size for q in points})}
    return TaskTransfer(name, n_params, curve, points, growth, _law_at_newest(points, n_params, interval), noise)


def _noise(pre: list[dict], base: list[dict], metric: str) -> tuple[dict[int, float], str]:
    """CE noise sd per point (keyed by id): recorded errors pooled and floored as the verdicts do, scaled
    up per D_F where the pre-trained curve scatters more than they say; else the scatter along
    pre-training; else NaN."""
    allp = pre + base
    s = floor_errors(pooled_sem(allp, metric), CE_RESOLUTION)
    recorded = bool(np.any(np.isfinite(s)))
    if recorded:  # a point without its own error (one repeat, no bootstrap) is measured like the others
        s = np.where(np.isfinite(s), s, float(np.median(s[np.isfinite(s)])))
    sd = {id(p): float(v) for p, v in zip(allp, s, strict=True)}
    how = []
    for df in sorted({float(p["finetune_size"]) for p in pre}):
        series = sorted((p for p in pre if float(p["finetune_size"]) == df), key=lambda p: p["tokens"])
        y = np.array([p["mean"][metric] for p in series])
        mates = series + [b for b in base if float(b["finetune_size"]) == df]
        if recorded:
            ys = np.array([sd[id(p)] for p in series])
            k = float(excess_scatter(y, ys)) if np.all(np.isfinite(ys)) else 1.0
            if k > 1.0:
                how.append(f"x{k:.2g} at D_f={format_count(df)} for scatter beyond them")
                for p in mates:
                    sd[id(p)] *= k
            continue
        r = float(robust_sd(y))
        if math.isfinite(r):
            how.append(f"{r:.3g} at D_f={format_count(df)}")
            for p in mates:
                sd[id(p)] = max(r, CE_RESOLUTION)
    if recorded:
        return sd, "recorded (repeats / bootstrap), pooled" + (": " + ", ".join(how) if how else "")
    if how:
        return sd, ("estimated from the scatter of the pre-trained CE along pre-training (no repeats or bootstrap "
                    "recorded): " + ", ".join(how))
    return sd, ("unknown: one fine-tune per point, no bootstrap, too few probes to read it off the curve: no "
                "intervals (use repeats >= 2 or FinetuneConfig(bootstrap=200))")


def _wls(x: np.ndarray, y: np.ndarray, s: np.ndarray) -> tuple[float, float, int]:
    """Slope of y on x and its standard error (weighted by 1/s when every s is known; the scale is
    the larger of the errors and the scatter), and the degrees of freedom."""
    dof = len(x) - 2
    if dof < 1 or np.ptp(x) == 0:
        return math.nan, math.nan, max(dof, 0)
    weighted = bool(np.all(np.isfinite(s) & (s > 0)))
    w = 1.0 / s if weighted else np.ones_like(x)
    coef, cov = np.polyfit(x, y, 1, w=w, cov="unscaled")
    chi2 = float(np.sum((w * (y - np.polyval(coef, x))) ** 2)) / dof
    scale = max(chi2, 1.0) if weighted else chi2
    return float(coef[0]), math.sqrt(max(float(cov[0, 0]) * scale, 0.0)), dof


def _growth(points: list[TransferPoint], df: float, interval: float) -> Growth:
    finite = [p for p in points if 0 < p.effective < math.inf]
    # past REACH x the largest from-scratch size the curve gives no number (only a lower bound): a
    # slope through such points is a slope of the extrapolation, not of the data (D_p^192 was seen)
    use = sorted((p for p in finite if p.effective <= REACH * p.largest_baseline), key=lambda p: p.tokens)
    g = Growth(df, len(use))
    if len(use) < 3:
        past = len(finite) - len(use)
        g.why = (f"{len(use)} probe point(s) with a D_E the from-scratch curve can read at D_f={format_count(df)}"
                 f"{f' ({past} past its reach)' if past else ''}; the trend needs >= 3")
        return g
    z = float(stats.norm.ppf(0.5 + interval / 2))
    x = np.log10([p.tokens for p in use])
    y = np.log10([p.effective for p in use])
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.array([(math.log10(p.effective_high) - math.log10(p.effective_low)) / (2 * z)
                      if p.effective_low > 0 else math.nan for p in use])
    s = np.where(np.isfinite(s), s, np.nan)
    e, se_e, dof_e = _wls(x, y, s)
    if math.isfinite(se_e):
        t = float(stats.t.ppf(0.5 + interval / 2, dof_e))
        g.exponent, g.exponent_low, g.exponent_high = e, e - t * se_e, e + t * se_e
    g.window = min(GROWTH_WINDOW, len(use))
    b, se, dof = _wls(x[-g.window:], y[-g.window:], s[-g.window:])
    if not math.isfinite(se):
        g.why = "the newest points do not determine a slope (same tokens?)"
        return g
    t = float(stats.t.ppf(0.5 + interval / 2, dof))
    g.slope, g.low, g.high = b, b - t * se, b + t * se
    if g.low > 0:
        g.status = "growing"
    elif g.high < 0:
        g.status = "declining"
    elif -FLAT_SLOPE < g.low and g.high < FLAT_SLOPE:
        g.status = "flat"
    else:
        g.why = (f"slope {b:.2f} [{g.low:.2f}, {g.high:.2f}] over the last {g.window} probes holds both growth and "
                 f"no growth")
    return g


def _law_at_newest(points: list[TransferPoint], n_params: float, interval: float) -> FitResult | None:
    """TransferLaw across D_F at each D_F's newest point with positive D_T (beta held: one model size)."""
    newest = {}
    for p in points:
        if p.finetune_size not in newest or p.tokens > newest[p.finetune_size].tokens:
            newest[p.finetune_size] = p
    use = [p for p in newest.values() if 0 < p.transferred < math.inf]
    if not use or not math.isfinite(n_params):
        return None
    z = float(stats.norm.ppf(0.5 + interval / 2))
    dt = np.array([p.transferred for p in use])
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.array([dt[i] * (math.log(p.high) - math.log(p.low)) / (2 * z) if p.low > 0 else math.nan
                      for i, p in enumerate(use)])
    sigma = s if np.all(np.isfinite(s) & (s > 0)) else None
    return TransferLaw().fit((np.array([p.finetune_size for p in use]), np.full(len(use), n_params)), dt, sigma)


def fit_across_runs(results: Iterable[TransferResult], task: str, **options: Any) -> FitResult:
    """``D_T = k D_F**alpha N**beta`` over several runs of different model sizes (Hernandez et al.'s fit):
    each run's newest point per D_F with positive D_T; ``options`` go to :class:`TransferLaw`.

    Raises ``ValueError`` when no run has a converted point for ``task``."""
    df, n, dt = [], [], []
    for res in results:
        t = res.tasks.get(task)
        if t is None or not t.ok:
            continue
        for size in sorted(t.growth):
            p = t.latest(size)
            if p is not None and 0 < p.transferred < math.inf and math.isfinite(t.n_params):
                df.append(p.finetune_size)
                n.append(t.n_params)
                dt.append(p.transferred)
    if not dt:
        raise ValueError(f"no run has a positive data transferred for task {task!r}")
    return TransferLaw(**options).fit((np.array(df), np.array(n)), np.array(dt))
