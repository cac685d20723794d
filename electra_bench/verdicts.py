"""The claims of several suites side by side: one markdown table of claim x verdict (with the interval and the
paper's numbers), computed from the committed records alone. The README's "Reproducing the paper" table is this
output (`electra-bench claims suites/paper`), and a test re-renders it and compares."""
from __future__ import annotations

from pathlib import Path

from .claims import GLUE
from .config import load_suite
from .results import read_records
from .tables import build_table

HEADER = ["suite", "claim", "metric", "paper", "ours: better − worse [95% CI]", "verdict"]


def claim_rows(suite_files: list[Path], repo: Path) -> list[list[str]]:
    rows = []
    for path in suite_files:
        suite = load_suite(path)
        if not suite.config.table.claims:
            continue
        folder = repo / suite.config.results_dir / suite.config.name
        records = read_records(folder / "records.jsonl") if (folder / "records.jsonl").exists() else []
        verdicts = build_table(records, suite.table_spec).verdicts if records else []
        link = f"[{suite.config.name}]({Path(suite.config.results_dir) / suite.config.name / 'table.md'})"
        ref = suite.config.table.reference
        for claim, v in zip(suite.config.table.claims, verdicts or [None] * len(suite.config.table.claims)):
            metric = claim.get("metric", "glue")
            col = GLUE if metric == "glue" else metric
            paper = [ref.get(claim.get(side), {}).get(col) if isinstance(claim.get(side), str) else None
                     for side in ("better", "worse")]
            paper_s = f"{paper[0]} vs {paper[1]}" if None not in paper else "–"
            ours = f"{v.diff:+.2f} [{v.ci_low:+.2f}, {v.ci_high:+.2f}]" if v and v.diff == v.diff else "–"
            rows.append([link, claim["name"], (claim.get("task", "") + " " + metric).strip(), paper_s, ours,
                         f"**{v.verdict}**" if v else "not run"])
    return rows


def markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
