"""Pre-train a GPT-2 style decoder from scratch and probe English->German translation while it trains.

What it shows: ``TransferProbeCallback`` attached to an ordinary ``transformers.Trainer``. At
log-spaced points of pre-training (by tokens seen) the callback snapshots the weights; a background
worker process (``executor="process"``, so training does not wait) fine-tunes a copy on D_f WMT16
pairs, measures BLEU, chrF and cross-entropy, and appends a record to the history file. After each
probe the callback fits the BLEU law, predicts BLEU at the planned budget, estimates the tokens
needed for the target BLEU, and warns when the pre-training data looks misaligned with the task. A
no-pretraining baseline (same config, random init) is probed once. At the end the script prints the
verdicts and the fitted law, and writes an HTML report.

Real use (downloads the GPT-2 tokenizer, streams FineWeb-Edu, loads WMT16 de-en; a GPU helps)::

    python examples/translation_decoder.py --out runs/gpt2-wmt16
    python examples/translation_decoder.py --dataset Salesforce/wikitext --dataset-config wikitext-103-raw-v1

Offline (no network: a tiny GPT-2 from config, a byte-level BPE tokenizer trained here, the
project's English->French number-words task and a bilingual number-words corpus from
``transfer_probe.demodata``; a few minutes on a laptop CPU)::

    python examples/translation_decoder.py --offline --out /tmp/tp-decoder
    python examples/translation_decoder.py --offline --smoke      # seconds; what the tests run

Everything except where the model, tokenizer and data come from is the same code in both modes.
Note that FineWeb-Edu is English only: the paper (Isik et al. 2024) finds such misaligned
pre-training data transfers poorly to translation into German, which is what the probes are for:
expect the verdict to say so, or mix German text into the corpus and compare.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from _shared import base_parser, hub_texts, out_dir, packed_stream, setup_environment, summarize


@dataclass(frozen=True)
class Sizes:
    """Model, pre-training and probe sizes of a mode."""

    n_layer: int
    n_embd: int
    n_head: int
    block_size: int
    batch_size: int
    max_steps: int
    lr: float
    probe_points: int  # log-spaced probe points from first_probe_step to max_steps
    first_probe_step: int
    finetune_sizes: tuple[int, ...]
    finetune_steps: int
    finetune_lr: float
    finetune_batch: int
    max_test_examples: int
    repeats: int
    budget_factor: float  # budget = budget_factor x the tokens this run pre-trains
    target_bleu: float


REAL = Sizes(n_layer=6, n_embd=512, n_head=8, block_size=512, batch_size=32, max_steps=20_000, lr=6e-4,
             probe_points=8, first_probe_step=100, finetune_sizes=(2_000, 20_000), finetune_steps=500,
             finetune_lr=3e-4, finetune_batch=16, max_test_examples=500, repeats=1, budget_factor=10,
             target_bleu=15.0)
OFFLINE = Sizes(n_layer=2, n_embd=128, n_head=4, block_size=128, batch_size=16, max_steps=400, lr=1e-3,
                probe_points=5, first_probe_step=25, finetune_sizes=(50,), finetune_steps=60, finetune_lr=3e-4,
                finetune_batch=32, max_test_examples=200, repeats=2, budget_factor=10, target_bleu=30.0)
SMOKE = Sizes(n_layer=1, n_embd=32, n_head=2, block_size=64, batch_size=8, max_steps=12, lr=1e-3,
              probe_points=2, first_probe_step=4, finetune_sizes=(32,), finetune_steps=4, finetune_lr=1e-3,
              finetune_batch=16, max_test_examples=16, repeats=1, budget_factor=10, target_bleu=30.0)


def hub_inputs(args, s: Sizes):
    """Real use: GPT-2's tokenizer, streamed pre-training text, WMT16 en->de."""
    import datasets
    from transformers import AutoTokenizer

    from transfer_probe import TranslationTask

    tokenizer = AutoTokenizer.from_pretrained("openai-community/gpt2")
    tokenizer.pad_token = tokenizer.eos_token  # GPT-2 has none; padding is masked in every loss
    # A slice of the 4.5M training pairs is plenty for D_f up to 20k and keeps the task small: it is
    # pickled into the probe worker process. (TranslationTask.from_hub("wmt/wmt16", "de-en", ...)
    # loads whole splits, fine for smaller data sets.)
    pool = max(s.finetune_sizes) * 2
    train = datasets.load_dataset("wmt/wmt16", "de-en", split=f"train[:{pool}]")
    test = datasets.load_dataset("wmt/wmt16", "de-en", split="test")
    task = TranslationTask.from_dataset(train, test, source="en", target="de", name="wmt16:en-de",
                                        finetune_sizes=list(s.finetune_sizes), max_test_examples=s.max_test_examples,
                                        max_source_length=128, max_target_length=128)
    texts = hub_texts(args.dataset, args.dataset_config, "train", args.text_field)
    return tokenizer, texts, task


def offline_inputs(args, s: Sizes):
    """Offline: the project's number-words task and corpus, a tokenizer trained on them here."""
    from transfer_probe import demodata

    n_train = max(200, 2 * max(s.finetune_sizes))
    task = demodata.number_task(n_train=n_train, n_test=s.max_test_examples, finetune_sizes=list(s.finetune_sizes),
                                seed=args.seed)
    tokens = s.max_steps * s.batch_size * s.block_size
    lines = demodata.corpus_lines("bilingual", int(tokens * 4.5), exclude=task.test_numbers, seed=args.seed,
                                  pair_fraction=0.5)
    sample = lines[:20_000] + [t for pair in task.train_pairs for t in pair]
    tokenizer = demodata.train_tokenizer(sample, vocab_size=512 if args.smoke else 2048)
    return tokenizer, (lambda: iter(lines)), task


def main(argv=None) -> int:
    parser = base_parser(__doc__)
    parser.add_argument("--dataset", default="HuggingFaceFW/fineweb-edu", help="pre-training text (hub id)")
    parser.add_argument("--dataset-config", default="sample-10BT", help="its configuration")
    parser.add_argument("--text-field", default="text", help="its text column")
    parser.add_argument("--steps", type=int, default=None, help="pre-training steps (default by mode)")
    args = parser.parse_args(argv)
    s = SMOKE if args.smoke else (OFFLINE if args.offline else REAL)
    if args.steps:
        from dataclasses import replace

        s = replace(s, max_steps=args.steps)
    setup_environment(args.offline, threads=1 if args.offline else None)
    out = out_dir(args, __file__)

    import logging

    import torch
    import transformers
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    from transfer_probe import FinetuneConfig, TransferProbeCallback
    from transfer_probe.schedule import log_points

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    transformers.logging.set_verbosity_warning()
    tokenizer, texts, task = offline_inputs(args, s) if args.offline else hub_inputs(args, s)

    torch.manual_seed(args.seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=s.block_size, n_embd=s.n_embd, n_layer=s.n_layer,
                        n_head=s.n_head, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    model = GPT2LMHeadModel(config)
    tokens_per_step = s.batch_size * s.block_size
    total_tokens = s.max_steps * tokens_per_step
    budget = s.budget_factor * total_tokens
    probe = TransferProbeCallback(
        tasks=[task],
        token_points=log_points(s.first_probe_step * tokens_per_step, total_tokens, s.probe_points),
        executor="process",                      # probes run in a worker process; training goes on
        # Room for every point to wait: none is dropped if probes fall behind for a while.
        executor_options={"max_pending": s.probe_points + 1, **({"num_threads": 1} if args.offline else {})},
        finetune=FinetuneConfig(max_steps=s.finetune_steps, learning_rate=s.finetune_lr, batch_size=s.finetune_batch,
                                seed=args.seed, num_threads=1 if args.offline else None,
                                bootstrap=20 if args.smoke else 200),
        repeats=s.repeats,
        baseline=True,                           # also probe a randomly initialized copy, once
        budget_tokens=budget,                    # verdicts predict BLEU at this many tokens
        target_bleu=s.target_bleu,               # ... and estimate the tokens needed to reach this BLEU
        output_dir=str(out),
    )
    training_args = TrainingArguments(
        output_dir=str(out), max_steps=s.max_steps, per_device_train_batch_size=s.batch_size, learning_rate=s.lr,
        lr_scheduler_type="constant_with_warmup", warmup_steps=max(1, s.max_steps // 50), weight_decay=0.1,
        logging_steps=max(1, s.max_steps // 20), save_strategy="no", report_to="none", seed=args.seed,
        include_num_input_tokens_seen=True,      # exact D_p for the probe schedule and the laws
        use_cpu=args.offline, dataloader_num_workers=0, disable_tqdm=args.smoke,
    )
    train = packed_stream(tokenizer, texts, s.block_size, seed=args.seed)
    trainer = Trainer(model=model, args=training_args, train_dataset=train, processing_class=tokenizer,
                      callbacks=[probe])
    trainer.train()
    summarize(probe.history_path, budget_tokens=budget, target=s.target_bleu, out=out,
              title=f"GPT-2 style decoder, {task.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
