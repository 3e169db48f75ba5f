"""Helpers for the callback, executor and distributed tests: a tiny pre-training run with a real Trainer."""

from __future__ import annotations

from pathlib import Path

SEQ_LEN = 32


def lm_examples(tokenizer, pairs, seq_len: int = SEQ_LEN) -> list[dict]:
    """Packed causal-LM examples of ``seq_len`` tokens from ``en = fr</s>`` lines."""
    ids: list[int] = []
    for en, fr in pairs:
        ids.extend(tokenizer.encode(f"{en} = {fr}") + [tokenizer.eos_token_id])
    n = len(ids) // seq_len
    return [{"input_ids": ids[i * seq_len:(i + 1) * seq_len], "labels": ids[i * seq_len:(i + 1) * seq_len]}
            for i in range(n)]


def small_task(translation_files, sizes=(32,), name=None, test=16):
    from transfer_probe.tasks import TranslationTask

    return TranslationTask.from_files(translation_files.train_jsonl, translation_files.test_jsonl, source="en",
                                      target="fr", finetune_sizes=list(sizes), max_test_examples=test,
                                      **({"name": name} if name else {}))


def quick_finetune(**kw):
    from transfer_probe.run.probe import FinetuneConfig

    base = dict(max_steps=4, batch_size=8, learning_rate=3e-3, bootstrap=0, device="cpu", num_threads=1,
                eval_batch_size=64)
    base.update(kw)
    return FinetuneConfig(**base)


def make_trainer(model, tokenizer, train, out_dir: Path, *, callbacks=(), max_steps=8, save_steps=None,
                 batch_size=4, processing_class="same", **kw):
    from transformers import Trainer, TrainingArguments, default_data_collator

    args = TrainingArguments(
        output_dir=str(out_dir), max_steps=max_steps, per_device_train_batch_size=batch_size,
        learning_rate=1e-3, lr_scheduler_type="constant", report_to=[], use_cpu=True,
        seed=0, save_steps=save_steps or 500, disable_tqdm=True, dataloader_num_workers=0,
        remove_unused_columns=False, **{"save_strategy": "steps" if save_steps else "no", "logging_steps": 1000, **kw},
    )
    if processing_class == "same":
        processing_class = tokenizer
    return Trainer(model=model, args=args, train_dataset=train, processing_class=processing_class,
                   data_collator=default_data_collator, callbacks=list(callbacks))
