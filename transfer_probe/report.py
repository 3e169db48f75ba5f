"""A self-contained HTML report: plots (embedded PNG) and tables per run, task and D_f.

    from transfer_probe.report import write_report
    write_report(["run/transfer_probe/history.jsonl"], "report.html", budget_tokens=2e10, target=25)

It reads history files only (the single source of truth) and recomputes fits and verdicts with
``transfer_probe.laws`` and ``transfer_probe.diagnose``, so a report always agrees with the CLI.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from transfer_probe.store.history import Aggregator, aggregate, group_key, iter_checked

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
.plots{display:flex;flex-wrap:wrap;gap:1rem}.plots img{max-width:520px;width:100%;border:1px solid #eee}
table{border-collapse:collapse;font-size:.85rem;margin:.4rem 0 1rem}
th,td{border:1px solid #d0d7de;padding:.25rem .5rem;text-align:right}th{background:#f6f8fa}
td.l,th.l{text-align:left}
pre.log{background:#f6f8fa;padding:.6rem;font-size:.8rem;white-space:pre-wrap;border-radius:6px}
ul.reasons{margin:.3rem 0}
"""


def write_report(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    budget_tokens: float | None = None,
    target: float | None = None,
    title: str = "transfer_probe report",
    run_id: str | None = None,
) -> Path:
    """Read history files, write one self-contained HTML file, return its path.

    ``run_id``: only that run's records (``ValueError`` listing the runs when no record has it)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    check_output(output, paths)  # before rendering: a refusal must cost nothing
    # Streamed: each file is summarised while it is read, so memory grows with its probe points only.
    runs: set[str] = set()
    sources = [(Path(p), _checked(Path(p), run_id, runs)) for p in paths]
    page = render_report(sources, budget_tokens=budget_tokens, target=target, title=title)
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
) -> str:
    import matplotlib

    matplotlib.use("Agg")  # no display here; the report embeds PNGs
    parts = [f"<h1>{_e(title)}</h1>",
             f"<p class='meta'>written {_e(time.strftime('%Y-%m-%d %H:%M:%S'))}"
             + (f" &middot; budget {budget_tokens:.3g} tokens" if budget_tokens else "")
             + (f" &middot; target BLEU {target:g}" if target is not None else "") + "</p>"]
    summary_rows = []
    sections = []
    for path, records in sources:
        for run_id, run in _summarise(path, records).items():
            points = run["points"].records()  # one record per probe point, standing for its repeats
            for (task, df), g in sorted(run["groups"].items(), key=lambda kv: (str(kv[0][0]), kv[0][1] or 0)):
                sec, row = _group_section(path, run_id, task, df, g, points, budget_tokens, target)
                sections.append(sec)
                summary_rows.append(row)
    if not sections:
        parts.append("<p>No probe results in these files yet.</p>")
    else:
        parts.append("<h2>Summary</h2>")
        parts.append(_table(["run", "task", "D_f", "probes", "last BLEU", "verdict", "recommendation",
                             "prediction at budget"], summary_rows, left=3))
        parts.extend(sections)
    body = "\n".join(parts)
    return (f"<!DOCTYPE html>\n{MARKER}\n<html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
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
    probes, the verdicts' (tokens, status) changes and the log lines, each kept once and capped."""
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
                    _log(g, f"probe failed at {r.get('tokens')} tokens (repeat {r.get('repeat', 0)}): "
                            f"{r.get('error')}")
        elif kind == "verdict":
            g = _group(run, group_key(r), create=False)
            if g is not None:
                g["verdicts"].setdefault((r.get("tokens"), r.get("status")), None)
                if r.get("message"):
                    _log(g, str(r["message"]))
    return runs


def _group(run: dict, key: tuple, create: bool = True) -> dict | None:
    if key not in run["groups"]:
        if not create:
            # Verdicts may come before the first probe of their group in the file: keep them aside.
            return run.setdefault("early", {}).setdefault(key, {"verdicts": {}, "log": {}, "more_log": 0})
        early = run.get("early", {}).pop(key, None)
        run["groups"][key] = early or {"verdicts": {}, "log": {}, "more_log": 0}
    return run["groups"][key]


def _log(g: dict, line: str) -> None:
    if line in g["log"]:
        return
    if len(g["log"]) < MAX_LOG_LINES:
        g["log"][line] = None
    else:
        g["more_log"] += 1


def _capped(rows: list, what: str) -> list:
    """At most MAX_TABLE_ROWS rows: the first and the last halves, and a row saying how many are left out."""
    if len(rows) <= MAX_TABLE_ROWS:
        return rows
    half = MAX_TABLE_ROWS // 2
    gap = [f"... {len(rows) - 2 * half} more {what} (not shown) ..."] + [""] * (len(rows[0]) - 1)
    return rows[:half] + [gap] + rows[-half:]


def _group_section(path, run_id, task, df, g, run_points, budget, target):
    from transfer_probe import diagnose as dg

    recs = [r for r in run_points if group_key(r) == (task, df)]
    ok = [r for r in recs if r["pretrained"]]
    baseline = [r for r in recs if not r["pretrained"]]
    points = aggregate(ok)
    base_points = aggregate(baseline)
    verdict_recs = [{"tokens": t, "status": st} for t, st in g["verdicts"]]
    try:
        verdict = dg.diagnose(ok + baseline, budget_tokens=budget, target=target)
    except Exception as err:  # a report must still render what it has
        verdict = None
        verdict_error = f"{type(err).__name__}: {err}"
    else:
        verdict_error = None
    fits = {m: _fit(points, m) for m in ("bleu", "cross_entropy")}
    plots = [
        _plot(points, base_points, fits["bleu"], "bleu", "BLEU", budget, target, verdict_recs, verdict),
        _plot(points, base_points, fits["cross_entropy"], "cross_entropy", "downstream cross-entropy (nats)",
              budget, None, verdict_recs, None),
    ]
    status = verdict.status if verdict else "error"
    head = (f"<h2>{_e(task)} &middot; D<sub>f</sub>={_e(df)} &middot; run {_e(run_id)}</h2>"
            f"<p class='meta'>{_e(str(path))}</p>"
            f"<p><span class='status s-{_e(status)}'>{_e(status.replace('_', ' '))}</span> "
            + (f"recommendation: <b>{_e(verdict.recommendation)}</b>" if verdict else _e(verdict_error or ""))
            + "</p>")
    reasons = ""
    if verdict is not None and verdict.reasons:
        reasons = "<ul class='reasons'>" + "".join(f"<li>{_e(x)}</li>" for x in verdict.reasons) + "</ul>"
    imgs = "<div class='plots'>" + "".join(
        f"<img alt='{_e(alt)}' src='data:image/png;base64,{b64}'>" for alt, b64 in plots if b64) + "</div>"
    probe_rows = []
    for p in points:
        probe_rows.append([f"{p['tokens']:.3g}", p["step"], p["n"], _pm(p, "bleu"), _pm(p, "chrf"),
                           _pm(p, "cross_entropy", 3)])
    for p in base_points:
        probe_rows.append(["baseline (no pre-training)", "", p["n"], _pm(p, "bleu"), _pm(p, "chrf"),
                           _pm(p, "cross_entropy", 3)])
    table = "<h3>Probes</h3>" + _table(["tokens D_p", "step", "repeats", "BLEU", "chrF", "CE"],
                                       _capped(probe_rows, "probe points"))
    fit_rows = []
    for metric, fit in fits.items():
        if fit is None:
            continue
        params = ", ".join(f"{k}={v:.4g}&plusmn;{_fmt(fit.stderr.get(k))}" for k, v in fit.params.items())
        fit_rows.append([metric, type(fit).__name__ if not hasattr(fit, "law") else fit.law,
                         "yes" if fit.ok else "no", params if fit.ok else "", "" if fit.ok else fit.why])
    fit_table = ("<h3>Fits</h3>" + _table(["metric", "law", "trusted", "parameters &plusmn; std. err.", "why not"],
                                          fit_rows, left=5, raw=True)) if fit_rows else ""
    log_lines = ([dg.format_verdict(verdict)] if verdict is not None else []) + list(g["log"])
    if g["more_log"]:
        log_lines.append(f"... and {g['more_log']} more distinct log lines (not shown)")
    logs = ("<h3>Log lines and warnings</h3><pre class='log'>" + _e("\n".join(dict.fromkeys(log_lines)))
            + "</pre>") if log_lines else ""
    last_bleu = _pm(points[-1], "bleu") if points else ""
    pred = ""
    if verdict is not None and verdict.prediction:
        pr = verdict.prediction
        pr = pr if isinstance(pr, dict) else getattr(pr, "__dict__", {})
        if pr.get("mean") is not None:
            pred = f"{pr['mean']:.1f} [{pr.get('low', float('nan')):.1f}, {pr.get('high', float('nan')):.1f}]"
    row = [run_id, task, df, len(points), last_bleu, status, verdict.recommendation if verdict else "", pred]
    return head + reasons + imgs + table + fit_table + logs, row


def _fit(points, metric):
    from transfer_probe import laws

    xs = [p["tokens"] for p in points if metric in p["mean"] and p["tokens"] > 0]
    if len(xs) < 2:
        return None
    ys = [p["mean"][metric] for p in points if metric in p["mean"] and p["tokens"] > 0]
    sig = [p["sem"].get(metric, float("nan")) for p in points if metric in p["mean"] and p["tokens"] > 0]
    sigma = np.array(sig, dtype=float) if all(math.isfinite(s) and s > 0 for s in sig) else None
    law = laws.LogLaw() if metric == "bleu" else laws.PowerLaw()
    try:
        return law.fit(np.array(xs, dtype=float), np.array(ys, dtype=float), sigma=sigma)
    except Exception:
        return None


def _plot(points, base_points, fit, metric, label, budget, target, verdict_recs, verdict):
    import matplotlib.pyplot as plt

    pts = [p for p in points if metric in p["mean"] and p["tokens"] > 0]
    if not pts:
        return label, None
    x = np.array([p["tokens"] for p in pts])
    y = np.array([p["mean"][metric] for p in pts])
    err = np.array([p["sem"].get(metric, np.nan) for p in pts], dtype=float)
    fig, ax = plt.subplots(figsize=(6.2, 4.0), dpi=110)
    ax.errorbar(x, y, yerr=np.where(np.isfinite(err), err, 0), fmt="o", color="#0969da", capsize=3,
                label="probe (mean ± s.e.)", zorder=3)
    xmax = max(x.max(), budget or 0)
    if fit is not None and fit.ok:
        grid = np.geomspace(x.min(), xmax * 1.05, 200)
        mean, low, high = (np.asarray(v, dtype=float) for v in fit.predict(grid, interval=0.9))
        ax.plot(grid, mean, "-", color="#cf222e", label="fitted law")
        if np.all(np.isfinite(low)) and np.all(np.isfinite(high)):
            ax.fill_between(grid, low, high, color="#cf222e", alpha=0.15, label="90% prediction band")
    elif fit is not None:
        # An untrusted fit is not drawn: a curve would look like a claim. Say why instead.
        ax.text(0.02, 0.02, "law not drawn: fit not trusted", transform=ax.transAxes, fontsize=7,
                color="#a40e26", va="bottom")
    bp = [p for p in base_points if metric in p["mean"]]
    if bp:
        b = bp[0]["mean"][metric]
        ax.axhline(b, color="#6e7781", ls="--", lw=1.2, label="no pre-training baseline")
        s = bp[0]["sem"].get(metric, np.nan)
        if math.isfinite(s):
            ax.axhspan(b - s, b + s, color="#6e7781", alpha=0.12)
    if budget:
        ax.axvline(budget, color="#8250df", ls="-.", lw=1.2, label=f"budget {budget:.2g}")
    if target is not None:
        ax.axhline(target, color="#1a7f37", ls=":", lw=1.4, label=f"target {target:g}")
    prev = None
    for vr in sorted(verdict_recs, key=lambda r: r.get("tokens") or 0):
        st = vr.get("status")
        if st != prev and prev is not None and vr.get("tokens"):
            ax.axvline(vr["tokens"], color="#bf8700", lw=1, alpha=0.7)
            ax.annotate(st.replace("_", " "), (vr["tokens"], ax.get_ylim()[1]), rotation=90, va="top",
                        ha="right", fontsize=7, color="#7d4e00")
        prev = st
    ax.set_xscale("log")
    ax.set_xlabel("pre-training tokens D_p")
    ax.set_ylabel(label)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return label, base64.b64encode(buf.getvalue()).decode("ascii")


def _pm(p, metric, digits=1):
    if metric not in p["mean"]:
        return ""
    m = p["mean"][metric]
    s = p["sem"].get(metric, float("nan"))
    return f"{m:.{digits}f}" + (f" ± {s:.{digits}f}" if math.isfinite(s) else "")


def _fmt(v):
    return "n/a" if v is None or not math.isfinite(float(v)) else f"{float(v):.2g}"


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _table(headers, rows, left=1, raw=False):
    th = "".join(f"<th class='{'l' if i < left else ''}'>{h}</th>" for i, h in enumerate(headers))
    body = []
    for row in rows:
        cells = []
        for i, c in enumerate(row):
            text = str(c) if raw and i == 3 else _e(c)
            cells.append(f"<td class='{'l' if i < left else ''}'>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"
