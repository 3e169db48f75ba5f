"""Compute-optimal frontier (approaches 1, 2, 3): synthetic grids with known exponents, refusals, and
the shared real data (Epoch's Chinchilla reconstruction, the OLMo ladder), skipped when absent."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from transfer_probe.laws import PowerLaw
from transfer_probe.laws.frontier import (
    FrontierResult,
    envelope_frontier,
    fit_frontier,
    isoflop_frontier,
    law_frontier,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# Hoffmann et al.'s fitted law: true a = beta / (alpha + beta) = 0.4516
E, A, B, ALPHA, BETA = 1.69, 406.4, 410.7, 0.34, 0.28
TRUE_A = BETA / (ALPHA + BETA)


def loss(n, d):
    return E + A / np.asarray(n, float) ** ALPHA + B / np.asarray(d, float) ** BETA


def true_n_opt(c):
    g = (ALPHA * A / (BETA * B)) ** (1 / (ALPHA + BETA))
    return g * (np.asarray(c, float) / 6) ** TRUE_A


def isoflop_grid(budgets=(1e18, 3e18, 1e19, 3e19, 1e20, 3e20, 1e21), sizes=9, noise=0.005, seed=0):
    """Runs of ``sizes`` model sizes per budget, spanning x8 either side of the true optimum."""
    rng = np.random.default_rng(seed)
    n, c, y = [], [], []
    for budget in budgets:
        ns = true_n_opt(budget) * np.geomspace(1 / 8, 8, sizes)
        n += list(ns)
        c += [budget] * sizes
        y += list(loss(ns, budget / (6 * ns)) * np.exp(noise * rng.standard_normal(sizes)))
    return np.array(n), np.array(c), np.array(y)


def training_curves(sizes, lengths=(1, 3, 10), noise=0.003, seed=0):
    """Checkpoint rows of runs of each size and length (in units of 2 x the size's optimal tokens at
    1e19 FLOPs): every run traces L(N, D) with a run offset and checkpoint noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in sizes:
        for k in lengths:
            d = np.geomspace(2e7, 20 * s * k, 40)
            offset = noise * rng.standard_normal()
            y = loss(s, d) * np.exp(offset + noise * rng.standard_normal(d.size))
            rows += [{"run": f"{s:.3g}-{k}x", "N": s, "D": float(t), "loss": float(v)} for t, v in zip(d, y, strict=True)]
    return rows


# ---------------------------------------------------------------------------- approach 2


def test_isoflop_recovers_known_exponent_within_its_interval():
    n, c, y = isoflop_grid()
    fit = isoflop_frontier(n, c, y, n_bootstrap=200)
    assert isinstance(fit, FrontierResult) and fit.ok and fit.approach == 2
    assert len(fit.points) == 7 and not fit.excluded
    lo, hi = fit.a_interval
    assert lo < TRUE_A < hi, (fit.a, fit.a_interval)
    assert abs(fit.a - TRUE_A) < 0.02
    assert 0.005 < hi - lo < 0.1  # a real interval, neither degenerate nor useless
    assert fit.b == pytest.approx(1 - fit.a, abs=1e-9)
    assert fit.b_interval == pytest.approx((1 - hi, 1 - lo), abs=1e-9)
    # N_opt at a budget inside the range: the parabola's vertex sits ~3% above the optimum of the
    # (asymmetric) true profile sampled x8 either side, an offset the interval does not hold
    mean, nlo, nhi = fit.n_opt(1e20)
    assert mean == pytest.approx(float(true_n_opt(1e20)), rel=0.05) and nlo < mean < nhi
    d_mean, _, _ = fit.d_opt(1e20)
    assert 6 * mean * d_mean == pytest.approx(1e20, rel=1e-9)


def test_isoflop_bootstrap_is_seeded_and_deterministic():
    n, c, y = isoflop_grid()
    f1 = isoflop_frontier(n, c, y, n_bootstrap=50, seed=3)
    f2 = isoflop_frontier(n, c, y, n_bootstrap=50, seed=3)
    f3 = isoflop_frontier(n, c, y, n_bootstrap=50, seed=4)
    assert f1.a_interval == f2.a_interval and f1.stderr == f2.stderr
    assert f1.a_interval != f3.a_interval and f1.a == f3.a
    assert f1.settings["seed"] == 3 and f1.settings["n_bootstrap"] == 50


def test_isoflop_excludes_bad_budgets_and_says_why():
    n, c, y = isoflop_grid()
    # a budget sampled only on one side of its optimum: the vertex lies outside the sizes sampled
    ns = true_n_opt(3e21) * np.geomspace(4, 40, 6)
    # and one whose losses fall with size all the way (concave): the parabola opens downward
    nd = true_n_opt(1e17) * np.geomspace(1 / 8, 8, 6)
    yd = 3.0 - 0.01 * np.log(nd / nd[0]) ** 2
    fit = isoflop_frontier(np.r_[n, ns, nd], np.r_[c, [3e21] * 6, [1e17] * 6],
                           np.r_[y, loss(ns, 3e21 / (6 * ns)), yd], n_bootstrap=20)
    assert len(fit.points) == 7
    whys = " | ".join(e["why"] for e in fit.excluded)
    assert "opens downward" in whys and "outside the sizes sampled" in whys
    assert "C=1e+17" in whys and "C=3e+21" in whys
    assert "excluded: its parabola" in fit.report()


def test_isoflop_refuses_with_too_few_budgets():
    n, c, y = isoflop_grid(budgets=(1e18, 1e19))
    with pytest.raises(ValueError, match=r"insufficient evidence .* 2 usable compute budget\(s\), need >= 3"):
        isoflop_frontier(n, c, y)
    # three budgets, but one samples only sizes beyond its optimum: excluded, then too few remain
    n, c, y = isoflop_grid(budgets=(1e18, 1e19))
    ns = true_n_opt(1e20) * np.geomspace(4, 40, 6)
    with pytest.raises(ValueError, match=r"insufficient evidence.*C=1e\+20 \(6 runs\) excluded: its parabola's minimum"):
        isoflop_frontier(np.r_[n, ns], np.r_[c, [1e20] * 6], np.r_[y, loss(ns, 1e20 / (6 * ns))])
    with pytest.raises(ValueError, match="model size N must be positive"):
        isoflop_frontier([1e8, -1, 1e9], [1e18] * 3, [3, 3, 3])


def test_isoflop_groups_runs_whose_compute_scatters_within_a_budget():
    # extraction from a figure (as Epoch's) leaves each budget's FLOPs scattered by a few percent
    n, c, y = isoflop_grid()
    rng = np.random.default_rng(1)
    c_noisy = c * np.exp(0.05 * rng.standard_normal(c.size))
    fit = isoflop_frontier(n, c_noisy, y, n_bootstrap=50)
    assert len(fit.points) == 7 and fit.settings["budgets"] == 7
    assert fit.a_interval[0] < TRUE_A < fit.a_interval[1]


# ---------------------------------------------------------------------------- approach 1


SIZES = np.geomspace(1.5e8, 3e9, 5)  # a ladder: five sizes over 1.3 decades


def test_envelope_recovers_known_exponent_within_its_interval():
    fit = fit_frontier(training_curves(SIZES), approach=1, n_bootstrap=100)
    assert fit.approach == 1 and fit.ok
    assert len(fit.points) == 4  # one switch between each pair of neighbouring sizes
    assert fit.a_interval[0] < TRUE_A < fit.a_interval[1], (fit.a, fit.a_interval)
    assert abs(fit.a - TRUE_A) < 0.02
    assert fit.settings["run"] == "run" and fit.settings["estimator"] == "switch"
    env = fit.envelope
    assert env["compute"].shape == env["loss"].shape == env["n"].shape == (1500,)
    # the envelope is the lowest loss of all runs at each compute: never above any run's curve there
    assert np.all(np.diff(env["loss"][np.isfinite(env["loss"])]) < 0.05)


def test_envelope_switch_estimator_beats_the_staircase_regression():
    # noise-free: the switch points recover a to 1e-2; a line through the staircase of best sizes
    # (Hoffmann's literal grid estimator) is flattened by the few sizes
    rows = training_curves(SIZES, noise=0.0)
    switch = fit_frontier(rows, approach=1, n_bootstrap=0)
    grid = fit_frontier(rows, approach=1, n_bootstrap=0, estimator="grid")
    assert abs(switch.a - TRUE_A) < 0.01
    assert abs(grid.a - TRUE_A) > 2 * abs(switch.a - TRUE_A)
    assert any("staircase" in n for n in grid.notes)


def test_envelope_refuses_with_too_few_sizes_and_censors_switches_at_run_ends():
    with pytest.raises(ValueError, match=r"insufficient evidence for the envelope frontier: 1 size switches, need >= 3"):
        fit_frontier(training_curves(SIZES[:2]), approach=1)
    # the largest size's runs start only after the switch to it: that switch is censored, not used
    rows = [r for r in training_curves(SIZES, noise=0.0) if not (r["N"] == SIZES[-1] and r["D"] < 1e11)]
    fit = fit_frontier(rows, approach=1, n_bootstrap=0)
    assert len(fit.points) == 3
    assert any("censored" in e["why"] for e in fit.excluded)
    with pytest.raises(ValueError, match="run 'x' has several model sizes"):
        envelope_frontier([1e8, 2e8], [1e18, 2e18], [3.0, 2.9], ["x", "x"])


def test_envelope_with_one_run_per_size_gives_no_interval_and_says_so():
    """Resampling runs within sizes cannot vary anything when each size has one run: the interval would
    have zero width (a certainty the data do not give). The estimate stays; ok is False, the interval
    NaN, and why says what to add."""
    fit = fit_frontier(training_curves(SIZES, lengths=(10,)), approach=1, n_bootstrap=50)
    assert not fit.ok and all(np.isnan(fit.a_interval)) and np.isfinite(fit.a)
    assert fit.why.startswith("insufficient evidence for an interval: every model size has a single run")
    assert fit_frontier(training_curves(SIZES, lengths=(3, 10)), approach=1, n_bootstrap=50).ok  # two runs a size


def test_isoflop_takes_each_runs_final_row_from_a_table_of_checkpoints():
    """Approach 2 compares runs that each ended at a budget: given checkpoints (a run column), it takes
    each run's final row, the same fit as on the final rows alone; a table whose runs share no budget
    is refused and says it took the final rows."""
    n, c, y = isoflop_grid()
    final = [{"run": f"r{i}", "N": a, "C": b, "loss": v} for i, (a, b, v) in enumerate(zip(n, c, y, strict=True))]
    early = [{**r, "C": r["C"] * f, "loss": r["loss"] + 0.3 * (1 - f)} for r in final for f in (0.25, 0.5)]
    ckpt = fit_frontier(early + final, 2, x="N", compute="C", n_bootstrap=50)
    alone = fit_frontier(final, 2, x="N", compute="C", n_bootstrap=50)
    assert ckpt.a == alone.a and ckpt.a_interval == alone.a_interval and abs(ckpt.a - TRUE_A) < 0.02
    assert any("each run's final row (largest compute) taken" in note for note in ckpt.notes)
    with pytest.raises(ValueError, match=r"IsoFLOP frontier: 0 usable .* each run's final row"):
        fit_frontier(training_curves(SIZES), 2)


# ---------------------------------------------------------------------------- approach 3 and the table API


def test_law_frontier_matches_the_law_exponent_and_compute_optimal():
    N, D = np.meshgrid(np.geomspace(1e7, 1e10, 5), np.geomspace(1e9, 1e12, 5))
    rows = [{"N": n, "D": d, "loss": float(loss(n, d))} for n, d in zip(N.ravel(), D.ravel(), strict=True)]
    fit = fit_frontier(rows, approach=3, n_bootstrap=10)
    assert fit.a == pytest.approx(TRUE_A, abs=1e-3) and fit.b == pytest.approx(1 - TRUE_A, abs=1e-3)
    assert fit.n_opt(1e21)[0] == pytest.approx(float(true_n_opt(1e21)), rel=1e-2)
    with pytest.raises(ValueError, match="ChinchillaLaw fit"):
        law_frontier(PowerLaw().fit(np.geomspace(1e5, 1e8, 6), 2 + 50 * np.geomspace(1e5, 1e8, 6) ** -0.3))


def test_place_a_run_against_d_opt():
    n, c, y = isoflop_grid()
    fit = isoflop_frontier(n, c, y, n_bootstrap=100)
    size, tokens = 2e8, 1e9  # C = 1.2e18, a small number of tokens for this size
    p = fit.place(size, tokens)
    n_opt = fit.n_opt(6 * size * tokens)[0]
    assert p.compute == pytest.approx(1.2e18)
    assert p.tokens_ratio[0] == pytest.approx(n_opt / size, rel=1e-9)  # same compute: D/D_opt = N_opt/N
    assert p.tokens_ratio[1] < p.tokens_ratio[0] < p.tokens_ratio[2]
    assert f"is at {p.tokens_ratio[0]:.2g}x D_opt for its compute" in p.text and "under" in p.text
    # at tokens_optimal the run sits on the frontier
    on = fit.place(size, p.tokens_optimal[0])
    assert on.tokens_ratio[0] == pytest.approx(1.0, rel=1e-6) and "about at" in on.text
    assert not on.extrapolated and fit.place(1e6, 1e6).extrapolated
    json.dumps(p.to_dict())
    with pytest.raises(ValueError, match="positive model size"):
        fit.place(0, 1e9)


def test_to_dict_is_json_and_report_reads():
    n, c, y = isoflop_grid()
    fit = isoflop_frontier(n, c, y, n_bootstrap=20, interval=0.8)
    d = json.loads(json.dumps(fit.to_dict()))
    assert d["approach"] == 2 and d["method"] == "IsoFLOP profiles" and d["interval"] == 0.8
    assert d["a"] == pytest.approx(fit.a) and d["a_interval"] == pytest.approx(list(fit.a_interval))
    assert d["paper"]["a"] == [0.49, 0.462, 0.534] and len(d["points"]) == 7
    text = str(fit)
    assert "approach 2, IsoFLOP profiles" in text and "(paper 0.49 [0.462, 0.534])" in text
    assert f"a:       {fit.a:.4f} [{fit.a_interval[0]:.4f}, {fit.a_interval[1]:.4f}]" in text


def test_fit_frontier_input_errors():
    rows = [{"N": 1e8, "D": 1e9, "loss": 3.0}]
    with pytest.raises(ValueError, match="approach must be 1"):
        fit_frontier(rows, approach=4)
    with pytest.raises(ValueError, match="column 'tokens' not found; available columns: D, N, loss"):
        fit_frontier(rows, approach=2, x="N,tokens")
    with pytest.raises(ValueError, match="token column in x .* or a FLOPs column"):
        fit_frontier(rows, approach=2, x="N")
    with pytest.raises(ValueError, match="a history file holds one run's probes"):
        fit_frontier([{"tokens": 1, "metrics": {"loss": 3}}], approach=2)
    with pytest.raises(ValueError, match="unknown option"):
        fit_frontier(rows, approach=2, n_boot=3)
    with pytest.raises(ValueError, match="interval must be in"):
        isoflop_frontier(*isoflop_grid(), interval=90)


# ---------------------------------------------------------------------------- real data


def _chinchilla_rows():
    path = DATA / "chinchilla" / "svg_extracted_data.csv"
    if not path.exists():
        pytest.skip(f"{path} not present (the shared data sit next to the repository)")
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_isoflop_on_epoch_chinchilla_lands_in_the_papers_interval():
    rows = _chinchilla_rows()
    fit = fit_frontier(rows, approach=2, x="Model Size", compute="Training FLOP", interval=0.8)
    assert fit.ok
    assert 0.462 <= fit.a <= 0.534  # Hoffmann et al.'s approach-2 interval (estimate 0.49)
    assert fit.a == pytest.approx(0.489, abs=0.005)  # measured: 0.4889 [0.4718, 0.5047]
    lo, hi = fit.a_interval
    assert lo < fit.a < hi and 0.01 < hi - lo < 0.08
    assert len(fit.points) >= 10 and len(fit.excluded) >= 1
    assert fit.b == pytest.approx(1 - fit.a)


def _ladder_rows():
    folder = DATA / "olmo-ladder"
    if not folder.exists():
        pytest.skip(f"{folder} not present (the shared data sit next to the repository)")
    with open(folder / "final.json") as fh:
        params = {k.replace(".3B", "B"): v["n"] for k, v in json.load(fh).items()}
    params.setdefault("3B", 3169537280)  # not in final.json; OLMo-ladder src/scaling/utils.py MODEL_PARAMS
    rows = []
    for path in sorted(folder.glob("*xC.csv")):
        size = path.stem.split("-")[0]
        with open(path, newline="") as fh:
            for r in csv.DictReader(fh):
                rows.append({"run": path.stem, "N": params[size], "D": r["throughput/total_tokens"],
                             "loss": r["eval/c4_en-validation/CrossEntropyLoss"]})
    return rows


def test_envelope_on_the_olmo_ladder():
    fit = fit_frontier(_ladder_rows(), approach=1, interval=0.8, n_bootstrap=100)
    assert fit.settings["runs"] == 25 and len(fit.settings["sizes"]) == 5
    assert len(fit.points) == 4
    # measured 0.435 [0.41, 0.52]: below the paper's 0.50, whose value the 80% interval still holds
    assert fit.a == pytest.approx(0.435, abs=0.01)
    assert fit.a_interval[0] < fit.a < fit.a_interval[1]
    assert fit.a_interval[0] < 0.50 < fit.a_interval[1]


def test_cli_fit_approach_on_a_table(tmp_path, capsys):
    """``transfer-probe fit TABLE --law chinchilla --approach 2 --json``: the same a and interval as the
    API (whose recovery of a known exponent is tested above), b = 1 - a; a wrong law is refused."""
    from transfer_probe.cli import main

    n, c, y = isoflop_grid()
    path = tmp_path / "runs.csv"
    path.write_text("N,C,loss\n" + "".join(f"{a},{b},{v}\n" for a, b, v in zip(n, c, y, strict=True)))
    fit = isoflop_frontier(n, c, y)
    assert main(["fit", str(path), "--law", "chinchilla", "--approach", "2", "--x", "N", "--compute", "C",
                 "--y", "loss", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["a"] == pytest.approx(fit.a) and out["a_interval"] == pytest.approx(list(fit.a_interval))
    assert out["b"] == pytest.approx(1 - out["a"])
    assert main(["fit", str(path), "--law", "log", "--approach", "2"]) == 2
    assert "--approach goes with --law chinchilla" in capsys.readouterr().err


# ---------------------------------------------------------------------------- your run on the frontier


def _grid_table(tmp_path):
    n, c, y = isoflop_grid()
    path = tmp_path / "runs.csv"
    path.write_text("N,C,loss\n" + "".join(f"{a},{b},{v}\n" for a, b, v in zip(n, c, y, strict=True)))
    return path, isoflop_frontier(n, c, y)


def _history(path, params={"non_embedding": 2e8, "total": 2.6e8}, run_id="run-a"):  # noqa: B006
    from tests._synthetic import history_records
    from transfer_probe.store.history import HistoryWriter

    recs = history_records(seed=2, run_id=run_id)  # newest probe at 1e9 tokens
    for r in recs:
        r.pop("params")
        if params is not None:
            r["params"] = dict(params)
    HistoryWriter(path).extend(recs)
    return recs


def test_run_size_and_tokens_reads_non_embedding_params_and_the_newest_probe():
    from transfer_probe.laws.frontier_result import run_size_and_tokens

    recs = [{"kind": "probe", "status": "ok", "run_id": "r", "tokens": t, "pretrained": True,
             "params": {"non_embedding": 4e5, "total": 7e5}} for t in (1e6, 3e7, 2e7)]
    recs += [{"kind": "probe", "status": "failed", "run_id": "r", "tokens": 9e9},  # a failed probe: not "so far"
             {"kind": "probe", "status": "ok", "run_id": "r", "tokens": 0, "pretrained": False, "params": 1}]
    assert run_size_and_tokens(recs) == (4e5, 3e7, "non-embedding parameters")
    total_only = [{**r, "params": {"total": 7e5}} for r in recs[:3]]
    assert run_size_and_tokens(total_only) == (7e5, 3e7, "total parameters (no non-embedding count recorded)")
    with pytest.raises(ValueError, match="hold no model size"):
        run_size_and_tokens([{**r, "params": {}} for r in recs[:3]])
    with pytest.raises(ValueError, match=r"2 runs \(a, b\)"):
        run_size_and_tokens([{**recs[0], "run_id": "a"}, {**recs[1], "run_id": "b"}])
    with pytest.raises(ValueError, match="nothing to place"):
        run_size_and_tokens(recs[3:])


def test_cli_fit_place_numbers_and_history(tmp_path, capsys):
    """``--place N,TOKENS`` and ``--place HISTORY``: the placement printed (text) and in --json equals
    ``fit.place``; a history's N is its non-embedding params and the output says so."""
    from transfer_probe.cli import main

    table, fit = _grid_table(tmp_path)
    args = ["fit", str(table), "--law", "chinchilla", "--approach", "2", "--x", "N", "--compute", "C"]
    assert main([*args, "--place", "2e8,1e9"]) == 0
    out = capsys.readouterr().out
    want = fit.place(2e8, 1e9)
    assert "[[Placement]]" in out and want.text in out and "approach 2, IsoFLOP profiles" in out
    assert main([*args, "--place", "3e8,2e9", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    want = fit.place(3e8, 2e9)
    assert got["a"] == pytest.approx(fit.a)
    assert got["placement"]["tokens_ratio"] == pytest.approx(list(want.tokens_ratio), rel=1e-9)
    assert got["placement"]["n_opt"] == pytest.approx(list(want.n_opt), rel=1e-9)
    assert got["placement"]["text"] == want.text and got["placement"]["n_basis"] == ""

    recs = _history(tmp_path / "history.jsonl")
    assert main([*args, "--place", str(tmp_path / "history.jsonl"), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)["placement"]
    want = fit.place_run(recs)
    assert (want.n, want.tokens) == (2e8, 1e9)  # non-embedding, not the total 2.6e8; the newest probe's tokens
    assert got["n"] == 2e8 and got["tokens"] == 1e9 and got["n_basis"] == "non-embedding parameters"
    assert got["tokens_ratio"] == pytest.approx(list(want.tokens_ratio), rel=1e-9)
    assert "N=2e+08 non-embedding parameters, 1e+09 tokens" in got["text"]


def test_cli_fit_place_bad_input_is_one_line_exit_2(tmp_path, capsys):
    from transfer_probe.cli import main

    table, _ = _grid_table(tmp_path)
    _history(tmp_path / "bare.jsonl", params=None)
    two = tmp_path / "two.jsonl"
    _history(two, run_id="a")
    _history(two, run_id="b")
    args = ["fit", str(table), "--law", "chinchilla", "--approach", "2", "--x", "N", "--compute", "C"]
    cases = {
        "abc,1e9": "--place abc,1e9: give N,TOKENS as two positive numbers",
        "1e8": "--place 1e8: give N,TOKENS as two positive numbers",
        "-1,1e9": "--place -1,1e9: give N,TOKENS",
        "1e8,2e9,3": "--place 1e8,2e9,3: give N,TOKENS",
        str(tmp_path / "bare.jsonl"): "bare.jsonl: the probe records hold no model size ('params')",
        str(table): "runs.csv: not a history file",
        str(two): "two.jsonl holds 2 runs (a, b); pick one with --run-id",
    }
    for place, message in cases.items():
        assert main([*args, f"--place={place}"]) == 2, place
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert main([*args, "--place", str(two), "--run-id", "b"]) == 0  # --run-id picks the run
    capsys.readouterr()
    assert main(["fit", str(table), "--law", "chinchilla", "--place", "1e8,1e9"]) == 2
    assert "--place go with --approach" in capsys.readouterr().err
