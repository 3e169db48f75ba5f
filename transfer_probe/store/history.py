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
import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from transfer_probe.store import jsonl, tables

# The record side, re-exported here where callers have always imported it from.
from transfer_probe.store.records import (  # noqa: F401
    MERGED,
    Aggregator,
    _finetune_examples,
    _finite,
    aggregate,
    check_record,
    finetune_examples,
    group_key,
    group_records,
    probe_records,
)

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
            others[(kind, str(rec.get("run_id")), str(rec.get("task")), finetune_examples(rec))] = rec
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


def load_table(path: str | os.PathLike) -> Sequence[dict]:
    """Read any CSV / TSV / JSON Lines / JSON-array file into a sequence of row dicts (a list; for
    CSV / TSV a :class:`~transfer_probe.store.tables.Table`, which holds columns).

    Used by the CLI so ``fit`` and ``diagnose`` work on files that are not history files. Numbers in
    CSV cells are converted to float where they parse (:mod:`transfer_probe.store.tables`); JSON Lines
    files are read in one pass (:func:`read_points`).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"file not found: {path}")
    if path.is_dir():
        raise ValueError(f"{path} is a directory; give a history file (history.jsonl) or a CSV / JSON Lines file")
    suffix = path.suffix.lower()
    if suffix in tables.JSON_SUFFIXES:
        # a JSON array is read whole; anything else line by line
        return tables.read_json_array(path) if tables.is_json_array(path) else read_points(path)
    if suffix in tables.TABLE_SUFFIXES:
        return tables.read_csv(path)
    raise ValueError(f"{path}: unknown file type {suffix!r}; expected .jsonl, .json, .csv or .tsv")


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
