"""Metrics: sacrebleu scores and signatures, bootstrap intervals, target-only cross-entropy, evaluate modules."""

import random

import numpy as np
import pytest
from sacrebleu.metrics import BLEU, CHRF

from transfer_probe import metrics


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models on a shared 2-core machine: one thread avoids contention (restored after each test).
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


WORDS = "zero un deux trois quatre cinq six sept huit neuf".split()


def _corpus(n, seed=0, noise=0.3):
    """References of 3-8 words and hypotheses with a fraction of words substituted."""
    rng = random.Random(seed)
    refs, hyps = [], []
    for _ in range(n):
        ref = [rng.choice(WORDS) for _ in range(rng.randint(3, 8))]
        hyp = [rng.choice(WORDS) if rng.random() < noise else w for w in ref]
        refs.append(" ".join(ref))
        hyps.append(" ".join(hyp))
    return hyps, refs


def test_bleu_and_chrf_equal_sacrebleu_with_signatures():
    hyps, refs = _corpus(50)
    b = metrics.corpus_bleu(hyps, refs)
    c = metrics.corpus_chrf(hyps, refs)
    ref_bleu, ref_chrf = BLEU(), CHRF()
    assert b.score == pytest.approx(ref_bleu.corpus_score(hyps, [refs]).score, abs=1e-9)
    assert c.score == pytest.approx(ref_chrf.corpus_score(hyps, [refs]).score, abs=1e-9)
    assert b.signature == str(ref_bleu.get_signature()) and "tok:13a" in b.signature
    assert c.signature.startswith("nrefs:1|case:mixed|eff:yes|nc:6|nw:0")
    assert metrics.corpus_bleu(hyps, refs, tokenize="char").signature != b.signature
    assert metrics.corpus_chrf(hyps, refs, word_order=2).signature != c.signature
    em = metrics.exact_match(["a ", "b", "c"], ["a", "x", "c"])
    assert em.score == pytest.approx(200 / 3)


def test_bootstrap_from_sufficient_statistics_equals_rescoring_resampled_strings():
    hyps, refs = _corpus(30, seed=1)
    res = metrics.corpus_bleu(hyps, refs, bootstrap=50, seed=7)
    # The same resamples, scored the slow way: build each resampled corpus and score it from strings.
    counts = metrics._resample_counts(len(hyps), 50, 7)
    slow = []
    for row in counts:
        idx = [i for i, k in enumerate(row) for _ in range(k)]
        slow.append(BLEU().corpus_score([hyps[i] for i in idx], [[refs[i] for i in idx]]).score)
    assert res.ci == pytest.approx(metrics.bootstrap_interval(np.array(slow), res.score))


def test_bootstrap_intervals_contain_the_estimate_and_shrink_with_more_sentences():
    widths = {}
    for n in (25, 400):
        hyps, refs = _corpus(n, seed=n)
        for name, fn in (("bleu", metrics.corpus_bleu), ("chrf", metrics.corpus_chrf), ("em", metrics.exact_match)):
            r = fn(hyps, refs, bootstrap=300, seed=0)
            lo, hi = r.ci
            assert lo <= r.score <= hi and hi > lo
            widths[name, n] = hi - lo
    for name in ("bleu", "chrf", "em"):
        # Width ~ 1/sqrt(n): 16x the sentences, about a quarter of the width.
        assert widths[name, 400] < 0.5 * widths[name, 25], (name, widths)
    assert metrics.corpus_bleu(["a b c d"], ["a b c d"], bootstrap=0).ci is None


def test_cross_entropy_ratio_and_interval():
    rng = np.random.default_rng(0)
    counts = rng.integers(3, 9, size=200).astype(float)
    sums = counts * rng.normal(2.0, 0.3, size=200)
    r = metrics.bootstrap_ratio(sums, counts, bootstrap=400, seed=1)
    assert r.score == pytest.approx(sums.sum() / counts.sum())
    assert r.ci[0] < r.score < r.ci[1] and r.ci[1] - r.ci[0] < 0.2
    small = metrics.bootstrap_ratio(sums[:20], counts[:20], bootstrap=400, seed=1)
    assert small.ci[1] - small.ci[0] > 2 * (r.ci[1] - r.ci[0])
    with pytest.raises(ValueError, match="equal-length non-empty"):
        metrics.bootstrap_ratio([1.0], [1.0, 2.0])


def test_target_cross_entropy_counts_target_tokens_only(tiny_gpt2, tiny_t5, translation_task, tiny_tokenizer):
    import torch

    for model in (tiny_gpt2, tiny_t5):
        p = translation_task.prepare(tiny_tokenizer, model.config)
        feats = p.test[:6]
        nll, cnt = metrics.target_cross_entropy(model, feats, pad_token_id=p.pad_token_id, batch_size=4)
        for f, s, c in zip(feats, nll, cnt, strict=True):
            n_target = sum(x != -100 for x in f["labels"])
            assert c == n_target  # decoder-only: prompt tokens carry no loss
            with torch.no_grad():
                out = model(input_ids=torch.tensor([f["input_ids"]]), labels=torch.tensor([f["labels"]]))
            # Transformers' own loss (mean over labelled tokens) on the single example.
            assert s / c == pytest.approx(out.loss.item(), rel=1e-4)
        # Changing the prompt's labels to real tokens would change the count: check that -100 is respected.
        if not p.is_encoder_decoder:
            f = dict(feats[0])
            f["labels"] = list(f["input_ids"])
            _, cnt_all = metrics.target_cross_entropy(model, [f], pad_token_id=p.pad_token_id)
            assert cnt_all[0] == len(f["input_ids"]) - 1 > cnt[0]
        assert model.training  # mode restored (fixture models are in train mode)


def test_packaged_evaluate_modules_load_offline_and_agree():
    hyps, refs = _corpus(40, seed=3)
    for name, fn in (("bleu", metrics.corpus_bleu), ("chrf", metrics.corpus_chrf), ("exact_match", metrics.exact_match)):
        module = metrics.load_metric(name)
        out = module.compute(predictions=hyps, references=refs, bootstrap=100, seed=2)
        direct = fn(hyps, refs, bootstrap=100, seed=2)
        assert out["score"] == pytest.approx(direct.score) and out["ci"] == pytest.approx(list(direct.ci))
        assert out["signature"] == direct.signature
    with pytest.raises(ValueError, match="no packaged metric module 'rouge'"):
        metrics.metric_module_path("rouge")


def length_ratio(predictions, references):
    return {"ratio": sum(map(len, predictions)) / sum(map(len, references))}


def test_extra_metrics_objects_paths_and_callables_are_recorded(translation_pairs, tiny_tokenizer, tiny_gpt2_config):
    import pickle

    from transfer_probe.tasks import TranslationTask

    module = metrics.load_metric("chrf")
    task = TranslationTask(translation_pairs["train"], translation_pairs["test"], source="en", target="fr",
                           finetune_sizes=[4], extra_metrics=[module, metrics.metric_module_path("exact_match"),
                                                              length_ratio])
    p = task.prepare(tiny_tokenizer, tiny_gpt2_config)
    hyps = [r if i % 2 else r.split()[0] for i, r in enumerate(p.references)]
    s = task.score(hyps, p, bootstrap=50)
    assert s.metrics["chrf"] == pytest.approx(s.metrics["extra_chrf"])
    assert s.metrics["extra_exact_match"] == pytest.approx(s.metrics["exact_match"]) == 50.0
    assert s.metrics["length_ratio_ratio"] < 1
    assert set(s.metrics_ci) == {"bleu", "chrf", "exact_match"} and s.metric_signatures["bleu"].startswith("nrefs:1")
    # evaluate module objects do not pickle; the task sends their local path instead.
    clone = pickle.loads(pickle.dumps(task))
    assert isinstance(clone.extra_metrics[0], str)
    assert clone.score(hyps, p).metrics["extra_chrf"] == pytest.approx(s.metrics["extra_chrf"])
