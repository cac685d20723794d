"""Tasks: the spec contract over every registered task, loading each file format, every DataError case,
a task added by configuration alone, hub-fallback mapping (hub mocked), and, where the real data is present,
row counts of each local dev split against shared/data/README.md."""
import gzip
import typing
from pathlib import Path

import datasets
import pytest
from pydantic import ValidationError

from electra_bench.metrics import METRICS
from electra_bench.registry import UnknownName
from electra_bench.tasks import (
    FORMATS,
    TASKS,
    DataError,
    TaskSpec,
    both_orders,
    default_data_root,
    load_split,
    register_task,
    task_from_dict,
)

FIXTURES = Path(__file__).parent / "fixtures" / "tasks"
# Paper Table 7: 10 epochs for RTE and STS-B, 3 for the rest (NER takes "the rest").
PAPER_EPOCHS = {"rte": 10, "stsb": 10}
PAPER_HEADLINE = {"cola": "mcc", "stsb": "spearman", "conll2003": "entity_f1"}  # accuracy otherwise (Paper §3.1)


@pytest.fixture
def load(tmp_path, monkeypatch):
    """load_split with a private datasets cache and the hub switched off."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def _load(spec, split, root=FIXTURES):
        return load_split(spec, split, root, cache_dir=tmp_path / "hf-cache")

    return _load


# --- contract over the registry --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", TASKS.names())
def test_task_contract(name):
    spec = TASKS.get(name)
    assert spec.name == name
    assert spec.headline in spec.metrics and all(m in METRICS for m in spec.metrics)
    assert spec.headline == PAPER_HEADLINE.get(name, "accuracy")
    assert spec.epochs == PAPER_EPOCHS.get(name, 3)
    assert spec.format in FORMATS
    assert task_from_dict(spec.model_dump()) == spec  # specs are plain data: they round-trip
    for split in spec.files:
        assert spec.layout(split).text_columns


def test_every_format_has_a_reader():
    formats = typing.get_args(TaskSpec.model_fields["format"].annotation)
    assert sorted(formats) == sorted(FORMATS.names())


def test_all_builtin_tasks_registered():
    expected = {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli", "conll2003"}
    assert expected <= set(TASKS.names())
    assert set(TASKS.get("mnli").files) >= {"dev_matched", "dev_mismatched"}


@pytest.mark.parametrize("change, message", [
    ({"metrics": ["acuracy"]}, "did you mean 'accuracy'"),
    ({"labels": ["a", "b", "c"], "metrics": ["accuracy", "f1"]}, "metric 'f1' .* exactly 2 labels"),
    ({"metrics": ["accuracy", "entity_f1"]}, "scores tagging tasks, not a classification task with 2 labels"),
    ({"headline": "f1"}, "headline 'f1'"),
    ({"header": False}, "integer column positions"),
    ({"colour": "red"}, "Extra inputs are not permitted"),
    ({"labels": ["yes"]}, "at least 2 labels"),
    ({"unlabeled_splits": ["tset"]}, "split 'tset'"),
    ({"text_columns": [0, 1], "header": False, "label_column": 2}, "hub.text_columns is needed"),
])
def test_task_from_dict_rejects_bad_definitions(change, message):
    with pytest.raises(ValidationError, match=message):
        task_from_dict({**NLI_TASK, **change})


def test_register_task_twice():
    spec = TASKS.get("rte")
    assert register_task(spec) is spec  # identical: no-op
    with pytest.raises(ValueError, match="different definition"):
        register_task(spec.model_copy(update={"epochs": 2}))


def test_default_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("ELECTRA_BENCH_DATA", str(tmp_path))
    assert default_data_root() == tmp_path
    monkeypatch.delenv("ELECTRA_BENCH_DATA")
    assert default_data_root().name == "data"


# --- loading each format ---------------------------------------------------------------------------------------

def test_load_headerless_cola(load):
    ds = load("cola", "dev")
    assert ds.column_names == ["text_a", "label"]
    assert ds["label"] == [1, 0, 1]
    assert ds[2]["text_a"] == 'She said "hello to everyone.'  # unbalanced quote kept, no quote handling
    assert ds.features["label"].names == ["0", "1"]


def test_load_unlabeled_test_split_with_its_own_layout(load):
    ds = load("cola", "test")  # CoLA test has a header, unlike train/dev
    assert ds["text_a"] == ["A dog barked.", "Barked dog a."] and ds["label"] == [-1, -1]


def test_load_mrpc_bom_header(load):
    ds = load("mrpc", "dev")
    assert ds.column_names == ["text_a", "text_b", "label"]
    assert ds[0] == {"text_a": "The firm posted a profit .", "text_b": '" The company made money .', "label": 1}


def test_both_orders_for_symmetric_tasks(load):
    assert TASKS.get("mrpc").symmetric and not TASKS.get("rte").symmetric
    ds = both_orders(load("mrpc", "dev"))
    assert ds.num_rows == 4 and ds.column_names == ["text_a", "text_b", "label"]
    assert ds[2] == {"text_a": '" The company made money .', "text_b": "The firm posted a profit .", "label": 1}


def test_unknown_split_suggests_the_close_one(load):
    with pytest.raises(UnknownName, match="did you mean 'dev'"):
        load("rte", "dve")


def test_load_stsb_regression(load):
    ds = load("stsb", "dev")
    assert ds.features["label"].dtype == "float32"
    assert ds["label"] == pytest.approx([4.2, 0.0])
    assert ds[1]["text_b"] == "A cat is sleeping."


def test_load_rte_string_labels(load):
    ds = load("rte", "dev")
    assert ds["label"] == [0, 1, 1]  # index into ("entailment", "not_entailment")
    assert ds[0]["text_a"].endswith('"crowds.')


def test_load_conll_skips_docstart(load):
    ds = load("conll2003", "dev")
    assert ds["tokens"] == [["Alice", "visited", "Paris", "."], ["New", "York", "Times", "won"]]
    names = ds.features["tags"].feature.names
    assert [[names[t] for t in tags] for tags in ds["tags"]] == [
        ["B-PER", "O", "B-LOC", "O"], ["B-ORG", "I-ORG", "I-ORG", "O"]]


def test_load_gzip_file(load, tmp_path):
    root = tmp_path / "root"
    (root / "glue" / "RTE").mkdir(parents=True)
    with gzip.open(root / "glue" / "RTE" / "dev.tsv.gz", "wb") as f:
        f.write((FIXTURES / "glue" / "RTE" / "dev.tsv").read_bytes())
    spec = task_from_dict({**TASKS.get("rte").model_dump(), "files": {"dev": "dev.tsv.gz"}, "unlabeled_splits": []})
    assert load(spec, "dev", root)["label"] == [0, 1, 1]


def test_changed_file_is_reloaded_not_served_from_cache(load, tmp_path):
    path = _write(tmp_path, "glue/RTE/dev.tsv", RTE_HEADER + "0\ta\tb\tentailment\n")
    assert load("rte", "dev", tmp_path).num_rows == 1
    path.write_text(RTE_HEADER + "0\ta\tb\tentailment\n1\tc\td\tnot_entailment\n")
    assert load("rte", "dev", tmp_path).num_rows == 2


# --- a task added by configuration alone -----------------------------------------------------------------------

NLI_TASK = {
    "name": "custom_nli", "kind": "classification", "format": "glue_tsv", "path": "custom/nli",
    "files": {"dev": "dev.tsv"}, "text_columns": ["premise", "hypothesis"], "label_column": "verdict",
    "labels": ["no", "yes"], "metrics": ["accuracy", "mcc"], "headline": "accuracy", "hub": ["someone/nli", "v1"],
}
NER_TASK = {
    "name": "custom_ner", "kind": "tagging", "format": "conll", "path": "custom/ner",
    "files": {"dev": "dev.conll"}, "header": False, "text_columns": [0], "label_column": -1,
    "labels": ["O", "B-person", "I-person", "B-location", "I-location"],
    "metrics": ["entity_f1"], "headline": "entity_f1",
    "hub": {"path": "someone/ner", "text_columns": ["tokens"], "label_column": "ner_tags"},
}


def test_task_added_by_configuration(load):
    nli = register_task(task_from_dict(NLI_TASK))
    register_task(task_from_dict(NER_TASK))
    assert TASKS.get("custom_nli") is nli and (nli.hub.path, nli.hub.name) == ("someone/nli", "v1")
    ds = load("custom_nli", "dev")
    assert ds[0] == {"text_a": "A boy kicks a ball.", "text_b": "A child plays.", "label": 1}
    tags = load("custom_ner", "dev")["tags"]
    assert tags == [[1, 0, 0, 3], [0]]


# --- DataError cases -------------------------------------------------------------------------------------------

RTE_HEADER = "index\tsentence1\tsentence2\tlabel\n"
STSB_HEADER = FIXTURES.joinpath("glue/STS-B/dev.tsv").read_text().splitlines()[0] + "\n"


def _write(root: Path, rel: str, content: str | bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


@pytest.mark.parametrize("task, rel, content, line, problem", [
    ("rte", "glue/RTE/dev.tsv", RTE_HEADER + "0\ta\tb\tentailment\n1\tonly one sentence\tentailment\n",
     3, "expected 4 tab-separated columns"),
    ("rte", "glue/RTE/dev.tsv", RTE_HEADER + "0\ta\tb\tentailment\n1\tc\td\tneutral\n", 3, "label 'neutral'"),
    ("stsb", "glue/STS-B/dev.tsv", STSB_HEADER + "0\tg\tf\t2012\t1\tn\tn\ta\tb\tfive\n", 2, "score 'five'"),
    ("rte", "glue/RTE/dev.tsv", b"index\tsentence1\tsentence2\tlabel\n0\tcaf\xe9\tb\tentailment\n",
     2, "invalid UTF-8"),
    ("rte", "glue/RTE/dev.tsv", "index\tsentence1\tlabel\n0\ta\tentailment\n", 1, "no column 'sentence2'"),
    ("cola", "glue/CoLA/dev.tsv", "src\t1\t\tok.\nsrc\t1\tbroken row\n", 2, "expected 4 tab-separated columns"),
    ("conll2003", "conll2003/validation.txt", "-DOCSTART- -X- -X- O\n\nA DT B-NP O\nb NN I-NP\n",
     4, "expected 4 columns (as on line 3), found 3"),
    ("conll2003", "conll2003/validation.txt", "A DT B-NP B-PERSON\n", 1, "label 'B-PERSON'"),
])
def test_bad_rows_name_file_and_line(load, tmp_path, task, rel, content, line, problem):
    path = _write(tmp_path, rel, content)
    with pytest.raises(DataError) as err:
        load(task, "dev", tmp_path)
    assert f"{path.resolve()}:{line}: " in str(err.value) and problem in str(err.value)
    assert f"task '{task}'" in str(err.value)


@pytest.mark.parametrize("task, rel, content, problem", [
    ("rte", "glue/RTE/dev.tsv", "", "empty file"),
    ("rte", "glue/RTE/dev.tsv", "\n\n", "empty file"),
    ("rte", "glue/RTE/dev.tsv", RTE_HEADER, "no data rows"),
    ("conll2003", "conll2003/validation.txt", "", "empty file"),
    ("conll2003", "conll2003/validation.txt", "-DOCSTART- -X- -X- O\n\n", "no sentences"),
])
def test_empty_files(load, tmp_path, task, rel, content, problem):
    path = _write(tmp_path, rel, content)
    with pytest.raises(DataError, match=problem) as err:
        load(task, "dev", tmp_path)
    assert path.name in str(err.value)


def test_gz_that_is_not_gzip(load, tmp_path):
    path = _write(tmp_path, "glue/RTE/dev.tsv.gz", RTE_HEADER + "0\ta\tb\tentailment\n")
    spec = task_from_dict({**TASKS.get("rte").model_dump(), "files": {"dev": "dev.tsv.gz"}, "unlabeled_splits": []})
    with pytest.raises(DataError, match="not a valid gzip file") as err:
        load(spec, "dev", tmp_path)
    assert str(path.resolve()) in str(err.value)


def test_missing_file_without_hub(load, tmp_path):
    spec = task_from_dict({**NLI_TASK, "name": "nohub", "hub": None})
    with pytest.raises(DataError, match="task 'nohub'.*no hub fallback") as err:
        load(spec, "dev", tmp_path)
    assert str(tmp_path / "custom" / "nli" / "dev.tsv") in str(err.value)


def test_missing_file_with_hub_offline(load, tmp_path):
    with pytest.raises(DataError, match="HF_HUB_OFFLINE") as err:
        load("mnli", "dev_matched", tmp_path)
    assert str(tmp_path / "glue" / "MNLI" / "dev_matched.tsv") in str(err.value) and "task 'mnli'" in str(err.value)


# --- hub fallback mapping (hub replaced by an in-memory dataset) ---------------------------------------------

def test_hub_fallback_maps_columns_and_labels(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    hub_rows = datasets.Dataset.from_dict(
        {"premise": ["p1", "p2"], "hypothesis": ["h1", "h2"], "label": [2, -1], "idx": [0, 1]},
        features=datasets.Features({"premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
                                    "label": datasets.ClassLabel(names=["entailment", "neutral", "contradiction"]),
                                    "idx": datasets.Value("int32")}))
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append((a, k)) or hub_rows)
    ds = load_split("mnli", "dev_matched", tmp_path)
    assert calls == [(("nyu-mll/glue", "mnli"), {"split": "validation_matched"})]
    # Hub's "contradiction" (id 2) is our id 0; -1 (withheld) stays -1.
    assert ds.to_dict() == {"text_a": ["p1", "p2"], "text_b": ["h1", "h2"], "label": [0, -1]}


# --- the real data, where present ------------------------------------------------------------------------------

REAL_ROOT = default_data_root()
README_DEV_ROWS = [("cola", "dev", 1043), ("sst2", "dev", 872), ("mrpc", "dev", 408), ("stsb", "dev", 1500),
                   ("rte", "dev", 277), ("wnli", "dev", 71), ("qnli", "dev", 5463), ("conll2003", "dev", 3250)]


@pytest.mark.skipif(not (REAL_ROOT / "glue").is_dir(), reason=f"no real data at {REAL_ROOT}")
@pytest.mark.parametrize("task, split, rows", README_DEV_ROWS)
def test_real_dev_split_row_counts(load, task, split, rows):
    assert load(task, split, REAL_ROOT).num_rows == rows

