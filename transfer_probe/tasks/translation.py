"""Translation as a downstream task: corpus BLEU, chrF and exact match on a test split.

    from transfer_probe import TranslationTask

    task = TranslationTask.from_files("en-de.train.jsonl", "en-de.test.jsonl",
                                      source="en", target="de", finetune_sizes=[2_000, 20_000])

Rows are in the Hugging Face translation format (``{"translation": {"en": ..., "de": ...}}``) or
have one column per language (``en``, ``de``). Files are read with ``datasets`` (JSON Lines, CSV,
TSV; local files work offline); ``from_dataset`` takes any ``datasets.Dataset`` and ``from_hub`` goes
through ``datasets.load_dataset``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transfer_probe.tasks.base import PreparedTask, TaskScores, TextPairTask

__all__ = ["TranslationTask"]

_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "csv"}


class TranslationTask(TextPairTask):
    """Translate ``source`` to ``target``; measured by corpus BLEU and chrF (sacrebleu), exact match
    and, in the probe, teacher-forced cross-entropy on the target tokens.

    ``train`` and ``test`` are sequences of ``(source_text, target_text)`` pairs; the classmethods
    build them from files and data sets. ``extra_metrics`` are ``evaluate`` metric objects (or
    paths/names for ``evaluate.load``, or callables ``f(predictions, references) -> dict``) computed
    on the same hypotheses and recorded next to the built-in metrics.

    >>> task = TranslationTask([("one", "un"), ("two", "deux")], [("three", "trois")],
    ...                        source="en", target="fr", finetune_sizes=[2])
    >>> task.name
    'en-fr'
    """

    def __init__(
        self,
        train: Sequence[tuple[str, str]],
        test: Sequence[tuple[str, str]],
        source: str = "en",
        target: str = "de",
        finetune_sizes: Sequence[int] = (100,),
        name: str | None = None,
        prompt_template: str | None = None,
        target_template: str | None = None,
        encoder_template: str = "{source}",
        max_source_length: int = 256,
        max_target_length: int = 256,
        max_test_examples: int | None = None,
        extra_metrics: Sequence[Any] = (),
        bleu_args: dict[str, Any] | None = None,
        chrf_args: dict[str, Any] | None = None,
        shuffle_seed: int = 0,
    ):
        self.source = str(source)
        self.target = str(target)
        self.extra_metrics = list(extra_metrics)
        self.bleu_args = dict(bleu_args or {})
        self.chrf_args = dict(chrf_args or {})
        super().__init__(
            train, test, name=name or f"{self.source}-{self.target}", finetune_sizes=finetune_sizes,
            prompt_template=prompt_template, target_template=target_template,
            encoder_template=encoder_template, max_source_length=max_source_length,
            max_target_length=max_target_length, max_test_examples=max_test_examples,
            shuffle_seed=shuffle_seed,
        )
        # Validate metric settings now rather than at the first probe.
        from transfer_probe import metrics

        metrics.make_bleu(**self.bleu_args)
        metrics.make_chrf(**self.chrf_args)

    # -- constructors ---------------------------------------------------------------------------
    @classmethod
    def from_files(cls, train: str | os.PathLike, test: str | os.PathLike, source: str = "en",
                   target: str = "de", **kwargs: Any) -> TranslationTask:
        """Read JSON Lines / CSV / TSV files (format chosen by extension).

        >>> task = TranslationTask.from_files("train.jsonl", "test.jsonl", source="en", target="fr",
        ...                                   finetune_sizes=[50, 500])
        """
        splits = [_read_file(p, what) for p, what in ((train, "train"), (test, "test"))]
        return cls(_pairs(splits[0], source, target, str(train)), _pairs(splits[1], source, target, str(test)),
                   source=source, target=target, **kwargs)

    @classmethod
    def from_dataset(cls, train: Any, test: Any, source: str = "en", target: str = "de",
                     **kwargs: Any) -> TranslationTask:
        """Build from two ``datasets.Dataset`` objects (or any sequences of row dicts)."""
        return cls(_pairs(train, source, target, "train dataset"), _pairs(test, source, target, "test dataset"),
                   source=source, target=target, **kwargs)

    @classmethod
    def from_hub(cls, path: str, name: str | None = None, source: str = "en", target: str = "de",
                 train_split: str = "train", test_split: str = "test",
                 load_kwargs: dict[str, Any] | None = None, task_name: str | None = None,
                 **kwargs: Any) -> TranslationTask:
        """Load through ``datasets.load_dataset(path, name)`` (a Hub id, or a local data directory).

        ``name`` is the data set's configuration, as in ``load_dataset``; the task's own name is
        ``task_name`` (default ``"<dataset>:<source>-<target>"``).

        >>> task = TranslationTask.from_hub("wmt/wmt14", "de-en", source="en", target="de",
        ...                                 test_split="validation", finetune_sizes=[2_000])
        """
        import datasets

        try:
            dsd = datasets.load_dataset(path, name, **(load_kwargs or {}))
        except Exception as err:
            raise ValueError(f"could not load dataset {path!r} (config {name!r}): {err}") from err
        for split in (train_split, test_split):
            if split not in dsd:
                raise ValueError(f"dataset {path!r} has no split {split!r}; it has {sorted(dsd)}; "
                                 "pass train_split=/test_split=")
        kwargs["name"] = task_name or f"{Path(str(path)).name}:{source}-{target}"
        return cls.from_dataset(dsd[train_split], dsd[test_split], source=source, target=target, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        from transfer_probe.metrics import picklable_metric

        state = dict(self.__dict__)
        state["extra_metrics"] = [picklable_metric(m) for m in self.extra_metrics]
        return state

    # -- scoring --------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(source=self.source, target=self.target, bleu_args=self.bleu_args, chrf_args=self.chrf_args,
                 extra_metrics=[_metric_name(m) for m in self.extra_metrics])
        return d

    def score(self, hypotheses: list[str], prepared: PreparedTask, *, bootstrap: int = 0,
              seed: int = 0, interval: float = 0.9) -> TaskScores:
        """BLEU, chrF and exact match (with bootstrap intervals), plus any extra metrics."""
        from transfer_probe import metrics

        refs = prepared.references
        out = TaskScores()
        for key, res in (
            ("bleu", metrics.corpus_bleu(hypotheses, refs, bootstrap=bootstrap, seed=seed, interval=interval, **self.bleu_args)),
            ("chrf", metrics.corpus_chrf(hypotheses, refs, bootstrap=bootstrap, seed=seed, interval=interval, **self.chrf_args)),
            ("exact_match", metrics.exact_match(hypotheses, refs, bootstrap=bootstrap, seed=seed, interval=interval)),
        ):
            out.metrics[key] = res.score
            if res.ci is not None:
                out.metrics_ci[key] = list(res.ci)
            if res.signature:
                out.metric_signatures[key] = res.signature
        for metric in self.extra_metrics:
            for key, value in metrics.compute_extra_metric(metric, hypotheses, refs).items():
                if key in out.metrics:
                    key = f"extra_{key}"
                out.metrics[key] = value
        return out


def _metric_name(m: Any) -> str:
    if isinstance(m, (str, os.PathLike)):
        return str(m)
    return str(getattr(m, "name", None) or getattr(m, "__name__", None) or type(m).__name__)


def _read_file(path: str | os.PathLike, what: str):
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{what} file not found: {p} (TranslationTask.from_files needs existing "
                         "JSON Lines / CSV / TSV files)")
    fmt = _FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise ValueError(f"{what} file {p}: unknown extension {p.suffix!r}; use .jsonl, .json, .csv or .tsv")
    if p.stat().st_size == 0:
        raise ValueError(f"{what} file {p} is empty")
    import datasets

    kwargs: dict[str, Any] = {}
    if p.suffix.lower() == ".tsv":
        kwargs["delimiter"] = "\t"
    from datasets.utils import logging as ds_logging

    bars_were_off = ds_logging.is_progress_bar_enabled() is False
    ds_logging.disable_progress_bar()  # no "Generating train split" bars for a small local file
    try:
        # keep_in_memory: a task is small, and this avoids writing an Arrow cache next to the user's files.
        return datasets.load_dataset(fmt, data_files=str(p), split="train", keep_in_memory=True, **kwargs)
    except Exception as err:
        if "corresponds to no data" in str(err):
            raise ValueError(f"{what} file {p} has no rows (only a header?)") from None
        raise ValueError(f"could not read {what} file {p} as {fmt}: {err}") from err
    finally:
        if not bars_were_off:
            ds_logging.enable_progress_bar()


def _pairs(rows: Any, source: str, target: str, where: str) -> list[tuple[str, str]]:
    """``(source, target)`` text pairs from rows in translation format or one column per language."""
    columns = list(getattr(rows, "column_names", None) or (list(rows[0]) if len(rows) else []))
    if len(rows) == 0:
        raise ValueError(f"{where} is empty: it has no rows")
    if "translation" in columns:
        out = []
        for i, row in enumerate(rows):
            tr = row["translation"] or {}
            missing = [k for k in (source, target) if k not in tr or tr[k] is None]
            if missing:
                raise ValueError(f"{where}, row {i}: the 'translation' field has no {missing} "
                                 f"(it has {sorted(tr)}); check source=/target=")
            out.append((str(tr[source]), str(tr[target])))
        return out
    missing = [k for k in (source, target) if k not in columns]
    if missing:
        raise ValueError(f"{where} has no column(s) {missing}: expected a 'translation' column or one column "
                         f"per language ({source!r}, {target!r}); found columns {columns}")
    if hasattr(rows, "column_names"):  # a datasets.Dataset: read whole columns at once
        src, tgt = list(rows[source]), list(rows[target])
    else:
        src, tgt = [r[source] for r in rows], [r[target] for r in rows]
    out = []
    for i, (s, t) in enumerate(zip(src, tgt, strict=True)):
        if s is None or t is None:
            raise ValueError(f"{where}, row {i}: missing value for {(source if s is None else target)!r}")
        out.append((str(s), str(t)))
    return out
