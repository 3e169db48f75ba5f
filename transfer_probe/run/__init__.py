"""Running probes: a snapshot of the model at a probe point (``snapshot``), one probe job -- fine-tune
a copy, measure (``probe``), and the executors that run jobs inline or in a background process
(``executors``). Knows the Trainer and torch; knows no laws or verdicts."""
