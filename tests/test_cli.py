"""The transfer-probe command on small histories and tables, as a user runs it (real subprocesses)."""

import json
import subprocess
import sys

import pytest

from tests._synthetic import history_records, log_law, power_law
from transfer_probe.history import HistoryWriter


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "transfer_probe.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "history.jsonl"
    HistoryWriter(path).extend(history_records(seed=1))
    return path


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    import numpy as np

    path = tmp_path_factory.mktemp("cli") / "curve.csv"
    d = np.geomspace(1e6, 1e9, 9)
    rng = np.random.default_rng(3)
    lines = ["tokens,score,loss"] + [f"{t:.6g},{log_law(t) + rng.normal(0, .3):.4f},{power_law(t):.5f}" for t in d]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_help_on_every_command_has_examples():
    for cmd in ["fit", "diagnose", "report", "probe", "demo"]:
        out = run(cmd, "--help")
        assert out.returncode == 0, out.stderr
        assert "examples:" in out.stdout and f"transfer-probe {cmd}" in out.stdout


def test_fit_history_json(history):
    out = run("fit", str(history), "--json", "--budget", "1e10", "--target", "15")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert len(res) == 1 and res[0]["task"] == "en-fr" and res[0]["law"] == "log"
    fit = res[0]["fit"]
    assert fit["ok"] is True
    pred = res[0]["prediction"]
    assert pred["low"] <= pred["mean"] <= pred["high"]
    assert abs(pred["mean"] - float(log_law(1e10))) < 4.0


def test_fit_table_power_law_text(table):
    out = run("fit", str(table), "--x", "tokens", "--y", "loss", "--law", "power")
    assert out.returncode == 0, out.stderr
    assert "loss vs tokens, law power" in out.stdout and "E" in out.stdout


def test_diagnose_table_and_history(table, history):
    out = run("diagnose", str(table), "--y", "score", "--ce", "loss", "--json")
    assert out.returncode == 0, out.stderr
    verdicts = json.loads(out.stdout)
    assert len(verdicts) == 1 and verdicts[0]["status"] in {"aligned", "insufficient_data"}
    out = run("diagnose", str(history), "--budget", "1e10")
    assert out.returncode == 0, out.stderr
    assert "en-fr" in out.stdout


@pytest.mark.parametrize("args, needle", [
    (["fit", "/nonexistent/history.jsonl"], "no such file"),
    (["diagnose", "{table}", "--y", "nope"], "nope"),
    (["fit", "{table}", "--law", "cubic"], "cubic"),
    (["report", "/nonexistent.jsonl", "-o", "x.html"], "no such file"),
])
def test_errors_are_one_line_without_traceback(args, needle, table, tmp_path):
    args = [a.replace("{table}", str(table)) for a in args]
    out = run(*args, cwd=tmp_path)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], out.stderr


def test_unreadable_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\nnot json\n{"b": 2}\n')
    out = run("fit", str(bad))
    assert out.returncode == 2 and "Traceback" not in out.stderr and "bad.jsonl:2" in out.stderr


def test_report_command_writes_html(history, tmp_path):
    out = run("report", str(history), "-o", str(tmp_path / "r.html"), "--budget", "1e10", "--target", "15")
    assert out.returncode == 0, out.stderr
    page = (tmp_path / "r.html").read_text()
    assert page.count("data:image/png;base64,") >= 2 and "en-fr" in page
