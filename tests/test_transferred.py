"""Effective data transferred (transfer_probe.transferred): the conversion checked against Hernandez et al.
2021's text -> python fit (k 1.9e4, alpha 0.18, beta 0.38) on synthetic curves (tests/_transferred_synthetic.py
says how they are made), its intervals, ossification, growth with pre-training, and the callback's log
line, tracker values and history record with a real Trainer."""

from __future__ import annotations

import json
import logging
import math
import re

import _transferred_synthetic as S
import numpy as np
import pytest
from _probe_training import SEQ_LEN, lm_examples, make_trainer, quick_finetune, small_task

from transfer_probe import TransferProbeCallback
from transfer_probe.diagnose import diagnose_all
from transfer_probe.store.history import read_history, read_points
from transfer_probe.transferred import baseline_curve, data_transferred, fit_across_runs, format_count

TASK = "text-python"
FT = [1e3, 1e4, 1e5, 1e6]  # D_F
BASE = np.geomspace(1e3, 1e9, 7)  # from-scratch sizes: every D_E of the paper's fit lands inside them
TOKENS = np.geomspace(1e7, 1e10, 8)


def _task(recs, **kw):
    return data_transferred(recs, **kw).tasks[TASK]


def test_noiseless_curves_give_back_the_papers_transferred_data_and_fit():
    results = [data_transferred(S.records(n, FT, BASE)) for n in (1e6, 1e7, 1e8)]
    for res, n in zip(results, (1e6, 1e7, 1e8), strict=True):
        t = res.tasks[TASK]
        assert t.baseline.method == "power_law" and t.n_params == n
        for p in t.points:
            assert p.transferred == pytest.approx(S.true_transferred(p.finetune_size, n), rel=1e-6)
            assert p.multiplier == pytest.approx(1 + S.true_transferred(p.finetune_size, n) / p.finetune_size, rel=1e-6)
            assert p.status == "transfer" and not p.ossified
        # one model size: beta held at the paper's 0.38, so k and alpha come back too
        assert t.law.ok and t.law.params["alpha"] == pytest.approx(S.ALPHA, abs=1e-6)
        assert t.law.params["k"] == pytest.approx(S.K, rel=1e-5)
    fit = fit_across_runs(results, TASK)
    assert fit.ok and fit.n_points == 12
    assert fit.params["k"] == pytest.approx(1.9e4, rel=1e-5)
    assert fit.params["alpha"] == pytest.approx(0.18, abs=1e-6)
    assert fit.params["beta"] == pytest.approx(0.38, abs=1e-6)


def test_intervals_hold_the_true_value_about_as_often_as_they_say():
    hits, ratios = [], []
    for seed in range(40):
        t = _task(S.records(1e7, FT, BASE, noise=0.003, repeats=3, seed=seed), seed=seed)
        for p in t.points:
            truth = S.true_transferred(p.finetune_size, 1e7)
            hits.append(p.low <= truth <= p.high)
            ratios.append(p.transferred / truth)
    assert 0.8 <= np.mean(hits) <= 0.98, np.mean(hits)
    assert np.median(ratios) == pytest.approx(1.0, abs=0.02)
    fit = fit_across_runs([data_transferred(S.records(n, FT, BASE, noise=0.003, repeats=3, seed=n > 1e7))
                           for n in (1e6, 1e7, 1e8)], TASK)
    assert fit.params["alpha"] == pytest.approx(0.18, abs=0.03)
    assert fit.params["beta"] == pytest.approx(0.38, abs=0.03)


def test_two_from_scratch_sizes_read_as_a_log_log_line():
    curve = baseline_curve([100, 1000], [10 * 100 ** -0.2, 10 * 1000 ** -0.2], [0.01, 0.01])
    assert curve.method == "log_log" and "too few for the power law" in curve.why
    rng = np.random.default_rng(0)
    # a pure power law is read exactly, inside and past the points
    for d in (300.0, 5e4):
        de, lo, hi = curve.effective(10 * d ** -0.2, 0.01, 0.9, rng, 2000)
        assert de == pytest.approx(d, rel=1e-9) and lo < d < hi
    # only the pre-trained CE noisy (0.05 nats at L = 3.19): log D_E = log L / -0.2 has sd 0.078, so the
    # 90% interval spans exp(2 * 1.645 * 0.078) = 1.29x
    exact = baseline_curve([100, 1000], [10 * 100 ** -0.2, 10 * 1000 ** -0.2], [1e-9, 1e-9])
    de, lo, hi = exact.effective(10 * 300 ** -0.2, 0.05, 0.9, rng, 4000)
    assert hi / lo == pytest.approx(1.29, abs=0.04)
    # a curve with a floor (the synthetic one) bends away from the chord: a decade-wide bracket
    # overstates D_E inside it (here by 20%), and a line past the largest size understates it
    t = _task(S.records(1e7, [1e3], [1e7, 1e8]))
    assert t.baseline.method == "log_log"
    assert 1.1 < t.points[0].transferred / S.true_transferred(1e3, 1e7) < 1.3
    far = _task(S.records(1e7, [1e3], [1e4, 1e5])).points[0]
    assert far.extrapolated and far.transferred < 0.5 * S.true_transferred(1e3, 1e7)
    assert "over 999k text-python examples" in far.text() and "cannot say how much more" in far.text()
    assert "log-log line says" not in far.text()  # no number the curve cannot support
    # a growth trend through points past the curve's reach would be the extrapolation's slope
    grown = _task(S.records(1e7, [1e3], [1e4, 1e5], tokens=(1e9, 2e9, 4e9, 8e9), growth=lambda t: (t / 1e9) ** 0.3))
    g = grown.growth[1e3]
    assert all(p.extrapolated for p in grown.points)
    assert g.status == "insufficient_evidence" and "past its reach" in g.why, g.why


def test_ossification_is_flagged_when_pretrained_is_worse_than_from_scratch():
    recs = S.records(1e7, [1e3, 1e4], noise=0.002, repeats=3)
    for r in recs:  # pre-training hurt: 0.3 nats worse than from scratch at every D_F
        if r["pretrained"]:
            r["metrics"]["cross_entropy"] += S.scratch_loss(1e7, r["finetune_size"]["examples"]) + 0.3 - \
                S.scratch_loss(1e7, r["finetune_size"]["examples"] + S.true_transferred(r["finetune_size"]["examples"], 1e7))
    t = _task(recs)
    for p in t.points:
        assert p.ossified and p.status == "ossified" and p.high < 0 and p.transferred < 0
        assert "ossification" in p.text() and "worse than training from scratch" in p.text()
    assert t.law is None  # no positive D_T to fit


def test_growth_with_pretraining_growing_declining_flat_and_insufficient():
    def status(growth, tokens=TOKENS):
        return _task(S.records(1e7, [1e3], BASE, tokens=tokens, growth=growth, noise=0.003, repeats=2)).growth[1e3]

    g = status(lambda t: (t / 1e10) ** 0.5)
    assert g.status == "growing" and g.exponent == pytest.approx(0.5, abs=0.03) and g.low > 0
    assert status(lambda t: (t / 1e7) ** -0.3).status == "declining"
    flat = status(lambda t: np.minimum(t / 1e7, 1.0) * 0 + 1.0)
    assert flat.status == "flat" and abs(flat.slope) < 0.02
    few = status(lambda t: (t / 1e10) ** 0.5, tokens=TOKENS[:2])
    assert few.status == "insufficient_evidence" and "needs >= 3" in few.why
    assert "insufficient evidence" in few.text()


def test_ce_noise_unknown_gives_no_interval_and_says_so_scatter_gives_one():
    t = _task(S.records(1e7, FT, BASE))  # one fine-tune per point, no bootstrap, one probe point
    p = t.points[0]
    assert math.isnan(p.low) and "unknown" in t.noise and "no interval" in p.text()
    rng = np.random.default_rng(3)
    recs = S.records(1e7, FT[:2], BASE, tokens=TOKENS, growth=lambda t: (t / 1e10) ** 0.3)
    for r in recs:
        r["metrics"]["cross_entropy"] += 0.005 * rng.standard_normal()
    t = _task(recs)
    assert "scatter" in t.noise and all(p.low < p.transferred < p.high for p in t.points)


def test_bad_input_and_tasks_that_cannot_be_converted():
    two = S.records(1e6, FT, BASE) + S.records(1e7, FT, BASE)
    with pytest.raises(ValueError, match="2 runs"):
        data_transferred(two)
    assert data_transferred(two, run_id="n1e+07").tasks[TASK].n_params == 1e7
    with pytest.raises(ValueError, match="interval"):
        data_transferred(two, interval=1.5)
    one = _task(S.records(1e7, [1e3], [1e3]))
    assert not one.ok and "found 1" in one.why and one.line(1e3) == "" and "not computed" in str(one)
    with pytest.raises(ValueError, match="distinct"):
        baseline_curve([10, 10], [2.0, 1.0])


def test_result_reads_and_serializes():
    res = data_transferred(S.records(1e7, FT[:2], [1e3, 1e4], tokens=TOKENS[:3], noise=0.003, repeats=2))
    d = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    pts = d["tasks"][TASK]["points"]
    assert len(pts) == 6 and {p["status"] for p in pts} <= {"transfer", "unclear"}
    assert d["tasks"][TASK]["baseline"]["method"] == "log_log" and "1000" in d["tasks"][TASK]["growth"]
    text = str(res)
    assert "text-python: data transferred by pre-training" in text and "D_f=1k" in text
    assert [format_count(x) for x in (12345, 850, -31.2, 2.5e6, 3.4e9)] == ["12k", "850", "-31", "2.5M", "3.4B"]


LINE = re.compile(r"^transfer_probe \| en-fr \| pre-training so far is worth (~|over )(-?[\d.]+[kMB]?) en-fr pairs "
                  r".*at D_f=(16|64) \(x")


def test_callback_logs_tracks_and_records_the_data_transferred(tiny_gpt2, tiny_tokenizer, translation_pairs,
                                                                translation_files, tmp_path, caplog):
    train = lm_examples(tiny_tokenizer, translation_pairs["train"])
    probe = TransferProbeCallback([small_task(translation_files, sizes=(16, 64))], every_tokens=4 * 4 * SEQ_LEN,
                                  seq_len=SEQ_LEN, finetune=quick_finetune(max_steps=8, bootstrap=100))
    trainer = make_trainer(tiny_gpt2, tiny_tokenizer, train, tmp_path, callbacks=[probe], max_steps=8)
    with caplog.at_level(logging.INFO, logger="transfer_probe"):
        trainer.train()
    path = tmp_path / "transfer_probe" / "history.jsonl"
    hist = read_history(path)
    recs = [r for r in hist if r["kind"] == "transfer"]
    # one record per (probe point, D_f): steps 4 and 8, D_f 16 and 64
    assert [(r["step"], r["finetune_size"]) for r in recs] == [(4, 16), (4, 64), (8, 16), (8, 64)]
    # the same numbers as the module gives from the history's probe records (pre-training helped CE here)
    again = data_transferred([r for r in hist if r["kind"] == "probe"]).tasks["en-fr"]
    for r in recs:
        p = next(q for q in again.points if q.tokens == r["tokens"] and q.finetune_size == r["finetune_size"])
        assert r["transferred"] == pytest.approx(p.transferred) and r["transferred"] > 0
        assert r["multiplier"] == pytest.approx(p.multiplier) and r["low"] < r["transferred"] < r["high"]
        assert r["loss"] < r["baseline_loss"] and r["transfer_status"] in ("transfer", "unclear")
        assert r["baseline_method"] == "log_log" and r["noise"].startswith("recorded")
    lines = [m for m in caplog.messages if "pre-training so far is worth" in m]
    assert len(lines) == 4 and all(LINE.match(m) for m in lines), lines
    # trackers: through trainer.log, at the step probed
    logged = [h for h in trainer.state.log_history if "transfer_probe/en-fr/df=64/data_transferred" in h]
    assert [h["step"] for h in logged] == [4, 8]
    assert logged[-1]["transfer_probe/en-fr/df=64/data_transferred"] == pytest.approx(recs[-1]["transferred"])
    assert logged[-1]["transfer_probe/en-fr/df=64/data_multiplier"] == pytest.approx(recs[-1]["multiplier"])
    assert logged[-1]["transfer_probe/en-fr/df=64/ossified"] == 0.0
    # the readers skip the new kind: verdicts and points are those of the probe records alone
    assert set(diagnose_all(hist)) == {("en-fr", 16), ("en-fr", 64)}
    assert sum(r["kind"] == "transfer" for r in read_points(path)) == 2  # the newest per (task, D_f)
