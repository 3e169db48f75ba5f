"""Probing existing checkpoints after the fact (the paper's own workflow).

Pick checkpoints of a finished (or running) pre-training run, fine-tune each briefly on the task,
measure, and append the results to a history file, so ``fit``, ``diagnose`` and ``report`` work on it
exactly as on the callback's history.

    from transfer_probe.posthoc import probe_checkpoint_dirs
    probe_checkpoint_dirs(["run/checkpoint-500", "run/checkpoint-1000"], task, "history.jsonl")
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from transfer_probe.run.probe import FinetuneConfig, ProbeJob
from transfer_probe.run.snapshot import Snapshot, count_parameters
from transfer_probe.store.history import HistoryWriter

logger = logging.getLogger("transfer_probe")

__all__ = ["checkpoint_snapshot", "probe_checkpoint_dirs", "probe_checkpoints"]


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
) -> list[dict]:
    """Probe every checkpoint for every D_f and repeat of ``task``; append records to ``output``."""
    from tqdm.auto import tqdm

    from transfer_probe.run.probe import failed_record, run_probe

    config = config or FinetuneConfig()
    task.validate()
    snaps = sorted((checkpoint_snapshot(p, tokens_per_step) for p in paths), key=lambda s: s.tokens)
    if baseline:
        snaps.insert(0, replace(snaps[0], tokens=0, step=0, pretrained=False))
    run_id = run_id or f"posthoc-{uuid.uuid4().hex[:8]}"
    writer = HistoryWriter(output)
    jobs = [ProbeJob(snapshot=s, task=task, finetune_size=df, config=config, repeat=r, run_id=run_id)
            for s in snaps for df in task.finetune_sizes for r in range(repeats)]
    records = []
    for job in tqdm(jobs, desc="probing", unit="probe", disable=not progress):
        try:
            record = run_probe(job)
        except Exception as err:  # one bad checkpoint must not lose the others' results
            record = failed_record(job, err)
            logger.warning("transfer_probe | probe of %s failed: %s", job.snapshot.path, record.get("error"))
        records.append(writer.append(record))
    if not writer.flush():  # the writer held them (disk full, read-only): say so, never "appended"
        n = len(writer.held)
        writer.close()  # logs them as JSON lines
        raise ValueError(f"{n} probe record(s) could not be written to {output}; they are in the log above")
    return records


def probe_checkpoints(args) -> int:
    """The ``transfer-probe probe`` command."""
    from transfer_probe import plugins

    task_type = plugins.get_task_type(args.task_type)
    for p in args.checkpoints:
        if not Path(p).exists():
            raise ValueError(f"{p}: no such checkpoint directory")
    for p in (args.train, args.test):
        if not Path(p).exists():
            raise ValueError(f"{p}: no such file")
    task = task_type.from_files(
        args.train, args.test, source=args.src, target=args.tgt,
        finetune_sizes=args.finetune_sizes or [1000], name=args.task_name,
    )
    overrides = {k: v for k, v in {"max_steps": args.steps, "learning_rate": args.lr,
                                    "batch_size": args.batch_size, "device": args.device}.items() if v is not None}
    config = replace(FinetuneConfig(), **overrides)
    records = probe_checkpoint_dirs(args.checkpoints, task, args.output, config=config, repeats=args.repeats,
                                    baseline=args.baseline, tokens_per_step=args.tokens_per_step)
    return len(records)
