"""Running probes: a snapshot of the model at a probe point (``snapshot/``: the in-memory capture,
the directory written or linked from a checkpoint, the run's locked folder; ``snapshot_writer``
writes in-memory snapshots in a background thread), one probe job -- fine-tune a copy, measure
(``probe``, with ``config`` for ``FinetuneConfig``, ``preflight`` for the checks before any training
step, ``state`` for the isolated RNG/accelerate state, ``finetune`` and ``generation``), and the
executors that run jobs inline or in a background process (``executors/``). Knows torch; knows no
laws or verdicts."""
