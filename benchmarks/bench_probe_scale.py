"""The probe at a size where arithmetic matters (issue 16, items 3 and 4): a ~13M-parameter GPT-2 on CPU.

    python benchmarks/bench_probe_scale.py --steps 40     # figures for benchmarks/README.md (~80 s, idle cores)
    python benchmarks/bench_probe_scale.py --steps 6 --test-size 64 --rounds 1   # smoke run

(3) Utilisation. The probe's own fine-tune (``transfer_probe.run.finetune.finetune`` inside
``isolated_state``, what ``run_probe`` calls) on a GPT-2 built from config (offline, tokenizer trained
locally as in tests/conftest.py), against the machine's fp32 matmul rate from a ``torch.mm``
micro-benchmark on square matrices of the model's width, measured in the same process before and
after. Training FLOPs per step are counted as

    6 * N_mm * P  +  12 * n_layer * d * sum_b(B_b * T_b^2)

where ``N_mm`` is every weight that enters a matrix product (the blocks' weights and the tied LM head
``V * d``; not the position embeddings, biases or norms), ``P`` the tokens of the step's padded batch
(what the machine multiplies; the unpadded count is printed as well) and the second term the
attention scores and their weighted sum (forward 4*d*T per token per layer, times 3 for training).
Where the rest goes: the same step timed phase by phase (collate, forward, backward, clip, AdamW)
and a ``torch.profiler`` table of the operators' own CPU time, with the matrix products' share.

(4) Generation for BLEU. The probe's ``generate`` (``model.generate`` on length-sorted, left-padded
batches, dynamic KV cache) against the same batches with ``cache_implementation="static"`` (on CPU
transformers does not auto-compile, so this is the static cache alone), alternating, outputs compared
token for token; and the third way, fewer test sentences: generation seconds and sacrebleu's own
bootstrap 95% half-width (``BLEU().corpus_score(..., n_bootstrap=1000)``, averaged over random
subsets) against n.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import replace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench_probe import number_pairs, tokenizer_for  # noqa: E402 - benchmarks/ is the script's dir


def gpt2_config(tok, width: int, layers: int):
    from transformers import GPT2Config

    return GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=width, n_layer=layers, n_head=width // 64,
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=tok.eos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


def matmul_weights(model) -> int:
    """Weights that enter a matrix product: 2-D block weights plus the (tied) LM head."""
    blocks = sum(p.numel() for n, p in model.transformer.h.named_parameters() if p.dim() == 2)
    return blocks + model.lm_head.weight.numel()


def mm_rate(n: int, seconds: float = 1.5) -> float:
    """FLOP/s of ``torch.mm`` on square fp32 n x n matrices (2 n^3 per product), best of 5 bursts."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    reps = max(1, int(seconds / 5 * 1e11 / (2 * n ** 3)))  # ~seconds/5 per burst at 100 GFLOP/s
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b)
        best = max(best, 2 * n ** 3 * reps / (time.perf_counter() - t))
    return best


def step_flops(batches, model) -> tuple[float, int, int]:
    """(training FLOPs, padded tokens, real tokens) of ``batches`` by the module docstring's formula."""
    c = model.config
    n_mm = matmul_weights(model)
    flops, padded, real = 0.0, 0, 0
    for features in batches:
        width = max(len(f["input_ids"]) for f in features)
        padded += len(features) * width
        real += sum(len(f["input_ids"]) for f in features)
        flops += 6 * n_mm * len(features) * width + 12 * c.n_layer * c.n_embd * len(features) * width ** 2
    return flops, padded, real


def probe_finetune(snapshot, features, pad, cfg) -> tuple[float, float, object]:
    """The probe's fine-tune on a fresh copy: (wall s, CPU s, the fine-tuned model)."""
    from transfer_probe.run.finetune import finetune
    from transfer_probe.run.probe import isolated_state

    model = snapshot.load_model(seed=cfg.seed)
    with isolated_state(num_threads=cfg.num_threads):
        t, c = time.perf_counter(), time.process_time()
        finetune(model, features, pad, cfg, cfg.seed)
        return time.perf_counter() - t, time.process_time() - c, model


def phase_breakdown(snapshot, batches, pad, cfg) -> dict:
    """The probe's step (collate, forward, backward, clip at 1.0, fused AdamW, zero_grad) timed phase by
    phase on a fresh copy, in seconds summed over ``batches``."""
    import torch

    from transfer_probe.run.finetune import MAX_GRAD_NORM, Collator
    from transfer_probe.run.probe import isolated_state

    model = snapshot.load_model(seed=cfg.seed)
    collate = Collator(pad)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, fused=True)
    out = dict.fromkeys(("collate", "forward", "backward", "clip", "optimizer"), 0.0)
    with isolated_state(num_threads=cfg.num_threads):
        model.train()
        for features in batches:
            t0 = time.perf_counter()
            batch = collate(features)
            t1 = time.perf_counter()
            loss = model(**batch).loss
            t2 = time.perf_counter()
            loss.backward()
            t3 = time.perf_counter()
            torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
            t4 = time.perf_counter()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            t5 = time.perf_counter()
            for key, a, b in (("collate", t0, t1), ("forward", t1, t2), ("backward", t2, t3), ("clip", t3, t4),
                              ("optimizer", t4, t5)):
                out[key] += b - a
    return out


_MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def profile_ops(snapshot, batches, pad, cfg, top: int = 10) -> tuple[list, float, float]:
    """Operators by own CPU time over the probe's step on ``batches`` (torch.profiler): the ``top``
    rows (name, seconds), the matrix products' seconds and the total of all operators' own time."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from transfer_probe.run.finetune import MAX_GRAD_NORM, Collator
    from transfer_probe.run.probe import isolated_state

    model = snapshot.load_model(seed=cfg.seed)
    collate = Collator(pad)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, fused=True)
    with isolated_state(num_threads=cfg.num_threads), profile(activities=[ProfilerActivity.CPU]) as prof:
        for features in batches:
            model(**collate(features)).loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    rows = sorted(((e.key, e.self_cpu_time_total / 1e6) for e in prof.key_averages()), key=lambda r: -r[1])
    mm = sum(s for k, s in rows if k in _MATMUL_OPS)
    return rows[:top], mm, sum(s for _, s in rows)


def generate_variant(model, prompts, *, eos, pad, max_new, batch_size, **extra) -> list[list[int]]:
    """``transfer_probe.run.probe.generate`` for a decoder-only model, with ``extra`` passed to
    ``model.generate`` (``cache_implementation="static"``); the same sorting, padding and cutting."""
    import torch

    from transfer_probe.metrics import _pad
    from transfer_probe.run.probe import _cut

    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out = [[] for _ in prompts]
    model.eval()
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            idx = order[b: b + batch_size]
            ids, mask = _pad([list(prompts[i]) for i in idx], pad, "cpu", left=True)
            gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
                                 eos_token_id=eos, pad_token_id=pad, **extra)
            for i, row in zip(idx, _cut(gen[:, ids.shape[1]:].tolist(), eos), strict=True):
                out[i] = row
    return out


def utilisation(snapshot, features, pad, cfg, width: int, thread_counts, flops: float, rounds: int = 2) -> dict:
    """Per thread count: the probe's fine-tune ``rounds`` times, each between two ``torch.mm`` rate
    measurements at the same thread count (thread counts alternate, the order reversed every other
    round, after a 2-step warm-up each), and each run's utilisation against the mean of its two
    rates; medians, and a fine-tuned model."""
    import torch

    out = {t: {"wall": [], "cpu": [], "rates": [], "util": []} for t in thread_counts}
    for t in thread_counts:
        probe_finetune(snapshot, features, pad, replace(cfg, max_steps=2, num_threads=t))
    for r in range(rounds):
        for t in list(thread_counts)[:: -1 if r % 2 else 1]:
            torch.set_num_threads(t)
            before = mm_rate(width)
            wall, cpu, model = probe_finetune(snapshot, features, pad, replace(cfg, num_threads=t))
            after = mm_rate(width)
            o = out[t]
            o["wall"].append(wall)
            o["cpu"].append(cpu)
            o["rates"] += [before, after]
            o["util"].append(flops / wall / ((before + after) / 2))
            print(f"threads {t}, round {r}: fine-tune {wall:.2f} s wall, {cpu:.2f} s CPU; mm {before / 1e9:.0f} / "
                  f"{after / 1e9:.0f} GFLOP/s; utilisation {o['util'][-1]:.2f}; load {os.getloadavg()}", file=sys.stderr)
    for t, o in out.items():
        torch.set_num_threads(t)
        o["big"] = mm_rate(4 * width)
    res = {t: {"wall": statistics.median(o["wall"]), "cpu": statistics.median(o["cpu"]),
               "rate": statistics.median(o["rates"]), "rates": [round(x / 1e9) for x in o["rates"]],
               "util": statistics.median(o["util"]), "utils": [round(x, 2) for x in o["util"]], "big": o["big"]}
           for t, o in out.items()}
    return res, model


def generation_side_by_side(model, prepared, cfg, rounds: int) -> dict:
    """Seconds of the probe's ``generate`` and of the static-cache variant, alternating, and whether
    their outputs are identical."""
    from transfer_probe.run.probe import generate, isolated_state

    kw = dict(eos_token_id=prepared.eos_token_id, pad_token_id=prepared.pad_token_id,
              max_new_tokens=prepared.max_new_tokens, batch_size=cfg.eval_batch_size)
    vkw = dict(eos=prepared.eos_token_id, pad=prepared.pad_token_id, max_new=prepared.max_new_tokens,
               batch_size=cfg.eval_batch_size)
    ways = {"dynamic (probe)": lambda: generate(model, prepared.prompts, **kw),
            "static cache": lambda: generate_variant(model, prepared.prompts, cache_implementation="static", **vkw)}
    times = {k: [] for k in ways}
    outs = {}
    with isolated_state(num_threads=cfg.num_threads):
        for name, fn in ways.items():
            outs[name] = fn()  # warm-up
        for r in range(rounds):
            for name in list(ways)[:: -1 if r % 2 else 1]:
                t = time.perf_counter()
                outs[name] = ways[name]()
                times[name].append(time.perf_counter() - t)
    return {"times": times, "identical": outs["dynamic (probe)"] == outs["static cache"],
            "hypotheses": outs["dynamic (probe)"]}


def width_vs_n(hypotheses, references, sizes, subsets: int = 8, resamples: int = 1000) -> dict:
    """sacrebleu's bootstrap 95% half-width of BLEU, mean over ``subsets`` random test subsets of each size."""
    import numpy as np
    from sacrebleu.metrics import BLEU

    rng = np.random.default_rng(0)
    out = {}
    for n in sizes:
        widths, scores = [], []
        for _ in range(subsets if n < len(hypotheses) else 1):
            idx = rng.choice(len(hypotheses), size=n, replace=False)
            res = BLEU().corpus_score([hypotheses[i] for i in idx], [[references[i] for i in idx]],
                                      n_bootstrap=resamples)
            widths.append(res._ci)
            scores.append(res.score)
        out[n] = (float(np.mean(widths)), float(np.mean(scores)))
    return out


def generation_vs_n(model, prepared, cfg, sizes) -> dict:
    """Seconds of the probe's ``generate`` on the first n test prompts, for each n."""
    from transfer_probe.run.probe import generate, isolated_state

    kw = dict(eos_token_id=prepared.eos_token_id, pad_token_id=prepared.pad_token_id,
              max_new_tokens=prepared.max_new_tokens, batch_size=cfg.eval_batch_size)
    out = {}
    with isolated_state(num_threads=cfg.num_threads):
        for n in sizes:
            t = time.perf_counter()
            generate(model, prepared.prompts[:n], **kw)
            out[n] = time.perf_counter() - t
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--breakdown-steps", type=int, default=8)
    ap.add_argument("--df", type=int, default=256)
    ap.add_argument("--test-size", type=int, default=512)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts for (3); (4) uses the first")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of the generation comparison")
    args = ap.parse_args(argv)

    import torch
    from transformers import GPT2LMHeadModel

    from transfer_probe.run.finetune import batches
    from transfer_probe.run.probe import FinetuneConfig
    from transfer_probe.run.snapshot import Snapshot, count_parameters
    from transfer_probe.tasks import TranslationTask

    torch.set_num_threads(args.threads[0])
    train, test = number_pairs(1000, args.test_size)
    tok = tokenizer_for(train + test)
    task = TranslationTask(train, test, source="en", target="fr", finetune_sizes=[args.df])
    cfg = FinetuneConfig(max_steps=args.steps, learning_rate=1e-3, batch_size=16, eval_batch_size=64,
                         device="cpu", num_threads=args.threads[0])
    torch.manual_seed(0)
    model = GPT2LMHeadModel(gpt2_config(tok, args.width, args.layers))
    snap = Snapshot(tokens=0, step=0, params=count_parameters(model), config=model.config,
                    state_dict={k: v.clone() for k, v in model.state_dict().items()}, tokenizer=tok)
    prepared = task.prepare(tok, model.config)
    indices = task.train_indices(prepared, args.df, repeat=0, seed=cfg.seed, resample=False)
    features = [prepared.train[i] for i in indices]
    pad = prepared.pad_token_id
    stream = batches(features, cfg.batch_size, cfg.seed, cfg.train_sampling)
    steps = [next(stream) for _ in range(args.steps)]  # the fine-tune's own batches, in its order
    flops, padded, real = step_flops(steps, model)
    print(f"GPT-2 {args.layers}x{args.width}: {snap.params['total'] / 1e6:.2f}M parameters, "
          f"N_mm = {matmul_weights(model) / 1e6:.2f}M; {args.steps} steps x batch {cfg.batch_size}: "
          f"{padded} padded tokens ({real} real, {padded / args.steps:.0f} per step); "
          f"{flops / args.steps / 1e9:.2f} GFLOP per step; threads {args.threads}; load {os.getloadavg()}",
          file=sys.stderr)

    t0 = time.perf_counter()
    util, tuned = utilisation(snap, features, pad, cfg, args.width, args.threads, flops)
    cfg = replace(cfg, num_threads=args.threads[0])
    torch.set_num_threads(args.threads[0])
    phases = phase_breakdown(snap, steps[: args.breakdown_steps], pad, cfg)
    top, mm_s, op_s = profile_ops(snap, steps[: args.breakdown_steps], pad, cfg)
    bflops, _, _ = step_flops(steps[: args.breakdown_steps], model)
    mm_flops = bflops - sum(12 * model.config.n_layer * model.config.n_embd * len(f) *
                            max(len(x["input_ids"]) for x in f) ** 2 for f in steps[: args.breakdown_steps])
    print(f"[(3) took {time.perf_counter() - t0:.0f} s; load {os.getloadavg()}]", file=sys.stderr)

    print(f"\n## (3) utilisation: GPT-2 {args.layers}x{args.width} ({snap.params['total'] / 1e6:.1f}M), "
          f"{args.steps} steps x batch {cfg.batch_size}; {flops / 1e9:.1f} GFLOP counted ({padded} padded tokens, "
          f"{real} real)\n")
    print(f"| threads | torch.mm {args.width}^2 GFLOP/s | torch.mm {4 * args.width}^2 | probe fine-tune wall s | CPU s "
          "| achieved GFLOP/s | utilisation (padded tokens; runs) | (real tokens) |\n|---|---|---|---|---|---|---|---|")
    for threads, u in util.items():
        achieved = flops / u["wall"]
        print(f"| {threads} | {u['rate'] / 1e9:.1f} (runs {u['rates']}) | {u['big'] / 1e9:.1f} | {u['wall']:.2f} | "
              f"{u['cpu']:.2f} | {achieved / 1e9:.1f} | **{u['util']:.2f}** ({u['utils']}) | "
              f"{u['util'] * real / padded:.2f} |")
    grouped = batches(features, cfg.batch_size, cfg.seed, "group_by_length")
    _, padded_grouped, _ = step_flops([next(grouped) for _ in range(args.steps)], model)
    print(f"padding: {padded - real} of {padded} tokens ({1 - real / padded:.0%}) in the probe's random order; "
          f"{padded_grouped} padded tokens for the same {args.steps} steps with train_sampling='group_by_length'")
    rate = util[args.threads[0]]["rate"]
    total = sum(phases.values())
    print(f"\nphases over {args.breakdown_steps} steps ({total:.2f} s, {total / args.breakdown_steps * 1e3:.0f} ms/step): "
          + ", ".join(f"{k} {v / total:.0%}" for k, v in phases.items()))
    print(f"profiler: operators' own CPU time {op_s:.2f} s, of which matrix products {mm_s:.2f} s ({mm_s / op_s:.0%}); "
          f"matrix products run at {mm_flops / mm_s / 1e9:.1f} GFLOP/s ({mm_flops / mm_s / rate:.2f} of the mm rate)")
    print("| operator | own CPU s | share |\n|---|---|---|")
    for name, s in top:
        print(f"| {name} | {s:.3f} | {s / op_s:.0%} |")

    t0 = time.perf_counter()
    side = generation_side_by_side(tuned, prepared, cfg, args.rounds)
    hyps = [h.strip() for h in tok.batch_decode(side["hypotheses"], skip_special_tokens=True)]
    sizes = [n for n in (32, 64, 128, 256, 512) if n <= len(hyps)]
    widths = width_vs_n(hyps, prepared.references, sizes)
    gen_n = generation_vs_n(tuned, prepared, cfg, sizes)
    print(f"[(4) took {time.perf_counter() - t0:.0f} s; load {os.getloadavg()}]", file=sys.stderr)
    print(f"\n## (4) generation, {len(hyps)} test prompts, batch {cfg.eval_batch_size}, "
          f"max_new_tokens {prepared.max_new_tokens}\n")
    dyn = statistics.median(side["times"]["dynamic (probe)"])
    for name, ts in side["times"].items():
        med = statistics.median(ts)
        print(f"{name}: {med:.2f} s (runs {[round(t, 2) for t in ts]}), ratio to the probe's {med / dyn:.2f}")
    print(f"outputs identical: {side['identical']}")
    print("\n| test sentences n | BLEU (mean over subsets) | sacrebleu 95% half-width | generation s |\n|---|---|---|---|")
    for n in sizes:
        print(f"| {n} | {widths[n][1]:.1f} | {widths[n][0]:.2f} | {gen_n[n]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
