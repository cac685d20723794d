"""Crash safety of a whole suite run, with real process kills, and failure isolation.

A tiny suite (cells ELECTRA and random init; tasks SST-2 and CoNLL-2003; seeds 0 and 1: one pre-training of 60
steps with saved states at 25/50/100% and eight fine-tunes) runs as `python -m electra_bench.cli run` in a child
process that is killed with SIGKILL twice, then run to completion:

  run 1  killed during pre-training, as soon as its first saved state (work/<suite>/pretrain/<key>/state.pt) exists;
  run 2  resumes pre-training from that state, finishes it, and is killed between fine-tunes, as soon as the
         records file has two lines (the pre-training and one fine-tune);
  run 3  runs what is left.

One chain of three runs instead of two independent pairs: each child process pays ~7 s of imports and MLflow
store setup on the shared 2-core machine, and run 2 is both "the re-run after a kill in pre-training" and "the run
killed between fine-tunes". The tests then check that every unit completed exactly once (records and MLflow), that
pre-training resumed rather than restarted, that a re-run of the finished suite trains nothing, and that a unit
that raises is reported as failed while the others finish (exit status 1).
"""
from __future__ import annotations

import collections
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_suite_e2e import TINY_HEAD, make_data_root

from electra_bench import cli
from electra_bench.config import load_suite
from electra_bench.results import TornRecordWarning, read_records
from electra_bench.runner import suite_run_name
from electra_bench.suite import make_plan

REPO = Path(__file__).resolve().parents[1]
STEPS = 60  # saved states at 15, 30 and 60 (checkpoint fractions); evals at 20, 40, 60; train/loss every 3 steps
LOG_EVERY = 3  # units.settings_for: min(50, max(1, steps // 20))

SUITE = TINY_HEAD + """\
  pretrain: {{steps: {steps}, batch_size: 4, eval_every: 20, eval_batches: 1, checkpoints: [0.25, 0.5, 1.0]}}
  finetune: {{epochs: 1, batch_size: 8, lr: 1.0e-3}}
cells:
{cells}
tasks: [sst2, conll2003]
seeds: [0, 1]
"""
BOTH_CELLS = "  - label: ELECTRA\n  - label: random init\n    set: {finetune.init: random}"
RANDOM_ONLY = "  - label: random init\n    set: {finetune.init: random}"


def write_suite(tmp: Path, name: str, data_root: Path, cells: str = BOTH_CELLS, steps: int = STEPS) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(SUITE.format(name=name, root=data_root, work=tmp / "work", results=tmp / "results",
                                 steps=steps, cells=cells))
    return path


def records_path(tmp: Path, name: str) -> Path:
    return tmp / "results" / name / "records.jsonl"


def mlflow_runs(tmp: Path, name: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp / 'work' / name / 'mlflow.db'}")
    exp = client.get_experiment_by_name(name)
    return client.search_runs([exp.experiment_id], max_results=1000)


def runs_per_key(runs) -> collections.Counter:
    return collections.Counter(r.data.tags["run_key"] for r in runs)


def read_all(path: Path) -> list[dict]:
    """Every record line (duplicates kept); a torn final line would be a TornRecordWarning, turned into an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", TornRecordWarning)
        return read_records(path, unique=False)


# ------------------------------------------------------------------------------------------ child processes


class Child:
    """`electra-bench run SUITE --no-progress` in a child process, its stdout and stderr in one log file."""

    def __init__(self, suite: Path, log: Path):
        self.log = log
        env = {**os.environ, "OMP_NUM_THREADS": "1",  # the 2 shared cores: one intra-op thread is far faster
               "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
        with open(log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "electra_bench.cli", "run", str(suite),
                                          "--no-progress"], stdout=out, stderr=subprocess.STDOUT, env=env,
                                         cwd=suite.parent)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def kill_when(self, condition, what: str, timeout: float = 180) -> None:
        """Poll `condition` every 10 ms; SIGKILL the child as soon as it holds."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                pytest.fail(f"the run exited with {self.proc.returncode} before {what}:\n{self.text()[-3000:]}")
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                pytest.fail(f"no {what} after {timeout} s:\n{self.text()[-3000:]}")
            time.sleep(0.01)
        os.kill(self.proc.pid, signal.SIGKILL)
        assert self.proc.wait(timeout=60) == -signal.SIGKILL

    def finish(self, timeout: float = 300) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"the run did not finish in {timeout} s:\n{self.text()[-3000:]}")


def n_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def state_step(path: Path) -> int:
    import torch

    return int(torch.load(path, map_location="cpu", weights_only=False)["step"])


def _fast_dir(tmp_path_factory, name: str):
    """A temp dir on tmpfs (/dev/shm) where there is one, else under pytest's tmp dir. Creating an MLflow SQLite
    store runs ~300 fsynced commits: ~6 s on this machine's disk, ~1 s on tmpfs. A SIGKILL (a process dying, not
    the machine) leaves the same files on both, so the crash tests test the same thing."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        path = Path(tempfile.mkdtemp(prefix=f"electra-bench-{name}-", dir=shm))
        yield path
        shutil.rmtree(path, ignore_errors=True)
    else:
        yield tmp_path_factory.mktemp(name)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume-data") / "data"
    make_data_root(root)  # (returns the vocab folder, not the root)
    return root


@pytest.fixture(scope="module")
def killed_dir(tmp_path_factory):
    yield from _fast_dir(tmp_path_factory, "resume")


@pytest.fixture
def fast_tmp(tmp_path_factory):
    yield from _fast_dir(tmp_path_factory, "test")


@pytest.fixture(scope="module")
def killed_twice(killed_dir, data_root):
    """Run the suite, kill it in pre-training, re-run and kill it between fine-tunes, re-run to completion."""
    tmp, name = killed_dir, "kill"
    suite = write_suite(tmp, name, data_root)
    records = records_path(tmp, name)
    pre_dir = tmp / "work" / "pretrain"  # shared by suites, by run key (suite.pretrain_dir)

    run1 = Child(suite, tmp / "run1.log")
    run1.kill_when(lambda: any(pre_dir.glob("*/state.pt")), "a saved pre-training state")
    (state,) = pre_dir.glob("*/state.pt")
    step_at_kill_1 = state_step(state)
    lines_after_1 = n_lines(records)

    run2 = Child(suite, tmp / "run2.log")
    run2.kill_when(lambda: n_lines(records) >= 2, "two records")
    lines_after_2 = records.read_bytes()

    run3 = Child(suite, tmp / "run3.log")
    code3 = run3.finish()
    return SimpleNamespace(tmp=tmp, name=name, suite=suite, records=records, state=state,
                           step_at_kill_1=step_at_kill_1, lines_after_1=lines_after_1, lines_after_2=lines_after_2,
                           code3=code3, log3=run3.text(), logs=[run1.text(), run2.text(), run3.text()])


# ---------------------------------------------------------------------------------------------- the kill chain


@pytest.mark.slow
def test_completes_after_two_kills(killed_twice):
    k = killed_twice
    assert k.code3 == 0, "\n".join(k.logs)[-5000:]
    plan = make_plan(load_suite(k.suite))
    assert len(plan.units) == 1 + 2 * 2 * 2
    assert all(u.status == "done" for u in plan.units)


@pytest.mark.slow
def test_kill_during_pretraining_resumes_from_saved_state(killed_twice):
    k = killed_twice
    assert k.lines_after_1 == 0, "run 1 was killed after its pre-training finished"
    assert k.step_at_kill_1 in (15, 30), k.step_at_kill_1  # a mid-way state, not the final one
    assert state_step(k.state) == STEPS
    pre = [r for r in read_all(k.records) if r["unit"] == "pretrain"]
    assert len(pre) == 1 and pre[0]["steps"] == STEPS
    # Its time is the whole run's: run 2's plus run 1's training loop up to the state it resumed from.
    import torch

    loop_s = torch.load(k.state, map_location="cpu", weights_only=False)["wall_s"]
    assert pre[0]["resumed_at_step"] == k.step_at_kill_1 and "wall_s_partial" not in pre[0]
    assert 0 < loop_s <= pre[0]["wall_s"]
    assert all((k.state.parent / f"checkpoint-{p}pct" / "config.json").is_file() for p in (25, 50, 100))
    # Resumed, not restarted: train/loss points up to the saved step were logged by run 1 only. (Points after it,
    # up to the kill, are logged again by run 2, which recomputes those steps from the saved state.)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{k.tmp / 'work' / k.name / 'mlflow.db'}")
    (run,) = [r for r in mlflow_runs(k.tmp, k.name) if r.data.tags["stage"] == "pretrain"]
    per_step = collections.Counter(m.step for m in client.get_metric_history(run.info.run_id, "train/loss"))
    early = range(LOG_EVERY, k.step_at_kill_1 + 1, LOG_EVERY)
    assert [per_step[s] for s in early] == [1] * len(early), per_step
    assert set(per_step) == set(range(LOG_EVERY, STEPS + 1, LOG_EVERY))


@pytest.mark.slow
def test_kill_between_finetunes_keeps_finished_records(killed_twice):
    k = killed_twice
    n = k.lines_after_2.count(b"\n")
    assert 2 <= n < 9, "run 2 was not killed between fine-tunes"
    final = k.records.read_bytes()
    assert final.startswith(k.lines_after_2)  # records are only appended, never rewritten
    # "-> [k/N done] unit"
    unit_lines = [line.split("] ", 1)[-1] for line in k.log3.splitlines() if line.startswith("-> ")]
    assert not any(u.startswith("pretrain/") for u in unit_lines)  # run 3 only fine-tunes
    assert sum(u.startswith("finetune/") for u in unit_lines) == 9 - n


@pytest.mark.slow
def test_every_unit_recorded_exactly_once(killed_twice):
    k = killed_twice
    records = read_all(k.records)
    keys = collections.Counter(r["run_key"] for r in records)
    assert max(keys.values()) == 1, keys
    plan = make_plan(load_suite(k.suite))
    assert set(keys) == {u.key for u in plan.units}
    assert len(records) == len(plan.units) == len(read_records(k.records))
    assert not k.records.with_name("records.jsonl.torn").exists()


@pytest.mark.slow
def test_mlflow_has_one_run_per_key(killed_twice):
    k = killed_twice
    runs = mlflow_runs(k.tmp, k.name)
    counts = runs_per_key(runs)
    assert max(counts.values()) == 1, counts
    stages = collections.Counter(r.data.tags["stage"] for r in runs)
    assert stages == {"suite": 1, "cell": 2, "pretrain": 1, "finetune": 8}
    assert all(r.info.status == "FINISHED" for r in runs), [(r.info.run_name, r.info.status) for r in runs]


@pytest.mark.slow
def test_rerun_of_finished_suite_trains_nothing(killed_twice, monkeypatch, capsys):
    k = killed_twice
    import electra_bench.units as units

    def no_training(*args, **kwargs):
        raise AssertionError("a finished suite started training")

    monkeypatch.setattr(units, "run_pretrain", no_training)  # runner imports them from units per unit
    monkeypatch.setattr(units, "run_finetune", no_training)
    before, runs_before = k.records.read_bytes(), len(mlflow_runs(k.tmp, k.name))
    t0 = time.perf_counter()
    assert cli.main(["run", str(k.suite), "--no-progress"]) == 0
    elapsed = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert "9 done, 0 to run" in err and "-> " not in err
    assert k.records.read_bytes() == before
    assert len(mlflow_runs(k.tmp, k.name)) == runs_before
    assert elapsed < 20, elapsed  # ~0.2 s on an idle machine; generous for the shared one


@pytest.mark.slow
def test_resumed_units_log_each_metric_point_once(killed_twice):
    """Run 2 resumed pre-training from its saved state and re-ran the steps after it: each (metric, step) point
    is in MLflow once, not once per run that computed it (issue #17)."""
    from mlflow.tracking import MlflowClient

    k = killed_twice
    client = MlflowClient(tracking_uri=f"sqlite:///{k.tmp / 'work' / k.name / 'mlflow.db'}")
    twice = []
    for run in mlflow_runs(k.tmp, k.name):
        for key in run.data.metrics:
            steps = collections.Counter(m.step for m in client.get_metric_history(run.info.run_id, key))
            twice += [(run.info.run_name, key, s) for s, n in steps.items() if n > 1]
    assert twice == [], twice[:10]


# -------------------------------------------------------------------------- kills at the very end (issue #17)

KILLED_AT = """
import os, sys
from electra_bench import cli, results, runner
point = sys.argv[2]
if point == "after_record_append":  # SIGKILL right after the line is written (nothing after it runs)
    real = results.append_record
    def append_record(*a, **kw):
        real(*a, **kw)
        os._exit(137)
    results.append_record = append_record
else:  # after the last record: in the cell summary, or in the final render
    def die(*a, **kw):
        os._exit(137)
    name = {"last_cell_summary": "log_cell_summary", "final_render": "render"}[point]
    assert hasattr(runner, name), name  # the kill point must exist, or the test would test nothing
    setattr(runner, name, die)
sys.exit(cli.main(["run", sys.argv[1], "--no-progress"]))
"""


def _killed_at(suite: Path, point: str, log: Path) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    with open(log, "wb") as out:
        return subprocess.run([sys.executable, "-c", KILLED_AT, str(suite), point], stdout=out,
                              stderr=subprocess.STDOUT, env=env, cwd=suite.parent, timeout=300).returncode


def _one_unit_suite(tmp: Path, name: str, data_root: Path) -> Path:
    suite = write_suite(tmp, name, data_root, RANDOM_ONLY)
    suite.write_text(suite.read_text().replace("tasks: [sst2, conll2003]\nseeds: [0, 1]", "tasks: [sst2]\nseeds: [0]"))
    return suite


@pytest.mark.slow
@pytest.mark.parametrize("point", ["last_cell_summary", "final_render"])
def test_kill_at_the_very_end_leaves_no_running_run(point, fast_tmp, data_root):
    """Killed after its last record (in the cell summary) or while rendering the tables, a run leaves the suite
    run and the cell run RUNNING; the re-run, with nothing left to train, closes them."""
    name = f"end-{point.replace('_', '-')}"
    suite = _one_unit_suite(fast_tmp, name, data_root)
    assert _killed_at(suite, point, fast_tmp / "killed.log") == 137, (fast_tmp / "killed.log").read_text()[-3000:]
    assert len(read_all(records_path(fast_tmp, name))) == 1
    running = [r.info.run_name for r in mlflow_runs(fast_tmp, name) if r.info.status == "RUNNING"]
    assert suite_run_name(name) in running, running  # the state the re-run must repair
    rerun = Child(suite, fast_tmp / "rerun.log")
    assert rerun.finish() == 0, rerun.text()[-3000:]
    assert "1 done, 0 to run" in rerun.text()
    runs = mlflow_runs(fast_tmp, name)
    assert [(r.info.run_name, r.info.status) for r in runs if r.info.status != "FINISHED"] == []
    assert max(runs_per_key(runs).values()) == 1
    assert len(read_all(records_path(fast_tmp, name))) == 1


@pytest.mark.slow
def test_kill_right_after_the_record_append_keeps_the_shared_unit_entry(fast_tmp, data_root):
    """The unit store entry (work/units/<key>.json, what other suites adopt) is written before the record line, so a
    kill right after the append cannot leave a recorded unit that another suite would train again."""
    name = "after-append"
    suite = _one_unit_suite(fast_tmp, name, data_root)
    assert _killed_at(suite, "after_record_append", fast_tmp / "killed.log") == 137, \
        (fast_tmp / "killed.log").read_text()[-3000:]
    (record,) = read_all(records_path(fast_tmp, name))
    stored = fast_tmp / "work" / "units" / f"{record['run_key']}.json"
    assert stored.exists() and json.loads(stored.read_text()) == record


@pytest.mark.slow
def test_a_credentialed_tracking_uri_leaves_no_secret_behind(fast_tmp, data_root):
    """A run against an `mlflow server` reached as http://user:<password>@host (the password has '/' and '@'):
    the secret is in no output, record, file under work/ or results/, MLflow artifact, param or tag (issue #17)."""
    import socket
    from urllib.parse import quote

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server_dir = fast_tmp / "server"
    server_dir.mkdir()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                               f"sqlite:///{server_dir / 'mlflow.db'}", "--artifacts-destination",
                               str(server_dir / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
                               "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
                              cwd=server_dir, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "the mlflow server did not start"
                time.sleep(0.5)
        secret = "pa/ss@w0rd-7Qx"
        uri = f"http://alice:{quote(secret, safe='')}@127.0.0.1:{port}"
        suite = _one_unit_suite(fast_tmp, "secret", data_root)
        suite.write_text(suite.read_text() + f"tracking: {{uri: '{uri}'}}\n")
        child = Child(suite, fast_tmp / "run.log")
        assert child.finish() == 0, child.text()[-3000:]
        forms = {secret.encode(), quote(secret, safe="").encode(), quote(secret).encode()}
        leaks = [str(p) for p in fast_tmp.rglob("*") if p.is_file() and p != suite
                 and any(f in p.read_bytes() for f in forms)]
        assert leaks == [], leaks  # run.log (stdout + stderr), records, work/, the server's store and artifacts
        assert (server_dir / "artifacts").exists() and any((server_dir / "artifacts").rglob("suite.yaml"))
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


# ---------------------------------------------------------------------------------------- failure isolation


def test_failing_unit_is_reported_and_the_rest_finish(fast_tmp, data_root, capsys):
    """A task file deleted after `validate` fails its units (exit 1, reason printed); the others finish, and a
    re-run after the file is back runs only the failed units, reusing their MLflow runs."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = shutil.copytree(data_root, fast_tmp / "data")
        suite = write_suite(fast_tmp, "fail", root, cells=RANDOM_ONLY)
        assert cli.main(["validate", str(suite)]) == 0
        dev = root / "conll2003" / "validation.txt"
        saved = dev.read_bytes()
        dev.unlink()
        capsys.readouterr()

        assert cli.main(["run", str(suite), "--no-progress"]) == 1
        err = capsys.readouterr().err
        failed = [line for line in err.splitlines() if line.startswith("FAILED: finetune random init conll2003")]
        assert len(failed) == 2, err[-3000:]
        assert all("validation.txt" in line for line in failed), failed
        records = read_all(records_path(fast_tmp, "fail"))
        assert sorted((r["task"], r["seed"]) for r in records) == [("sst2", 0), ("sst2", 1)]
        runs = mlflow_runs(fast_tmp, "fail")
        status = collections.Counter((r.data.tags.get("task"), r.info.status) for r in runs
                                     if r.data.tags["stage"] == "finetune")
        assert status == {("sst2", "FINISHED"): 2, ("conll2003", "FAILED"): 2}

        dev.write_bytes(saved)
        assert cli.main(["run", str(suite), "--no-progress"]) == 0
        err = capsys.readouterr().err
        assert "2 done, 2 to run" in err and "FAILED" not in err
        records = read_all(records_path(fast_tmp, "fail"))
        assert len(records) == len({r["run_key"] for r in records}) == 4
        runs = mlflow_runs(fast_tmp, "fail")
        assert max(runs_per_key(runs).values()) == 1
        assert all(r.info.status == "FINISHED" for r in runs)
    finally:
        torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------ the overhead benchmark


def test_suite_overhead_benchmark_quick(tmp_path, fast_tmp, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    monkeypatch.setattr(tempfile, "tempdir", str(fast_tmp))  # the benchmark's own temp work dir: see _fast_dir
    import torch

    threads = torch.get_num_threads()
    try:
        bench = importlib.import_module("suite_overhead")
        rec = bench.main(["--quick", "--threads", "1", "--out", str(tmp_path / "out"), "--no-cli-rerun"])
    finally:
        torch.set_num_threads(threads)
    saved = json.loads((tmp_path / "out" / "suite_overhead.json").read_text())
    assert saved == json.loads(json.dumps(rec))
    first, cached = saved["first_run"], saved["cached_rerun"]
    assert first["units_run"] == saved["suite"]["units"] == 5
    assert 0 < first["training_s"] < first["wall_s"]
    assert 0 <= first["overhead_frac"] < 1 and first["overhead_frac_strict"] >= first["overhead_frac"]
    assert cached["units_run"] == 0 and cached["records_unchanged"] and cached["in_process_s"] > 0
    assert saved["command"].startswith("python benchmarks/suite_overhead.py --quick")
    md = (tmp_path / "out" / "suite_overhead.md").read_text()
    assert saved["command"] in md and "overhead" in md and saved["machine"]["date"] in md
    assert not Path(saved["work_dir"]).exists(), "the temporary work dir was not removed"


def test_suite_overhead_help(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    with pytest.raises(SystemExit) as exit_:
        importlib.import_module("suite_overhead").main(["--help"])
    assert exit_.value.code == 0
    assert "How to read the output" in capsys.readouterr().out


def test_resumed_progress_eta_counts_only_this_processs_steps(monkeypatch, capsys):
    """A pre-training resumed at step 90 of 100 that does 5 steps in 100 s has 5 left at 20 s each: eta 100 s, not
    the ~5 s a rate of 95 steps / 100 s would say."""
    from electra_bench import progress

    clock = iter([0.0, 100.0])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    with progress.bar(100, "pretrain", enabled=False, done=90) as b:
        b.update(5)
    assert "[pretrain] 95/100 (95%) eta 100s" in capsys.readouterr().err
