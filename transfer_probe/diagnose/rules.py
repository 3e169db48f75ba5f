"""The verdict rules: one (task, D_f) group's aggregated points in, a :class:`Verdict` out.

Order of the rules (each step's numbers go into ``reasons`` and ``stats``):

1. enough points? (after the warm-up: probes still at the no-pretraining level are left out)
2. noise: recorded errors pooled, floored and scaled up by their excess scatter, or the robust
   scatter of the points when none were recorded
3. break, model-free and sequential (:func:`~transfer_probe.diagnose.tests.replay`): the score fell
   below its own running best; ``suspected`` first, ``confirmed`` when it persists; a confirmed break
   stands until a new best beyond noise. Cross-entropy over the same probes tells ``misaligned``
   (it still improved) from ``law_break``
4. no transfer: the newest probes not above the baseline; ``wait`` when cross-entropy already is
5. plateau: both the log-law and the saturating law, fitted before the newest probes, predict them
   higher beyond noise while cross-entropy improved; ``suspected``, ``misaligned`` at the second look
6. aligned: the law that predicted the run's own later probes best, its prediction at the budget
   widened by its backtest errors, and the tokens to the target
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from transfer_probe.diagnose import fits as F
from transfer_probe.diagnose.lawrules import LawRules
from transfer_probe.diagnose.noise import (
    curve_noise,
    excess_scatter,
    floor_errors,
    pooled_sem,
    resolution,
    robust_sd,
)
from transfer_probe.diagnose.tests import change_z, replay, warmup_end
from transfer_probe.diagnose.verdict import Thresholds, Verdict
from transfer_probe.store.history import aggregate
from transfer_probe.text import format_tokens as tok
from transfer_probe.text import label, long_label


class Diagnosis(LawRules):
    """One run of the rules; an object so each step can read the shared arrays."""

    def __init__(self, pre, base, task, df, run_id, metric, ce, budget, target, th: Thresholds):
        self.th, self.task, self.df, self.run_id = th, task, df, run_id
        self.metric, self.ce, self.budget, self.target = metric, ce, budget, target
        names = [metric] + ([ce] if ce else [])
        pts = aggregate(pre, metrics=names)
        # A pretrained probe at 0 tokens is a probe of the random init: it is the baseline.
        self.pts = [p for p in pts if p["tokens"] > 0 and math.isfinite(p["mean"].get(metric, math.nan))]
        self.base_pts = aggregate(base, metrics=names) + [p for p in pts if p["tokens"] <= 0]
        self.x = np.array([p["tokens"] for p in self.pts], dtype=float)
        self.y = np.array([p["mean"][metric] for p in self.pts], dtype=float)
        self.n_rep = np.array([p["n"] for p in self.pts], dtype=float)
        base_vals = [v for p in self.base_pts for v in (p["values"].get(metric) or [])]
        self.res = resolution(np.concatenate([self.y, base_vals]), metric=metric)
        self.s = floor_errors(pooled_sem(self.pts, metric), self.res) if self.pts else np.array([])
        self.known = bool(len(self.s)) and bool(np.all(np.isfinite(self.s)))
        if ce:
            self.c = np.array([p["mean"].get(ce, math.nan) for p in self.pts], dtype=float)
            self.cs = floor_errors(pooled_sem(self.pts, ce), 1e-4) if self.pts else np.array([])
        self.reasons: list[str] = []
        self.stats: dict[str, Any] = {}
        self.fits: dict[str, Any] = {}
        self.borderline = False
        self.L = label(metric)
        self.history: list[dict] = []

    # -- helpers -----------------------------------------------------------------------------------
    def verdict(self, status: str, recommendation: str, **kw) -> Verdict:
        latest = dict(self.pts[-1]["mean"]) if self.pts else {}
        latest_sem = dict(self.pts[-1]["sem"]) if self.pts else {}
        return Verdict(status=status, recommendation=recommendation, reasons=self.reasons, borderline=self.borderline,
                       task=self.task, finetune_size=self.df, run_id=self.run_id,
                       tokens=float(self.x[-1]) if len(self.x) else None, n_points=len(self.pts), metric=self.metric,
                       ce_metric=self.ce, latest=latest, latest_sem=latest_sem, fits=self.fits, stats=self.stats,
                       history=self.history, **kw)

    def near(self, stat: float, threshold: float) -> None:
        if math.isfinite(stat) and abs(stat - threshold) < self.th.borderline:
            self.borderline = True

    def insufficient(self, more: int, why: str) -> Verdict:
        self.reasons.append(f"{why}: about {more} more probe{'s' if more != 1 else ''} needed")
        bl = self.baseline()
        if bl is not None and len(self.pts):
            self.reasons.append(f"baseline without pre-training: {self.L} {bl[0]:.3g}; newest probe {self.y[-1]:.3g}")
        return self.verdict("insufficient_data", "wait", more_probes_needed=max(1, more))

    # -- the rules ---------------------------------------------------------------------------------
    def run(self) -> Verdict:
        th, n = self.th, len(self.pts)
        need = th.min_points + (0 if self.known else 1)
        self.stats.update(n_points=n, noise_known=self.known)
        if n < need:
            return self.insufficient(need - n, f"{n} probe point{'s' if n != 1 else ''} with tokens > 0, the law needs "
                                     f"{need} (4 to fit, 1 to check{'' if self.known else ', 1 to estimate the noise: no errors were recorded'})")
        w = self.warmup()
        if w is None:  # never rose above the start level
            if self.baseline() is not None:
                self.sigma_all = self.s if self.known else np.full(n, self.noise_unknown(self.y))
                return self.no_transfer() or self.insufficient(
                    1, f"{self.L} is above the no-pretraining baseline, but no probe is yet {self.th.z_warmup:g} SDs "
                       f"above it: learning has barely started (warm-up); no law can be fitted yet")
            return self.insufficient(1, f"{self.L} has not risen above its first probes beyond noise over {n} probes "
                                        f"(warm-up, or no transfer); no law can be fitted yet")
        self.w = w
        x, y = self.x[w:], self.y[w:]
        m = len(x)
        span = math.log10(x[-1] / x[0]) if m >= 2 else 0.0
        self.stats["span_decades"] = round(span, 3)
        if m < need or span < th.min_span_decades:
            more = max(need - m, F.probes_to_span(x, th.min_span_decades))
            why = []
            if m < need:
                why.append(f"{m} probe point{'s' if m != 1 else ''} after the warm-up, the law needs {need}")
            if span < th.min_span_decades:
                why.append(f"they span {10 ** span:.2g}x in tokens ({span:.2f} decades), a verdict needs "
                           f"{10 ** th.min_span_decades:.2g}x ({th.min_span_decades:g} decades)")
            return self.insufficient(more, "; ".join(why))
        # 2) noise
        if not self.noise(y):
            return self.insufficient(1, f"no errors were recorded and {m} points cannot estimate the noise")
        # 3) break, sequential
        now = self.break_state(x, y)
        if now["state"] in ("confirmed", "suspected"):
            return self.broken(now, x, y)
        # 4) transfer
        nt = self.no_transfer()
        if nt is not None:
            return nt
        # 5-6) laws
        return self.laws(x, y)

    def noise(self, y: np.ndarray) -> bool:
        """``self.sigma`` for the points after the warm-up; False when it cannot be estimated."""
        w, m = self.w, len(y)
        self.sigma, scale = curve_noise(y, self.s[w:] if self.known else np.full(m, np.nan), self.res)
        if scale is not None:
            self.stats["noise_scale"] = round(scale, 3)
            if scale > 1.0:
                self.reasons.append(f"the points scatter {scale:.2g}x more than their recorded errors: errors scaled up")
        else:
            sd = float(self.sigma[0]) if m else math.nan
            if not math.isfinite(sd):
                return False
            self.reasons.append(f"no errors recorded: noise estimated from the scatter of successive probes "
                                f"({sd:.3g} {self.L}; a trend or a break does not inflate it)")
        self.sigma_all = np.concatenate([self.s[:w] if self.known else np.full(w, self.sigma[0]), self.sigma])
        self.stats["noise"] = float(np.median(self.sigma))
        return True

    def break_state(self, x: np.ndarray, y: np.ndarray) -> dict:
        """The sequential break test replayed over every look; the newest look's state."""
        th = self.th
        looks = replay(x, y, self.sigma if self.known else None, self.n_rep[self.w:], self.res, th,
                       support=F.law_support(x, y, th.z_warmup, th.z_support_each))
        self.history = [{"tokens": lk["tokens"], "state": lk["state"], "z1": lk["z1"], "z2": lk["z2"]} for lk in looks]
        now = looks[-1]
        self.stats["break"] = {k: now.get(k) for k in ("state", "z1", "z2", "z", "level", "now", "since", "z_reverse",
                                                       "by", "z_confirm", "z_support")}
        self.stats["thresholds"] = {k: round(v, 3) for k, v in now["thresholds"].items()}
        if now["state"] == "reversed":
            was = now["was"]
            self.reasons.append(f"the break standing since {tok(was['since'])} tokens is lifted: the newest probe "
                                f"({y[-1]:.3g}) is a new best beyond noise above {was['level']:.3g}")
        return now

    def warmup(self) -> int | None:
        bl = self.baseline()
        s = self.s if self.known else np.full(len(self.y), self.noise_unknown(self.y))
        if not np.all(np.isfinite(s)):
            return 0
        level_sd = (bl[1] if math.isfinite(bl[1]) else float(np.median(s))) if bl else 0.0
        w = warmup_end(self.y, s, bl[0] if bl else None, level_sd, self.th.z_warmup, self.res)
        if w:
            self.reasons.append(f"the first {w} probe{'s' if w > 1 else ''} (up to {tok(self.x[w - 1])} tokens) sit at the "
                                f"{'no-pretraining' if bl else 'starting'} level: warm-up, left out of the law fits")
            self.stats["warmup_probes"] = w
        return w

    def noise_unknown(self, y: np.ndarray) -> float:
        return float(curve_noise(y, np.full(len(y), np.nan), self.res)[0][0]) if len(y) else math.nan

    # -- 3) break ----------------------------------------------------------------------------------
    def broken(self, look: dict, x: np.ndarray, y: np.ndarray) -> Verdict:
        th, L = self.th, self.L
        (plo, phi), (a, e) = look["peak"], look["suffix"]
        cal = look["thresholds"]
        confirmed = look["state"] == "confirmed"
        k = e - a + 1
        where = (f"{tok(x[plo])}" if plo == phi else f"{tok(x[plo])}-{tok(x[phi])}")
        recent = f"{look['now']:.3g} over the newest {k} probes ({tok(x[a])}-{tok(x[e])} tokens)" if k > 1 else \
            f"{look['now']:.3g} at {tok(x[e])} tokens"
        if confirmed:
            self.near(look["z_confirm"], look["threshold"])
        else:
            self.near(look["z1"], cal["suspect"])
        fell = (f"{L} fell from {look['level']:.3g} (its best level, probes at {where} tokens) to {recent}, "
                f"{look['z']:.1f} noise SDs of the difference")
        self.break_tokens = float(x[phi + 1]) if phi + 1 < len(x) else float(x[-1])
        contrast = self.ce_contrast(look["peak"], look["suffix"])
        if not confirmed:
            self.reasons.append(fell + f": a first signal (confirmed at {cal['confirm']:.2f} SDs over 2+ probes, "
                                       f"a false alarm on {th.alpha_run:.0%} of healthy runs of {max(th.horizon, len(self.pts))} probes)")
            self.stats["message"] = f"{fell} at {tok(x[-1])} tokens; {contrast[1]}"
            return self.verdict("suspected", "probe again", break_tokens=self.break_tokens)
        since = look.get("since", float(x[-1]))
        how = {"suffix": f"the fall over 2+ probes, without the lowest of them, passed {look['threshold']:.2f} SDs: "
                         f"a false alarm on {th.alpha_run:.0%} of healthy runs of {max(th.horizon, len(self.pts))} probes",
               "remeasured": f"the re-measured point stays {look['z_confirm']:.1f} SDs below (threshold "
                             f"{look['threshold']:.2f})",
               "laws": f"both the log-law and the saturating law fitted to the earlier probes put the newest two "
                       f"{look['z_confirm']:.1f} SDs higher (threshold {look['threshold']:g})"}[look["by"]]
        self.reasons.append(fell + f"; confirmed at {tok(since)} tokens ({how}); it stands until a probe sets a new "
                                   f"best beyond noise")
        head = f"{L} broke at {tok(self.break_tokens)} tokens: {look['level']:.3g} -> {look['now']:.3g} ({look['z']:.1f} SDs)"
        follows, txt = contrast
        if follows:
            self.stats["message"] = (f"{head} while {txt}; pre-training data looks misaligned with "
                                     f"{self.task if self.task not in (None, 'table', 'None') else 'the task'}")
            self.reasons.append(f"{txt}: the pre-training data improves the task's likelihood but not the {L}, "
                                f"the misalignment signature (Isik et al. 2024)")
            return self.verdict("misaligned", "stop", break_tokens=self.break_tokens)
        self.stats["message"] = f"{head}; {txt}"
        self.reasons.append(txt)
        return self.verdict("law_break", "stop", break_tokens=self.break_tokens)

    def ce_noise(self) -> np.ndarray:
        """Cross-entropy errors per point: recorded (pooled, floored), else the robust scatter of the
        curve (NaN when it cannot be estimated)."""
        if np.all(np.isfinite(self.cs)):
            return self.cs
        fin = self.c[np.isfinite(self.c)]
        sd = float(robust_sd(fin)) if len(fin) >= 5 else math.nan
        return np.full(len(self.c), max(sd, 1e-4) if math.isfinite(sd) else np.nan)

    def ce_contrast(self, peak: tuple[int, int], suffix: tuple[int, int]) -> tuple[bool, str]:
        """Did cross-entropy improve beyond its noise over the probes where the score fell?"""
        if not self.ce:
            return False, "no cross-entropy recorded to tell a misaligned run from a broken probe"
        w = self.w
        c, cs = self.c[w:], self.ce_noise()[w:]
        if not np.all(np.isfinite(c[peak[0]:])):
            return False, "cross-entropy not recorded at these probes: not checkable"
        if np.all(np.isfinite(self.cs)):
            cs = cs * float(excess_scatter(c, cs))
        z = change_z(c, cs, peak, suffix)
        c0 = float(np.mean(c[peak[0]:peak[1] + 1]))
        c1 = float(np.mean(c[suffix[0]:suffix[1] + 1]))
        CE = long_label(self.ce)
        self.stats["contrast"] = {"ce_from": c0, "ce_to": c1, "z_ce": round(z, 3) if math.isfinite(z) else None}
        if not math.isfinite(z):
            return False, f"{CE} noise unknown: not checkable"
        self.near(z, self.th.z_ce)
        if z > self.th.z_ce:
            return True, f"{CE} still improves ({c0:.3g} -> {c1:.3g}, {z:.1f} SDs)"
        if z < -self.th.z_ce:
            return False, f"{CE} moved with {self.L} ({c0:.3g} -> {c1:.3g}): no misalignment contrast; the run or the probe may be unstable"
        return False, f"{CE} stalled too ({c0:.3g} -> {c1:.3g}, {z:+.1f} SDs): no misalignment contrast"

    # -- 4) transfer -------------------------------------------------------------------------------
    def baseline(self) -> tuple[float, float] | None:
        vals = [v for p in self.base_pts for v in (p["values"].get(self.metric) or [])]
        if not vals:
            return None
        b = float(np.mean(vals))
        per_rep = float(np.median(self.s ** 2 * self.n_rep)) if self.known else float("nan")
        if len(vals) > 1:
            v = float(np.var(vals, ddof=1))
            if math.isfinite(per_rep):  # shrink the few baseline repeats toward the probes' noise
                d = len(vals) - 1
                v = (d * v + 8.0 * per_rep) / (d + 8.0)
            sb = math.sqrt(v / len(vals))
        else:
            sems = [p["sem"].get(self.metric, math.nan) for p in self.base_pts]
            sb = float(sems[0]) if sems and math.isfinite(sems[0]) else (math.sqrt(per_rep) if math.isfinite(per_rep) else math.nan)
        return b, max(sb, self.res) if math.isfinite(sb) else sb

    def no_transfer(self) -> Verdict | None:
        bl = self.baseline()
        if bl is None:
            self.stats["z_transfer"] = None
            return None
        b, sb = bl
        k = min(2, len(self.y))
        ybar = float(np.mean(self.y[-k:]))
        s = self.sigma_all[-k:]
        sbar = float(math.sqrt(np.sum(s ** 2)) / k)
        z = (ybar - b) / (math.hypot(sbar, sb) if math.isfinite(sb) else sbar)
        self.stats["z_transfer"] = round(float(z), 3)
        self.stats["baseline"] = {"mean": b, "sem": sb}
        self.near(z, self.th.z_transfer)
        what = f"the newest {k} probes (mean {self.L} {ybar:.3g})" if k > 1 else f"the newest probe ({self.L} {ybar:.3g})"
        if z >= self.th.z_transfer:
            self.reasons.append(f"{what} beat the no-pretraining baseline ({b:.3g}) by {z:+.1f} SE")
            return None
        rel = "below" if ybar < b else "above"
        self.reasons.append(f"{what} {'are' if k > 1 else 'is'} {abs(ybar - b):.3g} {rel} the no-pretraining baseline "
                            f"({b:.3g}), {z:+.1f} standard errors (needs > {self.th.z_transfer:g} to count as transfer)")
        self.stats["message"] = (f"no transfer at {tok(self.x[-1])} tokens: {what} vs {b:.3g} without "
                                 f"pre-training ({z:+.1f} SE)")
        zc = self.ce_vs_baseline(k)
        # "At the baseline" (within noise, or below it by less than a score difference that matters)
        # while CE beats the baseline's: transfer shows in CE first. Clearly below it is negative
        # transfer, whatever CE does.
        margin = self.th.min_effect * (1.0 if self.res >= 0.05 else 0.01)
        at_baseline = z > -self.th.z_transfer or (b - ybar) <= margin
        if zc is not None and zc > self.th.z_ce and at_baseline:
            self.reasons.append(f"but {long_label(self.ce)} is {zc:.1f} SE better than the baseline's: transfer shows in "
                                f"the likelihood before the score; wait for the score to follow")
            self.stats["message"] += f"; {long_label(self.ce)} already {zc:.1f} SE better than without pre-training"
            return self.verdict("no_transfer", "wait")
        if zc is not None and zc > self.th.z_ce:
            self.reasons.append(f"{long_label(self.ce)} is {zc:.1f} SE better than the baseline's, but the score is "
                                f"{b - ybar:.3g} below the baseline's (more than {margin:g}): negative transfer")
        return self.verdict("no_transfer", "stop")

    def ce_vs_baseline(self, k: int) -> float | None:
        if not self.ce:
            return None
        vals = [v for p in self.base_pts for v in (p["values"].get(self.ce) or [])]
        c, cs = self.c[-k:], self.ce_noise()[-k:]
        if not vals or not np.all(np.isfinite(c)):
            return None
        cs = np.where(np.isfinite(cs), cs, 1e-4)
        cb = float(np.mean(vals))
        sb = float(np.std(vals, ddof=1) / math.sqrt(len(vals))) if len(vals) > 1 else float(cs[0])
        z = (cb - float(np.mean(c))) / math.hypot(float(np.sqrt(np.sum(cs ** 2)) / k), max(sb, 1e-4))
        self.stats["z_ce_baseline"] = round(z, 3)
        return z
