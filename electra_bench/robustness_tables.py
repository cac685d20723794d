"""The robustness section of table.md and robustness.png, from records alone (the metrics of robustness.py).

Per task, one row per (cell, perturbation kind): the clean headline, the drop at each rate, the AUC and the mean
relative drop, each the median over the kept fine-tuning seeds (flagged runs left out, as in the main table:
`results.metric_view` + `results.aggregate`). The plot draws the headline against the rate (rate 0 = clean), one
line per cell, one panel per task x kind.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from electra_bench.metrics import METRIC_FAMILIES
from electra_bench.perturb import PERTURBATIONS
from electra_bench.results import CellTaskStats, aggregate, metric_view


@dataclass
class RobustRow:
    name: str  # the table's row name of the cell
    kind: str
    curve: list[float | None]  # headline medians: clean, then at each rate
    drops: list[float | None]  # drop medians at each rate
    auc: float | None
    rel_drop: float | None


@dataclass
class RobustBlock:
    task: str
    metric: str  # the task's headline metric
    rates: list[float]
    rows: list[RobustRow]


def robust_stats(records: Sequence[dict]) -> dict[tuple[str, str, str], CellTaskStats]:
    """(cell, task, metric) -> seed statistics of every robustness metric (a registered metric family of
    metrics.py, keyed `<family>/...`) in the fine-tuning records."""
    names = sorted({m for r in records if r["unit"] == "finetune" for m in r["metrics"]
                    if "/" in m and m.split("/")[0] in METRIC_FAMILIES})
    return {(s.cell, s.task, m): s for m in names for s in aggregate(metric_view(records, m), n_resamples=1)}


def _kinds_and_rates(stats, task: str) -> tuple[list[str], list[float]]:
    parts = [m.split("/") for (_, t, m) in stats if t == task and m.startswith("robust_drop/")]
    found = {p[1] for p in parts if len(p) == 3}
    return [k for k in PERTURBATIONS if k in found], sorted({float(p[2]) for p in parts if len(p) == 3})


def robust_blocks(records: Sequence[dict], clean: dict[tuple[str, str], CellTaskStats], cells: list[str],
                  names: list[str], tasks: list[str]) -> list[RobustBlock]:
    """One block per task that has robustness records; `clean`: the main table's (cell, task) statistics."""
    stats, blocks = robust_stats(records), []

    def med(cell: str, task: str, metric: str) -> float | None:
        s = stats.get((cell, task, metric)) if metric else clean.get((cell, task))
        return s.median if s is not None and s.n else None

    for task in tasks:
        kinds, rates = _kinds_and_rates(stats, task)
        headline = next((s.metric for (_, t), s in clean.items() if t == task), "")
        rows = [RobustRow(name, kind, [med(cell, task, ""), *[med(cell, task, f"robust/{kind}/{r:g}/{headline}")
                                                              for r in rates]],
                          [med(cell, task, f"robust_drop/{kind}/{r:g}") for r in rates],
                          med(cell, task, f"robust_auc/{kind}"), med(cell, task, f"robust_rel_drop/{kind}"))
                for cell, name in zip(cells, names) for kind in kinds
                if (cell, task, f"robust_auc/{kind}") in stats]
        if rows:
            blocks.append(RobustBlock(task, headline, rates, rows))
    return blocks


def render_markdown(blocks: list[RobustBlock], digits: int) -> list[str]:
    """The lines of the `## Robustness` section (none without robustness records)."""
    if not blocks:
        return []
    lines = ["", "## Robustness", "",
             "Perturbed dev sets (the suite's `robustness:` section), medians over fine-tuning seeds. drop@r: clean "
             "minus perturbed headline at rate r (positive: worse); AUC: area under the metric-vs-rate curve from "
             "0 (clean) to the largest rate, divided by that rate; rel. drop: mean over rates of drop / clean, in %."]
    fmt = lambda v: "–" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"  # noqa: E731
    for b in blocks:
        header = ["row", "kind", "clean", *[f"drop@{r:g}" for r in b.rates], "AUC", "rel. drop %"]
        lines += ["", f"### {b.task} ({b.metric})", "", "| " + " | ".join(header) + " |",
                  "|" + "|".join([":---", ":---"] + ["---:"] * (len(header) - 2)) + "|"]
        lines += [f"| {r.name} | {r.kind} | " + " | ".join(fmt(v) for v in [r.curve[0], *r.drops, r.auc, r.rel_drop])
                  + " |" for r in b.rows]
    return lines


def plot(blocks: list[RobustBlock], out_png: str | Path) -> Path:
    """PNG: headline (median over seeds) vs perturbation rate, one line per row, one panel per task x kind."""
    from matplotlib.figure import Figure  # only when there is something to plot

    kinds = list(dict.fromkeys(r.kind for b in blocks for r in b.rows))
    fig = Figure(figsize=(3.2 * len(kinds), 2.8 * len(blocks)))
    for b, axes in zip(blocks, fig.subplots(len(blocks), len(kinds), squeeze=False)):
        for kind, ax in zip(kinds, axes):
            for r in b.rows:
                if r.kind == kind and None not in r.curve:
                    ax.plot([0.0, *b.rates], r.curve, marker="o", label=r.name)
            if not ax.lines:
                ax.set_axis_off()  # the kind does not apply to the task (entity_swap on a classification task)
                continue
            ax.set_title(f"{b.task} / {kind}", fontsize="small")
            ax.set_xlabel("perturbation rate")
            ax.set_ylabel(b.metric)
            ax.grid(alpha=0.3)
            ax.legend(fontsize="x-small")
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, format="png", dpi=110, metadata={"Software": None})
    return out_png
