"""The ``transfer-probe`` command.

    transfer-probe demo                       # watch it work, offline, in minutes
    transfer-probe fit history.jsonl --y bleu --budget 2e10
    transfer-probe diagnose history.jsonl --json
    transfer-probe report history.jsonl -o report.html
    transfer-probe probe run/checkpoint-* --train train.jsonl --test test.jsonl --src en --tgt fr

Every command reads the same history file the callback writes; ``fit`` and ``diagnose`` also read any
CSV / JSON Lines table with a tokens column and a metric column. Errors are one line on stderr and a
non-zero exit, never a traceback (set ``TRANSFER_PROBE_DEBUG=1`` to see one).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

EXIT_USAGE = 2
DEFAULT_REPORT = "transfer_probe_report.html"


class CLIError(Exception):
    """A problem with the user's input: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block), like every other error of the command."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _number(text: str, what: str, ok, *, integer: bool = False) -> float:
    """An argparse type: ``text`` as a number that passes ``ok``, else a one-line error saying ``what``."""
    try:
        v = int(text) if integer else float(text)
    except ValueError:
        v = None
    if v is None or not math.isfinite(v) or not ok(v):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return v


def _tokens_arg(text: str) -> float:
    return _number(text, "a positive, finite number of tokens", lambda v: v > 0)


def _target_arg(text: str) -> float:
    return _number(text, "a positive, finite score (or loss) to reach", lambda v: v > 0)


def _level_arg(text: str) -> float:
    return _number(text, "a level between 0 and 1, e.g. 0.9", lambda v: 0 < v < 1)


def _count_arg(text: str) -> int:
    return int(_number(text, "a positive integer", lambda v: v >= 1, integer=True))


def _lr_arg(text: str) -> float:
    return _number(text, "a positive, finite learning rate", lambda v: v > 0)


def _add_fit_options(p: argparse.ArgumentParser, *, ce: bool) -> None:
    p.add_argument("file", help="history file (history.jsonl) or any CSV / TSV / JSON Lines table")
    # None: not given (diagnose then picks the score metric of a history itself).
    p.add_argument("--x", default=None, help="column with pre-training tokens D_p (default: tokens)")
    p.add_argument("--y", default=None, help="column / metric to fit (default: bleu)")
    if ce:
        p.add_argument("--ce", default=None,
                       help="cross-entropy-type column for the misalignment contrast (default: cross_entropy, "
                            "when present; 'none' to disable)")
    p.add_argument("--task", help="only this task (history files with several tasks)")
    p.add_argument("--finetune-size", type=_count_arg, help="only this fine-tuning size D_f (examples)")
    p.add_argument("--run-id", help="only this run (history files holding several runs)")
    p.add_argument("--budget", type=_tokens_arg, help="planned pre-training tokens; predict there (e.g. 2e10)")
    p.add_argument("--target", type=_target_arg, help="target score; report tokens needed to reach it")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="transfer-probe",
        formatter_class=_formatter,
        description="Probe downstream transfer during pre-training: fit scaling laws to probe results, "
        "diagnose misalignment, write reports.",
        epilog="examples:\n"
        "  transfer-probe demo --quick\n"
        "  transfer-probe fit run/transfer_probe/history.jsonl --y bleu --budget 2e10\n"
        "  transfer-probe diagnose curve.csv --x tokens --y bleu --ce loss --json\n"
        "  transfer-probe report run/transfer_probe/history.jsonl -o report.html\n"
        "  transfer-probe compare runA/transfer_probe/history.jsonl runB/transfer_probe/history.jsonl\n",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_demo(sub)
    _add_fit(sub)
    _add_compare(sub)
    _add_diagnose(sub)
    _add_report(sub)
    _add_probe(sub)
    _add_plugins(sub)
    return parser


def _add_demo(sub) -> None:
    from transfer_probe.demo import DEMO_TIME  # the demo's measured time, said in one place

    p = sub.add_parser(
        "demo", formatter_class=_formatter, help="pre-train tiny models offline and watch the verdicts differ",
        description="Pre-train a tiny GPT-2 from scratch on corpora that differ in alignment with an\n"
        "English->French number-words task, probing with TransferProbeCallback, then print the verdicts\n"
        "and write an HTML report. Offline.\n" + textwrap.fill(DEMO_TIME, 100),
        epilog="examples:\n  transfer-probe demo\n  transfer-probe demo --quick --out /tmp/tp-demo\n",
    )
    p.add_argument("--out", default="transfer_probe_demo", help="output directory (default: ./transfer_probe_demo)")
    p.add_argument("--quick", action="store_true", help="a smaller, faster run")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


def _add_fit(sub) -> None:
    p = sub.add_parser(
        "fit", formatter_class=_formatter, help="fit a scaling law to a history file or table",
        description="Fit a scaling law (log: BLEU=(log(A*D^alpha))^beta; power: L=E+A/D^alpha; transfer;\n"
        "chinchilla) and print parameters with standard errors and, with --budget, the prediction.",
        epilog="examples:\n"
        "  transfer-probe fit history.jsonl                      # BLEU log-law per task and D_f\n"
        "  transfer-probe fit history.jsonl --y cross_entropy --law power --budget 1e9\n"
        "  transfer-probe fit curve.csv --x tokens --y bleu --target 25 --json\n"
        "  transfer-probe fit runs.csv --law chinchilla --x N,D --y loss\n",
    )
    _add_fit_options(p, ce=False)
    p.add_argument("--law", default=None,
                   help="law name: log, power, saturating, transfer, chinchilla or one from a plugin "
                        "(default: log for scores, power for losses)")
    p.add_argument("--interval", type=_level_arg, default=0.9, help="prediction interval level (default: 0.9)")
    p.add_argument("--approach", choices=("1", "2", "3"),
                   help="with --law chinchilla on a table of runs: the compute-optimal frontier by Hoffmann et "
                        "al.'s approach 1 (envelope of training curves), 2 (IsoFLOP profiles) or 3 (L(N, D)); "
                        "prints a and b of N_opt ~ C^a, D_opt ~ C^b with intervals")
    p.add_argument("--compute", metavar="COLUMN", help="with --approach: the FLOPs column (default: 6 N D)")
    p.add_argument("--run", metavar="COLUMN",
                   help="with --approach 1: the column naming each run's curve (default: run, run_id or name)")


def _add_compare(sub) -> None:
    p = sub.add_parser(
        "compare", formatter_class=_formatter,
        help="which run to continue: the runs' predicted scores at a common budget, P(A beats B), a ranking",
        description="Compare pre-training runs on the same downstream task: each run's predicted score at a\n"
        "common budget (the law the verdict chose, its interval widened by the run's own backtest), the\n"
        "probability that each run beats each other one there, a ranking and a recommendation. A pair it\n"
        "cannot separate reads 'too close to call (P = ...)'.",
        epilog="examples:\n"
        "  transfer-probe compare runA/transfer_probe/history.jsonl runB/transfer_probe/history.jsonl\n"
        "  transfer-probe compare a.jsonl b.jsonl c.jsonl --budget 2e10 --metric chrf --json\n",
    )
    p.add_argument("files", nargs="+", help="history files (two or more runs in all)")
    p.add_argument("--budget", type=_tokens_arg, help="compare at this many tokens (default: the most any run reached)")
    p.add_argument("--metric", help="metric (default: bleu, else the first score recorded, else cross_entropy)")
    p.add_argument("--confidence", type=_level_arg, default=0.9, help="call a pair at this P (default: 0.9)")
    p.add_argument("--interval", type=_level_arg, default=0.9, help="prediction interval level (default: 0.9)")
    p.add_argument("--task", help="only this task")
    p.add_argument("--finetune-size", type=_count_arg, help="only this fine-tuning size D_f")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def _add_diagnose(sub) -> None:
    p = sub.add_parser(
        "diagnose", formatter_class=_formatter, help="verdict per task and D_f: aligned, misaligned, law_break...",
        description="Diagnose each (task, D_f) group: is the run aligned with the task, has the BLEU law\n"
        "broken, is there transfer at all? Prints the verdict, reasons and recommendation.",
        epilog="examples:\n"
        "  transfer-probe diagnose history.jsonl --budget 2e10 --target 25\n"
        "  transfer-probe diagnose curve.csv --x tokens --y accuracy --ce bpb --json\n",
    )
    _add_fit_options(p, ce=True)


def _add_report(sub) -> None:
    p = sub.add_parser(
        "report", formatter_class=_formatter, help="self-contained HTML report with plots",
        description="Write one self-contained HTML file (plots embedded) with, per run / task / D_f, the\n"
        "BLEU and cross-entropy curves, fitted laws with prediction bands, the baseline, verdicts and tables.",
        epilog="examples:\n  transfer-probe report run/transfer_probe/history.jsonl -o report.html\n"
        "  transfer-probe report a/history.jsonl b/history.jsonl -o compare.html --budget 2e10\n",
    )
    p.add_argument("files", nargs="+", help="history files")
    p.add_argument("-o", "--output", help=f"HTML file to write (default: ./{DEFAULT_REPORT})")
    p.add_argument("--run-id", help="only this run (history files holding several runs)")
    p.add_argument("--budget", type=_tokens_arg, help="planned pre-training tokens (marked, predicted at)")
    p.add_argument("--target", type=_target_arg, help="target BLEU (marked)")



def _add_probe(sub) -> None:
    from transfer_probe.run.probe import FinetuneConfig

    ft = FinetuneConfig()  # the defaults --help shows are the ones a probe uses
    p = sub.add_parser(
        "probe", formatter_class=_formatter, help="probe existing checkpoints after the fact",
        description="Fine-tune each checkpoint directory briefly on a translation task and measure, exactly\n"
        "as the callback does during training. Writes a history file that fit, diagnose and report read.\n"
        "Tokens seen are read from each checkpoint's trainer_state.json (num_input_tokens_seen), or\n"
        "computed as global_step x --tokens-per-step.",
        epilog="examples:\n"
        "  transfer-probe probe run/checkpoint-* --train en-fr.train.jsonl --test en-fr.test.jsonl \\\n"
        "      --src en --tgt fr --finetune-size 50 --finetune-size 500 -o probes.jsonl\n",
    )
    p.add_argument("checkpoints", nargs="+", help="checkpoint directories (config, weights, tokenizer)")
    p.add_argument("--task-type", default="translation", help="task type name (default: translation)")
    p.add_argument("--task-name", help="name recorded for the task (default: SRC-TGT)")
    p.add_argument("--train", required=True, help="fine-tuning data (JSON Lines / CSV / TSV)")
    p.add_argument("--test", required=True, help="test data (JSON Lines / CSV / TSV)")
    p.add_argument("--src", default=None, help="source language key (default: en)")
    p.add_argument("--tgt", default=None, help="target language key (default: the train file's other language, "
                   "when it has exactly two)")
    p.add_argument("--finetune-size", type=_count_arg, action="append", dest="finetune_sizes",
                   help="D_f, examples (repeatable; default: 1000)")
    p.add_argument("--steps", type=_count_arg, help=f"fine-tuning steps per probe (default: {ft.max_steps})")
    p.add_argument("--lr", type=_lr_arg, help=f"fine-tuning learning rate (default: {ft.learning_rate:g})")
    p.add_argument("--batch-size", type=_count_arg, help=f"fine-tuning batch size (default: {ft.batch_size})")
    p.add_argument("--num-threads", type=_count_arg,
                   help="torch threads per fine-tune (default: 1 on CPU, where small models fine-tune fastest on "
                        "one thread and more threads on a busy machine slow every probe several-fold; torch's own "
                        "default on a GPU)")
    p.add_argument("--repeats", type=_count_arg, default=1, help="independent fine-tunes per point (default: 1)")
    p.add_argument("--baseline", action="store_true", help="also probe a randomly initialized model")
    p.add_argument("--tokens-per-step", type=_tokens_arg, help="tokens per optimizer step, when checkpoints do "
                   "not record num_input_tokens_seen")
    p.add_argument("--device", help="device for the fine-tunes (cpu, cuda:0, ...)")
    p.add_argument("-o", "--output", default="transfer_probe_history.jsonl",
                   help="history file to append to (default: ./transfer_probe_history.jsonl)")


def _add_plugins(sub) -> None:
    p = sub.add_parser(
        "plugins", formatter_class=_formatter, help="list the installed plugins and what they register",
        description="List what the loaded plugins register: task types, metrics, laws, executors and sinks,\n"
        "one per line with the plugin it comes from (built-in, or the installed distribution).",
        epilog="examples:\n  transfer-probe plugins\n  transfer-probe plugins --json\n",
    )
    p.add_argument("--json", action="store_true", help="print JSON (one object per plugin) instead of a table")


# --- commands -------------------------------------------------------------------------------------


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


def _run_ids(rows: list[dict]) -> list[str]:
    return sorted({str(r["run_id"]) for r in rows if r.get("kind", "probe") == "probe" and r.get("run_id") is not None})


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
        for i, r in enumerate(rows):
            v = r.get(col)
            try:
                t = float(v) if v is not None and not isinstance(v, bool) else math.nan
            except (TypeError, ValueError):
                t = math.nan
            if v is not None and not (math.isfinite(t) and t >= 0):
                raise CLIError(f"row {i + 1}: column {col!r} (--x) must be a number >= 0, got {v!r}")


def _is_history(rows: list[dict]) -> bool:
    return any(isinstance(r.get("metrics"), dict) for r in rows)


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
    if _is_history(rows):
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

    if args.approach or args.compute or args.run:
        return _cmd_frontier(args)
    rows, law_name = _fit_input(args)
    args.x, args.y = args.x or "tokens", args.y or "bleu"
    groups = _groups(rows) if _is_history(rows) else {(None, None): rows}
    if args.law == "transfer" and _is_history(rows):
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
        head = "" if entry["task"] is None else f"{entry['task']} D_f={entry['finetune_size']}: "
        print(f"{head}{args.y} vs {args.x}, law {law_name}")
        print(_indent(str(fit)))
        if "prediction" in entry:
            pr = entry["prediction"]
            if pr.get("mean") is None:
                print(f"  prediction at {args.budget:.3g}: none ({pr['why']})")
            else:
                print(f"  prediction at {args.budget:.3g}: {pr['mean']:.4g} "
                      f"[{pr['low']:.4g}, {pr['high']:.4g}] ({args.interval:.0%} interval)")
        if "tokens_to_target" in entry:
            tt = entry["tokens_to_target"]
            if tt.get("status") == "ok":
                high = "inf" if tt["high"] is None or tt["high"] == "inf" else f"{float(tt['high']):.3g}"
                print(f"  tokens to reach {args.target:g}: {float(tt['tokens']):.3g} "
                      f"[{float(tt['low']):.3g}, {high}] ({args.interval:.0%} interval)")
            else:
                print(f"  tokens to reach {args.target:g}: {tt['status'].replace('_', ' ')}: {tt.get('why', '')}")
    return 0


def _looks_like_loss(name: str) -> bool:
    from transfer_probe.plugins import higher_is_better

    return not higher_is_better(name)


def _groups(rows: list[dict]) -> dict[tuple, list[dict]]:
    from transfer_probe.store.history import group_key, probe_records

    groups: dict[tuple, list[dict]] = {}
    probes = probe_records(rows)
    for r in probes:
        if r.get("pretrained", True):
            groups.setdefault(group_key(r), []).append(r)
    if not groups:
        raise CLIError("the history holds no successful probe results of a pretrained model")
    # Each group carries its baseline records too: the transfer law reads them, the others skip them.
    for r in probes:
        if not r.get("pretrained", True) and group_key(r) in groups:
            groups[group_key(r)].append(r)
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
    """``fit --law chinchilla --approach 1|2|3``: the compute-optimal frontier (transfer_probe.laws.frontier)."""
    from transfer_probe.laws import frontier
    from transfer_probe.store.history import load_table

    if not args.approach:
        raise CLIError("--compute and --run go with --approach 1|2|3")
    if (args.law or "chinchilla") != "chinchilla":
        raise CLIError(f"--approach goes with --law chinchilla, not --law {args.law}")
    _check_input_file(args.file)
    fit = frontier.fit_frontier(load_table(args.file), args.approach, x=args.x or "N,D", y=args.y or "loss",
                                compute=args.compute, run=args.run, interval=args.interval)
    print(json.dumps(fit.to_dict(), indent=2) if args.json else fit)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from transfer_probe.compare import compare_histories

    for f in args.files:
        _check_input_file(f)
    result = compare_histories(args.files, budget_tokens=args.budget, metric=args.metric,
                               confidence=args.confidence, interval=args.interval, task=args.task,
                               finetune_size=args.finetune_size)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result)
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    from transfer_probe import diagnose as dg

    rows = _select(_load(args.file), args.task, args.finetune_size, args.run_id)
    ce = None if args.ce in ("", "none") else (args.ce or "cross_entropy")
    try:
        if _is_history(rows):
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
    for verdict in verdicts.values():
        print(dg.format_verdict(verdict))
        for reason in verdict.reasons:
            print(f"  - {reason}")
    return 0


def _check_input_file(f: str) -> None:
    p = Path(f)
    if not p.exists():
        raise CLIError(f"{f}: no such file")
    if p.is_dir():
        found = next((c for c in (p / "transfer_probe" / "history.jsonl", p / "history.jsonl") if c.is_file()), None)
        raise CLIError(f"{f} is a directory, not a history file" + (f"; did you mean {found}?" if found else
                                                                    " (give .../transfer_probe/history.jsonl)"))
    if p.stat().st_size == 0:  # as fit and diagnose say it, before report writes an empty page
        raise CLIError(f"{f}: the file holds no rows")


def cmd_report(args: argparse.Namespace) -> int:
    from transfer_probe.report import write_report

    for f in args.files:
        _check_input_file(f)
    output = args.output or DEFAULT_REPORT
    try:
        out = write_report(args.files, output, budget_tokens=args.budget, target=args.target,
                           run_id=args.run_id)
    except OSError as err:
        raise CLIError(f"cannot write the report to {output}: {err.strerror or err}") from None
    if args.output:
        print(f"report written to {out}")
    else:  # a file the user did not name: say where it went and how to choose
        print(f"report written to {Path(out).resolve()} (no -o given: the default name in the current "
              "directory; choose with -o FILE)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from transfer_probe import demo

    argv = ["--out", args.out, "--seed", str(args.seed)] + (["--quick"] if args.quick else [])
    return int(demo.main(argv) or 0)


def cmd_plugins(args: argparse.Namespace) -> int:
    from transfer_probe import plugins

    listed = plugins.list_plugins()
    if args.json:
        print(json.dumps(listed, indent=2, default=_jsonable))
        return 0
    rows = []
    for plugin in listed:
        source = plugin["distribution"] or ("built-in" if plugin["name"].startswith("transfer_probe.")
                                            else f"in-process ({plugin['name']})")
        rows += [(name, kind, source) for kind, names in plugin["registered"].items() for name in names]
        if not plugin["registered"]:  # loaded, but adds nothing: still worth seeing
            rows.append(("-", "nothing registered", source))
    print(_table(("name", "kind", "source"), rows))
    return 0


def _table(head: tuple[str, ...], rows: list[tuple]) -> str:
    """Plain text columns, left-aligned, two spaces apart."""
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows, strict=True)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in [head, *rows])


def _check_writable(path: str) -> None:
    """The history file, or the first existing folder above it, must be writable (checked before
    any fine-tune: finding out after the probes ran would waste them)."""
    p = Path(path).absolute()
    if p.is_dir():
        raise CLIError(f"-o {path} is a directory; give a file, e.g. {Path(path) / 'history.jsonl'}")
    there = p
    while not there.exists() and there != there.parent:
        there = there.parent
    if there != p and not there.is_dir():
        raise CLIError(f"-o {path}: cannot write there: {there} is not a directory")
    if not os.access(there, os.W_OK | (os.X_OK if there.is_dir() else 0)):
        raise CLIError(f"-o {path}: cannot write there: {there} is not writable")


def cmd_probe(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from transfer_probe import plugins
    from transfer_probe.posthoc import probe_checkpoints
    from transfer_probe.run.probe import device_problem
    from transfer_probe.text import format_probe

    try:
        plugins.get_task_type(args.task_type)
    except KeyError as err:
        raise CLIError(f"--task-type {args.task_type}: {err}") from None
    problem = device_problem(args.device)
    if problem:
        raise CLIError(f"--device {args.device}: {problem}")
    _check_writable(args.output)
    if args.num_threads is None:
        args.num_threads = _default_threads(args.device)
    names = {str(Path(c).resolve()): c for c in args.checkpoints}  # print the paths as the user typed them

    def show(record: dict) -> None:
        name = names.get(record.get("checkpoint"), record.get("checkpoint")) or "baseline (no pre-training)"
        tqdm.write(format_probe(record, name), file=sys.stdout)

    records = probe_checkpoints(args, on_record=show)
    _print_verdicts(records)
    print(f"{len(records)} probe records appended to {args.output} (run {records[0]['run_id']})")
    return 0


def _default_threads(device: str | None) -> int | None:
    """1 on CPU: measured on a loaded 2-core machine, a tiny model's probe took 2 s on one thread and
    15-30 s on torch's default (every core, fighting the other load); on a GPU torch's default."""
    if device is not None and device != "cpu":
        return None
    import torch

    return None if device is None and torch.cuda.is_available() else 1


def _print_verdicts(records: list[dict]) -> None:
    from transfer_probe import diagnose as dg

    ok = [r for r in records if r.get("status") == "ok" and r.get("kind", "probe") == "probe"]
    if not ok:
        print("no verdict: no probe succeeded")
        return
    for verdict in dg.diagnose_all(ok).values():
        print(dg.format_verdict(verdict))
        for reason in verdict.reasons:
            print(f"  - {reason}")


COMMANDS = {
    "fit": cmd_fit,
    "diagnose": cmd_diagnose,
    "report": cmd_report,
    "demo": cmd_demo,
    "probe": cmd_probe,
    "plugins": cmd_plugins,
    "compare": cmd_compare,
}


def _jsonable(obj: Any) -> Any:
    """``json.dumps``'s fallback for what it cannot write (numpy values, result objects)."""
    from transfer_probe.jsonable import to_json

    return to_json(obj)


def _indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """parse_args, except that arguments a command does not take are that command's error (its own
    one line and --help), not the top-level one."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not args.command:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        command = parser._subparsers._group_actions[0].choices[args.command]  # type: ignore[union-attr]
        files = [a.dest for a in command._actions if a.dest == "file"]
        reads = f"{args.command} reads one file; " if files and not extra[0].startswith("-") else ""
        command.exit(EXIT_USAGE, f"{command.prog}: error: unrecognized arguments: {' '.join(extra)} "
                                 f"({reads}see {command.prog} --help)\n")
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = _parse(parser, argv)
    if args.version:
        from transfer_probe import __version__

        print(f"transfer-probe {__version__}")
        return 0
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    if args.command != "demo":  # the demo formats its own progress output
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    debug = os.environ.get("TRANSFER_PROBE_DEBUG") == "1"
    try:
        return COMMANDS[args.command](args)
    except CLIError as err:
        print(f"transfer-probe {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, ValueError) as err:
        if debug:
            raise
        print(f"transfer-probe {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"transfer-probe {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
