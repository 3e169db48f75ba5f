"""The report's "Fits the verdict rests on": the verdict reproduced with its :class:`Diagnosis` (the
same warm-up, noise and points), then the curves to draw on the score plot and the rows of the Fits
table for each kind of verdict (aligned: the chosen law; plateau: both laws before the newest probes;
a break or no transfer: model-free, said so), and cross-entropy's descriptive power law."""

from __future__ import annotations

import math

import numpy as np

from transfer_probe.report_html import fmt
from transfer_probe.text import format_tokens, label


def diagnosis(records, budget, target):
    """The verdict, and the :class:`Diagnosis` that made it (its warm-up, noise and points), so the
    plots and the fits table show the very fits the verdict used, with the same functions."""
    from transfer_probe import diagnose as dg
    from transfer_probe.diagnose.rules import Diagnosis

    try:
        verdict = dg.diagnose(records, budget_tokens=budget, target=target)
    except Exception as err:  # noqa: BLE001 - a report must still render what it has
        return None, None, f"{type(err).__name__}: {err}"
    pre = [r for r in records if r.get("pretrained", True)]
    base = [r for r in records if not r.get("pretrained", True)]
    d = Diagnosis(pre, base, verdict.task, verdict.finetune_size, verdict.run_id, verdict.metric,
                  verdict.ce_metric, budget, target, dg.DEFAULT_THRESHOLDS)
    again = d.run()
    if again.status != verdict.status:  # deterministic: cannot differ unless the rules changed under us
        d = None
    return verdict, d, None


def empty_fits() -> dict:
    return {"curves": [], "rows": [], "levels": [], "n_warmup": 0, "prediction": None, "law": "",
            "trusted": False, "summary": "", "notes": []}


def verdict_fits(d, v, budget) -> dict:
    """What the verdict rests on: the curves to draw on the score plot and the Fits table's rows.

    aligned: the law chosen by the backtest (``choose_law`` on the probes after the warm-up, with the
    verdict's noise), trusted or not as ``trust`` says, its band widened as ``predict_at`` widens it;
    a plateau: both laws fitted to the probes before the newest ones (the held-out test); a break or no
    transfer: no law at all (model-free tests), said so."""
    out = empty_fits()
    L = label(v.metric)
    if d is None:
        out["rows"].append([L, "(the verdict could not be reproduced)", "", "", "", "", ""])
        return out
    out["n_warmup"] = w = int(getattr(d, "w", 0) or 0)
    if v.status == "aligned" and v.law and hasattr(d, "sigma"):
        return _aligned_fits(out, d, v, budget)
    if isinstance(v.stats.get("plateau"), dict) and hasattr(d, "sigma"):
        return _plateau_fits(out, d, v)
    brk = v.stats.get("break") or {}
    if v.status in ("misaligned", "law_break", "suspected") and brk.get("level") is not None and hasattr(d, "sigma"):
        x = d.x[w:]
        look = d.break_state(x, d.y[w:])  # the same sequential test replayed: where its levels were measured
        (plo, phi), (a, e) = look.get("peak", (0, 0)), look.get("suffix", (len(x) - 1, len(x) - 1))
        since = float(brk.get("since") or x[a])
        out["levels"] = [(float(brk["level"]), float(x[plo]), float(x[phi]), "best level (the probes it is the mean of)"),
                         (float(brk["now"]), float(x[a]), float(x[e]), "level of the newest probes")]
        z = brk.get("z")
        support = brk.get("z_support")
        checks = (f"fell from {brk['level']:.3g} to {brk['now']:.3g} since {format_tokens(since)} tokens"
                  + (f" ({z:.1f} noise SDs)" if isinstance(z, (int, float)) else "")
                  + (f"; backed by both laws fitted before it ({support:.1f} SDs below them)"
                     if isinstance(support, (int, float)) and math.isfinite(support) else ""))
        out["rows"].append([L, "none: the break test is model-free (the score against its own best level)",
                            "no law", f"{len(x)} probes", "not needed", "", checks])
        out["summary"] = "model-free"
        return out
    why = v.reasons[0] if v.reasons else v.status
    role = ("none: compared with the no-pretraining baseline" if v.status == "no_transfer"
            else "none yet: not enough probes for a law")
    out["rows"].append([L, role, "no law", f"{v.n_points} probes", "not needed", "", why])
    out["summary"] = "none"
    return out


SHORT_NAMES = {"log": "log-law", "saturating": "saturating law", "power": "power law"}


LAW_NAMES = {"log": "log-law (log(A·D^a))^b", "saturating": "saturating law C − A/D^a", "power": "power law E + A/D^a"}


def _aligned_fits(out: dict, d, v, budget) -> dict:
    from transfer_probe.diagnose import fits as F

    w, L = out["n_warmup"], label(v.metric)
    x, y = d.x[w:], d.y[w:]
    ch = F.choose_law(x, y, d.sigma)  # the verdict's call, same inputs: the same fit
    fit, kind = ch["fit"], ch["kind"]
    fd = v.fits.get(v.metric) or {}
    trusted, scale = bool(fd.get("trusted")), float(fd.get("interval_scale") or 1.0)
    out.update(law=kind, trusted=trusted, summary=f"{kind} ({'trusted' if trusted else 'not trusted'})")
    bt = v.stats.get("backtest") or {}
    choice = "; ".join(f"{k}: mean abs. error {c['mae']:.2g}" for k, c in (v.stats.get("law_choice") or {}).items()
                       if c.get("mae") is not None and c["mae"] < 1e5)
    checks = (f"predicted the last {bt['n']} probes within {bt['max_abs_err']:.2g} {L} (rms {bt['rms_z']:.2g} noise "
              f"SDs)" if bt.get("n") else "not yet checked on the run's own probes")
    if trusted and scale > 1:
        checks += f"; bands widened x{scale:.2g} by the backtest"
    if not trusted:
        why = (v.prediction or {}).get("why") or F.why(fit)
        checks += f"; not trusted: {why}"
    elif not getattr(fit, "ok", True):
        checks += f"; the fit's own check: {F.why(fit)}, yet its curve is finite and it predicted the run's later probes"
    if choice:
        checks += f" (backtest of the candidates: {choice})"
    out["rows"].append([L, "the verdict's law (the candidate that predicted the run's own later probes best)",
                        LAW_NAMES.get(kind, kind), f"{len(x)} probes, {format_tokens(x[0])}-{format_tokens(x[-1])} tokens"
                        + (f" (the first {w} left out: warm-up)" if w else ""),
                        "yes" if trusted else "no", _params(fit), checks])
    if not F.usable(fit):
        out["notes"].append(f"{LAW_NAMES.get(kind, kind)} not drawn: {F.why(fit)}")
        return out
    end = max(float(x[-1]), float(budget or 0)) if trusted else float(x[-1])
    grid = np.geomspace(float(x[0]), end, 160)
    mean, lo, hi = (np.asarray(a, float) for a in fit.predict(grid, interval=0.9, force=True))
    curve = {"x": grid, "y": mean, "x_end": float(x[-1]), "law": kind}
    if trusted:
        # the band is drawn where it is a prediction: beyond the newest probe
        ahead = grid >= float(x[-1])
        curve.update(low=np.where(ahead, mean - scale * (mean - lo), np.nan),
                     high=np.where(ahead, mean + scale * (hi - mean), np.nan), color="#cf222e",
                     label=f"{SHORT_NAMES.get(kind, kind)}: the verdict's law", band_label="90% prediction band")
        pr = v.prediction or {}
        if pr.get("mean") is not None:
            out["prediction"] = {"tokens": pr["budget"], "mean": pr["mean"], "low": pr["low"], "high": pr["high"]}
    else:
        curve.update(color="#6e7781", ls=":", label=f"{SHORT_NAMES.get(kind, kind)}: the verdict's law, not trusted")
        out["notes"].append(f"the verdict's {SHORT_NAMES.get(kind, kind)} is drawn over the probes only: not trusted "
                            "for a prediction, so not extended")
    out["curves"].append(curve)
    return out


def _plateau_fits(out: dict, d, v) -> dict:
    from transfer_probe.diagnose import fits as F

    w, L = out["n_warmup"], label(v.metric)
    x, y, s = d.x[w:], d.y[w:], d.sigma
    pl = v.stats["plateau"]
    k = int(pl.get("k", 1))
    for kind, color in (("log", "#cf222e"), ("saturating", "#8250df")):
        fit = F.fit_law(kind, x[:-k], y[:-k], s[:-k], **F.HOLDOUT_OPTIONS)  # as below_laws fits them
        z = pl.get(f"z_{kind}")
        out["rows"].append([L, f"plateau check: fitted to the probes before the newest {k}, which sit "
                               f"{z:.1f} noise SDs below its prediction" if isinstance(z, (int, float)) else
                            "plateau check", LAW_NAMES[kind], f"{len(x) - k} probes, {format_tokens(x[0])}-{format_tokens(x[-k - 1])} tokens",
                            "not needed (only its prediction at the newest probes is tested)", _params(fit),
                            "confirmed at the previous probe" if pl.get("confirmed") else "a first signal"])
        if F.usable(fit):
            grid = np.geomspace(float(x[0]), float(x[-1]), 160)
            out["curves"].append({"x": grid, "y": F.curve(fit, grid), "x_end": float(x[-k - 1]), "color": color,
                                  "law": kind, "lw": 1.3, "label": f"{SHORT_NAMES[kind]} fitted before the newest {k}"})
    out["law"], out["summary"] = "log+saturating", "plateau test"
    return out


def _params(fit) -> str:
    """Parameters with their standard errors; one held at a bound (error 0) says so, not "+-0"."""
    params = getattr(fit, "params", None) or {}
    out = []
    for k, v in params.items():
        if v is None or not math.isfinite(float(v)):
            return ""  # a failed fit: no numbers worth showing
        se = (getattr(fit, "stderr", None) or {}).get(k)
        out.append(f"{k}={v:.4g} (at its bound)" if se == 0 else f"{k}={v:.4g}&plusmn;{fmt(se)}")
    return ", ".join(out)


def ce_forecast(run_id, points, base_points, budget):
    """Cross-entropy's power law as ``compare_runs`` fits and trusts it: descriptive only."""
    from transfer_probe.compare import forecast_run

    pts = [p for p in points if "cross_entropy" in p["mean"] and p["tokens"] > 0]
    if not pts:
        return None
    base = [v for p in base_points for v in p["values"].get("cross_entropy", [])]
    at = float(budget) if budget else max(p["tokens"] for p in pts)
    try:
        return forecast_run(str(run_id), pts, "cross_entropy", at, lower=True, interval=0.9, base=base)
    except Exception:  # noqa: BLE001 - a descriptive curve is not worth failing the report for
        return None


def ce_row(rf) -> list:
    if rf is None:
        return ["CE", "descriptive only", "", "", "", "", "no cross-entropy recorded"]
    trusted = rf.source == "law"
    bt = rf.backtest or {}
    checks = (f"predicted the run's own later probes (rms {bt.get('rms_z', math.nan):.2g} noise SDs over {bt.get('n')})"
              if trusted else rf.why)
    return ["CE", "descriptive: the verdict reads CE only model-free (did it still improve?)",
            LAW_NAMES["power"] if rf.law else "", f"{rf.n_points} probes", "yes" if trusted else "no",
            _params(rf._fit) if trusted else "", checks]
