"""The pre-training budget of a GPU session (benchmarks/gpu_session.sh): "as many tokens as fit".

Reads the loop benchmark the session has just run (benchmarks/pretrain_loop.py: FLOP/s of ELECTRA-Small per
setting) and the wall seconds each pre-training may take, and prints the `--set` overrides for the suite, one per
line: `pretrain.budget_flops` (equal for ELECTRA and BERT: equal compute, Table 1) and, from a CUDA sweep, the
fastest batch size. FLOPs are GR's analytic count (flops.py), so the budget means the same on any machine.

    python benchmarks/gpu_plan.py OUT/bench/pretrain_loop_cuda.json 150    # 150 s per pre-training
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

# Of the wall seconds given, the share spent in training steps: the rest goes to corpus packing (first run),
# held-out evaluation, checkpoint saves, and the start-up window the benchmark leaves out.
SAFETY = 0.75
# The sweep's options the suite can take as they are (the benchmark's batch rows run the suite's own setting).
BATCH_ROW = "batch "


def best_run(record: dict) -> dict:
    """The measured run with the most FLOP/s: a CUDA sweep's batch rows, or the CPU side-by-side's no-sync runs."""
    if record["device"] == "cuda":
        runs = [r for name, r in record["rows"].items() if name.startswith(BATCH_ROW) and "," not in name
                and "flops_per_s" in r]
    else:
        runs = record["runs"]["no-sync"]
    if not runs:
        raise SystemExit(f"{record.get('command', 'the benchmark')}: no finished run to size the budget from")
    return max(runs, key=lambda r: r["flops_per_s"])


def overrides(record: dict, seconds: float) -> list[str]:
    best = best_run(record)
    out = [f"pretrain.budget_flops={best['flops_per_s'] * seconds * SAFETY:.4g}"]
    if record["device"] == "cuda":
        out.append(f"pretrain.batch_size={best['batch_size']}")
    return out


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        raise SystemExit(__doc__)
    record = json.loads(Path(args[0]).read_text())
    print("\n".join(overrides(record, float(args[1]))))


if __name__ == "__main__":
    main()
