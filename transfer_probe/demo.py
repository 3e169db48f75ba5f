"""The offline demo: pre-train tiny models on corpora of different alignment and watch the verdicts.

``transfer-probe demo`` (or ``python -m transfer_probe.demo``) pre-trains a tiny GPT-2 from scratch
once per corpus of :data:`transfer_probe.demodata.CORPORA` with :class:`TransferProbeCallback`
attached. The downstream task is English->French number words; the corpora are ``bilingual``
(aligned: English and French number words with some parallel lines), ``english`` (English number
words only) and ``code`` (Python standard-library source). Each run writes an ordinary history file
under ``OUT/<corpus>/transfer_probe/history.jsonl``; at the end the demo prints a summary table
(corpus, probes, last BLEU, verdict, recommendation) and writes ``OUT/report.html``.

    >>> from transfer_probe.demo import run_demo
    >>> result = run_demo("demo_out", quick=True)            # doctest: +SKIP
    >>> print(result.table())                                 # doctest: +SKIP

Nothing is hard-coded about the outcome: the verdicts are whatever :func:`transfer_probe.diagnose`
makes of the measured probes. The settings (model size, tokens, probe points, fine-tuning budget)
were chosen from the measurements in ``experiments/README.md``.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = ["DemoSettings", "DemoRow", "DemoResult", "DEFAULT_SETTINGS", "QUICK_SETTINGS", "run_demo", "main"]


@dataclass(frozen=True)
class DemoSettings:
    """Everything that sizes a demo run (see ``experiments/README.md`` for why these values)."""

    corpora: tuple[str, ...] = ("bilingual", "english", "code")
    # Pre-training: GPT-2, 2 layers, width 128 (0.4M non-embedding, 0.7M parameters), 128-token blocks.
    n_layer: int = 2
    n_embd: int = 128
    n_head: int = 4
    vocab_size: int = 2048
    block_size: int = 128
    batch_size: int = 16
    max_steps: int = 400
    learning_rate: float = 1e-3
    lr_scheduler_type: str = "constant_with_warmup"  # probes are not taken mid-cosine
    warmup_steps: int = 20
    # Probe points, in pre-training steps (converted to tokens: steps x batch x block).
    # Six log-spaced points: a verdict needs 5 (4 to fit the law, 1 to check it) and a sixth when
    # no noise was measured (a corpus stuck at BLEU 0 has zero spread).
    probe_steps: tuple[int, ...] = (25, 40, 70, 120, 220, 400)
    # Downstream task and probe budget.
    n_train: int = 1000
    n_test: int = 200
    # D_f values probed; the summary table and the test read the first. More than one (for the
    # repeats benchmark) multiplies the probe cost. D_f = 200 costs what 50 does (the fine-tuning
    # budget is in steps) but gives a lower random-init baseline, a cleaner rising curve and
    # verdicts that do not flip between fine-tuning seeds (benchmarks/README.md, "Repeats").
    finetune_sizes: tuple[int, ...] = (200,)
    finetune_steps: int = 60
    # 3e-4: random init stays poor (BLEU 2-4) in 60 steps, so transfer shows; 1e-3 lets random
    # init reach BLEU ~17 and makes pretrained probes noisier (experiments/README.md).
    finetune_lr: float = 3e-4
    repeats: int = 2
    # Cap (fine-tunes over a run) for re-measuring a borderline warning before it is raised.
    adaptive_repeats: int = 4
    bootstrap: int = 200
    pair_fraction: float = 0.5
    budget_steps: int = 4000  # the "planned" pre-training the verdicts predict for (10x the demo)

    def tokens(self, steps: int) -> int:
        return int(steps) * self.batch_size * self.block_size


DEFAULT_SETTINGS = DemoSettings()
QUICK_SETTINGS = replace(
    DEFAULT_SETTINGS, corpora=("bilingual", "english"), max_steps=200, probe_steps=(15, 25, 40, 70, 120, 200),
    n_test=100, repeats=1, adaptive_repeats=2, bootstrap=100,
)


@dataclass
class DemoRow:
    """One line of the summary table: one corpus (one pre-training run)."""

    corpus: str
    probes: int
    last_tokens: int | None
    last_bleu: float | None
    last_ce: float | None
    baseline_bleu: float | None
    status: str
    recommendation: str
    reasons: list[str] = field(default_factory=list)
    history: Path | None = None


@dataclass
class DemoResult:
    """What :func:`run_demo` returns: the rows, the history files, the report (if written)."""

    out_dir: Path
    rows: list[DemoRow]
    history_paths: list[Path]
    report_path: Path | None
    seconds: float
    report_note: str = ""

    def table(self) -> str:
        """The summary table as fixed-width text."""
        return format_table(self.rows)


def format_table(rows: Sequence[DemoRow]) -> str:
    """Fixed-width summary: corpus, probes, tokens, last BLEU (baseline), CE, verdict, recommendation."""
    head = ("corpus", "probes", "tokens", "last BLEU", "baseline", "last CE", "verdict", "recommendation")
    lines = [head]
    for r in rows:
        lines.append((
            r.corpus, str(r.probes), _fmt(r.last_tokens, ".3g"), _fmt(r.last_bleu, ".1f"),
            _fmt(r.baseline_bleu, ".1f"), _fmt(r.last_ce, ".3f"), r.status, r.recommendation,
        ))
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    out = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def _fmt(v: Any, spec: str) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return format(v, spec)


class _Progress:
    def __init__(self, enabled: bool, stream=None):
        self.enabled = enabled
        self.stream = stream or sys.stdout
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        if self.enabled:
            print(f"[demo {time.perf_counter() - self.t0:6.0f}s] {msg}", file=self.stream, flush=True)


def run_demo(out_dir: str | os.PathLike, quick: bool = False, seed: int = 0, progress: bool = True,
             settings: DemoSettings | None = None) -> DemoResult:
    """Pre-train one tiny model per corpus with the probe callback attached; diagnose; report.

    ``quick`` uses :data:`QUICK_SETTINGS` (two corpora, half the tokens, one repeat; about 2.5 CPU
    minutes) instead of :data:`DEFAULT_SETTINGS` (three corpora, two repeats; about 7.5 CPU minutes:
    the demo runs on one thread, see below); ``settings`` overrides both.
    Each corpus' history goes to ``out_dir/<corpus>/transfer_probe/history.jsonl``.
    """
    import torch
    import transformers
    from transformers import GPT2Config, GPT2LMHeadModel, PrinterCallback, Trainer, TrainingArguments

    from transfer_probe import demodata
    from transfer_probe.callback import TransferProbeCallback
    from transfer_probe.probe import FinetuneConfig

    s = settings or (QUICK_SETTINGS if quick else DEFAULT_SETTINGS)
    unknown = [c for c in s.corpora if c not in demodata.CORPORA]
    if unknown or not s.corpora:
        raise ValueError(f"demo corpora {list(s.corpora)}: choose from {sorted(demodata.CORPORA)}")
    if any(p <= 0 or p > s.max_steps for p in s.probe_steps):
        raise ValueError(f"demo probe_steps {s.probe_steps} must lie in [1, max_steps={s.max_steps}]")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say = _Progress(progress)
    t0 = time.perf_counter()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the tiny configs trigger advice meant for real models
    tp_logger = logging.getLogger("transfer_probe")
    handler = None
    if progress and not tp_logger.handlers:
        # The callback's one line per probe is the demo's progress report.
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("  %(message)s"))
        tp_logger.addHandler(handler)
    old_level = tp_logger.level
    # A 0.7M-parameter model gains nothing from more threads, and oversubscribed cores (a shared
    # machine, a test suite running in parallel) slow it down several times.
    old_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    if progress:
        tp_logger.setLevel(logging.INFO)
    try:
        say(f"building data: en->fr number words (D_f={', '.join(map(str, s.finetune_sizes))}, {s.n_test} test pairs), "
            f"corpora {', '.join(s.corpora)}")
        task = demodata.number_task(n_train=s.n_train, n_test=s.n_test, finetune_sizes=list(s.finetune_sizes),
                                    seed=seed)
        n_tokens = s.tokens(s.max_steps)
        # ~4 characters per BPE token on this text; a little extra so no run cycles its corpus.
        n_chars = int(n_tokens * 4.5)
        corpora = {c: demodata.corpus_lines(c, n_chars, exclude=task.test_numbers, seed=seed,
                                            pair_fraction=s.pair_fraction) for c in s.corpora}
        # One tokenizer for every run (same vocabulary, comparable probes), trained on a sample of
        # all three corpora and the task's training side, whatever corpora this run uses.
        sample: list[str] = []
        for c in demodata.CORPORA:
            lines = corpora.get(c) or demodata.corpus_lines(c, 300_000, exclude=task.test_numbers, seed=seed)
            sample.extend(_head_chars(lines, 300_000))
        sample.extend(t for pair in task.train_pairs for t in pair)
        tokenizer = demodata.train_tokenizer(sample, vocab_size=s.vocab_size)
        say(f"tokenizer: byte-level BPE, {len(tokenizer)} tokens; pre-training {s.max_steps} steps x "
            f"{s.batch_size} x {s.block_size} = {n_tokens:,} tokens per corpus")
        finetune = FinetuneConfig(max_steps=s.finetune_steps, learning_rate=s.finetune_lr, batch_size=32,
                                  seed=seed, bootstrap=s.bootstrap, precision="no", device="cpu")
        rows: list[DemoRow] = []
        paths: list[Path] = []
        for i, corpus in enumerate(s.corpora, 1):
            say(f"run {i}/{len(s.corpora)}: corpus {corpus!r} ({demodata.CORPORA[corpus]})")
            data = demodata.pack_lines(tokenizer, corpora[corpus], s.block_size, s.max_steps * s.batch_size)
            config = GPT2Config(
                vocab_size=len(tokenizer), n_positions=s.block_size, n_embd=s.n_embd, n_layer=s.n_layer,
                n_head=s.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
            torch.manual_seed(seed)
            model = GPT2LMHeadModel(config)
            run_dir = out / corpus
            previous = run_dir / "transfer_probe" / "history.jsonl"
            if previous.exists():
                # A new demo run is a new run: keep the old history aside rather than appending to
                # it (the same run_id would merge two runs' probes).
                kept = previous.with_name(f"history.{time.strftime('%Y%m%d-%H%M%S')}.jsonl")
                previous.rename(kept)
                say(f"an earlier demo history was moved to {kept}")
            probe = TransferProbeCallback(
                [task], token_points=[s.tokens(p) for p in s.probe_steps], executor="inline",
                finetune=finetune, repeats=s.repeats, adaptive_repeats=s.adaptive_repeats, baseline=True,
                budget_tokens=float(s.tokens(s.budget_steps)), output_dir=str(run_dir),
                seq_len=s.block_size, run_id=f"demo-{corpus}-seed{seed}",
            )
            args = TrainingArguments(
                output_dir=str(run_dir), max_steps=s.max_steps, per_device_train_batch_size=s.batch_size,
                learning_rate=s.learning_rate, lr_scheduler_type=s.lr_scheduler_type,
                warmup_steps=s.warmup_steps, weight_decay=0.0, save_strategy="no", report_to="none",
                logging_strategy="no", seed=seed, data_seed=seed, use_cpu=True, dataloader_num_workers=0,
                # The callback's one line per probe is the progress report; the Trainer's own bar
                # would interleave with it and print every trainer.log dict.
                disable_tqdm=True, include_num_input_tokens_seen=True,
            )
            trainer = Trainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                              callbacks=[probe])
            # Without tqdm the Trainer prints every trainer.log dict (the probe's numbers too).
            trainer.remove_callback(PrinterCallback)
            trainer.train()
            path = probe.history_path or (run_dir / "transfer_probe" / "history.jsonl")
            paths.append(Path(path))
            row = _summarize(corpus, Path(path), s.finetune_sizes[0], budget_tokens=float(s.tokens(s.budget_steps)))
            rows.append(row)
            say(f"run {i}/{len(s.corpora)} done: {corpus}: last BLEU {_fmt(row.last_bleu, '.1f')} "
                f"(baseline {_fmt(row.baseline_bleu, '.1f')}), verdict {row.status} -> {row.recommendation}")
        report_path, note = _write_report(paths, out)
        result = DemoResult(out_dir=out, rows=rows, history_paths=paths, report_path=report_path,
                            seconds=time.perf_counter() - t0, report_note=note)
        if progress:
            print()
            print(result.table())
            print()
            for row in rows:
                for reason in row.reasons[:3]:
                    print(f"  {row.corpus}: {reason}")
            print(f"\nhistories: {', '.join(str(p) for p in paths)}")
            print(note)
            print(f"demo finished in {result.seconds:.0f} s")
        return result
    finally:
        transformers.logging.set_verbosity(verbosity)
        torch.set_num_threads(old_threads)
        tp_logger.setLevel(old_level)
        if handler is not None:
            tp_logger.removeHandler(handler)


def _head_chars(lines: Sequence[str], n_chars: int) -> list[str]:
    out, total = [], 0
    for line in lines:
        out.append(line)
        total += len(line)
        if total >= n_chars:
            break
    return out


def _summarize(corpus: str, path: Path, finetune_size: int, *, budget_tokens: float) -> DemoRow:
    """Aggregate the newest probe point and diagnose the D_f = ``finetune_size`` group of one history."""
    from transfer_probe.diagnose import diagnose_all
    from transfer_probe.history import aggregate, group_key, probe_records, read_history

    records = [r for r in read_history(path) if group_key(r)[1] == finetune_size]
    probes = probe_records(records)
    pre = [r for r in probes if r.get("pretrained", True)]
    base = [r for r in probes if not r.get("pretrained", True)]
    points = aggregate(pre)
    last = max(points, key=lambda p: p["tokens"]) if points else None
    base_points = aggregate(base)
    verdicts = diagnose_all(records, budget_tokens=budget_tokens) if pre else {}
    verdict = next(iter(verdicts.values()), None)

    def mean(p, metric):
        if p is None:
            return None
        v = (p.get("mean") or {}).get(metric)
        return float(v) if v is not None else None

    return DemoRow(
        corpus=corpus, probes=len({r["tokens"] for r in pre}), last_tokens=last["tokens"] if last else None,
        last_bleu=mean(last, "bleu"), last_ce=mean(last, "cross_entropy"),
        baseline_bleu=mean(base_points[0], "bleu") if base_points else None,
        status=verdict.status if verdict else "no probes", recommendation=verdict.recommendation if verdict else "-",
        reasons=list(verdict.reasons) if verdict else [], history=path,
    )


def _write_report(paths: list[Path], out: Path) -> tuple[Path | None, str]:
    try:
        from transfer_probe.report import write_report
    except ImportError as err:
        return None, f"report not written: transfer_probe.report.write_report is not available ({err})"
    target = out / "report.html"
    try:
        written = write_report(paths, target, title="transfer_probe demo")
    except Exception as err:  # the histories are the result; a report failure must not hide them
        return None, f"report not written: {type(err).__name__}: {err}"
    return Path(written), f"report: {written}"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m transfer_probe.demo [--out DIR] [--quick] [--seed N]``."""
    parser = argparse.ArgumentParser(
        prog="transfer-probe demo",
        description="Pre-train tiny GPT-2 models offline on corpora of different alignment with an "
        "English->French number-words task, probe them while they train, and print the verdicts.",
        epilog="examples:\n  transfer-probe demo\n  transfer-probe demo --quick --out /tmp/tp-demo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default="transfer_probe_demo", help="output directory (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="two corpora, fewer tokens (about 2 minutes)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    args = parser.parse_args(argv)
    result = run_demo(args.out, quick=args.quick, seed=args.seed, progress=True)
    return 0 if result.rows else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
