"""Corpus chrF (sacrebleu) with its signature and a bootstrap interval over sentences, as an
``evaluate`` metric module that loads offline from this local path::

    from transfer_probe.metrics import load_metric
    chrf = load_metric("chrf")
    chrf.compute(predictions=["deux trois"], references=["deux trois"], bootstrap=200)
    # {"score": 100.0, "ci": [100.0, 100.0], "signature": "nrefs:1|case:mixed|...", ...}
"""

import datasets
import evaluate

from transfer_probe.metrics import corpus_chrf

_DESCRIPTION = "Corpus chrF computed with sacrebleu (one reference per sentence); transfer_probe's chrF."
_KWARGS_DESCRIPTION = """
Args:
    predictions: list of hypothesis strings.
    references: list of reference strings (one per prediction).
    bootstrap: number of resamples of sentences for the interval (0: none).
    seed: bootstrap seed. interval: interval width (default 0.9).
    Any other keyword is passed to sacrebleu.metrics.CHRF (e.g. word_order=2 for chrF++).
Returns:
    score (float, 0-100), ci ([low, high] or None), signature (str).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Chrf(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Popovic, 2015. chrF: character n-gram F-score for automatic MT evaluation.",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
            reference_urls=["https://github.com/mjpost/sacrebleu"],
        )

    def _compute(self, predictions, references, bootstrap=0, seed=0, interval=0.9, **chrf_args):
        res = corpus_chrf(predictions, references, bootstrap=bootstrap, seed=seed, interval=interval, **chrf_args)
        return {"score": res.score, "ci": list(res.ci) if res.ci else None, "signature": res.signature}
