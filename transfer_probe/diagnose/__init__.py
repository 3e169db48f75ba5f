"""Verdicts: is the pre-training run aligned with the downstream task, has the score's law broken?

One (task, D_f) group of history records goes in, a :class:`Verdict` comes out::

    >>> from transfer_probe.diagnose import diagnose, format_verdict
    >>> v = diagnose(records, budget_tokens=2e10, target=25.0)       # doctest: +SKIP
    >>> v.status, v.recommendation                                    # doctest: +SKIP
    ('aligned', 'continue')

The parts: ``verdict`` (what comes out), ``noise`` (how noisy each point is), ``tests`` (the
model-free, calibrated statistical tests), ``fits`` (the laws as the rules use them), ``rules``
(the order in which they are applied; its docstring is the summary), ``api`` (the entry points).
Statuses: ``insufficient_data``, ``aligned``, ``suspected`` (a first signal: probe again),
``misaligned`` and ``law_break`` (a confirmed break, standing until the evidence reverses),
``no_transfer``.
"""

from transfer_probe.diagnose.api import diagnose, diagnose_all, diagnose_rows
from transfer_probe.diagnose.verdict import (
    DEFAULT_THRESHOLDS,
    RECOMMENDATIONS,
    STATUSES,
    WARNING_STATUSES,
    MissingColumnError,
    Thresholds,
    Verdict,
    VerdictTracker,
    with_thresholds,
)
from transfer_probe.text import format_verdict

__all__ = [
    "STATUSES",
    "WARNING_STATUSES",
    "RECOMMENDATIONS",
    "Thresholds",
    "DEFAULT_THRESHOLDS",
    "Verdict",
    "diagnose",
    "diagnose_all",
    "diagnose_rows",
    "format_verdict",
    "VerdictTracker",
    "MissingColumnError",
    "with_thresholds",
]
