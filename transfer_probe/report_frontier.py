"""The report's "Compute-optimal frontier" section (``transfer-probe report HISTORY... --frontier TABLE``).

Hoffmann et al.'s (2022) three approaches (:func:`transfer_probe.laws.frontier.fit_frontier`) fitted to
one table of runs, side by side and next to the paper's values; one figure of N_opt against compute
with each approach's line, its band and the points it was fitted to; each history's run placed on it
(its N from the probe records' ``params``, its tokens so far: :func:`run_size_and_tokens`). An approach
the table cannot feed (approach 1 needs training curves, approach 2 shared budgets) is listed with its
reason: it never fails the report. A table that cannot be read, or lacks the columns named, is the
user's error and fails early (:func:`read_frontier_table`, before any history is read).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from transfer_probe.laws.frontier_result import _METHOD, PAPER, FrontierResult, run_size_and_tokens
from transfer_probe.report_compare import run_labels
from transfer_probe.report_html import esc, figure, html_table
from transfer_probe.text import format_tokens

# Hoffmann et al. give 10th-90th percentiles: the same level here, so the intervals compare side by side.
INTERVAL = 0.8
NEEDS = {1: "needs training curves: several checkpoints per run, and runs of several sizes that overlap in compute",
         2: "needs shared budgets: 3 or more compute budgets, each with 5 or more runs of different sizes",
         3: "needs runs spread over model size and tokens for L(N, D)"}
_MAX_NOTES = 8  # per approach; the rest counted


@dataclass(frozen=True)
class FrontierTable:
    """A table of runs read for the section, with its columns as ``fit --approach`` takes them."""

    path: Path
    rows: list = field(repr=False)
    x: str = "N,D"
    y: str = "loss"
    compute: str | None = None
    run: str | None = None
    interval: float = INTERVAL
    n_bootstrap: int = 200


def read_frontier_table(path: str | os.PathLike, *, x: str = "N,D", y: str = "loss", compute: str | None = None,
                        run: str | None = None, interval: float = INTERVAL, n_bootstrap: int = 200) -> FrontierTable:
    """Read and check a table of runs: ``ValueError`` (never ``OSError``: the CLI says those are the
    output's) when it is missing, empty, a history file, or lacks a column named."""
    from transfer_probe.store.history import load_table
    from transfer_probe.store.records import is_history

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"frontier table {p}: {'a directory' if p.is_dir() else 'no such file'}")
    rows = load_table(p)
    if not rows:
        raise ValueError(f"frontier table {p}: the file holds no rows")
    if is_history(rows):
        raise ValueError(f"frontier table {p} is a history file (one run's probes); the frontier needs a table of "
                         "runs: model size, tokens or FLOPs, and loss per row")
    cols = [c.strip() for c in str(x).split(",")]
    if not cols[0] or len(cols) > 2:
        raise ValueError(f"frontier columns: x names the model-size and token columns, e.g. 'N,D'; got {x!r}")
    if (len(cols) < 2 or not cols[1]) and compute is None:
        raise ValueError(f"frontier columns: give the token column in x ('{cols[0]},D') or a FLOPs column in compute")
    available = sorted({str(k) for r in rows for k in r})
    for c in (*[c for c in cols if c], y, compute, run):
        if c is not None and c not in available:
            raise ValueError(f"frontier table {p}: column {c!r} not found; available columns: {', '.join(available)}")
    if not 0 < float(interval) < 1:
        raise ValueError(f"interval must be in (0, 1), got {interval!r}")
    return FrontierTable(p, rows, str(x), y, compute, run, float(interval), int(n_bootstrap))


def fit_approaches(table: FrontierTable) -> tuple[dict[int, FrontierResult], dict[int, str]]:
    """Each approach on the table: the fits that ran, and for the others what they need and why not."""
    from transfer_probe.laws.frontier import fit_frontier

    fits, refused = {}, {}
    for a in (1, 2, 3):
        try:
            fits[a] = fit_frontier(table.rows, a, x=table.x, y=table.y, compute=table.compute, run=table.run,
                                   interval=table.interval, n_bootstrap=table.n_bootstrap)
        except ValueError as err:
            refused[a] = f"{NEEDS[a]}: {err}"
    return fits, refused


def frontier_section(table: FrontierTable | None, runs: list[tuple[Path, str, list]]) -> str:
    """``runs``: the report's (path, run id, merged probe points) per run, each placed on the frontier."""
    if table is None:
        return ""
    fits, refused = fit_approaches(table)
    placed = _placements(fits, runs)
    level = f"{table.interval:.0%}"
    cols = f"x={table.x}, y={table.y}, compute={table.compute or '6 N D'}" + (f", run={table.run}" if table.run else "")
    head = ("<h2>Compute-optimal frontier</h2>"
            f"<p class='meta'>{esc(table.path)}: {len(table.rows)} rows ({esc(cols)}). N<sub>opt</sub> = k<sub>N</sub> "
            "C<sup>a</sup> and D<sub>opt</sub> = k<sub>D</sub> C<sup>b</sup> by Hoffmann et al.'s (2022) three "
            f"approaches, with {level} bootstrap intervals (the paper's are 10th-90th percentiles); b = 1 &minus; a "
            "for approaches 1 and 2 by construction. Method and limits: transfer_probe/laws/frontier.py.</p>")
    out = head + _comparison(fits, refused, level) + _notes(fits, refused)
    if fits:
        out += "<div class='plots'>" + _figure_html(fits, placed, level) + "</div>"
    return out + _placements_html(fits, placed, level)


def _iv(v: float, iv: tuple[float, float]) -> str:
    return f"{v:.4f} [{iv[0]:.4f}, {iv[1]:.4f}]"


def _comparison(fits: dict, refused: dict, level: str) -> str:
    rows = []
    for a in (1, 2, 3):
        paper = [f"{p[0]:.2f} [{p[1]:.3f}, {p[2]:.3f}]" for p in (PAPER[a]["a"], PAPER[a]["b"])]
        f = fits.get(a)
        if f is None:
            rows.append([a, _METHOD[a], "not run", "not run", *paper, "", "", "not run (below)"])
            continue
        lo, hi = f.compute_range
        used = (f"L(N, D) fitted to {f.settings.get('law_fit_points')} rows" if a == 3 else
                f"{len(f.points)} frontier points" + (f", {len(f.excluded)} excluded" if f.excluded else ""))
        rows.append([a, f.method, _iv(f.a, f.a_interval), _iv(f.b, f.b_interval), *paper, used,
                     f"{format_tokens(lo)} to {format_tokens(hi)}", "ok" if f.ok else f"not ok: {f.why}"])
    return html_table(["approach", "method", f"a [{level}]", f"b [{level}]", "Hoffmann et al. a [10%, 90%]",
                       "Hoffmann et al. b", "fitted to", "compute (FLOPs)", "status"], rows, left={1, 6, 8})


def _notes(fits: dict, refused: dict) -> str:
    items = [f"<li>approach {a} ({esc(_METHOD[a])}) not run: {esc(why)}</li>" for a, why in sorted(refused.items())]
    for a, f in sorted(fits.items()):
        lines = [*f.notes, *(f"excluded: {e['why']}" for e in f.excluded)]
        items += [f"<li>approach {a}: {esc(n)}</li>" for n in lines[:_MAX_NOTES]]
        if len(lines) > _MAX_NOTES:
            items.append(f"<li>approach {a}: ... {len(lines) - _MAX_NOTES} more notes (fit --approach {a} lists them)</li>")
    return f"<ul class='reasons'>{''.join(items)}</ul>" if items else ""


def _placements(fits: dict, runs: list[tuple[Path, str, list]]) -> list[dict]:
    """Per run: its N, tokens so far and what N counts, and its :class:`Placement` by each approach; or why not."""
    out = []
    for lab, (_, _, pts) in zip(run_labels(runs), runs, strict=True):
        try:
            n, tokens, basis = run_size_and_tokens(pts)
        except ValueError as err:
            out.append({"run": lab, "why": str(err)})
            continue
        out.append({"run": lab, "n": n, "tokens": tokens, "basis": basis,
                    "at": {a: f.place(n, tokens, n_basis=basis) for a, f in sorted(fits.items())}})
    return out


def _ratio(p) -> str:
    r, lo, hi = p.tokens_ratio
    return f"{r:.2g}x [{lo:.2g}x, {hi:.2g}x]" + (" (extrapolated)" if p.extrapolated else "")


def _placements_html(fits: dict, placed: list[dict], level: str) -> str:
    if not placed:
        return ""
    rows, texts = [], []
    for p in placed:
        if "why" in p:
            rows.append([p["run"], "", "", "", *["" for _ in fits]])
            texts.append(f"<li>run {esc(p['run'])}: not placed: {esc(p['why'])}</li>")
            continue
        rows.append([p["run"], f"{p['n']:.3g} ({p['basis']})", format_tokens(p["tokens"]),
                     format_tokens(6 * p["n"] * p["tokens"]), *[_ratio(pl) for pl in p["at"].values()]])
        texts += [f"<li>run {esc(p['run'])}, approach {a}: {esc(pl.text)}</li>" for a, pl in p["at"].items()]
    heads = ["run", "N", "tokens so far", "C = 6 N D (FLOPs)",
             *[f"approach {a}: tokens / D<sub>opt</sub> [{level}]" for a in sorted(fits)]]
    return ("<h3>Your runs on the frontier</h3>" + html_table(heads, rows, left={0, 1})
            + "<p class='meta'>Below 1: fewer tokens (and a larger model) than the compute-optimal allocation of "
              "the same compute; above 1: more.</p>" + f"<ul class='reasons'>{''.join(texts)}</ul>")


def _figure_html(fits: dict, placed: list[dict], level: str) -> str:
    note = (f"<br>solid: over the compute each approach was fitted on; dashed: extrapolated; bands: {level} "
            "intervals; markers: the frontier points each line was fitted to (approach 3 has none: it is "
            "the law's); stars and crosses: your runs at their N and compute so far")
    return figure(frontier_figure(fits, placed), "compute-optimal model size N_opt against compute C", note,
                  f" data-approaches='{','.join(str(a) for a in sorted(fits))}'")


def frontier_figure(fits: dict[int, FrontierResult], placed: list[dict]) -> str:
    """N_opt against C, log-log: each approach's line (solid over its fitted compute, dashed beyond) with
    its band and its frontier points; each placed run at (6 N tokens, N). Base64 PNG."""
    from transfer_probe.report_figures import COLORS, _legend_below, _padded, _png, _pyplot, token_axis

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.6, 4.0), dpi=110)
    stars = [p for p in placed if "n" in p]
    xs = [v for f in fits.values() for v in (*f.compute_range, *(q["compute"] for q in f.points))]
    xs += [6 * p["n"] * p["tokens"] for p in stars]
    ys = [q["n_opt"] for f in fits.values() for q in f.points] + [p["n"] for p in stars]
    lo, hi = _padded(min(xs), max(xs))
    grid = np.geomspace(lo, hi, 200)
    for a, f in sorted(fits.items()):
        color = COLORS[(a - 1) % len(COLORS)]
        mean, nlo, nhi = f.n_opt(grid)
        inside = (grid >= f.compute_range[0] * (1 - 1e-9)) & (grid <= f.compute_range[1] * (1 + 1e-9))
        ax.plot(grid, mean, "--", color=color, lw=1.0, alpha=0.8)
        ax.plot(grid[inside], mean[inside], "-", color=color, lw=1.7, label=f"approach {a}: a = {f.a:.3f}")
        band = np.isfinite(nlo) & np.isfinite(nhi)
        if band.any():
            ax.fill_between(grid[band], nlo[band], nhi[band], color=color, alpha=0.13, lw=0)
        if f.points:
            ax.plot([q["compute"] for q in f.points], [q["n_opt"] for q in f.points], "os"[a % 2], color=color,
                    ms=4.5, mfc="white", zorder=3, label=f"approach {a}: frontier points")
        ys += [v for v in mean[inside] if math.isfinite(v)]
    for i, p in enumerate(stars):
        c = 6 * p["n"] * p["tokens"]
        ax.plot([c], [p["n"]], "*XPD^v"[i % 6], color="#1b1f24", ms=10 if i % 6 == 0 else 7, zorder=4,
                label=f"run {p['run']}")
        ax.annotate(p["run"], (c, p["n"]), textcoords="offset points", xytext=(6, 4), fontsize=7)
    token_axis(ax, lo, hi)
    token_axis(ax, *_padded(min(ys), max(ys), 0.08), which="y")
    ax.set_xlabel("compute C (FLOPs)")
    ax.set_ylabel("compute-optimal size N_opt (parameters)")
    ax.grid(True, which="major", alpha=0.3)
    _legend_below(ax, ncol=3)
    return _png(fig)
