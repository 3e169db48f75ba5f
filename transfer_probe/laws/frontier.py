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

This module reads a table of runs (:func:`fit_frontier`) and is where every frontier name is imported
from; each approach lives in its own module, whose docstring says how it works and where it errs:

- **Approach 1, envelope of training curves** (:func:`envelope_frontier`, ``frontier_envelope.py``):
  the lowest loss over all runs' curves at each compute; the frontier points are where the best model
  size switches (default) or, Hoffmann's literal estimator, every grid point's best size.
- **Approach 2, IsoFLOP profiles** (:func:`isoflop_frontier`, ``frontier_isoflop.py``): a parabola in
  log N per compute budget, its vertex the budget's N_opt.
- **Approach 3, the parametric law** (:func:`law_frontier`, ``frontier_law.py``): the exponents of a
  fitted :class:`~transfer_probe.laws.ChinchillaLaw`, ``a = beta / (alpha + beta)``, with the law's bootstrap.

Shared (``frontier_common.py``): ``log N_opt = a log C + log k_N`` by least squares over the frontier points, and ``D_opt = C /
(6 N_opt)``, so ``b = 1 - a`` for approaches 1 and 2 by construction (Hoffmann's 0.50 / 0.50 and 0.49 /
0.51 obey the same identity). Intervals are percentile bootstrap intervals: approach 2 resamples the
runs within each budget, approach 1 the runs within each model size (a size keeps at least one run), both
seeded and deterministic. Too little evidence (fewer than 3 budgets or switch points left) is a
``ValueError`` that says what was excluded and what to add, never a number. The result,
:class:`FrontierResult` and :class:`Placement`, is in ``frontier_result.py``.

Limits: the frontier is only as wide as the sizes sampled, and ``b = 1 - a`` means ``b`` carries no
independent information. Hoffmann et al. report 10th-90th percentile intervals (``interval=0.8``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from transfer_probe.laws.frontier_envelope import envelope_frontier
from transfer_probe.laws.frontier_isoflop import isoflop_frontier
from transfer_probe.laws.frontier_law import _law_from_runs, law_frontier
from transfer_probe.laws.frontier_result import PAPER, FrontierResult, Placement, run_size_and_tokens
from transfer_probe.laws.rows import _is_history, _num

__all__ = ["FrontierResult", "Placement", "run_size_and_tokens", "fit_frontier", "isoflop_frontier", "envelope_frontier", "law_frontier",
           "PAPER"]

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
    if approach in (1, 2):
        run = run or next((c for c in _RUN_COLUMNS if c in available), None)
    for c in names + ([run] if approach in (1, 2) and run else []):
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
    labels = np.array([str(r.get(run)) for r, u in zip(rows, usable, strict=True) if u], dtype=object) if run else None
    if approach == 2:
        result = _isoflop_of_runs(n, c, col[y], labels, run, options)
    elif approach == 1:
        labels = labels if labels is not None else n.astype(str)
        if not run:
            note.append("no run column: each model size taken as one curve (give run= when a size has several runs)")
        result = envelope_frontier(n, c, col[y], labels, **options)
    else:
        result = _law_from_runs(n, d, c, col[y], options)
    result.notes[:0] = note
    result.settings.update({"x": [n_col, d_col], "y": y, "compute": compute or "6 N D",
                            **({"run": run} if approach in (1, 2) and run else {})})
    return result


def _isoflop_of_runs(n, c, y, labels, run: str | None, options: dict) -> FrontierResult:
    """Approach 2 on each run's final row: a checkpoint before the end of its schedule is not an
    IsoFLOP run. The reduction is noted, and named in a refusal."""
    if labels is None or len(set(labels)) == len(labels):
        return isoflop_frontier(n, c, y, **options)
    last = _final_rows(labels, c)
    note = (f"{len(labels)} rows of {last.size} runs (column {run!r}): each run's final row (largest compute) taken; "
            "a checkpoint before the end of its schedule is not an IsoFLOP run")
    try:
        result = isoflop_frontier(n[last], c[last], y[last], **options)
    except ValueError as err:
        raise ValueError(f"{err} ({note})") from None
    result.notes.insert(0, note)
    return result


def _final_rows(labels: np.ndarray, compute: np.ndarray) -> np.ndarray:
    """Index of each run's row with the largest compute, in the runs' first-seen order."""
    best: dict = {}
    for i, (label, ci) in enumerate(zip(labels, compute, strict=True)):
        if label not in best or ci > compute[best[label]]:
            best[label] = i
    return np.array(list(best.values()), dtype=int)



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
