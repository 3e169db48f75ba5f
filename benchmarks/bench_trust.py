"""How often a healthy synthetic run's verdict trusts its law (and LogLaw alone says ok).

    python benchmarks/bench_trust.py --runs 150

7 log-spaced probes over 1e8-1e10 tokens, 3 repeats each, BLEU on a log-law rising from 5-15 to
20-40 (beta 0.5-2), noise sd 0.5, 1 or 2 BLEU per repeat x sqrt(3) (so the sem of a point is 0.5-2);
no baseline. Counted: curves whose rise exceeds 3 noise sd. "trusted": the verdict's law predicted the
run's own last probes (backtest) and its interval at 3e10 tokens is usable; "LogLaw ok": the law's own
identification check on the point means.
"""

import argparse
import collections

import numpy as np

from transfer_probe.diagnose import diagnose
from transfer_probe.laws import LogLaw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=150)
    args = ap.parse_args()
    rng = np.random.default_rng(3)
    trusted, ok, status = [], [], collections.Counter()
    t = np.geomspace(1e8, 1e10, 7)
    for _ in range(args.runs):
        beta = rng.uniform(0.5, 2)
        y0, y1 = rng.uniform(5, 15), rng.uniform(20, 40)
        c = y0 ** (1 / beta)
        a = (y1 ** (1 / beta) - c) / np.log(100)
        y = (c + a * np.log(t / 1e8)) ** beta
        sig = rng.choice([0.5, 1.0, 2.0])
        if y[-1] - y[0] < 3 * sig:
            continue
        recs = [{"task": "t", "finetune_size": 1, "tokens": float(d), "repeat": r,
                 "metrics": {"bleu": float(b + rng.normal(0, sig * np.sqrt(3)))}} for d, b in zip(t, y, strict=True) for r in range(3)]
        v = diagnose(recs, budget_tokens=3e10)
        status[v.status] += 1
        trusted.append(bool((v.fits.get("bleu") or {}).get("trusted")))
        means = [np.mean([r["metrics"]["bleu"] for r in recs if r["tokens"] == d]) for d in t]
        ok.append(LogLaw().fit(t, means).ok)
    print(f"{len(trusted)} curves: verdict trusts its law on {np.mean(trusted):.3f}; LogLaw ok on {np.mean(ok):.3f}; "
          f"statuses {dict(status)}")


if __name__ == "__main__":
    main()
