"""End to end: a tiny suite runs through the CLI into a temporary MLflow store; the nested runs, params, metrics
and records it produced are checked, and a re-run does no work and creates no duplicate run."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from electra_bench import cli
from electra_bench.results import read_records
from electra_bench.tokenizer import train_wordpiece

POS = ["good", "great", "lovely", "fine", "superb"]
NEG = ["bad", "awful", "poor", "dull", "terrible"]
NOUNS = ["film", "movie", "plot", "cast", "story", "music"]
NAMES = [("Alice", "PER"), ("Paris", "LOC"), ("Acme", "ORG"), ("Bob", "PER"), ("London", "LOC")]


def make_data_root(root: Path, seed: int = 0) -> Path:
    """A data root in the layout of ../shared/data, with made-up text, a tiny SST-2 and a tiny CoNLL-2003."""
    rng = random.Random(seed)
    (root / "corpus" / "tiny").mkdir(parents=True)
    docs = []
    for _ in range(60):
        lines = [" ".join(rng.choice(POS + NEG + NOUNS + ["the", "a", "was", "is", "and"]) for _ in range(12))
                 for _ in range(rng.randint(2, 5))]
        docs.append("\n".join(lines))
    (root / "corpus" / "tiny" / "a.txt").write_text("\n\n".join(docs) + "\n")
    sst = root / "glue" / "SST-2"
    sst.mkdir(parents=True)
    for split, n in (("train", 80), ("dev", 30)):
        rows = ["sentence\tlabel"]
        for _ in range(n):
            label = rng.randint(0, 1)
            rows.append(f"the {rng.choice(NOUNS)} was {rng.choice(POS if label else NEG)}\t{label}")
        (sst / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    conll = root / "conll2003"
    conll.mkdir()
    for split, n in (("train", 40), ("validation", 15)):
        lines = ["-DOCSTART- -X- -X- O", ""]
        for _ in range(n):
            name, typ = rng.choice(NAMES)
            lines += [f"{name} NNP B-NP B-{typ}", "saw VBD B-VP O", "the DT B-NP O", "film NN I-NP O", ""]
        (conll / f"{split}.txt").write_text("\n".join(lines))
    texts = (root / "corpus" / "tiny" / "a.txt").read_text().split("\n") + [n for n, _ in NAMES] + ["saw"]
    train_wordpiece(iter(texts), 120, root / "vocab")
    return root


# The header of every tiny end-to-end suite (a 2-layer 32-wide model on the fixture vocab and corpus): tests add
# their own pretrain/finetune/cells and `.format` it (name, root, work, results; doubled braces survive one format).
TINY_HEAD = """
name: {name}
data_root: {root}
work_dir: {work}
results_dir: {results}
base:
  model: {{size: tiny, hidden_size: 32, num_layers: 2, num_heads: 2, intermediate_size: 64, embedding_size: 16,
          dropout: 0.0, attention_dropout: 0.0}}
  tokenizer: {{vocab: vocab/vocab.txt}}
  corpus: {{sources: [corpus/tiny/*.txt], max_seq_length: 32, heldout_blocks: 8}}
"""

SUITE = TINY_HEAD.replace("{name}", "e2e") + """\
  pretrain: {{steps: 8, batch_size: 4, eval_every: 4, eval_batches: 1, checkpoints: [0.5, 1.0]}}
  finetune: {{epochs: 1, batch_size: 8, lr: 1.0e-3}}
cells:
  - label: ELECTRA
  - label: random init
    set: {{finetune.init: random}}
tasks: [sst2, conll2003]
seeds: [0, 1]
"""


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    make_data_root(tmp / "data")
    suite = tmp / "e2e.yaml"
    suite.write_text(SUITE.format(root=tmp / "data", work=tmp / "work", results=tmp / "results"))
    code = cli.main(["run", str(suite), "--no-progress"])
    return tmp, suite, code


def _runs(tmp: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp / 'work' / 'e2e' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("e2e")
    return client, client.search_runs([exp.experiment_id], max_results=1000)


def test_suite_runs_and_writes_records(suite_run):
    tmp, _, code = suite_run
    assert code == 0
    records = read_records(tmp / "results" / "e2e" / "records.jsonl")
    pre = [r for r in records if r["unit"] == "pretrain"]
    ft = [r for r in records if r["unit"] == "finetune"]
    assert len(pre) == 1 and len(ft) == 2 * 2 * 2
    for key in ("gen_mlm_acc", "disc_acc", "disc_precision", "disc_recall", "gen_loss", "disc_loss"):
        assert key in pre[0]["metrics"]
    assert [e["step"] for e in pre[0]["evals"]] == [4, 8]  # eval_every 4 of 8 steps: the run's history
    assert (tmp / "results" / "e2e" / "pretraining.png").stat().st_size > 0
    assert {r["task"] for r in ft} == {"sst2", "conll2003"}
    assert {r["cell"] for r in ft} == {"ELECTRA", "random init"}
    assert all(r["headline_metric"] in r["metrics"] for r in ft)
    table = (tmp / "results" / "e2e" / "table.md").read_text()
    assert "ELECTRA" in table and "random init" in table


def test_mlflow_hierarchy(suite_run):
    tmp, _, _ = suite_run
    _, runs = _runs(tmp)
    by_stage: dict[str, list] = {}
    for r in runs:
        by_stage.setdefault(r.data.tags["stage"], []).append(r)
    assert len(by_stage["suite"]) == 1 and len(by_stage["cell"]) == 2
    assert len(by_stage["pretrain"]) == 1 and len(by_stage["finetune"]) == 8
    suite_id = by_stage["suite"][0].info.run_id
    cells = {r.info.run_id: r for r in by_stage["cell"]}
    assert all(r.data.tags["mlflow.parentRunId"] == suite_id for r in cells.values())
    assert all(r.data.tags["mlflow.parentRunId"] in cells for r in by_stage["finetune"] + by_stage["pretrain"])
    pre = by_stage["pretrain"][0]
    assert pre.data.params["pretrain.disc_weight"] == "50.0"
    assert "eval/disc_recall" in pre.data.metrics and "train/gen_loss" in pre.data.metrics
    assert all(r.info.status == "FINISHED" for r in runs)
    # Run names lead with what differs (runner.py): task and seed, then the cell; the tags hold each part.
    assert by_stage["suite"][0].info.run_name == "e2e · suite"
    assert sorted(r.info.run_name for r in cells.values()) == ["ELECTRA", "random init"]
    assert pre.info.run_name == "pretrain · ELECTRA"
    named = {r.info.run_name: (r.data.tags["task"], r.data.tags["seed"], r.data.tags["cell"])
             for r in by_stage["finetune"]}
    assert named == {f"{t} s{s} · {c}": (t, str(s), c) for t in ("sst2", "conll2003") for s in (0, 1)
                     for c in ("ELECTRA", "random init")}
    ft = by_stage["finetune"][0]
    assert ft.data.params["task"] in ("sst2", "conll2003") and "finetune.lr" in ft.data.params
    assert all(r.data.tags["code_version"] for r in runs)
    client, _ = _runs(tmp)
    inputs = client.get_run(ft.info.run_id).inputs.dataset_inputs
    assert {i.dataset.name.split("/")[1] for i in inputs} == {"train", "dev"}
    assert client.get_run(pre.info.run_id).inputs.dataset_inputs[0].dataset.name == "corpus"


def test_rerun_is_cached_and_creates_no_duplicates(suite_run):
    tmp, suite, _ = suite_run
    _, before = _runs(tmp)
    n_records = len((tmp / "results" / "e2e" / "records.jsonl").read_text().splitlines())
    assert cli.main(["run", str(suite), "--no-progress"]) == 0
    _, after = _runs(tmp)
    assert len(after) == len(before)
    assert len((tmp / "results" / "e2e" / "records.jsonl").read_text().splitlines()) == n_records


def test_config_error_exits_2_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nresults_dir: " + str(tmp_path / "r") + "\nbase:\n  pretrain:\n    disc_wieght: 3\n")
    assert cli.main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:5" in err and "base.pretrain.disc_wieght" in err and "did you mean 'disc_weight'" in err
    assert not (tmp_path / "r").exists()


def test_records_are_json_lines(suite_run):
    tmp, _, _ = suite_run
    for line in (tmp / "results" / "e2e" / "records.jsonl").read_text().splitlines():
        assert json.loads(line)["suite"] == "e2e"


@pytest.mark.slow
def test_pretraining_seeds_end_to_end(tmp_path):
    """`pretrain_seeds: [0, 1]`: one pre-training per seed, fine-tunes of each, records and MLflow cell runs per
    seed, the table counts both pre-trainings, and a re-run does nothing."""
    make_data_root(tmp_path / "data")
    text = SUITE.format(root=tmp_path / "data", work=tmp_path / "work", results=tmp_path / "results")
    text = text.replace("tasks: [sst2, conll2003]", "tasks: [conll2003]") + "pretrain_seeds: [0, 1]\n"
    (tmp_path / "e2e.yaml").write_text(text)
    assert cli.main(["run", str(tmp_path / "e2e.yaml"), "--no-progress"]) == 0
    records = read_records(tmp_path / "results" / "e2e" / "records.jsonl")
    assert sorted(r["pretrain_seed"] for r in records if r["unit"] == "pretrain") == [0, 1]
    ft = [(r["cell"], r["pretrain_seed"], r["seed"]) for r in records if r["unit"] == "finetune"]
    assert sorted(ft, key=str) == sorted([("ELECTRA", p, s) for p in (0, 1) for s in (0, 1)]
                                         + [("random init", None, s) for s in (0, 1)], key=str)
    assert "over 2 pre-trainings" in (tmp_path / "results" / "e2e" / "table.md").read_text()
    _, runs = _runs(tmp_path)
    cells = sorted((r.data.tags["mlflow.runName"], r.data.tags["cell"], r.data.tags.get("pretrain_seed"))
                   for r in runs if r.data.tags["stage"] == "cell")
    assert cells == [("ELECTRA p0", "ELECTRA", "0"), ("ELECTRA p1", "ELECTRA", "1"),
                     ("random init", "random init", None)]
    assert cli.main(["run", str(tmp_path / "e2e.yaml"), "--no-progress"]) == 0
    assert len(read_records(tmp_path / "results" / "e2e" / "records.jsonl")) == len(records)
    assert len(_runs(tmp_path)[1]) == len(runs)


def test_dev_predictions_recompute_the_records_metrics(suite_run):
    """Every fine-tune keeps its per-example dev predictions beside its record; sklearn (accuracy) and seqeval
    (entity F1, default conlleval-like mode) on the file's gold and pred give the record's numbers."""
    from seqeval.metrics import f1_score as entity_f1
    from sklearn.metrics import accuracy_score

    from electra_bench.results import read_predictions_file

    tmp, _, _ = suite_run
    folder = tmp / "results" / "e2e"
    ft = [r for r in read_records(folder / "records.jsonl") if r["unit"] == "finetune"]
    assert ft and all(r["dev_predictions"] == f"predictions/{r['run_key']}.jsonl" for r in ft)
    for r in ft:
        rows = read_predictions_file(folder, r)
        assert len(rows) == r["n_dev"] and [x["id"] for x in rows] == list(range(r["n_dev"]))  # whole dev set, in order
        gold, pred = [x["gold"] for x in rows], [x["pred"] for x in rows]
        if r["task"] == "sst2":
            assert all(abs(sum(x["probs"]) - 1) < 1e-3 and len(x["probs"]) == 2 for x in rows)
            assert accuracy_score(gold, pred) * 100 == pytest.approx(r["metrics"]["accuracy"], abs=1e-9)
        else:
            assert all(len(x["score"]) == len(x["gold"]) == len(x["pred"]) for x in rows)
            assert entity_f1(gold, pred) * 100 == pytest.approx(r["metrics"]["entity_f1"], abs=1e-9)
    assert not list(folder.glob("predictions/.*.tmp"))  # written atomically: no temp file left behind


def test_compare_shows_where_two_cells_disagree(suite_run, capsys):
    from electra_bench.compare import disagreements
    from electra_bench.config import load_suite
    from electra_bench.results import read_predictions_file
    from electra_bench.suite import make_plan

    tmp, suite, _ = suite_run
    rows = disagreements(make_plan(load_suite(suite)), "ELECTRA", "random init")
    assert {(r["task"], r["seed"]) for r in rows} == {(t, s) for t in ("sst2", "conll2003") for s in (0, 1)}
    folder = tmp / "results" / "e2e"
    records = {(r["cell"], r["task"], r["seed"]): r for r in read_records(folder / "records.jsonl")
               if r["unit"] == "finetune"}
    for row in rows:  # recounted by hand from the two files
        a, b = (read_predictions_file(folder, records[(c, row["task"], row["seed"])])
                for c in ("ELECTRA", "random init"))
        differ = [x["id"] for x, y in zip(a, b) if x["pred"] != y["pred"]]
        assert row["examples"] == len(a) and row["differ"] == len(differ)
        assert row["ELECTRA right"] == sum(x["pred"] == x["gold"] for x in a if x["id"] in differ)
    assert cli.main(["compare", str(suite), "ELECTRA", "random init"]) == 0
    assert "disagree" in capsys.readouterr().out
