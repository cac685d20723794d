"""Every committed results/<suite>/table.{md,tex,csv} is what its records render to, byte for byte: nothing in
results/ is edited by hand.

The suite file is found by name (results/<name>/ <-> suites/<name>.yaml); its records are placed in its plan's
cells as `electra-bench table` places them (suite.as_planned: run keys read the data root, ELECTRA_BENCH_DATA)."""
from __future__ import annotations

from pathlib import Path

import pytest

from electra_bench.config import load_suite
from electra_bench.results import read_records
from electra_bench.suite import as_planned, make_plan, planned_cells
from electra_bench.tables import render_all
from electra_bench.verdicts import judge

REPO = Path(__file__).resolve().parents[1]
RESULTS = sorted(p.parent for p in (REPO / "results").rglob("records.jsonl") if (p.parent / "table.md").exists())


@pytest.mark.skipif(not RESULTS, reason="no committed suite results yet")
@pytest.mark.parametrize("folder", RESULTS, ids=lambda p: str(p.relative_to(REPO / "results")))
def test_committed_table_matches_its_records(folder, tmp_path):
    name = str(folder.relative_to(REPO / "results"))
    suite_file = REPO / "suites" / f"{name}.yaml"
    assert suite_file.exists(), f"no suite file for {folder}"
    suite = load_suite(suite_file)
    plan = make_plan(suite)
    records = as_planned(plan, read_records(folder / "records.jsonl"))
    spec = suite.table_spec
    render_all(records, spec, tmp_path, judge(records, spec), planned=planned_cells(plan))
    for name in ("table.md", "table.tex", "table.csv"):
        if (folder / name).exists():
            assert (tmp_path / name).read_bytes() == (folder / name).read_bytes(), name


BEGIN, END = "<!-- claims: electra-bench claims", "<!-- /claims -->"


def test_readme_verdict_table_matches_the_records():
    """README's 'Reproducing the paper' table is `electra-bench claims <the suites its marker names>` verbatim."""
    from electra_bench.verdicts import claim_rows, markdown

    text = (REPO / "README.md").read_text()
    start = text.index(BEGIN)
    marker_end = text.index("-->", start)
    suites = text[start + len(BEGIN):marker_end].split()
    block = text[marker_end + len("-->"):text.index(END, start)].strip("\n") + "\n"
    assert suites and all((REPO / s).exists() for s in suites)
    assert block == markdown(claim_rows([REPO / s for s in suites], REPO))


def test_readme_quotes_the_off_plan_two_stage_intervals():
    """The README's intervals for the two-stage run outside cpu_budget_levers' plan are what its script prints."""
    import importlib.util

    script = REPO / "results" / "cpu_budget_levers" / "two_stage_62pct.py"
    spec = importlib.util.spec_from_file_location("two_stage_62pct", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = " ".join((REPO / "README.md").read_text().split())
    for line in module.lines():
        interval = line.split(": ", 1)[1].split(" (")[0]  # "+1.70 [-0.40, +3.80]"
        assert interval in readme, line
