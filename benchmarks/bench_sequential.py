"""The sequential break test against an oracle, on synthetic runs (model-free part of the verdicts).

    python benchmarks/bench_sequential.py --runs 300                 # with the laws' support (as diagnose)
    python benchmarks/bench_sequential.py --runs 300 --model-free    # the model-free test alone

Runs of 20 log-spaced probes with unit noise (recorded, as repeats give it). Healthy families: flat,
saturating (rises then flattens) and a log-law rising about 0.7 SD per probe. Broken families: a step down of 2 or 3 noise SD after probe
13, and slow declines of 0.5 / 0.75 / 1 SD per probe over the last 4 or 6 probes.
Reported: per-run false alarms (a confirmed break at any look) on the healthy families; detection
(confirmed within 2 probes of the break for steps, by the last probe for declines); and the same
for an oracle that knows the true healthy curve and the noise (its statistic: the mean residual of
the newest 1-2 probes in SD units, threshold set to the detector's own false-alarm rate on the
flat family), side by side: the ratio is how much of the attainable detection the test gets.
Beside it a semi-oracle that knows the healthy curve's shape but not its level (estimated from every
earlier probe): what is lost to estimating the level alone, as against not knowing the shape.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from transfer_probe.diagnose import DEFAULT_THRESHOLDS
from transfer_probe.diagnose.fits import law_support
from transfer_probe.diagnose.tests import replay

N = 20
X = np.geomspace(1e8, 1e10, N)
SAT = 20 - 15 * np.exp(-np.arange(N) / 4.0)


def families():
    out = {"flat": np.zeros(N), "saturating": SAT.copy(), "log-law (rising)": 3.0 * np.log(X / 5e7)}
    for d in (2.0, 3.0):
        y = SAT.copy()
        y[14:] -= d
        out[f"step -{d:g} SD after probe 14"] = y
    for rate in (0.5, 0.75, 1.0):
        for k in (4, 6):
            y = SAT.copy()
            y[N - k:] = SAT[N - k - 1] - rate * np.arange(1, k + 1)
            out[f"decline {rate:g} SD/probe over {k}"] = y
    return out


def run(y_true, rng, th, laws, name_is_healthy):
    y = y_true + rng.standard_normal(N)

    looks = replay(X, y, np.ones(N), np.ones(N), 1e-3, th, support=law_support(X, y, th.z_warmup, th.z_support_each) if laws else None)
    conf = {lk["t"] for lk in looks if lk["state"] == "confirmed"}
    healthy = y_true if name_is_healthy else SAT
    r = y - healthy
    looks = range(DEFAULT_THRESHOLDS.min_points - 1, N)
    oracle = [max(float(np.mean(r[t - k + 1:t + 1])) * -np.sqrt(k) for k in (1, 2)) for t in looks]
    # The semi-oracle knows the healthy curve's shape but not its level: it estimates the offset from
    # every probe before the newest k (the most any test that must estimate a level could use).
    semi = [max((float(np.mean(r[:t - k + 1])) - float(np.mean(r[t - k + 1:t + 1])))
                / np.sqrt(1.0 / k + 1.0 / (t - k + 1)) for k in (1, 2)) for t in looks]
    return conf, np.array(oracle), np.array(semi)


def _ratio(a: float, oracle: float) -> str:
    return f"{a / oracle:.2f}" if oracle else "nan"


def _threshold(maxima: np.ndarray, fa: float) -> float:
    """The statistic's threshold at the test's own false-alarm rate on the flat family."""
    return float(np.quantile(maxima, 1 - fa)) if fa > 0 else float(maxima.max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--model-free", action="store_true",
                    help="the model-free test alone, without the laws' support of a two-probe first signal")
    ap.add_argument("--z-support", type=float, default=DEFAULT_THRESHOLDS.z_support,
                    help="the laws' confirmation threshold (default %(default)s)")
    ap.add_argument("--z-support-each", type=float, default=DEFAULT_THRESHOLDS.z_support_each,
                    help="how far below the laws each of the two newest probes must be (default %(default)s)")
    ap.add_argument("--only", nargs="*", help="run only these families (e.g. flat saturating)")
    args = ap.parse_args()
    th = dataclasses.replace(DEFAULT_THRESHOLDS, z_support=args.z_support, z_support_each=args.z_support_each)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    laws = not args.model_free
    healthy = ("flat", "saturating", "log-law (rising)")
    fams = {k: v for k, v in families().items() if not args.only or k.split(" (")[0] in args.only or k in args.only}
    if "flat" not in fams:
        fams = {"flat": families()["flat"], **fams}  # the oracle's threshold is set on it
    res = {name: [run(y, rng, th, laws, name in healthy) for _ in range(args.runs)] for name, y in fams.items()}
    first = th.min_points - 1
    fa = float(np.mean([bool(c) for c, _, _ in res["flat"]]))
    oth, sth = (_threshold(np.array([r[i].max() for r in res["flat"]]), fa) for i in (1, 2))
    print(f"sequential break test ({'model-free and laws' if laws else 'model-free only'}), "
          f"{args.runs} runs of {N} probes per family, alpha_run={th.alpha_run}, "
          f"horizon={th.horizon}; oracle threshold {oth:.2f} (same false-alarm rate as the test on 'flat')\n")
    print("| family | test: confirmed | oracle | semi-oracle (level unknown) | test / oracle | semi-oracle / oracle |")
    print("|---|---|---|---|---|---|")
    for name, rs in res.items():
        if name in healthy:
            det = np.mean([bool(c) for c, _, _ in rs])
            orc, semi = (np.mean([r[i].max() > th_ for r in rs]) for i, th_ in ((1, oth), (2, sth)))
            print(f"| {name} (false alarms per run) | {det:.3f} | {orc:.3f} | {semi:.3f} | | |")
            continue
        if name.startswith("step"):
            win = {14, 15}  # within 2 probes of the break
            det = np.mean([bool(c & win) for c, _, _ in rs])
            at = [14 - first, 15 - first]
            orc, semi = (np.mean([np.any(r[i][at] > th_) for r in rs]) for i, th_ in ((1, oth), (2, sth)))
        else:
            det = np.mean([(N - 1) in c for c, _, _ in rs])
            orc, semi = (np.mean([r[i][-1] > th_ for r in rs]) for i, th_ in ((1, oth), (2, sth)))
        print(f"| {name} | {det:.3f} | {orc:.3f} | {semi:.3f} | {_ratio(det, orc)} | {_ratio(semi, orc)} |")
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
