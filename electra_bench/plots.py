"""The data of a suite's plots and their PNGs (tables.py builds them with its table; DESIGN.md principle 7).

`figure(infos, stats, pre, plot, glue_tasks)` turns one `schema.PlotConfig` into a `Figure`: a task's headline
(median over seeds, every seed as a faint point) or the GLUE score (bootstrap CI bars) against a suite axis, a
pre-training figure ("train_flops", "params") or `pretrain_tokens` (a budget curve: the tokens seen by the
checkpoint each cell fine-tunes, random init as a band). `draw_plot` renders a Figure with matplotlib's Agg canvas
(no pyplot state); `plot_metric_vs_axis` does both straight from records, for scripts and notebooks.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from electra_bench.claims import CellInfo, axis_sort_key
from electra_bench.registry import did_you_mean
from electra_bench.results import CellTaskStats, aggregate, bootstrap_group_ci, cell_infos, pretrain_summary
from electra_bench.schema import PlotConfig


@dataclass
class Point:
    """One x of a plot line: the median over seeds (a task: each kept seed beside it) or a GLUE score with its CI."""

    x: float  # position on the axis (categorical axes: the tick index)
    y: float
    seeds: tuple[float, ...] = ()
    ci: tuple[float, float] | None = None


@dataclass
class Figure:
    """The data of one plot: a line per setting of the other axes, drawn by `draw_plot`."""

    file: str
    axis: str
    ylabel: str
    ticks: list[str]  # categorical axis: the tick labels; numeric axis: []
    logx: bool
    lines: list[tuple[str, list[Point]]]
    bands: list[tuple[str, tuple[float, ...]]] = field(default_factory=list)  # (label, seeds): drawn as a band


def _x_values(infos: Mapping[str, CellInfo], pre: Mapping[str, dict], axis: str) -> dict[str, object]:
    """x per cell: the axis value, or a pretrain figure ("train_flops", "params") for equal-compute plots."""
    xs = {c: i.axes[axis] if axis in i.axes else pre.get(c, {}).get(axis) for c, i in infos.items()}
    xs = {c: x for c, x in xs.items() if x is not None}
    if not xs:
        known = sorted({k for i in infos.values() for k in i.axes} | {k for p in pre.values() for k in p})
        raise ValueError(f"plot: no cell has '{axis}'{did_you_mean(axis, known)}; known: {known}")
    return xs


def figure(infos: Mapping[str, CellInfo], stats: Mapping[tuple[str, str], CellTaskStats], pre: Mapping[str, dict],
           plot: PlotConfig, glue_tasks: Sequence[str]) -> Figure:
    """The data of `plot` (a task's headline, or "glue", against an axis), one line per setting of the other axes.

    A task shows every kept seed as a faint point and the median as the line (the paper's statistic); "glue"
    shows the GLUE score with bootstrap 95% CI error bars, since seed k of two tasks are unrelated runs.
    `logx` defaults to on for train_flops/params."""
    axis, metric = plot.axis, plot.metric
    if axis == PRETRAIN_TOKENS:
        return _tokens_figure(infos, stats, pre, plot)
    if metric == "glue" and not glue_tasks:
        raise ValueError("plot: metric 'glue' needs glue_tasks")
    if metric != "glue" and not any(t == metric for _, t in stats):
        raise ValueError(f"plot: no records of task '{metric}'{did_you_mean(metric, sorted({t for _, t in stats}))}")
    xs = _x_values(infos, pre, axis)
    categorical = any(isinstance(x, (bool, str)) for x in xs.values())
    ticks = sorted({str(x) for x in xs.values()}) if categorical else []
    pos = (lambda x: ticks.index(str(x))) if categorical else float  # noqa: E731
    series: dict[str, list[str]] = {}
    for c in sorted(xs, key=lambda c: (axis_sort_key(infos[c]), pos(xs[c]))):
        rest = ", ".join(f"{k}={v}" for k, v in sorted(infos[c].axes.items()) if k != axis)
        series.setdefault(rest, []).append(c)
    lines = []
    for label, cells in series.items():
        points = []
        for c in sorted(cells, key=lambda c: pos(xs[c])):
            if metric == "glue":
                groups = [stats[(c, t)].values for t in glue_tasks if (c, t) in stats and stats[(c, t)].n]
                if len(groups) == len(glue_tasks):
                    points.append(Point(pos(xs[c]), float(np.mean([np.median(g) for g in groups])),
                                        ci=bootstrap_group_ci(groups)))
            elif (s := stats.get((c, metric))) is not None and s.n:
                points.append(Point(pos(xs[c]), s.median, seeds=s.values))
        lines.append((label, points))
    headline = {s.metric for (_, t), s in stats.items() if t == metric}
    ylabel = "GLUE score" if metric == "glue" else f"{metric} {'/'.join(sorted(headline))} (median over seeds)"
    return Figure(plot.file or f"{metric}_vs_{axis}.png".replace("/", "_"), axis, ylabel, ticks,
                  plot.logx if plot.logx is not None else axis in ("train_flops", "params"), lines)


PRETRAIN_TOKENS = "pretrain_tokens"  # plot axis: tokens seen by the checkpoint a cell fine-tunes (budget curves)


def _tokens_figure(infos: Mapping[str, CellInfo], stats: Mapping[tuple[str, str], CellTaskStats],
                   pre: Mapping[str, dict], plot: PlotConfig) -> Figure:
    """A budget curve: a task's headline (median over seeds, seeds as points) against the pre-training tokens of
    the checkpoint each cell fine-tunes (`train_tokens` of its pre-training x its `finetune.checkpoint` axis value),
    one line per row label (the label without its axis values); cells without a pre-training (random init) are a
    band spanning their seeds' scores. The checkpoint must be a suite axis (a cell `set` is not in the records).
    A pre-training's record sits with the first cell that needed it: every cell whose label and non-`finetune.*`
    axes match shares its train_tokens; lines are named by the row label and the other axes (e.g. objective=mlm)."""
    metric = plot.metric
    if not any(t == metric for _, t in stats):
        raise ValueError(f"plot: no records of task '{metric}'{did_you_mean(metric, sorted({t for _, t in stats}))}")

    def row(info: CellInfo) -> str | None:  # the row label without its axis values; None for an unlabelled cell
        if not info.axes:
            return info.name
        if info.label in (None, info.cell):
            return None
        return info.label.rsplit(" (", 1)[0] if info.label.endswith(")") else info.label

    def upstream(info: CellInfo) -> tuple:  # what identifies a cell's pre-training: not its fine-tuning axes
        return row(info), tuple(sorted((k, str(v)) for k, v in info.axes.items() if not k.startswith("finetune.")))

    # The pre-training record sits with the first cell that needed it; its sibling checkpoints share it.
    trained = {upstream(infos[c]): p for c, p in pre.items() if c in infos and "train_tokens" in p}
    lines: dict[str, list[Point]] = {}
    bands = []
    for c, info in infos.items():
        if (s := stats.get((c, metric))) is None or not s.n:
            continue
        shown = {k.rsplit(".", 1)[-1]: v for k, v in info.axes.items() if k != "finetune.checkpoint"}
        name = ", ".join(filter(None, [row(info), *(f"{k}={v}" for k, v in shown.items())])) or info.name
        if (p := trained.get(upstream(info))) is None:
            bands.append((name, tuple(s.values)))
            continue
        x = p["train_tokens"] * float(info.axes.get("finetune.checkpoint", 1.0))
        lines.setdefault(name, []).append(Point(x, s.median, seeds=tuple(s.values)))
    headline = {s.metric for (_, t), s in stats.items() if t == metric}
    return Figure(plot.file or f"{metric}_vs_{PRETRAIN_TOKENS}.png", "pre-training tokens",
                  f"{metric} {'/'.join(sorted(headline))} (median over seeds)", [],
                  plot.logx if plot.logx is not None else True,
                  [(k, sorted(v, key=lambda p: p.x)) for k, v in sorted(lines.items())], sorted(bands))


def draw_plot(fig_data: Figure, out_png: str | Path) -> Path:
    """PNG of a Figure. Uses the Agg canvas directly (no pyplot global state)."""
    from matplotlib.figure import Figure as MplFigure  # imported here: tables render without matplotlib until a plot

    fig = MplFigure(figsize=(5.5, 3.8))
    ax = fig.add_subplot()
    for label, points in fig_data.lines:
        for p in points:
            if p.ci is not None:
                ax.errorbar([p.x], [p.y], yerr=[[p.y - p.ci[0]], [p.ci[1] - p.y]], fmt="none", ecolor="gray", capsize=3)
            else:
                ax.scatter([p.x] * len(p.seeds), p.seeds, s=12, alpha=0.35, color="gray")
        ax.plot([p.x for p in points], [p.y for p in points], marker="o", label=label or None)
    for label, seeds in fig_data.bands:  # e.g. random init: the span of its seeds, its median dashed
        ax.axhspan(min(seeds), max(seeds), alpha=0.15, color="gray", label=f"{label} (seed range)")
        ax.axhline(float(np.median(seeds)), color="gray", ls="--", lw=1)
    if fig_data.ticks:
        ax.set_xticks(range(len(fig_data.ticks)), fig_data.ticks)
    if fig_data.logx:
        ax.set_xscale("log")
    ax.set_xlabel(fig_data.axis)
    ax.set_ylabel(fig_data.ylabel)
    if any(label for label, _ in fig_data.lines) or fig_data.bands:
        ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, format="png", dpi=120, metadata={"Software": None})
    return out_png


def plot_metric_vs_axis(records: Sequence[dict], axis_path: str, metric: str, out_png: str | Path, *,
                        glue_tasks: Sequence[str] | None = None, logx: bool | None = None) -> Path:
    """One plot straight from records (figure + draw_plot), for scripts and notebooks."""
    stats = {(s.cell, s.task): s for s in aggregate(records)}
    plot = PlotConfig(axis=axis_path, metric=metric, logx=logx)
    return draw_plot(figure(cell_infos(records), stats, pretrain_summary(records), plot, glue_tasks or []), out_png)
