"""When to probe: by pre-training tokens seen (D_p), never by wall clock.

Two small pieces, both free of torch:

- :class:`TokenCounter` answers "how many tokens has the run seen at this step?" It uses the
  Trainer's own count, ``state.num_input_tokens_seen``, when the user turned on
  ``TrainingArguments(include_num_input_tokens_seen=...)``; otherwise it computes
  ``steps x per-device batch x gradient accumulation x world size x sequence length`` and says
  once in the ``transfer_probe`` log which of the two it used.
- :class:`ProbeSchedule` answers "is a probe due now?" given the tokens seen and whether the
  Trainer is about to save. Points can be every N tokens, explicit token counts (for example
  :func:`log_points`), and/or every save.

Example::

    >>> s = ProbeSchedule(every_tokens=1000, token_points=log_points(100, 10_000, 3))
    >>> s.token_points
    (100, 1000, 10000)
    >>> s.start(0)
    >>> s.due(150).reasons
    ('token_points',)
    >>> s.due(900) is None
    True
    >>> s.due(1024).reasons
    ('every_tokens', 'token_points')

The schedule's state is the tokens at the last decision; :meth:`ProbeSchedule.state_dict` and
:meth:`ProbeSchedule.load_state_dict` round-trip it through JSON, and :meth:`ProbeSchedule.start`
(called at the start and on resume) marks every point at or below the current tokens as passed.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["ProbeSchedule", "ProbePoint", "TokenCounter", "log_points"]

logger = logging.getLogger("transfer_probe")


def log_points(start: float, stop: float, num: int) -> list[int]:
    """``num`` token counts spaced evenly in log space from ``start`` to ``stop`` (both included).

    Rounded to integers; duplicates (when the range is narrower than ``num`` integers) are dropped.

    >>> log_points(1_000, 1_000_000, 4)
    [1000, 10000, 100000, 1000000]
    """
    if not _is_number(start) or not _is_number(stop) or start <= 0 or stop <= 0:
        raise ValueError(f"log_points needs positive start and stop token counts, got start={start!r}, stop={stop!r}")
    if stop < start:
        raise ValueError(f"log_points: stop={stop!r} is below start={start!r}; give them in increasing order")
    if not isinstance(num, numbers.Integral) or isinstance(num, bool) or num < 1:
        raise ValueError(f"log_points: num must be a positive integer number of points, got {num!r}")
    if num == 1:
        return [int(round(start))]
    lo, hi = math.log(start), math.log(stop)
    out = sorted({int(round(math.exp(lo + (hi - lo) * i / (num - 1)))) for i in range(num)})
    return out


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(float(x))


@dataclass(frozen=True)
class ProbePoint:
    """A probe that is due: the tokens seen now, what made it due, and the points it covers.

    ``covered`` lists the scheduled token counts crossed since the last decision (for
    ``every_tokens``, the newest multiple); more than one means several points fell inside one
    optimizer step and were coalesced into this probe.
    """

    tokens: int
    reasons: tuple[str, ...]
    covered: tuple[int, ...] = ()


class ProbeSchedule:
    """Decide when a probe is due, by tokens seen.

    Args:
        every_tokens: probe each time another ``every_tokens`` pre-training tokens have been seen
            (at the first step at or past each multiple).
        token_points: explicit token counts to probe at (for example ``log_points(1e6, 1e9, 8)``);
            each fires once, at the first step at or past it.
        on_save: also probe at every step where the Trainer saves a checkpoint.

    At least one of them must be set. Several points crossed by one step give one probe.
    """

    def __init__(
        self,
        every_tokens: int | float | None = None,
        token_points: Iterable[int | float] | None = None,
        on_save: bool = False,
    ):
        if every_tokens is not None:
            if not _is_number(every_tokens) or every_tokens <= 0:
                raise ValueError(
                    f"every_tokens must be a positive number of tokens, got {every_tokens!r}; "
                    "for example every_tokens=50_000_000"
                )
            if float(every_tokens) != int(every_tokens):
                raise ValueError(f"every_tokens must be a whole number of tokens, got {every_tokens!r}")
            every_tokens = int(every_tokens)
        points: tuple[int, ...] = ()
        if token_points is not None:
            if isinstance(token_points, (str, bytes)) or not isinstance(token_points, Iterable):
                raise ValueError(f"token_points must be a list of token counts, got {token_points!r}")
            raw = list(token_points)
            if not raw:
                raise ValueError("token_points is empty; give at least one token count or leave it None")
            for p in raw:
                if not _is_number(p) or p <= 0:
                    raise ValueError(
                        f"token_points must be positive token counts, got {p!r} in {raw!r}; "
                        "use log_points(start, stop, num) for log-spaced points"
                    )
            points = tuple(sorted({int(p) for p in raw}))
        if not isinstance(on_save, bool):
            raise ValueError(f"on_save must be True or False, got {on_save!r}")
        if every_tokens is None and not points and not on_save:
            raise ValueError(
                "no probe schedule: set every_tokens=N, token_points=[...] (see log_points) or on_save=True"
            )
        self.every_tokens: int | None = every_tokens
        self.token_points: tuple[int, ...] = points
        self.on_save = on_save
        self.last_tokens: int | None = None
        self.extra_points: list[int] = []  # one-off points added during the run (a first break signal)

    def start(self, tokens: int) -> None:
        """Begin (or resume) at ``tokens`` seen: points at or below it count as passed."""
        self.last_tokens = int(tokens)

    def due(self, tokens: int, *, saving: bool = False) -> ProbePoint | None:
        """Whether a probe is due at ``tokens`` (and the Trainer saving now); advances the schedule."""
        tokens = int(tokens)
        last = self.last_tokens if self.last_tokens is not None else 0
        reasons: list[str] = []
        covered: list[int] = []
        if tokens > last:
            if self.every_tokens is not None:
                n = self.every_tokens
                if tokens // n > last // n:
                    reasons.append("every_tokens")
                    # Only the newest multiple: a step may cross very many when N is small.
                    covered.append(tokens // n * n)
            crossed_points = [p for p in self.token_points if last < p <= tokens]
            if crossed_points:
                reasons.append("token_points")
                covered.extend(crossed_points)
            crossed_extra = [p for p in self.extra_points if p <= tokens]
            if crossed_extra:
                reasons.append("extra")
                covered.extend(crossed_extra)
                self.extra_points = [p for p in self.extra_points if p > tokens]
            self.last_tokens = tokens
        if saving and self.on_save:
            reasons.append("on_save")
        if not reasons:
            return None
        return ProbePoint(tokens=tokens, reasons=tuple(reasons), covered=tuple(sorted(set(covered))))

    def count_between(self, start: int, end: int) -> int | None:
        """How many probe points fall in (start, end] tokens; None when it depends on the run
        (``on_save``)."""
        if self.on_save:
            return None
        n = len([p for p in self.token_points if start < p <= end])
        if self.every_tokens is not None:
            n += max(0, end // self.every_tokens - start // self.every_tokens)
        return n

    def next_point(self, tokens: int) -> int | None:
        """The next scheduled token count after ``tokens`` (every_tokens, token_points or an extra
        point), or None when the schedule has none (on_save only, or past the last point)."""
        cands = [p for p in (*self.token_points, *self.extra_points) if p > tokens]
        if self.every_tokens is not None:
            cands.append((int(tokens) // self.every_tokens + 1) * self.every_tokens)
        return min(cands) if cands else None

    def add_point(self, tokens: int) -> int:
        """Add a one-off probe point (for example between two scheduled ones, to settle a first break
        signal sooner); a point already passed fires at the next step. Returns the point added."""
        tokens = max(int(tokens), (self.last_tokens or 0) + 1)
        if tokens not in self.extra_points:
            self.extra_points = sorted([*self.extra_points, tokens])
        return tokens

    def describe(self) -> str:
        parts = []
        if self.every_tokens is not None:
            parts.append(f"every {self.every_tokens:,} tokens")
        if self.token_points:
            pts = ", ".join(f"{p:.3g}" for p in self.token_points[:6])
            more = f", ... ({len(self.token_points)} points)" if len(self.token_points) > 6 else ""
            parts.append(f"at tokens {pts}{more}")
        if self.on_save:
            parts.append("on every save")
        return "; ".join(parts)

    def state_dict(self) -> dict[str, Any]:
        return {
            "every_tokens": self.every_tokens,
            "token_points": list(self.token_points),
            "on_save": self.on_save,
            "last_tokens": self.last_tokens,
            "extra_points": list(self.extra_points),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_tokens = state.get("last_tokens")
        self.extra_points = sorted(int(p) for p in state.get("extra_points") or [])

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> ProbeSchedule:
        s = cls(state.get("every_tokens"), state.get("token_points") or None, bool(state.get("on_save")))
        s.load_state_dict(state)
        return s


class TokenCounter:
    """Tokens seen (D_p) at a Trainer step.

    Args:
        seq_len: tokens per training example, for the fallback count. When ``None`` it is read
            from the first example of the training dataset (``input_ids`` length; exact for packed
            pre-training data) or else the model config's context length (an upper bound).

    Call :meth:`setup` once at ``on_train_begin``; then :meth:`tokens` at each step.

    >>> from types import SimpleNamespace as NS
    >>> args = NS(include_num_input_tokens_seen="no", per_device_train_batch_size=8,
    ...           gradient_accumulation_steps=2, world_size=1)
    >>> c = TokenCounter(seq_len=128)
    >>> c.setup(args)
    'computed'
    >>> c.tokens(NS(global_step=10, num_input_tokens_seen=0))
    20480
    """

    def __init__(self, seq_len: int | None = None):
        if seq_len is not None and (not isinstance(seq_len, numbers.Integral) or isinstance(seq_len, bool)
                                    or seq_len <= 0):
            raise ValueError(f"seq_len must be a positive integer (tokens per training example), got {seq_len!r}")
        self.seq_len = seq_len
        self.method: str | None = None
        self.tokens_per_step: int | None = None
        self.seq_len_source: str | None = None

    def setup(self, args: Any, *, model: Any = None, train_dataloader: Any = None, announce: bool = True) -> str:
        """Choose the counting method from the training arguments; returns ``"trainer"`` or ``"computed"``."""
        mode = getattr(args, "include_num_input_tokens_seen", "no")
        if mode is True:
            mode = "all"
        if mode in (None, False):
            mode = "no"
        if mode != "no":
            self.method = "trainer"
            if announce:
                logger.info(
                    "transfer_probe | tokens seen (D_p) from state.num_input_tokens_seen "
                    "(include_num_input_tokens_seen=%r)", mode,
                )
            return self.method
        seq_len, source = self.seq_len, "seq_len argument"
        if seq_len is None:
            seq_len, source = _seq_len_from_data(train_dataloader)
        if seq_len is None:
            seq_len, source = _seq_len_from_config(model)
        if seq_len is None:
            raise ValueError(
                "cannot count tokens seen: include_num_input_tokens_seen is off, seq_len was not given, and "
                "neither the training data (input_ids) nor the model config (n_positions / "
                "max_position_embeddings) tells the sequence length. Pass TransferProbeCallback(seq_len=...) "
                "or TrainingArguments(include_num_input_tokens_seen=True)."
            )
        batch = int(getattr(args, "per_device_train_batch_size", 1) or 1)
        accum = int(getattr(args, "gradient_accumulation_steps", 1) or 1)
        world = int(getattr(args, "world_size", 1) or 1)
        self.seq_len_source = source
        self.tokens_per_step = batch * accum * world * int(seq_len)
        self.method = "computed"
        if announce:
            logger.info(
                "transfer_probe | tokens seen (D_p) computed as steps x %d (batch %d x grad accumulation %d x "
                "world size %d x seq_len %d from the %s); set include_num_input_tokens_seen=True in "
                "TrainingArguments for the exact count",
                self.tokens_per_step, batch, accum, world, seq_len, source,
            )
        return self.method

    def tokens(self, state: Any) -> int:
        if self.method is None:
            raise RuntimeError("TokenCounter.setup(args) must be called before tokens()")
        if self.method == "trainer":
            return int(getattr(state, "num_input_tokens_seen", 0) or 0)
        return int(state.global_step) * int(self.tokens_per_step)

    def describe(self) -> dict[str, Any]:
        return {"method": self.method, "tokens_per_step": self.tokens_per_step, "seq_len_source": self.seq_len_source}


def _seq_len_from_data(train_dataloader: Any) -> tuple[int | None, str | None]:
    # Index the dataset rather than iterating the loader: iterating would draw from the sampler's
    # RNG and change the outer run.
    dataset = getattr(train_dataloader, "dataset", None)
    if dataset is None or not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        return None, None
    try:
        if len(dataset) == 0:
            return None, None
        example = dataset[0]
        ids = example.get("input_ids") if isinstance(example, dict) else None
        if ids is None:
            return None, None
        n = len(ids)
        return (n, "first training example") if n > 0 else (None, None)
    except Exception:  # any dataset that cannot be indexed cheaply: fall back to the config
        return None, None


def _seq_len_from_config(model: Any) -> tuple[int | None, str | None]:
    config = getattr(model, "config", None)
    for name in ("n_positions", "max_position_embeddings", "n_ctx", "max_seq_len"):
        v = getattr(config, name, None)
        if isinstance(v, int) and v > 0:
            return v, f"model config ({name}, an upper bound)"
    return None, None
