"""The statistical tests behind the verdicts, model-free and pure (numpy arrays in, numbers out).

The break test compares the running best with the recent level: for every earlier probe ``b`` (its
level: the mean of up to ``peak_window`` probes ending at ``b``) and every suffix of the newest probes
``a..t``, ``z = (level_b - mean(a..t)) / sd``. The largest ``z`` is the evidence that the score fell
below its own best; a long suffix accumulates evidence that each single step would not show. Its
threshold is calibrated by simulation, for the whole procedure over every look of a run: under a flat
curve (the least favourable healthy curve: a rising one only makes ``z`` smaller) with the same noise
model, a confirmed break is raised on at most ``alpha_run`` of runs of ``horizon`` probes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np

from transfer_probe.diagnose.noise import excess_scatter, robust_sd


def scan(y: np.ndarray, w: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray, tuple]:
    """The break statistics of one look, row-wise over curves.

    ``y``: (S, m) values, ``w``: (S, m) weights 1/sd^2. Returns ``z1`` (S,), the largest z over every
    (peak, suffix) pair; ``z2`` (S,), the same over suffixes of at least 2 probes, each without its
    lowest probe; and, for row 0, the (lo, b, a) of each (for the reasons).
    """
    y = np.atleast_2d(np.asarray(y, float))
    w = np.atleast_2d(np.asarray(w, float))
    S, m = y.shape
    z1 = np.full(S, -np.inf)
    z2 = np.full(S, -np.inf)
    arg1 = arg2 = (None, None, None)
    if m < 2:
        return z1, z2, (arg1, arg2)
    cw = np.concatenate([np.zeros((S, 1)), np.cumsum(w, axis=1)], axis=1)
    cwy = np.concatenate([np.zeros((S, 1)), np.cumsum(w * y, axis=1)], axis=1)
    sw = cw[:, m:m + 1] - cw[:, :m]  # suffix a..m-1 weight, for a = 0..m-1
    smean = (cwy[:, m:m + 1] - cwy[:, :m]) / sw
    # For confirmation, each suffix without its lowest probe: one crashed probe (with a small error,
    # it would dominate the weighted mean) cannot stand for a decline of two or more.
    tw, tmean = _trimmed_suffixes(y, w, sw, cwy[:, m:m + 1] - cwy[:, :m])
    for b in range(m - 1):
        # the level at b: the mean of the last 1..window probes up to b (on a steep rise a long window
        # would understate the peak; a short one is noisier; the calibration pays for both)
        for lo in range(b, max(-1, b - window), -1):
            pw = cw[:, b + 1] - cw[:, lo]
            pm = (cwy[:, b + 1] - cwy[:, lo]) / pw
            z = (pm[:, None] - smean[:, b + 1:]) / np.sqrt(1.0 / pw[:, None] + 1.0 / sw[:, b + 1:])
            k1 = np.argmax(z, axis=1)
            best = z[np.arange(S), k1]
            if best[0] > z1[0]:
                arg1 = (lo, b, b + 1 + int(k1[0]))
            z1 = np.maximum(z1, best)
            if z.shape[1] >= 2:  # suffixes with at least 2 probes, trimmed of their lowest
                zz = (pm[:, None] - tmean[:, b + 1:m - 1]) / np.sqrt(1.0 / pw[:, None] + 1.0 / tw[:, b + 1:m - 1])
                k2 = np.argmax(zz, axis=1)
                best2 = zz[np.arange(S), k2]
                if best2[0] > z2[0]:
                    arg2 = (lo, b, b + 1 + int(k2[0]))
                z2 = np.maximum(z2, best2)
    return z1, z2, (arg1, arg2)


def _trimmed_suffixes(y: np.ndarray, w: np.ndarray, sw: np.ndarray, swy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weight and mean of each suffix a..m-1 without its lowest value (a = 0..m-1; NaN for a = m-1)."""
    S, m = y.shape
    tw = np.full((S, m), np.nan)
    tmean = np.full((S, m), np.nan)
    rows = np.arange(S)
    low = np.full(S, m - 1)
    for a in range(m - 2, -1, -1):
        low = np.where(y[:, a] < y[rows, low], a, low)
        wl = w[rows, low]
        tw[:, a] = sw[:, a] - wl
        tmean[:, a] = (swy[:, a] - wl * y[rows, low]) / tw[:, a]
    return tw, tmean


def look_sigma(y: np.ndarray, sigma: np.ndarray | None, floor: float) -> np.ndarray:
    """The noise used at one look: recorded errors scaled up by the excess scatter of the points, or,
    with none recorded, the robust scatter of the points (row-wise)."""
    y = np.atleast_2d(y)
    if sigma is None:
        sd = np.atleast_1d(robust_sd(y))
        sd = np.where(np.isfinite(sd), np.maximum(sd, floor), np.inf)
        return np.repeat(sd[:, None], y.shape[1], axis=1)
    s = np.broadcast_to(np.atleast_2d(sigma), y.shape)
    return s * np.atleast_1d(excess_scatter(y, s))[:, None]


@lru_cache(maxsize=256)
def thresholds(horizon: int, first: int, window: int, known: bool, alpha_run: float, alpha_suspect: float,
               sims: int = 4000) -> dict:
    """Calibrated thresholds for the break statistics over looks ``first..horizon-1`` of a run.

    The default thresholds' settings are read from :mod:`calibration_table` (simulated once, when
    the package was built: 0.4-7 s each, which every process that diagnoses would otherwise pay);
    any other setting is simulated here by :func:`simulate_thresholds` and cached per process.
    """
    from transfer_probe.diagnose.calibration_table import TABLE

    key = (int(horizon), int(first), int(window), bool(known), float(alpha_run), float(alpha_suspect), int(sims))
    if key in TABLE:
        return dict(TABLE[key])
    return simulate_thresholds(*key)


def simulate_thresholds(horizon: int, first: int, window: int, known: bool, alpha_run: float,
                        alpha_suspect: float, sims: int = 4000) -> dict:
    """Simulates ``sims`` flat runs with unit noise (recorded, or estimated from the points when
    ``known`` is False), computes both statistics at every look exactly as a diagnosis does, and
    takes the quantiles of their running maxima. Deterministic (seeded)."""
    rng = np.random.default_rng(20261129)
    y = rng.standard_normal((sims, horizon))
    z1s, z2s = [], []
    for t in range(first, horizon):
        yt = y[:, :t + 1]
        s = look_sigma(yt, np.ones(t + 1) if known else None, 1e-6)
        z1, z2, _ = scan(yt, 1.0 / s ** 2, window)
        z1s.append(z1)
        z2s.append(z2)
    z1s, z2s = np.array(z1s), np.array(z2s)
    q = lambda arr, a: float(np.quantile(np.where(np.isfinite(arr), arr, -1e9), 1 - a))  # noqa: E731
    return {"suspect": q(z1s.max(axis=0), alpha_suspect), "confirm": q(z2s.max(axis=0), alpha_run),
            "confirm_single": q(z1s.max(axis=0), alpha_run)}


def _calibration_horizon(horizon: int, n: int) -> int:
    """The run length the thresholds are calibrated for: the planned horizon, or the next rung of a
    short ladder once a run has more probes. A rung per new probe would re-simulate in the training
    process at every look (7 s at 60 probes); the ladder does it at most four times per process.
    Beyond 60 looks the cost grows as n^3 while the threshold grows only like sqrt(log n): longer runs
    are calibrated as runs of 60 (a slightly higher false-alarm rate)."""
    if n <= horizon:
        return int(horizon)
    return next((r for r in (30, 40, 60) if r >= n), max(60, int(horizon)))


def replay(x: np.ndarray, y: np.ndarray, sigma: np.ndarray | None, n_rep: np.ndarray, floor: float, th,
           support: Callable[[int, np.ndarray], float] | None = None) -> list[dict]:
    """The break state at every look of a run, as the probes came in.

    A look is ``suspected`` when ``z1`` passes its threshold, ``confirmed`` when ``z2`` (a suffix of two
    or more probes, without its lowest) passes the confirm threshold, or ``z1`` does at a point
    re-measured with extra repeats, or when a two-probe signal is supported by the laws: ``support(t, sd)`` (how far, in SDs,
    the newest two probes sit below what the laws fitted to the earlier ones predict) passes
    ``th.z_support``. A confirmed break stands until a probe sets a new best beyond noise above the
    level it fell from. Returns one dict per look from ``th.min_points - 1`` on.
    """
    n = len(y)
    first = th.min_points - 1
    if n <= first:
        return []
    cal = thresholds(_calibration_horizon(th.horizon, n), int(first), int(th.peak_window), sigma is not None,
                     float(th.alpha_run), float(th.alpha_suspect))
    usual = float(np.median(n_rep)) if len(n_rep) else 1.0
    out: list[dict] = []
    standing = None
    start = 0  # after a lifted break, the evidence is counted from the new best on
    for t in range(first, n):
        yt = y[:t + 1]
        st = look_sigma(yt, None if sigma is None else sigma[:t + 1], floor)[0]
        z1, z2, (a1, a2) = scan(yt[start:], 1.0 / st[start:] ** 2, th.peak_window)
        a1, a2 = (tuple(None if v is None else v + start for v in p) for p in (a1, a2))
        z1, z2 = float(z1[0]), float(z2[0])
        look = {"t": t, "tokens": float(x[t]), "z1": round(z1, 3), "z2": round(z2, 3), "sd": float(np.median(st)),
                "thresholds": cal}
        out.append(look)
        if standing is not None:
            zr = (y[t] - standing["level"]) / math.hypot(st[t], standing["level_sd"])
            look["z_reverse"] = round(float(zr), 3)
            if zr > th.z_reverse:
                look.update(state="reversed", was=standing)
                standing, start = None, t
            else:
                look.update(state="confirmed", **_evidence(yt, st, *standing["pair"], th),
                            **{k: standing[k] for k in ("since", "by", "z_confirm", "threshold")})
            continue
        if not (math.isfinite(z1) and z1 > cal["suspect"]):
            look["state"] = "none"
            continue
        pair, how = _confirmation(t, z1, z2, a1, a2, cal, n_rep[t] > usual, support if t - start >= 5 else None, st, th)
        look["z_support"] = how.pop("z_support", None)
        if pair is None:
            look.update(state="suspected", **_evidence(yt, st, *a1, th))
            continue
        ev = _evidence(yt, st, *pair, th)
        standing = {"pair": pair, "level": ev["level"], "level_sd": ev["level_sd"], "since": float(x[t]), **how}
        look.update(state="confirmed", since=float(x[t]), **how, **ev)
    return out


def _confirmation(t, z1, z2, a1, a2, cal, remeasured, support, sd, th) -> tuple[tuple | None, dict]:
    """Whether a first signal at look ``t`` is confirmed, and how: the fall over two or more probes
    (each suffix without its lowest), a re-measured point, or both laws (which check that each of the
    two newest probes is low on its own)."""
    if math.isfinite(z2) and z2 > cal["confirm"]:
        return a2, {"by": "suffix", "z_confirm": round(z2, 3), "threshold": round(cal["confirm"], 3)}
    if remeasured and z1 > cal["confirm_single"]:
        return a1, {"by": "remeasured", "z_confirm": round(z1, 3), "threshold": round(cal["confirm_single"], 3)}
    zs = support(t, sd) if support is not None else float("nan")
    if not math.isfinite(zs):
        return None, {}
    if zs > th.z_support and a2[0] is not None:
        return a2, {"by": "laws", "z_confirm": round(zs, 3), "threshold": th.z_support, "z_support": round(zs, 3)}
    return None, {"z_support": round(zs, 3)}


def _evidence(y, s, lo, b, a, th) -> dict:
    wp, wa = 1.0 / s[lo:b + 1] ** 2, 1.0 / s[a:] ** 2
    level = float(np.sum(wp * y[lo:b + 1]) / np.sum(wp))
    now = float(np.sum(wa * y[a:]) / np.sum(wa))
    sd = math.sqrt(1.0 / np.sum(wp) + 1.0 / np.sum(wa))
    return {"peak": (lo, b), "suffix": (a, len(y) - 1), "level": level,
            "level_sd": math.sqrt(1.0 / np.sum(wp)), "now": now, "z": (level - now) / sd, "pair": (lo, b, a)}


def change_z(v: np.ndarray, s: np.ndarray, peak: tuple[int, int], suffix: tuple[int, int]) -> float:
    """(mean over ``peak`` - mean over ``suffix``) / sd, inverse-variance weighted: positive when the
    values fell from the one span to the other (for cross-entropy: improved)."""
    lo, hi = peak
    a, e = suffix
    wp, wa = 1.0 / s[lo:hi + 1] ** 2, 1.0 / s[a:e + 1] ** 2
    if not (np.all(np.isfinite(wp)) and np.all(np.isfinite(wa))) or np.sum(wp) <= 0 or np.sum(wa) <= 0:
        return float("nan")
    mp = float(np.sum(wp * v[lo:hi + 1]) / np.sum(wp))
    ma = float(np.sum(wa * v[a:e + 1]) / np.sum(wa))
    return (mp - ma) / math.sqrt(1.0 / np.sum(wp) + 1.0 / np.sum(wa))


def warmup_end(y: np.ndarray, s: np.ndarray, level: float | None, level_sd: float, z: float,
               resolution: float = 0.0) -> int | None:
    """Index of the first probe above the start ``level`` by more than ``z`` noise SDs (learning has
    started there); None when no probe is. Without a baseline level there is no telling a noisy rise
    from chance, so only a start that sits exactly at its first value (within the metric's resolution:
    exact zeros, a constant chance score) counts as warm-up."""
    if level is None:
        flat = 1
        while flat < len(y) and abs(y[flat] - y[0]) <= 2.0 * resolution:
            flat += 1
        return 0 if flat < 2 else (flat if flat < len(y) else None)
    above = (y - level) > z * np.sqrt(s ** 2 + level_sd ** 2)
    idx = np.nonzero(above)[0]
    return int(idx[0]) if len(idx) else None
