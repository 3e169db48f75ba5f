"""The durable record: an append-only JSON Lines file, one object per probe result (or verdict).

It is the single source of truth: fits, diagnoses, reports and the CLI all read it. Each append is
flushed and fsynced so a crash loses at most the record being written, and a reader tolerates a
half-written last line (the file may be read while a run is still writing it).

A probe record (``kind == "probe"``; records without ``kind`` are probe records of schema 0)::

    {"schema": 1, "kind": "probe", "run_id": "...", "time": 1732530000.0, "step": 600,
     "tokens": 1228800, "params": {"non_embedding": 400000, "total": 700000},
     "task": "en-fr", "finetune_size": {"examples": 50, "tokens": 812}, "pretrained": true,
     "status": "ok", "error": null,
     "metrics": {"bleu": 18.4, "chrf": 44.1, "cross_entropy": 2.31},
     "metrics_ci": {"bleu": [16.0, 20.9], ...},
     "metric_signatures": {"bleu": "nrefs:1|case:mixed|...", ...},
     "finetune": {"steps": 60, "learning_rate": 0.001, "batch_size": 32, "seed": 0, "seconds": 4.1},
     "seconds": 6.3, "repeat": 0}

Unknown fields are kept on read and never dropped by the helpers here.
"""

from __future__ import annotations

import atexit
import csv
import functools
import json
import logging
import math
import os
import statistics
import threading
import time
import weakref
from array import array
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from transfer_probe.store import jsonl

SCHEMA_VERSION = 1
HISTORY_FILENAME = "history.jsonl"

logger = logging.getLogger("transfer_probe")

__all__ = [
    "SCHEMA_VERSION",
    "HISTORY_FILENAME",
    "HistoryWriter",
    "read_history",
    "iter_history",
    "read_points",
    "check_record",
    "iter_checked",
    "Aggregator",
    "probe_records",
    "group_key",
    "aggregate",
    "load_table",
    "iter_new_records",
]


class HistoryWriter:
    """Append records to a JSON Lines file, one fsynced line per record; whole lines or nothing.

    Safe from several threads and processes (each append holds an exclusive lock on the file). Opening
    the writer, and every append, first moves a torn tail aside (see :mod:`transfer_probe.store.jsonl`). A
    write that fails (disk full, I/O error) never raises: the file is cut back to its last whole line,
    the record is kept in memory (:attr:`held`) and retried at the next append, :meth:`flush` and at
    exit; the failure is logged once per outage.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._held: list[tuple[dict, bytes]] = []  # not yet written, oldest first
        self._failing = False
        self.torn_files: list[Path] = []  # side files holding torn tails this writer moved aside
        if self.path.exists():  # repair a torn tail now, before anyone reads or offsets into the file
            with self._lock:
                self._sync()
        _WRITERS.add(self)

    def append(self, record: Mapping[str, Any]) -> dict:
        rec = dict(record)
        rec.setdefault("schema", SCHEMA_VERSION)
        rec.setdefault("kind", "probe")
        rec.setdefault("time", time.time())
        line = json.dumps(rec, default=_json_default, allow_nan=True) + "\n"
        with self._lock:
            self._held.append((rec, line.encode("utf-8")))
            self._sync()
        return rec

    def extend(self, records: Iterable[Mapping[str, Any]]) -> list[dict]:
        return [self.append(r) for r in records]

    @property
    def held(self) -> list[dict]:
        """Records a failed write left in memory (written at the next successful write)."""
        with self._lock:
            return [r for r, _ in self._held]

    def take_held(self) -> list[dict]:
        """Hand the held records to someone else (the process executor's parent) and forget them."""
        with self._lock:
            out, self._held = [r for r, _ in self._held], []
            return out

    def flush(self) -> bool:
        """Retry the held records; ``True`` when none is left."""
        with self._lock:
            self._sync()
            return not self._held

    def close(self) -> None:
        """Last retry; what still cannot be written goes into the log as JSON, so it is not lost."""
        if self.flush():
            return
        with self._lock:
            lines = b"".join(d for _, d in self._held).decode("utf-8")
            logger.error("transfer_probe | %d record(s) could not be written to %s; here they are, append them "
                         "by hand:\n%s", len(self._held), self.path, lines.rstrip("\n"))
            self._held = []

    def _sync(self) -> None:
        try:
            with jsonl.locked(self.path) as fd:
                side = jsonl.move_torn_tail(fd, self.path)
                if side is not None:
                    self.torn_files.append(side)
                while self._held:
                    jsonl.append_line(fd, self._held[0][1])
                    self._held.pop(0)
        except OSError as err:
            if not self._failing:  # once per outage and file, whichever writer meets it first
                self._failing = True
                with _FAILING_LOCK:
                    first = self.path not in _FAILING
                    _FAILING.add(self.path)
                if not first:
                    return
                logger.warning("transfer_probe | cannot write to the history %s (%s); training continues, %d "
                               "record(s) kept in memory and retried at the next write and at the end",
                               self.path, err.strerror or err, len(self._held))
            return
        if self._failing:
            self._failing = False
            with _FAILING_LOCK:
                first = self.path in _FAILING
                _FAILING.discard(self.path)
            if not first:
                return
            logger.info("transfer_probe | the history %s is writable again; records held in memory are written",
                        self.path)


_WRITERS: weakref.WeakSet[HistoryWriter] = weakref.WeakSet()
# Files in an outage (several writers append to one history: the executor's and the callback's).
_FAILING: set[Path] = set()
_FAILING_LOCK = threading.Lock()


@atexit.register
def _close_writers() -> None:
    for w in list(_WRITERS):
        if w._held:
            w.close()


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays, paths: written as plain JSON values.
    if hasattr(obj, "item") and callable(obj.item):
        try:
            return obj.item()
        except (ValueError, TypeError):
            pass
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to the history: {obj!r}")


def iter_history(path: str | os.PathLike, *, strict: bool = False) -> Iterator[tuple[int, dict]]:
    """Yield ``(line number, record)`` for each record of a history file, one line at a time.

    A torn last line (a writer died mid-record, or is writing now) is skipped unless ``strict``. A
    line where a writer appended a whole record onto a torn one (older versions did on resume) gives
    that record, with a warning. Any other line that is not a JSON object raises ``ValueError`` naming
    the file and line number.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"history file not found: {path}")
    with open(path, encoding="utf-8", errors="replace") as fh:
        for i, line in enumerate(fh, 1):
            try:
                obj = _decode(line)  # surrounding whitespace is allowed: no strip() per line
            except json.JSONDecodeError as err:
                text = line.strip()
                if not text:
                    continue
                obj = jsonl.salvage(text)
                if obj is not None:
                    logger.warning("transfer_probe | %s:%d: a torn record precedes this record on the line; "
                                   "the torn part is skipped", path, i)
                elif not line.endswith("\n") and not strict:  # only the last line can lack its newline
                    continue
                else:
                    raise ValueError(f"{path}:{i}: not a JSON object ({err.msg}); is this a history file?") from None
            if type(obj) is not dict:
                raise ValueError(f"{path}:{i}: expected a JSON object per line, got {type(obj).__name__}")
            if "kind" not in obj:
                obj.setdefault("schema", 0)
                obj["kind"] = "probe"
            elif "schema" not in obj:
                obj["schema"] = 0
            yield i, obj


_decode = json.JSONDecoder().decode  # json.loads without its per-call argument handling


def read_history(path: str | os.PathLike, *, strict: bool = False) -> list[dict]:
    """Read every record of a history file, unknown fields kept (see :func:`iter_history`).

    Holds every record in memory; for large files :func:`read_points` keeps one record per probe point.
    """
    return [rec for _, rec in iter_history(path, strict=strict)]


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


def _finetune_examples(record: Mapping[str, Any]) -> Any:
    fs = record.get("finetune_size")
    if isinstance(fs, Mapping):
        return fs.get("examples")
    return fs


def group_key(record: Mapping[str, Any]) -> tuple[str, Any]:
    """The (task, D_f examples) group a record belongs to; a verdict is given per group.

    Raises ``ValueError`` when the record's D_f is a list or an object without a plain ``examples``
    value (it could be put in no group; :func:`check_record` says which line of a file holds it).
    """
    df = _finetune_examples(record)
    if isinstance(df, (list, dict, Mapping)):
        raise ValueError(f"a record of task {record.get('task')!r} has finetune_size "
                         f"{_short(record.get('finetune_size'))}: {_FS_EXPECTED}")
    return (str(record.get("task")), df)


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
    fs = record.get("finetune_size")
    df = fs.get("examples") if isinstance(fs, dict) or isinstance(fs, Mapping) else fs
    if isinstance(df, (list, dict)):
        return f"finetune_size is {_short(fs)}: {_FS_EXPECTED}"
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
    return (r.get("run_id"), float(r.get("tokens") or 0.0), str(r.get("task")), _finetune_examples(r),
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


class MalformedRecords(ValueError):
    """Records of a file that cannot be grouped: the first one's file, line and reason, and how many."""


def read_points(path: str | os.PathLike, *, strict: bool = False) -> list[dict]:
    """A history file read in one pass, with memory that grows with its probe points, not its lines.

    Successful probe records come back one per probe point (:meth:`Aggregator.records`: ``aggregate``
    gives exactly the points it gives from :func:`read_history`); failed probes one per point and
    status, with ``_merged_repeats["n"]`` counting them; verdicts and other records the last of each
    (kind, run, task, D_f); rows without a ``metrics`` object (a plain JSON Lines table) as they are.
    A record that cannot be grouped (a list or object as ``finetune_size``, ...) raises
    :class:`MalformedRecords` (a ``ValueError``) naming the file, the first such line, and the count.
    """
    ok, not_ok, others, rows = Aggregator(), {}, {}, []
    for _, rec in iter_checked(path, strict=strict):
        kind = rec.get("kind")
        if rec.get("schema") == 0 and "metrics" not in rec and "status" not in rec:
            rows.append(rec)  # a row of a plain JSON Lines table, not a history record: kept as it is
        elif kind != "probe":
            others[(kind, str(rec.get("run_id")), str(rec.get("task")), _finetune_examples(rec))] = rec
        elif rec.get("status", "ok") == "ok":
            ok.add(rec)
        else:
            not_ok.setdefault(str(rec.get("status")), Aggregator()).add(rec)
    return ok.records() + [r for a in not_ok.values() for r in a.records()] + list(others.values()) + rows


def iter_checked(path: str | os.PathLike, *, strict: bool = False) -> Iterator[tuple[int, dict]]:
    """:func:`iter_history`, holding back records :func:`check_record` rejects; at the end of the file
    they raise :class:`MalformedRecords` with the first one's line, its reason and how many there are.

    An error, not a skip: such a record is not one this package writes, and leaving it out would
    silently change a group's points (the user fixes the file, told where).
    """
    bad: list[tuple[int, str]] = []
    n_bad = 0
    for i, rec in iter_history(path, strict=strict):
        why = check_record(rec)
        if why is None:
            yield i, rec
            continue
        n_bad += 1
        if len(bad) < 3:
            bad.append((i, why))
    if n_bad:
        _raise_malformed(path, bad, n_bad)


def _raise_malformed(path, bad: list[tuple[int, str]], n: int) -> None:
    line, why = bad[0]
    more = "" if n == 1 else f" ({n} records like this, at lines {', '.join(str(i) for i, _ in bad)}" + (
        ", ...)" if n > len(bad) else ")")
    raise MalformedRecords(f"{path}:{line}: {why}{more}; fix or remove these records")


def load_table(path: str | os.PathLike) -> list[dict]:
    """Read any CSV / TSV / JSON Lines / JSON-array file into a list of row dicts.

    Used by the CLI so ``fit`` and ``diagnose`` work on files that are not history files. Numbers in
    CSV cells are converted to float where they parse.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"file not found: {path}")
    if path.is_dir():
        raise ValueError(f"{path} is a directory; give a history file (history.jsonl) or a CSV / JSON Lines file")
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".ndjson", ".json"}:
        if _first_char(path) == "[":  # a JSON array; anything else is read line by line, not whole
            rows = json.loads(path.read_text(encoding="utf-8"))
            if not all(isinstance(r, dict) for r in rows):
                raise ValueError(f"{path}: a JSON array must hold objects, one per row")
            return rows
        return read_points(path)
    if suffix in {".csv", ".tsv", ".txt"}:
        delimiter = "\t" if suffix == ".tsv" else ","
        with open(path, newline="", encoding="utf-8") as fh:
            sample = fh.read(4096)
            fh.seek(0)
            if suffix == ".txt":
                delimiter = "\t" if sample.count("\t") > sample.count(",") else ","
            reader = csv.DictReader(fh, delimiter=delimiter)
            if not reader.fieldnames:
                raise ValueError(f"{path}: empty file, expected a header row")
            return [{k: _maybe_float(v) for k, v in row.items()} for row in reader]
    raise ValueError(f"{path}: unknown file type {suffix!r}; expected .jsonl, .json, .csv or .tsv")


def _first_char(path: Path) -> str:
    with open(path, encoding="utf-8", errors="replace") as fh:
        while chunk := fh.read(4096):
            if chunk.strip():
                return chunk.lstrip()[0]
    return ""


def _maybe_float(v: Any) -> Any:
    if v is None or v == "":
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def iter_new_records(path: str | os.PathLike, offset: int = 0) -> tuple[list[dict], int]:
    """Records appended to ``path`` after byte ``offset``, and the new offset (complete lines only).

    Lets the callback pick up results written by a worker process without re-reading the file.
    """
    path = Path(path)
    if not path.exists():
        return [], offset
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read()
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset
    out = []
    for line in data[: end + 1].splitlines():
        if not line.strip():
            continue
        text = line.decode("utf-8", errors="replace")
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            obj = jsonl.salvage(text)  # never raise here: this runs inside trainer.train()
        if not isinstance(obj, dict):
            logger.warning("transfer_probe | %s: skipped a line that is not a whole record (%d bytes) at byte %d",
                           path, len(line), offset)
            continue
        obj.setdefault("schema", 0)
        obj.setdefault("kind", "probe")
        out.append(obj)
    return out, offset + end + 1
