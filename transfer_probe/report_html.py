"""The report's small HTML pieces: escaping, tables, figures, numbers with their errors. Shared by
:mod:`transfer_probe.report` and its sections (``report_fits``, ``report_compare``, ``report_transferred``)."""

from __future__ import annotations

import html
import math
from typing import Any


def figure(b64: str, caption: str, note: str = "", attrs: str = "") -> str:
    return (f"<figure><img alt='{esc(caption)}'{attrs} src='data:image/png;base64,{b64}'>"
            f"<figcaption>{esc(caption)}{note}</figcaption></figure>")


def pm(p, metric, digits=1):
    if metric not in p["mean"]:
        return ""
    m = p["mean"][metric]
    s = p["sem"].get(metric, float("nan"))
    return f"{m:.{digits}f}" + (f" ± {s:.{digits}f}" if math.isfinite(s) else "")


def fmt(v):
    return "n/a" if v is None or not math.isfinite(float(v)) else f"{float(v):.2g}"


def num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def html_table(headers, rows, left=1, raw=()):
    """An HTML table; ``left``: the first n columns (or the set of columns) aligned left, for text;
    cells escaped except in the columns ``raw`` names (they hold markup made here)."""
    lcol = (lambda i: i < left) if isinstance(left, int) else (lambda i: i in left)  # noqa: E731
    th = "".join(f"<th class='{'l' if lcol(i) else ''}'>{h}</th>" for i, h in enumerate(headers))
    body = []
    for row in rows:
        cells = []
        for i, c in enumerate(row):
            text = str(c) if i in raw else esc(c)
            cells.append(f"<td class='{'l' if lcol(i) else ''}'>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"
