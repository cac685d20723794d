"""Cells side by side without the UI: which dotted paths differ, and the metric medians with deltas."""
from __future__ import annotations

import pandas as pd

from . import results as results_mod
from .config import ConfigError, flatten
from .suite import Plan


def compare_cells(plan: Plan, labels: list[str]) -> tuple[dict[str, dict[str, object]], pd.DataFrame]:
    """(config differences: path -> {label: value}, medians per task x label with delta vs the first label)."""
    cells = {c.label: c for c in plan.suite.cells}
    missing = [lbl for lbl in labels if lbl not in cells]
    if missing or len(labels) < 2:
        raise ConfigError(f"compare needs two or more cell labels of the suite; unknown: {missing}; "
                          f"known: {list(cells)}", str(plan.suite.path))
    flat = {lbl: flatten(cells[lbl].config.model_dump(mode="json")) for lbl in labels}
    paths = sorted({p for f in flat.values() for p in f})
    diffs = {p: {lbl: flat[lbl].get(p) for lbl in labels} for p in paths
             if len({repr(flat[lbl].get(p)) for lbl in labels}) > 1}
    records = results_mod.read_records(plan.records_path) if plan.records_path.exists() else []
    stats = results_mod.aggregate([r for r in records if r["unit"] == "finetune" and r["cell"] in labels])
    table = pd.DataFrame({lbl: {s.task: s.median for s in stats if s.cell == lbl} for lbl in labels})
    for lbl in labels[1:]:
        table[f"{lbl} - {labels[0]}"] = table[lbl] - table[labels[0]]
    return diffs, table
