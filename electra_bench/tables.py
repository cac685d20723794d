"""Tables and plots of a suite, rendered from its records alone plus a table spec (DESIGN.md principle 7).

Two steps. `build_table(records, spec)` aggregates the records once into a `Table`: entries per row x column
(medians, spreads, GLUE scores, pre-training figures, best markers, paper numbers), notes, verdicts, the robustness
blocks (robustness_tables.py), the headline and pre-training figures (headline_plot.py, pretrain_plot.py) and the
data of every plot (plots.py). The renderers only format that model: `render_markdown` (table.md, with the verdicts
and robustness sections), `render_latex` (booktabs), `render_csv` (one line per row x column, full precision),
`draw_plot` / `draw_headline` / `draw_pretraining` / `robustness_tables.plot` (PNG); `render_all` writes them all.
The same records give byte-identical md/tex/csv: rows are sorted, numbers formatted at fixed precision, and nothing
reads the clock.

Failed units (`results.Failure`, passed beside the records: they left no record) are counted in their entries: a
cell whose every unit failed keeps its row, an entry with no finished unit shows `✗ (k failed)` instead of the
`–` of one not run yet, a partly failed one counts its failed seeds after n, and a legend under the table says so.
The plan's cells (`planned`) are rows too: a cell of the suite with no record yet shows `–`, not nothing.
A table without failures renders exactly as before they were counted.

The spec is a `claims.TableSpec` (a suite's `claims.table_spec`, or `TableSpec.from_mapping` of the keys of
`schema.TableConfig` plus `glue_tasks` and `rows`); its knobs and their defaults are the schema's:
  columns         [task names], one column each, in this order; a cell shows `median ± sd (n)` of the headline.
                  None/absent: every task in the records, sorted
  glue_tasks      [task names] averaged into the GLUE column (a suite: its tasks with `TaskSpec.glue`; a mapping
                  without it: `columns`); the column appears when there are at least two
  rows            [selectors] (label/cell string or axis dict) fixing row order; default: every cell, by axes
  extra           [names] from the pretrain records: "train_flops" (the run's FLOPs convention, named in the
                  notes), "train_flops_official", "train_flops_compute", "params", "steps" or a held-out
                  pre-training metric ("disc_auc", "lookup_auc", "token_cosine", "disc_recall", ...)
  spread, digits  "sd" or "ci" after the median; decimals of metric values
  reference       {row name: {column: number}}: paper numbers, shown in a "<column> (<reference_name>)" column
  claims          [claims] judged by `verdicts.evaluate_claims` (rules in its docstring) into the verdicts section;
                  the caller passes the judged Verdicts to `build_table` / `render_all`, which only print them
  controls        [selectors] of the suite's random-init cells, the regime check of those verdicts
  plots           [schema.PlotConfig]: axis (dotted path | "train_flops" | "params"), metric (task | "glue"), file,
                  logx
"""
from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from electra_bench import flops, headline_plot, pretrain_plot, robustness_tables
from electra_bench.claims import GLUE, CellInfo, TableSpec, axis_sort_key, select_cells
from electra_bench.plots import Figure, draw_plot, figure
from electra_bench.results import (
    Failure,
    Verdict,
    aggregate,
    bootstrap_group_ci,
    cell_infos,
    glue_score,
    pretrain_summary,
)


def as_spec(spec: TableSpec | Mapping, records: Sequence[dict]) -> TableSpec:
    """A TableSpec (a mapping is read by TableSpec.from_mapping) with its columns resolved against the records."""
    return (spec if isinstance(spec, TableSpec) else TableSpec.from_mapping(spec)).resolved(records)


@dataclass
class Entry:
    """One table cell: the value (median, GLUE score or pretrain figure) and, for tasks, its spread."""

    value: float | None
    sd: float = math.nan
    ci: tuple[float, float] = (math.nan, math.nan)
    n: int | None = None  # kept runs; None for values that are not over fine-tuning seeds
    n_pretrain: int = 1  # distinct pretraining seeds among the kept runs
    n_degenerate: int = 0
    n_diverged: int = 0
    n_failed: int = 0  # units of this row x column that raised (results.Failure)
    n_blocked: int = 0  # fine-tunes not run because their pre-training failed
    best: bool = False
    reference: float | None = None

    @property
    def n_unfinished(self) -> int:
        return self.n_failed + self.n_blocked


@dataclass
class Table:
    """Everything the renderers print: rows x columns of entries, notes and verdicts."""

    title: str
    rows: list[str]
    columns: list[str]
    entries: dict[tuple[str, str], Entry]
    reference_columns: list[str]  # columns with at least one reference number
    spec: TableSpec  # the resolved spec: formatting (digits, spread, reference_name) is read from it
    notes: list[str] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    robustness: list = field(default_factory=list)  # robustness_tables.RobustBlock per task with robustness records
    figures: list[Figure] = field(default_factory=list)  # one per spec plot
    headline: headline_plot.HeadlineFigure | None = None  # every row's seeds per task (headline.png)
    pretraining: pretrain_plot.PretrainFigure | None = None  # held-out metrics over each run (pretraining.png)

    @property
    def has_failures(self) -> bool:
        """Some unit of the table failed: the legend, and the CSV's failure columns, are shown only then (a table
        without failures renders as it did before failures were counted)."""
        return any(e.n_unfinished for e in self.entries.values())


def _row_cells(infos: Mapping[str, CellInfo], selectors: Sequence | None) -> list[str]:
    if selectors is None:
        return sorted(infos, key=lambda c: axis_sort_key(infos[c]))
    return list(dict.fromkeys(c for sel in selectors for c in select_cells(infos, sel)))


def _mark_best(table: Table, column: str, higher_is_better: bool, digits: int) -> None:
    # Compare at display precision so two values that print the same are both bold.
    shown = {r: round(e.value, digits) for r in table.rows if (e := table.entries.get((r, column))) and _ok(e.value)}
    if len(shown) < 2:
        return
    best = max(shown.values()) if higher_is_better else min(shown.values())
    for r, v in shown.items():
        table.entries[(r, column)].best = v == best


def _ok(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _unfinished(failures: Sequence[Failure]) -> dict[tuple[str, str | None], tuple[int, int]]:
    """(failed, blocked) units per (cell, task); a pre-training under (cell, None)."""
    out: dict[tuple[str, str | None], tuple[int, int]] = {}
    for f in failures:
        failed, blocked = out.get((f.cell, f.task if f.unit == "finetune" else None), (0, 0))
        out[(f.cell, f.task if f.unit == "finetune" else None)] = (failed + (not f.blocked), blocked + f.blocked)
    return out


def build_table(records: Sequence[dict], spec: TableSpec | Mapping, verdicts: Sequence[Verdict] = (),
                failures: Sequence[Failure] = (), planned: Sequence[CellInfo] = ()) -> Table:
    """Aggregate records once into a Table following `spec` (see the module docstring for its keys); `verdicts`: the
    claims judged by verdicts.judge, printed as they are; `failures`: the suite's failed and blocked units
    (suite.failed_units), counted in their entries: a cell whose every unit failed still gets its row; `planned`:
    the suite's cells (suite.planned_cells), each a row, `–` where it has not run yet."""
    spec = as_spec(spec, records)
    infos, stats, pre = cell_infos(records), aggregate(records), pretrain_summary(records)
    by = {(s.cell, s.task): s for s in stats}
    unfinished = _unfinished(failures)
    row_infos = {**{c.cell: c for c in planned}, **{f.cell: CellInfo(f.cell, f.cell, f.axes) for f in failures},
                 **infos}
    cells = _row_cells(row_infos, spec.rows)
    glue_tasks = list(spec.glue_tasks)
    columns = spec.shown_columns
    names = [row_infos[c].name for c in cells]
    if dupes := sorted({n for n in names if names.count(n) > 1}):
        raise ValueError(f"table: several cells share the row name(s) {dupes}; give them distinct labels")
    unknown_cols = sorted({col for ref in spec.reference.values() for col in ref if col not in columns})
    if unknown_cols:
        raise ValueError(f"table spec: reference names column(s) {unknown_cols} that are not in {columns}")
    # Paper rows we have no records for still appear, so a typo in a reference label is visible, not dropped.
    rows = names + [r for r in spec.reference if r not in names]
    table = Table(spec.title, rows, columns, {},
                  [c for c in columns if any(c in v for v in spec.reference.values())], spec)
    glue = glue_score(stats, glue_tasks)
    for cell, name in zip(cells, names):
        for task in spec.columns:
            failed, blocked = unfinished.get((cell, task), (0, 0))
            if (s := by.get((cell, task))) is not None:
                table.entries[(name, task)] = Entry(s.median if s.n else None, s.sd, (s.ci_low, s.ci_high), s.n,
                                                    s.n_pretrain, s.n_degenerate, s.n_diverged, failed, blocked)
            elif failed or blocked:
                table.entries[(name, task)] = Entry(None, n_failed=failed, n_blocked=blocked)
        if GLUE in columns:
            _glue_entry(table, cell, name, glue, by, unfinished)
        failed, _ = unfinished.get((cell, None), (0, 0))
        for col in spec.extra:
            table.entries[(name, col)] = Entry(pre.get(cell, {}).get(col), n_failed=failed)
    for row, ref in spec.reference.items():
        for col, value in ref.items():
            table.entries.setdefault((row, col), Entry(None)).reference = float(value)
    for task in spec.columns:
        directions = {s.higher_is_better for (c, t), s in by.items() if t == task}
        if len(directions) > 1:
            raise ValueError(f"table: records of task '{task}' disagree on higher_is_better")
        _mark_best(table, task, directions.pop() if directions else True, spec.digits)
    if GLUE in columns:
        _mark_best(table, GLUE, True, spec.digits)
    table.notes = _notes(records, stats, spec, columns)
    table.verdicts = list(verdicts)
    ran = [(c, n) for c, n in zip(cells, names) if c in infos]  # cells with records: robustness rows, spec plots
    table.robustness = robustness_tables.robust_blocks(records, by, [c for c, _ in ran], [n for _, n in ran],
                                                       spec.columns)
    table.figures = [figure(infos, by, pre, p, glue_tasks) for p in spec.plots]
    table.pretraining = pretrain_plot.pretrain_figure(records)
    table.headline = headline_plot.headline_figure(
        by, list(zip(cells, names)), spec.columns, {k: sum(v) for k, v in unfinished.items()})
    return table


def _glue_entry(table: Table, cell: str, name: str, glue: Mapping, by: Mapping, unfinished: Mapping) -> None:
    """The GLUE score of a row; without one, the failed units of its GLUE tasks (why it is missing)."""
    tasks = table.spec.glue_tasks
    failed = sum(unfinished.get((cell, t), (0, 0))[0] for t in tasks)
    blocked = sum(unfinished.get((cell, t), (0, 0))[1] for t in tasks)
    if cell in glue and glue[cell].value is not None:
        table.entries[(name, GLUE)] = Entry(glue[cell].value, ci=bootstrap_group_ci([by[(cell, t)].values
                                                                                     for t in tasks]))
    elif cell in glue or failed or blocked:
        table.entries[(name, GLUE)] = Entry(None, ci=(math.nan, math.nan), n_failed=failed, n_blocked=blocked)


def _notes(records: Sequence[dict], stats: list, spec: TableSpec, columns: list[str]) -> list[str]:
    suites = sorted({r["suite"] for r in records})
    versions = sorted({str(r["code_version"]) for r in records})
    spread = "sd" if spec.spread == "sd" else "[bootstrap 95% CI of the median]"
    notes = [f"Suite: {', '.join(suites) or '-'}; code version: {', '.join(versions) or '-'}.",
             f"Task cells: median {'± ' if spec.spread == 'sd' else ''}{spread} of the headline metric over "
             "fine-tuning seeds (n kept runs); best per column in bold."]
    if GLUE in columns:
        notes.append(f"GLUE: mean of the task medians over {', '.join(spec.glue_tasks)}.")
    if any(s.n_degenerate or s.n_diverged for s in stats):
        notes.append("Runs flagged degenerate (one predicted class) or diverged are excluded and counted in the cell.")
    if superseded := sum(s.n_superseded for s in stats):
        notes.append(f"{superseded} older record(s) of re-run seeds superseded by newer ones.")
    # records written before the field existed carry none: they name no convention rather than guess one
    if conventions := sorted({r["flops_convention"] for r in records if r.get("flops_convention")}):
        named = "; ".join(flops.CONVENTION_NAMES.get(c, c) for c in conventions)
        notes.append(f"Train FLOPs (and equal-compute budgets) counted under the FLOPs convention: {named}.")
    if spec.extra and any(r["unit"] == "pretrain" and "finetune.checkpoint" in r["axes"] for r in records):
        notes.append("Pre-training columns: each run's final (100%) values, shown on the first checkpoint row that "
                     "needed the run; its other checkpoint rows fine-tune the same run part-trained.")
    if spec.reference:
        notes.append(f"'({spec.reference_name})' columns: reference numbers from the table spec, beside ours.")
    return notes


# ------------------------------------------------------------------------------------------------- rendering

def _fmt_extra(column: str, x: float) -> str:
    if column == "params":
        return f"{x / 1e6:.1f}M"
    if column.startswith("train_flops"):
        return f"{x:.2e}"
    return f"{x:.3f}" if abs(x) <= 1 else f"{x:.1f}"  # RTD metrics (recall, AUC, accuracy) are fractions


NOT_RUN, FAILED = "–", "✗"  # no value yet; no unit of the row x column finished (all failed or blocked)
LEGEND = (f"`{NOT_RUN}`: not run yet (or not recorded); `{FAILED}`: no unit of that row and column finished; "
          "`k failed`: units that raised an error (the reasons: `electra-bench plan`); `k blocked`: fine-tunes not "
          "run because their pre-training failed. `electra-bench run` retries both.")


def _fmt_entry(e: Entry | None, column: str, spec: TableSpec, bold: tuple[str, str]) -> str:
    if e is None or not _ok(e.value):
        if e is None or not (e.n_degenerate or e.n_diverged or e.n_unfinished):
            return NOT_RUN
        return f"{NOT_RUN if e.n_degenerate or e.n_diverged else FAILED} ({_flag_text(e)})"
    d = spec.digits
    if e.n is None and column != GLUE:
        return _fmt_extra(column, e.value) + (f" ({_flag_text(e)})" if e.n_unfinished else "")
    value = f"{e.value:.{d}f}"
    value = f"{bold[0]}{value}{bold[1]}" if e.best else value
    ci = f" [{e.ci[0]:.{d}f}, {e.ci[1]:.{d}f}]" if spec.spread == "ci" and _ok(e.ci[0]) else ""
    if e.n is None:  # GLUE score: no sd (its seeds are not runs), but its bootstrap CI in "ci" mode
        return value + ci
    spread = ci if spec.spread == "ci" else f" ± {e.sd:.{d}f}" if _ok(e.sd) else ""
    flags = f"; {_flag_text(e)}" if e.n_degenerate or e.n_diverged or e.n_unfinished else ""
    runs = f"{e.n} over {e.n_pretrain} pre-trainings" if e.n_pretrain > 1 else f"{e.n}"
    return f"{value}{spread} ({runs}{flags})"


def _flag_text(e: Entry) -> str:
    counts = ((e.n_degenerate, "degenerate"), (e.n_diverged, "diverged"), (e.n_failed, "failed"),
              (e.n_blocked, "blocked"))
    return ", ".join(f"{n} {what}" for n, what in counts if n)


def _grid(table: Table, bold: tuple[str, str]) -> tuple[list[str], list[list[str]]]:
    """Header and body cells shared by markdown and LaTeX; reference columns follow their own column."""
    spec = table.spec
    header, body = ["row"], [[r] for r in table.rows]
    d, ref_name = spec.digits, spec.reference_name
    for col in table.columns:
        header.append(col)
        for row, cells in zip(table.rows, body):
            cells.append(_fmt_entry(table.entries.get((row, col)), col, spec, bold))
        if col in table.reference_columns:
            header.append(f"{col} ({ref_name})")
            for row, cells in zip(table.rows, body):
                ref = (table.entries.get((row, col)) or Entry(None)).reference
                cells.append(NOT_RUN if ref is None else f"{ref:.{d}f}")
    return header, body


def render_markdown(table: Table) -> str:
    header, body = _grid(table, ("**", "**"))
    lines = [f"# {table.title}", "", *[f"- {n}" for n in table.notes], "",
             "| " + " | ".join(header) + " |", "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
    lines += ["", LEGEND] if table.has_failures else []
    lines += robustness_tables.render_markdown(table.robustness, table.spec.digits)
    if table.verdicts:
        lines += ["", "## Verdicts", "", *[render_verdict(v) for v in table.verdicts]]
    return "\n".join(lines) + "\n"


def render_verdict(v: Verdict) -> str:
    """One markdown list item: claim, verdict, the improvement of the better over the worse cell (difference of
    means) with its Multi-Bootstrap 95% interval, and the design's minimum detectable effect."""
    if not _ok(v.diff):
        return f"- **{v.name}** ({v.metric}): {v.label} — {v.note}"
    ci = f" [95% CI {v.ci_low:+.2f}, {v.ci_high:+.2f}]" if _ok(v.ci_low) else ""
    mde = f"; MDE {'≥ ' if v.mde_floor else ''}{v.mde:.2f}" if _ok(v.mde) else ""
    text = f"- **{v.name}** ({v.metric}): {v.label} — {v.better} vs {v.worse}: {v.diff:+.2f}{ci}{mde}"
    return text + (f" ({v.note})" if v.note else "")


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "–": "--",
                FAILED: r"$\times$"}


def _tex(s: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in s)


def render_latex(table: Table) -> str:
    marker = ("\x00B", "\x00E")  # placeholders survive escaping, then become \textbf{...}
    header, body = _grid(table, marker)

    def cell(s: str) -> str:
        return _tex(s).replace("±", r"$\pm$").replace(marker[0], r"\textbf{").replace(marker[1], "}")

    lines = [f"% {_tex(table.title)}", *[f"% {_tex(n)}" for n in table.notes],
             r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}", r"\toprule",
             " & ".join(_tex(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(cell(c) for c in row) + r" \\" for row in body]
    legend = [f"% {_tex(LEGEND.replace('`', ''))}"] if table.has_failures else []
    return "\n".join(lines + [r"\bottomrule", r"\end{tabular}", *legend]) + "\n"


def render_csv(table: Table) -> str:
    """Long format, one line per row x column, floats at full precision (repr) for re-analysis; the columns
    n_failed and n_blocked follow when some unit failed (Table.has_failures)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    failures = table.has_failures
    w.writerow(["row", "column", "value", "sd", "ci_low", "ci_high", "n", "n_degenerate", "n_diverged", "best",
                "reference", *(["n_failed", "n_blocked"] if failures else [])])
    num = lambda x: "" if not _ok(x) else repr(float(x))  # noqa: E731
    for row in table.rows:
        for col in table.columns:
            if (e := table.entries.get((row, col))) is not None:
                w.writerow([row, col, num(e.value), num(e.sd), num(e.ci[0]), num(e.ci[1]),
                            "" if e.n is None else e.n, e.n_degenerate, e.n_diverged, int(e.best), num(e.reference),
                            *([e.n_failed, e.n_blocked] if failures else [])])
    return buf.getvalue()


def render_all(records: Sequence[dict], spec: TableSpec | Mapping, out_dir: str | Path,
               verdicts: Sequence[Verdict] = (), failures: Sequence[Failure] = (),
               planned: Sequence[CellInfo] = ()) -> list[Path]:
    """Write table.md (with `verdicts`), table.tex, table.csv, the headline figure and the spec's plots into
    out_dir; `failures` and `planned` as for build_table. Returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = build_table(records, spec, verdicts, failures, planned)
    paths = []
    for name, text in (("table.md", render_markdown(table)), ("table.tex", render_latex(table)),
                       ("table.csv", render_csv(table))):
        (out / name).write_text(text, encoding="utf-8", newline="\n")
        paths.append(out / name)
    paths += [draw_plot(f, out / f.file) for f in table.figures]
    if table.headline is not None:
        paths.append(headline_plot.draw_headline(table.headline, out / table.headline.file))
    if table.pretraining is not None:
        paths.append(pretrain_plot.draw_pretraining(table.pretraining, out / table.pretraining.file))
    if table.robustness:
        paths.append(robustness_tables.plot(table.robustness, out / "robustness.png"))
    return paths
