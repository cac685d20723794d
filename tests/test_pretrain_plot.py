"""pretraining.png (electra_bench/pretrain_plot.py): held-out metrics over each pre-training run, from records."""
from __future__ import annotations

from electra_bench.pretrain_plot import FILE, pretrain_figure
from electra_bench.tables import render_all


def _pre(cell, axes, evals, seed=0):
    return {"unit": "pretrain", "suite": "s", "code_version": "c", "cell": cell, "label": cell, "axes": axes,
            "run_key": f"k-{cell}-{seed}",
            "pretrain_seed": seed, "seed": seed, "task": None, "metrics": {}, "flags": [], "evals": evals}


def _evals(auc, lookup=None):
    rows = []
    for i, a in enumerate(auc):
        row = {"step": 100 * (i + 1), "tokens": 1600 * (i + 1), "token_cosine": 0.9, "gen_mlm_acc": 0.1 * i}
        if a is not None:
            row["disc_auc"] = a
        if lookup is not None:
            row["lookup_auc"] = lookup[i]
        rows.append(row)
    return rows


def test_figure_data_names_runs_without_their_finetuning_axes():
    """A budget curve files its pre-training under the first checkpoint cell: the line is named by the other axes;
    MLM runs (no discriminator) get no AUC points; a second pretraining seed is its own line."""
    records = [
        _pre("pretrain.objective=electra,finetune.checkpoint=0.0625",
             {"pretrain.objective": "electra", "finetune.checkpoint": 0.0625}, _evals([0.55, 0.60], [0.53, 0.52])),
        _pre("pretrain.objective=mlm,finetune.checkpoint=0.0625",
             {"pretrain.objective": "mlm", "finetune.checkpoint": 0.0625}, _evals([None, None])),
        _pre("ELECTRA", {}, _evals([0.5, 0.7]), seed=1),
        _pre("no history", {}, []),  # a run resumed from an old state: no line
        {"unit": "finetune", "cell": "ELECTRA", "task": "sst2", "evals": _evals([0.9])},  # not a pre-training
    ]
    fig = pretrain_figure(records)
    assert fig.file == FILE
    names = [line.name for line in fig.lines]
    assert names == ["ELECTRA (pretrain seed 1)", "objective=electra", "objective=mlm"]
    electra = fig.lines[1].points
    assert electra["disc_auc"] == ((1600, 0.55), (3200, 0.60)) and electra["lookup_auc"] == ((1600, 0.53),
                                                                                               (3200, 0.52))
    assert "disc_auc" not in fig.lines[2].points and fig.lines[2].points["token_cosine"] == ((1600, 0.9),
                                                                                               (3200, 0.9))
    assert pretrain_figure([_pre("x", {}, [])]) is None and pretrain_figure([]) is None


def test_render_all_draws_it_only_when_some_run_kept_its_evals(tmp_path):
    ft = {"unit": "finetune", "suite": "s", "code_version": "c", "cell": "ELECTRA", "label": "ELECTRA", "axes": {},
          "run_key": "f", "task": "sst2",
          "seed": 0, "pretrain_seed": 0, "metrics": {"accuracy": 80.0}, "flags": [], "headline_metric": "accuracy",
          "headline": 80.0, "higher_is_better": True}
    with_evals = [_pre("ELECTRA", {}, _evals([0.55, 0.6], [0.5, 0.5])), ft]
    paths = render_all(with_evals, {"columns": ["sst2"]}, tmp_path / "a")
    png = tmp_path / "a" / FILE
    assert png in paths and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = render_all(with_evals, {"columns": ["sst2"]}, tmp_path / "b")
    assert (tmp_path / "b" / FILE).read_bytes() == png.read_bytes() and len(again) == len(paths)  # same bytes
    without = [_pre("ELECTRA", {}, []), ft]
    render_all(without, {"columns": ["sst2"]}, tmp_path / "c")
    assert not (tmp_path / "c" / FILE).exists()


def test_table_says_where_a_budget_curves_pretraining_columns_come_from():
    """A pre-training filed under a checkpoint cell shows its final values on that row: the table's notes say so."""
    from electra_bench.tables import build_table

    ft = {"unit": "finetune", "suite": "s", "code_version": "c", "cell": "c", "label": "c", "axes": {},
          "run_key": "f", "task": "sst2", "seed": 0, "pretrain_seed": 0, "metrics": {"accuracy": 80.0}, "flags": [],
          "headline_metric": "accuracy", "headline": 80.0, "higher_is_better": True}
    spec = {"columns": ["sst2"], "extra": ["disc_auc"]}
    on_checkpoint = {"finetune.checkpoint": 0.25}
    curve = [_pre("c", on_checkpoint, []), {**ft, "axes": on_checkpoint}]
    assert any("first checkpoint row" in n for n in build_table(curve, spec).notes)
    assert not any("first checkpoint row" in n for n in build_table([_pre("c", {}, []), ft], spec).notes)
