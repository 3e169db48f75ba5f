"""Plain tables in: CSV / TSV and JSON arrays of row objects, for ``fit`` and ``diagnose`` on files that
are not history files. JSON Lines files go through the history reader
(:func:`transfer_probe.store.history.load_table` picks the reader by the file)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

__all__ = ["TABLE_SUFFIXES", "JSON_SUFFIXES", "is_json_array", "read_json_array", "read_csv"]

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


def read_csv(path: Path) -> list[dict]:
    """A CSV / TSV file (``.txt``: whichever of tab and comma the first 4 kB hold more of) as row dicts,
    numbers converted to float where they parse, empty cells ``None``."""
    suffix = path.suffix.lower()
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


def _maybe_float(v: Any) -> Any:
    if v is None or v == "":
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return v
