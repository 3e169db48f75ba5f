"""Multi-process training: ``torchrun --nproc_per_node 2`` on CPU (gloo), a real subprocess.

Exactly one rank probes (through the process executor), every probe point yields exactly one record,
and no rank hangs (the whole run is under a timeout).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from transfer_probe.store.history import read_history

SCRIPT = textwrap.dedent('''
    import logging, os, sys
    import torch
    from transformers import (GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast, Trainer,
                              TrainingArguments, default_data_collator)
    sys.path.insert(0, os.environ["TP_TESTS_DIR"])
    from _probe_training import SEQ_LEN, lm_examples, quick_finetune
    from transfer_probe import TransferProbeCallback
    from transfer_probe.tasks import TranslationTask

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("transfer_probe").setLevel(logging.INFO)
    tok_dir, data_dir, out_dir = sys.argv[1:4]
    tok = PreTrainedTokenizerFast.from_pretrained(tok_dir)
    task = TranslationTask.from_files(os.path.join(data_dir, "train.jsonl"), os.path.join(data_dir, "test.jsonl"),
                                      source="en", target="fr", finetune_sizes=[32], max_test_examples=16)
    pairs = [(s, t) for s, t in task.train_pairs]
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=64, n_layer=2, n_head=4,
                                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    probe = TransferProbeCallback([task], every_tokens=2 * 4 * 2 * SEQ_LEN, executor="process",
                                  executor_options={"num_threads": 1, "max_pending": 8},
                                  finetune=quick_finetune(), seq_len=SEQ_LEN, end_timeout=180)
    args = TrainingArguments(output_dir=out_dir, max_steps=4, per_device_train_batch_size=4, use_cpu=True,
                             ddp_backend="gloo", report_to=[], save_strategy="no", logging_steps=1000,
                             disable_tqdm=True, remove_unused_columns=False, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=lm_examples(tok, pairs), processing_class=tok,
                      data_collator=default_data_collator, callbacks=[probe])
    trainer.train()
    rank = int(os.environ["RANK"])
    # one file per rank: the two ranks' stdout interleave mid-line (seen in CI), files cannot
    with open(os.path.join(out_dir, f"rank{rank}.txt"), "w") as fh:
        fh.write(f"RANK {rank} world {args.world_size} step {trainer.state.global_step} "
                 f"active_executor {probe.executor is not None} records {len(probe.records)}")
''')


def test_torchrun_two_cpu_ranks_one_prober(tiny_tokenizer, translation_files, tmp_path):
    pytest.importorskip("torch.distributed")
    tok_dir = tmp_path / "tok"
    tiny_tokenizer.save_pretrained(tok_dir)
    script = tmp_path / "train_ddp.py"
    script.write_text(SCRIPT)
    out = tmp_path / "out"
    env = dict(os.environ, TP_TESTS_DIR=os.path.dirname(__file__), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(tok_dir), str(translation_files.dir), str(out)]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired as err:  # a hang is a failure, not a stuck suite
        pytest.fail(f"torchrun did not finish in 240 s (a rank hung?)\n{(err.stderr or '')[-3000:]}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [(out / f"rank{r}.txt").read_text() if (out / f"rank{r}.txt").exists() else None for r in (0, 1)]
    assert lines == ["RANK 0 world 2 step 4 active_executor True records 3",
                     "RANK 1 world 2 step 4 active_executor False records 0"], proc.stdout
    recs = read_history(out / "transfer_probe" / "history.jsonl")
    probes = [r for r in recs if r["kind"] == "probe"]
    # 4 * 2 ranks * 32 tokens per step; every 512 tokens -> steps 2 and 4, plus the baseline
    assert [(r["step"], r["tokens"], r["pretrained"], r["status"]) for r in probes] == [
        (0, 0, False, "ok"), (2, 512, True, "ok"), (4, 1024, True, "ok")]
    assert len({r["run_id"] for r in probes}) == 1
    verdicts = [r for r in recs if r["kind"] == "verdict"]
    # one verdict per batch of new results (late results may arrive together), the last at the newest point
    assert [v["tokens"] for v in verdicts] in ([1024], [512, 1024]), [v["tokens"] for v in verdicts]
    assert {v["run_id"] for v in verdicts} == {probes[0]["run_id"]}
