"""The demo's pre-training runs: the shared tokenizer, the corpus packed in reading order, one run
per corpus with the probe callback (in spawned worker processes, one thread each), and the progress
bar that counts fine-tunes with the callback's lines printed above it."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transfer_probe.demo.settings import DemoSettings


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

    expected = {j["corpus"]: (len(s.steps_for(j["corpus"])) + 1) * s.repeats * len(s.sizes_for(j["corpus"])) for j in jobs}
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
                                     initargs=(q, os.getpid())) as pool:
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


def _init_worker(q: Any, parent_pid: int = 0) -> None:
    global _QUEUE
    _QUEUE = q
    if parent_pid:
        # A demo whose parent is killed (kill -9, a closed terminal) must not leave its workers
        # pre-training for minutes: they end when it does, as the process executor's worker does.
        import threading

        from transfer_probe.run.executors.worker import _exit_with_parent

        _exit_with_parent(parent_pid, threading.Lock())


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
        [task], token_points=[s.tokens(p) for p in s.steps_for(corpus)], executor="inline",
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
