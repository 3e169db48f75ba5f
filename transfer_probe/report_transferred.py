"""The report's "Data transferred" section: per run, per task probed at two or more D_f, what the
pre-training so far is worth in fine-tuning examples (:mod:`transfer_probe.transferred`)."""

from __future__ import annotations

import math
from pathlib import Path

from transfer_probe.report_compare import run_labels
from transfer_probe.report_html import esc, figure, html_table
from transfer_probe.store.history import group_key
from transfer_probe.text import format_count, format_multiple, format_tokens


def transferred_section(runs: list[tuple[Path, str, list]]) -> str:
    from transfer_probe.transferred import data_transferred

    parts = []
    for lab, (_, _, pts) in zip(run_labels(runs), runs, strict=True):
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
            parts.append(f"<h3>run {esc(lab)}</h3><p>not computed: {esc(err)}</p>")
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

    head = f"<h3>{esc(tt.task)} &middot; run {esc(run)}</h3>"
    if not tt.ok:
        return head + f"<p>not computed: {esc(tt.why)}</p>"
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
            dt, mult = f"over {_count(floor)} (past the curve's reach)", f"over x{format_multiple((floor + df) / df)}"
        else:
            band = "" if math.isnan(p.low) else f" [{_count(p.low)}, {_count(p.high)}]"
            dt = _count(p.transferred) + band
            mult = f"x{format_multiple(p.multiplier)}" + ("" if math.isnan(p.low) else
                                               f" [{format_multiple(p.multiplier_low)}, {format_multiple(p.multiplier_high)}]")
        rows.append([_count(df), format_tokens(p.tokens), dt, mult,
                     p.status.replace("_", " ") + (" (extrapolated)" if p.extrapolated else ""), tt.growth[df].text()])
    fig = figure(transferred_figure(series, "examples"), f"data transferred D_T against D_p, {tt.task}",
                  "<br>bands: the 90% intervals; red down-triangles: ossified (D_T &lt; 0); up-triangles: past "
                  f"{REACH:g}x the largest from-scratch D<sub>f</sub>, drawn at that floor")
    table = html_table(["D_f", "newest probe (tokens)", "D_T [90% interval]", "data multiplier", "status",
                    "growth with pre-training"], rows, left=6)
    law = ""
    if tt.law is not None:
        pars = ", ".join(f"{k} {v:.3g}" for k, v in tt.law.params.items())
        law = (f"<li>across D<sub>f</sub>: D<sub>T</sub> = k D<sub>F</sub><sup>alpha</sup> N<sup>beta</sup>: "
               f"{esc(pars)} ({'ok' if tt.law.ok else 'not ok: ' + esc(tt.law.why)})</li>")
    method = (f"<ul class='reasons'><li>from-scratch curve: {esc(tt.baseline.method.replace('_', '-'))} "
              f"({esc(tt.baseline.why)})</li><li>CE noise: {esc(tt.noise)}</li>{law}</ul>")
    return head + "<div class='plots'>" + fig + "</div>" + table + method


def _count(x: float) -> str:
    """Examples as the log line writes them (12k, 1.2M); beyond 1e12 in the token format (3.4e15)."""
    return format_tokens(x) if x is not None and math.isfinite(x) and abs(x) >= 1e12 else format_count(x)
