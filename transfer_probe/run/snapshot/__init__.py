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

The parts: ``core`` (:class:`Snapshot`, counting N, the in-memory capture), ``directory`` (directory
snapshots: written, linked, loaded, released), ``run_folder`` (:class:`RunSnapshots`). Import from
here.
"""

from __future__ import annotations

from transfer_probe.run.snapshot.core import Snapshot, capture_in_memory, count_parameters, unwrap_model
from transfer_probe.run.snapshot.directory import (
    MARKER_FILENAME,
    load_snapshot,
    release_snapshot,
    save_snapshot,
    snapshot_from_checkpoint,
    write_snapshot,
)
from transfer_probe.run.snapshot.run_folder import RunSnapshots, find_interrupted_run

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
