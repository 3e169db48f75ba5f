"""Capturing weights safely: an immutable copy of the model at a probe point.

A ``Snapshot`` is what a probe job reads. It is either in memory (a CPU state dict, for the inline
executor) or a directory (``config.json`` + ``model.safetensors`` + tokenizer files) that no later
save, ``save_total_limit`` rotation or the end of training can change, for probes that run in another
process or on another machine.

Three ways to take one (the callback picks; all run on the world-process-zero only and enter no
collective):

- :func:`capture_in_memory`: a CPU clone of the state dict plus a copy of the config (inline probes).
- :func:`save_snapshot`: ``save_pretrained`` (safetensors) + the tokenizer into a fresh directory,
  when no checkpoint is written at this step.
- :func:`snapshot_from_checkpoint`: the model, config and tokenizer files of the checkpoint the
  Trainer just wrote, hard-linked (copied when linking is impossible, e.g. across file systems).
  A hard link is a second name for the same file: when ``save_total_limit`` rotation deletes the
  checkpoint, the snapshot's files live on, at no extra disk cost.

Directory snapshots are written under a temporary name and renamed into place, so a reader never sees
a half-written one. :func:`release_snapshot` deletes a directory snapshot once its probes are done
(only directories this module created, recognized by their ``transfer_probe_snapshot.json``).

Each run keeps its snapshots in its own folder (:class:`RunSnapshots`, ``snapshots/<run_id>/``), locked
while its process lives: cleanup at the start of a run removes only folders whose process died, and a
second live run in the same output directory is named in a warning, never touched.

FSDP and DeepSpeed: the model in a rank's memory is a shard, and gathering it is a collective every
rank must join, so the probe never gathers. Snapshot from the consolidated checkpoint instead
(``TransferProbeCallback(on_save=True)``, with ``fsdp_config={"state_dict_type": "FULL_STATE_DICT"}``
or DeepSpeed ZeRO-3 ``"stage3_gather_16bit_weights_on_model_save": true``); the Trainer then writes
full safetensors weights that :func:`snapshot_from_checkpoint` links.

Example::

    snap = save_snapshot(model, "out/transfer_probe/snapshots/step-600", tokens=1_228_800, step=600,
                         tokenizer=tokenizer)
    model_copy = snap.load_model()          # what a probe fine-tunes
    release_snapshot(snap)                  # after the probe
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Snapshot",
    "count_parameters",
    "unwrap_model",
    "capture_in_memory",
    "save_snapshot",
    "write_snapshot",
    "snapshot_from_checkpoint",
    "load_snapshot",
    "release_snapshot",
    "RunSnapshots",
    "find_interrupted_run",
    "MARKER_FILENAME",
]

logger = logging.getLogger("transfer_probe")

MARKER_FILENAME = "transfer_probe_snapshot.json"


@dataclass(frozen=True)
class Snapshot:
    """The weights at one probe point and what they were trained on.

    ``tokens`` is D_p, the pre-training tokens seen; ``params`` holds N as ``{"non_embedding": ...,
    "total": ...}``. Exactly one of ``path`` and ``state_dict`` is set for a pretrained snapshot;
    the no-pretraining baseline is a snapshot with ``pretrained=False`` and neither (the probe
    builds a freshly initialized model from ``config``).
    """

    tokens: int
    step: int
    params: Mapping[str, int]
    config: Any = None  # transformers.PretrainedConfig; read from ``path`` when None
    path: Path | None = None
    state_dict: Mapping[str, Any] | None = field(default=None, repr=False)
    pretrained: bool = True
    tokenizer: Any = field(default=None, repr=False)  # in-memory tokenizer; else loaded from ``path``

    def load_config(self):
        if self.config is not None:
            return self.config
        from transformers import AutoConfig

        if self.path is None:
            raise ValueError("snapshot has neither a config nor a path to read one from")
        return AutoConfig.from_pretrained(self.path)

    def load_model(self, *, seed: int = 0):
        """A fresh model with this snapshot's weights (or a seeded random init for the baseline)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

        config = self.load_config()
        auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
        if not self.pretrained:
            # Seeded so the baseline is the same model at every probe point and in every process.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return auto.from_config(config)
        if self.state_dict is not None:
            # Build in the weights' own dtype: ``config.dtype`` may say otherwise (a model cast after
            # its config was written), and loading would silently round or widen them.
            dtype = next((v.dtype for v in self.state_dict.values()
                          if hasattr(v, "is_floating_point") and v.is_floating_point()), None)
            with torch.random.fork_rng(devices=[]):
                model = auto.from_config(config, **({"dtype": dtype} if dtype is not None else {}))
            missing, unexpected = model.load_state_dict(dict(self.state_dict), strict=False)
            # Tied weights (lm_head <- embeddings) may legitimately be absent from a state dict.
            missing = [k for k in missing if k not in _tied_keys(model)]
            if missing or unexpected:
                raise ValueError(
                    f"snapshot weights do not match the model config: missing {missing[:5]}, "
                    f"unexpected {unexpected[:5]}"
                )
            return model
        if self.path is not None:
            return auto.from_pretrained(self.path, config=config)
        raise ValueError("pretrained snapshot has neither weights in memory nor a path")

    def load_tokenizer(self):
        if self.tokenizer is not None:
            return self.tokenizer
        from transformers import AutoTokenizer

        if self.path is None:
            raise ValueError("snapshot has no tokenizer and no path to load one from")
        return AutoTokenizer.from_pretrained(self.path)


def _tied_keys(model) -> set[str]:
    keys = getattr(model, "_tied_weights_keys", None) or []
    if isinstance(keys, dict):
        keys = list(keys)
    return set(keys)


def count_parameters(model) -> dict[str, int]:
    """N as Kaplan et al. count it (non-embedding) and the total, of unique parameters."""
    seen: set[int] = set()
    total = embedding = 0
    emb_ids = set()
    for module in model.modules():
        if module.__class__.__name__ in {"Embedding"} or "Embedding" in module.__class__.__name__:
            for p in module.parameters(recurse=False):
                emb_ids.add(id(p))
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if id(p) in emb_ids:
            embedding += p.numel()
    return {"non_embedding": total - embedding, "total": total}


# ---------------------------------------------------------------------------------------------
# Capture


def unwrap_model(model):
    """The plain ``PreTrainedModel`` inside DDP / DataParallel / ``torch.compile`` wrappers."""
    seen = 0
    while seen < 10:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None or inner is model:
            break
        model = inner
        seen += 1
    return model


def capture_in_memory(model, *, tokens: int, step: int, tokenizer: Any = None) -> Snapshot:
    """A snapshot holding a CPU copy of ``model``'s weights and config (for inline probes).

    Reads only: the model's parameters, mode and device are left as they are.
    """
    import torch

    model = unwrap_model(model)
    with torch.no_grad():
        # copy=True: a CPU model's tensors would otherwise be shared, not copied.
        state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    return Snapshot(
        tokens=int(tokens), step=int(step), params=count_parameters(model),
        config=copy.deepcopy(model.config), state_dict=state, pretrained=True, tokenizer=tokenizer,
    )


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


# ---------------------------------------------------------------------------------------------
# One folder per run

OWNER_FILENAME = "owner.json"
_LOCK_FILENAME = ".lock"


def _lock(folder: Path) -> int | None:
    """An exclusive ``flock`` on ``folder/.lock``: the fd, or None while another process holds it.

    The kernel drops the lock when its process dies, however it dies (kill -9 included), so a lock
    that can be taken means the folder's run is over; pid files would lie after a pid is reused.
    """
    import fcntl

    fd = os.open(folder / _LOCK_FILENAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held (EWOULDBLOCK), or a file system without locks: assume it is alive
        os.close(fd)
        return None
    return fd


def _owner(folder: Path) -> dict:
    try:
        return json.loads((folder / OWNER_FILENAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _snapshot_dirs(folder: Path) -> list[Path]:
    return sorted(c for c in folder.iterdir() if (c / MARKER_FILENAME).is_file())


def find_interrupted_run(root: str | os.PathLike) -> str | None:
    """The run_id of the newest run in ``root`` whose process died before its end (its folder is not
    locked and not marked ended): the run a ``resume_from_checkpoint`` continues."""
    root = Path(root)
    found: list[tuple[float, str]] = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        owner = _owner(folder) if folder.is_dir() else {}
        if not owner.get("run_id") or owner.get("ended"):
            continue
        fd = _lock(folder)
        if fd is None:
            continue  # alive: another run, not ours
        os.close(fd)
        found.append((float(owner.get("started") or 0), str(owner["run_id"])))
    return max(found)[1] if found else None


class RunSnapshots:
    """The snapshot folder of one live run, ``<root>/<run_id>/``, locked while the run lives.

    :meth:`claim` makes the folder and cleans ``root``: folders whose process died are removed
    (unless ``keep_snapshots``), folders of live runs are left alone and named in a warning (two
    trainings writing to the same output directory), and a run resumed under its own ``run_id``
    takes its folder back with the snapshots its dead process left (:meth:`leftovers`: points
    submitted whose probes may have no record). :meth:`release` at the end of training.
    """

    def __init__(self, path: Path, fd: int):
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def claim(cls, root: str | os.PathLike, run_id: str, *, keep_snapshots: bool = False) -> RunSnapshots:
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        removed, live = _clean_root(root, skip=run_id, keep_snapshots=keep_snapshots)
        for name in (run_id, f"{run_id}-{os.getpid()}"):  # the second one: a live namesake holds the first
            path = root / name
            path.mkdir(exist_ok=True)
            fd = _lock(path)
            if fd is not None:
                break
            live.append(_owner(path) or {"run_id": run_id})
        else:
            raise RuntimeError(f"cannot lock a snapshot folder for run {run_id} in {root}")
        for child in path.iterdir():  # half-written by the dead process's snapshot writer
            if child.is_dir() and child.name.startswith(".") and ".tmp-" in child.name:
                shutil.rmtree(child, ignore_errors=True)
        owner = {"run_id": run_id, "pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        (path / OWNER_FILENAME).write_text(json.dumps(owner) + "\n", encoding="utf-8")
        if removed:
            logger.info("transfer_probe | removed %d snapshot(s) left by %s", sum(removed.values()), "; ".join(
                f"{why} ({n})" for why, n in removed.items()))
        for other in live:
            logger.warning(
                "transfer_probe | another live run uses %s: run %s (pid %s on %s). Its snapshots are left "
                "alone and this run's go to %s; both append to the same history (told apart by run_id). "
                "Give each training its own output_dir.", root.parent, other.get("run_id", "?"),
                other.get("pid", "?"), other.get("host", "?"), path.name)
        return cls(path, fd)

    def leftovers(self) -> list[Snapshot]:
        """The snapshots in this folder, by step: after a resume, those the dead process left."""
        out = []
        for d in _snapshot_dirs(self.path):
            try:
                out.append(load_snapshot(d))
            except (OSError, ValueError, KeyError) as err:
                logger.warning("transfer_probe | unreadable snapshot %s (%s); removing it", d, err)
                shutil.rmtree(d, ignore_errors=True)
        return sorted(out, key=lambda s: s.step)

    def release(self) -> None:
        """The run ended: unlock, and remove the folder unless snapshots are kept in it."""
        if self._fd is None:
            return
        try:
            if _snapshot_dirs(self.path):  # kept on purpose (keep_snapshots): not an orphan
                owner = {**_owner(self.path), "ended": time.time()}
                (self.path / OWNER_FILENAME).write_text(json.dumps(owner) + "\n", encoding="utf-8")
            else:
                shutil.rmtree(self.path, ignore_errors=True)
        finally:
            os.close(self._fd)
            self._fd = None


def _clean_root(root: Path, *, skip: str, keep_snapshots: bool) -> tuple[dict[str, int], list[dict]]:
    """Remove what dead processes left in ``root``; return {why: snapshots removed} and live owners."""
    removed: dict[str, int] = {}
    live: list[dict] = []
    for child in sorted(root.iterdir()):
        if not child.is_dir():
            continue
        if (child / MARKER_FILENAME).is_file() or (child.name.startswith(".") and ".tmp-" in child.name):
            # The layout before per-run folders: only an older version writes here.
            if not keep_snapshots:
                shutil.rmtree(child, ignore_errors=True)
                removed["an earlier version's run"] = removed.get("an earlier version's run", 0) + 1
            continue
        if child.name == skip or not (child / _LOCK_FILENAME).exists():
            continue
        fd = _lock(child)
        if fd is None:
            if _owner(child).get("pid") != os.getpid():  # an earlier train() of this process is not "another run"
                live.append(_owner(child) or {"run_id": child.name})
            continue
        try:
            owner = _owner(child)
            if keep_snapshots or owner.get("ended"):
                continue  # snapshots kept on purpose
            n = len(_snapshot_dirs(child))
            shutil.rmtree(child, ignore_errors=True)
            if n:
                why = f"run {owner.get('run_id', child.name)} (pid {owner.get('pid', '?')}, no longer running)"
                removed[why] = n
        finally:
            os.close(fd)
    return removed, live
