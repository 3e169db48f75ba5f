"""Approach 3 of the compute-optimal frontier (Hoffmann et al. 2022): the parametric law L(N, D).

The exponents of a fitted :class:`~transfer_probe.laws.ChinchillaLaw`, ``a = beta / (alpha + beta)``
and ``b = alpha / (alpha + beta)``, with intervals from the law's own bootstrap. Import it from
:mod:`transfer_probe.laws.frontier`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from transfer_probe.laws.chinchilla import ChinchillaLaw
from transfer_probe.laws.frontier_common import _options, _result
from transfer_probe.laws.frontier_result import FrontierResult
from transfer_probe.laws.result import FitResult

__all__ = ["law_frontier"]


def law_frontier(fit: FitResult, interval: float = 0.9, compute_range: tuple[float, float] | None = None) -> FrontierResult:
    """Approach 3: the frontier implied by a fitted :class:`~transfer_probe.laws.ChinchillaLaw`.

    ``a = beta / (alpha + beta)``, ``b = alpha / (alpha + beta)``, ``N_opt`` from ``fit.compute_optimal``;
    intervals from the law's own bootstrap (its default uncertainty). ``compute_range`` (FLOPs of the
    runs fitted) only marks placements outside it as extrapolated.
    """
    if not isinstance(fit, FitResult) or fit.law != "chinchilla":
        raise ValueError(f"law_frontier needs a ChinchillaLaw fit, got {getattr(fit, 'law', type(fit).__name__)!r}")
    if not fit.ok:
        raise ValueError(f"insufficient evidence for the parametric frontier: the chinchilla fit is not ok: {fit.why}")

    def line(params) -> np.ndarray:
        al, be = params["alpha"], params["beta"]
        n1, d1 = ChinchillaLaw._compute_optimal(params, np.array(1.0))  # N_opt, D_opt at C = 1 FLOP: k_N, k_D
        return np.array([be / (al + be), math.log(n1), al / (al + be), math.log(d1)])

    # the law's bootstrap samples are internal parameters; its _public maps them as the law does (lmfit
    # expressions, ~0.6 ms a sample: 0.12 s for 200, against ~2 s for the law's own bootstrap refits)
    boot = [line(fit._law._public(t, fit._ref)) for t in (fit._boot if fit._boot is not None else [])]
    opts = {"interval": interval, "n_bootstrap": len(boot), "seed": fit._law.options.get("seed")}
    (nlo, nhi), (dlo, dhi) = fit.x_range
    rng = compute_range or (6 * nlo * dlo, 6 * nhi * dhi)
    notes = [f"from L(N, D) = E + A/N^alpha + B/D^beta: alpha {fit.params['alpha']:.4g}, beta {fit.params['beta']:.4g}"]
    if not boot:
        notes.append(f"the law's uncertainty is {fit.uncertainty!r}, not a bootstrap: no interval")
    return _result(3, line(fit.params), boot, opts, [], [], notes, rng, {"law_fit_points": fit.n_points})


def _law_from_runs(n, d, c, y, options: dict[str, Any]) -> FrontierResult:
    """Approach 3 on runs given as arrays: fit the law (``interval``, ``n_bootstrap``, ``seed``), then its frontier."""
    opts = _options(options, ("interval", "n_bootstrap", "seed"))
    fit = ChinchillaLaw(n_bootstrap=int(opts["n_bootstrap"]), seed=opts["seed"]).fit((n, d), y)
    return law_frontier(fit, float(opts["interval"]), (float(c.min()), float(c.max())))
