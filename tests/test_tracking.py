"""The Tracker / Run protocols of tracking.py are what both implementations offer, name for name."""
from __future__ import annotations

import inspect

import pytest

from electra_bench import tracking

PAIRS = [(tracking.Tracker, tracking.NullTracker), (tracking.Tracker, tracking.MlflowTracker),
         (tracking.Run, tracking.NullRun), (tracking.Run, tracking.MlflowRun)]


@pytest.mark.parametrize("protocol, impl", PAIRS, ids=lambda x: x.__name__)
def test_implementations_match_the_protocol(protocol, impl):
    methods = [n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_")]
    assert methods, protocol
    for name in methods:
        want = list(inspect.signature(getattr(protocol, name)).parameters)
        assert list(inspect.signature(getattr(impl, name)).parameters) == want, (impl.__name__, name)


def test_the_null_tracker_is_a_tracker(tmp_path):
    tracker = tracking.make_tracker(None, "x", False, tmp_path)
    assert isinstance(tracker, tracking.Tracker)
    with tracker.run("suite/x", "suite:x", "suite") as run:
        assert isinstance(run, tracking.Run) and run.id is None
    assert not tracker.finished("suite:x")


NAMES_SUITE = """name: names
work_dir: {tmp}/work
results_dir: {tmp}/results
cells:
  - label: ELECTRA
  - {{label: random init, set: {{finetune.init: random}}, crossed: false}}
axes:
  pretrain.generator_size: [0.25, 0.5]
tasks: [sst2, mrpc, conll2003]
seeds: [0, 1, 2]
pretrain_seeds: [0, 1]
"""
UI_NAME_CHARS = 12  # what the MLflow UI's runs table shows of a run name before cutting it


def _names_plan(tmp_path):
    from electra_bench.config import load_suite
    from electra_bench.suite import make_plan

    (tmp_path / "names.yaml").write_text(NAMES_SUITE.format(tmp=tmp_path))
    return make_plan(load_suite(tmp_path / "names.yaml"), tmp_path / "no-data")


def test_finetune_run_names_differ_by_task_and_seed_within_what_the_ui_shows(tmp_path):
    """Fine-tune run names lead with task and seed (runner.unit_run_name), so two fine-tunes of different tasks or
    seeds never look alike in the runs table, whatever their cell; the cell follows, and the tags say it all."""
    from electra_bench.runner import run_tags, unit_run_name

    ft = [u for u in _names_plan(tmp_path).units if u.kind == "finetune"]
    assert len(ft) == (2 * 2 + 1) * 3 * 3  # (2 sizes x 2 pretraining seeds + random init) x tasks x seeds
    shown = {}
    for u in ft:
        shown.setdefault(unit_run_name(u)[:UI_NAME_CHARS], set()).add((u.task, u.seed))
    assert all(len(pairs) == 1 for pairs in shown.values()), {k: v for k, v in shown.items() if len(v) > 1}
    u = next(u for u in ft if u.cell.axes == {"pretrain.generator_size": 0.25} and u.cell.pretrain_seed == 1
             and (u.task, u.seed) == ("conll2003", 2))
    assert unit_run_name(u) == "conll2003 s2 · ELECTRA 0.25 p1"
    assert run_tags(_names_plan(tmp_path), u.cell, u) == {
        "suite": "names", "cell": "ELECTRA (pretrain.generator_size=0.25)", "pretrain_seed": "1", "task": "conll2003",
        "seed": "2"}


def test_cell_pretrain_and_suite_run_names_lead_with_label_and_name(tmp_path):
    from electra_bench.runner import suite_run_name, unit_run_name

    plan = _names_plan(tmp_path)
    assert sorted({c.short_label for c in plan.cells}) == [
        "ELECTRA 0.25 p0", "ELECTRA 0.25 p1", "ELECTRA 0.5 p0", "ELECTRA 0.5 p1", "random init"]
    assert {unit_run_name(u) for u in plan.units if u.kind == "pretrain"} == {
        f"pretrain · ELECTRA {g} p{p}" for g in (0.25, 0.5) for p in (0, 1)}
    assert suite_run_name("names") == "names · suite"


def test_new_experiments_open_on_runs_in_the_ui(tmp_path):
    """MLflow 3's UI opens an untagged experiment in its GenAI view, where the suite -> cell -> fine-tune runs are
    hidden: the harness tags every experiment it creates as model training (the UI's own tag)."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = tracking.MlflowTracker(uri, "kind", str(tmp_path / "artifacts"))
    exp = MlflowClient(tracking_uri=uri).get_experiment(tracker.experiment_id)
    assert exp.tags[tracking.EXPERIMENT_KIND] == "custom_model_development"
