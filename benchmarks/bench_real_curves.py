"""Coverage of the verdicts' own predictions on real checkpoint curves (Pythia, ../shared/data).

    python benchmarks/bench_real_curves.py

For every post-warm-up accuracy curve that is not degrading (classes defined without any law, as in
../shared/tools/real-curves-check), diagnose the first half and the first two thirds with
``budget_tokens`` set to the curve's last checkpoint, and check whether the 90% interval of the
prediction holds the last measured value. Prints how often a prediction was given, its coverage
(per class and per chosen law), the median error and the median interval width.
"""

import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from transfer_probe.diagnose import diagnose_rows

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pythia-deduped" / "evals.csv"
POST = 2e9  # warm-up left out as in real-curves-check: checkpoints from 2e9 tokens (Pythia step 1000)


def classify(y: np.ndarray, se: np.ndarray) -> str:
    """healthy: mean(last 3) >= mean(middle third) + 1 sigma; degrading: the best rolling-3 mean before
    the last 3 exceeds mean(last 3) by >= 2 sigma and mean(last 3) < mean(middle third); else flat."""
    n, sig = len(y), float(np.median(se))
    mid, last3 = y[n // 3: 2 * n // 3].mean(), y[-3:].mean()
    best = np.convolve(y[:-3], np.ones(3) / 3, mode="valid").max()
    if last3 - mid >= sig:
        return "healthy"
    return "degrading" if best - last3 >= 2 * sig and last3 < mid else "flat"


def main() -> None:
    if not DATA.exists():
        sys.exit(f"bench_real_curves: {DATA} not found (the shared data sit next to the repository)")
    warnings.filterwarnings("ignore")
    df = pd.read_csv(DATA)
    res = []
    for _, g in df.groupby(["run", "shots", "task"]):
        g = g.sort_values("tokens")
        h = g[g.tokens >= POST]
        if len(h) < 8:
            continue
        x, y, se = h.tokens.to_numpy(float), h.acc.to_numpy() * 100, h.acc_stderr.to_numpy() * 100
        cls = classify(y, se)
        if cls == "degrading":
            continue
        b = g[g.step == 0]
        base = [{"tokens": 0.0, "acc": float(b.acc.iloc[0] * 100), "acc_sem": float(b.acc_stderr.iloc[0] * 100)}] \
            if len(b) else []
        for k in (len(y) // 2, 2 * len(y) // 3):
            rows = base + [{"tokens": t, "acc": a, "acc_sem": s} for t, a, s in zip(x[:k], y[:k], se[:k], strict=True)]
            v = diagnose_rows(rows, x="tokens", y="acc", ce=None, budget_tokens=float(x[-1]))
            p = v.prediction or {}
            given = v.status == "aligned" and p.get("mean") is not None
            res.append({"cls": cls, "given": given, "law": v.law,
                        "cov": given and p["low"] <= y[-1] <= p["high"],
                        "err": abs(p["mean"] - y[-1]) if given else np.nan,
                        "width": p["high"] - p["low"] if given else np.nan})
    r = pd.DataFrame(res)
    g = r[r.given]
    print("prediction given:", r.groupby("cls").given.mean().round(3).to_dict())
    print("90% coverage of the last value:", g.groupby("cls")["cov"].agg(["mean", "count"]).round(3).to_dict("index"))
    print("by chosen law:", g.groupby("law")["cov"].agg(["mean", "count"]).round(3).to_dict("index"))
    print(f"median |error| {g.err.median():.2f} accuracy points, median interval width {g.width.median():.2f}")


if __name__ == "__main__":
    main()
