"""`transfer-probe probe`: the same probes after the fact on checkpoint directories of a real run."""

import json
import re
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
           "--finetune-size", "64", "--steps", "20", "--batch-size", "16",
           "--baseline", "--device", "cpu", "-o", str(hist)]  # --src en by default, --tgt fr read off the data
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    recs = [json.loads(line) for line in hist.read_text().splitlines()]
    assert len(recs) == 3 and all(r["status"] == "ok" for r in recs), recs
    assert [r["checkpoint"] for r in recs] == [None, *(str(c.resolve()) for c in checkpoints)]
    # it prints each checkpoint's results with their intervals, then the verdict (it used to print
    # only a progress bar and "3 probe records appended")
    lines = out.stdout.splitlines()
    num, ci = r"\d+\.\d", r"\[\d+\.\d, \d+\.\d\]"
    ce = r"\d+\.\d{3} \[\d+\.\d{3}, \d+\.\d{3}\]"
    for line, where, tokens in zip(lines, ["baseline (no pre-training)", *map(str, checkpoints)], [0, 2560, 5120],
                                   strict=False):
        assert re.fullmatch(rf"{re.escape(where)} \| tokens {tokens} \| D_f=64 \| BLEU {num} {ci} \| chrF {num} {ci} "
                            rf"\| exact match \S+ \[\S+, \S+\] \| CE {ce}", line), line
    assert lines[3].startswith("transfer_probe | en-fr D_f=64 | tokens 5120 | BLEU ") and (
        "| insufficient_data: 2 points, 3 more probes needed for a verdict | wait") in lines[3], out.stdout
    assert lines[4] == "  - 2 probe points with tokens > 0, the law needs 5 (4 to fit, 1 to check): about 3 more probes needed"
    assert re.fullmatch(rf"3 probe records appended to {re.escape(str(hist))} \(run posthoc-[0-9a-f]{{8}}\)", lines[-1])
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


def probe_cli(*args):
    return subprocess.run([sys.executable, "-m", "transfer_probe.cli", "probe", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_probe_errors_name_the_flags_not_the_python_arguments(checkpoints, translation_files, tmp_path, capsys):
    """Checked before any fine-tune; they said ``check source=/target=``, and --tgt defaulted to de.
    In-process (the same main() the console script runs): four interpreter starts cost ~20 s."""
    from transfer_probe.cli import main

    def probe_cli(*args):
        code = main(["probe", *map(str, args), "-o", str(tmp_path / "h.jsonl")])
        err = capsys.readouterr().err
        return subprocess.CompletedProcess(args, code, "", err)

    files = ["--train", translation_files.train_jsonl, "--test", translation_files.test_jsonl]
    out = probe_cli(checkpoints[0], *files, "--tgt", "de")
    assert out.returncode == 2 and out.stderr == (
        f"transfer-probe probe: error: --tgt de: the train file {translation_files.train_jsonl} has no 'de'; "
        "its languages: en, fr\n")
    out = probe_cli(checkpoints[0], *files, "--src", "de")
    assert "error: --src de: the train file" in out.stderr and "its languages: en, fr" in out.stderr
    three = tmp_path / "three.jsonl"
    three.write_text(json.dumps({"translation": {"en": "one", "fr": "un", "de": "eins"}}) + "\n")
    out = probe_cli(checkpoints[0], "--train", three, "--test", translation_files.test_jsonl)
    assert out.stderr == (f"transfer-probe probe: error: --tgt is needed: the train file {three} has the "
                          "languages en, fr, de; pass --tgt LANG (one of fr, de)\n")
    # a later row without the target: the task's own check, in the flags' words
    holey = tmp_path / "holey.jsonl"
    holey.write_text(json.dumps({"translation": {"en": "one", "fr": "un"}}) + "\n"
                     + json.dumps({"translation": {"en": "two"}}) + "\n")
    out = probe_cli(checkpoints[0], "--train", holey, "--test", translation_files.test_jsonl)
    assert out.returncode == 2 and "has no ['fr']" in out.stderr and out.stderr.endswith("check --src/--tgt\n")
    assert "source=" not in out.stderr


def test_probe_help_shows_the_fine_tuning_defaults():
    out = probe_cli("--help")
    text = " ".join(out.stdout.split())
    for words in ["fine-tuning steps per probe (default: 60)", "fine-tuning learning rate (default: 0.0003)",
                  "fine-tuning batch size (default: 32)", "torch threads per fine-tune (default: 1 on CPU",
                  "target language key (default: the train file's other language, when it has exactly two)"]:
        assert words in text, out.stdout


def test_probe_runs_on_one_thread_on_cpu_by_default():
    """Measured on a loaded 2-core machine: 2-4 s per probe on one thread, 35-54 s on two (issue 13)."""
    from transfer_probe.cli import _default_threads

    assert _default_threads("cpu") == 1
    assert _default_threads("cuda:0") is None
