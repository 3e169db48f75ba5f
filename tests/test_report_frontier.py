"""The report's "Compute-optimal frontier" section (``report --frontier TABLE``): the three approaches
side by side with the values ``fit_frontier`` gives, refusals named with their reason, each history's run
placed as ``FrontierResult.place_run`` places it; the table is an input the report never overwrites.
(The report's rendering in a headless browser is tests/test_report.py's.)"""

from __future__ import annotations

import csv
import html
import re

import pytest

from tests._synthetic import history_records
from tests.test_frontier import DATA, SIZES, isoflop_grid, training_curves
from transfer_probe.cli import main
from transfer_probe.laws.frontier import PAPER, fit_frontier
from transfer_probe.report import write_report
from transfer_probe.report_frontier import INTERVAL
from transfer_probe.store.history import HistoryWriter, load_table


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("frontier")
    n, c, y = isoflop_grid()  # final losses only: approach 1 has no curves to take an envelope of
    (d / "grid.csv").write_text("N,C,loss\n" + "".join(f"{a},{b},{v}\n" for a, b, v in zip(n, c, y, strict=True)))
    with open(d / "curves.csv", "w", newline="") as fh:  # checkpoints of 15 runs: approaches 1 and 3 run
        w = csv.DictWriter(fh, fieldnames=["run", "N", "D", "loss"])
        w.writeheader()
        w.writerows(training_curves(SIZES))
    sized = history_records(seed=2, run_id="run-a")  # newest probe at 1e9 tokens
    for r in sized:
        r["params"] = {"non_embedding": 2e8, "total": 2.6e8}
    HistoryWriter(d / "a.jsonl").extend(sized)
    bare = history_records(seed=3, run_id="run-b")
    for r in bare:
        r.pop("params")
    HistoryWriter(d / "b.jsonl").extend(bare)
    return d, sized


def _section(page: str) -> str:
    start = page.index("<h2>Compute-optimal frontier</h2>")
    end = page.find("<h2>", start + 5)
    return page[start:end if end > 0 else len(page)]


def _tables(section: str) -> list[list[list[str]]]:
    """Each table of the section as rows of cell texts (tags dropped, entities read)."""
    def text(cell):
        return html.unescape(re.sub(r"<[^>]+>", "", cell)).strip()

    return [[[text(c) for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row)]
             for row in re.findall(r"<tr>(.*?)</tr>", table)]
            for table in re.findall(r"<table>(.*?)</table>", section)]


def _fits(path, approaches=(1, 2, 3), **columns):
    rows = load_table(path)
    return {a: fit_frontier(rows, a, interval=INTERVAL, **columns) for a in approaches}


def test_three_approaches_side_by_side_with_fit_frontiers_values_and_the_run_placed(files, tmp_path):
    """Training curves: approaches 1 and 3 with fit_frontier's values; approach 2 takes each run's final
    row (a checkpoint before the end of its schedule is not an IsoFLOP run), and 15 runs of 15
    different computes share no budget: named, with its reason. (Approaches 2 and 3 on final losses:
    the next test.)"""
    d, sized = files
    page = write_report([d / "a.jsonl"], tmp_path / "r.html", frontier=d / "curves.csv").read_text()
    sec = _section(page)
    comparison, placed = _tables(sec)
    fits = _fits(d / "curves.csv", approaches=(1, 3))
    by_approach = {row[0]: row for row in comparison[1:]}
    for a, fit in fits.items():
        row = by_approach[str(a)]
        assert row[2] == f"{fit.a:.4f} [{fit.a_interval[0]:.4f}, {fit.a_interval[1]:.4f}]"
        assert row[3] == f"{fit.b:.4f} [{fit.b_interval[0]:.4f}, {fit.b_interval[1]:.4f}]"
        assert row[4] == "{:.2f} [{:.3f}, {:.3f}]".format(*PAPER[a]["a"]) and row[1] == fit.method
        assert row[8] == "ok"
    assert by_approach["1"][6] == f"{len(fits[1].points)} frontier points"
    assert by_approach["3"][6] == "L(N, D) fitted to 600 rows"
    assert by_approach["2"][2:4] == ["not run", "not run"]
    assert "insufficient evidence for the IsoFLOP frontier: 0 usable compute budget(s)" in html.unescape(sec)
    with pytest.raises(ValueError, match="IsoFLOP"):
        fit_frontier(load_table(d / "curves.csv"), 2)
    assert sec.count("data:image/png;base64,") == 1 and "data-approaches='1,3'" in sec
    # the run: N its non-embedding params, tokens its newest probe's; the ratio printed is the placement's
    assert placed[0][:4] == ["run", "N", "tokens so far", "C = 6 N D (FLOPs)"]
    run = placed[1]
    assert run[:4] == ["run-a", "2e+08 (non-embedding parameters)", "1e9", "1.2e18"]
    for i, (a, fit) in enumerate(sorted(fits.items())):
        p = fit.place_run(sized)
        r, lo, hi = p.tokens_ratio
        assert run[4 + i].startswith(f"{r:.2g}x [{lo:.2g}x, {hi:.2g}x]")
        assert f"run run-a, approach {a}: {html.escape(p.text)}" in sec


def test_an_approach_the_table_cannot_feed_is_named_with_its_reason(files, tmp_path):
    d, _ = files
    page = write_report([d / "a.jsonl", d / "b.jsonl"], tmp_path / "r.html", frontier=d / "grid.csv",
                        frontier_options={"x": "N", "compute": "C"}).read_text()
    sec = _section(page)
    comparison, placed = _tables(sec)
    rows = {row[0]: row for row in comparison[1:]}
    assert rows["1"][2:4] == ["not run", "not run"]
    assert ("approach 1 (envelope of training curves) not run: needs training curves: several checkpoints per "
            "run") in html.unescape(sec)
    assert "insufficient evidence for the envelope frontier: 0 size switches" in sec
    fits = {a: fit_frontier(load_table(d / "grid.csv"), a, x="N", compute="C", interval=INTERVAL) for a in (2, 3)}
    for a, fit in fits.items():
        assert rows[str(a)][2] == f"{fit.a:.4f} [{fit.a_interval[0]:.4f}, {fit.a_interval[1]:.4f}]"
    assert "data-approaches='2,3'" in sec and len(placed[0]) == 6  # two approaches: two placement columns
    # a history without params is listed, not placed, and fails nothing
    assert "run run-b: not placed: the probe records hold no model size" in html.unescape(sec)
    # the section does not replace the rest of the report
    assert "<h2>Summary</h2>" in page and page.index("<h2>Summary</h2>") < page.index("Compute-optimal frontier")


def test_the_frontier_table_is_an_input_and_bad_tables_fail_early(files, tmp_path, capsys):
    d, _ = files
    table = d / "grid.csv"
    before = table.read_bytes()
    with pytest.raises(ValueError, match="it is an input file"):
        write_report([d / "a.jsonl"], table, frontier=table)
    assert table.read_bytes() == before
    h = str(d / "a.jsonl")
    cases = [
        ([h, "--frontier", str(table), "-o", str(table)], "it is an input file"),
        ([h, "--frontier", str(tmp_path / "missing.csv"), "-o", str(tmp_path / "r.html")], "missing.csv: no such file"),
        ([h, "--frontier", str(table), "--frontier-x", "Q,D", "-o", str(tmp_path / "r.html")],
         "column 'Q' not found; available columns: C, N, loss"),
        ([h, "--frontier", str(table), "--frontier-x", "N", "-o", str(tmp_path / "r.html")],
         "give the token column in x"),
        ([h, "--frontier", h, "-o", str(tmp_path / "r.html")], "is a history file"),
        ([h, "--frontier-x", "N", "-o", str(tmp_path / "r.html")], "--frontier-x goes with --frontier TABLE"),
    ]
    for argv, message in cases:
        assert main(["report", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert table.read_bytes() == before and not (tmp_path / "r.html").exists()
    # the CLI's columns reach the section
    assert main(["report", h, "--frontier", str(table), "--frontier-x", "N", "--frontier-compute", "C",
                 "-o", str(tmp_path / "r.html")]) == 0
    assert "(x=N, y=loss, compute=C)" in (tmp_path / "r.html").read_text()


def test_epoch_chinchilla_approach_2_in_the_report_lands_in_the_papers_interval(files, tmp_path):
    d, _ = files
    path = DATA / "chinchilla" / "svg_extracted_data.csv"
    if not path.exists():
        pytest.skip(f"{path} not present (the shared data sit next to the repository)")
    page = write_report([d / "a.jsonl"], tmp_path / "r.html", frontier=path,
                        frontier_options={"x": "Model Size", "compute": "Training FLOP"}).read_text()
    rows = {row[0]: row for row in _tables(_section(page))[0][1:]}
    a = float(rows["2"][2].split()[0])
    assert 0.462 <= a <= 0.534  # Hoffmann et al.'s approach-2 interval (estimate 0.49)
    assert a == pytest.approx(0.489, abs=0.005)  # as fit --approach 2 measures it (test_frontier)
