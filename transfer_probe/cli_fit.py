"""The commands that read a history file or a table: ``fit`` (and its frontier mode) and ``diagnose``,
with how their rows are loaded, selected (--task, --finetune-size, --run-id), checked and grouped."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from transfer_probe.cli_args import CLIError, check_input_file
from transfer_probe.store.records import is_history


def _select(rows: list[dict], task: str | None, finetune_size: int | None, run_id: str | None = None) -> list[dict]:
    from transfer_probe.store.history import group_key

    out = rows
    if run_id is not None:
        out = [r for r in out if r.get("run_id") is not None and str(r.get("run_id")) == run_id]
    if task is not None:
        out = [r for r in out if str(r.get("task")) == task]
    if finetune_size is not None:
        out = [r for r in out if group_key(r)[1] in (finetune_size, float(finetune_size))]
    if not out and rows:
        asked = " ".join(f"{flag} {v}" for flag, v in (("--run-id", run_id), ("--task", task),
                                                         ("--finetune-size", finetune_size)) if v is not None)
        tasks = sorted({str(r.get("task")) for r in rows if r.get("task") is not None})
        known = f"; tasks in the file: {', '.join(tasks)}" if tasks else ""
        if run_id is not None:
            runs = _run_ids(rows)
            known += f"; runs in the file: {', '.join(runs)}" if runs else "; the file records no run_id"
        raise CLIError(f"no rows match {asked}{known}")
    return out


def _cells(rows, name: str):
    """One column's cells: a CSV Table gives them without building its rows (a 10^6-row table)."""
    from transfer_probe.store.tables import Table

    return rows.values(name) if isinstance(rows, Table) else [r.get(name) for r in rows]


def _run_ids(rows: list[dict]) -> list[str]:
    return sorted({str(run) for kind, run in zip(_cells(rows, "kind"), _cells(rows, "run_id"), strict=True)
                   if (kind or "probe") == "probe" and run is not None})


def _one_run(rows: list[dict], path: str) -> None:
    """Points of different runs are not one curve: never fit or diagnose them together silently."""
    runs = _run_ids(rows)
    if len(runs) > 1:
        raise CLIError(f"{path} holds {len(runs)} runs ({', '.join(runs)}); pick one with --run-id RUN")


def _metrics_of(rows: list[dict]) -> list[str]:
    from transfer_probe.store.history import probe_records

    return sorted({m for r in probe_records(rows) for m in (r.get("metrics") or {})})


def _check_x_values(rows: list[dict], x: str) -> None:
    """Every token value of a table must be a number >= 0; an empty cell is a missing value (skipped)."""
    for col in (c.strip() for c in x.split(",")):
        for i, v in enumerate(_cells(rows, col)):
            try:
                t = float(v) if v is not None and not isinstance(v, bool) else math.nan
            except (TypeError, ValueError):
                t = math.nan
            if v is not None and not (math.isfinite(t) and t >= 0):
                raise CLIError(f"row {i + 1}: column {col!r} (--x) must be a number >= 0, got {v!r}")


def _load(path: str) -> list[dict]:
    from transfer_probe.store.history import load_table

    p = Path(path)
    if not p.exists():
        raise CLIError(f"{path}: no such file")
    try:
        rows = load_table(p)
    except (ValueError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CLIError(f"{path}: cannot read it: {err}") from None
    if not rows:
        raise CLIError(f"{path}: the file holds no rows")
    return rows


def _fit_input(args: argparse.Namespace) -> tuple[list[dict], str]:
    """The rows ``fit`` reads, checked: tokens usable, one run unless the law spans runs."""
    from transfer_probe import laws
    from transfer_probe.diagnose.api import check_tokens
    from transfer_probe.store.history import probe_records

    rows = _select(_load(args.file), args.task, args.finetune_size, args.run_id)
    law_name = args.law or ("power" if _looks_like_loss(args.y or "bleu") else "log")
    try:
        law_cls = laws.get_law(law_name)
    except KeyError as err:
        raise CLIError(str(err).strip("'\"")) from None
    if is_history(rows):
        try:
            check_tokens(probe_records(rows))
        except ValueError as err:
            raise CLIError(f"{args.file}: {err}") from None
    else:
        _check_x_values(rows, args.x or "tokens")
    if getattr(law_cls, "ndim", 1) == 1:  # chinchilla and transfer combine runs (model sizes) by design
        _one_run(rows, args.file)
    return rows, law_name


def cmd_fit(args: argparse.Namespace) -> int:
    from transfer_probe import laws

    if args.approach or args.compute or args.run or args.place:
        return _cmd_frontier(args)
    rows, law_name = _fit_input(args)
    args.x, args.y = args.x or "tokens", args.y or "bleu"
    groups = _groups(rows) if is_history(rows) else {(None, None): rows}
    if args.law == "transfer" and is_history(rows):
        # The transfer law spans fine-tuning sizes: one fit per task over all its D_f.
        by_task: dict[tuple, list[dict]] = {}
        for (task, _df), grows in groups.items():
            by_task.setdefault((task, "all"), []).extend(grows)
        groups = by_task
    out = []
    for (task, df), grows in groups.items():
        try:
            fit = laws.fit_rows(grows, x=args.x, y=args.y, law=law_name)
        except KeyError as err:
            raise CLIError(str(err).strip("'\"")) from None
        entry: dict[str, Any] = {"task": task, "finetune_size": df, "law": law_name, "fit": fit.to_dict()}
        if args.budget is not None:
            entry["prediction"] = _prediction(fit, args.budget, args.interval)
        if args.target is not None and hasattr(fit, "inverse"):
            entry["tokens_to_target"] = _inverse(fit, args.target, args.interval)
        out.append((entry, fit))
    if args.json:
        print(json.dumps([e for e, _ in out], indent=2, default=_jsonable))
        return 0
    for entry, fit in out:
        _print_fit(entry, fit, args, law_name)
    return 0


def _print_fit(entry: dict, fit, args: argparse.Namespace, law_name: str) -> None:
    """One group's fit as text: the law, then the prediction at --budget and the tokens to --target,
    token counts in the one token format (``text.format_tokens``) when x is the tokens."""
    from transfer_probe.text import format_tokens

    def at(v) -> str:
        v = float(v)
        return format_tokens(v) if args.x == "tokens" or not math.isfinite(v) else f"{v:.3g}"

    head = "" if entry["task"] is None else f"{entry['task']} D_f={entry['finetune_size']}: "
    print(f"{head}{args.y} vs {args.x}, law {law_name}")
    print(_indent(str(fit)))
    if "prediction" in entry:
        pr = entry["prediction"]
        if pr.get("mean") is None:
            print(f"  prediction at {at(args.budget)}: none ({pr['why']})")
        else:
            print(f"  prediction at {at(args.budget)}: {pr['mean']:.4g} "
                  f"[{pr['low']:.4g}, {pr['high']:.4g}] ({args.interval:.0%} interval)")
    if "tokens_to_target" in entry:
        tt = entry["tokens_to_target"]
        if tt.get("status") == "ok":
            high = "inf" if tt["high"] is None or tt["high"] == "inf" else at(tt["high"])
            print(f"  tokens to reach {args.target:g}: {at(tt['tokens'])} [{at(tt['low'])}, {high}] "
                  f"({args.interval:.0%} interval)")
        else:
            print(f"  tokens to reach {args.target:g}: {tt['status'].replace('_', ' ')}: {tt.get('why', '')}")


def _looks_like_loss(name: str) -> bool:
    from transfer_probe.plugins import higher_is_better

    return not higher_is_better(name)


def _groups(rows: list[dict]) -> dict[tuple, list[dict]]:
    """The (task, D_f) groups of a history, each with its baseline records (the transfer law reads them,
    the others skip them): :func:`transfer_probe.store.records.group_records`."""
    from transfer_probe.store.records import group_records

    groups = group_records(rows)
    if not groups:
        raise CLIError("the history holds no successful probe results of a pretrained model")
    return groups


def _prediction(fit, x: float, interval: float) -> dict:
    if not fit.ok:
        return {"x": x, "mean": None, "why": fit.why}
    mean, low, high = fit.predict(x, interval=interval)
    return {"x": x, "mean": float(mean), "low": float(low), "high": float(high), "interval": interval}


def _inverse(fit, y: float, interval: float) -> dict:
    if not hasattr(fit, "inverse"):
        return {"target": y, "status": "not_available", "why": f"the {fit.law} law has no inverse"}
    try:
        return fit.inverse(y, interval=interval).to_dict()
    except NotImplementedError as err:
        return {"target": y, "status": "not_available", "why": str(err)}


def _check_history_columns(rows: list[dict], args: argparse.Namespace) -> None:
    """--x/--y/--ce on a history: name what it records, or fail (never a verdict on another metric)."""
    if args.x not in (None, "tokens"):
        raise CLIError(f"--x {args.x}: a history file is diagnosed against its tokens; --x names a column of a "
                       "table (CSV / JSON Lines)")
    have = _metrics_of(rows)
    for flag, name in (("--y", args.y), ("--ce", args.ce)):
        if name not in (None, "", "none") and name not in have:
            raise CLIError(f"{flag} {name}: no probe record holds that metric; recorded: {', '.join(have) or 'none'}")


def _cmd_frontier(args: argparse.Namespace) -> int:
    """``fit --law chinchilla --approach 1|2|3``: the compute-optimal frontier (transfer_probe.laws.frontier),
    with ``--place`` a run placed on it."""
    from transfer_probe.laws import frontier
    from transfer_probe.store.history import load_table

    if not args.approach:
        raise CLIError("--compute, --run and --place go with --approach 1|2|3")
    if (args.law or "chinchilla") != "chinchilla":
        raise CLIError(f"--approach goes with --law chinchilla, not --law {args.law}")
    check_input_file(args.file)
    place = _place_input(args.place, args.run_id) if args.place else None  # checked before the fit
    fit = frontier.fit_frontier(load_table(args.file), args.approach, x=args.x or "N,D", y=args.y or "loss",
                                compute=args.compute, run=args.run, interval=args.interval)
    placement = fit.place(*place[:2], n_basis=place[2]) if place else None
    if args.json:
        print(json.dumps(fit.to_dict() | ({"placement": placement.to_dict()} if placement else {}), indent=2))
    else:
        print(fit)
        if placement:
            print(f"[[Placement]]\n    {placement.text}")
    return 0


def _place_input(text: str, run_id: str | None) -> tuple[float, float, str]:
    """``--place N,TOKENS`` or ``--place HISTORY``: the run's size, tokens so far and what the size counts
    (a history's probe records: non-embedding ``params``, the newest probe's tokens)."""
    from transfer_probe.laws.frontier_result import run_size_and_tokens

    text = text.strip()
    if not Path(text).exists():
        parts = text.split(",")
        try:
            n, tokens = (float(v) for v in parts)
        except ValueError:
            n = tokens = math.nan
        if not (len(parts) == 2 and math.isfinite(n) and math.isfinite(tokens) and n > 0 and tokens > 0):
            raise CLIError(f"--place {text}: give N,TOKENS as two positive numbers (e.g. 1.2e8,3e9) or a run's "
                           "history file")
        return n, tokens, ""
    try:
        check_input_file(text)
    except CLIError as err:
        raise CLIError(f"--place {err}") from None
    rows = _select(_load(text), None, None, run_id)
    if not is_history(rows):
        raise CLIError(f"--place {text}: not a history file (no probe records); give N,TOKENS or the run's "
                       "history.jsonl")
    _one_run(rows, text)
    try:
        return run_size_and_tokens(rows)
    except ValueError as err:
        raise CLIError(f"--place {text}: {err}") from None


def cmd_diagnose(args: argparse.Namespace) -> int:
    from transfer_probe import diagnose as dg

    rows = _select(_load(args.file), args.task, args.finetune_size, args.run_id)
    ce = None if args.ce in ("", "none") else (args.ce or "cross_entropy")
    try:
        if is_history(rows):
            _check_history_columns(rows, args)
            _one_run(rows, args.file)
            verdicts = dg.diagnose_all(rows, budget_tokens=args.budget, target=args.target, metric=args.y, ce=ce)
        else:
            _one_run(rows, args.file)
            verdicts = {(None, None): dg.diagnose_rows(rows, x=args.x or "tokens", y=args.y or "bleu", ce=ce,
                                                       budget_tokens=args.budget, target=args.target)}
    except KeyError as err:
        raise CLIError(str(err).strip("'\"")) from None
    if args.json:
        print(json.dumps([v.to_dict() for v in verdicts.values()], indent=2, default=_jsonable))
        return 0
    _print_verdicts(verdicts.values())
    return 0


def print_verdicts(records: list[dict]) -> None:
    """The verdicts of records just probed (``probe``), as ``diagnose`` prints them."""
    from transfer_probe import diagnose as dg

    ok = [r for r in records if r.get("status") == "ok" and r.get("kind", "probe") == "probe"]
    if not ok:
        print("no verdict: no probe succeeded")
        return
    _print_verdicts(dg.diagnose_all(ok).values())


def _print_verdicts(verdicts) -> None:
    """Each verdict's line, then its reasons."""
    from transfer_probe import diagnose as dg

    for verdict in verdicts:
        print(dg.format_verdict(verdict))
        for reason in verdict.reasons:
            print(f"  - {reason}")


def _jsonable(obj: Any) -> Any:
    """``json.dumps``'s fallback for what it cannot write (numpy values, result objects)."""
    from transfer_probe.jsonable import to_json

    return to_json(obj)


def _indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())
