"""Worst-case `validate` inputs under 1 MB (issue #17): wall time and peak memory of the whole command.

Each input is validated by `electra-bench validate FILE` in a fresh process, as a user runs it: the wall time
includes the interpreter's start and every import `validate` needs (torch, transformers and `datasets` are not among
them: tests/test_hardening.py holds that), the peak RSS is the child's own (os.wait4). The inputs sit just under
each limit of safe_yaml.py (size, depth, alias-expanded nodes) or far past it. Goal: < 1 s and < 200 MB each.
Writes results/benchmarks/validate_limits.md.

    PYTHONPATH=$PWD python benchmarks/validate_limits.py
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from electra_bench.safe_yaml import MAX_BYTES, MAX_DEPTH, MAX_NODES

HEAD = "name: bench\nwork_dir: /nonexistent/work\nresults_dir: /nonexistent/results\n"
LAUGHS = "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 9) if p != ' ' else ', '.join(['lol'] * 9)}]\n"
                 for p, c in zip(" abcdefgh", "abcdefghi"))
_DEEP = MAX_DEPTH - 2  # nested lists under `description:` inside the root mapping
INPUTS = {
    "baseline (valid 3-line suite)": HEAD,
    "billion laughs (9 levels x 9 aliases)": HEAD + LAUGHS,
    "1000 nested flow lists": HEAD + "description: " + "[" * 1000 + "]" * 1000 + "\n",
    f"{_DEEP} nested lists (under the depth limit) x 150": HEAD + "description: [" + ", ".join(
        ["[" * _DEEP + "]" * _DEEP] * ((MAX_NODES - 20) // _DEEP)) + "]\n",
    f"{_DEEP} nested lists x 600 (past the node limit)": HEAD + "description: [" + ", ".join(
        ["[" * _DEEP + "]" * _DEEP] * 600) + "]\n",
    f"flat list of {MAX_NODES - 20:,} numbers (under the node limit)": HEAD + "seeds: [" + ", ".join(
        str(i) for i in range(MAX_NODES - 20)) + "]\n",
    "1,000 seeds, each an alias of a 4-number list": HEAD + "x: &x [1, 2, 3, 4]\nseeds: [" + ", ".join(
        ["*x"] * 1000) + "]\n",
    "990 KB string (under the size limit)": HEAD + 'description: "' + "x" * (MAX_BYTES - 10_000) + '"\n',
    "1 MB file (over the size limit)": HEAD + 'description: "' + "x" * MAX_BYTES + '"\n',
}
CMD = [sys.executable, "-c", "import sys; from electra_bench.cli import main; sys.exit(main())", "validate"]


def run(path: Path) -> tuple[float, float, float, int, str]:
    """(wall s, CPU s, peak RSS MB, exit code, last line of output) of one `validate` in a fresh process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([*CMD, str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    last = (out.strip().splitlines() or [""])[-1]
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, proc.returncode, last.split(": ", 2)[-1][:70]


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--note", default="", help="a sentence for the report, e.g. what else ran on the machine")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in INPUTS.items():
            path = Path(tmp) / "suite.yaml"
            path.write_text(text)
            wall, cpu, rss, code, outcome = run(path)
            rows.append(f"| {name} | {len(text.encode()):,} | {wall * 1000:.0f} | {cpu * 1000:.0f} | {rss:.0f} "
                        f"| {code} | {outcome} |")
            print(rows[-1], flush=True)
    table = "\n".join(["| input | bytes | `validate` wall ms | CPU ms (user+sys) | peak RSS MB | exit | outcome |",
                       "|---|---|---|---|---|---|---|", *rows])
    out = Path("results/benchmarks/validate_limits.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# validate: worst-case inputs under 1 MB\n\n`PYTHONPATH=$PWD python benchmarks/validate_limits.py`"
                   f" on {os.cpu_count()} CPU cores, {args.note + ', ' if args.note else ''}"
                   f" {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.\nEach row is the whole command in a fresh"
                   f" process: interpreter start, imports, reading, limits, schema; CPU ms is what the\n"
                   f"process itself used (roughly the wall time of a quiet machine, when other jobs share the cores).\n"
                   f"Limits (safe_yaml.py):"
                   f" {MAX_BYTES:,} bytes, depth {MAX_DEPTH}, {MAX_NODES:,} alias-expanded nodes. Goal: < 1 s,"
                   f" < 200 MB.\n\n{table}\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
