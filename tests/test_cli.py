"""The transfer-probe command on small histories and tables, as a user runs it (real subprocesses)."""

import json
import os
import re
import shutil
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
    assert "loss vs tokens, law power" in out.stdout and "points:      9" in out.stdout
    # the noiseless curve E + A/x^alpha with E=1.2, A=40, alpha=0.3: its parameters come back
    params = dict(re.findall(r"^\s+(E|A|alpha):\s+([-+0-9.e]+) \+/-", out.stdout, flags=re.M))
    assert float(params["E"]) == pytest.approx(1.2, rel=1e-3), out.stdout
    assert float(params["A"]) == pytest.approx(40.0, rel=1e-3)
    assert float(params["alpha"]) == pytest.approx(0.3, rel=1e-3)


def test_diagnose_table_and_history(table, history):
    out = run("diagnose", str(table), "--y", "score", "--ce", "loss", "--json")
    assert out.returncode == 0, out.stderr
    verdicts = json.loads(out.stdout)
    # 9 probes over 3 decades of a log-law score with a power-law CE: nothing to warn about
    assert len(verdicts) == 1 and verdicts[0]["n_points"] == 9
    assert (verdicts[0]["status"], verdicts[0]["recommendation"]) == ("aligned", "continue"), verdicts[0]["reasons"]
    assert verdicts[0]["metric"] == "score" and verdicts[0]["ce_metric"] == "loss"
    out = run("diagnose", str(history), "--budget", "1e10", "--json")
    assert out.returncode == 0, out.stderr
    verdicts = json.loads(out.stdout)
    assert [(v["task"], v["finetune_size"]) for v in verdicts] == [("en-fr", 50)]
    text = run("diagnose", str(history), "--budget", "1e10")
    assert text.returncode == 0 and "en-fr" in text.stdout and verdicts[0]["status"] in text.stdout


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


def test_report_with_several_files_shows_every_run(history, tmp_path):
    other = tmp_path / "other.jsonl"
    HistoryWriter(other).extend(history_records(seed=5, task="en-de", run_id="run-b", baseline=False))
    out = run("report", str(history), str(other), "-o", str(tmp_path / "both.html"), "--budget", "1e10")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"report written to {tmp_path / 'both.html'}"
    page = (tmp_path / "both.html").read_text()
    assert "en-fr" in page and "en-de" in page and "run-b" in page
    one = run("report", str(history), "-o", str(tmp_path / "one.html"), "--budget", "1e10")
    assert one.returncode == 0, one.stderr
    # two plots (score, CE) per group: the second file adds its group's two
    assert page.count("data:image/png;base64,") == (tmp_path / "one.html").read_text().count(
        "data:image/png;base64,") + 2


def test_plugins_command_lists_the_builtins_as_json():
    from transfer_probe import plugins

    out = run("plugins")
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)
    builtin = next(p for p in listed if p["name"] == "transfer_probe.default_plugins")
    assert set(builtin["hooks"]) == set(plugins.KINDS.values())
    assert builtin["distribution"] is None


@pytest.mark.slow
def test_console_script_demo_quick_out(tmp_path):
    """The installed entry point (not python -m), as the README's demo command runs it."""
    exe = shutil.which("transfer-probe", path=os.path.dirname(sys.executable))
    assert exe is not None, "the transfer-probe console script is not installed next to this python"
    out = subprocess.run([exe, "demo", "--quick", "--out", str(tmp_path / "demo")], capture_output=True, text=True,
                         timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stderr[-3000:]
    from transfer_probe.demo import QUICK_SETTINGS

    for corpus in QUICK_SETTINGS.corpora:
        assert (tmp_path / "demo" / corpus / "transfer_probe" / "history.jsonl").is_file(), corpus
        assert corpus in out.stdout
