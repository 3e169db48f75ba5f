"""Approach 2 of the compute-optimal frontier (Hoffmann et al. 2022): IsoFLOP profiles.

Runs are grouped into compute budgets (the densest point of log10 C and every run within
``budget_tol`` decades of its group's median, as long as at least ``min_runs`` runs gather; runs that
join no budget are left out and counted), a parabola in log N is fitted to the loss of each budget by
least squares, and its vertex is that budget's N_opt. A budget whose parabola opens downward or whose
vertex lies outside the sizes it sampled is excluded (``excluded`` says which and why). The parabola
only approximates the profile, which is asymmetric in log N: sample each budget around its optimum
(Hoffmann: about x8 either side, which leaves the exponent exact and N_opt ~3% high on synthetic data);
the same twelve sizes over three decades at every budget pull the exponent to 0.43 for a true 0.45.
The interval resamples the runs within each budget. Import it from :mod:`transfer_probe.laws.frontier`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from transfer_probe.laws.frontier_common import _line, _options, _result, _runs
from transfer_probe.laws.frontier_result import FrontierResult

__all__ = ["isoflop_frontier"]


def _budgets(log10c: np.ndarray, tol: float, min_runs: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Groups of runs at one compute budget: repeatedly take the densest run (most runs within ``tol``
    decades), centre on its neighbours' median, take every free run within ``tol`` of it; stop when no
    group of ``min_runs`` is left. Returns the groups (index arrays) and the runs on no budget."""
    free = np.ones(log10c.size, bool)
    groups = []
    while free.any():
        idx = np.flatnonzero(free)
        counts = (np.abs(log10c[idx, None] - log10c[None, idx]) <= tol).sum(axis=1)
        j = idx[int(np.argmax(counts))]
        if counts.max() < min_runs:
            break
        centre = np.median(log10c[free & (np.abs(log10c - log10c[j]) <= tol)])
        members = free & (np.abs(log10c - centre) <= tol)
        if members.sum() < min_runs:  # the re-centred window lost runs: take the first window as it was
            members = free & (np.abs(log10c - log10c[j]) <= tol)
        groups.append(np.flatnonzero(members))
        free &= ~members
    return sorted(groups, key=lambda g: float(np.mean(log10c[g]))), np.flatnonzero(free)


def _vertex(logn: np.ndarray, y: np.ndarray) -> tuple[float, float, str]:
    """Vertex of the least-squares parabola of y in log N: (log N_opt, curvature, why it is unusable or "")."""
    if np.unique(logn).size < 3:
        return math.nan, math.nan, f"only {np.unique(logn).size} distinct model sizes (a parabola needs 3)"
    c2, c1, _ = np.polyfit(logn, y, 2)
    if not c2 > 0:
        return math.nan, float(c2), "its parabola in log N opens downward (no minimum)"
    v = -c1 / (2 * c2)
    lo, hi = float(logn.min()), float(logn.max())
    if not lo < v < hi:
        return float(v), float(c2), (f"its parabola's minimum (N={math.exp(v):.3g}) lies outside the sizes sampled "
                                     f"({math.exp(lo):.3g} to {math.exp(hi):.3g})")
    return float(v), float(c2), ""


def _isoflop_points(logn, y, logc, groups) -> tuple[np.ndarray, np.ndarray, list[dict], list[dict]]:
    xs, vs, points, excluded = [], [], [], []
    for g in groups:
        lc = float(np.mean(logc[g]))
        v, curv, why = _vertex(logn[g], y[g])
        if why:
            excluded.append({"compute": math.exp(lc), "runs": int(g.size), "why": f"budget C={math.exp(lc):.3g} "
                             f"({g.size} runs) excluded: {why}"})
            continue
        xs.append(lc)
        vs.append(v)
        points.append({"compute": math.exp(lc), "n_opt": math.exp(v), "d_opt": math.exp(lc - v) / 6, "runs": int(g.size),
                       "n_range": (float(np.exp(logn[g].min())), float(np.exp(logn[g].max()))), "curvature": curv,
                       "basis": f"parabola over {g.size} runs"})
    return np.array(xs), np.array(vs), points, excluded


def isoflop_frontier(n, compute, y, **options: Any) -> FrontierResult:
    """Approach 2: one parabola in log N per compute budget, then N_opt, D_opt against C.

    ``n`` (parameters), ``compute`` (FLOPs) and ``y`` (final loss) are one value per run. Options:
    ``budget_tol`` (decades, default 0.05), ``min_runs`` (5), ``interval`` (0.9), ``n_bootstrap`` (200),
    ``seed`` (0). Raises ``ValueError`` when fewer than 3 budgets give a usable parabola.
    """
    opts = _options(options, ("interval", "n_bootstrap", "seed", "budget_tol", "min_runs"))
    n, c, y = _runs(n, compute, y)
    if not np.all(np.isfinite(y)):
        raise ValueError("loss values must be finite")
    logn, logc = np.log(n), np.log(c)
    groups, loose = _budgets(logc / math.log(10), float(opts["budget_tol"]), int(opts["min_runs"]))
    xs, vs, points, excluded = _isoflop_points(logn, y, logc, groups)
    if len(points) < 3:
        raise ValueError(_insufficient_budgets(len(groups), len(points), excluded, loose.size, opts))
    rng = np.random.default_rng(opts["seed"])
    boot = []
    for _ in range(int(opts["n_bootstrap"])):
        resampled = [rng.choice(g, size=g.size, replace=True) for g in groups]
        bx, bv, _, _ = _isoflop_points(logn, y, logc, resampled)
        boot.append(_line(bx, bv) if len(bx) >= 3 else None)
    notes = []
    if loose.size:
        notes.append(f"{loose.size} of {n.size} runs lie on no budget of >= {opts['min_runs']} runs within "
                     f"+-{opts['budget_tol']:g} decades of compute and were left out")
    notes.append("b = 1 - a by construction (D_opt = C / (6 N_opt))")
    return _result(2, _line(xs, vs), boot, opts, points, excluded, notes, (math.exp(xs.min()), math.exp(xs.max())),
                   {"budget_tol": opts["budget_tol"], "min_runs": opts["min_runs"], "runs": int(n.size),
                    "budgets": len(groups)})


def _insufficient_budgets(n_groups: int, n_ok: int, excluded: list[dict], loose: int, opts) -> str:
    why = "; ".join(e["why"] for e in excluded) or "none excluded"
    return (f"insufficient evidence for the IsoFLOP frontier: {n_ok} usable compute budget(s), need >= 3 "
            f"({n_groups} budget(s) of >= {opts['min_runs']} runs within +-{opts['budget_tol']:g} decades of compute; "
            f"{why}; {loose} run(s) on no budget). Add runs at more compute budgets, several model sizes on "
            f"each, spanning the best size")
