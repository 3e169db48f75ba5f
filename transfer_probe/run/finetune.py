"""The probe's fine-tune: the nested ``Trainer``'s training step, without the ``Trainer`` around it.

A probe fine-tunes a small copy for a fixed number of steps, so per-step bookkeeping that a long
training run amortizes (callbacks, logging checks, the dataloader shard, ``free_memory``'s full
``gc.collect()``) is a visible share of its cost. This loop does what ``Trainer.train()`` does for
``FinetuneConfig``'s settings and nothing else, through ``accelerate`` as the ``Trainer`` does
(device placement, ``precision`` as autocast plus fp16 loss scaling, its fp16 step skipping;
without loss scaling the step calls torch directly, as accelerate would after its checks):

- the same seeding (``set_seed(seed)``: python, numpy, torch; dropout draws from those streams),
- the same data order (accelerate's ``SeedableRandomSampler`` with ``data_seed=seed``, one
  permutation per epoch, the last batch of an epoch smaller; ``group_by_length``:
  ``LengthGroupedSampler`` seeded by ``seed + epoch``),
- the same optimizer (the ``Trainer``'s default ``adamw_torch_fused``, betas 0.9/0.999, eps 1e-8,
  weight decay on the parameters ``Trainer.get_decay_parameter_names`` names), scheduler
  (``get_scheduler``, warmup as ``TrainingArguments.get_warmup_steps``) and gradient clipping
  (``max_grad_norm=1.0``),
- the model's own loss (``model(**batch).loss``) and the training loss as the ``Trainer`` reports
  it (the mean of the step losses, NaN kept).

With ``precision="no"`` the weights equal the nested ``Trainer``'s bit for bit
(``tests/test_probe.py::test_lean_finetune_equals_the_nested_trainer``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence

__all__ = ["finetune", "precision_flags", "Collator", "MAX_GRAD_NORM"]

MAX_GRAD_NORM = 1.0  # TrainingArguments' default, which the probe has always used
_FUSED_DEVICES = ("cpu", "cuda", "xpu", "mps")  # where torch's fused AdamW runs


class Collator:
    """Pad ``input_ids`` (pad id), ``attention_mask`` and ``labels`` (-100) to the batch maximum."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: Sequence[dict]) -> dict:
        import torch

        width_in = max(len(f["input_ids"]) for f in features)
        width_lab = max(len(f["labels"]) for f in features)
        n = len(features)
        ids = torch.full((n, width_in), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((n, width_in), dtype=torch.long)
        labels = torch.full((n, width_lab), -100, dtype=torch.long)
        for i, f in enumerate(features):
            ids[i, : len(f["input_ids"])] = torch.as_tensor(f["input_ids"])
            mask[i, : len(f["input_ids"])] = 1
            labels[i, : len(f["labels"])] = torch.as_tensor(f["labels"])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def precision_flags(precision: str, device: str | None) -> dict[str, bool]:
    """``{"bf16": True}``, ``{"fp16": True}`` or ``{}`` (fp32) for ``FinetuneConfig.precision``."""
    import torch

    precision = (precision or "no").lower()
    if precision not in {"auto", "bf16", "fp16", "no", "fp32"}:
        raise ValueError(f"FinetuneConfig.precision={precision!r}; use 'auto', 'bf16', 'fp16' or 'no'")
    on_cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    if precision == "auto":
        if not on_cuda:
            return {}  # CPU: fp32 (bf16 autocast on CPU is slower for small models)
        return {"bf16": True} if torch.cuda.is_bf16_supported() else {"fp16": True}
    if precision == "bf16":
        return {"bf16": True}
    if precision == "fp16":
        if not on_cuda:
            raise ValueError("FinetuneConfig.precision='fp16' needs a CUDA device; use 'bf16' or 'no' on CPU")
        return {"fp16": True}
    return {}


def batches(features: Sequence[dict], batch_size: int, seed: int, sampling: str) -> Iterator[list[dict]]:
    """Training batches in the nested ``Trainer``'s order, epoch after epoch, without end."""
    import torch
    from accelerate.data_loader import SeedableRandomSampler
    from transformers.trainer_pt_utils import LengthGroupedSampler

    n = len(features)
    if sampling == "random":
        sampler = SeedableRandomSampler(range(n), data_seed=seed)  # reseeds with seed + epoch per pass
    lengths = [len(f["input_ids"]) for f in features]
    epoch = 0
    while True:
        if sampling == "group_by_length":
            sampler = LengthGroupedSampler(batch_size, lengths=lengths,
                                           generator=torch.Generator().manual_seed(seed + epoch))
        order = list(sampler)
        for b in range(0, n, batch_size):
            yield [features[i] for i in order[b: b + batch_size]]
        epoch += 1


def _optimizer(model, config, device):
    import torch
    from transformers import Trainer

    # The Trainer's rule (no decay on biases and norms), called unbound: it reads only the model.
    decay = set(Trainer.get_decay_parameter_names(None, model))
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in params if n in decay], "weight_decay": float(config.weight_decay)},
              {"params": [p for n, p in params if n not in decay], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=float(config.learning_rate), betas=(0.9, 0.999), eps=1e-8,
                             fused=torch.device(device).type in _FUSED_DEVICES)


def finetune(model, train_features: list[dict], pad_token_id: int, config, seed: int) -> dict:
    """Fine-tune ``model`` in place (see the module docstring); return what the probe record needs.

    Call inside :func:`transfer_probe.run.probe.isolated_state`: the ``Accelerator`` writes
    accelerate's process-wide state, and ``set_seed`` the global RNG streams.
    """
    import torch
    from accelerate import Accelerator
    from transformers import get_scheduler, set_seed

    start = time.perf_counter()
    device = config.device
    flags = precision_flags(config.precision, device)
    use_cpu = str(device) == "cpu" if device is not None else not torch.cuda.is_available()
    mixed = "bf16" if flags.get("bf16") else "fp16" if flags.get("fp16") else "no"
    # A non-CPU device reaches accelerate through ACCELERATE_TORCH_DEVICE (set by isolated_state).
    accelerator = Accelerator(cpu=use_cpu, mixed_precision=mixed)
    set_seed(int(seed))
    steps = int(config.max_steps)
    model = accelerator.prepare(model)  # device placement, autocast under bf16/fp16
    optimizer = _optimizer(model, config, accelerator.device)
    scheduler = get_scheduler(config.lr_scheduler_type, optimizer, num_training_steps=steps,
                              num_warmup_steps=_warmup_steps(config.warmup_ratio, steps))
    # Without fp16 loss scaling accelerate's per-step wrappers add only checks (package look-ups,
    # distributed cases): ~15% of a tiny model's step, measured. With it, they scale, unscale before
    # clipping, and skip the optimizer and scheduler step on overflow, as in the Trainer.
    scaled = accelerator.scaler is not None
    if scaled:
        optimizer, scheduler = accelerator.prepare(optimizer, scheduler)
    params = [p for p in model.parameters() if p.requires_grad]
    collate = Collator(pad_token_id)
    total = torch.zeros((), device=accelerator.device)
    model.train()
    for _, features in zip(range(steps), batches(train_features, int(config.batch_size), int(seed),
                                                 config.train_sampling), strict=False):
        batch = {k: v.to(accelerator.device, non_blocking=True) for k, v in collate(features).items()}
        loss = model(**batch).loss
        if scaled:
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(params, MAX_GRAD_NORM)
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        total += loss.detach()
    loss = total.item() / steps  # one device sync, at the end
    run_device = str(accelerator.device)
    # Not accelerator.free_memory(): its full gc.collect() cost 0.35-0.7 s per probe (more in a big
    # training process); the optimizer state goes with these references.
    del optimizer, scheduler, accelerator
    precision = "bf16" if flags.get("bf16") else "fp16" if flags.get("fp16") else "fp32"
    return {"steps": steps, "learning_rate": config.learning_rate, "batch_size": config.batch_size,
            "seed": seed, "seconds": time.perf_counter() - start, "precision": precision,
            "device": run_device, "train_loss": loss, "lr_scheduler_type": config.lr_scheduler_type}


def _warmup_steps(ratio: float, steps: int) -> int:
    # TrainingArguments.get_warmup_steps for a fraction (FinetuneConfig.warmup_ratio is < 1).
    return math.ceil(steps * float(ratio))
