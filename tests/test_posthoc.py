"""`transfer-probe probe`: the same probes after the fact on checkpoint directories of a real run."""

import json
import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tiny_tokenizer, tiny_gpt2_config, translation_pairs):
    import torch
    from transformers import GPT2LMHeadModel, Trainer, TrainingArguments

    out = tmp_path_factory.mktemp("run")
    text = [f"{en} = {fr}" for en, fr in translation_pairs["train"]]
    ids = tiny_tokenizer(text, truncation=True, max_length=32, padding="max_length")["input_ids"]
    data = [{"input_ids": torch.tensor(x), "labels": torch.tensor(x)} for x in ids]
    torch.manual_seed(0)
    args = TrainingArguments(output_dir=str(out), max_steps=20, per_device_train_batch_size=8, save_steps=10,
                             save_strategy="steps", report_to=[], use_cpu=True, disable_tqdm=True,
                             include_num_input_tokens_seen=True, logging_steps=100, learning_rate=1e-3)
    Trainer(model=GPT2LMHeadModel(tiny_gpt2_config), args=args, train_dataset=data,
            processing_class=tiny_tokenizer).train()
    return sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))


def test_probe_command_writes_a_history_fit_reads(checkpoints, translation_files, tmp_path):
    assert [p.name for p in checkpoints] == ["checkpoint-10", "checkpoint-20"]
    hist = tmp_path / "probes.jsonl"
    cmd = [sys.executable, "-m", "transfer_probe.cli", "probe", *map(str, checkpoints),
           "--train", str(translation_files.train_jsonl), "--test", str(translation_files.test_jsonl),
           "--src", "en", "--tgt", "fr", "--finetune-size", "64", "--steps", "20", "--batch-size", "16",
           "--baseline", "--device", "cpu", "-o", str(hist)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    recs = [json.loads(line) for line in hist.read_text().splitlines()]
    assert len(recs) == 3 and all(r["status"] == "ok" for r in recs), recs
    assert [r["pretrained"] for r in recs] == [False, True, True]
    # tokens come from trainer_state.json's num_input_tokens_seen: 8 x 32 tokens per step
    assert [r["tokens"] for r in recs] == [0, 10 * 8 * 32, 20 * 8 * 32]
    assert [r["step"] for r in recs] == [0, 10, 20]
    assert recs[1]["task"] == "en-fr" and recs[1]["finetune_size"]["examples"] == 64
    # each checkpoint's own weights were fine-tuned: downstream CE falls with pre-training, from the
    # random-init baseline to checkpoint-20 (a probe that loaded the wrong weights would not)
    ce = [r["metrics"]["cross_entropy"] for r in recs]
    assert ce[0] > ce[1] > ce[2], ce
    assert all(r["metrics"]["chrf"] > 0 and r["metric_signatures"]["bleu"].startswith("nrefs:1") for r in recs)
    # ... and `fit` reads the file: one group, its two pretrained points, the baseline kept apart
    fit = subprocess.run([sys.executable, "-m", "transfer_probe.cli", "fit", str(hist), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert fit.returncode == 0, fit.stderr[-3000:]
    res = json.loads(fit.stdout)
    assert [(g["task"], g["finetune_size"]) for g in res] == [("en-fr", 64)], res
    assert res[0]["fit"]["n_points"] == 2 and res[0]["fit"]["x_range"] == [10 * 8 * 32, 20 * 8 * 32]
    assert res[0]["fit"]["ok"] is False  # two points cannot identify a 3-parameter law; it says so


def test_probe_command_bad_checkpoint_is_one_line(tmp_path, translation_files):
    out = subprocess.run([sys.executable, "-m", "transfer_probe.cli", "probe", str(tmp_path / "nope"),
                          "--train", str(translation_files.train_jsonl), "--test", str(translation_files.test_jsonl)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "nope" in out.stderr
