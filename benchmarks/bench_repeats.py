"""Repeats: noise of the aggregate against probe cost, and verdict stability across repeats.

Real tiny pre-training runs (the demo's setup: GPT-2 0.7M parameters, en->fr number words) with
``repeats`` independent fine-tunes (different fine-tuning seeds) at every probe point and several
D_f. Then, from the recorded repeats:

1. noise vs cost: for k = 1..R repeats, the standard error of the aggregated BLEU and CE of a probe
   point (per-repeat standard deviation / sqrt(k), averaged over the points of the run) against the
   fine-tuning seconds a probe point costs (k x mean seconds of one probe);
2. verdict stability: for k = 1..R, the verdict of :func:`transfer_probe.diagnose.diagnose` on every
   subset of k of the R repeats (baseline included, same subset), the share of subsets that agree
   with the verdict of all R repeats, and the share of the most common verdict.

Run (each corpus in its own process, so two cores work in parallel), then analyse::

    python benchmarks/bench_repeats.py run --corpus bilingual --out bench_out/repeats &
    python benchmarks/bench_repeats.py run --corpus english --out bench_out/repeats &
    wait
    python benchmarks/bench_repeats.py analyze --out bench_out/repeats

``run`` takes ``--repeats`` (default 5), ``--dfs`` (default 50,200), ``--seed``, ``--steps`` (pre-training
steps; probes at the demo's points scaled to it).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path


def cmd_run(args: argparse.Namespace) -> int:
    from transfer_probe.demo import DEFAULT_SETTINGS, run_demo

    s = DEFAULT_SETTINGS
    scale = args.steps / s.max_steps
    settings = replace(
        s, corpora=(args.corpus,), repeats=args.repeats, max_steps=args.steps,
        probe_steps=tuple(sorted({max(1, round(p * scale)) for p in s.probe_steps})),
        finetune_sizes=tuple(int(x) for x in args.dfs.split(",")),
    )
    out = Path(args.out) / f"seed{args.seed}"
    result = run_demo(out, seed=args.seed, progress=not args.quiet, settings=settings)
    print(result.table())
    return 0


def _histories(out: Path) -> list[Path]:
    return sorted(out.glob("seed*/*/transfer_probe/history.jsonl"))


def cmd_analyze(args: argparse.Namespace) -> int:
    from transfer_probe.diagnose import WARNING_STATUSES, diagnose
    from transfer_probe.store.history import group_key, probe_records, read_history

    out = Path(args.out)
    paths = _histories(out)
    if not paths:
        print(f"no histories under {out}/seed*/<corpus>/transfer_probe/ : run `bench_repeats.py run` first",
              file=sys.stderr)
        return 2
    noise_rows, verdict_rows = [], []
    for path in paths:
        corpus, seed = path.parents[1].name, path.parents[2].name
        recs = probe_records(read_history(path))
        for (task, df) in sorted({group_key(r) for r in recs}, key=str):
            group = [r for r in recs if group_key(r) == (task, df)]
            repeats = sorted({int(r.get("repeat", 0)) for r in group})
            R = len(repeats)
            points = defaultdict(list)
            for r in group:
                if r.get("pretrained", True):
                    points[float(r["tokens"])].append(r)
            sd_bleu = [statistics.stdev([p["metrics"]["bleu"] for p in v]) for v in points.values() if len(v) > 1]
            sd_ce = [statistics.stdev([p["metrics"]["cross_entropy"] for p in v]) for v in points.values()
                     if len(v) > 1]
            ci_bleu = [(p["metrics_ci"]["bleu"][1] - p["metrics_ci"]["bleu"][0]) / (2 * 1.645)
                       for v in points.values() for p in v if "bleu" in (p.get("metrics_ci") or {})]
            secs = statistics.mean(p["finetune"]["seconds"] for v in points.values() for p in v)
            cpu = statistics.mean(p.get("cpu_seconds", float("nan")) for v in points.values() for p in v)
            mean_bleu = statistics.mean(p["metrics"]["bleu"] for v in points.values() for p in v)
            for k in range(1, R + 1):
                noise_rows.append(dict(
                    corpus=corpus, seed=seed, df=df, k=k, cost_s=k * secs, cost_cpu_s=k * cpu,
                    sem_bleu=statistics.mean(sd_bleu) / math.sqrt(k) if sd_bleu else float("nan"),
                    sem_ce=statistics.mean(sd_ce) / math.sqrt(k) if sd_ce else float("nan"),
                    boot_bleu=statistics.mean(ci_bleu) / math.sqrt(k) if ci_bleu else float("nan"),
                    mean_bleu=mean_bleu,
                ))
            full = diagnose(group).status
            token_points = sorted(points)
            for k in range(1, R + 1):
                subsets = list(itertools.combinations(repeats, k))
                statuses = []
                warned = 0
                for sub in subsets:
                    chosen = [r for r in group if int(r.get("repeat", 0)) in sub]
                    try:
                        statuses.append(diagnose(chosen).status)
                    except ValueError as err:
                        statuses.append(f"error: {err}")
                    # Warnings raised during the run: the verdict after each probe point, as the
                    # callback would have given it then.
                    for t in token_points[:-1]:
                        upto = [r for r in chosen if float(r["tokens"]) <= t]
                        try:
                            if diagnose(upto).status in WARNING_STATUSES:
                                warned += 1
                                break
                        except ValueError:
                            pass
                counts = Counter(statuses)
                verdict_rows.append(dict(
                    corpus=corpus, seed=seed, df=df, k=k, subsets=len(subsets), full=full,
                    agree=counts[full] / len(subsets), modal=counts.most_common(1)[0][0],
                    modal_share=counts.most_common(1)[0][1] / len(subsets), counts=dict(counts),
                    warned_before=warned / len(subsets),
                ))
    print("Noise of the aggregate against probe cost (per probe point; SEM = repeat SD / sqrt(k), averaged")
    print("over the run's probe points; boot = bootstrap SEM over test sentences / sqrt(k))\n")
    print("| corpus | seed | D_f | k | fine-tune s / point | CPU s / point | mean BLEU | SEM BLEU | boot SEM BLEU | SEM CE |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in noise_rows:
        print(f"| {r['corpus']} | {r['seed']} | {r['df']} | {r['k']} | {r['cost_s']:.1f} | {r['cost_cpu_s']:.1f} | "
              f"{r['mean_bleu']:.1f} | {r['sem_bleu']:.2f} | {r['boot_bleu']:.2f} | {r['sem_ce']:.3f} |")
    print("\nVerdict stability: diagnose() on every subset of k repeats (same subset for the baseline)\n")
    print("(agree: share of subsets whose final verdict is that of all repeats; warned before the end:")
    print("share of subsets with a warning verdict after some earlier probe point)\n")
    print("| corpus | seed | D_f | k | subsets | verdict with all repeats | agree | most common (share) | "
          "warned before the end | counts |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in verdict_rows:
        counts = ", ".join(f"{s}: {n}" for s, n in sorted(r["counts"].items()))
        print(f"| {r['corpus']} | {r['seed']} | {r['df']} | {r['k']} | {r['subsets']} | {r['full']} | "
              f"{r['agree']:.2f} | {r['modal']} ({r['modal_share']:.2f}) | {r['warned_before']:.2f} | {counts} |")
    (out / "analysis.json").write_text(json.dumps({"noise": noise_rows, "verdicts": verdict_rows}, indent=1))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="pre-train one corpus with repeated probes")
    r.add_argument("--corpus", required=True, choices=["bilingual", "english", "code"])
    r.add_argument("--out", default="bench_out/repeats")
    r.add_argument("--repeats", type=int, default=5)
    r.add_argument("--dfs", default="50,200")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--steps", type=int, default=400)
    r.add_argument("--quiet", action="store_true")
    a = sub.add_parser("analyze", help="tables from the recorded repeats")
    a.add_argument("--out", default="bench_out/repeats")
    args = p.parse_args(argv)
    return cmd_run(args) if args.cmd == "run" else cmd_analyze(args)


if __name__ == "__main__":
    raise SystemExit(main())
