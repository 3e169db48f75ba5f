"""What a demo run showed: the summary rows (one per corpus), the table, the check of the prediction
at the budget, and the lines printed at the end."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class DemoRow:
    """One line of the summary table: one corpus (one pre-training run)."""

    corpus: str
    probes: int
    last_tokens: int | None
    last_bleu: float | None
    last_ce: float | None
    baseline_bleu: float | None
    status: str
    recommendation: str
    reasons: list[str] = field(default_factory=list)
    history: Path | None = None
    # The newest prediction at the budget made before the budget was reached, and where the probe at
    # the budget landed ("" when there was none).
    prediction_check: str = ""


@dataclass
class DemoResult:
    """What :func:`run_demo` returns: the rows, the history files, the report (if written)."""

    out_dir: Path
    rows: list[DemoRow]
    history_paths: list[Path]
    report_path: Path | None
    seconds: float
    report_note: str = ""

    def table(self) -> str:
        """The summary table as fixed-width text."""
        return format_table(self.rows)


def format_table(rows: Sequence[DemoRow]) -> str:
    """Fixed-width summary: corpus, probes, tokens, last BLEU (baseline), CE, verdict, recommendation."""
    head = ("corpus", "probes", "tokens", "last BLEU", "baseline", "last CE", "verdict", "recommendation")
    lines = [head]
    for r in rows:
        lines.append((
            r.corpus, str(r.probes), _fmt(r.last_tokens, ".3g"), _fmt(r.last_bleu, ".1f"),
            _fmt(r.baseline_bleu, ".1f"), _fmt(r.last_ce, ".3f"), r.status, r.recommendation,
        ))
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    out = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def _fmt(v: Any, spec: str) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return format(v, spec)


def _summarize(corpus: str, path: Path, finetune_size: int, *, budget_tokens: float) -> DemoRow:
    """Aggregate the newest probe point and diagnose the D_f = ``finetune_size`` group of one history."""
    from transfer_probe.diagnose import diagnose_all
    from transfer_probe.store.history import aggregate, group_key, probe_records, read_history

    records = [r for r in read_history(path) if group_key(r)[1] == finetune_size]
    probes = probe_records(records)
    pre = [r for r in probes if r.get("pretrained", True)]
    base = [r for r in probes if not r.get("pretrained", True)]
    points = aggregate(pre)
    last = max(points, key=lambda p: p["tokens"]) if points else None
    base_points = aggregate(base)
    verdicts = diagnose_all(records, budget_tokens=budget_tokens) if pre else {}
    verdict = next(iter(verdicts.values()), None)

    def mean(p, metric):
        if p is None:
            return None
        v = (p.get("mean") or {}).get(metric)
        return float(v) if v is not None else None

    return DemoRow(
        corpus=corpus, probes=len({r["tokens"] for r in pre}), last_tokens=last["tokens"] if last else None,
        last_bleu=mean(last, "bleu"), last_ce=mean(last, "cross_entropy"),
        baseline_bleu=mean(base_points[0], "bleu") if base_points else None,
        status=verdict.status if verdict else "no probes", recommendation=verdict.recommendation if verdict else "-",
        reasons=list(verdict.reasons) if verdict else [], history=path,
        prediction_check=_prediction_check(probes, last, budget_tokens),
    )


def _prediction_check(probes: list[dict], last: dict | None, budget: float) -> str:
    """The newest trusted prediction at the budget made from the probes before it, against the probe
    at the budget: the demo's check that the law's interval holds."""
    from transfer_probe.diagnose import diagnose_all
    from transfer_probe.text import format_tokens

    if last is None or last["tokens"] < budget:
        return ""
    cuts = sorted({float(r["tokens"]) for r in probes if 0 < float(r["tokens"]) < budget}, reverse=True)
    for cut in cuts:
        verdict = next(iter(diagnose_all([r for r in probes if float(r["tokens"]) <= cut],
                                         budget_tokens=budget).values()), None)
        pred = getattr(verdict, "prediction", None) or {}
        if pred.get("mean") is None:
            continue
        got = float(last["mean"]["bleu"])
        inside = pred["low"] <= got <= pred["high"]
        return (f"predicted at {format_tokens(cut)} tokens for the budget {format_tokens(budget)}: BLEU "
                f"{pred['mean']:.3g} [{pred['low']:.3g}, {pred['high']:.3g}] ({pred.get('interval', 0.9):.0%} interval); "
                f"measured at {format_tokens(last['tokens'])}: {got:.3g}, {'inside' if inside else 'outside'} the interval")
    return "no trusted prediction at the budget before it was reached"


def _print_result(result: DemoResult) -> None:
    print()
    print(result.table())
    print()
    for row in result.rows:
        print(f"{row.corpus}: {row.status} -> {row.recommendation}")
        for reason in row.reasons[:3]:
            print(f"    {reason}")
        if row.prediction_check and row.status == "aligned":
            print(f"    {row.prediction_check}")
    print(f"\nhistories: {', '.join(str(p) for p in result.history_paths)}")
    print(result.report_note)
    print(f"demo finished in {result.seconds:.0f} s")
