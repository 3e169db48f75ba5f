"""Shared test fixtures: a tiny tokenizer, tiny models and a small learnable translation task.

Everything is built offline in a second or two and shared by the whole session; use these instead of
building your own so the suite stays fast.

Fixtures (session-scoped unless noted):

- ``tiny_tokenizer``: byte-level BPE (about 500 tokens; ``TINY_VOCAB`` = 600 is the cap) trained locally with ``tokenizers``
  on English and French number words, wrapped as ``PreTrainedTokenizerFast`` with
  ``pad_token="<pad>"`` (id 0) and ``eos_token="</s>"`` (id 1). No bos.
- ``tiny_gpt2_config`` / ``tiny_t5_config``: ``GPT2Config`` (2 layers, width 64, 4 heads, context 128,
  no dropout) and ``T5Config`` (1+1 layers, d_model 64, decoder_start_token_id = pad = 0), vocab
  sized to the tokenizer.
- ``tiny_gpt2`` / ``tiny_t5`` (function-scoped): a freshly initialized model (seed 0) of those
  configs, yours to modify.
- ``make_snapshot`` (function): ``make_snapshot(model, tokens=0, step=0, pretrained=True)`` returns an
  in-memory ``transfer_probe.run.snapshot.Snapshot`` (CPU state dict + config + ``tiny_tokenizer``).
- ``translation_pairs``: ``{"train": [(en, fr), ...] (400), "test": [(en, fr), ...] (40)}``: strings of
  3-6 digits spelled in English and in French (``num2words``), e.g. ("three one four", "trois un
  quatre"); test strings disjoint from train. ``make_number_pairs(...)`` builds other sizes.
- ``translation_files``: the same data written to a temp dir in every supported layout:
  ``.train_jsonl`` / ``.test_jsonl`` (HF translation format ``{"translation": {"en", "fr"}}``),
  ``.train_csv`` / ``.test_csv`` (columns ``en``, ``fr``), ``.train_tsv`` / ``.test_tsv``; ``.dir``.
- ``translation_task``: ``TranslationTask.from_files(train_jsonl, test_jsonl, source="en", target="fr",
  finetune_sizes=[64, 256])``, name ``"en-fr"``.
- ``fast_finetune``: a ``FinetuneConfig`` small enough for tests (200 steps, batch 16, lr 1e-3, one
  thread, cpu, 200 bootstrap resamples; about 3 s per probe) that lifts BLEU from ~0 to ~15-25 for a
  randomly initialized ``tiny_gpt2`` or ``tiny_t5`` on ``translation_task`` (D_f=256).

Set ``HF_HUB_OFFLINE=1`` for the session: nothing here may touch the network.
"""

from __future__ import annotations

import copy
import os
import random
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY_VOCAB = 600


_DIGITS = range(10)


def make_number_pairs(n_train: int = 400, n_test: int = 40, seed: int = 0, min_len: int = 3, max_len: int = 6):
    """Digit strings spelled in English -> in French (``num2words``), e.g. "three one four" ->
    "trois un quatre". Learnable in a few dozen fine-tuning steps by a 2-layer model (a word-by-word
    mapping with alignment); test sequences are disjoint from train."""
    from num2words import num2words

    en = {d: num2words(d) for d in _DIGITS}
    fr = {d: num2words(d, lang="fr") for d in _DIGITS}
    rng = random.Random(seed)
    seen: set[tuple[int, ...]] = set()
    seqs: list[tuple[int, ...]] = []
    while len(seqs) < n_train + n_test:
        seq = tuple(rng.randrange(10) for _ in range(rng.randint(min_len, max_len)))
        if seq not in seen:
            seen.add(seq)
            seqs.append(seq)
    pairs = [(" ".join(en[d] for d in s), " ".join(fr[d] for d in s)) for s in seqs]
    return {"train": pairs[:n_train], "test": pairs[n_train:]}


@pytest.fixture(scope="session")
def translation_pairs():
    return make_number_pairs()


@pytest.fixture(scope="session")
def tiny_tokenizer(translation_pairs):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB, special_tokens=["<pad>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    from num2words import num2words

    text = [f"{s} = {t}" for s, t in translation_pairs["train"] + translation_pairs["test"]]
    # Number words beyond the task's digits give the vocabulary a realistic size (~500 tokens).
    text += [f"{num2words(n)} = {num2words(n, lang='fr')}" for n in range(0, 3000, 7)]
    text += ["The quick brown fox jumps over the lazy dog.", "Le renard brun saute par-dessus le chien."]
    tok.train_from_iterator(text, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>",
                                   name_or_path="tiny-bpe")


@pytest.fixture(scope="session")
def tiny_gpt2_config(tiny_tokenizer):
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=len(tiny_tokenizer), n_positions=128, n_embd=64, n_layer=2, n_head=4,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=tiny_tokenizer.eos_token_id, eos_token_id=tiny_tokenizer.eos_token_id,
        pad_token_id=tiny_tokenizer.pad_token_id,
    )


@pytest.fixture(scope="session")
def tiny_t5_config(tiny_tokenizer):
    from transformers import T5Config

    return T5Config(
        vocab_size=len(tiny_tokenizer), d_model=64, d_kv=16, d_ff=128, num_layers=1, num_decoder_layers=1,
        num_heads=4, dropout_rate=0.0, feed_forward_proj="relu", tie_word_embeddings=True,
        pad_token_id=tiny_tokenizer.pad_token_id, eos_token_id=tiny_tokenizer.eos_token_id,
        decoder_start_token_id=tiny_tokenizer.pad_token_id,
    )


def _seeded(build):
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build()


@pytest.fixture
def tiny_gpt2(tiny_gpt2_config):
    from transformers import GPT2LMHeadModel

    # A copy of the config: a test that casts its model (bf16) must not change the next test's model.
    return _seeded(lambda: GPT2LMHeadModel(copy.deepcopy(tiny_gpt2_config)))


@pytest.fixture
def tiny_t5(tiny_t5_config):
    from transformers import T5ForConditionalGeneration

    return _seeded(lambda: T5ForConditionalGeneration(copy.deepcopy(tiny_t5_config)))


@pytest.fixture
def make_snapshot(tiny_tokenizer):
    from transfer_probe.run.snapshot import Snapshot, count_parameters

    def make(model, tokens: int = 0, step: int = 0, pretrained: bool = True):
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return Snapshot(tokens=tokens, step=step, params=count_parameters(model), config=model.config,
                        state_dict=state if pretrained else None, pretrained=pretrained,
                        tokenizer=tiny_tokenizer)

    return make


@dataclass(frozen=True)
class TranslationFiles:
    dir: Path
    train_jsonl: Path
    test_jsonl: Path
    train_csv: Path
    test_csv: Path
    train_tsv: Path
    test_tsv: Path


@pytest.fixture(scope="session")
def translation_files(tmp_path_factory, translation_pairs):
    import csv
    import json

    d = tmp_path_factory.mktemp("translation")
    paths = {}
    for split, pairs in translation_pairs.items():
        p = d / f"{split}.jsonl"
        with open(p, "w", encoding="utf-8") as fh:
            for en, fr in pairs:
                fh.write(json.dumps({"translation": {"en": en, "fr": fr}}, ensure_ascii=False) + "\n")
        paths[f"{split}_jsonl"] = p
        for ext, delim in (("csv", ","), ("tsv", "\t")):
            p = d / f"{split}.{ext}"
            with open(p, "w", encoding="utf-8", newline="") as fh:
                w = csv.writer(fh, delimiter=delim)
                w.writerow(["en", "fr"])
                w.writerows(pairs)
            paths[f"{split}_{ext}"] = p
    return TranslationFiles(dir=d, **paths)


@pytest.fixture(scope="session")
def translation_task(translation_files):
    from transfer_probe.tasks import TranslationTask

    return TranslationTask.from_files(translation_files.train_jsonl, translation_files.test_jsonl,
                                      source="en", target="fr", finetune_sizes=[64, 256])


@pytest.fixture(scope="session")
def fast_finetune():
    from transfer_probe.run.probe import FinetuneConfig

    # One thread: on a shared 2-core machine two threads per probe were 20x slower (contention).
    return FinetuneConfig(max_steps=200, learning_rate=1e-3, batch_size=16, seed=0, bootstrap=200,
                          eval_batch_size=64, device="cpu", num_threads=1)
