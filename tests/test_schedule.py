"""Schedule math: points by tokens seen, token counting, validation, resume state."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace as NS

import pytest

from transfer_probe.schedule import ProbeSchedule, TokenCounter, log_points


def test_log_points_spacing_and_rounding():
    assert log_points(1_000, 1_000_000, 4) == [1000, 10000, 100000, 1000000]
    pts = log_points(100, 51_200, 10)
    assert pts[0] == 100 and pts[-1] == 51_200 and len(pts) == 10
    ratios = [b / a for a, b in zip(pts, pts[1:], strict=False)]
    assert all(abs(r - ratios[0]) < 0.02 * ratios[0] for r in ratios)
    assert log_points(5, 7, 10) == [5, 6, 7]  # narrower than num integers: deduplicated
    assert log_points(42, 42, 1) == [42]


@pytest.mark.parametrize("args", [(0, 10, 3), (-1, 10, 3), (10, 5, 3), (1, 10, 0), (1, 10, 2.5), (1, float("inf"), 3)])
def test_log_points_rejects_bad_input(args):
    with pytest.raises(ValueError):
        log_points(*args)


def test_every_tokens_fires_once_per_multiple():
    s = ProbeSchedule(every_tokens=1000)
    s.start(0)
    fired = []
    for step in range(1, 21):
        p = s.due(step * 256)
        if p:
            fired.append((step * 256, p.covered))
    # multiples of 1000 crossed at 1024, 2048, 3072, 4096, 5120
    assert [t for t, _ in fired] == [1024, 2048, 3072, 4096, 5120]
    assert [c for _, c in fired] == [(1000,), (2000,), (3000,), (4000,), (5000,)]


def test_token_points_and_coalescing():
    s = ProbeSchedule(token_points=[300, 100, 100, 250])
    assert s.token_points == (100, 250, 300)
    s.start(0)
    assert s.due(50) is None
    p = s.due(400)  # all three crossed in one step: one probe covering them
    assert p.reasons == ("token_points",) and p.covered == (100, 250, 300)
    assert s.due(10_000) is None


def test_on_save_and_combined_reasons():
    s = ProbeSchedule(every_tokens=1000, on_save=True)
    s.start(0)
    assert s.due(500) is None
    assert s.due(600, saving=True).reasons == ("on_save",)
    assert s.due(1000, saving=True).reasons == ("every_tokens", "on_save")
    # the same tokens again (a second event at one step) is not a new token point
    assert s.due(1000) is None


def test_resume_marks_passed_points_and_state_roundtrips():
    s = ProbeSchedule(every_tokens=1000, token_points=log_points(100, 10_000, 3))
    s.start(0)
    s.due(1500)
    state = json.loads(json.dumps(s.state_dict()))
    t = ProbeSchedule.from_state_dict(state)
    assert t.last_tokens == 1500 and t.every_tokens == 1000 and t.token_points == (100, 1000, 10_000)
    assert t.due(1900) is None
    assert t.due(2000).covered == (2000,)
    r = ProbeSchedule(token_points=[100, 1000, 10_000])
    r.start(5000)  # resumed past two points: only the third remains
    assert r.due(20_000).covered == (10_000,)


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({}, "no probe schedule"),
        ({"every_tokens": 0}, "every_tokens"),
        ({"every_tokens": -5}, "every_tokens"),
        ({"every_tokens": 10.5}, "whole number"),
        ({"every_tokens": float("nan")}, "every_tokens"),
        ({"token_points": []}, "empty"),
        ({"token_points": [10, 0]}, "positive"),
        ({"token_points": "100"}, "list"),
        ({"on_save": "yes"}, "on_save"),
    ],
)
def test_bad_schedules_raise(kwargs, word):
    with pytest.raises(ValueError, match=word):
        ProbeSchedule(**kwargs)


def _args(**kw):
    base = dict(include_num_input_tokens_seen="no", per_device_train_batch_size=4,
                gradient_accumulation_steps=3, world_size=2)
    base.update(kw)
    return NS(**base)


def test_token_counter_uses_trainer_count_when_enabled(caplog):
    c = TokenCounter(seq_len=64)
    with caplog.at_level(logging.INFO, logger="transfer_probe"):
        assert c.setup(_args(include_num_input_tokens_seen="all")) == "trainer"
    assert "num_input_tokens_seen" in caplog.text
    assert c.tokens(NS(global_step=5, num_input_tokens_seen=12345)) == 12345


def test_token_counter_fallback_sources(caplog):
    c = TokenCounter(seq_len=64)
    with caplog.at_level(logging.INFO, logger="transfer_probe"):
        assert c.setup(_args()) == "computed"
    assert c.tokens_per_step == 4 * 3 * 2 * 64
    assert c.tokens(NS(global_step=7, num_input_tokens_seen=0)) == 7 * 4 * 3 * 2 * 64
    assert "computed as steps x 1536" in caplog.text and "seq_len argument" in caplog.text

    loader = NS(dataset=[{"input_ids": list(range(32))}, {"input_ids": [1]}])
    c = TokenCounter()
    c.setup(_args(world_size=1), train_dataloader=loader)
    assert c.tokens_per_step == 4 * 3 * 32 and c.seq_len_source == "first training example"

    model = NS(config=NS(n_positions=128))
    c = TokenCounter()
    c.setup(_args(world_size=1), model=model, train_dataloader=NS(dataset=[{"text": "x"}]))
    assert c.tokens_per_step == 4 * 3 * 128 and "n_positions" in c.seq_len_source

    with pytest.raises(ValueError, match="seq_len"):
        TokenCounter().setup(_args(), model=NS(config=NS()))
    with pytest.raises(ValueError, match="seq_len"):
        TokenCounter(seq_len=0)


def test_extra_points_fire_once_report_their_reason_and_survive_a_resume():
    s = ProbeSchedule(every_tokens=100)
    s.start(0)
    assert s.due(100).reasons == ("every_tokens",)
    assert s.next_point(100) == 200
    assert s.add_point(141) == 141 and s.next_point(100) == 141
    assert s.due(120) is None
    p = s.due(150)
    assert p.reasons == ("extra",) and p.covered == (141,)
    assert s.due(160) is None  # fired once
    s.add_point(170)
    resumed = ProbeSchedule.from_state_dict(s.state_dict())
    assert resumed.extra_points == [170] and resumed.due(175).reasons == ("extra",)
    assert s.add_point(50) == 161  # a passed point fires at the next step (last seen: 160)


def test_count_between_counts_the_points_a_run_will_reach():
    s = ProbeSchedule(every_tokens=100, token_points=[150, 250, 1000])
    assert s.count_between(0, 400) == 4 + 2  # 100, 200, 300, 400 and 150, 250
    assert s.count_between(250, 400) == 2  # 300, 400; the points at or below 250 are passed
    assert ProbeSchedule(on_save=True).count_between(0, 400) is None


def test_probe_steps_counts_one_probe_per_step():
    from transfer_probe.loop_setup import probe_steps as _probe_steps

    assert _probe_steps(ProbeSchedule(every_tokens=50), 0, 10, 100) == 10  # two multiples per step: one probe
    assert _probe_steps(ProbeSchedule(every_tokens=250), 0, 10, 100) == 4  # 250, 500, 750, 1000
    # token points on steps without a multiple add probes; on a step with one they do not
    assert _probe_steps(ProbeSchedule(every_tokens=250, token_points=[120, 300, 950]), 0, 10, 100) == 4 + 1
    assert _probe_steps(ProbeSchedule(token_points=[120, 150, 950, 5000]), 0, 10, 100) == 2
    assert _probe_steps(ProbeSchedule(on_save=True), 0, 10, 100) is None
