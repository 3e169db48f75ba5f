"""compare_runs: which run to continue, on synthetic runs with known laws, through history files, and on
the real curves of ../shared/data (skipped when absent)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from transfer_probe.compare import compare_histories, compare_runs, lower_is_better
from transfer_probe.store.history import HistoryWriter, read_history

T = 1e10  # the budget of the synthetic runs
X = np.geomspace(1e8, 3e9, 10)
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def records(run, f, noise, seed, *, metric="bleu", task="en-fr", df=50, ci=True, tokens=X):
    rng = np.random.default_rng(seed)
    out = []
    for t in tokens:
        v = float(f(t) + rng.normal(0, noise))
        r = {"schema": 1, "kind": "probe", "run_id": run, "task": task, "finetune_size": {"examples": df},
             "tokens": float(t), "pretrained": True, "status": "ok", "metrics": {metric: v}}
        if ci:
            r["metrics_ci"] = {metric: [v - 1.645 * noise, v + 1.645 * noise]}
        out.append(r)
    return out


def log_law(y0, yT, beta):
    """A log-law through y(1e8) = y0 and y(T) = yT."""
    c = y0 ** (1 / beta)
    a = (yT ** (1 / beta) - c) / math.log(T / 1e8)
    return lambda t: (c + a * np.log(np.asarray(t) / 1e8)) ** beta


def saturating(t):  # rises fast, then flat below 20
    return 20 - 12 * (np.asarray(t) / 1e8) ** -0.8


def test_clearly_better_run_ranked_first():
    recs = records("weak", log_law(6, 18, 1.3), 0.3, 1) + records("strong", log_law(9, 26, 1.3), 0.3, 2)
    g = compare_runs(recs, budget_tokens=T).groups[0]
    assert g.ranking == [["strong"], ["weak"]]
    assert g.p("strong", "weak") > 0.95 and g.p("weak", "strong") < 0.05
    strong = g.run("strong")
    assert len(strong.components) == 2 and len(g.run("weak").components) == 2  # still called with both laws mixed
    assert strong.source == "law" and abs(strong.mean - 26) < 1.5 and strong.low < strong.mean < strong.high
    assert g.pairs[0].called and g.pairs[0].text.startswith("strong beats weak (P ")
    assert g.recommendation.startswith("continue strong: it beats weak at 1e10 tokens (P ")


def test_crossing_curves_fit_right_where_naive_rule_is_wrong():
    # "early" is ahead at the newest probe (3e9) but saturates; "steady" overtakes it by the budget
    recs = records("early", saturating, 0.3, 3) + records("steady", log_law(3, 25, 2.5), 0.3, 13)
    g = compare_runs(recs, budget_tokens=T).groups[0]
    early, steady = g.run("early"), g.run("steady")
    assert early.current > steady.current + 1.5  # the naive rule (rank by the current value) picks early
    assert early.law == "saturating" and steady.law == "log"
    # 0.997 with the chosen laws alone; the log law predicts "early" as well as the saturating one does
    # (its one-step-ahead checks cannot tell them apart), so the mixture carries its 21.8 as well: P 0.95
    assert g.p("steady", "early") > 0.9 and g.pairs[0].called
    assert g.ranking == [["steady"], ["early"]]
    assert g.recommendation.startswith("continue steady")


def test_laws_disagreeing_beyond_the_data_too_close_to_call():
    # run a's probes fit the log-law and the saturating law about as well (weights 0.74 / 0.26), but at
    # 3.3x beyond them the two differ by 3 BLEU. The log-law alone (the verdict's, "chosen") calls a
    # over b at P 0.96, and is wrong: the truths at the budget are 23.9 and 26.1. The mixture carries
    # the laws' disagreement and says too close to call.
    fa, fb = log_law(7.3, 23.9, 1.34), log_law(9.15, 26.1, 1.46)
    recs = records("a", fa, 0.4, 108) + records("b", fb, 0.4, 208)
    assert fb(T) - fa(T) > 2
    old = compare_runs(recs, budget_tokens=T, method="chosen").groups[0]
    assert old.pairs[0].called and old.p("a", "b") > 0.95 and old.run("a").law == "log"
    g = compare_runs(recs, budget_tokens=T).groups[0]
    pair, a = g.pairs[0], g.run("a")
    assert not pair.called and 0.6 < pair.p < 0.8 and "too close to call (P = 0.70)" in pair.text
    assert g.recommendation.startswith("too close to call between a, b")
    laws = {c["law"]: c for c in a.components}
    assert set(laws) == {"log", "saturating"} and laws["saturating"]["weight"] > 0.2
    assert laws["log"]["mean"] - laws["saturating"]["mean"] > 2.5
    assert a.low < laws["saturating"]["mean"] < laws["log"]["mean"] < a.high  # the interval spans both laws
    assert a.law == "log" and "mix of the log law 0.74 + saturating law 0.26; the verdict's law: log" in str(g)
    # P over the laws' pairs, weighted: what p_beats gives
    from scipy.stats import norm

    want = sum(ca["weight"] * cb["weight"] * norm.cdf((ca["mean"] - cb["mean"]) / math.hypot(ca["sd"], cb["sd"]))
               for ca in a.components for cb in g.run("b").components)
    assert g.p("a", "b") == pytest.approx(want)
    # the method before, from the same forecast: the verdict's law alone
    assert a.chosen_only(0.9).mean == pytest.approx(old.run("a").mean) and old.run("a").components[0]["law"] == "log"


def test_identical_laws_too_close_to_call():
    f = log_law(8, 22, 1.4)
    g = compare_runs(records("a", f, 0.5, 4) + records("b", f, 0.5, 5), budget_tokens=T).groups[0]
    pair = g.pairs[0]
    assert not pair.called and 0.5 <= pair.p < 0.9
    assert f"too close to call (P = {pair.p:.2f})" in pair.text
    assert g.ranking == [sorted(["a", "b"], key=lambda r: -g.run(r).mean)]
    assert g.recommendation.startswith("too close to call between")


def test_cross_entropy_lower_is_better_and_json():
    power = lambda E: (lambda t: E + 40 * np.asarray(t) ** -0.3)  # noqa: E731
    recs = (records("low-ce", power(1.2), 0.003, 6, metric="cross_entropy")
            + records("high-ce", power(1.5), 0.003, 7, metric="cross_entropy"))
    cmp = compare_runs(recs, budget_tokens=T)
    g = cmp["en-fr", 50]
    assert g.metric == "cross_entropy" and g.higher_is_better is False
    assert g.ranking == [["low-ce"], ["high-ce"]] and g.p("low-ce", "high-ce") > 0.95
    assert g.run("low-ce").law == "power"
    d = json.loads(json.dumps(cmp.to_dict(), allow_nan=False))
    assert d["groups"][0]["ranking"] == [["low-ce"], ["high-ce"]]
    assert d["method"].startswith("mixture of the laws") and d["settings"]["method"] == "mixture"
    # a loss has one candidate law (the power law): nothing to mix, one component
    assert [c["law"] for c in d["groups"][0]["runs"][0]["components"]] == ["power"]
    assert "CE at 1e10 tokens (lower is better" in str(cmp)
    # a loss whose name says nothing: the direction given explicitly
    for r in recs:
        r["metrics"] = {"my_metric": r["metrics"]["cross_entropy"]}
        r["metrics_ci"] = {"my_metric": r["metrics_ci"]["cross_entropy"]}
    told = compare_runs(recs, budget_tokens=T, metric="my_metric", higher_is_better=False).groups[0]
    assert told.ranking == [["low-ce"], ["high-ce"]] and told.run("low-ce").law == "power"


def test_lower_is_better_names():
    assert lower_is_better("cross_entropy") and lower_is_better("eval/downstream_bpb/piqa_val_rc_5shot_bpb")
    assert lower_is_better("ce") and lower_is_better("val_loss")
    assert not lower_is_better("bleu") and not lower_is_better("acc") and not lower_is_better("piqa_len_norm")


def test_history_with_two_runs_read_back(tmp_path):
    path = tmp_path / "history.jsonl"
    w = HistoryWriter(path)
    w.extend(records("mix-a", log_law(6, 18, 1.3), 0.3, 1) + records("mix-b", log_law(9, 26, 1.3), 0.3, 2))
    w.close()
    from_file = compare_histories([path], budget_tokens=T).groups[0]
    from_records = compare_runs(read_history(path), budget_tokens=T).groups[0]
    assert from_file.ranking == from_records.ranking == [["mix-b"], ["mix-a"]]
    assert from_file.p("mix-b", "mix-a") == pytest.approx(from_records.p("mix-b", "mix-a"))
    # two files with the same run_id: told apart by their paths
    for name, f in (("a", log_law(6, 18, 1.3)), ("b", log_law(9, 26, 1.3))):
        (tmp_path / name).mkdir()
        w = HistoryWriter(tmp_path / name / "history.jsonl")
        w.extend(records("run", f, 0.3, 3))
        w.close()
    g = compare_histories([tmp_path / "a" / "history.jsonl", tmp_path / "b" / "history.jsonl"], budget_tokens=T).groups[0]
    assert g.ranking == [["b/history:run"], ["a/history:run"]]


def test_default_budget_and_measured_stand_in():
    # no budget: the furthest any run got; a run too short for a law is compared by its measured point
    short = records("short", log_law(6, 18, 1.3), 0.3, 8, tokens=X[-3:])
    g = compare_runs(records("long", log_law(9, 26, 1.3), 0.3, 9) + short).groups[0]
    assert g.budget == pytest.approx(X[-1])
    assert g.run("short").source == "measured" and "stands in" in g.run("short").why
    assert g.ranking == [["long"], ["short"]]


def test_bad_input_is_a_clear_error():
    one = records("only", log_law(6, 18, 1.3), 0.3, 1)
    with pytest.raises(ValueError, match="at least two runs; found 1 \\(only\\)"):
        compare_runs(one)
    two = one + records("other", log_law(6, 18, 1.3), 0.3, 2)
    with pytest.raises(ValueError, match="metric 'chrf' is in no probe record; recorded: bleu"):
        compare_runs(two, metric="chrf")
    with pytest.raises(ValueError, match="confidence must be in"):
        compare_runs(two, confidence=0.4)
    with pytest.raises(ValueError, match="budget_tokens must be a positive"):
        compare_runs(two, budget_tokens=-1)
    with pytest.raises(ValueError, match="method must be one of mixture, chosen; got 'bma'"):
        compare_runs(two, method="bma")


@pytest.mark.skipif(not (DATA / "pythia-deduped" / "evals.csv").exists(), reason="../shared/data not present")
def test_pythia_bigger_model_wins_from_half_the_tokens():
    import pandas as pd

    df = pd.read_csv(DATA / "pythia-deduped" / "evals.csv")
    g = df[(df.shots == 0) & (df.task == "piqa") & (df.tokens >= 2e9)]
    T_end = float(g.tokens.max())
    recs = []
    for run in ("pythia-12b-deduped", "pythia-160m-deduped"):
        h = g[(g.run == run) & (g.tokens <= 0.5 * T_end)]
        recs += [{"run_id": run, "task": "piqa", "tokens": t, "metrics": {"acc": 100 * a},
                  "metrics_ci": {"acc": [100 * (a - 1.645 * s), 100 * (a + 1.645 * s)]}}
                 for t, a, s in zip(h.tokens, h.acc, h.acc_stderr, strict=True)]
    res = compare_runs(recs, budget_tokens=T_end).groups[0]
    final = g[g.tokens == T_end].set_index("run").acc * 100
    assert final["pythia-12b-deduped"] - final["pythia-160m-deduped"] > 10  # the truth this call is checked on
    assert res.ranking[0] == ["pythia-12b-deduped"] and res.p("pythia-12b-deduped", "pythia-160m-deduped") > 0.95


@pytest.mark.skipif(not (DATA / "olmo-ladder").exists(), reason="../shared/data not present")
def test_olmo_ladder_bits_per_byte_lower_is_better():
    import pandas as pd

    col = "eval/downstream_bpb/hellaswag_val_rc_5shot_bpb"
    tables = {n: pd.read_csv(DATA / "olmo-ladder" / f"{n}.csv") for n in ("760M-1xC", "190M-1xC")}
    T_end = float(tables["190M-1xC"]["throughput/total_tokens"].max())
    recs = []
    for name, d in tables.items():
        d = d[(d["throughput/total_tokens"] > 0) & (d["throughput/total_tokens"] <= 0.5 * T_end)].dropna(subset=[col])
        recs += [{"run_id": name, "task": "hellaswag", "tokens": t, "metrics": {col: v}}
                 for t, v in zip(d["throughput/total_tokens"], d[col], strict=True)]
    res = compare_runs(recs, budget_tokens=T_end).groups[0]
    assert res.higher_is_better is False
    assert res.ranking[0] == ["760M-1xC"] and res.p("760M-1xC", "190M-1xC") > 0.95


def test_cli_compare_prints_the_ranking_and_json(tmp_path, capsys):
    from transfer_probe.cli import main

    paths = []
    for name, f, seed in (("a", log_law(6, 18, 1.3), 1), ("b", log_law(9, 26, 1.3), 2)):
        w = HistoryWriter(tmp_path / f"{name}.jsonl")
        w.extend(records(f"mix-{name}", f, 0.3, seed))
        w.close()
        paths.append(str(tmp_path / f"{name}.jsonl"))
    assert main(["compare", *paths, "--budget", "1e10"]) == 0
    out = capsys.readouterr().out
    assert "continue mix-b: it beats mix-a at 1e10 tokens (P " in out
    assert main(["compare", *paths, "--budget", "1e10", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["groups"][0]["ranking"] == [["mix-b"], ["mix-a"]]
    assert main(["compare", paths[0], str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
    # --method picks the forecast: the mixture names its laws, the chosen law alone does not mix
    assert main(["compare", *paths, "--budget", "1e10"]) == 0 and "(mix of the" in capsys.readouterr().out
    assert main(["compare", *paths, "--budget", "1e10", "--method", "chosen"]) == 0
    out = capsys.readouterr().out
    assert "mix of" not in out and "law)" in out
