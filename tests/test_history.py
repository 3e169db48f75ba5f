import json

import pytest

from transfer_probe.history import HistoryWriter, aggregate, iter_new_records, load_table, read_history


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
