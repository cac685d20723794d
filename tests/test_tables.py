"""Tables and plots from records alone (electra_bench/tables.py).

The golden files in tests/fixtures/records/ were rendered once from `generator_size.jsonl` (hand-made records:
three generator sizes and a "random init" row, one degenerate CoLA run per two cells, one diverged RTE run, one
re-run seed) and checked by eye: medians, the GLUE mean over cola/sst2/rte, bold best values, paper columns.
To regenerate after an intended format change: `python tests/test_tables.py` and review the diff.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from electra_bench.plots import plot_metric_vs_axis
from electra_bench.results import read_records
from electra_bench.tables import (
    LEGEND,
    build_table,
    render_all,
    render_csv,
    render_latex,
    render_markdown,
)
from electra_bench.tasks import TASKS
from electra_bench.verdicts import judge

FIXTURES = Path(__file__).parent / "fixtures" / "records"
RECORDS = FIXTURES / "generator_size.jsonl"
G = "pretrain.generator_size"
SPEC = {
    "title": "Generator size (fixture)",
    "columns": ["cola", "sst2", "rte"],
    "extra": ["train_flops", "params", "disc_recall"],
    # Illustrative reference numbers (not the paper's): one matching row, one row with no records.
    "reference": {f"{G}=0.25": {"GLUE": 67.0, "sst2": 88.0}, "BERT": {"GLUE": 60.0}},
    "controls": ["random init"],
    "claims": [
        {"name": "small generator beats equal-size", "better": {G: 0.25}, "worse": {G: 1.0}, "metric": "glue"},
        {"name": "pretraining helps RTE", "better": {G: 0.5}, "worse": "random init", "metric": "rte"},
        {"name": "1/4 vs 1/2 on sst2", "better": {G: 0.25}, "worse": {G: 0.5}, "metric": "sst2"},
        {"name": "best generator at 1/4-1/2", "best_among": [{G: 0.25}, {G: 0.5}, {G: 1.0}],
         "expected": [{G: 0.25}, {G: 0.5}]},
    ],
    "plots": [{"axis": G, "metric": "glue"}, {"axis": "train_flops", "metric": "sst2"}],
}


def records() -> list[dict]:
    return read_records(RECORDS)


def judged(recs: list[dict] | None = None, spec: dict = SPEC):
    recs = records() if recs is None else recs
    return build_table(recs, spec, judge(recs, spec))


def test_markdown_and_latex_match_the_golden_files():
    table = judged()
    assert render_markdown(table) == (FIXTURES / "generator_size.table.md").read_text()
    assert render_latex(table) == (FIXTURES / "generator_size.table.tex").read_text()


def test_same_records_in_any_order_give_byte_identical_outputs(tmp_path):
    recs = records()
    render_all(recs, {**SPEC, "plots": []}, tmp_path / "a", judge(recs, SPEC))
    random.Random(0).shuffle(recs)
    render_all(recs, {**SPEC, "plots": []}, tmp_path / "b", judge(recs, SPEC))
    for name in ("table.md", "table.tex", "table.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_table_content_degenerate_counts_best_and_reference():
    md = render_markdown(judged())
    assert "| random init | 10.6 ± 1.3 (4; 1 degenerate) |" in md
    assert "60.3 ± 1.2 (4; 1 diverged)" in md
    assert "| **67.7** |" in md  # best GLUE: generator 1/2
    assert "| BERT | – |" in md and "| 60.0 |" in md  # paper-only row kept visible
    assert "GLUE: mean of the task medians over cola, sst2, rte." in md
    # one pretraining per cell: the fixture's verdicts are refused (tests/test_verdicts.py has the decisive ones)
    assert "## Verdicts" in md and md.count("inconclusive: too few pretraining seeds") == 4 and "MDE ≥" in md


def test_csv_is_long_format_with_full_precision():
    lines = render_csv(build_table(records(), SPEC)).splitlines()
    assert lines[0] == "row,column,value,sd,ci_low,ci_high,n,n_degenerate,n_diverged,best,reference"
    row = next(x for x in lines if x.startswith(f"{G}=0.5,sst2,"))
    assert row.split(",")[2] == "88.2" and row.split(",")[6] == "5" and row.split(",")[9] == "1"
    assert any(x.startswith("BERT,GLUE,") and x.endswith(",60.0") for x in lines)


def test_lower_is_better_marks_the_minimum_and_ci_spread():
    recs = [r for r in records() if r["unit"] == "finetune" and r["task"] == "sst2"]
    recs = [{**r, "higher_is_better": False} for r in recs]
    md = render_markdown(build_table(recs, {"columns": ["sst2"], "spread": "ci"}))
    assert "| random init | **79.7** [" in md and "**88.2**" not in md


def test_spec_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown key 'colums'.*did you mean 'columns'"):
        build_table(records(), {"colums": ["sst2"]})
    with pytest.raises(ValueError, match=r"reference names column\(s\) \['mnli'\]"):
        build_table(records(), {"columns": ["sst2"], "reference": {"BERT": {"mnli": 1.0}}})


def test_render_all_writes_tables_and_valid_pngs(tmp_path):
    paths = render_all(records(), SPEC, tmp_path)
    names = [p.name for p in paths]
    assert names[:3] == ["table.md", "table.tex", "table.csv"]
    pngs = [p for p in paths if p.suffix == ".png"]
    assert [p.name for p in pngs] == [f"glue_vs_{G}.png", "sst2_vs_train_flops.png", "headline.png"]
    for p in pngs:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_plot_of_a_task_and_unknown_axis(tmp_path):
    out = plot_metric_vs_axis(records(), G, "cola", tmp_path / "cola.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="did you mean 'pretrain.generator_size'"):
        plot_metric_vs_axis(records(), "pretrain.generator_sise", "cola", tmp_path / "x.png")


if __name__ == "__main__":  # regenerate the golden files; review the diff by eye before keeping it
    t = judged()
    (FIXTURES / "generator_size.table.md").write_text(render_markdown(t), newline="\n")
    (FIXTURES / "generator_size.table.tex").write_text(render_latex(t), newline="\n")


def test_robustness_section_and_plot(tmp_path):
    from test_results import robust_runs

    recs = robust_runs("ELECTRA", 2.0) + robust_runs("BERT", 6.0) + robust_runs("BERT", 6.0, task="cola")
    md = render_markdown(build_table(recs, {"columns": ["sst2", "cola"], "rows": ["ELECTRA", "BERT"]}))
    assert "## Robustness" in md and "### sst2 (accuracy)" in md and "### cola (accuracy)" in md
    header = "| row | kind | clean | drop@0.1 | drop@0.2 | AUC | rel. drop % |"
    assert header in md
    # clean median 81; drop 2 at rate 0.1 and 4 at 0.2; AUC (0.1 * 80 + 0.1 * 78) / 0.2 = 79; rel. drop 3/81
    assert "| ELECTRA | random_token | 81.0 | 2.0 | 4.0 | 79.0 | 3.7 |" in md
    assert md.index("| ELECTRA | random_token") < md.index("| BERT | random_token")
    paths = render_all(recs, {"columns": ["sst2", "cola"]}, tmp_path)
    assert paths[-1].name == "robustness.png" and paths[-1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## Robustness" not in render_markdown(build_table(records(), SPEC))  # no robustness records


def test_wnli_and_a_custom_tsv_task_are_not_averaged_into_glue(tmp_path):
    """GLUE membership is TaskSpec.glue (the paper's eight, §3.1), not the file format: WNLI and a custom GLUE-format
    TSV task listed in a suite get their own columns but stay out of the GLUE score and its claims."""
    from electra_bench.config import load_suite

    custom = {"name": "my_nli", "kind": "classification", "format": "glue_tsv", "path": "custom/nli",
              "files": {"dev": "dev.tsv"}, "text_columns": ["a", "b"], "label_column": "y", "labels": ["no", "yes"],
              "metrics": ["accuracy"], "headline": "accuracy"}
    (tmp_path / "s.yaml").write_text(json.dumps({
        "name": "glue_membership", "tasks": ["sst2", "rte", "wnli", "my_nli"], "custom_tasks": [custom],
        "cells": [{"label": "A"}, {"label": "B"}]}))
    suite = load_suite(tmp_path / "s.yaml")
    spec = suite.table_spec
    assert spec.glue_tasks == ("sst2", "rte") and spec.columns == ("sst2", "rte", "wnli", "my_nli")
    assert "my_nli" not in TASKS.names()  # the suite's own task: resolved into the suite, never registered
    values = {"sst2": (80.0, 70.0), "rte": (60.0, 50.0), "wnli": (0.0, 100.0), "my_nli": (0.0, 100.0)}
    recs = [{"suite": "glue_membership", "unit": "finetune", "run_key": f"{cell}-{task}-{seed}", "cell": cell,
             "label": cell, "axes": {}, "task": task, "seed": seed, "metrics": {"accuracy": v[i] + seed},
             "headline_metric": "accuracy", "headline": v[i] + seed, "higher_is_better": True, "flags": [],
             "code_version": "t"} for task, v in values.items() for i, cell in enumerate("AB") for seed in range(3)]
    table = build_table(recs, spec)
    assert table.entries[("A", "GLUE")].value == pytest.approx((81.0 + 61.0) / 2)  # medians of sst2 and rte only
    assert table.entries[("B", "GLUE")].value == pytest.approx((71.0 + 51.0) / 2)
    assert "GLUE: mean of the task medians over sst2, rte." in render_markdown(table)


def test_a_custom_three_class_task_with_macro_f1_as_headline(tmp_path):
    """f1_macro (metrics.py) is a headline like any other: the table shows its medians, a claim on the task is
    judged on it (higher is better, from the registry), and a search on the task maximises it."""
    from electra_bench.config import load_suite
    from electra_bench.search import direction

    custom = {"name": "three_way", "kind": "classification", "format": "glue_tsv", "path": "custom/3",
              "files": {"train": "train.tsv", "dev": "dev.tsv"}, "text_columns": ["s"], "label_column": "y",
              "labels": ["neg", "neu", "pos"], "metrics": ["accuracy", "f1_macro", "f1_micro"], "headline": "f1_macro"}
    claim = {"name": "A > B on three_way", "better": "A", "worse": "B", "metric": "three_way"}
    (tmp_path / "s.yaml").write_text(json.dumps({
        "name": "macro", "tasks": ["three_way"], "custom_tasks": [custom], "cells": [{"label": "A"}, {"label": "B"}],
        "table": {"claims": [claim]}, "search": {"objective": "three_way", "space": {"finetune.lr": {
            "type": "logfloat", "low": 1e-5, "high": 1e-3}}}}))
    suite = load_suite(tmp_path / "s.yaml")
    assert direction(suite.config.search, suite.tasks) == "maximize"
    recs = [{"suite": "macro", "unit": "finetune", "run_key": f"{cell}-{seed}", "cell": cell, "label": cell, "axes": {},
             "task": "three_way", "seed": seed, "metrics": {"accuracy": 70.0, "f1_macro": base + seed},
             "headline_metric": "f1_macro", "headline": base + seed, "higher_is_better": True, "flags": [],
             "code_version": "t"} for cell, base in (("A", 60.0), ("B", 40.0)) for seed in range(3)]
    table = build_table(recs, suite.table_spec, judge(recs, suite.table_spec))
    assert table.entries[("A", "three_way")].value == pytest.approx(61.0)
    assert table.entries[("B", "three_way")].value == pytest.approx(41.0)
    (verdict,) = table.verdicts
    assert verdict.diff == pytest.approx(20.0) and verdict.metric == "three_way"


def test_budget_curve_plots_tokens_per_objective_with_random_init_as_a_band(tmp_path):
    """axis `pretrain_tokens`: x = the pre-training's train_tokens x the cell's finetune.checkpoint, one line per
    row label (axis values stripped), cells without a pre-training as a band over their seeds."""
    from test_results import cell_runs

    from electra_bench.plots import figure
    from electra_bench.results import aggregate, cell_infos, pretrain_summary
    from electra_bench.schema import PlotConfig

    recs = []
    for obj, base in (("ELECTRA", 50.0), ("BERT", 60.0)):
        for frac in (0.25, 1.0):
            cell, axes = f"{obj}/ck={frac}", {"finetune.checkpoint": frac}
            label = f"{obj} (finetune.checkpoint={frac})"
            recs += cell_runs(cell, "sst2", [base + 10 * frac + d for d in (-1, 0, 1)], axes=axes, label=label)
            recs.append({"suite": "t", "unit": "pretrain", "run_key": f"p{obj}{frac}", "cell": cell, "axes": axes,
                         "label": label, "task": None, "seed": 0, "metrics": {}, "flags": [], "code_version": "v",
                         "train_tokens": 4e6})
    recs += cell_runs("random init", "sst2", [48.0, 52.0, 50.0], label="random init")
    stats = {(s.cell, s.task): s for s in aggregate(recs)}
    fig = figure(cell_infos(recs), stats, pretrain_summary(recs), PlotConfig(axis="pretrain_tokens", metric="sst2"),
                 [])
    lines = dict(fig.lines)
    assert set(lines) == {"ELECTRA", "BERT"}
    assert [(p.x, p.y) for p in lines["ELECTRA"]] == [(1e6, 52.5), (4e6, 60.0)]
    assert fig.bands == [("random init", (48.0, 52.0, 50.0))] and fig.logx
    render = draw_plot_png(fig, tmp_path)
    assert render.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_budget_curve_checkpoints_share_the_first_cells_pretraining_record():
    """As the runner writes them: one pre-training record per objective, on the first checkpoint cell only; cells
    unlabelled (named by their axes). Every checkpoint must still be a point on its objective's line (a curve
    run drew them as bands, since only the first cell had train_tokens)."""
    from test_results import cell_runs

    from electra_bench.plots import figure
    from electra_bench.results import aggregate, cell_infos, pretrain_summary
    from electra_bench.schema import PlotConfig

    recs = []
    for obj, base in (("electra", 50.0), ("mlm", 60.0)):
        for i, frac in enumerate((0.125, 1.0)):
            axes = {"pretrain.objective": obj, "finetune.checkpoint": frac}
            cell = f"pretrain.objective={obj},finetune.checkpoint={frac}"
            recs += cell_runs(cell, "sst2", [base + 10 * frac + d for d in (-1, 0, 1)], axes=axes, label=cell)
            if i == 0:
                recs.append({"suite": "t", "unit": "pretrain", "run_key": f"p{obj}", "cell": cell, "axes": axes,
                             "label": cell, "task": None, "seed": 0, "metrics": {}, "flags": [],
                             "code_version": "v", "train_tokens": 8e6})
    recs += cell_runs("random init", "sst2", [48.0, 52.0, 50.0], label="random init")
    stats = {(s.cell, s.task): s for s in aggregate(recs)}
    fig = figure(cell_infos(recs), stats, pretrain_summary(recs), PlotConfig(axis="pretrain_tokens", metric="sst2"),
                 [])
    lines = dict(fig.lines)
    assert set(lines) == {"objective=electra", "objective=mlm"}
    assert [(p.x, p.y) for p in lines["objective=mlm"]] == [(1e6, 61.25), (8e6, 70.0)]
    assert fig.bands == [("random init", (48.0, 52.0, 50.0))]


def draw_plot_png(fig, tmp_path):
    from electra_bench.plots import draw_plot

    return draw_plot(fig, tmp_path / fig.file)


# --------------------------------------------------------------------------------- failed units (issue #17)

FAILING_SUITE = """
name: failing
work_dir: {tmp}/work
results_dir: {tmp}/results
base:
  model: {{size: tiny}}
cells:
  - label: ELECTRA
  - label: BERT
    set: {{pretrain.objective: mlm}}
  - label: random init
    set: {{finetune.init: random}}
tasks: [sst2]
seeds: [0, 1]
"""


def failing_plan(tmp_path):
    """A plan where ELECTRA's pre-training failed (its fine-tunes blocked), BERT pre-trained but both its fine-tunes
    failed, and random init has one finished and one failed seed; records and failures.jsonl as `run` leaves them."""
    from electra_bench.config import load_suite
    from electra_bench.results import append_record
    from electra_bench.suite import make_plan, unit_record

    (tmp_path / "failing.yaml").write_text(FAILING_SUITE.format(tmp=tmp_path))
    plan = make_plan(load_suite(tmp_path / "failing.yaml"), tmp_path)
    unit = {(u.cell.label, u.kind, u.seed): u for u in plan.units}
    append_record(plan.records_path, unit_record(plan, unit[("BERT", "pretrain", None)], {"gen_loss": 6.0}, [],
                                                 params=1000, steps=10, train_flops=1e12, wall_s=5.0))
    append_record(plan.records_path, unit_record(plan, unit[("random init", "finetune", 0)], {"accuracy": 60.0}, [],
                                                 headline_metric="accuracy", headline=60.0, higher_is_better=True,
                                                 n_train=80, n_dev=30, wall_s=3.0))
    failed = [("ELECTRA", "pretrain", None), ("BERT", "finetune", 0), ("BERT", "finetune", 1),
              ("random init", "finetune", 1)]
    plan.work_dir.mkdir(parents=True)
    (plan.work_dir / "failures.jsonl").write_text("".join(
        json.dumps({"run_key": unit[k].key, "reason": f"RuntimeError: {k[0]} broke"}) + "\n" for k in failed))
    return make_plan(plan.suite, tmp_path)


def test_cells_whose_units_all_failed_keep_their_rows_with_a_failure_mark(tmp_path):
    from electra_bench.runner import render

    plan = failing_plan(tmp_path)
    blocked = [u for u in plan.units if u.status == "blocked"]
    assert [(u.cell.label, u.seed) for u in blocked] == [("ELECTRA", 0), ("ELECTRA", 1)]
    assert all(u.reason == "pre-training failed: RuntimeError: ELECTRA broke" for u in blocked)
    render(plan)
    out = plan.records_path.parent
    md = (out / "table.md").read_text()
    body = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| row")]
    assert body == ["| ELECTRA | ✗ (2 blocked) |", "| BERT | ✗ (2 failed) |", "| random init | 60.0 (1; 1 failed) |"]
    assert md.count(LEGEND) == 1 and md.index(body[-1]) < md.index(LEGEND)  # the legend under the table
    tex = (out / "table.tex").read_text()
    assert r"ELECTRA & $\times$ (2 blocked) \\" in tex and r"% --: not run yet" in tex
    lines = (out / "table.csv").read_text().splitlines()
    assert lines[0].endswith(",reference,n_failed,n_blocked")
    assert "ELECTRA,sst2,,,,,,0,0,0,,0,2" in lines and "BERT,sst2,,,,,,0,0,0,,2,0" in lines
    assert any(x.startswith("random init,sst2,60.0,") and x.endswith(",1,0") for x in lines)
    assert (out / "headline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_pretraining_column_of_a_failed_pretraining_and_a_table_without_failures():
    from electra_bench.results import Failure

    fail = Failure("pretrain.generator_size=0.5", {G: 0.5}, "pretrain", None, 0, 0)
    md = render_markdown(build_table(records(), SPEC, failures=[fail]))
    assert "| 1.10e+17 (1 failed) | 13.5M (1 failed) | 72.1 (1 failed) |" in md and LEGEND in md
    gone = Failure("new cell", {G: 2.0}, "pretrain", None, 0, 0)
    assert "| new cell | – | – | – | – | – | – | ✗ (1 failed) | ✗ (1 failed) | ✗ (1 failed) |" in \
        render_markdown(build_table(records(), SPEC, failures=[gone]))
    plain = build_table(records(), SPEC)
    assert not plain.has_failures and LEGEND not in render_markdown(plain)
    assert render_csv(plain).splitlines()[0].endswith(",best,reference")


def test_a_record_reused_by_run_key_lands_in_the_row_of_this_suites_cell(tmp_path):
    """Written by another suite under another label (same settings, same run key), it is shown in this suite's row
    for that key (a record whose key the plan does not have keeps its own label: not a row of this suite's cells)."""
    from electra_bench.results import append_record, read_records
    from electra_bench.runner import render

    plan = failing_plan(tmp_path)
    records = read_records(plan.records_path)
    renamed = [{**r, "cell": f"curve: {r['cell']}", "label": "x", "axes": {"finetune.checkpoint": 1.0}}
               for r in records]
    plan.records_path.write_text("".join(json.dumps(r) + "\n" for r in renamed))
    append_record(plan.records_path, {**records[-1], "run_key": "not-in-plan", "cell": "elsewhere",
                                      "label": "elsewhere", "seed": 7})
    render(plan)
    md = (plan.records_path.parent / "table.md").read_text()
    body = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| row")]
    assert body == ["| ELECTRA | ✗ (2 blocked) |", "| BERT | ✗ (2 failed) |", "| random init | 60.0 (1; 1 failed) |"]


def test_a_cell_of_the_suite_not_run_yet_is_a_row_of_dashes(tmp_path):
    """Rows are the plan's cells, not only those with records: a lever not run yet reads `–`, rather than vanishing
    from the table as if it had never been planned."""
    from electra_bench.config import load_suite
    from electra_bench.results import append_record
    from electra_bench.runner import render
    from electra_bench.suite import make_plan, planned_cells, unit_record

    (tmp_path / "partial.yaml").write_text(FAILING_SUITE.format(tmp=tmp_path))
    plan = make_plan(load_suite(tmp_path / "partial.yaml"), tmp_path)
    assert [c.name for c in planned_cells(plan)] == ["ELECTRA", "BERT", "random init"]
    unit = {(u.cell.label, u.kind, u.seed): u for u in plan.units}
    append_record(plan.records_path, unit_record(plan, unit[("random init", "finetune", 0)], {"accuracy": 60.0}, [],
                                                 headline_metric="accuracy", headline=60.0, higher_is_better=True,
                                                 n_train=80, n_dev=30, wall_s=3.0))
    render(plan)
    md = (plan.records_path.parent / "table.md").read_text()
    body = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| row")]
    assert sorted(body) == sorted(["| ELECTRA | – |", "| BERT | – |", "| random init | 60.0 (1) |"])
    assert LEGEND not in md  # nothing failed: only not run
    assert (plan.records_path.parent / "headline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
