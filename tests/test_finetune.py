"""Fine-tuning pieces on hand-built data: batching, prediction mapping, degenerate flags, submission files."""
from __future__ import annotations

import datasets
import numpy as np

from electra_bench.finetune import degenerate, length_grouped_batches, write_predictions
from electra_bench.tasks import TASKS


def test_length_grouped_batches_cover_every_example_once():
    lengths = list(np.random.default_rng(0).integers(3, 60, size=203))
    batches = length_grouped_batches(lengths, 16, np.random.default_rng(1))
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(203))
    assert all(len(b) <= 16 for b in batches)
    # grouped: inside a batch lengths are close (sorted within mega-batches)
    spread = np.mean([max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches])
    assert spread < 15


def test_eval_batches_are_sorted_and_deterministic():
    lengths = [5, 1, 9, 3]
    assert [b.tolist() for b in length_grouped_batches(lengths, 2, None)] == [[1, 3], [0, 2]]


def test_degenerate_flags_one_class_and_constant_regression():
    assert degenerate(TASKS.get("sst2"), [1, 1, 1])
    assert not degenerate(TASKS.get("sst2"), [1, 0, 1])
    assert degenerate(TASKS.get("stsb"), [2.5, 2.5])
    ner = TASKS.get("conll2003")
    o = ner.labels.index("O")
    assert degenerate(ner, [[o, o], [o]])
    assert not degenerate(ner, [[o, ner.labels.index("B-PER")]])


def test_glue_submission_format(tmp_path):
    rte = TASKS.get("rte")
    ds = datasets.Dataset.from_dict({"text_a": ["a", "b"], "text_b": ["c", "d"], "label": [-1, -1]})
    path = write_predictions(rte, ds, [0, 1], tmp_path / "rte.tsv")
    assert path.read_text() == "index\tprediction\n0\tentailment\n1\tnot_entailment\n"
    stsb = TASKS.get("stsb")
    path = write_predictions(stsb, ds, [5.7, -0.2], tmp_path / "stsb.tsv")
    assert path.read_text().splitlines()[1:] == ["0\t5.000", "1\t0.000"]


def test_conll_prediction_columns(tmp_path):
    ner = TASKS.get("conll2003")
    lab = ner.labels.index
    ds = datasets.Dataset.from_dict({"tokens": [["Alice", "ran"]], "tags": [[lab("B-PER"), lab("O")]]})
    path = write_predictions(ner, ds, [[lab("B-PER"), lab("B-LOC")]], tmp_path / "ner.txt")
    assert path.read_text() == "Alice B-PER B-PER\nran O B-LOC\n\n"


def test_tracking_urls_are_masked():
    from electra_bench.tracking import mask_credentials

    assert mask_credentials("postgresql://bench:s3cret@db:5432/mlflow") == "postgresql://bench:***@db:5432/mlflow"
    assert mask_credentials("sqlite:////work/mlflow.db") == "sqlite:////work/mlflow.db"
