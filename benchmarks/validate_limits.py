"""Worst-case `validate` inputs under 1 MB (issue #17): time and peak memory of loading each, in a fresh process.

Each input is loaded by `electra_bench.config.load_suite` in its own child process; the child reports the load's
wall time and its peak RSS (ru_maxrss, which includes the interpreter and the imports: the baseline row shows
them alone). Writes results/benchmarks/validate_limits.md.

    PYTHONPATH=$PWD python benchmarks/validate_limits.py
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

HEAD = "name: bench\nwork_dir: /nonexistent/work\nresults_dir: /nonexistent/results\n"
LAUGHS = "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 9) if p != ' ' else ', '.join(['lol'] * 9)}]\n"
                 for p, c in zip(" abcdefgh", "abcdefghi"))
INPUTS = {
    "baseline (valid 3-line suite)": HEAD,
    "billion laughs (9 levels x 9 aliases)": HEAD + LAUGHS,
    "1000 nested flow lists": HEAD + "description: " + "[" * 1000 + "]" * 1000 + "\n",
    "30 nested lists (under the depth limit) x 600": HEAD + "description: [" + ", ".join(
        ["[" * 30 + "]" * 30] * 600) + "]\n",
    "flat list of 19,000 numbers (under the node limit)": HEAD + "seeds: [" + ", ".join(
        str(i) for i in range(19_000)) + "]\n",
    "127 KB string": HEAD + 'description: "' + "x" * 127_000 + '"\n',
    "1 MB file (over the size limit)": HEAD + 'description: "' + "x" * 1_000_000 + '"\n',
}
CHILD = """
import json, resource, sys, time
from electra_bench.config import ConfigError, load_suite
import electra_bench.robustness, electra_bench.tables, electra_bench.tasks  # imports: paid once, whatever the input
t0 = time.perf_counter()
try:
    load_suite(sys.argv[1]); outcome = "valid"
except ConfigError as e:
    outcome = str(e).split(": ", 1)[-1][:70]
dt = time.perf_counter() - t0
print(json.dumps({"s": dt, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "outcome": outcome}))
"""


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in INPUTS.items():
            path = Path(tmp) / "suite.yaml"
            path.write_text(text)
            out = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True,
                                 timeout=120)
            res = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(f"| {name} | {len(text.encode()):,} | {res['s'] * 1000:.0f} | {res['rss_mb']:.0f} | "
                        f"{res['outcome']} |")
            print(rows[-1], flush=True)
    table = "\n".join(["| input | bytes | load_suite ms | peak RSS MB (process) | outcome |", "|---|---|---|---|---|",
                       *rows])
    out = Path("results/benchmarks/validate_limits.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# validate: worst-case inputs under 1 MB\n\n`PYTHONPATH=$PWD python benchmarks/validate_limits.py`"
                   f" (2 shared CPU cores).\nThe modules `validate` imports"
                   f" are loaded before the clock starts (~4 s on this machine, whatever the input);"
                   f" RSS includes the interpreter and those imports (see the baseline row).\n\n"
                   f"{table}\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
