"""The headline figure (headline.png beside table.md): every row of a table, every task, every seed.

The table prints a median and its spread; this figure shows what they summarise: one panel per task column, the
table's rows (cells) on the y axis in table order, a dot per kept fine-tuning run (seed) and the median as a bar.
A row whose units of that task all failed says so in the panel, one with some failed seeds counts them. Like the
table, it is built once from the aggregated statistics (`headline_figure`, the data model tests read) and then only
drawn (`draw_headline`: the Agg canvas, no pyplot state, no Software metadata, so equal data give equal bytes).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from electra_bench.results import CellTaskStats

FILE = "headline.png"


@dataclass(frozen=True)
class HeadlineRow:
    """One table row in one panel: the headline of each kept run, their median, and the runs that did not count."""

    name: str  # the table's row name
    seeds: tuple[float, ...]  # kept runs in (pretraining seed, seed) order (results.CellTaskStats.values)
    median: float | None  # None: no kept run
    n_failed: int = 0  # units that failed or were blocked by a failed pre-training
    n_flagged: int = 0  # finished runs left out as degenerate or diverged


@dataclass(frozen=True)
class HeadlinePanel:
    task: str
    metric: str  # the task's headline metric ("" when no run of it finished)
    higher_is_better: bool
    rows: tuple[HeadlineRow, ...]


@dataclass(frozen=True)
class HeadlineFigure:
    file: str
    panels: tuple[HeadlinePanel, ...]


def headline_figure(stats: Mapping[tuple[str, str], CellTaskStats], rows: Sequence[tuple[str, str]],
                    tasks: Sequence[str], unfinished: Mapping[tuple[str, str], int]) -> HeadlineFigure | None:
    """One panel per task with a finished or failed unit; `rows`: (cell, row name) in table order, every one in
    every panel; `unfinished`: failed + blocked units per (cell, task). None when there is no panel."""
    panels = []
    for task in tasks:
        of_task = [s for (_, t), s in stats.items() if t == task]
        if not of_task and not any(unfinished.get((c, task)) for c, _ in rows):
            continue
        panel_rows = []
        for cell, name in rows:
            s = stats.get((cell, task))
            panel_rows.append(HeadlineRow(name, s.values if s else (), s.median if s and s.n else None,
                                          unfinished.get((cell, task), 0),
                                          s.n_degenerate + s.n_diverged if s else 0))
        metric = of_task[0].metric if of_task else ""
        panels.append(HeadlinePanel(task, metric, of_task[0].higher_is_better if of_task else True,
                                    tuple(panel_rows)))
    return HeadlineFigure(FILE, tuple(panels)) if panels else None


def _not_counted(row: HeadlineRow) -> str:
    counts = (row.n_failed, "failed"), (row.n_flagged, "degenerate/diverged")
    return ", ".join(f"{n} {what}" for n, what in counts if n)


def draw_headline(fig_data: HeadlineFigure, out_png: str | Path) -> Path:
    """PNG of a HeadlineFigure: panels side by side sharing the rows' axis."""
    from matplotlib.figure import Figure as MplFigure  # imported here: tables render without matplotlib until a plot
    from matplotlib.lines import Line2D
    from matplotlib.transforms import blended_transform_factory

    names = [r.name for r in fig_data.panels[0].rows]
    label_in = 0.4 + 0.075 * max(len(n) for n in names)  # room for the row names (about 0.075 in per character)
    fig = MplFigure(figsize=(label_in + 3.0 * len(fig_data.panels), 1.1 + 0.4 * len(names)))
    axes = fig.subplots(1, len(fig_data.panels), sharey=True, squeeze=False)[0]
    for ax, panel in zip(axes, fig_data.panels):
        beside = blended_transform_factory(ax.transAxes, ax.transData)  # x in the panel's width, y on a row
        for y, row in enumerate(panel.rows):
            if row.seeds:  # seeds spread a little across the row's height so equal scores stay visible
                offsets = np.linspace(-0.18, 0.18, len(row.seeds)) if len(row.seeds) > 1 else np.zeros(1)
                ax.scatter(row.seeds, y + offsets, s=14, alpha=0.6, color="tab:blue", zorder=2)
            if row.median is not None:
                ax.plot([row.median, row.median], [y - 0.28, y + 0.28], color="black", lw=2, zorder=3)
            if text := _not_counted(row):  # an empty row: in its middle; else under its dots, at the right
                empty = row.median is None
                ax.text(0.02 if empty else 0.99, y if empty else y + 0.36, f"no finished run: {text}" if empty
                        else text, transform=beside, ha="left" if empty else "right", va="center",
                        fontsize="x-small" if empty else "xx-small", color="tab:red")
            elif row.median is None and not row.seeds:
                ax.text(0.02, y, "not run yet", transform=beside, ha="left", va="center", fontsize="x-small",
                        color="tab:gray")
        direction = "higher" if panel.higher_is_better else "lower"
        ax.set_title(panel.task, fontsize="medium")
        ax.set_xlabel(f"{panel.metric} ({direction} is better)" if panel.metric else "no finished run")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(names)), names)
    axes[0].set_ylim(len(names) - 0.5, -0.5)  # the first row on top, as in the table
    axes[-1].legend(handles=[Line2D([], [], ls="", marker="o", color="tab:blue", alpha=0.6, label="one seed"),
                             Line2D([], [], ls="", marker="|", markersize=10, mew=2, color="black", label="median")],
                    fontsize="x-small", loc="best")
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, format="png", dpi=120, metadata={"Software": None})
    return out_png
