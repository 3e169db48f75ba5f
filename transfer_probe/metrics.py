"""Downstream metrics with their signatures and bootstrap intervals over test sentences.

- corpus BLEU and chrF with sacrebleu (the signature string of the settings travels with each score),
- exact match,
- teacher-forced cross-entropy on target tokens (token-weighted mean, nats),
- a bootstrap over test sentences (90% percentile intervals by default) for each of them. For BLEU and
  chrF a resample's corpus score is computed from the summed per-sentence sufficient statistics
  sacrebleu extracts once, so a bootstrap of 1000 resamples costs milliseconds, not 1000 re-scorings.

The same metrics are ``evaluate`` modules that load offline from inside the package::

    from transfer_probe.metrics import load_metric
    bleu = load_metric("bleu")          # evaluate.load(<package>/metrics_modules/bleu)
    bleu.compute(predictions=["un deux"], references=["un deux"])["score"]

Only numpy and sacrebleu are imported at module level; torch only inside :func:`target_cross_entropy`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "MetricResult",
    "make_bleu",
    "make_chrf",
    "corpus_bleu",
    "corpus_chrf",
    "exact_match",
    "bootstrap_ratio",
    "bootstrap_interval",
    "target_cross_entropy",
    "compute_extra_metric",
    "picklable_metric",
    "metric_module_path",
    "load_metric",
    "BOOTSTRAP_SIGNATURE",
    "DEFAULT_INTERVAL",
]

DEFAULT_INTERVAL = 0.9
# How intervals are made; recorded once per record under metric_signatures["bootstrap"].
BOOTSTRAP_SIGNATURE = "resample:test-sentences|method:percentile|interval:{interval}|n:{n}|seed:{seed}"

_MODULES_DIR = Path(__file__).resolve().parent / "metrics_modules"


@dataclass(frozen=True)
class MetricResult:
    """One corpus-level score, its bootstrap interval (``None`` without bootstrap) and signature."""

    score: float
    ci: tuple[float, float] | None = None
    signature: str = ""


# ---------------------------------------------------------------------------------------------
# Bootstrap machinery

def _resample_counts(n: int, resamples: int, seed: int) -> np.ndarray:
    """How often each of ``n`` sentences is drawn in each resample: a ``(resamples, n)`` matrix.

    Drawing counts instead of index lists lets every resample's sums be one matrix product."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples)


def bootstrap_interval(values: np.ndarray, point: float, interval: float = DEFAULT_INTERVAL) -> tuple[float, float]:
    """Percentile interval of bootstrap ``values``, widened to contain ``point`` if it falls outside
    (a skewed bootstrap distribution of a ratio statistic can sit just beside its point estimate)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (float("nan"), float("nan"))
    alpha = (1.0 - interval) / 2.0
    lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
    return (float(min(lo, point)), float(max(hi, point)))


def bootstrap_ratio(numerators: Sequence[float], denominators: Sequence[float], *, bootstrap: int = 0,
                    seed: int = 0, interval: float = DEFAULT_INTERVAL) -> MetricResult:
    """``sum(numerators) / sum(denominators)`` with a bootstrap over sentences.

    With per-sentence NLL sums and target-token counts this is the token-weighted cross-entropy;
    with 0/1 values and ones it is a mean.

    >>> bootstrap_ratio([2.0, 4.0], [1, 3]).score
    1.5
    """
    num = np.asarray(numerators, dtype=float)
    den = np.asarray(denominators, dtype=float)
    if num.shape != den.shape or num.ndim != 1 or num.size == 0:
        raise ValueError(f"bootstrap_ratio needs two equal-length non-empty 1-d sequences, got {num.shape} and {den.shape}")
    total = den.sum()
    point = float(num.sum() / total) if total > 0 else float("nan")
    if bootstrap <= 0:
        return MetricResult(point)
    counts = _resample_counts(num.size, bootstrap, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        vals = (counts @ num) / (counts @ den)
    return MetricResult(point, bootstrap_interval(vals, point, interval))


# ---------------------------------------------------------------------------------------------
# sacrebleu metrics

def make_bleu(**kwargs: Any):
    """A sacrebleu ``BLEU`` with the given settings (``ValueError`` on unknown ones)."""
    from sacrebleu.metrics import BLEU

    try:
        return BLEU(**kwargs)
    except TypeError as err:
        raise ValueError(f"bad BLEU settings {kwargs}: {err}") from None


def make_chrf(**kwargs: Any):
    """A sacrebleu ``CHRF`` with the given settings (``word_order=2`` gives chrF++)."""
    from sacrebleu.metrics import CHRF

    try:
        return CHRF(**kwargs)
    except TypeError as err:
        raise ValueError(f"bad chrF settings {kwargs}: {err}") from None


def _check_pairs(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[list[str], list[str]]:
    hyps = [str(h) for h in hypotheses]
    refs = [str(r) for r in references]
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses for {len(refs)} references; give one hypothesis per reference")
    if not refs:
        raise ValueError("no references: metrics need at least one test sentence")
    return hyps, refs


def _sacrebleu_score(metric, hypotheses, references, bootstrap, seed, interval) -> MetricResult:
    hyps, refs = _check_pairs(hypotheses, references)
    # Per-sentence sufficient statistics, extracted once (the same private API sacrebleu's own
    # paired bootstrap uses); the corpus score is a function of their column sums.
    stats = np.asarray(metric._extract_corpus_statistics(hyps, [refs]), dtype=float)
    point = float(metric._compute_score_from_stats(_as_int_list(stats.sum(axis=0))).score)
    signature = str(metric.get_signature())
    if bootstrap <= 0:
        return MetricResult(point, None, signature)
    sums = _resample_counts(len(hyps), bootstrap, seed) @ stats
    vals = np.array([metric._compute_score_from_stats(_as_int_list(row)).score for row in sums])
    return MetricResult(point, bootstrap_interval(vals, point, interval), signature)


def _as_int_list(row: np.ndarray) -> list:
    # compute_bleu may modify its lists in place (add-k smoothing): always pass fresh ones.
    return [int(round(x)) for x in row]


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str], *, bootstrap: int = 0, seed: int = 0,
                interval: float = DEFAULT_INTERVAL, **bleu_args: Any) -> MetricResult:
    """Corpus BLEU (sacrebleu, one reference per sentence) with an optional bootstrap interval.

    >>> r = corpus_bleu(["le chat est noir"], ["le chat est noir"])
    >>> r.score, r.signature.startswith("nrefs:1")
    (100.00000000000004, True)
    """
    return _sacrebleu_score(make_bleu(**bleu_args), hypotheses, references, bootstrap, seed, interval)


def corpus_chrf(hypotheses: Sequence[str], references: Sequence[str], *, bootstrap: int = 0, seed: int = 0,
                interval: float = DEFAULT_INTERVAL, **chrf_args: Any) -> MetricResult:
    """Corpus chrF (sacrebleu) with an optional bootstrap interval."""
    return _sacrebleu_score(make_chrf(**chrf_args), hypotheses, references, bootstrap, seed, interval)


def exact_match(hypotheses: Sequence[str], references: Sequence[str], *, bootstrap: int = 0, seed: int = 0,
                interval: float = DEFAULT_INTERVAL) -> MetricResult:
    """Percentage of hypotheses equal to their reference after stripping outer whitespace."""
    hyps, refs = _check_pairs(hypotheses, references)
    hits = [float(h.strip() == r.strip()) * 100.0 for h, r in zip(hyps, refs, strict=True)]
    res = bootstrap_ratio(hits, [1.0] * len(hits), bootstrap=bootstrap, seed=seed, interval=interval)
    return MetricResult(res.score, res.ci, "exact_match|strip:yes|case:mixed")


# ---------------------------------------------------------------------------------------------
# Cross-entropy (needs the model)

def target_cross_entropy(model: Any, features: Sequence[dict], *, pad_token_id: int, batch_size: int = 64,
                         is_encoder_decoder: bool | None = None, decoder_start_token_id: int | None = None,
                         device: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Teacher-forced negative log-likelihood of the target tokens of each example.

    ``features`` are dicts with ``input_ids`` and ``labels`` (``-100`` where no loss is taken).
    Returns ``(nll_sums, token_counts)`` per example, in nats; the token-weighted cross-entropy is
    ``nll_sums.sum() / token_counts.sum()`` (see :func:`bootstrap_ratio`). Batches are formed from
    length-sorted examples so little compute goes to padding; the model's train/eval mode and the
    grad mode are restored afterwards.
    """
    import torch

    if is_encoder_decoder is None:
        is_encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
    if is_encoder_decoder and decoder_start_token_id is None:
        decoder_start_token_id = getattr(model.config, "decoder_start_token_id", None)
        if decoder_start_token_id is None:
            decoder_start_token_id = pad_token_id
    device = device or next(model.parameters()).device
    n = len(features)
    nll = np.zeros(n)
    cnt = np.zeros(n)
    if n == 0:
        return nll, cnt
    order = sorted(range(n), key=lambda i: (len(features[i]["input_ids"]), len(features[i]["labels"])))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for b in range(0, n, batch_size):
                idx = order[b: b + batch_size]
                feats = [features[i] for i in idx]
                ids, mask = _pad([f["input_ids"] for f in feats], pad_token_id, device)
                labels, _ = _pad([f["labels"] for f in feats], -100, device)
                if is_encoder_decoder:
                    dec = [[decoder_start_token_id] + [t if t != -100 else pad_token_id for t in f["labels"][:-1]]
                           for f in feats]
                    dec_ids, dec_mask = _pad(dec, pad_token_id, device)
                    logits = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec_ids,
                                   decoder_attention_mask=dec_mask).logits
                    target = labels
                else:
                    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
                    target = labels[:, 1:]
                valid = target != -100
                logp = torch.log_softmax(logits.float(), dim=-1)
                tok = -logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1) * valid
                nll[idx] = tok.sum(-1).double().cpu().numpy()
                cnt[idx] = valid.sum(-1).cpu().numpy()
    finally:
        model.train(was_training)
    return nll, cnt


def _pad(seqs: Sequence[Sequence[int]], value: int, device: Any, *, left: bool = False):
    import torch

    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), value, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if not len(s):
            continue
        if left:
            out[i, width - len(s):] = torch.as_tensor(s)
            mask[i, width - len(s):] = 1
        else:
            out[i, : len(s)] = torch.as_tensor(s)
            mask[i, : len(s)] = 1
    return out.to(device), mask.to(device)


# ---------------------------------------------------------------------------------------------
# evaluate modules and user metrics

def metric_module_path(name: str) -> str:
    """Local path of a packaged ``evaluate`` metric module (``bleu``, ``chrf``, ``exact_match``)."""
    path = _MODULES_DIR / name
    if not (path / f"{name}.py").is_file():
        available = sorted(p.name for p in _MODULES_DIR.iterdir() if (p / f"{p.name}.py").is_file())
        raise ValueError(f"no packaged metric module {name!r}; available: {available}")
    return str(path)


def load_metric(name: str, **kwargs: Any):
    """``evaluate.load`` of a packaged metric module, offline (no Hub lookup: it is a local path)."""
    import evaluate

    return evaluate.load(metric_module_path(name), **kwargs)


_LOADED: dict[str, Any] = {}


def _load_cached(path: str):
    # One evaluate.load per metric and process: tasks sent to worker processes carry metric paths.
    if path not in _LOADED:
        import evaluate

        try:
            _LOADED[path] = evaluate.load(path)
        except Exception as err:
            raise ValueError(f"could not load evaluate metric {path!r}: {err}; pass a local module "
                             "directory (offline) or a metric object") from err
    return _LOADED[path]


def picklable_metric(metric: Any) -> Any:
    """``metric`` itself if it pickles, else the local path of its ``evaluate`` module script
    (``evaluate`` metric objects hold locks and do not pickle; a worker re-loads them by path)."""
    import inspect
    import pickle

    try:
        pickle.dumps(metric)
        return metric
    except Exception:
        pass
    if hasattr(metric, "compute"):
        try:
            path = Path(inspect.getfile(type(metric)))
        except (TypeError, OSError):
            path = None
        # evaluate.load takes the script itself (its cached copy lives in a hash-named directory).
        if path is not None and path.is_file():
            return str(path)
    raise ValueError(f"extra metric {metric!r} cannot be sent to another process; pass it as a path for "
                     "evaluate.load or as a picklable callable")


def _references_nested(metric: Any) -> bool:
    """Whether an ``evaluate`` metric wants a list of references per prediction."""
    feats = getattr(metric, "features", None)
    if feats is None:
        return False
    candidates = feats if isinstance(feats, list) else [feats]
    # evaluate tries its feature sets in order; the first is the canonical one.
    ref = candidates[0].get("references") if candidates and hasattr(candidates[0], "get") else None
    return ref is not None and type(ref).__name__ in {"Sequence", "List", "LargeList", "list"}


def compute_extra_metric(metric: Any, hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Compute a user metric and return its numeric results as flat ``{name: value}``.

    ``metric`` is an ``evaluate`` metric object, a string for ``evaluate.load`` (a local path), or a
    callable ``f(predictions, references) -> dict | float``. Keys are ``<metric>_<key>``, or just
    ``<metric>`` for a key named like the metric or for a plain number.
    """
    hyps, refs = _check_pairs(hypotheses, references)
    if isinstance(metric, (str, Path)):
        metric = _load_cached(str(metric))
    name = str(getattr(metric, "name", None) or getattr(metric, "__name__", None) or type(metric).__name__)
    if hasattr(metric, "compute"):
        ref_arg: Any = [[r] for r in refs] if _references_nested(metric) else refs
        try:
            result = metric.compute(predictions=hyps, references=ref_arg)
        except Exception as err:
            raise ValueError(f"extra metric {name!r} failed: {type(err).__name__}: {err}") from err
    elif callable(metric):
        result = metric(hyps, refs)
    else:
        raise ValueError(f"extra metric {metric!r} is neither an evaluate metric, a path, nor a callable")
    return _flatten_numeric(name, result)


def _flatten_numeric(name: str, result: Any) -> dict[str, float]:
    if isinstance(result, (int, float, np.number)):
        return {name: float(result)}
    if not isinstance(result, dict):
        raise ValueError(f"extra metric {name!r} returned {type(result).__name__}; expected a dict or a number")
    out: dict[str, float] = {}
    for key, value in result.items():
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
            continue  # lists (per-n precisions), strings (signatures): not a scalar metric
        if not math.isfinite(float(value)) and not isinstance(value, float):
            continue
        out[name if key in (name, "score") else f"{name}_{key}"] = float(value)
    return out

