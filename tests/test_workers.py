"""Workers sharing a suite or a search study: real processes on a real PostgreSQL and a real `mlflow server`.

.ci/run starts both servers and exports ELECTRA_BENCH_TEST_PG_URL and ELECTRA_BENCH_TEST_MLFLOW_URI (and
ELECTRA_BENCH_REQUIRE_SERVERS=1, which turns a missing server into a failure instead of a skip). Each test uses a
suite name of its own, so its Optuna studies and MLflow experiment are new even on servers kept between runs.

- Two workers run the tiny end-to-end suite (tests/test_suite_e2e.py): every unit ran once, the records equal a
  single-process `run`'s, and the MLflow hierarchy is the runner's (suite -> cell -> unit, one run per key).
- A worker is SIGKILLed in the middle of a pre-training; the other re-claims it when its lease runs out, resumes it
  from the saved state and finishes the suite (on PostgreSQL, and on a journal file, which needs no server).
- Two workers share a search study: every trial finished, one MLflow run per trial, all under one study run.
- In process, without servers: the claim queue on a journal file (atomic claim, dependencies, duplicate entries,
  lease expiry and re-queueing) and the exactly-once record append.
"""
from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from test_search import SUITE as SEARCH_SUITE
from test_suite_e2e import SUITE, make_data_root

from electra_bench import cli
from electra_bench.results import append_record, read_records

REPO = Path(__file__).resolve().parents[1]
PG = os.environ.get("ELECTRA_BENCH_TEST_PG_URL")
MLFLOW = os.environ.get("ELECTRA_BENCH_TEST_MLFLOW_URI")
LEASE = ["--heartbeat", "1", "--grace", "6", "--poll", "0.3"]  # a dead worker's unit is re-claimed after ~6 s
PRETRAIN_LINE = "pretrain: {{steps: 8, batch_size: 4, eval_every: 4, eval_batches: 1, checkpoints: [0.5, 1.0]}}"
LONG_PRETRAIN = "pretrain: {{steps: 80, batch_size: 4, eval_every: 40, eval_batches: 1, checkpoints: [0.25, 0.5, 1.0]}}"


@pytest.fixture(scope="module")
def servers():
    if not (PG and MLFLOW):
        if os.environ.get("ELECTRA_BENCH_REQUIRE_SERVERS") == "1":
            pytest.fail("ELECTRA_BENCH_REQUIRE_SERVERS=1 but ELECTRA_BENCH_TEST_PG_URL / _MLFLOW_URI are not set")
        pytest.skip("no PostgreSQL and MLflow server (.ci/run starts them)")
    return PG, MLFLOW


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("workers-data") / "data"
    make_data_root(root)
    return root


def write_suite(folder: Path, name: str, data_root: Path, text: str = SUITE) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(text.replace("name: e2e", f"name: {name}").replace("name: search_e2e", f"name: {name}")
                    .format(root=data_root, work=folder / "work", results=folder / "results"))
    return path


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


class Worker:
    """`electra-bench worker SUITE ...` in a child process (one torch thread), its output in a log file."""

    def __init__(self, suite: Path, log: Path, *args: str):
        self.log = log
        env = {**os.environ, "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
        with open(log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "electra_bench.cli", "worker", str(suite),
                                          "--no-progress", *LEASE, *args], stdout=out, stderr=subprocess.STDOUT,
                                         env=env, cwd=suite.parent)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def finish(self, timeout: float = 240) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"the worker did not finish in {timeout} s:\n{self.text()[-3000:]}")


def ran(worker: Worker) -> list[str]:
    """The units a worker started, from its log lines `-> [k/N done] <unit>`."""
    return [line.split("] ", 1)[1] for line in worker.text().splitlines() if line.startswith("-> [")]


def mlflow_runs(uri: str, experiment: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=1000)


def units_study(storage: str, name: str):
    import optuna
    from optuna.storages.journal import JournalFileBackend

    st = optuna.storages.RDBStorage(storage) if "://" in storage else \
        optuna.storages.JournalStorage(JournalFileBackend(storage))
    return optuna.load_study(study_name=f"units:{name}", storage=st)


def assert_hierarchy(runs, n_cells: int, n_pretrain: int, n_finetune: int) -> None:
    """suite -> cell -> unit through mlflow.parentRunId, one run per run key, every run finished."""
    assert max(collections.Counter(r.data.tags["run_key"] for r in runs).values()) == 1
    by_stage = collections.defaultdict(list)
    for r in runs:
        by_stage[r.data.tags["stage"]].append(r)
    assert {k: len(v) for k, v in by_stage.items()} == {"suite": 1, "cell": n_cells, "pretrain": n_pretrain,
                                                        "finetune": n_finetune}
    suite_id = by_stage["suite"][0].info.run_id
    def cell_of(r):  # the tags of a cell run and its units' runs name the cell in full (runner.run_tags)
        return r.data.tags["cell"], r.data.tags.get("pretrain_seed")

    cells = {r.info.run_id: cell_of(r) for r in by_stage["cell"]}
    assert all(r.data.tags["mlflow.parentRunId"] == suite_id for r in by_stage["cell"])
    for r in by_stage["pretrain"] + by_stage["finetune"]:
        assert cells[r.data.tags["mlflow.parentRunId"]] == cell_of(r)
    assert all(r.info.status == "FINISHED" for r in runs), [(r.info.run_name, r.info.status) for r in runs]


# ------------------------------------------------------------------------------------- a suite, two workers


def test_two_workers_run_a_suite_like_one_process(servers, data_root, tmp_path):
    pg, mlflow_uri = servers
    name = unique("workers")
    suite = write_suite(tmp_path / "shared", name, data_root)
    workers = [Worker(suite, tmp_path / f"w{i}.log", "--storage", pg, "--tracking-uri", mlflow_uri)
               for i in range(2)]
    reference = write_suite(tmp_path / "single", name, data_root)  # same suite, run by one process meanwhile
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers (OMP_NUM_THREADS=1): the same arithmetic, the same numbers
    try:
        assert cli.main(["run", str(reference), "--no-progress", "--set", "tracking.enabled=false"]) == 0
    finally:
        torch.set_num_threads(threads)
    codes = [w.finish() for w in workers]
    assert codes == [0, 0], "\n".join(w.text()[-3000:] for w in workers)

    records = read_records(tmp_path / "shared" / "results" / name / "records.jsonl", unique=False)
    single = {r["run_key"]: r for r in read_records(tmp_path / "single" / "results" / name / "records.jsonl")}
    assert len(records) == len(single) == 9  # 1 pre-training, 2 cells x 2 tasks x 2 seeds
    assert {r["run_key"] for r in records} == set(single)  # each unit once, none lost
    for r in records:
        assert r["metrics"] == single[r["run_key"]]["metrics"], (r["cell"], r["task"], r["seed"])
    started = [u for w in workers for u in ran(w)]
    assert len(started) == len(set(started)) == 9  # no unit was started twice

    study = units_study(pg, name)
    units = [t for t in study.trials if t.user_attrs["kind"] in ("pretrain", "finetune")]
    assert sorted(t.state.name for t in units) == ["COMPLETE"] * 9
    assert {t.user_attrs["record"]["run_key"] for t in units} == set(single)
    assert_hierarchy(mlflow_runs(mlflow_uri, name), n_cells=2, n_pretrain=1, n_finetune=8)
    assert (tmp_path / "shared" / "results" / name / "table.md").is_file()  # finalize rendered the tables

    elsewhere = tmp_path / "other-host-results"  # a host that does not share the results dir
    for _ in range(2):  # the second collect finds nothing new
        assert cli.main(["worker", str(suite), "--storage", pg, "--collect", "--set", f"results_dir={elsewhere}"]) == 0
    collected = read_records(elsewhere / name / "records.jsonl", unique=False)
    assert sorted(r["run_key"] for r in collected) == sorted(single)


# ------------------------------------------------------------------------------ a worker killed mid-unit


@pytest.mark.parametrize("backend", ["postgres", "journal"])
def test_killed_workers_unit_is_reclaimed(backend, data_root, tmp_path, request):
    """Two workers; the one pre-training is SIGKILLed after its first saved state. The other, waiting for that
    pre-training (its fine-tunes depend on it), fails the stale trial once its lease runs out, claims the re-queued
    copy, resumes from the saved state, and runs the fine-tunes."""
    if backend == "postgres":
        pg, mlflow_uri = request.getfixturevalue("servers")
        storage, extra = pg, ["--tracking-uri", mlflow_uri]
    else:  # journal file, tracking off: this variant needs no server
        pg = mlflow_uri = None
        storage, extra = str(tmp_path / "queue.journal"), ["--set", "tracking.enabled=false"]
    name = unique("kill")
    text = SUITE.replace(PRETRAIN_LINE, LONG_PRETRAIN).replace("  - label: random init\n"
                                                                "    set: {{finetune.init: random}}\n", "")
    suite = write_suite(tmp_path, name, data_root, text.replace("seeds: [0, 1]", "seeds: [0]"))
    workers = [Worker(suite, tmp_path / f"w{i}.log", "--storage", storage, *extra) for i in range(2)]
    states = tmp_path / "work" / "pretrain"  # pre-trainings by run key, shared by the suites of a work dir
    deadline = time.monotonic() + 180
    while not any(states.glob("*/state.pt")):
        assert time.monotonic() < deadline and all(w.proc.poll() is None for w in workers), \
            "\n".join(w.text()[-2000:] for w in workers)
        time.sleep(0.01)
    (victim,) = [w for w in workers if "pretrain/" in w.text()]
    os.kill(victim.proc.pid, signal.SIGKILL)
    survivor = next(w for w in workers if w is not victim)
    assert victim.proc.wait(timeout=30) == -signal.SIGKILL
    assert survivor.finish() == 0, survivor.text()[-3000:]

    records = read_records(tmp_path / "results" / name / "records.jsonl", unique=False)
    assert sorted(r["unit"] for r in records) == ["finetune", "finetune", "pretrain"]  # each unit once
    assert next(r for r in records if r["unit"] == "pretrain")["steps"] == 80
    assert "pretrain/ELECTRA" in ran(survivor) and "[pretrain] resuming from step" in survivor.text()
    pretrains = [t for t in units_study(storage, name).trials if t.user_attrs["kind"] == "pretrain"]
    assert [t.state.name for t in pretrains] == ["FAIL", "COMPLETE"]
    assert pretrains[1].system_attrs["failed_trial"] == pretrains[0].number
    assert pretrains[0].user_attrs["worker"].endswith(f":{victim.proc.pid}")
    assert pretrains[1].user_attrs["worker"].endswith(f":{survivor.proc.pid}")
    if mlflow_uri:
        assert_hierarchy(mlflow_runs(mlflow_uri, name), n_cells=1, n_pretrain=1, n_finetune=2)


# ------------------------------------------------------------------------------------- a search, two workers


def test_two_workers_share_a_search_study(servers, data_root, tmp_path):
    import optuna

    pg, mlflow_uri = servers
    name = unique("search")
    suite = write_suite(tmp_path, name, data_root, SEARCH_SUITE.replace("n_trials: 3", "n_trials: 4"))
    workers = [Worker(suite, tmp_path / f"w{i}.log", "--storage", pg, "--tracking-uri", mlflow_uri)
               for i in range(2)]
    assert [w.finish() for w in workers] == [0, 0], "\n".join(w.text()[-3000:] for w in workers)

    study = optuna.load_study(study_name=name, storage=pg)
    states = {t.number: t.state.name for t in study.trials}
    assert set(states.values()) <= {"COMPLETE", "PRUNED"}, states  # none lost or failed
    assert 4 <= len(states) <= 5, states  # 5: both workers started the 4th trial at the same moment
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == len(states)  # workers sample apart
    runs = mlflow_runs(mlflow_uri, name)
    (study_run,) = [r for r in runs if r.data.tags["stage"] == "study"]
    trial_runs = {int(r.data.params["trial"]): r for r in runs if r.data.tags["stage"] == "trial"}
    assert len(trial_runs) == len(runs) - 1 and sorted(trial_runs) == sorted(states)  # one run per trial
    assert all(r.data.tags["mlflow.parentRunId"] == study_run.info.run_id for r in trial_runs.values())
    assert all(r.data.tags["state"] == states[n] for n, r in trial_runs.items())
    lines = (tmp_path / "results" / name / "search.jsonl").read_text().splitlines()
    assert len(lines) == len(study.trials) and (tmp_path / "results" / name / "best.yaml").is_file()


def test_concurrent_trackers_share_one_experiment(servers):
    from electra_bench.tracking import MlflowTracker

    _, mlflow_uri = servers
    name, ids, errors = unique("exp"), [], []

    def open_tracker():
        try:
            ids.append(MlflowTracker(mlflow_uri, name).experiment_id)
        except Exception as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    threads = [threading.Thread(target=open_tracker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(ids)) == 1


# ------------------------------------------------------------------------- the claim queue, in process


@pytest.fixture
def queue(tmp_path):
    from electra_bench.leases import LeaseTimes, Queue, open_storage

    storage, lease = open_storage(str(tmp_path / "q.journal"), tmp_path, LeaseTimes(heartbeat_s=1, grace_s=1))
    return Queue(storage, lease, "units:test")


def test_claim_is_atomic_and_in_order(queue):
    from optuna.trial import TrialState

    for key in ("a", "b", "c"):
        queue.enqueue("pretrain", key)
    claimed, lock = [], threading.Lock()

    def claimer():
        while (t := queue.claim(lambda t, ts: True)) is not None:
            with lock:
                claimed.append(t.user_attrs["run_key"])

    threads = [threading.Thread(target=claimer) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == ["a", "b", "c"]  # each trial claimed by exactly one claimer
    assert [t.state for t in queue.trials()] == [TrialState.RUNNING] * 3


def test_claim_follows_the_given_order_then_the_number(queue):
    for key in ("a", "b", "c", "d"):
        queue.enqueue("pretrain", key)
    rank = {"c": 0, "a": 1}  # b and d share the last rank: by number
    order = lambda t: rank.get(t.user_attrs["run_key"], 2)  # noqa: E731
    assert [queue.claim(lambda t, ts: True, order).user_attrs["run_key"] for _ in range(4)] == ["c", "a", "b", "d"]


def test_worker_claims_in_its_plans_order_not_the_queues(data_root, tmp_path, queue):
    """A queue enqueued from an older order of the cells (or holding a re-queued trial at its end) is claimed in
    the order of the plan the worker loaded: setup, then cell by cell, a finished pre-training's fine-tunes before
    the next cell's pre-training."""
    from optuna.trial import TrialState

    from electra_bench.config import load_suite
    from electra_bench.suite import make_plan
    from electra_bench.worker import Deps

    text = SUITE.replace("  - label: random init", "  - label: lr 2e-3\n    set: {{pretrain.lr: 2.0e-3}}\n"
                                                      "  - label: random init")
    plan = make_plan(load_suite(write_suite(tmp_path, unique("order"), data_root, text)), data_root)
    for u in reversed(plan.units):  # the queue of a suite whose cells were in the other order
        queue.enqueue(u.kind, u.key)
    queue.enqueue("setup", "setup:s")
    deps, claimed = Deps(plan), []
    while (t := queue.claim(deps.ready, deps.order)) is not None:
        claimed.append(t.user_attrs["run_key"])
        if t.user_attrs["kind"] == "pretrain":  # its fine-tunes become claimable
            queue.finish(t, TrialState.COMPLETE, 0.0)
    cells = [[u.cell.label, u.kind] for u in plan.units]
    assert cells == [["ELECTRA", "pretrain"], *[["ELECTRA", "finetune"]] * 4, ["lr 2e-3", "pretrain"],
                     *[["lr 2e-3", "finetune"]] * 4, *[["random init", "finetune"]] * 4]
    assert claimed == ["setup:s", *(u.key for u in plan.units)]


def test_duplicate_entries_run_once(queue):
    from optuna.trial import TrialState

    queue.enqueue("setup", "setup:s")
    queue.enqueue("setup", "setup:s")  # two workers started together
    first, second = queue.claim(lambda t, ts: True), queue.claim(lambda t, ts: True)
    assert queue.duplicate_of(first) is None and queue.duplicate_of(second) == "trial 0 holds it"
    queue.finish(first, TrialState.COMPLETE, 0.0)
    queue.enqueue("finetune", "u")
    done = queue.claim(lambda t, ts: True)
    queue.finish(done, TrialState.COMPLETE, 1.0, record={"run_key": "u"})
    queue.enqueue("finetune", "u")
    assert queue.duplicate_of(queue.claim(lambda t, ts: True)) == f"done by trial {done.number}"


def test_expired_lease_requeues_the_unit(queue):
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    queue.enqueue("pretrain", "p", cell="ELECTRA")
    dead = queue.claim(lambda t, ts: True)
    with queue.lease.hold(queue.trial_id(dead)):
        queue.lease.reclaim(queue.study)  # beating: nothing to reclaim
        assert queue.trials()[0].state == TrialState.RUNNING
    time.sleep(1.6)  # no heartbeat for longer than grace_s
    queue.lease.reclaim(queue.study)
    trials = queue.trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[1].user_attrs["run_key"] == "p" and trials[1].user_attrs["cell"] == "ELECTRA"
    assert trials[1].system_attrs["failed_trial"] == dead.number
    with pytest.raises(UpdateFinishedTrialError):  # the lost holder cannot complete it any more
        queue.finish(dead, TrialState.COMPLETE, 1.0, record={})
    assert queue.claim(lambda t, ts: True).number == trials[1].number


def test_append_if_absent_writes_a_run_key_once(tmp_path):
    rec = {"suite": "s", "unit": "pretrain", "run_key": "k1", "cell": "c", "axes": {}, "task": None, "seed": 0,
           "metrics": {}, "flags": [], "code_version": "1"}
    path = tmp_path / "records.jsonl"
    assert append_record(path, rec, if_absent=True)
    assert not append_record(path, {**rec, "metrics": {"x": 1.0}}, if_absent=True)
    assert append_record(path, {**rec, "run_key": "k2"}, if_absent=True)
    assert [r["run_key"] for r in read_records(path, unique=False)] == ["k1", "k2"]


def test_cache_built_by_two_workers_at_once_is_published_once(tmp_path):
    """Two workers pre-training cells on one corpus pack it at the same moment, each into its own temp folder;
    the first rename wins, the second process keeps that one and drops its own copy."""
    from electra_bench.corpus import publish

    for pid in (1, 2):
        (tmp_path / f"corpus-k.{pid}.tmp").mkdir()
        (tmp_path / f"corpus-k.{pid}.tmp" / "data").write_text(f"from {pid}")
        publish(tmp_path / f"corpus-k.{pid}.tmp", tmp_path / "corpus-k")
    assert (tmp_path / "corpus-k" / "data").read_text() == "from 1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus-k"]


@pytest.mark.slow
def test_scale_out_benchmark_quick(tmp_path, monkeypatch):
    """benchmarks/scale_out.py --quick: 1 and 2 journal-file workers run the same tiny suite and write the same
    records; the report is complete (its timings mean nothing on a shared machine)."""
    import importlib
    import json

    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    rec = importlib.import_module("scale_out").main(["--quick", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "scale_out.json").read_text())
    assert saved["ratio_2_vs_1"] == pytest.approx(rec["ratio_2_vs_1"]) and saved["ratio_2_vs_1"] > 0
    assert saved["records_equal"] and saved["suite"]["units"] == 10
    assert [r["workers"] for r in saved["runs"]] == [1, 2]
    assert [sum(r["units_per_worker"]) for r in saved["runs"]] == [10, 10]
    assert saved["command"].startswith("python benchmarks/scale_out.py --quick")
    assert "ratio 2 workers / 1 worker" in (tmp_path / "scale_out.md").read_text()
