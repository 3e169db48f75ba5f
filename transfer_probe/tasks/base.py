"""The ``Task`` protocol: what a downstream task gives the probe, and a shared text-pair base.

A task owns its data (a train split the fine-tuning subsets are drawn from and a test split the
metrics are measured on), knows how to turn it into model inputs for a given tokenizer and model
type, and scores generated text. :func:`transfer_probe.run.probe.run_probe` does the model work
(fine-tune with a nested ``Trainer``, teacher-forced cross-entropy, batched greedy generation) and
asks the task for everything else, so a new task type only has to describe its data and its scores.

Most generation tasks map a source text to a target text (translation, code from a docstring...):
subclass :class:`TextPairTask`, which implements the whole protocol from ``(source, target)`` string
pairs and leaves only :meth:`TextPairTask.score` (and the prompt format) to the subclass::

    class ReverseTask(TextPairTask):
        def score(self, hypotheses, prepared, *, bootstrap=0, seed=0):
            refs = prepared.references
            em = sum(h == r for h, r in zip(hypotheses, refs)) / len(refs)
            return TaskScores(metrics={"exact_match": 100 * em})

Tasks are picklable (the process executor sends them to another process, the Ray executor to
another machine); the tokenized data is cached per process and never pickled.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from transfer_probe.tasks.tokenizer import special_token_ids, tokenizer_fingerprint

__all__ = [
    "Task",
    "PreparedTask",
    "TaskScores",
    "TextPairTask",
    "tokenizer_fingerprint",
    "special_token_ids",
]


@dataclass
class TaskScores:
    """What a task's scoring returns: point values, 90% bootstrap intervals, signatures."""

    metrics: dict[str, float] = field(default_factory=dict)
    metrics_ci: dict[str, list[float]] = field(default_factory=dict)
    metric_signatures: dict[str, str] = field(default_factory=dict)


@dataclass
class PreparedTask:
    """A task tokenized for one tokenizer and one model type; built once, reused by every probe.

    ``train`` and ``test`` are lists of features ready for the collator: ``input_ids`` and
    ``labels`` (``-100`` where no loss is taken: the prompt of a decoder-only model). ``prompts``
    are the generation inputs of the test examples (decoder-only: the prompt; encoder-decoder: the
    encoder input) and ``references`` the test targets as text.
    """

    is_encoder_decoder: bool
    train: list[dict[str, list[int]]]
    test: list[dict[str, list[int]]]
    prompts: list[list[int]]
    references: list[str]
    sources: list[str]
    pad_token_id: int
    eos_token_id: int
    decoder_start_token_id: int | None
    max_new_tokens: int
    train_order: list[int]  # the fixed shuffle the nested D_f subsets are read from

    def target_tokens(self, indices: Sequence[int]) -> int:
        return sum(sum(1 for x in self.train[i]["labels"] if x != -100) for i in indices)

    def total_tokens(self, indices: Sequence[int]) -> int:
        return sum(len(self.train[i]["input_ids"]) for i in indices)


@runtime_checkable
class Task(Protocol):
    """What the probe needs from a downstream task.

    ``name`` identifies the task in the history (the ``task`` field) and in log keys;
    ``finetune_sizes`` are the D_f (number of fine-tuning examples) the callback probes.
    """

    name: str
    finetune_sizes: tuple[int, ...]

    def validate(self, tokenizer: Any = None, model_config: Any = None) -> None:
        """Raise ``ValueError`` on anything that would make a probe fail later (called early, before
        any training step): empty splits, a D_f larger than the train split, a tokenizer without
        the special tokens the task needs."""

    def prepare(self, tokenizer: Any, model_config: Any) -> PreparedTask:
        """Tokenize once (cached per tokenizer and model type) and return the prepared data."""

    def train_indices(self, prepared: PreparedTask, size: int, *, repeat: int = 0, seed: int = 0,
                      resample: bool = False) -> list[int]:
        """Indices into ``prepared.train`` of the D_f = ``size`` fine-tuning examples of a repeat."""

    def score(self, hypotheses: list[str], prepared: PreparedTask, *, bootstrap: int = 0,
              seed: int = 0, interval: float = 0.9) -> TaskScores:
        """Generation metrics of decoded ``hypotheses`` (one per test example, in order), with
        bootstrap intervals at level ``interval`` (a task whose ``score`` takes no ``interval`` is
        taken to give 90% intervals: :func:`score_task`)."""

    def describe(self) -> dict[str, Any]:
        """Settings that change the numbers (copied into records and reports)."""

    # Optional hooks, used by run_probe when a task defines them:
    #   postprocess(text: str) -> str    turns a decoded generation into the hypothesis that is
    #                                    scored (default ``str.strip``; code may keep indentation)
    #   model_scores(model, tokenizer, prepared, *, config, seed, device) -> TaskScores
    #                                    scores that need the fine-tuned model itself (CodeTask's
    #                                    pass@k from sampled completions), merged into the record


# The process-wide cache of prepared tasks: a worker process that runs many probes of the same task
# tokenizes it once, although each job brings its own (unpickled) task object.
_PREPARED: dict[tuple[str, str, bool, int | None], PreparedTask] = {}
_PREPARED_LOCK = threading.Lock()


class TextPairTask:
    """A task made of ``(source, target)`` text pairs; implements the :class:`Task` protocol.

    Decoder-only models see ``prompt_template.format(source=...)`` followed by
    ``target_template.format(target=...)`` and eos, with the loss on the target and eos only;
    they generate from the prompt. Encoder-decoder models encode ``encoder_template`` (default:
    the source) and decode the target. Subclasses implement :meth:`score`.
    """

    default_prompt_template = "{source} ="
    default_target_template = " {target}"

    def __init__(
        self,
        train: Sequence[tuple[str, str]],
        test: Sequence[tuple[str, str]],
        *,
        name: str,
        finetune_sizes: Sequence[int] = (100,),
        prompt_template: str | None = None,
        target_template: str | None = None,
        encoder_template: str = "{source}",
        max_source_length: int = 256,
        max_target_length: int = 256,
        max_test_examples: int | None = None,
        shuffle_seed: int = 0,
    ):
        self.name = str(name)
        self.train_pairs = [(str(s), str(t)) for s, t in train]
        self.test_pairs = [(str(s), str(t)) for s, t in test]
        if max_test_examples is not None:
            self.test_pairs = self.test_pairs[: int(max_test_examples)]
        if isinstance(finetune_sizes, int):
            finetune_sizes = [finetune_sizes]
        self.finetune_sizes = tuple(int(x) for x in finetune_sizes)
        self.prompt_template = prompt_template if prompt_template is not None else self.default_prompt_template
        self.target_template = target_template if target_template is not None else self.default_target_template
        self.encoder_template = encoder_template
        self.max_source_length = int(max_source_length)
        self.max_target_length = int(max_target_length)
        self.shuffle_seed = int(shuffle_seed)
        self._fingerprint: str | None = None
        self._check_data()

    # -- validation -----------------------------------------------------------------------------
    def _check_data(self) -> None:
        if not self.train_pairs:
            raise ValueError(f"task {self.name!r}: the train split is empty; give at least as many "
                             "examples as the largest fine-tuning size")
        if not self.test_pairs:
            raise ValueError(f"task {self.name!r}: the test split is empty; metrics need test examples")
        if not self.finetune_sizes:
            raise ValueError(f"task {self.name!r}: finetune_sizes is empty; give e.g. [100, 1000]")
        for size in self.finetune_sizes:
            if size <= 0:
                raise ValueError(f"task {self.name!r}: fine-tuning size {size} must be positive")
            if size > len(self.train_pairs):
                raise ValueError(
                    f"task {self.name!r}: fine-tuning size D_f={size} is larger than the train split "
                    f"({len(self.train_pairs)} examples); lower it or give more training data"
                )
        for field_name in ("prompt_template", "encoder_template"):
            tpl = getattr(self, field_name)
            if "{source}" not in tpl:
                raise ValueError(f"task {self.name!r}: {field_name} {tpl!r} must contain '{{source}}'")
        if "{target}" not in self.target_template:
            raise ValueError(f"task {self.name!r}: target_template {self.target_template!r} must contain '{{target}}'")
        if self.max_source_length < 1 or self.max_target_length < 2:
            raise ValueError(f"task {self.name!r}: max_source_length must be >= 1 and max_target_length >= 2")
        empty = [i for i, (s, t) in enumerate(self.test_pairs) if not t.strip()]
        if empty:
            raise ValueError(f"task {self.name!r}: {len(empty)} test examples have an empty target "
                             f"(first at row {empty[0]}); remove them")

    def validate(self, tokenizer: Any = None, model_config: Any = None) -> None:
        """Check data and settings; with a tokenizer, check its special tokens too.

        >>> task.validate(tokenizer, model.config)   # raises ValueError with the reason
        """
        self._check_data()
        if tokenizer is not None:
            is_ed = bool(getattr(model_config, "is_encoder_decoder", False))
            special_token_ids(tokenizer, is_encoder_decoder=is_ed)
            if is_ed:
                start = getattr(model_config, "decoder_start_token_id", None)
                if start is None:
                    start = getattr(model_config, "pad_token_id", None)
                if start is None:
                    raise ValueError(
                        f"task {self.name!r}: the encoder-decoder model config has no "
                        "decoder_start_token_id (nor pad_token_id); set config.decoder_start_token_id"
                    )
            vocab = getattr(model_config, "vocab_size", None)
            if vocab is not None and len(tokenizer) > vocab:
                raise ValueError(
                    f"task {self.name!r}: the tokenizer has {len(tokenizer)} tokens but the model's "
                    f"vocab_size is {vocab}; resize the model's embeddings or use its tokenizer"
                )

    # -- identity and pickling ------------------------------------------------------------------
    def fingerprint(self) -> str:
        """Hash of the data and every setting that changes tokenization."""
        if self._fingerprint is None:
            h = hashlib.sha1()
            for k, v in sorted(self.describe().items()):
                h.update(f"{k}={v}\n".encode())
            for split in (self.train_pairs, self.test_pairs):
                h.update(f"n={len(split)}\n".encode())
                for s, t in split:
                    h.update(s.encode("utf-8", "surrogatepass") + b"\x00" + t.encode("utf-8", "surrogatepass") + b"\x01")
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": type(self).__name__,
            "train_examples": len(self.train_pairs),
            "test_examples": len(self.test_pairs),
            "prompt_template": self.prompt_template,
            "target_template": self.target_template,
            "encoder_template": self.encoder_template,
            "max_source_length": self.max_source_length,
            "max_target_length": self.max_target_length,
            "shuffle_seed": self.shuffle_seed,
        }

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, train={len(self.train_pairs)}, "
                f"test={len(self.test_pairs)}, finetune_sizes={list(self.finetune_sizes)})")

    # -- tokenization ---------------------------------------------------------------------------
    def prepare(self, tokenizer: Any, model_config: Any) -> PreparedTask:
        """Tokenize the task for ``tokenizer`` and the model type of ``model_config``, once.

        The result is cached per process under (task fingerprint, tokenizer fingerprint, model
        type), so every probe, and every job the process executor sends, reuses it.
        """
        is_ed = bool(getattr(model_config, "is_encoder_decoder", False))
        start = None
        if is_ed:
            start = getattr(model_config, "decoder_start_token_id", None)
            if start is None:
                start = getattr(model_config, "pad_token_id", None)
        key = (self.fingerprint(), tokenizer_fingerprint(tokenizer), is_ed, start)
        with _PREPARED_LOCK:
            hit = _PREPARED.get(key)
        if hit is not None:
            return hit
        self.validate(tokenizer, model_config)
        prepared = self._tokenize(tokenizer, is_ed, start)
        with _PREPARED_LOCK:
            _PREPARED[key] = prepared
        return prepared

    def _encode(self, tokenizer: Any, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        return list(tokenizer(texts, add_special_tokens=False)["input_ids"])

    def _tokenize(self, tokenizer: Any, is_ed: bool, start: int | None) -> PreparedTask:
        import numpy as np

        eos, pad = special_token_ids(tokenizer, is_encoder_decoder=is_ed)
        bos = getattr(tokenizer, "bos_token_id", None)
        # Decoder-only: start with bos when the tokenizer has a distinct one (Llama-style models
        # expect it); GPT-2's bos is its eos, and a leading eos would only waste a position.
        lead = [int(bos)] if (not is_ed and bos is not None and bos != eos) else []
        src_tpl = self.encoder_template if is_ed else self.prompt_template
        tgt_tpl = "{target}" if is_ed else self.target_template
        ms, mt = self.max_source_length, self.max_target_length

        def build(pairs):
            srcs = self._encode(tokenizer, [src_tpl.format(source=s) for s, _ in pairs])
            tgts = self._encode(tokenizer, [tgt_tpl.format(target=t) for _, t in pairs])
            feats, prompts = [], []
            for s_ids, t_ids in zip(srcs, tgts, strict=True):
                t_ids = list(t_ids[: mt - 1]) + [eos]
                if is_ed:
                    prompt = list(s_ids[: ms - 1]) + [eos]
                    feats.append({"input_ids": prompt, "labels": t_ids})
                else:
                    prompt = lead + list(s_ids[:ms])
                    feats.append({"input_ids": prompt + t_ids, "labels": [-100] * len(prompt) + t_ids})
                prompts.append(prompt)
            return feats, prompts

        train, _ = build(self.train_pairs)
        test, prompts = build(self.test_pairs)
        longest = max(sum(1 for x in f["labels"] if x != -100) for f in test)
        # Room for a somewhat longer hypothesis than the longest reference, never beyond the cap.
        max_new = min(mt, int(math.ceil(1.25 * longest)) + 2)
        order = np.random.default_rng(self.shuffle_seed).permutation(len(train)).tolist()
        return PreparedTask(
            is_encoder_decoder=is_ed, train=train, test=test, prompts=prompts,
            references=[t for _, t in self.test_pairs], sources=[s for s, _ in self.test_pairs],
            pad_token_id=pad, eos_token_id=eos, decoder_start_token_id=start,
            max_new_tokens=max_new, train_order=order,
        )

    def train_indices(self, prepared: PreparedTask, size: int, *, repeat: int = 0, seed: int = 0,
                      resample: bool = False) -> list[int]:
        """The D_f = ``size`` fine-tuning examples.

        By default the first ``size`` of one fixed shuffle, so smaller D_f are nested in larger ones
        and every repeat sees the same data (repeats then differ only by their fine-tuning seed).
        With ``resample=True`` each (seed, repeat) draws its own subset.
        """
        import numpy as np

        n = len(prepared.train)
        if size > n:
            raise ValueError(f"task {self.name!r}: D_f={size} is larger than the train split ({n} examples)")
        if not resample:
            return prepared.train_order[:size]
        rng = np.random.default_rng([int(seed), int(repeat), 0x5EED])
        return rng.choice(n, size=size, replace=False).tolist()

    def postprocess(self, text: str) -> str:
        """The hypothesis scored for one decoded generation (here: outer whitespace stripped)."""
        return text.strip()

    def score(self, hypotheses: list[str], prepared: PreparedTask, *, bootstrap: int = 0,
              seed: int = 0, interval: float = 0.9) -> TaskScores:
        raise NotImplementedError(f"{type(self).__name__} must implement score()")


def score_task(task: Any, hypotheses: list[str], prepared: PreparedTask, *, bootstrap: int, seed: int,
               interval: float) -> tuple[TaskScores, float]:
    """``task.score(...)`` at the interval level asked for, and the level its intervals really have:
    tasks written before ``interval`` existed give 90% intervals, and the record must say so (the
    errors of the fits are read back from the interval widths)."""
    import inspect

    try:
        params = inspect.signature(task.score).parameters
    except (TypeError, ValueError):
        params = {}
    takes = "interval" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if takes:
        return task.score(hypotheses, prepared, bootstrap=bootstrap, seed=seed, interval=interval), float(interval)
    return task.score(hypotheses, prepared, bootstrap=bootstrap, seed=seed), 0.9
