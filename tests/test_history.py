import json
import re

import pytest

from transfer_probe.store.history import HistoryWriter, aggregate, iter_new_records, load_table, read_history


def _rec(tokens, bleu, repeat=0, **kw):
    return {"run_id": "r", "tokens": tokens, "task": "en-fr", "finetune_size": {"examples": 50},
            "pretrained": True, "status": "ok", "metrics": {"bleu": bleu}, "repeat": repeat, **kw}


def test_append_read_roundtrip_keeps_unknown_fields(tmp_path):
    w = HistoryWriter(tmp_path / "h" / "history.jsonl")
    w.append(_rec(100, 10.0, custom={"a": 1}))
    recs = read_history(w.path)
    assert recs[0]["custom"] == {"a": 1}
    assert recs[0]["schema"] == 1 and recs[0]["kind"] == "probe"


def test_truncated_last_line_is_skipped_but_corruption_inside_is_an_error(tmp_path):
    p = tmp_path / "history.jsonl"
    HistoryWriter(p).append(_rec(1, 1.0))
    with open(p, "a") as fh:
        fh.write('{"tokens": 2, "met')
    assert len(read_history(p)) == 1
    with open(p, "a") as fh:
        fh.write("\n" + json.dumps(_rec(3, 3.0)) + "\n")
    with pytest.raises(ValueError, match=r"history.jsonl:2"):
        read_history(p)


def test_aggregate_repeats_mean_and_sem():
    recs = [_rec(100, 10.0, 0), _rec(100, 14.0, 1), _rec(200, 20.0, 0, metrics_ci={"bleu": [18.355, 21.645]}),
            {**_rec(300, 1.0), "status": "failed"}, {"kind": "verdict", "tokens": 300}]
    pts = aggregate(recs)
    assert [p["tokens"] for p in pts] == [100.0, 200.0]
    assert pts[0]["n"] == 2 and pts[0]["mean"]["bleu"] == pytest.approx(12.0)
    assert pts[0]["sem"]["bleu"] == pytest.approx(2.0)
    assert pts[1]["sem"]["bleu"] == pytest.approx(1.0, rel=1e-3)


def test_iter_new_records_reads_only_complete_lines(tmp_path):
    p = tmp_path / "history.jsonl"
    w = HistoryWriter(p)
    w.append(_rec(1, 1.0))
    recs, off = iter_new_records(p, 0)
    assert len(recs) == 1
    with open(p, "a") as fh:
        fh.write('{"partial": ')
    recs, off2 = iter_new_records(p, off)
    assert recs == [] and off2 == off


def test_load_table_csv_and_errors(tmp_path):
    p = tmp_path / "curve.csv"
    p.write_text("tokens,bleu\n1e6,10.5\n2e6,12\n")
    assert load_table(p) == [{"tokens": 1e6, "bleu": 10.5}, {"tokens": 2e6, "bleu": 12.0}]
    with pytest.raises(FileNotFoundError):
        load_table(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="unknown file type"):
        load_table(tmp_path / "x.parquet") if (tmp_path / "x.parquet").touch() is None else None


# --- streaming aggregation (issue 12, item 12) and malformed histories (item 6) -------------------


def _write(path, records):
    with open(path, "w") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")
    return path


def _old_aggregate(records, metrics=None):
    """aggregate() as it was before it streamed: group whole records, then average (kept verbatim)."""
    import math
    import statistics
    from collections import defaultdict

    from transfer_probe.store.history import _finetune_examples, _finite, probe_records

    groups = defaultdict(list)
    for r in probe_records(records):
        groups[(r.get("run_id"), float(r.get("tokens") or 0.0), str(r.get("task")), _finetune_examples(r),
                bool(r.get("pretrained", True)))].append(r)
    out = []
    for (run_id, tokens, task, df, pretrained), recs in groups.items():
        names = set(metrics) if metrics is not None else {m for r in recs for m in (r.get("metrics") or {})}
        mean, sem, values = {}, {}, {}
        for m in sorted(names):
            vals = [float(r["metrics"][m]) for r in recs if _finite((r.get("metrics") or {}).get(m))]
            if not vals:
                continue
            values[m] = vals
            mu = sum(vals) / len(vals)
            mean[m] = mu
            if len(vals) > 1:
                sem[m] = math.sqrt(sum((v - mu) ** 2 for v in vals) / (len(vals) - 1) / len(vals))
            else:
                ci = (recs[0].get("metrics_ci") or {}).get(m)
                # the 90% normal quantile exactly (the old code rounded it to 1.645)
                z = statistics.NormalDist().inv_cdf(0.95)
                sem[m] = (float(ci[1]) - float(ci[0])) / (2 * z) if ci and len(ci) == 2 else float("nan")
        out.append({"run_id": run_id, "tokens": tokens, "task": task, "finetune_size": df, "pretrained": pretrained,
                    "step": max((r.get("step") or 0) for r in recs), "n": len(recs), "mean": mean, "sem": sem,
                    "values": values})
    out.sort(key=lambda p: (p["pretrained"], p["tokens"]))
    return out


def test_streamed_points_aggregate_exactly_like_the_whole_records(tmp_path):
    import random

    from tests._synthetic import history_records
    from transfer_probe.store.history import read_points

    recs = history_records(repeats=3) + history_records(seed=5, task="en-de", df=500, repeats=2, run_id="run-b")
    rng = random.Random(0)
    for r in recs:  # missing values and single finite repeats: the sem then comes from the first record's CI
        if rng.random() < 0.15:
            r["metrics"]["bleu"] = None
        if rng.random() < 0.05:
            r["metrics"]["chrf"] = float("nan")
    recs.append({**recs[0], "status": "failed", "metrics": None, "error": "boom"})
    recs.append({"kind": "verdict", "run_id": "run-a", "task": "en-fr", "finetune_size": 50, "tokens": 1e9,
                 "status": "aligned"})
    rng.shuffle(recs)
    p = _write(tmp_path / "history.jsonl", recs)
    points = read_points(p)
    assert len(points) < len(recs) / 2  # one record per probe point, not per line
    for metrics in (None, ["bleu"], ["bleu", "cross_entropy"]):
        want = json.dumps(_old_aggregate(read_history(p), metrics), sort_keys=True)
        assert json.dumps(aggregate(points, metrics), sort_keys=True) == want
        assert json.dumps(aggregate(read_history(p), metrics), sort_keys=True) == want
    failed = [r for r in points if r.get("status") == "failed"]
    assert len(failed) == 1 and failed[0]["error"] == "boom" and failed[0]["_merged_repeats"]["n"] == 1
    assert any(r["kind"] == "verdict" for r in points)


@pytest.mark.parametrize("bad, why", [
    ({"finetune_size": {"examples": {"n": 50}}}, "finetune_size is {\"examples\": {\"n\": 50}}"),
    ({"finetune_size": [50, 500]}, "finetune_size is [50, 500]"),
    ({"run_id": ["a"]}, "run_id is [\"a\"]"),
    ({"metrics": [1, 2]}, "metrics is [1, 2]"),
])
def test_a_record_that_cannot_be_grouped_is_an_error_naming_file_line_and_count(tmp_path, capsys, bad, why):
    from transfer_probe import cli
    from transfer_probe.report import write_report
    from transfer_probe.store.history import group_key, read_points

    recs = [_rec(100 * i, float(i)) for i in range(1, 8)]
    for i in (2, 5):
        recs[i] = {**recs[i], **bad}
    p = _write(tmp_path / "h.jsonl", recs)
    with pytest.raises(ValueError, match=rf"h.jsonl:3: {re.escape(why)}.*2 records like this, at lines 3, 6"):
        read_points(p)
    for argv in (["fit", str(p)], ["diagnose", str(p)], ["report", str(p), "-o", str(tmp_path / "r.html")]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "h.jsonl:3: " + why in err and "Traceback" not in err
    assert not (tmp_path / "r.html").exists()
    with pytest.raises(ValueError, match=re.escape(why)):
        write_report([p], tmp_path / "r2.html")
    if "finetune_size" in bad:  # the API, for records built in memory: a ValueError, not "unhashable"
        with pytest.raises(ValueError, match="has finetune_size .*: expected a number of examples"):
            group_key(recs[2])


def test_null_metric_values_are_left_out_with_a_note_and_all_null_is_a_clear_error(tmp_path, capsys):
    from tests._synthetic import history_records
    from transfer_probe import cli

    recs = history_records(repeats=1, baseline=False)
    recs[-1]["metrics"]["bleu"] = None  # the newest point has no BLEU
    p = _write(tmp_path / "h.jsonl", recs)
    assert cli.main(["fit", str(p), "--json"]) == 0
    fit = json.loads(capsys.readouterr().out)[0]["fit"]
    assert fit["n_points"] == 7 and any("1 probe point(s) left out: no numeric 'bleu'" in n for n in fit["notes"])
    for r in recs:
        r["metrics"]["bleu"] = None
    _write(p, recs)
    assert cli.main(["fit", str(p)]) == 2
    err = capsys.readouterr().err
    assert "no probe record of (task='en-fr', finetune_size=50) has a numeric 'bleu' (8 records" in err
    assert err.count("\n") == 1


def test_the_interval_level_of_a_record_scales_its_standard_error():
    """A single repeat's standard error is its interval's half-width over the quantile of the level
    the interval was made at (``ci_level``), not always 1.645: an 80% interval of the same width
    means a larger error."""
    from transfer_probe.store.history import aggregate

    base = {"kind": "probe", "run_id": "r", "task": "t", "finetune_size": 8, "tokens": 1e6,
            "pretrained": True, "status": "ok", "metrics": {"bleu": 10.0}, "metrics_ci": {"bleu": [8.0, 12.0]}}
    old = aggregate([base])[0]["sem"]["bleu"]
    at80 = aggregate([{**base, "ci_level": 0.8}])[0]["sem"]["bleu"]
    assert old == pytest.approx(2.0 / 1.6449, rel=1e-3)  # records without a level: 90%
    assert at80 == pytest.approx(2.0 / 1.2816, rel=1e-3)
