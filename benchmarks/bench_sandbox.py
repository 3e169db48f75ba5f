"""Per-sample overhead of the code sandbox (pass@k).

    python benchmarks/bench_sandbox.py [--runs 40]

For a trivial program (``pass``) and a HumanEval-style check (prompt + completion + tests), the
wall time of one sandboxed run under each isolation, against a bare ``python -I -S -c`` subprocess
(the floor: starting an interpreter). Prints a Markdown table (median and 90th percentile, ms).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from transfer_probe.sandbox import (
    Sandbox,
    humaneval_program,
    isolation_unavailable_reason,
    namespace_isolation_available,
)

PROBLEM = {
    "task_id": "bench/0",
    "prompt": 'def add(a, b):\n    """Return a + b."""\n',
    "canonical_solution": "    return a + b\n",
    "test": "def check(candidate):\n    for i in range(100):\n        assert candidate(i, 1) == i + 1\n",
    "entry_point": "add",
}


def _time(fn, runs: int) -> list[float]:
    fn()  # warm-up (first namespace probe, page cache)
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=40)
    args = ap.parse_args()
    check = humaneval_program(PROBLEM, PROBLEM["canonical_solution"])
    rows = []

    def bare(src):
        return lambda: subprocess.run([sys.executable, "-I", "-S", "-c", src], check=True, capture_output=True)

    rows.append(("bare `python -I -S -c` (floor)", _time(bare("pass"), args.runs), _time(bare(check), args.runs)))
    setups = []
    if isolation_unavailable_reason("process") is None:  # root, and others can read this interpreter
        setups.append(("process isolation + guard", dict(isolation="process")))
    if namespace_isolation_available():
        setups += [("namespace isolation + guard (default here)", dict(isolation="namespace")),
                   ("namespace isolation, no guard", dict(isolation="namespace", python_guard=False))]
    for label, opts in setups:
        box = Sandbox(allow_code_execution=True, timeout=10, **opts)

        def run(src, box=box):
            r = box.run(src)
            assert r.passed, r

        rows.append((label, _time(lambda: run("pass"), args.runs), _time(lambda: run(check), args.runs)))

    def q90(xs):
        return statistics.quantiles(xs, n=10)[-1]

    print(f"{args.runs} runs each, Python {sys.version.split()[0]}\n")
    print("| setup | `pass`: median ms | p90 ms | HumanEval-style check: median ms | p90 ms |")
    print("|---|---|---|---|---|")
    for label, a, b in rows:
        print(f"| {label} | {statistics.median(a):.0f} | {q90(a):.0f} | {statistics.median(b):.0f} | {q90(b):.0f} |")


if __name__ == "__main__":
    main()
