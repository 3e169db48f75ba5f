"""``CodeTask``: prompt to completion for code (signature and docstring to body, or any pair).

The same probe machinery as translation: fine-tune on D_f (prompt, completion) pairs, then measure
teacher-forced cross-entropy on the reference completions, exact match, BLEU and chrF on the
generated code, and, when test examples carry HumanEval-style tests, pass@k from ``n_samples``
sampled completions per problem run in :mod:`transfer_probe.sandbox`.
Where the pairs come from (functions in Python sources, HumanEval files) is
:mod:`transfer_probe.tasks.code_data`.

    from transfer_probe import CodeTask

    # Offline data: functions with docstrings from Python sources (default: the standard library),
    # held-out split by file.
    task = CodeTask.from_python_sources(finetune_sizes=[500, 2000], max_test_examples=200)

    # HumanEval format (task_id, prompt, canonical_solution, test, entry_point); pass@k needs the
    # opt-in because it executes model-generated code.
    task = CodeTask.from_humaneval_jsonl("HumanEval.jsonl.gz", train=task.train_pairs,
                                         finetune_sizes=[500], allow_code_execution=True)
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from transfer_probe.tasks.base import PreparedTask, TaskScores, TextPairTask
from transfer_probe.tasks.code_data import (
    HUMANEVAL_FIELDS,
    extract_functions,
    humaneval_split,
    python_source_pairs,
)

__all__ = ["CodeTask", "extract_functions"]

# A completion of a function body ends where a line starts at column 0 (the next def, class,
# statement or comment), as with HumanEval's stop sequences.
_END_OF_BODY = re.compile(r"\n(?=\S)")


class CodeTask(TextPairTask):
    """Generate code from a prompt; see the module docstring for the metrics.

    ``train`` and ``test`` are ``(prompt, completion)`` pairs. Decoder-only models see the prompt
    followed directly by the completion (``prompt_template="{source}"``, ``target_template=
    "{target}"``), loss on the completion; encoder-decoder models encode the prompt.
    ``problems`` (optional) is one HumanEval-format dict (or ``None``) per test pair: where present,
    pass@k for each ``k`` in ``pass_k`` is estimated from ``n_samples`` completions sampled at
    ``temperature``/``top_p``, ``sandbox_workers`` programs at a time in sandboxes built with
    ``sandbox_options`` (see :class:`~transfer_probe.sandbox.Sandbox`; ``isolation`` defaults to real OS
    isolation and refuses without it, ``"unsafe-none"`` opts out by name; checked when the task is
    built, and recorded in every pass@k signature). That executes generated code, so it needs the opt-in
    (``allow_code_execution=True`` or ``TRANSFER_PROBE_ALLOW_CODE_EXECUTION=1``), checked when the
    task is built; ``n_samples=0`` measures without pass@k.

    >>> task = CodeTask([("def one():\\n", "    return 1\\n")] * 4, [("def two():\\n", "    return 2\\n")],
    ...                 finetune_sizes=[2])
    >>> task.name, task.has_tests
    ('code', False)
    """

    default_prompt_template = "{source}"
    default_target_template = "{target}"

    def __init__(
        self,
        train: Sequence[tuple[str, str]],
        test: Sequence[tuple[str, str]],
        *,
        name: str = "code",
        finetune_sizes: Sequence[int] = (100,),
        problems: Sequence[Mapping[str, Any] | None] | None = None,
        pass_k: Sequence[int] = (1, 5, 10),
        n_samples: int = 10,
        temperature: float = 0.8,
        top_p: float = 0.95,
        max_pass_at_k_problems: int | None = None,
        allow_code_execution: bool | None = None,
        sandbox_options: Mapping[str, Any] | None = None,
        sandbox_workers: int = 1,
        bleu_args: Mapping[str, Any] | None = None,
        chrf_args: Mapping[str, Any] | None = None,
        prompt_template: str | None = None,
        target_template: str | None = None,
        encoder_template: str = "{source}",
        max_source_length: int = 256,
        max_target_length: int = 256,
        max_test_examples: int | None = None,
        shuffle_seed: int = 0,
    ):
        self.bleu_args = dict(bleu_args or {})
        self.chrf_args = dict(chrf_args or {})
        super().__init__(
            train, test, name=name, finetune_sizes=finetune_sizes, prompt_template=prompt_template,
            target_template=target_template, encoder_template=encoder_template,
            max_source_length=max_source_length, max_target_length=max_target_length,
            max_test_examples=max_test_examples, shuffle_seed=shuffle_seed,
        )
        self.problems = self._checked_problems(problems)
        self.pass_k = tuple(sorted({int(k) for k in pass_k}))
        self.n_samples = int(n_samples)
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.max_pass_at_k_problems = max_pass_at_k_problems
        self.sandbox_options = dict(sandbox_options or {})
        self.sandbox_workers = max(1, int(sandbox_workers))
        self._check_pass_at_k(allow_code_execution)
        # Resolved here and pickled with the task, so a worker process or Ray node that lacks the
        # environment variable honours the user's decision.
        self.allow_code_execution = self.wants_pass_at_k

    def _checked_problems(self, problems: Sequence[Mapping[str, Any] | None] | None) -> list[dict[str, Any] | None]:
        """One HumanEval-format problem (or ``None``) per test pair, each with what pass@k needs."""
        problems = list(problems) if problems is not None else []
        if problems and len(problems) < len(self.test_pairs):
            raise ValueError(f"task {self.name!r}: {len(problems)} problems for {len(self.test_pairs)} test "
                             "examples; give one problem (or None) per test example")
        checked = [dict(p) if p is not None else None for p in problems[: len(self.test_pairs)]]
        for p in checked:
            if p is not None:
                missing = [k for k in ("prompt", "test", "entry_point") if not p.get(k)]
                if missing:
                    raise ValueError(f"task {self.name!r}: problem {p.get('task_id', '?')!r} lacks {missing}; "
                                     f"HumanEval format has {', '.join(HUMANEVAL_FIELDS)}")
        return checked

    def _check_pass_at_k(self, allow_code_execution: bool | None) -> None:
        """The sampling settings, and, when pass@k will run, the opt-in and the sandbox."""
        if self.n_samples < 0 or (self.pass_k and min(self.pass_k) < 1):
            raise ValueError(f"task {self.name!r}: n_samples must be >= 0 and every k >= 1")
        if not self.wants_pass_at_k:
            return
        if max(self.pass_k) > self.n_samples:
            raise ValueError(f"task {self.name!r}: pass@{max(self.pass_k)} needs n_samples >= "
                             f"{max(self.pass_k)}, got n_samples={self.n_samples}")
        if not self.temperature > 0:
            raise ValueError(f"task {self.name!r}: pass@k samples with temperature > 0, got {self.temperature}")
        from transfer_probe.sandbox import CodeExecutionNotAllowed, code_execution_allowed

        if not code_execution_allowed(allow_code_execution):
            raise CodeExecutionNotAllowed(
                f"task {self.name!r} has tests, and pass@k runs model-generated code, which is untrusted, "
                "so it is off by default. Opt in with allow_code_execution=True or "
                "TRANSFER_PROBE_ALLOW_CODE_EXECUTION=1 (the code runs in transfer_probe.sandbox), or pass "
                "n_samples=0 to measure cross-entropy, exact match, BLEU and chrF without pass@k."
            )
        self._check_sandbox_options()

    def _check_sandbox_options(self) -> None:
        """Build the sandbox once now, so a typo or an isolation this machine lacks is an error at
        construction, not a failed probe much later."""
        import dataclasses

        from transfer_probe.sandbox import Sandbox

        valid = {f.name for f in dataclasses.fields(Sandbox)} - {"allow_code_execution"}
        unknown = sorted(set(self.sandbox_options) - valid)
        if unknown:
            raise ValueError(f"task {self.name!r}: unknown sandbox_options {unknown}; "
                             f"valid keys: {', '.join(sorted(valid))}")
        Sandbox(allow_code_execution=True, **self.sandbox_options)  # ValueError / IsolationUnavailable

    # -- properties -----------------------------------------------------------------------------
    @property
    def has_tests(self) -> bool:
        return any(p is not None for p in self.problems)

    @property
    def wants_pass_at_k(self) -> bool:
        return self.has_tests and self.n_samples > 0 and bool(self.pass_k)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(bleu_args=self.bleu_args, chrf_args=self.chrf_args,
                 problems_with_tests=sum(p is not None for p in self.problems))
        if self.wants_pass_at_k:
            d.update(pass_k=list(self.pass_k), n_samples=self.n_samples, temperature=self.temperature,
                     top_p=self.top_p, max_pass_at_k_problems=self.max_pass_at_k_problems)
        return d

    # -- constructors ---------------------------------------------------------------------------
    @classmethod
    def from_python_sources(
        cls,
        paths: str | os.PathLike | Iterable[str | os.PathLike] | None = None,
        *,
        test_fraction: float = 0.1,
        max_train_examples: int | None = None,
        max_body_lines: int = 30,
        max_body_chars: int = 1500,
        min_body_lines: int = 1,
        methods: bool = True,
        name: str | None = None,
        **kwargs: Any,
    ) -> CodeTask:
        """Signature + docstring -> body pairs from Python files on disk (default: the standard
        library, found with ``sysconfig``), deterministic and deduplicated, split by file.

        ``paths`` are files or directories (searched recursively for ``*.py``). A file goes to the
        test split when a hash of its path relative to its root is below ``test_fraction``, so the
        split does not depend on which other files are present and no function body is shared
        across splits (duplicates, by body text, are kept once, first in sorted path order).

        >>> task = CodeTask.from_python_sources(finetune_sizes=[1000], max_test_examples=200)
        """
        train, test, default = python_source_pairs(paths, test_fraction=test_fraction, max_body_lines=max_body_lines,
                                                    max_body_chars=max_body_chars, min_body_lines=min_body_lines,
                                                    methods=methods)
        if max_train_examples is not None:
            train = train[: int(max_train_examples)]
        kwargs.setdefault("n_samples", 0)  # extracted functions carry no tests
        return cls(train, test, name=name or ("python-stdlib" if default else "python-src"), **kwargs)

    @classmethod
    def from_humaneval_jsonl(
        cls,
        path: str | os.PathLike,
        train: str | os.PathLike | Sequence[tuple[str, str]] | None = None,
        *,
        test_fraction: float = 0.5,
        name: str | None = None,
        **kwargs: Any,
    ) -> CodeTask:
        """Problems in HumanEval's JSON Lines format (``.jsonl`` or ``.jsonl.gz``) as the test split.

        ``train``: fine-tuning pairs (a list of ``(prompt, completion)``, or a JSON Lines file with
        ``prompt`` and ``canonical_solution`` or ``completion`` fields). Without it, the problems are
        split by a hash of their ``task_id``: ``test_fraction`` of them are tested (with their
        tests), the rest are fine-tuning pairs.
        """
        train_pairs, tested = humaneval_split(path, train, test_fraction=test_fraction)
        test_pairs = [(p["prompt"], p["canonical_solution"]) for p in tested]
        return cls(train_pairs, test_pairs, problems=tested, name=name or Path(str(path)).name.split(".")[0],
                   **kwargs)

    # -- scoring --------------------------------------------------------------------------------
    def postprocess(self, text: str) -> str:
        """A greedy generation as scored: cut where the function body ends, indentation kept."""
        return truncate_completion(text).rstrip()

    def score(self, hypotheses: list[str], prepared: PreparedTask, *, bootstrap: int = 0,
              seed: int = 0, interval: float = 0.9) -> TaskScores:
        """Exact match, BLEU and chrF of the greedy completions against the reference completions."""
        from transfer_probe import metrics

        refs = prepared.references
        out = TaskScores()
        for key, res in (
            ("exact_match", metrics.exact_match(hypotheses, refs, bootstrap=bootstrap, seed=seed, interval=interval)),
            ("bleu", metrics.corpus_bleu(hypotheses, refs, bootstrap=bootstrap, seed=seed, interval=interval, **self.bleu_args)),
            ("chrf", metrics.corpus_chrf(hypotheses, refs, bootstrap=bootstrap, seed=seed, interval=interval, **self.chrf_args)),
        ):
            out.metrics[key] = res.score
            if res.ci is not None:
                out.metrics_ci[key] = list(res.ci)
            if res.signature:
                out.metric_signatures[key] = res.signature
        return out

    def model_scores(self, model: Any, tokenizer: Any, prepared: PreparedTask, *, config: Any = None,
                     seed: int = 0, device: Any = None) -> TaskScores:
        """pass@k: sample ``n_samples`` completions per tested problem from the fine-tuned model and
        run each against the problem's tests in the sandbox. Empty when the task has no tests.

        Called by :func:`transfer_probe.run.probe.run_probe` with the fine-tuned model, inside the
        probe's RNG isolation.
        """
        if not self.wants_pass_at_k:
            return TaskScores()
        from transfer_probe.metrics import bootstrap_ratio
        from transfer_probe.sandbox import Sandbox, estimate_pass_at_k, evaluate_pass_at_k

        sandbox = Sandbox(allow_code_execution=self.allow_code_execution, **self.sandbox_options)
        idx = [i for i, p in enumerate(self.problems) if p is not None]
        if self.max_pass_at_k_problems is not None:
            idx = idx[: int(self.max_pass_at_k_problems)]
        max_new = (getattr(config, "max_new_tokens", None) or prepared.max_new_tokens)
        samples = self.sample_completions(model, tokenizer, prepared, idx, max_new_tokens=max_new, seed=seed,
                                          device=device)
        evaluated = evaluate_pass_at_k([self.problems[i] for i in idx], samples, ks=(), sandbox=sandbox,
                                       workers=self.sandbox_workers)
        passed = evaluated["passed"]
        statuses: dict[str, int] = {}
        for per_problem in evaluated["statuses"]:
            for status in per_problem:
                statuses[status] = statuses.get(status, 0) + 1
        out = TaskScores()
        bootstrap = int(getattr(config, "bootstrap", 0) or 0)
        interval = float(getattr(config, "interval", 0.9) or 0.9)
        status_text = ",".join(f"{k}={v}" for k, v in sorted(statuses.items()))
        for k in self.pass_k:
            per_problem = estimate_pass_at_k(self.n_samples, passed, k)
            res = bootstrap_ratio(per_problem, [1.0] * len(per_problem), bootstrap=bootstrap, seed=seed,
                                  interval=interval)
            out.metrics[f"pass@{k}"] = res.score
            if res.ci is not None:
                out.metrics_ci[f"pass@{k}"] = list(res.ci)
            out.metric_signatures[f"pass@{k}"] = (
                f"pass@k:unbiased|k:{k}|n:{self.n_samples}|temperature:{self.temperature:g}|top_p:{self.top_p:g}"
                f"|max_new_tokens:{max_new}|problems:{len(idx)}|seed:{seed}|{sandbox.signature}"
            )
        out.metric_signatures["pass@k_samples"] = status_text
        return out

    def sample_completions(self, model: Any, tokenizer: Any, prepared: PreparedTask, indices: Sequence[int], *,
                           max_new_tokens: int, seed: int = 0, device: Any = None) -> list[list[str]]:
        """``n_samples`` sampled completions (text, cut at the end of the function body) for each
        test example in ``indices``, reproducible from ``seed``."""
        import torch

        device = device or next(model.parameters()).device
        was_training = model.training
        model.eval()
        torch.manual_seed(int(seed))
        out: list[list[str]] = []
        try:
            with torch.inference_mode():
                for i in indices:
                    prompt = torch.tensor([prepared.prompts[i]], dtype=torch.long, device=device)
                    kwargs: dict[str, Any] = dict(
                        input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=True,
                        temperature=self.temperature, top_p=self.top_p, max_new_tokens=int(max_new_tokens),
                        num_return_sequences=self.n_samples, pad_token_id=prepared.pad_token_id,
                        eos_token_id=prepared.eos_token_id,
                    )
                    if prepared.is_encoder_decoder:
                        kwargs["decoder_start_token_id"] = prepared.decoder_start_token_id
                    gen = model.generate(**kwargs)
                    if not prepared.is_encoder_decoder:
                        gen = gen[:, prompt.shape[1]:]
                    texts = tokenizer.batch_decode(gen.tolist(), skip_special_tokens=True)
                    out.append([truncate_completion(t) for t in texts])
        finally:
            model.train(was_training)
        return out


def truncate_completion(text: str) -> str:
    """Cut a generated function body where a line starts at column 0 (the body is over)."""
    m = _END_OF_BODY.search(text)
    return text[: m.start() + 1] if m else text
