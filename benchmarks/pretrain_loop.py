"""Tokens/s of the real pre-training loop (`pretrain.pretrain`), as the loop itself measures it between its logs.

Each run pre-trains ELECTRA-Small (Paper Table 6; vocab 30,522, sequence 128) on random full-length blocks for
`--steps` steps, logging every `--log-every`: the loop reports `train/tokens_per_s` for each window (its logs are
its only host syncs, so a window's wall time is the device's). A run's speed = the median of its windows after
the first (the first holds start-up: allocation, kernel choice, torch.compile).

How to read the output: tokens/s counts non-pad tokens (all of them here); MFU = analytic train FLOPs per step
(`units.flops_per_step`, GR's counting: backward = forward) x steps/s / the measured matmul peak; peak GiB =
torch.cuda.max_memory_allocated over the run.

CPU (the default): the no-sync loop (issue 15) against the previous loop, side by side. "previous" is
`electra_bench/pretrain.py` read from git at PREVIOUS_COMMIT (a float() read and a 2-D attention mask, which
transformers checks with mask.all(), every step); both runs alternate `--reps` times (order rotating), so their
ratio is steadier than either speed. ratio = no-sync tokens/s / previous tokens/s (> 1: the new loop is faster).

CUDA: a sweep of batch sizes (32 ... 1024) at bf16 + fused AdamW + SDPA, then the GPU options one at a time at the
best batch; per run tokens/s, MFU (analytic FLOPs, GR counting, against a bf16 matmul peak measured in this run)
and peak memory. `--budget-s` stops the sweep when spent (what finished is written).

    python benchmarks/pretrain_loop.py                              # CPU side by side (~5 min on 2 cores)
    python benchmarks/pretrain_loop.py --device cuda --budget-s 60  # CUDA sweep
    python benchmarks/pretrain_loop.py --quick                      # tiny model: checks the script, not the speed
"""
from __future__ import annotations

import contextlib
import importlib.util
import subprocess
import sys
import tempfile
import time
from dataclasses import fields, replace
from pathlib import Path

import _timing as timing  # benchmarks/ is on sys.path: the script's own folder (tests prepend it)
import numpy as np
import torch
from pretrain_step import BERT_VOCAB, CLS, QUICK_VOCAB, SEP

from electra_bench import pretrain as pretrain_mod
from electra_bench.build import build_objective
from electra_bench.corpus import Blocks
from electra_bench.model.algorithms import Algorithm
from electra_bench.model.objectives import Batch
from electra_bench.schema import PretrainConfig, RunConfig
from electra_bench.units import flops_per_step, settings_for

NAME = "pretrain_loop"
PREVIOUS_COMMIT = "248ca08"  # main just before the no-sync loop (issue 15)
BATCHES = (32, 64, 128, 256, 512, 1024)  # the CUDA sweep; T6 Small trains at 128
# The CUDA options, each tried alone at the best batch against the sweep's setting (schema.PretrainConfig).
SWEEP_BASE = {"precision": "bf16", "fused_adam": True, "attention": "sdpa"}
OPTIONS = {"fp32 (tf32 off)": {"precision": "fp32", "tf32": False}, "tf32": {"precision": "fp32", "tf32": True},
           "eager attention": {"attention": "eager"}, "unfused AdamW": {"fused_adam": False},
           "sdpa flash": {"sdpa_backend": "flash"}, "compile default": {"compile": "default"},
           "compile max-autotune-no-cudagraphs": {"compile": "max-autotune-no-cudagraphs"}}


def random_blocks(n: int, seq_len: int, vocab_size: int, first_id: int) -> Blocks:
    """Full-length two-segment blocks, as the packed corpus has them: [CLS] a [SEP] b [SEP], no padding."""
    rng = np.random.default_rng(0)
    ids = rng.integers(first_id, vocab_size, (n, seq_len), dtype=np.int32)
    half = seq_len // 2
    ids[:, 0], ids[:, half - 1], ids[:, -1] = CLS, SEP, SEP
    types = np.zeros_like(ids)
    types[:, half:] = 1
    return Blocks(ids, types)


def previous_loop(commit: str = PREVIOUS_COMMIT):
    """electra_bench/pretrain.py as it was at `commit`, imported as a module of the package (its relative imports
    resolve to today's package; its Batch calls pass the 2-D mask, see `two_d_mask`)."""
    src = subprocess.run(["git", "show", f"{commit}:electra_bench/pretrain.py"], capture_output=True, text=True,
                         check=True).stdout
    spec = importlib.util.spec_from_loader("electra_bench._pretrain_previous", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "electra_bench"
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    exec(compile(src, f"{commit}:electra_bench/pretrain.py", "exec"), module.__dict__)
    return module


@contextlib.contextmanager
def two_d_mask():
    """What the objectives handed transformers before issue 15: the 2-D mask (checked with .all() per forward)."""
    saved = Batch.model_mask
    Batch.model_mask = lambda self, implementation: self.attention_mask
    try:
        yield
    finally:
        Batch.model_mask = saved


def run_loop(run: RunConfig, blocks: Blocks, steps: int, log_every: int, device: str, loop=None) -> dict:
    """Pre-train `steps` steps with `loop` (a pretrain module; default today's); tokens/s per window, peak memory."""
    vocab = QUICK_VOCAB if run.model.size == "tiny" else BERT_VOCAB
    torch.manual_seed(0)
    algorithm = Algorithm(build_objective(run.model, run.pretrain, vocab))
    s = replace(settings_for(run, steps, device), checkpoints=())  # nothing saved but the final state
    windows: list[float] = []

    def log(metrics: dict, step: int) -> None:
        if "train/tokens_per_s" in metrics:
            windows.append(metrics["train/tokens_per_s"])

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    module, context = (pretrain_mod, contextlib.nullcontext()) if loop is None else (loop, two_d_mask())
    if loop is not None:  # the previous loop's own settings type (a subset of today's fields)
        s = loop.PretrainSettings(**{f.name: getattr(s, f.name) for f in fields(loop.PretrainSettings)})
    t0 = time.perf_counter()
    with context, tempfile.TemporaryDirectory() as out:
        module.pretrain(algorithm, blocks, Blocks(blocks.input_ids[:s.batch_size], blocks.token_type_ids[
            :s.batch_size]), s, Path(out), tokenizer=None, log=log, show_progress=False)
    steady = timing.median(windows[1:] or windows)
    steps_per_s = steady / (s.batch_size * run.corpus.max_seq_length)  # every block is full length
    return {"batch_size": s.batch_size, "tokens_per_s": steady, "windows_tokens_per_s": windows,
            "flops_per_s": flops_per_step(run, vocab.size) * steps_per_s,
            "wall_s": time.perf_counter() - t0,
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2 ** 30 if device == "cuda" else None}


def config(model, batch_size: int, seq_len: int, device: str, log_every: int, **options) -> RunConfig:
    attention = options.pop("attention", model.attention)
    pre = PretrainConfig(batch_size=batch_size, device=device, log_every=log_every, eval_batches=1,
                         eval_every=10 ** 6, warmup_fraction=0.0, **options)
    run = RunConfig(model=model.model_copy(update={"attention": attention}), pretrain=pre)
    return run.model_copy(update={"corpus": run.corpus.model_copy(update={"max_seq_length": seq_len})})


def cpu_side_by_side(args, model, seq_len: int, vocab_size: int) -> dict:
    previous = previous_loop()
    batch = args.batch_size or (4 if args.quick else 32)
    run = config(model, batch, seq_len, "cpu", args.log_every)
    blocks = random_blocks(batch * args.steps, seq_len, vocab_size, max(BERT_VOCAB.special_ids) + 1)
    runs: dict[str, list[dict]] = {"previous": [], "no-sync": []}
    for rep in range(args.reps):
        for name in (list(runs) if rep % 2 == 0 else list(runs)[::-1]):
            runs[name].append(run_loop(run, blocks, args.steps, args.log_every, "cpu",
                                       previous if name == "previous" else None))
    speed = {name: timing.median([r["tokens_per_s"] for r in rs]) for name, rs in runs.items()}
    return {"batch_size": batch, "runs": runs, "tokens_per_s": speed, "previous_commit": PREVIOUS_COMMIT,
            "ratio_nosync_vs_previous": speed["no-sync"] / speed["previous"]}


def cuda_sweep(args, model, seq_len: int, vocab_size: int) -> dict:
    deadline = time.perf_counter() + args.budget_s
    peak = timing.matmul_peak_gflops("bf16", "cuda", 256 if args.quick else 8192, 3 if args.quick else 10)
    rows: dict[str, dict] = {}
    blocks = random_blocks((BATCHES[-1] if not args.quick else 16) * args.steps, seq_len, vocab_size,
                           max(BERT_VOCAB.special_ids) + 1)

    def measure(name: str, batch: int, options: dict) -> None:
        if time.perf_counter() > deadline:
            rows[name] = {"batch_size": batch, "skipped": "budget spent"}
            return
        run = config(model, batch, seq_len, "cuda", args.log_every, **options)
        try:
            r = run_loop(run, blocks, args.steps, args.log_every, "cuda")
        except torch.OutOfMemoryError:
            rows[name] = {"batch_size": batch, "skipped": "out of memory"}
            torch.cuda.empty_cache()
            return
        r["mfu"] = r["flops_per_s"] / (peak * 1e9)
        rows[name] = {"options": options, **r}
        print(f"[{NAME}] {name}: {r['tokens_per_s']:,.0f} tokens/s, MFU {r['mfu']:.3f}, "
              f"{r['peak_memory_gib']:.1f} GiB", file=sys.stderr, flush=True)

    for batch in (BATCHES if not args.quick else (4, 8)):
        measure(f"batch {batch}", batch, dict(SWEEP_BASE))
    done = [r for r in rows.values() if "tokens_per_s" in r]
    best = max(done, key=lambda r: r["tokens_per_s"])["batch_size"] if done else BATCHES[0]
    for name, options in OPTIONS.items():
        measure(f"batch {best}, {name}", best, {**SWEEP_BASE, **options})
    return {"peak_bf16_gflops": peak, "best_batch": best, "rows": rows, "budget_s": args.budget_s}


def options():
    ap = timing.parser(__doc__, "tiny model, sequence 32, few steps (for tests)")
    ap.add_argument("--steps", type=int, help="steps per run (default 40; quick 6)")
    ap.add_argument("--log-every", type=int, help="steps per measured window (default 10; quick 2)")
    ap.add_argument("--reps", type=int, default=3, help="CPU: alternating runs per loop")
    ap.add_argument("--batch-size", type=int, help="CPU: sequences per step (default 32; quick 4)")
    ap.add_argument("--budget-s", type=float, default=60.0, help="CUDA: wall seconds for the whole sweep")
    return ap


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args, device, model = timing.start(options(), argv)
    args.steps = args.steps or (6 if args.quick else 40)
    args.log_every = args.log_every or (2 if args.quick else 10)
    vocab_size, seq_len = (QUICK_VOCAB.size, 32) if args.quick else (BERT_VOCAB.size, 128)
    part = (cuda_sweep if device == "cuda" else cpu_side_by_side)(args, model, seq_len, vocab_size)
    record = {"benchmark": NAME, "quick": args.quick, "device": device, "seq_len": seq_len, "steps": args.steps,
              "log_every": args.log_every, "model": model.model_dump(), "vocab_size": vocab_size, **part,
              "machine": timing.machine_info(device), "command": timing.command("benchmarks/pretrain_loop.py", argv)}
    name = NAME if device == "cpu" else f"{NAME}_cuda"
    timing.write_report(args.out, name, record, markdown(record))
    return record


def markdown(r: dict) -> list[str]:
    size = "tiny (--quick)" if r["quick"] else "ELECTRA-Small (Table 6)"
    lines = [f"# Pre-training loop: {size}, sequence {r['seq_len']}, {r['device']}", "",
             f"{r['steps']} steps per run; tokens/s as the loop logs it every {r['log_every']} steps, median of the "
             "windows after the first.", ""]
    if r["device"] == "cpu":
        rows = [[name, f"{r['tokens_per_s'][name]:,.0f}",
                 ", ".join(f"{x['tokens_per_s']:,.0f}" for x in runs)] for name, runs in r["runs"].items()]
        lines += timing.md_table(["loop", "tokens/s (median of runs)", "each run"], rows)
        verdict = "no slowdown" if r["ratio_nosync_vs_previous"] >= 0.97 else "SLOWER"
        lines += ["", f"Batch {r['batch_size']}; {len(r['runs']['previous'])} alternating runs per loop; previous = "
                  f"`electra_bench/pretrain.py` at {r['previous_commit']}. Ratio no-sync / previous: "
                  f"**{r['ratio_nosync_vs_previous']:.3f}×** ({verdict}; within 3% counts as equal on this shared "
                  "machine).", ""]
    else:
        rows = [[name, row["batch_size"], f"{row['tokens_per_s']:,.0f}", f"{row['mfu']:.3f}",
                 f"{row['peak_memory_gib']:.1f}"] if "tokens_per_s" in row else
                [name, row["batch_size"], row["skipped"], "", ""] for name, row in r["rows"].items()]
        lines += timing.md_table(["run", "batch", "tokens/s", "MFU", "peak GiB"], rows)
        lines += ["", f"MFU against a bf16 matmul peak of {r['peak_bf16_gflops']:,.0f} GFLOP/s measured in this run; "
                  f"sweep setting {SWEEP_BASE}; best batch {r['best_batch']}; budget {r['budget_s']:.0f} s.", ""]
    return lines + timing.machine_lines(r["machine"], r["command"])


if __name__ == "__main__":
    main()
