"""Pre-train a T5 style encoder-decoder from scratch and probe English->German translation while it trains.

What it shows: the same ``TransferProbeCallback`` as ``translation_decoder.py`` on an
encoder-decoder model. The probes then encode the source sentence and decode the translation
(loss on target tokens), and the no-pretraining baseline is a randomly initialized T5 of the same
config.

Pre-training objective (prefix -> continuation): packed text is cut into blocks of ``block_size``
tokens; the encoder reads the first half of a block and the decoder learns to continue with the
second half. It is the simplest objective that trains both halves of the model on plain text; T5's
own span corruption (sentinel tokens replacing masked spans) works with the callback just as well,
since the probes do not depend on how the model was pre-trained.

Tokens seen (D_p): the Trainer's ``include_num_input_tokens_seen`` counts encoder inputs only, so
this script leaves it off and gives the callback ``seq_len=block_size``: D_p = steps x batch x
(encoder + decoder tokens), all the text the model was trained on.

Real use (downloads the t5-small config and tokenizer, not its weights; streams FineWeb-Edu; loads
WMT16 de-en; a GPU helps)::

    python examples/translation_encoder_decoder.py --out runs/t5-wmt16

Offline (a tiny T5 from config, a tokenizer trained here, the project's English->French
number-words task and bilingual corpus from ``transfer_probe.demodata``)::

    python examples/translation_encoder_decoder.py --offline --out /tmp/tp-t5
    python examples/translation_encoder_decoder.py --offline --smoke      # seconds; what the tests run
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace

from _shared import base_parser, hub_texts, out_dir, packed_stream, setup_environment, summarize


@dataclass(frozen=True)
class Sizes:
    """Model (None: keep the loaded config's value), pre-training and probe sizes of a mode."""

    d_model: int | None
    d_ff: int | None
    num_layers: int | None
    num_heads: int | None
    block_size: int
    batch_size: int
    max_steps: int
    lr: float
    probe_points: int
    first_probe_step: int
    finetune_sizes: tuple[int, ...]
    finetune_steps: int
    finetune_lr: float
    finetune_batch: int
    max_test_examples: int
    repeats: int  # independent fine-tunes per probe point (their spread goes into the fits)
    budget_factor: float
    target_bleu: float


# Real: t5-small as published (60M parameters), trained from scratch.
REAL = Sizes(d_model=None, d_ff=None, num_layers=None, num_heads=None, block_size=512, batch_size=32,
             max_steps=20_000, lr=5e-4, probe_points=8, first_probe_step=100, finetune_sizes=(2_000, 20_000),
             finetune_steps=500, finetune_lr=5e-4, finetune_batch=16, max_test_examples=500, repeats=1, budget_factor=10,
             target_bleu=15.0)
OFFLINE = Sizes(d_model=128, d_ff=256, num_layers=2, num_heads=4, block_size=128, batch_size=16, max_steps=400,
                lr=1e-3, probe_points=5, first_probe_step=25, finetune_sizes=(50,), finetune_steps=60,
                finetune_lr=3e-4, finetune_batch=32, max_test_examples=200, repeats=2, budget_factor=10, target_bleu=30.0)
SMOKE = Sizes(d_model=32, d_ff=64, num_layers=1, num_heads=2, block_size=64, batch_size=8, max_steps=12, lr=1e-3,
              probe_points=2, first_probe_step=4, finetune_sizes=(32,), finetune_steps=4, finetune_lr=1e-3,
              finetune_batch=16, max_test_examples=16, repeats=1, budget_factor=10, target_bleu=30.0)


def hub_inputs(args, s: Sizes):
    """Real use: t5-small's config and tokenizer, streamed pre-training text, WMT16 en->de."""
    import datasets
    from transformers import AutoConfig, AutoTokenizer

    from transfer_probe import TranslationTask

    tokenizer = AutoTokenizer.from_pretrained("google-t5/t5-small")
    config = AutoConfig.from_pretrained("google-t5/t5-small")
    # A slice of the training pairs is enough for the largest D_f; the task is pickled into the
    # probe worker process, so keep it small.
    pool = max(s.finetune_sizes) * 2
    train = datasets.load_dataset("wmt/wmt16", "de-en", split=f"train[:{pool}]")
    test = datasets.load_dataset("wmt/wmt16", "de-en", split="test")
    task = TranslationTask.from_dataset(train, test, source="en", target="de", name="wmt16:en-de",
                                        finetune_sizes=list(s.finetune_sizes), max_test_examples=s.max_test_examples,
                                        max_source_length=128, max_target_length=128)
    texts = hub_texts(args.dataset, args.dataset_config, "train", args.text_field)
    return tokenizer, config, texts, task


def offline_inputs(args, s: Sizes):
    """Offline: a small T5Config, the project's number-words task and corpus, a local tokenizer."""
    from transformers import T5Config

    from transfer_probe import demodata

    n_train = max(200, 2 * max(s.finetune_sizes))
    task = demodata.number_task(n_train=n_train, n_test=s.max_test_examples, finetune_sizes=list(s.finetune_sizes),
                                seed=args.seed)
    tokens = s.max_steps * s.batch_size * s.block_size
    lines = demodata.corpus_lines("bilingual", int(tokens * 4.5), exclude=task.test_numbers, seed=args.seed,
                                  pair_fraction=0.5)
    sample = lines[:20_000] + [t for pair in task.train_pairs for t in pair]
    tokenizer = demodata.train_tokenizer(sample, vocab_size=512 if args.smoke else 2048)
    config = T5Config(vocab_size=len(tokenizer), dropout_rate=0.0, feed_forward_proj="relu")
    return tokenizer, config, (lambda: iter(lines)), task


def main(argv=None) -> int:
    parser = base_parser(__doc__)
    parser.add_argument("--dataset", default="HuggingFaceFW/fineweb-edu", help="pre-training text (hub id)")
    parser.add_argument("--dataset-config", default="sample-10BT", help="its configuration")
    parser.add_argument("--text-field", default="text", help="its text column")
    parser.add_argument("--steps", type=int, default=None, help="pre-training steps (default by mode)")
    args = parser.parse_args(argv)
    s = SMOKE if args.smoke else (OFFLINE if args.offline else REAL)
    if args.steps:
        s = replace(s, max_steps=args.steps)
    setup_environment(args.offline, threads=1 if args.offline else None)
    out = out_dir(args, __file__)

    import logging

    import torch
    import transformers
    from transformers import T5ForConditionalGeneration, Trainer, TrainingArguments

    from transfer_probe import FinetuneConfig, TransferProbeCallback
    from transfer_probe.schedule import log_points

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    transformers.logging.set_verbosity_warning()
    tokenizer, config, texts, task = offline_inputs(args, s) if args.offline else hub_inputs(args, s)
    for name, value in (("d_model", s.d_model), ("d_ff", s.d_ff), ("num_layers", s.num_layers),
                        ("num_decoder_layers", s.num_layers), ("num_heads", s.num_heads)):
        if value is not None:
            setattr(config, name, value)
    if s.d_model is not None:
        config.d_kv = s.d_model // s.num_heads
    # T5 starts decoding from the pad token; both must be the tokenizer's.
    config.pad_token_id = config.decoder_start_token_id = tokenizer.pad_token_id
    config.eos_token_id = tokenizer.eos_token_id
    config.bos_token_id = tokenizer.bos_token_id

    torch.manual_seed(args.seed)
    model = T5ForConditionalGeneration(config)  # from scratch: config only, no pre-trained weights
    tokens_per_step = s.batch_size * s.block_size
    total_tokens = s.max_steps * tokens_per_step
    budget = s.budget_factor * total_tokens
    probe = TransferProbeCallback(
        tasks=[task],
        token_points=log_points(s.first_probe_step * tokens_per_step, total_tokens, s.probe_points),
        executor="process",
        # Room for every point to wait: none is dropped if probes fall behind for a while.
        executor_options={"max_pending": s.probe_points + 1, **({"num_threads": 1} if args.offline else {})},
        finetune=FinetuneConfig(max_steps=s.finetune_steps, learning_rate=s.finetune_lr, batch_size=s.finetune_batch,
                                seed=args.seed, num_threads=1 if args.offline else None,
                                bootstrap=20 if args.smoke else 200),
        repeats=s.repeats,
        baseline=True,
        budget_tokens=budget,
        target_bleu=s.target_bleu,
        seq_len=s.block_size,                    # encoder + decoder tokens per example (see the docstring)
        output_dir=str(out),
    )
    training_args = TrainingArguments(
        output_dir=str(out), max_steps=s.max_steps, per_device_train_batch_size=s.batch_size, learning_rate=s.lr,
        lr_scheduler_type="constant_with_warmup", warmup_steps=max(1, s.max_steps // 50), weight_decay=0.0,
        logging_steps=max(1, s.max_steps // 10), save_strategy="no", report_to="none", seed=args.seed,
        use_cpu=args.offline, dataloader_num_workers=0, disable_tqdm=args.smoke,
    )
    train = packed_stream(tokenizer, texts, s.block_size, split_at=s.block_size // 2, seed=args.seed)
    trainer = Trainer(model=model, args=training_args, train_dataset=train, processing_class=tokenizer,
                      callbacks=[probe])
    trainer.train()
    summarize(probe.history_path, budget_tokens=budget, target=s.target_bleu, out=out,
              title=f"T5 style encoder-decoder, {task.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
