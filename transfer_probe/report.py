"""A self-contained HTML report: plots (embedded PNG) and tables per run, task and D_f.

    from transfer_probe.report import write_report
    write_report(["run/transfer_probe/history.jsonl"], "report.html", budget_tokens=2e10, target=25)

It reads history files only (the single source of truth) and recomputes fits and verdicts with
``transfer_probe.laws`` and ``transfer_probe.diagnose``, so a report always agrees with the CLI.
"""

from __future__ import annotations

import html
import math
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

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
    parts = [f"<h1>{_e(title)}</h1>",
             f"<p class='meta'>written {_e(time.strftime('%Y-%m-%d %H:%M:%S'))}"
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
    else:
        parts.append("<h2>Summary</h2>")
        parts.append(_table(["run", "task", "D_f", "probes", "last BLEU", "verdict", "law (trusted)",
                             "recommendation", "prediction at budget"], summary_rows, left={0, 1, 5, 6, 7}))
        parts.append(_which_run(runs, budget_tokens, laws))
        parts.append(_transferred(runs))
        parts.extend(sections)
    body = "\n".join(p for p in parts if p)
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
    entry = (_num(tokens), status, line)
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
    verdict, d, verdict_error = _diagnosis(ok + baseline, budget, target)
    vf = _verdict_fits(d, verdict, budget) if verdict is not None else _empty_fits()
    changes = _changes(g["verdicts"], verdict)
    ce = _ce_forecast(run_id, points, base_points, budget)
    score = verdict.metric if verdict is not None else "bleu"
    imgs = [_score_plot(points, base_points, score, vf, budget, target, changes),
            _ce_plot(points, base_points, ce, budget, changes)]
    status = verdict.status if verdict else "error"
    head = (f"<h2>{_e(task)} &middot; D<sub>f</sub>={_e(df)} &middot; run {_e(run_id)}</h2>"
            f"<p class='meta'>{_e(str(path))}</p>"
            f"<p><span class='status s-{_e(status)}'>{_e(status.replace('_', ' '))}</span> "
            + (f"recommendation: <b>{_e(verdict.recommendation)}</b>" if verdict else _e(verdict_error or ""))
            + "</p>")
    reasons = ""
    if verdict is not None and verdict.reasons:
        reasons = "<ul class='reasons'>" + "".join(f"<li>{_e(x)}</li>" for x in verdict.reasons) + "</ul>"
    figs = "<div class='plots'>" + "".join(imgs) + "</div>" + _changes_html(changes)
    table = "<h3>Probes</h3>" + _table(["tokens D_p", "step", "repeats", "BLEU", "chrF", "CE"],
                                       _capped(_probe_rows(points, base_points), "probe points"))
    fit_rows = vf["rows"] + [_ce_row(ce)]
    fit_table = ("<h3>Fits the verdict rests on</h3>"
                 + _table(["metric", "role in the verdict", "law", "fitted to", "trusted for a prediction",
                           "parameters &plusmn; std. err.", "checks"], fit_rows, left=7, raw={5}))
    logs = _log_html(g, verdict, changes, budget)
    row = [run_id, task, df, len(points), _pm(points[-1], score) if points else "", status,
           vf["summary"], verdict.recommendation if verdict else "", _pred_text(verdict)]
    return head + reasons + figs + table + fit_table + logs, row


def _diagnosis(records, budget, target):
    """The verdict, and the :class:`Diagnosis` that made it (its warm-up, noise and points), so the
    plots and the fits table show the very fits the verdict used, with the same functions."""
    from transfer_probe import diagnose as dg
    from transfer_probe.diagnose.rules import Diagnosis

    try:
        verdict = dg.diagnose(records, budget_tokens=budget, target=target)
    except Exception as err:  # noqa: BLE001 - a report must still render what it has
        return None, None, f"{type(err).__name__}: {err}"
    pre = [r for r in records if r.get("pretrained", True)]
    base = [r for r in records if not r.get("pretrained", True)]
    d = Diagnosis(pre, base, verdict.task, verdict.finetune_size, verdict.run_id, verdict.metric,
                  verdict.ce_metric, budget, target, dg.DEFAULT_THRESHOLDS)
    again = d.run()
    if again.status != verdict.status:  # deterministic: cannot differ unless the rules changed under us
        d = None
    return verdict, d, None


def _empty_fits() -> dict:
    return {"curves": [], "rows": [], "levels": [], "n_warmup": 0, "prediction": None, "law": "",
            "trusted": False, "summary": "", "notes": []}


def _verdict_fits(d, v, budget) -> dict:
    """What the verdict rests on: the curves to draw on the score plot and the Fits table's rows.

    aligned: the law chosen by the backtest (``choose_law`` on the probes after the warm-up, with the
    verdict's noise), trusted or not as ``trust`` says, its band widened as ``predict_at`` widens it;
    a plateau: both laws fitted to the probes before the newest ones (the held-out test); a break or no
    transfer: no law at all (model-free tests), said so."""
    out = _empty_fits()
    L = label(v.metric)
    if d is None:
        out["rows"].append([L, "(the verdict could not be reproduced)", "", "", "", "", ""])
        return out
    out["n_warmup"] = w = int(getattr(d, "w", 0) or 0)
    if v.status == "aligned" and v.law and hasattr(d, "sigma"):
        return _aligned_fits(out, d, v, budget)
    if isinstance(v.stats.get("plateau"), dict) and hasattr(d, "sigma"):
        return _plateau_fits(out, d, v)
    brk = v.stats.get("break") or {}
    if v.status in ("misaligned", "law_break", "suspected") and brk.get("level") is not None and hasattr(d, "sigma"):
        x = d.x[w:]
        look = d.break_state(x, d.y[w:])  # the same sequential test replayed: where its levels were measured
        (plo, phi), (a, e) = look.get("peak", (0, 0)), look.get("suffix", (len(x) - 1, len(x) - 1))
        since = float(brk.get("since") or x[a])
        out["levels"] = [(float(brk["level"]), float(x[plo]), float(x[phi]), "best level (the probes it is the mean of)"),
                         (float(brk["now"]), float(x[a]), float(x[e]), "level of the newest probes")]
        z = brk.get("z")
        support = brk.get("z_support")
        checks = (f"fell from {brk['level']:.3g} to {brk['now']:.3g} since {format_tokens(since)} tokens"
                  + (f" ({z:.1f} noise SDs)" if isinstance(z, (int, float)) else "")
                  + (f"; backed by both laws fitted before it ({support:.1f} SDs below them)"
                     if isinstance(support, (int, float)) and math.isfinite(support) else ""))
        out["rows"].append([L, "none: the break test is model-free (the score against its own best level)",
                            "no law", f"{len(x)} probes", "not needed", "", checks])
        out["summary"] = "model-free"
        return out
    why = v.reasons[0] if v.reasons else v.status
    role = ("none: compared with the no-pretraining baseline" if v.status == "no_transfer"
            else "none yet: not enough probes for a law")
    out["rows"].append([L, role, "no law", f"{v.n_points} probes", "not needed", "", why])
    out["summary"] = "none"
    return out


SHORT_NAMES = {"log": "log-law", "saturating": "saturating law", "power": "power law"}
LAW_NAMES = {"log": "log-law (log(A·D^a))^b", "saturating": "saturating law C − A/D^a", "power": "power law E + A/D^a"}


def _aligned_fits(out: dict, d, v, budget) -> dict:
    from transfer_probe.diagnose import fits as F

    w, L = out["n_warmup"], label(v.metric)
    x, y = d.x[w:], d.y[w:]
    ch = F.choose_law(x, y, d.sigma)  # the verdict's call, same inputs: the same fit
    fit, kind = ch["fit"], ch["kind"]
    fd = v.fits.get(v.metric) or {}
    trusted, scale = bool(fd.get("trusted")), float(fd.get("interval_scale") or 1.0)
    out.update(law=kind, trusted=trusted, summary=f"{kind} ({'trusted' if trusted else 'not trusted'})")
    bt = v.stats.get("backtest") or {}
    choice = "; ".join(f"{k}: mean abs. error {c['mae']:.2g}" for k, c in (v.stats.get("law_choice") or {}).items()
                       if c.get("mae") is not None and c["mae"] < 1e5)
    checks = (f"predicted the last {bt['n']} probes within {bt['max_abs_err']:.2g} {L} (rms {bt['rms_z']:.2g} noise "
              f"SDs)" if bt.get("n") else "not yet checked on the run's own probes")
    if trusted and scale > 1:
        checks += f"; bands widened x{scale:.2g} by the backtest"
    if not trusted:
        why = (v.prediction or {}).get("why") or F.why(fit)
        checks += f"; not trusted: {why}"
    elif not getattr(fit, "ok", True):
        checks += f"; the fit's own check: {F.why(fit)}, yet its curve is finite and it predicted the run's later probes"
    if choice:
        checks += f" (backtest of the candidates: {choice})"
    out["rows"].append([L, "the verdict's law (the candidate that predicted the run's own later probes best)",
                        LAW_NAMES.get(kind, kind), f"{len(x)} probes, {format_tokens(x[0])}-{format_tokens(x[-1])} tokens"
                        + (f" (the first {w} left out: warm-up)" if w else ""),
                        "yes" if trusted else "no", _params(fit), checks])
    if not F.usable(fit):
        out["notes"].append(f"{LAW_NAMES.get(kind, kind)} not drawn: {F.why(fit)}")
        return out
    end = max(float(x[-1]), float(budget or 0)) if trusted else float(x[-1])
    grid = np.geomspace(float(x[0]), end, 160)
    mean, lo, hi = (np.asarray(a, float) for a in fit.predict(grid, interval=0.9, force=True))
    curve = {"x": grid, "y": mean, "x_end": float(x[-1]), "law": kind}
    if trusted:
        # the band is drawn where it is a prediction: beyond the newest probe
        ahead = grid >= float(x[-1])
        curve.update(low=np.where(ahead, mean - scale * (mean - lo), np.nan),
                     high=np.where(ahead, mean + scale * (hi - mean), np.nan), color="#cf222e",
                     label=f"{SHORT_NAMES.get(kind, kind)}: the verdict's law", band_label="90% prediction band")
        pr = v.prediction or {}
        if pr.get("mean") is not None:
            out["prediction"] = {"tokens": pr["budget"], "mean": pr["mean"], "low": pr["low"], "high": pr["high"]}
    else:
        curve.update(color="#6e7781", ls=":", label=f"{SHORT_NAMES.get(kind, kind)}: the verdict's law, not trusted")
        out["notes"].append(f"the verdict's {SHORT_NAMES.get(kind, kind)} is drawn over the probes only: not trusted "
                            "for a prediction, so not extended")
    out["curves"].append(curve)
    return out


def _plateau_fits(out: dict, d, v) -> dict:
    from transfer_probe.diagnose import fits as F

    w, L = out["n_warmup"], label(v.metric)
    x, y, s = d.x[w:], d.y[w:], d.sigma
    pl = v.stats["plateau"]
    k = int(pl.get("k", 1))
    for kind, color in (("log", "#cf222e"), ("saturating", "#8250df")):
        fit = F.fit_law(kind, x[:-k], y[:-k], s[:-k], **F.HOLDOUT_OPTIONS)  # as below_laws fits them
        z = pl.get(f"z_{kind}")
        out["rows"].append([L, f"plateau check: fitted to the probes before the newest {k}, which sit "
                               f"{z:.1f} noise SDs below its prediction" if isinstance(z, (int, float)) else
                            "plateau check", LAW_NAMES[kind], f"{len(x) - k} probes, {format_tokens(x[0])}-{format_tokens(x[-k - 1])} tokens",
                            "not needed (only its prediction at the newest probes is tested)", _params(fit),
                            "confirmed at the previous probe" if pl.get("confirmed") else "a first signal"])
        if F.usable(fit):
            grid = np.geomspace(float(x[0]), float(x[-1]), 160)
            out["curves"].append({"x": grid, "y": F.curve(fit, grid), "x_end": float(x[-k - 1]), "color": color,
                                  "law": kind, "lw": 1.3, "label": f"{SHORT_NAMES[kind]} fitted before the newest {k}"})
    out["law"], out["summary"] = "log+saturating", "plateau test"
    return out


def _params(fit) -> str:
    """Parameters with their standard errors; one held at a bound (error 0) says so, not "+-0"."""
    params = getattr(fit, "params", None) or {}
    out = []
    for k, v in params.items():
        if v is None or not math.isfinite(float(v)):
            return ""  # a failed fit: no numbers worth showing
        se = (getattr(fit, "stderr", None) or {}).get(k)
        out.append(f"{k}={v:.4g} (at its bound)" if se == 0 else f"{k}={v:.4g}&plusmn;{_fmt(se)}")
    return ", ".join(out)


def _ce_forecast(run_id, points, base_points, budget):
    """Cross-entropy's power law as ``compare_runs`` fits and trusts it: descriptive only."""
    from transfer_probe.compare import forecast_run

    pts = [p for p in points if "cross_entropy" in p["mean"] and p["tokens"] > 0]
    if not pts:
        return None
    base = [v for p in base_points for v in p["values"].get("cross_entropy", [])]
    at = float(budget) if budget else max(p["tokens"] for p in pts)
    try:
        return forecast_run(str(run_id), pts, "cross_entropy", at, lower=True, interval=0.9, base=base)
    except Exception:  # noqa: BLE001 - a descriptive curve is not worth failing the report for
        return None


def _ce_row(rf) -> list:
    if rf is None:
        return ["CE", "descriptive only", "", "", "", "", "no cross-entropy recorded"]
    trusted = rf.source == "law"
    bt = rf.backtest or {}
    checks = (f"predicted the run's own later probes (rms {bt.get('rms_z', math.nan):.2g} noise SDs over {bt.get('n')})"
              if trusted else rf.why)
    return ["CE", "descriptive: the verdict reads CE only model-free (did it still improve?)",
            LAW_NAMES["power"] if rf.law else "", f"{rf.n_points} probes", "yes" if trusted else "no",
            _params(rf._fit) if trusted else "", checks]


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
    note = "".join(f"<br>{_e(n)}" for n in vf["notes"])
    return _figure(group_figure(spec), f"{label(metric)} against pre-training tokens", note,
                   f" data-metric='{_e(metric)}' data-law='{_e(laws)}' data-trusted='{'yes' if vf['trusted'] else 'no'}'")


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
        note = f"<br>power law not drawn: {_e(rf.why)}"
    spec = {"x": [p["tokens"] for p in pts], "y": [p["mean"]["cross_entropy"] for p in pts],
            "err": [p["sem"].get("cross_entropy", math.nan) for p in pts], "baseline": _base(base_points, "cross_entropy"),
            "budget": budget, "curves": curves, "prediction": pred, "changes": changes,
            "ylabel": "downstream cross-entropy (nats)"}
    return _figure(group_figure(spec), "downstream cross-entropy against pre-training tokens", note,
                   " data-metric='cross_entropy'")


def _figure(b64: str, caption: str, note: str = "", attrs: str = "") -> str:
    return (f"<figure><img alt='{_e(caption)}'{attrs} src='data:image/png;base64,{b64}'>"
            f"<figcaption>{_e(caption)}{note}</figcaption></figure>")


def _base(base_points, metric):
    bp = [p for p in base_points if metric in p["mean"]]
    return (bp[0]["mean"][metric], bp[0]["sem"].get(metric, math.nan)) if bp else None


def _probe_rows(points, base_points) -> list:
    rows = [[format_tokens(p["tokens"]), p["step"], p["n"], _pm(p, "bleu"), _pm(p, "chrf"), _pm(p, "cross_entropy", 3)]
            for p in points]
    rows += [["baseline (no pre-training)", "", p["n"], _pm(p, "bleu"), _pm(p, "chrf"), _pm(p, "cross_entropy", 3)]
             for p in base_points]
    return rows


def _pred_text(verdict) -> str:
    pr = (verdict.prediction or {}) if verdict is not None else {}
    if pr.get("mean") is None:
        return ""
    return f"{pr['mean']:.1f} [{pr.get('low', math.nan):.1f}, {pr.get('high', math.nan):.1f}]"


# --------------------------------------------------------------------------------------------------
# verdict changes and log lines, in time order; a warning later superseded says so
# --------------------------------------------------------------------------------------------------


def _changes(recorded: dict, verdict) -> list[dict]:
    """The verdict's status changes along the run (recorded verdicts, then the one recomputed now),
    numbered; each one ``superseded`` (at tokens, ``by`` status) when a later one replaced it."""
    seq = sorted(((_num(t), st) for t, st in recorded if _num(t) is not None), key=lambda ts: ts[0])
    if verdict is not None and verdict.tokens is not None:
        seq = [ts for ts in seq if ts[0] < verdict.tokens] + [(float(verdict.tokens), verdict.status)]
    out: list[dict] = []
    for t, st in seq:
        if out and out[-1]["status"] == st:
            continue
        if not out and st == "insufficient_data":
            continue  # the wait before the first verdict is not a change
        out.append({"tokens": t, "status": st, "superseded": None, "by": None})
    for i, c in enumerate(out):
        c["n"] = i + 1
        if i + 1 < len(out):
            c["superseded"], c["by"] = out[i + 1]["tokens"], out[i + 1]["status"]
    return out


def _changes_html(changes: list[dict]) -> str:
    if not changes:
        return ""
    items = []
    for c in changes:
        st = c["status"].replace("_", " ")
        if c["superseded"] is not None:
            items.append(f"<li class='superseded'><b>{c['n']}</b> {_e(st)} from {format_tokens(c['tokens'])} tokens: "
                         f"superseded at {format_tokens(c['superseded'])} tokens (by {_e(c['by'].replace('_', ' '))})</li>")
        else:
            items.append(f"<li><b>{c['n']}</b> {_e(st)} from {format_tokens(c['tokens'])} tokens: standing</li>")
    return "<p class='meta'>Verdict changes (numbered above the plots):</p><ul class='changes'>" + "".join(items) + "</ul>"


def _superseded_at(changes: list[dict], tokens, status) -> float | None:
    if tokens is None or status not in WARNINGS:
        return None
    before = [c for c in changes if c["tokens"] <= tokens]
    c = before[-1] if before else None
    return c["superseded"] if c is not None and c["status"] == status else None


WARNINGS = frozenset({"misaligned", "law_break", "no_transfer", "suspected"})


def _log_html(g: dict, verdict, changes: list[dict], budget) -> str:
    """The log lines oldest to newest (file order within a probe point), a warning later superseded
    faded with the tokens where it was, and last the verdict recomputed now."""
    from transfer_probe import diagnose as dg

    def line(entry):
        t, st, text = entry
        sup = _superseded_at(changes, t, st)
        if sup is None:
            return _e(text)
        return f"<span class='superseded'>{_e(text)}  [superseded at {format_tokens(sup)} tokens]</span>"

    key = lambda e: e[0] if e[0] is not None else -1.0  # noqa: E731
    lines = [line(e) for e in sorted(g["head"], key=key)]
    if g["more_log"]:
        lines.append(f"... {g['more_log']} more distinct log lines (not shown) ...")
    lines += [line(e) for e in sorted(g["tail"], key=key)]
    if verdict is not None:
        now = dg.format_verdict(verdict)
        last = (g["tail"] or g["head"] or [(None, None, "")])[-1][2]
        if now != last:
            where = f" with the budget {format_tokens(budget)}" if budget else ""
            lines.append(f"<b>now</b> (recomputed from the probes{where}): {_e(now)}")
    if not lines:
        return ""
    return "<h3>Log lines and warnings</h3><pre class='log'>" + "\n".join(lines) + "</pre>"


# --------------------------------------------------------------------------------------------------
# several runs of one (task, D_f): which to continue (transfer_probe.compare)
# --------------------------------------------------------------------------------------------------


def _run_labels(runs: list[tuple[Path, str, list]]) -> list[str]:
    """Run ids, or ``file:run_id`` where two files hold the same run id."""
    count: dict[str, int] = {}
    for _, rid, _ in runs:
        count[rid] = count.get(rid, 0) + 1
    return [rid if count[rid] == 1 else f"{path.parent.name or path.stem}:{rid}" for path, rid, _ in runs]


def _which_run(runs: list[tuple[Path, str, list]], budget, laws: dict | None = None) -> str:
    """``laws``: {(index in runs, task, D_f): the verdict's law}, shown next to the comparison's own."""
    from transfer_probe.compare import compare_runs

    labels = _run_labels(runs)
    per_group: dict[tuple, set] = {}
    for lab, (_, _, pts) in zip(labels, runs, strict=True):
        for r in pts:
            if r["pretrained"] and r["tokens"] > 0:
                per_group.setdefault(group_key(r), set()).add(lab)
    if not any(len(v) >= 2 for v in per_group.values()):
        return ""
    records = [{**r, "run_id": lab} for lab, (_, _, pts) in zip(labels, runs, strict=True) for r in pts]
    try:
        cmp = compare_runs(records, budget)
    except ValueError as err:
        return f"<h2>Which run to continue</h2><p>not compared: {_e(err)}</p>"
    parts = []
    index = {lab: i for i, lab in enumerate(labels)}
    for g in cmp.groups:
        if len(g.runs) >= 2:
            verdict_laws = {rf.run_id: (laws or {}).get((index.get(rf.run_id), str(g.task), str(g.finetune_size)), "")
                            for rf in g.runs}
            parts.append(_which_run_group(g, verdict_laws))
    if not parts:
        return ""
    return ("<h2>Which run to continue</h2>" + "".join(parts)
            + f"<p class='meta'>method: {_e(cmp.method)}. A pair is called at P &ge; {cmp.settings['confidence']:g}; "
              f"otherwise it is too close to call (shaded).</p>")


def _which_run_group(g, verdict_laws: dict) -> str:
    from transfer_probe.report_figures import runs_figure

    L = label(g.metric)
    series = []
    for rf in g.runs:
        x, y = rf.points
        curve = None
        if rf.source == "law" and len(x):
            grid = np.geomspace(min(x), max(max(x), g.budget), 160)
            curve = (grid, rf.curve(grid))
        series.append({"run_id": rf.run_id, "x": list(x), "y": list(y), "curve": curve,
                       "pred": (rf.mean, rf.low, rf.high) if rf.predicted else None})
    way = "higher" if g.higher_is_better else "lower"
    head = (f"<h3>{_e(g.task)} &middot; D<sub>f</sub>={_e(g.finetune_size)}: {_e(L)} at {format_tokens(g.budget)} tokens "
            f"({way} is better; {g.interval:.0%} intervals)</h3>")
    fig = _figure(runs_figure(series, g.budget, L), f"{len(g.runs)} runs' {L}, their laws and predictions at the budget",
                  "<br>solid: the run's law over its probes; dashed: beyond its newest probe",
                  f" data-compare='{_e(g.task)}'")
    rows = []
    for rf in g.runs:
        pred = f"{rf.mean:.3g} [{rf.low:.3g}, {rf.high:.3g}]" if rf.predicted else f"none: {rf.why}"
        law = (LAW_NAMES.get(rf.law, rf.law or "") + (f", widened x{rf.interval_scale:.2g}" if rf.interval_scale > 1 else "")
               if rf.source == "law" else "")
        rows.append([rf.run_id, format_tokens(rf.tokens), f"{rf.current:.3g}", pred, law, rf.source or "",
                     verdict_laws.get(rf.run_id, "")])
    table = _table(["run", "tokens", f"current {L}", f"predicted at {format_tokens(g.budget)} [interval]", "law", "source",
                    "the run's verdict: law"], rows, left={0, 3, 4, 5, 6})
    differ = [rf.run_id for rf in g.runs if rf.source == "law" and verdict_laws.get(rf.run_id)
              and verdict_laws[rf.run_id] != f"{rf.law} (trusted)"]
    if differ:
        table += (f"<p class='meta'>{_e(', '.join(differ))}: the comparison forecasts each run on its own "
                  "(compare_runs: its warm-up, noise and trust rule, without the verdict's check of the interval's "
                  "width at the budget), so its law can differ from the one the run's verdict rests on; both are "
                  "shown.</p>")
    ranking = "  ".join(f"{i}. {' = '.join(t)}" for i, t in enumerate(g.ranking, 1)) or "none"
    if g.unranked:
        ranking += f" (unranked: {', '.join(g.unranked)})"
    notes = "".join(f"<li>{_e(n)}</li>" for n in g.notes)
    return (head + "<div class='plots'>" + fig + "</div>" + table + _odds_matrix(g)
            + f"<p>ranking: {_e(ranking)}</p><p>recommendation: <b>{_e(g.recommendation)}</b></p>"
            + (f"<ul class='reasons'>{notes}</ul>" if notes else ""))


def _prob(p: float) -> str:
    """0.62, 0.997, &gt; 0.999, &lt; 0.001: never a bare 1.00 or 0.00 for odds that are not certain."""
    if p > 0.9995 or p < 0.0005:
        return "&gt; 0.999" if p > 0.5 else "&lt; 0.001"
    return f"{p:.3f}" if p > 0.995 or p < 0.005 else f"{p:.2f}"


def _odds_matrix(g) -> str:
    called = {(p.better, p.other) for p in g.pairs if p.called} | {(p.other, p.better) for p in g.pairs if p.called}
    ids = [r.run_id for r in g.runs]
    th = "".join(f"<th>{_e(b)}</th>" for b in ids)
    body = []
    for a in ids:
        cells = []
        for b in ids:
            if a == b:
                cells.append("<td class='na'>&mdash;</td>")
                continue
            p = g.p(a, b)
            if p is None:
                cells.append("<td class='na'>n/a</td>")
            elif (a, b) in called:
                cells.append(f"<td>{_prob(p)}</td>")
            else:
                cells.append(f"<td class='close' title='too close to call'>{_prob(p)} <small>too close to call</small></td>")
        body.append(f"<tr><th class='l'>{_e(a)}</th>{''.join(cells)}</tr>")
    return ("<p class='meta'>P(row beats column) at the budget:</p>"
            f"<table class='odds'><thead><tr><th class='l'>row \\ column</th>{th}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


# --------------------------------------------------------------------------------------------------
# data transferred (transfer_probe.transferred): per run, per task with 2+ D_f
# --------------------------------------------------------------------------------------------------


def _transferred(runs: list[tuple[Path, str, list]]) -> str:
    from transfer_probe.transferred import data_transferred

    parts = []
    for lab, (_, _, pts) in zip(_run_labels(runs), runs, strict=True):
        dfs: dict[str, set] = {}
        for r in pts:
            if r["pretrained"]:
                dfs.setdefault(str(r.get("task")), set()).add(group_key(r)[1])
        tasks = sorted(t for t, s in dfs.items() if len(s) >= 2)
        if not tasks:
            continue
        try:
            res = data_transferred(pts)
        except ValueError as err:
            parts.append(f"<h3>run {_e(lab)}</h3><p>not computed: {_e(err)}</p>")
            continue
        for task in tasks:
            tt = res.tasks.get(task)
            if tt is not None:
                parts.append(_transferred_task(lab, tt))
    if not parts:
        return ""
    return ("<h2>Data transferred</h2><p class='meta'>What the pre-training so far is worth in fine-tuning examples "
            "(Hernandez et al. 2021): the from-scratch probes at each D<sub>f</sub> trace the curve a model without "
            "pre-training follows; each pre-trained probe's cross-entropy is read off it as the effective data "
            "D<sub>E</sub>, and D<sub>T</sub> = D<sub>E</sub> &minus; D<sub>f</sub>. Method, check against the "
            "paper and limits: docs/data_transferred.md.</p>" + "".join(parts))


def _transferred_task(run: str, tt) -> str:
    from transfer_probe.report_figures import transferred_figure
    from transfer_probe.transferred import REACH

    head = f"<h3>{_e(tt.task)} &middot; run {_e(run)}</h3>"
    if not tt.ok:
        return head + f"<p>not computed: {_e(tt.why)}</p>"
    series, rows = [], []
    for df in sorted(tt.growth):
        pts = sorted((p for p in tt.points if p.finetune_size == df), key=lambda p: p.tokens)
        # past REACH x the largest from-scratch size the curve gives a floor only (as the log line says)
        floor = REACH * pts[0].largest_baseline - df
        past = [not p.effective <= REACH * p.largest_baseline for p in pts]
        series.append({"df_text": _count(df), "x": [p.tokens for p in pts], "past": past,
                       "dt": [floor if far else p.transferred for p, far in zip(pts, past, strict=True)],
                       "low": [min(p.low, floor) if far else p.low for p, far in zip(pts, past, strict=True)],
                       "high": [floor if far else p.high for p, far in zip(pts, past, strict=True)]})
        p = pts[-1]
        if past[-1]:
            dt, mult = f"over {_count(floor)} (past the curve's reach)", f"over x{_mult((floor + df) / df)}"
        else:
            band = "" if math.isnan(p.low) else f" [{_count(p.low)}, {_count(p.high)}]"
            dt = _count(p.transferred) + band
            mult = f"x{_mult(p.multiplier)}" + ("" if math.isnan(p.low) else
                                               f" [{_mult(p.multiplier_low)}, {_mult(p.multiplier_high)}]")
        rows.append([_count(df), format_tokens(p.tokens), dt, mult,
                     p.status.replace("_", " ") + (" (extrapolated)" if p.extrapolated else ""), tt.growth[df].text()])
    fig = _figure(transferred_figure(series, "examples"), f"data transferred D_T against D_p, {tt.task}",
                  "<br>bands: the 90% intervals; red down-triangles: ossified (D_T &lt; 0); up-triangles: past "
                  f"{REACH:g}x the largest from-scratch D<sub>f</sub>, drawn at that floor")
    table = _table(["D_f", "newest probe (tokens)", "D_T [90% interval]", "data multiplier", "status",
                    "growth with pre-training"], rows, left=6)
    law = ""
    if tt.law is not None:
        pars = ", ".join(f"{k} {v:.3g}" for k, v in tt.law.params.items())
        law = (f"<li>across D<sub>f</sub>: D<sub>T</sub> = k D<sub>F</sub><sup>alpha</sup> N<sup>beta</sup>: "
               f"{_e(pars)} ({'ok' if tt.law.ok else 'not ok: ' + _e(tt.law.why)})</li>")
    method = (f"<ul class='reasons'><li>from-scratch curve: {_e(tt.baseline.method.replace('_', '-'))} "
              f"({_e(tt.baseline.why)})</li><li>CE noise: {_e(tt.noise)}</li>{law}</ul>")
    return head + "<div class='plots'>" + fig + "</div>" + table + method


def _mult(m: float) -> str:
    """A data multiplier: 1.3, 31, 450, then the token format (2.9e4)."""
    return format_tokens(m) if math.isfinite(m) and m >= 1e4 else f"{m:.3g}"


def _count(x: float) -> str:
    """Examples as the log line writes them (12k, 1.2M); beyond 1e12 in the token format (3.4e15)."""
    from transfer_probe.transferred import format_count

    return format_tokens(x) if x is not None and math.isfinite(x) and abs(x) >= 1e12 else format_count(x)


# --------------------------------------------------------------------------------------------------
# small HTML helpers
# --------------------------------------------------------------------------------------------------


def _pm(p, metric, digits=1):
    if metric not in p["mean"]:
        return ""
    m = p["mean"][metric]
    s = p["sem"].get(metric, float("nan"))
    return f"{m:.{digits}f}" + (f" ± {s:.{digits}f}" if math.isfinite(s) else "")


def _fmt(v):
    return "n/a" if v is None or not math.isfinite(float(v)) else f"{float(v):.2g}"


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _table(headers, rows, left=1, raw=()):
    """An HTML table; ``left``: the first n columns (or the set of columns) aligned left, for text;
    cells escaped except in the columns ``raw`` names (they hold markup made here)."""
    lcol = (lambda i: i < left) if isinstance(left, int) else (lambda i: i in left)  # noqa: E731
    th = "".join(f"<th class='{'l' if lcol(i) else ''}'>{h}</th>" for i, h in enumerate(headers))
    body = []
    for row in rows:
        cells = []
        for i, c in enumerate(row):
            text = str(c) if i in raw else _e(c)
            cells.append(f"<td class='{'l' if lcol(i) else ''}'>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"
