"""The report's figures (matplotlib, embedded as base64 PNG): one group's score or loss against
pre-training tokens, several runs side by side at a budget, and the data transferred against D_p.

Plain numbers in, no history or fit objects: :mod:`transfer_probe.report` decides what is drawn (the
verdict's own fits), this module only how. Layout rules that keep a figure readable at any data:
at most 6 labelled ticks on a token axis, written as the log lines write tokens (``3e5``); legends
and notes below the axes, never over the data; verdict changes numbered above the axes (the HTML
under the figure says what each number is); y limits from the data, so a wide band or a curve far
beyond the points cannot squeeze them into a line.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence

import numpy as np

from transfer_probe.text import format_tokens

COLORS = ("#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#1b7c83", "#6e7781", "#a40e26")
MAX_TICKS = 6


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display here; the report embeds PNGs
    import matplotlib.pyplot as plt

    return plt


def token_ticks(lo: float, hi: float, max_ticks: int = MAX_TICKS) -> list[float]:
    """Tick positions for a log token axis from ``lo`` to ``hi``: decades when the range spans 2 or
    more (every k-th so there are at most ``max_ticks``), else 1-2-5 steps, else 1..9 steps; never
    more than ``max_ticks``, so their labels cannot run into each other.

        >>> token_ticks(1e6, 1e9)
        [1000000.0, 10000000.0, 100000000.0, 1000000000.0]
        >>> [format_tokens(t) for t in token_ticks(8e4, 1.7e6)]
        ['1e5', '2e5', '5e5', '1e6']
        >>> token_ticks(7200, 7800)
        [7300.0, 7700.0]
    """
    lo, hi = float(lo), float(hi)
    if not (lo > 0 and hi > lo):
        return [lo] if lo > 0 else []
    e0, e1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    for mants in ((1,), (1, 2, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [m * 10.0 ** e for e in range(e0, e1 + 1) for m in mants if lo <= m * 10.0 ** e <= hi]
        if len(ticks) >= 3 or (mants[-1] == 9 and ticks):
            break
    if len(ticks) > max_ticks:
        step = math.ceil(len(ticks) / max_ticks)
        ticks = ticks[::step]
    if len(ticks) < 2:  # a range inside one 1..9 step: its ends, at two significant digits
        ticks = sorted({float(f"{v:.2g}") for v in (lo * (hi / lo) ** 0.1, hi / (hi / lo) ** 0.1)})
    return ticks


def token_axis(ax, lo: float, hi: float, which: str = "x") -> None:
    """A log axis from lo to hi with :func:`token_ticks` labelled by ``format_tokens``; minor ticks unlabelled."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter

    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    (ax.set_xlim if which == "x" else ax.set_ylim)(lo, hi)
    axis.set_major_locator(FixedLocator(token_ticks(lo, hi)))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: format_tokens(v)))
    axis.set_minor_locator(LogLocator(base=10, subs=tuple(range(2, 10)), numticks=100))
    axis.set_minor_formatter(NullFormatter())


def _padded(lo: float, hi: float, frac: float = 0.06) -> tuple[float, float]:
    """A log range widened by ``frac`` of its width on each side (or half a decade when it is a point)."""
    a, b = math.log10(lo), math.log10(hi)
    pad = (b - a) * frac if b > a else 0.25
    return 10 ** (a - pad), 10 ** (b + pad)


def _ylim(ax, values: Sequence[float], frac: float = 0.08) -> None:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], float)
    if not len(v):
        return
    lo, hi = float(v.min()), float(v.max())
    pad = (hi - lo) * frac if hi > lo else max(abs(hi) * 0.1, 1.0)
    ax.set_ylim(lo - pad, hi + pad)


def _png(fig) -> str:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", pad_inches=0.08)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _legend_below(ax, ncol: int = 2) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=ncol,
                  frameon=False)


def _draw_curve(ax, c: dict) -> None:
    """A curve solid up to ``x_end`` (the newest probe it was fitted to or checked on), dashed beyond."""
    x, y = np.asarray(c["x"], float), np.asarray(c["y"], float)
    end = c.get("x_end", x[-1])
    inside = x <= end * (1 + 1e-9)
    color, lw = c.get("color", "#cf222e"), c.get("lw", 1.6)
    ls = c.get("ls", "-")
    ax.plot(x[inside], y[inside], ls, color=color, lw=lw, label=c.get("label"), alpha=c.get("alpha", 1.0))
    if np.any(~inside):
        j = max(int(np.sum(inside)) - 1, 0)
        ax.plot(x[j:], y[j:], "--", color=color, lw=lw, alpha=c.get("alpha", 1.0))
    if c.get("low") is not None:
        ax.fill_between(x, c["low"], c["high"], color=color, alpha=0.13, lw=0, label=c.get("band_label"))


def _changes_strip(ax, changes: Sequence[dict]) -> None:
    """Each verdict change as a vertical line, numbered above the axes; a superseded one faded.
    Numbers closer than 4% of the axis width go up a row, so none covers another."""
    x0, x1 = (math.log10(v) for v in ax.get_xlim())
    last_at: dict[int, float] = {}
    for ch in changes:
        t = ch["tokens"]
        faded = ch.get("superseded")
        ax.axvline(t, color="#bf8700", lw=1, alpha=0.3 if faded else 0.8, ls=":" if faded else "-", zorder=1)
        fx = (math.log10(t) - x0) / (x1 - x0)
        row = next(r for r in range(10) if fx - last_at.get(r, -1.0) >= 0.04)
        last_at[row] = fx
        ax.text(fx, 1.015 + 0.055 * row, str(ch["n"]), transform=ax.transAxes, ha="center", va="bottom",
                fontsize=7, color="#7d4e00", alpha=0.45 if faded else 1.0, clip_on=False,
                bbox={"boxstyle": "round,pad=0.15", "fc": "#fff8c5", "ec": "#bf8700", "lw": 0.6,
                      "alpha": 0.45 if faded else 1.0})


def group_figure(spec: dict) -> str:
    """One metric of one (run, task, D_f) group against pre-training tokens.

    ``spec``: ``x``, ``y``, ``err`` (points), ``n_warmup`` (the first points, left out of the fits:
    hollow), ``baseline`` (value, sem) or None, ``budget``, ``target``, ``curves`` (dicts for
    :func:`_draw_curve`), ``prediction`` ({tokens, mean, low, high}) or None, ``levels`` ([(y, x0,
    x1, label)] horizontal segments), ``changes`` (for :func:`_changes_strip`), ``ylabel``.
    """
    plt = _pyplot()
    x, y = np.asarray(spec["x"], float), np.asarray(spec["y"], float)
    err = np.asarray(spec["err"], float)
    err = np.where(np.isfinite(err), err, 0.0)
    w = int(spec.get("n_warmup") or 0)
    fig, ax = plt.subplots(figsize=(5.6, 3.5), dpi=110)
    hi_x = max([float(x.max())] + [v for v in (spec.get("budget"),) if v])
    lo, hi = _padded(float(x.min()), hi_x)
    token_axis(ax, lo, hi)
    ys = list(y - err) + list(y + err)
    for c in spec.get("curves", ()):
        _draw_curve(ax, c)
        ys += [v for v in np.asarray(c["y"], float) if math.isfinite(v)]
    if w:
        ax.errorbar(x[:w], y[:w], yerr=err[:w], fmt="o", mfc="white", color="#0969da", capsize=3, zorder=3,
                    label="warm-up probe (left out of the fits)")
    ax.errorbar(x[w:], y[w:], yerr=err[w:], fmt="o", color="#0969da", capsize=3, zorder=3,
                label="probe (mean ± s.e.)")
    pr = spec.get("prediction")
    if pr:
        ax.errorbar([pr["tokens"]], [pr["mean"]], yerr=[[pr["mean"] - pr["low"]], [pr["high"] - pr["mean"]]],
                    fmt="D", color="#cf222e", capsize=4, zorder=4, label="prediction at the budget (90%)")
        ys += [pr["low"], pr["high"]]
    for (yv, a, b, lab), style in zip(spec.get("levels", ()), (":", "--"), strict=False):
        a, b = (a / 1.15, b * 1.15) if a == b else (a, b)  # a level of one probe: a short bar around it
        ax.plot([a, b], [yv, yv], style, color="#a40e26", lw=1.8, label=lab, zorder=2)
    if spec.get("baseline"):
        b, s = spec["baseline"]
        ax.axhline(b, color="#6e7781", ls="--", lw=1.2, label="no pre-training baseline")
        if math.isfinite(s):
            ax.axhspan(b - s, b + s, color="#6e7781", alpha=0.12)
        ys.append(b)
    if spec.get("budget"):
        ax.axvline(spec["budget"], color="#8250df", ls="-.", lw=1.2, label=f"budget {format_tokens(spec['budget'])}")
    if spec.get("target") is not None:
        ax.axhline(spec["target"], color="#1a7f37", ls=":", lw=1.4, label=f"target {spec['target']:g}")
        ys.append(spec["target"])
    # the points and the claims set the range; a curve may leave it, a band may not widen it beyond 50%
    core = list(y - err) + list(y + err) + [v for v in ys[len(y) * 2:] if v is not None]
    span = (max(core) - min(core)) or 1.0
    _ylim(ax, [v for v in ys if min(core) - 0.5 * span <= v <= max(core) + 0.5 * span])
    _changes_strip(ax, spec.get("changes", ()))
    ax.set_xlabel("pre-training tokens D_p")
    ax.set_ylabel(spec.get("ylabel", ""))
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.1)
    _legend_below(ax)
    return _png(fig)


def runs_figure(runs: Sequence[dict], budget: float, ylabel: str) -> str:
    """Several runs of one (task, D_f): each run's points and its forecast's curve (the laws' weighted
    mean under ``compare_runs``' mixture, the verdict's law under ``method="chosen"``; dashed beyond
    its newest probe), a vertical line at the budget, each prediction with its interval there
    (spread a little sideways so the intervals do not hide each other).

    ``runs``: dicts with ``run_id``, ``x``, ``y``, ``curve`` ((grid, values) or None), ``pred``
    ((mean, low, high) or None)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 3.9), dpi=110)
    xs = [v for r in runs for v in r["x"]] + [budget]
    lo, hi = _padded(min(xs), max(xs) * 1.12)
    token_axis(ax, lo, hi)
    ys: list[float] = []
    for i, r in enumerate(runs):
        color = COLORS[i % len(COLORS)]
        ax.plot(r["x"], r["y"], "o", color=color, ms=4.5, label=r["run_id"], zorder=3)
        ys += list(r["y"])
        if r.get("curve") is not None:
            grid, vals = r["curve"]
            _draw_curve(ax, {"x": grid, "y": vals, "x_end": max(r["x"]), "color": color, "lw": 1.3})
        if r.get("pred") is not None:
            m, a, b = r["pred"]
            at = budget * 10 ** (0.025 * (i - (len(runs) - 1) / 2))
            ax.errorbar([at], [m], yerr=[[m - a], [b - m]], fmt="D", color=color, capsize=3, ms=5, zorder=4)
            ys += [a, b]
    ax.axvline(budget, color="#8250df", ls="-.", lw=1.2, label=f"budget {format_tokens(budget)}")
    _ylim(ax, ys)
    ax.set_xlabel("pre-training tokens D_p")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)
    _legend_below(ax, ncol=min(4, len(runs) + 1))
    return _png(fig)


def transferred_figure(series: Sequence[dict], unit: str) -> str:
    """Data transferred D_T against pre-training tokens D_p, log-log, one series per D_f with its
    interval band. D_T < 0 (ossified: worse than from scratch) has no place on a log axis: those
    points sit on the bottom edge as red down-triangles.

    ``series``: dicts with ``df_text``, ``x``, ``dt``, ``low``, ``high`` (NaN: no interval) and ``past``
    (flags: D_T is past the from-scratch curve's reach, ``dt`` is then its floor: an up-triangle)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.7), dpi=110)
    xs = [v for s in series for v in s["x"]]
    pos = [v for s in series for k in ("dt", "low", "high") for v in s[k] if math.isfinite(v) and v > 0]
    lo_x, hi_x = _padded(min(xs), max(xs))
    token_axis(ax, lo_x, hi_x)
    lo_y, hi_y = _padded(min(pos), max(pos), 0.08) if pos else (1.0, 10.0)
    token_axis(ax, lo_y, hi_y, which="y")
    floor = lo_y * 10 ** (0.04 * math.log10(hi_y / lo_y))  # just above the bottom edge
    ossified_label = "ossified (D_T < 0: worse than from scratch)"
    reach_label = "past the from-scratch curve's reach: at least"
    for i, s in enumerate(series):
        color = COLORS[i % len(COLORS)]
        x, dt = np.asarray(s["x"], float), np.asarray(s["dt"], float)
        low, high = np.asarray(s["low"], float), np.asarray(s["high"], float)
        past = np.asarray(s.get("past", [False] * len(x)), bool)
        ok = dt > 0
        ax.plot(x[ok], dt[ok], "-", color=color, lw=1.2, label=f"D_f={s['df_text']}", zorder=3)
        ax.plot(x[ok & ~past], dt[ok & ~past], "o", color=color, ms=4.5, zorder=3)
        if np.any(ok & past):
            ax.plot(x[ok & past], dt[ok & past], "^", color=color, ms=6.5, mfc="white", zorder=3,
                    label=reach_label)
            reach_label = None
        band = np.isfinite(low) & np.isfinite(high) & (high > 0)
        if np.any(band):
            ax.fill_between(x[band], np.clip(low[band], floor, None), high[band], color=color, alpha=0.15, lw=0)
        if np.any(~ok):
            ax.plot(x[~ok], np.full(int(np.sum(~ok)), floor), "v", color="#a40e26", mec=color, ms=7, zorder=4,
                    label=ossified_label)
            ossified_label = None
    ax.set_xlabel("pre-training tokens D_p")
    ax.set_ylabel(f"data transferred D_T ({unit})")
    ax.grid(True, which="major", alpha=0.3)
    _legend_below(ax, ncol=3)
    return _png(fig)
