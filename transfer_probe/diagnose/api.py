"""The entry points: :func:`diagnose` one (task, D_f) group of records, :func:`diagnose_all` a whole
history, :func:`diagnose_rows` a plain table (CSV / JSON Lines)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from transfer_probe.diagnose.rules import Diagnosis
from transfer_probe.diagnose.verdict import DEFAULT_THRESHOLDS, MissingColumnError, Thresholds, Verdict
from transfer_probe.store.history import group_key, probe_records
from transfer_probe.store.records import Aggregator, group_records
from transfer_probe.store.tables import Table

# The most probe points one verdict reads: the sequential test replays every look, O(points^2)
# (measured: 0.3 s of rules at 100 points, 4 s at 300, 28 s at 1000, without recorded errors).
MAX_POINTS = 1000

# Score metrics tried, in order, when the caller names none (higher is better for all of them).
_SCORE_CANDIDATES = ("bleu", "chrf", "exact_match", "pass@1", "accuracy", "acc", "score")

# Public entry points


def diagnose(
    records: Iterable[Mapping[str, Any]],
    budget_tokens: float | None = None,
    target: float | None = None,
    *,
    metric: str | None = None,
    ce: str | None = "cross_entropy",
    thresholds: Thresholds | None = None,
) -> Verdict:
    """Diagnose one (task, D_f) group: its pretrained probe records plus its baseline records.

    ``metric`` is the score (higher is better; default ``bleu``, else the first of chrF, exact
    match, pass@1, accuracy found); ``ce`` the cross-entropy-type metric (lower is better) used for
    the misalignment contrast, ``None`` to ignore it. ``budget_tokens``: where to predict the score;
    ``target``: a score whose token cost is estimated.

        >>> recs = [{"task": "t", "finetune_size": 50, "tokens": d, "metrics": {"bleu": b}}
        ...         for d, b in [(1e8, 10.0), (2e8, 10.5)]]
        >>> diagnose(recs).status
        'insufficient_data'

    Raises ``ValueError`` when the records hold several (task, D_f) groups or several runs, or
    no successful pretrained probe.
    """
    th = thresholds or DEFAULT_THRESHOLDS
    recs = probe_records(records)
    check_tokens(recs)
    pre = [r for r in recs if r.get("pretrained", True)]
    if not pre:
        raise ValueError("diagnose: no successful probe record of a pretrained model among the records "
                         "(baseline-only or failed probes cannot be diagnosed)")
    groups = sorted({group_key(r) for r in pre}, key=str)
    if len(groups) > 1:
        raise ValueError(f"diagnose: the records mix {len(groups)} (task, D_f) groups {groups}; pass one "
                         f"group, or use diagnose_all(records) to get a verdict per group")
    task, df = groups[0]
    base = [r for r in recs if not r.get("pretrained", True)]
    base_groups = {group_key(r) for r in base}
    if base_groups - {(task, df)}:
        raise ValueError(f"diagnose: baseline records of other groups {sorted(base_groups - {(task, df)}, key=str)} "
                         f"mixed with group {(task, df)}; pass only this group's baseline")
    runs = sorted({str(r.get("run_id")) for r in pre})
    if len(runs) > 1:
        raise ValueError(f"diagnose: the records of group {(task, df)} come from {len(runs)} runs {runs}; "
                         f"diagnose one run at a time (filter on record['run_id'])")
    n_points = len({float(r["tokens"]) for r in pre})
    if n_points > MAX_POINTS:
        raise ValueError(_too_many_points(f"{n_points} probe points", (task, df)))
    if metric is None:
        metric = _pick_metric(pre)
    elif not any(metric in (r.get("metrics") or {}) for r in pre):
        have = sorted({m for r in pre for m in (r.get("metrics") or {})})
        raise ValueError(f"diagnose: metric {metric!r} is in no probe record of {(task, df)}; recorded: {have}")
    if ce is not None and not any(ce in (r.get("metrics") or {}) for r in pre):
        ce = None
    return Diagnosis(pre, base, task, df, pre[0].get("run_id"), metric, ce, budget_tokens, target, th).run()


def diagnose_all(
    records: Iterable[Mapping[str, Any]],
    budget_tokens: float | None = None,
    target: float | None = None,
    **kwargs: Any,
) -> dict[tuple[str, Any], Verdict]:
    """A verdict per (task, D_f) group of a whole history (baseline records go to their group).

        >>> verdicts = diagnose_all(read_history("history.jsonl"), budget_tokens=2e10)   # doctest: +SKIP
        >>> verdicts[("en-fr", 2000)].status                                              # doctest: +SKIP
        'misaligned'

    Keyword arguments go to :func:`diagnose` (``metric``, ``ce``, ``thresholds``).
    """
    groups = group_records(records)
    if not groups:
        raise ValueError("diagnose_all: no successful probe record of a pretrained model in the history")
    return {key: diagnose(groups[key], budget_tokens, target, **kwargs) for key in sorted(groups, key=str)}


def diagnose_rows(
    rows: Sequence[Mapping[str, Any]],
    x: str = "tokens",
    y: str = "bleu",
    ce: str | None = "cross_entropy",
    budget_tokens: float | None = None,
    target: float | None = None,
    **kwargs: Any,
) -> Verdict:
    """Diagnose a plain table (CSV / JSON Lines rows): ``x`` tokens column, ``y`` score column, ``ce``
    cross-entropy-type column (lower is better; ``None`` to ignore; the default ``cross_entropy`` is
    skipped quietly when absent, any other missing name is an error).

    Optional columns: ``{y}_sem`` / ``{ce}_sem`` (standard errors), ``pretrained`` (false marks
    no-pretraining baseline rows), ``task``. Rows sharing a tokens value are repeats.

        >>> rows = [{"tokens": d, "bleu": b} for d, b in [(1e8, 10.0), (2e8, 12.0)]]
        >>> diagnose_rows(rows).status
        'insufficient_data'
    """
    if not isinstance(rows, Sequence):
        rows = list(rows)
    # a CSV Table knows its columns without building its rows
    cols = list(rows.names) if isinstance(rows, Table) else list(dict.fromkeys(k for r in rows if isinstance(r, Mapping) for k in r))
    if not len(rows) or not cols:
        raise ValueError("diagnose_rows: the table has no rows")
    for flag, name in (("--x", x), ("--y", y)):
        if name not in cols:
            raise MissingColumnError(f"column {name!r} ({flag}) is not in the table; columns: {', '.join(map(str, cols))}")
    if ce is not None and ce not in cols:
        if ce != "cross_entropy":
            raise MissingColumnError(f"column {ce!r} (--ce) is not in the table; columns: {', '.join(map(str, cols))} "
                                     f"(use --ce none to diagnose without a cross-entropy contrast)")
        ce = None
    tasks = {str(r.get("task")) for r in rows if isinstance(r, Mapping) and r.get("task") is not None}
    task = tasks.pop() if len(tasks) == 1 else "table"
    # Rows sharing a tokens value are repeats of one point: each row's record goes into the running
    # per-point state at once (memory grows with points, not rows: a 10^6-row table).
    points = Aggregator()
    for i, r in enumerate(rows):
        if isinstance(r, Mapping) and (rec := _row_record(i, r, x, y, ce, task)) is not None:
            points.add(rec)
            if len(points) > MAX_POINTS + 1:  # + the baseline point; said before 10^6 points are held
                raise ValueError(_too_many_points(f"more than {MAX_POINTS} probe points by row {i + 1}", (task, None)))
    recs = points.records()
    if not recs:
        raise ValueError(f"diagnose_rows: no row has a numeric {y!r}")
    return diagnose(recs, budget_tokens, target, metric=y, ce=ce, **kwargs)


def _too_many_points(count: str, group: tuple) -> str:
    return (f"diagnose: group {group} has {count} (distinct token counts); a verdict reads at most "
            f"{MAX_POINTS} (it replays every look: ~30 s at {MAX_POINTS}). Records or rows at the same tokens are "
            "repeats of one point; a distinct token count in every row is a dense curve, not probe points: "
            "average it into points first (e.g. per 1% of the tokens), or fit it with fit_rows / `transfer-probe fit`")


_Z90 = 1.6448536269514722  # the 90% normal quantile: a row's standard error becomes a 90% interval


def _row_record(i: int, r: Mapping[str, Any], x: str, y: str, ce: str | None, task: str) -> dict | None:
    """One table row as a probe record (None when its score is empty); ``{name}_sem`` columns become
    90% intervals, as the history stores them."""
    tokens = _num(r.get(x))
    if tokens is None or tokens < 0:
        raise ValueError(f"row {i + 1}: column {x!r} must be a number of tokens >= 0, got {r.get(x)!r}")
    score = _num(r.get(y))
    if score is None:
        return None
    metrics, ci = {y: score}, {}
    for name in (y, ce):
        v = _num(r.get(name)) if name is not None else None
        if v is None:
            continue
        metrics[name] = v
        s = _num(r.get(f"{name}_sem"))
        if s is not None and s > 0:
            ci[name] = [v - _Z90 * s, v + _Z90 * s]
    pretrained = r.get("pretrained", True)
    if isinstance(pretrained, str):
        pretrained = pretrained.strip().lower() not in {"false", "0", "no", ""}
    elif isinstance(pretrained, float):
        pretrained = bool(pretrained)
    return {"run_id": "table", "task": task, "finetune_size": None, "tokens": tokens, "pretrained": bool(pretrained),
            "status": "ok", "metrics": metrics, "metrics_ci": ci, "ci_level": 0.9}


def check_tokens(records: Iterable[Mapping[str, Any]], key: str = "tokens") -> None:
    """``ValueError`` for a record whose tokens are missing, NaN, infinite or negative.

    Such a value cannot be placed on the curve: dropping the record would hide it, and a value <= 0
    would make a pretrained record count as the no-pretraining baseline.
    """
    for r in records:
        v = r.get(key)
        t = _num(v)
        if t is None or t < 0:
            where = ", ".join(f"{k} {r[k]!r}" for k in ("run_id", "task", "step") if r.get(k) is not None)
            raise ValueError(f"a probe record has {key}={v!r}, not a number of tokens >= 0"
                             + (f" ({where})" if where else ""))


# The diagnosis itself
def _pick_metric(recs: list[Mapping[str, Any]]) -> str:
    have = {m for r in recs for m in (r.get("metrics") or {})}
    for name in _SCORE_CANDIDATES:
        if name in have:
            return name
    raise ValueError(f"diagnose: no score metric among {sorted(have)}; name one with metric=... "
                     f"(higher is better, e.g. 'bleu')")


def _num(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


