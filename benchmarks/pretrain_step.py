"""Tokens/s and MFU of one ELECTRA-Small pre-training step: our objective against a plain `transformers` script.

A step is forward + backward + gradient clipping + AdamW, on a fixed set of random 128-token batches, at the
ELECTRA-Small size (Paper Table 6: hidden 256, 12 layers, 4 heads, FFN 1024, embedding 128, vocab 30,522,
generator 1/4 width, tied embeddings, dropout 0.1, lambda 50). Variants, timed in one process, interleaved:

  reference   ElectraForMaskedLM called normally (LM head over all B x L positions, labels -100 elsewhere),
              samples drawn from the full logits at the masked positions, ElectraForPreTraining with labels;
              sdpa attention, fp32. What a straightforward script built from the same classes does.
  ours fp32   build_objective(...): LM head only at the selected [B, K] positions, eager attention, fp32.
  ours bf16   the same under bf16 autocast (skipped where the device has no native bf16).
  ours tf32   CUDA only: TF32 matmuls.

Both sides use the same masking code, the same sampler and the same optimiser, so the difference is the model
side. How to read the output: tokens/s = batch x 128 / median step time; MFU = analytic train FLOPs per step
(`flops.train_flops_per_step`, GR's counting: backward = forward) / median step time / the matmul peak measured
in this run in the variant's dtype; "ratio" = reference step time / variant step time (> 1: faster than the
reference). Issue targets, CPU fp32: ratio >= 1.6 and MFU >= 0.45.

    python benchmarks/pretrain_step.py                 # full size, ~5 min on 2 cores
    python benchmarks/pretrain_step.py --quick         # tiny model, 2 steps: checks the script, not the speed
"""
from __future__ import annotations

import argparse
import sys

import _timing as timing  # benchmarks/ is on sys.path: the script's own folder (tests prepend it)
import torch
from torch import nn
from transformers import ElectraForMaskedLM, ElectraForPreTraining

from electra_bench import flops
from electra_bench.build import build_objective, disc_dims, electra_config, tie
from electra_bench.model.generators import sample_from_logits
from electra_bench.model.masking import apply_mask, select
from electra_bench.model.objectives import Batch, Vocab
from electra_bench.optim import make_optimizer
from electra_bench.schema import ModelConfig, PretrainConfig
from electra_bench.sizes import generator_dims

NAME = "pretrain_step"
# BERT uncased WordPiece ids ([PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103): random ids need no tokenizer.
PAD, UNK, CLS, SEP, MASK = 0, 100, 101, 102, 103
BERT_VOCAB = Vocab(size=flops.BERT_VOCAB, mask_id=MASK, special_ids=(PAD, UNK, CLS, SEP, MASK))
QUICK_VOCAB = Vocab(size=1000, mask_id=MASK, special_ids=(PAD, UNK, CLS, SEP, MASK))
N_BATCHES = 4  # distinct random batches, cycled: the data never reaches the timing


class ReferenceRTD(nn.Module):
    """ELECTRA replaced-token detection written the straightforward way with the `transformers` classes."""

    def __init__(self, generator: ElectraForMaskedLM, discriminator: ElectraForPreTraining, vocab: Vocab,
                 pre: PretrainConfig):
        super().__init__()
        self.generator, self.discriminator, self.vocab, self.pre = generator, discriminator, vocab, pre
        self.register_buffer("special_ids", torch.tensor(vocab.special_ids), persistent=False)

    def forward(self, batch: Batch, rng: torch.Generator) -> torch.Tensor:
        ids, mask, types = batch.input_ids, batch.attention_mask, batch.token_type_ids
        sel = select(ids, mask, self.special_ids, self.pre.mask_prob, rng)
        masked = apply_mask(ids, sel, self.vocab.mask_id, "electra", self.vocab.size, rng)
        labels = torch.full_like(ids, -100).scatter(1, sel.positions, sel.targets.masked_fill(sel.weights == 0, -100))
        g = self.generator(input_ids=masked, attention_mask=mask, token_type_ids=types, labels=labels)  # [B, L, V]
        chosen = labels != -100  # [B, L]
        corrupted = ids.clone()
        corrupted[chosen] = sample_from_logits(g.logits[chosen], self.pre.temperature, rng)
        d = self.discriminator(input_ids=corrupted, attention_mask=mask, token_type_ids=types,
                               labels=(corrupted != ids).long())
        return g.loss + self.pre.disc_weight * d.loss


def reference_model(model: ModelConfig, pre: PretrainConfig, vocab: Vocab) -> ReferenceRTD:
    ref = model.model_copy(update={"attention": "sdpa"})
    dims = disc_dims(ref)
    g = ElectraForMaskedLM(electra_config(generator_dims(dims, float(pre.generator_size)), vocab.size, ref))
    d = ElectraForPreTraining(electra_config(dims, vocab.size, ref))
    tie(g, d, pre.tying)  # the same sharing as ours (Paper §3.2): equal parameter counts on both sides
    return ReferenceRTD(g, d, vocab, pre)


def random_batches(n: int, batch_size: int, seq_len: int, vocab: Vocab, device: str) -> list[Batch]:
    """Full-length two-segment blocks, as the packed pre-training corpus has them: [CLS] a [SEP] b [SEP]."""
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        ids = torch.randint(max(vocab.special_ids) + 1, vocab.size, (batch_size, seq_len), generator=gen)
        half = seq_len // 2
        ids[:, 0], ids[:, half - 1], ids[:, -1] = CLS, SEP, SEP
        types = torch.zeros_like(ids)
        types[:, half:] = 1
        out.append(Batch(ids.to(device), torch.ones_like(ids).to(device), types.to(device)))
    return out


def step_fn(module: nn.Module, loss_of, batches: list[Batch], mode: str, device: str, pre: PretrainConfig):
    """One training step of `module` (loss_of(batch, rng) -> scalar loss), as pretrain.py runs it."""
    module.to(device).train()
    optimizer = make_optimizer(module, pre.lr, pre.weight_decay, pre.adam_eps, (pre.adam_beta1, pre.adam_beta2))
    rng = torch.Generator(device=device).manual_seed(0)

    def step(i: int) -> None:
        with timing.matmul_precision(mode):
            with timing.autocast(device, mode):
                loss = loss_of(batches[i % len(batches)], rng)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), pre.grad_clip)
            optimizer.step()

    return step


def variants(model: ModelConfig, pre: PretrainConfig, vocab: Vocab, batches: list[Batch], device: str) -> dict:
    """name -> (precision, step fn). Same seed for every variant's initial weights."""
    torch.manual_seed(0)
    ref = reference_model(model, pre, vocab)
    out = {"reference fp32": ("fp32", step_fn(ref, ref, batches, "fp32", device, pre))}
    for mode in timing.precisions_for(device):
        torch.manual_seed(0)
        ours = build_objective(model.model_copy(update={"attention": "eager"}), pre, vocab)
        out[f"ours {mode}"] = (mode, step_fn(ours, lambda b, r, o=ours: o(b, rng=r).loss, batches, mode, device, pre))
    return out


def options() -> argparse.ArgumentParser:
    ap = timing.parser(__doc__, "tiny model, sequence 32, batch 4, 2 steps (for tests)")
    ap.add_argument("--steps", type=int, help="timed steps per variant (default 20; quick 2)")
    ap.add_argument("--warmup", type=int, help="untimed steps per variant first (default 3; quick 1)")
    ap.add_argument("--batch-size", type=int, help="sequences per step (default 32; quick 4)")
    return ap


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args, device, model = timing.start(options(), argv)
    q = args.quick
    vocab, seq_len = (QUICK_VOCAB, 32) if q else (BERT_VOCAB, 128)  # T6 Small: sequence 128
    steps, warmup = args.steps or (2 if q else 20), args.warmup if args.warmup is not None else (1 if q else 3)
    pre = PretrainConfig(batch_size=args.batch_size or (4 if q else 32))
    peak_n, peak_reps = (256, 3) if q else (8192 if device == "cuda" else 2048, 10)

    batches = random_batches(N_BATCHES, pre.batch_size, seq_len, vocab, device)
    runs = variants(model, pre, vocab, batches, device)
    modes = sorted({m for m, _ in runs.values()}, key=timing.PRECISIONS.index)
    peak_before = {m: timing.matmul_peak_gflops(m, device, peak_n, peak_reps) for m in modes}
    fns = {name: fn for name, (_, fn) in runs.items()}
    timing.interleaved(fns, warmup, device)
    times = timing.interleaved(fns, steps, device)
    peak_after = {m: timing.matmul_peak_gflops(m, device, peak_n, peak_reps) for m in modes}
    peak = {m: max(peak_before[m], peak_after[m]) for m in modes}

    dims = disc_dims(model)
    train_flops = flops.train_flops_per_step(
        flops.EncoderDims.from_dims(dims, vocab.size),
        flops.EncoderDims.from_dims(generator_dims(dims, float(pre.generator_size)), vocab.size),
        pre.objective, seq_len, pre.batch_size, pre.mask_prob)
    tokens = pre.batch_size * seq_len
    ref_s = timing.median(times["reference fp32"])
    rows = {}
    for name, (mode, _) in runs.items():
        med = timing.median(times[name])
        rows[name] = {"precision": mode, "tokens_per_s": tokens / med, "step_ms_median": 1e3 * med,
                      "step_ms_min": 1e3 * min(times[name]), "step_ms_max": 1e3 * max(times[name]),
                      "mfu": train_flops / med / (peak[mode] * 1e9), "ratio_vs_reference": ref_s / med}
    record = {"benchmark": NAME, "quick": q, "device": device, "seq_len": seq_len, "batch_size": pre.batch_size,
              "steps": steps, "warmup": warmup, "model": model.model_dump(), "vocab_size": vocab.size,
              "generator_size": pre.generator_size, "train_flops_per_step": train_flops,
              "peak_gflops": peak, "peak_gflops_before": peak_before, "peak_gflops_after": peak_after,
              "peak_matmul_n": peak_n, "variants": rows, "step_s": times,
              "machine": timing.machine_info(device), "command": timing.command("benchmarks/pretrain_step.py", argv)}
    timing.write_report(args.out, NAME, record, markdown(record))
    return record


def markdown(r: dict) -> list[str]:
    size = "tiny (--quick)" if r["quick"] else "ELECTRA-Small (Table 6)"
    lines = [f"# Pre-training step: {size}, sequence {r['seq_len']}, batch {r['batch_size']}", "",
             f"Median of {r['steps']} interleaved steps per variant after {r['warmup']} warm-up steps. MFU against "
             f"the best {r['peak_matmul_n']}^3 matmul of this run; analytic FLOPs/step "
             f"{r['train_flops_per_step']:.3e} (GR counting, backward = forward).", ""]
    table = [[name, v["precision"], f"{v['tokens_per_s']:,.0f}", f"{v['step_ms_median']:,.1f}",
              f"{v['step_ms_min']:,.1f}–{v['step_ms_max']:,.1f}", f"{v['mfu']:.3f}",
              f"{v['ratio_vs_reference']:.2f}×"]
             for name, v in r["variants"].items()]
    lines += timing.md_table(["variant", "dtype", "tokens/s", "step ms (median)", "step ms (range)", "MFU",
                              "ratio vs reference"], table)
    lines += ["", "Matmul peak (GFLOP/s, best of before/after the steps): "
              + ", ".join(f"{m} {g:,.0f}" for m, g in r["peak_gflops"].items()), ""]
    fp32 = r["variants"].get("ours fp32")
    if fp32 and r["device"] == "cpu" and not r["quick"]:
        lines += [f"Issue targets (CPU fp32): ratio ≥ 1.6× — {fp32['ratio_vs_reference']:.2f}× "
                  f"({'met' if fp32['ratio_vs_reference'] >= 1.6 else 'not met'}); MFU ≥ 0.45 — {fp32['mfu']:.3f} "
                  f"({'met' if fp32['mfu'] >= 0.45 else 'not met'}).", ""]
    return lines + timing.machine_lines(r["machine"], r["command"])


if __name__ == "__main__":
    main()
