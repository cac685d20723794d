"""Time estimates of `plan` (electra_bench/eta.py), from synthetic records: pre-training by the FLOP/s of earlier
pre-training records, fine-tuning by the FLOP/s of this suite's finished fine-tunes of the same task, and a total
over the units still to run that counts the ones it could not time."""
from __future__ import annotations

import statistics

import pytest

from electra_bench import cli, eta
from electra_bench.config import load_suite
from electra_bench.flops import BERT_VOCAB
from electra_bench.results import append_record
from electra_bench.suite import make_plan, unit_record

SUITE = """
name: timed
work_dir: {tmp}/work
results_dir: {tmp}/results
base:
  model: {{size: tiny}}
  finetune: {{epochs: 2}}
cells:
  - label: ELECTRA
  - label: wide
    set: {{model.hidden_size: 256, model.intermediate_size: 1024}}
  - label: random init
    set: {{finetune.init: random}}
tasks: [sst2, rte]
seeds: [0, 1, 2]
"""
WALLS = (30.0, 34.0)  # ELECTRA sst2 seeds 0 and 1: finished, 80 train and 30 dev examples
PRETRAIN_RATE = 1e10  # FLOP/s of another suite's pre-training on this machine


@pytest.fixture
def plan(tmp_path):
    (tmp_path / "timed.yaml").write_text(SUITE.format(tmp=tmp_path))
    plan = make_plan(load_suite(tmp_path / "timed.yaml"), tmp_path)
    unit = {(u.cell.label, u.kind, u.task, u.seed): u for u in plan.units}
    for seed, wall in enumerate(WALLS):
        append_record(plan.records_path, unit_record(plan, unit[("ELECTRA", "finetune", "sst2", seed)],
                                                     {"accuracy": 70.0}, [], headline_metric="accuracy",
                                                     headline=70.0, higher_is_better=True, n_train=80, n_dev=30,
                                                     wall_s=wall))
    append_record(tmp_path / "results" / "other" / "records.jsonl", {
        "suite": "other", "unit": "pretrain", "run_key": "p0", "cell": "x", "axes": {}, "task": None, "seed": 0,
        "metrics": {}, "flags": [], "code_version": "t", "train_flops": 1e12, "wall_s": 1e12 / PRETRAIN_RATE,
        "precision": "fp32", "flops_convention": "official"})
    return make_plan(plan.suite, tmp_path)


def by(plan, label, kind, task=None, seed=None):
    return next(u for u in plan.units if (u.cell.label, u.kind, u.task, u.seed) == (label, kind, task, seed))


def test_finetunes_are_timed_by_this_suites_finished_finetunes_of_the_task(plan):
    seconds = eta.estimates(plan)
    # same setup: the FLOP/s of the two finished seeds (median of two: their mean) -> their harmonic mean wall time
    same = statistics.harmonic_mean(WALLS)
    assert seconds[by(plan, "ELECTRA", "finetune", "sst2", 2).key] == pytest.approx(same)
    assert seconds[by(plan, "random init", "finetune", "sst2", 0).key] == pytest.approx(same)  # same model size
    wide = by(plan, "wide", "finetune", "sst2", 0)
    sst2 = plan.suite.tasks["sst2"]
    ratio = eta.finetune_flops(wide.cell.config, sst2, 80, 30) / eta.finetune_flops(
        by(plan, "ELECTRA", "finetune", "sst2", 0).cell.config, sst2, 80, 30)
    assert ratio > 3 and seconds[wide.key] == pytest.approx(same * ratio)  # a wider model: its FLOPs, same rate
    assert not [u for u in plan.units if u.task == "rte" and u.key in seconds]  # no rte fine-tune finished yet


def test_pretrainings_are_timed_by_earlier_pretraining_flops_per_s(plan):
    from electra_bench.units import flops_per_step, planned_steps

    seconds = eta.estimates(plan)
    for label in ("ELECTRA", "wide"):
        u = by(plan, label, "pretrain", seed=None)
        run = u.cell.config
        rate = {"fp32": PRETRAIN_RATE, "bf16": 2 * PRETRAIN_RATE}[run.pretrain.precision]  # bf16: ~2x fp32
        want = flops_per_step(eta.counted_by(run, "official"), BERT_VOCAB) * planned_steps(run, BERT_VOCAB) / rate
        assert seconds[u.key] == pytest.approx(want)
    assert eta.pretrain_rates(plan.records_path.parents[1]) == {"fp32": PRETRAIN_RATE, "bf16": 2 * PRETRAIN_RATE}


def test_total_counts_the_units_to_run_and_those_without_an_estimate(plan):
    seconds = eta.estimates(plan)
    todo = eta.total(plan, seconds)
    pending = [u for u in plan.units if u.status != "done"]
    assert todo.units == len(pending) == 2 + 3 * 2 * 3 - 2  # 2 pre-trainings, 3 cells x 2 tasks x 3 seeds, 2 done
    assert todo.unestimated == 3 * 3  # every rte fine-tune
    assert todo.seconds == pytest.approx(sum(seconds[u.key] for u in pending if u.task != "rte"))


def test_plan_prints_the_total_eta(plan, tmp_path, capsys):
    assert cli.main(["plan", str(tmp_path / "timed.yaml"), "--data-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    todo = eta.total(plan, eta.estimates(plan))
    assert f"to run: 18 units, ETA {eta.duration(todo.seconds)}; 9 of them without an estimate" in out
    assert "2 done, 18 pending, 0 failed" in out


def test_no_records_no_estimates(tmp_path):
    (tmp_path / "timed.yaml").write_text(SUITE.format(tmp=tmp_path))
    plan = make_plan(load_suite(tmp_path / "timed.yaml"), tmp_path)
    assert eta.estimates(plan) == {}
    assert eta.total(plan, {}) == eta.Total(0.0, len(plan.units), len(plan.units))


@pytest.mark.parametrize("seconds, text", [(40, "~40 s"), (720, "~12 min"), (3 * 3600 + 300, "~3 h 05 min")])
def test_duration(seconds, text):
    assert eta.duration(seconds) == text


def test_compute_faithful_records_time_pretrainings_when_there_are_some(plan, tmp_path):
    """Their FLOP/s, divided into the unit's FLOPs counted the same way, is preferred to the official one's."""
    from electra_bench.units import flops_per_step, planned_steps

    rate = 3 * PRETRAIN_RATE
    append_record(tmp_path / "results" / "curve" / "records.jsonl", {
        "suite": "curve", "unit": "pretrain", "run_key": "p1", "cell": "x", "axes": {}, "task": None, "seed": 0,
        "metrics": {}, "flags": [], "code_version": "t", "train_flops": 1e12, "wall_s": 1e12 / rate,
        "precision": "fp32", "flops_convention": "compute"})
    assert eta.pretrain_rates(tmp_path / "results", "compute") == pytest.approx({"fp32": rate, "bf16": 2 * rate})
    u = by(plan, "ELECTRA", "pretrain", seed=None)
    run = u.cell.config
    want = flops_per_step(eta.counted_by(run, "compute"), BERT_VOCAB) * planned_steps(run, BERT_VOCAB)
    assert eta.estimates(plan)[u.key] == pytest.approx(want / {"fp32": rate, "bf16": 2 * rate}[run.pretrain.precision])
