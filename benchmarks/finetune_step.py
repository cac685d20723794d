"""Examples/s of one SST-2 fine-tuning epoch: our loop's batching and head against `transformers` run_glue's.

Both variants train an ELECTRA-Small-size encoder (Paper Table 6; random init: speed does not depend on the
weights) for one epoch over the real SST-2 train split (67,349 sentences, or the first --examples of a seeded
shuffle), fp32, with the same AdamW (FinetuneConfig lr / eps / weight decay), gradient clipping at 1.0:

  reference   run_glue's default: every example padded to max_length 128, random batches of 32,
              HF ElectraForSequenceClassification (sdpa attention, dense+GELU+linear head), loss from labels.
  ours        dynamic padding with length-grouped batches (`finetune.length_grouped_batches` + `collate`, timed
              as part of the step) and our `EncoderWithHead` (linear head on [CLS], eager attention).

The two epochs are cut into --chunks parts that are run alternately (reference chunk 1, ours chunk 1, ours chunk 2,
reference chunk 2, ...), so machine noise hits both alike. How to read the output: examples/s = examples / summed
chunk time; "ratio" = reference epoch time / ours (issue target: >= 2); "padding efficiency" = real tokens /
tokens computed (SST-2 sentences are short, so padding to 128 computes mostly [PAD]). Tokenisation is done once,
before timing, for both.

    python benchmarks/finetune_step.py                   # full epoch: the reference alone is ~80 min on 2 cores
    python benchmarks/finetune_step.py --examples 8000    # a capped epoch; the .md states the N used
    python benchmarks/finetune_step.py --quick            # tiny model, 64 examples: checks the script only
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import _timing as timing  # benchmarks/ is on sys.path: the script's own folder (tests prepend it)
import numpy as np
import torch
from transformers import ElectraForSequenceClassification

from electra_bench.build import disc_dims, electra_config
from electra_bench.finetune import Encoded, collate, encode, length_grouped_batches, loss_fn, subsample
from electra_bench.model.heads import EncoderWithHead, load_encoder
from electra_bench.optim import make_optimizer
from electra_bench.schema import FinetuneConfig, ModelConfig, TokenizerConfig
from electra_bench.tasks import TASKS, default_data_root, load_split
from electra_bench.tokenizer import load_tokenizer

NAME = "finetune_step"
TASK = "sst2"


def padded(data: Encoded, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """run_glue's `padding="max_length"`: every example padded to `width` up front (ids, mask, token types)."""
    ids = torch.zeros(len(data.input_ids), width, dtype=torch.long)
    types = torch.zeros_like(ids)
    for i, (x, t) in enumerate(zip(data.input_ids, data.token_type_ids)):
        ids[i, :len(x)], types[i, :len(t)] = torch.tensor(x), torch.tensor(t)
    return ids, (ids != 0).long(), types


def trainer(model: torch.nn.Module, loss_of, ft: FinetuneConfig, device: str):
    """A function that runs one training step on a list of example rows (loss_of(rows) -> scalar loss)."""
    model.to(device).train()
    optimizer = make_optimizer(model, ft.lr, ft.weight_decay, ft.adam_eps)

    def step(rows: np.ndarray) -> None:
        with timing.matmul_precision("fp32"):  # both fp32 (FinetuneConfig.precision), TF32 pinned off on CUDA
            loss = loss_of(rows)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # run_glue's max_grad_norm and our loop's
            optimizer.step()

    return step


def build(data: Encoded, model: ModelConfig, ft: FinetuneConfig, vocab_size: int, device: str) -> dict:
    """name -> (batches of rows for one epoch, step fn), both variants from the same initial seed."""
    rng = np.random.default_rng(0)
    n, labels = len(data.input_ids), torch.tensor(data.labels)
    n_classes = len(TASKS.get(TASK).labels)
    ref_batches = np.array_split(rng.permutation(n), range(ft.batch_size, n, ft.batch_size))  # random, full width
    lengths = [len(x) for x in data.input_ids]
    our_batches = length_grouped_batches(lengths, ft.batch_size, rng)

    ref_cfg = electra_config(disc_dims(model), vocab_size, model.model_copy(update={"attention": "sdpa"}))
    ref_cfg.num_labels, ref_cfg.problem_type = n_classes, "single_label_classification"  # set before the first call
    torch.manual_seed(0)
    ref = ElectraForSequenceClassification(ref_cfg)
    ids, mask, types = padded(data, ft.max_seq_length)

    def ref_loss(rows):
        r = torch.from_numpy(rows)
        return ref(input_ids=ids[r].to(device), attention_mask=mask[r].to(device),
                   token_type_ids=types[r].to(device), labels=labels[r].to(device)).loss

    torch.manual_seed(0)
    ours = EncoderWithHead(load_encoder(None, electra_config(disc_dims(model), vocab_size, model)), n_classes,
                           per_token=False, head=ft.head)

    def our_loss(rows):
        b_ids, b_mask, b_types, b_labels = collate(data, rows, False, False, device)
        return loss_fn(ours(b_ids, b_mask, b_types), b_labels, "classification")

    return {"reference": (ref_batches, trainer(ref, ref_loss, ft, device)),
            "ours": (our_batches, trainer(ours, our_loss, ft, device))}


def options() -> argparse.ArgumentParser:
    ap = timing.parser(__doc__, "tiny model, 64 examples, 2 chunks (for tests)")
    ap.add_argument("--examples", type=int, help="cap the train split (seeded shuffle; default all; quick 64)")
    ap.add_argument("--chunks", type=int, help="alternating parts per epoch (default 10; quick 2)")
    ap.add_argument("--warmup", type=int, help="untimed batches per variant first (default 3; quick 1)")
    ap.add_argument("--batch-size", type=int, default=FinetuneConfig().batch_size, help="T7: 32")
    ap.add_argument("--max-length", type=int, default=FinetuneConfig().max_seq_length)
    ap.add_argument("--data-root", type=Path, help="default: electra_bench.tasks.default_data_root()")
    ap.add_argument("--vocab", type=Path, help=f"WordPiece vocab (default: <data root>/{TokenizerConfig().vocab})")
    return ap


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args, device, model = timing.start(options(), argv)
    q = args.quick
    root = args.data_root or default_data_root()
    spec = TASKS.get(TASK)
    split = load_split(spec, "train", root)
    train = subsample(split, args.examples or (64 if q else None), seed=0)
    tokenizer = load_tokenizer(args.vocab or root / TokenizerConfig().vocab)
    ft = FinetuneConfig(batch_size=args.batch_size, max_seq_length=args.max_length)
    data = encode(spec, train, tokenizer, ft.max_seq_length)
    chunks, warmup = args.chunks or (2 if q else 10), args.warmup if args.warmup is not None else (1 if q else 3)

    runs = build(data, model, ft, len(tokenizer), device)
    chunks = min(chunks, *(len(batches) for batches, _ in runs.values()))  # no empty chunks
    parts = {name: np.array_split(np.arange(len(batches)), chunks) for name, (batches, _) in runs.items()}
    for batches, step in runs.values():
        for rows in batches[:warmup]:
            step(rows)

    def chunk_fn(name):
        batches, step = runs[name]
        return lambda i: [step(batches[j]) for j in parts[name][i]]

    times = timing.interleaved({name: chunk_fn(name) for name in runs}, chunks, device)
    n = len(data.input_ids)
    real_tokens = sum(len(x) for x in data.input_ids)
    rows_out = {}
    for name, (batches, _) in runs.items():
        computed = n * ft.max_seq_length if name == "reference" else \
            sum(len(b) * max(len(data.input_ids[i]) for i in b) for b in batches)
        chunk_examples = [sum(len(batches[j]) for j in part) for part in parts[name]]
        total = sum(times[name])
        rows_out[name] = {"examples_per_s": n / total, "epoch_s": total, "batches": len(batches),
                          "tokens_computed": computed, "padding_efficiency": real_tokens / computed,
                          "chunk_examples_per_s": [e / t for e, t in zip(chunk_examples, times[name])]}
    ratio = rows_out["reference"]["epoch_s"] / rows_out["ours"]["epoch_s"]
    record = {"benchmark": NAME, "quick": q, "device": device, "task": TASK, "examples": n,
              "examples_in_split": len(split), "max_length": ft.max_seq_length, "batch_size": ft.batch_size,
              "chunks": chunks, "warmup_batches": warmup, "model": model.model_dump(), "vocab_size": len(tokenizer),
              "real_tokens": real_tokens, "variants": rows_out, "ratio_ours_vs_reference": ratio,
              "chunk_s": times, "machine": timing.machine_info(device),
              "command": timing.command("benchmarks/finetune_step.py", argv)}
    timing.write_report(args.out, NAME, record, markdown(record))
    return record


def markdown(r: dict) -> list[str]:
    size = "tiny (--quick)" if r["quick"] else "ELECTRA-Small size (Table 6), random init"
    scope = "all" if r["examples"] == r["examples_in_split"] else f"capped from {r['examples_in_split']:,}"
    lines = [f"# Fine-tuning epoch: SST-2 train, {size}, fp32", "",
             f"N = {r['examples']:,} examples ({scope}), one epoch per variant, batch {r['batch_size']}, "
             f"run as {r['chunks']} alternating chunks after {r['warmup_batches']} warm-up batches each.", ""]
    table = [[name, f"{v['examples_per_s']:,.1f}", f"{v['epoch_s']:,.1f}", v["batches"],
              f"{v['padding_efficiency']:.2f}",
              f"{min(v['chunk_examples_per_s']):,.1f}–{max(v['chunk_examples_per_s']):,.1f}"]
             for name, v in r["variants"].items()]
    lines += timing.md_table(["variant", "examples/s", "epoch s", "batches", "padding efficiency",
                              "chunk examples/s (range)"], table)
    ratio = r["ratio_ours_vs_reference"]
    lines += ["", f"Ratio ours / reference: **{ratio:.2f}×**"
              + ("" if r["quick"] else f" (issue target ≥ 2×: {'met' if ratio >= 2 else 'not met'})."), ""]
    return lines + timing.machine_lines(r["machine"], r["command"])


if __name__ == "__main__":
    main()
