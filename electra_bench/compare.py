"""Cells side by side without the UI: which dotted paths differ, and the metric medians with deltas."""
from __future__ import annotations

from pathlib import Path

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


def reference_records(reference: Path, suite_name: str) -> tuple[Path, list[dict]]:
    """The committed records a user's run is shown beside: `<reference>/<suite>/records.jsonl` for a results root
    (e.g. `results`), or `<reference>/records.jsonl` for one suite's folder. ConfigError when neither exists."""
    for path in (reference / suite_name / "records.jsonl", reference / "records.jsonl"):
        if path.is_file():
            return path, results_mod.read_records(path)
    raise ConfigError(f"--reference {reference}: no records.jsonl there nor under {reference / suite_name}",
                      str(reference))


def beside_reference(yours: list[dict], reference: list[dict], yours_name: str, reference_name: str) -> str:
    """Markdown: per (cell, task) the headline median over seeds of your records beside the reference records',
    with the number of seeds each (and of flagged runs) and the difference (yours - reference); a cell or task only
    one side has shows a dash on the other."""
    mine = {(s.cell, s.task): s for s in results_mod.aggregate(yours)}
    ref = {(s.cell, s.task): s for s in results_mod.aggregate(reference)}
    order = list(dict.fromkeys([*mine, *ref]))

    def cell(s) -> str:  # flagged (degenerate, diverged) runs are counted, never averaged in
        if s is None:
            return "–"
        flagged = s.n_degenerate + s.n_diverged
        return f"{f'{s.median:.1f}' if s.n else '–'} (n={s.n}{f', {flagged} flagged' if flagged else ''})"

    lines = [f"| cell | task | metric | yours: {yours_name} | reference: {reference_name} | yours − reference |",
             "|---|---|---|---|---|---|"]
    for key in order:
        a, b = mine.get(key), ref.get(key)
        delta = "–" if a is None or b is None or not a.n or not b.n else f"{a.median - b.median:+.1f}"
        metric = (a or b).metric
        lines.append(f"| {key[0]} | {key[1]} | {metric} | {cell(a)} | {cell(b)} | {delta} |")
    return "\n".join(lines) + "\n"


def disagreements(plan: Plan, a: str, b: str, show: int = 5) -> list[dict]:
    """Where cells `a` and `b` predict differently on the same dev examples, per (task, seed) both fine-tuned, from
    the per-example dev predictions beside the records (results.PREDICTIONS_DIR): examples compared, how many
    differ, and on how many of those each cell is right; the first `show` differing example ids."""
    folder = plan.records_path.parent
    records = results_mod.read_records(plan.records_path) if plan.records_path.exists() else []
    by = {(r["cell"], r["task"], r["seed"]): r for r in records
          if r["unit"] == "finetune" and r.get("dev_predictions") and (folder / r["dev_predictions"]).is_file()}
    out = []
    for (cell, task, seed), ra in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][2])):
        rb = by.get((b, task, seed))
        if cell != a or rb is None:
            continue
        pa = {x["id"]: x for x in results_mod.read_predictions_file(folder, ra)}
        pb = {x["id"]: x for x in results_mod.read_predictions_file(folder, rb)}
        common = sorted(set(pa) & set(pb))
        differ = [i for i in common if pa[i]["pred"] != pb[i]["pred"]]
        out.append({"task": task, "seed": seed, "examples": len(common), "differ": len(differ),
                    f"{a} right": sum(pa[i]["pred"] == pa[i]["gold"] for i in differ),
                    f"{b} right": sum(pb[i]["pred"] == pb[i]["gold"] for i in differ),
                    "first ids": ",".join(str(i) for i in differ[:show])})
    return out
