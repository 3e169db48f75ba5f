"""The transfer-probe command on small histories and tables, as a user runs it (real subprocesses)."""

import csv
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests._synthetic import history_records, log_law, power_law
from transfer_probe.store.history import HistoryWriter


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
    for cmd in ["fit", "diagnose", "report", "probe", "demo", "plugins", "compare"]:
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


def test_plugins_command_prints_a_table_and_has_help():
    out = run("plugins")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["name", "kind", "source"]
    rows = {tuple(line.split()) for line in lines[1:]}
    for row in [("translation", "task", "built-in"), ("bleu", "metric", "built-in"), ("log", "law", "built-in"),
                ("process", "executor", "built-in"), ("jsonl", "sink", "built-in")]:
        assert row in rows, out.stdout
    helped = run("plugins", "--help")
    assert helped.returncode == 0 and "one per line with the plugin it comes from" in helped.stdout
    assert "transfer-probe plugins --json" in helped.stdout


def test_plugins_command_lists_the_builtins_as_json():
    from transfer_probe import plugins

    out = run("plugins", "--json")
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


def _chinchilla_table(path, seed=0):
    """A 6 x 6 grid of runs (N over 3 decades, D over 3 decades) on L = E + A/N^alpha + B/D^beta with
    0.2% multiplicative noise; alpha != beta so that swapping N and D shows."""
    import numpy as np

    truth = {"E": 1.7, "A": 400.0, "B": 1500.0, "alpha": 0.34, "beta": 0.28}
    rng = np.random.default_rng(seed)
    n, d = (g.ravel() for g in np.meshgrid(np.geomspace(1e7, 1e10, 6), np.geomspace(1e9, 1e12, 6)))
    loss = (truth["E"] + truth["A"] / n ** truth["alpha"] + truth["B"] / d ** truth["beta"]) * np.exp(
        rng.normal(0, 0.002, n.size))
    path.write_text("params,tokens,loss\n" + "".join(f"{a:.6g},{b:.6g},{c:.6f}\n" for a, b, c in zip(n, d, loss, strict=True)))
    return truth


def test_fit_law_chinchilla_on_a_table_recovers_the_parameters(tmp_path):
    """``fit --law chinchilla`` on a CSV of runs (column ``params`` beside the ``--x`` token column).

    Checked to fail when fit_rows pairs the columns the wrong way round (``x = (x, "params")``: N and
    D swapped, alpha/beta and A/B come back exchanged), and when ChinchillaLaw._public reports A x 1.3."""
    truth = _chinchilla_table(tmp_path / "runs.csv")
    out = run("fit", str(tmp_path / "runs.csv"), "--law", "chinchilla", "--x", "tokens", "--y", "loss", "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert len(res) == 1 and res[0]["law"] == "chinchilla" and res[0]["task"] is None
    fit = res[0]["fit"]
    assert fit["ok"] is True, fit["why"]
    assert fit["n_points"] == 36 and fit["uncertainty"] == "bootstrap"
    assert fit["x_range"] == [[pytest.approx(1e7), pytest.approx(1e10)], [pytest.approx(1e9), pytest.approx(1e12)]]
    p = fit["params"]
    assert p["alpha"] == pytest.approx(truth["alpha"], abs=0.015), p
    assert p["beta"] == pytest.approx(truth["beta"], abs=0.01), p
    assert p["E"] == pytest.approx(truth["E"], rel=0.02), p
    assert p["A"] == pytest.approx(truth["A"], rel=0.15), p
    assert p["B"] == pytest.approx(truth["B"], rel=0.1), p
    for name, se in fit["stderr"].items():  # real, small bootstrap errors
        assert 0 < se < 0.1 * p[name], (name, se)


def test_fit_law_chinchilla_with_both_columns_named_as_the_help_shows(tmp_path):
    """``fit --help`` shows ``--law chinchilla --x N,D``: both columns named, in the order (N, D).
    Failed before: "the chinchilla law takes two x columns" (only a column called params was found)."""
    truth = _chinchilla_table(tmp_path / "runs.csv")
    rows = list(csv.DictReader(open(tmp_path / "runs.csv", newline="")))
    with open(tmp_path / "nd.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["N", "D", "loss"])
        w.writerows([[r["params"], r["tokens"], r["loss"]] for r in rows])
    out = run("fit", str(tmp_path / "nd.csv"), "--law", "chinchilla", "--x", "N,D", "--y", "loss", "--json")
    assert out.returncode == 0, out.stderr
    p = json.loads(out.stdout)[0]["fit"]["params"]
    assert p["alpha"] == pytest.approx(truth["alpha"], abs=0.015) and p["beta"] == pytest.approx(truth["beta"], abs=0.01)


TRANSFER_K, TRANSFER_ALPHA = 0.375, 0.3


def _baseline_loss(d):
    """A from-scratch curve linear in log D_F: the CLI reads D_E off it by linear interpolation in log D,
    so the transferred data comes back exactly."""
    import math

    return 5.0 - 0.35 * math.log(d)


def _transfer_records(run_id, n_params, sizes, beta, rng):
    """One run's history: per D_F the baseline (pretrained: false), an early probe (1e7 tokens, barely
    better than the baseline) and the last probe (1e8 tokens) whose loss is the baseline's at
    D_E = D_F + k D_F^alpha N^beta. At the largest D_F pre-training hurt (ossified: left out of the fit)."""
    recs = []

    def rec(df, tokens, pretrained, loss, r):
        return {"schema": 1, "kind": "probe", "run_id": run_id, "time": 0.0, "step": int(tokens // 10_000),
                "tokens": float(tokens), "params": {"non_embedding": n_params, "total": 2 * n_params},
                "task": "en-fr", "finetune_size": {"examples": df, "tokens": df * 12}, "pretrained": pretrained,
                "status": "ok", "repeat": r,
                "metrics": {"bleu": 10.0, "cross_entropy": loss + float(rng.normal(0, 2e-4))}}

    for df in sizes:
        transferred = TRANSFER_K * df ** TRANSFER_ALPHA * n_params ** beta
        last = _baseline_loss(df) + 0.05 if df == sizes[-1] else _baseline_loss(df + transferred)
        for r in range(2):
            recs += [rec(df, 0, False, _baseline_loss(df), r), rec(df, 1e7, True, _baseline_loss(df) - 0.01, r),
                     rec(df, 1e8, True, last, r)]
    return recs


def test_fit_law_transfer_on_a_history_with_one_model_size(tmp_path):
    """``fit --law transfer`` on the history one run writes: baseline and pre-trained records at 7
    fine-tuning sizes, one fit for the task over all of them; one model size, so beta is held at
    0.38 (the data follow beta = 0.38) and k, alpha are fitted.

    Checked to fail when _fit_history_transfer keeps the first probe of each D_F instead of the last
    (``>`` -> ``<`` on the tokens), and when cmd_fit no longer pools the D_f groups for --law transfer."""
    import numpy as np

    hist = tmp_path / "history.jsonl"
    sizes = [100, 200, 400, 800, 1600, 3200, 6400]
    HistoryWriter(hist).extend(_transfer_records("run-a", 400_000, sizes, 0.38, np.random.default_rng(7)))
    out = run("fit", str(hist), "--law", "transfer", "--y", "cross_entropy", "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert [(e["task"], e["finetune_size"], e["law"]) for e in res] == [("en-fr", "all", "transfer")]
    fit = res[0]["fit"]
    assert fit["ok"] is True, fit["why"]
    assert fit["n_points"] == 6  # 7 sizes, the ossified one left out
    assert fit["params"]["k"] == pytest.approx(TRANSFER_K, rel=0.02), fit["params"]
    assert fit["params"]["alpha"] == pytest.approx(TRANSFER_ALPHA, abs=0.005), fit["params"]
    assert fit["params"]["beta"] == 0.38 and fit["stderr"]["beta"] == 0.0
    assert any("beta is held at 0.38" in n for n in fit["notes"]), fit["notes"]
    assert any("ossification: at D_F = 6400 " in n for n in fit["notes"]), fit["notes"]
    extra = fit["extra"]
    assert extra["finetune_size"] == sizes and extra["ossified"] == [False] * 6 + [True]
    want = [TRANSFER_K * df ** TRANSFER_ALPHA * 400_000 ** 0.38 for df in sizes[:-1]]
    assert extra["transferred"][:-1] == pytest.approx(want, rel=0.01)


def test_fit_law_transfer_on_two_model_sizes_fits_beta(tmp_path):
    """Two runs (N = 4e5 and 4e6) with their own baselines in one history: k, alpha and beta all fitted.
    The runs use different D_F: _fit_history_transfer keeps one point per D_F across runs, so two
    runs sharing a D_F lose one of them (the fit then says "a single model size").

    Checked to fail when TransferLaw._public reports beta with the wrong sign, and when the baseline
    curves are not matched to their model size (fit_curves with baseline_params ignored)."""
    import numpy as np

    hist = tmp_path / "history.jsonl"
    rng = np.random.default_rng(11)
    HistoryWriter(hist).extend(_transfer_records("run-a", 400_000, [100, 400, 1600, 6400], 0.5, rng)
                               + _transfer_records("run-b", 4_000_000, [200, 800, 3200, 12800], 0.5, rng))
    out = run("fit", str(hist), "--law", "transfer", "--y", "cross_entropy", "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert [(e["task"], e["finetune_size"]) for e in res] == [("en-fr", "all")]
    fit = res[0]["fit"]
    assert fit["ok"] is True, fit["why"]
    assert fit["n_points"] == 6 and not any("single model size" in n for n in fit["notes"]), fit["notes"]
    assert fit["params"]["beta"] == pytest.approx(0.5, abs=0.01), fit["params"]
    assert fit["params"]["alpha"] == pytest.approx(TRANSFER_ALPHA, abs=0.01), fit["params"]
    assert fit["params"]["k"] == pytest.approx(TRANSFER_K, rel=0.1), fit["params"]
    assert fit["extra"]["params"] == [4e5, 4e6, 4e5, 4e6, 4e5, 4e6, 4e5, 4e6]


def test_a_command_given_too_many_files_says_so_in_its_own_words():
    """``diagnose a b`` failed with the top-level usage ("transfer-probe: error: unrecognized arguments")."""
    out = run("diagnose", "a.jsonl", "b.jsonl")
    assert out.returncode == 2
    assert out.stderr == ("transfer-probe diagnose: error: unrecognized arguments: b.jsonl (diagnose reads one "
                          "file; see transfer-probe diagnose --help)\n")
    out = run("fit", "a.jsonl", "--bogus")
    assert out.stderr == "transfer-probe fit: error: unrecognized arguments: --bogus (see transfer-probe fit --help)\n"
    out = run("--bogus")
    assert out.returncode == 2 and out.stderr.startswith("transfer-probe: error: unrecognized arguments: --bogus")


def test_report_without_output_says_where_it_wrote(history, tmp_path):
    out = run("report", str(history), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "transfer_probe_report.html").is_file()
    assert out.stdout.strip() == (f"report written to {(tmp_path / 'transfer_probe_report.html').resolve()} (no -o "
                                  "given: the default name in the current directory; choose with -o FILE)")


def test_demo_help_states_the_demos_own_measured_time():
    from transfer_probe.demo import DEMO_TIME

    out = run("demo", "--help")
    assert out.returncode == 0
    assert " ".join(DEMO_TIME.split()) in " ".join(out.stdout.split())
    assert "about 10 minutes" not in out.stdout


def test_fit_says_at_its_bound_instead_of_a_meaningless_error(tmp_path):
    """A parameter pinned at a bound printed as ``E: 2.816e-16 +/- 0`` or ``alpha: 4.69e-15 +/- 2.17
    (46193108780773728.0%)``: its value there and "at its bound" instead."""
    import numpy as np

    t = np.geomspace(1e5, 1e8, 7)
    (tmp_path / "pure.csv").write_text("tokens,loss\n" + "".join(f"{x:.6g},{40 * x ** -0.25:.8g}\n" for x in t))
    out = run("fit", str(tmp_path / "pure.csv"), "--y", "loss", "--law", "power")
    assert out.returncode == 0, out.stderr
    assert "\n      E:      0 (at its bound)\n" in out.stdout, out.stdout
    assert re.search(r"\n      alpha:  0\.25 \+/- ", out.stdout), out.stdout  # a free parameter keeps its error
    res = json.loads(run("fit", str(tmp_path / "pure.csv"), "--y", "loss", "--law", "power", "--json").stdout)
    assert res[0]["fit"]["at_bound"] == {"E": 0.0}
    # falling scores: the log-law's alpha runs to 0 (the fit is not ok, and says why)
    (tmp_path / "falling.csv").write_text("tokens,bleu\n" + "".join(
        f"{x:.6g},{b}\n" for x, b in zip(t, [5, 4.8, 4.5, 4.7, 4.2, 4.0, 3.9], strict=True)))
    out = run("fit", str(tmp_path / "falling.csv"))
    assert out.returncode == 0, out.stderr
    assert "\n      alpha:  0 (at its bound)\n" in out.stdout and "alpha went to 0" in out.stdout, out.stdout


def test_fit_says_why_points_have_no_standard_error(tmp_path):
    """BLEU 0 with bootstrap on gives intervals [0, 0]: the note said "single repeat and no bootstrap
    interval" although every point had one."""
    recs = history_records(repeats=1, baseline=False)
    for r in recs[:3]:
        r["metrics"]["bleu"], r["metrics_ci"]["bleu"] = 0.0, [0.0, 0.0]
    del recs[3]["metrics_ci"]["bleu"]
    HistoryWriter(tmp_path / "h.jsonl").extend(recs)
    res = json.loads(run("fit", str(tmp_path / "h.jsonl"), "--json").stdout)
    assert ("unweighted: 4 point(s) have no standard error (1 with a single repeat and no bootstrap interval; "
            "3 with zero-width intervals: bleu was 0 in every repeat and bootstrap resample)") in res[0]["fit"]["notes"]
