"""Snapshots: in-memory clones, saved directories and checkpoint links that later changes cannot touch."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from transfer_probe.run.snapshot import (
    MARKER_FILENAME,
    capture_in_memory,
    count_parameters,
    load_snapshot,
    release_snapshot,
    save_snapshot,
    snapshot_from_checkpoint,
)


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_in_memory_capture_is_a_copy(tiny_gpt2, tiny_tokenizer):
    tiny_gpt2.train()
    snap = capture_in_memory(tiny_gpt2, tokens=1234, step=7, tokenizer=tiny_tokenizer)
    assert tiny_gpt2.training  # mode untouched
    assert snap.tokens == 1234 and snap.step == 7 and snap.pretrained and snap.path is None
    assert snap.params == count_parameters(tiny_gpt2) and snap.params["non_embedding"] > 0
    before = snap.load_model()
    assert _same_weights(before, tiny_gpt2)
    with torch.no_grad():  # the outer run keeps training: the snapshot must not move with it
        for p in tiny_gpt2.parameters():
            p.add_(1.0)
    assert _same_weights(snap.load_model(), before)
    assert not _same_weights(snap.load_model(), tiny_gpt2)
    tiny_gpt2.config.n_layer = 5  # neither does a later change of the config object
    assert snap.config.n_layer == 2


def test_save_snapshot_roundtrip_and_release(tiny_gpt2, tiny_tokenizer, tmp_path):
    d = tmp_path / "snapshots" / "step-7"
    snap = save_snapshot(tiny_gpt2, d, tokens=1234, step=7, tokenizer=tiny_tokenizer)
    assert (d / "model.safetensors").is_file() and (d / "config.json").is_file()
    assert (d / MARKER_FILENAME).is_file()
    assert not [p for p in d.parent.iterdir() if p.name.startswith(".")]  # temp dir renamed away
    assert _same_weights(snap.load_model(), tiny_gpt2)
    assert snap.load_tokenizer().encode("four = quatre") == tiny_tokenizer.encode("four = quatre")
    again = load_snapshot(d)
    assert (again.tokens, again.step, dict(again.params)) == (1234, 7, count_parameters(tiny_gpt2))
    assert release_snapshot(snap) and not d.exists()


def _fake_checkpoint(model, tokenizer, path, *, with_tokenizer=True):
    model.save_pretrained(path)
    if with_tokenizer:
        tokenizer.save_pretrained(path)
    torch.save({"state": {}}, path / "optimizer.pt")
    (path / "trainer_state.json").write_text("{}")
    (path / "rng_state.pth").write_bytes(b"x")
    return path


def test_snapshot_from_checkpoint_survives_rotation(tiny_gpt2, tiny_tokenizer, tmp_path):
    ckpt = _fake_checkpoint(tiny_gpt2, tiny_tokenizer, tmp_path / "checkpoint-10")
    d = tmp_path / "transfer_probe" / "snapshots" / "step-10"
    snap = snapshot_from_checkpoint(ckpt, d, tokens=640, step=10, params=count_parameters(tiny_gpt2))
    names = sorted(p.name for p in d.iterdir())
    assert "model.safetensors" in names and "tokenizer.json" in names
    assert not {"optimizer.pt", "trainer_state.json", "rng_state.pth"} & set(names)
    # hard links: the same file, no second copy on disk
    assert os.stat(d / "model.safetensors").st_ino == os.stat(ckpt / "model.safetensors").st_ino
    shutil.rmtree(ckpt)  # what save_total_limit rotation does
    assert _same_weights(snap.load_model(), tiny_gpt2)
    assert load_snapshot(d).tokens == 640


def test_snapshot_from_checkpoint_copy_and_tokenizer_fallback(tiny_gpt2, tiny_tokenizer, tmp_path):
    ckpt = _fake_checkpoint(tiny_gpt2, tiny_tokenizer, tmp_path / "checkpoint-3", with_tokenizer=False)
    d = tmp_path / "snap"
    snap = snapshot_from_checkpoint(ckpt, d, tokens=1, step=3, tokenizer=tiny_tokenizer, link=False)
    assert os.stat(d / "model.safetensors").st_ino != os.stat(ckpt / "model.safetensors").st_ino
    assert (d / "tokenizer.json").is_file()  # the checkpoint had none: saved from the tokenizer given
    assert "copy of" in (d / MARKER_FILENAME).read_text()
    assert _same_weights(snap.load_model(), tiny_gpt2)


def test_snapshot_from_sharded_or_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        snapshot_from_checkpoint(tmp_path / "nope", tmp_path / "s", tokens=1, step=1)
    sharded = tmp_path / "checkpoint-5"
    (sharded / "pytorch_model_fsdp_0").mkdir(parents=True)
    (sharded / "trainer_state.json").write_text("{}")
    with pytest.raises(ValueError, match="FULL_STATE_DICT"):
        snapshot_from_checkpoint(sharded, tmp_path / "s", tokens=1, step=5)
    assert not (tmp_path / "s").exists()


def test_release_never_touches_foreign_directories(tmp_path):
    user_dir = tmp_path / "checkpoint-1"
    user_dir.mkdir()
    (user_dir / "model.safetensors").write_bytes(b"")
    assert release_snapshot(user_dir) is False and user_dir.exists()
    assert release_snapshot(None) is False


def test_write_snapshot_from_cpu_copy(tiny_gpt2, tiny_t5, tiny_tokenizer, tmp_path):
    from transfer_probe.run.snapshot import write_snapshot

    for model in (tiny_gpt2, tiny_t5):
        mem = capture_in_memory(model, tokens=99, step=3, tokenizer=tiny_tokenizer)
        with torch.no_grad():  # training moves on before the writer thread runs: the copy is what's written
            for p in model.parameters():
                p.add_(1.0)
        d = tmp_path / type(model).__name__
        snap = write_snapshot(mem, d)
        assert snap.path == d and snap.state_dict is None and (d / "tokenizer.json").is_file()
        assert _same_weights(snap.load_model(), mem.load_model())
        assert load_snapshot(d).step == 3


def test_in_memory_snapshot_loads_in_the_weights_dtype(tiny_gpt2):
    # A model cast after its config was written: the snapshot must not round or widen its weights.
    model = tiny_gpt2.to(torch.bfloat16)
    model.config.dtype = torch.float32
    snap = capture_in_memory(model, tokens=1, step=1)
    loaded = snap.load_model()
    assert loaded.transformer.wte.weight.dtype == torch.bfloat16
    assert _same_weights(loaded, model)
