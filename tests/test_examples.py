"""Every example script runs end to end with ``--offline --smoke``, as a user would run it.

Each script is a real subprocess (its own interpreter, ``HF_HUB_OFFLINE`` set by the script itself,
a real ``Trainer``, real probes in the process executor or after the fact). The four start together
and run side by side, so the module costs about as long as the slowest one (well under a minute
on an idle 2-core machine); the tests then read the history files they wrote.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from transfer_probe.store.history import probe_records, read_history

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = ["translation_decoder", "translation_encoder_decoder", "code_decoder", "probe_checkpoints"]
# Smoke runs: 12 pre-training steps of 8 x 64 tokens; probes at steps 4 and 12.
SMOKE_TOKENS = [2048.0, 6144.0]
TIMEOUT = 300


class Run:
    def __init__(self, name: str, out: Path, proc: subprocess.Popen, log: Path):
        self.name, self.out, self.proc, self.log = name, out, proc, log
        self.returncode: int | None = None
        self.seconds = 0.0

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Run]:
    base = tmp_path_factory.mktemp("examples")
    # The scripts must go offline by themselves: clear what the test session sets.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_OFFLINE"))}
    env["HF_HOME"] = str(base / "hf_home")  # an empty cache: a hub access could not be served from it
    started: dict[str, Run] = {}
    t0 = time.perf_counter()
    for name in SCRIPTS:
        out = base / name
        log = base / f"{name}.log"
        with log.open("w") as f:
            proc = subprocess.Popen([sys.executable, str(EXAMPLES / f"{name}.py"), "--offline", "--smoke",
                                     "--out", str(out)], stdout=f, stderr=subprocess.STDOUT, env=env,
                                    cwd=str(base))
        started[name] = Run(name, out, proc, log)
    try:
        for run in started.values():
            left = max(1.0, TIMEOUT - (time.perf_counter() - t0))
            run.returncode = run.proc.wait(timeout=left)
            run.seconds = time.perf_counter() - t0
    finally:
        for run in started.values():
            if run.proc.poll() is None:
                run.proc.kill()
                run.proc.wait()
    return started


def _history(run: Run) -> Path:
    candidates = [run.out / "transfer_probe" / "history.jsonl", run.out / "history.jsonl"]
    found = [p for p in candidates if p.exists()]
    assert found, f"{run.name}: no history file under {run.out}\n{run.output[-3000:]}"
    return found[0]


def _check_history(run: Run, tasks: set[str]) -> list[dict]:
    assert run.returncode == 0, f"{run.name} exited {run.returncode}\n{run.output[-4000:]}"
    path = _history(run)
    probes = probe_records(read_history(path), ok_only=False)
    assert probes, f"{run.name}: no probe records in {path}"
    assert all(r["status"] == "ok" for r in probes), [r.get("error") for r in probes]
    assert {r["task"] for r in probes} == tasks
    for task in tasks:
        mine = [r for r in probes if r["task"] == task]
        pre = sorted(float(r["tokens"]) for r in mine if r.get("pretrained", True))
        base = [r for r in mine if not r.get("pretrained", True)]
        assert pre == SMOKE_TOKENS, f"{run.name} {task}: probed at {pre}"
        assert len(base) == 1 and base[0]["tokens"] == 0, f"{run.name} {task}: baseline records {base}"
    for r in probes:
        for metric in ("bleu", "chrf", "exact_match", "cross_entropy"):
            value = r["metrics"][metric]
            assert math.isfinite(value), (run.name, metric, value)
        assert r["metrics"]["cross_entropy"] > 0
        assert 0 <= r["metrics"]["bleu"] <= 100
        assert r["params"]["total"] > 0
    # The script says where its results went, and wrote the report it names.
    assert f"history: {path}" in run.output
    report = run.out / "report.html"
    assert report.exists() and report.stat().st_size > 1000
    assert f"report: {report}" in run.output
    return probes


def test_translation_decoder(runs):
    probes = _check_history(runs["translation_decoder"], {"en-fr"})
    # Pre-training lowers the downstream cross-entropy even in 12 steps (the baseline is random init).
    ce = {r["tokens"]: r["metrics"]["cross_entropy"] for r in probes}
    assert ce[6144] < ce[0]
    assert "process executor" in runs["translation_decoder"].output


def test_translation_encoder_decoder(runs):
    probes = _check_history(runs["translation_encoder_decoder"], {"en-fr"})
    # Tokens counted as steps x batch x (encoder + decoder) tokens, from seq_len.
    assert "seq_len 64 from the seq_len argument" in runs["translation_encoder_decoder"].output
    assert all(r["params"]["total"] > 0 for r in probes)


def test_code_decoder(runs):
    probes = _check_history(runs["code_decoder"], {"python-stdlib", "toy-problems"})
    # No pass@k without the explicit opt-in: nothing generated was executed.
    assert not any(k.startswith("pass@") for r in probes for k in r["metrics"])


def test_probe_checkpoints(runs):
    run = runs["probe_checkpoints"]
    probes = _check_history(run, {"en-fr"})
    # The checkpoints came from the local Trainer run and carry their step.
    assert sorted(r["step"] for r in probes if r.get("pretrained", True)) == [4, 12]
    assert len({r["run_id"] for r in probes}) == 1
    assert (run.out / "pretraining" / "checkpoint-12" / "trainer_state.json").exists()


def test_examples_never_touch_the_network(runs):
    # Offline mode is set by each script before transformers is imported; the empty HF_HOME cache
    # would have made any download attempt fail the run, and nothing may have been cached.
    for run in runs.values():
        assert run.returncode == 0, f"{run.name} exited {run.returncode}\n{run.output[-2000:]}"
        hub = run.out.parent / "hf_home" / "hub"
        assert not hub.exists() or not any(hub.iterdir()), f"{run.name} wrote to the hub cache"


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_shows_both_command_lines(name):
    result = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    for option in ("--offline", "--out", "--smoke"):
        assert option in result.stdout
    # --help is the script's docstring: the real and the offline command lines.
    assert f"python examples/{name}.py --offline" in result.stdout
    assert f"python examples/{name}.py --out" in result.stdout


def test_offline_problems_are_solved_by_their_canonical_solutions():
    # The problems the offline code example writes for pass@k: their own solutions must pass their
    # tests (trusted code, ours, so run in-process), else pass@k would measure a broken test.
    sys.path.insert(0, str(EXAMPLES))
    try:
        import code_decoder
    finally:
        sys.path.remove(str(EXAMPLES))
    for name, prompt, solution, test in code_decoder.OFFLINE_PROBLEMS:
        program = prompt + solution + f"\n\ndef check(candidate):\n    {test}\n\ncheck({name})\n"
        exec(compile(program, name, "exec"), {})
        wrong = prompt + "    return None\n" + f"\n\ndef check(candidate):\n    {test}\n\ncheck({name})\n"
        with pytest.raises(AssertionError):
            exec(compile(wrong, name, "exec"), {})
