"""The prepared GPU session (issue 15): one call on a lent GPU, inside a strict wall budget, returning what finished.

    python benchmarks/gpu_session.py --out OUT [--budget-s 480]    # on the GPU machine (gpu_session.sh wraps it)
    python benchmarks/gpu_session.py --out OUT --rehearse          # the same steps on CPU, every budget shrunk

Steps, each under the deadline that is left (a step that runs out is killed; the next ones still get their turn
only while time is left):
  (a) tests/test_cuda.py (<= 60 s; skipped tests on a CPU-only machine);
  (b) benchmarks/pretrain_step.py on the device (<= 60 s);
  (c) pre-training of ELECTRA-Small (sampling temperature 1) and BERT-Small at equal FLOPs, as many as fit: the
      budget is `--pretrain-share` of the time left after (a) and (b), split equally, at the ELECTRA-Small
      FLOP/s of `--tflops` (sustained, analytic GR counting: see the note below), with checkpoints at 6.25/25/50%;
  (d) fine-tuning of each model's final checkpoint and a random-init control on SST-2 (full train set), CoNLL-2003,
      MRPC, STS-B, CoLA and RTE with 3 seeds, then the partly trained checkpoints (suites/gpu/table1_small*.yaml).
(c) and (d) run as stages of one suite (same records, same pre-trainings), ordered so the most informative
comparison finishes first: both pre-trainings and RTE seed 0 of the three rows; all tasks seed 0; seeds 0-1;
seeds 0-2; then the partly trained checkpoints. Records are appended to OUT/results/gpu/table1_small/records.jsonl
as each unit finishes (a cut-off run returns what finished); (e) renders the whole table from them at the end
(reporting, up to 60 s past the budget).

Provenance (OUT/provenance.json): `git rev-parse HEAD` as the machine's checkout says it, and the git tree hash of
the files that actually ran (`git write-tree` of the working tree through a scratch index): a copy of the
repository whose .git is older than its files (the lent machine's, last time) still names its code by that tree;
`git log --format='%H %T' | grep <tree>` finds the commit. Every log and report goes under OUT.

FLOP/s note: `--tflops` is the sustained training rate the budget is planned at, in the GR counting of
flops.py. At the 30-40% MFU issue 15 aims for on an H200 (bf16 peak ~780 TFLOP/s measured) that is ~250; the
default, 120, is deliberately lower so the pre-trainings end inside their share; the step benchmark's numbers from
(b) are in OUT and say which value the next session should pass.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITE, CURVE = ROOT / "suites/gpu/table1_small.yaml", ROOT / "suites/gpu/table1_small_curve.yaml"
SUITE_NAME = "gpu/table1_small"
TASKS = ["sst2", "conll2003", "mrpc", "stsb", "cola", "rte"]
FIRST_TASK = "rte"  # the cheapest task: stage 1 pre-trains both models and compares the three rows on it first


def stages(seeds: int, curve_tasks: list[str] = TASKS) -> list[tuple[str, Path, list[str], list[int]]]:
    """(name, suite file, tasks, seeds) in the order they run; units finished by an earlier stage are skipped."""
    out = [("pretrain + rte seed 0", SUITE, [FIRST_TASK], [0]), ("all tasks, seed 0", SUITE, TASKS, [0])]
    out += [(f"all tasks, seeds 0-{k - 1}", SUITE, TASKS, list(range(k))) for k in range(2, seeds + 1)]
    return out + [("partly trained checkpoints", CURVE, curve_tasks, list(range(seeds)))]


def git(*args: str, env: dict | None = None) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
                              env={**os.environ, **(env or {})})
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def provenance(argv: list[str]) -> dict:
    """The code that runs: HEAD, the tree hash of the working files (tracked + untracked, not ignored), dirt."""
    with tempfile.TemporaryDirectory() as tmp:
        index = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        git("read-tree", "HEAD", env=index)
        git("add", "-A", ".", env=index)
        tree = git("write-tree", env=index)
    import torch

    info = {"head": git("rev-parse", "HEAD"), "tree": tree, "head_tree": git("rev-parse", "HEAD^{tree}"),
            "dirty": git("status", "--porcelain").splitlines(), "argv": argv, "python": sys.version.split()[0],
            "torch": torch.__version__, "cuda": torch.cuda.is_available(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    info["tree_matches_head"] = info["tree"] == info["head_tree"]
    return info


class Session:
    def __init__(self, out: Path, budget_s: float):
        self.out, self.t0, self.budget = out, time.monotonic(), budget_s
        self.steps: list[dict] = []

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.t0)

    def run(self, name: str, cmd: list[str], cap_s: float, log: str) -> int | None:
        """Run `cmd` for at most min(cap_s, time left) seconds, output to OUT/<log>; None: skipped (no time)."""
        limit = min(cap_s, self.left())
        entry = {"step": name, "command": shlex.join(cmd), "limit_s": round(limit, 1), "log": log}
        if limit < 1:
            entry.update(rc=None, status="skipped: wall budget spent")
            return self._note(entry)
        print(f"== {name} (<= {limit:.0f} s): {shlex.join(cmd)}", flush=True)
        start = time.monotonic()
        with open(self.out / log, "a") as fh:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                rc = proc.wait(timeout=limit)
                status = "ok" if rc == 0 else f"failed (exit {rc})"
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 15)  # the step's own process group: the CLI and what it started
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, 9)
                    proc.wait()
                rc, status = None, "cut off at its limit"
        entry.update(rc=rc, status=status, wall_s=round(time.monotonic() - start, 1))
        print(f"   {status} after {entry['wall_s']} s; {self.left():.0f} s left", flush=True)
        return self._note(entry)

    def _note(self, entry: dict):
        self.steps.append(entry)
        (self.out / "steps.json").write_text(json.dumps(self.steps, indent=2) + "\n")
        return entry["rc"]


def pretrain_budget_flops(seconds: float, tflops: float) -> float:
    """FLOPs one model may spend in `seconds` at `tflops` sustained (equal compute: BERT gets the same)."""
    return max(1.0, seconds) * tflops * 1e12


def options() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for every record, log and report (created)")
    ap.add_argument("--budget-s", type=float, help="wall budget of the whole session in seconds (default 480; "
                    "rehearse 300)")
    ap.add_argument("--rehearse", action="store_true", help="CPU dress rehearsal: tiny model, 32-example "
                    "fine-tunes, 1 seed, the curve on RTE only, quick benchmark; checks the script, not the science")
    ap.add_argument("--tflops", type=float, default=120.0, help="sustained training TFLOP/s to plan the "
                    "pre-training budget at (GR counting; default 120)")
    ap.add_argument("--pretrain-share", type=float, default=0.6, help="share of the time left after the tests "
                    "and the benchmark given to the two pre-trainings (default 0.6)")
    ap.add_argument("--budget-flops", type=float, help="pre-training FLOPs per model, instead of planning them from "
                    "the time left (pass the first run's value to resume a cut-off session with the same run keys)")
    ap.add_argument("--step-cap-s", type=float, default=60.0, help="the most seconds (a) the CUDA tests and (b) the "
                    "benchmark may each take (default 60; a loaded CPU needs more for the rehearsal's imports)")
    ap.add_argument("--seeds", type=int, help="fine-tuning seeds (default 3; rehearse 1)")
    ap.add_argument("--work-dir", default=str(Path(tempfile.gettempdir()) / "gpu_session_work"),
                    help="scratch for pre-training state, checkpoints and caches, kept out of OUT (it is large and "
                    "OUT is what a lent machine sends back; default: <tmp>/gpu_session_work)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                    help="passed to every suite stage, e.g. pretrain.compile=default (repeatable)")
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = options().parse_args(argv)
    rehearse = args.rehearse
    budget = args.budget_s or (300.0 if rehearse else 480.0)
    seeds = args.seeds or (1 if rehearse else 3)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "provenance.json").write_text(json.dumps(provenance(argv), indent=2) + "\n")
    s = Session(out, budget)
    py = sys.executable

    device = "cpu" if rehearse else "cuda"
    s.run("a. CUDA tests", [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cuda.py"],
          args.step_cap_s, "pytest_cuda.log")
    bench = [py, "benchmarks/pretrain_step.py", "--device", device, "--out", str(out / "benchmarks")]
    s.run("b. step benchmark", bench + (["--quick"] if rehearse else []), args.step_cap_s, "benchmark.log")

    flops = args.budget_flops or pretrain_budget_flops(args.pretrain_share * s.left() / 2, args.tflops)
    common = ["--no-progress", "--set", f"results_dir={out / 'results'}",
              "--set", f"work_dir={Path(args.work_dir).resolve()}",
              "--set", "tracking.enabled=false", "--scale", "rehearse" if rehearse else "gpu"]
    if not rehearse:  # the rehearsal keeps its scale's tiny budget
        common += ["--set", f"pretrain.budget_flops={flops:.4g}"]
    for o in args.overrides:
        common += ["--set", o]
    plan = {"budget_s": budget, "pretrain_budget_flops": None if rehearse else flops, "tflops": args.tflops,
            "seeds": seeds, "stages": []}
    for name, suite, tasks, stage_seeds in stages(seeds, [FIRST_TASK] if rehearse else TASKS):
        cmd = [py, "-m", "electra_bench.cli", "run", str(suite.relative_to(ROOT)), *common,
               "--set", f"tasks=[{', '.join(tasks)}]", "--set", f"seeds=[{', '.join(map(str, stage_seeds))}]"]
        plan["stages"].append({"stage": name, "command": shlex.join(cmd)})
        (out / "plan.json").write_text(json.dumps(plan, indent=2) + "\n")
        s.run(f"c/d. {name}", cmd, s.left(), "suite.log")
    # Reporting, not compute: the whole table (every row and task) from whatever records finished, even when the
    # budget is spent (the stages' own renders show their stage's tasks only).
    s.budget = max(s.budget, budget - s.left() + 60)
    s.run("e. table", [py, "-m", "electra_bench.cli", "table", str(CURVE.relative_to(ROOT)), *common[1:],
                       "--set", f"tasks=[{', '.join(TASKS)}]", "--set", f"seeds=[{', '.join(map(str, range(seeds)))}]"],
          60, "table.log")
    records = out / "results" / SUITE_NAME / "records.jsonl"
    n = len(records.read_text().splitlines()) if records.exists() else 0
    print(f"== done: {n} records in {records}", flush=True)
    return 0 if all(e["rc"] == 0 for e in s.steps) else 1


if __name__ == "__main__":
    sys.exit(main())
