"""A training to kill, for tests/test_reliability.py (items 4 and 5 of issue 12).

    python _kill_run.py TOK_DIR DATA_DIR OUT_DIR BLOCK_STEP

A tiny GPT-2 (the ``tiny_gpt2_config`` of conftest.py) trains for 6 steps, saving and probing every 2
steps with the process executor. Its probes never finish (100 000 fine-tuning steps), so the worker is
busy with the first one and later points wait in its queue. At the save of step BLOCK_STEP the
training thread stops (after the point of that step was submitted, with the worker in a probe) and prints
``BLOCKED <run_id> <worker pid>``; the test then kills it, or trains a second run beside it.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from _probe_training import SEQ_LEN, lm_examples, make_trainer, quick_finetune  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast, TrainerCallback  # noqa: E402

from transfer_probe import TransferProbeCallback  # noqa: E402
from transfer_probe.tasks import TranslationTask  # noqa: E402


class Block(TrainerCallback):
    def __init__(self, probe, step):
        self.probe, self.step = probe, step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            # Blocked with the worker inside a probe (not still importing torch): the kill must catch it
            # in the middle of a job.
            assert self.probe.executor.wait_ready(120)
            while self.probe.executor.running_job is None:
                time.sleep(0.05)
            print("BLOCKED", self.probe.run_id, self.probe.executor.worker_pid, flush=True)
            time.sleep(3600)


def main(tok_dir, data_dir, out_dir, block_step):
    torch.set_num_threads(1)
    tok = PreTrainedTokenizerFast.from_pretrained(tok_dir)
    task = TranslationTask.from_files(os.path.join(data_dir, "train.jsonl"), os.path.join(data_dir, "test.jsonl"),
                                      source="en", target="fr", finetune_sizes=[32], max_test_examples=16)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(
        vocab_size=len(tok), n_positions=128, n_embd=64, n_layer=2, n_head=4, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    probe = TransferProbeCallback([task], every_tokens=2 * 4 * SEQ_LEN, seq_len=SEQ_LEN, executor="process",
                                  executor_options={"num_threads": 1}, finetune=quick_finetune(max_steps=100_000))
    make_trainer(model, tok, lm_examples(tok, list(task.train_pairs)), out_dir, max_steps=6, save_steps=2,
                 callbacks=[probe, Block(probe, int(block_step))]).train()


if __name__ == "__main__":
    main(*sys.argv[1:5])
