"""fit, diagnose and report on a 10^6-line history: time and peak memory, streamed vs read-all.

    python benchmarks/bench_scale.py                       # 10^6 rows streamed, 10^5 rows both ways
    python benchmarks/bench_scale.py --rows 200000 --baseline-rows 0 --commands read,fit
    python benchmarks/bench_scale.py --rows 0 --baseline-rows 0 --table-rows 1000000   # CSV tables

The history: one run, 2 tasks x 2 fine-tuning sizes, 50 probe points per group (10^6 to 10^9 tokens,
log-law BLEU, power-law CE) plus a no-pretraining baseline point, each repeated to reach the row count;
1% of the probes failed, and a verdict record per point. Records have every field the callback writes.

"new" is the real command (``transfer_probe.cli.main``), which streams the file. "old" (the
baseline) is :func:`old_path` below: read every line into a list of records first (as the package
did before), then the same computations on that list. Each measurement runs in its own process;
peak memory is that process's ``ru_maxrss`` (imports included).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

TASKS = ("en-fr", "en-de")
SIZES = (50, 500)
POINTS = 50


def write_history(path: Path, rows: int, seed: int = 0) -> None:
    """``rows`` probe lines (repeats spread evenly), plus one verdict line per probe point."""
    rng = random.Random(seed)
    cells = [(t, df, i) for t in TASKS for df in SIZES for i in range(POINTS + 1)]  # i == POINTS: baseline
    repeats = max(1, rows // len(cells))
    with open(path, "w") as fh:
        n = 0
        for r in range(repeats):
            for task, df, i in cells:
                if n >= rows:
                    break
                fh.write(_probe_line(rng, task, df, i, r))
                n += 1
        for task, df, i in cells[:-1]:
            if i < POINTS:
                tokens = 1e6 * 1000 ** (i / (POINTS - 1))
                fh.write(json.dumps({"schema": 1, "kind": "verdict", "run_id": "run-a", "task": task,
                                     "finetune_size": {"examples": df}, "tokens": tokens, "status": "aligned",
                                     "message": f"{task} D_f={df}: aligned"}) + "\n")


def _probe_line(rng: random.Random, task: str, df: int, i: int, repeat: int) -> str:
    base = i == POINTS
    tokens = 0.0 if base else 1e6 * 1000 ** (i / (POINTS - 1))
    bleu = 3.0 if base else math.log(2e-3 * tokens ** 0.6) ** 1.6
    ce = 3.0 if base else 1.2 + 40.0 / tokens ** 0.3
    failed = rng.random() < 0.01
    rec = {"schema": 1, "kind": "probe", "run_id": "run-a", "time": 1.7e9, "step": 0 if base else 100 * (i + 1),
           "tokens": tokens, "params": {"non_embedding": 400000, "total": 700000}, "task": task,
           "finetune_size": {"examples": df, "tokens": df * 12}, "pretrained": not base,
           "status": "failed" if failed else "ok", "error": "RuntimeError: out of memory" if failed else None,
           "metrics": {} if failed else {"bleu": bleu + rng.gauss(0, 0.4), "chrf": 2 * bleu + rng.gauss(0, 0.4),
                                         "cross_entropy": ce + rng.gauss(0, 0.002)},
           "metrics_ci": {} if failed else {"bleu": [bleu - 1.0, bleu + 1.0]},
           "metric_signatures": {"bleu": "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"},
           "finetune": {"steps": 60, "learning_rate": 1e-3, "batch_size": 32, "seed": repeat, "seconds": 1.0},
           "seconds": 1.5, "repeat": repeat}
    return json.dumps(rec) + "\n"


def write_table(path: Path, rows: int, dense: bool, seed: int = 0) -> None:
    """A CSV of ``rows`` rows (tokens, bleu, cross_entropy, pretrained): repeats of 50 points and a
    baseline, or (``dense``) a dense curve with its own token count in every row."""
    rng = random.Random(seed)
    pts = [0.0] + [1e6 * 1000 ** (i / (POINTS - 1)) for i in range(POINTS)]
    with open(path, "w") as fh:
        fh.write("tokens,bleu,cross_entropy,pretrained\n")
        for i in range(rows):
            t = 1e6 * 1000 ** (i / rows) if dense else pts[i % len(pts)]
            bleu = 3.0 if t == 0 else math.log(2e-3 * t ** 0.6) ** 1.6
            ce = 3.0 if t == 0 else 1.2 + 40.0 / t ** 0.3
            fh.write(f"{t!r},{bleu + rng.gauss(0, 0.4)!r},{ce + rng.gauss(0, 0.002)!r},{'false' if t == 0 else 'true'}\n")


# --- the baseline: read every record into memory, then compute ------------------------------------


def read_all(path: Path) -> list[dict]:
    """The reader as it was: every line parsed and kept, then the caller aggregates."""
    with open(path, encoding="utf-8") as fh:
        lines = fh.readlines()
    out = []
    for line in lines:
        if line.strip():
            rec = json.loads(line)
            rec.setdefault("schema", 0)
            rec.setdefault("kind", "probe")
            out.append(rec)
    return out


def old_path(command: str, path: Path, out: Path) -> None:
    from transfer_probe import cli, laws
    from transfer_probe import diagnose as dg
    from transfer_probe.report import render_report
    from transfer_probe.store.history import aggregate

    if path.suffix == ".csv":  # a table as a list of row dicts (csv.DictReader), as read_csv gave it
        import csv

        with open(path, newline="") as fh:
            rows = [{k: (float(v) if k != "pretrained" else v) for k, v in r.items()} for r in csv.DictReader(fh)]
        if command == "fit":
            laws.fit_rows(rows, x="tokens", y="bleu", law="log")
        else:  # diagnose_rows as it was: a probe record per row, then the verdict on all of them
            from transfer_probe.diagnose.api import _row_record

            recs = [_row_record(i, r, "tokens", "bleu", "cross_entropy", "table") for i, r in enumerate(rows)]
            try:
                dg.diagnose([r for r in recs if r is not None], metric="bleu")
            except ValueError:  # a dense curve: refused (the verdict reads <= 1000 points); its cost is the figure
                pass
        return
    rows = read_all(path)
    if command == "read":
        aggregate(rows)
    elif command == "fit":
        for grows in cli._groups(rows).values():
            laws.fit_rows(grows, y="bleu", law="log")
    elif command == "diagnose":
        dg.diagnose_all(rows)
    else:
        out.write_text(render_report([(path, rows)]), encoding="utf-8")


def new_path(command: str, path: Path, out: Path) -> None:
    from transfer_probe import cli
    from transfer_probe.store.history import aggregate, read_points

    if command == "read":  # the part this benchmark is about: reading and aggregating, no rules
        aggregate(read_points(path))
        return
    argv = [command, str(path)] + (["-o", str(out)] if command == "report" else [])
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        rc = cli.main(argv)
    if rc and path.suffix == ".csv" and command == "diagnose":
        return  # a dense curve: refused (one line, exit 2); what it cost is the figure
    if rc:
        raise SystemExit(f"transfer-probe {' '.join(argv)} exited {rc}")


def child(way: str, command: str, path: str, out: str) -> None:
    import transfer_probe.cli, transfer_probe.diagnose, transfer_probe.laws, transfer_probe.report  # noqa (not timed)

    use = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = use.ru_utime + use.ru_stime
    t0 = time.perf_counter()
    (old_path if way == "old" else new_path)(command, Path(path), Path(out))
    seconds = time.perf_counter() - t0
    use = resource.getrusage(resource.RUSAGE_SELF)
    # CPU seconds too: on a shared machine they are the steadier figure (imports excluded below).
    print(json.dumps({"seconds": seconds, "cpu": use.ru_utime + use.ru_stime - cpu0,
                      "peak_mb": use.ru_maxrss / 1024}))  # kB on Linux


def measure(way: str, command: str, path: Path, out: Path) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", way, command, str(path), str(out)],
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{way} {command} failed:\n{proc.stderr[-2000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["wall_with_imports"] = time.perf_counter() - t0
    if command == "report":
        res["html_kb"] = out.stat().st_size / 1024
    return res


def run(rows: int, ways: list[str], commands: list[str], tmp: Path) -> dict:
    path = tmp / f"history-{rows}.jsonl"
    t0 = time.perf_counter()
    write_history(path, rows)
    print(f"\n{rows} rows: {path.stat().st_size / 1e6:.0f} MB written in {time.perf_counter() - t0:.1f} s", flush=True)
    results = {}
    for command in commands:
        for way in ways:
            r = measure(way, command, path, tmp / f"{way}-{rows}.html")
            results[(way, command)] = r
            extra = f", HTML {r['html_kb']:.0f} kB" if "html_kb" in r else ""
            print(f"  {command:8s} {way}: {r['seconds']:6.1f} s wall, {r['cpu']:6.1f} s CPU, "
                  f"peak {r['peak_mb']:6.0f} MB{extra}", flush=True)
        if len(ways) == 2:
            o, n = results[("old", command)], results[("new", command)]
            print(f"  {command:8s} old/new: wall {o['seconds'] / n['seconds']:.1f}x, CPU {o['cpu'] / n['cpu']:.1f}x, "
                  f"peak memory {o['peak_mb'] / n['peak_mb']:.1f}x", flush=True)
    path.unlink()
    return results


def run_tables(rows: int, ways: list[str], tmp: Path) -> None:
    """fit and diagnose on a CSV of ``rows`` rows, repeats of 51 points and a dense curve."""
    for kind in ("repeats", "dense"):
        path = tmp / f"table-{kind}-{rows}.csv"
        write_table(path, rows, dense=kind == "dense")
        print(f"\n{rows}-row CSV ({kind}): {path.stat().st_size / 1e6:.0f} MB", flush=True)
        for command in ("fit", "diagnose"):
            for way in ways:
                r = measure(way, command, path, tmp / "unused.html")
                print(f"  {command:8s} {way}: {r['seconds']:6.1f} s wall, {r['cpu']:6.1f} s CPU, "
                      f"peak {r['peak_mb']:6.0f} MB", flush=True)
        path.unlink()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows for the streamed path (default 10^6)")
    ap.add_argument("--baseline-rows", type=int, default=100_000,
                    help="rows for the old-vs-new comparison (default 10^5; 0: skip)")
    ap.add_argument("--commands", default="read,fit,diagnose,report",
                    help="comma-separated, of read (read + aggregate only), fit, diagnose, report")
    ap.add_argument("--table-rows", type=int, default=0,
                    help="also a CSV table of this many rows (repeats and dense): fit and diagnose")
    ap.add_argument("--table-ways", default="old,new", help="with --table-rows: old, new or old,new")
    args = ap.parse_args(argv)
    commands = args.commands.split(",")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory() as d:
        if args.table_rows:
            run_tables(args.table_rows, args.table_ways.split(","), Path(d))
        if args.baseline_rows:
            run(args.baseline_rows, ["old", "new"], commands, Path(d))
        if args.rows:
            run(args.rows, ["new"], commands, Path(d))


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        child(*sys.argv[2:])
    else:
        main()
