"""What a compute-optimal frontier fit gives back: :class:`FrontierResult` (the exponents a, b of
N_opt ~ C^a and D_opt ~ C^b with intervals, the frontier points, what was excluded and why, a report
beside Hoffmann et al.'s values) and :class:`Placement` (a run against D_opt for its compute; a run's
N and tokens so far read from its history records by :func:`run_size_and_tokens`)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from transfer_probe.laws.result import _jsonable, _nested_jsonable
from transfer_probe.laws.rows import _num

# Hoffmann et al. 2022, Table 2: estimate (10th, 90th percentile)
PAPER = {
    1: {"a": (0.50, 0.488, 0.502), "b": (0.50, 0.501, 0.512)},
    2: {"a": (0.49, 0.462, 0.534), "b": (0.51, 0.483, 0.529)},
    3: {"a": (0.46, 0.454, 0.455), "b": (0.54, 0.542, 0.543)},
}

_METHOD = {1: "envelope of training curves", 2: "IsoFLOP profiles", 3: "parametric law L(N, D)"}


# --------------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """A run placed on the frontier: its size and tokens against the compute-optimal ones for its compute.

    ``tokens_ratio = tokens / D_opt(C)`` (equal to ``N_opt / n`` since both spend ``C = 6 N D``) with its
    interval; below 1 the run has seen fewer tokens (and is larger) than the compute-optimal allocation
    of the same compute. ``tokens_optimal`` is the token count at which a model of this size becomes
    compute-optimal (``inf`` never within the law), with its interval. ``n_basis`` says what ``n``
    counts when it was read from a history ("non-embedding parameters"); empty when given by hand.
    """

    n: float
    tokens: float
    compute: float
    n_opt: tuple[float, float, float]
    d_opt: tuple[float, float, float]
    tokens_ratio: tuple[float, float, float]
    tokens_optimal: tuple[float, float, float]
    approach: int
    interval: float
    extrapolated: bool
    n_basis: str = ""

    @property
    def text(self) -> str:
        r, lo, hi = self.tokens_ratio
        t, tlo, thi = self.tokens_optimal
        where = "under" if hi < 1 else "over" if lo > 1 else "about at"
        basis = f" {self.n_basis}" if self.n_basis else ""
        line = (f"your run (N={self.n:.3g}{basis}, {self.tokens:.3g} tokens, C={self.compute:.3g} FLOPs) is at "
                f"{r:.2g}x D_opt for its compute [{lo:.2g}x, {hi:.2g}x] ({where} the tokens of the compute-optimal "
                f"allocation, approach {self.approach}); the optimal size for this compute is {self.n_opt[0]:.3g} "
                f"[{self.n_opt[1]:.3g}, {self.n_opt[2]:.3g}]; a model of this size is compute-optimal at "
                f"{t:.3g} tokens [{tlo:.3g}, {thi:.3g}] ({self.interval:.0%} intervals)")
        if self.extrapolated:
            line += "; note: this compute lies outside the frontier's fitted range (extrapolated)"
        return line

    def to_dict(self) -> dict:
        return {k: _nested_jsonable(getattr(self, k)) for k in
                ("n", "tokens", "compute", "n_opt", "d_opt", "tokens_ratio", "tokens_optimal", "approach",
                 "interval", "extrapolated", "n_basis")} | {"text": self.text}


@dataclass
class FrontierResult:
    """The compute-optimal frontier ``N_opt = k_N C**a``, ``D_opt = k_D C**b`` from one approach.

    Attributes: ``approach`` (1, 2, 3) and ``method``; ``a``, ``b`` and their ``a_interval``,
    ``b_interval`` at level ``interval``; ``params`` / ``stderr`` (``a``, ``b``, ``log_kN``, ``log_kD``;
    the standard errors are bootstrap standard deviations); ``points`` (the frontier points the line was
    fitted to: one dict per budget or per size switch), ``excluded`` (budgets / switches left out, each
    with ``why``), ``notes``, ``compute_range``, ``settings`` (everything that changes the numbers),
    ``ok`` / ``why`` (False when most bootstrap resamples could not be fitted, so the interval is not
    to be trusted), and ``envelope`` (approach 1: the envelope on its grid, for plotting).

    Ask it: :meth:`n_opt`, :meth:`d_opt` (``(mean, low, high)``), :meth:`place`, :meth:`report`,
    :meth:`to_dict`.
    """

    approach: int
    a: float
    a_interval: tuple[float, float]
    b: float
    b_interval: tuple[float, float]
    params: dict[str, float]
    stderr: dict[str, float]
    interval: float
    points: list[dict]
    compute_range: tuple[float, float]
    excluded: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    ok: bool = True
    why: str = ""
    envelope: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _boot: np.ndarray = field(default=None, repr=False)  # (B, 4): a, log_kN, b, log_kD

    @property
    def method(self) -> str:
        return _METHOD[self.approach]

    def _line(self, compute, which: int, interval: float | None):
        c = np.asarray(compute, dtype=float)
        if np.any(~(c > 0)):
            raise ValueError(f"compute must be positive FLOPs, got {compute!r}")
        lc = np.log(c)
        slope, icpt = (self.params["a"], self.params["log_kN"]) if which == 0 else (self.params["b"], self.params["log_kD"])
        mean = np.exp(icpt + slope * lc)
        level = self.interval if interval is None else interval
        if self._boot is not None and len(self._boot):
            s = self._boot[:, 2 * which + 1, None] + self._boot[:, 2 * which, None] * np.atleast_1d(lc)[None, :]
            lo, hi = np.exp(np.nanquantile(s, [(1 - level) / 2, (1 + level) / 2], axis=0))
        else:
            lo = hi = np.full(np.atleast_1d(lc).shape, np.nan)
        if c.ndim == 0:
            return float(mean), float(lo[0]), float(hi[0])
        return mean, lo, hi

    def n_opt(self, compute, interval: float | None = None):
        """Compute-optimal model size at ``compute`` FLOPs: ``(mean, low, high)`` (bootstrap interval)."""
        return self._line(compute, 0, interval)

    def d_opt(self, compute, interval: float | None = None):
        """Compute-optimal training tokens at ``compute`` FLOPs: ``(mean, low, high)``."""
        return self._line(compute, 1, interval)

    def place(self, n: float, tokens: float, compute: float | None = None, *, n_basis: str = "") -> Placement:
        """Place a run of ``n`` parameters that has seen ``tokens`` tokens (so far) on the frontier.

        ``compute`` defaults to ``6 n tokens``. See :class:`Placement`; ``.text`` reads e.g. "your run
        ... is at 0.4x D_opt for its compute [0.3x, 0.5x]". ``n_basis`` (what ``n`` counts) goes into it.
        """
        n, tokens = _num(n), _num(tokens)
        if not (n > 0 and tokens > 0):
            raise ValueError(f"place() needs a positive model size and token count, got n={n!r}, tokens={tokens!r}")
        c = 6.0 * n * tokens if compute is None else _num(compute)
        if not c > 0:
            raise ValueError(f"compute must be positive FLOPs, got {compute!r}")
        n_opt, d_opt = self.n_opt(c), self.d_opt(c)
        ratio = (tokens / d_opt[0], tokens / d_opt[2], tokens / d_opt[1])
        return Placement(n, tokens, c, n_opt, d_opt, ratio, self._tokens_optimal(n), self.approach, self.interval,
                         not self.compute_range[0] <= c <= self.compute_range[1], n_basis)

    def place_run(self, records: Iterable[Mapping[str, Any]]) -> Placement:
        """Place one run from its history records (:func:`run_size_and_tokens`: N from ``params``,
        tokens the newest successful probe's)."""
        n, tokens, basis = run_size_and_tokens(records)
        return self.place(n, tokens, n_basis=basis)

    def _tokens_optimal(self, n: float) -> tuple[float, float, float]:
        # C* where N_opt(C*) = n, then D* = C* / (6 n): the run length at which this size is optimal
        def one(a, icpt):
            return math.exp((math.log(n) - icpt) / a) / (6 * n) if a > 0 else math.inf

        mean = one(self.params["a"], self.params["log_kN"])
        if self._boot is None or not len(self._boot):
            return mean, math.nan, math.nan
        with np.errstate(all="ignore"):
            s = np.where(self._boot[:, 0] > 0, (math.log(n) - self._boot[:, 1]) / self._boot[:, 0], np.inf)
            lo, hi = np.exp(np.nanquantile(s, [(1 - self.interval) / 2, (1 + self.interval) / 2])) / (6 * n)
        return mean, float(lo), float(hi)

    # -------------------------------------------------------------------- reporting
    def to_dict(self) -> dict:
        """Plain JSON-able dict (inf / nan as strings); ``envelope`` is left out (plot it from the object)."""
        return {
            "approach": self.approach,
            "method": self.method,
            "formula": "N_opt = k_N * C**a, D_opt = k_D * C**b",
            "ok": bool(self.ok),
            "why": self.why,
            "a": _jsonable(self.a),
            "a_interval": _nested_jsonable(self.a_interval),
            "b": _jsonable(self.b),
            "b_interval": _nested_jsonable(self.b_interval),
            "interval": self.interval,
            "params": _nested_jsonable(self.params),
            "stderr": _nested_jsonable(self.stderr),
            "compute_range": _nested_jsonable(self.compute_range),
            "paper": {k: list(v) for k, v in PAPER[self.approach].items()},
            "points": _nested_jsonable(self.points),
            "excluded": _nested_jsonable(self.excluded),
            "notes": list(self.notes),
            "settings": _nested_jsonable(self.settings),
        }

    def report(self) -> str:
        """A readable report in the style of ``lmfit.fit_report``."""
        lo, hi = self.compute_range
        lines = [f"[[Compute-optimal frontier: approach {self.approach}, {self.method}]] N_opt = k_N * C**a, "
                 f"D_opt = k_D * C**b",
                 f"    ok:          {'yes' if self.ok else 'NO: ' + self.why}",
                 f"    points:      {len(self.points)} used, {len(self.excluded)} excluded",
                 f"    compute:     {lo:.3g} to {hi:.3g} FLOPs ({math.log10(hi / lo):.2f} decades)",
                 f"    uncertainty: {_describe_uncertainty(self)}"]
        lines += [f"    excluded:    {e['why']}" for e in self.excluded]
        lines += [f"    note:        {n}" for n in self.notes]
        lines.append(f"[[Variables]] ({self.interval:.0%} interval; Hoffmann et al. 2022 in parentheses)")
        for k in ("a", "b"):
            v, (ilo, ihi), p = getattr(self, k), getattr(self, f"{k}_interval"), PAPER[self.approach][k]
            lines.append(f"    {k}:       {v:.4f} [{ilo:.4f}, {ihi:.4f}] +/- {self.stderr[k]:.3g}   "
                         f"(paper {p[0]:.2f} [{p[1]:.3f}, {p[2]:.3f}])")
        for k in ("log_kN", "log_kD"):
            lines.append(f"    {k}:  {self.params[k]:.4g} +/- {self.stderr[k]:.3g}")
        if self.points:
            lines.append("[[Points]]")
            lines.append(f"    {'C':>10}  {'N_opt':>10}  {'D_opt':>10}  basis")
            for p in self.points:
                lines.append(f"    {p['compute']:10.3g}  {p['n_opt']:10.3g}  {p['d_opt']:10.3g}  {p.get('basis', '')}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()


def run_size_and_tokens(records: Iterable[Mapping[str, Any]]) -> tuple[float, float, str]:
    """``(N, tokens so far, what N counts)`` of one run from its probe records (history records or the
    report's merged points): N from ``params``, non-embedding as the frontier tables count it (Kaplan,
    Hoffmann), the total only when nothing else is recorded; tokens the newest successful probe's of the
    pre-trained model. ``ValueError`` when the records hold several runs, no such probe, or no size."""
    probes = [r for r in records if r.get("kind", "probe") == "probe" and r.get("status", "ok") == "ok"
              and r.get("pretrained", True) and _num(r.get("tokens")) > 0]
    runs = sorted({str(r["run_id"]) for r in probes if r.get("run_id") is not None})
    if len(runs) > 1:
        raise ValueError(f"the records hold {len(runs)} runs ({', '.join(runs)}): place one run at a time")
    if not probes:
        raise ValueError("no successful probe of the pre-trained model with a token count: nothing to place yet")
    probes.sort(key=lambda r: _num(r.get("tokens")), reverse=True)
    for r in probes:  # the newest probe's size, else the newest that records one
        n, basis = _recorded_size(r.get("params"))
        if n > 0:
            return n, _num(probes[0]["tokens"]), basis
    raise ValueError("the probe records hold no model size ('params'); give the run's N and tokens instead")


def _recorded_size(p: Any) -> tuple[float, str]:
    if isinstance(p, Mapping):
        ne, total = _num(p.get("non_embedding")), _num(p.get("total"))
        if ne > 0:
            return ne, "non-embedding parameters"
        return (total, "total parameters (no non-embedding count recorded)") if total > 0 else (math.nan, "")
    v = _num(p)
    return (v, "parameters") if v > 0 else (math.nan, "")


def _describe_uncertainty(r: FrontierResult) -> str:
    s = r.settings
    what = {1: "runs within each model size", 2: "runs within each budget", 3: "runs (the law's own bootstrap)"}
    failed = s.get("bootstrap_failed", 0)
    tail = f", {failed} could not be fitted" if failed else ""
    return f"percentile bootstrap, {s.get('n_bootstrap')} resamples of {what[r.approach]}, seed {s.get('seed')}{tail}"
