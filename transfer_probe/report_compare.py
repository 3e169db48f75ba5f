"""The report's "Which run to continue" section: several runs of one (task, D_f) compared at the
budget by :func:`transfer_probe.compare.compare_runs`, with their plot, table and odds matrix."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from transfer_probe.report_fits import LAW_NAMES, SHORT_NAMES
from transfer_probe.report_html import esc, figure, html_table
from transfer_probe.store.history import group_key
from transfer_probe.text import format_tokens, label


def run_labels(runs: list[tuple[Path, str, list]]) -> list[str]:
    """Run ids, or ``file:run_id`` where two files hold the same run id."""
    count: dict[str, int] = {}
    for _, rid, _ in runs:
        count[rid] = count.get(rid, 0) + 1
    return [rid if count[rid] == 1 else f"{path.parent.name or path.stem}:{rid}" for path, rid, _ in runs]


def which_run_section(runs: list[tuple[Path, str, list]], budget, laws: dict | None = None) -> str:
    """``laws``: {(index in runs, task, D_f): the verdict's law}, shown next to the comparison's own."""
    from transfer_probe.compare import compare_runs

    labels = run_labels(runs)
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
        return f"<h2>Which run to continue</h2><p>not compared: {esc(err)}</p>"
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
            + f"<p class='meta'>method: {esc(cmp.method)}. A pair is called at P &ge; {cmp.settings['confidence']:g}; "
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
    head = (f"<h3>{esc(g.task)} &middot; D<sub>f</sub>={esc(g.finetune_size)}: {esc(L)} at {format_tokens(g.budget)} tokens "
            f"({way} is better; {g.interval:.0%} intervals)</h3>")
    fig = figure(runs_figure(series, g.budget, L), f"{len(g.runs)} runs' {L}, their laws and predictions at the budget",
                  "<br>solid: the run's law over its probes (where its prediction mixes two laws, their weighted mean); "
                  "dashed: beyond its newest probe",
                  f" data-compare='{esc(g.task)}'")
    rows = []
    for rf in g.runs:
        pred = f"{rf.mean:.3g} [{rf.low:.3g}, {rf.high:.3g}]" if rf.predicted else f"none: {rf.why}"
        law = ("" if rf.source != "law" else
               "mix of " + " + ".join(f"{SHORT_NAMES.get(c['law'], c['law'])} {c['weight']:.2f}" for c in rf.components)
               + f" (the verdict's: {SHORT_NAMES.get(rf.law, rf.law)})" if rf.mixes else
               LAW_NAMES.get(rf.law, rf.law or "") + (f", widened x{rf.interval_scale:.2g}" if rf.interval_scale > 1 else ""))
        rows.append([rf.run_id, format_tokens(rf.tokens), f"{rf.current:.3g}", pred, law, rf.source or "",
                     verdict_laws.get(rf.run_id, "")])
    table = html_table(["run", "tokens", f"current {L}", f"predicted at {format_tokens(g.budget)} [interval]", "law", "source",
                    "the run's verdict: law"], rows, left={0, 3, 4, 5, 6})
    differ = [rf.run_id for rf in g.runs if rf.source == "law" and verdict_laws.get(rf.run_id)
              and verdict_laws[rf.run_id] != f"{rf.law} (trusted)"]
    if differ:
        table += (f"<p class='meta'>{esc(', '.join(differ))}: the comparison forecasts each run on its own "
                  "(compare_runs: its warm-up, noise and trust rule, without the verdict's check of the interval's "
                  "width at the budget), so its law can differ from the one the run's verdict rests on; both are "
                  "shown.</p>")
    ranking = "  ".join(f"{i}. {' = '.join(t)}" for i, t in enumerate(g.ranking, 1)) or "none"
    if g.unranked:
        ranking += f" (unranked: {', '.join(g.unranked)})"
    notes = "".join(f"<li>{esc(n)}</li>" for n in g.notes)
    return (head + "<div class='plots'>" + fig + "</div>" + table + _odds_matrix(g)
            + f"<p>ranking: {esc(ranking)}</p><p>recommendation: <b>{esc(g.recommendation)}</b></p>"
            + (f"<ul class='reasons'>{notes}</ul>" if notes else ""))


def _prob(p: float) -> str:
    """0.62, 0.997, &gt; 0.999, &lt; 0.001: never a bare 1.00 or 0.00 for odds that are not certain."""
    if p > 0.9995 or p < 0.0005:
        return "&gt; 0.999" if p > 0.5 else "&lt; 0.001"
    return f"{p:.3f}" if p > 0.995 or p < 0.005 else f"{p:.2f}"


def _odds_matrix(g) -> str:
    called = {(p.better, p.other) for p in g.pairs if p.called} | {(p.other, p.better) for p in g.pairs if p.called}
    ids = [r.run_id for r in g.runs]
    th = "".join(f"<th>{esc(b)}</th>" for b in ids)
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
        body.append(f"<tr><th class='l'>{esc(a)}</th>{''.join(cells)}</tr>")
    return ("<p class='meta'>P(row beats column) at the budget:</p>"
            f"<table class='odds'><thead><tr><th class='l'>row \\ column</th>{th}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")
