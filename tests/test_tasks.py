"""TranslationTask: loading, validation (each bad input is a clear ValueError), tokenization, caching."""

import json
import pickle

import pytest

from transfer_probe.tasks import Task, TranslationTask
from transfer_probe.tasks.base import tokenizer_fingerprint


def test_from_files_reads_jsonl_csv_tsv_alike(translation_files, translation_pairs):
    f = translation_files
    tasks = [TranslationTask.from_files(a, b, source="en", target="fr", finetune_sizes=[10])
             for a, b in ((f.train_jsonl, f.test_jsonl), (f.train_csv, f.test_csv), (f.train_tsv, f.test_tsv))]
    for t in tasks:
        assert t.train_pairs == translation_pairs["train"] and t.test_pairs == translation_pairs["test"]
        assert t.name == "en-fr" and t.finetune_sizes == (10,)
        assert isinstance(t, Task)
    # The reverse direction comes from the same files.
    rev = TranslationTask.from_files(f.train_jsonl, f.test_jsonl, source="fr", target="en", finetune_sizes=[1])
    assert rev.test_pairs[0] == translation_pairs["test"][0][::-1] and rev.name == "fr-en"


def test_from_dataset_and_from_hub_on_a_local_directory(tmp_path, translation_pairs):
    import datasets

    rows = [{"en": s, "fr": t} for s, t in translation_pairs["train"]]
    ds = datasets.Dataset.from_list(rows)
    task = TranslationTask.from_dataset(ds, ds.select(range(5)), source="en", target="fr", finetune_sizes=[3])
    assert task.train_pairs == translation_pairs["train"] and len(task.test_pairs) == 5
    # from_hub goes through datasets.load_dataset; a local data directory exercises the same path offline.
    d = tmp_path / "hubdir"
    d.mkdir()
    for split, pairs in translation_pairs.items():
        with open(d / f"{split}.jsonl", "w") as fh:
            for s, t in pairs:
                fh.write(json.dumps({"translation": {"en": s, "fr": t}}) + "\n")
    hub = TranslationTask.from_hub(str(d), source="en", target="fr", finetune_sizes=[8])
    assert hub.test_pairs == translation_pairs["test"] and hub.name == "hubdir:en-fr"
    assert TranslationTask.from_hub(str(d), source="en", target="fr", task_name="digits").name == "digits"
    with pytest.raises(ValueError, match="no split 'validation'"):
        TranslationTask.from_hub(str(d), source="en", target="fr", test_split="validation")


def _write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "case, match",
    [
        ("missing_file", r"train file not found: .*nope\.jsonl"),
        ("empty_file", r"test file .* is empty"),
        ("header_only_csv", r"train file .*t\.csv has no rows"),
        ("missing_column", r"no column\(s\) \['fr'\].*found columns \['en', 'de'\]"),
        ("missing_language", r"'translation' field has no \['fr'\]"),
        ("bad_extension", r"unknown extension '\.txt'"),
        ("df_too_large", r"D_f=5000 is larger than the train split \(400 examples\)"),
        ("nonpositive_df", r"fine-tuning size 0 must be positive"),
        ("empty_target", r"1 test examples have an empty target \(first at row 1\)"),
        ("missing_value", r"t\.csv, row 1: missing value for 'fr'"),
    ],
)
def test_bad_input_raises_clear_value_error(tmp_path, translation_files, case, match):
    f = translation_files
    args = {"train": f.train_jsonl, "test": f.test_jsonl, "finetune_sizes": [10]}
    if case == "missing_file":
        args["train"] = tmp_path / "nope.jsonl"
    elif case == "empty_file":
        args["test"] = _write(tmp_path / "t.jsonl", "")
    elif case == "header_only_csv":
        args["train"] = _write(tmp_path / "t.csv", "en,fr\n")
    elif case == "missing_column":
        args["train"] = _write(tmp_path / "t.csv", "en,de\none,eins\n")
    elif case == "missing_language":
        args["test"] = _write(tmp_path / "t.jsonl", json.dumps({"translation": {"en": "one", "de": "eins"}}) + "\n")
    elif case == "bad_extension":
        args["test"] = _write(tmp_path / "t.txt", "one\tun\n")
    elif case == "df_too_large":
        args["finetune_sizes"] = [10, 5000]
    elif case == "nonpositive_df":
        args["finetune_sizes"] = [0]
    elif case == "empty_target":
        rows = [{"translation": {"en": "one", "fr": "un"}}, {"translation": {"en": "two", "fr": " "}}]
        args["test"] = _write(tmp_path / "t.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    elif case == "missing_value":
        args["test"] = _write(tmp_path / "t.csv", "en,fr\none,un\ntwo,\n")
    with pytest.raises(ValueError, match=match):
        TranslationTask.from_files(args["train"], args["test"], source="en", target="fr",
                                   finetune_sizes=args["finetune_sizes"])


def test_tokenizer_without_needed_special_tokens_is_rejected(translation_task, tiny_tokenizer, tiny_gpt2_config,
                                                             tiny_t5_config):
    no_pad = tiny_tokenizer.__class__(tokenizer_object=tiny_tokenizer.backend_tokenizer, eos_token="</s>")
    translation_task.validate(no_pad, tiny_gpt2_config)  # decoder-only: pads with eos
    with pytest.raises(ValueError, match="no pad token, which an encoder-decoder model needs"):
        translation_task.validate(no_pad, tiny_t5_config)
    no_eos = tiny_tokenizer.__class__(tokenizer_object=tiny_tokenizer.backend_tokenizer, pad_token="<pad>")
    with pytest.raises(ValueError, match="has no eos token"):
        translation_task.validate(no_eos, tiny_gpt2_config)
    small = tiny_gpt2_config.__class__(**{**tiny_gpt2_config.to_dict(), "vocab_size": 100})
    with pytest.raises(ValueError, match="vocab_size is 100"):
        translation_task.validate(tiny_tokenizer, small)


def test_decoder_only_features_take_loss_on_target_only(translation_task, tiny_tokenizer, tiny_gpt2_config):
    p = translation_task.prepare(tiny_tokenizer, tiny_gpt2_config)
    src, tgt = translation_task.test_pairs[0]
    f = p.test[0]
    assert tiny_tokenizer.decode(f["input_ids"]) == f"{src} = {tgt}</s>"
    n_prompt = len(p.prompts[0])
    assert f["input_ids"][:n_prompt] == p.prompts[0]
    assert f["labels"][:n_prompt] == [-100] * n_prompt
    assert f["labels"][n_prompt:] == f["input_ids"][n_prompt:] and f["labels"][-1] == tiny_tokenizer.eos_token_id
    assert tiny_tokenizer.decode(f["labels"][n_prompt:], skip_special_tokens=True).strip() == tgt
    assert not p.is_encoder_decoder and p.references[0] == tgt
    assert p.max_new_tokens >= max(sum(x != -100 for x in g["labels"]) for g in p.test)


def test_encoder_decoder_features(translation_task, tiny_tokenizer, tiny_t5_config):
    p = translation_task.prepare(tiny_tokenizer, tiny_t5_config)
    src, tgt = translation_task.test_pairs[0]
    f = p.test[0]
    eos = tiny_tokenizer.eos_token_id
    assert tiny_tokenizer.decode(f["input_ids"]) == f"{src}</s>" and f["input_ids"] == p.prompts[0]
    assert tiny_tokenizer.decode(f["labels"]) == f"{tgt}</s>" and f["labels"][-1] == eos
    assert p.is_encoder_decoder and p.decoder_start_token_id == tiny_tokenizer.pad_token_id


def test_prepare_is_cached_across_calls_and_pickled_copies(translation_task, tiny_tokenizer, tiny_gpt2_config,
                                                          tiny_t5_config):
    a = translation_task.prepare(tiny_tokenizer, tiny_gpt2_config)
    assert translation_task.prepare(tiny_tokenizer, tiny_gpt2_config) is a
    # A job sent to a worker process carries a pickled task and tokenizer: same cache entry.
    task2, tok2 = pickle.loads(pickle.dumps((translation_task, tiny_tokenizer)))
    assert tokenizer_fingerprint(tok2) == tokenizer_fingerprint(tiny_tokenizer)
    assert task2.prepare(tok2, tiny_gpt2_config) is a
    assert translation_task.prepare(tiny_tokenizer, tiny_t5_config) is not a


def test_train_subsets_nested_by_default_and_resampled_per_repeat(translation_task, tiny_tokenizer, tiny_gpt2_config):
    p = translation_task.prepare(tiny_tokenizer, tiny_gpt2_config)
    small = translation_task.train_indices(p, 64)
    large = translation_task.train_indices(p, 256, repeat=3)
    assert large[:64] == small and len(set(large)) == 256
    r0 = translation_task.train_indices(p, 64, repeat=0, seed=0, resample=True)
    r1 = translation_task.train_indices(p, 64, repeat=1, seed=0, resample=True)
    assert r0 == translation_task.train_indices(p, 64, repeat=0, seed=0, resample=True)
    assert r0 != r1 and len(set(r0)) == 64
    assert p.total_tokens(small) > p.target_tokens(small) > 64


def test_templates_and_extra_metric_settings_are_checked(translation_pairs):
    with pytest.raises(ValueError, match="prompt_template 'Translate:' must contain '{source}'"):
        TranslationTask(translation_pairs["train"], translation_pairs["test"], prompt_template="Translate:")
    with pytest.raises(ValueError, match="bad BLEU settings"):
        TranslationTask(translation_pairs["train"], translation_pairs["test"], bleu_args={"nope": 1})
    t = TranslationTask(translation_pairs["train"], translation_pairs["test"], source="en", target="fr",
                        prompt_template="English: {source}\nFrench:", finetune_sizes=[5], max_test_examples=7)
    assert len(t.test_pairs) == 7 and t.describe()["prompt_template"].startswith("English:")
    assert "TranslationTask(name='en-fr'" in repr(t)


def test_task_intervals_at_the_level_asked_and_a_legacy_task_says_90(translation_task, tiny_tokenizer,
                                                                      tiny_gpt2_config):
    from transfer_probe.tasks.base import TaskScores, score_task

    prepared = translation_task.prepare(tiny_tokenizer, tiny_gpt2_config)
    refs = prepared.references
    hyps = [r if i % 3 else "wrong" for i, r in enumerate(refs)]
    wide, lw = score_task(translation_task, hyps, prepared, bootstrap=300, seed=0, interval=0.95)
    narrow, ln = score_task(translation_task, hyps, prepared, bootstrap=300, seed=0, interval=0.5)
    assert (lw, ln) == (0.95, 0.5)
    width = lambda s: s.metrics_ci["bleu"][1] - s.metrics_ci["bleu"][0]  # noqa: E731
    assert width(narrow) < 0.6 * width(wide)

    class Legacy:  # a task written before score() took an interval
        def score(self, hypotheses, prepared, *, bootstrap=0, seed=0):
            return TaskScores(metrics={"exact_match": 1.0})

    assert score_task(Legacy(), hyps, prepared, bootstrap=0, seed=0, interval=0.5)[1] == 0.9
