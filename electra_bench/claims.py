"""The claim and table vocabulary (contracts floor): what a suite's `table:` section means, shared by the loader that
validates it (config.py), the statistics that judge its claims (results.py), the renderer (tables.py) and the
`claims` command (verdicts.py), so none of them imports another to learn it.

Owns: the claim forms (`PAIR_KEYS`, `BEST_KEYS`; their rules are in results.evaluate_claims), cell selectors
(`select_cells`: a label, or {axis: value}), the GLUE column (`GLUE`, `show_glue`), and `TableSpec`, the one
translation of a suite's `table:` section into what tables render (`table_spec`), and the load-time check that the
section fits its suite (`check_table`). Knobs and their defaults are the schema's (`schema.TableConfig`,
`schema.PlotConfig`); nothing here adds a second default.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .registry import did_you_mean
from .schema import PlotConfig, SuiteConfig, TableConfig
from .tasks import TaskSpec, glue_tasks

GLUE = "GLUE"  # the table's GLUE-score column; claims and plots name it "glue"
# A pairwise claim compares two cells; a best-among claim ranks several ("metric" optional: "glue").
PAIR_KEYS, BEST_KEYS = frozenset({"name", "better", "worse", "metric"}), frozenset({"name", "best_among", "expected",
                                                                                    "metric"})
# Keys of a table spec given as a mapping (scripts, tests): the schema's table knobs plus what a suite derives.
SPEC_KEYS = (*TableConfig.model_fields, "glue_tasks", "rows", "controls")
UNTITLED = "Results"  # the heading of a table built from a mapping without a title (no suite to name it)


class TableError(ValueError):
    """A `table:` section that does not fit its suite; `at`: the path to blame in the YAML, `field`: its dotted name."""

    def __init__(self, message: str, at: tuple, field: str):
        super().__init__(message)
        self.at, self.field = at, field


@dataclass(frozen=True)
class CellInfo:
    """What names a cell in tables: its label when the suite gives one, else the cell string."""

    cell: str
    label: str | None
    axes: Mapping[str, object]

    @property
    def name(self) -> str:
        return self.label or self.cell or "default"


def axis_sort_key(info: CellInfo) -> tuple:
    """Order of cells by their axis values, then name."""
    # Numbers before strings, so a generator-size sweep reads 0.25, 0.5, 1.0 whatever order the runs finished in.
    values = tuple((0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v)) for _, v in sorted(info.axes.items()))
    return values, info.name


def select_cells(infos: Mapping[str, CellInfo], selector: str | Mapping) -> list[str]:
    """Cells matched by a selector: a label or cell string, or a dict of axis values that must all match."""
    if isinstance(selector, str):
        return [c for c, i in infos.items() if selector in (i.label, i.cell)]
    if isinstance(selector, Mapping):
        return [c for c, i in infos.items() if all(k in i.axes and i.axes[k] == v for k, v in selector.items())]
    raise TypeError(f"a selector is a label string or an axis dict, not {selector!r}")


def show_glue(glue: Sequence[str], reference: Mapping) -> bool:
    """A GLUE column: with two or more GLUE tasks, or with one when the paper's GLUE numbers are to sit beside it
    (a CPU-scale table scored on SST-2 alone; the table's header says which tasks the score averages)."""
    return len(glue) >= 2 or (len(glue) == 1 and any(GLUE in ref for ref in reference.values()))


@dataclass(frozen=True)
class TableSpec:
    """What a table shows, resolved: `columns` None means every task in the records (`resolved` fills it in),
    `glue_tasks` None means the columns; `rows` None orders every cell by its axes; `controls`: selectors of the
    random-init cells that verdicts.py checks claims against (their regime)."""

    title: str
    columns: tuple[str, ...] | None
    glue_tasks: tuple[str, ...] | None
    rows: tuple[Any, ...] | None
    extra: tuple[str, ...]
    spread: str
    digits: int
    reference: Mapping[str, Mapping[str, float]]
    reference_name: str
    claims: tuple[Mapping[str, Any], ...] = ()
    plots: tuple[PlotConfig, ...] = field(default=())
    controls: tuple[Any, ...] = ()

    def resolved(self, records: Iterable[dict]) -> TableSpec:
        """Columns and GLUE tasks filled in: the records' tasks, sorted, where the spec leaves them open."""
        columns = self.columns if self.columns is not None else tuple(sorted(
            {r["task"] for r in records if r["unit"] == "finetune"}))
        return replace(self, columns=columns, glue_tasks=self.glue_tasks if self.glue_tasks is not None else columns)

    @property
    def shown_columns(self) -> list[str]:
        """The table's columns in order (of a resolved spec): tasks, GLUE when shown, extra pre-training figures."""
        return [*self.columns, *([GLUE] if show_glue(self.glue_tasks, self.reference) else []), *self.extra]

    @classmethod
    def from_mapping(cls, spec: Mapping[str, Any]) -> TableSpec:
        """A spec from a mapping of SPEC_KEYS (None counts as absent); unknown keys or bad values raise ValueError."""
        for key in spec:
            if key not in SPEC_KEYS:
                raise ValueError(f"table spec: unknown key '{key}'{did_you_mean(key, SPEC_KEYS)}; known: {SPEC_KEYS}")
        given = {k: v for k, v in spec.items() if v is not None}
        cfg = TableConfig.model_validate({k: v for k, v in given.items() if k in TableConfig.model_fields})
        rows, glue = given.get("rows"), given.get("glue_tasks")
        spec = _from_config(cfg, cfg.title or UNTITLED, None if rows is None else tuple(rows),
                            None if glue is None else tuple(glue))
        return replace(spec, controls=tuple(given.get("controls", ())))


def _from_config(cfg: TableConfig, title: str, rows: tuple | None, glue: tuple[str, ...] | None) -> TableSpec:
    return TableSpec(title, None if cfg.columns is None else tuple(cfg.columns), glue, rows, tuple(cfg.extra),
                     cfg.spread, cfg.digits, cfg.reference, cfg.reference_name, tuple(cfg.claims), tuple(cfg.plots))


def table_spec(cfg: SuiteConfig, cells: Sequence, tasks: Mapping[str, TaskSpec]) -> TableSpec:
    """The suite's table: its columns (default: every task), the GLUE tasks among them (TaskSpec.glue), rows in the
    order of the suite's cells, its random-init cells as the verdicts' controls. `cells`: the loader's config.Cell
    objects (label, config); `tasks`: the suite's resolved task specs by name (config.Suite.tasks)."""
    columns = tuple(cfg.table.columns or cfg.tasks)
    title = cfg.table.title if cfg.table.title is not None else f"{cfg.name}: {cfg.description}".strip(": ")
    spec = _from_config(cfg.table, title, tuple(c.label for c in cells), tuple(glue_tasks(tasks[c] for c in columns)))
    controls = tuple(c.label for c in cells if c.config.finetune.init == "random")
    return replace(spec, columns=columns, controls=controls)


# ------------------------------------------------------------------------------------ load-time checks

def _near(name: Any, choices: list[str]) -> str:
    """did_you_mean, also across case: a reference column 'glue' is the table's 'GLUE' column."""
    same = [c for c in choices if c.lower() == str(name).lower()]
    return f" (did you mean '{same[0]}'?)" if same else did_you_mean(str(name), choices)


def _unknown_metric(metric: Any, metrics: list[str]) -> str:
    return f"metric {metric!r} is not one of {', '.join(metrics)}{_near(metric, metrics)}"


def check_table(cfg: SuiteConfig, cells: Sequence, tasks: Mapping[str, TaskSpec]) -> None:
    """Reference numbers, plots and claims name rows, columns and metrics exactly as tables.py resolves them when
    it renders (the same table_spec; a record's cell is its cell's label), so a typo fails at load time (config.py)
    and not after the training. `cells`: the loader's config.Cell objects (label, axes). Raises TableError."""
    table, labels = cfg.table, [c.label for c in cells]
    spec = table_spec(cfg, cells, tasks)
    shown = spec.shown_columns
    metrics = [*cfg.tasks, *(["glue"] if spec.glue_tasks else [])]  # what results.evaluate_claims judges

    def fail(msg: str, at: tuple, dotted: str) -> None:
        raise TableError(msg, ("table", *at), f"table.{dotted}")

    for row, ref in table.reference.items():
        if row not in labels:
            fail(f"row '{row}' is not a cell label{_near(row, labels)}; cells: {', '.join(labels)}",
                 ("reference", row), f"reference[{row!r}]")
        for col in ref:
            if col not in shown:
                fail(f"'{col}' is not a column of the table{_near(col, shown)}; columns: {', '.join(shown)}",
                     ("reference", row, col), f"reference[{row!r}].{col}")
    for i, plot in enumerate(table.plots):
        if plot.metric not in metrics:
            fail(_unknown_metric(plot.metric, metrics), ("plots", i, "metric"), f"plots[{i}].metric")
    infos = {c.label: CellInfo(c.label, c.label, c.axes) for c in cells}
    for i, claim in enumerate(table.claims):
        for at, sel, one in _claim_selectors(claim, metrics, fail, i, cfg):
            if problem := _selector_problem(sel, infos, cfg.axes, one):
                fail(problem, ("claims", i, *at), f"claims[{i}].{at[0]}" + (f"[{at[1]}]" if len(at) > 1 else ""))


def _claim_selectors(claim: dict, metrics: list[str], fail, i: int, cfg: SuiteConfig) -> list[tuple[tuple, Any, bool]]:
    """Check a claim's keys and metric as results.evaluate_claims reads them; return its cell selectors as
    (where in the claim, selector, whether it must pick exactly one cell). With `task:`, the metric is one the
    fine-tunes of that task record (the robustness metrics, robustness.py), judged as the headline would be."""
    if "task" in claim:
        claim = dict(claim)
        task = claim.pop("task")
        if task not in cfg.tasks:
            fail(f"task '{task}' is not one of the suite's tasks{_near(str(task), list(cfg.tasks))}",
                 ("claims", i, "task"), f"claims[{i}].task")
        if cfg.robustness is None or not str(claim.get("metric", "")).startswith("robust"):
            fail("a claim with `task:` names a recorded robustness metric (robust_auc/<kind>, robust_drop/<kind>/"
                 "<rate>, robust_rel_drop/all, ...) of a suite with a `robustness:` section",
                 ("claims", i, "metric"), f"claims[{i}].metric")
        metrics = [*metrics, claim.get("metric")]
    keys, known = set(claim), sorted(PAIR_KEYS | BEST_KEYS | {"task"})
    for key in sorted(keys - set(known), key=str):
        fail(f"unknown key '{key}'{_near(key, known)}", ("claims", i, key), f"claims[{i}].{key}")
    pairwise = keys == PAIR_KEYS
    if not pairwise and keys not in (BEST_KEYS, BEST_KEYS - {"metric"}):
        fail(f"a claim has the keys {sorted(PAIR_KEYS)} or {sorted(BEST_KEYS)} (metric optional), not "
             f"{sorted(keys, key=str)}", ("claims", i), f"claims[{i}]")
    metric = claim.get("metric", "glue")
    if metric not in metrics:
        fail(_unknown_metric(metric, metrics), ("claims", i, "metric"), f"claims[{i}].metric")
    if pairwise:
        return [((side,), claim[side], True) for side in ("better", "worse")]
    for side in ("best_among", "expected"):
        if not isinstance(claim[side], list) or not claim[side]:
            fail("a list of cell selectors (labels or {axis: value})", ("claims", i, side), f"claims[{i}].{side}")
    return [((side, j), sel, False) for side in ("best_among", "expected") for j, sel in enumerate(claim[side])]


def _selector_problem(sel: Any, infos: dict, axes: dict[str, list], one: bool) -> str | None:
    """Why a cell selector (a cell label, or {axis path: value}) does not pick exactly one cell (`one`) or at least
    one, as claims.select_cells will pick from the records; None when it does."""
    labels = list(infos)
    if isinstance(sel, dict):
        for k, v in sel.items():
            if k not in axes:
                return f"'{k}' is not an axis of the suite{_near(k, list(axes))}; axes: {', '.join(axes) or 'none'}"
            if v not in axes[k]:
                return f"axis {k} has no value {v!r}; values: {', '.join(map(str, axes[k]))}"
    elif not isinstance(sel, str):
        return f"a cell selector is a cell label or {{axis: value}}, not {sel!r}"
    found = select_cells(infos, sel)
    if not found:
        return f"'{sel}' is not a cell label{_near(sel, labels)}; cells: {', '.join(labels)}" \
            if isinstance(sel, str) else f"{sel} matches no cell"
    if one and len(found) > 1:
        return f"{sel} matches {len(found)} cells ({', '.join(found)}); a pairwise claim compares two"
    return None
