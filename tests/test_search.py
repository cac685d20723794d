"""Optuna search end to end on tiny fixtures: trials run, are tracked as child runs of a study run, the best
trial's config is written as a suite snippet that `extends` can use, and a finished study does not re-run."""
from __future__ import annotations

import json

import pytest
from test_suite_e2e import make_data_root

from electra_bench import cli
from electra_bench.config import ConfigError, load_suite
from electra_bench.schema import SearchConfig

SUITE = """
name: search_e2e
data_root: {root}
work_dir: {work}
results_dir: {results}
base:
  model: {{size: tiny, hidden_size: 32, num_layers: 2, num_heads: 2, intermediate_size: 64, embedding_size: 16}}
  tokenizer: {{vocab: vocab/vocab.txt}}
  finetune: {{init: random, batch_size: 8}}
tasks: [sst2]
seeds: [0]
search:
  space:
    finetune.lr: {{type: logfloat, low: 1.0e-4, high: 3.0e-3}}
    finetune.epochs: {{type: int, low: 1, high: 2}}
  objective: sst2
  n_trials: 3
  sampler: random
"""


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("search")
    make_data_root(tmp / "data")
    suite = tmp / "s.yaml"
    suite.write_text(SUITE.format(root=tmp / "data", work=tmp / "work", results=tmp / "results"))
    code = cli.main(["search", str(suite), "--no-progress"])
    return tmp, suite, code


def test_trials_run_and_are_recorded(searched):
    tmp, _, code = searched
    assert code == 0
    lines = [json.loads(x) for x in (tmp / "results" / "search_e2e" / "search.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and all(x["state"] == "COMPLETE" for x in lines)
    assert all(1e-4 <= x["params"]["finetune.lr"] <= 3e-3 for x in lines)


def test_the_study_opens_as_optuna_dashboard_opens_it(searched):
    """The README's one-liner `optuna-dashboard work/<suite>/optuna.journal`: the dashboard reads the journal file
    with Optuna's own JournalStorage; so does this test, without the harness's code."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    tmp, _, _ = searched
    journal = tmp / "work" / "search_e2e" / "optuna.journal"
    storage = JournalStorage(JournalFileBackend(str(journal)))
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    assert summary.n_trials == 3 and len(study.get_trials(states=[optuna.trial.TrialState.COMPLETE])) == 3
    assert set(study.best_params) == {"finetune.lr", "finetune.epochs"}


def test_study_and_trial_runs_in_mlflow(searched):
    from mlflow.tracking import MlflowClient

    tmp, _, _ = searched
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp / 'work' / 'search_e2e' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("search_e2e").experiment_id])
    study = [r for r in runs if r.data.tags["stage"] == "study"]
    trials = [r for r in runs if r.data.tags["stage"] == "trial"]
    assert len(study) == 1 and len(trials) == 3
    assert all(r.data.tags["mlflow.parentRunId"] == study[0].info.run_id for r in trials)
    assert all("finetune.lr" in r.data.params and "trial" in r.data.params for r in trials)
    assert all(r.data.tags["state"] == "COMPLETE" and "objective" in r.data.metrics for r in trials)


def test_best_snippet_extends_and_finished_study_reports(searched, capsys):
    tmp, suite, _ = searched
    best = tmp / "results" / "search_e2e" / "best.yaml"
    child = tmp / "child.yaml"
    child.write_text(f"extends: {best}\nname: child\ntasks: [sst2]\n")
    lr = load_suite(child).cells[0].config.finetune.lr
    assert 1e-4 <= lr <= 3e-3
    assert cli.main(["search", str(suite), "--no-progress"]) == 0
    assert "3 complete" in capsys.readouterr().out


def test_sqlite_refused_for_several_workers(tmp_path):
    from electra_bench.search import storage_for

    cfg = SearchConfig(space={"finetune.lr": {"type": "float", "low": 0.1, "high": 0.2}}, objective="sst2",
                       storage=f"sqlite:///{tmp_path / 'o.db'}")
    with pytest.raises(ConfigError, match="journal file on one host, or PostgreSQL"):
        storage_for(cfg, tmp_path, n_workers=2)


def test_search_space_paths_are_validated():
    with pytest.raises(ValueError, match="must start with one of"):
        SearchConfig(space={"lr": {"type": "float", "low": 0.1, "high": 0.2}}, objective="sst2")
    with pytest.raises(ValueError, match="low < high"):
        SearchConfig(space={"finetune.lr": {"type": "float", "low": 0.3, "high": 0.2}}, objective="sst2")
