"""Probing existing checkpoints after the fact (the paper's own workflow).

Pick checkpoints of a finished (or running) pre-training run, fine-tune each briefly on the task,
measure, and append the results to a history file, so ``fit``, ``diagnose`` and ``report`` work on it
exactly as on the callback's history.

    from transfer_probe.posthoc import probe_checkpoint_dirs
    probe_checkpoint_dirs(["run/checkpoint-500", "run/checkpoint-1000"], task, "history.jsonl")
"""

from __future__ import annotations

import csv
import json
import logging
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from transfer_probe.run.probe import FinetuneConfig
from transfer_probe.run.snapshot import Snapshot, count_parameters

logger = logging.getLogger("transfer_probe")

__all__ = ["checkpoint_snapshot", "language_pair", "probe_checkpoint_dirs", "probe_checkpoints"]


def checkpoint_snapshot(path: str | Path, tokens_per_step: float | None = None) -> Snapshot:
    """A snapshot of a checkpoint directory, with its tokens seen and step read from trainer_state.json.

    Tokens come from ``num_input_tokens_seen`` (recorded when the run had
    ``include_num_input_tokens_seen`` on), else ``global_step * tokens_per_step``.
    """
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{path}: not a checkpoint directory (expected config.json and weights inside)")
    if not (path / "config.json").exists():
        raise ValueError(f"{path}: no config.json; is this a Trainer checkpoint or save_pretrained directory?")
    state_file = path / "trainer_state.json"
    state: dict[str, Any] = json.loads(state_file.read_text()) if state_file.exists() else {}
    step = int(state.get("global_step") or _step_from_name(path) or 0)
    tokens = float(state.get("num_input_tokens_seen") or 0)
    if tokens <= 0:
        if tokens_per_step is None:
            raise ValueError(
                f"{path}: the checkpoint does not record num_input_tokens_seen; pass --tokens-per-step "
                "(per-device batch x grad accumulation x world size x sequence length)"
            )
        tokens = step * float(tokens_per_step)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    snap = Snapshot(tokens=int(tokens), step=step, params={}, config=config, path=path)
    params = count_parameters(snap.load_model())
    return replace(snap, params=params)


def _step_from_name(path: Path) -> int | None:
    m = re.search(r"checkpoint-(\d+)$", path.name)
    return int(m.group(1)) if m else None


def probe_checkpoint_dirs(
    paths: Sequence[str | Path],
    task,
    output: str | Path,
    *,
    config: FinetuneConfig | None = None,
    repeats: int = 1,
    baseline: bool = False,
    tokens_per_step: float | None = None,
    run_id: str | None = None,
    progress: bool = True,
    on_record: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Probe every checkpoint for every D_f and repeat of ``task``; append records to ``output``.

    Each record names its checkpoint directory (``checkpoint``, resolved; ``None`` for the
    no-pretraining baseline). ``on_record`` is called with each record as it is written (the CLI
    prints it); without it a failed probe is logged as a warning.
    """
    from tqdm.auto import tqdm

    from transfer_probe.loop import ProbeLoop

    # The callback's loop, driven by checkpoint folders: the same jobs, executor and records. Verdicts
    # are the caller's (the CLI prints them); the folders are the user's and are never released.
    loop = ProbeLoop([task], finetune=config or FinetuneConfig(), repeats=repeats, baseline=False,
                     keep_snapshots=True, run_id=run_id or f"posthoc-{uuid.uuid4().hex[:8]}", verdicts=False,
                     log_records=False)
    snaps = sorted((checkpoint_snapshot(p, tokens_per_step) for p in paths), key=lambda s: s.tokens)
    if baseline:
        snaps.insert(0, replace(snaps[0], tokens=0, step=0, pretrained=False))
    output = Path(output)
    loop.start(output.parent, history=output, read=False, snapshots=False)
    jobs = [job for s in snaps for job in loop.jobs(
        s, extra={"checkpoint": str(Path(s.path).resolve()) if s.pretrained else None})]
    records = []
    for job in tqdm(jobs, desc="probing", unit="probe", disable=not progress):
        loop.submit_jobs([job])  # one at a time: each record is shown as soon as it is written
        for record in (o.record for o in loop.collect(job.snapshot.step) if o.kind == "record"):
            records.append(record)
            if on_record is not None:
                on_record(record)
            elif record.get("status") != "ok":  # one bad checkpoint must not lose the others' results
                logger.warning("transfer_probe | probe of %s failed: %s", job.snapshot.path, record.get("error"))
    records += [o.record for o in loop.finish() if o.kind == "record"]
    if loop.unwritten:  # the writer held them (disk full, read-only): say so, never "appended"
        n = len(loop.unwritten)
        loop.executor.history.close()  # logs them as JSON lines
        raise ValueError(f"{n} probe record(s) could not be written to {output}; they are in the log above")
    return records


def probe_checkpoints(args, on_record: Callable[[dict], None] | None = None) -> list[dict]:
    """The ``transfer-probe probe`` command: its records (errors name the command's flags)."""
    from transfer_probe import plugins

    task_type = plugins.get_task_type(args.task_type)
    for p in args.checkpoints:
        if not Path(p).exists():
            raise ValueError(f"{p}: no such checkpoint directory")
    for p in (args.train, args.test):
        if not Path(p).exists():
            raise ValueError(f"{p}: no such file")
    source, target = language_pair(args.train, args.src, args.tgt)
    try:
        task = task_type.from_files(args.train, args.test, source=source, target=target,
                                    finetune_sizes=args.finetune_sizes or [1000], name=args.task_name)
    except ValueError as err:  # the task speaks of its Python arguments; the user typed flags
        raise ValueError(str(err).replace("source=/target=", "--src/--tgt")) from None
    overrides = {k: v for k, v in {"max_steps": args.steps, "learning_rate": args.lr, "batch_size": args.batch_size,
                                   "device": args.device, "num_threads": args.num_threads}.items() if v is not None}
    config = replace(FinetuneConfig(), **overrides)
    return probe_checkpoint_dirs(args.checkpoints, task, args.output, config=config, repeats=args.repeats,
                                 baseline=args.baseline, tokens_per_step=args.tokens_per_step,
                                 on_record=on_record)


def language_pair(train: str | Path, src: str | None, tgt: str | None) -> tuple[str, str]:
    """``(--src, --tgt)`` checked against the languages of the train file; a missing ``--tgt`` is the
    file's one other language (``--src`` defaults to ``en``). Errors name the flags."""
    langs = _languages(Path(train))
    src = src or "en"
    if langs is not None:
        have = ", ".join(langs)
        for flag, lang in (("--src", src), ("--tgt", tgt)):
            if lang is not None and lang not in langs:
                raise ValueError(f"{flag} {lang}: the train file {train} has no {lang!r}; its languages: {have}")
        if tgt is None:
            others = [lang for lang in langs if lang != src]
            if len(others) == 1:
                return src, others[0]
            raise ValueError(f"--tgt is needed: the train file {train} has the languages {have}; "
                             f"pass --tgt LANG (one of {', '.join(others)})")
    if tgt is None:
        raise ValueError(f"--tgt is needed: cannot tell the languages of {train}; pass --src LANG --tgt LANG")
    return src, tgt


def _languages(path: Path) -> list[str] | None:
    """The language keys of a translation file's first row (``translation`` format or one column per
    language), or None when the file is not one this can peek into."""
    suffix = path.suffix.lower()
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            if suffix in (".jsonl", ".json"):
                line = next((ln for ln in fh if ln.strip()), "")
                row = json.loads(line) if line.lstrip().startswith("{") else None
            elif suffix in (".csv", ".tsv"):
                row = dict.fromkeys(next(csv.reader(fh, delimiter="\t" if suffix == ".tsv" else ","), []))
            else:
                return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # the task's own reader says what is wrong with the file
    if not isinstance(row, dict):
        return None
    inner = row.get("translation")
    return [str(k) for k in (inner if isinstance(inner, dict) else row)]
