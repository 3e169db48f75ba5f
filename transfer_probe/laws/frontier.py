"""The compute-optimal frontier (Hoffmann et al. 2022): approaches 1, 2 and 3 side by side.

Each approach estimates how the loss-minimizing model size and token count grow with compute ``C``
(FLOPs, ``C = 6 N D`` unless a compute column is given): ``N_opt = k_N C**a`` and ``D_opt = k_D C**b``.

    >>> import numpy as np
    >>> from transfer_probe.laws.frontier import fit_frontier
    >>> rows = [{"N": n, "D": c / (6 * n), "loss": 1.7 + 400 / n**0.34 + 410 / (c / (6 * n))**0.28}
    ...         for c in (1e18, 1e19, 1e20, 1e21) for n in (c / 6) ** 0.45 * np.geomspace(0.2, 10, 9)]
    >>> fit = fit_frontier(rows, approach=2, n_bootstrap=50)
    >>> round(fit.a, 2), round(fit.b, 2)                 # true a = beta / (alpha + beta) = 0.45
    (0.45, 0.55)
    >>> print(fit.place(1e8, 2e9).text)                  # doctest: +SKIP

- **Approach 1, envelope of training curves** (:func:`envelope_frontier`): every run's loss curve is
  put on the compute axis (checkpoint at ``D`` tokens -> ``C = 6 N D``) and interpolated linearly in
  log C; for each compute on a log grid, the lowest loss over all runs is the envelope and its run's N
  the best size there. With the handful of sizes of a real ladder the best size is a staircase, and a
  line through the staircase flattens the slope (on synthetic curves from five sizes over 1.2 decades:
  0.457 for a true 0.514). So by default (``estimator="switch"``) the frontier points are the
  computes where the envelope switches from one size to the next, each at the geometric mean of the
  two sizes (the optimum lies between them; exactly halfway for a profile symmetric in log N), which
  recovers the exponent to 1e-3 on the same curves. ``estimator="grid"`` is Hoffmann's literal
  regression on every grid point whose best size is neither the smallest nor the largest size present
  there (a best size at an edge may only be the best *sampled* one). A switch where one size merely
  starts or stops being present is censored and not used; repeated switches between the same two
  sizes (noise) are merged into one point at their mean log compute.
- **Approach 2, IsoFLOP profiles** (:func:`isoflop_frontier`): runs are grouped into compute budgets
  (the densest point of log10 C and every run within ``budget_tol`` decades of its group's median, as
  long as at least ``min_runs`` runs gather; runs that join no budget are left out and counted), a
  parabola in log N is fitted to the loss of each budget by least squares, and its vertex is that
  budget's N_opt. A budget whose parabola opens downward or whose vertex lies outside the sizes it
  sampled is excluded (``excluded`` says which and why). The parabola only approximates the profile,
  which is asymmetric in log N: sample each budget around its optimum (Hoffmann: about x8 either side,
  which leaves the exponent exact and N_opt ~3% high on synthetic data); the same twelve sizes over
  three decades at every budget pull the exponent to 0.43 for a true 0.45.
- **Approach 3, the parametric law** (:func:`law_frontier`): the exponents of a fitted
  :class:`~transfer_probe.laws.ChinchillaLaw`, ``a = beta / (alpha + beta)``, with the law's bootstrap.

Then ``log N_opt = a log C + log k_N`` by least squares over the frontier points, and ``D_opt = C /
(6 N_opt)``, so ``b = 1 - a`` for approaches 1 and 2 by construction (Hoffmann's 0.50 / 0.50 and 0.49 /
0.51 obey the same identity). Intervals are percentile bootstrap intervals: approach 2 resamples the
runs within each budget, approach 1 the runs within each model size (a size keeps at least one run), both
seeded and deterministic. Too little evidence (fewer than 3 budgets or switch points left) is a
``ValueError`` that says what was excluded and what to add, never a number.

Limits: the frontier is only as wide as the sizes sampled, and ``b = 1 - a`` means ``b`` carries no
independent information. Hoffmann et al. report 10th-90th percentile intervals (``interval=0.8``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from transfer_probe.laws.chinchilla import ChinchillaLaw
from transfer_probe.laws.frontier_result import PAPER, FrontierResult, Placement
from transfer_probe.laws.result import FitResult
from transfer_probe.laws.rows import _is_history, _num

__all__ = ["FrontierResult", "Placement", "fit_frontier", "isoflop_frontier", "envelope_frontier", "law_frontier",
           "PAPER"]

_DEFAULTS: dict[str, Any] = {
    "interval": 0.9,
    "n_bootstrap": 200,
    "seed": 0,
    "budget_tol": 0.05,  # approach 2: half-width of a budget in decades of C (+-12%)
    "min_runs": 5,  # approach 2: runs a budget needs (a parabola has 3 parameters)
    "grid": 1500,  # approach 1: log-spaced computes (Hoffmann used 1500)
    "estimator": "switch",  # approach 1: "switch" or "grid"
}


def _options(given: Mapping[str, Any], allowed: Sequence[str]) -> dict[str, Any]:
    unknown = set(given) - set(allowed)
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)}; valid: {sorted(allowed)}")
    opts = {k: _DEFAULTS[k] for k in allowed if k in _DEFAULTS} | dict(given)
    if not 0 < opts.get("interval", 0.9) < 1:
        raise ValueError(f"interval must be in (0, 1), got {opts['interval']!r}")
    if int(opts.get("n_bootstrap", 1)) < 0:
        raise ValueError(f"n_bootstrap must be >= 0, got {opts['n_bootstrap']!r}")
    if opts.get("estimator", "switch") not in ("switch", "grid"):
        raise ValueError(f"estimator must be 'switch' or 'grid', got {opts['estimator']!r}")
    return opts


# --------------------------------------------------------------------------------------------------
# shared: the line through the frontier points, the bootstrap summary
# --------------------------------------------------------------------------------------------------


def _line(logc: np.ndarray, logn: np.ndarray) -> np.ndarray:
    """``(a, log_kN, b, log_kD)`` by least squares of log N_opt and log D_opt (= log C/6N_opt) on log C."""
    a, kn = np.polyfit(logc, logn, 1)
    b, kd = np.polyfit(logc, logc - math.log(6.0) - logn, 1)
    return np.array([a, kn, b, kd])


def _result(approach: int, est: np.ndarray, boot: list, opts: Mapping[str, Any], points: list[dict],
            excluded: list[dict], notes: list[str], compute_range, settings: dict, envelope=None) -> FrontierResult:
    level = float(opts["interval"])
    n_boot = int(opts["n_bootstrap"])
    samples = np.array([s for s in boot if s is not None]).reshape(-1, 4)
    failed = n_boot - len(samples)
    q = [(1 - level) / 2, (1 + level) / 2]
    if len(samples) >= 2:
        a_iv = tuple(float(v) for v in np.quantile(samples[:, 0], q))
        b_iv = tuple(float(v) for v in np.quantile(samples[:, 2], q))
        sd = samples.std(axis=0, ddof=1)
    else:
        a_iv = b_iv = (math.nan, math.nan)
        sd = np.full(4, math.nan)
        notes = [*notes, "no interval: n_bootstrap < 2"] if n_boot < 2 else notes
    ok, why = True, ""
    if n_boot >= 2 and failed > n_boot / 2:
        ok, why = False, (f"{failed} of {n_boot} bootstrap resamples left too few frontier points to fit a line: "
                          f"the interval rests on a minority of resamples; add runs")
    elif failed:
        notes = [*notes, f"{failed} of {n_boot} bootstrap resamples left too few points and were skipped"]
    names = ("a", "log_kN", "b", "log_kD")
    return FrontierResult(
        approach=approach, a=float(est[0]), a_interval=a_iv, b=float(est[2]), b_interval=b_iv,
        params={k: float(v) for k, v in zip(names, est, strict=True)}, stderr={k: float(v) for k, v in zip(names, sd, strict=True)},
        interval=level, points=points, compute_range=tuple(float(v) for v in compute_range), excluded=excluded,
        notes=list(notes), settings={**settings, "interval": level, "n_bootstrap": n_boot, "seed": opts.get("seed"),
                                     "bootstrap_failed": failed},
        ok=ok, why=why, envelope=envelope or {}, _boot=samples if len(samples) else None)


def _positive(name: str, v) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(v, dtype=float)).ravel()
    if not np.all(np.isfinite(arr) & (arr > 0)):
        bad = arr[~(np.isfinite(arr) & (arr > 0))][:3]
        raise ValueError(f"{name} must be positive and finite; found {', '.join(f'{b:g}' for b in bad)}")
    return arr


def _same_length(**arrays: np.ndarray) -> None:
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"inputs differ in length: {lengths}")


# --------------------------------------------------------------------------------------------------
# approach 2: IsoFLOP profiles
# --------------------------------------------------------------------------------------------------


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
    n, c = _positive("model size N", n), _positive("compute C", compute)
    y = np.atleast_1d(np.asarray(y, dtype=float)).ravel()
    _same_length(n=n, compute=c, y=y)
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


# --------------------------------------------------------------------------------------------------
# approach 1: the envelope of training curves
# --------------------------------------------------------------------------------------------------


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
    n, c = _positive("model size N", n), _positive("compute C", compute)
    y = np.atleast_1d(np.asarray(y, dtype=float)).ravel()
    run = np.atleast_1d(np.asarray(run, dtype=object)).ravel()
    _same_length(n=n, compute=c, y=y, run=run)
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
    single = [f"{math.exp(logs[s]):.3g}" for s, g in enumerate(by_size) if g.size == 1]
    if single:
        notes.append(f"size(s) {', '.join(single)} have a single run: the bootstrap cannot vary them")
    notes.append("b = 1 - a by construction (D_opt = C / (6 N_opt))")
    best = S.min(axis=0)
    win = np.where(np.isfinite(best), np.argmin(S, axis=0), 0)
    envelope = {"compute": np.exp(grid), "loss": best, "n": np.where(np.isfinite(best), sizes[win], np.nan)}
    envelope["d"] = envelope["compute"] / (6 * envelope["n"])
    return _result(1, _line(xs, vs), boot, opts, points, excluded, notes, (math.exp(xs.min()), math.exp(xs.max())),
                   {"estimator": opts["estimator"], "grid": int(opts["grid"]), "runs": int(names.size),
                    "sizes": [float(s) for s in sizes]}, envelope)


def _insufficient_envelope(estimator: str, sizes, points, excluded) -> str:
    what = "size switches" if estimator == "switch" else "best sizes inside the range of sizes present"
    why = "; ".join(e["why"] for e in excluded)
    return (f"insufficient evidence for the envelope frontier: {len(points)} {what}, need >= 3 "
            f"({sizes.size} model sizes: {', '.join(f'{s:.3g}' for s in sizes)}{'; ' + why if why else ''}). "
            f"Add runs of more model sizes whose curves overlap in compute")


# --------------------------------------------------------------------------------------------------
# approach 3: the parametric law
# --------------------------------------------------------------------------------------------------


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

    # the law's bootstrap samples are internal parameters; its _public maps them as the law does
    boot = [line(fit._law._public(t, fit._ref)) for t in (fit._boot if fit._boot is not None else [])]
    opts = {"interval": interval, "n_bootstrap": len(boot), "seed": fit._law.options.get("seed")}
    (nlo, nhi), (dlo, dhi) = fit.x_range
    rng = compute_range or (6 * nlo * dlo, 6 * nhi * dhi)
    notes = [f"from L(N, D) = E + A/N^alpha + B/D^beta: alpha {fit.params['alpha']:.4g}, beta {fit.params['beta']:.4g}"]
    if not boot:
        notes.append(f"the law's uncertainty is {fit.uncertainty!r}, not a bootstrap: no interval")
    return _result(3, line(fit.params), boot, opts, [], [], notes, rng, {"law_fit_points": fit.n_points})


# --------------------------------------------------------------------------------------------------
# from a table
# --------------------------------------------------------------------------------------------------

_RUN_COLUMNS = ("run", "run_id", "name")


def fit_frontier(rows: Iterable[Mapping[str, Any]], approach: int | str, x: str | Sequence[str | None] = ("N", "D"),
                 y: str = "loss", compute: str | None = None, run: str | None = None, **options: Any) -> FrontierResult:
    """The compute-optimal frontier from a table of runs (``history.load_table`` output or any row dicts).

    ``x`` names the model-size and token columns (``("N", "D")`` or the CLI's ``"N,D"``; the token column
    may be left out when ``compute`` names a FLOPs column). ``compute`` defaults to ``6 N D``.
    Approach 2 reads one row per run (its final loss); approach 1 one row per checkpoint, grouped into
    curves by ``run`` (default: a ``run``, ``run_id`` or ``name`` column, else one curve per model
    size); approach 3 fits :class:`~transfer_probe.laws.ChinchillaLaw` to the rows. Options go to
    :func:`envelope_frontier`, :func:`isoflop_frontier` or (``interval``, ``n_bootstrap``, ``seed``) the law.

    >>> fit = fit_frontier(rows, approach=2, x="Model Size", compute="Training FLOP")   # doctest: +SKIP
    >>> fit.a, fit.a_interval, fit.to_dict()["b_interval"]                              # doctest: +SKIP
    """
    rows = list(rows)
    if not rows:
        raise ValueError("no rows: the table is empty")
    if _is_history(rows):
        raise ValueError("the frontier needs a table of runs (model size, tokens or compute, loss per row); a history "
                         "file holds one run's probes: write the runs' N, D and loss to a CSV")
    approach = _approach(approach)
    n_col, d_col = _x_columns(x)
    if d_col is None and compute is None:
        raise ValueError(f"give the token column in x (x=({n_col!r}, 'D')) or a FLOPs column in compute=")
    available = sorted({k for r in rows for k in r})
    names = [c for c in (n_col, d_col, y, compute) if c is not None]
    if approach == 1:
        run = run or next((c for c in _RUN_COLUMNS if c in available), None)
    for c in names + ([run] if approach == 1 and run else []):
        if c not in available:
            raise ValueError(f"column {c!r} not found; available columns: {', '.join(available)}")
    data = np.array([[_num(r.get(c)) for c in names] for r in rows], dtype=float)
    usable = np.all(np.isfinite(data), axis=1) & np.all(data[:, [i for i, c in enumerate(names) if c != y]] > 0, axis=1)
    if not usable.any():
        raise ValueError(f"no row has positive numbers in {', '.join(n for n in names if n != y)} and a number in {y}")
    col = {c: data[usable, i] for i, c in enumerate(names)}
    n = col[n_col]
    c = col[compute] if compute is not None else 6.0 * n * col[d_col]
    d = col[d_col] if d_col is not None else c / (6.0 * n)
    note = [f"{int((~usable).sum())} row(s) without usable values in {', '.join(names)} were skipped"] if (~usable).any() else []
    if approach == 2:
        result = isoflop_frontier(n, c, col[y], **options)
    elif approach == 1:
        labels = np.array([str(r.get(run)) for r, u in zip(rows, usable, strict=True) if u], dtype=object) if run else n.astype(str)
        if not run:
            note.append("no run column: each model size taken as one curve (give run= when a size has several runs)")
        result = envelope_frontier(n, c, col[y], labels, **options)
    else:
        result = _law_from_rows(n, d, c, col[y], options)
    result.notes[:0] = note
    result.settings.update({"x": [n_col, d_col], "y": y, "compute": compute or "6 N D", **({"run": run} if approach == 1 else {})})
    return result


def _law_from_rows(n, d, c, y, options) -> FrontierResult:
    opts = _options(options, ("interval", "n_bootstrap", "seed"))
    fit = ChinchillaLaw(n_bootstrap=int(opts["n_bootstrap"]), seed=opts["seed"]).fit((n, d), y)
    return law_frontier(fit, float(opts["interval"]), (float(c.min()), float(c.max())))


def _approach(approach) -> int:
    try:
        a = int(str(approach).strip())
    except ValueError:
        a = 0
    if a not in (1, 2, 3):
        raise ValueError(f"approach must be 1 (envelope of training curves), 2 (IsoFLOP profiles) or 3 (parametric "
                         f"law), got {approach!r}")
    return a


def _x_columns(x) -> tuple[str, str | None]:
    if isinstance(x, str):
        parts = [p.strip() for p in x.split(",")]
    else:
        parts = [None if p is None else str(p) for p in x]
    if not 1 <= len(parts) <= 2 or not parts[0]:
        raise ValueError(f"x names the model-size column and the token column, e.g. 'N,D'; got {x!r}")
    return parts[0], (parts[1] or None) if len(parts) == 2 else None
