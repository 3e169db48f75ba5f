"""The offline demo end to end (``--quick``): real pre-training, real probes, real verdicts.

One quick demo run is shared by the tests of this module (about 2 minutes on 2 cores).
"""

from __future__ import annotations

import math
from collections import Counter

import pytest

from transfer_probe import demodata
from transfer_probe.demo import QUICK_SETTINGS, format_table, main, run_demo
from transfer_probe.diagnose import STATUSES, WARNING_STATUSES, diagnose_all
from transfer_probe.history import aggregate, probe_records, read_history

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return run_demo(out, quick=True, seed=0, progress=False)


def test_quick_demo_writes_one_history_per_corpus(quick_demo):
    s = QUICK_SETTINGS
    assert [r.corpus for r in quick_demo.rows] == list(s.corpora)
    assert [p.parent.parent.name for p in quick_demo.history_paths] == list(s.corpora)
    expected_tokens = sorted(float(s.tokens(p)) for p in s.probe_steps)
    for path in quick_demo.history_paths:
        probes = probe_records(read_history(path), ok_only=False)
        assert all(r["status"] == "ok" for r in probes), [r.get("error") for r in probes]
        pre = [r for r in probes if r["pretrained"]]
        base = [r for r in probes if not r["pretrained"]]
        # Every probe point, every repeat (plus at most the adaptive cap of re-measurements at
        # borderline points), and the no-pretraining baseline.
        assert sorted({float(r["tokens"]) for r in pre}) == expected_tokens
        per_point = Counter(float(r["tokens"]) for r in pre)
        assert min(per_point.values()) == s.repeats
        assert len(expected_tokens) * s.repeats <= len(pre) <= len(expected_tokens) * s.repeats + s.adaptive_repeats
        assert sorted({r["repeat"] for r in pre}) == list(range(max(per_point.values())))
        assert len(base) == s.repeats and all(r["tokens"] == 0 for r in base)
        for r in probes:
            assert r["task"] == "en-fr" and r["finetune_size"]["examples"] in s.finetune_sizes
            bleu, ce = r["metrics"]["bleu"], r["metrics"]["cross_entropy"]
            assert math.isfinite(bleu) and 0.0 <= bleu <= 100.0
            assert math.isfinite(ce) and ce > 0.0
            low, high = r["metrics_ci"]["bleu"]
            assert low <= bleu <= high
            assert r["test_examples"] == s.n_test


def test_quick_demo_rows_match_the_histories(quick_demo):
    for row, path in zip(quick_demo.rows, quick_demo.history_paths, strict=True):
        records = read_history(path)
        verdicts = diagnose_all(records, budget_tokens=float(QUICK_SETTINGS.tokens(QUICK_SETTINGS.budget_steps)))
        assert len(verdicts) == 1
        verdict = next(iter(verdicts.values()))
        assert row.status == verdict.status and row.status in STATUSES
        assert row.recommendation == verdict.recommendation
        # A verdict, not "wait": the quick schedule has enough probe points to fit and check the law.
        # (or, under the rules for real curves, waiting because early probes sat at the baseline: warm-up)
        assert row.status != "insufficient_data" or any("warm-up" in r for r in row.reasons), row.reasons
        points = aggregate([r for r in probe_records(records) if r["pretrained"]])
        last = max(points, key=lambda p: p["tokens"])
        assert row.last_bleu == pytest.approx(last["mean"]["bleu"])
        assert row.last_ce == pytest.approx(last["mean"]["cross_entropy"])
        assert row.probes == len(QUICK_SETTINGS.probe_steps)
    table = quick_demo.table()
    for row in quick_demo.rows:
        assert row.corpus in table and row.status in table
    assert table == format_table(quick_demo.rows)


def test_quick_demo_separates_aligned_from_misaligned(quick_demo):
    rows = {r.corpus: r for r in quick_demo.rows}
    aligned, english = rows["bilingual"], rows["english"]
    # Measured, not assumed (experiments/README.md): after 0.4M tokens the bilingual model's
    # downstream CE is about half the English-only one's (1.5 against 3.0) and its BLEU above both the
    # English-only model's (near 0) and the random-init baseline (about 3). One probe's BLEU is
    # noisy (+-2), so the BLEU margins asserted are small; the CE gap is wide.
    assert aligned.last_ce < english.last_ce - 0.7
    assert aligned.last_bleu > english.last_bleu + 1.0
    assert aligned.last_bleu > aligned.baseline_bleu
    assert english.last_bleu < english.baseline_bleu
    # What the README promises the demo shows: the verdicts differ. The aligned corpus raises no
    # warning, the English-only one does (which warning is the verdict rules' business).
    assert aligned.status not in WARNING_STATUSES, (aligned.status, aligned.reasons)
    assert english.status in WARNING_STATUSES, (english.status, english.reasons)


def test_quick_demo_report(quick_demo):
    try:
        import transfer_probe.report  # noqa: F401
    except ImportError:
        assert quick_demo.report_path is None and "not available" in quick_demo.report_note
        return
    assert quick_demo.report_path is not None, quick_demo.report_note
    html = quick_demo.report_path.read_text(encoding="utf-8")
    assert "<img" in html and "bilingual" in html


def test_demodata_keeps_test_numbers_out_of_training_text():
    task = demodata.number_task(n_train=200, n_test=50, finetune_sizes=[50])
    test_fr = {demodata.french_words(n) for n in task.test_numbers}
    assert {t for _, t in task.test_pairs} == test_fr
    assert not test_fr & {t for _, t in task.train_pairs}
    lines = demodata.corpus_lines("bilingual", 50_000, exclude=task.test_numbers, pair_fraction=1.0)
    assert all(" = " in line for line in lines)
    assert not test_fr & {line.split(" = ")[1] for line in lines}
    assert demodata.english_words(1234) == "one thousand two hundred thirty-four"
    assert demodata.french_words(80) == "quatre-vingts"


def test_demodata_bad_input():
    with pytest.raises(ValueError, match="unknown corpus 'poetry'"):
        demodata.corpus_lines("poetry", 100)
    with pytest.raises(ValueError, match="pair_fraction"):
        demodata.corpus_lines("bilingual", 100, pair_fraction=1.5)
    with pytest.raises(ValueError, match="finetune size 500 is larger than n_train=100"):
        demodata.number_task(n_train=100, finetune_sizes=[500])


def test_main_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "--quick" in capsys.readouterr().out
