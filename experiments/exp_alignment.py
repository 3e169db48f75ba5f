"""Scratch experiment: does pre-training corpus alignment show in en->fr number-word probes?

Standalone (plain transformers + sacrebleu), so it ran before the project's probe code existed.
    python experiments/exp_alignment.py --corpus paired --pair-frac 0.1 --out /tmp/exp/x.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import re
import sysconfig
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import sacrebleu  # noqa: E402
import torch  # noqa: E402
from num2words import num2words  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import (  # noqa: E402
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

torch.set_num_threads(1)
EOS = "</s>"


def en(n):
    return re.sub(r"\s+", " ", num2words(n, lang="en").replace(",", "").replace(" and ", " ")).strip()


def fr(n):
    return num2words(n, lang="fr")


def lognum(rng):
    return int(10 ** rng.uniform(0, 6))


def make_task(seed=0, n_test=200, n_train=2000):
    rng = random.Random(1234)
    test = set()
    while len(test) < n_test:
        test.add(lognum(rng))
    test = sorted(test)
    tr = []
    seen = set(test)
    rng2 = random.Random(99 + seed)
    while len(tr) < n_train:
        n = lognum(rng2)
        if n in seen:
            continue
        seen.add(n)
        tr.append(n)
    return [(en(n), fr(n)) for n in tr], [(en(n), fr(n)) for n in test], set(test)


def corpus_lines(kind, n_chars, exclude, pair_frac=0.1, pair_style="sent", seed=0):
    rng = random.Random(seed + 7)
    out, total = [], 0
    if kind == "code":
        root = Path(sysconfig.get_paths()["stdlib"])
        files = sorted(p for p in root.glob("*.py"))
        rng.shuffle(files)
        for p in files:
            try:
                t = p.read_text(encoding="utf-8")
            except Exception:
                continue
            out.append(t)
            total += len(t)
            if total >= n_chars:
                break
        return out

    def num():
        while True:
            n = lognum(rng)
            if n not in exclude:
                return n

    while total < n_chars:
        r = rng.random()
        if kind == "english":
            line = " ".join(en(num()) for _ in range(rng.randint(1, 3)))
        elif kind in ("mono", "paired"):
            if kind == "paired" and r < pair_frac:
                n = num()
                if pair_style == "eq":
                    line = f"{en(n)} = {fr(n)}"
                else:
                    t = rng.choice(
                        [
                            "{e} is {f} in french.",
                            "in french, {e} is {f}.",
                            "{f} means {e}.",
                            "{e} ({f})",
                        ]
                    )
                    line = t.format(e=en(n), f=fr(n))
            elif rng.random() < 0.5:
                line = " ".join(en(num()) for _ in range(rng.randint(1, 3)))
            else:
                line = " ".join(fr(num()) for _ in range(rng.randint(1, 3)))
        else:
            raise ValueError(kind)
        out.append(line)
        total += len(line) + 1
    return out


def train_tokenizer(texts, vocab=2048):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=["<pad>", "<s>", EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, tr)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token=EOS, pad_token="<pad>")


class Blocks(torch.utils.data.Dataset):
    def __init__(self, ids, block):
        n = len(ids) // block
        self.x = torch.tensor(ids[: n * block]).view(n, block)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"input_ids": self.x[i], "labels": self.x[i]}


def encode_pairs(tok, pairs):
    out = []
    for e, f in pairs:
        # Lead <s> as in pre-training lines (and as the project's TextPairTask does).
        p = [tok.bos_token_id] + tok(e + " =")["input_ids"]
        t = tok(" " + f)["input_ids"] + [tok.eos_token_id]
        out.append((p, t))
    return out


def finetune_and_eval(model, tok, train_enc, test_enc, test_refs, steps, lr, bs, seed):
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    pad = tok.pad_token_id
    for _ in range(steps):
        batch = [train_enc[rng.randrange(len(train_enc))] for _ in range(min(bs, len(train_enc)))]
        L = max(len(p) + len(t) for p, t in batch)
        ids = torch.full((len(batch), L), pad)
        lab = torch.full((len(batch), L), -100)
        att = torch.zeros((len(batch), L), dtype=torch.long)
        for i, (p, t) in enumerate(batch):
            s = p + t
            ids[i, : len(s)] = torch.tensor(s)
            lab[i, len(p) : len(s)] = torch.tensor(t)
            att[i, : len(s)] = 1
        loss = model(input_ids=ids, attention_mask=att, labels=lab).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    # teacher-forced CE on targets
    tot, cnt = 0.0, 0
    with torch.no_grad():
        for p, t in test_enc:
            s = torch.tensor([p + t])
            logits = model(input_ids=s).logits[0, len(p) - 1 : -1]
            tot += torch.nn.functional.cross_entropy(logits, torch.tensor(t), reduction="sum").item()
            cnt += len(t)
        # greedy generation, batched by prompt length (no padding)
        groups = {}
        for i, (p, _) in enumerate(test_enc):
            groups.setdefault(len(p), []).append(i)
        hyps = [None] * len(test_enc)
        maxnew = max(len(t) for _, t in test_enc) + 4
        for _, idx in groups.items():
            x = torch.tensor([test_enc[i][0] for i in idx])
            g = model.generate(
                input_ids=x,
                attention_mask=torch.ones_like(x),
                max_new_tokens=maxnew,
                do_sample=False,
                eos_token_id=tok.eos_token_id,
                pad_token_id=pad,
            )
            for j, i in enumerate(idx):
                out = g[j, x.shape[1] :].tolist()
                if tok.eos_token_id in out:
                    out = out[: out.index(tok.eos_token_id)]
                hyps[i] = tok.decode(out, skip_special_tokens=True).strip()
    if os.environ.get("EXP_SHOW"):
        for h, r in list(zip(hyps, test_refs, strict=True))[:4]:
            print(f"    hyp {h!r} | ref {r!r}", flush=True)
    bleu = sacrebleu.corpus_bleu(hyps, [test_refs]).score
    em = sum(h == r for h, r in zip(hyps, test_refs, strict=True)) / len(hyps)
    return bleu, tot / cnt, em


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default="paired")
    ap.add_argument("--pair-frac", type=float, default=0.1)
    ap.add_argument("--pair-style", default="sent")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--probe-steps", default="0,15,40,100,250,600,1000")
    ap.add_argument("--pt-lr", type=float, default=1e-3)
    ap.add_argument("--pt-sched", default="constant_with_warmup")
    ap.add_argument("--df", default="50")
    ap.add_argument("--ft-steps", type=int, default=60)
    ap.add_argument("--ft-lr", type=float, default=3e-4)
    ap.add_argument("--ft-seeds", type=int, default=2)
    ap.add_argument("--n-test", type=int, default=200)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    t0 = time.time()
    train_pairs, test_pairs, test_nums = make_task(a.seed, a.n_test)
    block, bs = 128, 16
    n_chars = int(a.steps * bs * block * 4.5)  # rough chars per token; trimmed below
    lines = corpus_lines(a.corpus, n_chars, test_nums, a.pair_frac, a.pair_style, a.seed)
    # Shared tokenizer: trained on a fixed mix of all corpora so every run uses the same vocabulary.
    mix = (
        corpus_lines("paired", 400_000, test_nums, 0.1, "sent", 123)
        + corpus_lines("code", 400_000, test_nums)
        + [e for e, _ in train_pairs]
        + [f for _, f in train_pairs]
    )
    tok = train_tokenizer(mix)
    ids = []
    for line in lines:
        ids.extend([tok.bos_token_id] + tok(line)["input_ids"] + [tok.eos_token_id])
    need = a.steps * bs * block
    if len(ids) < need:
        ids = ids * (need // len(ids) + 1)
    ids = ids[:need]
    ds = Blocks(ids, block)
    print(f"data {time.time() - t0:.1f}s, blocks {len(ds)}", flush=True)
    cfg = GPT2Config(
        vocab_size=len(tok),
        n_positions=block,
        n_embd=a.width,
        n_layer=a.layers,
        n_head=4,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(a.seed)
    model = GPT2LMHeadModel(cfg)
    test_enc = encode_pairs(tok, test_pairs)
    refs = [f for _, f in test_pairs]
    dfs = [int(x) for x in a.df.split(",")]
    results = []
    probe_steps = {int(s) for s in a.probe_steps.split(",")}

    def probe(m, step):
        for df in dfs:
            tr_enc = encode_pairs(tok, train_pairs[:df])
            vals = []
            for r in range(a.ft_seeds):
                ts = time.time()
                with torch.random.fork_rng(devices=[]):
                    c = copy.deepcopy(m)
                    b, ce, em = finetune_and_eval(c, tok, tr_enc, test_enc, refs, a.ft_steps, a.ft_lr, 32, 1000 * r)
                vals.append((b, ce, em))
                results.append(
                    dict(step=step, tokens=step * bs * block, df=df, repeat=r, bleu=b, ce=ce, em=em, sec=time.time() - ts)
                )
            mb = sum(v[0] for v in vals) / len(vals)
            mc = sum(v[1] for v in vals) / len(vals)
            print(
                f"step {step:5d} tok {step * bs * block:8d} df {df:4d} BLEU {mb:5.1f} "
                f"({' '.join(f'{v[0]:.1f}' for v in vals)}) CE {mc:.3f} t={time.time() - t0:.0f}s",
                flush=True,
            )
        Path(a.out).write_text(json.dumps(dict(args=vars(a), results=results), indent=1))

    class CB(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            if 0 in probe_steps:
                probe(model, 0)

        def on_step_end(self, args, state, control, model=None, **kw):
            if state.global_step in probe_steps:
                probe(model, state.global_step)

    targs = TrainingArguments(
        output_dir=f"/tmp/exp_trainer_{os.getpid()}",
        max_steps=a.steps,
        per_device_train_batch_size=bs,
        learning_rate=a.pt_lr,
        lr_scheduler_type=a.pt_sched,
        warmup_steps=20,
        weight_decay=0.0,
        logging_steps=100,
        save_strategy="no",
        report_to=[],
        seed=a.seed,
        dataloader_num_workers=0,
        use_cpu=True,
        disable_tqdm=True,
    )
    Trainer(model=model, args=targs, train_dataset=ds, callbacks=[CB()]).train()
    print(f"done {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
