"""The verdict step of :class:`~transfer_probe.loop.ProbeLoop`: what new results lead to.

After each batch of results the loop asks :class:`VerdictStep` for the verdicts of the (task, D_f)
groups that got a new pre-trained result: each is logged, appended to the history and handed back
as an :class:`Outcome` (the caller reports it: ``trainer.log``, sinks, ``stop_on``). Before a first
break signal or a borderline warning is said, adaptive repeats re-measure the newest point; a first
signal may add one extra probe point to the schedule. For tasks with two or more D_f and a
baseline, the data transferred (``transfer_probe.transferred``) is recorded too.

Trainer-free: the loop is passed in (its run records, history, executor, schedule).
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from transfer_probe.run.probe import ProbeJob
from transfer_probe.run.snapshot import capture_in_memory, unwrap_model
from transfer_probe.store.records import finetune_examples
from transfer_probe.text import format_tokens

__all__ = ["Outcome", "VerdictStep"]

logger = logging.getLogger("transfer_probe")

_WARNINGS = {"misaligned", "law_break", "no_transfer"}


@dataclass
class Outcome:
    """Something the loop produced that its caller reports.

    ``kind``: ``"record"`` (a probe record, as written), ``"point"`` (the mean over the repeats of
    one probe point), ``"verdict"`` or ``"transfer"``. ``values``: numbers for a tracker
    (``transfer_probe/<task>/df=<n>/...``), to plot at ``step``, the step they belong to.
    """

    kind: str
    values: dict[str, float] = field(default_factory=dict)
    step: int | None = None
    record: dict | None = None
    verdict: Any = None
    group: tuple | None = None  # (task, D_f) of a verdict or a transfer point


class VerdictStep:
    """Verdicts, data transferred, adaptive repeats and extra probes for one run (see the module)."""

    def __init__(self, *, thresholds: Any, budget_tokens: float | None, target_bleu: float | None,
                 adaptive_repeats: int, extra_probes: int):
        self.thresholds = thresholds
        self.budget_tokens = budget_tokens
        self.target_bleu = target_bleu
        self.adaptive_repeats = self.adaptive_left = adaptive_repeats
        self.extra_probes = self.extra_left = extra_probes
        self._adaptive_warned = False
        try:
            from transfer_probe import diagnose
        except ImportError:  # a core without the verdicts: records only
            self.diag, self.tracker = None, None
            return
        self.diag = diagnose
        self.tracker = diagnose.VerdictTracker()

    def judge(self, loop: Any, new: list[dict], step: int) -> list[Outcome]:
        """The verdicts of the groups ``new`` touched, reported (one history record and one log line
        each), except those held for re-measuring. ``step``: where training is now."""
        ok_new = [r for r in new if r.get("status") == "ok" and r.get("pretrained", True)]
        # Baseline results alone give nothing to diagnose (a verdict is about the pretrained curve).
        if self.diag is None or not ok_new:
            return []
        mine = loop.run_records
        try:
            verdicts = self.diag.diagnose_all(mine, budget_tokens=self.budget_tokens, target=self.target_bleu,
                                              **({"thresholds": self.thresholds} if self.thresholds is not None else {}))
        except Exception as exc:  # a diagnosis bug must never stop training
            logger.warning("transfer_probe | diagnosis failed: %s: %s", type(exc).__name__, exc)
            return []
        touched = {(str(r.get("task")), _df(r)) for r in ok_new}
        tokens = max(float(r.get("tokens") or 0) for r in new)
        # the verdict is about the newest probe point: trackers show it at that point's step
        probed = max((int(r.get("step") or 0) for r in new if r.get("pretrained", True)), default=None)
        out = []
        for key, verdict in verdicts.items():
            task, df = str(key[0]), key[1]
            if (task, df) not in touched or self._remeasure(loop, task, df, verdict, mine):
                continue
            try:
                out.append(self._report(loop, task, df, verdict, step, tokens, probed))
            except Exception as exc:
                logger.warning("transfer_probe | reporting the verdict for %s D_f=%s failed: %s", task, df, exc)
                continue
            if getattr(verdict, "status", None) == "suspected":
                self._extra_probe(loop, task, df, tokens)
        return out

    def _report(self, loop: Any, task: str, df: Any, verdict: Any, step: int, tokens: float,
                probed: int | None) -> Outcome:
        warn = self.tracker.update(verdict) if self.tracker is not None else False
        # The tracker also flags a warning that ended: said once, at INFO.
        loud = warn and (getattr(verdict, "is_warning", False) or getattr(verdict, "is_suspected", False))
        (logger.warning if loud else logger.info)("%s", self.diag.format_verdict(verdict))
        rec = dict(verdict.to_record())
        rec.setdefault("run_id", loop.run_id)
        rec.setdefault("step", int(step))
        rec.setdefault("tokens", tokens)
        loop.keep(rec)
        return Outcome("verdict", _verdict_values(task, df, verdict), probed, rec, verdict, (task, df))

    def final_lines(self) -> list[str]:
        """The warnings still standing ("say it at the end")."""
        if self.tracker is None or not hasattr(self.tracker, "final"):
            return []
        return _lines(self.tracker.final())

    def data_transferred(self, loop: Any, new: list[dict]) -> list[Outcome]:
        """What pre-training is worth in fine-tuning examples (``transfer_probe.transferred``), for tasks
        with >= 2 D_f and a baseline: a log line, tracker values and a ``"kind": "transfer"`` history
        record per (task, D_f) that got a new pre-trained result."""
        multi = {t.name for t in loop.tasks if len(getattr(t, "finetune_sizes", ()) or ()) >= 2}
        touched = sorted({(str(r.get("task")), _df(r)) for r in new if r.get("status") == "ok"
                          and r.get("pretrained", True) and str(r.get("task")) in multi}, key=str)
        if not touched or not loop.baseline:
            return []
        out = []
        try:
            from transfer_probe.transferred import data_transferred

            result = data_transferred(loop.run_records)
            for task, df in touched:
                tt = result.tasks.get(task)
                point = tt.latest(df) if tt is not None and tt.ok else None
                if point is None:
                    continue
                logger.info("transfer_probe | %s | %s", task, tt.line(df, _unit(loop.tasks, task)))
                rec = {"kind": "transfer", "run_id": loop.run_id, **point.to_dict(), "finetune_size": df,
                       "growth": tt.growth[point.finetune_size].to_dict(), "baseline_method": tt.baseline.method,
                       "noise": tt.noise}
                rec["transfer_status"] = rec.pop("status")  # a record's "status" is a probe's ok / failed
                loop.keep(rec)
                out.append(Outcome("transfer", _transfer_values(task, df, point), point.step, rec, group=(task, df)))
        except Exception as exc:  # an analysis bug must never stop training
            logger.warning("transfer_probe | data transferred failed: %s: %s", type(exc).__name__, exc)
        return out

    def _extra_probe(self, loop: Any, task_name: str, df: Any, tokens: float) -> None:
        """After a first break signal, probe once more before the next scheduled point (extra_probes)."""
        schedule = loop.schedule
        if self.extra_left <= 0 or tokens <= 0 or schedule is None:
            return
        nxt = schedule.next_point(int(tokens))
        if nxt is None:
            return
        mid = max(int(math.sqrt(tokens * nxt)), (schedule.last_tokens or 0) + 1)
        if mid >= nxt:
            return
        point = schedule.add_point(mid)
        self.extra_left -= 1
        logger.info("transfer_probe | %s D_f=%s | first signal of a break: an extra probe at %s tokens, before the "
                    "next scheduled one at %s (extra probes: %d of %d left)", task_name, df, format_tokens(point),
                    format_tokens(nxt), self.extra_left, self.extra_probes)

    def _remeasure(self, loop: Any, task_name: str, df: Any, verdict: Any, records: list[dict]) -> bool:
        """Hold a borderline warning and run more fine-tunes at its newest point (adaptive repeats).

        Returns True when more measurements were submitted: the warning waits for them.
        """
        status = getattr(verdict, "status", None)
        # A first signal ("suspected") is exactly what re-measuring settles; so is a borderline warning.
        if self.adaptive_left <= 0 or not (status == "suspected" or (
                getattr(verdict, "borderline", False) and status in _WARNINGS)):
            return False
        pts = [r for r in records if r.get("kind", "probe") == "probe" and r.get("pretrained", True)
               and str(r.get("task")) == task_name and _df(r) == df]
        if not pts:
            return False
        newest = max(pts, key=lambda r: float(r.get("tokens") or 0))
        step, tokens = int(newest.get("step") or 0), float(newest.get("tokens") or 0)
        snap = self._weights_at(loop, step, tokens)
        if snap is None:
            return False
        task = next(t for t in loop.tasks if t.name == task_name)
        extra = min(max(loop.repeats, 2), self.adaptive_left)
        first = 1 + max(int(r.get("repeat") or 0) for r in pts if int(r.get("step") or 0) == step)
        jobs = [ProbeJob(snapshot=snap, task=task, finetune_size=int(df), config=loop.finetune, repeat=first + i,
                         run_id=loop.run_id, extra={"schedule": {"reasons": ["adaptive_repeat"]}})
                for i in range(extra)]
        self.adaptive_left -= extra
        what = "first signal of a break (suspected)" if status == "suspected" else f"borderline {status}"
        logger.info("transfer_probe | %s D_f=%s | %s at %s tokens: measuring %d more fine-tune(s) "
                    "there before warning (adaptive repeats: %d of %d left)", task_name, df,
                    what, format_tokens(tokens), extra, self.adaptive_left, self.adaptive_repeats)
        loop.executor.submit(jobs)
        return True

    def _weights_at(self, loop: Any, step: int, tokens: float) -> Any:
        """The snapshot of ``step`` if the weights are still there: the model itself while the loop is
        at that step (inline), or the kept snapshot folder (``keep_snapshots``)."""
        current = loop.current
        if current is not None and current[1] == step:
            return capture_in_memory(unwrap_model(current[0]), tokens=int(tokens), step=step,
                                     tokenizer=loop.tokenizer)
        folder = loop.snapshots_dir / f"step-{step}" if loop.snapshots_dir is not None else None
        if loop.keep_snapshots and folder is not None and folder.is_dir():
            from transfer_probe.run.snapshot import load_snapshot

            return load_snapshot(folder)
        if not self._adaptive_warned:
            self._adaptive_warned = True
            logger.warning("transfer_probe | adaptive_repeats: the weights of step %d are gone, so the borderline "
                           "verdict cannot be re-measured; use executor='inline' or keep_snapshots=True", step)
        return None


# ----------------------------------------------------------------------------------------------
# Values for trackers, and small record helpers the loop shares


_df = finetune_examples  # a record's D_f: the store's one accessor


def _finite(v: Any) -> bool:
    try:
        return v is not None and not isinstance(v, bool) and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _log_line(rec: dict, step: int, repeats: int) -> None:
    head = f"transfer_probe | {rec.get('task')} D_f={_df(rec)} | tokens {format_tokens(rec.get('tokens'))}"
    if not rec.get("pretrained", True):
        head += " (no pretraining)"
    if repeats > 1:
        head += f" | repeat {rec.get('repeat', 0)}"
    if rec.get("status") != "ok":
        logger.warning("%s | probe failed: %s; training continues", head, rec.get("error"))
        return
    m = rec.get("metrics") or {}
    parts = []
    for key, label in (("bleu", "BLEU"), ("chrf", "chrF"), ("cross_entropy", "CE")):
        if _finite(m.get(key)):
            parts.append(f"{label} {float(m[key]):.{2 if key == 'cross_entropy' else 1}f}")
    parts += [f"{k} {float(v):.3g}" for k, v in m.items() if k not in ("bleu", "chrf", "cross_entropy") and _finite(v)]
    tail = f" | {rec.get('seconds', 0) or 0:.1f}s"
    if rec.get("pretrained", True) and rec.get("step") is not None and int(rec["step"]) != step:
        tail += f" (probe of step {rec['step']}, reported at step {step})"
    logger.info("%s | %s%s", head, " ".join(parts), tail)


def _log_values(recs: list[dict], pretrained: bool) -> dict[str, float]:
    """``transfer_probe/<task>/df=<n>[/baseline]/<metric>``: mean over the repeats in ``recs``."""
    sums: dict[str, list[float]] = defaultdict(list)
    for r in recs:
        prefix = f"transfer_probe/{r.get('task')}/df={_df(r)}" + ("" if pretrained else "/baseline")
        if r.get("status") != "ok":
            sums[f"{prefix}/failed"].append(1.0)
            continue
        for k, v in (r.get("metrics") or {}).items():
            if _finite(v):
                sums[f"{prefix}/{k}"].append(float(v))
    return {k: sum(v) / len(v) for k, v in sums.items()}


def _verdict_values(task: str, df: Any, verdict: Any) -> dict[str, float]:
    prefix = f"transfer_probe/{task}/df={df}/verdict"
    out: dict[str, float] = {}
    if getattr(verdict, "status", None) is not None:
        out[f"{prefix}/warning"] = 1.0 if getattr(verdict, "is_warning", False) else 0.0
        # Trackers plot numbers: the status and the recommendation as codes (legend in the README).
        from transfer_probe.diagnose import RECOMMENDATIONS, STATUSES

        if verdict.status in STATUSES:
            out[f"{prefix}/status"] = float(STATUSES.index(verdict.status))
        if getattr(verdict, "recommendation", None) in RECOMMENDATIONS:
            out[f"{prefix}/recommendation"] = float(RECOMMENDATIONS.index(verdict.recommendation))
    pred = getattr(verdict, "prediction", None)
    if isinstance(pred, dict):
        for k in ("mean", "value", "low", "high"):
            if _finite(pred.get(k)):
                out[f"{prefix}/prediction_{k}"] = float(pred[k])
    elif isinstance(pred, (tuple, list)) and pred and all(_finite(x) for x in pred[:3]):
        for name, x in zip(("mean", "low", "high"), pred, strict=False):
            out[f"{prefix}/prediction_{name}"] = float(x)
    ttt = getattr(verdict, "tokens_to_target", None)
    if isinstance(ttt, dict):
        ttt = ttt.get("mean", ttt.get("value"))
    if _finite(ttt):
        out[f"{prefix}/tokens_to_target"] = float(ttt)
    return out


def _unit(tasks: list[Any], name: str) -> str:
    from transfer_probe.tasks import TranslationTask

    return "pairs" if any(t.name == name and isinstance(t, TranslationTask) for t in tasks) else "examples"


def _transfer_values(task: str, df: Any, point: Any) -> dict[str, float]:
    """``transfer_probe/<task>/df=<n>/data_transferred`` (with ``_low`` / ``_high``), ``data_multiplier``,
    ``ossified`` (1/0): the finite ones."""
    prefix = f"transfer_probe/{task}/df={df}"
    vals = {"data_transferred": point.transferred, "data_transferred_low": point.low,
            "data_transferred_high": point.high, "data_multiplier": point.multiplier,
            "ossified": 1.0 if point.ossified else 0.0}
    return {f"{prefix}/{k}": float(v) for k, v in vals.items() if _finite(v)}


def _lines(obj: Any) -> list[str]:
    if obj is None:
        return []
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        obj = list(obj.values())
    out = []
    for v in obj:
        if isinstance(v, str):
            out.append(v)
        else:
            try:
                from transfer_probe.diagnose import format_verdict

                out.append(format_verdict(v))
            except Exception:
                out.append(str(v))
    return out
