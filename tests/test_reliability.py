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
from transfer_probe import executors as ex_mod
from transfer_probe import probe as probe_mod
from transfer_probe import report as report_mod
from transfer_probe.executors import InlineExecutor
from transfer_probe.history import HistoryWriter, iter_new_records, read_history


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
