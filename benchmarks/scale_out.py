"""Scale-out: wall time of one vs two `electra-bench worker` processes (one torch thread each) on the same suite.

The suite: two ELECTRA cells (generator sizes 1/4 and 1/2, so two pre-trainings can run side by side), each
fine-tuned on SST-2 and CoNLL-2003 with seeds 0 and 1 on `--examples` train and dev examples: 2 pre-trainings +
8 fine-tunes = 10 units. Every run starts from nothing in a fresh temporary folder: its own work dir with the default
journal storage (work/<suite>/optuna.journal), its own Hugging Face datasets cache, MLflow tracking off (--tracking:
the embedded SQLite store, shared by the workers of a run). The vocab and packed corpus are built once beforehand
and copied into each run's cache, so corpus packing (done once per suite whatever the worker count) is not timed.
Runs alternate between 1 and 2 workers, `--reps` times each, the order rotating, as _timing.interleaved does.

Measured per run: wall time from starting the worker processes to the last one's exit (interpreter start and
imports included: a worker is a process), the units each worker ran (from its log), and the sum of the units' own
wall times (from the records).

How to read the output: "ratio" = median wall of 2 workers / median wall of 1 worker; target <= 0.6 (ideal 0.5; the
rest is each worker's start-up, fine-tunes waiting for their pre-training, and two processes sharing memory
bandwidth). "busy" = the units' summed wall time / (workers x wall): how much of the workers' time went into units.
"records equal" checks that every run wrote the same run keys with equal metrics (one thread each: the same
arithmetic whichever worker ran a unit). Timings are wall-clock: run it on a quiet machine.

    python benchmarks/scale_out.py                # the real suite on the shared data (~7 min on 2 quiet cores)
    python benchmarks/scale_out.py --reps 1       # one run each (~4 min)
    python benchmarks/scale_out.py --quick        # tiny model on tiny fixture data: checks the script only
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _timing as timing  # benchmarks/ is on sys.path: the script's own folder (tests prepend it)

NAME = "scale_out"
REPO = Path(__file__).resolve().parents[1]
TARGET_RATIO = 0.6
SUITE_NAME = "scale-out"
WORK = "@WORK@"  # each run's folder goes here

CELLS = """cells:
  - label: G 1/4
    set: {{pretrain.generator_size: 0.25}}
  - label: G 1/2
    set: {{pretrain.generator_size: 0.5}}
tasks: [sst2, conll2003]
seeds: [0, 1]
tracking: {{enabled: {tracking}}}
"""  # the same in both sizes: two pre-training cells, 2 tasks x 2 seeds each
REAL = """
name: scale-out
description: scale-out benchmark (benchmarks/scale_out.py)
data_root: {root}
work_dir: {work}/work
results_dir: {work}/results
base:
  model: {{size: tiny}}
  tokenizer: {{vocab: vocab/bert-base-uncased-vocab.txt}}
  corpus: {{sources: [corpus/bbc-news/*.txt.gz], max_bytes: 2000000, heldout_blocks: 64}}
  pretrain: {{steps: {steps}, batch_size: 16, eval_every: {steps}, eval_batches: 2, checkpoints: [1.0],
             warmup_fraction: 0.1}}
  finetune: {{train_examples: {examples}, dev_examples: {examples}, epochs: 1, batch_size: 32}}
"""
QUICK = """
name: scale-out
description: scale-out benchmark, --quick (benchmarks/scale_out.py)
data_root: {root}
work_dir: {work}/work
results_dir: {work}/results
base:
  model: {{size: tiny, hidden_size: 32, num_layers: 2, num_heads: 2, intermediate_size: 64, embedding_size: 16}}
  tokenizer: {{vocab: vocab/vocab.txt}}
  corpus: {{sources: [corpus/tiny/*.txt], max_seq_length: 32, heldout_blocks: 8}}
  pretrain: {{steps: {steps}, batch_size: 4, eval_every: {steps}, eval_batches: 1, checkpoints: [1.0]}}
  finetune: {{train_examples: {examples}, dev_examples: {examples}, epochs: 1, batch_size: 8}}
"""


def build_cache(text: str, data_root: Path, cache: Path) -> None:
    """The vocab and packed corpus of every cell, built once into `cache` (each run copies them in)."""
    from electra_bench.config import load_suite
    from electra_bench.units import Env, get_blocks, get_tokenizer

    folder = cache.parent / "cache-suite"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "s.yaml").write_text(text.replace(WORK, str(folder)))
    env = Env(data_root, folder, False, cache)
    for cell in load_suite(folder / "s.yaml").cells:
        tokenizer, tok_id = get_tokenizer(cell.config, env)
        get_blocks(cell.config, tokenizer, tok_id, env)


def run_once(n_workers: int, text: str, cache: Path, base: Path, threads: int) -> dict:
    """One run of the suite by `n_workers` worker processes in a fresh folder; wall time and what each ran."""
    folder = Path(tempfile.mkdtemp(prefix=f"run-{n_workers}w-", dir=base))
    suite = folder / "suite.yaml"
    suite.write_text(text.replace(WORK, str(folder)))
    shutil.copytree(cache, folder / "work" / "cache")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(folder / "hf-datasets"),
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    logs = [folder / f"worker{i}.log" for i in range(n_workers)]
    t0 = time.perf_counter()
    procs = []
    for log in logs:
        with open(log, "wb") as out:
            procs.append(subprocess.Popen([sys.executable, "-m", "electra_bench.cli", "worker", str(suite),
                                           "--no-progress", "--poll", "0.5"], stdout=out, stderr=subprocess.STDOUT,
                                          env=env, cwd=REPO))
    codes = [p.wait() for p in procs]
    wall = time.perf_counter() - t0
    if any(codes):
        tails = "\n".join(log.read_text(errors="replace")[-2000:] for log in logs)
        raise SystemExit(f"a worker exited with {codes}:\n{tails}")
    from electra_bench.results import read_records

    records = read_records(folder / "results" / SUITE_NAME / "records.jsonl", unique=False)
    units = [[line.split("] ", 1)[1] for line in log.read_text().splitlines() if line.startswith("-> [")]
             for log in logs]
    unit_s = sum(r["wall_s"] for r in records)
    return {"workers": n_workers, "wall_s": wall, "units_per_worker": [len(u) for u in units],
            "units_s": unit_s, "busy": unit_s / (n_workers * wall), "records": len(records),
            "metrics": {r["run_key"]: r["metrics"] for r in records}, "folder": str(folder)}


def main(argv: list[str] | None = None) -> dict:
    ap = timing.parser(__doc__, "tiny model on tiny fixture data (tests/test_suite_e2e.make_data_root), 1 rep: "
                                "checks the script only, the numbers mean nothing")
    ap.add_argument("--steps", type=int, help="pre-training steps per cell (default 60; --quick: 20)")
    ap.add_argument("--examples", type=int, help="train and dev examples per task (default 300; --quick: 24)")
    ap.add_argument("--reps", type=int, help="runs per worker count (default 2; --quick: 1)")
    ap.add_argument("--worker-threads", type=int, default=1, help="torch threads per worker (default 1)")
    ap.add_argument("--tracking", action="store_true", help="MLflow tracking on (embedded SQLite store)")
    ap.add_argument("--data-root", help="data folder (default: electra_bench.tasks.default_data_root())")
    argv = sys.argv[1:] if argv is None else argv
    args, device, _ = timing.start(ap, argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from electra_bench.tasks import default_data_root

    steps = args.steps or (20 if args.quick else 60)
    examples = args.examples or (24 if args.quick else 300)
    reps = args.reps or (1 if args.quick else 2)
    base = Path(tempfile.mkdtemp(prefix="scale-out-"))
    try:
        if args.quick:
            sys.path.insert(0, str(REPO / "tests"))
            from test_suite_e2e import make_data_root

            data_root = base / "data"
            make_data_root(data_root)
        else:
            data_root = Path(args.data_root) if args.data_root else default_data_root()
        text = ((QUICK if args.quick else REAL) + CELLS).format(root=Path(data_root).resolve(), work=WORK, steps=steps,
                                                      examples=examples, tracking=str(args.tracking).lower())
        build_cache(text, Path(data_root), base / "cache")
        runs: list[dict] = []
        for i in range(reps):
            for n in ((1, 2) if i % 2 == 0 else (2, 1)):
                runs.append(run_once(n, text, base / "cache", base, args.worker_threads))
                print(f"{n} worker(s): {runs[-1]['wall_s']:.1f} s, units per worker {runs[-1]['units_per_worker']}",
                      file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    first = runs[0]["metrics"]
    equal = all(r["metrics"] == first for r in runs)
    per = {n: [r for r in runs if r["workers"] == n] for n in (1, 2)}
    summary = {n: {"wall_s_median": timing.median([r["wall_s"] for r in rs]),
                   "wall_s": [r["wall_s"] for r in rs], "busy_median": timing.median([r["busy"] for r in rs]),
                   "units_per_worker": [r["units_per_worker"] for r in rs]} for n, rs in per.items()}
    ratio = summary[2]["wall_s_median"] / summary[1]["wall_s_median"]
    record = {
        "benchmark": NAME, "command": timing.command("benchmarks/scale_out.py", argv),
        "machine": {**timing.machine_info(device), "threads": args.worker_threads}, "quick": args.quick,
        "data_root": str(data_root),
        "suite": {"cells": ["G 1/4", "G 1/2"], "tasks": ["sst2", "conll2003"], "seeds": [0, 1],
                  "pretrain_steps": steps, "examples": examples, "units": runs[0]["records"],
                  "storage": "journal file (work/<suite>/optuna.journal)", "tracking": args.tracking},
        "reps": reps, "worker_threads": args.worker_threads, "by_workers": {str(n): s for n, s in summary.items()},
        "runs": [{k: v for k, v in r.items() if k not in ("metrics", "folder")} for r in runs],
        "ratio_2_vs_1": ratio, "records_equal": equal,
        "targets": {"ratio_max": TARGET_RATIO, "ratio_met": ratio <= TARGET_RATIO},
    }
    timing.write_report(args.out, NAME, record, report_lines(record))
    print("\n".join(report_lines(record)))
    return record


def report_lines(rec: dict) -> list[str]:
    s, by = rec["suite"], rec["by_workers"]
    ok = "met" if rec["targets"]["ratio_met"] else "**missed**"
    quick = " (--quick: script check only, numbers mean nothing)" if rec["quick"] else ""
    lines = [f"# Scale-out: 1 vs 2 workers{quick}", "", *timing.machine_lines(rec["machine"], rec["command"]), "",
             f"Suite: cells {', '.join(s['cells'])} ({s['pretrain_steps']} pre-training steps each), tasks "
             f"{', '.join(s['tasks'])} x seeds {s['seeds']} on {s['examples']} train/dev examples: {s['units']} "
             f"units; storage {s['storage']}; MLflow tracking {'on' if s['tracking'] else 'off'}; "
             f"{rec['worker_threads']} torch thread(s) per worker; {rec['reps']} run(s) per worker count, "
             f"alternating.", ""]
    rows = [[n, f"{by[n]['wall_s_median']:.1f}", ", ".join(f"{w:.1f}" for w in by[n]["wall_s"]),
             f"{100 * by[n]['busy_median']:.0f}%", "; ".join(str(u) for u in by[n]["units_per_worker"])]
            for n in ("1", "2")]
    lines += timing.md_table(["workers", "wall s (median)", "wall s (runs)", "busy", "units per worker"], rows)
    lines += ["", f"**ratio 2 workers / 1 worker = {rec['ratio_2_vs_1']:.2f}** (target <= {TARGET_RATIO}: {ok}). "
                  f"Records equal in every run: {rec['records_equal']}."]
    return lines


if __name__ == "__main__":
    main()
