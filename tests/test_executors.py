"""Executors with real probes: inline, and the process executor with a real worker process.

The process tests kill the real worker with SIGKILL, overflow its real queue and time out a real
probe; the callback-level tests (training goes on while a probe runs, checkpoint rotation under a
slow probe) are at the end.
"""

from __future__ import annotations

import logging
import os
import signal
import time

import pytest

from transfer_probe.run.executors import InlineExecutor, ProcessExecutor
from transfer_probe.run.probe import FinetuneConfig, ProbeJob
from transfer_probe.run.snapshot import save_snapshot
from transfer_probe.store.history import read_history

FAST = FinetuneConfig(max_steps=3, batch_size=8, learning_rate=3e-3, bootstrap=0, device="cpu", num_threads=1,
                      eval_batch_size=64)
SLOW = FinetuneConfig(max_steps=100_000, batch_size=8, bootstrap=0, device="cpu", num_threads=1)


@pytest.fixture
def snap_dir(tiny_gpt2, tiny_tokenizer, tmp_path):
    def make(step: int):
        return save_snapshot(tiny_gpt2, tmp_path / "snapshots" / f"step-{step}", tokens=step * 100, step=step,
                             tokenizer=tiny_tokenizer)
    return make


def _jobs(snap, task, sizes=(64,), config=FAST):
    return [ProbeJob(snapshot=snap, task=task, finetune_size=df, config=config, run_id="t") for df in sizes]


def _wait(pred, timeout=120.0, every=0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(every)
    raise AssertionError("timed out waiting")


def test_registry_names():
    # one registry: the plugin manager names the built-ins, and the callback resolves through it
    from transfer_probe.loop_setup import resolve_executor
    from transfer_probe.plugins import get_executor

    assert get_executor("inline") is InlineExecutor and get_executor("process") is ProcessExecutor
    assert resolve_executor("process") is ProcessExecutor
    with pytest.raises(ValueError, match="Did you mean 'process'"):
        resolve_executor("proces")


def test_inline_records_results_and_failures(snap_dir, translation_task, tmp_path):
    hist = tmp_path / "h.jsonl"
    ex = InlineExecutor(hist)
    snap = snap_dir(1)
    jobs = _jobs(snap, translation_task, sizes=(64, 10_000))  # D_f 10000 > 400 train pairs: fails
    assert ex.submit(jobs) is True
    recs = ex.poll()
    assert ex.pending == 0 and ex.poll() == []
    by_df = {r["finetune_size"]["examples"] if r["status"] == "ok" else 10_000: r for r in recs}
    assert by_df[64]["status"] == "ok" and by_df[64]["step"] == 1 and by_df[64]["tokens"] == 100
    assert "bleu" in by_df[64]["metrics"]
    assert by_df[10_000]["status"] == "failed" and "larger than its train split" in by_df[10_000]["error"]
    assert not snap.path.exists()  # released once both jobs had records
    assert len(read_history(hist)) == 2


def test_process_executor_runs_kill_restart_overflow_and_timeout(snap_dir, translation_task, tmp_path, caplog):
    hist = tmp_path / "h.jsonl"
    ex = ProcessExecutor(hist, max_pending=1, overflow="coalesce", num_threads=1)
    try:
        # 1. a slow probe starts; SIGKILL the worker mid-probe
        slow = snap_dir(1)
        assert ex.submit(_jobs(slow, translation_task, config=SLOW))
        _wait(lambda: ex.running_job is not None)
        pid = ex.worker_pid
        time.sleep(2.0)  # well inside the fine-tune (imports done at worker start)
        os.kill(pid, signal.SIGKILL)
        with caplog.at_level(logging.WARNING, logger="transfer_probe"):
            recs = _wait(ex.poll, timeout=60)
        assert len(recs) == 1 and recs[0]["status"] == "failed" and recs[0]["step"] == 1
        assert "SIGKILL" in recs[0]["error"] and "WorkerDied" in recs[0]["error"]
        assert "recorded as failed, starting a new worker" in caplog.text
        assert not slow.path.exists()

        # 2. the new worker takes jobs; a burst of points overflows the queue of one
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="transfer_probe"):
            snaps = [snap_dir(s) for s in (10, 20, 30, 40)]
            accepted = [ex.submit(_jobs(s, translation_task)) for s in snaps]
        assert accepted == [True] * 4  # coalesce accepts the new point, drops a waiting one
        assert ex.worker_pid != pid
        recs = []
        _wait(lambda: recs.extend(ex.poll()) or ex.pending == 0, timeout=180)
        steps = sorted(r["step"] for r in recs)
        dropped = sorted(d["step"] for d in ex.dropped)
        # Every point accounted for exactly once; 40 (the newest) always runs, and at most one older
        # one (the one the worker had taken before the next arrived; usually 10) ran before it.
        assert sorted(steps + dropped) == [10, 20, 30, 40] and steps[-1] == 40 and len(steps) <= 2, (steps, dropped)
        assert all(r["status"] == "ok" for r in recs)
        assert caplog.text.count("probes are slower than the schedule") == 1
        assert not any(s.path.exists() for s in snaps)

        # 3. close with a probe still running: recorded as not finished, worker stopped
        assert ex.submit(_jobs(snap_dir(50), translation_task, config=SLOW))
        _wait(lambda: ex.running_job is not None)
        worker = ex.worker_pid
        t = time.monotonic()
        recs = ex.close(timeout=1.0)
        assert time.monotonic() - t < 20
        assert len(recs) == 1 and recs[0]["status"] == "failed" and "ProbeNotFinished" in recs[0]["error"]
        assert "end_timeout=1.0s" in recs[0]["error"]
        with pytest.raises(ProcessLookupError):
            os.kill(worker, 0)
    finally:
        ex.close(timeout=0)
    hist_recs = read_history(hist)
    assert len(hist_recs) == 1 + len(steps) + 1


def test_process_executor_skip_policy_and_validation(snap_dir, translation_task, tmp_path):
    ex = ProcessExecutor(tmp_path / "skip.jsonl", max_pending=1, overflow="skip", num_threads=1)
    try:
        a, b, c = snap_dir(1), snap_dir(2), snap_dir(3)
        assert ex.submit(_jobs(a, translation_task, config=SLOW))
        _wait(lambda: ex.running_job is not None)
        assert ex.submit(_jobs(b, translation_task)) is True  # waits behind the running one
        assert ex.submit(_jobs(c, translation_task)) is False  # queue full: the new point is skipped
        assert [d["step"] for d in ex.dropped] == [3] and not c.path.exists() and b.path.exists()
    finally:
        recs = ex.close(timeout=0)
    assert sorted(r["step"] for r in recs) == [1, 2] and all(r["status"] == "failed" for r in recs)
    assert not a.path.exists() and not b.path.exists()
    with pytest.raises(ValueError, match="max_pending"):
        ProcessExecutor(tmp_path / "h.jsonl", max_pending=0)
    with pytest.raises(ValueError, match="overflow"):
        ProcessExecutor(tmp_path / "h.jsonl", overflow="drop")
    with pytest.raises(ValueError, match="device"):
        ProcessExecutor(tmp_path / "h.jsonl", device="tpu")


# ---------------------------------------------------------------------------------------------
# The process executor under a real Trainer


class _SlowSteps:
    """A training step that takes a while (as real ones do), with a timeline of steps."""

    def __new__(cls, seconds, probe=None):
        from transformers import TrainerCallback

        class SlowSteps(TrainerCallback):
            def __init__(self):
                self.timeline = []
                self.logged_steps = []  # (state.global_step, probed step) as a TensorBoard callback sees them

            def on_train_begin(self, args, state, control, **kwargs):
                # Start stepping once the probe worker is up (its imports take seconds on a busy
                # machine), so probes overlap the training steps of this short run.
                if probe is not None:
                    assert probe.executor.wait_ready(120)

            def on_step_end(self, args, state, control, **kwargs):
                time.sleep(seconds)
                self.timeline.append((time.time(), state.global_step))

            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "transfer_probe/step" in logs:
                    self.logged_steps.append((state.global_step, int(logs["transfer_probe/step"])))

        return SlowSteps()


def test_training_continues_while_probing_and_rotation_cannot_touch_snapshots(
        tiny_gpt2, tiny_tokenizer, translation_pairs, translation_files, tmp_path, caplog):
    from _probe_training import SEQ_LEN, lm_examples, make_trainer, quick_finetune, small_task

    from transfer_probe import TransferProbeCallback

    probe = TransferProbeCallback([small_task(translation_files)], on_save=True, executor="process",
                                  executor_options={"max_pending": 8, "num_threads": 1},
                                  finetune=quick_finetune(max_steps=10), seq_len=SEQ_LEN, baseline=False,
                                  end_timeout=300)
    slow = _SlowSteps(0.25, probe)
    trainer = make_trainer(tiny_gpt2, tiny_tokenizer, lm_examples(tiny_tokenizer, translation_pairs["train"]),
                           tmp_path, max_steps=12, save_steps=4, save_total_limit=1, callbacks=[probe, slow])
    with caplog.at_level(logging.INFO, logger="transfer_probe"):
        trainer.train()
    recs = [r for r in read_history(tmp_path / "transfer_probe" / "history.jsonl") if r["kind"] == "probe"]
    # every save was probed, from its hard-linked checkpoint, though rotation deleted the checkpoint
    assert sorted(r["step"] for r in recs) == [4, 8, 12]
    assert all(r["status"] == "ok" for r in recs), [r.get("error") for r in recs]
    assert [p.name for p in tmp_path.glob("checkpoint-*")] == ["checkpoint-12"]
    assert list((tmp_path / "transfer_probe" / "snapshots").iterdir()) == []  # released after the probes
    # training advanced while probes ran: steps were taken inside some probe's wall-clock interval
    during = [s for t, s in slow.timeline for r in recs if r["time"] - r["seconds"] <= t <= r["time"]]
    assert during, "no training step happened while a probe was running"
    late = [m for m in caplog.messages if "reported at step" in m]
    assert late  # results picked up at later steps, logged with their own tokens axis
    logged = [h for h in trainer.state.log_history if "transfer_probe/tokens" in h]
    assert sorted(h["transfer_probe/step"] for h in logged) == [4, 8, 12]
    # trackers plot each result at the step probed, though it arrived later; training's own clock is
    # unharmed (the step is set back after the log call)
    assert all(h["step"] == h["transfer_probe/step"] for h in logged)
    assert slow.logged_steps and all(s == h for s, h in slow.logged_steps)
    assert trainer.state.global_step == 12
    # the callback itself blocked the training loop only briefly (snapshots by hard link)
    assert probe.blocked_seconds < sum(r["seconds"] for r in recs)


def test_end_of_training_waits_then_records_unfinished(tiny_gpt2, tiny_tokenizer, translation_pairs,
                                                       translation_files, tmp_path, caplog):
    from _probe_training import SEQ_LEN, lm_examples, make_trainer, small_task

    from transfer_probe import TransferProbeCallback

    probe = TransferProbeCallback([small_task(translation_files)], every_tokens=4 * SEQ_LEN, executor="process",
                                  executor_options={"num_threads": 1}, finetune=SLOW, seq_len=SEQ_LEN,
                                  baseline=False, end_timeout=1.0)
    trainer = make_trainer(tiny_gpt2, tiny_tokenizer, lm_examples(tiny_tokenizer, translation_pairs["train"]),
                           tmp_path, max_steps=1, callbacks=[probe])
    t = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="transfer_probe"):
        trainer.train()
    assert time.monotonic() - t < 60
    recs = [r for r in read_history(tmp_path / "transfer_probe" / "history.jsonl") if r["kind"] == "probe"]
    assert len(recs) == 1 and recs[0]["status"] == "failed" and "ProbeNotFinished" in recs[0]["error"]
    assert any("did not finish within 1.0s" in m for m in caplog.messages)
    assert any("transfer_probe/en-fr/df=32/failed" in h for h in trainer.state.log_history)


def test_process_executor_gives_up_on_a_worker_that_cannot_start(snap_dir, translation_task, tmp_path, caplog):
    # A broken environment (here: a Python that cannot find its standard library) must not make the
    # executor restart workers forever, nor break training: probes become failed records.
    with caplog.at_level(logging.WARNING, logger="transfer_probe"):
        ex = ProcessExecutor(tmp_path / "h.jsonl", env={"PYTHONHOME": "/nonexistent"}, poll_interval=0.05)
        try:
            _wait(lambda: ex.broken, timeout=60)
            snap = snap_dir(7)
            assert ex.submit(_jobs(snap, translation_task))
            recs = ex.poll()
        finally:
            ex.close(timeout=0)
    assert ex.restarts == 2 and "died 3 times before it was ready" in ex.broken
    assert len(recs) == 1 and recs[0]["status"] == "failed" and "before it was ready" in recs[0]["error"]
    assert not snap.path.exists()
    assert sum("from now on" in m for m in caplog.messages) == 1


def test_process_executor_never_drops_the_baseline_point(snap_dir, translation_task, tmp_path):
    """The no-pretraining baseline is measured once per run: it is accepted even beyond max_pending,
    and a full queue coalesces a waiting pretrained point, never the baseline."""
    from dataclasses import replace

    ex = ProcessExecutor(tmp_path / "h.jsonl", max_pending=1, overflow="coalesce", num_threads=1)
    try:
        running = snap_dir(1)
        assert ex.submit(_jobs(running, translation_task, config=SLOW))
        _wait(lambda: ex.running_job is not None)
        waiting = snap_dir(2)
        assert ex.submit(_jobs(waiting, translation_task, config=SLOW))
        base = replace(snap_dir(0), tokens=0, step=0, pretrained=False)
        assert ex.submit(_jobs(base, translation_task, config=SLOW))  # queue full: accepted beyond it
        assert ex.dropped == []
        newest = snap_dir(3)
        assert ex.submit(_jobs(newest, translation_task, config=SLOW))  # coalesces the pretrained point
        assert [d["step"] for d in ex.dropped] == [2]
    finally:
        recs = ex.close(timeout=0)
    # everything not dropped has a record (not finished, at close), the baseline included
    assert sorted((r["step"], r.get("pretrained", True)) for r in recs) == [(0, False), (1, True), (3, True)]
