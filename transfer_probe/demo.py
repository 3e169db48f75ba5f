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

    # The three stories: aligned, a mid-run mixture shift (the paper's misalignment case), no transfer.
    corpora: tuple[str, ...] = ("bilingual", "shift-fr", "english")
    # Pre-training: GPT-2, 2 layers, width 128 (0.4M non-embedding, 0.7M parameters), 128-token blocks.
    n_layer: int = 2
    n_embd: int = 128
    n_head: int = 4
    vocab_size: int = 2048
    block_size: int = 128
    batch_size: int = 16
    # 800 steps: an aligned run read in order climbs steadily from about step 180 to 800
    # (../shared/SCIENCE.md, "A mid-run mixture shift").
    max_steps: int = 800
    learning_rate: float = 1e-3
    lr_scheduler_type: str = "constant_with_warmup"  # probes are not taken mid-cosine
    warmup_steps: int = 20
    # Probe points, in pre-training steps (x batch x block = tokens): log-spaced, 10 points over 1.3
    # decades. A trusted prediction needs 6 points after the warm-up (4 to fit, 2 to backtest) before
    # the one that checks it.
    probe_steps: tuple[int, ...] = (40, 56, 78, 110, 155, 217, 304, 427, 599, 800)
    shift_at: float = 0.5  # share of max_steps read before ``shift-fr`` switches to French-only text
    # Downstream task and probe budget.
    n_train: int = 1000
    n_test: int = 200
    # D_f values probed (the summary table reads the first). Two sizes give the "data transferred"
    # estimate; they double a run's probe cost, so only the runs in ``all_sizes_for`` probe both
    # (None: every run). D_f = 200 costs what 50 does (the budget is in steps) but gives a lower
    # random-init baseline and steadier verdicts (benchmarks/README.md, "Repeats").
    finetune_sizes: tuple[int, ...] = (200, 800)
    all_sizes_for: tuple[str, ...] | None = ("bilingual",)
    finetune_steps: int = 60
    # 3e-4: random init stays poor (BLEU 2-4) in 60 steps, so transfer shows; 1e-3 lets random
    # init reach BLEU ~17 and makes pretrained probes noisier (experiments/README.md).
    finetune_lr: float = 3e-4
    repeats: int = 2
    # Cap (fine-tunes over a run) for re-measuring a borderline warning before it is raised.
    adaptive_repeats: int = 4
    bootstrap: int = 200
    pair_fraction: float = 0.5
    budget_steps: int = 800  # the planned pre-training: the aligned run's last probe checks the prediction
    # What a user would set: a run stops when its verdict says stop (the misaligned and no-transfer
    # runs end early; their compute is what the tool saves).
    stop_on: tuple[str, ...] = ("stop",)
    workers: int = 2  # runs in parallel, one thread each (the demo is sized for 2 cores)

    def tokens(self, steps: int) -> int:
        return int(steps) * self.batch_size * self.block_size

    def sizes_for(self, corpus: str) -> tuple[int, ...]:
        if self.all_sizes_for is None or corpus in self.all_sizes_for:
            return self.finetune_sizes
        return self.finetune_sizes[:1]


DEFAULT_SETTINGS = DemoSettings()
QUICK_SETTINGS = replace(
    DEFAULT_SETTINGS, corpora=("bilingual", "english"), max_steps=200, probe_steps=(15, 25, 40, 70, 120, 200),
    n_test=100, repeats=1, adaptive_repeats=2, bootstrap=100, finetune_sizes=(200,), budget_steps=2000,
    stop_on=(),
)

# What README.md and --help say; measured (experiments/README.md, "The three-story demo").
DEMO_TIME = ("About 7 minutes on 2 idle CPU cores (measured: 13.6 min of CPU in all), longer on a busy "
             "machine; --quick about 2.")

# Measured costs at one thread on an idle core (experiments/README.md, "The demo's default run"):
# they make the estimate printed at the start.
_SECONDS_PER_STEP = 0.1
_SECONDS_PER_FINETUNE = 4.5
_SECONDS_SETUP = 20.0


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
    # The newest prediction at the budget made before the budget was reached, and where the probe at
    # the budget landed ("" when there was none).
    prediction_check: str = ""


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


def estimate_seconds(s: DemoSettings) -> tuple[float, float]:
    """(CPU seconds of the whole demo, wall seconds on ``s.workers`` idle cores), from measured costs.

    An upper bound when runs stop early (``stop_on``). Runs go to the workers longest first."""
    costs = []
    for c in s.corpora:
        finetunes = (len(s.probe_steps) + 1) * s.repeats * len(s.sizes_for(c)) + s.adaptive_repeats
        costs.append(s.max_steps * _SECONDS_PER_STEP + finetunes * _SECONDS_PER_FINETUNE)
    loads = [0.0] * max(1, min(s.workers, len(costs)))
    for c in sorted(costs, reverse=True):
        loads[loads.index(min(loads))] += c
    return sum(costs) + _SECONDS_SETUP, max(loads) + _SECONDS_SETUP


def run_demo(out_dir: str | os.PathLike, quick: bool = False, seed: int = 0, progress: bool = True,
             settings: DemoSettings | None = None) -> DemoResult:
    """Pre-train one tiny model per corpus with the probe callback attached; diagnose; report.

    ``quick`` uses :data:`QUICK_SETTINGS` (two corpora, 200 steps, one repeat) instead of
    :data:`DEFAULT_SETTINGS` (aligned, mixture-shift and no-transfer runs, 800 steps, two repeats);
    ``settings`` overrides both. Up to ``settings.workers`` runs go in parallel, one thread each.
    Each corpus' history goes to ``out_dir/<corpus>/transfer_probe/history.jsonl``.
    """
    from transfer_probe import demodata

    s = settings or (QUICK_SETTINGS if quick else DEFAULT_SETTINGS)
    unknown = [c for c in s.corpora if c not in demodata.CORPORA]
    if unknown or not s.corpora:
        raise ValueError(f"demo corpora {list(s.corpora)}: choose from {sorted(demodata.CORPORA)}")
    if any(p <= 0 or p > s.max_steps for p in s.probe_steps):
        raise ValueError(f"demo probe_steps {s.probe_steps} must lie in [1, max_steps={s.max_steps}]")
    if s.workers < 1:
        raise ValueError(f"demo workers must be >= 1, got {s.workers}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cpu, wall = estimate_seconds(s)
    workers = max(1, min(s.workers, len(s.corpora), os.cpu_count() or 1))
    if progress:
        print(f"transfer_probe demo: {len(s.corpora)} runs ({', '.join(s.corpora)}), {workers} at a time; "
              f"estimated at most {wall / 60:.1f} min on {workers} idle core{'s' if workers > 1 else ''} "
              f"({cpu / 60:.1f} min of CPU; runs that stop early take less){_load_note(workers)}", flush=True)
    _prepare(s, out, seed)
    jobs = [dict(corpus=c, settings=s, out=str(out), seed=seed) for c in s.corpora]
    paths_by = _run_all(jobs, workers, progress, s)
    paths = [paths_by[c] for c in s.corpora]
    budget = float(s.tokens(s.budget_steps))
    rows = [_summarize(c, p, s.sizes_for(c)[0], budget_tokens=budget) for c, p in zip(s.corpora, paths, strict=True)]
    report_path, note = _write_report(paths, out)
    result = DemoResult(out_dir=out, rows=rows, history_paths=paths, report_path=report_path,
                        seconds=time.perf_counter() - t0, report_note=note)
    if progress:
        _print_result(result)
    return result


def _load_note(workers: int) -> str:
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        return ""
    if load < 0.5:
        return ""
    return (f"; the machine is busy (load {load:.1f} on {os.cpu_count()} cores): expect longer, about "
            f"{1 + load / max(1, workers):.1f}x")


def _print_result(result: DemoResult) -> None:
    print()
    print(result.table())
    print()
    for row in result.rows:
        print(f"{row.corpus}: {row.status} -> {row.recommendation}")
        for reason in row.reasons[:3]:
            print(f"    {reason}")
        if row.prediction_check and row.status == "aligned":
            print(f"    {row.prediction_check}")
    print(f"\nhistories: {', '.join(str(p) for p in result.history_paths)}")
    print(result.report_note)
    print(f"demo finished in {result.seconds:.0f} s")


def _prepare(s: DemoSettings, out: Path, seed: int) -> None:
    """The shared tokenizer (one vocabulary for every run, so probes compare), saved for the workers."""
    from transfer_probe import demodata

    task = demodata.number_task(n_train=s.n_train, n_test=s.n_test, finetune_sizes=list(s.finetune_sizes), seed=seed)
    sample: list[str] = []
    # Trained on the same sample whatever corpora this run uses (shift-fr and french are made of
    # the same words as bilingual): the vocabulary does not depend on the selection.
    for c in _TOKENIZER_CORPORA:
        sample.extend(_head_chars(demodata.corpus_lines(c, 300_000, exclude=task.test_numbers, seed=seed,
                                                        pair_fraction=s.pair_fraction), 300_000))
    sample.extend(t for pair in task.train_pairs for t in pair)
    tokenizer = demodata.train_tokenizer(sample, vocab_size=s.vocab_size)
    tokenizer.save_pretrained(str(out / "tokenizer"))


_TOKENIZER_CORPORA = ("bilingual", "english", "code")


def _run_all(jobs: list[dict], workers: int, progress: bool, s: DemoSettings) -> dict[str, Path]:
    """Run the jobs, ``workers`` at a time in spawned processes (in this one when 1), with a
    progress bar counting fine-tunes and the callback's lines printed above it."""
    import multiprocessing as mp
    import queue
    import threading
    from concurrent.futures import ProcessPoolExecutor, as_completed

    expected = {j["corpus"]: (len(s.probe_steps) + 1) * s.repeats * len(s.sizes_for(j["corpus"])) for j in jobs}
    bar = _Bar(expected, Path(jobs[0]["out"]), s.max_steps, enabled=progress)
    ctx = mp.get_context("spawn")  # forking a process whose torch threads already started is unsafe
    q = queue.Queue() if workers == 1 else ctx.Queue()
    reader = threading.Thread(target=bar.drain, args=(q,), daemon=True)
    reader.start()
    out: dict[str, Path] = {}
    try:
        if workers == 1:
            _init_worker(q)
            for job in jobs:
                out[job["corpus"]] = _run_one(job)
                bar.finished(job["corpus"])
        else:
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                     initargs=(q,)) as pool:
                futures = {pool.submit(_run_one, job): job["corpus"] for job in jobs}
                for fut in as_completed(futures):
                    out[futures[fut]] = fut.result()
                    bar.finished(futures[fut])
    finally:
        q.put(None)
        reader.join(timeout=10)
        bar.close()
    return out


_QUEUE: Any = None


def _init_worker(q: Any) -> None:
    global _QUEUE
    _QUEUE = q


class _Bar:
    """One progress bar over every run's fine-tunes (read from the histories), with the callback's
    lines and each run's pre-training step printed above/after it."""

    def __init__(self, expected: dict[str, int], out: Path, max_steps: int, enabled: bool):
        self.expected, self.out, self.max_steps, self.enabled = dict(expected), out, max_steps, enabled
        self.steps = {c: 0 for c in expected}
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            # disable=None: a bar on a terminal only; the lines are printed either way.
            self.bar = tqdm(total=sum(expected.values()), unit="fine-tune", dynamic_ncols=True, file=sys.stdout,
                            disable=None)

    def done(self, corpus: str) -> int:
        path = self.out / corpus / "transfer_probe" / "history.jsonl"
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            return 0
        return text.count('"metrics"')  # one per probe record; verdict records carry none

    def refresh(self) -> None:
        if self.bar is None or self.bar.disable:
            return
        n = sum(self.done(c) for c in self.expected)
        self.bar.total = max(sum(self.expected.values()), n)
        self.bar.n = n
        self.bar.set_postfix_str(", ".join(f"{c} step {k}/{self.max_steps}" for c, k in self.steps.items()), refresh=False)
        self.bar.refresh()

    def drain(self, q: Any) -> None:
        import queue

        while True:
            try:
                item = q.get(timeout=1.0)
            except queue.Empty:
                self.refresh()
                continue
            if item is None:
                return
            kind, corpus, value = item
            if kind == "step":
                self.steps[corpus] = value
            elif self.enabled:
                self.write(f"  {corpus:>9} | {value}")
            self.refresh()

    def write(self, line: str) -> None:
        if self.bar is not None and not self.bar.disable:
            self.bar.write(line, file=sys.stdout)
        else:
            print(line, flush=True)

    def finished(self, corpus: str) -> None:
        self.expected[corpus] = self.done(corpus)  # a run stopped early, or re-measured some points
        self.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.refresh()
            self.bar.close()


class _QueueLines(logging.Handler):
    """The callback's lines of a run, sent to the parent's progress display."""

    def __init__(self, q: Any, corpus: str):
        super().__init__(logging.INFO)
        self.q, self.corpus = q, corpus

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.q.put(("line", self.corpus, record.getMessage().removeprefix("transfer_probe | ")))
        except Exception:  # noqa: BLE001 - a lost progress line must not stop the run
            self.handleError(record)


def _run_one(job: dict) -> Path:
    """One pre-training run with the probe callback (in a worker process or in this one)."""
    import torch
    import transformers

    corpus, s, out, seed = job["corpus"], job["settings"], Path(job["out"]), job["seed"]
    transformers.logging.set_verbosity_error()  # the tiny configs trigger advice meant for real models
    tp_logger = logging.getLogger("transfer_probe")
    handler = _QueueLines(_QUEUE, corpus)
    tp_logger.addHandler(handler)
    old_level, old_threads = tp_logger.level, torch.get_num_threads()
    tp_logger.setLevel(logging.INFO)
    # A 0.7M-parameter model gains nothing from more threads, and oversubscribed cores (a shared
    # machine, parallel runs) slow it down several times.
    torch.set_num_threads(1)
    try:
        return _train(corpus, s, out, seed)
    finally:
        torch.set_num_threads(old_threads)
        tp_logger.setLevel(old_level)
        tp_logger.removeHandler(handler)


def _train(corpus: str, s: DemoSettings, out: Path, seed: int) -> Path:
    import torch
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        PreTrainedTokenizerFast,
        PrinterCallback,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from transfer_probe import demodata
    from transfer_probe.callback import TransferProbeCallback
    from transfer_probe.run.probe import FinetuneConfig

    sizes = s.sizes_for(corpus)
    task = demodata.number_task(n_train=s.n_train, n_test=s.n_test, finetune_sizes=list(sizes), seed=seed)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(out / "tokenizer"))
    data = _pack_corpus(tokenizer, corpus, s, task.test_numbers, seed)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=s.block_size, n_embd=s.n_embd, n_layer=s.n_layer,
        n_head=s.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    run_dir = out / corpus
    _set_aside(run_dir / "transfer_probe" / "history.jsonl")
    finetune = FinetuneConfig(max_steps=s.finetune_steps, learning_rate=s.finetune_lr, batch_size=32,
                              seed=seed, bootstrap=s.bootstrap, precision="no", device="cpu")
    probe = TransferProbeCallback(
        [task], token_points=[s.tokens(p) for p in s.probe_steps], executor="inline",
        finetune=finetune, repeats=s.repeats, adaptive_repeats=s.adaptive_repeats, baseline=True,
        budget_tokens=float(s.tokens(s.budget_steps)), output_dir=str(run_dir), stop_on=s.stop_on or None,
        seq_len=s.block_size, run_id=f"demo-{corpus}-seed{seed}",
    )
    args = TrainingArguments(
        output_dir=str(run_dir), max_steps=s.max_steps, per_device_train_batch_size=s.batch_size,
        learning_rate=s.learning_rate, lr_scheduler_type=s.lr_scheduler_type,
        warmup_steps=s.warmup_steps, weight_decay=0.0, save_strategy="no", report_to="none",
        logging_strategy="no", seed=seed, data_seed=seed, use_cpu=True, dataloader_num_workers=0,
        # In order: a mixture shift must happen where it is set (the lines are shuffled already).
        train_sampling_strategy="sequential",
        # The demo's own bar counts the probes; the Trainer's would interleave with it.
        disable_tqdm=True, include_num_input_tokens_seen=True,
    )

    class Steps(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if _QUEUE is not None and state.global_step % 20 == 0:
                _QUEUE.put(("step", corpus, state.global_step))

    trainer = Trainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                      callbacks=[probe, Steps()])
    trainer.remove_callback(PrinterCallback)  # without tqdm it prints every trainer.log dict
    trainer.train()
    if _QUEUE is not None:
        _QUEUE.put(("step", corpus, trainer.state.global_step))
    return Path(probe.history_path or (run_dir / "transfer_probe" / "history.jsonl"))


def _set_aside(previous: Path) -> None:
    # A new demo run is a new run: keep the old history aside rather than appending to it (the same
    # run_id would merge two runs' probes).
    if previous.exists():
        previous.rename(previous.with_name(f"history.{time.strftime('%Y%m%d-%H%M%S')}.jsonl"))


def _pack_corpus(tokenizer: Any, corpus: str, s: DemoSettings, exclude: Any, seed: int):
    """The run's blocks in reading order: each phase of the corpus fills its share of the steps."""
    import torch

    from transfer_probe import demodata

    phases = demodata.corpus_phases(corpus, s.shift_at)
    blocks, left = [], s.max_steps * s.batch_size
    for i, (kind, share) in enumerate(phases):
        n_blocks = left if i == len(phases) - 1 else round(share * s.max_steps) * s.batch_size
        left -= n_blocks
        # ~4 characters per BPE token on this text; a little extra so no phase cycles its text.
        n_chars = int(n_blocks * s.block_size * 4.5)
        lines = demodata.corpus_lines(kind, n_chars, exclude=exclude, seed=seed, pair_fraction=s.pair_fraction)
        blocks.append(demodata.pack_lines(tokenizer, lines, s.block_size, n_blocks).blocks)
    return demodata.PackedDataset(torch.cat(blocks))


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
    from transfer_probe.store.history import aggregate, group_key, probe_records, read_history

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
        prediction_check=_prediction_check(probes, last, budget_tokens),
    )


def _prediction_check(probes: list[dict], last: dict | None, budget: float) -> str:
    """The newest trusted prediction at the budget made from the probes before it, against the probe
    at the budget: the demo's check that the law's interval holds."""
    from transfer_probe.diagnose import diagnose_all
    from transfer_probe.text import format_tokens

    if last is None or last["tokens"] < budget:
        return ""
    cuts = sorted({float(r["tokens"]) for r in probes if 0 < float(r["tokens"]) < budget}, reverse=True)
    for cut in cuts:
        verdict = next(iter(diagnose_all([r for r in probes if float(r["tokens"]) <= cut],
                                         budget_tokens=budget).values()), None)
        pred = getattr(verdict, "prediction", None) or {}
        if pred.get("mean") is None:
            continue
        got = float(last["mean"]["bleu"])
        inside = pred["low"] <= got <= pred["high"]
        return (f"predicted at {format_tokens(cut)} tokens for the budget {format_tokens(budget)}: BLEU "
                f"{pred['mean']:.3g} [{pred['low']:.3g}, {pred['high']:.3g}] ({pred.get('interval', 0.9):.0%} interval); "
                f"measured at {format_tokens(last['tokens'])}: {got:.3g}, {'inside' if inside else 'outside'} the interval")
    return "no trusted prediction at the budget before it was reached"


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
        description="Pre-train tiny GPT-2 models offline, probing an English->French number-words task while "
        "they train: an aligned run (paired bilingual text), a mid-run mixture shift to French-only text, and "
        "English-only text (no transfer); print the verdicts and write an HTML report. Runs two at a time, one "
        f"thread each. {DEMO_TIME}",
        epilog="examples:\n  transfer-probe demo\n  transfer-probe demo --quick --out /tmp/tp-demo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default="transfer_probe_demo", help="output directory (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="two corpora, 200 steps, one repeat (a smoke test)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    args = parser.parse_args(argv)
    result = run_demo(args.out, quick=args.quick, seed=args.seed, progress=True)
    return 0 if result.rows else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
