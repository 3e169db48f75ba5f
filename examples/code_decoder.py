"""Pre-train a GPT-2 style decoder on code and probe code generation while it trains.

What it shows: ``TransferProbeCallback`` with two ``CodeTask`` probes on a code pre-training run.

- ``python-stdlib``: complete a function body from its signature and docstring, with functions
  extracted from the Python standard library on disk (``CodeTask.from_python_sources``; held-out
  split by file). Measured by teacher-forced cross-entropy on the reference bodies, exact match,
  BLEU and chrF of the greedy completions.
- HumanEval-format problems (``CodeTask.from_humaneval_jsonl``; real: OpenAI's HumanEval from the
  hub; offline: a handful of small problems written in this script), fine-tuned on the standard
  library pairs. The same metrics, plus pass@1/pass@5/pass@10 when you opt in to running code.

pass@k executes code the model wrote. That code is untrusted, so nothing runs it unless you pass
``--allow-code-execution`` (or set ``TRANSFER_PROBE_ALLOW_CODE_EXECUTION=1``). Then every sampled
completion runs with its problem's tests in ``transfer_probe.sandbox``: a separate process with
time, memory and file limits, a clean environment, an audit hook refusing sockets, subprocesses
and writes outside its directory and, where the machine allows it (root with ``unshare``), its own
network, PID and mount namespaces. Without the flag the problems are measured without pass@k.

Real use (downloads GPT-2's tokenizer, streams codeparrot-clean, loads HumanEval; a GPU helps)::

    python examples/code_decoder.py --out runs/code
    python examples/code_decoder.py --out runs/code --allow-code-execution     # adds pass@k

Offline (a tiny GPT-2 from config, a tokenizer trained here on standard-library code, pre-training
on standard-library files that hold none of the held-out test functions)::

    python examples/code_decoder.py --offline --out /tmp/tp-code
    python examples/code_decoder.py --offline --smoke          # seconds; what the tests run
    python examples/code_decoder.py --offline --smoke --allow-code-execution
"""

from __future__ import annotations

import json
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from _shared import base_parser, hub_texts, out_dir, packed_stream, setup_environment, summarize


@dataclass(frozen=True)
class Sizes:
    n_layer: int
    n_embd: int
    n_head: int
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
    max_length: int  # prompt and completion, each, in tokens
    budget_factor: float
    n_samples: int  # completions sampled per problem for pass@k (with the opt-in)


REAL = Sizes(n_layer=6, n_embd=512, n_head=8, block_size=1024, batch_size=16, max_steps=20_000, lr=6e-4,
             probe_points=8, first_probe_step=100, finetune_sizes=(2_000,), finetune_steps=500, finetune_lr=3e-4,
             finetune_batch=16, max_test_examples=500, max_length=384, budget_factor=10, n_samples=10)
OFFLINE = Sizes(n_layer=2, n_embd=128, n_head=4, block_size=128, batch_size=16, max_steps=400, lr=1e-3,
                probe_points=5, first_probe_step=25, finetune_sizes=(200,), finetune_steps=60, finetune_lr=1e-3,
                finetune_batch=16, max_test_examples=100, max_length=64, budget_factor=10, n_samples=10)
SMOKE = Sizes(n_layer=1, n_embd=32, n_head=2, block_size=64, batch_size=8, max_steps=12, lr=1e-3,
              probe_points=2, first_probe_step=4, finetune_sizes=(32,), finetune_steps=4, finetune_lr=1e-3,
              finetune_batch=16, max_test_examples=12, max_length=40, budget_factor=10, n_samples=2)

STDLIB = Path(sysconfig.get_paths()["stdlib"])
# A few standard-library packages: enough functions for the smoke run, parsed in a fraction of the time.
SMOKE_SOURCES = ("json", "email", "http", "logging", "urllib", "concurrent")
_SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__", "lib2to3"}

# Small problems in HumanEval's format (task_id, prompt, canonical_solution, test, entry_point),
# made for the offline run so pass@k has something to execute without a download.
OFFLINE_PROBLEMS = [
    ("add", "def add(a, b):\n    \"\"\"Return the sum of a and b.\"\"\"\n", "    return a + b\n",
     "assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0"),
    ("is_even", "def is_even(n):\n    \"\"\"Return True if n is even.\"\"\"\n", "    return n % 2 == 0\n",
     "assert candidate(4) is True\n    assert candidate(7) is False"),
    ("reverse", "def reverse(s):\n    \"\"\"Return the string s reversed.\"\"\"\n", "    return s[::-1]\n",
     "assert candidate('abc') == 'cba'\n    assert candidate('') == ''"),
    ("maximum", "def maximum(xs):\n    \"\"\"Return the largest item of the list xs.\"\"\"\n", "    return max(xs)\n",
     "assert candidate([1, 5, 2]) == 5\n    assert candidate([-3]) == -3"),
    ("count_vowels", "def count_vowels(s):\n    \"\"\"Return the number of vowels in s.\"\"\"\n",
     "    return sum(1 for c in s.lower() if c in 'aeiou')\n",
     "assert candidate('hello') == 2\n    assert candidate('xyz') == 0"),
    ("square_all", "def square_all(xs):\n    \"\"\"Return a list of the squares of xs.\"\"\"\n",
     "    return [x * x for x in xs]\n", "assert candidate([1, 2, 3]) == [1, 4, 9]\n    assert candidate([]) == []"),
    ("first_word", "def first_word(s):\n    \"\"\"Return the first word of s.\"\"\"\n", "    return s.split()[0]\n",
     "assert candidate('hello world') == 'hello'"),
    ("clamp", "def clamp(x, lo, hi):\n    \"\"\"Return x limited to the range [lo, hi].\"\"\"\n",
     "    return max(lo, min(hi, x))\n", "assert candidate(5, 0, 3) == 3\n    assert candidate(-1, 0, 3) == 0"),
]


def write_offline_problems(path: Path) -> Path:
    with path.open("w") as f:
        for name, prompt, solution, test in OFFLINE_PROBLEMS:
            f.write(json.dumps({"task_id": f"offline/{name}", "prompt": prompt, "canonical_solution": solution,
                                "test": f"def check(candidate):\n    {test}\n", "entry_point": name}) + "\n")
    return path


def write_hub_humaneval(path: Path) -> Path:
    import datasets

    rows = datasets.load_dataset("openai/openai_humaneval", split="test")
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps({k: row[k] for k in ("task_id", "prompt", "canonical_solution", "test",
                                                    "entry_point")}) + "\n")
    return path


def make_tasks(args, s: Sizes, out: Path):
    """The two probe tasks; only where the HumanEval-format problems come from differs by mode."""
    from transfer_probe import CodeTask

    lengths = {"max_source_length": s.max_length, "max_target_length": s.max_length}
    sources = [STDLIB / d for d in SMOKE_SOURCES] if args.smoke else None  # None: the whole standard library
    stdlib = CodeTask.from_python_sources(sources, name="python-stdlib", finetune_sizes=list(s.finetune_sizes),
                                          max_test_examples=s.max_test_examples, **lengths)
    problems = write_offline_problems(out / "problems.jsonl") if args.offline else \
        write_hub_humaneval(out / "humaneval.jsonl")
    # n_samples=0 measures without pass@k; with the opt-in, samples per problem for pass@1/5/10.
    n_samples = s.n_samples if args.allow_code_execution else 0
    pass_k = [k for k in (1, 5, 10) if k <= max(n_samples, 1)]
    humaneval = CodeTask.from_humaneval_jsonl(
        problems, train=stdlib.train_pairs, name="humaneval" if not args.offline else "toy-problems",
        finetune_sizes=list(s.finetune_sizes), n_samples=n_samples, pass_k=pass_k,
        allow_code_execution=args.allow_code_execution or None, **lengths)
    return stdlib, humaneval


def pretraining_files(roots, held_out_bodies: set[str]) -> Iterator[Path]:
    """Python files under ``roots`` that contain none of the held-out test functions (lazily)."""
    from transfer_probe.tasks.code import extract_functions

    for root in roots:
        for f in sorted(root.rglob("*.py")):
            rel = f.relative_to(root)
            if any(part in _SKIP_DIRS for part in rel.parts[:-1]) or rel.name.startswith("test_"):
                continue
            try:
                text = f.read_text(encoding="utf-8")
                bodies = {body for _, body in extract_functions(text)}
            except (OSError, SyntaxError, UnicodeDecodeError, ValueError, RecursionError):
                continue
            if not bodies & held_out_bodies:  # keep test functions out of pre-training
                yield f


def offline_inputs(args, s: Sizes, tasks):
    """Offline: standard-library files (minus test functions) as pre-training text, a local tokenizer."""
    from transfer_probe import demodata

    held_out = {body for task in tasks for _, body in task.test_pairs}
    roots = [STDLIB / d for d in SMOKE_SOURCES] if args.smoke else [STDLIB]
    # About 5 characters per token is plenty for the run's tokens (the stream cycles if short).
    need = 5 * s.max_steps * s.batch_size * s.block_size
    texts: list[str] = []
    total = 0
    for f in pretraining_files(roots, held_out):
        texts.append(f.read_text(encoding="utf-8"))
        total += len(texts[-1])
        if total >= need:
            break
    sample = texts[:300] + [t for pair in tasks[0].train_pairs[:2000] for t in pair]
    tokenizer = demodata.train_tokenizer(sample, vocab_size=512 if args.smoke else 2048)
    print(f"pre-training text: {len(texts)} standard-library files ({sum(map(len, texts)):,} characters)")
    return tokenizer, (lambda: iter(texts))


def hub_inputs(args):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, hub_texts(args.dataset, args.dataset_config, "train", args.text_field)


def main(argv=None) -> int:
    parser = base_parser(__doc__)
    parser.add_argument("--allow-code-execution", action="store_true",
                        help="opt in to running model-generated code (in transfer_probe.sandbox) for pass@k")
    parser.add_argument("--tokenizer", default="openai-community/gpt2", help="tokenizer (hub id), real use")
    parser.add_argument("--dataset", default="codeparrot/codeparrot-clean", help="pre-training code (hub id)")
    parser.add_argument("--dataset-config", default=None, help="its configuration")
    parser.add_argument("--text-field", default="content", help="its text column")
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
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    from transfer_probe import FinetuneConfig, TransferProbeCallback
    from transfer_probe.schedule import log_points

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    transformers.logging.set_verbosity_warning()
    tasks = make_tasks(args, s, out)
    tokenizer, texts = offline_inputs(args, s, tasks) if args.offline else hub_inputs(args)

    torch.manual_seed(args.seed)
    # Room for a prompt and its completion in one sequence.
    n_positions = max(s.block_size, 2 * s.max_length + 8)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=n_positions, n_embd=s.n_embd, n_layer=s.n_layer,
                        n_head=s.n_head, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    model = GPT2LMHeadModel(config)
    tokens_per_step = s.batch_size * s.block_size
    total_tokens = s.max_steps * tokens_per_step
    budget = s.budget_factor * total_tokens
    probe = TransferProbeCallback(
        tasks=list(tasks),
        token_points=log_points(s.first_probe_step * tokens_per_step, total_tokens, s.probe_points),
        executor="process",
        # Room for every point to wait: none is dropped if probes fall behind for a while.
        executor_options={"max_pending": s.probe_points + 1, **({"num_threads": 1} if args.offline else {})},
        finetune=FinetuneConfig(max_steps=s.finetune_steps, learning_rate=s.finetune_lr, batch_size=s.finetune_batch,
                                seed=args.seed, num_threads=1 if args.offline else None,
                                bootstrap=20 if args.smoke else 200),
        baseline=True,
        budget_tokens=budget,
        output_dir=str(out),
    )
    training_args = TrainingArguments(
        output_dir=str(out), max_steps=s.max_steps, per_device_train_batch_size=s.batch_size, learning_rate=s.lr,
        lr_scheduler_type="constant_with_warmup", warmup_steps=max(1, s.max_steps // 50), weight_decay=0.1,
        logging_steps=max(1, s.max_steps // 10), save_strategy="no", report_to="none", seed=args.seed,
        include_num_input_tokens_seen=True, use_cpu=args.offline, dataloader_num_workers=0, disable_tqdm=args.smoke,
    )
    train = packed_stream(tokenizer, texts, s.block_size, seed=args.seed)
    trainer = Trainer(model=model, args=training_args, train_dataset=train, processing_class=tokenizer,
                      callbacks=[probe])
    trainer.train()
    summarize(probe.history_path, budget_tokens=budget, target=None, out=out, title="GPT-2 style decoder on code")
    return 0


if __name__ == "__main__":
    sys.exit(main())
