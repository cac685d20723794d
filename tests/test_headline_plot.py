"""The headline figure (electra_bench/headline_plot.py): its data model holds every row and every kept seed, and
render_all writes it as a valid, reproducible PNG beside table.md. Pixels are not compared; the drawing inputs are."""
from __future__ import annotations

import math
import statistics

from test_tables import SPEC, records

from electra_bench.headline_plot import draw_headline
from electra_bench.results import Failure
from electra_bench.tables import build_table, render_all

PNG = b"\x89PNG\r\n\x1a\n"


def kept_seeds(recs: list[dict]) -> dict[tuple[str, str], list[float]]:
    """Headline of the latest record per (cell, task, seed), flagged and non-finite runs left out: worked out here
    from the records, not through results.aggregate."""
    latest: dict[tuple, dict] = {}
    for r in recs:
        if r["unit"] == "finetune":
            key = (r.get("label") or r["cell"], r["task"], r.get("pretrain_seed"), r["seed"])
            if key not in latest or r["finished_at"] >= latest[key]["finished_at"]:
                latest[key] = r
    out: dict[tuple[str, str], list[float]] = {}
    for (label, task, *_), r in latest.items():
        if not r["flags"] and math.isfinite(r["headline"]):
            out.setdefault((label, task), []).append(r["headline"])
    return out


def test_the_figure_holds_every_row_and_every_kept_seed_per_task():
    recs = records()
    fail = Failure("new cell", {"pretrain.generator_size": 2.0}, "finetune", "rte", 0, 0)
    table = build_table(recs, SPEC, failures=[fail, Failure("new cell", fail.axes, "finetune", "rte", 1, 0, True)])
    fig = table.headline
    assert fig.file == "headline.png"
    assert [p.task for p in fig.panels] == ["cola", "sst2", "rte"]
    assert [p.metric for p in fig.panels] == ["mcc", "accuracy", "accuracy"]
    assert all(p.higher_is_better for p in fig.panels)
    cells = [r for r in table.rows if r != "BERT"]  # BERT: a paper-only row, no cell of the suite
    expected = kept_seeds(recs)
    for panel in fig.panels:
        assert [r.name for r in panel.rows] == cells
        for row in panel.rows:
            want = sorted(expected.get((row.name, panel.task), []))
            assert sorted(row.seeds) == want, (panel.task, row.name)
            assert row.median == (statistics.median(want) if want else None)
    rte = {r.name: r for r in fig.panels[2].rows}
    assert rte["new cell"].seeds == () and rte["new cell"].median is None and rte["new cell"].n_failed == 2
    assert rte["pretrain.generator_size=1.0"].n_flagged == 1  # its diverged run: not a dot, counted
    assert sum(len(r.seeds) for p in fig.panels for r in p.rows) == sum(len(v) for v in expected.values())


def test_render_all_writes_headline_png_beside_the_table_byte_for_byte_again(tmp_path):
    spec = {**SPEC, "plots": []}
    paths = render_all(records(), spec, tmp_path / "a")
    png = tmp_path / "a" / "headline.png"
    assert png in paths and png.parent == (tmp_path / "a" / "table.md").parent
    data = png.read_bytes()
    assert data[:8] == PNG and len(data) > 5000
    render_all(records(), spec, tmp_path / "b")
    assert (tmp_path / "b" / "headline.png").read_bytes() == data  # no date or version in it


def test_a_row_without_any_finished_run_is_drawn(tmp_path):
    fail = Failure("new cell", {"pretrain.generator_size": 2.0}, "pretrain", None, 0, 0)
    blocked = [Failure("new cell", fail.axes, "finetune", t, s, 0, True) for t in ("cola", "sst2", "rte")
               for s in range(2)]
    fig = build_table(records(), SPEC, failures=[fail, *blocked]).headline
    assert all(p.rows[-1].name == "new cell" and p.rows[-1].n_failed == 2 for p in fig.panels)
    assert draw_headline(fig, tmp_path / "h.png").read_bytes()[:8] == PNG


def test_no_figure_without_task_records():
    pretrain_only = [r for r in records() if r["unit"] == "pretrain"]
    assert build_table(pretrain_only, {"columns": [], "extra": ["params"]}).headline is None
