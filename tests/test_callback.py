"""TransferProbeCallback with a real Trainer on a tiny GPT-2: history, logs, isolation, resume, failures."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from _probe_training import SEQ_LEN, lm_examples, make_trainer, quick_finetune, small_task
from transformers import TrainerCallback

from transfer_probe import TransferProbeCallback
from transfer_probe.run.executors import InlineExecutor
from transfer_probe.store.history import read_history

BATCH = 4
TOKENS_PER_STEP = BATCH * SEQ_LEN  # include_num_input_tokens_seen off: computed from these


@pytest.fixture(scope="module")
def train_data(tiny_tokenizer, translation_pairs):
    return lm_examples(tiny_tokenizer, translation_pairs["train"])


@pytest.fixture(scope="module")
def task(translation_files):
    return small_task(translation_files)


class LogSpy(TrainerCallback):
    """Another callback, as W&B or TensorBoard would be: records what reaches on_log."""

    def __init__(self):
        self.logs = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append((state.global_step, dict(logs or {})))


def _probe_records(path):
    return [r for r in read_history(path) if r.get("kind") == "probe"]


def test_inline_end_to_end_history_and_logs(tiny_gpt2, tiny_tokenizer, train_data, task, tmp_path, caplog,
                                            monkeypatch):
    import transfer_probe.loop as loop_mod

    reads = []
    real_read = loop_mod.read_history
    monkeypatch.setattr(loop_mod, "read_history", lambda *a, **k: reads.append(a) or real_read(*a, **k))
    spy = LogSpy()
    probe = TransferProbeCallback([task], every_tokens=3 * TOKENS_PER_STEP, finetune=quick_finetune(),
                                  seq_len=SEQ_LEN)
    trainer = make_trainer(tiny_gpt2, tiny_tokenizer, train_data, tmp_path, callbacks=[spy, probe], max_steps=7)
    with caplog.at_level(logging.INFO, logger="transfer_probe"):
        trainer.train()
    assert probe.trainer is trainer  # found without being told
    # the history is read once, at train begin; the verdicts use what the callback keeps in memory
    assert len(reads) <= 1, reads
    hist = tmp_path / "transfer_probe" / "history.jsonl"
    recs = _probe_records(hist)
    # baseline + probes at steps 3 and 6 (every 384 tokens at 128 tokens per step)
    assert [(r["step"], r["tokens"], r["pretrained"]) for r in recs] == [
        (0, 0, False), (3, 3 * TOKENS_PER_STEP, True), (6, 6 * TOKENS_PER_STEP, True)]
    for r in recs:
        assert r["status"] == "ok" and r["task"] == "en-fr" and r["finetune_size"]["examples"] == 32
        assert r["run_id"] == probe.run_id and r["schedule"].get("tokens_source", "computed") == "computed"
        # a few steps of fine-tuning: BLEU and chrF are small but real sacrebleu scores of real output
        assert 0 < r["metrics"]["bleu"] < 10 and 0 < r["metrics"]["chrf"] < 30, r["metrics"]
        assert r["metric_signatures"]["bleu"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
        assert r["params"]["total"] > r["params"]["non_embedding"] > 0
    # each probe fine-tunes the weights of its own step: downstream CE falls as pre-training goes on
    # (the baseline is a random init; a probe that ignored the snapshot would repeat its numbers)
    ce = [r["metrics"]["cross_entropy"] for r in recs]
    assert ce[0] > ce[1] + 0.1 and ce[1] > ce[2] + 0.1, ce
    assert recs[1]["schedule"]["reasons"] == ["every_tokens"]
    # trainer.log: namespaced keys with the tokens axis, seen by other callbacks
    logged = [logs for _, logs in spy.logs if "transfer_probe/tokens" in logs]
    assert [lg["transfer_probe/tokens"] for lg in logged] == [384.0, 768.0]
    assert logged[0]["transfer_probe/en-fr/df=32/bleu"] == pytest.approx(recs[1]["metrics"]["bleu"])
    assert "transfer_probe/en-fr/df=32/cross_entropy" in logged[0]
    base = [logs for _, logs in spy.logs if "transfer_probe/en-fr/df=32/baseline/bleu" in logs]
    assert len(base) == 1
    assert any("transfer_probe/en-fr/df=32/bleu" in h for h in trainer.state.log_history)
    # one readable INFO line per result
    lines = [m for m in caplog.messages if m.startswith("transfer_probe | en-fr D_f=32") and "chrF" in m]
    assert len(lines) == 3 and "(no pretraining)" in lines[0] and "tokens 384 | BLEU" in lines[1]
    assert any("computed as steps x 128" in m for m in caplog.messages)
    # verdicts (issue 4): one per new pretrained result, in the history and the log
    verdicts = [r for r in read_history(hist) if r.get("kind") == "verdict"]
    assert [v["tokens"] for v in verdicts] == [384, 768] and verdicts[0]["status"] == "insufficient_data"
    assert any("transfer_probe/en-fr/df=32/verdict/warning" in logs for _, logs in spy.logs)


def _gpt2(config):
    from transformers import GPT2LMHeadModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return GPT2LMHeadModel(config)


def test_outer_run_is_bit_identical_with_inline_probes(tiny_gpt2_config, tiny_tokenizer, train_data, task, tmp_path):
    plain = make_trainer(_gpt2(tiny_gpt2_config), tiny_tokenizer, train_data, tmp_path / "a", max_steps=5)
    plain.train()
    probe = TransferProbeCallback([task], every_tokens=2 * TOKENS_PER_STEP, finetune=quick_finetune(),
                                  seq_len=SEQ_LEN, baseline=True)
    probed = make_trainer(_gpt2(tiny_gpt2_config), tiny_tokenizer, train_data, tmp_path / "b", max_steps=5,
                          callbacks=[probe])
    probed.train()
    # baseline (before step 1) and probes at steps 2 and 4, with training steps after each
    assert [r["step"] for r in _probe_records(tmp_path / "b" / "transfer_probe" / "history.jsonl")] == [0, 2, 4]
    a, b = plain.model.state_dict(), probed.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "probing changed the outer run's weights"
    assert probed.model.training == plain.model.training
    la = [h["loss"] for h in plain.state.log_history if "loss" in h]
    lb = [h["loss"] for h in probed.state.log_history if "loss" in h]
    assert la == lb


def test_resume_continues_schedule_without_loss_or_duplicates(tiny_gpt2_config, tiny_tokenizer, train_data, task,
                                                             tmp_path, caplog):
    def probe():
        return TransferProbeCallback([task], every_tokens=3 * TOKENS_PER_STEP, finetune=quick_finetune(),
                                     seq_len=SEQ_LEN)

    first = probe()
    make_trainer(_gpt2(tiny_gpt2_config), tiny_tokenizer, train_data, tmp_path, max_steps=6, save_steps=3,
                 callbacks=[first]).train()
    hist = tmp_path / "transfer_probe" / "history.jsonl"
    assert [r["step"] for r in _probe_records(hist)] == [0, 3, 6]
    # The run "crashed" after step 6 was probed; resume from checkpoint-3 and train to step 9.
    # It also left a snapshot behind (a process-executor probe that never finished): cleaned up.
    from transfer_probe.run.snapshot import save_snapshot

    orphan = save_snapshot(_gpt2(tiny_gpt2_config), tmp_path / "transfer_probe" / "snapshots" / "step-5",
                           tokens=5, step=5)
    second = probe()
    with caplog.at_level(logging.INFO, logger="transfer_probe"):
        make_trainer(_gpt2(tiny_gpt2_config), tiny_tokenizer, train_data, tmp_path, max_steps=9, save_steps=3,
                     callbacks=[second]).train(resume_from_checkpoint=str(tmp_path / "checkpoint-3"))
    recs = _probe_records(hist)
    assert [(r["step"], r["pretrained"]) for r in recs] == [(0, False), (3, True), (6, True), (9, True)]
    assert {r["run_id"] for r in recs} == {first.run_id} and second.run_id == first.run_id
    assert recs[-1]["tokens"] == 9 * TOKENS_PER_STEP
    assert any("step 6 already has probe records" in m for m in caplog.messages)
    assert not orphan.path.exists() and any("removed 1 snapshot(s)" in m for m in caplog.messages)


def test_failing_probe_is_recorded_and_training_continues(tiny_gpt2, tiny_tokenizer, train_data, task, tmp_path,
                                                          caplog):
    probe = TransferProbeCallback([task], every_tokens=2 * TOKENS_PER_STEP, seq_len=SEQ_LEN, baseline=False,
                                  finetune=quick_finetune(learning_rate=1e9, max_steps=6))
    # Also the Trainer's own token count (include_num_input_tokens_seen) as the D_p axis.
    trainer = make_trainer(tiny_gpt2, tiny_tokenizer, train_data, tmp_path, max_steps=4, callbacks=[probe],
                           include_num_input_tokens_seen=True)
    with caplog.at_level(logging.INFO, logger="transfer_probe"):
        trainer.train()
    assert trainer.state.global_step == 4
    assert any("from state.num_input_tokens_seen" in m for m in caplog.messages)
    recs = _probe_records(tmp_path / "transfer_probe" / "history.jsonl")
    assert [(r["step"], r["tokens"], r["schedule"]["tokens_source"]) for r in recs] == [
        (2, 2 * TOKENS_PER_STEP, "trainer"), (4, 4 * TOKENS_PER_STEP, "trainer")]
    assert all(r["status"] == "failed" and r["error"] for r in recs)
    assert sum("probe failed" in m and "training continues" in m for m in caplog.messages) == 2
    assert any("transfer_probe/en-fr/df=32/failed" in h for h in trainer.state.log_history)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "no probe schedule"),
        ({"every_tokens": -1}, "every_tokens"),
        ({"token_points": [0]}, "positive"),
        ({"every_tokens": 10, "repeats": 0}, "repeats"),
        ({"every_tokens": 10, "executor": "carrier-pigeon"}, "carrier-pigeon"),
        ({"every_tokens": 10, "stop_on": ["bored"]}, "stop_on"),
        ({"every_tokens": 10, "budget_tokens": -5}, "budget_tokens"),
        ({"every_tokens": 10, "end_timeout": -1}, "end_timeout"),
        ({"every_tokens": 10, "finetune": {"max_steps": 3}}, "FinetuneConfig"),
        ({"every_tokens": 10, "seq_len": 0}, "seq_len"),
    ],
)
def test_bad_settings_raise_at_construction(task, kwargs, match):
    with pytest.raises(ValueError, match=match):
        TransferProbeCallback([task], **kwargs)


def test_bad_tasks_raise_at_construction(task, translation_files):
    with pytest.raises(ValueError, match="empty"):
        TransferProbeCallback([], every_tokens=10)
    with pytest.raises(ValueError, match="unique"):
        TransferProbeCallback([task, task], every_tokens=10)
    with pytest.raises(ValueError, match="not a transfer_probe task"):
        TransferProbeCallback(["en-fr"], every_tokens=10)
    with pytest.raises(ValueError, match="larger than the train split"):
        TransferProbeCallback([small_task(translation_files, sizes=[10_000])], every_tokens=10)
    with pytest.raises((ValueError, FileNotFoundError), match="nope"):
        TransferProbeCallback([small_task(type(translation_files)(**{**translation_files.__dict__,
                                                                      "train_jsonl": translation_files.dir / "nope.jsonl"}))],
                              every_tokens=10)


def test_bad_tokenizer_or_model_raise_before_any_step(tiny_gpt2, tiny_tokenizer, train_data, task, tmp_path):
    from transformers import PreTrainedTokenizerFast

    probe = TransferProbeCallback([task], every_tokens=TOKENS_PER_STEP, seq_len=SEQ_LEN, finetune=quick_finetune())
    trainer = make_trainer(tiny_gpt2, tiny_tokenizer, train_data, tmp_path, max_steps=2, callbacks=[probe],
                           processing_class=None)
    with pytest.raises(ValueError, match="needs a tokenizer"):
        trainer.train()
    assert trainer.state.global_step == 0

    no_eos = PreTrainedTokenizerFast(tokenizer_object=tiny_tokenizer.backend_tokenizer)
    probe = TransferProbeCallback([task], every_tokens=TOKENS_PER_STEP, seq_len=SEQ_LEN, tokenizer=no_eos)
    trainer = make_trainer(tiny_gpt2, tiny_tokenizer, train_data, tmp_path, max_steps=2, callbacks=[probe])
    with pytest.raises(ValueError, match="eos"):
        trainer.train()
    assert trainer.state.global_step == 0
    assert not (tmp_path / "transfer_probe" / "history.jsonl").exists()


def test_law_break_verdict_warns_is_recorded_and_stop_on_stops_training(tiny_gpt2, tiny_tokenizer, train_data, task,
                                                                      tmp_path, caplog):
    """A run whose history (synthetic points of the same run, up to 1e9 tokens) follows the BLEU law;
    the next real probe lands far below it: a first signal (suspected, probe again), which does not
    stop training. The probe after it is low too: the break is confirmed, warned about, recorded,
    logged through trainer.log, and stops training (stop_on)."""
    from _synthetic import history_records

    from transfer_probe.store.history import HistoryWriter

    hist = tmp_path / "transfer_probe" / "history.jsonl"
    HistoryWriter(hist).extend(history_records(task="en-fr", df=32, run_id="run-x", baseline=False))
    # seq_len scales the computed token count so the first real probe (step 2) sits at 2e10 tokens,
    # beyond the synthetic points; its BLEU (a few points after 4 fine-tuning steps) breaks the law.
    probe = TransferProbeCallback([task], every_tokens=int(2e10), finetune=quick_finetune(), seq_len=2_500_000_000,
                                  run_id="run-x", stop_on=["law_break"], budget_tokens=4e10, baseline=False)
    trainer = make_trainer(tiny_gpt2, tiny_tokenizer, train_data, tmp_path, max_steps=6, callbacks=[probe])
    with caplog.at_level(logging.INFO, logger="transfer_probe"):
        trainer.train()
    assert trainer.state.global_step == 4  # stopped at the second probe instead of running to step 6
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("suspected:" in m for m in warnings) == 1 and sum("law_break:" in m for m in warnings) == 1
    assert sum("stopping pre-training: verdict 'law_break'" in m for m in warnings) == 1
    recs = read_history(hist)
    verdicts = [r for r in recs if r["kind"] == "verdict"]
    assert [(v["status"], v["recommendation"]) for v in verdicts] == [("suspected", "probe again"), ("law_break", "stop")]
    assert all(v["run_id"] == "run-x" for v in verdicts)
    new = [r for r in recs if r["kind"] == "probe" and r["step"] in (2, 4)]
    assert [r["tokens"] for r in new] == [2e10, 4e10]
    assert any(h.get("transfer_probe/en-fr/df=32/verdict/warning") == 1.0 for h in trainer.state.log_history)
    # status and recommendation as codes trackers can plot: suspected (2) / probe again (3), then
    # law_break (4) / stop (1)
    codes = [(h["transfer_probe/en-fr/df=32/verdict/status"], h["transfer_probe/en-fr/df=32/verdict/recommendation"])
             for h in trainer.state.log_history if "transfer_probe/en-fr/df=32/verdict/status" in h]
    assert codes == [(2.0, 3.0), (4.0, 1.0)]


def test_attach_gives_the_trainer_explicitly(tiny_gpt2, tiny_tokenizer, train_data, task, tmp_path):
    trainer = make_trainer(tiny_gpt2, tiny_tokenizer, train_data, tmp_path, max_steps=1)
    probe = TransferProbeCallback([task], every_tokens=TOKENS_PER_STEP).attach(trainer)
    assert probe.trainer is trainer and probe in trainer.callback_handler.callbacks
    assert probe.attach(trainer).trainer is trainer
    assert trainer.callback_handler.callbacks.count(probe) == 1


def test_on_save_with_epoch_saves_probes_each_saved_epoch(tiny_gpt2, tiny_tokenizer, train_data, task, tmp_path):
    # Epoch saves are decided at on_epoch_end (after on_step_end): the probe happens there, before the save.
    probe = TransferProbeCallback([task], on_save=True, finetune=quick_finetune(), seq_len=SEQ_LEN, baseline=False)
    trainer = make_trainer(tiny_gpt2, tiny_tokenizer, train_data[:8], tmp_path, max_steps=4, save_strategy="epoch",
                           callbacks=[probe])
    trainer.train()
    recs = _probe_records(tmp_path / "transfer_probe" / "history.jsonl")
    assert [(r["step"], r["schedule"]["reasons"]) for r in recs] == [(2, ["on_save"]), (4, ["on_save"])]
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    # the checkpoint's log history already holds its probe's numbers (probed before the save)
    import json

    state = json.loads((tmp_path / "checkpoint-2" / "trainer_state.json").read_text())
    assert any("transfer_probe/en-fr/df=32/bleu" in h for h in state["log_history"])


def test_adaptive_repeats_remeasure_a_borderline_warning_before_it_is_raised(tiny_gpt2, tiny_tokenizer, train_data,
                                                                             task, tmp_path, caplog):
    """The law-break setup above, with thresholds that call every decision borderline: the callback
    spends its adaptive budget (3 fine-tunes, 2 per round) re-measuring the newest point before warning,
    and the extra repeats land in the history as repeats of that point."""
    from _synthetic import history_records

    from transfer_probe.diagnose import Thresholds
    from transfer_probe.store.history import HistoryWriter

    hist = tmp_path / "transfer_probe" / "history.jsonl"
    HistoryWriter(hist).extend(history_records(task="en-fr", df=32, run_id="run-y", baseline=False))
    probe = TransferProbeCallback([task], every_tokens=int(2e10), finetune=quick_finetune(), seq_len=2_500_000_000,
                                  run_id="run-y", budget_tokens=4e10, baseline=False, adaptive_repeats=3,
                                  thresholds=Thresholds(borderline=1e9))
    trainer = make_trainer(tiny_gpt2, tiny_tokenizer, train_data, tmp_path, max_steps=3, callbacks=[probe])
    with caplog.at_level(logging.INFO, logger="transfer_probe"):
        trainer.train()
    new = [r for r in read_history(hist) if r["kind"] == "probe" and r["step"] == 2]
    # 1 scheduled fine-tune + 2 (first round) + 1 (the budget's rest), all at step 2, distinct repeats
    assert sorted(r["repeat"] for r in new) == [0, 1, 2, 3]
    assert all(r["tokens"] == 2e10 and r["status"] == "ok" for r in new)
    held = [m for m in caplog.messages if "measuring" in m and "before warning" in m]
    assert len(held) == 2 and "adaptive repeats: 1 of 3 left" in held[0] and "0 of 3 left" in held[1]
    # with the budget spent, the standing verdict is finally warned about
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("en-fr D_f=32" in m for m in warnings)


def test_a_suspected_break_is_remeasured_then_confirmed_at_the_default_thresholds(tiny_gpt2, tiny_tokenizer,
                                                                                   train_data, task, tmp_path, caplog):
    """Eight healthy probes, then one far below them: a single point is only a first signal
    (suspected, probe again). With adaptive repeats the callback re-measures it before saying more;
    the re-measured point confirms the break, which is then recorded and warned about as a stop."""
    from _synthetic import history_records

    from transfer_probe.store.history import HistoryWriter

    hist = tmp_path / "transfer_probe" / "history.jsonl"
    HistoryWriter(hist).extend(history_records(task="en-fr", df=32, run_id="run-z", baseline=False))
    probe = TransferProbeCallback([task], every_tokens=int(2e10), finetune=quick_finetune(), seq_len=2_500_000_000,
                                  run_id="run-z", budget_tokens=4e10, baseline=False, adaptive_repeats=2)
    trainer = make_trainer(tiny_gpt2, tiny_tokenizer, train_data, tmp_path, max_steps=3, callbacks=[probe])
    with caplog.at_level(logging.INFO, logger="transfer_probe"):
        trainer.train()
    new = [r for r in read_history(hist) if r["kind"] == "probe" and r["step"] == 2]
    assert sorted(r["repeat"] for r in new) == [0, 1, 2]  # 1 scheduled + 2 adaptive
    held = [m for m in caplog.messages if "measuring" in m and "before warning" in m]
    assert len(held) == 1 and "borderline suspected" not in held[0] and "suspected" in held[0]
    verdicts = [r for r in read_history(hist) if r["kind"] == "verdict"]
    assert len(verdicts) == 1 and verdicts[0]["status"] in ("law_break", "misaligned")
    assert verdicts[0]["recommendation"] == "stop" and verdicts[0]["history"][-1]["state"] == "confirmed"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("en-fr D_f=32" in m and verdicts[0]["status"] in m for m in warnings)


# ---------------------------------------------------------------------------------------------
# Options end to end (issue 17): each one is dropped or ignored by a one-line change that no other
# test notices, so each gets its own small run.

def test_repeats_two_gives_two_records_per_point_and_logs_their_mean(tiny_gpt2, tiny_tokenizer, train_data, task,
                                                                      tmp_path):
    spy = LogSpy()
    probe = TransferProbeCallback([task], every_tokens=2 * TOKENS_PER_STEP, finetune=quick_finetune(),
                                  seq_len=SEQ_LEN, repeats=2)
    trainer = make_trainer(tiny_gpt2, tiny_tokenizer, train_data, tmp_path, callbacks=[spy, probe], max_steps=2)
    trainer.train()
    recs = _probe_records(tmp_path / "transfer_probe" / "history.jsonl")
    # the baseline point and the step-2 point, each fine-tuned twice with different seeds
    assert sorted((r["step"], r["pretrained"], r["repeat"]) for r in recs) == [
        (0, False, 0), (0, False, 1), (2, True, 0), (2, True, 1)]
    assert all(r["status"] == "ok" for r in recs)
    at2 = sorted((r for r in recs if r["step"] == 2), key=lambda r: r["repeat"])
    assert at2[0]["finetune"]["seed"] != at2[1]["finetune"]["seed"]
    ce = [r["metrics"]["cross_entropy"] for r in at2]
    assert ce[0] != ce[1]  # independent fine-tunes, not one result written twice
    logged = [logs for _, logs in spy.logs if "transfer_probe/tokens" in logs]
    assert len(logged) == 1  # one trainer.log per point: the repeats' mean
    assert logged[0]["transfer_probe/en-fr/df=32/cross_entropy"] == pytest.approx(sum(ce) / 2)


class _DiskInlineExecutor(InlineExecutor):
    """An executor class given directly (not by name): runs probes inline but, not being named
    "inline", gets on-disk snapshots, so ``keep_snapshots`` decides whether they survive."""

    name = "disk-inline"
    submitted: list = []

    def submit(self, jobs):
        type(self).submitted.extend(jobs)
        return super().submit(jobs)


@pytest.mark.parametrize("keep", [True, False])
def test_executor_class_output_dir_sink_and_keep_snapshots(keep, tiny_gpt2, tiny_tokenizer, train_data, task,
                                                           tmp_path):
    import json

    _DiskInlineExecutor.submitted = []
    out = tmp_path / "elsewhere"
    events = tmp_path / "events" / "probe.jsonl"
    probe = TransferProbeCallback([task], every_tokens=2 * TOKENS_PER_STEP, finetune=quick_finetune(max_steps=1),
                                  seq_len=SEQ_LEN, baseline=False, executor=_DiskInlineExecutor, output_dir=str(out),
                                  keep_snapshots=keep, sinks=[f"jsonl:{events}"])
    trainer = make_trainer(tiny_gpt2, tiny_tokenizer, train_data, tmp_path / "run", callbacks=[probe], max_steps=2)
    trainer.train()
    # the class given was used, with the snapshot written to disk
    assert [(j.snapshot.step, j.snapshot.path is not None) for j in _DiskInlineExecutor.submitted] == [(2, True)]
    # output_dir: the history (and snapshots) go there, nothing under the Trainer's output_dir
    hist = out / "transfer_probe" / "history.jsonl"
    assert probe.history_path == hist
    assert [(r["step"], r["status"]) for r in _probe_records(hist)] == [(2, "ok")]
    assert not (tmp_path / "run" / "transfer_probe").exists()
    snap = out / "transfer_probe" / "snapshots" / probe.run_id / "step-2"
    assert snap.is_dir() is keep
    if keep:
        from transfer_probe.run.snapshot import load_snapshot

        assert load_snapshot(snap).step == 2
    # the jsonl sink (no ray, no plugin): every record, in order, as the history has it
    lines = [json.loads(x) for x in events.read_text().splitlines()]
    recs = [x["data"] for x in lines if x["event"] == "record"]
    assert [(r["step"], r["job_id"]) for r in recs] == [(r["step"], r["job_id"]) for r in _probe_records(hist)]


def _fixed_verdict(status, recommendation):
    from transfer_probe.diagnose import Verdict

    return Verdict(status=status, recommendation=recommendation, task="en-fr", finetune_size=32,
                   reasons=["fixed by the test"],
                   tokens_to_target={"target": 25.0, "mean": 3.0e9, "low": 2.0e9, "high": 5.0e9})


def _run_with_fixed_verdict(verdict, monkeypatch, tiny_gpt2, tiny_tokenizer, train_data, task, tmp_path, **kwargs):
    """Training to step 4 with probes at steps 2 and 4 whose diagnosis is ``verdict`` whatever the
    numbers: the stop_on / target_bleu plumbing, independent of the verdict rules."""
    import transfer_probe.diagnose as diagnose

    calls = []

    def fixed(records, **kw):
        calls.append(kw)
        return {("en-fr", 32): verdict}

    monkeypatch.setattr(diagnose, "diagnose_all", fixed)
    spy = LogSpy()
    probe = TransferProbeCallback([task], every_tokens=2 * TOKENS_PER_STEP, finetune=quick_finetune(max_steps=1),
                                  seq_len=SEQ_LEN, baseline=False, **kwargs)
    trainer = make_trainer(tiny_gpt2, tiny_tokenizer, train_data, tmp_path, callbacks=[spy, probe], max_steps=4)
    trainer.train()
    return trainer, calls, spy


@pytest.mark.parametrize("status, recommendation, stop_on, stops", [
    ("misaligned", "stop", ["misaligned"], True),
    ("no_transfer", "stop", ["no_transfer"], True),
    ("law_break", "stop", ["stop"], True),           # "stop": any verdict recommending stop
    ("misaligned", "stop", ["no_transfer"], False),  # a status not asked for
    ("aligned", "continue", ["stop", "misaligned"], False),
    ("no_transfer", "wait", ["no_transfer"], False),   # only a verdict recommending stop stops
    ("suspected", "probe again", ["misaligned", "stop"], False),  # a first signal never stops
])
def test_stop_on_follows_the_verdict(status, recommendation, stop_on, stops, monkeypatch, tiny_gpt2, tiny_tokenizer,
                                     train_data, task, tmp_path, caplog):
    verdict = _fixed_verdict(status, recommendation)  # built here: a status Verdict refuses fails the test
    with caplog.at_level(logging.INFO, logger="transfer_probe"):
        trainer, calls, _ = _run_with_fixed_verdict(verdict, monkeypatch, tiny_gpt2, tiny_tokenizer, train_data,
                                                    task, tmp_path, stop_on=stop_on)
    assert trainer.state.global_step == (2 if stops else 4)
    assert len(calls) == (1 if stops else 2)  # diagnosed after each probe that ran
    stopping = [m for m in caplog.messages if "stopping pre-training" in m]
    assert len(stopping) == (1 if stops else 0)
    verdicts = [r for r in read_history(tmp_path / "transfer_probe" / "history.jsonl") if r["kind"] == "verdict"]
    assert [(v["status"], v["recommendation"]) for v in verdicts] == [(status, recommendation)] * len(calls)


def test_target_bleu_and_budget_reach_the_diagnosis_and_tokens_to_target_is_logged(
        monkeypatch, tiny_gpt2, tiny_tokenizer, train_data, task, tmp_path):
    import inspect

    import transfer_probe.diagnose as diagnose

    real = inspect.signature(diagnose.diagnose_all).parameters  # the fake below must not drift from it
    trainer, calls, spy = _run_with_fixed_verdict(_fixed_verdict("aligned", "continue"), monkeypatch, tiny_gpt2,
                                                  tiny_tokenizer, train_data, task, tmp_path, target_bleu=25.0,
                                                  budget_tokens=2e10)
    assert trainer.state.global_step == 4
    assert [(c.get("target"), c.get("budget_tokens")) for c in calls] == [(25.0, 2e10)] * 2
    assert {"target", "budget_tokens"} <= set(real)
    ttt = [logs["transfer_probe/en-fr/df=32/verdict/tokens_to_target"] for _, logs in spy.logs
           if "transfer_probe/en-fr/df=32/verdict/tokens_to_target" in logs]
    assert ttt == [3.0e9, 3.0e9]
    verdicts = [r for r in read_history(tmp_path / "transfer_probe" / "history.jsonl") if r["kind"] == "verdict"]
    assert [v["tokens_to_target"]["target"] for v in verdicts] == [25.0, 25.0]


def _dropout_gpt2(config):
    cfg = copy.deepcopy(config)
    cfg.resid_pdrop = cfg.embd_pdrop = cfg.attn_pdrop = 0.1
    return _gpt2(cfg)


@pytest.mark.parametrize("executor", ["inline", pytest.param("process", marks=pytest.mark.slow)])
def test_outer_run_with_dropout_over_epochs_is_bit_identical(executor, tiny_gpt2_config, tiny_tokenizer, train_data,
                                                              task, tmp_path):
    """Dropout draws from the torch RNG at every step and each epoch's shuffle seeds from it: a probe
    (inline: a nested Trainer that reseeds; process: snapshots taken in this process) that leaves the
    RNG moved changes every step after it."""
    data = train_data[:8]  # 2 steps per epoch: 6 steps are 3 epochs, probes at steps 2 and 4
    plain = make_trainer(_dropout_gpt2(tiny_gpt2_config), tiny_tokenizer, data, tmp_path / "a", max_steps=6)
    out_a = plain.train()
    # The process worker may still be starting while all three points arrive: room for all of them,
    # so none is coalesced away (the default queue of 2 would drop step 2 on a loaded machine).
    options = {"max_pending": 8} if executor == "process" else None
    probe = TransferProbeCallback([task], every_tokens=2 * TOKENS_PER_STEP, finetune=quick_finetune(max_steps=2),
                                  seq_len=SEQ_LEN, baseline=False, executor=executor, executor_options=options)
    probed = make_trainer(_dropout_gpt2(tiny_gpt2_config), tiny_tokenizer, data, tmp_path / "b", max_steps=6,
                          callbacks=[probe])
    out_b = probed.train()
    assert plain.state.epoch == probed.state.epoch == 3
    recs = _probe_records(tmp_path / "b" / "transfer_probe" / "history.jsonl")
    assert sorted((r["step"], r["status"]) for r in recs) == [(2, "ok"), (4, "ok"), (6, "ok")]
    assert out_a.training_loss == out_b.training_loss  # the mean over all 6 steps, exactly
    a, b = plain.model.state_dict(), probed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "probing changed the outer run's weights"


def test_probe_steps_keep_their_own_training_loss_log(tiny_gpt2_config, tiny_tokenizer, train_data, task, tmp_path):
    plain = make_trainer(_gpt2(tiny_gpt2_config), tiny_tokenizer, train_data, tmp_path / "a", max_steps=4,
                         logging_steps=1)
    plain.train()
    probe = TransferProbeCallback([task], every_tokens=2 * TOKENS_PER_STEP, finetune=quick_finetune(max_steps=1),
                                  seq_len=SEQ_LEN, baseline=True)
    probed = make_trainer(_gpt2(tiny_gpt2_config), tiny_tokenizer, train_data, tmp_path / "b", max_steps=4,
                          callbacks=[probe], logging_steps=1)
    probed.train()
    la = [(h["step"], h["loss"]) for h in plain.state.log_history if "loss" in h]
    lb = [(h["step"], h["loss"]) for h in probed.state.log_history if "loss" in h]
    assert [s for s, _ in la] == [1, 2, 3, 4] and la == lb  # every step's loss, none swallowed by a probe


def test_a_first_signal_schedules_one_extra_probe_before_the_next_scheduled_one(monkeypatch, tiny_gpt2,
                                                                                tiny_tokenizer, train_data, task,
                                                                                tmp_path, caplog):
    """Probes every 2 steps; the verdict after the step-2 probe is suspected: with extra_probes=1 one
    more probe runs at step 3 (halfway in log tokens to step 4), recorded with its reason; the cap
    holds (no extra probe after the later suspected verdicts). Without the option: steps 2 and 4 only."""
    verdict = _fixed_verdict("suspected", "probe again")
    with caplog.at_level(logging.INFO, logger="transfer_probe"):
        _run_with_fixed_verdict(verdict, monkeypatch, tiny_gpt2, tiny_tokenizer, train_data, task, tmp_path,
                                extra_probes=1)
    recs = [r for r in read_history(tmp_path / "transfer_probe" / "history.jsonl") if r["kind"] == "probe"]
    assert [r["step"] for r in recs] == [2, 3, 4]
    assert recs[1]["schedule"]["reasons"] == ["extra"]
    assert sum("an extra probe at" in m and "extra probes: 0 of 1 left" in m for m in caplog.messages) == 1
    _run_with_fixed_verdict(verdict, monkeypatch, tiny_gpt2, tiny_tokenizer, train_data, task, tmp_path / "off")
    off = [r for r in read_history(tmp_path / "off" / "transfer_probe" / "history.jsonl") if r["kind"] == "probe"]
    assert [r["step"] for r in off] == [2, 4]


def test_an_out_of_memory_probe_is_recorded_as_failed_and_training_and_probing_go_on(
        tiny_gpt2_config, tiny_tokenizer, train_data, task, tmp_path, caplog, monkeypatch):
    """The probe at step 2 runs out of memory in its fine-tune's first step (as a CUDA OOM does); the
    probes at steps 4 and 6 run normally and the outer run is the one it would have been without probes.

    Checked to fail when InlineExecutor.submit catches only (ValueError, FinetuneDiverged) (the OOM ends
    training), when isolated_state restores the process state only on success (``finally`` -> ``else``:
    the probe's thread count stays and the outer run's weights differ; each assertion fails on its own),
    and when failed_record drops the exception type from ``error``."""
    from transfer_probe.run.finetune import Collator

    real_collate = Collator.__call__
    raised = []

    def collate_or_oom(self, features):
        # only the probes' fine-tunes collate with this class, once per step; only the first one fails
        if not raised:
            raised.append(0)
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (test)")
        return real_collate(self, features)

    plain = make_trainer(_gpt2(tiny_gpt2_config), tiny_tokenizer, train_data, tmp_path / "a", max_steps=6)
    plain.train()
    monkeypatch.setattr(Collator, "__call__", collate_or_oom)
    threads = torch.get_num_threads()
    probe = TransferProbeCallback([task], every_tokens=2 * TOKENS_PER_STEP, finetune=quick_finetune(max_steps=2),
                                  seq_len=SEQ_LEN, baseline=False)
    probed = make_trainer(_gpt2(tiny_gpt2_config), tiny_tokenizer, train_data, tmp_path / "b", max_steps=6,
                          callbacks=[probe])
    with caplog.at_level(logging.INFO, logger="transfer_probe"):
        probed.train()
    assert raised == [0]  # the OOM came from inside the first probe's fine-tune
    assert probed.state.global_step == 6
    recs = _probe_records(tmp_path / "b" / "transfer_probe" / "history.jsonl")
    assert [(r["step"], r["status"]) for r in recs] == [(2, "failed"), (4, "ok"), (6, "ok")]
    failed = recs[0]
    assert failed["error_type"] == "OutOfMemoryError" and failed["metrics"] == {}
    assert failed["error"] == "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB (test)"
    assert failed["tokens"] == 2 * TOKENS_PER_STEP and failed["pretrained"] is True
    for r in recs[1:]:  # later probe points fine-tune and measure as usual
        assert r["finetune"]["steps"] == 2 and r["finetune"]["train_loss"] > 0 and r["error"] is None, r
        assert r["metrics"]["cross_entropy"] > 0 and "bleu" in r["metrics"] and "chrf" in r["metrics"]
    warned = [m for m in caplog.messages if "probe failed" in m and "training continues" in m]
    assert len(warned) == 1 and "OutOfMemoryError" in warned[0]
    assert any("transfer_probe/en-fr/df=32/failed" in h for h in probed.state.log_history)
    # the failed nested Trainer left nothing behind: same thread count, same outer run as without probes
    assert torch.get_num_threads() == threads
    a, b = plain.model.state_dict(), probed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "the failed probe changed the outer run's weights"


def test_a_schedule_too_small_for_a_verdict_is_said_at_train_begin(tiny_gpt2, tiny_tokenizer, train_data, task,
                                                                  tmp_path, caplog):
    """Two probe points up to max_steps, a verdict needs five: the user hears it before step 1. A
    schedule of every half step probes once per step: 3 points in 3 steps, also too few."""
    probe = TransferProbeCallback([task], token_points=[2 * TOKENS_PER_STEP, 4 * TOKENS_PER_STEP],
                                  finetune=quick_finetune(max_steps=1), seq_len=SEQ_LEN, baseline=False)
    trainer = make_trainer(tiny_gpt2, tiny_tokenizer, train_data, tmp_path, max_steps=4, callbacks=[probe])
    with caplog.at_level(logging.INFO, logger="transfer_probe"):
        trainer.train()
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "scheduled" in r.getMessage()]
    assert len(warned) == 1 and "only 2 probe points scheduled" in warned[0] and "needs at least 5" in warned[0]
    probe_ok = TransferProbeCallback([task], every_tokens=TOKENS_PER_STEP // 2, finetune=quick_finetune(max_steps=1),
                                     seq_len=SEQ_LEN, baseline=False)
    caplog.clear()
    trainer = make_trainer(tiny_gpt2, tiny_tokenizer, train_data, tmp_path / "ok", max_steps=3, callbacks=[probe_ok])
    with caplog.at_level(logging.INFO, logger="transfer_probe"):
        trainer.train()
    assert any("only 3 probe points scheduled" in m for m in caplog.messages)  # one probe per step at most


PLAIN_SCRIPT = '''
import os, sys
import torch
from transformers import (GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast, Trainer, TrainingArguments,
                          default_data_collator)
sys.path.insert(0, os.environ["TP_TESTS_DIR"])
from _probe_training import SEQ_LEN, lm_examples, quick_finetune
from transfer_probe import TransferProbeCallback
from transfer_probe.tasks import TranslationTask

torch.set_num_threads(1)
tok_dir, data_dir, out_dir = sys.argv[1:4]
tok = PreTrainedTokenizerFast.from_pretrained(tok_dir)
task = TranslationTask.from_files(os.path.join(data_dir, "train.jsonl"), os.path.join(data_dir, "test.jsonl"),
                                  source="en", target="fr", finetune_sizes=[32], max_test_examples=16)
torch.manual_seed(0)
model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=64, n_layer=2, n_head=4,
                                   eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
probe = TransferProbeCallback([task], every_tokens=2 * 4 * SEQ_LEN, finetune=quick_finetune(max_steps=1),
                              seq_len=SEQ_LEN, baseline=False)
args = TrainingArguments(output_dir=out_dir, max_steps=2, per_device_train_batch_size=4, use_cpu=True,
                         report_to=[], save_strategy="no", logging_steps=1000, remove_unused_columns=False, seed=0)
Trainer(model=model, args=args, train_dataset=lm_examples(tok, list(task.train_pairs)), processing_class=tok,
        data_collator=default_data_collator, callbacks=[probe]).train()
'''


def test_a_plain_script_that_configures_no_logging_still_shows_the_probe_lines(tiny_tokenizer, translation_files,
                                                                               tmp_path):
    """A user's script with no logging set up (as in the README): the probe line and the verdict line
    reach stderr (before, they were INFO records that Python's last-resort handler drops)."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    tiny_tokenizer.save_pretrained(tmp_path / "tok")
    script = tmp_path / "plain.py"
    script.write_text(PLAIN_SCRIPT)
    env = {**os.environ, "TP_TESTS_DIR": str(Path(__file__).parent), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "tok"), str(translation_files.dir),
                          str(tmp_path / "out")], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("transfer_probe |")]
    assert any("| run " in ln and "probing every" in ln for ln in lines), out.stderr[-2000:]
    assert any(re.match(r"transfer_probe \| en-fr D_f=32 \| tokens 256 \| BLEU [0-9.]+ chrF ", ln) for ln in lines), "\n".join(lines)
    assert any(re.match(r"transfer_probe \| en-fr D_f=32 \| tokens 256 \| BLEU .* \| insufficient_data: 1 point", ln)
               for ln in lines), lines
    assert any("only 1 probe point scheduled" in ln for ln in lines), lines
