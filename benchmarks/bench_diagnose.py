"""Calibration of the diagnosis: false alarms on aligned curves, detection of breaks, and the verdicts
on the real OLMo ladder curves.

    python benchmarks/bench_diagnose.py                 # full run, ~1000+ curves per family, 2 workers
    python benchmarks/bench_diagnose.py --curves 20     # quick look
    python benchmarks/bench_diagnose.py --olmo-only

Synthetic families (probes log-spaced over 1e8-1e10 tokens, 3 repeats per probe point, each point's
standard error is the repeats' sem, as the callback records it):

- ``aligned``: BLEU follows the log-law (log(A*D^alpha))^beta, CE follows E + A/D^alpha.
- ``plateau+CE`` / ``decline+CE``: the law holds up to a break after probe b, then BLEU stays flat
  or falls while CE keeps its power law (the misalignment signature).
- ``plateau, CE breaks`` / ``decline, no CE``: the same breaks without the CE contrast (CE rises
  with it, or is not recorded).
- ``no_transfer``: the pretrained curve sits at the no-pretraining baseline.

Each curve is diagnosed at every probe (as the callback would), with the default thresholds.
False alarm: any warning at any probe of an aligned curve (per run), and per diagnosis. Detection:
a break warning at one of the two probes after the break. Break size: the gap between the law's
continuation and the broken curve at the second probe after the break, in units of the noise (the
sem of a point). The test statistics are kept, so the rates are also given for other thresholds.

Then ``diagnose`` runs over every run in ../shared/data/olmo-ladder/ (accuracy as the score, downstream
bits-per-byte as the CE-type signal, chance accuracy as the no-pretraining baseline).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from collections import Counter, defaultdict
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from transfer_probe.diagnose import DEFAULT_THRESHOLDS, WARNING_STATUSES, diagnose

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "olmo-ladder"

FAMILIES = ["aligned", "plateau+CE", "decline+CE", "plateau, CE breaks", "decline, no CE", "no_transfer"]
# (probes, noise sd of a point in BLEU, errors recorded?)
CONFIGS = [(6, 0.5, True), (6, 1.0, True), (6, 2.0, True), (10, 0.5, True), (10, 1.0, True), (10, 2.0, True),
           (10, 1.0, False)]
REPEATS = 3
SWEEP = [1.5, 1.75, 2.0, 2.33, 2.5, 3.0]


# ------------------------------------------------------------------------------------------------
# Synthetic curves


def _law_params(rng):
    """A log-law rising from 5-15 BLEU at 1e8 tokens to 20-40 at 1e10, and a CE power law."""
    beta = rng.uniform(0.5, 2.0)
    y0, y1 = rng.uniform(5, 15), rng.uniform(20, 40)
    c = y0 ** (1 / beta)
    alpha = (y1 ** (1 / beta) - c) / math.log(100.0)
    E = rng.uniform(1.0, 2.0)
    a_ce = rng.uniform(0.15, 0.5)
    A_ce = rng.uniform(0.5, 1.5)
    return dict(beta=beta, c=c, alpha=alpha, E=E, a_ce=a_ce, A_ce=A_ce)


def _bleu(p, D):
    return (p["c"] + p["alpha"] * np.log(D / 1e8)) ** p["beta"]


def _ce(p, D):
    return p["E"] + p["A_ce"] * (D / 1e8) ** (-p["a_ce"])


def make_curve(family: str, n: int, sigma: float, known: bool, seed: int) -> dict:
    """One synthetic run: its records (3 repeats per point + 3 baseline repeats) and its truth."""
    rng = np.random.default_rng(seed)
    D = np.geomspace(1e8, 1e10, n)
    u = np.log(D)
    p = _law_params(rng)
    law = _bleu(p, D)
    bleu, ce = law.copy(), _ce(p, D)
    sig_ce = sigma * 0.01  # CE noise small against its trend, as measured CE usually is
    b = None
    if family not in ("aligned", "no_transfer"):
        # the law holds for points 0..b (at least min_points - 1 of them, so that a verdict is possible at
        # the first probe after the break) and two probes after the break exist
        b = int(rng.integers(DEFAULT_THRESHOLDS.min_points - 2, n - 2))
        after = np.arange(n) > b
        if family.startswith("plateau"):
            bleu = np.where(after, law[b], law)
        else:
            drop = rng.uniform(1.0, 10.0) / math.log(10.0)  # 1-10 BLEU per decade
            bleu = np.where(after, law[b] - drop * (u - u[b]), law)
        if family == "plateau, CE breaks":
            rise = rng.uniform(0.02, 0.2) / math.log(10.0)  # CE rises 0.02-0.2 per decade
            ce = np.where(after, ce[b] + rise * (u - u[b]), ce)
    base = 0.5 * law[0]
    if family == "no_transfer":
        base = float(rng.uniform(5, 15))
        bleu = np.full(n, base) + rng.uniform(-0.5, 0.5) * sigma * np.linspace(0, 1, n)
    reps = REPEATS if known else 1
    sd_rep = sigma * math.sqrt(reps)
    recs = []
    for i in range(n):
        for r in range(reps):
            m = {"bleu": float(bleu[i] + rng.normal(0, sd_rep)), "cross_entropy": float(ce[i] + rng.normal(0, sig_ce * math.sqrt(reps)))}
            if family == "decline, no CE":
                del m["cross_entropy"]
            recs.append({"run_id": f"s{seed}", "task": "syn", "finetune_size": 50, "tokens": float(D[i]),
                         "pretrained": True, "status": "ok", "repeat": r, "metrics": m})
    for r in range(reps):
        m = {"bleu": float(base + rng.normal(0, sd_rep)), "cross_entropy": float(_ce(p, D[0]) + 0.5)}
        recs.append({"run_id": f"s{seed}", "task": "syn", "finetune_size": 50, "tokens": 0.0, "pretrained": False,
                     "status": "ok", "repeat": r, "metrics": m})
    gap = None
    if b is not None:
        gap = float((law[b + 2] - bleu[b + 2]) / sigma)
    return {"records": recs, "D": D, "break": b, "gap_sigma": gap, "reps": reps}


def run_curve(args) -> dict:
    """Diagnose a curve at each probe (the looks a callback would make). Returns the looks' stats."""
    family, n, sigma, known, seed = args
    cur = make_curve(family, n, sigma, known, seed)
    D = cur["D"]
    looks = range(DEFAULT_THRESHOLDS.min_points, n + 1) if family != "no_transfer" else [n]
    if cur["break"] is not None:
        looks = [cur["break"] + 2, cur["break"] + 3]  # the first two probes after the break
    out = []
    t0 = time.perf_counter()
    for k in looks:
        recs = [r for r in cur["records"] if r["tokens"] <= D[k - 1]]
        v = diagnose(recs)
        out.append({"look": k, "status": v.status, "z": v.stats.get("z_bleu"), "z_ce": v.stats.get("z_ce"),
                    "borderline": v.borderline, "tests": v.stats.get("tests", {})})
    return {"family": family, "n": n, "sigma": sigma, "known": known, "seed": seed, "break": cur["break"],
            "gap": cur["gap_sigma"], "looks": out, "seconds": time.perf_counter() - t0}


def _rate(k, n):
    return f"{100 * k / n:.1f}% ({k}/{n})" if n else "-"


def summarize(results: list[dict], z_break: float) -> str:
    lines = []
    by = defaultdict(list)
    for r in results:
        by[(r["family"], r["n"], r["sigma"], r["known"])].append(r)

    def warned(look, z=None):
        if z is None:
            return look["status"] in WARNING_STATUSES
        t = look.get("tests") or {}
        return (t.get("holdout1", 9) < -DEFAULT_THRESHOLDS.z_holdout
                or min(t.get("decline", 9), t.get("plateau2", 9)) < -z)

    th = DEFAULT_THRESHOLDS
    lines.append(f"Default thresholds: z_break={th.z_break} (stopped improving, fell), z_holdout={th.z_holdout}, "
                 f"z_ce={th.z_ce}, z_transfer={th.z_transfer}.\n")
    lines.append("| probes | noise (BLEU sd of a point) | errors | false alarm per run | per diagnosis | "
                 "borderline among alarms |")
    lines.append("|---|---|---|---|---|---|")
    tot_run = tot_runs = 0
    for (fam, n, s, known), rs in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][2], not kv[0][3])):
        if fam != "aligned":
            continue
        runs = sum(any(warned(lk) for lk in r["looks"]) for r in rs)
        looks = [lk for r in rs for lk in r["looks"] if lk["status"] != "insufficient_data"]
        fa = [lk for lk in looks if warned(lk)]
        tot_run += runs
        tot_runs += len(rs)
        lines.append(f"| {n} | {s:g} | {'sem of 3 repeats' if known else 'none (scatter)'} | {_rate(runs, len(rs))} | "
                     f"{_rate(len(fa), len(looks))} | {_rate(sum(lk['borderline'] for lk in fa), len(fa))} |")
    lines.append(f"| all | | | **{_rate(tot_run, tot_runs)}** | | |\n")

    lines.append("Detection within 2 probes after the break, breaks larger than 2x the noise (and all breaks), "
                 "and how the detected ones are classified:\n")
    lines.append("| family | probes | noise | errors | detected (gap > 2 sd) | detected (all) | classified right |")
    lines.append("|---|---|---|---|---|---|---|")
    right_status = {"plateau+CE": "misaligned", "decline+CE": "misaligned", "plateau, CE breaks": "law_break",
                    "decline, no CE": "law_break"}
    fam_tot = defaultdict(lambda: [0, 0, 0, 0])
    for (fam, n, s, known), rs in sorted(by.items(), key=lambda kv: (FAMILIES.index(kv[0][0]), kv[0][1], kv[0][2])):
        if fam not in right_status:
            continue
        big = [r for r in rs if r["gap"] is not None and r["gap"] > 2]
        det = [r for r in big if any(warned(lk) for lk in r["looks"])]
        det_all = [r for r in rs if any(warned(lk) for lk in r["looks"])]
        cls = [r for r in det_all if next(lk for lk in r["looks"] if warned(lk))["status"] == right_status[fam]]
        t = fam_tot[fam]
        t[0] += len(det)
        t[1] += len(big)
        t[2] += len(cls)
        t[3] += len(det_all)
        lines.append(f"| {fam} | {n} | {s:g} | {'sem' if known else 'none'} | {_rate(len(det), len(big))} | "
                     f"{_rate(len(det_all), len(rs))} | {_rate(len(cls), len(det_all))} |")
    for fam, t in fam_tot.items():
        lines.append(f"| **{fam}, all** | | | | **{_rate(t[0], t[1])}** | | {_rate(t[2], t[3])} |")
    lines.append("")

    bins = [(0, 1), (1, 2), (2, 3), (3, 5), (5, 10), (10, math.inf)]
    lines.append("Detection by break size (gap at the 2nd probe after the break, in noise sd), all break families:\n")
    lines.append("| gap / noise | " + " | ".join(f"{lo:g}-{hi:g}" for lo, hi in bins) + " |")
    lines.append("|---" * (len(bins) + 1) + "|")
    brk = [r for r in results if r["gap"] is not None]
    cells = []
    for lo, hi in bins:
        rs = [r for r in brk if lo <= r["gap"] < hi]
        cells.append(_rate(sum(any(warned(lk) for lk in r["looks"]) for r in rs), len(rs)))
    lines.append("| detected | " + " | ".join(cells) + " |\n")

    lines.append(f"Other values of z_break (same curves, z_holdout kept at {DEFAULT_THRESHOLDS.z_holdout}):\n")
    lines.append("| z_break | false alarm per run (aligned) | detection, gap > 2 sd | detection, gap > 4 sd |")
    lines.append("|---|---|---|---|")
    al = [r for r in results if r["family"] == "aligned"]
    for z in SWEEP:
        fa = sum(any(warned(lk, z) for lk in r["looks"]) for r in al)
        b2 = [r for r in brk if r["gap"] > 2]
        b4 = [r for r in brk if r["gap"] > 4]
        d2 = sum(any(warned(lk, z) for lk in r["looks"]) for r in b2)
        d4 = sum(any(warned(lk, z) for lk in r["looks"]) for r in b4)
        lines.append(f"| {z:g} | {_rate(fa, len(al))} | {_rate(d2, len(b2))} | {_rate(d4, len(b4))} |")
    lines.append("")

    nt = [r for r in results if r["family"] == "no_transfer"]
    if nt:
        k = sum(r["looks"][-1]["status"] == "no_transfer" for r in nt)
        al_nt = sum(any(lk["status"] == "no_transfer" for lk in r["looks"]) for r in al)
        lines.append(f"no_transfer: {_rate(k, len(nt))} of curves sitting at the baseline get it; "
                     f"{_rate(al_nt, len(al))} of aligned runs (baseline at half the first probe's BLEU) ever do.\n")
    secs = [r["seconds"] / max(1, len(r["looks"])) for r in results]
    lines.append(f"Time per diagnosis: median {1000 * np.median(secs):.0f} ms, mean {1000 * np.mean(secs):.0f} ms.")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# OLMo ladder

OLMO_TASKS = {  # task -> chance accuracy, the score of a model that learned nothing
    "hellaswag": 0.25, "arc_easy": 0.25, "arc_challenge": 0.25, "piqa": 0.5, "winogrande": 0.5,
    "openbookqa": 0.25, "csqa": 0.2, "socialiqa": 1 / 3, "boolq": 0.5, "mmlu_stem": 0.25,
    "mmlu_humanities": 0.25, "mmlu_social_sciences": 0.25, "mmlu_other": 0.25,
}


def load_olmo_run(path: Path) -> dict[str, list[dict]]:
    """History-shaped records per task of one OLMo ladder run: tokens, accuracy, bits-per-byte."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = {}
    for task, chance in OLMO_TASKS.items():
        acc_col = f"eval/downstream/{task}_val_rc_5shot_{'acc' if task == 'boolq' else 'len_norm'}"
        bpb_col = f"eval/downstream_bpb/{task}_val_rc_5shot_bpb"
        recs = []
        for r in rows:
            try:
                tok, acc, bpb = float(r["throughput/total_tokens"]), float(r[acc_col]), float(r[bpb_col])
            except (KeyError, ValueError):
                continue
            if not (math.isfinite(acc) and math.isfinite(bpb)) or tok <= 0:
                continue
            recs.append({"run_id": path.stem, "task": task, "finetune_size": 0, "tokens": tok, "pretrained": True,
                         "status": "ok", "step": int(float(r["_step"])), "metrics": {"accuracy": acc, "bpb": bpb}})
        if recs:
            recs.append({"run_id": path.stem, "task": task, "finetune_size": 0, "tokens": 0.0, "pretrained": False,
                         "status": "ok", "metrics": {"accuracy": chance}})
        out[task] = recs
    return out


def _subsample(recs: list[dict], k: int) -> list[dict]:
    """k probe points log-spaced in tokens (a callback's schedule) plus the baseline."""
    pre = sorted((r for r in recs if r["pretrained"]), key=lambda r: r["tokens"])
    x = np.array([r["tokens"] for r in pre])
    want = np.geomspace(x[0], x[-1], k)
    idx = sorted({int(np.argmin(np.abs(np.log(x) - np.log(w)))) for w in want})
    return [pre[i] for i in idx] + [r for r in recs if not r["pretrained"]]


def olmo_one(args) -> dict:
    path, task, schedule = args
    recs = load_olmo_run(Path(path))[task]
    if schedule != "all":
        recs = _subsample(recs, int(schedule))
    v = diagnose(recs, metric="accuracy", ce="bpb")
    reasons = [r for r in v.reasons if not r.startswith("no errors recorded")]
    reason = v.stats.get("message") or (reasons[0] if reasons else "")
    return {"run": Path(path).stem, "task": task, "schedule": schedule, "status": v.status,
            "borderline": v.borderline, "reason": reason, "reasons": v.reasons, "n": v.n_points,
            "z": v.stats.get("z_bleu"), "z_transfer": v.stats.get("z_transfer")}


def olmo_table(rows: list[dict]) -> str:
    abbrev = {"aligned": "A", "misaligned": "M", "law_break": "L", "no_transfer": "N", "insufficient_data": "I"}
    lines = []
    for schedule in sorted({r["schedule"] for r in rows}, key=str):
        rs = [r for r in rows if r["schedule"] == schedule]
        label = "every in-loop evaluation" if schedule == "all" else f"{schedule} log-spaced probe points"
        c = Counter(r["status"] for r in rs)
        lines.append(f"**{label}** ({len(rs)} run x task curves): " +
                     ", ".join(f"{k} {c[k]}" for k in abbrev if c[k]) +
                     f"; borderline {sum(r['borderline'] for r in rs)}.\n")
        runs = sorted({r["run"] for r in rs}, key=_run_order)
        tasks = list(OLMO_TASKS)
        lines.append("| run | " + " | ".join(t.replace("_", " ") for t in tasks) + " |")
        lines.append("|---" * (len(tasks) + 1) + "|")
        cell = {(r["run"], r["task"]): abbrev[r["status"]] + ("?" if r["borderline"] else "") for r in rs}
        for run in runs:
            lines.append(f"| {run} | " + " | ".join(cell.get((run, t), "") for t in tasks) + " |")
        lines.append("")
    lines.append("A aligned, M misaligned, L law_break, N no_transfer, I insufficient_data; ? borderline.\n")
    return "\n".join(lines)


def _run_order(name: str):
    size, mult = name.split("-")
    s = float(size[:-1]) * (1e3 if size.endswith("B") else 1)
    return (s, float(mult[:-2]))


# ------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--curves", type=int, default=145, help="curves per family and configuration (7 configurations)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--olmo-only", action="store_true")
    ap.add_argument("--no-olmo", action="store_true")
    ap.add_argument("--olmo-schedules", default="all,12", help="comma list: 'all' and/or numbers of log-spaced probes")
    ap.add_argument("--json", help="write the raw results here")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    t0 = time.time()
    ctx = get_context("fork" if sys.platform != "win32" else "spawn")
    results, olmo = [], []
    with ctx.Pool(args.workers) as pool:
        if not args.olmo_only:
            jobs = []
            for fi, fam in enumerate(FAMILIES):
                for ci, (n, s, known) in enumerate(CONFIGS):
                    for i in range(args.curves):
                        jobs.append((fam, n, s, known, args.seed * 10_000_000 + fi * 1_000_000 + ci * 100_000 + i))
            results = list(pool.imap_unordered(run_curve, jobs, chunksize=8))
            print(f"## Synthetic families ({len(jobs)} curves, {args.curves} per family and configuration, "
                  f"{time.time() - t0:.0f} s)\n")
            print(summarize(results, DEFAULT_THRESHOLDS.z_break))
        if not args.no_olmo:
            if not DATA.is_dir():
                print(f"\n(OLMo ladder data not found at {DATA}; skipped)")
            else:
                t1 = time.time()
                jobs = [(str(p), t, s) for p in sorted(DATA.glob("*.csv")) for t in OLMO_TASKS
                        for s in args.olmo_schedules.split(",")]
                olmo = list(pool.imap_unordered(olmo_one, jobs, chunksize=4))
                print(f"\n## OLMo ladder ({len(jobs)} diagnoses, {time.time() - t1:.0f} s)\n")
                print(olmo_table(olmo))
                warn = [r for r in olmo if r["status"] in WARNING_STATUSES and r["schedule"] == "all"]
                for r in sorted(warn, key=lambda r: (_run_order(r["run"]), r["task"]))[:40]:
                    print(f"- {r['run']} {r['task']}: {r['status']}{' (borderline)' if r['borderline'] else ''}: {r['reason']}")
    print(f"\ntotal {time.time() - t0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"synthetic": results, "olmo": olmo}, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
