"""compare_runs backtested as a decision: from the first 30% / 50% of the tokens, is the final order
of each pair of runs predicted right, against the naive rule (rank by the current value)?

    python benchmarks/bench_compare.py --part pythia      # ~20 s
    python benchmarks/bench_compare.py --part olmo        # ~2.5 min
    python benchmarks/bench_compare.py --part synthetic   # ~1.5 min (--pairs 50: 50 crossing + 50 not)

A pair (A, B) is compared at a common budget T: both runs are cut at frac x T tokens (frac = 0.3,
0.5), each cut run gets ``compare.forecast_run`` at T and ``p_beats`` gives P(A beats B), by both
methods side by side from the same fits: ``mixture`` (the default: the candidate laws mixed, weighted
by their backtest) and ``chosen`` (the verdict's law alone, backtest-widened: the method before; its
forecast is ``RunForecast.chosen_only``, what ``method="chosen"`` gives). The naive rule ranks by the
newest value of each cut run. A calibration table bins the predicted P (of the side predicted better)
against the share of pairs whose final order it got right. The truth
is the measured value at T (real data; for a run longer than T, its curve interpolated in log tokens
at T) or the true curve at T (synthetic). ``gap_sd`` = |truth_A - truth_B| / sqrt(sd_A^2 + sd_B^2),
with sd the run's noise (recorded standard error at the end of the run; without one, the robust
scatter of the whole curve's second differences).

- Pythia (deduplicated Pile, zero-shot; ../shared/data/pythia-deduped): the 7 runs all end at
  143000 steps (3e11 tokens); every pair of runs per task (8 accuracy tasks x 100, and LAMBADA's
  cross-entropy, lower is better); checkpoints before 2e9 tokens left out (warm-up), as in
  bench_real_curves.py.
- OLMo ladder (../shared/data/olmo-ladder): pairs of the same size with different token multipliers
  and of the same multiplier with different sizes; T = the shorter run's length; HellaSwag and
  ARC-easy bits-per-byte (lower is better) and HellaSwag len-norm accuracy (x100).
- Synthetic: pairs of log-law or saturating curves (same family within a pair, shapes drawn apart),
  differing by up to 4 points at the first probe and independently at T; 20 probes evenly spaced up to T, Gaussian noise (sd 0.3-1 points), errors recorded for half the runs; crossing pairs
  (the true order at 0.3 T differs from the one at T) and non-crossing pairs, 50 of each by default,
  half of each with a final gap > 2 sd.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from transfer_probe.compare import forecast_run, p_beats
from transfer_probe.diagnose.noise import robust_sd
from transfer_probe.store.history import aggregate

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FRACS = (0.3, 0.5)
CONFIDENCE = 0.9
POST = 2e9  # Pythia warm-up, as bench_real_curves.py


class Run:
    """One curve: tokens, values, optional per-point standard errors, the noise sd for gap_sd."""

    def __init__(self, key, x, y, sem=None, noise=None):
        order = np.argsort(x)
        self.key, self.x, self.y = key, np.asarray(x, float)[order], np.asarray(y, float)[order]
        self.sem = None if sem is None else np.asarray(sem, float)[order]
        self.noise = float(noise) if noise is not None else float(robust_sd(self.y))

    def at(self, t: float) -> float:
        """The measured curve at t (interpolated in log tokens)."""
        return float(np.interp(math.log(t), np.log(self.x), self.y))

    def points(self, cut: float, metric: str) -> list[dict]:
        keep = self.x <= cut * (1 + 1e-9)
        recs = []
        for i in np.nonzero(keep)[0]:
            r = {"run_id": self.key, "task": "t", "tokens": float(self.x[i]), "metrics": {metric: float(self.y[i])}}
            if self.sem is not None:
                r["metrics_ci"] = {metric: [self.y[i] - 1.645 * self.sem[i], self.y[i] + 1.645 * self.sem[i]]}
            recs.append(r)
        return aggregate(recs, metrics=[metric])


_CACHE: dict = {}
METHODS = ("chosen", "mixture")
BINS = (0.5, 0.7, 0.9, 0.97, 1.0 + 1e-12)


def forecast(run: Run, cut: float, T: float, metric: str, lower: bool):
    key = (run.key, metric, round(cut), round(T))
    if key not in _CACHE:
        pts = run.points(cut, metric)
        _CACHE[key] = (forecast_run(run.key, pts, metric, T, lower=lower, interval=0.9) if pts else None,
                       pts[-1]["mean"][metric] if pts else math.nan)
    return _CACHE[key]


def judge(a: Run, b: Run, T: float, metric: str, lower: bool, truth=None, **tags) -> list[dict]:
    """One row per frac: the naive call, the fit's P, and the truth at T."""
    sign = -1.0 if lower else 1.0
    ta, tb = truth if truth is not None else (a.at(T), b.at(T))
    rows = []
    for frac in FRACS:
        (fa, na), (fb, nb) = forecast(a, frac * T, T, metric, lower), forecast(b, frac * T, T, metric, lower)
        both = fa is not None and fb is not None
        p = p_beats(fa, fb, higher=not lower) if both else None
        p_old = p_beats(fa.chosen_only(0.9), fb.chosen_only(0.9), higher=not lower) if both else None
        rows.append({**tags, "frac": frac, "metric": metric, "a_better": sign * (ta - tb) > 0,
                     "gap_sd": abs(ta - tb) / math.hypot(a.noise, b.noise),
                     "naive_a": sign * (na - nb) > 0 if math.isfinite(na) and math.isfinite(nb) else None,
                     "p": p, "p_chosen": p_old, "p_mixture": p,
                     "mixed": both and (len(fa.components) > 1 or len(fb.components) > 1),
                     "extrap": T / max(a.x[a.x <= frac * T].max(initial=1.0), 1.0)})
    return rows


# ---------------------------------------------------------------------------------------------- data


def pythia() -> list[dict]:
    df = pd.read_csv(DATA / "pythia-deduped" / "evals.csv")
    df = df[(df.shots == 0) & (df.tokens >= POST)]
    rows = []
    for task, g in df.groupby("task"):
        lower = task == "lambada_openai"
        col, se = ("ce", "ce_sem") if lower else ("acc", "acc_stderr")
        scale = 1.0 if lower else 100.0
        runs = []
        for name, h in g.groupby("run"):
            h = h.sort_values("tokens")
            sem = h[se].to_numpy(float) * scale
            runs.append(Run(f"{name}/{task}", h.tokens, h[col].to_numpy(float) * scale, sem, noise=sem[-1]))
        T = float(min(r.x[-1] for r in runs))
        for a, b in itertools.combinations(runs, 2):
            rows += judge(a, b, T, col, lower, data="pythia", kind=task)
        print(f"  pythia {task}: {len(rows)} rows", file=sys.stderr)
    return rows


OLMO_METRICS = {"hellaswag_bpb": ("eval/downstream_bpb/hellaswag_val_rc_5shot_bpb", True, 1.0),
                "arc_easy_bpb": ("eval/downstream_bpb/arc_easy_val_rc_5shot_bpb", True, 1.0),
                "hellaswag_acc": ("eval/downstream/hellaswag_val_rc_5shot_len_norm", False, 100.0)}


def olmo(metrics=tuple(OLMO_METRICS)) -> list[dict]:
    files = sorted((DATA / "olmo-ladder").glob("*.csv"))
    tables = {f.stem: pd.read_csv(f) for f in files}
    rows = []
    for name in metrics:
        col, lower, scale = OLMO_METRICS[name]
        runs = {}
        for stem, d in tables.items():
            d = d[["throughput/total_tokens", col]].dropna()
            d = d[d["throughput/total_tokens"] > 0]
            runs[stem] = Run(f"{stem}/{name}", d["throughput/total_tokens"], d[col].to_numpy(float) * scale)
        for a, b in itertools.combinations(sorted(runs), 2):
            (sa, ma), (sb, mb) = a.split("-"), b.split("-")
            if (sa == sb) == (ma == mb):
                continue
            ra, rb = runs[a], runs[b]
            T = float(min(ra.x[-1], rb.x[-1]))
            rows += judge(ra, rb, T, name, lower, data="olmo", kind="same size" if sa == sb else "same multiplier")
        print(f"  olmo {name}: {len(rows)} rows", file=sys.stderr)
    return rows


def _curve(rng, family: str, T: float, y0: float, yT: float):
    """A log-law or saturating curve through y(x0) = y0 and y(T) = yT (x0 = T/20), its shape drawn."""
    x0, shape = T / 20, rng.uniform(0.8, 2.0) if family == "log" else rng.uniform(0.3, 1.0)
    if family == "log":
        c = y0 ** (1 / shape)
        a = (yT ** (1 / shape) - c) / math.log(T / x0)
        return lambda x: (c + a * np.log(np.asarray(x) / x0)) ** shape
    C = y0 + (yT - y0) / (1 - 20.0 ** -shape)
    return lambda x: C - (C - y0) * (np.asarray(x) / x0) ** -shape


def synthetic(n_pairs: int, seed: int = 0) -> list[dict]:
    """``n_pairs`` crossing and ``n_pairs`` non-crossing pairs, half of each with a final gap > 2 sd."""
    rng = np.random.default_rng(seed)
    T, x = 1e10, 1e10 * np.arange(1, 21) / 20
    want = {(c, big): n_pairs // 2 for c in (True, False) for big in (True, False)}
    rows, i = [], 0
    while any(want.values()):
        # B differs from A by up to 4 points at the first probe and, independently, at T: about half
        # the pairs change order somewhere, some of them after 0.3 T (crossing)
        fam = "log" if rng.random() < 0.5 else "saturating"
        y0, rise = rng.uniform(8, 20), rng.uniform(4, 14)
        d0, dT = rng.uniform(-4, 4, 2)
        fa = _curve(rng, fam, T, y0, y0 + rise)
        fb = _curve(rng, fam, T, y0 + d0, y0 + d0 + max(1.0, rise + dT - d0))
        sd, known = rng.uniform(0.3, 1.0, 2), rng.random() < 0.5
        crossing = bool((fa(0.3 * T) - fb(0.3 * T)) * (fa(T) - fb(T)) < 0)
        big = bool(abs(fa(T) - fb(T)) > 2 * math.hypot(*sd))
        if not want[(crossing, big)]:
            continue
        want[(crossing, big)] -= 1
        runs = [Run(f"syn{i}{k}", x, f(x) + rng.normal(0, s, len(x)), np.full(len(x), s) if known else None, noise=s)
                for k, f, s in zip("ab", (fa, fb), sd, strict=True)]
        rows += judge(*runs, T, "bleu", False, truth=(float(fa(T)), float(fb(T))), data="synthetic",
                      kind="crossing" if crossing else "not crossing")
        i += 1
    return rows


# ---------------------------------------------------------------------------------------------- summary


def summarize(rows: list[dict], confidence: float = CONFIDENCE, method: str = "mixture") -> pd.DataFrame:
    """Per (data, frac, gap class): naive accuracy, the fit's forced order (its mean; naive where it has
    no prediction), the rate of calls at P >= confidence, their accuracy, naive accuracy on the same
    pairs, the rate of 'too close to call' and of no prediction; P by ``method``."""
    r = pd.DataFrame(rows)
    r["p"] = r[f"p_{method}"]
    r["gap"] = np.where(r.gap_sd > 2, "> 2 sd", "<= 2 sd")
    has_p = r.p.notna()
    pa = r.p.astype(float)
    r["fit_a"] = np.where(has_p, pa > 0.5, r.naive_a.astype(bool))
    r["called"] = has_p & ((pa >= confidence) | (pa <= 1 - confidence))
    r["naive_ok"] = r.naive_a.astype(bool) == r.a_better
    r["fit_ok"] = r.fit_a == r.a_better
    r["close"] = has_p & ~r.called
    out = r.groupby(["data", "frac", "gap"]).apply(lambda g: pd.Series({
        "pairs": len(g), "naive": g.naive_ok.mean(), "fit (forced)": g.fit_ok.mean(),
        "called": g.called.mean(), "acc. when called": g[g.called].fit_ok.mean(),
        "naive on called": g[g.called].naive_ok.mean(), "too close": g.close.mean(),
        "no prediction": (~g.p.notna()).mean()}), include_groups=False)
    return out.round(3)


def by_kind(r: pd.DataFrame) -> pd.DataFrame:
    """Per (data, kind, frac): naive accuracy, and each method's rate of calls and their accuracy."""
    r = r.assign(naive_ok=r.naive_a.astype(bool) == r.a_better)
    for m in METHODS:
        pa = r[f"p_{m}"].astype(float)
        r[f"ok_{m}"] = np.where(pa >= CONFIDENCE, r.a_better, np.where(pa <= 1 - CONFIDENCE, ~r.a_better, np.nan))
    return r.groupby(["data", "kind", "frac"]).apply(lambda g: pd.Series({
        "pairs": len(g), "naive": g.naive_ok.mean(),
        **{f"{k} {m}": v for m in METHODS for k, v in (("called", g[f"ok_{m}"].notna().mean()),
                                                      ("acc.", g[f"ok_{m}"].mean()))}}),
        include_groups=False).round(3)


def calibration(rows: list[dict]) -> pd.DataFrame:
    """Per data set, method and bin of P (of the side predicted better): pairs, mean P, share right;
    every cut and gap class together."""
    r = pd.DataFrame(rows)
    out = []
    for method in METHODS:
        p = r[f"p_{method}"].astype(float)
        ok = p.notna()
        d = pd.DataFrame({"data": r.data[ok], "method": method, "p": np.maximum(p[ok], 1 - p[ok]),
                          "right": (p[ok] >= 0.5) == r.a_better[ok]})
        d["P bin"] = pd.cut(d.p, BINS, right=False, labels=["0.5-0.7", "0.7-0.9", "0.9-0.97", ">= 0.97"])
        out.append(d)
    d = pd.concat(out)
    return d.groupby(["data", "P bin", "method"], observed=True).agg(
        pairs=("right", "size"), mean_P=("p", "mean"), share_right=("right", "mean")).round(3).unstack("method")


def close_calls(rows: list[dict]) -> pd.DataFrame:
    """Pairs with a final gap <= 2 sd called at P >= 0.9: how many and the share right, per data set,
    scores (two laws to mix) apart from losses (one law: the power law), each method."""
    r = pd.DataFrame(rows)
    r = r.assign(metric_kind=np.where(r.metric.str.contains("bpb|ce"), "loss", "score"))[r.gap_sd <= 2]
    out = {}
    for m in METHODS:
        p = r[f"p_{m}"].astype(float)
        call = (p >= CONFIDENCE) | (p <= 1 - CONFIDENCE)
        d = r[call].assign(right=(p[call] >= 0.5) == r.a_better[call])
        out[f"calls {m}"] = d.groupby(["data", "metric_kind"]).size()
        out[f"right {m}"] = d.groupby(["data", "metric_kind"]).right.mean()
    return pd.DataFrame(out).round(3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("pythia", "olmo", "synthetic", "all"), default="all")
    ap.add_argument("--pairs", type=int, default=50, help="synthetic pairs of each kind (crossing, not)")
    ap.add_argument("--seed", type=int, default=0, help="synthetic pairs' seed (another seed: a held-out set)")
    ap.add_argument("--olmo-metrics", default=",".join(OLMO_METRICS))
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    t0, rows = time.time(), []
    if args.part in ("pythia", "olmo", "all") and not DATA.exists():
        sys.exit(f"bench_compare: {DATA} not found (the shared data sit next to the repository)")
    if args.part in ("pythia", "all"):
        rows += pythia()
    if args.part in ("olmo", "all"):
        rows += olmo(tuple(args.olmo_metrics.split(",")))
    if args.part in ("synthetic", "all"):
        rows += synthetic(args.pairs, args.seed)
    pd.set_option("display.width", 200)
    for method in METHODS:
        print(f"\nmethod {method}:")
        print(summarize(rows, method=method).to_string())
    print("\ncalibration: predicted P of the side predicted better, binned, against the share right")
    print(calibration(rows).to_string())
    print("\ncalls at P >= 0.9 on pairs with a final gap <= 2 sd (every cut):")
    print(close_calls(rows).to_string())
    r = pd.DataFrame(rows)
    print(f"\npairs where a run's forecast mixes two laws: {r.mixed.mean():.3f}")
    print("\nby kind of pair (gap > 2 sd):")
    print(by_kind(r[r.gap_sd > 2]).to_string())
    for c in (0.8, 0.95):
        s = summarize(rows, c)  # the default method
        print(f"\nat confidence {c} (gap > 2 sd): called / accuracy when called")
        print(s.xs("> 2 sd", level="gap")[["called", "acc. when called"]].to_string())
    print(f"\n{len(rows)} decisions in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
