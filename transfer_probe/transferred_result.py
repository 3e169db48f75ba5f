"""What :func:`transfer_probe.transferred.data_transferred` returns: per probe point the effective data
and D_T with its interval (:class:`TransferPoint`), per D_f the growth with pre-training
(:class:`Growth`), per task the whole picture (:class:`TaskTransfer`) and per run
(:class:`TransferResult`), each with its text and ``to_dict``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from transfer_probe.jsonable import to_json
from transfer_probe.laws import FitResult
from transfer_probe.text import format_count, format_multiple, format_tokens
from transfer_probe.transferred_baseline import BaselineCurve

REACH = 10.0  # the from-scratch curve places D_E up to this factor past its largest size; beyond, a floor only


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
            return (f"pre-training so far is worth over {format_count(floor)} {what} {at} (x{format_multiple(REACH * self.largest_baseline / self.finetune_size)}+ the "
                    f"fine-tuning data): past {REACH:g}x the largest from-scratch D_f probed "
                    f"({format_count(self.largest_baseline)}) the curve cannot say how much more; probe from "
                    f"scratch at larger D_f")
        band = ("(no interval: CE noise unknown; use repeats >= 2 or a bootstrap)" if math.isnan(self.low)
                else f"[{format_count(self.low)}, {format_count(self.high)}]")
        head = f"pre-training so far is worth ~{format_count(self.transferred)} {what} {band} {at}"
        if self.status == "ossified":
            return (f"{head}: worse than training from scratch (ossification: CE {self.loss:.3g} against "
                    f"{self.baseline_loss:.3g} from scratch)")
        tail = f" (x{format_multiple(self.multiplier)} the fine-tuning data)"
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
            lines.append("    " + "; ".join(f"{format_tokens(p.tokens)} tokens: {format_count(p.transferred)}"
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
