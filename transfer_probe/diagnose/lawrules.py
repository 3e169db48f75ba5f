"""Rules 5-6 of the verdicts (see ``rules``): the plateau check and the aligned verdict with its law,
prediction and tokens to the target. A part of :class:`~transfer_probe.diagnose.rules.Diagnosis`,
kept apart because it is where the laws come in; it reads the state the earlier rules set."""

from __future__ import annotations

import math

import numpy as np

from transfer_probe.diagnose import fits as F
from transfer_probe.diagnose.tests import change_z
from transfer_probe.diagnose.verdict import Verdict
from transfer_probe.text import format_tokens as tok


class LawRules:
    """Mixed into ``Diagnosis``: uses its ``th``, ``L``, ``sigma``, ``budget``, ``target``, ``stats``,
    ``reasons``, ``fits``, ``verdict()`` and ``ce_contrast()``."""

    # -- 5-6) laws ---------------------------------------------------------------------------------
    def laws(self, x: np.ndarray, y: np.ndarray) -> Verdict:
        th, L = self.th, self.L
        s = self.sigma
        plateau = self.plateau(x, y, s)
        if plateau is not None:
            return plateau
        ch = F.choose_law(x, y, s)
        full, bt, kind = ch["fit"], ch["backtest"], ch["kind"]
        self.stats["law_choice"] = {k: {"usable": v["usable"], "mae": v["mae"] if math.isfinite(v["mae"]) else None}
                                    for k, v in ch["candidates"].items()}
        self.stats["backtest"] = {k: bt[k] for k in ("n", "max_abs_err", "mean_abs_err", "rms_z", "coverage") if k in bt}
        pred_ok, scale = F.trust(full, bt)
        law_name = "log-law" if kind == "log" else "saturating law C - A/D^alpha"
        fit_d = F.fit_dict(full) or {}
        prediction = tokens_to_target = None
        if self.budget is not None and pred_ok:
            prediction = F.predict_at(full, float(self.budget), th.interval, scale)
            prediction["law"] = kind
            if prediction.get("mean") is not None:
                why = F.prediction_problem(prediction["mean"], prediction["low"], prediction["high"], y, s,
                                           ceiling=F.score_ceiling(y, False, self.metric),
                                           beyond_data=self.budget > x[-1])
                if why is not None:
                    pred_ok = False
                    prediction = {"budget": float(self.budget), "mean": None, "why": why}
        fit_d.update(trusted=bool(pred_ok), law=kind, interval_scale=round(scale, 3))
        self.fits[self.metric] = fit_d
        if bt.get("n"):
            probes = f"{bt['n']} probe{'s' if bt['n'] > 1 else ''}"
            self.reasons.insert(0, (f"{L} follows the {law_name}: it predicted the last {probes} within "
                                    f"{bt['max_abs_err']:.2g} {L} (rms {bt['rms_z']:.2g} noise SDs)") if pred_ok else
                                (f"no break detected; the {law_name} fitted best but missed the last {probes} by up to "
                                 f"{bt['max_abs_err']:.2g} {L} (rms {bt['rms_z']:.2g} noise SDs): not trusted for a "
                                 f"prediction yet"))
        else:
            self.reasons.insert(0, f"no break detected over {len(x)} probes; the {law_name} could not be checked on "
                                   f"the run's own probes yet ({F.why(full)})")
        if kind == "saturating" and F.usable(full):
            self.reasons.append(f"{L} saturates: the saturating law (ceiling {full.params.get('C', math.nan):.3g}) "
                                f"predicted this run better than the log-law")
        if scale > 1.0:
            self.reasons.append(f"prediction intervals widened x{scale:.2g}: the backtest errors were larger than the bands")
        if not pred_ok:
            why = F.why(full) if not F.usable(full) else "the law has not yet predicted enough of this run's own probes"
            if self.budget is not None and (prediction is None or prediction.get("mean") is not None):
                prediction = {"budget": float(self.budget), "mean": None, "why": why}
            if self.target is not None:
                tokens_to_target = {"target": float(self.target), "mean": None, "why": f"not identified: {why}"}
            return self.verdict("aligned", "continue", prediction=prediction, tokens_to_target=tokens_to_target, law=kind)
        if prediction and prediction.get("mean") is not None:
            self.reasons.append(f"predicted {L} at {tok(self.budget)} tokens: {prediction['mean']:.3g} "
                                f"[{prediction['low']:.3g}, {prediction['high']:.3g}] ({th.interval:.0%} interval)")
            if self.budget < x[-1]:
                self.reasons.append(f"the budget {tok(self.budget)} is already passed ({tok(x[-1])} tokens seen)")
        rec, tokens_to_target = self.to_target(full, prediction, float(x[-1]))
        return self.verdict("aligned", rec, prediction=prediction, tokens_to_target=tokens_to_target, law=kind)

    def to_target(self, full, prediction: dict | None, x_now: float) -> tuple[str, dict | None]:
        """Tokens to the target score, and ``stop`` when it is out of reach (within the budget)."""
        if self.target is None:
            return "continue", None
        L, th = self.L, self.th
        tt = F.tokens_to_target(full, float(self.target), th.interval, x_now)
        if tt.get("mean") is None:
            self.reasons.append(f"{L} {self.target:g}: {tt['why']}")
            return ("stop" if str(tt.get("why", "")).startswith("not reachable") else "continue"), tt
        self.reasons.append(f"{L} {self.target:g} expected after {tok(tt['mean'])} tokens "
                            f"[{tok(tt['low'])}, {tok(tt['high'])}] ({th.interval:.0%} interval)")
        if prediction and prediction.get("high") is not None and prediction["high"] < self.target:
            self.reasons.append(f"the target {self.target:g} is out of reach within the budget "
                                f"{tok(self.budget)} (even the upper bound {prediction['high']:.3g} is below)")
            return "stop", tt
        return "continue", tt

    def plateau(self, x: np.ndarray, y: np.ndarray, s: np.ndarray) -> Verdict | None:
        """The score stopped rising where both laws say it should still rise, while cross-entropy improved."""
        now = self._plateau_at(x, y, s)
        if now is None:
            return None
        before = self._plateau_at(x[:-1], y[:-1], s[:-1]) if len(x) - 1 >= self.th.min_points + 1 else None
        k, zs, peak, suffix, txt = now
        L = self.L
        msg = (f"{L} stopped rising: the newest {k} probe{'s' if k > 1 else ''} ({', '.join(f'{v:.3g}' for v in y[-k:])}) "
               f"sit {min(zs.values()):.1f}+ noise SDs below where both the log-law and the saturating law fitted to the "
               f"earlier probes put them, while {txt}")
        self.break_tokens = float(x[-k])
        self.stats["plateau"] = {"k": k, **{f"z_{kk}": round(v, 3) for kk, v in zs.items()}, "confirmed": before is not None}
        if before is None:
            self.reasons.append(msg + ": a first signal")
            self.stats["message"] = msg
            return self.verdict("suspected", "probe again", break_tokens=self.break_tokens)
        self.reasons.append(msg + "; the same at the previous probe: the misalignment signature (Isik et al. 2024)")
        self.stats["message"] = msg + f"; pre-training data looks misaligned with " \
                                      f"{self.task if self.task not in (None, 'table', 'None') else 'the task'}"
        return self.verdict("misaligned", "stop", break_tokens=self.break_tokens)

    def _plateau_at(self, x, y, s):
        m = len(x)
        k = 2 if m >= self.th.min_points + 2 else 1
        if m - k < 4:
            return None
        b = F.below_laws(x, y, s, k)
        if not b or min(b["log"], b["saturating"]) <= self.th.z_holdout:
            return None
        zs = {"log": b["log"], "saturating": b["saturating"]}
        peak = (max(0, m - k - self.th.peak_window), m - k - 1)
        suffix = (m - k, m - 1)
        # model-free too: no improvement beyond noise over the earlier level
        if change_z(y, s, peak, suffix) < -self.th.z_warmup:
            return None
        follows, txt = self.ce_contrast(peak, suffix)
        if not follows:
            return None
        return k, zs, peak, suffix, txt
