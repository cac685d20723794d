"""Scale-out: `electra-bench worker` processes, on one host or many, share one suite or one search study.

No home-made scheduler (DESIGN.md, Scale-out): the queue is an Optuna study (`units:<suite>`) in an Optuna storage,
claimed and leased as leases.py describes. Storage: a journal file (one host), by default
`work/<suite>/optuna.journal`, or an RDB URL (PostgreSQL) for many hosts; SQLite is refused.
- Order: a worker claims the first claimable unit in its plan's order (cell by cell, a pre-training before its
  fine-tunes), whatever order the queue was enqueued in: reorder the cells to choose what runs next. A fine-tune is
  claimable once its pre-training's trial is COMPLETE (or its record was in the local records file when the worker
  started), so workers start the first cells' pre-trainings side by side and a finished one's fine-tunes come next.
  A worker with nothing claimable waits while trials run elsewhere (re-claiming them if their worker dies), and
  stops when none runs and every waiting trial is blocked (its pre-training failed).
- Setup and finalize are trials too. The one worker holding `setup` finds or creates the MLflow suite and cell runs
  and enqueues every pending unit with its cell run's id, then `finalize`; so no two workers create the same MLflow
  run and the hierarchy is the runner's (suite -> cell -> unit). `finalize` (cell summaries, tables) waits until
  every other trial is finished or blocked.
- Duplicates: workers starting together may each enqueue a setup. A claimed trial runs only if no lower-numbered
  trial with its key is WAITING or RUNNING and, for a unit, none is COMPLETE; otherwise it is PRUNED (user attr
  `skipped` says why). So one trial per key runs at a time, and a unit completes once.
- Records, exactly once: the record is stored as the trial's user attr `record`, the trial is set COMPLETE (which
  fails if the lease was lost: then nothing is written), then the record is appended to records.jsonl unless its
  run key is there (checked under the file's lock). Each worker when it stops, and `worker --collect`, append the
  records of COMPLETE trials the local file lacks, so hosts without a shared results dir end with the same records.
  Fine-tunes read pre-training checkpoints from the work dir, which several hosts must therefore share (NFS).
- Search suites: the search study itself is the queue (Optuna's distributed optimisation: each worker's
  `Study.optimize` pops WAITING trials or samples new ones); setup creates the MLflow study run once.
Multi-GPU training of one unit is `torchrun`/`accelerate launch` of that unit, not a worker's job (README).
"""
from __future__ import annotations

import time
from pathlib import Path

from optuna.trial import TrialState

from . import results as results_mod
from .config import ConfigError
from .leases import ONCE, QUEUE, LeaseTimes, Queue, log, open_storage, worker_id
from .runner import cell_run_of, log_cell_summary, render, run_unit, suite_lock, suite_run_of
from .search import Shared, run_search
from .suite import Plan, Unit, failure_reason, read_records_safe, upstream_of
from .tracking import make_tracker, mask_credentials

# --------------------------------------------------------------------------------------------- the worker loop


def run_worker(plan: Plan, storage_url: str | None, times: LeaseTimes = LeaseTimes(), poll_s: float = 2.0,
               show_progress: bool = False) -> list[Unit]:
    """Claim and run this suite's units until none is left to run; returns the units failed or blocked."""
    from .units import Env  # deferred: torch, loaded only when a unit is claimed

    cfg = plan.suite.config
    storage, lease = open_storage(storage_url, plan.work_dir, times)
    queue = Queue(storage, lease, QUEUE.format(cfg.name))
    tracker = make_tracker(cfg.tracking.uri, cfg.name, cfg.tracking.enabled, plan.work_dir)
    lease.requeue.on_lost.append(lambda study, t: tracker.mark_lost(t.user_attrs.get("run_key", ""),
                                                                    "worker lost (no heartbeat)"))
    env = Env(plan.data_root, plan.work_dir, show_progress, Path(cfg.work_dir) / "cache")
    where = mask_credentials(storage_url or str(plan.work_dir / "optuna.journal"))
    log(f"worker {worker_id()}: suite {cfg.name}, queue {QUEUE.format(cfg.name)} in {where}")
    plan.work_dir.mkdir(parents=True, exist_ok=True)
    deps = Deps(plan)
    with suite_lock(plan.work_dir / "run.lock", shared=True):
        _enqueue_setup(queue, plan)
        _drain(queue, deps, lambda t: _run_trial(t, queue, plan, env, tracker), poll_s)
    collect(plan, queue)
    return _unfinished(plan, queue, deps)


class Deps:
    """What each unit of the plan waits for: its pre-training's key (fine-tunes of pre-trained cells) or None;
    and which run keys count as done: COMPLETE in the study, or in the local records when the worker started."""

    def __init__(self, plan: Plan):
        self.upstream = {u.key: upstream_of(u.cell.config, plan.data_root)
                         if u.kind == "finetune" and u.cell.config.needs_pretraining else None for u in plan.units}
        self.local = {r["run_key"] for r in read_records_safe(plan.records_path)}
        self._rank = {u.key: i for i, u in enumerate(plan.units)}
        self._done: tuple[list, set[str]] = ([], set())

    def order(self, trial) -> tuple[int, int]:
        """Claim order: setup, then this plan's units in plan order (cell by cell, each pre-training before its
        fine-tunes), then finalize and trials not in this plan. So a finished pre-training's fine-tunes run before
        the pre-trainings of later cells (rows complete early), and moving a cell up the suite moves its units up
        the queue, even on a queue enqueued from an older order or holding a re-queued trial at its end."""
        kind, key = trial.user_attrs.get("kind"), trial.user_attrs.get("run_key")
        if kind == "setup":
            return (0, 0)
        return (1, self._rank[key]) if key in self._rank else (2, 0)

    def done(self, trials) -> set[str]:
        if self._done[0] is not trials:  # once per look at the queue, not once per waiting trial
            self._done = (trials, self.local | {t.user_attrs.get("run_key") for t in trials
                                                if t.state == TrialState.COMPLETE})
        return self._done[1]

    def ready(self, trial, trials) -> bool:
        kind, key = trial.user_attrs.get("kind"), trial.user_attrs.get("run_key")
        if kind == "setup":
            return True
        if kind == "finalize":
            others = [t for t in trials if t.user_attrs.get("kind") != "finalize"]
            return not any(t.state == TrialState.RUNNING for t in others) and \
                all(self.blocked(t, trials) for t in others if t.state == TrialState.WAITING)
        if key not in self.upstream:
            return False  # enqueued by a worker that loaded another version of the suite
        up = self.upstream[key]
        return up is None or up in self.done(trials)

    def blocked(self, trial, trials) -> bool:
        """Cannot become ready in this session: its pre-training failed for good, or it is not in our plan."""
        kind, key = trial.user_attrs.get("kind"), trial.user_attrs.get("run_key")
        if kind in ("setup", "finalize"):
            return False
        if key not in self.upstream:
            return True
        up = self.upstream[key]
        if up is None or up in self.done(trials):
            return False
        live = (TrialState.WAITING, TrialState.RUNNING)
        return not any(t.user_attrs.get("run_key") == up and t.state in live for t in trials)


def _drain(queue: Queue, deps: Deps, run, poll_s: float) -> None:
    """Claim and `run` ready trials until no trial runs anywhere and every waiting one is blocked."""
    while True:
        queue.lease.reclaim(queue.study)
        trial = queue.claim(deps.ready, deps.order)
        if trial is not None:
            try:
                with queue.lease.hold(queue.trial_id(trial)):
                    run(trial)
            except KeyboardInterrupt:
                queue.release(trial)
                raise
            continue
        trials = queue.trials()
        if not any(t.state == TrialState.RUNNING for t in trials) and \
                all(deps.blocked(t, trials) for t in trials if t.state == TrialState.WAITING):
            return
        time.sleep(poll_s)  # units run elsewhere: wait for them (and re-claim them if their worker dies)


def _live_keys(queue: Queue) -> set[str]:
    live = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE)
    return {t.user_attrs.get("run_key") for t in queue.trials() if t.state in live}


def _missing(queue: Queue, plan: Plan) -> list[Unit]:
    """Pending units (by the local records) without a waiting, running or complete trial: setup enqueues them."""
    live = _live_keys(queue)
    return [u for u in plan.units if u.status != "done" and u.key not in live]


def _enqueue_setup(queue: Queue, plan: Plan, search: bool = False) -> None:
    name = plan.suite.config.name
    setups = [t for t in queue.trials() if t.user_attrs.get("kind") == "setup"]
    if any(t.state in (TrialState.WAITING, TrialState.RUNNING) for t in setups):
        return
    needed = not queue.latest_record("setup") if search else bool(_missing(queue, plan))
    if needed:
        queue.enqueue("setup", f"setup:{name}")


def _run_trial(trial, queue: Queue, plan: Plan, env, tracker) -> None:
    why = queue.duplicate_of(trial)
    if why:
        queue.give_up(trial, TrialState.PRUNED, skipped=why)
        return
    kind = trial.user_attrs["kind"]
    if kind in ONCE:
        _run_unit_trial(trial, queue, plan, env, tracker)
        return
    try:
        record = _setup(queue, plan, tracker) if kind == "setup" else _finalize(trial, queue, plan, tracker)
    except Exception as exc:
        log(f"   {kind} FAILED: {failure_reason(exc)}")
        queue.give_up(trial, TrialState.FAIL, error=failure_reason(exc)[:5000])
        return
    queue.give_up(trial, TrialState.COMPLETE, 0.0, record=record)  # lost lease: another worker redoes it


def _run_unit_trial(trial, queue: Queue, plan: Plan, env, tracker) -> None:
    done = {t.user_attrs.get("run_key") for t in queue.trials((TrialState.COMPLETE,))}
    for u in plan.units:  # the progress line counts what every worker has done
        if u.key in done:
            u.status = "done"
    unit = next(u for u in plan.units if u.key == trial.user_attrs["run_key"])

    def commit(record: dict) -> None:  # exactly once: the trial completes (lease held), then the line is written
        queue.finish(trial, TrialState.COMPLETE, record.get("wall_s", 0.0), record=record)
        results_mod.append_record(plan.records_path, record, if_absent=True)

    if not run_unit(plan, unit, env, tracker, tracker.handle(trial.user_attrs.get("cell_run")), commit):
        queue.give_up(trial, TrialState.FAIL, error=unit.reason[:5000])


def _setup(queue: Queue, plan: Plan, tracker) -> dict:
    """Find or create the MLflow suite and cell runs, enqueue the missing units (pre-trainings first), then
    finalize. One worker at a time holds a setup, so no MLflow run is created twice."""
    name = plan.suite.config.name
    if plan.suite.config.search is not None:
        study = plan.suite.config.search.study_name or name
        with tracker.run(f"study/{study}", f"study:{study}", "study", None, {"suite": name}) as study_run:
            return {"study_run": study_run.id}
    missing = _missing(queue, plan)
    cell_runs: dict[str, str | None] = {}
    with suite_run_of(plan, tracker) as suite_run:
        for cell in plan.cells:
            if any(u.cell is cell and u.status != "done" for u in plan.units):
                with cell_run_of(plan, tracker, cell, suite_run) as cell_run:
                    cell_runs[cell.run_label] = cell_run.id
    for u in sorted(missing, key=lambda u: u.kind != "pretrain"):  # stable: plan order within each kind
        queue.enqueue(u.kind, u.key, cell=u.cell.label, task=u.task, seed=u.seed, pretrain_seed=u.cell.pretrain_seed,
                      cell_run=cell_runs[u.cell.run_label])
    queue.enqueue("finalize", f"finalize:{name}", suite_run=suite_run.id, cell_runs=cell_runs)
    log(f"   setup: {len(missing)} units queued")
    return {"suite_run": suite_run.id, "cell_runs": cell_runs, "queued": len(missing)}


def _finalize(trial, queue: Queue, plan: Plan, tracker) -> dict:
    """Collect every finished unit's record, log the cells' seed medians, render the tables (once per session)."""
    added = collect(plan, queue)
    for cell in plan.cells:
        run_id = trial.user_attrs.get("cell_runs", {}).get(cell.run_label)
        if run_id:
            log_cell_summary(plan, cell, tracker.handle(run_id))
    suite_run = tracker.handle(trial.user_attrs.get("suite_run"))
    paths = render(plan)
    for path in paths:
        suite_run.log_artifact(path, "tables")
    return {"collected": added, "tables": [str(p) for p in paths]}


def collect(plan: Plan, queue: Queue | None = None, storage_url: str | None = None) -> int:
    """Append to the local records file every COMPLETE unit's record it lacks; returns how many were added."""
    if queue is None:
        storage, lease = open_storage(storage_url, plan.work_dir, LeaseTimes())
        queue = Queue(storage, lease, QUEUE.format(plan.suite.config.name))
    added = 0
    for t in queue.trials((TrialState.COMPLETE,)):
        record = t.user_attrs.get("record")
        if t.user_attrs.get("kind") in ONCE and record:
            added += results_mod.append_record(plan.records_path, record, if_absent=True)
    return added


def _unfinished(plan: Plan, queue: Queue, deps: Deps) -> list[Unit]:
    """Units not done at the end, with why: the last failure of their trials, or a blocked pre-training."""
    trials = queue.trials()
    done = deps.done(trials)
    bad = []
    for unit in plan.units:
        if unit.key in done:
            unit.status = "done"
            continue
        mine = [t for t in trials if t.user_attrs.get("run_key") == unit.key]
        failed = [t for t in mine if t.state == TrialState.FAIL]
        if any(t.state == TrialState.WAITING for t in mine):
            unit.status, unit.reason = "blocked", "its pre-training did not finish"
        elif failed:
            unit.status, unit.reason = "failed", failed[-1].user_attrs.get("error", "worker lost")
        else:
            unit.status, unit.reason = "failed", "not queued (setup failed?)"
        bad.append(unit)
    return bad


# --------------------------------------------------------------------------------------------- search studies


def run_search_worker(plan: Plan, storage_url: str | None, times: LeaseTimes = LeaseTimes(),
                      n_trials: int | None = None, show_progress: bool = False):
    """One worker of the suite's search study: setup (the MLflow study run, once), then Study.optimize."""
    cfg = plan.suite.config
    storage, lease = open_storage(storage_url or cfg.search.storage, plan.work_dir, times)
    queue = Queue(storage, lease, QUEUE.format(cfg.name))
    tracker = make_tracker(cfg.tracking.uri, cfg.name, cfg.tracking.enabled, plan.work_dir)
    log(f"worker {worker_id()}: search study of suite {cfg.name}")
    _enqueue_setup(queue, plan, search=True)
    _drain(queue, Deps(plan), lambda t: _run_trial(t, queue, plan, None, tracker), 1.0)
    study_run = queue.latest_record("setup").get("study_run")
    if study_run is None and cfg.tracking.enabled:
        raise ConfigError("the search setup (creating the MLflow study run) failed; see the log above",
                          "--tracking-uri")
    return run_search(plan, n_trials, show_progress, Shared(storage, lease, study_run))
