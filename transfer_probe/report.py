"""A self-contained HTML report: plots (embedded PNG) and tables per run, task and D_f.

    from transfer_probe.report import write_report
    write_report(["run/transfer_probe/history.jsonl"], "report.html", budget_tokens=2e10, target=25)

It reads history files only (the single source of truth) and recomputes fits and verdicts with
``transfer_probe.laws`` and ``transfer_probe.diagnose``, so a report always agrees with the CLI.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from transfer_probe.report_compare import which_run_section

# LAW_NAMES, SHORT_NAMES, _count: moved with their sections, importable from here as before
from transfer_probe.report_fits import (  # noqa: F401
    LAW_NAMES,
    SHORT_NAMES,
    ce_forecast,
    ce_row,
    diagnosis,
    empty_fits,
    verdict_fits,
)
from transfer_probe.report_frontier import FrontierTable, frontier_section, read_frontier_table
from transfer_probe.report_html import esc, figure, html_table, num, pm
from transfer_probe.report_log import changes_html, changes_of, log_html
from transfer_probe.report_transferred import _count, transferred_section  # noqa: F401
from transfer_probe.store.history import Aggregator, aggregate, group_key, iter_checked
from transfer_probe.text import format_tokens, label

__all__ = ["write_report", "render_report", "check_output"]

# Written at the top of every report: the one kind of existing file ``write_report`` may replace.
MARKER = "<!-- transfer_probe report: this file may be overwritten by transfer-probe report -->"
_LEGACY = ".s-no_transfer{background:#fff8c5"  # reports written before the marker carry this CSS

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#1b1f24;line-height:1.45;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem} h2{font-size:1.25rem;margin-top:2.2rem;border-bottom:1px solid #ddd}
h3{font-size:1.05rem;margin:1.2rem 0 .4rem}
.meta{color:#57606a;font-size:.9rem}
.status{display:inline-block;padding:.1rem .55rem;border-radius:1rem;font-weight:600;font-size:.85rem}
.s-aligned{background:#dafbe1;color:#116329}.s-misaligned,.s-law_break{background:#ffebe9;color:#a40e26}.s-suspected{background:#fff8c5;color:#7d4e00}
.s-no_transfer{background:#fff8c5;color:#7d4e00}.s-insufficient_data{background:#eaeef2;color:#424a53}
.plots{display:flex;flex-wrap:wrap;gap:1rem}
table{border-collapse:collapse;font-size:.85rem;margin:.4rem 0 1rem}
th,td{border:1px solid #d0d7de;padding:.25rem .5rem;text-align:right}th{background:#f6f8fa}
td.l,th.l{text-align:left}
pre.log{background:#f6f8fa;padding:.6rem;font-size:.8rem;white-space:pre-wrap;border-radius:6px}
ul.reasons{margin:.3rem 0}
figure{margin:0;max-width:540px;flex:1 1 460px}figure img{width:100%;border:1px solid #eee}
figcaption{font-size:.8rem;color:#57606a}
.superseded{opacity:.5}ul.changes{margin:.2rem 0 .8rem;font-size:.85rem}
table.odds td.close{background:#eaeef2;color:#57606a}table.odds td.na{color:#8c959f}
"""


def write_report(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    budget_tokens: float | None = None,
    target: float | None = None,
    title: str = "transfer_probe report",
    run_id: str | None = None,
    frontier: str | os.PathLike | None = None,
    frontier_options: Mapping[str, Any] | None = None,
) -> Path:
    """Read history files, write one self-contained HTML file, return its path.

    ``run_id``: only that run's records (``ValueError`` listing the runs when no record has it).
    ``frontier``: a table of runs for the compute-optimal frontier section, its columns in
    ``frontier_options`` (``x``, ``y``, ``compute``, ``run``: :func:`report_frontier.read_frontier_table`)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    check_output(output, [*paths, *([frontier] if frontier is not None else [])])  # a refusal costs nothing
    table = read_frontier_table(frontier, **(frontier_options or {})) if frontier is not None else None
    # Streamed: each file is summarised while it is read, so memory grows with its probe points only.
    runs: set[str] = set()
    sources = [(Path(p), _checked(Path(p), run_id, runs)) for p in paths]
    page = render_report(sources, budget_tokens=budget_tokens, target=target, title=title, frontier=table)
    if run_id is not None and str(run_id) not in runs:
        raise ValueError(f"no records of run_id {run_id}; runs in the files: {', '.join(sorted(runs)) or 'none'}")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:  # via a temporary file: a failed write never leaves half a report in place of the old one
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return output


def check_output(output: str | os.PathLike, inputs: Iterable[str | os.PathLike] = ()) -> None:
    """Raise ``ValueError`` unless ``output`` may be written: never an input, never an existing file
    that is not a report this tool wrote (an empty file has nothing to lose)."""
    out = Path(output)
    if any(_same_file(out, p) for p in inputs):
        raise ValueError(f"refusing to write the report to {out}: it is an input file; choose another -o")
    if not out.exists() or out.is_dir():
        return  # a directory fails at write time with its own error
    try:
        with open(out, "rb") as fh:
            head = fh.read(8192).decode("utf-8", errors="replace")
    except OSError as err:
        raise ValueError(f"cannot check the existing file {out}: {err.strerror or err}") from None
    if head and MARKER not in head and _LEGACY not in head:
        raise ValueError(f"refusing to overwrite {out}: it exists and is not a report written by transfer-probe; "
                         "delete it or choose another -o")


def _same_file(a: Path, b: str | os.PathLike) -> bool:
    try:
        return os.path.samefile(a, b)  # also through symlinks and hard links
    except OSError:
        return False


def render_report(
    sources: Iterable[tuple[Path, Iterable[dict]]],
    *,
    budget_tokens: float | None = None,
    target: float | None = None,
    title: str = "transfer_probe report",
    frontier: FrontierTable | None = None,
) -> str:
    parts = [f"<h1>{esc(title)}</h1>",
             f"<p class='meta'>written {esc(time.strftime('%Y-%m-%d %H:%M:%S'))}"
             + (f" &middot; budget {format_tokens(budget_tokens)} tokens" if budget_tokens else "")
             + (f" &middot; target BLEU {target:g}" if target is not None else "") + "</p>"]
    summary_rows, sections, runs, laws = [], [], [], {}
    for path, records in sources:
        for run_id, run in _summarise(path, records).items():
            points = run["points"].records()  # one record per probe point, standing for its repeats
            runs.append((path, run_id, points))
            for (task, df), g in sorted(run["groups"].items(), key=lambda kv: (str(kv[0][0]), kv[0][1] or 0)):
                sec, row = _group_section(path, run_id, task, df, g, points, budget_tokens, target)
                sections.append(sec)
                summary_rows.append(row)
                laws[(len(runs) - 1, str(task), str(df))] = row[6]  # the verdict's law (trusted or not)
    if not sections:
        parts.append("<p>No probe results in these files yet.</p>")
        parts.append(frontier_section(frontier, runs))
    else:
        parts.append("<h2>Summary</h2>")
        parts.append(html_table(["run", "task", "D_f", "probes", "last BLEU", "verdict", "law (trusted)",
                             "recommendation", "prediction at budget"], summary_rows, left={0, 1, 5, 6, 7}))
        parts.append(which_run_section(runs, budget_tokens, laws))
        parts.append(transferred_section(runs))
        parts.append(frontier_section(frontier, runs))
        parts.extend(sections)
    body = "\n".join(p for p in parts if p)
    return (f"<!DOCTYPE html>\n{MARKER}\n<html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<style>{_CSS}</style></head><body>{body}</body></html>")


# A report's size must not grow with the history's length: tables and log lines are cut to these.
MAX_TABLE_ROWS = 60
MAX_LOG_LINES = 40


def _checked(path: Path, run_id: str | None = None, runs: set[str] | None = None) -> Iterator[dict]:
    for _, rec in iter_checked(path):
        if run_id is None:
            yield rec
            continue
        if rec.get("run_id") is not None:
            runs.add(str(rec["run_id"]))
            if str(rec["run_id"]) == str(run_id):
                yield rec


def _summarise(path: Path, records: Iterable[dict]) -> dict[str, dict]:
    """Per run: its probe points (an :class:`Aggregator`) and, per (task, D_f) group of pretrained
    probes, the verdicts' (tokens, status) in file order and the log lines, each kept once and capped."""
    runs: dict[str, dict] = {}
    for r in records:
        run = runs.setdefault(str(r.get("run_id") or path.parent.name or path.stem),
                              {"points": Aggregator(), "groups": {}})
        kind = r.get("kind", "probe")
        if kind == "probe":
            ok = r.get("status", "ok") == "ok"
            if ok:
                run["points"].add(r)
            if r.get("pretrained", True):
                g = _group(run, group_key(r))
                if r.get("status") == "failed":
                    _log(g, r.get("tokens"), None, f"probe failed at {format_tokens(r.get('tokens'))} tokens "
                                                   f"(repeat {r.get('repeat', 0)}): {r.get('error')}")
        elif kind == "verdict":
            g = _group(run, group_key(r), create=False)
            if g is not None:
                g["verdicts"].setdefault((r.get("tokens"), r.get("status")), None)
                if r.get("message"):
                    _log(g, r.get("tokens"), r.get("status"), str(r["message"]))
    return runs


def _new_group() -> dict:
    return {"verdicts": {}, "head": [], "tail": deque(maxlen=MAX_LOG_LINES - MAX_LOG_LINES // 2), "more_log": 0}


def _group(run: dict, key: tuple, create: bool = True) -> dict | None:
    if key not in run["groups"]:
        if not create:
            # Verdicts may come before the first probe of their group in the file: keep them aside.
            return run.setdefault("early", {}).setdefault(key, _new_group())
        early = run.get("early", {}).pop(key, None)
        run["groups"][key] = early or _new_group()
    return run["groups"][key]


def _log(g: dict, tokens: Any, status: str | None, line: str) -> None:
    """Keep the first and the newest log lines (half of MAX_LOG_LINES each), each once, and count the rest."""
    if any(line == kept[2] for kept in (*g["head"], *g["tail"])):
        return
    entry = (num(tokens), status, line)
    if len(g["head"]) < MAX_LOG_LINES // 2:
        g["head"].append(entry)
        return
    if len(g["tail"]) == g["tail"].maxlen:
        g["more_log"] += 1  # the oldest of the newest lines drops out
    g["tail"].append(entry)


def _capped(rows: list, what: str) -> list:
    """At most MAX_TABLE_ROWS rows: the first and the last halves, and a row saying how many are left out."""
    if len(rows) <= MAX_TABLE_ROWS:
        return rows
    half = MAX_TABLE_ROWS // 2
    gap = [f"... {len(rows) - 2 * half} more {what} (not shown) ..."] + [""] * (len(rows[0]) - 1)
    return rows[:half] + [gap] + rows[-half:]


# --------------------------------------------------------------------------------------------------
# one (run, task, D_f) group: its verdict, the fits the verdict rests on, plots, tables, log lines
# --------------------------------------------------------------------------------------------------


def _group_section(path, run_id, task, df, g, run_points, budget, target):
    recs = [r for r in run_points if group_key(r) == (task, df)]
    ok = [r for r in recs if r["pretrained"]]
    baseline = [r for r in recs if not r["pretrained"]]
    points, base_points = aggregate(ok), aggregate(baseline)
    verdict, d, verdict_error = diagnosis(ok + baseline, budget, target)
    vf = verdict_fits(d, verdict, budget) if verdict is not None else empty_fits()
    changes = changes_of(g["verdicts"], verdict)
    ce = ce_forecast(run_id, points, base_points, budget)
    score = verdict.metric if verdict is not None else "bleu"
    imgs = [_score_plot(points, base_points, score, vf, budget, target, changes),
            _ce_plot(points, base_points, ce, budget, changes)]
    status = verdict.status if verdict else "error"
    head = (f"<h2>{esc(task)} &middot; D<sub>f</sub>={esc(df)} &middot; run {esc(run_id)}</h2>"
            f"<p class='meta'>{esc(str(path))}</p>"
            f"<p><span class='status s-{esc(status)}'>{esc(status.replace('_', ' '))}</span> "
            + (f"recommendation: <b>{esc(verdict.recommendation)}</b>" if verdict else esc(verdict_error or ""))
            + "</p>")
    reasons = ""
    if verdict is not None and verdict.reasons:
        reasons = "<ul class='reasons'>" + "".join(f"<li>{esc(x)}</li>" for x in verdict.reasons) + "</ul>"
    figs = "<div class='plots'>" + "".join(imgs) + "</div>" + changes_html(changes)
    table = "<h3>Probes</h3>" + html_table(["tokens D_p", "step", "repeats", "BLEU", "chrF", "CE"],
                                       _capped(_probe_rows(points, base_points), "probe points"))
    fit_rows = vf["rows"] + [ce_row(ce)]
    fit_table = ("<h3>Fits the verdict rests on</h3>"
                 + html_table(["metric", "role in the verdict", "law", "fitted to", "trusted for a prediction",
                           "parameters &plusmn; std. err.", "checks"], fit_rows, left=7, raw={5}))
    logs = log_html(g, verdict, changes, budget)
    row = [run_id, task, df, len(points), pm(points[-1], score) if points else "", status,
           vf["summary"], verdict.recommendation if verdict else "", _pred_text(verdict)]
    return head + reasons + figs + table + fit_table + logs, row


def _score_plot(points, base_points, metric, vf, budget, target, changes) -> str:
    from transfer_probe.report_figures import group_figure

    pts = [p for p in points if metric in p["mean"] and p["tokens"] > 0]
    if not pts:
        return ""
    spec = {"x": [p["tokens"] for p in pts], "y": [p["mean"][metric] for p in pts],
            "err": [p["sem"].get(metric, math.nan) for p in pts], "n_warmup": vf["n_warmup"],
            "baseline": _base(base_points, metric), "budget": budget, "target": target, "curves": vf["curves"],
            "prediction": vf["prediction"], "levels": vf["levels"], "changes": changes, "ylabel": label(metric)}
    laws = ",".join(c["law"] for c in vf["curves"])
    note = "".join(f"<br>{esc(n)}" for n in vf["notes"])
    return figure(group_figure(spec), f"{label(metric)} against pre-training tokens", note,
                   f" data-metric='{esc(metric)}' data-law='{esc(laws)}' data-trusted='{'yes' if vf['trusted'] else 'no'}'")


def _ce_plot(points, base_points, rf, budget, changes) -> str:
    from transfer_probe.report_figures import group_figure

    pts = [p for p in points if "cross_entropy" in p["mean"] and p["tokens"] > 0]
    if not pts:
        return ""
    curves, pred, note = [], None, ""
    if rf is not None and rf.source == "law":
        x_end = max(p["tokens"] for p in pts)
        grid = np.geomspace(min(p["tokens"] for p in pts), max(x_end, float(budget or 0)), 160)
        curves.append({"x": grid, "y": rf.curve(grid), "x_end": x_end, "law": "power", "color": "#1a7f37",
                       "label": "power law (descriptive)"})
        if budget:
            pred = {"tokens": float(budget), "mean": rf.mean, "low": rf.low, "high": rf.high}
    elif rf is not None:
        note = f"<br>power law not drawn: {esc(rf.why)}"
    spec = {"x": [p["tokens"] for p in pts], "y": [p["mean"]["cross_entropy"] for p in pts],
            "err": [p["sem"].get("cross_entropy", math.nan) for p in pts], "baseline": _base(base_points, "cross_entropy"),
            "budget": budget, "curves": curves, "prediction": pred, "changes": changes,
            "ylabel": "downstream cross-entropy (nats)"}
    return figure(group_figure(spec), "downstream cross-entropy against pre-training tokens", note,
                   " data-metric='cross_entropy'")


def _base(base_points, metric):
    bp = [p for p in base_points if metric in p["mean"]]
    return (bp[0]["mean"][metric], bp[0]["sem"].get(metric, math.nan)) if bp else None


def _probe_rows(points, base_points) -> list:
    rows = [[format_tokens(p["tokens"]), p["step"], p["n"], pm(p, "bleu"), pm(p, "chrf"), pm(p, "cross_entropy", 3)]
            for p in points]
    rows += [["baseline (no pre-training)", "", p["n"], pm(p, "bleu"), pm(p, "chrf"), pm(p, "cross_entropy", 3)]
             for p in base_points]
    return rows


def _pred_text(verdict) -> str:
    pr = (verdict.prediction or {}) if verdict is not None else {}
    if pr.get("mean") is None:
        return ""
    return f"{pr['mean']:.1f} [{pr.get('low', math.nan):.1f}, {pr.get('high', math.nan):.1f}]"


