"""What sizes a demo run, and what it costs: :class:`DemoSettings`, the default and quick settings,
the time the README and ``--help`` state, and the estimate printed at the start."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class DemoSettings:
    """Everything that sizes a demo run (see ``experiments/README.md`` for why these values)."""

    # The three stories: aligned, a mid-run mixture shift (the paper's misalignment case), no transfer.
    corpora: tuple[str, ...] = ("bilingual", "shift-fr", "english")
    # Pre-training: GPT-2, 2 layers, width 128 (0.4M non-embedding, 0.7M parameters), 128-token blocks.
    n_layer: int = 2
    n_embd: int = 128
    n_head: int = 4
    vocab_size: int = 2048
    block_size: int = 128
    batch_size: int = 16
    # 800 steps: an aligned run read in order climbs steadily from about step 180 to 800
    # (../shared/SCIENCE.md, "A mid-run mixture shift").
    max_steps: int = 800
    learning_rate: float = 1e-3
    lr_scheduler_type: str = "constant_with_warmup"  # probes are not taken mid-cosine
    warmup_steps: int = 20
    # Probe points, in pre-training steps (x batch x block = tokens): log-spaced, 10 points over 1.3
    # decades. A trusted prediction needs 6 points after the warm-up (4 to fit, 2 to backtest) before
    # the one that checks it.
    probe_steps: tuple[int, ...] = (40, 56, 78, 110, 155, 217, 304, 427, 599, 800)
    shift_at: float = 0.5  # share of max_steps read before ``shift-fr`` switches to French-only text
    # A user who changes the mixture mid-run probes more often after the change: the log-spaced points
    # leave only two probes after the shift, too few to confirm a fall at this noise (a 5 SD fall over
    # two probes stayed unconfirmed, experiments/README.md). These fill the gaps to one every ~67 steps.
    shift_probe_steps: tuple[int, ...] = (467, 533, 667, 733)
    # Downstream task and probe budget.
    n_train: int = 1000
    n_test: int = 200
    # D_f values probed (the summary table reads the first). Two sizes give the "data transferred"
    # estimate; they double a run's probe cost, so only the runs in ``all_sizes_for`` probe both
    # (None: every run). D_f = 200 costs what 50 does (the budget is in steps) but gives a lower
    # random-init baseline and steadier verdicts (benchmarks/README.md, "Repeats").
    finetune_sizes: tuple[int, ...] = (200, 800)
    all_sizes_for: tuple[str, ...] | None = ("bilingual",)
    finetune_steps: int = 60
    # 3e-4: random init stays poor (BLEU 2-4) in 60 steps, so transfer shows; 1e-3 lets random
    # init reach BLEU ~17 and makes pretrained probes noisier (experiments/README.md).
    finetune_lr: float = 3e-4
    repeats: int = 2
    # Cap (fine-tunes over a run) for re-measuring a borderline warning before it is raised.
    adaptive_repeats: int = 4
    bootstrap: int = 200
    pair_fraction: float = 0.5
    budget_steps: int = 800  # the planned pre-training: the aligned run's last probe checks the prediction
    # What a user would set: a run stops when its verdict says stop (the misaligned and no-transfer
    # runs end early; their compute is what the tool saves).
    stop_on: tuple[str, ...] = ("stop",)
    workers: int = 2  # runs in parallel, one thread each (the demo is sized for 2 cores)

    def tokens(self, steps: int) -> int:
        return int(steps) * self.batch_size * self.block_size

    def steps_for(self, corpus: str) -> tuple[int, ...]:
        """The probe steps of one run: ``probe_steps``, and ``shift_probe_steps`` where the corpus shifts."""
        from transfer_probe import demodata

        shifts = len(demodata.corpus_phases(corpus, self.shift_at)) > 1
        return tuple(sorted(set(self.probe_steps) | (set(self.shift_probe_steps) if shifts else set())))

    def sizes_for(self, corpus: str) -> tuple[int, ...]:
        if self.all_sizes_for is None or corpus in self.all_sizes_for:
            return self.finetune_sizes
        return self.finetune_sizes[:1]


DEFAULT_SETTINGS = DemoSettings()
QUICK_SETTINGS = replace(
    DEFAULT_SETTINGS, corpora=("bilingual", "english"), max_steps=200, probe_steps=(15, 25, 40, 70, 120, 200),
    n_test=100, repeats=1, adaptive_repeats=2, bootstrap=100, finetune_sizes=(200,), budget_steps=2000,
    stop_on=(), shift_probe_steps=(),
)

# What README.md and --help say; measured (experiments/README.md, "The three-story demo").
DEMO_TIME = ("Under 6 minutes on 2 idle CPU cores (measured: 5.7 min, 10.7 min of CPU in all; the "
             "no-transfer run stops early), longer on a busy machine; --quick about 2.")
# The default demo's measured wall time on 2 idle cores (experiments/README.md), printed at the start.
MEASURED_SECONDS = {"default": 342.0}

# Measured costs at one thread on an idle core (experiments/README.md, "The demo's default run"):
# they make the estimate printed at the start.
_SECONDS_PER_STEP = 0.14  # pre-training step, with its snapshots and verdicts
_SECONDS_PER_FINETUNE = 4.0  # one probe: fine-tune, generate, score
_SECONDS_SETUP = 20.0


def estimate_seconds(s: DemoSettings) -> tuple[float, float]:
    """(CPU seconds of the whole demo, wall seconds on ``s.workers`` idle cores), from measured costs.

    An upper bound when runs stop early (``stop_on``). Runs go to the workers longest first."""
    costs = []
    for c in s.corpora:
        finetunes = (len(s.steps_for(c)) + 1) * s.repeats * len(s.sizes_for(c)) + s.adaptive_repeats
        costs.append(s.max_steps * _SECONDS_PER_STEP + finetunes * _SECONDS_PER_FINETUNE)
    loads = [0.0] * max(1, min(s.workers, len(costs)))
    for c in sorted(costs, reverse=True):
        loads[loads.index(min(loads))] += c
    return sum(costs) + _SECONDS_SETUP, max(loads) + _SECONDS_SETUP
