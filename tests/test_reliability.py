"""Fault injection for issue 12 (nothing lost, nothing corrupted): each test breaks something on purpose
and checks the records and files afterwards. The table is in docs/reliability.md."""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
from multiprocessing.connection import Pipe
from types import SimpleNamespace

from _probe_training import SEQ_LEN, lm_examples, make_trainer, quick_finetune, small_task
from transformers import TrainerCallback

from transfer_probe import TransferProbeCallback, cli
from transfer_probe import report as report_mod
from transfer_probe.run import executors as ex_mod
from transfer_probe.run import probe as probe_mod
from transfer_probe.run.executors import InlineExecutor
from transfer_probe.store.history import HistoryWriter, iter_new_records, read_history


def _rec(tokens, bleu=10.0, **kw):
    return {"run_id": "r", "tokens": tokens, "step": tokens, "task": "en-fr", "finetune_size": {"examples": 50},
            "pretrained": True, "status": "ok", "metrics": {"bleu": bleu, "cross_entropy": 3.0 - bleu / 100}, **kw}


def _line(rec) -> bytes:
    return (json.dumps(rec) + "\n").encode()


def _lines_are_whole(path) -> bool:
    data = path.read_bytes()
    return data.endswith(b"\n") and all(isinstance(json.loads(x), dict) for x in data.splitlines())


class FullDisk:
    """``os.write`` on one file as on a disk with ``cap`` bytes for it: short writes, then ENOSPC.
    ``cap=None`` frees the disk."""

    def __init__(self, monkeypatch, path, cap):
        self.path, self.cap, self.calls = path, cap, 0
        real = os.write

        def write(fd, data):
            if self.cap is not None and self._is_target(fd):
                self.calls += 1
                room = self.cap - os.fstat(fd).st_size
                if room <= 0:
                    raise OSError(errno.ENOSPC, "No space left on device")
                data = bytes(data[:room])
            return real(fd, data)

        monkeypatch.setattr(os, "write", write)

    def _is_target(self, fd):
        try:
            return os.path.samestat(os.fstat(fd), os.stat(self.path))
        except OSError:
            return False


# -- 1. report never overwrites an input or a foreign file -----------------------------------------

def test_report_refuses_to_overwrite_an_input_or_a_file_it_did_not_write(tmp_path, monkeypatch, capsys):
    hist = tmp_path / "h.jsonl"
    hist.write_bytes(b"".join(_line(_rec(t, b)) for t, b in [(1e6, 5.0), (4e6, 9.0), (1.6e7, 12.0)]))
    before = hist.read_bytes()
    notes = tmp_path / "notes.html"
    notes.write_text("<html><body>my notes</body></html>")
    link = tmp_path / "link.html"
    link.symlink_to(hist)

    def no_render(*a, **k):
        raise AssertionError("rendered before checking the output")

    monkeypatch.setattr(report_mod, "render_report", no_render)
    for out, why in [(hist, "input"), (link, "input"), (notes, "not a report")]:
        assert cli.main(["report", str(hist), "-o", str(out)]) == 2
        err = capsys.readouterr().err
        assert why in err and len(err.strip().splitlines()) == 1
    assert hist.read_bytes() == before
    assert notes.read_text() == "<html><body>my notes</body></html>"
    monkeypatch.undo()

    # Its own report (and an empty file) may be replaced.
    report = tmp_path / "r.html"
    report.write_text("")
    for _ in range(2):
        assert cli.main(["report", str(hist), "-o", str(report)]) == 0
    assert report_mod.MARKER in report.read_text()[:200]
    assert hist.read_bytes() == before


# -- 2. torn last line, then resume ----------------------------------------------------------------

def test_resume_moves_a_torn_tail_aside_and_never_appends_onto_it(tmp_path, caplog):
    p = tmp_path / "history.jsonl"
    w = HistoryWriter(p)
    w.append(_rec(1))
    w.append(_rec(2))
    torn = _line(_rec(3))[:40]  # killed mid-write
    with open(p, "ab") as fh:
        fh.write(torn)
    with caplog.at_level(logging.WARNING, logger="transfer_probe"):
        resumed = HistoryWriter(p)
    resumed.append(_rec(4))
    sides = sorted(tmp_path.glob("history.jsonl.torn-*"))
    assert [s.read_bytes() for s in sides] == [torn]
    assert resumed.torn_files == sides
    assert any(sides[0].name in m for m in caplog.messages)
    assert _lines_are_whole(p)
    assert [r["tokens"] for r in read_history(p, strict=True)] == [1, 2, 4]
    # A third resume starts cleanly and moves nothing.
    HistoryWriter(p).append(_rec(5))
    assert [r["tokens"] for r in read_history(p, strict=True)] == [1, 2, 4, 5]
    assert len(list(tmp_path.glob("history.jsonl.torn-*"))) == 1


def test_a_live_writer_never_appends_onto_a_line_another_process_tore(tmp_path):
    p = tmp_path / "history.jsonl"
    parent = HistoryWriter(p)
    parent.append(_rec(1))
    with open(p, "ab") as fh:  # the worker process, killed mid-record
        fh.write(_line(_rec(2))[:30])
    parent.append(_rec(3, status="failed"))
    assert _lines_are_whole(p)
    assert [r["tokens"] for r in read_history(p, strict=True)] == [1, 3]
    assert len(list(tmp_path.glob("history.jsonl.torn-*"))) == 1


def test_readers_tolerate_torn_lines_older_writers_left(tmp_path, caplog):
    p = tmp_path / "history.jsonl"
    # Written by an older version: resumed onto a torn line, then torn again at the end.
    p.write_bytes(_line(_rec(1)) + _line(_rec(2))[:33] + _line(_rec(3)) + _line(_rec(4)) + _line(_rec(5))[:20])
    with caplog.at_level(logging.WARNING, logger="transfer_probe"):
        assert [r["tokens"] for r in read_history(p)] == [1, 3, 4]
    assert any(":2: a torn record" in m for m in caplog.messages)
    recs, offset = iter_new_records(p, 0)
    assert [r["tokens"] for r in recs] == [1, 3, 4] and offset == p.stat().st_size - 20
    # The poller may also start inside a line (an offset taken from an older file): no exception.
    recs, _ = iter_new_records(p, len(_line(_rec(1))) + 10)
    assert [r["tokens"] for r in recs] == [3, 4]


def _fake_job():
    return SimpleNamespace(extra={}, snapshot=SimpleNamespace(path=None, step=1, tokens=1, pretrained=True))


def test_executor_poller_after_resume_onto_a_torn_tail(tmp_path):
    p = tmp_path / "history.jsonl"
    p.write_bytes(_line(_rec(1)) + _line(_rec(2))[:50])
    ex = InlineExecutor(p, keep_snapshots=True)  # resumed run: its offset is taken after the repair
    job = _fake_job()
    ex._register([job])
    HistoryWriter(p).append(_rec(3, job_id=job.extra["job_id"]))  # the worker's record
    assert [r["tokens"] for r in ex.poll()] == [3]
    assert ex.pending == 0
    # The worker is killed mid-record; the parent then records the job as failed.
    job = _fake_job()
    ex._register([job])
    with open(p, "ab") as fh:
        fh.write(_line(_rec(4, job_id=job.extra["job_id"]))[:60])
    ex.history.append(_rec(4, status="failed", job_id=job.extra["job_id"]))
    assert [(r["tokens"], r["status"]) for r in ex.poll()] == [(4, "failed")]
    assert [r["tokens"] for r in read_history(p, strict=True)] == [1, 3, 4]


# -- 3. disk full, short writes --------------------------------------------------------------------

def test_disk_full_and_short_writes_keep_records_in_memory_and_no_partial_line(tmp_path, monkeypatch, caplog):
    p = tmp_path / "history.jsonl"
    w = HistoryWriter(p)
    w.append(_rec(1))
    good = p.read_bytes()
    disk = FullDisk(monkeypatch, p, cap=len(good) + 30)  # record 2 fits only in part
    with caplog.at_level(logging.INFO, logger="transfer_probe"):
        w.append(_rec(2))
        assert p.read_bytes() == good  # the partial line was cut back off
        w.append(_rec(3))
        assert [r["tokens"] for r in w.held] == [2, 3]
        assert disk.calls >= 3
        disk.cap = None
        w.append(_rec(4))
    assert w.held == []
    assert [r["tokens"] for r in read_history(p, strict=True)] == [1, 2, 3, 4]
    assert sum("cannot write to the history" in m for m in caplog.messages) == 1
    assert any("writable again" in m for m in caplog.messages)

    # A write that is only ever short (never an error) is completed, never left half-written.
    def halves(fd, data, real=os.write):
        return real(fd, bytes(data[: max(1, len(data) // 2)]))

    monkeypatch.setattr(os, "write", halves)
    w.append(_rec(5))
    assert _lines_are_whole(p) and [r["tokens"] for r in read_history(p)] == [1, 2, 3, 4, 5]


def test_close_logs_what_it_still_cannot_write_as_json(tmp_path, monkeypatch, caplog):
    p = tmp_path / "history.jsonl"
    w = HistoryWriter(p)
    FullDisk(monkeypatch, p, cap=0)
    w.append(_rec(7, note="keep me"))
    with caplog.at_level(logging.ERROR, logger="transfer_probe"):
        w.close()
    logged = [m for m in caplog.messages if "could not be written" in m]
    assert len(logged) == 1 and json.loads(logged[0].splitlines()[1])["note"] == "keep me"
    assert p.read_bytes() == b""


def test_inline_executor_returns_an_unwritten_record_and_writes_it_at_close(tmp_path, monkeypatch):
    p = tmp_path / "history.jsonl"
    monkeypatch.setattr(probe_mod, "run_probe", lambda job: _rec(9, job_id=job.extra["job_id"]))
    ex = InlineExecutor(p, keep_snapshots=True)
    disk = FullDisk(monkeypatch, p, cap=0)
    assert ex.submit([_fake_job()]) is True  # no OSError into the training loop
    assert [r["tokens"] for r in ex.poll()] == [9] and ex.pending == 0
    assert p.read_bytes() == b""
    disk.cap = None
    assert ex.close() == []  # already returned once
    assert [r["tokens"] for r in read_history(p, strict=True)] == [9]


def test_process_worker_hands_records_it_cannot_write_to_the_parent(tmp_path, monkeypatch):
    p = tmp_path / "history.jsonl"
    monkeypatch.setattr(probe_mod, "run_probe", lambda job: _rec(11, job_id=job.extra["job_id"]))
    FullDisk(monkeypatch, p, cap=0)
    parent, child = Pipe(duplex=True)
    worker = threading.Thread(target=ex_mod._worker_main, args=(str(os.dup(child.fileno())), str(p), "0"),
                              daemon=True)
    worker.start()
    assert parent.poll(60) and parent.recv()[0] == "ready"
    parent.send(("j1", SimpleNamespace(extra={"job_id": "j1"})))
    assert parent.poll(30), "the worker did not answer"
    kind, job_id, status, unwritten = parent.recv()
    parent.send(None)
    worker.join(timeout=30)
    assert (kind, job_id, status) == ("done", "j1", "ok")
    assert [(r["tokens"], r["job_id"]) for r in unwritten] == [(11, "j1")]
    assert not p.exists() or p.read_bytes() == b""


class _FreeDiskAt(TrainerCallback):
    def __init__(self, disk, step):
        self.disk, self.step = disk, step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step + 1 == self.step:
            self.disk.cap = None


def test_disk_full_during_training_loses_no_record_and_training_goes_on(
        tiny_gpt2, tiny_tokenizer, translation_pairs, translation_files, tmp_path, monkeypatch, caplog):
    tokens_per_step = 4 * SEQ_LEN
    hist = tmp_path / "transfer_probe" / "history.jsonl"
    hist.parent.mkdir(parents=True)
    hist.touch()
    disk = FullDisk(monkeypatch, hist, cap=0)  # full from the start until step 4
    probe = TransferProbeCallback([small_task(translation_files)], every_tokens=2 * tokens_per_step,
                                  seq_len=SEQ_LEN, baseline=False, finetune=quick_finetune(max_steps=2))
    trainer = make_trainer(tiny_gpt2, tiny_tokenizer, lm_examples(tiny_tokenizer, translation_pairs["train"]),
                           tmp_path, max_steps=4, callbacks=[probe, _FreeDiskAt(disk, 4)])
    with caplog.at_level(logging.INFO, logger="transfer_probe"):
        trainer.train()
    assert trainer.state.global_step == 4
    assert disk.calls > 0
    probes = [r for r in read_history(hist, strict=True) if r.get("kind") == "probe"]
    assert [r["step"] for r in probes] == [2, 4]
    assert _lines_are_whole(hist)
    assert sum("cannot write to the history" in m for m in caplog.messages) == 1


# -- 4 and 5. the process executor: two live runs in one output_dir; killed and resumed ------------

def _start_killable_run(tokenizer, translation_files, tmp_path, out, block_step):
    """tests/_kill_run.py in its own process, blocked after submitting its point of ``block_step``:
    (process, run_id, its worker's pid)."""
    import subprocess
    import sys
    from pathlib import Path

    tokenizer.save_pretrained(tmp_path / "tok")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(Path(__file__).parent / "_kill_run.py"), str(tmp_path / "tok"),
                             str(translation_files.dir), str(out), str(block_step)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    for line in proc.stdout:
        if line.startswith("BLOCKED"):
            _, run_id, worker = line.split()
            return proc, run_id, int(worker)
    raise AssertionError(f"the training script ended without blocking (exit {proc.wait()})")


def _alive(pid) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead, only not reaped
    except OSError:
        return False


def _gone_within(pid, seconds) -> bool:
    """Whether ``pid`` ends within ``seconds``; killed if not, so no test leaves it behind."""
    import signal
    import time

    end = time.monotonic() + seconds
    while _alive(pid) and time.monotonic() < end:
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
        return False
    return True


def _kill(proc):
    import signal

    proc.kill() if proc.poll() is None else None
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def test_a_second_live_run_in_the_same_output_dir_leaves_the_first_runs_snapshots_alone(
        tiny_gpt2, tiny_tokenizer, translation_pairs, translation_files, tmp_path, caplog):
    from transfer_probe.run.snapshot import MARKER_FILENAME, RunSnapshots, load_snapshot

    out = tmp_path / "run"
    a, run_a, worker_a = _start_killable_run(tiny_tokenizer, translation_files, tmp_path, out, block_step=2)
    try:
        snaps = out / "transfer_probe" / "snapshots"
        a_snap = snaps / run_a / "step-2"
        assert (a_snap / MARKER_FILENAME).is_file()  # waiting behind A's baseline probe
        marker = (a_snap / MARKER_FILENAME).read_bytes()
        # Run B: a real Trainer in this process, same output_dir, process executor, probes at steps 2 and 4.
        probe = TransferProbeCallback([small_task(translation_files)], every_tokens=2 * 4 * SEQ_LEN, seq_len=SEQ_LEN,
                                      executor="process", executor_options={"num_threads": 1},
                                      finetune=quick_finetune(max_steps=1), end_timeout=120)
        trainer = make_trainer(tiny_gpt2, tiny_tokenizer, lm_examples(tiny_tokenizer, translation_pairs["train"]),
                               out, max_steps=4, callbacks=[probe])
        with caplog.at_level(logging.INFO, logger="transfer_probe"):
            trainer.train()
        assert probe.run_id != run_a
        # A's snapshot is untouched (before: B removed it at start, then wrote its own step-2 there).
        assert (a_snap / MARKER_FILENAME).read_bytes() == marker and load_snapshot(a_snap).step == 2
        assert not any("removed" in m for m in caplog.messages)
        told = [m for m in caplog.messages if "another live run" in m]
        assert len(told) == 1 and run_a in told[0] and f"pid {a.pid}" in told[0]
        b_recs = [r for r in read_history(out / "transfer_probe" / "history.jsonl", strict=True)
                  if r["kind"] == "probe" and r["run_id"] == probe.run_id]
        assert sorted((r["step"], r["pretrained"], r["status"]) for r in b_recs) == [
            (0, False, "ok"), (2, True, "ok"), (4, True, "ok")]  # B lost no probe
        assert not (snaps / probe.run_id).exists()  # B's folder, released at its end
    finally:
        _kill(a)
    assert _gone_within(worker_a, 10), "A's worker outlived its training process"
    # Now A is dead: its folder is an orphan, and the next run cleans it.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="transfer_probe"):
        RunSnapshots.claim(snaps, "c").release()
    assert not (snaps / run_a).exists()
    assert any(f"removed 1 snapshot(s) left by run {run_a} (pid {a.pid}, no longer running)" in m
               for m in caplog.messages)


def test_a_killed_process_run_resumes_as_the_same_run_and_every_submitted_point_gets_its_record(
        tiny_gpt2, tiny_tokenizer, translation_pairs, translation_files, tmp_path, caplog):
    out = tmp_path / "run"
    proc, run_id, worker = _start_killable_run(tiny_tokenizer, translation_files, tmp_path, out, block_step=4)
    # At the kill: the worker is inside the baseline probe, steps 2 and 4 wait; nothing is recorded yet.
    _kill(proc)
    assert _gone_within(worker, 10), "the worker outlived its training process"
    hist = out / "transfer_probe" / "history.jsonl"
    assert not hist.exists() or read_history(hist) == []
    probe = TransferProbeCallback([small_task(translation_files)], every_tokens=2 * 4 * SEQ_LEN, seq_len=SEQ_LEN,
                                  executor="process", executor_options={"num_threads": 1, "max_pending": 4},
                                  finetune=quick_finetune(max_steps=1), end_timeout=120)
    trainer = make_trainer(tiny_gpt2, tiny_tokenizer, lm_examples(tiny_tokenizer, translation_pairs["train"]),
                           out, max_steps=6, save_steps=2, callbacks=[probe])
    with caplog.at_level(logging.INFO, logger="transfer_probe"):
        trainer.train(resume_from_checkpoint=str(out / "checkpoint-4"))
    assert probe.run_id == run_id  # before: a new run_id (no record to take it from)
    recs = [r for r in read_history(hist, strict=True) if r["kind"] == "probe"]
    # Every point submitted before the kill (baseline, 2, 4) and the new one (6): one record each, ok.
    assert sorted((r["step"], r["pretrained"], r["status"]) for r in recs) == [
        (0, False, "ok"), (2, True, "ok"), (4, True, "ok"), (6, True, "ok")]
    assert {r["run_id"] for r in recs} == {run_id}
    assert [r["schedule"]["reasons"] for r in recs if r["step"] in (2, 4)] == [
        ["resubmitted: no record before the restart"]] * 2
    assert not (out / "transfer_probe" / "snapshots" / run_id).exists()


def test_records_the_dead_process_never_judged_get_their_verdict_on_resume(
        tiny_gpt2, tiny_tokenizer, translation_pairs, translation_files, tmp_path, make_snapshot):
    from transfer_probe.run.probe import ProbeJob, run_probe

    hist = tmp_path / "transfer_probe" / "history.jsonl"
    task = small_task(translation_files)
    train = lm_examples(tiny_tokenizer, translation_pairs["train"])

    def probe():
        return TransferProbeCallback([task], every_tokens=10**9, seq_len=SEQ_LEN, baseline=False,
                                     finetune=quick_finetune(max_steps=1))

    first = probe()
    make_trainer(tiny_gpt2, tiny_tokenizer, train, tmp_path, max_steps=1, save_steps=1, callbacks=[first]).train()
    # What the worker wrote after its training process died: a probe record no verdict follows.
    snap = make_snapshot(tiny_gpt2, tokens=4 * SEQ_LEN, step=1)
    record = run_probe(ProbeJob(snapshot=snap, task=task, finetune_size=32, config=quick_finetune(max_steps=1),
                                run_id=first.run_id))
    HistoryWriter(hist).append(record)
    second = probe()
    make_trainer(tiny_gpt2, tiny_tokenizer, train, tmp_path, max_steps=2, callbacks=[second]).train(
        resume_from_checkpoint=str(tmp_path / "checkpoint-1"))
    recs = read_history(hist, strict=True)
    assert second.run_id == first.run_id
    assert [(r["kind"], r["run_id"]) for r in recs] == [("probe", first.run_id), ("verdict", first.run_id)]
    assert (recs[1]["task"], recs[1]["finetune_size"], recs[1]["status"]) == (
        "en-fr", {"examples": 32}, "insufficient_data")
