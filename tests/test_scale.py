"""Large histories (issue 12, item 12), scaled down: the streamed reader gives the same fits and
verdicts as the records read whole, holds far less than the file, and the report's size does not grow
with the number of lines. ``benchmarks/bench_scale.py`` measures the full-size case (10^6 lines)."""

import json
import tracemalloc

import pytest

from tests._synthetic import history_records
from transfer_probe import cli, laws
from transfer_probe import diagnose as dg
from transfer_probe.report import write_report
from transfer_probe.store.history import load_table, read_history

GROUPS = [("en-fr", 50, 0), ("en-fr", 500, 1), ("en-de", 50, 2), ("en-de", 500, 3)]


def _history(path, repeats, failed_every=100):
    """4 (task, D_f) groups x (8 points + baseline) x ``repeats``; every ``failed_every``-th line a failed
    probe with its own error text, and a verdict line per point."""
    n = 0
    with open(path, "w") as fh:
        for task, df, seed in GROUPS:
            for r in history_records(repeats=repeats, seed=seed, task=task, df=df, noise=2.0):
                n += 1
                if n % failed_every == 0:
                    r = {**r, "status": "failed", "metrics": {}, "error": f"RuntimeError: out of memory #{n}"}
                fh.write(json.dumps(r) + "\n")
                if r.get("repeat") == 0 and r["pretrained"]:
                    fh.write(json.dumps({"kind": "verdict", "run_id": "run-a", "task": task, "finetune_size": df,
                                         "tokens": r["tokens"], "status": "aligned",
                                         "message": f"{task} D_f={df}: aligned at {r['tokens']:.3g}"}) + "\n")
    return n


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    path = tmp_path_factory.mktemp("scale") / "history.jsonl"
    assert _history(path, repeats=550) >= 19_800  # ~2 x 10^4 lines
    return path


def test_streamed_fits_and_verdicts_equal_those_of_the_records_read_whole(big, capsys):
    assert cli.main(["fit", str(big), "--json"]) == 0
    streamed = {(e["task"], e["finetune_size"]): e["fit"] for e in json.loads(capsys.readouterr().out)}
    whole = read_history(big)  # the in-memory path: every record, then the same fit per group
    for task, df, _ in GROUPS:
        grp = [r for r in whole if r["kind"] == "probe" and r["task"] == task and r["finetune_size"]["examples"] == df
               and r["pretrained"]]
        want = laws.fit_rows(grp, y="bleu", law="log").to_dict()
        assert want["ok"] and streamed[(task, df)]["params"] == want["params"]
        # errors go through lmfit's uncertainty propagation: equal up to the last bit of a float
        assert streamed[(task, df)]["stderr"] == pytest.approx(want["stderr"], rel=1e-12, abs=0)
    assert cli.main(["diagnose", str(big), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    want = [v.to_dict() for v in dg.diagnose_all(whole).values()]
    assert len(got) == 4
    _assert_same(got, json.loads(json.dumps(want, default=cli._jsonable)))


def _assert_same(a, b, path="verdicts"):
    """Equal, numbers to the last bit of a float (lmfit's error propagation may round the last one
    differently when the means were summed in another order)."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert sorted(a) == sorted(b), path
        for k in a:
            _assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-12, abs=0, nan_ok=True), path
    else:
        assert a == b, path


def test_reading_holds_a_small_fraction_of_the_file(big):
    size = big.stat().st_size
    tracemalloc.start()
    try:
        rows = load_table(big)  # what the CLI's fit and diagnose read
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(rows) < 300  # one record per probe point (+ failed points and verdicts), not per line
    assert peak < size / 5, f"peak {peak / 1e6:.1f} MB reading a {size / 1e6:.1f} MB history"


def test_report_size_does_not_grow_with_the_number_of_lines(big, tmp_path):
    small = tmp_path / "small.jsonl"
    _history(small, repeats=55)  # a tenth of the lines, the same probe points
    sizes = [write_report([p], tmp_path / f"{p.stem}.html").stat().st_size for p in (small, big)]
    page = (tmp_path / "history.html").read_text()
    assert page.count("data:image/png;base64,") == 8 + 2  # 4 groups x 2 plots, data transferred per task (2 D_f)
    assert "more distinct log lines (not shown)" in page  # 50 failed probes per group: 40 shown
    assert sizes[1] < 1.15 * sizes[0], sizes


# --- plain tables (CSV): columns, not a dict per row ------------------------------------------------


def _table(path, rows, distinct=False, seed=0):
    """``rows`` CSV rows of tokens, bleu, cross_entropy, pretrained: repeats of 20 points and a baseline,
    or (``distinct``) a dense curve with a token count per row."""
    import math
    import random

    rng = random.Random(seed)
    pts = [0.0] + [1e6 * 1000 ** (i / 19) for i in range(20)]
    with open(path, "w") as fh:
        fh.write("tokens,bleu,cross_entropy,pretrained\n")
        for i in range(rows):
            t = 1e6 * 1000 ** (i / rows) if distinct else pts[i % len(pts)]
            bleu = 3.0 if t == 0 else math.log(2e-3 * t ** 0.6) ** 1.6
            ce = 3.0 if t == 0 else 1.2 + 40.0 / t ** 0.3
            fh.write(f"{t!r},{bleu + rng.gauss(0, 0.4)!r},{ce + rng.gauss(0, 0.002)!r},{'false' if t == 0 else 'true'}\n")


def test_a_csv_table_is_held_as_columns_and_reads_as_the_rows_it_holds(tmp_path):
    import csv

    path = tmp_path / "t.csv"
    path.write_text("tokens,bleu,note,sem\n1e6,10.5,a,\n2e6,,b,0.3\n3e6,12.0,a,0.2\n\n4e6\n")
    old = [{k: (None if v in ("", None) else (float(v) if k != "note" else v)) for k, v in r.items()}
           for r in csv.DictReader(path.open())]  # what the list-of-dicts reader gave
    table = load_table(path)
    assert table == old and list(table) == old and table[1] == old[1] and table[-1] == old[-1]
    assert table[1:3] == old[1:3] and len(table) == 4
    assert [None if x != x else x for x in table.floats("sem").tolist()] == [None, 0.3, 0.2, None]
    assert table.floats("note").tolist() != table.floats("note").tolist()  # all NaN: text is not a number
    big = tmp_path / "big.csv"
    _table(big, 200_000)
    tracemalloc.start()
    try:
        rows = load_table(big)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # a list of dicts held ~300 bytes a row; the columns hold ~33 (3 float columns, one shared text)
    assert len(rows) == 200_000 and peak < 120 * len(rows), f"{peak / len(rows):.0f} bytes a row"


def test_table_rows_sharing_tokens_are_repeats_and_a_dense_curve_is_refused_early(tmp_path):
    """diagnose_rows aggregates repeats while reading (the verdict equals the one from every row's
    record); a table whose every row is its own point is refused at point 1001, before 10^5 points
    are built, with what to do instead."""
    path = tmp_path / "rep.csv"
    _table(path, 4200)
    rows = load_table(path)
    v = dg.diagnose_rows(rows)
    records = [dg.api._row_record(i, r, "tokens", "bleu", "cross_entropy", "table") for i, r in enumerate(rows)]
    _assert_same(v.to_dict(), dg.diagnose(records).to_dict())
    assert v.status == "aligned" and v.n_points == 20
    dense = tmp_path / "dense.csv"
    _table(dense, 100_000, distinct=True)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"more than 1000 probe points by row 1002 .* dense curve"):
            dg.diagnose_rows(load_table(dense))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 30e6
    recs = [{"task": "t", "finetune_size": 1, "tokens": 1e6 + i, "metrics": {"bleu": 1.0}} for i in range(1001)]
    with pytest.raises(ValueError, match="has 1001 probe points"):
        dg.diagnose(recs)
    assert laws.fit_rows(load_table(dense), x="tokens", y="bleu", law="log").ok  # fit takes a dense curve
