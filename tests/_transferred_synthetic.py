"""Synthetic from-scratch and pre-trained CE curves consistent with Hernandez et al. 2021's text -> python
fit of the effective data transferred, D_T = k D_F**alpha N**beta (k 1.9e4, alpha 0.18, beta 0.38).

The from-scratch curve of a model of N parameters fine-tuned on D examples is the additive form
L0(N, D) = E + A / N**a_n + B / D**a_d (per N a power law in D with floor E + A / N**a_n). A
pre-trained model fine-tuned on D_F examples is given the from-scratch loss at D_F + D_T: by the
definition of D_T (Hernandez et al.: D_E = D_F + D_T is the data a from-scratch model needs to reach
the pre-trained model's loss) that is exactly the loss it must have. ``growth(tokens)`` scales D_T with
the pre-training tokens D_p (1 at every D_p by default: the paper's models were pre-trained once).
"""

from __future__ import annotations

import numpy as np

K, ALPHA, BETA = 1.9e4, 0.18, 0.38  # Hernandez et al. 2021, text -> python (N non-embedding parameters)
E, A, A_N, B, A_D = 1.0, 126.0, 0.3, 23.8, 0.3  # from-scratch curve: ~4 nats at D=1e3, N=1e6


def scratch_loss(n, d):
    return E + A / np.asarray(n, float) ** A_N + B / np.asarray(d, float) ** A_D


def true_transferred(df, n, tokens=None, growth=None):
    dt = K * np.asarray(df, float) ** ALPHA * np.asarray(n, float) ** BETA
    return dt * (growth(tokens) if growth is not None else 1.0)


def _rec(run_id, n, task, df, pretrained, tokens, step, ce, repeat):
    return {"schema": 1, "kind": "probe", "run_id": run_id, "time": 0.0, "step": step, "tokens": float(tokens),
            "params": {"non_embedding": float(n), "total": float(n)}, "task": task,
            "finetune_size": {"examples": int(df)}, "pretrained": pretrained, "status": "ok", "error": None,
            "metrics": {"cross_entropy": float(ce)}, "repeat": repeat}


def records(n, finetune_sizes, baseline_sizes=None, tokens=(1e9,), *, growth=None, noise=0.0, repeats=1, seed=0,
            run_id=None, task="text-python"):
    """History records of one run (model size ``n``): baseline probes at ``baseline_sizes`` (default the
    fine-tuning sizes), pre-trained probes at every (tokens, D_F); CE with Gaussian ``noise`` (sd, nats)
    per repeat."""
    rng = np.random.default_rng(seed)
    run_id = run_id or f"n{n:.0e}"
    out = []
    for d in finetune_sizes if baseline_sizes is None else baseline_sizes:
        for r in range(repeats):
            out.append(_rec(run_id, n, task, d, False, 0, 0, scratch_loss(n, d) + noise * rng.standard_normal(), r))
    for step, t in enumerate(tokens, 1):
        for d in finetune_sizes:
            ce = scratch_loss(n, d + true_transferred(d, n, t, growth))
            for r in range(repeats):
                out.append(_rec(run_id, n, task, d, True, t, 100 * step, ce + noise * rng.standard_normal(), r))
    return out
