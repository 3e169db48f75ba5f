"""ProbeLoop without a Trainer: driven by hand with a tiny model and token counts, and by posthoc."""

from __future__ import annotations

import json

import pytest
import torch
from _probe_training import quick_finetune, small_task

from transfer_probe.loop import ProbeLoop
from transfer_probe.schedule import ProbeSchedule
from transfer_probe.store.history import read_history


@pytest.fixture(scope="module")
def task(translation_files):
    return small_task(translation_files)


def _nudge(model, step):
    """A stand-in for a training step: the weights move, so each probe point has its own weights."""
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.0 + 0.01 * step)


def test_the_loop_runs_without_a_trainer(tiny_gpt2, tiny_tokenizer, task, tmp_path):
    loop = ProbeLoop([task], schedule=ProbeSchedule(every_tokens=100), finetune=quick_finetune(max_steps=1))
    loop.start(tmp_path / "tp", tokenizer=tiny_tokenizer, model=tiny_gpt2)
    out = loop.catch_up(step=0)  # the no-pretraining baseline
    for step in range(1, 6):  # 50 tokens per step: points at steps 2 and 4
        _nudge(tiny_gpt2, step)
        point = loop.due(50 * step, step)
        if point is not None:
            assert loop.due(50 * step, step) is None  # one probe per step
            out += loop.probe(point, step, tiny_gpt2)
    out += loop.finish(step=5)
    recs = [r for r in read_history(tmp_path / "tp" / "history.jsonl") if r["kind"] == "probe"]
    assert [(r["step"], r["tokens"], r["pretrained"], r["status"]) for r in recs] == [
        (0, 0, False, "ok"), (2, 100, True, "ok"), (4, 200, True, "ok")]
    assert [r["job_id"] for r in loop.records] == [r["job_id"] for r in recs]
    assert {r["run_id"] for r in recs} == {loop.run_id}
    assert recs[1]["schedule"] == {"reasons": ["every_tokens"], "covered": [100], "tokens_source": None}
    # what the caller reports: one record outcome per record, one value set per point at its step
    assert [o.record["job_id"] for o in out if o.kind == "record"] == [r["job_id"] for r in recs]
    points = [o for o in out if o.kind == "point"]
    assert [(o.step, o.values.get("transfer_probe/tokens")) for o in points] == [(0, None), (2, 100.0), (4, 200.0)]
    assert points[1].values["transfer_probe/en-fr/df=32/cross_entropy"] == recs[1]["metrics"]["cross_entropy"]
    assert points[0].values["transfer_probe/en-fr/df=32/baseline/bleu"] == recs[0]["metrics"]["bleu"]
    # a verdict per new pretrained point, in the history, in memory and handed back
    verdicts = [o for o in out if o.kind == "verdict"]
    assert [(o.step, o.group, o.verdict.status) for o in verdicts] == [
        (2, ("en-fr", 32), "insufficient_data"), (4, ("en-fr", 32), "insufficient_data")]
    assert verdicts[0].values["transfer_probe/en-fr/df=32/verdict/warning"] == 0.0
    on_file = [r for r in read_history(tmp_path / "tp" / "history.jsonl") if r["kind"] == "verdict"]
    assert [v["tokens"] for v in on_file] == [100, 200]
    assert [r.get("kind") for r in loop.run_records] == ["probe", "probe", "verdict", "probe", "verdict"]

    # the same folder again, resuming at step 4: the same run, its records read once, nothing probed twice
    again = ProbeLoop([task], schedule=ProbeSchedule(every_tokens=100), finetune=quick_finetune(max_steps=1))
    again.start(tmp_path / "tp", tokenizer=tiny_tokenizer, model=tiny_gpt2, resuming=True, step=4, tokens=200)
    assert again.run_id == loop.run_id
    assert [r["job_id"] for r in again.run_records if r["kind"] == "probe"] == [r["job_id"] for r in recs]
    assert again.catch_up(step=4) == [] and again.due(200, 4) is None
    again.finish(step=4)
    assert len([r for r in read_history(tmp_path / "tp" / "history.jsonl") if r["kind"] == "probe"]) == 3


def _checkpoint(model, tokenizer, folder, step, tokens):
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)  # as the Trainer saves its processing_class
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "num_input_tokens_seen": tokens}))
    return folder


def test_posthoc_goes_through_the_loop_and_records_what_a_probe_of_each_checkpoint_gives(
        tiny_gpt2, tiny_tokenizer, task, tmp_path, monkeypatch):
    from transfer_probe import posthoc
    from transfer_probe.run.probe import ProbeJob, run_probe

    dirs = []
    for step in (10, 20):
        _nudge(tiny_gpt2, 1)
        dirs.append(_checkpoint(tiny_gpt2, tiny_tokenizer, tmp_path / f"checkpoint-{step}", step, step * 256))
    collected = []
    real_collect = ProbeLoop.collect
    monkeypatch.setattr(ProbeLoop, "collect", lambda self, step: collected.append(step) or real_collect(self, step))
    seen = []
    cfg = quick_finetune(max_steps=1)
    recs = posthoc.probe_checkpoint_dirs(dirs, task, tmp_path / "probes.jsonl", config=cfg, baseline=True,
                                         run_id="ph", progress=False, on_record=seen.append)
    assert collected == [0, 10, 20]  # one job at a time, each record collected by the loop
    assert [r["status"] for r in recs] == ["ok"] * 3, recs
    assert [(r["step"], r["tokens"], r["pretrained"], r["checkpoint"]) for r in recs] == [
        (0, 0, False, None), (10, 2560, True, str(dirs[0].resolve())), (20, 5120, True, str(dirs[1].resolve()))]
    assert seen == recs and recs == read_history(tmp_path / "probes.jsonl")  # only probes: no verdicts written
    assert not (tmp_path / "snapshots").exists() and all(d.is_dir() for d in dirs)  # the user's folders stay
    # the records are those of probing each checkpoint by hand (what posthoc did before the loop)
    snaps = [posthoc.checkpoint_snapshot(d) for d in dirs]
    from dataclasses import replace

    snaps.insert(0, replace(snaps[0], tokens=0, step=0, pretrained=False))
    by_hand = [run_probe(ProbeJob(snapshot=s, task=task, finetune_size=32, config=cfg, run_id="ph")) for s in snaps]
    assert [r["metrics"] for r in recs] == [r["metrics"] for r in by_hand]
    assert [r["finetune"]["seed"] for r in recs] == [r["finetune"]["seed"] for r in by_hand]
