"""The pre-training figure (pretraining.png beside table.md): held-out metrics against tokens, one line a run.

A pre-training record keeps every held-out evaluation of its run (`evals`: step, tokens and the metrics of
`pretrain.evaluate`, all scored on temperature-1 fakes). This figure shows them over the run: the discriminator's
AUC with the context-free lookup AUC dashed in the same colour (the shortcut baseline: a discriminator off the
plateau rises above its lookup line), the top-layer mean token cosine (near 1: the token states collapsed toward
one vector), and the masked-LM accuracy (of the generator, or of the MLM model). A panel is drawn when some run
has its metric. Built once from the records (`pretrain_figure`, the data tests read), then only drawn
(`draw_pretraining`: the Agg canvas, no pyplot state or Software metadata, so equal data give equal bytes).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

FILE = "pretraining.png"
# (metric, its dashed baseline or None, y label): the panels, in order
PANELS = (("disc_auc", "lookup_auc", "held-out RTD AUC\n(dashed: context-free lookup)"),
          ("token_cosine", None, "top-layer mean token cosine"),
          ("gen_mlm_acc", None, "masked-LM accuracy"))
METRICS = tuple(m for panel in PANELS for m in panel[:2] if m)  # what a line keeps of each evaluation


@dataclass(frozen=True)
class PretrainLine:
    """One pre-training run: its name (cell label without fine-tuning axes, with its pretraining seed) and, per
    metric, the (tokens, value) of each held-out evaluation that has it."""

    name: str
    points: dict[str, tuple[tuple[int, float], ...]]


@dataclass(frozen=True)
class PretrainFigure:
    file: str
    lines: tuple[PretrainLine, ...]


def _name(record: dict) -> str:
    """The record's row without its fine-tuning axes: a budget curve's pre-training is filed under the first
    checkpoint cell that needed it, but it is the run of every checkpoint."""
    axes = {k: v for k, v in record.get("axes", {}).items() if not k.startswith("finetune.")}
    name = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in sorted(axes.items())) if axes else record["cell"]
    return f"{name} (pretrain seed {record['pretrain_seed']})" if record.get("pretrain_seed") else name


def pretrain_figure(records: Sequence[dict]) -> PretrainFigure | None:
    """The figure's data from the pre-training records that kept their evaluations; None when none did."""
    lines = []
    for r in records:
        evals = r.get("evals") if r.get("unit") == "pretrain" else None
        if not evals:
            continue
        points = {m: tuple((int(e["tokens"]), float(e[m])) for e in evals if e.get(m) is not None) for m in METRICS}
        lines.append(PretrainLine(_name(r), {m: p for m, p in points.items() if p}))
    return PretrainFigure(FILE, tuple(sorted(lines, key=lambda line: line.name))) if lines else None


def draw_pretraining(fig_data: PretrainFigure, out_png: str | Path) -> Path:
    """PNG of a PretrainFigure: one panel per metric some run has, tokens on a shared log x axis."""
    from matplotlib.figure import Figure as MplFigure  # imported here: tables render without matplotlib until a plot
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    panels = [p for p in PANELS if any(p[0] in line.points for line in fig_data.lines)]
    fig = MplFigure(figsize=(4.2 * max(1, len(panels)), 3.6))
    axes = fig.subplots(1, max(1, len(panels)), squeeze=False)[0]
    colours = {line.name: f"C{i % 10}" for i, line in enumerate(fig_data.lines)}
    for ax, (metric, baseline, ylabel) in zip(axes, panels):
        for line in fig_data.lines:
            if metric in line.points:
                xs, ys = zip(*line.points[metric])
                ax.plot(xs, ys, marker=".", color=colours[line.name], label=line.name)
            if baseline and baseline in line.points:
                xs, ys = zip(*line.points[baseline])
                ax.plot(xs, ys, ls="--", color=colours[line.name], alpha=0.7)
        if metric == "disc_auc":
            ax.axhline(0.5, color="gray", lw=0.8, ls=":")  # chance
        ax.set_xscale("log")  # ticks 1M, 2M, 5M, 10M, ... (matplotlib's labelled minor ticks overlap on short spans)
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1e6:g}M"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("pre-training tokens")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    max(axes, key=lambda a: len(a.get_legend_handles_labels()[1])).legend(fontsize="small")  # the fullest panel
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, format="png", dpi=120, metadata={"Software": None})
    return out_png
