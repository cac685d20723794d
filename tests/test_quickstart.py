"""`make quickstart`, shrunk: the real suites/quickstart.yaml with the Makefile's flags (`--results` a fresh results
root, `--reference` the committed results/) on tiny data, from an empty results root and an empty work dir. Every
unit must be trained here (none adopted from another suite or taken from the committed records), the committed
records must stay untouched, and the user's numbers must be shown beside the committed ones (issue 18)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from test_suite_e2e import make_data_root

from electra_bench import cli
from electra_bench.config import load_suite
from electra_bench.results import read_records
from electra_bench.suite import make_plan

REPO = Path(__file__).resolve().parents[1]
SUITE = REPO / "suites" / "quickstart.yaml"
COMMITTED = REPO / "results" / "quickstart" / "records.jsonl"
MAKEFILE_FLAGS = ["--results", "RESULTS", "--reference", str(REPO / "results")]
SHRINK = ["model.hidden_size=32", "model.num_layers=2", "model.num_heads=2", "model.intermediate_size=64",
          "model.embedding_size=16", "tokenizer.train_vocab_size=256", "corpus.sources=[corpus/tiny/*.txt]",
          "corpus.max_seq_length=32", "corpus.heldout_blocks=8", "pretrain.steps=6", "pretrain.batch_size=4",
          "pretrain.eval_every=3", "pretrain.eval_batches=1", "finetune.train_examples=40", "finetune.epochs=1",
          "finetune.batch_size=8", "seeds=[0]"]


def test_makefile_quickstart_writes_a_user_root_beside_the_committed_one():
    line = next(x for x in (REPO / "Makefile").read_text().splitlines() if "quickstart.yaml" in x)
    assert "--results runs" in line and "--reference results" in line
    assert "/runs/" in (REPO / ".gitignore").read_text().split()


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quickstart")
    root = make_data_root(tmp / "data")
    committed_before = hashlib.sha256(COMMITTED.read_bytes()).hexdigest()
    flags = [str(tmp / "runs") if f == "RESULTS" else f for f in MAKEFILE_FLAGS]
    sets = [x for s in [*SHRINK, f"work_dir={tmp / 'work'}", f"data_root={root}"] for x in ("--set", s)]
    code = cli.main(["run", str(SUITE), *flags, *sets, "--no-progress"])
    return tmp, sets, code, committed_before


@pytest.mark.slow  # ~3 min on 2 shared cores: a real (tiny) pre-training and 4 fine-tunes
def test_every_unit_is_trained_here_not_adopted(quickstart):
    tmp, sets, code, _ = quickstart
    assert code == 0
    overrides = [s for s in sets if s != "--set"] + [f"results_dir={tmp / 'runs'}"]
    plan = make_plan(load_suite(SUITE, overrides))
    records = read_records(tmp / "runs" / "quickstart" / "records.jsonl")
    assert {r["run_key"] for r in records} == {u.key for u in plan.units}  # every unit has its own record
    assert [r for r in records if r["unit"] == "pretrain"] and [r for r in records if r["unit"] == "finetune"]
    assert not [r for r in records if "shared_from" in r]  # none adopted from another suite's store
    committed = {r["run_key"] for r in read_records(COMMITTED)}
    assert not committed & {r["run_key"] for r in records}  # none is a committed record
    assert all(r["wall_s"] > 0 for r in records)


@pytest.mark.slow
def test_committed_records_stay_untouched_and_are_shown_beside(quickstart, capsys):
    tmp, _, _, committed_before = quickstart
    assert hashlib.sha256(COMMITTED.read_bytes()).hexdigest() == committed_before
    beside = (tmp / "runs" / "quickstart" / "reference.md").read_text()
    assert "yours" in beside and "reference" in beside
    for cell in ("ELECTRA", "random init"):
        for task in ("sst2", "conll2003"):
            row = next(x for x in beside.splitlines() if x.startswith(f"| {cell} | {task} |"))
            yours, committed = row.split(" | ")[3:5]
            assert yours.endswith("(n=1)") or yours.endswith("(n=0, 1 flagged)")  # 1 seed here
            assert committed.endswith("(n=2)")  # 2 seeds in the committed run


def test_reference_that_is_your_own_results_is_refused(tmp_path, capsys):
    code = cli.main(["table", str(SUITE), "--results", str(REPO / "results"), "--reference", str(REPO / "results")])
    assert code == 2
    assert "--reference" in capsys.readouterr().err
