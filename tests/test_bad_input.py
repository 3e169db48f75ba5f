"""Issue 12, items 6-9: bad input gets one clear error early, never a traceback or silent nonsense.

CLI: ``transfer_probe.cli.main([...])`` in-process (one real subprocess at the end): exit code 2 and
one line ``transfer-probe CMD: error: ...`` on stderr. API: ``ValueError`` at construction, or at
``on_train_begin`` (before any training step) for what needs the model, the task or the machine.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from _probe_training import SEQ_LEN, lm_examples, make_trainer, quick_finetune, small_task

from tests._synthetic import history_records, log_law, power_law
from transfer_probe import TransferProbeCallback
from transfer_probe.cli import main
from transfer_probe.diagnose import diagnose, diagnose_rows
from transfer_probe.run.executors import InlineExecutor, ProcessExecutor
from transfer_probe.run.probe import FinetuneConfig
from transfer_probe.store.history import HistoryWriter


def cli(capsys, *args):
    """Run the command in-process: (exit code, stdout, the stderr lines)."""
    code = _exit_code(main, [str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, [line for line in err.splitlines() if line.strip()]


def _exit_code(fn, argv):
    try:
        return fn(argv)
    except SystemExit as stop:  # argparse errors exit through SystemExit
        return stop.code


def assert_error(capsys, args, *words, command=None):
    code, out, err = cli(capsys, *args)
    command = command or args[0]
    assert code == 2, (code, out, err)
    assert len(err) == 1 and err[0].startswith(f"transfer-probe {command}: error: "), err
    for w in words:
        assert w in err[0], (w, err[0])
    assert "Traceback" not in err[0]
    return err[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One history of one run, one of two runs, a clean table."""
    import numpy as np

    d = tmp_path_factory.mktemp("bad_input")
    HistoryWriter(d / "one.jsonl").extend(history_records(seed=1))
    HistoryWriter(d / "two.jsonl").extend(history_records(seed=1) + history_records(seed=2, run_id="run-b", repeats=1))
    tokens = np.geomspace(1e6, 1e9, 9)
    rows = [f"{t:.6g},{log_law(t):.4f},{power_law(t):.5f}" for t in tokens]
    (d / "t.csv").write_text("tokens,score,loss\n" + "\n".join(rows) + "\n")
    return d


def _table_with(files, bad_row, name):
    path = files / name
    path.write_text((files / "t.csv").read_text() + bad_row + "\n")
    return path


# --- item 7: numbers that mean nothing -----------------------------------------------------------


@pytest.mark.parametrize("command", ["fit", "diagnose"])
@pytest.mark.parametrize("flag, value, words", [
    ("--target", "nan", ["--target", "positive, finite", "'nan'"]),
    ("--target", "-5", ["--target", "positive, finite", "'-5'"]),
    ("--budget", "nan", ["--budget", "positive, finite number of tokens", "'nan'"]),
    ("--budget", "inf", ["--budget", "'inf'"]),
    ("--budget", "-1e9", ["--budget", "'-1e9'"]),
])
def test_targets_and_budgets_that_are_not_positive_finite_numbers_are_refused(capsys, files, command, flag, value,
                                                                                words):
    assert_error(capsys, [command, files / "one.jsonl", f"{flag}={value}"], *words)


def test_interval_out_of_0_1_and_a_non_positive_finetune_size_are_refused(capsys, files):
    assert_error(capsys, ["fit", files / "t.csv", "--y", "score", "--interval", "2"], "--interval", "between 0 and 1")
    assert_error(capsys, ["fit", files / "one.jsonl", "--finetune-size", "0"], "--finetune-size", "positive integer")
    # report takes the same checks
    assert_error(capsys, ["report", files / "one.jsonl", "--budget", "nan", "-o", files / "r.html"], "--budget")
    assert not (files / "r.html").exists()


@pytest.mark.parametrize("bad", ["nan", "inf", "-5"])
def test_table_rows_whose_tokens_are_nan_inf_or_negative_are_refused_not_dropped(capsys, files, bad):
    path = _table_with(files, f"{bad},1.0,9.0", f"bad_{bad}.csv")
    assert_error(capsys, ["fit", path, "--y", "score"], "row 10", "'tokens'", ">= 0")
    assert_error(capsys, ["diagnose", path, "--y", "score", "--ce", "loss"], "row 10", "'tokens'", ">= 0")


def test_a_negative_token_row_never_becomes_the_baseline(capsys, files):
    rows = [{"tokens": t, "score": float(log_law(t))} for t in (1e6, 1e7, 1e8, 1e9)]
    assert diagnose_rows(rows, y="score", ce=None).n_points == 4
    with pytest.raises(ValueError, match=r"row 5: column 'tokens' must be a number of tokens >= 0, got -5"):
        diagnose_rows(rows + [{"tokens": -5, "score": 1.0}], y="score", ce=None)
    # history records: NaN tokens used to be averaged in, None tokens became 0 (the baseline)
    recs = history_records(seed=1, baseline=False)
    for bad in (math.nan, math.inf, -1e6, None):
        broken = [dict(r) for r in recs]
        broken[3]["tokens"] = bad
        with pytest.raises(ValueError, match=r"a probe record has tokens=.*not a number of tokens >= 0 \(run_id 'run-a'"):
            diagnose(broken)
    path = files / "nan_tokens.jsonl"
    broken = [dict(r) for r in recs]
    broken[0]["tokens"] = None
    HistoryWriter(path).extend(broken)
    for command in ("fit", "diagnose"):
        assert_error(capsys, [command, path], "nan_tokens.jsonl:1", "tokens is null", "a number of tokens >= 0")


def test_y_x_ce_naming_nothing_in_a_history_are_errors_and_diagnose_uses_y(capsys, files):
    one = files / "one.jsonl"
    assert_error(capsys, ["diagnose", one, "--y", "nosuch"], "--y nosuch", "bleu, chrf, cross_entropy")
    assert_error(capsys, ["diagnose", one, "--ce", "nosuch"], "--ce nosuch", "bleu, chrf, cross_entropy")
    assert_error(capsys, ["diagnose", one, "--x", "nosuch"], "--x nosuch", "tokens")
    assert_error(capsys, ["fit", one, "--y", "nosuch"], "'nosuch'", "bleu, chrf, cross_entropy")
    assert_error(capsys, ["fit", one, "--x", "nosuch"], "'nosuch'", "tokens, step")
    # a named metric is the one diagnosed (it used to be ignored: the BLEU verdict was printed)
    code, out, err = cli(capsys, "diagnose", one, "--y", "chrf", "--json")
    assert code == 0, err
    assert [v["metric"] for v in json.loads(out)] == ["chrf"]
    code, out, err = cli(capsys, "diagnose", one, "--ce", "none", "--json")
    assert code == 0 and [(v["metric"], v["ce_metric"]) for v in json.loads(out)] == [("bleu", None)]


def test_two_runs_are_never_merged_and_run_id_picks_one(capsys, files):
    two = files / "two.jsonl"
    for command in ("fit", "diagnose"):
        assert_error(capsys, [command, two], "holds 2 runs", "run-a, run-b", "--run-id")
    code, out, err = cli(capsys, "fit", two, "--run-id", "run-b", "--json")
    assert code == 0, err
    fit = json.loads(out)[0]["fit"]
    assert fit["n_points"] == 8 and fit["ok"], fit  # the 8 points of run-b alone (merged runs would give 16)
    assert not any("runs fitted together" in note for note in fit.get("notes", []))
    code, out, err = cli(capsys, "diagnose", two, "--run-id", "run-a", "--json")
    assert code == 0 and [v["run_id"] for v in json.loads(out)] == ["run-a"], err
    assert_error(capsys, ["fit", two, "--run-id", "nope"], "--run-id nope", "runs in the file: run-a, run-b")
    # report: one run's sections only
    out_html = files / "run-b.html"
    code, out, err = cli(capsys, "report", two, "--run-id", "run-b", "-o", out_html)
    assert code == 0, err
    page = out_html.read_text()
    assert "run-b" in page and "run-a" not in page
    assert_error(capsys, ["report", two, "--run-id", "zzz", "-o", files / "z.html"], "run_id zzz", "run-a, run-b")


def test_fit_across_runs_stays_allowed_for_laws_that_span_runs(capsys, files):
    # chinchilla and transfer fit model sizes (runs) together by design: no --run-id demanded
    code, _, err = cli(capsys, "fit", files / "two.jsonl", "--law", "chinchilla")
    assert not any("--run-id" in line for line in err), err


# --- item 9 and the rest of item 6 --------------------------------------------------------------


def test_report_on_a_directory_blames_the_input(capsys, tmp_path):
    run = tmp_path / "run"
    (run / "transfer_probe").mkdir(parents=True)
    HistoryWriter(run / "transfer_probe" / "history.jsonl").extend(history_records(seed=1))
    msg = assert_error(capsys, ["report", run, "-o", tmp_path / "r.html"], f"{run} is a directory, not a history file",
                       "did you mean", "history.jsonl")
    assert "cannot write the report" not in msg
    assert not (tmp_path / "r.html").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_error(capsys, ["report", empty, "-o", tmp_path / "r.html"], "is a directory, not a history file")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_gpt2_config, tiny_tokenizer):
    """A real checkpoint directory (weights, config, tokenizer, trainer_state.json)."""
    from transformers import GPT2LMHeadModel

    path = tmp_path_factory.mktemp("ckpt") / "checkpoint-10"
    torch.manual_seed(0)
    GPT2LMHeadModel(tiny_gpt2_config).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    (path / "trainer_state.json").write_text(json.dumps({"global_step": 10, "num_input_tokens_seen": 1280}))
    return path


def _probe_args(checkpoint, translation_files, out, *extra):
    return ["probe", checkpoint, "--train", translation_files.train_jsonl, "--test", translation_files.test_jsonl,
            "--src", "en", "--tgt", "fr", "--finetune-size", "16", "--steps", "2", "-o", out, *extra]


@pytest.mark.parametrize("extra, words", [
    (["--tokens-per-step", "-1"], ["--tokens-per-step", "positive, finite"]),
    (["--steps", "0"], ["--steps", "positive integer", "'0'"]),
    (["--lr", "nan"], ["--lr", "positive, finite learning rate", "'nan'"]),
    (["--lr=-1e-3"], ["--lr", "'-1e-3'"]),
    (["--repeats", "0"], ["--repeats", "positive integer"]),
    (["--batch-size", "0"], ["--batch-size", "positive integer"]),
    (["--finetune-size", "0"], ["--finetune-size", "positive integer"]),
    (["--task-type", "nosuch"], ["--task-type nosuch", "unknown task 'nosuch'", "translation"]),
])
def test_probe_refuses_bad_settings_before_any_fine_tune(capsys, checkpoint, translation_files, tmp_path, extra,
                                                         words):
    out = tmp_path / "h.jsonl"
    assert_error(capsys, _probe_args(checkpoint, translation_files, out, *extra), *words)
    assert not out.exists()  # no record, not even a failed one


@pytest.mark.skipif(torch.cuda.device_count() > 3, reason="this machine has a cuda:3")
def test_probe_refuses_a_device_this_machine_lacks(capsys, checkpoint, translation_files, tmp_path):
    out = tmp_path / "h.jsonl"
    assert_error(capsys, _probe_args(checkpoint, translation_files, out, "--device", "cuda:3"),
                 "--device cuda:3", "not available on this machine")
    assert not out.exists()


def test_probe_checks_the_output_is_writable_before_fine_tuning(capsys, checkpoint, translation_files, tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine\n")
    assert_error(capsys, _probe_args(checkpoint, translation_files, a_file / "sub" / "h.jsonl"),
                 "-o", "cannot write there", "is not a directory")
    assert a_file.read_text() == "mine\n"
    assert_error(capsys, _probe_args(checkpoint, translation_files, tmp_path), "-o", "is a directory")
    if os.geteuid() != 0:  # root writes through permission bits
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert_error(capsys, _probe_args(checkpoint, translation_files, locked / "h.jsonl"), "not writable")


# --- item 8: FinetuneConfig and the callback's setup ------------------------------------------


@pytest.mark.parametrize("kwargs, match", [
    ({"max_steps": 0}, r"max_steps=0 must be an integer >= 1"),
    ({"max_steps": 2.5}, r"max_steps=2.5 must be an integer"),
    ({"learning_rate": math.nan}, r"learning_rate=nan must be a positive, finite number"),
    ({"learning_rate": -1e-3}, r"learning_rate=-0.001 must be a positive"),
    ({"batch_size": 0}, r"batch_size=0 must be an integer >= 1"),
    ({"eval_batch_size": 0}, r"eval_batch_size=0"),
    ({"num_beams": 0}, r"num_beams=0"),
    ({"bootstrap": -1}, r"bootstrap=-1 must be an integer >= 0"),
    ({"precision": "fp8"}, r"precision='fp8'; use one of 'auto', 'bf16', 'fp16', 'no'"),
    ({"precision": "fp16", "device": "cpu"}, r"precision='fp16' needs a CUDA device"),
    ({"device": "gpu"}, r"device='gpu' is not a device"),
    ({"lr_scheduler_type": "nosuch"}, r"lr_scheduler_type='nosuch' is not a scheduler; use one of linear, cosine"),
    ({"lr_scheduler_type": "reduce_lr_on_plateau"}, r"cannot be used by a probe: it steps on an evaluation metric"),
    ({"lr_scheduler_type": "warmup_stable_decay"}, r"cannot be used by a probe: it needs num_decay_steps"),
    ({"interval": 2.0}, r"interval=2.0 must be in \(0, 1\)"),
    ({"interval": 0.0}, r"interval=0.0 must be in \(0, 1\)"),
    ({"warmup_ratio": 1.5}, r"warmup_ratio=1.5 must be in \[0, 1\)"),
    ({"train_sampling": "shuffle"}, r"train_sampling='shuffle'; use 'random' or 'group_by_length'"),
    ({"max_new_tokens": 0}, r"max_new_tokens=0 must be an integer >= 1 or None"),
])
def test_finetune_config_is_checked_at_construction(kwargs, match):
    import dataclasses

    with pytest.raises(ValueError, match=match):
        FinetuneConfig(**kwargs)
    with pytest.raises(ValueError, match=match):  # replace() builds a new config: checked too
        dataclasses.replace(FinetuneConfig(), **kwargs)


def test_good_finetune_configs_still_construct():
    cfg = FinetuneConfig(max_steps=1, learning_rate=1e9, precision="BF16", lr_scheduler_type="cosine",
                         warmup_ratio=0.5, interval=0.5, device="cuda:7", train_sampling="group_by_length")
    assert cfg.max_steps == 1 and cfg.device == "cuda:7"  # a device is only checked where the probe runs


def test_executor_options_typo_names_the_valid_keys(tmp_path):
    with pytest.raises(ValueError, match=r"unknown option\(s\) 'max_pendin' for the process executor "
                                         r"\(executor_options\); valid: keep_snapshots, max_pending, overflow"):
        ProcessExecutor(tmp_path / "h.jsonl", max_pendin=2)
    with pytest.raises(ValueError, match=r"'devcie' for the inline executor.*valid: keep_snapshots"):
        InlineExecutor(tmp_path / "h.jsonl", devcie="cpu")


@pytest.fixture(scope="module")
def train_data(tiny_tokenizer, translation_pairs):
    return lm_examples(tiny_tokenizer, translation_pairs["train"])


def _train_raises(model, tokenizer, train_data, tmp_path, task, match, **callback_kwargs):
    """trainer.train() raises ``match`` at on_train_begin: no step, nothing written."""
    callback_kwargs.setdefault("finetune", quick_finetune())
    probe = TransferProbeCallback([task], every_tokens=4 * SEQ_LEN, seq_len=SEQ_LEN, **callback_kwargs)
    trainer = make_trainer(model, tokenizer, train_data, tmp_path, max_steps=2, callbacks=[probe])
    with pytest.raises(ValueError, match=match):
        trainer.train()
    assert trainer.state.global_step == 0
    assert not (tmp_path / "transfer_probe").exists()  # found before the history or a snapshot is written


@pytest.mark.skipif(torch.cuda.device_count() > 3, reason="this machine has a cuda:3")
def test_an_unavailable_device_fails_at_train_begin(tiny_gpt2, tiny_tokenizer, train_data, translation_files,
                                                    tmp_path):
    task = small_task(translation_files)
    _train_raises(tiny_gpt2, tiny_tokenizer, train_data, tmp_path, task,
                  r"FinetuneConfig.device: device 'cuda:3' is not available on this machine",
                  finetune=quick_finetune(device="cuda:3"))
    if not torch.cuda.is_available():
        _train_raises(tiny_gpt2, tiny_tokenizer, train_data, tmp_path, task, r"precision='fp16' needs a CUDA device",
                      finetune=quick_finetune(device=None, precision="fp16"))


def test_an_executor_options_typo_fails_at_train_begin_before_a_worker_starts(tiny_gpt2, tiny_tokenizer, train_data,
                                                                              translation_files, tmp_path):
    _train_raises(tiny_gpt2, tiny_tokenizer, train_data, tmp_path, small_task(translation_files),
                  r"'max_pendin' for the process executor.*valid: keep_snapshots, max_pending",
                  executor="process", executor_options={"max_pendin": 2})


def test_examples_longer_than_the_context_fail_at_train_begin(tiny_gpt2, tiny_tokenizer, train_data, tmp_path,
                                                              translation_pairs):
    from transfer_probe.tasks import TranslationTask

    # tiny_gpt2 has 128 positions; these sources are 120 or more number words (a token each)
    long, long_test = ([(" ".join([en] * 40), fr) for en, fr in translation_pairs[split][:n]]
                       for split, n in (("train", 64), ("test", 8)))
    task = TranslationTask(long, long_test, source="en", target="fr", finetune_sizes=[16])
    _train_raises(tiny_gpt2, tiny_tokenizer, train_data, tmp_path, task,
                  r"task 'en-fr': \d+ fine-tuning example\(s\) are longer than the model's context of 128 tokens "
                  r"\(longest \d+\); shorten them \(the task's max_source_length")
    # the task's own cap fixes it: the same data with max_source_length=64 passes the check
    capped = TranslationTask(long, long_test, source="en", target="fr", finetune_sizes=[16], max_source_length=64)
    from transfer_probe.run.probe import check_probe_setup

    check_probe_setup(quick_finetune(), [capped], tiny_gpt2, tiny_tokenizer)
    with pytest.raises(ValueError, match=r"generation \(prompt \+ max_new_tokens\)"):
        check_probe_setup(quick_finetune(max_new_tokens=120), [capped], tiny_gpt2, tiny_tokenizer)


def test_a_model_that_cannot_generate_fails_at_train_begin(tiny_tokenizer, train_data, translation_files, tmp_path):
    from transformers import DistilBertConfig, DistilBertForMaskedLM

    torch.manual_seed(0)
    model = DistilBertForMaskedLM(DistilBertConfig(vocab_size=len(tiny_tokenizer), dim=32, n_layers=1, n_heads=2,
                                                   hidden_dim=64, max_position_embeddings=128))
    _train_raises(model, tiny_tokenizer, train_data, tmp_path, small_task(translation_files),
                  r"AutoModelForCausalLM.from_config\(config\) to fine-tune it and generate, which fails for "
                  r"DistilBertConfig")


# --- one real subprocess: what a user sees --------------------------------------------------------


def test_the_console_sees_one_line_and_exit_2(files, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "transfer_probe.cli", "fit", str(files / "two.jsonl"),
                           "--target", "nan"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == ["transfer-probe fit: error: argument --target: must be a positive, finite "
                                        "score (or loss) to reach, got 'nan' (see transfer-probe fit --help)"]
    proc = subprocess.run([sys.executable, "-m", "transfer_probe.cli", "report", str(tmp_path), "-o",
                           str(tmp_path / "r.html")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [f"transfer-probe report: error: {tmp_path} is a directory, not a history "
                                        "file (give .../transfer_probe/history.jsonl)"]


@pytest.mark.parametrize("command", ["report", "compare", "fit", "diagnose"])
def test_an_empty_file_is_said_once_by_every_command(tmp_path, capsys, command):
    from transfer_probe.cli import main

    empty = tmp_path / "history.jsonl"
    empty.write_text("")
    extra = ["-o", str(tmp_path / "r.html")] if command == "report" else []
    assert main([command, str(empty), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("the file holds no rows"), err
    assert not (tmp_path / "r.html").exists()
