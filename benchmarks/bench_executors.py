"""How long does probing block the training loop? Inline vs process executor, same run and schedule.

For one tiny GPT-2 pre-training run (offline: number words, a locally trained BPE) with a fixed probe
schedule, measures per executor:

- blocked: seconds the training loop spent inside the callback per probe point (snapshot, submit,
  polling; for ``inline`` the whole probe), i.e. ``TransferProbeCallback.blocked_seconds / points``;
- probe wall time: the probe's own duration (mean of the records' ``seconds`` per point);
- blocked / probe wall time (the goal for ``process``: at most 2%);
- throughput: training steps per second over the training loop (from ``on_train_begin`` to the last
  ``on_step_end``; the wait for outstanding probes at the end is reported apart), relative to the
  same run without the callback.

On a 2-core machine the worker process competes with training for the cores, so the throughput
ratio depends on the machine and its load; the blocked-time ratio does not.

    python benchmarks/bench_executors.py                 # 160 steps, a probe every 40, 2 rounds
    python benchmarks/bench_executors.py --steps 40 --every 20 --finetune-steps 10 --rounds 1   # quick
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def number_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    from num2words import num2words

    rng = random.Random(seed)
    out, seen = [], set()
    while len(out) < n:
        x = min(max(int(10 ** rng.uniform(0, 4)), 1), 9999)
        if x not in seen:
            seen.add(x)
            out.append((num2words(x).replace(",", "").replace(" and ", " "), num2words(x, lang="fr")))
    return out


def build(tmp: Path, seq_len: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from transfer_probe.tasks import TranslationTask

    pairs = number_pairs(1200)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([f"{s} = {t}" for s, t in pairs] * 2, trainer=trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<pad>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>")
    task = TranslationTask(pairs[:400], pairs[400:440], source="en", target="fr", finetune_sizes=[64])
    ids: list[int] = []
    for en, fr in pairs[440:]:
        ids += tokenizer.encode(f"{en} = {fr}") + [tokenizer.eos_token_id]
    ids = ids * 4
    train = [{"input_ids": ids[i:i + seq_len], "labels": ids[i:i + seq_len]}
             for i in range(0, len(ids) - seq_len, seq_len)]
    return tokenizer, task, train


def run(kind: str, tokenizer, task, train, out: Path, args) -> dict:
    import torch
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        default_data_collator,
    )

    from transfer_probe import FinetuneConfig, TransferProbeCallback

    class Clock(TrainerCallback):
        def on_train_begin(self, a, s, c, **kw):
            # Measure the steady state: the process executor's worker start-up (imports, seconds)
            # is a one-off cost paid beside the training's own start-up.
            if probe is not None and hasattr(probe.executor, "wait_ready"):
                probe.executor.wait_ready(300)
            self.t0 = time.perf_counter()

        def on_step_end(self, a, s, c, **kw):
            self.t1 = time.perf_counter()

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=128, n_layer=2,
                                       n_head=4, eos_token_id=tokenizer.eos_token_id,
                                       pad_token_id=tokenizer.pad_token_id))
    clock = Clock()
    callbacks = [clock]
    probe = None
    if kind != "none":
        probe = TransferProbeCallback(
            [task], every_tokens=args.every * args.batch * args.seq_len, executor=kind, baseline=False,
            executor_options={"num_threads": 1, "max_pending": 4} if kind == "process" else None,
            finetune=FinetuneConfig(max_steps=args.finetune_steps, batch_size=16, learning_rate=3e-3,
                                    bootstrap=0, device="cpu", num_threads=1),
            seq_len=args.seq_len, end_timeout=None, output_dir=str(out))
        callbacks.insert(0, probe)  # before the clock: its executor exists when the clock starts
    targs = TrainingArguments(output_dir=str(out), max_steps=args.steps, per_device_train_batch_size=args.batch,
                              learning_rate=1e-3, report_to=[], use_cpu=True, save_strategy="no",
                              logging_steps=10_000, disable_tqdm=True, remove_unused_columns=False, seed=0)
    trainer = Trainer(model=model, args=targs, train_dataset=train, processing_class=tokenizer,
                      data_collator=default_data_collator, callbacks=callbacks)
    trainer.train()
    loop = clock.t1 - clock.t0
    res = {"executor": kind, "steps": args.steps, "loop_seconds": loop, "steps_per_second": args.steps / loop}
    if probe is not None:
        recs = [r for r in probe.records if r.get("pretrained", True)]
        points = len({r["step"] for r in recs})
        wall = sum(r.get("seconds") or 0.0 for r in recs) / max(points, 1)
        # inline: the probe itself happens inside the callback; blocked is everything in on_step_end
        blocked = probe.blocked_seconds / max(points, 1)
        res.update(points=points, failed=sum(r["status"] != "ok" for r in recs), probe_wall_seconds=wall,
                   blocked_seconds_per_probe=blocked, blocked_ratio=blocked / wall if wall else float("nan"),
                   end_wait_seconds=probe.end_wait_seconds,
                   timing_per_probe={k: v / max(points, 1) for k, v in probe.timing.items()})
    return res


def _median_row(rows: list[dict]) -> dict:
    import statistics

    out = dict(rows[0])
    for k, v in rows[0].items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = statistics.median(r[k] for r in rows)
        elif isinstance(v, dict):
            out[k] = {kk: statistics.median(r[k].get(kk, 0.0) for r in rows) for kk in v}
    out["rounds"] = len(rows)
    out["throughput_vs_none_all"] = [round(r["throughput_vs_none"], 3) for r in rows]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=160)
    p.add_argument("--every", type=int, default=40, help="probe every this many steps (as tokens)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--finetune-steps", type=int, default=40)
    p.add_argument("--threads", type=int, default=1, help="torch threads of the training process")
    p.add_argument("--rounds", type=int, default=2, help="repeat the three runs, alternating their order")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as d:
        tokenizer, task, train = build(Path(d), args.seq_len)
        # A first short run warms caches and lazy imports so the "none" baseline is not penalized.
        warm = argparse.Namespace(**{**vars(args), "steps": 5})
        run("none", tokenizer, task, train, Path(d) / "warm", warm)
        # Rounds alternate the executors so a change in the machine's load hits all of them alike;
        # each figure is the median over rounds, and throughput is relative to the same round's "none".
        runs: dict[str, list[dict]] = {"none": [], "inline": [], "process": []}
        for i in range(args.rounds):
            order = ("none", "inline", "process") if i % 2 == 0 else ("process", "inline", "none")
            got = {k: run(k, tokenizer, task, train, Path(d) / f"{k}-{i}", args) for k in order}
            for k, r in got.items():
                r["throughput_vs_none"] = r["steps_per_second"] / got["none"]["steps_per_second"]
                runs[k].append(r)
    rows = [_median_row(runs[k]) for k in ("none", "inline", "process")]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{args.steps} steps x {args.batch} x {args.seq_len} tokens, a probe every {args.every} steps "
          f"(D_f=64, {args.finetune_steps} fine-tuning steps, 40 test sentences), {os.cpu_count()} cores, "
          f"median of {args.rounds} rounds")
    print("| executor | probes | probe wall s | blocked s / probe | blocked / wall | steps/s | vs no probe | end wait s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["executor"] == "none":
            print(f"| none | - | - | - | - | {r['steps_per_second']:.2f} | 1.00 | - |")
            continue
        print(f"| {r['executor']} | {int(r['points'])} | {r['probe_wall_seconds']:.2f} | {r['blocked_seconds_per_probe']:.3f} | "
              f"{100 * r['blocked_ratio']:.1f}% | {r['steps_per_second']:.2f} | {r['throughput_vs_none']:.2f} | "
              f"{r['end_wait_seconds']:.1f} |")
    print(f"throughput vs no probe, per round: inline {rows[1]['throughput_vs_none_all']}, "
          f"process {rows[2]['throughput_vs_none_all']}")
    print()
    print("blocked time per probe, by part (s):")
    for r in rows[1:]:
        parts = ", ".join(f"{k} {v:.3f}" for k, v in sorted(r["timing_per_probe"].items()))
        print(f"- {r['executor']}: {parts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
