"""The :class:`Snapshot` object (the weights at one probe point, what they were trained on, and a
fresh model built from them), N counted as Kaplan et al. count it, and the in-memory capture."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Snapshot:
    """The weights at one probe point and what they were trained on.

    ``tokens`` is D_p, the pre-training tokens seen; ``params`` holds N as ``{"non_embedding": ...,
    "total": ...}``. Exactly one of ``path`` and ``state_dict`` is set for a pretrained snapshot;
    the no-pretraining baseline is a snapshot with ``pretrained=False`` and neither (the probe
    builds a freshly initialized model from ``config``).
    """

    tokens: int
    step: int
    params: Mapping[str, int]
    config: Any = None  # transformers.PretrainedConfig; read from ``path`` when None
    path: Path | None = None
    state_dict: Mapping[str, Any] | None = field(default=None, repr=False)
    pretrained: bool = True
    tokenizer: Any = field(default=None, repr=False)  # in-memory tokenizer; else loaded from ``path``

    def load_config(self):
        if self.config is not None:
            return self.config
        from transformers import AutoConfig

        if self.path is None:
            raise ValueError("snapshot has neither a config nor a path to read one from")
        return AutoConfig.from_pretrained(self.path)

    def load_model(self, *, seed: int = 0):
        """A fresh model with this snapshot's weights (or a seeded random init for the baseline)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

        config = self.load_config()
        auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
        if not self.pretrained:
            # Seeded so the baseline is the same model at every probe point and in every process.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return auto.from_config(config)
        if self.state_dict is not None:
            # Build in the weights' own dtype: ``config.dtype`` may say otherwise (a model cast after
            # its config was written), and loading would silently round or widen them.
            dtype = next((v.dtype for v in self.state_dict.values()
                          if hasattr(v, "is_floating_point") and v.is_floating_point()), None)
            with torch.random.fork_rng(devices=[]):
                model = auto.from_config(config, **({"dtype": dtype} if dtype is not None else {}))
            missing, unexpected = model.load_state_dict(dict(self.state_dict), strict=False)
            # Tied weights (lm_head <- embeddings) may legitimately be absent from a state dict.
            missing = [k for k in missing if k not in _tied_keys(model)]
            if missing or unexpected:
                raise ValueError(
                    f"snapshot weights do not match the model config: missing {missing[:5]}, "
                    f"unexpected {unexpected[:5]}"
                )
            return model
        if self.path is not None:
            return auto.from_pretrained(self.path, config=config)
        raise ValueError("pretrained snapshot has neither weights in memory nor a path")

    def load_tokenizer(self):
        if self.tokenizer is not None:
            return self.tokenizer
        from transformers import AutoTokenizer

        if self.path is None:
            raise ValueError("snapshot has no tokenizer and no path to load one from")
        return AutoTokenizer.from_pretrained(self.path)


def _tied_keys(model) -> set[str]:
    keys = getattr(model, "_tied_weights_keys", None) or []
    if isinstance(keys, dict):
        keys = list(keys)
    return set(keys)


def count_parameters(model) -> dict[str, int]:
    """N as Kaplan et al. count it (non-embedding) and the total, of unique parameters."""
    seen: set[int] = set()
    total = embedding = 0
    emb_ids = set()
    for module in model.modules():
        if module.__class__.__name__ in {"Embedding"} or "Embedding" in module.__class__.__name__:
            for p in module.parameters(recurse=False):
                emb_ids.add(id(p))
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if id(p) in emb_ids:
            embedding += p.numel()
    return {"non_embedding": total - embedding, "total": total}


def unwrap_model(model):
    """The plain ``PreTrainedModel`` inside DDP / DataParallel / ``torch.compile`` wrappers."""
    seen = 0
    while seen < 10:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None or inner is model:
            break
        model = inner
        seen += 1
    return model


def capture_in_memory(model, *, tokens: int, step: int, tokenizer: Any = None) -> Snapshot:
    """A snapshot holding a CPU copy of ``model``'s weights and config (for inline probes).

    Reads only: the model's parameters, mode and device are left as they are.
    """
    import torch

    model = unwrap_model(model)
    with torch.no_grad():
        # copy=True: a CPU model's tensors would otherwise be shared, not copied.
        state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    return Snapshot(
        tokens=int(tokens), step=int(step), params=count_parameters(model),
        config=copy.deepcopy(model.config), state_dict=state, pretrained=True, tokenizer=tokenizer,
    )
