"""The prepared GPU session (benchmarks/gpu_session.py, issue 15) rehearsed on CPU: every step runs, in order, and
writes its provenance, logs, benchmark and records, so the first call on a lent GPU does not fail on a typo.
It reads the real task files (SST-2, CoNLL-2003, MRPC, STS-B, CoLA, RTE) and a news corpus from the data root."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_session  # noqa: E402

NEEDED = ["corpus/bbc-news", "glue/SST-2", "glue/MRPC", "glue/STS-B", "glue/CoLA", "glue/RTE", "conll2003"]


def data_root() -> Path | None:
    root = os.environ.get("ELECTRA_BENCH_DATA")
    return Path(root) if root and all((Path(root) / p).exists() for p in NEEDED) else None


def test_stages_put_the_three_rows_first_and_the_curve_last():
    names = [(s[1].name, s[2], s[3]) for s in gpu_session.stages(3)]
    assert names[0] == ("table1_small.yaml", ["rte"], [0])  # both pre-trainings + the cheapest comparison
    assert names[1] == ("table1_small.yaml", gpu_session.TASKS, [0])
    assert [n[2] for n in names[2:4]] == [[0, 1], [0, 1, 2]]
    assert names[-1] == ("table1_small_curve.yaml", gpu_session.TASKS, [0, 1, 2])
    assert gpu_session.pretrain_budget_flops(100, 120) == pytest.approx(1.2e16)


@pytest.mark.slow
@pytest.mark.skipif(data_root() is None, reason="needs the shared data root ($ELECTRA_BENCH_DATA)")
def test_rehearsal_runs_every_step(tmp_path):
    out = tmp_path / "session"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cmd = [sys.executable, "benchmarks/gpu_session.py", "--out", str(out), "--rehearse", "--budget-s", "1500",
           "--step-cap-s", "300", "--work-dir", str(tmp_path / "work")]  # generous: CI's cores may be shared
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    steps = json.loads((out / "steps.json").read_text())
    assert done.returncode == 0, done.stdout[-3000:] + json.dumps(steps, indent=1)
    assert [s["step"] for s in steps] == ["a. CUDA tests", "b. step benchmark", "c/d. pretrain + rte seed 0",
                                          "c/d. all tasks, seed 0", "c/d. partly trained checkpoints",
                                          "e. table"]
    prov = json.loads((out / "provenance.json").read_text())
    assert re.fullmatch(r"[0-9a-f]{40}", prov["head"]) and re.fullmatch(r"[0-9a-f]{40}", prov["tree"])
    assert (out / "benchmarks" / "pretrain_step.json").exists()
    records = [json.loads(line) for line in (out / "results/gpu/table1_small/records.jsonl").read_text().splitlines()]
    pre = [r for r in records if r["unit"] == "pretrain"]
    assert sorted(r["cell"] for r in pre) == ["BERT", "ELECTRA"]  # once each: the curve stage reuses them
    fine = {(r["cell"], r["task"], r["seed"]) for r in records if r["unit"] == "finetune"}
    rows = ["ELECTRA", "BERT", "random init"]
    assert {(c, t, 0) for c in rows for t in gpu_session.TASKS} <= fine
    assert {(f"{m} {p}%", "rte", 0) for m in ("ELECTRA", "BERT") for p in ("6.25", "25", "50")} <= fine
    first = [(r["cell"], r.get("task")) for r in records][:5]  # the three rows on RTE come before anything else
    assert first == [("ELECTRA", None), ("ELECTRA", "rte"), ("BERT", None), ("BERT", "rte"), ("random init", "rte")]
    table = (out / "results/gpu/table1_small/table.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| row |"))
    assert all(f" {t} |" in header for t in gpu_session.TASKS) and "| ELECTRA 50% |" in table  # every task and row
    assert not list(out.rglob("state.pt"))  # pre-training state stays in the work dir, out of what comes back
