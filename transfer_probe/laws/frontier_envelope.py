"""Approach 1 of the compute-optimal frontier (Hoffmann et al. 2022): the envelope of training curves.

Every run's loss curve is put on the compute axis (checkpoint at ``D`` tokens -> ``C = 6 N D``) and
interpolated linearly in log C; for each compute on a log grid, the lowest loss over all runs is the
envelope and its run's N the best size there. With the handful of sizes of a real ladder the best size
is a staircase, and a line through the staircase flattens the slope (on synthetic curves from five
sizes over 1.2 decades: 0.457 for a true 0.514). So by default (``estimator="switch"``) the frontier
points are the computes where the envelope switches from one size to the next, each at the geometric
mean of the two sizes (the optimum lies between them; exactly halfway for a profile symmetric in
log N), which recovers the exponent to 1e-3 on the same curves. ``estimator="grid"`` is Hoffmann's
literal regression on every grid point whose best size is neither the smallest nor the largest size
present there (a best size at an edge may only be the best *sampled* one). A switch where one size
merely starts or stops being present is censored and not used; repeated switches between the same two
sizes (noise) are merged into one point at their mean log compute. The interval resamples the runs
within each model size (a size keeps at least one run). Import it from :mod:`transfer_probe.laws.frontier`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from transfer_probe.laws.frontier_common import _line, _options, _result, _runs
from transfer_probe.laws.frontier_result import FrontierResult

__all__ = ["envelope_frontier"]


def _curves_on_grid(n, logc, y, run, n_grid: int):
    """Each run's loss interpolated (linearly in log C) on a common log-compute grid; inf where the run
    has no checkpoint on both sides. Returns grid, values (runs x grid), run sizes, run names, notes."""
    names, inverse = np.unique(np.asarray(run, dtype=object).astype(str), return_inverse=True)
    grid = np.linspace(logc.min(), logc.max(), n_grid)
    values = np.full((names.size, n_grid), np.inf)
    sizes = np.empty(names.size)
    short = []
    for r, name in enumerate(names):
        m = inverse == r
        if np.unique(n[m]).size > 1:
            raise ValueError(f"run {str(name)!r} has several model sizes ({', '.join(f'{v:.3g}' for v in np.unique(n[m]))}): "
                             f"give a run column that tells the runs apart")
        sizes[r] = n[m][0]
        order = np.argsort(logc[m], kind="stable")
        lc, ly = logc[m][order], y[m][order]
        if lc.size < 2:
            short.append(str(name))
            continue
        inside = (grid >= lc[0]) & (grid <= lc[-1])
        values[r, inside] = np.interp(grid[inside], lc, ly)
    notes = [f"{len(short)} run(s) with a single checkpoint have no curve and were left out: {', '.join(short[:5])}"] if short else []
    return grid, values, sizes, names, notes


def _size_envelope(values, size_of_run, n_sizes: int, chosen: list[np.ndarray]) -> np.ndarray:
    """(sizes x grid): per model size, the lowest loss over its chosen runs."""
    out = np.full((n_sizes, values.shape[1]), np.inf)
    for k in range(n_sizes):
        if len(chosen[k]):
            out[k] = values[chosen[k]].min(axis=0)
    return out


def _switch_points(S, grid, logs) -> tuple[np.ndarray, np.ndarray, list[dict], list[dict]]:
    """Frontier points where the best size changes between two sizes present on both sides of the switch."""
    present = np.isfinite(S)
    win = np.where(present.any(axis=0), np.argmin(S, axis=0), -1)
    k = np.flatnonzero((win[:-1] >= 0) & (win[1:] >= 0) & (win[:-1] != win[1:]))
    w0, w1 = win[k], win[k + 1]
    seen = present[w0, k] & present[w0, k + 1] & present[w1, k] & present[w1, k + 1]
    xs, vs, points, excluded = [], [], [], []
    for i, j in sorted({(min(a, b), max(a, b)) for a, b in zip(w0, w1, strict=True)}):
        pair = ((w0 == i) & (w1 == j)) | ((w0 == j) & (w1 == i))
        label = f"{math.exp(logs[i]):.3g} <-> {math.exp(logs[j]):.3g}"
        if not (pair & seen).any():  # one size only starts or stops being present there: censored
            c = float(np.exp(grid[k[pair]].mean()))
            excluded.append({"compute": c, "why": f"switch {label} at C={c:.3g} excluded: one of the sizes has no "
                             f"curve on one side of it (censored: its runs start or end there)"})
            continue
        pair &= seen
        mid = (grid[k[pair]] + grid[k[pair] + 1]) / 2
        lc, v = float(mid.mean()), (logs[i] + logs[j]) / 2
        xs.append(lc)
        vs.append(v)
        points.append({"compute": math.exp(lc), "n_opt": math.exp(v), "d_opt": math.exp(lc - v) / 6,
                       "sizes": (math.exp(logs[i]), math.exp(logs[j])), "switches": int(pair.sum()),
                       "basis": f"switch {label}" + (f" ({pair.sum()} flips merged)" if pair.sum() > 1 else "")})
    order = np.argsort(xs)
    return np.array(xs)[order], np.array(vs)[order], [points[o] for o in order], excluded


def _grid_points(S, grid, logs) -> tuple[np.ndarray, np.ndarray, list[dict], list[dict]]:
    """Hoffmann's literal estimator: every grid point whose best size is not an edge of the sizes present."""
    present = np.isfinite(S)
    any_ = present.any(axis=0)
    win = np.where(any_, np.argmin(S, axis=0), -1)
    first = np.where(any_, np.argmax(present, axis=0), -1)
    last = np.where(any_, S.shape[0] - 1 - np.argmax(present[::-1], axis=0), -1)
    inner = any_ & (win > first) & (win < last)
    points = []
    for s in np.unique(win[inner]):
        lc = grid[inner & (win == s)]
        points.append({"compute": float(np.exp(np.median(lc))), "n_opt": math.exp(logs[s]),
                       "d_opt": float(np.exp(np.median(lc) - logs[s]) / 6), "grid_points": int(lc.size),
                       "basis": f"best size over C={np.exp(lc.min()):.3g} to {np.exp(lc.max()):.3g}"})
    if len(points) < 3:
        return np.array([]), np.array([]), points, []
    return grid[inner], logs[win[inner]], points, []


def envelope_frontier(n, compute, y, run, **options: Any) -> FrontierResult:
    """Approach 1: the lowest loss over all runs' curves at each compute, then N_opt, D_opt against C.

    One value per checkpoint: ``n`` (the run's parameters), ``compute`` (FLOPs spent so far, ``6 N D``),
    ``y`` (loss) and ``run`` (which run the checkpoint belongs to; runs of one size may differ in
    length and schedule). Options: ``estimator`` ("switch" or "grid", see the module docstring),
    ``grid`` (1500), ``interval``, ``n_bootstrap``, ``seed``. Raises ``ValueError`` with fewer than 3
    frontier points.
    """
    opts = _options(options, ("interval", "n_bootstrap", "seed", "grid", "estimator"))
    n, c, y, run = _runs(n, compute, y, run=run)
    keep = np.isfinite(y)
    grid, values, run_size, names, notes = _curves_on_grid(n[keep], np.log(c[keep]), y[keep], run[keep], int(opts["grid"]))
    sizes, size_of_run = np.unique(run_size, return_inverse=True)
    logs = np.log(sizes)
    points_of = _switch_points if opts["estimator"] == "switch" else _grid_points
    by_size = [np.flatnonzero((size_of_run == s) & np.isfinite(values).any(axis=1)) for s in range(sizes.size)]
    S = _size_envelope(values, size_of_run, sizes.size, by_size)
    xs, vs, points, excluded = points_of(S, grid, logs)
    if len(xs) < 2 or len(points) < 3:
        raise ValueError(_insufficient_envelope(opts["estimator"], sizes, points, excluded))
    rng = np.random.default_rng(opts["seed"])
    boot = []
    for _ in range(int(opts["n_bootstrap"])):
        chosen = [rng.choice(g, size=g.size, replace=True) if g.size else g for g in by_size]
        bx, bv, bp, _ = points_of(_size_envelope(values, size_of_run, sizes.size, chosen), grid, logs)
        boot.append(_line(bx, bv) if len(bx) >= 2 and len(bp) >= 3 else None)
    if opts["estimator"] == "grid":
        notes.append("estimator 'grid': a line through the staircase of best sizes; with few sizes it flattens "
                     "the slope (the 'switch' estimator does not)")
    single = [math.exp(logs[s]) for s, g in enumerate(by_size) if g.size == 1]
    if single and len(single) < len(by_size):  # every size single: not ok, and why says so
        notes.append(f"{len(single)} size(s) have a single run ({_listed(single)}): the bootstrap cannot vary them")
    notes.append("b = 1 - a by construction (D_opt = C / (6 N_opt))")
    if int(opts["n_bootstrap"]) >= 2 and all(g.size <= 1 for g in by_size):
        # resampling runs within sizes returns the same runs every time: a zero-width interval would
        # claim a certainty the data do not give
        boot = [None] * len(boot)
    best = S.min(axis=0)
    win = np.where(np.isfinite(best), np.argmin(S, axis=0), 0)
    envelope = {"compute": np.exp(grid), "loss": best, "n": np.where(np.isfinite(best), sizes[win], np.nan)}
    envelope["d"] = envelope["compute"] / (6 * envelope["n"])
    res = _result(1, _line(xs, vs), boot, opts, points, excluded, notes, (math.exp(xs.min()), math.exp(xs.max())),
                  {"estimator": opts["estimator"], "grid": int(opts["grid"]), "runs": int(names.size),
                   "sizes": [float(s) for s in sizes]}, envelope)
    if int(opts["n_bootstrap"]) >= 2 and all(g.size <= 1 for g in by_size):
        res.ok, res.why = False, ("insufficient evidence for an interval: every model size has a single run, so "
                                  "resampling runs within sizes cannot vary the envelope; give several runs per "
                                  "size (a run column naming each run's curve), or use approach 2 or 3")
    return res


def _insufficient_envelope(estimator: str, sizes, points, excluded) -> str:
    what = "size switches" if estimator == "switch" else "best sizes inside the range of sizes present"
    why = "; ".join(e["why"] for e in excluded)
    return (f"insufficient evidence for the envelope frontier: {len(points)} {what}, need >= 3 "
            f"({sizes.size} model sizes: {_listed(sizes)}{'; ' + why if why else ''}). "
            f"Add runs of more model sizes whose curves overlap in compute")


def _listed(sizes, most: int = 6) -> str:
    """Model sizes for a message: all of a few, or the first and last of many with the count."""
    text = [f"{s:.3g}" for s in sizes]
    if len(text) <= most:
        return ", ".join(text)
    return f"{', '.join(text[:most // 2])}, ..., {', '.join(text[-(most // 2):])}; {len(text)} in all"
