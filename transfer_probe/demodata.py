"""Offline data for the demo: an English->French number-words task, pre-training corpora that differ
in alignment with it, and a locally trained tokenizer.

Everything is generated here (``num2words``) or read from the Python standard library on disk; no
download at run time.

- The task: translate English number words to French (``"two hundred five" -> "deux cent cinq"``),
  numbers log-uniform in [1, 10^6). The test numbers are fixed and kept out of the fine-tuning
  pairs and of every pre-training corpus, so a probe measures generalization, not recall.
- The corpora (:data:`CORPORA`): ``bilingual`` (English and French number words, a fraction of
  lines parallel ``en = fr``: aligned with the task), ``french`` (French number words only),
  ``shift-fr`` (a mid-run mixture shift: ``bilingual`` for the first part of the run, ``french``
  after it; :func:`corpus_phases`), ``english`` (English number words only: no French, misaligned
  for producing French), ``code`` (Python standard-library source: unrelated text).
- One byte-level BPE tokenizer trained on a sample of all corpora and the task, so every run of the
  demo shares the same vocabulary and their probes are comparable.

>>> from transfer_probe.demodata import number_task, corpus_lines
>>> task = number_task(n_train=100, n_test=20, finetune_sizes=[50])
>>> task.name, len(task.train_pairs), len(task.test_pairs)
('en-fr', 100, 20)
>>> lines = corpus_lines("bilingual", 2_000, exclude=task.test_numbers)
"""

from __future__ import annotations

import random
import re
import sysconfig
from collections.abc import Collection, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = [
    "CORPORA",
    "english_words",
    "french_words",
    "number_task",
    "corpus_lines",
    "corpus_phases",
    "train_tokenizer",
    "pack_lines",
    "PackedDataset",
    "BOS",
    "EOS",
    "PAD",
]

BOS, EOS, PAD = "<s>", "</s>", "<pad>"

CORPORA: dict[str, str] = {
    "bilingual": "English and French number words, some lines parallel 'en = fr' (aligned with en->fr)",
    "english": "English number words only (no French: misaligned for producing French)",
    "french": "French number words only (the target language, never paired with English)",
    "shift-fr": "bilingual text, then from mid-run on French number words only (a mixture shift)",
    "code": "Python standard-library source read from disk (unrelated to the task)",
}

_MAX_NUMBER = 1_000_000
_POOL_MAX = 20_000
_TEST_SEED = 1234  # the test numbers do not depend on the run's seed: every run measures the same test


@lru_cache(maxsize=200_000)
def english_words(n: int) -> str:
    """English number words without "and" and commas (``1234 -> "one thousand two hundred thirty-four"``).

    >>> english_words(1234)
    'one thousand two hundred thirty-four'
    """
    from num2words import num2words

    text = num2words(int(n), lang="en").replace(",", "")
    return re.sub(r"\s+", " ", re.sub(r"\band\b", " ", text)).strip()


@lru_cache(maxsize=200_000)
def french_words(n: int) -> str:
    """French number words (``num2words`` spelling).

    >>> french_words(1234)
    'mille deux cent trente-quatre'
    """
    from num2words import num2words

    return num2words(int(n), lang="fr")


def _log_uniform(rng: random.Random) -> int:
    # Log-uniform in [1, 10^6): as many 3-digit numbers as 6-digit ones, so the task has short and
    # long sentences.
    return min(_MAX_NUMBER - 1, int(10 ** rng.uniform(0, 6)))


def _test_numbers(n_test: int) -> list[int]:
    rng = random.Random(_TEST_SEED)
    out: set[int] = set()
    while len(out) < n_test:
        out.add(_log_uniform(rng))
    return sorted(out)


def number_task(n_train: int = 2000, n_test: int = 200, finetune_sizes: Sequence[int] = (50,),
                seed: int = 0, **task_kwargs: Any):
    """The demo's downstream task: a :class:`~transfer_probe.tasks.TranslationTask` en->fr.

    ``n_test`` test numbers are fixed (same for every seed); the ``n_train`` fine-tuning numbers are
    drawn with ``seed``, all distinct and disjoint from the test numbers. The returned task has an
    extra attribute ``test_numbers`` (a frozenset) to keep them out of pre-training corpora.

    >>> task = number_task(n_train=60, n_test=10, finetune_sizes=[50])
    >>> task.test_pairs[0][1] in {french_words(n) for n in task.test_numbers}
    True
    """
    from transfer_probe.tasks import TranslationTask

    if n_test < 1 or n_train < 1:
        raise ValueError(f"number_task needs n_train >= 1 and n_test >= 1, got n_train={n_train}, n_test={n_test}")
    if max(finetune_sizes) > n_train:
        raise ValueError(
            f"number_task: finetune size {max(finetune_sizes)} is larger than n_train={n_train}; "
            "raise n_train or lower finetune_sizes"
        )
    # Distinct numbers available below 10^6 bound both sizes; far above what the demo uses.
    if n_train + n_test > 200_000:
        raise ValueError(f"number_task: n_train + n_test = {n_train + n_test} is too large (max 200000)")
    test = _test_numbers(n_test)
    seen = set(test)
    rng = random.Random(seed + 99)
    train: list[int] = []
    while len(train) < n_train:
        n = _log_uniform(rng)
        if n not in seen:
            seen.add(n)
            train.append(n)
    task = TranslationTask(
        [(english_words(n), french_words(n)) for n in train],
        [(english_words(n), french_words(n)) for n in test],
        source="en", target="fr", finetune_sizes=list(finetune_sizes), **task_kwargs,
    )
    task.test_numbers = frozenset(test)
    return task


def corpus_phases(kind: str, shift: float = 0.5) -> list[tuple[str, float]]:
    """The plain corpora a run reads in order, with the share of the run each covers.

    >>> corpus_phases("shift-fr", 0.5)
    [('bilingual', 0.5), ('french', 0.5)]
    >>> corpus_phases("english")
    [('english', 1.0)]
    """
    if kind not in CORPORA:
        raise ValueError(f"unknown corpus {kind!r}; choose one of {sorted(CORPORA)}")
    if kind == "shift-fr":
        if not 0.0 < shift < 1.0:
            raise ValueError(f"corpus_phases: shift must be in (0, 1), got {shift}")
        return [("bilingual", shift), ("french", 1.0 - shift)]
    return [(kind, 1.0)]


def corpus_lines(kind: str, n_chars: int, *, exclude: Collection[int] = (), seed: int = 0,
                 pair_fraction: float = 0.2) -> list[str]:
    """Pre-training text of one corpus ``kind`` (a key of :data:`CORPORA`), about ``n_chars`` long.

    Number corpora never contain a number in ``exclude`` (pass the task's ``test_numbers``).
    ``pair_fraction`` is the share of parallel ``en = fr`` lines in ``bilingual``; the other lines
    hold one to three numbers in one language, half English, half French.

    >>> corpus_lines("english", 60, seed=1)[0]
    'eighty-six thousand five hundred ninety-seven six thousand two hundred fifty'
    >>> corpus_lines("bilingual", 2_000, pair_fraction=1.0)[0]
    'one hundred sixty-seven = cent soixante-sept'
    """
    if kind not in CORPORA or kind == "shift-fr":
        raise ValueError(f"unknown corpus {kind!r}; choose one of {sorted(set(CORPORA) - {'shift-fr'})} "
                         f"(a shift is read phase by phase: corpus_phases)")
    if n_chars <= 0:
        raise ValueError(f"corpus_lines: n_chars must be positive, got {n_chars}")
    if not 0.0 <= pair_fraction <= 1.0:
        raise ValueError(f"corpus_lines: pair_fraction must be in [0, 1], got {pair_fraction}")
    rng = random.Random(f"{kind}-{seed}")
    if kind == "code":
        return _stdlib_source(n_chars, rng)
    excluded = frozenset(exclude)
    # Lines draw from a pool of distinct numbers: num2words is the slow part (~0.1 ms a call), and a
    # pool bounded by the corpus size keeps generation to a few seconds with little repetition.
    pool_size = max(100, min(_POOL_MAX, n_chars // 40))
    pool: set[int] = set()
    while len(pool) < pool_size:
        n = _log_uniform(rng)
        if n not in excluded:
            pool.add(n)
    pool_list = sorted(pool)
    rng.shuffle(pool_list)

    def number() -> int:
        return rng.choice(pool_list)

    lines: list[str] = []
    total = 0
    while total < n_chars:
        if kind == "bilingual" and rng.random() < pair_fraction:
            n = number()
            line = f"{english_words(n)} = {french_words(n)}"
        else:
            french = kind == "french" or (kind == "bilingual" and rng.random() < 0.5)
            words = french_words if french else english_words
            line = " ".join(words(number()) for _ in range(rng.randint(1, 3)))
        lines.append(line)
        total += len(line) + 1
    return lines


def _stdlib_source(n_chars: int, rng: random.Random) -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(root.glob("*.py"))
    if not files:
        raise RuntimeError(f"no Python source files found in the standard library directory {root}")
    rng.shuffle(files)
    out: list[str] = []
    total = 0
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue  # an unreadable file is just skipped: any other source will do
        # One "line" per top-level chunk keeps documents intact but bounded in length.
        for chunk in re.split(r"\n(?=\S)", text):
            if chunk.strip():
                out.append(chunk)
                total += len(chunk) + 1
        if total >= n_chars:
            break
    if total < n_chars:
        # Not enough source on disk for the request: repeat what there is rather than fail.
        base = list(out)
        while total < n_chars and base:
            out.extend(base)
            total += sum(len(c) + 1 for c in base)
    return out


def train_tokenizer(texts: Sequence[str], vocab_size: int = 2048):
    """A byte-level BPE tokenizer trained on ``texts``, as a ``PreTrainedTokenizerFast`` with
    ``<s>`` (bos), ``</s>`` (eos) and ``<pad>``.

    >>> tok = train_tokenizer(["one = un", "two = deux"] * 10, vocab_size=300)
    >>> tok.decode(tok("two = deux")["input_ids"])
    'two = deux'
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 260:
        raise ValueError(f"train_tokenizer: vocab_size must be at least 260 (256 bytes + specials), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD)


class PackedDataset:
    """Fixed-length blocks of token ids for causal-LM pre-training (``input_ids`` = ``labels``).

    A plain map-style dataset (``__len__``/``__getitem__``), which is all the ``Trainer`` needs.
    """

    def __init__(self, blocks):
        self.blocks = blocks  # LongTensor (n_blocks, block_size)

    def __len__(self) -> int:
        return int(self.blocks.shape[0])

    def __getitem__(self, i: int) -> dict[str, Any]:
        x = self.blocks[i]
        return {"input_ids": x, "labels": x}


def pack_lines(tokenizer: Any, lines: Sequence[str], block_size: int, n_blocks: int) -> PackedDataset:
    """Tokenize ``lines`` as ``<s> line </s>`` (the layout a task prompt starts with), concatenate,
    cut into ``n_blocks`` blocks of ``block_size`` tokens (cycling through the text if short).
    """
    import torch

    if block_size < 2 or n_blocks < 1:
        raise ValueError(f"pack_lines: need block_size >= 2 and n_blocks >= 1, got {block_size}, {n_blocks}")
    if not lines:
        raise ValueError("pack_lines: no lines to pack")
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    ids: list[int] = []
    for row in tokenizer(list(lines), add_special_tokens=False)["input_ids"]:
        ids.append(bos)
        ids.extend(row)
        ids.append(eos)
    need = block_size * n_blocks
    if len(ids) < need:
        ids = ids * (need // len(ids) + 1)
    blocks = torch.tensor(ids[:need], dtype=torch.long).view(n_blocks, block_size)
    return PackedDataset(blocks)
