"""``run_demo`` and ``transfer-probe demo``: the runs, the summary, the report."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path

from transfer_probe.demo.runs import _prepare, _run_all
from transfer_probe.demo.settings import (
    DEFAULT_SETTINGS,
    DEMO_TIME,
    MEASURED_SECONDS,
    QUICK_SETTINGS,
    DemoSettings,
    estimate_seconds,
)
from transfer_probe.demo.summary import DemoResult, _print_result, _summarize


def run_demo(out_dir: str | os.PathLike, quick: bool = False, seed: int = 0, progress: bool = True,
             settings: DemoSettings | None = None) -> DemoResult:
    """Pre-train one tiny model per corpus with the probe callback attached; diagnose; report.

    ``quick`` uses :data:`QUICK_SETTINGS` (two corpora, 200 steps, one repeat) instead of
    :data:`DEFAULT_SETTINGS` (aligned, mixture-shift and no-transfer runs, 800 steps, two repeats);
    ``settings`` overrides both. Up to ``settings.workers`` runs go in parallel, one thread each.
    Each corpus' history goes to ``out_dir/<corpus>/transfer_probe/history.jsonl``.
    """
    from transfer_probe import demodata

    s = settings or (QUICK_SETTINGS if quick else DEFAULT_SETTINGS)
    unknown = [c for c in s.corpora if c not in demodata.CORPORA]
    if unknown or not s.corpora:
        raise ValueError(f"demo corpora {list(s.corpora)}: choose from {sorted(demodata.CORPORA)}")
    for c in s.corpora:
        if any(p <= 0 or p > s.max_steps for p in s.steps_for(c)):
            raise ValueError(f"demo probe steps of {c} {s.steps_for(c)} (probe_steps, and shift_probe_steps where "
                             f"the corpus shifts) must lie in [1, max_steps={s.max_steps}]")
    if s.workers < 1:
        raise ValueError(f"demo workers must be >= 1, got {s.workers}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cpu, wall = estimate_seconds(s)
    workers = max(1, min(s.workers, len(s.corpora), os.cpu_count() or 1))
    if progress:
        cores = f"{workers} idle core{'s' if workers > 1 else ''}"
        measured = MEASURED_SECONDS.get("default") if s == DEFAULT_SETTINGS else None
        when = (f"about {measured / 60:.1f} min on {cores} as measured, at most {wall / 60:.1f} if no run stops early"
                if measured else f"at most {wall / 60:.1f} min on {cores}; runs that stop early take less")
        print(f"transfer_probe demo: {len(s.corpora)} runs ({', '.join(s.corpora)}), {workers} at a time; "
              f"{when} ({cpu / 60:.1f} min of CPU){_load_note(workers)}", flush=True)
    _prepare(s, out, seed)
    jobs = [dict(corpus=c, settings=s, out=str(out), seed=seed) for c in s.corpora]
    paths_by = _run_all(jobs, workers, progress, s)
    paths = [paths_by[c] for c in s.corpora]
    budget = float(s.tokens(s.budget_steps))
    rows = [_summarize(c, p, s.sizes_for(c)[0], budget_tokens=budget) for c, p in zip(s.corpora, paths, strict=True)]
    report_path, note = _write_report(paths, out)
    result = DemoResult(out_dir=out, rows=rows, history_paths=paths, report_path=report_path,
                        seconds=time.perf_counter() - t0, report_note=note)
    if progress:
        _print_result(result)
    return result


def _load_note(workers: int) -> str:
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        return ""
    if load < 0.5:
        return ""
    return (f"; the machine is busy (load {load:.1f} on {os.cpu_count()} cores): expect longer, about "
            f"{1 + load / max(1, workers):.1f}x")


def _write_report(paths: list[Path], out: Path) -> tuple[Path | None, str]:
    try:
        from transfer_probe.report import write_report
    except ImportError as err:
        return None, f"report not written: transfer_probe.report.write_report is not available ({err})"
    target = out / "report.html"
    try:
        written = write_report(paths, target, title="transfer_probe demo")
    except Exception as err:  # the histories are the result; a report failure must not hide them
        return None, f"report not written: {type(err).__name__}: {err}"
    return Path(written), f"report: {written}"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m transfer_probe.demo [--out DIR] [--quick] [--seed N]``."""
    parser = argparse.ArgumentParser(
        prog="transfer-probe demo",
        description="Pre-train tiny GPT-2 models offline, probing an English->French number-words task while "
        "they train: an aligned run (paired bilingual text), a mid-run mixture shift to French-only text, and "
        "English-only text (no transfer); print the verdicts and write an HTML report. Runs two at a time, one "
        f"thread each. {DEMO_TIME}",
        epilog="examples:\n  transfer-probe demo\n  transfer-probe demo --quick --out /tmp/tp-demo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default="transfer_probe_demo", help="output directory (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="two corpora, 200 steps, one repeat (a smoke test)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    args = parser.parse_args(argv)
    result = run_demo(args.out, quick=args.quick, seed=args.seed, progress=True)
    return 0 if result.rows else 1
