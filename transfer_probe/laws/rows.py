"""Fitting the rows of a history file or of any table: :func:`fit_rows` (the CLI's entry point)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from transfer_probe.laws.chinchilla import ChinchillaLaw
from transfer_probe.laws.registry import get_law
from transfer_probe.laws.result import FitResult
from transfer_probe.laws.transfer import TransferLaw
from transfer_probe.store.records import is_history
from transfer_probe.store.tables import Table

# --------------------------------------------------------------------------------------------------
# fitting rows of a history file or of any table (the CLI's entry point)
# --------------------------------------------------------------------------------------------------


_is_history = is_history  # the store's one test (frontier imports this name)


def _num(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f


def _model_size(record: Mapping[str, Any]) -> float:
    p = record.get("params")
    if isinstance(p, Mapping):
        return _num(p.get("non_embedding", p.get("total")))
    return _num(p)


def fit_rows(rows: Iterable[Mapping[str, Any]], x: str | Sequence[str] = "tokens", y: str = "bleu",
             law: str = "log", *, sigma: str | None = None, task: str | None = None, finetune_size: Any = None,
             weights: bool = True, at_tokens: float | None = None, **options: Any) -> FitResult:
    """Fit ``law`` to the rows of a history file or of any table (``history.read_history`` /
    ``history.load_table`` output). The CLI's ``fit`` command calls this.

    - History records (rows with a ``metrics`` dict): failed probes are dropped, the repeats of each
      probe point are averaged with ``history.aggregate`` and, when ``weights`` is true and every point
      has a finite standard error, the fit is weighted by those errors (``FitResult.weighted``), which
      also widens the prediction intervals to match. Only pre-trained points enter the log / power /
      chinchilla laws; the rows must be one (task, finetune_size) group, or ``task=`` /
      ``finetune_size=`` pick one. ``law="transfer"`` instead reads, per fine-tuning size, the
      pre-trained loss ``y`` at the last probe (or at ``at_tokens``) against the no-pretraining baseline
      records of the same task and runs :meth:`TransferLaw.fit_curves`.
    - Plain tables: ``x`` and ``y`` are column names (``x`` a pair of names for chinchilla:
      ``("params", "tokens")``; for transfer ``("finetune_size", "params")`` with ``y`` the transferred
      data); ``sigma`` names an optional column of standard errors. Rows missing a value are skipped.

    Raises ``ValueError`` naming a missing column or metric and listing the available ones.

    >>> rows = [{"tokens": t, "loss": 2 + 50 * t ** -0.3} for t in (1e6, 3e6, 1e7, 3e7, 1e8)]
    >>> fit_rows(rows, x="tokens", y="loss", law="power").ok
    True
    """
    rows = rows if isinstance(rows, list | Table) else list(rows)
    if not rows:
        raise ValueError("no rows to fit: the file is empty")
    law_cls = get_law(law)
    if _is_history(rows):
        return _fit_history(rows, x, y, law, law_cls, task=task, finetune_size=finetune_size, weights=weights,
                            at_tokens=at_tokens, **options)
    available = sorted(rows.names) if isinstance(rows, Table) else sorted({k for r in rows for k in r})
    if isinstance(x, str) and "," in x:  # the CLI's --x N,D names both columns
        x = tuple(part.strip() for part in x.split(","))
    if getattr(law_cls, "ndim", 1) == 2 and isinstance(x, str):
        if law_cls is ChinchillaLaw and "params" in available and x != "params":
            x = ("params", x)  # the CLI's --x names the token column; the size column is "params"
        else:
            hint = '("params", "tokens")' if law_cls is ChinchillaLaw else '("finetune_size", "params")'
            raise ValueError(f"the {law} law takes two x columns, e.g. x={hint}; available columns: "
                             f"{', '.join(available)}")
    names = [x] if isinstance(x, str) else list(x)
    cols = names + [y] + ([sigma] if sigma else [])
    for c in cols:
        if not any(c in r for r in rows):
            raise ValueError(f"column {c!r} not found; available columns: {', '.join(available)}")
    # Column by column into arrays: no per-row list (a 10^6-row table would hold ~150 MB of them).
    arr = np.column_stack([_column(rows, c) for c in cols])
    arr = arr[np.all(np.isfinite(arr), axis=1)]
    if not len(arr):
        raise ValueError(f"no row has numeric values in all of {cols}")
    xs = arr[:, 0] if isinstance(x, str) else tuple(arr[:, i] for i in range(len(names)))
    ys = arr[:, len(names)]
    sg = arr[:, len(names) + 1] if sigma else None
    return law_cls(**options).fit(xs, ys, sg)


def _column(rows, name: str) -> np.ndarray:
    """One column as floats (NaN where a cell is missing or not a number)."""
    if isinstance(rows, Table):
        return rows.floats(name)
    return np.fromiter((_num(r.get(name)) for r in rows), dtype=float, count=len(rows))


def _fit_history(rows, x, y, law_name, law_cls, *, task, finetune_size, weights, at_tokens, **options) -> FitResult:
    from transfer_probe.store import history

    probes = history.probe_records(rows)
    if not probes:
        raise ValueError("no successful probe records among the rows (every probe failed or none were written)")
    if task is not None:
        probes = [r for r in probes if str(r.get("task")) == str(task)]
    metrics = sorted({m for r in probes for m in (r.get("metrics") or {})})
    if y not in metrics:
        raise ValueError(f"metric {y!r} not found in the probe records; available metrics: {', '.join(metrics) or 'none'}")
    if law_name == "transfer":
        return _fit_history_transfer(probes, y, at_tokens, **options)
    if finetune_size is not None:
        probes = [r for r in probes if str(history.group_key(r)[1]) == str(finetune_size)]
    probes = [r for r in probes if r.get("pretrained", True)]
    groups = sorted({history.group_key(r) for r in probes}, key=str)
    if not groups:
        raise ValueError(f"no pre-trained probe records for task={task!r}, finetune_size={finetune_size!r}")
    if len(groups) > 1:
        listed = ", ".join(f"(task={t!r}, finetune_size={f!r})" for t, f in groups)
        raise ValueError(f"the records hold {len(groups)} groups: {listed}; fit one at a time with task= and "
                         f"finetune_size= (the CLI: --task, --finetune-size)")
    all_points = history.aggregate(probes, metrics=[y])
    points = [p for p in all_points if y in p["mean"]]
    if not points:  # every value null or NaN: say so instead of fitting nothing
        raise ValueError(f"no probe record of (task={groups[0][0]!r}, finetune_size={groups[0][1]!r}) has a numeric "
                         f"{y!r} ({sum(p['n'] for p in all_points)} records: the values are null or NaN)")
    notes = []
    if len(points) < len(all_points):
        notes.append(f"{len(all_points) - len(points)} probe point(s) left out: no numeric {y!r} (null or NaN)")
    runs = sorted({str(p["run_id"]) for p in points})
    if len(runs) > 1 and law_name != "chinchilla":
        notes.append(f"points of {len(runs)} runs fitted together: {', '.join(runs)}")
    if law_name == "chinchilla":
        size = {}
        for r in probes:
            size.setdefault(r.get("run_id"), _model_size(r))
        xs = (np.array([size.get(p["run_id"], math.nan) for p in points]), np.array([p["tokens"] for p in points]))
    else:
        key = x if isinstance(x, str) else x[0]
        if key not in points[0]:
            raise ValueError(f"x {key!r} is not a field of the aggregated probe points; use one of: tokens, step")
        xs = np.array([_num(p[key]) for p in points])
    ys = np.array([p["mean"][y] for p in points])
    sem = np.array([_num(p["sem"].get(y)) for p in points])
    sg = None
    if weights:
        if np.all(np.isfinite(sem) & (sem > 0)):
            sg = sem
        else:
            notes.append(_no_sem_note(sem, ys, y))
    res = law_cls(**options).fit(xs, ys, sg)
    res.notes.extend(notes)
    res.extra.setdefault("repeats", [int(p["n"]) for p in points])
    return res


def _no_sem_note(sem: np.ndarray, ys: np.ndarray, y: str) -> str:
    """Why a fit is unweighted, in the user's terms: no interval at all, or intervals of zero width
    (a bootstrap over a score that is 0 everywhere, e.g. BLEU 0, gives [0, 0])."""
    missing, zero = ~np.isfinite(sem), np.isfinite(sem) & (sem <= 0)
    why = []
    if missing.any():
        why.append(f"{int(missing.sum())} with a single repeat and no bootstrap interval")
    if zero.any():
        same = f"{y} was 0" if np.all(ys[zero] == 0) else f"{y} was the same"
        why.append(f"{int(zero.sum())} with zero-width intervals: {same} in every repeat and bootstrap resample")
    return f"unweighted: {int((missing | zero).sum())} point(s) have no standard error ({'; '.join(why)})"


def _fit_history_transfer(probes, y, at_tokens, **options) -> FitResult:
    from transfer_probe.store import history

    tasks = sorted({str(r.get("task")) for r in probes})
    if len(tasks) > 1:
        raise ValueError(f"the records hold {len(tasks)} tasks: {', '.join(tasks)}; pass task= to pick one")
    points = [p for p in history.aggregate(probes, metrics=[y]) if y in p["mean"]]
    size = {}
    for r in probes:
        size.setdefault(r.get("run_id"), _model_size(r))
    base = [p for p in points if not p["pretrained"]]
    pre = [p for p in points if p["pretrained"]]
    if len(base) < 2:
        raise ValueError("the transfer law needs no-pretraining baseline records (pretrained: false) at >= 2 "
                         f"fine-tuning sizes; found {len(base)}")
    chosen: dict[Any, dict] = {}
    for p in pre:
        if at_tokens is not None and abs(p["tokens"] - at_tokens) > 1e-6 * at_tokens:
            continue
        k = p["finetune_size"]
        if k not in chosen or p["tokens"] > chosen[k]["tokens"]:
            chosen[k] = p
    if not chosen:
        raise ValueError(f"no pre-trained probe points{'' if at_tokens is None else f' at {at_tokens:g} tokens'}")
    pts = sorted(chosen.values(), key=lambda p: _num(p["finetune_size"]))
    return TransferLaw(**options).fit_curves(
        [_num(p["finetune_size"]) for p in pts], [p["mean"][y] for p in pts],
        [_num(p["finetune_size"]) for p in base], [p["mean"][y] for p in base],
        [size.get(p["run_id"], math.nan) for p in pts],
        baseline_params=[size.get(p["run_id"], math.nan) for p in base])
