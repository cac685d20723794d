"""The prepared GPU session (issue 15): how benchmarks/gpu_plan.py sizes the equal-compute pre-training budget.

The rehearsal itself (`bash benchmarks/gpu_session.sh --rehearse OUT`) is not a test yet: it ran its stages
(a)-(c) and the start of (d) on the CPU, but did not finish before the work was handed over (see the issue note)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_plan  # noqa: E402  (benchmarks/ is not a package)


def test_gpu_plan_sizes_equal_budgets_from_the_fastest_batch():
    record = {"device": "cuda", "rows": {
        "batch 128": {"batch_size": 128, "flops_per_s": 2e14}, "batch 512": {"batch_size": 512, "flops_per_s": 3e14},
        "batch 1024": {"batch_size": 1024, "skipped": "out of memory"},
        "batch 512, compile default": {"batch_size": 512, "flops_per_s": 9e14}}}  # an option row: not the suite's
    assert gpu_plan.overrides(record, 100) == [f"pretrain.budget_flops={3e14 * 100 * gpu_plan.SAFETY:.4g}",
                                               "pretrain.batch_size=512"]
    cpu = {"device": "cpu", "runs": {"no-sync": [{"batch_size": 4, "flops_per_s": 1e9}]}}
    assert gpu_plan.overrides(cpu, 10) == [f"pretrain.budget_flops={1e10 * gpu_plan.SAFETY:.4g}"]
    with pytest.raises(SystemExit, match="no finished run"):
        gpu_plan.overrides({"device": "cuda", "rows": {"batch 32": {"batch_size": 32, "skipped": "budget spent"}}}, 1)
