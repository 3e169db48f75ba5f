"""The offline demo: pre-train tiny models on corpora of different alignment and watch the verdicts.

``transfer-probe demo`` (or ``python -m transfer_probe.demo``) pre-trains a tiny GPT-2 from scratch
once per corpus of :data:`transfer_probe.demodata.CORPORA` with :class:`TransferProbeCallback`
attached. The downstream task is English->French number words; the default corpora tell three
stories: ``bilingual`` (aligned: English and French number words with some parallel lines),
``shift-fr`` (the same text, then French-only from mid-run: a mixture shift) and ``english``
(English number words only: no transfer). Each run writes an ordinary history file under
``OUT/<corpus>/transfer_probe/history.jsonl``; at the end the demo prints a summary table (corpus,
probes, last BLEU, verdict, recommendation) and writes ``OUT/report.html``.

The parts: ``settings`` (what sizes a run and what it costs), ``runs`` (the pre-training runs in
worker processes and the progress bar), ``summary`` (the rows, the table, the prediction check),
``app`` (``run_demo`` and the command line).

    >>> from transfer_probe.demo import run_demo
    >>> result = run_demo("demo_out", quick=True)            # doctest: +SKIP
    >>> print(result.table())                                 # doctest: +SKIP

Nothing is hard-coded about the outcome: the verdicts are whatever :func:`transfer_probe.diagnose`
makes of the measured probes. The settings (model size, tokens, probe points, fine-tuning budget)
were chosen from the measurements in ``experiments/README.md``.
"""

from transfer_probe.demo.app import main, run_demo
from transfer_probe.demo.settings import (
    DEFAULT_SETTINGS,
    DEMO_TIME,
    QUICK_SETTINGS,
    DemoSettings,
    estimate_seconds,
)
from transfer_probe.demo.summary import DemoResult, DemoRow, format_table

__all__ = ["DemoSettings", "DemoRow", "DemoResult", "DEFAULT_SETTINGS", "QUICK_SETTINGS", "DEMO_TIME", "estimate_seconds",
           "format_table", "run_demo", "main"]
