"""Pieces the example scripts share: command-line options, offline mode, a streaming packer for
pre-training text, and the fit / diagnose / report summary printed at the end of a run.

Not part of the ``transfer_probe`` package: copy what you need into your own training script.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any


def base_parser(doc: str) -> argparse.ArgumentParser:
    """The options every example has: ``--offline``, ``--out``, ``--smoke``, ``--seed``."""
    head, _, rest = doc.strip().partition("\n\n")
    # The script's docstring (what it shows, the real and offline command lines) is its --help.
    parser = argparse.ArgumentParser(description=head, epilog=rest,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--offline", action="store_true",
                        help="no network: a tiny model from config, a locally trained tokenizer and data "
                             "made by the project instead of the hub model and data sets")
    parser.add_argument("--out", default=None, help="output directory (default: ./example_out/<script name>)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny step counts, for tests: checks the script runs, measures nothing useful")
    parser.add_argument("--seed", type=int, default=0, help="seed of model initialization and data order")
    return parser


def setup_environment(offline: bool, threads: int | None = None) -> None:
    """Call before importing transformers/datasets: offline mode must be set before they read it."""
    if offline:
        # Any attempt to reach the hub then fails at once instead of hanging or downloading.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
        os.environ["HF_EVALUATE_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if threads:
        import torch

        torch.set_num_threads(threads)


def out_dir(args: argparse.Namespace, script: str) -> Path:
    path = Path(args.out) if args.out else Path("example_out") / Path(script).stem
    path.mkdir(parents=True, exist_ok=True)
    return path


def hub_texts(path: str, name: str | None, split: str, field: str) -> Callable[[], Iterator[str]]:
    """Texts of a hub data set, streamed (nothing is downloaded up front), as a re-iterable source."""

    def texts() -> Iterator[str]:
        import datasets

        stream = datasets.load_dataset(path, name, split=split, streaming=True)
        for row in stream:
            text = row.get(field)
            if text and text.strip():
                yield text

    return texts


def packed_stream(tokenizer: Any, texts: Callable[[], Iterable[str]], block_size: int, *,
                  split_at: int | None = None, batch_texts: int = 256, shuffle_buffer: int = 1024, seed: int = 0):
    """An ``IterableDataset`` of fixed-length token blocks cut from ``texts()`` (re-read when used up).

    Documents are joined as ``[bos] doc eos`` (bos only when the tokenizer has a distinct one), the
    usual causal-LM packing. Decoder-only: each example is ``{"input_ids": block, "labels": block}``.
    With ``split_at`` (encoder-decoder), the block is cut in two: the first ``split_at`` tokens are
    the encoder's ``input_ids`` and the rest are the ``labels`` the decoder must continue with (the
    prefix -> continuation objective). Blocks leave through a shuffle buffer of ``shuffle_buffer``
    blocks (as ``datasets``' ``IterableDataset.shuffle``), so a batch does not hold consecutive
    pieces of one long document.
    """
    import random

    import torch

    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if eos is None:
        raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no eos token to separate documents")
    head = [bos] if bos is not None and bos != eos else []
    if split_at is not None and not 0 < split_at < block_size:
        raise ValueError(f"split_at must be inside the block (0 < split_at < {block_size}), got {split_at}")

    class _Packed(torch.utils.data.IterableDataset):
        def __iter__(self):
            rng = random.Random(seed)
            pool: list[dict] = []
            for block in self._blocks():
                if len(pool) < shuffle_buffer:
                    pool.append(block)
                    continue
                i = rng.randrange(len(pool))
                pool[i], block = block, pool[i]
                yield block

        def _blocks(self):
            buf: list[int] = []
            while True:
                produced = False
                batch: list[str] = []
                chars = 0
                for text in texts():
                    batch.append(text)
                    chars += len(text)
                    # Tokenize in batches (fast tokenizers are much quicker on many texts at once)
                    # but small enough that the first step does not wait for a huge batch.
                    if len(batch) < batch_texts and chars < 200_000:
                        continue
                    for block in _blocks(batch, buf):
                        produced = True
                        yield block
                    batch, chars = [], 0
                for block in _blocks(batch, buf):
                    produced = True
                    yield block
                if not produced:
                    raise ValueError(f"the pre-training text yields fewer than {block_size} tokens; give more text")

    def _blocks(batch: list[str], buf: list[int]):
        if not batch:
            return
        for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]:
            buf.extend(head)
            buf.extend(ids)
            buf.append(eos)
        while len(buf) >= block_size:
            block = torch.tensor(buf[:block_size], dtype=torch.long)
            del buf[:block_size]
            if split_at is None:
                yield {"input_ids": block, "labels": block}
            else:
                yield {"input_ids": block[:split_at], "attention_mask": torch.ones(split_at, dtype=torch.long),
                       "labels": block[split_at:]}

    return _Packed()


def summarize(history: Path, *, budget_tokens: float | None, target: float | None, out: Path,
              title: str) -> Path | None:
    """Print a verdict per (task, D_f) and the fitted laws; write the HTML report; return its path."""
    from transfer_probe.diagnose import diagnose_all, format_verdict
    from transfer_probe.laws import fit_rows
    from transfer_probe.store.history import group_key, probe_records, read_history

    records = read_history(history)
    probes = probe_records(records, ok_only=False)
    ok = [r for r in probes if r.get("status") == "ok"]
    failed = [r for r in probes if r.get("status") != "ok"]
    print(f"\nhistory: {history} ({len(ok)} probe records ok, {len(failed)} failed)")
    for r in failed:
        print(f"  failed probe at {r.get('tokens')} tokens: {r.get('error')}")
    if any(r.get("pretrained", True) for r in ok):
        for (task, df), verdict in diagnose_all(records, budget_tokens=budget_tokens, target=target).items():
            print(format_verdict(verdict))
            group = [r for r in ok if group_key(r) == (task, df)]
            # The two laws of the paper: BLEU-type scores (log law), cross-entropy (power law).
            for metric, law in (("bleu", "log"), ("cross_entropy", "power")):
                if not any(metric in (r.get("metrics") or {}) for r in group):
                    continue
                try:
                    fit = fit_rows(group, y=metric, law=law)
                except ValueError as err:  # too few points for a fit is expected in short runs
                    print(f"  {task} D_f={df}: no {metric} {law} law fitted ({err})")
                    continue
                if not fit.ok:
                    print(f"  {task} D_f={df}: {metric} {law} law not trusted: {fit.why}")
                elif budget_tokens:
                    mean, low, high = fit.predict(budget_tokens)
                    print(f"  {task} D_f={df}: {metric} {law} law {_fmt_params(fit.params)}; at "
                          f"{budget_tokens:.3g} tokens {float(mean):.3g} [{float(low):.3g}, {float(high):.3g}]")
    report = out / "report.html"
    try:
        from transfer_probe.report import write_report

        write_report([history], report, budget_tokens=budget_tokens, target=target, title=title)
    except Exception as err:  # the history is the result; a report failure must not hide it
        print(f"report not written: {type(err).__name__}: {err}")
        return None
    print(f"report: {report}")
    print(f"more: transfer-probe diagnose {history}   |   transfer-probe report {history} -o report.html")
    return report


def _fmt_params(params: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.3g}" for k, v in params.items() if isinstance(v, float) and math.isfinite(v))
