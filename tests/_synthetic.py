"""Synthetic history records for tests of the numeric core, CLI and report (no torch)."""

from __future__ import annotations

import numpy as np


def log_law(d, A=2e-3, alpha=0.6, beta=1.6):
    return np.log(A * np.asarray(d, dtype=float) ** alpha) ** beta


def power_law(d, E=1.2, A=40.0, alpha=0.3):
    return E + A / np.asarray(d, dtype=float) ** alpha


def history_records(tokens=None, *, repeats=2, noise=0.4, seed=0, task="en-fr", df=50, run_id="run-a",
                    misaligned_after=None, baseline=True):
    """Probe records following the laws; after ``misaligned_after`` tokens BLEU falls while CE improves."""
    rng = np.random.default_rng(seed)
    tokens = np.geomspace(1e6, 1e9, 8) if tokens is None else np.asarray(tokens, dtype=float)
    recs = []
    for step, t in enumerate(tokens, 1):
        bleu = float(log_law(t))
        if misaligned_after is not None and t > misaligned_after:
            bleu = max(0.5, float(log_law(misaligned_after)) - 4.0 * np.log10(t / misaligned_after))
        ce = float(power_law(t))
        for r in range(repeats):
            recs.append({
                "schema": 1, "kind": "probe", "run_id": run_id, "time": 0.0, "step": step * 100,
                "tokens": float(t), "params": {"non_embedding": 400_000, "total": 700_000},
                "task": task, "finetune_size": {"examples": df, "tokens": df * 12}, "pretrained": True,
                "status": "ok", "repeat": r,
                "metrics": {"bleu": max(0.0, bleu + rng.normal(0, noise)), "chrf": 2 * bleu + rng.normal(0, noise),
                            "cross_entropy": ce + rng.normal(0, 0.002)},
                "metrics_ci": {"bleu": [bleu - 1.0, bleu + 1.0]},
                "metric_signatures": {"bleu": "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"},
                "finetune": {"steps": 60, "learning_rate": 1e-3, "batch_size": 32, "seed": r, "seconds": 1.0},
                "seconds": 1.5,
            })
    if baseline:
        for r in range(repeats):
            recs.append({
                "schema": 1, "kind": "probe", "run_id": run_id, "step": 0, "tokens": 0.0,
                "params": {"non_embedding": 400_000, "total": 700_000}, "task": task,
                "finetune_size": {"examples": df, "tokens": df * 12}, "pretrained": False, "status": "ok",
                "repeat": r, "metrics": {"bleu": 3.0 + rng.normal(0, noise), "chrf": 10.0,
                                         "cross_entropy": 3.0},
            })
    return recs
