"""The claim queue on an Optuna storage: workers (worker.py) enqueue, claim, hold and finish trials here.

A trial is one piece of work; its `kind` and `run_key` are user attrs (nothing is sampled). Claiming moves a WAITING
trial to RUNNING, which both storages do atomically (RDB: a row lock; journal: the first RUNNING entry in the log
wins), as `Study.ask` pops enqueued trials. The holder of a trial sends a heartbeat every `heartbeat_s`; a RUNNING
trial without one for `grace_s` is failed by the first worker to notice, and a WAITING copy is enqueued by Optuna's
`RetryHeartbeatStaleTrialCallback` (at most MAX_RETRY times). RDB storage: Optuna's heartbeat table
(`heartbeat_interval`, `grace_period`, `fail_stale_trials`; the database's clock). Journal storage (one host, one
clock): the same lease kept in a trial system attr. A holder that lost its lease cannot finish its trial.
"""
from __future__ import annotations

import os
import socket
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from .config import ConfigError
from .tracking import mask_credentials

QUEUE = "units:{}"  # the study holding a suite's units
ONCE = ("pretrain", "finetune")  # units complete once; "setup" and "finalize" may run again in a later session
HEARTBEAT = "lease:heartbeat"  # journal lease: unix time of the holder's last heartbeat (trial system attr)
MAX_RETRY = 3  # a unit whose worker dies more often than this (an OOM kill, say) stays failed


@dataclass(frozen=True)
class LeaseTimes:
    heartbeat_s: int = 10  # seconds between a holder's heartbeats
    grace_s: int = 60  # seconds without one after which a trial is re-queued


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _quiet_optuna() -> None:
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)


class Requeue:
    """Called with each trial that lost its worker: enqueue a WAITING copy, then run the `on_lost` hooks."""

    def __init__(self):
        self.retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
        self.on_lost: list = []

    def __call__(self, study, trial) -> None:
        key = trial.user_attrs.get("run_key")
        log(f"worker {worker_id()}: trial {trial.number}{f' ({key})' if key else ''} lost its worker; re-queued")
        self.retry(study, trial)
        for hook in self.on_lost:
            hook(study, trial)


class Lease:
    """Heartbeats for the trial a worker holds, and the re-queueing of trials whose holder stopped beating."""

    def __init__(self, storage, times: LeaseTimes, requeue: Requeue):
        self.storage, self.times, self.requeue = storage, times, requeue
        self.native = isinstance(storage, optuna.storages.RDBStorage)  # Optuna's heartbeat (optimize uses it too)

    def beat(self, tid: int) -> None:
        if self.native:
            self.storage.record_heartbeat(tid)
        else:
            self.storage.set_trial_system_attr(tid, HEARTBEAT, time.time())

    @contextmanager
    def hold(self, tid: int):
        stop = threading.Event()

        def beats() -> None:
            while not stop.wait(self.times.heartbeat_s):
                try:
                    self.beat(tid)
                except UpdateFinishedTrialError:
                    return  # lost: another worker failed it; completing it will fail too

        self.beat(tid)
        thread = threading.Thread(target=beats, name="lease-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def reclaim(self, study) -> None:
        """Fail every RUNNING trial of `study` whose holder stopped beating and re-queue it (first worker wins)."""
        if self.native:
            optuna.storages.fail_stale_trials(study)  # calls self.requeue, given to RDBStorage
            return
        now = time.time()
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            # a re-queued copy carries its dead original's heartbeat: count from its own claim (start) too
            last = max(t.system_attrs.get(HEARTBEAT, 0.0), t.datetime_start.timestamp() if t.datetime_start else now)
            if now - last <= self.times.grace_s:
                continue
            tid = trial_id(self.storage, study, t)
            try:
                self.storage.set_trial_state_values(tid, TrialState.FAIL)
            except UpdateFinishedTrialError:
                continue  # finished meanwhile, or another worker failed it first
            self.requeue(study, self.storage.get_trial(tid))


def trial_id(storage, study, trial) -> int:
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name),
                                                           trial.number)


def open_storage(url: str | None, work_dir: Path, times: LeaseTimes):
    """(storage, lease): an RDB URL -> RDBStorage with Optuna's heartbeat; else a journal file (default under
    work_dir). SQLite is refused: its file lock fails under concurrent writers."""
    _quiet_optuna()
    requeue = Requeue()
    if url is None or "://" not in url:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = Path(url) if url else work_dir / "optuna.journal"
        path.parent.mkdir(parents=True, exist_ok=True)
        storage = JournalStorage(JournalFileBackend(str(path)))
    elif url.startswith("sqlite"):
        raise ConfigError("SQLite storage cannot serve several workers (concurrent writers fail on its file "
                          "lock); use a journal file on one host, or PostgreSQL for many hosts", "--storage")
    else:
        storage = _rdb(url, times, requeue)
    return storage, Lease(storage, times, requeue)


def _rdb(url: str, times: LeaseTimes, requeue: Requeue):
    import sqlalchemy.exc

    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True},
                                              heartbeat_interval=times.heartbeat_s, grace_period=times.grace_s,
                                              heartbeat_stale_trial_callback=requeue)
        except ImportError as exc:  # the database driver (postgresql:// means psycopg 3 to SQLAlchemy 2.1)
            raise ConfigError(f"the driver for {mask_credentials(url)} is not installed ({exc}); for PostgreSQL: "
                              "pip install 'psycopg[binary]'", "--storage") from None
        except sqlalchemy.exc.OperationalError as exc:  # unreachable server, bad credentials
            raise ConfigError(f"cannot open the Optuna storage {mask_credentials(url)}: "
                              f"{mask_credentials(str(exc).splitlines()[0])[:300]}", "--storage") from None
        except sqlalchemy.exc.SQLAlchemyError:  # workers creating the schema at the same moment: the loser retries
            if attempt == 4:
                raise
            time.sleep(1 + attempt)


class Queue:
    """A study used as a claim queue: enqueue, claim atomically, finish; trials carry `kind` and `run_key`."""

    def __init__(self, storage, lease: Lease, name: str):
        self.storage, self.lease = storage, lease
        self.study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True)

    def trials(self, states=None) -> list:
        return self.study.get_trials(deepcopy=False, states=states)

    def trial_id(self, trial) -> int:
        return trial_id(self.storage, self.study, trial)

    def enqueue(self, kind: str, key: str, **attrs) -> None:
        self.study.enqueue_trial({}, user_attrs={"kind": kind, "run_key": key, **attrs})

    def claim(self, ready, order=None):
        """The first WAITING trial for which `ready(trial, trials)` holds, now RUNNING for us. First by `order(trial)`
        where given (the worker's plan order: a re-queued trial or a reordered suite is claimed where the plan puts
        it, not after every trial enqueued before it), then by number."""
        trials = self.trials()
        waiting = [t for t in trials if t.state == TrialState.WAITING]
        for t in sorted(waiting, key=order) if order else waiting:  # sorted is stable: by number within a rank
            if not ready(t, trials):
                continue
            tid = self.trial_id(t)
            try:
                if not self.storage.set_trial_state_values(tid, TrialState.RUNNING):
                    continue  # another worker was first
            except UpdateFinishedTrialError:
                continue
            self.storage.set_trial_user_attr(tid, "worker", worker_id())
            return self.storage.get_trial(tid)
        return None

    def duplicate_of(self, trial) -> str | None:
        """Why `trial` must not run: a lower-numbered live trial holds its key, or (units) one completed it."""
        key = trial.user_attrs["run_key"]
        for t in self.trials():
            if t.number == trial.number or t.user_attrs.get("run_key") != key:
                continue
            if t.state == TrialState.COMPLETE and trial.user_attrs["kind"] in ONCE:
                return f"done by trial {t.number}"
            if t.number < trial.number and t.state in (TrialState.WAITING, TrialState.RUNNING):
                return f"trial {t.number} holds it"
        return None

    def finish(self, trial, state, value: float | None = None, **attrs) -> None:
        """Set user attrs, then the final state; raises UpdateFinishedTrialError if our lease was lost."""
        tid = self.trial_id(trial)
        for k, v in attrs.items():
            self.storage.set_trial_user_attr(tid, k, v)
        self.storage.set_trial_state_values(tid, state, None if value is None else [value])

    def give_up(self, trial, state, value: float | None = None, **attrs) -> None:
        """`finish`, where a lost lease is fine (the trial is another worker's now)."""
        try:
            self.finish(trial, state, value, **attrs)
        except UpdateFinishedTrialError:
            pass

    def release(self, trial) -> None:
        """Hand a trial back at once (Ctrl-C): FAIL it and enqueue a WAITING copy, as for a dead worker."""
        self.give_up(trial, TrialState.FAIL, error="worker interrupted")
        self.lease.requeue(self.study, self.storage.get_trial(self.trial_id(trial)))

    def latest_record(self, kind: str) -> dict:
        """The record of the latest COMPLETE trial of `kind` ({} if none)."""
        done = [t for t in self.trials((TrialState.COMPLETE,)) if t.user_attrs.get("kind") == kind]
        return done[-1].user_attrs.get("record", {}) if done else {}
