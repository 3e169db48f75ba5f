"""Probe the intermediate checkpoints of a finished pre-training run after the fact, then fit and diagnose.

What it shows: the paper's own workflow (Isik et al. 2024), no callback needed. Pick checkpoints
of a run, fine-tune each briefly on the downstream task, measure, and write an ordinary history file
(``transfer_probe.posthoc.probe_checkpoint_dirs``); then fit the BLEU law and the cross-entropy
power law (``transfer_probe.laws.fit_rows``), diagnose (``transfer_probe.diagnose.diagnose_all``)
and write the HTML report (``transfer_probe.report.write_report``). The same history also works
with the command line: ``transfer-probe fit / diagnose / report``.

Real use: the public intermediate checkpoints of EleutherAI's Pythia-160M (revisions ``step1000``,
``step2000``, ... on the hub), downloaded with ``from_pretrained(revision=...)`` and saved to local
checkpoint directories (about 300 MB each), probed on WMT16 English->German. Pythia saw 1024 sequences x 2048 tokens =
2,097,152 tokens per step; its checkpoints carry no ``trainer_state.json``, so that figure is passed
as ``tokens_per_step``::

    python examples/probe_checkpoints.py --out runs/pythia-160m
    python examples/probe_checkpoints.py --revisions step1000 step4000 step16000 step64000 step143000

Offline: a short local ``Trainer`` run of a tiny GPT-2 (on the project's bilingual number-words
corpus) saves checkpoints at log-spaced steps; those are probed on the English->French
number-words task. The Trainer's checkpoints record ``num_input_tokens_seen``, so no
``tokens_per_step`` is needed::

    python examples/probe_checkpoints.py --offline --out /tmp/tp-posthoc
    python examples/probe_checkpoints.py --offline --smoke      # seconds; what the tests run
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from _shared import base_parser, out_dir, setup_environment, summarize

PYTHIA = "EleutherAI/pythia-160m"
PYTHIA_TOKENS_PER_STEP = 1024 * 2048
PYTHIA_REVISIONS = ["step1000", "step2000", "step4000", "step8000", "step16000", "step32000", "step64000",
                    "step143000"]


@dataclass(frozen=True)
class Sizes:
    finetune_sizes: tuple[int, ...]
    finetune_steps: int
    finetune_lr: float
    finetune_batch: int
    max_test_examples: int
    repeats: int
    budget_tokens: float | None  # None: 10x the last checkpoint's tokens
    target_bleu: float
    # Offline pre-training run (unused for Pythia).
    n_layer: int = 2
    n_embd: int = 128
    block_size: int = 128
    batch_size: int = 16
    save_steps: tuple[int, ...] = ()


REAL = Sizes(finetune_sizes=(2_000,), finetune_steps=300, finetune_lr=1e-4, finetune_batch=16, max_test_examples=500,
             repeats=1, budget_tokens=1e12, target_bleu=15.0)
OFFLINE = Sizes(finetune_sizes=(50,), finetune_steps=60, finetune_lr=3e-4, finetune_batch=32, max_test_examples=200,
                repeats=2, budget_tokens=None, target_bleu=30.0, save_steps=(15, 30, 60, 120, 240, 400))
SMOKE = Sizes(finetune_sizes=(32,), finetune_steps=4, finetune_lr=1e-3, finetune_batch=16, max_test_examples=16,
              repeats=1, budget_tokens=None, target_bleu=30.0, n_layer=1, n_embd=32, block_size=64, batch_size=8,
              save_steps=(4, 12))


def hub_checkpoints(args, out: Path) -> tuple[list[Path], float]:
    """Download Pythia revisions and save each as a local checkpoint directory (model + tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dirs = []
    for revision in args.revisions:
        step = int(revision.removeprefix("step"))
        target = out / "checkpoints" / f"checkpoint-{step}"  # the step is read from the name
        if not (target / "config.json").exists():
            print(f"downloading {PYTHIA} revision {revision} -> {target}")
            model = AutoModelForCausalLM.from_pretrained(PYTHIA, revision=revision)
            tokenizer = AutoTokenizer.from_pretrained(PYTHIA, revision=revision)
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token  # padding is masked in every loss
            model.save_pretrained(target)
            tokenizer.save_pretrained(target)
            del model
        dirs.append(target)
    return dirs, PYTHIA_TOKENS_PER_STEP


def hub_task(s: Sizes):
    import datasets

    from transfer_probe import TranslationTask

    # A slice of the training pairs is enough for the largest D_f.
    train = datasets.load_dataset("wmt/wmt16", "de-en", split=f"train[:{2 * max(s.finetune_sizes)}]")
    test = datasets.load_dataset("wmt/wmt16", "de-en", split="test")
    return TranslationTask.from_dataset(train, test, source="en", target="de", name="wmt16:en-de",
                                        finetune_sizes=list(s.finetune_sizes), max_test_examples=s.max_test_examples,
                                        max_source_length=128, max_target_length=128)


def offline_task(args, s: Sizes):
    from transfer_probe import demodata

    return demodata.number_task(n_train=max(200, 2 * max(s.finetune_sizes)), n_test=s.max_test_examples,
                                finetune_sizes=list(s.finetune_sizes), seed=args.seed)


def offline_checkpoints(args, s: Sizes, out: Path, task) -> tuple[list[Path], None]:
    """A short pre-training run that saves checkpoints at log-spaced steps, like a real run would."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments

    from transfer_probe import demodata

    class SaveAt(TrainerCallback):
        """Save at the given steps only (the Trainer's ``save_steps`` is a fixed interval)."""

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in s.save_steps:
                control.should_save = True

    max_steps = max(s.save_steps)
    lines = demodata.corpus_lines("bilingual", int(max_steps * s.batch_size * s.block_size * 4.5),
                                  exclude=task.test_numbers, seed=args.seed, pair_fraction=0.5)
    tokenizer = demodata.train_tokenizer(lines[:20_000] + [t for p in task.train_pairs for t in p],
                                         vocab_size=512 if args.smoke else 2048)
    data = demodata.pack_lines(tokenizer, lines, s.block_size, max_steps * s.batch_size)
    torch.manual_seed(args.seed)
    model = GPT2LMHeadModel(GPT2Config(
        vocab_size=len(tokenizer), n_positions=s.block_size, n_embd=s.n_embd, n_layer=s.n_layer, n_head=4,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    run = out / "pretraining"
    training_args = TrainingArguments(
        output_dir=str(run), max_steps=max_steps, per_device_train_batch_size=s.batch_size, learning_rate=1e-3,
        lr_scheduler_type="constant_with_warmup", warmup_steps=max(1, max_steps // 20), save_strategy="steps",
        save_steps=10**9,  # only SaveAt's steps
        logging_steps=max(1, max_steps // 10), report_to="none", seed=args.seed, use_cpu=True,
        include_num_input_tokens_seen=True,  # recorded in each checkpoint's trainer_state.json
        dataloader_num_workers=0, disable_tqdm=args.smoke,
    )
    # processing_class: the tokenizer is saved into every checkpoint, where the probes load it from.
    Trainer(model=model, args=training_args, train_dataset=data, processing_class=tokenizer,
            callbacks=[SaveAt()]).train()
    return [run / f"checkpoint-{step}" for step in s.save_steps], None


def main(argv=None) -> int:
    parser = base_parser(__doc__)
    parser.add_argument("--revisions", nargs="+", default=PYTHIA_REVISIONS,
                        help=f"{PYTHIA} revisions to probe (real use)")
    args = parser.parse_args(argv)
    s = SMOKE if args.smoke else (OFFLINE if args.offline else REAL)
    setup_environment(args.offline, threads=1 if args.offline else None)
    out = out_dir(args, __file__)

    import logging

    import transformers

    from transfer_probe import FinetuneConfig
    from transfer_probe.posthoc import probe_checkpoint_dirs

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    transformers.logging.set_verbosity_warning()
    if args.offline:
        task = offline_task(args, s)
        checkpoints, tokens_per_step = offline_checkpoints(args, s, out, task)
    else:
        task = hub_task(s)
        checkpoints, tokens_per_step = hub_checkpoints(args, out)

    history = out / "history.jsonl"
    if history.exists():
        history.unlink()  # one run per history: a rerun starts afresh
    config = FinetuneConfig(max_steps=s.finetune_steps, learning_rate=s.finetune_lr, batch_size=s.finetune_batch,
                            seed=args.seed, num_threads=1 if args.offline else None,
                            bootstrap=20 if args.smoke else 200)
    print(f"probing {len(checkpoints)} checkpoints x D_f {list(s.finetune_sizes)} x {s.repeats} repeat(s), "
          f"plus a no-pretraining baseline, on {task.name}")
    records = probe_checkpoint_dirs(checkpoints, task, history, config=config, repeats=s.repeats, baseline=True,
                                    tokens_per_step=tokens_per_step, progress=not args.smoke)
    for r in records:
        metrics = r.get("metrics") or {}
        print(f"  tokens {r['tokens']:>12,}  {'pretrained' if r.get('pretrained', True) else 'baseline  '}  "
              f"{r['status']:6}  BLEU {metrics.get('bleu', float('nan')):5.1f}  "
              f"CE {metrics.get('cross_entropy', float('nan')):.3f}")
    budget = s.budget_tokens or 10 * max(float(r["tokens"]) for r in records)
    summarize(history, budget_tokens=budget, target=s.target_bleu, out=out,
              title=f"checkpoints probed after the fact, {task.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
