"""Checks before any training step of what ``FinetuneConfig`` and the tasks cannot check alone: a
device this machine lacks, a model the probe cannot rebuild and generate with, examples longer
than the model's context. Each is a ``ValueError`` naming the setting to change."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transfer_probe.run.config import FinetuneConfig


def device_problem(device: Any) -> str | None:
    """Why ``device`` cannot be used on this machine, or ``None`` when it can (or cannot be told)."""
    if device is None:
        return None
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as err:
        return f"{device!r} is not a device: {err}"
    backend = getattr(torch, dev.type, None)
    if dev.type == "cpu" or not callable(getattr(backend, "is_available", None)):
        return None  # a backend torch cannot query here: trust the user
    if not backend.is_available():
        return f"device {str(device)!r} is not available on this machine (no {dev.type} device); use 'cpu' or None"
    count = int(backend.device_count()) if callable(getattr(backend, "device_count", None)) else 1
    if dev.index is not None and dev.index >= count:
        return (f"device {str(device)!r} is not available on this machine: it has {count} {dev.type} device(s), "
                f"{dev.type}:0 to {dev.type}:{count - 1}")
    return None


def check_probe_setup(config: FinetuneConfig, tasks: Sequence[Any], model: Any, tokenizer: Any, *,
                      executor: Any = "inline", executor_options: dict[str, Any] | None = None) -> None:
    """``ValueError`` before any training step for what ``FinetuneConfig`` and the tasks cannot check
    alone: a device this machine lacks (local executors only: a Ray worker may have others), a model
    the probe cannot rebuild and generate with, examples longer than the model's context. (An
    ``executor_options`` typo is the executor's to tell: ``executors.check_options``.)"""
    name = getattr(executor, "name", executor)
    if name in ("inline", "process"):
        _check_local_device(config, name, dict(executor_options or {}))
    model_config = getattr(model, "config", model)
    _check_generates(model_config)
    for task in tasks:
        if callable(getattr(task, "prepare", None)):
            _check_context(config, task, task.prepare(tokenizer, model_config), model_config)


def _check_local_device(config: FinetuneConfig, executor: str, options: dict[str, Any]) -> None:
    import torch

    worker = options.get("device") if executor == "process" else None
    for what, device in (("FinetuneConfig.device", config.device), ("executor_options['device']", worker)):
        problem = device_problem(device)
        if problem:
            raise ValueError(f"{what}: {problem}")
    if worker is not None and config.device not in (None, "cpu", "cuda", "cuda:0"):
        raise ValueError(f"FinetuneConfig.device={config.device!r} with executor_options['device']={worker!r}: "
                         f"the worker sees that one device only ({'none' if worker == 'cpu' else 'as cuda:0'}); "
                         "leave FinetuneConfig.device unset")
    device = config.device if worker is None else worker
    if str(config.precision).lower() == "fp16" and not (torch.cuda.is_available() and str(device or "cuda").startswith("cuda")):
        raise ValueError("FinetuneConfig.precision='fp16' needs a CUDA device; use 'bf16' or 'no' on CPU")


def _check_generates(model_config: Any) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    auto = AutoModelForSeq2SeqLM if getattr(model_config, "is_encoder_decoder", False) else AutoModelForCausalLM
    try:
        with torch.device("meta"):  # the class and its generate(), without allocating weights
            model = auto.from_config(model_config)
    except Exception as err:  # noqa: BLE001 - any reason the probe could not rebuild the model
        why = (str(err).splitlines() or [repr(err)])[0].strip("'\".")
        raise ValueError(f"a probe rebuilds the model with {auto.__name__}.from_config(config) to fine-tune it and "
                         f"generate, which fails for {type(model_config).__name__}: {why}; use a language model "
                         "that can generate (a causal or seq2seq LM)") from None
    if not model.can_generate():
        raise ValueError(f"{type(model).__name__} cannot generate, and a probe scores generated text; "
                         "use a model with a language-modelling head")


def _check_context(config: FinetuneConfig, task: Any, prepared: Any, model_config: Any) -> None:
    limit = next((v for v in (getattr(model_config, k, None) for k in ("n_positions", "max_position_embeddings"))
                  if isinstance(v, int) and v > 0), None)
    if limit is None:
        return  # relative positions (T5): no hard context
    sizes = [int(s) for s in getattr(task, "finetune_sizes", ())] or [len(prepared.train)]
    used = prepared.train if config.resample_data else [prepared.train[i] for i in prepared.train_order[:max(sizes)]]
    max_new = config.max_new_tokens or prepared.max_new_tokens
    ed = prepared.is_encoder_decoder
    checks = [("fine-tuning", [len(f["input_ids"]) for f in used])]
    checks.append(("test", [len(f["input_ids"]) for f in prepared.test]))
    if ed:
        checks.append(("fine-tuning target", [len(f["labels"]) for f in used]))
    checks.append(("generation (prompt + max_new_tokens)",
                   [(0 if ed else len(p)) + max_new for p in prepared.prompts]))
    for what, lengths in checks:
        over = [n for n in lengths if n > limit]
        if over:
            raise ValueError(
                f"task {getattr(task, 'name', task)!r}: {len(over)} {what} example(s) are longer than the model's "
                f"context of {limit} tokens (longest {max(over)}); shorten them (the task's max_source_length / "
                f"max_target_length) or lower FinetuneConfig.max_new_tokens")
