"""Task specs as data, the task registry, and `load_split` (local files first, Hugging Face hub as fallback).

A task is one `TaskSpec` (DESIGN.md principle 5): where its files are, which columns hold text and label, its
label set, metrics, headline metric and default epochs. Built-ins register in `glue.py` and `conll.py`; a suite
adds a new GLUE-format TSV task or CoNLL-format NER set with `register_task(task_from_dict(d))`, no code change.

Dataset conventions produced by `load_split`:
- classification: `text_a` str, `text_b` str (only for two-text tasks), `label` ClassLabel index into `labels`;
- regression: same text columns, `label` float32;
- tagging: `tokens` list[str], `tags` list[ClassLabel] into `labels` (the tag set).
Unlabeled splits (GLUE test) carry label -1 (tags all -1).
"""
from __future__ import annotations

import codecs
import gzip
import os
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from electra_bench.metrics import METRICS, TaskKind
from electra_bench.paths import check_name
from electra_bench.registry import Registry, UnknownName

if TYPE_CHECKING:  # annotations only: the import is deferred to the functions that compute
    import datasets

Column = str | int  # a header name, or a 0-based position (negative counts from the end) for header-less files


class DataError(Exception):
    """Task data that is missing or malformed; the message names the file (and line) and the problem."""


class ItemError(ValueError):
    """A field validator's error about one item of its field: `at` extends the error's location (`metrics` ->
    `metrics.1`), which config.py reads to name the item's line in the suite."""

    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.at = (index,)


class SplitLayout(BaseModel):
    """Column layout of one split's file, for splits whose file differs from the task's other files."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    header: bool
    text_columns: tuple[Column, ...] = Field(min_length=1, max_length=2)
    label_column: Column | None = None


class HubSource(BaseModel):
    """Where to find the task on the Hugging Face hub when the local file is missing."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str  # dataset repo, e.g. "nyu-mll/glue"
    name: str | None = None  # config name, e.g. "sst2"
    splits: dict[str, str] = {}  # our split name -> hub split name; unmapped names are used as they are
    text_columns: tuple[str, ...] | None = None  # hub text columns; None: the task's own text column names
    label_column: str = "label"

    @model_validator(mode="before")
    @classmethod
    def _from_pair(cls, data: Any) -> Any:
        # Short form in configs: ["eriktks/conll2003", null] == {path: ..., name: ...}.
        if isinstance(data, (list, tuple)):
            if len(data) != 2:
                raise ValueError("hub as a list must be [dataset path, config name]")
            return {"path": data[0], "name": data[1]}
        return data


class TaskSpec(BaseModel):
    """One task, as data. Field comments give the source of each built-in choice."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    kind: TaskKind
    format: Literal["glue_tsv", "conll"]
    path: str  # folder relative to the data root, e.g. "glue/SST-2", "conll2003"
    files: dict[str, str] = Field(min_length=1)  # split name -> file name (".gz" files are read as gzip)
    header: bool = True  # whether the files start with a header line (CoLA train/dev have none)
    text_columns: tuple[Column, ...] = Field(min_length=1, max_length=2)  # text_a[, text_b]; CoNLL: token column
    label_column: Column | None  # None: no split has labels (e.g. GLUE diagnostic); CoNLL: the tag column
    split_layouts: dict[str, SplitLayout] = {}  # per-split layout overrides (CoLA test has a header)
    unlabeled_splits: tuple[str, ...] = ()  # splits whose labels are withheld (GLUE test): label -1
    labels: tuple[str, ...] = ()  # class names in id order; tag set for tagging; empty for regression
    metrics: tuple[str, ...] = Field(min_length=1)  # names in electra_bench.metrics.METRICS
    headline: str  # the paper's metric for this task (Paper §3.1)
    epochs: int = Field(3, ge=1)  # Paper Table 7: 3, except RTE and STS-B 10
    symmetric: bool = False  # train on (a, b) and (b, a): GR `double_unordered` for MRPC/STS-B (ref §7.2)
    hub: HubSource | None = None
    # Averaged into the table's GLUE score: the paper's eight dev tasks (Paper §3.1: all of GLUE but WNLI). A custom
    # task is not, unless its definition says so. Presentation only: not part of a run key (suite.finetune_key).
    glue: bool = False
    version: str = "1"  # bump when loading or the files change meaning: part of the data cache key and run key

    @field_validator("name")
    @classmethod
    def _path_safe(cls, v: str) -> str:
        return check_name(v)  # prediction files and caches are named after the task

    @field_validator("metrics")
    @classmethod
    def _metrics_fit(cls, metrics: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        # Each metric is registered and can score this kind of task with this many labels, as the metric itself
        # declares (Metric.misfit): a 3-class task listing binary `f1` fails here, when its suite is loaded, not at
        # the end of its first fine-tune. `kind` and `labels` come first in the class, so they are validated here
        # (absent when invalid: that error is reported instead).
        kind, labels = info.data.get("kind"), info.data.get("labels")
        for i, name in enumerate(metrics):
            if name not in METRICS:
                raise ItemError(i, str(UnknownName("metric", name, METRICS.names())))
            if kind is not None and labels is not None and (why := METRICS.get(name).misfit(kind, len(labels))):
                raise ItemError(i, why)
        return metrics

    @model_validator(mode="after")
    def _check(self) -> TaskSpec:
        if self.headline not in self.metrics:
            raise ValueError(f"headline '{self.headline}' is not one of the task's metrics {list(self.metrics)}")
        if self.kind == "regression" and self.labels:
            raise ValueError("a regression task has no labels")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels are not unique: {list(self.labels)}")
        if self.kind == "classification" and len(self.labels) < 2:
            raise ValueError("a classification task needs at least 2 labels")
        if self.kind == "tagging" and not self.labels:
            raise ValueError("a tagging task needs its tag set in labels")
        if self.hub and self.hub.text_columns is None and not all(isinstance(c, str) for c in self.text_columns):
            raise ValueError("hub.text_columns is needed when the task's text columns are positions")
        if (self.format == "conll") != (self.kind == "tagging"):
            raise ValueError(f"format '{self.format}' does not fit kind '{self.kind}' (conll <-> tagging)")
        if self.symmetric and len(self.text_columns) != 2:
            raise ValueError("symmetric needs two text columns")
        for split in [*self.split_layouts, *self.unlabeled_splits]:
            if split not in self.files:
                raise ValueError(f"split '{split}' is not in files {list(self.files)}")
        for split in self.files:
            self._check_layout(split, self.layout(split))
        return self

    def _check_layout(self, split: str, layout: SplitLayout) -> None:
        columns = [*layout.text_columns, *([] if layout.label_column is None else [layout.label_column])]
        if not layout.header and any(isinstance(c, str) for c in columns):
            raise ValueError(f"split '{split}': a file without header needs integer column positions, got {columns}")
        if len(layout.text_columns) != len(self.text_columns):
            raise ValueError(f"split '{split}': {len(layout.text_columns)} text columns, task has "
                             f"{len(self.text_columns)}")
        if self.format == "conll" and (layout.header or len(layout.text_columns) != 1):
            raise ValueError("conll files have no header (set header: false) and exactly one token column")

    def layout(self, split: str) -> SplitLayout:
        """The resolved column layout of `split`; label_column is None when the split is unlabeled."""
        base = self.split_layouts.get(split) or SplitLayout(
            header=self.header, text_columns=self.text_columns, label_column=self.label_column)
        if split in self.unlabeled_splits:
            return base.model_copy(update={"label_column": None})
        return base

    @property
    def dev_splits(self) -> list[str]:
        """Dev splits in file order: `dev`, or e.g. MNLI's dev_matched (headline) and dev_mismatched."""
        return [s for s in self.files if s == "dev" or s.startswith("dev_")]

    def file_path(self, split: str, data_root: str | Path) -> Path:
        if split not in self.files:
            raise UnknownName(f"split of task '{self.name}'", split, list(self.files))
        return Path(data_root) / self.path / self.files[split]


TASKS: Registry[TaskSpec] = Registry("task")


def glue_tasks(specs: Iterable[TaskSpec]) -> list[str]:
    """The names of the tasks averaged into a GLUE score, in the given order: the one reader of `TaskSpec.glue`."""
    return [s.name for s in specs if s.glue]


def task_from_dict(d: dict[str, Any]) -> TaskSpec:
    """Validate a task definition (e.g. from a suite's YAML); raises pydantic.ValidationError."""
    return TaskSpec.model_validate(d)


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add a task to TASKS. Registering an identical spec again is a no-op (a suite may be loaded twice)."""
    if spec.name in TASKS:
        if TASKS.get(spec.name) == spec:
            return spec
        raise ValueError(f"task '{spec.name}' is already registered with a different definition")
    return TASKS.register(spec.name, spec)


def default_data_root() -> Path:
    """$ELECTRA_BENCH_DATA, else <repo>/data if it exists, else <repo>/../shared/data (may not exist)."""
    if os.environ.get("ELECTRA_BENCH_DATA"):
        return Path(os.environ["ELECTRA_BENCH_DATA"])
    repo = Path(__file__).resolve().parents[2]
    return repo / "data" if (repo / "data").is_dir() else repo.parent / "shared" / "data"


# --- reading files -------------------------------------------------------------------------------------------

Row = dict[str, Any]
Reader = Callable[[TaskSpec, str, Path], Iterator[Row]]  # (spec, split, file) -> rows in the column conventions
FORMATS: Registry[Reader] = Registry("task format")  # filled by glue.py ("glue_tsv") and conll.py ("conll")


def iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its line ending); strips a UTF-8 BOM; DataError on bad bytes/gzip."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            for number, raw in enumerate(f, 1):
                if number == 1 and raw.startswith(codecs.BOM_UTF8):  # MRPC's header (GLUE download script)
                    raw = raw[len(codecs.BOM_UTF8):]
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(f"{path}:{number}: invalid UTF-8 (byte 0x{raw[e.start]:02x} at column "
                                    f"{e.start + 1})") from None
                yield number, line.rstrip("\r\n")
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataError(f"{path}: not a valid gzip file ({e})") from None


def column_index(column: Column, names: list[str] | None, n_columns: int, path: Path, line: int) -> int:
    """Position of a column given by header name or by position; DataError when the file lacks it."""
    if isinstance(column, str):
        if names is None or column not in names:
            raise DataError(f"{path}:{line}: no column '{column}' in header {names}")
        return names.index(column)
    if not -n_columns <= column < n_columns:
        raise DataError(f"{path}:{line}: column position {column} needed, but the line has {n_columns} columns")
    return column % n_columns


def label_id(spec: TaskSpec, value: str, path: Path, line: int) -> int | float:
    """A label cell as stored: class/tag index, or the float score for regression."""
    if spec.kind == "regression":
        try:
            score = float(value)
        except ValueError:
            raise DataError(f"{path}:{line}: score '{value}' is not a number") from None
        if score != score or score in (float("inf"), float("-inf")):
            raise DataError(f"{path}:{line}: score '{value}' is not finite")
        return score
    try:
        return spec.labels.index(value)
    except ValueError:
        raise DataError(f"{path}:{line}: label '{value}' is not one of {list(spec.labels)}") from None


def features_for(spec: TaskSpec) -> datasets.Features:
    import datasets  # deferred: ~2 s to import (pyarrow, pandas); `validate` and `plan` load no data

    if spec.kind == "tagging":
        return datasets.Features({"tokens": datasets.List(datasets.Value("string")),
                                  "tags": datasets.List(datasets.ClassLabel(names=list(spec.labels)))})
    texts = {name: datasets.Value("string") for name in ("text_a", "text_b")[:len(spec.text_columns)]}
    label = datasets.Value("float32") if spec.kind == "regression" else datasets.ClassLabel(names=list(spec.labels))
    return datasets.Features({**texts, "label": label})


def _generate(spec_json: str, split: str, path: str, stamp: str) -> Iterator[Row]:
    # `stamp` (size, mtime) is unused here: it is in gen_kwargs so that the datasets cache key changes with the file.
    spec = TaskSpec.model_validate_json(spec_json)
    yield from FORMATS.get(spec.format)(spec, split, Path(path))


# --- load_split ----------------------------------------------------------------------------------------------

def load_split(spec: TaskSpec | str, split: str, data_root: str | Path | None = None, *,
               cache_dir: str | Path | None = None) -> datasets.Dataset:
    """One split of a task as a `datasets.Dataset` in the column conventions of this module's docstring.

    Local file `<data_root>/<spec.path>/<spec.files[split]>` first (parsed and validated once, then cached as
    Arrow by `datasets`, keyed by the spec and the file's size and mtime); if it is missing, the hub source when
    one is set and the hub is not switched off (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE); else DataError.
    """
    import datasets  # deferred: ~2 s to import (pyarrow, pandas); `validate` and `plan` load no data

    spec = TASKS.get(spec) if isinstance(spec, str) else spec
    spec_json = spec.model_dump_json()
    TaskSpec.model_validate_json(spec_json)  # a model_copy(update=...) skips validation; fail here, not mid-build
    path = spec.file_path(split, default_data_root() if data_root is None else data_root)
    if not path.is_file():
        return _load_from_hub(spec, split, path)
    stat = path.stat()
    if stat.st_size == 0:
        raise DataError(f"{path}: empty file (task '{spec.name}', split '{split}')")
    kwargs = {"spec_json": spec_json, "split": split, "path": str(path.resolve()),
              "stamp": f"{stat.st_size}:{stat.st_mtime_ns}"}
    try:
        return datasets.Dataset.from_generator(_generate, features=features_for(spec), gen_kwargs=kwargs,
                                               cache_dir=None if cache_dir is None else str(cache_dir))
    except datasets.exceptions.DatasetGenerationError as e:
        cause = e.__cause__ or e.__context__
        if isinstance(cause, DataError):
            raise DataError(f"{cause} (task '{spec.name}', split '{split}')") from None
        raise


def _hub_offline() -> str | None:
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
            return var
    return None


def _load_from_hub(spec: TaskSpec, split: str, local: Path) -> datasets.Dataset:
    import datasets  # deferred: ~2 s to import (pyarrow, pandas); `validate` and `plan` load no data

    missing = f"task '{spec.name}' split '{split}': local file {local} not found"
    if spec.hub is None:
        raise DataError(f"{missing}, and the task has no hub fallback; put the file there or set ELECTRA_BENCH_DATA")
    if offline := _hub_offline():
        raise DataError(f"{missing}; hub fallback {spec.hub.path} ({spec.hub.name}) is off because {offline} is set")
    hub_split = spec.hub.splits.get(split, split)
    try:
        raw = datasets.load_dataset(spec.hub.path, spec.hub.name, split=hub_split)
    except Exception as e:  # network, auth, missing split: all mean "no data", with the cause attached
        raise DataError(f"{missing}; hub fallback {spec.hub.path} ({spec.hub.name}) split '{hub_split}' failed: "
                        f"{type(e).__name__}: {e}") from e
    return raw.map(_hub_row_mapper(spec, raw.features), remove_columns=raw.column_names, features=features_for(spec))


def _hub_row_mapper(spec: TaskSpec, features: datasets.Features) -> Callable[[Row], Row]:
    hub = spec.hub
    text = hub.text_columns or tuple(str(c) for c in spec.text_columns)
    label_feature = features[hub.label_column]
    if spec.kind == "tagging":
        label_feature = label_feature.feature  # List(ClassLabel)
    to_ours = _hub_label_table(spec, label_feature) if spec.kind != "regression" else None

    def convert(value: Any) -> Any:
        if to_ours is None:
            return float(value)
        return -1 if value < 0 else to_ours[value]  # the hub marks withheld GLUE test labels with -1

    def row(example: Row) -> Row:
        if spec.kind == "tagging":
            return {"tokens": example[text[0]], "tags": [convert(t) for t in example[hub.label_column]]}
        texts = dict(zip(("text_a", "text_b"), (example[c] for c in text)))
        return {**texts, "label": convert(example[hub.label_column])}

    return row


def _hub_label_table(spec: TaskSpec, feature: Any) -> list[int]:
    """Hub class id -> our label id, matched by class name (MNLI's order differs), else by the id itself ("0"/"1")."""
    import datasets  # deferred: ~2 s to import (pyarrow, pandas); `validate` and `plan` load no data

    if not isinstance(feature, datasets.ClassLabel):
        raise DataError(f"task '{spec.name}': hub column '{spec.hub.label_column}' is not a class label ({feature})")
    table = []
    for i, name in enumerate(feature.names):
        ours = name if name in spec.labels else str(i)
        if ours not in spec.labels:
            raise DataError(f"task '{spec.name}': hub label {i} '{name}' matches none of {list(spec.labels)}")
        table.append(spec.labels.index(ours))
    return table
