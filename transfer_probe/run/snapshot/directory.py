"""Directory snapshots: written under a temporary name and renamed into place (:func:`save_snapshot`,
:func:`write_snapshot`), or hard-linked from the checkpoint the Trainer just wrote
(:func:`snapshot_from_checkpoint`); read back (:func:`load_snapshot`) and deleted once their probes
are done (:func:`release_snapshot`, only directories that carry the snapshot marker)."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transfer_probe.run.snapshot.core import Snapshot, count_parameters, unwrap_model

MARKER_FILENAME = "transfer_probe_snapshot.json"


def _tmp_sibling(directory: Path) -> Path:
    return directory.with_name(f".{directory.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _write_marker(directory: Path, *, tokens: int, step: int, params: Mapping[str, int], source: str) -> None:
    meta = {"tokens": int(tokens), "step": int(step), "params": dict(params), "source": source}
    (directory / MARKER_FILENAME).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")


def _finish(tmp: Path, directory: Path) -> None:
    if directory.exists():
        # A snapshot of this point already exists (e.g. a resumed run reaching the same step):
        # replace it whole; never mix files of two saves.
        shutil.rmtree(directory)
    os.replace(tmp, directory)


def save_snapshot(model, directory: str | os.PathLike, *, tokens: int, step: int, tokenizer: Any = None) -> Snapshot:
    """Write ``model`` (safetensors, via ``save_pretrained``), its config and ``tokenizer`` to a new
    directory and return the snapshot reading it.

    The files are written under a temporary name and renamed into place when complete.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    model = unwrap_model(model)
    params = count_parameters(model)
    tmp = _tmp_sibling(directory)
    try:
        model.save_pretrained(tmp, is_main_process=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        _write_marker(tmp, tokens=tokens, step=step, params=params, source="save_pretrained")
        _finish(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Snapshot(tokens=int(tokens), step=int(step), params=params, path=directory)


def write_snapshot(snapshot: Snapshot, directory: str | os.PathLike) -> Snapshot:
    """Write an in-memory snapshot (from :func:`capture_in_memory`) to a directory snapshot.

    The slow part of :func:`save_snapshot` (serializing and writing the files) without touching the
    live model, so it can run in a background thread while training goes on: the training loop
    only pays for the CPU copy of the weights.
    """
    from safetensors.torch import save_file

    if snapshot.state_dict is None or snapshot.config is None:
        raise ValueError("write_snapshot needs an in-memory snapshot with weights and config")
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(directory)
    try:
        tmp.mkdir()
        # Tied weights were copied apart by the CPU clone; safetensors stores each name once.
        state = {k: v.contiguous() for k, v in snapshot.state_dict.items()}
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        snapshot.config.save_pretrained(tmp)
        if snapshot.tokenizer is not None:
            snapshot.tokenizer.save_pretrained(tmp)
        _write_marker(tmp, tokens=snapshot.tokens, step=snapshot.step, params=snapshot.params,
                      source="written from a CPU copy")
        _finish(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Snapshot(tokens=snapshot.tokens, step=snapshot.step, params=dict(snapshot.params), path=directory)


# Files of a checkpoint that are training state, not the model: never needed by a probe.
_TRAINING_STATE = ("optimizer", "scheduler", "scaler", "rng_state", "trainer_state", "training_args")
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


def snapshot_from_checkpoint(
    checkpoint: str | os.PathLike,
    directory: str | os.PathLike,
    *,
    tokens: int,
    step: int,
    params: Mapping[str, int] | None = None,
    tokenizer: Any = None,
    link: bool = True,
) -> Snapshot:
    """Make ``directory`` an immutable copy of the model files of a Trainer checkpoint.

    Files are hard-linked (``link=True``, instant and free of disk) or copied. Training state
    (optimizer, scheduler, RNG, trainer state) is left out. When the checkpoint holds no tokenizer
    files, ``tokenizer`` is saved into the snapshot. Raises ``ValueError`` when the checkpoint has no
    consolidated weights (an FSDP/DeepSpeed sharded checkpoint: see the module docstring).
    """
    checkpoint, directory = Path(checkpoint), Path(directory)
    if not checkpoint.is_dir():
        raise ValueError(f"checkpoint directory not found: {checkpoint}")
    files = [
        f for f in sorted(checkpoint.iterdir())
        if f.is_file() and not f.name.startswith(_TRAINING_STATE)
    ]
    weights = [f for f in files if f.name.endswith(_WEIGHT_SUFFIXES)]
    if not weights or not (checkpoint / "config.json").is_file():
        raise ValueError(
            f"checkpoint {checkpoint} holds no consolidated model weights and config.json "
            f"(found: {[f.name for f in files][:8]}). Under FSDP set fsdp_config state_dict_type to "
            "FULL_STATE_DICT; under DeepSpeed ZeRO-3 set stage3_gather_16bit_weights_on_model_save=true."
        )
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(directory)
    tmp.mkdir()
    method = "hardlink" if link else "copy"
    try:
        for f in files:
            target = tmp / f.name
            if link:
                try:
                    os.link(f, target)
                    continue
                except OSError:  # other file system, or links not supported: copy instead
                    method = "copy"
            shutil.copy2(f, target)
        has_tokenizer = any(f.name.startswith("tokenizer") for f in files)
        if not has_tokenizer and tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if params is None:
            params = {}
        _write_marker(tmp, tokens=tokens, step=step, params=params, source=f"{method} of {checkpoint}")
        _finish(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Snapshot(tokens=int(tokens), step=int(step), params=dict(params), path=directory)


def load_snapshot(directory: str | os.PathLike) -> Snapshot:
    """The snapshot stored in ``directory`` by :func:`save_snapshot` or :func:`snapshot_from_checkpoint`."""
    directory = Path(directory)
    marker = directory / MARKER_FILENAME
    if not marker.is_file():
        raise ValueError(f"{directory} is not a transfer_probe snapshot (no {MARKER_FILENAME})")
    meta = json.loads(marker.read_text(encoding="utf-8"))
    return Snapshot(tokens=int(meta["tokens"]), step=int(meta["step"]), params=meta.get("params") or {},
                    path=directory)


def release_snapshot(snapshot: Snapshot | str | os.PathLike | None) -> bool:
    """Delete a directory snapshot made by this module; returns whether something was removed.

    In-memory snapshots and directories without the snapshot marker (a user's checkpoint) are
    never touched.
    """
    if snapshot is None:
        return False
    path = snapshot.path if isinstance(snapshot, Snapshot) else Path(snapshot)
    if path is None:
        return False
    path = Path(path)
    if not (path / MARKER_FILENAME).is_file():
        return False
    shutil.rmtree(path, ignore_errors=True)
    return not path.exists()
