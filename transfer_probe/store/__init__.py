"""The durable record of a run: the append-only JSON Lines history (``history``: writer, readers,
aggregation of repeats into probe points, tables in) on whole-line writes (``jsonl``). Knows records,
not laws or verdicts."""
