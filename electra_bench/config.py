"""Suite loading: YAML with file:line errors, `extends` deep-merge, `--set` overrides, full validation.

Nothing runs before the whole suite is valid: every cell (cells x axes) is resolved into a `RunConfig` here, so a
bad axis value fails at `validate` time with the file, line and dotted path of the field.
YAML is read with `yaml.SafeLoader` only: no object construction, no import paths, no code from config.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from .registry import did_you_mean
from .schema import RunConfig, SuiteConfig

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
            if not isinstance(key, yaml.ScalarNode):
                raise ConfigError("a key must be a plain name, not a list or mapping", file, key.start_mark.line + 1,
                                  ".".join(str(p) for p in prefix) or None)
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


# Limits checked before a YAML document is composed (issue #17): a few hundred bytes of anchors and aliases, or a
# few KB of nested brackets, must not cost gigabytes or the recursion limit. The largest suite shipped is ~3 KB.
MAX_YAML_BYTES = 128 * 1024  # a suite file (or a --set value) larger than this is refused unread
MAX_YAML_DEPTH = 32  # nested mappings / sequences
MAX_YAML_NODES = 20_000  # scalars and collections, counting every alias as the copy of its anchor it stands for


def _check_limits(text: str, file: str) -> None:
    """Walk the parse events (libyaml, no document built) and refuse deep nesting, alias bombs, recursive aliases."""
    sizes: dict[str, int] = {}  # anchor -> expanded node count
    stack: list[list] = [[None, 0]]  # open collections: [anchor, nodes so far]
    total = 0
    for ev in yaml.parse(text, Loader=_Loader):
        line = ev.start_mark.line + 1
        if isinstance(ev, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            stack.append([ev.anchor, 0])
            if len(stack) - 1 > MAX_YAML_DEPTH:
                raise ConfigError(f"nested deeper than {MAX_YAML_DEPTH} levels", file, line)
            continue
        if isinstance(ev, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            anchor, n = stack.pop()
            n += 1
            if anchor is not None:
                sizes[anchor] = n
        elif isinstance(ev, yaml.ScalarEvent):
            n = 1
            if ev.anchor is not None:
                sizes[ev.anchor] = 1
        elif isinstance(ev, yaml.AliasEvent):
            if ev.anchor not in sizes:
                if any(a == ev.anchor for a, _ in stack):
                    raise ConfigError(f"recursive alias *{ev.anchor} (an anchor used inside itself)", file, line)
                raise ConfigError(f"YAML syntax error: found undefined alias '{ev.anchor}'", file, line)
            n = sizes[ev.anchor]
        else:
            continue
        stack[-1][1] += n
        total += 1 if isinstance(ev, (yaml.SequenceEndEvent, yaml.MappingEndEvent)) else n  # children counted
        if total > MAX_YAML_NODES:
            raise ConfigError(f"expands to more than {MAX_YAML_NODES} values (aliases counted as the copies they "
                              f"make); a suite needs far fewer", file, line)


def load_yaml(text: str, file: str) -> tuple[Any, yaml.Node | None]:
    """The one YAML reader of the harness (suites, parents, `--set` values): size, nesting and alias-expansion
    limits first, then a safe load (no tags that construct objects); returns (data, node) or raises ConfigError."""
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(f"{len(text)} characters: larger than the {MAX_YAML_BYTES // 1024} KiB a suite may be",
                          file)
    try:
        _check_limits(text, file)
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"YAML syntax error: {problem}", file, mark.line + 1 if mark else None) from None
    return data, node


def _read_yaml(path: Path) -> tuple[dict, dict]:
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise ConfigError(f"{size} bytes: larger than the {MAX_YAML_BYTES // 1024} KiB a suite may be",
                              str(path))
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
    data, node = load_yaml(text, str(path))
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
        value = load_yaml(raw, "--set")[0] if raw.strip() else ""
    except ConfigError as e:
        if not e.message.startswith("YAML syntax error"):
            raise  # a limit: too large, too deep, an alias bomb
        value = raw
    path = tuple(key.strip().split("."))
    if path[0] in RUN_SECTIONS:  # run-config paths are the single addressing scheme: they mean `base.<path>`
        path = ("base", *path)
    return path, value


def _set_path(data: dict, path: tuple, value: Any) -> dict:
    data = dict(data)
    head, *rest = path
    data[head] = _set_path(data.get(head) if isinstance(data.get(head), dict) else {}, tuple(rest), value) \
        if rest else value
    return data


class _Loader(yaml.CSafeLoader if getattr(yaml, "__with_libyaml__", False) else yaml.SafeLoader):
    """SafeLoader (no object construction; libyaml's parser when PyYAML has it: ~4x faster) that also reads
    unquoted `1e-4` as a float, as YAML 1.2 does.

    YAML 1.1 needs a dot (`1.0e-4`); quoted strings stay strings."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
                              list("-+0123456789."))


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
    first = err.errors()[0]
    loc = tuple(first["loc"])
    dotted = ".".join(str(p) for p in (*prefix, *loc) if not str(p).startswith("function-"))
    if at is not None and at[0] in ("axes", "cells"):
        dotted = str(at[-1])  # the axis / set path the user wrote
    file, line = source.where(at if at is not None else (*prefix, *loc))
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        holder = _model_at(model, loc[:-1]) if len(loc) > 1 else model
        known = list(holder.model_fields) if holder else []
        msg = f"unknown key '{loc[-1]}'{did_you_mean(str(loc[-1]), known)}"
    elif "input" in first and first["type"] not in ("missing",) and not isinstance(first["input"], dict):
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

    @property
    def run_label(self) -> str:
        """The label of this cell's MLflow run and units: `<label>/pretrain_seed<k>` for a pretraining-seed copy."""
        return self.label if self.pretrain_seed is None else f"{self.label}/pretrain_seed{self.pretrain_seed}"


@dataclass
class Suite:
    config: SuiteConfig
    cells: list[Cell]
    path: Path
    source: Source


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
                data = _set_path(data, path, value)
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
                              pretrain_seeds=None if seeds is None else tuple(seeds)))
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
        data = _set_path(data, key, value)
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
        data = _set_path(data, key, value)
        for n in range(1, len(key)):
            source.lines.setdefault(key[:n], ("--set", None))
        source.replaced(key, ("--set", None))
    try:
        cfg = SuiteConfig.model_validate(data)
    except ValidationError as e:
        _raise_validation(e, source, SuiteConfig)
    formats = _check_tasks(cfg, source)
    if cfg.pretrain_seeds is not None or any(c.pretrain_seeds is not None for c in cfg.cells):
        _check_pretrain_seeds(cfg, source)
    cells = _expand_cells(cfg, source)
    _check_table(cfg, cells, source, formats)
    if cfg.robustness is not None:
        _check_robustness(cfg, cells, source)
    if cfg.search is not None:
        _check_search(cfg, cells, source, formats)
    return Suite(config=cfg, cells=cells, path=path, source=source)


def _check_search(cfg: SuiteConfig, cells: list[Cell], source: Source, formats: dict[str, str]) -> None:
    """The `search:` block as `search` will use it: the objective names a suite task (or glue, with GLUE tasks),
    every space path is a run setting, and every end of its range (each choice) gives a valid run config for the
    trial's cell (the first), so no trial fails on a value the study was told to try."""
    search = cfg.search

    def fail(msg: str, at: tuple, dotted: str) -> None:
        raise ConfigError(msg, *source.where(("search", *at)), f"search.{dotted}")

    objectives = [*cfg.tasks, *(["glue"] if "glue_tsv" in formats.values() else [])]
    if search.objective not in objectives:
        fail(f"objective '{search.objective}' is not one of the suite's tasks{_near(search.objective, objectives)}; "
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
                RunConfig.model_validate(_set_path(base, tuple(path.split(".")), value))
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


def _check_robustness(cfg: SuiteConfig, cells: list[Cell], source: Source) -> None:
    from .robustness import RobustnessError, check
    from .tasks import TASKS, task_from_dict

    custom = {d["name"]: task_from_dict(d).kind for d in cfg.custom_tasks}  # valid: _check_tasks ran
    try:
        check(cfg, cells, {t: custom[t] if t in custom else TASKS.get(t).kind for t in cfg.tasks})
    except RobustnessError as e:
        raise ConfigError(str(e), *source.where(("robustness", e.field)), f"robustness.{e.field}") from None


def _check_tasks(cfg: SuiteConfig, source: Source) -> dict[str, str]:
    """Resolve task names (built-in and the suite's custom tasks); returns the format of every task of the suite."""
    from .tasks import TASKS, task_from_dict  # registries resolved once, at load time

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
    from .tables import _PLOT_KEYS
    for i, plot in enumerate(cfg.table.plots):
        for key in plot:
            if key not in _PLOT_KEYS:
                file, line = source.where(("table", "plots", i, key))
                raise ConfigError(f"unknown key '{key}'{did_you_mean(key, _PLOT_KEYS)}", file, line,
                                  f"table.plots.{i}.{key}")
    for i, name in enumerate(cfg.tasks):
        if name not in known:
            file, line = source.where(("tasks", i))
            raise ConfigError(f"unknown task '{name}'{did_you_mean(name, known)}; known: {', '.join(known)}",
                              file, line, f"tasks[{i}]")
    return {name: (custom[name] if name in custom else TASKS.get(name)).format for name in cfg.tasks}


def _near(name: Any, choices: list[str]) -> str:
    """did_you_mean, also across case: a reference column 'glue' is the table's 'GLUE' column."""
    same = [c for c in choices if c.lower() == str(name).lower()]
    return f" (did you mean '{same[0]}'?)" if same else did_you_mean(str(name), choices)


def _unknown_metric(metric: Any, metrics: list[str]) -> str:
    return f"metric {metric!r} is not one of {', '.join(metrics)}{_near(metric, metrics)}"


def _check_table(cfg: SuiteConfig, cells: list[Cell], source: Source, formats: dict[str, str]) -> None:
    """Reference numbers, plots and claims name rows, columns and metrics exactly as tables.py resolves them when
    it renders (a record's cell is its cell's label), so a typo fails here and not after the training."""
    from .results import CellInfo
    from .tables import GLUE, resolve_spec, show_glue

    table, labels = cfg.table, [c.label for c in cells]
    columns = list(table.columns or cfg.tasks)  # the spec runner.table_spec builds (it drops an empty glue list)
    glue_tsv = [c for c in columns if formats[c] == "glue_tsv"] or None
    glue = resolve_spec({"columns": columns, "glue_tasks": glue_tsv}, [])["glue_tasks"]
    shown = [*columns, *([GLUE] if show_glue(glue, table.reference) else []), *table.extra]
    metrics = [*cfg.tasks, *(["glue"] if glue else [])]  # results._Scores: a task with records, or "glue"

    def fail(msg: str, at: tuple, dotted: str) -> None:
        raise ConfigError(msg, *source.where(("table", *at)), f"table.{dotted}")

    for row, ref in table.reference.items():
        if row not in labels:
            fail(f"row '{row}' is not a cell label{_near(row, labels)}; cells: {', '.join(labels)}",
                 ("reference", row), f"reference[{row!r}]")
        for col in ref:
            if col not in shown:
                fail(f"'{col}' is not a column of the table{_near(col, shown)}; columns: {', '.join(shown)}",
                     ("reference", row, col), f"reference[{row!r}].{col}")
    for i, plot in enumerate(table.plots):
        if plot.get("metric") not in metrics:
            fail(_unknown_metric(plot.get("metric"), metrics), ("plots", i, "metric"), f"plots[{i}].metric")
    infos = {c.label: CellInfo(c.label, c.label, c.axes) for c in cells}
    for i, claim in enumerate(table.claims):
        for at, sel, one in _claim_selectors(claim, metrics, fail, i, cfg):
            if problem := _selector_problem(sel, infos, cfg.axes, one):
                fail(problem, ("claims", i, *at), f"claims[{i}].{at[0]}" + (f"[{at[1]}]" if len(at) > 1 else ""))


def _claim_selectors(claim: dict, metrics: list[str], fail, i: int, cfg: SuiteConfig) -> list[tuple[tuple, Any, bool]]:
    """Check a claim's keys and metric as results.evaluate_claims reads them; return its cell selectors as
    (where in the claim, selector, whether it must pick exactly one cell). With `task:`, the metric is one the
    fine-tunes of that task record (the robustness metrics, robustness.py), judged as the headline would be."""
    from .results import _BEST_KEYS, _PAIR_KEYS

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
    keys, known = set(claim), sorted(_PAIR_KEYS | _BEST_KEYS | {"task"})
    for key in sorted(keys - set(known), key=str):
        fail(f"unknown key '{key}'{_near(key, known)}", ("claims", i, key), f"claims[{i}].{key}")
    pairwise = keys == _PAIR_KEYS
    if not pairwise and keys not in (_BEST_KEYS, _BEST_KEYS - {"metric"}):
        fail(f"a claim has the keys {sorted(_PAIR_KEYS)} or {sorted(_BEST_KEYS)} (metric optional), not "
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
    one, as results.select_cells will pick from the records; None when it does."""
    from .results import select_cells

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
