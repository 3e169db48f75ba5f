"""Plain tables in: CSV / TSV and JSON arrays of row objects, for ``fit`` and ``diagnose`` on files that
are not history files. JSON Lines files go through the history reader
(:func:`transfer_probe.store.history.load_table` picks the reader by the file)."""

from __future__ import annotations

import csv
import json
import math
from array import array
from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

__all__ = ["TABLE_SUFFIXES", "JSON_SUFFIXES", "Table", "is_json_array", "read_json_array", "read_csv"]

JSON_SUFFIXES = frozenset({".jsonl", ".ndjson", ".json"})
TABLE_SUFFIXES = frozenset({".csv", ".tsv", ".txt"})


def is_json_array(path: Path) -> bool:
    """Whether a JSON file holds one array (read whole) rather than one object per line."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        while chunk := fh.read(4096):
            if chunk.strip():
                return chunk.lstrip()[0] == "["
    return False


def read_json_array(path: Path) -> list[dict]:
    rows = json.loads(path.read_text(encoding="utf-8"))
    if not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"{path}: a JSON array must hold objects, one per row")
    return rows


class Table(Sequence):
    """The rows of a CSV / TSV file, held as columns: a sequence of row dicts built when asked for.

    A list of 10^6 row dicts of three numbers holds ~300 MB; here a column of numbers is an
    ``array('d')`` (8 bytes a cell, with a mask for empty cells) and a column of text a list whose
    repeated values are one object, ~30 MB for the same table. Indexing and iteration give plain
    ``dict`` rows, every column present (``None`` for an empty cell), as the list of dicts did, and a
    table equals a list holding the same rows. Code that wants numbers takes a whole column with
    :meth:`floats`.
    """

    def __init__(self, names: Sequence[str], columns: Sequence[Sequence]):
        cols = dict(zip(names, columns, strict=True))  # a repeated header name: the last column, as csv.DictReader
        self.names = list(cols)
        first = columns[0] if columns else ()
        self._n = len(first[0]) if isinstance(first, tuple) else len(first)
        self._columns = {k: v if isinstance(v, tuple) else _compact(v) for k, v in cols.items()}

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._n))]
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError("table row index out of range")
        return {k: _cell(c, i) for k, c in self._columns.items()}

    def __iter__(self) -> Iterator[dict]:
        cols = list(self._columns.items())
        for i in range(self._n):
            yield {k: _cell(c, i) for k, c in cols}

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Table | list):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # compared by value, as the list it replaces

    def values(self, name: str) -> list:
        """One column's cells in row order, as the rows hold them (``None`` for an empty cell); a
        column the table does not have gives ``None`` for every row, as ``row.get(name)`` would."""
        col = self._columns.get(name)
        if col is None:
            return [None] * self._n
        if isinstance(col, list):
            return col
        values, empty = col
        out = values.tolist()
        if empty is not None:
            for i in (j for j, e in enumerate(empty) if e):
                out[i] = None
        return out

    def floats(self, name: str):
        """One column as a float array, NaN where a cell is empty or not a number (``KeyError`` for a
        name the table does not have)."""
        import numpy as np

        col = self._columns[name]
        if isinstance(col, tuple):
            return np.frombuffer(col[0], dtype=float).copy()
        out = np.full(self._n, np.nan)
        for i, v in enumerate(col):
            if isinstance(v, float):
                out[i] = v
        return out

    def __repr__(self) -> str:
        return f"Table({self._n} rows; columns: {', '.join(self.names)})"


_NUMBER = object()  # a cell not (yet) known to be text


class _Column:
    """One column while a file is read: floats straight into an ``array('d')`` (the usual case, no
    float object kept per cell), turned into a list at the first cell that is text."""

    def __init__(self) -> None:
        self.values: array | list = array("d")
        self.empty: bytearray | None = None
        self.n = 0
        self.text: dict = {}  # cells that are not numbers, and what they read as

    def append(self, v) -> None:
        if isinstance(self.values, array):
            if isinstance(v, float):
                self.values.append(v)
            elif v is None:
                if self.empty is None:
                    self.empty = bytearray(self.n)
                self.values.append(math.nan)
            else:  # the first text cell: the column becomes a list (empty cells None), with no mask
                self.values = [_cell((self.values, self.empty), i) for i in range(self.n)] + [v]
                self.empty = None
            if self.empty is not None:
                self.empty.append(v is None)
        else:
            self.values.append(v)
        self.n += 1

    def extend(self, cells: Sequence[str]) -> None:
        """A block of raw cells: one C-level ``float`` pass when every cell is a number (the usual
        case: 2-3x faster than a cell at a time), else cell by cell."""
        if isinstance(self.values, array):
            try:
                block = array("d", map(float, cells))
            except ValueError:  # an empty cell or text somewhere in the block
                block = None
            if block is not None:
                self.values.extend(block)
                if self.empty is not None:
                    self.empty.extend(bytes(len(block)))
                self.n += len(block)
                return
        text = self.text
        for v in cells:
            c = text.get(v, _NUMBER)
            if c is _NUMBER:
                c = _maybe_float(v)
                if not isinstance(c, float):  # text repeats ('true', 'en-fr'): convert each value once
                    text[v] = c
            self.append(c)

    def done(self) -> tuple | list:
        return (self.values, self.empty) if isinstance(self.values, array) else _compact(self.values)


def _compact(values: Sequence) -> tuple | list:
    """A column of floats and empty cells as ``(array('d'), mask of empty cells or None)``; any other
    column as a list, each repeated value one object."""
    if all(v is None or isinstance(v, float) for v in values):
        empty = bytearray(v is None for v in values) if any(v is None for v in values) else None
        return array("d", (math.nan if v is None else v for v in values)), empty
    seen: dict = {}
    return [seen.setdefault(v, v) if isinstance(v, str) else v for v in values]


def _cell(col: tuple | list, i: int):
    if isinstance(col, list):
        return col[i]
    values, empty = col
    return None if empty is not None and empty[i] else values[i]


def read_csv(path: Path) -> Table:
    """A CSV / TSV file (``.txt``: whichever of tab and comma the first 4 kB hold more of) as a
    :class:`Table`, numbers converted to float where they parse, empty cells ``None``."""
    suffix = path.suffix.lower()
    delimiter = "\t" if suffix == ".tsv" else ","
    with open(path, newline="", encoding="utf-8") as fh:
        sample = fh.read(4096)
        fh.seek(0)
        if suffix == ".txt":
            delimiter = "\t" if sample.count("\t") > sample.count(",") else ","
        reader = csv.reader(fh, delimiter=delimiter)
        names = next(reader, None)
        if not names:
            raise ValueError(f"{path}: empty file, expected a header row")
        columns = [_Column() for _ in names]
        width = len(names)
        while block := list(islice(reader, 1 << 13)):  # ~2 MB of raw cells at a time
            # blank lines are skipped and short rows padded with empty cells, as csv.DictReader does;
            # cells beyond the header are dropped
            rows = [r if len(r) == width else (r + [""] * (width - len(r)))[:width] for r in block if r]
            for col, cells in zip(columns, zip(*rows, strict=True) if rows else (), strict=False):
                col.extend(cells)
    return Table(names, [c.done() for c in columns])


def _maybe_float(v: Any) -> Any:
    if v is None or v == "":
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return v
