"""benchmarks/gpu_session.sh --rehearse: the whole prepared GPU session, every budget shrunk, on the CPU (issue 15),
so the first call on a lent GPU does not fail on a typo. Slow: a few minutes on a busy 2-core machine."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_plan  # noqa: E402  (benchmarks/ is not a package)

TASKS = {"sst2", "conll2003", "mrpc", "stsb", "cola", "rte"}


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


@pytest.mark.slow
def test_rehearsal_runs_every_stage(tmp_path):
    data = Path(os.environ.get("ELECTRA_BENCH_DATA", ROOT.parent / "shared" / "data"))
    if not (data / "glue" / "RTE").is_dir():
        pytest.skip(f"the rehearsal reads the real tasks from a data root; none at {data}")
    env = {**os.environ, "PYTHON": sys.executable, "ELECTRA_BENCH_DATA": str(data), "WORK_DIR": str(tmp_path / "w"),
           "PYTHONPATH": str(ROOT)}
    out = tmp_path / "out"
    proc = subprocess.run(["bash", "benchmarks/gpu_session.sh", "--rehearse", "--budget-s", "1500", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "commit.txt").read_text().strip() and (out / "pytest_cuda.log").exists()
    assert json.loads((out / "bench" / "pretrain_loop.json").read_text())["ratio_nosync_vs_previous"] > 0
    assert (out / "pretrain_plan.txt").read_text().startswith("pretrain.budget_flops=")
    records = [json.loads(line) for line in (out / "results" / "gpu" / "table1_small" / "records.jsonl").open()]
    pre = [r for r in records if r["unit"] == "pretrain"]
    assert {r["cell"] for r in pre} == {"ELECTRA", "BERT"}
    budget = float((out / "pretrain_plan.txt").read_text().split("\n")[0].split("=")[1])
    for r in pre:  # equal compute: each spends the one budget, to within one of its own steps
        assert abs(r["train_flops"] - budget) <= r["train_flops"] / r["steps"], r
    fine = {(r["cell"], r["task"], r["seed"]) for r in records if r["unit"] == "finetune"}
    assert fine == {(c, t, s) for c in ("ELECTRA", "BERT", "random init") for t in TASKS for s in (0, 1, 2)}
    curve = [json.loads(line) for line in (out / "results" / "gpu" / "table1_small_curve" / "records.jsonl").open()]
    assert {r["cell"] for r in curve if r["unit"] == "finetune"} >= {"ELECTRA 50%", "BERT 25%"}
    assert all(r["code_version"] for r in records)  # each record names the commit (CODE_VERSION+git:<sha>)
