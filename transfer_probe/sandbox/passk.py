"""The pass@k estimator (Chen et al. 2021) and the HumanEval program format: pure functions, no
code runs here (the estimator works on any platform)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of pass@k from ``n`` samples of which ``c`` passed (Chen et al. 2021).

    ``1 - C(n-c, k) / C(n, k)``, computed as ``1 - prod_{i=n-c+1}^{n} (1 - k/i)`` so large ``n``
    neither overflows nor loses precision.

    >>> pass_at_k(10, 0, 1), pass_at_k(10, 10, 1), round(pass_at_k(10, 3, 1), 6)
    (0.0, 1.0, 0.3)
    """
    n, c, k = int(n), int(c), int(k)
    if n < 1 or not 0 <= c <= n:
        raise ValueError(f"pass_at_k needs n >= 1 samples and 0 <= c <= n passes; got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 1 <= k <= n; got k={k} with n={n} samples: draw more samples or lower k")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def estimate_pass_at_k(num_samples: int | Sequence[int], num_correct: Sequence[int], k: int) -> list[float]:
    """pass@k of each problem; ``num_samples`` is one count for all problems or one per problem.
    The benchmark number is the mean over problems."""
    counts = list(num_correct)
    ns = [int(num_samples)] * len(counts) if isinstance(num_samples, int) else list(num_samples)
    if len(ns) != len(counts):
        raise ValueError(f"{len(ns)} sample counts for {len(counts)} problems")
    return [pass_at_k(n, c, k) for n, c in zip(ns, counts, strict=True)]


def humaneval_program(problem: Mapping[str, Any], completion: str) -> str:
    """The program that checks one completion of a HumanEval-format problem: prompt + completion,
    the problem's ``test`` code, then ``check(entry_point)`` (as in openai/human-eval)."""
    for key in ("prompt", "test", "entry_point"):
        if key not in problem:
            raise ValueError(f"problem {problem.get('task_id', '?')!r} has no {key!r} field (HumanEval format needs "
                             "task_id, prompt, canonical_solution, test, entry_point)")
    return f"{problem['prompt']}{completion}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"

