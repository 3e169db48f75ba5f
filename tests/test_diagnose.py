"""The diagnosis rules on seeded synthetic records: each status, noise handling, text, tracking."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from transfer_probe.diagnose import (
    DEFAULT_THRESHOLDS,
    MissingColumnError,
    Verdict,
    VerdictTracker,
    diagnose,
    diagnose_all,
    diagnose_rows,
    format_verdict,
)
from transfer_probe.history import HistoryWriter, group_key, read_history

D = np.geomspace(1e8, 1e10, 8)


def law(d):
    """BLEU log-law rising from 10 at 1e8 to 30 at 1e10 (beta 1.3)."""
    return (10 ** (1 / 1.3) + 1.7 * np.log(d / 1e8)) ** 1.3


def ce_law(d):
    return 1.6 + 1.0 * (d / 1e8) ** -0.3


def records(bleu, ce=None, tokens=D, spread=0.3, baseline=4.0, task="en-fr", df=50, seed=0):
    """Three repeats per point with a given spread (sample sd) around each value, plus a baseline."""
    rng = np.random.default_rng(seed)
    out = []
    for i, (t, b) in enumerate(zip(tokens, bleu, strict=True)):
        offs = rng.normal(0, 1, 3)
        offs = (offs - offs.mean()) / offs.std(ddof=1) * spread  # exact mean and sd
        for r in range(3):
            m = {"bleu": float(b + offs[r])}
            if ce is not None:
                m["cross_entropy"] = float(ce[i] + offs[r] * 0.003)
            out.append({"run_id": "run1", "task": task, "finetune_size": {"examples": df}, "tokens": float(t),
                        "pretrained": True, "status": "ok", "repeat": r, "metrics": m})
    if baseline is not None:
        for r in range(3):
            out.append({"run_id": "run1", "task": task, "finetune_size": {"examples": df}, "tokens": 0.0,
                        "pretrained": False, "status": "ok", "repeat": r,
                        "metrics": {"bleu": baseline + (r - 1) * spread, "cross_entropy": 3.0}})
    return out


def broken(kind="plateau", after=5):
    y = law(D).copy()
    if kind == "plateau":
        y[after + 1:] = y[after]
    else:
        y[after + 1:] = y[after] - 3.0 * np.arange(1, len(D) - after)
    return y


def test_too_few_points_is_insufficient_data_with_how_many_more():
    v = diagnose(records(law(D[:3]), ce_law(D[:3]), tokens=D[:3]))
    assert v.status == "insufficient_data" and v.recommendation == "wait"
    assert v.more_probes_needed == 2 and v.n_points == 3
    assert "the law needs 5" in v.reasons[0]
    assert format_verdict(v) == ("transfer_probe | en-fr D_f=50 | tokens 3.7e8 | BLEU 15.2±0.2 CE 2.274±0.001 "
                                 "| 3 points, 2 more probes needed for a verdict | wait")


def test_little_token_span_is_insufficient_data():
    t = np.linspace(1e9, 1.5e9, 5)  # 5 points but only 1.5x in tokens
    v = diagnose(records(law(t), tokens=t))
    assert v.status == "insufficient_data"
    assert "decades" in v.reasons[0] and v.more_probes_needed >= 3  # linear steps of 1.25e8 to reach 3.2e9


def test_no_verdict_before_enough_points_then_aligned():
    y = law(D)
    statuses = [diagnose(records(y[:k], ce_law(D[:k]), tokens=D[:k])).status for k in range(1, 9)]
    assert statuses[:4] == ["insufficient_data"] * 4
    assert set(statuses[4:]) == {"aligned"}


def test_aligned_predicts_at_budget_and_tokens_to_target():
    v = diagnose(records(law(D), ce_law(D)), budget_tokens=3e10, target=32.0)
    assert v.status == "aligned" and v.recommendation == "continue" and not v.borderline
    pr = v.prediction
    assert pr["low"] <= law(3e10) <= pr["high"] and pr["low"] < pr["mean"] < pr["high"]
    tt = v.tokens_to_target
    true_tokens = 1e8 * math.exp((32.0 ** (1 / 1.3) - 10 ** (1 / 1.3)) / 1.7)
    assert tt["low"] <= true_tokens * 1.001 and true_tokens * 0.999 <= tt["high"]
    line = format_verdict(v)
    assert line.startswith("transfer_probe | en-fr D_f=50 | tokens 1e10 | BLEU ")
    assert "law: BLEU=(log(A*D^a))^b fits (8 points), predicts " in line and " at 3e10" in line
    assert line.endswith("| continue")


def test_target_out_of_reach_within_budget_says_stop():
    v = diagnose(records(law(D), ce_law(D)), budget_tokens=2e10, target=60.0)
    assert v.status == "aligned" and v.recommendation == "stop"
    assert any("out of reach" in r for r in v.reasons)


def test_plateau_while_ce_improves_is_misaligned_and_warning_text():
    v = diagnose(records(broken("plateau"), ce_law(D)))
    assert v.status == "misaligned" and v.recommendation == "stop"
    assert v.break_tokens == pytest.approx(D[6])
    line = format_verdict(v)
    assert line.startswith("transfer_probe WARNING | en-fr D_f=50 | BLEU law broken at 5.2e9 tokens: BLEU ")
    assert "while cross-entropy still follows its power law (" in line
    assert "pre-training data looks misaligned with en-fr" in line
    assert line.endswith("| stop or change the mixture")
    assert any("SDs" in r and "threshold" in r for r in v.reasons)


def test_decline_without_cross_entropy_is_law_break():
    v = diagnose(records(broken("decline")))
    assert v.status == "law_break" and v.recommendation == "stop"
    assert "no cross-entropy to contrast" in format_verdict(v)


def test_ce_moving_with_bleu_is_law_break_not_misaligned():
    ce = ce_law(D).copy()
    ce[6:] = ce[5] + np.array([0.15, 0.3])
    v = diagnose(records(broken("decline"), ce))
    assert v.status == "law_break"
    assert any("moved with BLEU" in r for r in v.reasons)


def test_at_the_baseline_is_no_transfer():
    flat = np.full(len(D), 5.0) + np.linspace(0, 0.2, len(D))
    v = diagnose(records(flat, ce_law(D), baseline=5.0))
    assert v.status == "no_transfer" and v.recommendation == "stop"
    assert "no-pretraining baseline" in v.reasons[-1]
    assert format_verdict(v).startswith("transfer_probe WARNING | en-fr D_f=50 | no transfer at 1e10 tokens")


def test_a_dip_inside_the_noise_is_not_a_warning_the_same_dip_with_small_errors_is():
    y = law(D).copy()
    y[-1] -= 1.5  # newest probe 1.5 BLEU under the law
    noisy = diagnose(records(y, ce_law(D), spread=3.0))  # sem of each point ~1.7 BLEU
    precise = diagnose(records(y, ce_law(D), spread=0.15))  # sem ~0.09 BLEU
    assert noisy.status == "aligned"
    assert precise.status in {"misaligned", "law_break"}
    assert precise.stats["z_bleu"] < -5 < noisy.stats["z_bleu"]


def test_borderline_flag_near_the_threshold():
    y = law(D).copy()
    h = diagnose(records(y, ce_law(D), spread=0.5)).stats["holdout1"]
    pred = h["predicted"][0]
    sd = math.hypot(pred["sd_curve"], 0.5 / math.sqrt(3))
    z = DEFAULT_THRESHOLDS.z_holdout + 0.2
    y[-1] = pred["mean"] - z * sd  # just past the hold-out threshold
    v = diagnose(records(y, ce_law(D), spread=0.5))
    assert v.is_warning and v.borderline
    assert v.stats["tests"]["holdout1"] == pytest.approx(-z, abs=0.05)
    assert "borderline" in format_verdict(v)
    y[-1] = pred["mean"] - 6 * sd  # far past it
    assert not diagnose(records(y, ce_law(D), spread=0.5)).borderline


def test_missing_errors_fall_back_to_scatter_and_need_one_more_point():
    y = law(D) + np.random.default_rng(3).normal(0, 0.3, len(D))
    recs = [{"task": "t", "finetune_size": 1, "tokens": float(t), "metrics": {"bleu": float(b)}} for t, b in zip(D, y, strict=True)]
    assert diagnose(recs[:5]).status == "insufficient_data"  # 5 points, but no errors: needs 6
    v = diagnose(recs)
    assert v.status == "aligned"
    assert any("scatter" in r for r in v.reasons)


def test_mixed_groups_are_an_error_and_diagnose_all_splits_them():
    a = records(law(D), ce_law(D), df=50)
    b = records(broken("plateau"), ce_law(D), df=500)
    with pytest.raises(ValueError, match=r"mix 2 \(task, D_f\) groups"):
        diagnose(a + b)
    verdicts = diagnose_all(a + b)
    assert {k: v.status for k, v in verdicts.items()} == {("en-fr", 50): "aligned", ("en-fr", 500): "misaligned"}


def test_json_and_history_record_roundtrip(tmp_path):
    v = diagnose(records(broken("plateau"), ce_law(D)), budget_tokens=2e10)
    d = json.loads(json.dumps(v.to_dict(), allow_nan=False))
    assert d["status"] == "misaligned" and d["recommendation"] == "stop" and d["message"] == format_verdict(v)
    w = HistoryWriter(tmp_path / "history.jsonl")
    w.append(v.to_record())
    rec = read_history(w.path)[0]
    assert rec["kind"] == "verdict" and group_key(rec) == ("en-fr", 50) and rec["tokens"] == pytest.approx(1e10)
    # Verdict records in a history do not disturb a new diagnosis.
    assert diagnose(records(broken("plateau"), ce_law(D)) + [rec]).status == "misaligned"


def test_diagnose_rows_maps_a_table_and_names_missing_columns():
    rows = [{"tok": float(t), "score": float(b), "loss": float(c)} for t, b, c in zip(D, broken("plateau"), ce_law(D), strict=True)]
    with pytest.raises(MissingColumnError, match=r"column 'bleu' \(--y\) is not in the table; columns: tok, score, loss"):
        diagnose_rows(rows, x="tok")
    with pytest.raises(KeyError):
        diagnose_rows(rows, x="tok", y="score", ce="xent")
    rows_sem = [{**r, "score_sem": 0.2, "loss_sem": 0.001} for r in rows]
    v = diagnose_rows(rows_sem, x="tok", y="score", ce="loss")
    assert v.status == "misaligned" and v.metric == "score"


def test_tracker_warns_when_a_condition_starts_changes_and_ends():
    t = VerdictTracker()

    def v(status):
        rec = {"aligned": "continue", "insufficient_data": "wait"}.get(status, "stop")
        return Verdict(status=status, recommendation=rec, task="en-fr", finetune_size=50, run_id="r")

    seq = ["insufficient_data", "aligned", "misaligned", "misaligned", "law_break", "law_break", "aligned",
           "aligned", "no_transfer"]
    assert [t.update(v(s)) for s in seq] == [False, False, True, False, True, False, True, False, True]
    assert [x.status for x in t.final()] == ["no_transfer"]
    other = Verdict(status="misaligned", recommendation="stop", task="en-de", finetune_size=50, run_id="r")
    assert t.update(other) is True  # another group has its own state


def test_errors_too_small_for_the_scatter_are_scaled_up():
    # One probe per point with a tight bootstrap interval (sem 0.1) while the points scatter by ~1.5
    # BLEU around the law (fine-tuning seed noise the bootstrap cannot see): a 1-BLEU dip is noise.
    rng = np.random.default_rng(7)
    y = law(D) + rng.normal(0, 1.5, len(D))
    y[-2] = law(D[-2]) + 2.5  # a lucky high probe, then one a little under the law: "fell" by 0.9
    y[-1] = law(D[-1]) - 1.5
    recs = [{"task": "t", "finetune_size": 1, "tokens": float(t), "metrics": {"bleu": float(b)},
             "metrics_ci": {"bleu": [b - 0.1645, b + 0.1645]}} for t, b in zip(D, y, strict=True)]
    v = diagnose(recs)
    assert v.stats["decline"]["scale"] > 3
    assert not v.is_warning


DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "olmo-ladder"


def _olmo(run, task, chance):
    with open(DATA / f"{run}.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    recs = [{"run_id": run, "task": task, "finetune_size": 0, "tokens": float(r["throughput/total_tokens"]),
             "metrics": {"accuracy": float(r[f"eval/downstream/{task}_val_rc_5shot_len_norm"]),
                         "bpb": float(r[f"eval/downstream_bpb/{task}_val_rc_5shot_bpb"])}} for r in rows]
    return recs + [{"run_id": run, "task": task, "finetune_size": 0, "tokens": 0.0, "pretrained": False,
                    "metrics": {"accuracy": chance}}]


def test_real_olmo_ladder_curves():
    if not DATA.is_dir():
        pytest.skip(f"shared data not found at {DATA}")
    big = diagnose(_olmo("1B-10xC", "hellaswag", 0.25), budget_tokens=5e11, metric="accuracy", ce="bpb")
    assert big.status == "aligned" and big.recommendation == "continue"
    assert any("scatter" in r for r in big.reasons)  # no recorded errors: the noise is the scatter
    small = diagnose(_olmo("190M-1xC", "mmlu_stem", 0.25), metric="accuracy", ce="bpb")
    assert small.status == "no_transfer"  # a 190M model stays at chance on MMLU
