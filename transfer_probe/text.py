"""The words a person reads: verdict lines, actions, token counts. One place, so the log, the CLI and
the report say the same thing the same way."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from transfer_probe.store.records import examples, finetune_examples

LABELS = {"bleu": "BLEU", "chrf": "chrF", "cross_entropy": "CE", "exact_match": "exact match",
          "accuracy": "accuracy", "bpb": "bits/byte"}
LONG_LABELS = {"cross_entropy": "cross-entropy", "bpb": "bits-per-byte"}

_ACTIONS = {
    "insufficient_data": "wait for more probes",
    "suspected": "probe again: re-measure before acting on it",
    "misaligned": "stop or change the mixture",
    "law_break": "stop and check the run and the probe",
    "no_transfer": "stop: pre-training on this data does not help this task",
}


def label(metric: str | None) -> str:
    return LABELS.get(metric or "", metric or "")


def long_label(metric: str | None) -> str:
    return LONG_LABELS.get(metric or "", metric or "")


def format_tokens(x: Any) -> str:
    """Tokens as 1.2e9, 2e10, 3.1e4 (one format everywhere); below 10,000 as the count itself. What is
    not a number is shown as it is.

        >>> format_tokens(1.23e9), format_tokens(2e10), format_tokens(384), format_tokens(0)
        ('1.2e9', '2e10', '384', '0')
    """
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "?" if x is None else str(x)
    if not math.isfinite(x):
        return "inf" if x > 0 else "?"
    if abs(x) < 1e4:  # small counts read best as they are
        return f"{x:.0f}"
    e = int(math.floor(math.log10(abs(x))))
    m = round(x / 10 ** e, 1)
    if m >= 10:
        m, e = m / 10, e + 1
    ms = f"{m:.1f}".rstrip("0").rstrip(".")
    return f"{ms}e{e}"


def action(v: Any) -> str:
    """What the user should do, in words, for a verdict."""
    if v.status == "aligned":
        return "continue" if v.recommendation == "continue" else "stop: the target is out of reach within the budget"
    if v.status == "no_transfer" and v.recommendation == "wait":
        return "wait: cross-entropy already beats the no-pretraining baseline; the score may follow"
    return _ACTIONS[v.status]


def format_verdict(verdict: Any, *, prefix: bool = True) -> str:
    """The one-line log text of a verdict (``prefix=False`` drops the ``transfer_probe [WARNING]`` head,
    for loggers whose format already names it).

        >>> from transfer_probe.diagnose import Verdict
        >>> v = Verdict(status="insufficient_data", recommendation="wait", task="en-fr",
        ...             finetune_size=50, tokens=8.2e4, n_points=2, more_probes_needed=2,
        ...             latest={"bleu": 18.1})
        >>> format_verdict(v)
        'transfer_probe | en-fr D_f=50 | tokens 8.2e4 | BLEU 18.1 | insufficient_data: 2 points, 2 more probes needed for a verdict | wait'
    """
    v = verdict
    head = []
    if prefix:
        head.append("transfer_probe WARNING" if v.is_warning else "transfer_probe")
    who = str(v.task) if v.task is not None else "table"
    if v.finetune_size is not None:
        who += f" D_f={examples(v.finetune_size)}"
    head.append(who)
    border = " (borderline: within the noise margin of the threshold; more repeats at this point would settle it)" \
        if v.borderline else ""
    msg = v.stats.get("message") if isinstance(v.stats, Mapping) else None
    if v.status in ("misaligned", "law_break", "no_transfer", "suspected"):
        text = f"{v.status}: " + (msg or (v.reasons[0] if v.reasons else v.status)) + border
        return " | ".join(head + [text, action(v)])
    parts = head + [f"tokens {format_tokens(v.tokens)}"] + ([_values(v)] if v.latest else [])
    if v.status == "insufficient_data":
        parts.append(f"insufficient_data: {v.n_points} point{'s' if v.n_points != 1 else ''}, "
                     f"{v.more_probes_needed} more probe{'s' if v.more_probes_needed != 1 else ''} needed for a verdict")
        parts.append("wait")
        return " | ".join(parts)
    parts.append("aligned: " + _law_text(v) + border)
    parts.append(action(v))
    return " | ".join(parts)


def _values(v: Any) -> str:
    vals = []
    for name in (v.metric, "chrf" if v.metric != "chrf" else None, v.ce_metric):
        if name and name in (v.latest or {}):
            val = v.latest[name]
            sem = (v.latest_sem or {}).get(name)
            dig = 3 if name == v.ce_metric else 1
            s = f"{label(name)} {val:.{dig}f}"
            if sem is not None and math.isfinite(sem) and sem > 0:
                s += f"±{sem:.{dig}f}"
            vals.append(s)
    return " ".join(vals)


_FORMULAS = {"log": "(log(A*D^a))^b", "saturating": "C-A/D^a"}


def _law_text(v: Any) -> str:
    L = label(v.metric)
    law = v.law or "log"
    fit = (v.fits.get(v.metric) or {}) if isinstance(v.fits, Mapping) else {}
    trusted = bool(fit.get("trusted", fit.get("ok", False)))
    text = f"law: {L}={_FORMULAS.get(law, law)} {'fits' if trusted else 'not trusted yet'} ({v.n_points} points)"
    bt = v.stats.get("backtest") if isinstance(v.stats, Mapping) else None
    if bt and bt.get("n"):
        probes = f"{bt['n']} probe{'s' if bt['n'] > 1 else ''}"
        text += (f", predicted the last {probes} within {bt['max_abs_err']:.2g} {L}" if trusted else
                 f", missed the last {probes} by up to {bt['max_abs_err']:.2g} {L}")
    pr = v.prediction
    if pr and pr.get("mean") is not None:
        text += f", predicts {pr['mean']:.1f} [{pr['low']:.1f}, {pr['high']:.1f}] at {format_tokens(pr['budget'])}"
    tt = v.tokens_to_target
    if tt:
        if tt.get("mean") is not None:
            text += f"; {L} {tt['target']:g} after {format_tokens(tt['mean'])} tokens"
        elif str(tt.get("why", "")).startswith("not reachable"):
            text += f"; {L} {tt['target']:g} not reachable"
        else:
            text += f"; {L} {tt['target']:g} not predictable yet"
    return text


_DIGITS = {"bleu": 1, "chrf": 1, "cross_entropy": 3, "bpb": 3}


def format_probe(record: Mapping[str, Any], name: str | None = None) -> str:
    """One probe record as a line: where, tokens, D_f, then each metric with its bootstrap interval.

        >>> format_probe({"tokens": 2560, "finetune_size": {"examples": 64}, "status": "ok",
        ...               "metrics": {"bleu": 12.34, "cross_entropy": 3.4567},
        ...               "metrics_ci": {"bleu": [10.0, 14.5], "cross_entropy": [3.4, 3.5]}}, "checkpoint-10")
        'checkpoint-10 | tokens 2560 | D_f=64 | BLEU 12.3 [10.0, 14.5] | CE 3.457 [3.400, 3.500]'
    """
    parts = [name or str(record.get("checkpoint") or "?"), f"tokens {format_tokens(record.get('tokens'))}",
             f"D_f={finetune_examples(record)}"]
    if record.get("repeat"):
        parts.append(f"repeat {record['repeat']}")
    if record.get("status", "ok") != "ok":
        return " | ".join(parts + [f"{record.get('status')}: {record.get('error')}"])
    ci = record.get("metrics_ci") or {}
    for metric, value in (record.get("metrics") or {}).items():
        if not isinstance(value, (int, float)):
            continue
        fmt = f".{_DIGITS[metric]}f" if metric in _DIGITS else ".3g"
        text = f"{label(metric)} {value:{fmt}}"
        lo_hi = ci.get(metric)
        if isinstance(lo_hi, (list, tuple)) and len(lo_hi) == 2 and None not in lo_hi:
            text += f" [{lo_hi[0]:{fmt}}, {lo_hi[1]:{fmt}}]"
        parts.append(text)
    return " | ".join(parts)


def format_count(x: float) -> str:
    """Examples as a person reads them: 64, 850, 12k, 1.2M, 3.4B; ``inf``; negative counts keep their sign.

        >>> format_count(12345), format_count(850), format_count(-31.2), format_count(2.5e6)
        ('12k', '850', '-31', '2.5M')
    """
    if x is None or not math.isfinite(float(x)):
        return "?" if x is None or math.isnan(float(x)) else ("inf" if x > 0 else "-inf")
    a = abs(float(x))
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if a >= div * 0.9995:
            return f"{x / div:.2g}{suffix}" if a < 100 * div else f"{x / div:.0f}{suffix}"
    return f"{x:.0f}" if a >= 10 else f"{x:.2g}"


def format_multiple(m: float) -> str:
    """A data multiplier: 1.3, 31, 450, 1.3e4 (the token format beyond 10,000)."""
    if not math.isfinite(m) or m >= 1e4:
        return format_tokens(m)
    return f"{m:.2g}" if m < 100 else f"{m:.0f}"
