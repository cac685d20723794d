"""GLUE-format TSV tasks: the `glue_tsv` reader and the nine GLUE task specs.

Files are the ones written by the GLUE download script (shared/data/README.md §2): tab-separated UTF-8, read
without quote handling because sentences contain unbalanced `"` (csv.QUOTE_NONE), MRPC's header starts with a
BOM (stripped by `iter_lines`), CoLA train/dev have no header. Column names below are the real headers.
GLUE test labels are withheld (scored by the leaderboard server), so every `test*` split is unlabeled.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from electra_bench.tasks.base import (
    FORMATS,
    DataError,
    Row,
    TaskSpec,
    column_index,
    iter_lines,
    label_id,
    register_task,
)

if TYPE_CHECKING:  # annotations only: the import is deferred to the functions that compute
    import datasets


def read_glue_tsv(spec: TaskSpec, split: str, path: Path) -> Iterator[Row]:
    """Rows of a GLUE TSV as {text_a[, text_b], label}; DataError names file and line of any bad row."""
    layout = spec.layout(split)
    lines = ((n, line) for n, line in iter_lines(path) if line.strip())  # blank lines (e.g. at EOF) carry nothing
    first = next(lines, None)
    if first is None:
        raise DataError(f"{path}: empty file")
    first_number, first_line = first
    names = first_line.split("\t") if layout.header else None
    n_columns = len(first_line.split("\t"))
    wanted = [*layout.text_columns, *([] if layout.label_column is None else [layout.label_column])]
    positions = [column_index(c, names, n_columns, path, first_number) for c in wanted]
    text_positions, label_position = positions[:len(layout.text_columns)], positions[len(layout.text_columns):]
    if not layout.header:
        lines = _chain(first, lines)
    count = 0
    for number, line in lines:
        cells = line.split("\t")
        if len(cells) != n_columns:
            raise DataError(f"{path}:{number}: expected {n_columns} tab-separated columns "
                            f"(as on line {first_number}), found {len(cells)}")
        row: Row = dict(zip(("text_a", "text_b"), (cells[i] for i in text_positions)))
        row["label"] = label_id(spec, cells[label_position[0]].strip(), path, number) if label_position else -1
        count += 1
        yield row
    if count == 0:
        raise DataError(f"{path}: no data rows")


def _chain(first: tuple[int, str], rest: Iterator[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    yield first
    yield from rest


FORMATS.register("glue_tsv", read_glue_tsv)


def both_orders(ds: datasets.Dataset) -> datasets.Dataset:
    """Training data with every pair also as (text_b, text_a): GR `double_unordered` for `symmetric` tasks."""
    import datasets  # deferred: ~2 s to import (pyarrow, pandas); `validate` and `plan` load no data

    swapped = ds.rename_columns({"text_a": "_b", "text_b": "_a"}).rename_columns({"_a": "text_a", "_b": "text_b"})
    return datasets.concatenate_datasets([ds, swapped.select_columns(ds.column_names)])


def _glue(name: str, folder: str, text: list[Any], label: Any, labels: list[str], **extra: Any) -> dict[str, Any]:
    """A GLUE task dict; `extra` overrides. Hub configs are the HF GLUE names (nyu-mll/glue), dev -> validation."""
    spec: dict[str, Any] = {
        "name": name, "kind": "classification", "format": "glue_tsv", "path": f"glue/{folder}",
        "files": {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}, "text_columns": text,
        "label_column": label, "unlabeled_splits": ["test"], "labels": labels,
        # Paper §3.1: accuracy is the headline for every task but CoLA (MCC) and STS-B (Spearman).
        "metrics": ["accuracy"], "headline": "accuracy",
        "hub": {"path": "nyu-mll/glue", "name": name, "splits": {"dev": "validation"}},
        "glue": True,  # in the paper's GLUE score (§3.1); WNLI sets it False
    }
    return {**spec, **extra}


BINARY = ["0", "1"]
ENTAILMENT = ["entailment", "not_entailment"]

GLUE_TASKS = [
    # CoLA train/dev: no header, columns source, label, original judgement, sentence; test: header `index sentence`.
    _glue("cola", "CoLA", [3], 1, BINARY, header=False, metrics=["mcc"], headline="mcc",
          split_layouts={"test": {"header": True, "text_columns": ["sentence"]}},
          hub={"path": "nyu-mll/glue", "name": "cola", "splits": {"dev": "validation"},
               "text_columns": ["sentence"]}),
    _glue("sst2", "SST-2", ["sentence"], "label", BINARY),
    # MRPC/QQP: the leaderboard also reports F1 of class 1 (GLUE paper §3.4); GR trains MRPC both ways (§7.2).
    _glue("mrpc", "MRPC", ["#1 String", "#2 String"], "Quality", BINARY, metrics=["accuracy", "f1"],
          symmetric=True, hub={"path": "nyu-mll/glue", "name": "mrpc", "splits": {"dev": "validation"},
                               "text_columns": ["sentence1", "sentence2"]}),
    # STS-B: regression on the 0-5 score; Spearman headline (Paper §3.1); 10 epochs (Table 7); both orders (GR).
    _glue("stsb", "STS-B", ["sentence1", "sentence2"], "score", [], kind="regression",
          metrics=["spearman", "pearson"], headline="spearman", epochs=10, symmetric=True),
    _glue("qqp", "QQP", ["question1", "question2"], "is_duplicate", BINARY, metrics=["accuracy", "f1"]),
    # MNLI: matched and mismatched dev/test sets; label order as in GR's MNLI task; hub names premise/hypothesis.
    _glue("mnli", "MNLI", ["sentence1", "sentence2"], "gold_label", ["contradiction", "entailment", "neutral"],
          files={"train": "train.tsv", "dev_matched": "dev_matched.tsv", "dev_mismatched": "dev_mismatched.tsv",
                 "test_matched": "test_matched.tsv", "test_mismatched": "test_mismatched.tsv"},
          unlabeled_splits=["test_matched", "test_mismatched"],
          hub={"path": "nyu-mll/glue", "name": "mnli", "text_columns": ["premise", "hypothesis"],
               "splits": {"dev_matched": "validation_matched", "dev_mismatched": "validation_mismatched"}}),
    _glue("qnli", "QNLI", ["question", "sentence"], "label", ENTAILMENT),
    _glue("rte", "RTE", ["sentence1", "sentence2"], "label", ENTAILMENT, epochs=10),  # Table 7: 10 epochs
    # WNLI: not in the paper's GLUE average (Paper §3.1) but on the leaderboard.
    _glue("wnli", "WNLI", ["sentence1", "sentence2"], "label", BINARY, glue=False),
]

for _task in GLUE_TASKS:
    register_task(TaskSpec.model_validate(_task))
