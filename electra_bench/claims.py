"""The claim and table vocabulary (contracts floor): what a suite's `table:` section means, shared by the loader that
validates it (config.py), the statistics that judge its claims (results.py), the renderer (tables.py) and the
`claims` command (verdicts.py), so none of them imports another to learn it.

Owns: the claim forms (`PAIR_KEYS`, `BEST_KEYS`; their rules are in results.evaluate_claims), cell selectors
(`select_cells`: a label, or {axis: value}), the GLUE column (`GLUE`, `show_glue`), and `TableSpec`, the one
translation of a suite's `table:` section into what tables render (`table_spec`). Knobs and their defaults are
the schema's (`schema.TableConfig`, `schema.PlotConfig`); nothing here adds a second default.
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
SPEC_KEYS = (*TableConfig.model_fields, "glue_tasks", "rows")
UNTITLED = "Results"  # the heading of a table built from a mapping without a title (no suite to name it)


@dataclass(frozen=True)
class CellInfo:
    """What names a cell in tables: its label when the suite gives one, else the cell string."""

    cell: str
    label: str | None
    axes: Mapping[str, object]

    @property
    def name(self) -> str:
        return self.label or self.cell or "default"


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
    `glue_tasks` None means the columns; `rows` None orders every cell by its axes."""

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
        return _from_config(cfg, cfg.title or UNTITLED, None if rows is None else tuple(rows),
                            None if glue is None else tuple(glue))


def _from_config(cfg: TableConfig, title: str, rows: tuple | None, glue: tuple[str, ...] | None) -> TableSpec:
    return TableSpec(title, None if cfg.columns is None else tuple(cfg.columns), glue, rows, tuple(cfg.extra),
                     cfg.spread, cfg.digits, cfg.reference, cfg.reference_name, tuple(cfg.claims), tuple(cfg.plots))


def table_spec(cfg: SuiteConfig, labels: Sequence[str], tasks: Mapping[str, TaskSpec]) -> TableSpec:
    """The suite's table: its columns (default: every task), the GLUE tasks among them (TaskSpec.glue), rows in the
    order of the suite's cells (`labels`). `tasks`: the suite's resolved task specs by name (config.Suite.tasks)."""
    columns = tuple(cfg.table.columns or cfg.tasks)
    title = cfg.table.title if cfg.table.title is not None else f"{cfg.name}: {cfg.description}".strip(": ")
    spec = _from_config(cfg.table, title, tuple(labels), tuple(glue_tasks(tasks[c] for c in columns)))
    return replace(spec, columns=columns)
