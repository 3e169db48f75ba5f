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
import os
import sys
from pathlib import Path

# The parser, and the commands that read a history or a table, live beside this module; every name
# that was imported from here still is.
from transfer_probe.cli_args import (  # noqa: F401
    DEFAULT_REPORT,
    EXIT_USAGE,
    CLIError,
    _parse,
    build_parser,
    check_input_file,
)
from transfer_probe.cli_fit import _groups, _jsonable, cmd_diagnose, cmd_fit, print_verdicts  # noqa: F401


def cmd_compare(args: argparse.Namespace) -> int:
    from transfer_probe.compare import compare_histories

    for f in args.files:
        check_input_file(f)
    result = compare_histories(args.files, budget_tokens=args.budget, metric=args.metric,
                               confidence=args.confidence, interval=args.interval, task=args.task,
                               finetune_size=args.finetune_size, method=args.method)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from transfer_probe.report import write_report

    for f in args.files:
        check_input_file(f)
    columns = {k: getattr(args, f"frontier_{k}") for k in ("x", "y", "compute", "run")}
    if args.frontier is not None:
        check_input_file(args.frontier)
    elif any(v is not None for v in columns.values()):
        given = next(k for k, v in columns.items() if v is not None)
        raise CLIError(f"--frontier-{given} goes with --frontier TABLE")
    output = args.output or DEFAULT_REPORT
    try:
        out = write_report(args.files, output, budget_tokens=args.budget, target=args.target,
                           run_id=args.run_id, frontier=args.frontier,
                           frontier_options={k: v for k, v in columns.items() if v is not None})
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
    print_verdicts(records)
    print(f"{len(records)} probe records appended to {args.output} (run {records[0]['run_id']})")
    return 0


def _default_threads(device: str | None) -> int | None:
    """1 on CPU: measured on a loaded 2-core machine, a tiny model's probe took 2 s on one thread and
    15-30 s on torch's default (every core, fighting the other load); on a GPU torch's default."""
    if device is not None and device != "cpu":
        return None
    import torch

    return None if device is None and torch.cuda.is_available() else 1


COMMANDS = {
    "fit": cmd_fit,
    "diagnose": cmd_diagnose,
    "report": cmd_report,
    "demo": cmd_demo,
    "probe": cmd_probe,
    "plugins": cmd_plugins,
    "compare": cmd_compare,
}


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
