"""Scaling laws with honest uncertainty: LogLaw, PowerLaw, TransferLaw, ChinchillaLaw.

Every law has ``.fit(x, y, sigma=None, **options) -> FitResult``::

    >>> from transfer_probe.laws import PowerLaw
    >>> tokens = [1e6, 2e6, 5e6, 1e7, 2e7, 5e7, 1e8]
    >>> loss = [2.0 + 60 * t ** -0.3 for t in tokens]
    >>> fit = PowerLaw().fit(tokens, loss)
    >>> fit.ok, round(fit.params["alpha"], 2)
    (True, 0.3)
    >>> mean, low, high = fit.predict(1e9)            # 90% prediction interval
    >>> fit.inverse(2.5).tokens                       # tokens needed for loss 2.5  # doctest: +SKIP

How the fits are made (Chinchilla approach 3, Isik et al. 2024):

- residuals are taken on log values (``log f(x) - log y``, divided by the relative error ``sigma / y``
  when per-point errors are given) under a Huber loss (delta 0.1 for BLEU-type scores, 1e-3 for
  losses), minimized with lmfit's ``least_squares`` method (``loss="huber"``, ``f_scale=delta``), which
  is the same objective as the papers' Huber-on-log-values minimized with L-BFGS;
- parameters are reparameterized so the literal formulas cannot produce logs of negatives: ``x`` is
  rescaled by its smallest value ``x0`` (so ``log(x / x0) >= 0``), amplitudes are fitted as logs, and
  every parameter is bounded;
- starting points come from a grid scored in one vectorized pass plus data-driven guesses (for the
  power law: E slightly below min(y), then a line through log(y - E) against log x); the best few
  are polished and the best is kept.

Uncertainty: the parameter covariance is ``tau^2 (J^T J)^-1`` with ``J`` the Jacobian of the
*unweighted-by-Huber* standardized log residuals at the optimum (scipy's robust-loss Jacobian is
zeroed for points in the linear Huber regime, which makes lmfit's own covariance meaningless for
delta=1e-3) and ``tau^2`` the residual mean square (the reduced chi-square when measured errors are
given, as lmfit's ``scale_covar``; ``min_noise_scale=1`` floors it at 1).
Prediction intervals add the observation noise to the parameter uncertainty in log space and use
Student-t quantiles with ``n - p`` degrees of freedom. Where the covariance is not sound (singular,
non-finite) or when asked (``uncertainty="bootstrap"``; the default for ``ChinchillaLaw``) the
parameter part comes from a bootstrap instead.

Honesty: ``FitResult.ok`` is False, and ``FitResult.why`` says what to do, when there are too few
points, the x range spans too few decades, the optimizer did not converge, a parameter sits at a
bound, the covariance is singular, or the interval just beyond the data explodes. ``predict`` and
``inverse`` on a fit that is not ok return NaN (never a number that looks confident) unless called
with ``force=True``.
"""

from __future__ import annotations

from transfer_probe.laws.chinchilla import ChinchillaLaw
from transfer_probe.laws.registry import LAWS, get_law, register_law
from transfer_probe.laws.result import FitResult, Inverse
from transfer_probe.laws.rows import fit_rows
from transfer_probe.laws.token_laws import LogLaw, PowerLaw, SaturatingLaw
from transfer_probe.laws.transfer import TransferLaw

__all__ = [
    "LogLaw",
    "PowerLaw",
    "SaturatingLaw",
    "TransferLaw",
    "ChinchillaLaw",
    "FitResult",
    "Inverse",
    "LAWS",
    "get_law",
    "register_law",
    "fit_rows",
]
