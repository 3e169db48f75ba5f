"""One way to turn records, verdicts and fit results into plain JSON values.

JSON has no NaN or infinity. Two conventions are kept, each where its readers need it:
``nonfinite="null"`` (records, verdicts, sinks: a missing number) and ``nonfinite="string"``
(fit results: ``"inf"`` tokens to a target that is never reached must stay distinguishable from
"unknown", and ``float("inf")`` reads it back).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from typing import Any

__all__ = ["to_json"]


def to_json(obj: Any, *, nonfinite: str = "null") -> Any:
    """Plain JSON values from dicts, lists, numpy and torch scalars and arrays, dataclasses, objects
    with ``to_dict()`` and paths; anything else becomes its ``str``."""
    if nonfinite not in ("null", "string"):
        raise ValueError(f"nonfinite must be 'null' or 'string', got {nonfinite!r}")
    return _convert(obj, nonfinite == "string")


def _convert(obj: Any, strings: bool) -> Any:
    if obj is None or isinstance(obj, (bool, str, int)):
        return obj
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        return ("nan" if math.isnan(obj) else "inf" if obj > 0 else "-inf") if strings else None
    if isinstance(obj, Mapping):
        return {str(k): _convert(v, strings) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_convert(v, strings) for v in obj]
    if hasattr(obj, "to_dict") and callable(obj.to_dict):
        return _convert(obj.to_dict(), strings)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _convert(dataclasses.asdict(obj), strings)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy / torch scalars and arrays
        try:
            return _convert(obj.tolist(), strings)
        except (TypeError, ValueError):
            pass
    return str(obj)
