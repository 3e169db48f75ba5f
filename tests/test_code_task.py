"""CodeTask: extraction from Python sources, HumanEval files, and real probes with pass@k."""

from __future__ import annotations

import dataclasses
import gzip
import json
import pickle
import sysconfig
from pathlib import Path

import pytest

from transfer_probe import sandbox
from transfer_probe.sandbox import ALLOW_ENV, CodeExecutionNotAllowed, Sandbox
from transfer_probe.tasks.code import CodeTask, extract_functions, truncate_completion

# ---------------------------------------------------------------------------------------------
# Extraction


SOURCE_A = '''\
# -*- coding: utf-8 -*-
import functools


def add(a, b):
    """Return a + b."""
    return a + b


@functools.lru_cache
def square(x):
    """Return x squared.

    Multi-line docstring.
    """
    # a comment
    y = x * x
    return y


def no_doc(x):
    return x


def only_doc():
    """Nothing else."""


class Box:
    def get(self):
        """The value."""
        return self.value

    def outer(self):
        """With a nested function."""
        def inner():
            """Not extracted on its own."""
            return 1
        return inner()
'''

SOURCE_B = '''\
def add(a, b):
    """Return a + b."""
    return a + b


def sub(a, b):
    """Return a - b."""
    return a - b
'''


def test_extract_functions_pairs_are_prompt_and_body():
    pairs = extract_functions(SOURCE_A)
    prompts = [p for p, _ in pairs]
    assert [p.splitlines()[0] for p in prompts] == ["def add(a, b):", "def square(x):", "def get(self):",
                                                     "def outer(self):"]
    assert pairs[0] == ('def add(a, b):\n    """Return a + b."""\n', "    return a + b\n")
    assert pairs[1][0].endswith('    Multi-line docstring.\n    """\n')
    assert pairs[1][1] == "    # a comment\n    y = x * x\n    return y\n"
    assert pairs[2] == ('def get(self):\n    """The value."""\n', "    return self.value\n")  # dedented
    assert "def inner" in pairs[3][1]
    assert extract_functions(SOURCE_A, methods=False)[-1][0].startswith("def square")
    # Every pair is valid Python when put back together.
    for prompt, body in pairs:
        compile(prompt + body, "<pair>", "exec")


def test_from_python_sources_dedup_split_by_file_and_determinism(tmp_path):
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "a.py").write_text(SOURCE_A)
    (src / "pkg" / "b.py").write_text(SOURCE_B)  # `add` duplicates a.py's: kept once
    (src / "broken.py").write_text("def f(:\n")  # skipped, not fatal
    for i in range(30):
        (src / "pkg" / f"m{i:02d}.py").write_text(
            f'def f{i}(x):\n    """Return x plus {i}."""\n    return x + {i}\n')
    task = CodeTask.from_python_sources(src, test_fraction=0.3, finetune_sizes=[5])
    again = CodeTask.from_python_sources(src, test_fraction=0.3, finetune_sizes=[5])
    assert task.train_pairs == again.train_pairs and task.test_pairs == again.test_pairs
    assert task.name == "python-src" and not task.has_tests and task.n_samples == 0
    bodies = [b for _, b in task.train_pairs + task.test_pairs]
    assert bodies.count("    return a + b\n") == 1
    assert len(bodies) == 4 + 1 + 30  # a.py: 4, b.py: sub only, 30 one-liners
    # Split by file: all functions of a file are on one side, and the side depends on the file alone.
    test_bodies = {b for _, b in task.test_pairs}
    assert ("    return self.value\n" in test_bodies) == ("    return a + b\n" in test_bodies)
    (src / "pkg" / "zz_new.py").write_text('def g(x):\n    """New."""\n    return -x\n')
    grown = CodeTask.from_python_sources(src, test_fraction=0.3, finetune_sizes=[5])
    assert set(task.test_pairs) <= set(grown.test_pairs) and set(task.train_pairs) <= set(grown.train_pairs)
    assert 0.1 < len(task.test_pairs) / len(bodies) < 0.55
    with pytest.raises(ValueError, match="does not exist"):
        CodeTask.from_python_sources(tmp_path / "nope")
    with pytest.raises(ValueError, match="test_fraction"):
        CodeTask.from_python_sources(src, test_fraction=1.5)


def test_from_python_sources_on_the_standard_library():
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    task = CodeTask.from_python_sources([stdlib / "json", stdlib / "email", stdlib / "textwrap.py"],
                                        test_fraction=0.2, finetune_sizes=[50], max_test_examples=40)
    assert len(task.train_pairs) > 100 and 0 < len(task.test_pairs) <= 40
    for prompt, body in task.train_pairs[:50]:
        assert prompt.lstrip().startswith(("def ", "async def ")) and body.strip()
        compile(prompt + body, "<pair>", "exec")


def test_truncate_completion_stops_at_the_end_of_the_body():
    assert truncate_completion("    return 1\n\ndef other():\n    pass") == "    return 1\n\n"
    assert truncate_completion("    x = 1\n    return x") == "    x = 1\n    return x"


# ---------------------------------------------------------------------------------------------
# HumanEval format and the opt-in

def _problem(i: int, value: int = 1) -> dict:
    names = {0: "zero", 1: "one", 2: "two"}
    return {
        "task_id": f"Toy/{i}",
        # One-space indentation: a from-scratch 2-layer model learns it in a few dozen steps (counting
        # four spaces takes it much longer).
        "prompt": f'def f{i}(x):\n """Return {names[value]}."""\n',
        "canonical_solution": f" return {value}\n",
        "test": f"def check(candidate):\n    assert candidate(0) == {value}\n    assert candidate(5) == {value}\n",
        "entry_point": f"f{i}",
    }


@pytest.fixture(scope="module")
def humaneval_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("humaneval") / "Toy.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for i in range(60):
            fh.write(json.dumps(_problem(i)) + "\n")
    return path


def test_from_humaneval_jsonl_and_opt_in(humaneval_file, monkeypatch):
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    with pytest.raises(CodeExecutionNotAllowed, match="allow_code_execution=True") as e:
        CodeTask.from_humaneval_jsonl(humaneval_file, finetune_sizes=[10])
    assert "n_samples=0" in str(e.value)
    task = CodeTask.from_humaneval_jsonl(humaneval_file, finetune_sizes=[10], n_samples=0)
    assert task.name == "Toy" and task.has_tests and not task.wants_pass_at_k
    ids = {p["task_id"] for p in task.problems}
    assert len(task.test_pairs) == len(ids) and 15 < len(ids) < 45  # split by task_id hash
    assert not {s for s, _ in task.train_pairs} & {p["prompt"] for p in task.problems}
    monkeypatch.setenv(ALLOW_ENV, "1")
    allowed = CodeTask.from_humaneval_jsonl(humaneval_file, finetune_sizes=[10], n_samples=4, pass_k=[1, 4])
    assert allowed.wants_pass_at_k and allowed.allow_code_execution
    # The decision travels with the task to a worker without the variable.
    monkeypatch.delenv(ALLOW_ENV)
    assert pickle.loads(pickle.dumps(allowed)).allow_code_execution
    # Every canonical solution passes its tests in the sandbox: the problems are sound.
    box = Sandbox(allow_code_execution=True, timeout=5)
    assert all(box.check(p, p["canonical_solution"]).passed for p in allowed.problems[:3])
    with pytest.raises(ValueError, match="lacks"):
        bad = humaneval_file.parent / "bad.jsonl"
        bad.write_text(json.dumps({"task_id": "x", "prompt": "def f():\n"}) + "\n")
        CodeTask.from_humaneval_jsonl(bad, n_samples=0, finetune_sizes=[1])
    with pytest.raises(ValueError, match="n_samples >= 10"):
        CodeTask.from_humaneval_jsonl(humaneval_file, n_samples=4, pass_k=[1, 10], allow_code_execution=True,
                                      finetune_sizes=[10])


def test_sandbox_options_are_checked_when_the_task_is_built():
    pairs = [(_problem(i)["prompt"], _problem(i)["canonical_solution"]) for i in range(2)]
    problems = [_problem(i) for i in range(2)]

    def build(options):
        return CodeTask(pairs, pairs, problems=problems, n_samples=2, pass_k=[1], allow_code_execution=True,
                        finetune_sizes=[2],
                        sandbox_options=options)

    with pytest.raises(ValueError, match=r"unknown sandbox_options \['isolaton'\]; valid keys: .*isolation"):
        build({"isolaton": "userns"})
    with pytest.raises(ValueError, match="isolation must be one of"):
        build({"isolation": "docker"})
    # An isolation this machine lacks is said now, not as failed probes later.
    missing = next((m for m in ("namespace", "userns") if sandbox.isolation_unavailable_reason(m)), None)
    if missing:
        with pytest.raises(sandbox.IsolationUnavailable, match=f"isolation='{missing}' is not available here"):
            build({"isolation": missing})
    assert build({"isolation": "unsafe-none", "timeout": 3}).sandbox_options["isolation"] == "unsafe-none"


# ---------------------------------------------------------------------------------------------
# Real probes

@pytest.fixture(scope="module")
def toy_code_task():
    """Train: 48 functions whose body is `return 1`; test: 4 problems with tests, same pattern.
    Learnable in a few dozen steps, so pass@k is measurably above zero. Needs real isolation (the
    default): skipped, with the reason, on a machine that has none."""
    why = sandbox.isolation_unavailable_reason("namespace") and sandbox.isolation_unavailable_reason("userns")
    if why:
        pytest.skip(f"no sandbox isolation on this machine: {why}")
    train = [(_problem(i)["prompt"], _problem(i)["canonical_solution"]) for i in range(100, 148)]
    problems = [_problem(i) for i in range(4)]
    test = [(p["prompt"], p["canonical_solution"]) for p in problems]
    return CodeTask(train, test, problems=problems, finetune_sizes=[8, 48], n_samples=4, pass_k=[1, 2, 4],
                    temperature=0.5, allow_code_execution=True, name="toy-code",
                    sandbox_options={"timeout": 5, "memory_mb": 512}, sandbox_workers=2)


@pytest.mark.parametrize("arch", ["gpt2", "t5"])
def test_real_probe_with_pass_at_k(arch, toy_code_task, request, make_snapshot, fast_finetune):
    from transfer_probe.run.probe import ProbeJob, run_probe

    model = request.getfixturevalue(f"tiny_{arch}")
    config = dataclasses.replace(fast_finetune, max_steps=60, learning_rate=3e-3, bootstrap=50, num_threads=1)
    record = run_probe(ProbeJob(snapshot=make_snapshot(model, tokens=5000), task=toy_code_task, finetune_size=48,
                                config=config, run_id="code-test"))
    assert record["status"] == "ok" and record["task"] == "toy-code"
    m = record["metrics"]
    assert {"cross_entropy", "exact_match", "bleu", "chrf", "pass@1", "pass@2", "pass@4"} <= set(m)
    assert m["cross_entropy"] < 0.5 and m["chrf"] > 50  # the body is learned...
    assert m["pass@1"] >= 0.5  # ...and sampled completions pass the tests
    assert m["pass@1"] <= m["pass@2"] <= m["pass@4"] <= 1.0
    assert record["metrics_ci"]["pass@1"][0] <= m["pass@1"] <= record["metrics_ci"]["pass@1"][1]
    sig = record["metric_signatures"]["pass@1"]
    assert "n:4" in sig and "temperature:0.5" in sig and "problems:4" in sig
    # The isolation the samples ran under (issue 12, item 11) travels with the number.
    box = Sandbox(allow_code_execution=True, **toy_code_task.sandbox_options)
    assert sig.endswith(box.signature) and f"sandbox:{box.mode}|user:{box.user}|" in sig
    counts = dict(kv.split("=") for kv in record["metric_signatures"]["pass@k_samples"].split(","))
    assert sum(int(v) for v in counts.values()) == 16


def test_several_finetune_sizes_without_tests(make_snapshot, tiny_gpt2, fast_finetune):
    """Two D_f on an extracted-source task (no tests: no pass@k, no code runs)."""
    from transfer_probe.run.probe import ProbeJob, run_probe

    train = [(f'def f{i}(x):\n    """Return x times {i % 7}."""\n', f"    return x * {i % 7}\n") for i in range(40)]
    test = [(f'def g{i}(x):\n    """Return x times {i}."""\n', f"    return x * {i}\n") for i in range(5)]
    task = CodeTask(train, test, finetune_sizes=[10, 40], name="mul")
    config = dataclasses.replace(fast_finetune, max_steps=15, bootstrap=0)
    snap = make_snapshot(tiny_gpt2, tokens=100)
    records = [run_probe(ProbeJob(snapshot=snap, task=task, finetune_size=d, config=config)) for d in (10, 40)]
    assert [r["finetune_size"]["examples"] for r in records] == [10, 40]
    for r in records:
        assert r["status"] == "ok" and not any(k.startswith("pass@") for k in r["metrics"])
        # 15 steps learn the start of a body ("    return ..."), not yet its number: chrF is high,
        # CE far below a random init's (about ln 600 = 6.4), every shown hypothesis starts right
        assert r["metrics"]["chrf"] > 40 and r["metrics"]["cross_entropy"] < 5.0, r["metrics"]
        assert r["metrics"]["bleu"] < r["metrics"]["chrf"] and r["test_examples"] == 5
        assert r["samples"] and all(s["hypothesis"].strip().startswith("return") for s in r["samples"])
