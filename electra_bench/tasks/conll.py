"""CoNLL-format tagging tasks: the `conll` reader and the CoNLL-2003 English NER spec.

Format (shared/data/README.md §1): one token per line, whitespace-separated columns (CoNLL-2003: token POS chunk
NER), sentences separated by blank lines, documents opened by a `-DOCSTART-` line that is not a sentence.
The token and tag columns are positions (`text_columns[0]`, `label_column`), so another CoNLL-style NER set
(e.g. two columns token/tag) is a configuration entry.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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

DOCSTART = "-DOCSTART-"


def read_conll(spec: TaskSpec, split: str, path: Path) -> Iterator[Row]:
    """Sentences of a CoNLL file as {tokens, tags}; DataError names file and line of any bad line."""
    layout = spec.layout(split)
    tokens: list[str] = []
    tags: list[int] = []
    n_columns = first_number = 0  # fixed by the first token line; every token line must match it
    token_at = tag_at = None
    sentences = 0
    for number, line in iter_lines(path):
        cells = line.split()
        if not cells or cells[0] == DOCSTART:
            if tokens:
                sentences += 1
                yield {"tokens": tokens, "tags": tags}
                tokens, tags = [], []
            continue
        if not n_columns:
            n_columns, first_number = len(cells), number
            token_at = column_index(layout.text_columns[0], None, n_columns, path, number)
            if layout.label_column is not None:
                tag_at = column_index(layout.label_column, None, n_columns, path, number)
        elif len(cells) != n_columns:
            raise DataError(f"{path}:{number}: expected {n_columns} columns (as on line {first_number}), "
                            f"found {len(cells)}")
        tokens.append(cells[token_at])
        tags.append(-1 if tag_at is None else label_id(spec, cells[tag_at], path, number))
    if tokens:
        sentences += 1
        yield {"tokens": tokens, "tags": tags}
    if sentences == 0:
        raise DataError(f"{path}: no sentences (empty file)")


FORMATS.register("conll", read_conll)

CONLL2003 = TaskSpec(
    name="conll2003", kind="tagging", format="conll", path="conll2003",
    # validation.txt is eng.testa (the dev set), test.txt eng.testb (README §1).
    files={"train": "train.txt", "dev": "validation.txt", "test": "test.txt"},
    header=False, text_columns=(0,), label_column=3,  # token POS chunk NER
    # IOB2 tag set in the order of the HF conll2003 ClassLabel (README §1), so hub ids and ours agree.
    labels=("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"),
    # Entity-level micro F1, conlleval-compatible (metrics.NER_METRIC_MODE; reference §12.2).
    metrics=("entity_f1", "entity_precision", "entity_recall"), headline="entity_f1",
    epochs=3,  # no NER in the paper; Table 7's "3 for the rest"
    hub={"path": "eriktks/conll2003", "name": None, "text_columns": ["tokens"], "label_column": "ner_tags",
         "splits": {"dev": "validation"}},
)
register_task(CONLL2003)
