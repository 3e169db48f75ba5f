"""The verdict's story along a run, for the report: its status changes (numbered on the plots, each
superseded or standing) and the log lines in time order, a warning later superseded faded with the
tokens where it was, and last the verdict recomputed now."""

from __future__ import annotations

from transfer_probe.report_html import esc, num
from transfer_probe.text import format_tokens


def changes_of(recorded: dict, verdict) -> list[dict]:
    """The verdict's status changes along the run (recorded verdicts, then the one recomputed now),
    numbered; each one ``superseded`` (at tokens, ``by`` status) when a later one replaced it."""
    seq = sorted(((num(t), st) for t, st in recorded if num(t) is not None), key=lambda ts: ts[0])
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


def changes_html(changes: list[dict]) -> str:
    if not changes:
        return ""
    items = []
    for c in changes:
        st = c["status"].replace("_", " ")
        if c["superseded"] is not None:
            items.append(f"<li class='superseded'><b>{c['n']}</b> {esc(st)} from {format_tokens(c['tokens'])} tokens: "
                         f"superseded at {format_tokens(c['superseded'])} tokens (by {esc(c['by'].replace('_', ' '))})</li>")
        else:
            items.append(f"<li><b>{c['n']}</b> {esc(st)} from {format_tokens(c['tokens'])} tokens: standing</li>")
    return "<p class='meta'>Verdict changes (numbered above the plots):</p><ul class='changes'>" + "".join(items) + "</ul>"


def _superseded_at(changes: list[dict], tokens, status) -> float | None:
    if tokens is None or status not in WARNINGS:
        return None
    before = [c for c in changes if c["tokens"] <= tokens]
    c = before[-1] if before else None
    return c["superseded"] if c is not None and c["status"] == status else None


WARNINGS = frozenset({"misaligned", "law_break", "no_transfer", "suspected"})


def log_html(g: dict, verdict, changes: list[dict], budget) -> str:
    """The log lines oldest to newest (file order within a probe point), a warning later superseded
    faded with the tokens where it was, and last the verdict recomputed now."""
    from transfer_probe import diagnose as dg

    def line(entry):
        t, st, text = entry
        sup = _superseded_at(changes, t, st)
        if sup is None:
            return esc(text)
        return f"<span class='superseded'>{esc(text)}  [superseded at {format_tokens(sup)} tokens]</span>"

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
            lines.append(f"<b>now</b> (recomputed from the probes{where}): {esc(now)}")
    if not lines:
        return ""
    return "<h3>Log lines and warnings</h3><pre class='log'>" + "\n".join(lines) + "</pre>"
