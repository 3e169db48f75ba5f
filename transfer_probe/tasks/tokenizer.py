"""What a task needs to know of a tokenizer: the special tokens it ends, pads and starts with, and a
fingerprint of its behaviour that is the same in every process (the key of the prepared-task cache)."""

from __future__ import annotations

import hashlib
import weakref
from typing import Any


def special_token_ids(tokenizer: Any, *, is_encoder_decoder: bool) -> tuple[int, int]:
    """``(eos_id, pad_id)`` the task uses, or ``ValueError`` naming what is missing.

    Decoder-only models may pad with eos (padding is masked out and labelled ``-100``);
    encoder-decoder models need a real pad token (it also starts the decoder in T5).
    """
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise ValueError(
            f"tokenizer {name!r} has no eos token: the probe needs one to end targets and stop "
            "generation; set one, e.g. tokenizer.eos_token = '</s>' (adding it to the vocabulary)"
        )
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        if is_encoder_decoder:
            raise ValueError(
                f"tokenizer {name!r} has no pad token, which an encoder-decoder model needs; "
                "set tokenizer.pad_token (e.g. '<pad>')"
            )
        pad = eos
    return int(eos), int(pad)


_TOKENIZER_KEYS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A key that identifies a tokenizer's behaviour across processes (not its Python ``id``).

    Hashing a large vocabulary takes tens of milliseconds, so the key is remembered per tokenizer
    object (weakly: a dropped tokenizer is forgotten)."""
    # Cheap attributes checked on every call catch the usual mutation (a pad or eos token added).
    quick = (len(tokenizer), *(getattr(tokenizer, a, None) for a in ("eos_token_id", "pad_token_id", "bos_token_id")))
    try:
        seen_quick, key = _TOKENIZER_KEYS[tokenizer]
        if seen_quick == quick:
            return key
    except (KeyError, TypeError):
        pass
    key = _tokenizer_fingerprint(tokenizer)
    try:
        _TOKENIZER_KEYS[tokenizer] = (quick, key)
    except TypeError:  # not weak-referenceable or not hashable: recompute next time
        pass
    return key


def _tokenizer_fingerprint(tokenizer: Any) -> str:
    h = hashlib.sha1()
    h.update(type(tokenizer).__name__.encode())
    h.update(str(getattr(tokenizer, "name_or_path", "")).encode())
    try:
        vocab = tokenizer.get_vocab()
        for tok, idx in sorted(vocab.items(), key=lambda kv: kv[1]):
            h.update(f"{idx}\t{tok}\n".encode("utf-8", "surrogatepass"))
    except Exception:  # a tokenizer without get_vocab: fall back to its size
        h.update(str(len(tokenizer)).encode())
    for attr in ("eos_token_id", "pad_token_id", "bos_token_id"):
        h.update(f"{attr}={getattr(tokenizer, attr, None)}".encode())
    return h.hexdigest()
