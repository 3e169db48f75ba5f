"""The ``transfer-probe`` command line's grammar: the parser with one-line errors, the argument types
that check a value where it is typed, one ``_add_<command>`` per command, and the checks of an input
file named on the command line. :mod:`transfer_probe.cli` runs the commands."""

from __future__ import annotations

import argparse
import math
import textwrap
from pathlib import Path

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
        "  transfer-probe fit runs.csv --law chinchilla --x N,D --y loss\n"
        "  transfer-probe fit runs.csv --law chinchilla --approach 2 --place run/transfer_probe/history.jsonl\n",
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
    p.add_argument("--place", metavar="N,TOKENS|HISTORY",
                   help="with --approach: place your run on the frontier (its tokens so far against D_opt for its "
                        "compute): its model size and tokens (e.g. 1.2e8,3e9), or its history file (N: the probe "
                        "records' non-embedding params; tokens: the newest probe's; --run-id picks a run)")


def _add_compare(sub) -> None:
    p = sub.add_parser(
        "compare", formatter_class=_formatter,
        help="which run to continue: the runs' predicted scores at a common budget, P(A beats B), a ranking",
        description="Compare pre-training runs on the same downstream task: each run's predicted score at a\n"
        "common budget (its candidate laws mixed, each weighted by how well it predicted the run's own\n"
        "later probes, its interval widened by that backtest), the\n"
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
    p.add_argument("--method", choices=("mixture", "chosen"), default="mixture",
                   help="mixture (default): each run's candidate laws mixed, weighted by how well each predicted "
                        "the run's own later probes; chosen: the verdict's law alone (narrower, overconfident on "
                        "close pairs: benchmarks/README.md)")
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
        "  transfer-probe report a/history.jsonl b/history.jsonl -o compare.html --budget 2e10\n"
        "  transfer-probe report run/transfer_probe/history.jsonl --frontier runs.csv --frontier-x N,D\n",
    )
    p.add_argument("files", nargs="+", help="history files")
    p.add_argument("-o", "--output", help=f"HTML file to write (default: ./{DEFAULT_REPORT})")
    p.add_argument("--run-id", help="only this run (history files holding several runs)")
    p.add_argument("--budget", type=_tokens_arg, help="planned pre-training tokens (marked, predicted at)")
    p.add_argument("--target", type=_target_arg, help="target BLEU (marked)")
    p.add_argument("--frontier", metavar="TABLE",
                   help="a table of runs (CSV / JSON Lines: model size, tokens or FLOPs, loss): adds the "
                        "compute-optimal frontier by Hoffmann et al.'s three approaches side by side, each "
                        "history's run placed on it")
    # fit's --x/--y/--compute/--run, named for the table (the report's own axis is the tokens)
    p.add_argument("--frontier-x", metavar="N,D", help="with --frontier: model-size and token columns (default: N,D)")
    p.add_argument("--frontier-y", metavar="COLUMN", help="with --frontier: the loss column (default: loss)")
    p.add_argument("--frontier-compute", metavar="COLUMN", help="with --frontier: the FLOPs column (default: 6 N D)")
    p.add_argument("--frontier-run", metavar="COLUMN",
                   help="with --frontier: the column naming each run's curve (default: run, run_id or name)")


def _add_probe(sub) -> None:
    import dataclasses

    from transfer_probe.run.config import FinetuneConfig

    # The defaults --help shows are the ones a probe uses, read off the dataclass: building a
    # FinetuneConfig checks its scheduler against transformers, an import (~1.3 s) that every
    # command would pay just to build the parser.
    ft = argparse.Namespace(**{f.name: f.default for f in dataclasses.fields(FinetuneConfig)})
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


def check_input_file(f: str) -> None:
    p = Path(f)
    if not p.exists():
        raise CLIError(f"{f}: no such file")
    if p.is_dir():
        found = next((c for c in (p / "transfer_probe" / "history.jsonl", p / "history.jsonl") if c.is_file()), None)
        raise CLIError(f"{f} is a directory, not a history file" + (f"; did you mean {found}?" if found else
                                                                    " (give .../transfer_probe/history.jsonl)"))
    if p.stat().st_size == 0:  # as fit and diagnose say it, before report writes an empty page
        raise CLIError(f"{f}: the file holds no rows")


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
