"""The HTML report: content, and rendering in a real headless browser."""

import html
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from tests import _transferred_synthetic as ts
from tests._synthetic import history_records, log_law
from transfer_probe.report import write_report
from transfer_probe.store.history import HistoryWriter, read_history

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    hist = d / "history.jsonl"
    w = HistoryWriter(hist)
    w.extend(history_records(seed=2))
    w.extend(history_records(seed=3, task="en-de", misaligned_after=3e7, baseline=False))
    w.append({"kind": "probe", "run_id": "run-a", "tokens": 2e9, "task": "en-fr",
              "finetune_size": {"examples": 50}, "status": "failed", "error": "RuntimeError: out of memory"})
    return write_report([hist], d / "report.html", budget_tokens=1e10, target=15.0)


def test_report_content(report):
    page = report.read_text()
    assert page.startswith("<!DOCTYPE html>")
    # two plots (BLEU and CE) per group, embedded, nothing fetched from elsewhere
    assert page.count("data:image/png;base64,") == 4
    assert not re.search(r"(src|href)=['\"]https?://", page)
    assert "en-fr" in page and "en-de" in page
    assert "out of memory" in page  # the failed probe is shown, not dropped
    assert "baseline (no pre-training)" in page
    assert "Summary" in page


# Under CI (.ci/run sets CI=true) a missing browser is a failure: a skip there would hide that the
# report was never rendered. Elsewhere the test skips, with the reason.
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _verdict(run_id, task, tokens, status, rec, message):
    return {"kind": "verdict", "run_id": run_id, "task": task, "finetune_size": {"examples": 50},
            "tokens": tokens, "status": status, "recommendation": rec, "message": message}


def _decision_records():
    """Three runs of en-fr D_f=50 (mix-b 40% lower: beaten; mix-a and mix-c the same law: too close to
    call), mix-a with a warning later superseded, and a code run with two D_f and six from-scratch sizes."""
    a = history_records(seed=2, run_id="mix-a")
    b = history_records(seed=4, run_id="mix-b")
    for r in b:
        r["metrics"]["bleu"] *= 0.6
    c = history_records(seed=5, run_id="mix-c")
    code = ts.records(1e7, [1e3, 1e4], baseline_sizes=[1e3, 1e4, 1e5, 1e6, 1e7, 1e8], tokens=np.geomspace(1e8, 1e10, 6),
                      growth=lambda t: (t / 1e10) ** 0.3, noise=0.003, repeats=2, run_id="code-run")
    for r in code:  # a score too, so the run gets its verdicts
        r["metrics"]["bleu"] = float(log_law(r["tokens"])) if r["pretrained"] else 1.0
    verdicts = [_verdict("mix-a", "en-fr", 1e8, "suspected", "probe again", "en-fr D_f=50 | suspected: BLEU fell"),
                _verdict("mix-a", "en-fr", 2.7e8, "misaligned", "stop", "en-fr D_f=50 | misaligned: BLEU fell | stop"),
                _verdict("mix-a", "en-fr", 5.2e8, "aligned", "continue", "en-fr D_f=50 | aligned | continue")]
    # written newest first: the report must put them in time order all the same
    return a + b + c + code + verdicts[::-1]


@pytest.fixture(scope="module")
def decisions(tmp_path_factory):
    d = tmp_path_factory.mktemp("decisions")
    w = HistoryWriter(d / "history.jsonl")
    w.extend(_decision_records())
    return write_report([w.path], d / "report.html", budget_tokens=1e10, target=30.0)


def _section(page, title):
    return page.split(f"<h2>{title}")[1].split("<h2>")[0]


def test_which_run_to_continue_section(decisions):
    from transfer_probe.compare import compare_runs

    page = decisions.read_text()
    sec = _section(page, "Which run to continue")
    g = compare_runs(read_history(decisions.parent / "history.jsonl"), 1e10, task="en-fr")["en-fr", 50]
    for rf in g.runs:  # each run's predicted value and interval as compare_runs gives them
        assert f"<td class='l'>{rf.mean:.3g} [{rf.low:.3g}, {rf.high:.3g}]</td>" in sec
    assert "data-compare='en-fr'" in sec and sec.count("data:image/png;base64,") == 1
    # P(row beats column): mix-a vs mix-c is too close to call (shaded), mix-a vs mix-b called
    assert not g.pairs[1].called and g.p("mix-a", "mix-c") is not None
    assert f"<td class='close' title='too close to call'>{g.p('mix-a', 'mix-c'):.2f}" in sec
    assert g.p("mix-a", "mix-b") > 0.9995 and "<td>&gt; 0.999</td>" in sec and "<td>&lt; 0.001</td>" in sec
    # each run's own verdict law is shown next to the comparison's
    assert sec.count("<td class='l'>log (trusted)</td>") == 3
    assert g.run("mix-b").law == "saturating"  # compare_runs' own choice differs from mix-b's verdict: said so
    assert "<p class='meta'>mix-b: the comparison forecasts each run on its own" in sec
    assert "ranking: 1. mix-a = mix-c  2. mix-b" in sec
    assert html.escape(g.recommendation, quote=True) in sec
    assert "code-run" not in sec  # a group with one run is not a comparison


def test_data_transferred_section(decisions):
    from transfer_probe.report import _count
    from transfer_probe.transferred import data_transferred

    sec = _section(decisions.read_text(), "Data transferred")
    tt = data_transferred([r for r in read_history(decisions.parent / "history.jsonl")
                           if r.get("run_id") == "code-run"]).tasks["text-python"]
    assert "text-python" in sec and "mix-a" not in sec  # one D_f per task: no section
    for df in (1e3, 1e4):
        p = tt.latest(df)
        assert p.status == "transfer"
        assert f"{_count(p.transferred)} [{_count(p.low)}, {_count(p.high)}]" in sec
    assert "D_E still growing" in sec and "power-law" in sec and "docs/data_transferred.md" in sec
    assert sec.count("data:image/png;base64,") == 1


def _group(page, task, run):
    head = f"<h2>{task} &middot; D<sub>f</sub>=50 &middot; run {run}</h2>"
    return page.split(head)[1].split("<h2>")[0]


def test_the_verdict_the_fits_table_and_the_plot_tell_one_story(decisions):
    from transfer_probe import diagnose as dg
    from transfer_probe.report import LAW_NAMES

    page = decisions.read_text()
    recs = [r for r in read_history(decisions.parent / "history.jsonl") if r.get("run_id") == "mix-b"]
    v = dg.diagnose(recs, budget_tokens=1e10, target=30.0)
    assert v.status == "aligned" and v.law
    sec = _group(page, "en-fr", "mix-b")
    fit = v.fits["bleu"]
    assert f"data-law='{v.law}'" in sec  # the plotted law is the verdict's
    assert f"data-trusted='{'yes' if fit['trusted'] else 'no'}'" in sec
    row = sec.split("the verdict&#x27;s law (the candidate")[1].split("</tr>")[0]
    assert html.escape(LAW_NAMES[v.law]) in row and ("<td class='l'>yes</td>" if fit["trusted"] else "no") in row
    assert f"predicts {v.prediction['mean']:.1f} [{v.prediction['low']:.1f}" in sec  # the same prediction


def test_a_superseded_warning_is_marked_and_the_log_is_in_time_order(decisions):
    sec = _group(decisions.read_text(), "en-fr", "mix-a")
    assert "<li class='superseded'><b>1</b> suspected from 1e8 tokens: superseded at 2.7e8 tokens (by misaligned)</li>" in sec
    assert "<li class='superseded'><b>2</b> misaligned from 2.7e8 tokens: superseded at 5.2e8 tokens (by aligned)</li>" in sec
    assert "<li><b>3</b> aligned from 5.2e8 tokens: standing</li>" in sec
    log = sec.split("<pre class='log'>")[1].split("</pre>")[0].split("\n")
    assert [ln.split("| ")[1].split(":")[0].strip() for ln in log[:3]] == ["suspected", "misaligned", "aligned"]
    assert log[1] == ("<span class='superseded'>en-fr D_f=50 | misaligned: BLEU fell | stop  "
                      "[superseded at 5.2e8 tokens]</span>")
    assert log[-1].startswith("<b>now</b>")  # the verdict recomputed now comes last, not first


def test_a_model_free_verdict_draws_no_law(report):
    page = report.read_text()
    sec = page.split("<h2>en-de &middot;")[1].split("<h2>")[0]
    assert "<span class='status s-misaligned'>" in sec
    # a model-free verdict: no law in its fits table, none drawn on its score plot
    assert "data-metric='bleu' data-law=''" in sec and "none: the break test is model-free" in sec


@pytest.mark.parametrize("lo,hi", [(8.2e4, 1.64e6), (3e5, 4.4e5), (1e6, 1e10), (7200, 7800), (1.1e5, 9.8e5),
                                   (2e4, 3e5), (1e3, 1e12)])
def test_token_axis_labels_never_overlap(lo, hi):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from transfer_probe.report_figures import token_axis

    fig, ax = plt.subplots(figsize=(5.6, 3.5), dpi=110)
    token_axis(ax, lo, hi)
    fig.canvas.draw()
    boxes = [t.get_window_extent() for t in ax.get_xticklabels() if t.get_text() and t.get_visible()]
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    plt.close(fig)
    assert 2 <= len(boxes) <= 6, labels
    assert len(set(labels)) == len(labels), labels
    for a, b in zip(boxes, boxes[1:], strict=False):
        assert a.x1 < b.x0, labels  # each label ends before the next begins


def _chromium(page, tmp_path, n_images, height):
    if CHROMIUM is None:
        msg = "needs Debian's chromium (apt-get install chromium)"
        if IN_CI:
            pytest.fail(f"CI is set but no chromium is installed: {msg}")
        pytest.skip(msg)
    # A copy with a probe script: after load it records how many images decoded to real pixels.
    probe_page = tmp_path / "probe.html"
    script = ("<script>window.addEventListener('load',()=>{const im=[...document.images];"
              "document.body.setAttribute('data-loaded',im.filter(i=>i.complete&&i.naturalWidth>100).length+'/'"
              "+im.length);});</script>")
    probe_page.write_text(page.read_text().replace("</body>", script + "</body>"))
    common = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--virtual-time-budget=5000", "--dump-dom", probe_page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert f'data-loaded="{n_images}/{n_images}"' in dom.stdout, dom.stderr[-2000:]
    shot = tmp_path / "shot.png"
    subprocess.run([*common, f"--window-size=1200,{height}", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, text=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 20_000  # a rendered page, not a blank one
    return shot


def test_report_renders_in_headless_chromium(report, tmp_path):
    _chromium(report, tmp_path, 4, 1600)


def test_decisions_report_renders_in_headless_chromium(decisions, tmp_path):
    # 3 runs x 2 plots, 2 code-run groups x 2 plots, the comparison and the data transferred
    _chromium(decisions, tmp_path, 12, 2400)
    assert decisions.stat().st_size < 2_000_000  # self-contained and bounded


def test_long_tables_are_cut_with_a_count_of_the_rows_left_out(tmp_path, monkeypatch):
    from transfer_probe import report as rp

    monkeypatch.setattr(rp, "MAX_TABLE_ROWS", 6)
    w = HistoryWriter(tmp_path / "history.jsonl")
    w.extend(history_records(seed=2))  # 8 probe points + the baseline: 9 rows
    page = write_report([w.path], tmp_path / "r.html").read_text()
    table = page.split("<h3>Probes</h3>")[1].split("</table>")[0]
    assert table.count("<tr>") == 1 + 6 + 1  # header, 3 first + 3 last rows, the note
    assert "... 3 more probe points (not shown) ..." in table
    assert "baseline (no pre-training)" in table  # the last rows are kept


def test_run_id_keeps_one_run_and_an_unknown_run_is_named(tmp_path):
    w = HistoryWriter(tmp_path / "history.jsonl")
    w.extend(history_records(seed=2, run_id="run-a"))
    w.extend(history_records(seed=3, run_id="run-b", task="en-de"))
    page = write_report([w.path], tmp_path / "r.html", run_id="run-b").read_text()
    assert "run run-b" in page and "run run-a" not in page and "en-fr" not in page
    with pytest.raises(ValueError, match="no records of run_id run-c; runs in the files: run-a, run-b"):
        write_report([w.path], tmp_path / "r2.html", run_id="run-c")
    assert not (tmp_path / "r2.html").exists()
