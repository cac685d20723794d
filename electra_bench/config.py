"""Suite loading: YAML with file:line errors, `extends` deep-merge, `--set` overrides, full validation.

Nothing runs before the whole suite is valid: every cell (cells x axes) is resolved into a `RunConfig` here, so a
bad axis value fails at `validate` time with the file, line and dotted path of the field.
YAML is read by `safe_yaml` (size, depth and alias-expansion limits first, then SafeLoader: no object construction,
no import paths, no code from config).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from . import safe_yaml
from .claims import TableError, TableSpec, check_table, table_spec
from .registry import did_you_mean
from .robustness import RobustnessError, check_robustness
from .schema import RunConfig, SuiteConfig
from .tasks import TASKS, ItemError, TaskSpec, task_from_dict

RUN_SECTIONS = tuple(RunConfig.model_fields)  # model, tokenizer, corpus, pretrain, finetune


class ConfigError(Exception):
    """A user error in a suite, an override or the CLI: one line naming file, line and dotted field."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None, path: str | None = None):
        self.message, self.file, self.line, self.path = message, file, line, path
        where = f"{file}:{line}" if file and line else (file or "")
        parts = [p for p in (where, path) if p]
        super().__init__(f"{': '.join(parts)}: {message}" if parts else message)


@dataclass
class Source:
    """Where each dotted path of the merged suite was written: path tuple -> (file, line)."""

    lines: dict[tuple, tuple[str, int]] = field(default_factory=dict)
    root_file: str = ""

    def where(self, path: tuple) -> tuple[str, int | None]:
        for n in range(len(path), -1, -1):  # nearest written ancestor
            if path[:n] in self.lines:
                return self.lines[path[:n]]
        return self.root_file, None

    def replaced(self, path: tuple, where: tuple[str, int | None]) -> None:
        """`path` was set whole (a scale, `--set`): the lines written under it in a file no longer apply."""
        for old in [k for k in self.lines if k[:len(path)] == path]:
            del self.lines[old]
        self.lines[path] = where


def _node_lines(node: yaml.Node, file: str, prefix: tuple, out: dict) -> None:
    out[prefix] = (file, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict = {}
        for key, _ in node.value:
            if key.value in seen:
                raise ConfigError(f"duplicate key '{key.value}' (first on line {seen[key.value]})", file,
                                  key.start_mark.line + 1, ".".join(str(p) for p in (*prefix, key.value)))
            seen[key.value] = key.start_mark.line + 1
        for key, value in node.value:
            out[prefix + (key.value,)] = (file, key.start_mark.line + 1)
            _node_lines(value, file, prefix + (key.value,), out)
            out[prefix + (key.value,)] = (file, key.start_mark.line + 1)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _node_lines(item, file, prefix + (i,), out)


def _read_yaml(path: Path) -> tuple[dict, dict]:
    try:
        if path.stat().st_size > safe_yaml.MAX_BYTES:  # refused before it is read (a 50 MB "suite")
            raise ConfigError(f"larger than {safe_yaml.MAX_BYTES:,} bytes (a suite is a few KB)", str(path), 1)
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError("file not found", str(path)) from None
    except OSError as e:
        raise ConfigError(f"cannot read ({e.strerror})", str(path)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 text ({e.reason} at byte {e.start})", str(path),
                          raw[:e.start].count(b"\n") + 1) from None
    try:
        data, node = safe_yaml.load(text)
    except safe_yaml.YamlLimitError as e:
        raise ConfigError(str(e), str(path), e.line or 1) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"YAML syntax error: {problem}", str(path), mark.line + 1 if mark else None) from None
    if not isinstance(data, dict):
        raise ConfigError("a suite must be a YAML mapping (key: value)", str(path),
                          node.start_mark.line + 1 if node is not None else 1)
    lines: dict = {}
    _node_lines(node, str(path), (), lines)
    return data, lines


def deep_merge(base: dict, over: dict) -> dict:
    """`over` wins; nested mappings merge key by key; lists and scalars are replaced whole."""
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _load_with_extends(path: Path, chain: tuple[Path, ...] = ()) -> tuple[dict, dict]:
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(p.name for p in (*chain, path))
        raise ConfigError(f"cyclic extends: {cycle}", str(chain[-1]))
    data, lines = _read_yaml(path)
    parents = data.pop("extends", None) or []
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        file, line = lines.get(("extends",), (str(path), None))
        raise ConfigError("extends must be a file name or a list of file names", file, line, "extends")
    merged, merged_lines = {}, {}
    for i, parent in enumerate(parents):
        file, line = lines.get(("extends", i), lines.get(("extends",), (str(path), None)))
        target = (path.parent / parent).resolve()
        if target in (*chain, path):
            cycle = " -> ".join(p.name for p in (*chain, path, target))
            raise ConfigError(f"cyclic extends: {cycle}", file, line, "extends")
        if not target.is_file():
            raise ConfigError(f"extends '{parent}': file not found ({target})", file, line, "extends")
        pdata, plines = _load_with_extends(path.parent / parent, (*chain, path))
        pdata.pop("name", None)  # a suite's name is its own, never inherited
        merged, merged_lines = deep_merge(merged, pdata), {**merged_lines, **plines}
    return deep_merge(merged, data), {**merged_lines, **lines}


def parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    """`a.b=c` -> (("a", "b"), value), the value typed by YAML (`10` int, `1e-4` float, `[1,2]` list)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form path=value", "--set")
    key, raw = text.split("=", 1)
    try:
        value = safe_yaml.load(raw)[0] if raw.strip() else ""
    except safe_yaml.YamlLimitError as e:
        raise ConfigError(f"override '{key.strip()}': {e}", "--set") from None
    except yaml.YAMLError:
        value = raw
    path = tuple(key.strip().split("."))
    if path[0] in RUN_SECTIONS:  # run-config paths are the single addressing scheme: they mean `base.<path>`
        path = ("base", *path)
    return path, value


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> {dotted.path: value}: the one addressing scheme (MLflow params, `compare`)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def set_path(data: dict, path: tuple, value: Any) -> dict:
    data = dict(data)
    head, *rest = path
    data[head] = set_path(data.get(head) if isinstance(data.get(head), dict) else {}, tuple(rest), value) \
        if rest else value
    return data


def _model_at(model: type[BaseModel], path: tuple) -> type[BaseModel] | None:
    """The pydantic model that holds the field `path` (for did-you-mean on unknown keys)."""
    for part in path:
        if isinstance(part, int):
            continue
        ann = getattr(model.model_fields.get(part), "annotation", None)
        inner = [a for a in (ann, *get_args(ann)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if inner:  # the field's model, or the one in list[...] / dict[str, ...] / ... | None
            model = inner[0]
        else:
            return model if part == path[-1] else None
    return model


def _raise_validation(err: ValidationError, source: Source, model: type[BaseModel], prefix: tuple = (),
                      at: tuple | None = None) -> None:
    # an unknown key first: it is usually the typo behind a 'Field required' beside it (`axs` for `axis`)
    first = next((e for e in err.errors() if e["type"] == "extra_forbidden"), err.errors()[0])
    item = first.get("ctx", {}).get("error")
    item_at = item.at if isinstance(item, ItemError) else ()  # a validator that names one item of its field
    loc = tuple(first["loc"]) + item_at
    dotted = ".".join(str(p) for p in (*prefix, *loc) if not str(p).startswith("function-"))
    if at is not None and at[0] in ("axes", "cells"):
        dotted = str(at[-1])  # the axis / set path the user wrote
    file, line = source.where(at if at is not None else (*prefix, *loc))
    msg = first["msg"].removeprefix("Value error, ")  # pydantic's prefix for a validator's ValueError
    if first["type"] == "extra_forbidden":
        holder = _model_at(model, loc[:-1]) if len(loc) > 1 else model
        known = list(holder.model_fields) if holder else []
        msg = f"unknown key '{loc[-1]}'{did_you_mean(str(loc[-1]), known)}"
    elif "input" in first and first["type"] not in ("missing",) and not isinstance(first["input"], dict) \
            and not item_at:  # an ItemError's message names its item; the input is the whole field
        msg = f"{msg} (got {first['input']!r})"
    raise ConfigError(msg, file, line, dotted or None)


@dataclass(frozen=True)
class Cell:
    """One row of a suite: a label, its axis values (dotted path -> value) and the resolved run config."""

    label: str
    axes: dict[str, Any]
    config: RunConfig
    pretrain_seeds: tuple[int, ...] | None = None  # the row's (or else the suite's) `pretrain_seeds`
    pretrain_seed: int | None = None  # set on the copies suite.seed_cells makes, one per pretraining seed
    row: str | None = None  # the row's own `label` as the suite wrote it, without axis values (None: unlabelled)

    @property
    def run_label(self) -> str:
        """The label of this cell's units in logs and worker queues: `<label>/pretrain_seed<k>` for a pretraining-seed
        copy."""
        return self.label if self.pretrain_seed is None else f"{self.label}/pretrain_seed{self.pretrain_seed}"

    @property
    def short_label(self) -> str:
        """The row label, then the axis values without their paths, then `p<k>` for a pretraining-seed copy
        (`ELECTRA 0.25 p1`): what tells the cell apart in the first characters of its MLflow run names, which the UI
        cuts at about 12 (runner.py). The full label, axes and pretraining seed are the runs' tags and params."""
        head = self.row or ("" if self.axes else self.label)
        seed = [] if self.pretrain_seed is None else [f"p{self.pretrain_seed}"]
        return " ".join([*([head] if head else []), *(str(v) for v in self.axes.values()), *seed])


@dataclass
class Suite:
    """A loaded suite: its config, its cells, and the names it uses resolved once, here, at load time."""

    config: SuiteConfig
    cells: list[Cell]
    path: Path
    source: Source
    tasks: dict[str, TaskSpec] = field(default_factory=dict)  # every task of `config.tasks`, built-in or custom
    generator: Cell | None = None  # the cell whose generator the robustness `generator` perturbation samples

    @property
    def table_spec(self) -> TableSpec:
        """The suite's table (claims.table_spec): what `validate` checked, `run`/`table` render, `claims` judges."""
        return table_spec(self.config, self.cells, self.tasks)


def cell_name(axes: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in axes.items())


def _expand_cells(cfg: SuiteConfig, source: Source) -> list[Cell]:
    names, values = list(cfg.axes), list(cfg.axes.values())
    if cfg.zip_axes:
        if len({len(v) for v in values}) > 1:
            file, line = source.where(("axes",))
            raise ConfigError("zip_axes needs axes of equal length", file, line, "axes")
        combos = list(zip(*values))
    else:
        combos = list(itertools.product(*values))
    base = cfg.base.model_dump()
    cells = []
    for ci, spec in enumerate(cfg.cells):
        for combo in combos if spec.crossed else [()]:
            data, axes = base, {}
            for path_str, value in (*spec.set.items(), *zip(names, combo)):
                path = tuple(path_str.split("."))
                if path[0] not in RUN_SECTIONS:
                    where = ("cells", ci, "set", path_str) if path_str in spec.set else ("axes", path_str)
                    file, line = source.where(where)
                    raise ConfigError(f"'{path_str}' is not a run setting; paths start with one of "
                                      f"{', '.join(RUN_SECTIONS)}{did_you_mean(path[0], RUN_SECTIONS)}",
                                      file, line, path_str)
                data = set_path(data, path, value)
            for name, value in zip(names, combo):
                axes[name] = value
            try:
                run = RunConfig.model_validate(data)
            except ValidationError as e:
                _raise_validation(e, source, RunConfig, (), _blame(e, cfg, spec, ci))
            label = spec.label or cell_name(axes) or "default"
            if spec.label and axes:
                label = f"{spec.label} ({cell_name(axes)})"
            seeds = spec.pretrain_seeds if spec.pretrain_seeds is not None else cfg.pretrain_seeds
            cells.append(Cell(label=label, axes=axes, config=run,
                              pretrain_seeds=None if seeds is None else tuple(seeds), row=spec.label))
    labels = [c.label for c in cells]
    dup = next((lbl for lbl in labels if labels.count(lbl) > 1), None)
    if dup:
        raise ConfigError(f"two cells resolve to the same label '{dup}'", *source.where(("cells",)), "cells")
    return cells


def apply_scale(data: dict, scale: str | None, source: Source) -> dict:
    """`scales: {cpu: {path: value}, paper: {...}}` in a suite; `--scale NAME` applies one set of paths.

    The first scale listed is the default. Paths are dotted like `--set` (run paths mean `base.<path>`)."""
    scales = data.pop("scales", None) or {}
    if not isinstance(scales, dict):
        raise ConfigError("scales must map a scale name to {dotted.path: value}", *source.where(("scales",)),
                          "scales")
    if scale is None:
        if not scales:
            return data
        scale = next(iter(scales))
    if scale not in scales:
        raise ConfigError(f"unknown scale '{scale}'{did_you_mean(scale, list(scales))}; suite has: "
                          f"{', '.join(scales) or 'none'}", source.root_file, None, "--scale")
    for dotted, value in (scales[scale] or {}).items():
        key, _ = parse_override(f"{dotted}=0")
        data = set_path(data, key, value)
        source.replaced(key, source.where(("scales", scale, dotted)))
    return data


def _blame(err: ValidationError, cfg: SuiteConfig, spec, ci: int) -> tuple:
    """Where a cell's validation error was written: the axis or `set` path it names (or, for a cross-field rule
    on a section, the first axis / set path inside that section), else the base config."""
    loc = ".".join(str(p) for p in err.errors()[0]["loc"])
    for path in cfg.axes:
        if path == loc or path.startswith(loc + "."):
            return ("axes", path)
    for path in spec.set:
        if path == loc or path.startswith(loc + "."):
            return ("cells", ci, "set", path)
    return ("base", *err.errors()[0]["loc"])


def load_suite(path: str | Path, overrides: list[str] = (), scale: str | None = None) -> Suite:
    """Load, merge, scale, override and validate a suite; raise ConfigError (file:line: path: message)."""
    path = Path(path)
    data, lines = _load_with_extends(path)
    source = Source(lines={k: v for k, v in lines.items()}, root_file=str(path))
    data = apply_scale(data, scale, source)
    for text in overrides:
        key, value = parse_override(text)
        data = set_path(data, key, value)
        for n in range(1, len(key)):
            source.lines.setdefault(key[:n], ("--set", None))
        source.replaced(key, ("--set", None))
    try:
        cfg = SuiteConfig.model_validate(data)
    except ValidationError as e:
        _raise_validation(e, source, SuiteConfig)
    tasks = _check_tasks(cfg, source)
    if cfg.pretrain_seeds is not None or any(c.pretrain_seeds is not None for c in cfg.cells):
        _check_pretrain_seeds(cfg, source)
    cells = _expand_cells(cfg, source)
    _check_table(cfg, cells, source, tasks)
    generator = _check_robustness(cfg, cells, source, tasks) if cfg.robustness is not None else None
    if cfg.search is not None:
        _check_search(cfg, cells, source, tasks)
    return Suite(config=cfg, cells=cells, path=path, source=source, tasks=tasks, generator=generator)


def _check_search(cfg: SuiteConfig, cells: list[Cell], source: Source, tasks: dict[str, TaskSpec]) -> None:
    """The `search:` block as `search` will use it: the objective names a suite task (or glue, with GLUE tasks),
    every space path is a run setting, and every end of its range (each choice) gives a valid run config for the
    trial's cell (the first), so no trial fails on a value the study was told to try."""
    search = cfg.search

    def fail(msg: str, at: tuple, dotted: str) -> None:
        raise ConfigError(msg, *source.where(("search", *at)), f"search.{dotted}")

    objectives = [*cfg.tasks, *(["glue"] if any(t.format == "glue_tsv" for t in tasks.values()) else [])]
    if search.objective not in objectives:
        near = did_you_mean(search.objective, objectives)
        fail(f"objective '{search.objective}' is not one of the suite's tasks{near}; "
             f"choose from: {', '.join(objectives) or 'none (the suite has no tasks)'}", ("objective",), "objective")
    base = cells[0].config.model_dump()
    for path, param in search.space.items():
        at = ("space", path)
        *parents, leaf = path.split(".")
        holder = _model_at(RunConfig, tuple(parents))
        if holder is None or leaf not in holder.model_fields:
            fail(f"'{path}' is not a run setting{did_you_mean(leaf, list(holder.model_fields) if holder else [])}", at,
                 f"space.{path}")
        values = param.choices if param.type == "categorical" else \
            ([int(param.low), int(param.high)] if param.type == "int" else [param.low, param.high])
        if param.type == "int" and (param.low != int(param.low) or param.high != int(param.high)):
            fail("an int parameter needs integer low and high", at, f"space.{path}")
        for value in values:
            try:
                RunConfig.model_validate(set_path(base, tuple(path.split(".")), value))
            except ValidationError as e:
                first = e.errors()[0]
                fail(f"trial value {value!r}: {first['msg']}", at, f"space.{path}")


def _check_pretrain_seeds(cfg: SuiteConfig, source: Source) -> None:
    """`pretrain_seeds` sets `pretrain.seed` of every pre-trained cell: an axis or cell `set` of it would be lost."""
    at = ("axes", "pretrain.seed") if "pretrain.seed" in cfg.axes else next(
        (("cells", i, "set", "pretrain.seed") for i, c in enumerate(cfg.cells) if "pretrain.seed" in c.set), None)
    if at is not None:
        raise ConfigError("pretrain.seed is set by pretrain_seeds; drop it here or drop pretrain_seeds",
                          *source.where(at), "pretrain.seed")


def _check_robustness(cfg: SuiteConfig, cells: list[Cell], source: Source, tasks: dict[str, TaskSpec]) -> Cell | None:
    """The robustness section fits the suite (robustness.check_robustness); returns its generator cell."""
    try:
        return check_robustness(cfg.robustness, cells, {name: spec.kind for name, spec in tasks.items()})
    except RobustnessError as e:
        raise ConfigError(str(e), *source.where(("robustness", e.field)), f"robustness.{e.field}") from None


def _check_tasks(cfg: SuiteConfig, source: Source) -> dict[str, TaskSpec]:
    """Resolve task names (built-in and the suite's custom tasks) once, at load time: the spec of every task of the
    suite, in its order. Custom tasks are the suite's own: the global TASKS registry is never changed."""
    custom = {}
    for i, d in enumerate(cfg.custom_tasks):
        try:
            spec = task_from_dict(d)
        except ValidationError as e:
            _raise_validation(e, source, SuiteConfig, ("custom_tasks", i))
        if spec.name in custom or (spec.name in TASKS and TASKS.get(spec.name) != spec):
            file, line = source.where(("custom_tasks", i, "name"))
            what = "another custom task" if spec.name in custom else "a built-in task"
            raise ConfigError(f"task name '{spec.name}' is already used by {what}", file, line,
                              f"custom_tasks.{i}.name")
        custom[spec.name] = spec
    known = [*TASKS.names(), *custom]
    for i, name in enumerate(cfg.table.columns or []):
        if name not in cfg.tasks:
            file, line = source.where(("table", "columns", i))
            raise ConfigError(f"column '{name}' is not one of the suite's tasks{did_you_mean(name, cfg.tasks)}",
                              file, line, f"table.columns[{i}]")
    for i, name in enumerate(cfg.tasks):
        if name not in known:
            file, line = source.where(("tasks", i))
            raise ConfigError(f"unknown task '{name}'{did_you_mean(name, known)}; known: {', '.join(known)}",
                              file, line, f"tasks[{i}]")
    return {name: custom[name] if name in custom else TASKS.get(name) for name in cfg.tasks}


def _check_table(cfg: SuiteConfig, cells: list[Cell], source: Source, tasks: dict[str, TaskSpec]) -> None:
    """The `table:` section names rows, columns, metrics and cells the suite has (claims.check_table)."""
    try:
        check_table(cfg, cells, tasks)
    except TableError as e:
        raise ConfigError(str(e), *source.where(e.at), e.field) from None
