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
from pathlib import Path
from typing import Any

EXIT_USAGE = 2


class CLIError(Exception):
    """A problem with the user's input: printed as one line, exit code 2."""


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _add_fit_options(p: argparse.ArgumentParser, *, ce: bool) -> None:
    p.add_argument("file", help="history file (history.jsonl) or any CSV / TSV / JSON Lines table")
    p.add_argument("--x", default="tokens", help="column with pre-training tokens D_p (default: tokens)")
    p.add_argument("--y", default="bleu", help="column / metric to fit (default: bleu)")
    if ce:
        p.add_argument("--ce", default="cross_entropy",
                       help="cross-entropy-type column for the misalignment contrast (default: cross_entropy; "
                            "'none' to disable)")
    p.add_argument("--task", help="only this task (history files with several tasks)")
    p.add_argument("--finetune-size", type=int, help="only this fine-tuning size D_f (examples)")
    p.add_argument("--budget", type=float, help="planned pre-training tokens; predict there (e.g. 2e10)")
    p.add_argument("--target", type=float, help="target score; report tokens needed to reach it")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transfer-probe",
        formatter_class=_formatter,
        description="Probe downstream transfer during pre-training: fit scaling laws to probe results, "
        "diagnose misalignment, write reports.",
        epilog="examples:\n"
        "  transfer-probe demo --quick\n"
        "  transfer-probe fit run/transfer_probe/history.jsonl --y bleu --budget 2e10\n"
        "  transfer-probe diagnose curve.csv --x tokens --y bleu --ce loss --json\n"
        "  transfer-probe report run/transfer_probe/history.jsonl -o report.html\n",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "demo", formatter_class=_formatter, help="pre-train tiny models offline and watch the verdicts differ",
        description="Pre-train a tiny GPT-2 from scratch on corpora that differ in alignment with an\n"
        "English->French number-words task, probing with TransferProbeCallback, then print the verdicts\n"
        "and write an HTML report. Offline; about 10 minutes on 2 CPU cores (--quick: about 2).",
        epilog="examples:\n  transfer-probe demo\n  transfer-probe demo --quick --out /tmp/tp-demo\n",
    )
    p.add_argument("--out", default="transfer_probe_demo", help="output directory (default: ./transfer_probe_demo)")
    p.add_argument("--quick", action="store_true", help="a smaller, faster run")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")

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
    p.add_argument("--interval", type=float, default=0.9, help="prediction interval level (default: 0.9)")

    p = sub.add_parser(
        "diagnose", formatter_class=_formatter, help="verdict per task and D_f: aligned, misaligned, law_break...",
        description="Diagnose each (task, D_f) group: is the run aligned with the task, has the BLEU law\n"
        "broken, is there transfer at all? Prints the verdict, reasons and recommendation.",
        epilog="examples:\n"
        "  transfer-probe diagnose history.jsonl --budget 2e10 --target 25\n"
        "  transfer-probe diagnose curve.csv --x tokens --y accuracy --ce bpb --json\n",
    )
    _add_fit_options(p, ce=True)

    p = sub.add_parser(
        "report", formatter_class=_formatter, help="self-contained HTML report with plots",
        description="Write one self-contained HTML file (plots embedded) with, per run / task / D_f, the\n"
        "BLEU and cross-entropy curves, fitted laws with prediction bands, the baseline, verdicts and tables.",
        epilog="examples:\n  transfer-probe report run/transfer_probe/history.jsonl -o report.html\n"
        "  transfer-probe report a/history.jsonl b/history.jsonl -o compare.html --budget 2e10\n",
    )
    p.add_argument("files", nargs="+", help="history files")
    p.add_argument("-o", "--output", default="transfer_probe_report.html", help="HTML file to write")
    p.add_argument("--budget", type=float, help="planned pre-training tokens (marked, predicted at)")
    p.add_argument("--target", type=float, help="target BLEU (marked)")

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
    p.add_argument("--src", default="en", help="source language key (default: en)")
    p.add_argument("--tgt", default="de", help="target language key (default: de)")
    p.add_argument("--finetune-size", type=int, action="append", dest="finetune_sizes",
                   help="D_f, examples (repeatable; default: 1000)")
    p.add_argument("--steps", type=int, help="fine-tuning steps per probe")
    p.add_argument("--lr", type=float, help="fine-tuning learning rate")
    p.add_argument("--batch-size", type=int, help="fine-tuning batch size")
    p.add_argument("--repeats", type=int, default=1, help="independent fine-tunes per point (default: 1)")
    p.add_argument("--baseline", action="store_true", help="also probe a randomly initialized model")
    p.add_argument("--tokens-per-step", type=float, help="tokens per optimizer step, when checkpoints do "
                   "not record num_input_tokens_seen")
    p.add_argument("--device", help="device for the fine-tunes (cpu, cuda:0, ...)")
    p.add_argument("-o", "--output", default="transfer_probe_history.jsonl", help="history file to append to")

    sub.add_parser("plugins", help="list the installed plugins and what they register")
    return parser


# --- commands -------------------------------------------------------------------------------------


def _select(rows: list[dict], task: str | None, finetune_size: int | None) -> list[dict]:
    from transfer_probe.history import group_key

    out = rows
    if task is not None:
        out = [r for r in out if str(r.get("task")) == task]
    if finetune_size is not None:
        out = [r for r in out if group_key(r)[1] in (finetune_size, float(finetune_size))]
    if not out and rows:
        asked = " ".join(f"{flag} {v}" for flag, v in (("--task", task), ("--finetune-size", finetune_size))
                         if v is not None)
        tasks = sorted({str(r.get("task")) for r in rows if r.get("task") is not None})
        raise CLIError(f"no rows match {asked}" + (f"; tasks in the file: {', '.join(tasks)}" if tasks else ""))
    return out


def _is_history(rows: list[dict]) -> bool:
    return any(isinstance(r.get("metrics"), dict) for r in rows)


def _load(path: str) -> list[dict]:
    from transfer_probe.history import load_table

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


def cmd_fit(args: argparse.Namespace) -> int:
    from transfer_probe import laws

    rows = _select(_load(args.file), args.task, args.finetune_size)
    groups = _groups(rows) if _is_history(rows) else {(None, None): rows}
    if args.law == "transfer" and _is_history(rows):
        # The transfer law spans fine-tuning sizes: one fit per task over all its D_f.
        by_task: dict[tuple, list[dict]] = {}
        for (task, _df), grows in groups.items():
            by_task.setdefault((task, "all"), []).extend(grows)
        groups = by_task
    law_name = args.law or ("power" if _looks_like_loss(args.y) else "log")
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
    name = name.lower()
    return any(k in name for k in ("loss", "entropy", "ce", "bpb", "perplexity", "nll"))


def _groups(rows: list[dict]) -> dict[tuple, list[dict]]:
    from transfer_probe.history import group_key, probe_records

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


def cmd_diagnose(args: argparse.Namespace) -> int:
    from transfer_probe import diagnose as dg

    rows = _select(_load(args.file), args.task, args.finetune_size)
    ce = None if args.ce in (None, "", "none") else args.ce
    try:
        if _is_history(rows):
            verdicts = dg.diagnose_all(rows, budget_tokens=args.budget, target=args.target)
        else:
            verdicts = {(None, None): dg.diagnose_rows(rows, x=args.x, y=args.y, ce=ce,
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


def cmd_report(args: argparse.Namespace) -> int:
    from transfer_probe.report import write_report

    for f in args.files:
        if not Path(f).exists():
            raise CLIError(f"{f}: no such file")
    try:
        out = write_report(args.files, args.output, budget_tokens=args.budget, target=args.target)
    except OSError as err:
        raise CLIError(f"cannot write the report to {args.output}: {err.strerror or err}") from None
    print(f"report written to {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from transfer_probe import demo

    argv = ["--out", args.out, "--seed", str(args.seed)] + (["--quick"] if args.quick else [])
    return int(demo.main(argv) or 0)


def cmd_plugins(args: argparse.Namespace) -> int:
    from transfer_probe import plugins

    print(json.dumps(plugins.list_plugins(), indent=2, default=_jsonable))
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from transfer_probe.posthoc import probe_checkpoints

    n = probe_checkpoints(args)
    print(f"{n} probe records appended to {args.output}")
    return 0


COMMANDS = {
    "fit": cmd_fit,
    "diagnose": cmd_diagnose,
    "report": cmd_report,
    "demo": cmd_demo,
    "probe": cmd_probe,
    "plugins": cmd_plugins,
}


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return str(obj)


def _indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
