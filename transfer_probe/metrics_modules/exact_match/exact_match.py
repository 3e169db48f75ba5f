"""Exact match (percentage of predictions equal to their reference after stripping outer whitespace)
with a bootstrap interval, as an ``evaluate`` metric module that loads offline from this local path::

    from transfer_probe.metrics import load_metric
    load_metric("exact_match").compute(predictions=["a", "b"], references=["a", "c"])["score"]  # 50.0
"""

import datasets
import evaluate

from transfer_probe.metrics import exact_match

_DESCRIPTION = "Exact match after stripping outer whitespace, in percent; transfer_probe's exact match."
_KWARGS_DESCRIPTION = """
Args:
    predictions: list of strings. references: list of strings (one per prediction).
    bootstrap: resamples for the interval (0: none). seed, interval: bootstrap seed and width.
Returns:
    score (float, 0-100), ci ([low, high] or None), signature (str).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ExactMatch(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references, bootstrap=0, seed=0, interval=0.9):
        res = exact_match(predictions, references, bootstrap=bootstrap, seed=seed, interval=interval)
        return {"score": res.score, "ci": list(res.ci) if res.ci else None, "signature": res.signature}
