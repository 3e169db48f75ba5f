""":class:`TransferLaw`: effective data transferred (Hernandez et al. 2021)."""

from __future__ import annotations

import math

import numpy as np

from transfer_probe.laws.chinchilla import ChinchillaLaw
from transfer_probe.laws.engine import _Law
from transfer_probe.laws.result import FitResult
from transfer_probe.laws.token_laws import PowerLaw


class TransferLaw(_Law):
    """Effective data transferred by pre-training (Hernandez et al. 2021): ``D_T = k * D_F**alpha * N**beta``.

    ``x`` is the pair ``(D_F, N)`` (fine-tuning data size, model parameters), ``y`` the transferred data
    ``D_T = D_E - D_F``, where ``D_E`` is the amount of fine-tuning data a model trained from scratch
    would need to reach the pre-trained model's loss. Fitted by least squares in log space (the law
    is linear there). With a single model size ``N`` the exponent ``beta`` cannot be identified: it
    is held at ``beta_fixed`` (default Hernandez et al.'s text -> Python value 0.38, noted) and ``k``
    is conditional on it.

    :meth:`fit_curves` does the whole analysis from loss curves: reads ``D_E`` off the no-pretraining
    baseline by interpolation, flags ossification (fine-tuned worse than from scratch), fits, and
    reports the data multiplier ``(D_F + D_T) / D_F``.

    >>> import numpy as np
    >>> df, n = np.meshgrid(np.geomspace(1e4, 1e7, 6), [1e7, 1e8, 1e9])
    >>> dt = 1.9e4 * df ** 0.18 * n ** 0.38
    >>> fit = TransferLaw().fit((df.ravel(), n.ravel()), dt.ravel())
    >>> round(fit.params["alpha"], 2), round(fit.params["beta"], 2)
    (0.18, 0.38)
    """

    name = "transfer"
    formula = "D_T = k * D_F**alpha * N**beta"
    more_points_hint = "fine-tune on more data sizes"
    param_names = ("k", "alpha", "beta")
    internal_names = ("log_k", "alpha", "beta")
    public_exprs = {"k": "exp(min(log_k, 709.0))"}
    huber_delta = None
    ndim = 2
    direction = 0

    def _extra_options(self) -> dict:
        return {"beta_fixed": 0.38}

    _as_x = ChinchillaLaw._as_x

    def fit(self, x, y, sigma=None, **options) -> FitResult:
        if options:
            return type(self)(**{**self.options, **options}).fit(x, y, sigma)
        X, _ = self._as_x(x)
        finite_n = X[1][np.isfinite(X[1]) & (X[1] > 0)]
        if np.unique(finite_n).size < 2:
            law = type(self)(**self.options)
            law.internal_names = ("log_k", "alpha")
            res = _Law.fit(law, x, y, sigma)
            res.notes.append(f"a single model size: beta is held at {self.options['beta_fixed']:g} (Hernandez et al. "
                             f"2021, text -> Python) and k is conditional on it; add model sizes to fit beta")
            return res
        return _Law.fit(self, x, y, sigma)

    def _fixed(self) -> bool:
        return len(self.internal_names) == 2

    def _theta3(self, theta):
        theta = np.asarray(theta, dtype=float)
        if not self._fixed():
            return theta
        b = self.options["beta_fixed"]
        if theta.ndim == 2:
            return np.column_stack([theta, np.full(theta.shape[0], b)])
        return np.array([theta[0], theta[1], b])

    def _logf(self, theta, X, ref):
        t = self._theta3(theta)
        lF, lN = np.log(X[0]), np.log(X[1])
        if t.ndim == 2:
            return t[:, 0:1] + t[:, 1:2] * lF[None, :] + t[:, 2:3] * lN[None, :]
        return t[0] + t[1] * lF + t[2] * lN

    def _grad(self, theta, X, ref):
        lF, lN = np.log(X[0]), np.log(X[1])
        cols = [np.ones_like(lF), lF] + ([] if self._fixed() else [lN])
        return np.column_stack(cols)

    def _bounds(self, X, y, ref):
        lo, hi = np.array([-100.0, -5.0, -5.0]), np.array([100.0, 5.0, 5.0])
        p = len(self.internal_names)
        return lo[:p], hi[:p]

    def _starts(self, X, y, ref):
        # the law is linear in log space: ordinary least squares is the start (and nearly the answer)
        lF, lN = np.log(X[0]), np.log(X[1])
        ly = np.log(y)
        if self._fixed():
            M = np.column_stack([np.ones_like(lF), lF])
            ly = ly - self.options["beta_fixed"] * lN
        else:
            M = np.column_stack([np.ones_like(lF), lF, lN])
        sol, *_ = np.linalg.lstsq(M, ly, rcond=None)
        return sol[None, :]

    def _constants(self, ref) -> dict[str, float]:
        return {"beta": self.options["beta_fixed"]} if self._fixed() else {}

    def _span_problems(self, X) -> list[str]:
        return _Law._span_problems(self, X[0])

    def _x_range(self, X) -> tuple:
        return ((float(np.min(X[0])), float(np.max(X[0]))), (float(np.min(X[1])), float(np.max(X[1]))))

    def _explode_x(self, X) -> np.ndarray:
        return np.array([[2.0 * float(np.max(X[0]))], [float(np.max(X[1]))]])

    @staticmethod
    def effective_data(finetune_sizes, pretrained_loss, baseline_sizes, baseline_loss) -> dict:
        """``D_E``, ``D_T = D_E - D_F`` and ossification for pre-trained losses against one baseline curve.

        ``baseline_sizes`` / ``baseline_loss``: the from-scratch model's loss after fine-tuning on each
        amount of data (same model size). ``D_E`` is where that curve reaches the pre-trained loss,
        by linear interpolation in (log D, loss) after making the curve monotone; beyond the largest
        baseline size a power law fitted to the baseline extrapolates it (``extrapolated`` True), or
        ``D_E`` is NaN when that fit is not ok. ``ossified`` marks points where the pre-trained model is
        worse than the from-scratch one at the same D_F (D_T <= 0: pre-training hurt).
        """
        df = np.atleast_1d(np.asarray(finetune_sizes, dtype=float))
        lp = np.atleast_1d(np.asarray(pretrained_loss, dtype=float))
        bs = np.asarray(baseline_sizes, dtype=float)
        bl = np.asarray(baseline_loss, dtype=float)
        if df.shape != lp.shape:
            raise ValueError(f"finetune_sizes ({df.shape[0]}) and pretrained_loss ({lp.shape[0]}) differ in length")
        if bs.shape != bl.shape or bs.size < 2:
            raise ValueError(f"the baseline needs at least 2 (size, loss) points of equal length; got {bs.size} sizes "
                             f"and {bl.size} losses")
        order = np.argsort(bs)
        bs, bl = bs[order], bl[order]
        mono = np.minimum.accumulate(bl)  # a from-scratch curve cannot get worse with more data
        lbs = np.log(bs)
        de = np.full(df.shape, np.nan)
        extrap = np.zeros(df.shape, bool)
        base_at_df = np.interp(np.log(df), lbs, mono)
        power = None
        for i, loss in enumerate(lp):
            if loss >= mono[0]:
                de[i] = bs[0] if loss == mono[0] else np.nan  # worse than the smallest baseline point
            elif loss >= mono[-1]:
                # interp needs increasing abscissae: walk the curve reversed (loss increases)
                de[i] = math.exp(float(np.interp(loss, mono[::-1], lbs[::-1])))
            else:
                if power is None:
                    power = PowerLaw(min_decades=0.0).fit(bs, bl) if bs.size >= 4 else False
                if power and power.ok:
                    inv = power.inverse(loss)
                    if inv.reachable:
                        de[i] = inv.tokens
                        extrap[i] = True
        dt = de - df
        ossified = lp > base_at_df
        return {"finetune_size": df, "effective": de, "transferred": dt, "ossified": ossified,
                "extrapolated": extrap, "multiplier": de / df}

    def fit_curves(self, finetune_sizes, pretrained_loss, baseline_sizes, baseline_loss, n_params,
                   baseline_params=None, **options) -> FitResult:
        """The Hernandez et al. analysis from loss curves; returns the fit of ``D_T = k D_F**alpha N**beta``.

        ``finetune_sizes``, ``pretrained_loss``, ``n_params``: one entry per pre-trained model
        fine-tuned on ``D_F`` examples (``n_params`` may be a scalar). The baseline arrays hold the
        from-scratch curves; ``baseline_params`` (same length, default: all ``n_params``) says which
        model size each baseline point belongs to. ``FitResult.extra`` holds per point
        ``finetune_size``, ``params``, ``effective``, ``transferred``, ``multiplier``, ``ossified``,
        ``extrapolated``; ossified points (and points the baseline cannot place) are left out of the
        fit and named in ``notes``.
        """
        df = np.atleast_1d(np.asarray(finetune_sizes, dtype=float))
        lp = np.atleast_1d(np.asarray(pretrained_loss, dtype=float))
        npar = np.broadcast_to(np.asarray(n_params, dtype=float), df.shape).copy()
        bs = np.asarray(baseline_sizes, dtype=float)
        bl = np.asarray(baseline_loss, dtype=float)
        bp = (np.broadcast_to(np.asarray(baseline_params, dtype=float), bs.shape) if baseline_params is not None
              else np.full(bs.shape, npar[0]))
        if baseline_params is None and np.unique(npar).size > 1:
            raise ValueError("several model sizes in n_params: give baseline_params to say which baseline curve "
                             "belongs to which size")
        keys = ("finetune_size", "effective", "transferred", "ossified", "extrapolated", "multiplier")
        out = {k: np.full(df.shape, np.nan if k not in ("ossified", "extrapolated") else False,
                          dtype=float if k not in ("ossified", "extrapolated") else bool) for k in keys}
        for n_ in np.unique(npar):
            sel = npar == n_
            bsel = bp == n_
            if bsel.sum() < 2:
                raise ValueError(f"no baseline curve (>= 2 points) for model size {n_:g}; baseline sizes given for "
                                 f"{sorted(set(bp.tolist()))}")
            part = self.effective_data(df[sel], lp[sel], bs[bsel], bl[bsel])
            for k in keys:
                out[k][sel] = part[k]
        use = np.isfinite(out["transferred"]) & (out["transferred"] > 0) & ~out["ossified"]
        res = self.fit((df[use], npar[use]), out["transferred"][use], **options)
        oss = df[out["ossified"]]
        if oss.size:
            res.notes.append(f"ossification: at D_F = {', '.join(f'{v:g}' for v in oss)} the pre-trained model is "
                             f"worse than the one trained from scratch; those points are left out")
        lost = df[~use & ~out["ossified"]]
        if lost.size:
            res.notes.append(f"D_F = {', '.join(f'{v:g}' for v in lost)}: the baseline curve cannot place the "
                             f"pre-trained loss (beyond its range and not extrapolable); left out")
        res.extra = {**{k: out[k].tolist() for k in keys}, "params": npar.tolist()}
        return res
