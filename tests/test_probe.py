"""run_probe end to end on tiny models (the fine-tune checked bit for bit against a real nested Trainer),
plus isolation and failure handling."""

import math
import random
from dataclasses import replace

import numpy as np
import pytest
import torch

from transfer_probe import metrics
from transfer_probe.run.probe import FinetuneDiverged, ProbeJob, failed_record, greedy_generate, run_probe


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models on a shared 2-core machine: one thread avoids contention (restored after each test).
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


RECORD_KEYS = {"schema", "kind", "run_id", "time", "step", "tokens", "params", "task", "finetune_size",
               "pretrained", "status", "metrics", "metrics_ci", "metric_signatures", "finetune", "seconds",
               "repeat", "timing"}


def _untuned_bleu(model, task, tokenizer):
    p = task.prepare(tokenizer, model.config)
    gen = greedy_generate(model, p.prompts, eos_token_id=p.eos_token_id, pad_token_id=p.pad_token_id,
                          max_new_tokens=p.max_new_tokens)
    hyps = [h.strip() for h in tokenizer.batch_decode(gen, skip_special_tokens=True)]
    return metrics.corpus_bleu(hyps, p.references).score


@pytest.mark.parametrize("arch", ["gpt2", "t5"])
def test_probe_finetune_lifts_bleu_far_above_the_untuned_model(arch, request, make_snapshot, translation_task,
                                                              tiny_tokenizer, fast_finetune):
    model = request.getfixturevalue(f"tiny_{arch}")
    before = _untuned_bleu(model, translation_task, tiny_tokenizer)
    snap = make_snapshot(model, tokens=12_800, step=10)
    job = ProbeJob(snapshot=snap, task=translation_task, finetune_size=256, config=fast_finetune, run_id="r1",
                   extra={"reason": "test"})
    rec = run_probe(job)

    assert RECORD_KEYS <= set(rec) and rec["status"] == "ok" and rec["kind"] == "probe"
    assert (rec["tokens"], rec["step"], rec["task"], rec["run_id"], rec["repeat"]) == (12_800, 10, "en-fr", "r1", 0)
    assert rec["reason"] == "test" and rec["pretrained"] is True
    assert rec["finetune_size"]["examples"] == 256 and rec["finetune_size"]["tokens"] > 256 * 5
    ft = rec["finetune"]
    assert ft["steps"] == fast_finetune.max_steps and ft["seed"] == job.seed and ft["device"] == "cpu"
    assert ft["precision"] == "fp32" and math.isfinite(ft["train_loss"])
    m = rec["metrics"]
    print(arch, "BLEU before", before, "after", m["bleu"], "chrF", m["chrf"], "CE", m["cross_entropy"])
    assert before < 2.0
    assert m["bleu"] > before + 8.0 and m["chrf"] > 35.0
    assert 0.0 < m["cross_entropy"] < 2.5  # untuned: ~log(vocab) = 6.2 nats
    for key in ("bleu", "chrf", "exact_match", "cross_entropy"):
        lo, hi = rec["metrics_ci"][key]
        assert lo <= m[key] <= hi
    sig = rec["metric_signatures"]
    assert sig["bleu"].startswith("nrefs:1|case:mixed|eff:no|tok:13a") and "nc:6" in sig["chrf"]
    assert "target-tokens" in sig["cross_entropy"] and "n:200" in sig["bootstrap"]
    assert set(rec["timing"]) == {"finetune", "cross_entropy", "generation", "scoring"}
    assert rec["seconds"] >= sum(rec["timing"].values()) * 0.99
    assert len(rec["samples"]) == 3 and rec["samples"][0]["reference"] == translation_task.test_pairs[0][1]


@pytest.mark.parametrize("arch", ["gpt2", "t5"])
def test_length_sorted_batches_equal_one_batch_generate(arch, request, translation_task, tiny_tokenizer):
    model = request.getfixturevalue(f"tiny_{arch}")
    p = translation_task.prepare(tiny_tokenizer, model.config)
    prompts = p.prompts[:12]
    ours = greedy_generate(model, prompts, eos_token_id=p.eos_token_id, pad_token_id=p.pad_token_id,
                           max_new_tokens=10, batch_size=5)
    from transfer_probe.metrics import _pad

    ids, mask = _pad(prompts, p.pad_token_id, "cpu", left=not p.is_encoder_decoder)
    model.eval()
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10, do_sample=False,
                             eos_token_id=p.eos_token_id, pad_token_id=p.pad_token_id)
    out = out[:, 1:] if p.is_encoder_decoder else out[:, ids.shape[1]:]
    theirs = [row[: row.index(p.eos_token_id)] if p.eos_token_id in row else row for row in out.tolist()]
    assert ours == theirs


def test_nan_loss_raises_clearly_and_becomes_a_failed_record(tiny_gpt2, make_snapshot, translation_task,
                                                             fast_finetune):
    snap = make_snapshot(tiny_gpt2)
    snap.state_dict["transformer.h.0.mlp.c_fc.weight"][0, 0] = float("nan")
    job = ProbeJob(snapshot=snap, task=translation_task, finetune_size=64, config=replace(fast_finetune, max_steps=2),
                   repeat=1, run_id="r")
    with pytest.raises(FinetuneDiverged, match="fine-tuning loss is nan after 2 steps .* lower FinetuneConfig.learning_rate") as info:
        run_probe(job)
    rec = failed_record(job, info.value)
    assert rec["status"] == "failed" and rec["error"].startswith("FinetuneDiverged: fine-tuning loss is nan")
    assert rec["error_type"] == "FinetuneDiverged" and rec["metrics"] == {}
    assert (rec["task"], rec["repeat"], rec["finetune_size"], rec["finetune"]["seed"]) == ("en-fr", 1, {"examples": 64}, 1000)


def test_probe_leaves_rng_threads_grad_mode_and_accelerate_state_untouched(tiny_gpt2, make_snapshot,
                                                                          translation_task, fast_finetune, tmp_path):
    """Runs the probe inside an outer Trainer's step, as the inline executor does."""
    from accelerate.state import AcceleratorState, GradientState, PartialState
    from transformers import Trainer, TrainerCallback, TrainingArguments

    snap = make_snapshot(tiny_gpt2)
    cfg = replace(fast_finetune, max_steps=3, bootstrap=10)
    seen = {}

    class ProbeAtStep2(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step != 2:
                return
            shared = [dict(c._shared_state) for c in (PartialState, AcceleratorState, GradientState)]
            rng = (random.getstate(), np.random.get_state()[1].copy(), torch.random.get_rng_state().clone())
            threads, grad = torch.get_num_threads(), torch.is_grad_enabled()
            torch.set_grad_enabled(False)
            seen["record"] = run_probe(ProbeJob(snapshot=snap, task=translation_task, finetune_size=64, config=cfg))
            seen["grad_restored"] = torch.is_grad_enabled() is False
            torch.set_grad_enabled(grad)
            seen["same_rng"] = (random.getstate() == rng[0] and np.array_equal(np.random.get_state()[1], rng[1])
                                and torch.equal(torch.random.get_rng_state(), rng[2]))
            seen["same_threads"] = torch.get_num_threads() == threads
            after = [dict(c._shared_state) for c in (PartialState, AcceleratorState, GradientState)]
            seen["same_singletons"] = all(a.keys() == b.keys() and all(a[k] is b[k] for k in a)
                                          for a, b in zip(shared, after, strict=True))
            seen["outer_state"] = kw.get("model") is not None and trainer.accelerator.state.device.type

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return 64

        def __getitem__(self, i):
            ids = torch.tensor([(i * 7 + k) % 50 + 2 for k in range(16)])
            return {"input_ids": ids, "labels": ids}

    outer_model = type(tiny_gpt2)(tiny_gpt2.config)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=8, use_cpu=True,
                             report_to="none", save_strategy="no", disable_tqdm=True, logging_strategy="no")
    trainer = Trainer(model=outer_model, args=args, train_dataset=Data(), callbacks=[ProbeAtStep2()])
    trainer.train()
    assert seen["record"]["status"] == "ok" and seen["record"]["finetune"]["steps"] == 3
    assert seen["same_rng"] and seen["same_threads"] and seen["grad_restored"]
    assert seen["same_singletons"] and seen["outer_state"] == "cpu"
    assert trainer.state.global_step == 4  # the outer run went on to its end


def test_without_isolation_a_nested_trainer_wipes_the_outer_accelerate_state(tmp_path):
    """Why isolated_state exists: TrainingArguments resets accelerate's process-wide singletons."""
    from accelerate.state import AcceleratorState, PartialState
    from transformers import TrainingArguments

    from transfer_probe.run.probe import isolated_state

    outer = TrainingArguments(output_dir=str(tmp_path / "o"), use_cpu=True, report_to="none")
    assert outer.device.type == "cpu"
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    before = dict(AcceleratorState._shared_state)
    assert before  # the outer accelerator's state lives in this shared dict
    with isolated_state():
        TrainingArguments(output_dir=str(tmp_path / "i"), use_cpu=True, report_to="none").device  # noqa: B018
        assert "mixed_precision" not in AcceleratorState._shared_state  # reset by the nested arguments
    assert dict(AcceleratorState._shared_state) == before and acc.state.mixed_precision == "no"
    TrainingArguments(output_dir=str(tmp_path / "j"), use_cpu=True, report_to="none").device  # noqa: B018
    assert AcceleratorState._shared_state == {}  # unprotected: the outer accelerator lost its state
    with pytest.raises(AttributeError):
        acc.state.mixed_precision  # noqa: B018
    AcceleratorState._shared_state.update(before)  # leave the process as we found it
    PartialState()


def test_repeats_use_independent_seeds_and_optionally_other_data(tiny_gpt2, make_snapshot, translation_task,
                                                                fast_finetune):
    snap = make_snapshot(tiny_gpt2)
    cfg = replace(fast_finetune, max_steps=5, bootstrap=0, resample_data=True)
    recs = [run_probe(ProbeJob(snapshot=snap, task=translation_task, finetune_size=64, config=cfg, repeat=r))
            for r in (0, 1)]
    assert [r["finetune"]["seed"] for r in recs] == [0, 1000] and [r["repeat"] for r in recs] == [0, 1]
    assert recs[0]["finetune_size"]["tokens"] != recs[1]["finetune_size"]["tokens"]  # different D_f draws
    assert recs[0]["metrics"]["cross_entropy"] != recs[1]["metrics"]["cross_entropy"]
    assert recs[0]["metrics_ci"] == {} and "bootstrap" not in recs[0]["metric_signatures"]
    again = run_probe(ProbeJob(snapshot=snap, task=translation_task, finetune_size=64, config=cfg, repeat=1))
    assert again["metrics"] == recs[1]["metrics"]  # reproducible from (seed, repeat)


def test_baseline_snapshot_and_bad_settings(tiny_gpt2, make_snapshot, translation_task, fast_finetune):
    base = make_snapshot(tiny_gpt2, pretrained=False)
    rec = run_probe(ProbeJob(snapshot=base, task=translation_task, finetune_size=64,
                             config=replace(fast_finetune, max_steps=2, bootstrap=0)))
    assert rec["pretrained"] is False and rec["status"] == "ok"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="precision='fp16' needs a CUDA device"):
            run_probe(ProbeJob(snapshot=base, task=translation_task, finetune_size=64,
                               config=replace(fast_finetune, max_steps=2, precision="fp16")))
    # bf16 autocast on CPU (explicit; "auto" keeps fp32 on CPU) and beam search both run and are recorded.
    rec = run_probe(ProbeJob(snapshot=base, task=translation_task, finetune_size=64,
                             config=replace(fast_finetune, max_steps=2, bootstrap=0, precision="bf16", num_beams=2)))
    assert rec["finetune"]["precision"] == "bf16" and math.isfinite(rec["finetune"]["train_loss"])
    assert rec["metric_signatures"]["generation"].startswith("beam:2|max_new_tokens:")
    with pytest.raises(ValueError, match="D_f=5000 is larger"):
        run_probe(ProbeJob(snapshot=base, task=translation_task, finetune_size=5000, config=fast_finetune))


def _other_arch(name, vocab):
    import transformers as T

    torch.manual_seed(0)
    if name == "llama":  # rotary positions: left-padded prompts need position ids from the mask
        return T.LlamaForCausalLM(T.LlamaConfig(
            vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=128, eos_token_id=1, pad_token_id=0))
    if name == "bloom":  # ALiBi: no position ids at all
        return T.BloomForCausalLM(T.BloomConfig(vocab_size=vocab, hidden_size=64, n_layer=1, n_head=4,
                                                eos_token_id=1, pad_token_id=0))
    return T.BartForConditionalGeneration(T.BartConfig(  # decoder starts with eos, not pad
        vocab_size=vocab, d_model=64, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=128,
        pad_token_id=0, eos_token_id=1, bos_token_id=1, decoder_start_token_id=1, forced_eos_token_id=None))


@pytest.mark.parametrize("name", ["llama", "bloom", "bart"])
def test_length_sorted_batches_on_other_architectures(name, translation_task, tiny_tokenizer):
    model = _other_arch(name, len(tiny_tokenizer))
    p = translation_task.prepare(tiny_tokenizer, model.config)
    prompts = p.prompts[:8]
    ours = greedy_generate(model, prompts, eos_token_id=p.eos_token_id, pad_token_id=p.pad_token_id,
                           max_new_tokens=6, batch_size=3, decoder_start_token_id=p.decoder_start_token_id)
    from transfer_probe.metrics import _pad

    ids, mask = _pad(prompts, p.pad_token_id, "cpu", left=not p.is_encoder_decoder)
    model.eval()
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False,
                             eos_token_id=p.eos_token_id, pad_token_id=p.pad_token_id)
    out = out[:, 1:] if p.is_encoder_decoder else out[:, ids.shape[1]:]
    assert ours == [row[: row.index(p.eos_token_id)] if p.eos_token_id in row else row for row in out.tolist()]


def test_half_precision_checkpoint_is_finetuned_in_fp32(tiny_gpt2, tiny_tokenizer, translation_task, fast_finetune,
                                                        tmp_path):
    from transfer_probe.run.snapshot import Snapshot, count_parameters

    tiny_gpt2.to(torch.bfloat16).save_pretrained(tmp_path / "ckpt")
    snap = Snapshot(tokens=1, step=1, params=count_parameters(tiny_gpt2), path=tmp_path / "ckpt",
                    tokenizer=tiny_tokenizer)
    assert next(snap.load_model().parameters()).dtype == torch.bfloat16
    rec = run_probe(ProbeJob(snapshot=snap, task=translation_task, finetune_size=64,
                             config=replace(fast_finetune, max_steps=3, bootstrap=0)))
    assert rec["status"] == "ok" and math.isfinite(rec["finetune"]["train_loss"])


def _trainer_finetune(model, features, pad, cfg, seed, tmp):
    """The probe's fine-tune before issue 16: a nested Trainer with the probe's settings."""
    from transformers import Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    from transfer_probe.run.finetune import Collator

    args = TrainingArguments(
        output_dir=str(tmp), max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay, lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_ratio, seed=seed, data_seed=seed, report_to="none", save_strategy="no",
        logging_strategy="no", disable_tqdm=True, use_cpu=True, dataloader_pin_memory=False,
        remove_unused_columns=False, logging_nan_inf_filter=False)
    trainer = Trainer(model=model, args=args, train_dataset=features, data_collator=Collator(pad))
    trainer.remove_callback(PrinterCallback)
    return trainer.train().training_loss


@pytest.mark.parametrize("arch", ["gpt2", "t5"])
def test_lean_finetune_equals_the_nested_trainer(arch, request, translation_task, tiny_tokenizer, fast_finetune,
                                                 tmp_path, monkeypatch):
    """The lean loop (no Trainer) gives the nested Trainer's weights and training loss bit for bit:
    same seeding, data order across epochs (4 steps of 16 per epoch of 64), fused AdamW with the
    Trainer's weight-decay groups, linear warmup and decay, clipping, the model's own loss."""
    import transformers

    from transfer_probe.run.probe import _finetune, isolated_state

    model = request.getfixturevalue(f"tiny_{arch}")
    p = translation_task.prepare(tiny_tokenizer, model.config)
    features = [p.train[i] for i in range(64)]
    cfg = replace(fast_finetune, max_steps=10, lr_scheduler_type="linear", warmup_ratio=0.25, weight_decay=0.1,
                  learning_rate=3e-3)
    ours, theirs = (type(model)(model.config) for _ in range(2))
    for m in (ours, theirs):
        m.load_state_dict(model.state_dict())
    with isolated_state(num_threads=1):
        ref_loss = _trainer_finetune(theirs, features, p.pad_token_id, cfg, 1000, tmp_path)

    def no_trainer(*args, **kwargs):
        raise AssertionError("the probe's fine-tune built a Trainer")

    monkeypatch.setattr(transformers.Trainer, "__init__", no_trainer)
    with isolated_state(num_threads=1):
        ft = _finetune(ours, features, p.pad_token_id, cfg, 1000)
    assert ft["train_loss"] == ref_loss and ft["steps"] == 10 and ft["device"] == "cpu"
    moved = False
    for (name, a), b, c in zip(ours.named_parameters(), theirs.parameters(), model.parameters(), strict=True):
        assert torch.equal(a, b), name
        moved = moved or not torch.equal(a, c)
    assert moved
    # weight decay and the schedule act: without them the weights differ
    plain = type(model)(model.config)
    plain.load_state_dict(model.state_dict())
    with isolated_state(num_threads=1):
        _finetune(plain, features, p.pad_token_id, replace(cfg, weight_decay=0.0, lr_scheduler_type="constant",
                                                           warmup_ratio=0.0), 1000)
    assert not all(torch.equal(a, b) for a, b in zip(ours.parameters(), plain.parameters(), strict=True))


def test_group_by_length_batches_are_seeded_and_of_similar_length(translation_task, tiny_tokenizer, tiny_gpt2):
    from transfer_probe.run.finetune import batches

    p = translation_task.prepare(tiny_tokenizer, tiny_gpt2.config)
    features = p.train[:256]

    def spread(sampling, seed=0):
        it = batches(features, 16, seed, sampling)
        got = [next(it) for _ in range(32)]  # two epochs
        return got, sum(max(map(len, (f["input_ids"] for f in b))) - min(len(f["input_ids"]) for f in b)
                        for b in got)

    grouped, grouped_spread = spread("group_by_length")
    shuffled, shuffled_spread = spread("random")
    assert grouped_spread < 0.5 * shuffled_spread  # less padding per batch
    assert spread("group_by_length")[0] == grouped and spread("group_by_length", seed=1)[0] != grouped
    assert grouped[:16] != grouped[16:]  # a new grouping every epoch
    for epoch in (grouped[:16], shuffled[:16]):  # each epoch sees every example once
        assert sorted(id(f) for b in epoch for f in b) == sorted(id(f) for f in features)


def test_finetune_config_reaches_generation_and_intervals(tiny_gpt2, make_snapshot, translation_task,
                                                          tiny_tokenizer, fast_finetune, monkeypatch):
    """max_new_tokens and interval are read where they act (generate(), the bootstrap interval), not
    only recorded (scheduler, warmup and weight decay: test_lean_finetune_equals_the_nested_trainer)."""
    import transfer_probe.run.probe as probe_mod

    gen_calls = []
    generate = probe_mod.generate

    def spy_generate(*args, **kwargs):
        gen_calls.append(kwargs["max_new_tokens"])
        return generate(*args, **kwargs)

    monkeypatch.setattr(probe_mod, "generate", spy_generate)
    config = replace(fast_finetune, max_steps=8, lr_scheduler_type="linear", warmup_ratio=0.25, weight_decay=0.1,
                     max_new_tokens=3, interval=0.5, bootstrap=50)
    rec = run_probe(ProbeJob(snapshot=make_snapshot(tiny_gpt2), task=translation_task, finetune_size=64,
                             config=config))
    assert rec["status"] == "ok", rec.get("error")
    assert rec["finetune"]["lr_scheduler_type"] == "linear"
    # max_new_tokens: what generate() is asked for, the signature, and what comes out
    assert gen_calls == [3] and rec["metric_signatures"]["generation"] == "greedy|max_new_tokens:3|stop:eos"
    assert all(len(tiny_tokenizer.encode(s["hypothesis"])) <= 3 for s in rec["samples"])
    # interval: the recorded bootstrap interval is the 50% one (narrower than the default 90%)
    assert "0.5" in rec["metric_signatures"]["bootstrap"]
    wide = run_probe(ProbeJob(snapshot=make_snapshot(tiny_gpt2), task=translation_task, finetune_size=64,
                              config=replace(config, interval=0.9)))
    lo, hi = rec["metrics_ci"]["cross_entropy"]
    wlo, whi = wide["metrics_ci"]["cross_entropy"]
    assert wide["metrics"]["cross_entropy"] == pytest.approx(rec["metrics"]["cross_entropy"])
    assert wlo < lo < hi < whi
