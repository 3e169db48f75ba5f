"""What a probe record means, without a file: its D_f (:func:`finetune_examples`), its (task, D_f)
group (:func:`group_key`, :func:`group_records`), whether it can be grouped (:func:`check_record`), and
its repeats collapsed into probe points (:class:`Aggregator`, :func:`aggregate`).

The file side (writing, reading, tables) is :mod:`transfer_probe.store.history`; it re-exports these
names, so ``from transfer_probe.store.history import aggregate`` keeps working.
"""

from __future__ import annotations

import functools
import json
import math
import statistics
from array import array
from collections.abc import Iterable, Mapping
from typing import Any

from transfer_probe.store.tables import Table

__all__ = ["examples", "finetune_examples", "is_history", "probe_records", "group_key", "group_records", "check_record", "MERGED",
           "Aggregator", "aggregate"]


def is_history(rows: Iterable[Mapping[str, Any]]) -> bool:
    """Whether rows are history records (a ``metrics`` object per probe) rather than a plain table."""
    if isinstance(rows, Table):  # a CSV: its cells are never objects (and its rows need not be built)
        return False
    return any(isinstance(r.get("metrics"), Mapping) for r in rows)


def probe_records(records: Iterable[Mapping[str, Any]], *, ok_only: bool = True) -> list[dict]:
    """The probe results among ``records`` (verdict records and, by default, failed probes dropped)."""
    out = []
    for r in records:
        if r.get("kind", "probe") != "probe":
            continue
        if ok_only and r.get("status", "ok") != "ok":
            continue
        out.append(dict(r))
    return out


def examples(finetune_size: Any) -> Any:
    """D_f in examples from a ``finetune_size`` value: a count, or an object whose ``examples`` is one
    (the one place that unwraps it)."""
    if isinstance(finetune_size, Mapping):
        return finetune_size.get("examples")
    return finetune_size


def finetune_examples(record: Mapping[str, Any]) -> Any:
    """A record's D_f in examples (:func:`examples` of its ``finetune_size``)."""
    return examples(record.get("finetune_size"))


_finetune_examples = finetune_examples  # the name tests and older callers import


def group_key(record: Mapping[str, Any]) -> tuple[str, Any]:
    """The (task, D_f examples) group a record belongs to; a verdict is given per group.

    Raises ``ValueError`` when the record's D_f is a list or an object without a plain ``examples``
    value (it could be put in no group; :func:`check_record` says which line of a file holds it).
    """
    df = finetune_examples(record)
    if isinstance(df, (list, dict, Mapping)):
        raise ValueError(f"a record of task {record.get('task')!r} has finetune_size "
                         f"{_short(record.get('finetune_size'))}: {_FS_EXPECTED}")
    return (str(record.get("task")), df)


def group_records(records: Iterable[Mapping[str, Any]]) -> dict[tuple[str, Any], list[dict]]:
    """The successful probe records by (task, D_f) group, in file order: each group's pretrained
    records, then the baseline (no pre-training) records of the same group. A group is made by its
    pretrained records; baseline records of a group with none are left out. The one grouping the CLI
    and the verdicts use."""
    pre: dict[tuple, list[dict]] = {}
    base: dict[tuple, list[dict]] = {}
    for r in probe_records(records):
        (pre if r.get("pretrained", True) else base).setdefault(group_key(r), []).append(r)
    return {key: recs + base.get(key, []) for key, recs in pre.items()}


_FS_EXPECTED = "expected a number of examples or an object with a numeric 'examples'"


def _short(v: Any, n: int = 60) -> str:
    text = json.dumps(v, default=str) if not isinstance(v, str) else repr(v)
    return text if len(text) <= n else text[: n - 3] + "..."


def check_record(record: Mapping[str, Any]) -> str | None:
    """Why a probe record cannot be grouped or aggregated (``None``: it can).

    Checks the fields the readers key on: ``finetune_size`` (a number, or an object whose ``examples``
    is one), ``run_id`` (a plain value), ``tokens`` (a number) and ``metrics`` (an object). A null or
    NaN metric value is not a problem here: it is a missing value, left out of the means.
    """
    if isinstance(finetune_examples(record), (list, dict)):
        return f"finetune_size is {_short(record.get('finetune_size'))}: {_FS_EXPECTED}"
    rid = record.get("run_id")
    if isinstance(rid, (list, dict)):
        return f"run_id is {_short(rid)}: expected a string"
    tok = record.get("tokens")
    if record.get("kind", "probe") == "probe" and isinstance(record.get("metrics"), Mapping) and not (
            type(tok) in (int, float) and 0 <= tok < math.inf):
        # A probe result off the curve: None would count as 0 tokens (the baseline), NaN as no point.
        if not _finite(tok) or float(tok) < 0:
            return f"tokens is {_short(tok)}: expected a number of tokens >= 0"
    if tok is not None and type(tok) is not float and type(tok) is not int:
        try:
            float(tok)
        except (TypeError, ValueError):
            return f"tokens is {_short(tok)}: expected a number"
    m = record.get("metrics")
    if m is not None and type(m) is not dict and not isinstance(m, Mapping):
        return f"metrics is {_short(m)}: expected an object of metric values"
    return None


# Set on a record that stands for several repeats of one probe point (see Aggregator.records):
# {"n": repeats, "step": highest step, "values": {metric: [finite values, file order]}}.
MERGED = "_merged_repeats"


class _Point:
    """The running state of one probe point: its first record, repeat count, values per metric."""

    __slots__ = ("first", "n", "step", "values")

    def __init__(self, first: Mapping[str, Any]):
        self.first, self.n, self.step = first, 0, None
        self.values: dict[str, array] = {}

    def _step(self, step: Any) -> None:
        self.step = step if self.step is None else max(self.step, step)

    def add(self, r: Mapping[str, Any]) -> None:
        merged = r.get(MERGED)
        if merged is not None:
            self.n += merged["n"]
            self._step(merged["step"])
            for m in r.get("metrics") or {}:
                self.values.setdefault(m, array("d")).extend(merged["values"].get(m, ()))
            return
        self.n += 1
        self._step(r.get("step") or 0)
        for m, v in (r.get("metrics") or {}).items():
            vals = self.values.get(m)
            if vals is None:
                vals = self.values[m] = array("d")
            if type(v) is float:  # the common case, without _finite's call and float()
                if v - v == 0.0:  # finite: nan - nan and inf - inf are nan
                    vals.append(v)
            elif _finite(v):
                vals.append(float(v))


def _point_key(r: Mapping[str, Any]) -> tuple:
    return (r.get("run_id"), float(r.get("tokens") or 0.0), str(r.get("task")), finetune_examples(r),
            bool(r.get("pretrained", True)))


class Aggregator:
    """Running per-point state of probe records fed one at a time: memory grows with the number of
    probe points, not of records. ``points()`` equals ``aggregate(records fed)``, value for value."""

    def __init__(self) -> None:
        self._points: dict[tuple, _Point] = {}

    def add(self, record: Mapping[str, Any]) -> None:
        key = _point_key(record)
        pt = self._points.get(key)
        if pt is None:
            pt = self._points[key] = _Point(record)
        pt.add(record)

    def __len__(self) -> int:
        return len(self._points)

    def points(self, metrics: Iterable[str] | None = None) -> list[dict]:
        out = [_finish(key, pt, metrics) for key, pt in self._points.items()]
        out.sort(key=lambda p: (p["pretrained"], p["tokens"]))
        return out

    def records(self) -> list[dict]:
        """One record per point, standing for all its repeats: ``aggregate`` gives the same points
        from them as from the records fed. ``metrics`` holds the means (``None``: no finite value)."""
        out = []
        for (run_id, tokens, _task, _df, pretrained), pt in self._points.items():
            f = pt.first
            rec = {k: f[k] for k in _POINT_FIELDS if k in f}
            rec.update(run_id=run_id, tokens=tokens, pretrained=pretrained, step=pt.step,
                       metrics={m: (sum(v) / len(v) if v else None) for m, v in pt.values.items()})
            rec[MERGED] = {"n": pt.n, "step": pt.step, "values": pt.values}
            out.append(rec)
        return out


# What a merged record keeps of its first record: what grouping, fits and diagnoses read.
_POINT_FIELDS = ("schema", "kind", "status", "error", "run_id", "task", "finetune_size", "params", "metrics_ci")


def _finish(key: tuple, pt: _Point, metrics: Iterable[str] | None) -> dict:
    run_id, tokens, task, df, pretrained = key
    names = set(metrics) if metrics is not None else set(pt.values)
    mean, sem, values = {}, {}, {}
    for m in sorted(names):
        vals = list(pt.values.get(m, ()))
        if not vals:
            continue
        values[m] = vals
        mu = sum(vals) / len(vals)
        mean[m] = mu
        if len(vals) > 1:
            var = sum((v - mu) ** 2 for v in vals) / (len(vals) - 1)
            sem[m] = math.sqrt(var / len(vals))
        else:
            ci = (pt.first.get("metrics_ci") or {}).get(m)
            sem[m] = (float(ci[1]) - float(ci[0])) / (2 * _z_of(pt.first)) if ci and len(ci) == 2 else float("nan")
    return {"run_id": run_id, "tokens": tokens, "task": task, "finetune_size": df, "pretrained": pretrained,
            "step": pt.step, "n": pt.n, "mean": mean, "sem": sem, "values": values}


def _z_of(record: Mapping[str, Any]) -> float:
    """The normal quantile of the level of a record's intervals (``ci_level``; records written before
    it existed have 90% intervals)."""
    level = record.get("ci_level")
    try:
        level = float(level) if level is not None else 0.9
    except (TypeError, ValueError):
        level = 0.9
    if not 0 < level < 1:
        level = 0.9
    return _normal_quantile(0.5 + level / 2)


@functools.lru_cache(maxsize=32)
def _normal_quantile(p: float) -> float:
    return statistics.NormalDist().inv_cdf(p)


def aggregate(records: Iterable[Mapping[str, Any]], metrics: Iterable[str] | None = None) -> list[dict]:
    """Collapse the repeats of each (run, tokens, task, D_f, pretrained) point into one point.

    Returns dicts sorted by (pretrained, tokens) with ``tokens``, ``task``, ``finetune_size``,
    ``pretrained``, ``run_id``, ``n`` (repeats), ``mean`` and ``sem`` (dicts per metric) and
    ``values`` (the per-repeat values). The standard error of a single repeat comes from its
    bootstrap interval when recorded (its half-width over the normal quantile of the record's
    ``ci_level``, 0.9 when not recorded), else it is ``nan``.
    Records that stand for several repeats (:meth:`Aggregator.records`, :func:`read_points`) count as
    those repeats.
    """
    agg = Aggregator()
    for r in records:
        if r.get("kind", "probe") == "probe" and r.get("status", "ok") == "ok":
            agg.add(r)
    return agg.points(metrics)


def _finite(v: Any) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False
