"""The Ray executor plugin (plugins/transfer-probe-ray) against a local Ray instance started here.

The plugin distribution is pip-installed into a temporary target directory and discovered through
its ``transfer_probe`` entry point, exactly as an installed third-party plugin would be.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from transfer_probe import plugins  # noqa: E402

PLUGIN_SRC = Path(__file__).resolve().parents[1] / "plugins" / "transfer-probe-ray"


@pytest.fixture(scope="module")
def ray_plugin_dir(tmp_path_factory):
    pytest.importorskip("setuptools")
    target = tmp_path_factory.mktemp("ray-plugin")
    build = tmp_path_factory.mktemp("ray-plugin-src")
    # Build from a copy: an in-tree build would leave build/ and *.egg-info in the checkout.
    import shutil

    src = build / "transfer-probe-ray"
    shutil.copytree(PLUGIN_SRC, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
         "--disable-pip-version-check", "--target", str(target), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return target


@pytest.fixture(scope="module")
def ray_executor_cls(ray_plugin_dir):
    """The plugin discovered through its entry point, and one local Ray instance for the module."""
    mp = pytest.MonkeyPatch()
    mp.syspath_prepend(str(ray_plugin_dir))
    # Ray workers inherit the driver's environment: they import the plugin from the same place.
    mp.setenv("PYTHONPATH", os.pathsep.join([str(ray_plugin_dir), os.environ.get("PYTHONPATH", "")]))
    mp.setenv(plugins.ENV_PLUGINS, "transfer-probe-ray")
    plugins.load_plugins(reload=True)
    # One local Ray for the module (starting one costs 10-15 s here); executors built with
    # address=None join it and leave it running.
    ray.init(num_cpus=2, object_store_memory=100 << 20, include_dashboard=False, log_to_driver=False)
    try:
        yield plugins.get_executor("ray")
    finally:
        if ray.is_initialized():
            ray.shutdown()
        mp.undo()
        plugins._reset_for_tests()
        for mod in [m for m in sys.modules if m.startswith("transfer_probe_ray")]:
            sys.modules.pop(mod, None)


def test_ray_executor_runs_probes_on_a_local_ray(ray_executor_cls, tmp_path, tiny_gpt2, make_snapshot,
                                                 translation_task, fast_finetune):
    from transfer_probe.run.probe import ProbeJob
    from transfer_probe.run.snapshot import save_snapshot
    from transfer_probe.store.history import read_history

    assert ray_executor_cls.__module__ == "transfer_probe_ray.executor"
    listed = {p["name"]: p for p in plugins.list_plugins()}
    assert listed["ray"]["distribution"] == "transfer-probe-ray 0.1.0"
    assert listed["ray"]["registered"] == {"executor": ["ray"]}

    history = tmp_path / "history.jsonl"
    ex = ray_executor_cls(history, address=None, num_gpus_per_probe=0, num_cpus_per_probe=1, max_pending=3)
    try:
        config = dataclasses.replace(fast_finetune, max_steps=4, bootstrap=0, num_threads=1)
        mem = make_snapshot(tiny_gpt2, tokens=1000, step=10)
        disk = save_snapshot(tiny_gpt2, tmp_path / "snap-20", tokens=2000, step=20, tokenizer=mem.tokenizer)
        job = ProbeJob(snapshot=mem, task=translation_task, finetune_size=64, config=config, run_id="ray-test")

        # A point with more jobs than max_pending is skipped, not queued without bound.
        assert ex.submit([dataclasses.replace(job, extra={}) for _ in range(4)]) is False
        assert ex.dropped and ex.pending == 0

        t0 = time.perf_counter()
        assert ex.submit(dataclasses.replace(job, extra={"point": "memory"}))
        assert ex.submit(ProbeJob(snapshot=disk, task=translation_task, finetune_size=64, config=config,
                                  run_id="ray-test", extra={"point": "disk"}))
        assert ex.submit(dataclasses.replace(job, finetune_size=10**6, extra={"point": "bad"}))
        assert time.perf_counter() - t0 < 5  # submitting does not wait for the probes
        assert ex.pending == 3

        records = []
        deadline = time.monotonic() + 75
        while len(records) < 3 and time.monotonic() < deadline:
            records += ex.poll()
            time.sleep(0.2)
        by_point = {r["point"]: r for r in records}
        assert set(by_point) == {"memory", "disk", "bad"}, records
        for name, tokens in (("memory", 1000), ("disk", 2000)):
            r = by_point[name]
            assert r["status"] == "ok", r.get("error")
            assert r["tokens"] == tokens and r["task"] == "en-fr"
            assert r["executor"]["name"] == "ray" and r["executor"]["pid"] != os.getpid()
            assert r["metrics"]["cross_entropy"] > 0 and 0 <= r["metrics"]["bleu"] <= 100
        assert by_point["bad"]["status"] == "failed" and "larger than" in by_point["bad"]["error"]
        assert ex.pending == 0 and ex.poll() == []
        assert not disk.path.exists()  # the snapshot is released once its probe has a record
        assert len(read_history(history)) == 3

        # close() waits up to its timeout, then records what did not finish.
        slow = dataclasses.replace(job, config=dataclasses.replace(config, max_steps=100_000), extra={"point": "slow"})
        assert ex.submit(slow)
        left = ex.close(timeout=1)
        assert [r["point"] for r in left] == ["slow"]
        assert left[0]["status"] == "failed" and "ProbeNotFinished" in left[0]["error"]
    finally:
        if not ex._closing:
            ex.close(timeout=0)
    assert not ex._started_ray and ray.is_initialized()  # joined the running Ray: not ours to stop


def test_callback_takes_the_ray_executor_and_a_sink_by_name(ray_executor_cls, tmp_path, tiny_gpt2, tiny_tokenizer,
                                                           translation_pairs, translation_files):
    """A real Trainer run: ``executor="ray"`` and ``sinks=["jsonl:..."]`` resolve through the plugins."""
    from _probe_training import SEQ_LEN, lm_examples, make_trainer, quick_finetune, small_task

    from transfer_probe import TransferProbeCallback
    from transfer_probe.store.history import read_history

    events = tmp_path / "events.jsonl"
    probe = TransferProbeCallback(
        [small_task(translation_files)], every_tokens=2 * 4 * SEQ_LEN, seq_len=SEQ_LEN, baseline=False,
        finetune=quick_finetune(), executor="ray", executor_options={"num_cpus_per_probe": 1},
        sinks=[f"jsonl:{events}"], end_timeout=120,
    )
    trainer = make_trainer(tiny_gpt2, tiny_tokenizer, lm_examples(tiny_tokenizer, translation_pairs["train"]),
                           tmp_path, callbacks=[probe], max_steps=4)
    trainer.train()
    assert type(probe.executor).__name__ == "RayExecutor" and ray.is_initialized()  # not ours to stop
    recs = [r for r in read_history(tmp_path / "transfer_probe" / "history.jsonl") if r.get("kind") == "probe"]
    assert sorted(r["step"] for r in recs) == [2, 4]
    for r in recs:
        assert r["status"] == "ok", r.get("error")
        assert r["executor"]["name"] == "ray" and r["executor"]["pid"] != os.getpid()
    sent = [json.loads(line) for line in events.read_text().splitlines()]
    assert sorted(e["data"]["step"] for e in sent if e["event"] == "record") == [2, 4]
