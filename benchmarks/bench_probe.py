"""Seconds per probe for tiny GPT-2 and T5, broken into fine-tune / CE / generation / scoring, against
the straightforward way of doing the same probe, on the same snapshot, data and fine-tuning budget.

    python benchmarks/bench_probe.py                  # figures for benchmarks/README.md
    python benchmarks/bench_probe.py --repeats 1 --test-size 100   # quicker

The straightforward probe is what one writes first with the Hugging Face stack: tokenize the task for
this probe, fine-tune with a nested ``Trainer`` (``DataCollatorForSeq2Seq``), cross-entropy with
``trainer.evaluate`` on the test split, ``model.generate`` over the test split in batches in file
order, BLEU and chrF through ``evaluate.load`` metric modules, and a bootstrap interval by rescoring
resampled hypothesis strings. Both fine-tunes use the same seed, data order and steps, so the
fine-tuned weights and therefore BLEU are the same: the ratio is at equal BLEU.

The fine-tune alone is also measured against its floor: the same model, data order (the nested
``Trainer``'s: one permutation per epoch from ``seed + epoch``) and optimizer (fused AdamW) in a plain
torch loop (collate, forward, backward, AdamW step, nothing else: no clipping, scheduler or seeding),
and against the nested ``Trainer`` the probe used before (issue 16), whose weights ours must equal.

Runs are interleaved (the order reversed every other round) and the median is reported, because the
reference machine is shared and its load moves; CPU seconds (``time.process_time``) are the steadier
figure on a loaded machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from dataclasses import replace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def number_pairs(n_train: int, n_test: int, seed: int = 0):
    """Digit strings spelled in English and French (the tests' task, see tests/conftest.py)."""
    from num2words import num2words

    en = {d: num2words(d) for d in range(10)}
    fr = {d: num2words(d, lang="fr") for d in range(10)}
    rng = random.Random(seed)
    seen, seqs = set(), []
    while len(seqs) < n_train + n_test:
        seq = tuple(rng.randrange(10) for _ in range(rng.randint(3, 6)))
        if seq not in seen:
            seen.add(seq)
            seqs.append(seq)
    pairs = [(" ".join(en[d] for d in s), " ".join(fr[d] for d in s)) for s in seqs]
    return pairs[:n_train], pairs[n_train:]


def tokenizer_for(pairs):
    from num2words import num2words
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<pad>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    text = [f"{s} = {t}" for s, t in pairs] + [f"{num2words(n)} = {num2words(n, lang='fr')}" for n in range(0, 3000, 7)]
    tok.train_from_iterator(text, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>")


def model_config(arch: str, tok):
    from transformers import GPT2Config, T5Config

    if arch == "gpt2":
        return GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=64, n_layer=2, n_head=4, resid_pdrop=0.0,
                          embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
                          pad_token_id=tok.pad_token_id)
    return T5Config(vocab_size=len(tok), d_model=64, d_kv=16, d_ff=128, num_layers=1, num_decoder_layers=1,
                    num_heads=4, dropout_rate=0.0, feed_forward_proj="relu", pad_token_id=tok.pad_token_id,
                    eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id)


def _features(snapshot, task, size: int, seed: int):
    prepared = task.prepare(snapshot.load_tokenizer(), snapshot.load_config())
    indices = task.train_indices(prepared, size, repeat=0, seed=seed, resample=False)
    return [prepared.train[i] for i in indices], prepared.pad_token_id


def floor_finetune(model, features, pad_token_id: int, cfg, seed: int) -> None:
    """The arithmetic's floor: collate, forward, backward, fused AdamW step; nothing else."""
    import torch

    from transfer_probe.run.finetune import Collator

    collate = Collator(pad_token_id)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, fused=True)
    model.train()
    step, epoch, n = 0, 0, len(features)
    while step < cfg.max_steps:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        for b in range(0, n, cfg.batch_size):
            model(**collate([features[i] for i in order[b: b + cfg.batch_size]])).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step == cfg.max_steps:
                break
        epoch += 1


def trainer_finetune(model, features, pad_token_id: int, cfg, seed: int) -> None:
    """The probe's fine-tune before issue 16: a nested ``Trainer``, configured quiet."""
    import tempfile

    from transformers import Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    from transfer_probe.run.finetune import Collator

    with tempfile.TemporaryDirectory(prefix="bench_probe_ft_") as tmp:
        args = TrainingArguments(
            output_dir=tmp, max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
            learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay, lr_scheduler_type=cfg.lr_scheduler_type,
            warmup_steps=cfg.warmup_ratio, seed=seed, data_seed=seed, report_to="none", save_strategy="no",
            eval_strategy="no", logging_strategy="no", disable_tqdm=True, use_cpu=True, dataloader_pin_memory=False,
            remove_unused_columns=False, logging_nan_inf_filter=False)
        trainer = Trainer(model=model, args=args, train_dataset=features, data_collator=Collator(pad_token_id))
        trainer.remove_callback(PrinterCallback)
        trainer.train()


def finetunes_side_by_side(snapshot, task, size: int, cfg, order: int) -> dict:
    """Seconds (wall, CPU) of the floor, ours and the nested Trainer on fresh copies, in ``order``
    (reversed when odd); ``maxdiff``: the largest weight difference between ours and the Trainer's."""
    from transfer_probe.run.finetune import finetune
    from transfer_probe.run.probe import isolated_state

    features, pad = _features(snapshot, task, size, cfg.seed)
    ways = {"floor": floor_finetune, "ours": finetune, "trainer": trainer_finetune}
    out, models = {}, {}
    for name in list(ways)[:: -1 if order % 2 else 1]:
        model = snapshot.load_model(seed=cfg.seed)
        with isolated_state(num_threads=cfg.num_threads):
            t, c = time.perf_counter(), time.process_time()
            ways[name](model, features, pad, cfg, cfg.seed)
            out[name] = {"wall": time.perf_counter() - t, "cpu": time.process_time() - c}
        models[name] = model
    out["maxdiff"] = max(float((a - b).detach().abs().max()) for a, b in
                         zip(models["ours"].parameters(), models["trainer"].parameters(), strict=True))
    return out


def ensemble_bound(snapshot, task, size: int, cfg, k: int = 4, steps: int = 60) -> dict:
    """What batching k repeats could save at best: CPU ms per floor step at batch b and at k*b on
    one set of weights (a batched k-ensemble does the same arithmetic, in k weight sets), in
    alternating order; and whether ``vmap`` over ``functional_call`` runs the model's loss at all."""
    import torch

    from transfer_probe.run.finetune import Collator
    from transfer_probe.run.probe import isolated_state

    features, pad = _features(snapshot, task, size, cfg.seed)
    collate = Collator(pad)

    def ms_per_step(batch_size):
        model = snapshot.load_model()
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, fused=True)
        batches = [collate(features[b: b + batch_size]) for b in range(0, size - batch_size + 1, batch_size)]
        c = time.process_time()
        for step in range(steps):
            model(**batches[step % len(batches)]).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return (time.process_time() - c) / steps * 1e3

    out = {"b": [], "kb": []}
    with isolated_state(num_threads=cfg.num_threads):
        for r in range(4):
            for key in ("b", "kb")[:: -1 if r % 2 else 1]:
                out[key].append(ms_per_step(cfg.batch_size * (k if key == "kb" else 1)))
        out["vmap"], out["fwd_bwd_1"] = _vmap_cost(snapshot, collate(features[: cfg.batch_size]), k, steps // 3)
    return out


def _vmap_cost(snapshot, batch, k: int, steps: int):
    """CPU ms of forward+backward for k weight sets under ``vmap(grad(functional_call))`` (decoder-only:
    a 4-D boolean mask, since the model's own mask building branches on the data and vmap refuses it),
    or why it does not run; and of one plain forward+backward for comparison."""
    import torch
    from torch.func import functional_call, grad, stack_module_state, vmap

    params, buffers = stack_module_state([snapshot.load_model() for _ in range(k)])
    base = snapshot.load_model().to("meta")
    if not base.config.is_encoder_decoder:
        width = batch["input_ids"].shape[1]
        causal = torch.tril(torch.ones(width, width, dtype=torch.bool))
        batch = dict(batch, attention_mask=causal[None, None] & batch["attention_mask"].bool()[:, None, None, :])
    stacked = {key: v.expand(k, *v.shape) for key, v in batch.items()}

    def loss(p, b, kw):
        return functional_call(base, (p, b), (), kw).loss

    try:
        vmap(grad(loss))(params, buffers, stacked)
        c = time.process_time()
        for _ in range(steps):
            vmap(grad(loss))(params, buffers, stacked)
        found = f"runs, {(time.process_time() - c) / steps * 1e3:.1f} ms per k={k} forward+backward"
    except Exception as err:  # noqa: BLE001 - the reason is the finding
        found = f"{type(err).__name__}: {str(err).splitlines()[0][:100]}"
    model = snapshot.load_model()
    c = time.process_time()
    for _ in range(steps):
        model(**batch).loss.backward()
    return found, (time.process_time() - c) / steps * 1e3


def straightforward_probe(snapshot, task, size: int, cfg, bootstrap: int) -> dict:
    """The same probe written the obvious way (see the module docstring)."""
    import evaluate
    import numpy as np
    import torch
    from sacrebleu.metrics import BLEU
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    from transfer_probe.metrics import metric_module_path
    from transfer_probe.run.probe import isolated_state

    timing = {}
    tok = snapshot.load_tokenizer()
    config = snapshot.load_config()
    is_ed = bool(config.is_encoder_decoder)
    eos = tok.eos_token_id
    with isolated_state(num_threads=cfg.num_threads):
        t = time.perf_counter()
        # Tokenize this probe's data (the same features run_probe builds, but every probe anew).
        prep_order = np.random.default_rng(task.shuffle_seed).permutation(len(task.train_pairs)).tolist()
        train_pairs = [task.train_pairs[i] for i in prep_order[:size]]

        def features(pairs):
            feats = []
            for s, tgt in pairs:
                if is_ed:
                    src = tok(s, add_special_tokens=False)["input_ids"] + [eos]
                    feats.append({"input_ids": src, "labels": tok(tgt, add_special_tokens=False)["input_ids"] + [eos]})
                else:
                    p = tok(task.prompt_template.format(source=s), add_special_tokens=False)["input_ids"]
                    y = tok(task.target_template.format(target=tgt), add_special_tokens=False)["input_ids"] + [eos]
                    feats.append({"input_ids": p + y, "labels": [-100] * len(p) + y})
            return feats

        train, test = features(train_pairs), features(task.test_pairs)
        model = snapshot.load_model()
        args = TrainingArguments(
            output_dir="/tmp/bench_probe_naive", max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
            per_device_eval_batch_size=cfg.eval_batch_size, learning_rate=cfg.learning_rate,
            lr_scheduler_type=cfg.lr_scheduler_type, seed=cfg.seed, data_seed=cfg.seed, report_to="none",
            save_strategy="no", eval_strategy="no", logging_strategy="no", disable_tqdm=True, use_cpu=True,
            remove_unused_columns=False, dataloader_pin_memory=False,
        )
        trainer = Trainer(model=model, args=args, train_dataset=train,
                          data_collator=DataCollatorForSeq2Seq(tok, model=model if is_ed else None, padding=True))
        trainer.remove_callback(PrinterCallback)
        trainer.train()
        timing["finetune"] = time.perf_counter() - t

        t = time.perf_counter()
        ce = trainer.evaluate(eval_dataset=test)["eval_loss"]  # mean of per-batch means
        timing["cross_entropy"] = time.perf_counter() - t

        t = time.perf_counter()
        model.eval()
        tok.padding_side = "left"
        hyps = []
        prompts = ([s for s, _ in task.test_pairs] if is_ed else
                   [task.prompt_template.format(source=s) for s, _ in task.test_pairs])
        max_new = cfg.max_new_tokens or task.prepare(tok, config).max_new_tokens
        with torch.no_grad():
            for b in range(0, len(prompts), cfg.eval_batch_size):
                batch = prompts[b: b + cfg.eval_batch_size]
                if is_ed:
                    batch = [x + tok.eos_token for x in batch]
                enc = tok(batch, return_tensors="pt", padding=True, add_special_tokens=False)
                out = model.generate(**enc, max_new_tokens=max_new, do_sample=False, num_beams=1,
                                     eos_token_id=eos, pad_token_id=tok.pad_token_id)
                new = out[:, 1:] if is_ed else out[:, enc["input_ids"].shape[1]:]
                hyps += [h.strip() for h in tok.batch_decode(new, skip_special_tokens=True)]
        tok.padding_side = "right"
        timing["generation"] = time.perf_counter() - t

        t = time.perf_counter()
        refs = [tgt for _, tgt in task.test_pairs]
        bleu = evaluate.load(metric_module_path("bleu")).compute(predictions=hyps, references=refs)["score"]
        chrf = evaluate.load(metric_module_path("chrf")).compute(predictions=hyps, references=refs)["score"]
        timing["scoring"] = time.perf_counter() - t
        t = time.perf_counter()
        rng = random.Random(0)
        scores = []
        for _ in range(bootstrap):  # interval by rescoring resampled strings
            idx = [rng.randrange(len(hyps)) for _ in hyps]
            scores.append(BLEU().corpus_score([hyps[i] for i in idx], [[refs[i] for i in idx]]).score)
        timing["bootstrap"] = time.perf_counter() - t
    return {"bleu": bleu, "chrf": chrf, "cross_entropy": ce, "timing": timing}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--archs", nargs="+", default=["gpt2", "t5"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--train-size", type=int, default=1000)
    ap.add_argument("--test-size", type=int, default=200)
    ap.add_argument("--df", type=int, default=256)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--json", default=None, help="write all measurements here")
    ap.add_argument("--ensemble-bound", action="store_true",
                    help="only: CPU cost of a floor step at batch b and 4b (the best a batched 4-ensemble could do)")
    args = ap.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from transfer_probe.run.probe import FinetuneConfig, ProbeJob, run_probe
    from transfer_probe.run.snapshot import Snapshot, count_parameters
    from transfer_probe.tasks import TranslationTask

    torch.set_num_threads(args.threads)
    train, test = number_pairs(args.train_size, args.test_size)
    tok = tokenizer_for(train + test)
    task = TranslationTask(train, test, source="en", target="fr", finetune_sizes=[args.df])
    cfg = FinetuneConfig(max_steps=args.steps, learning_rate=1e-3, batch_size=16, eval_batch_size=64,
                         bootstrap=args.bootstrap, device="cpu", num_threads=args.threads)
    results = {}
    for arch in args.archs:
        conf = model_config(arch, tok)
        auto = AutoModelForSeq2SeqLM if conf.is_encoder_decoder else AutoModelForCausalLM
        torch.manual_seed(0)
        model = auto.from_config(conf)
        snap = Snapshot(tokens=0, step=0, params=count_parameters(model), config=conf,
                        state_dict={k: v.clone() for k, v in model.state_dict().items()}, tokenizer=tok)
        job = ProbeJob(snapshot=snap, task=task, finetune_size=args.df, config=cfg)
        if args.ensemble_bound:
            eb = ensemble_bound(snap, task, args.df, cfg)
            b, kb = statistics.median(eb["b"]), statistics.median(eb["kb"])
            print(f"{arch}: floor step CPU ms, batch {cfg.batch_size}: {b:.2f}, batch {4 * cfg.batch_size}: {kb:.2f} "
                  f"({kb / b:.2f}x; runs {[round(x, 1) for x in eb['b']]} / {[round(x, 1) for x in eb['kb']]}); "
                  f"vmap(grad(functional_call)): {eb['vmap']} (one plain forward+backward {eb['fwd_bwd_1']:.1f} ms)")
            continue
        # Warm-up (imports, first tokenization, evaluate module load) of both, not timed.
        run_probe(replace(job, config=replace(cfg, max_steps=2)))
        straightforward_probe(snap, task, args.df, replace(cfg, max_steps=2), 2)
        finetunes_side_by_side(snap, task, args.df, replace(cfg, max_steps=2), 0)
        ours, naive, fts = [], [], []
        for r in range(args.repeats):
            fts.append(finetunes_side_by_side(snap, task, args.df, cfg, r))
            for way in ("ours", "straightforward")[:: -1 if r % 2 else 1]:
                t, c = time.perf_counter(), time.process_time()
                if way == "ours":
                    rec = run_probe(job)
                    ours.append({"total": time.perf_counter() - t, "cpu": time.process_time() - c, **rec["timing"],
                                 "bleu": rec["metrics"]["bleu"], "chrf": rec["metrics"]["chrf"],
                                 "ce_value": rec["metrics"]["cross_entropy"]})
                else:
                    res = straightforward_probe(snap, task, args.df, cfg, args.bootstrap)
                    naive.append({"total": time.perf_counter() - t, "cpu": time.process_time() - c, **res["timing"],
                                  "bleu": res["bleu"], "chrf": res["chrf"], "ce_value": res["cross_entropy"]})
            ft = fts[-1]
            print(f"{arch} run {r}: ours {ours[-1]['total']:.2f}s BLEU {ours[-1]['bleu']:.2f} | "
                  f"straightforward {naive[-1]['total']:.2f}s BLEU {naive[-1]['bleu']:.2f} | fine-tune CPU s: floor "
                  f"{ft['floor']['cpu']:.2f} ours {ft['ours']['cpu']:.2f} trainer {ft['trainer']['cpu']:.2f} "
                  f"(max |ours - trainer| {ft['maxdiff']:.2g})", file=sys.stderr)
        results[arch] = {"ours": ours, "straightforward": naive, "finetunes": fts, "params": snap.params}

    def med(rows, key):
        return statistics.median(r[key] for r in rows)

    parts = ["finetune", "cross_entropy", "generation", "scoring"]
    print(f"\nD_f={args.df}, {args.steps} steps x batch 16, test {args.test_size} sentences, "
          f"{args.threads} thread(s), bootstrap {args.bootstrap}; median of {args.repeats}\n")
    print("| model | way | fine-tune | CE | generation | scoring (+CI) | total | CPU total | BLEU | chrF |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for arch, res in results.items():
        for way in ("ours", "straightforward"):
            rows = res[way]
            scoring = med(rows, "scoring") + (med(rows, "bootstrap") if way == "straightforward" else 0.0)
            cells = [f"{med(rows, p):.2f}" for p in parts[:3]] + [f"{scoring:.3f}", f"{med(rows, 'total'):.2f}", f"{med(rows, 'cpu'):.2f}",
                                                                    f"{med(rows, 'bleu'):.1f}", f"{med(rows, 'chrf'):.1f}"]
            print(f"| {arch} ({res['params']['total'] / 1e3:.0f}k) | {way} | " + " | ".join(cells) + " |")
        ratio = med(res["ours"], "total") / med(res["straightforward"], "total")
        cpu_ratio = med(res["ours"], "cpu") / med(res["straightforward"], "cpu")
        eval_ours = sum(med(res["ours"], p) for p in parts[1:])
        eval_naive = sum(med(res["straightforward"], p) for p in parts[1:]) + med(res["straightforward"], "bootstrap")
        no_ci = (med(res["ours"], "total") - med(res["ours"], "scoring")) / (
            med(res["straightforward"], "total") - med(res["straightforward"], "scoring")
            - med(res["straightforward"], "bootstrap"))
        print(f"| {arch} | ratio ours/straightforward | total {ratio:.2f} (CPU {cpu_ratio:.2f}); after the "
              f"fine-tune {eval_ours / eval_naive:.2f}; total without any scoring {no_ci:.2f} ||||||||")
    print("\nThe fine-tune alone, side by side on fresh copies (seconds, median; ratio to the floor):\n")
    print("| model | floor wall | floor CPU | ours wall | ours CPU | ours/floor (wall, CPU) | nested Trainer wall | "
          "CPU | Trainer/floor (wall, CPU) | max abs weight diff ours vs Trainer |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for arch, res in results.items():
        fts = res["finetunes"]

        def fmed(way, key, fts=fts):
            return statistics.median(f[way][key] for f in fts)

        cells = []
        for way in ("floor", "ours", "trainer"):
            cells += [f"{fmed(way, 'wall'):.2f}", f"{fmed(way, 'cpu'):.2f}"]
            if way != "floor":
                cells.append(f"{fmed(way, 'wall') / fmed('floor', 'wall'):.2f}, "
                             f"{fmed(way, 'cpu') / fmed('floor', 'cpu'):.2f}")
        cells.append(f"{max(f['maxdiff'] for f in fts):.2g}")
        print(f"| {arch} | " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "results": results}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
