"""Experiment tracking. The only module that imports mlflow (DESIGN.md principle 6).

Layout (one experiment per suite): suite run -> cell runs (pre-training config, RTD metrics, seed-aggregated
task scores; one per cell and pretraining seed when the suite lists `pretrain_seeds`) -> fine-tune runs (task x
seed). Nesting is MLflow's parent-run tag. Run names lead with what differs between neighbours, since the UI cuts
them at about 12 characters (`sst2 s0 · ELECTRA 0.25`, `ELECTRA 0.25 p1`, `<suite> · suite`; runner.py), and a
re-opened run takes the current name; the `stage`, `cell`, `pretrain_seed`, `task` and `seed` tags say it in full.
Params are dotted config paths, so the UI's parallel-coordinates and scatter charts can use them as axes. Every run
carries its run key as a tag; a re-run reuses the run with that key instead of creating a duplicate.
Finding-or-creating by key is not atomic in MLflow, so each key has one creator at a time: `run` holds the suite's
lock, and workers (worker.py) create a run only while holding the lease of the unit (or setup) it belongs to.

The interface is written once, as the `Tracker` and `Run` protocols below; `NullTracker` (tracking off, tests)
and `MlflowTracker` implement them, and `make_tracker` picks one. The tracking URI is always explicit: an embedded
SQLite store under the work dir by default, or a server URL. URLs are logged with credentials masked.
"""
from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .config import ConfigError
from .redact import mask, mask_logging, remember
from .suite import code_version

MAX_PARAM_CHARS = 6000  # MLflow 3 param value limit


@runtime_checkable
class Run(Protocol):
    """One tracked run (suite, cell, unit or trial). `id` is None when nothing is stored (NullRun). Logging is
    idempotent where MLflow allows it: params already set are not sent again; metrics are appended at `step`."""

    id: str | None

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None: ...
    def log_params(self, params: dict[str, Any]) -> None: ...  # dotted config paths -> values (truncated to fit)
    def log_artifact(self, path: str | Path, subdir: str | None = None) -> None: ...
    def log_artifacts(self, folder: str | Path, subdir: str | None = None) -> None: ...  # a folder's files, as is
    def log_text(self, text: str, name: str) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def log_dataset(self, name: str, source: str, digest: str, context: str) -> None: ...  # training / evaluation


@runtime_checkable
class Tracker(Protocol):
    """Where runs go; the runner, search and workers are handed one (`make_tracker`) and never import mlflow.

    `run(name, key, stage, parent, tags)` opens the run whose tag `run_key` is `key` (re-opening it when that key ran
    before, so a re-run never duplicates), nested under `parent`, tagged with `stage` (suite / cell / pretrain /
    finetune / trial) and `tags`; it is FINISHED when the block exits, FAILED (KILLED on Ctrl-C) when it raises.
    One process creates a given key at a time (module docstring). `finished(key)`: a FINISHED run with that key
    exists. `handle(run_id)`: an existing run by id (a worker logging under a run another process made).
    `mark_lost(key, reason)`: a RUNNING run whose worker died becomes KILLED with the reason."""

    uri: str | None

    def run(self, name: str, key: str, stage: str, parent: Run | None = None,
            tags: dict | None = None) -> AbstractContextManager[Run]: ...
    def finished(self, key: str) -> bool: ...
    def handle(self, run_id: str | None) -> Run: ...
    def mark_lost(self, key: str, reason: str) -> None: ...


mask_credentials = mask  # the one masker (redact.py): URLs, messages, artifacts


class NullRun:
    """A Run that stores nothing."""

    id = None

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        pass

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def log_artifact(self, path: str | Path, subdir: str | None = None) -> None:
        pass

    def log_artifacts(self, folder: str | Path, subdir: str | None = None) -> None:
        pass

    def log_text(self, text: str, name: str) -> None:
        pass

    def set_tags(self, tags: dict[str, str]) -> None:
        pass

    def log_dataset(self, name: str, source: str, digest: str, context: str) -> None:
        pass


class NullTracker:
    """Tracking switched off (`tracking.enabled: false`) or in tests that do not look at MLflow."""

    uri = None

    @contextmanager
    def run(self, name: str, key: str, stage: str, parent: Any = None, tags: dict | None = None) -> Iterator[NullRun]:
        yield NullRun()

    def finished(self, key: str) -> bool:
        return False

    def handle(self, run_id: str | None) -> NullRun:
        return NullRun()

    def mark_lost(self, key: str, reason: str) -> None:
        pass


class MlflowRun(NullRun):
    def __init__(self, client, run_id: str, logged: set | None = None):
        self.client, self.id = client, run_id
        self.logged = logged or set()  # (key, step, value) already in the run: a resumed unit logs them once

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()
                 if v is not None and (k, step, float(v)) not in self.logged]
        for i in range(0, len(batch), 1000):
            self.client.log_batch(self.id, metrics=batch[i:i + 1000])

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(self.id).data.params
        new = [Param(k, mask(str(v))[:MAX_PARAM_CHARS]) for k, v in params.items() if k not in existing]
        for i in range(0, len(new), 100):
            self.client.log_batch(self.id, params=new[i:i + 100])

    def log_artifact(self, path: str | Path, subdir: str | None = None) -> None:
        self.client.log_artifact(self.id, str(path), subdir)

    def log_artifacts(self, folder: str | Path, subdir: str | None = None) -> None:
        self.client.log_artifacts(self.id, str(folder), subdir)  # e.g. a saved HF model folder under `model/`

    def log_text(self, text: str, name: str) -> None:
        self.client.log_text(self.id, mask(text), name)  # suite.yaml, resolved config: tracking URIs masked

    def set_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.id, k, mask(str(v)))

    def log_dataset(self, name: str, source: str, digest: str, context: str) -> None:
        """A data file or corpus as a run input (the UI's Datasets column); context: training / evaluation."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        ds = Dataset(name=name, digest=digest[:36], source_type="local", source=source)
        self.client.log_inputs(self.id, [DatasetInput(ds, [InputTag("mlflow.data.context", context)])])


EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"  # the UI's own tag and value


class MlflowTracker:
    def __init__(self, uri: str, experiment: str, artifact_root: str | None = None):
        warnings.filterwarnings("ignore", module="sqlalchemy")
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.code_version = code_version()
        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            try:
                # The UI opens an experiment in the view its kind names; MLflow 3 guesses GenAI for a new one, which
                # hides the suite -> cell -> fine-tune runs until the user switches to model training.
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=artifact_root,
                                                                   tags={EXPERIMENT_KIND: MODEL_TRAINING})
                return
            except Exception:  # another worker created it between our look-up and create: use theirs
                exp = self.client.get_experiment_by_name(experiment)
                if exp is None:
                    raise
        self.experiment_id = exp.experiment_id

    def _find(self, key: str):
        runs = self.client.search_runs([self.experiment_id], filter_string=f"tags.run_key = '{key}'",
                                       max_results=5, order_by=["attributes.start_time DESC"])
        return runs[0] if runs else None

    def finished(self, key: str) -> bool:
        run = self._find(key)
        return run is not None and run.info.status == "FINISHED"

    def handle(self, run_id: str | None) -> MlflowRun | NullRun:
        """An existing run by id (a worker logging under the cell or suite run that setup created)."""
        return MlflowRun(self.client, run_id) if run_id else NullRun()

    def mark_lost(self, key: str, reason: str) -> None:
        """The run of a unit whose worker died: KILLED, with the reason (a re-claim reopens the same run)."""
        run = self._find(key)
        if run is not None and run.info.status == "RUNNING":
            self.client.set_tag(run.info.run_id, "error", mask(reason)[:5000])
            self.client.set_terminated(run.info.run_id, "KILLED")

    @contextmanager
    def run(self, name: str, key: str, stage: str, parent: MlflowRun | None = None,
            tags: dict | None = None) -> Iterator[MlflowRun]:
        """A run for `key`: the existing one if this key was run before (no duplicates), else a new one."""
        existing = self._find(key)
        all_tags = {"run_key": key, "stage": stage, "mlflow.runName": name, "code_version": self.code_version,
                    **(tags or {})}
        if parent is not None and parent.id:
            all_tags["mlflow.parentRunId"] = parent.id
        logged: set = set()
        if existing is not None:
            run_id = existing.info.run_id
            self.client.update_run(run_id, status="RUNNING", name=name)  # a store from before a naming change
            for metric in existing.data.metrics:  # a resumed or retried unit re-logs points: keep one of each
                logged.update((metric, m.step, m.value) for m in self.client.get_metric_history(run_id, metric))
        else:
            run_id = self.client.create_run(self.experiment_id, tags=all_tags, run_name=name).info.run_id
        handle = MlflowRun(self.client, run_id, logged)
        handle.set_tags({k: v for k, v in all_tags.items() if not k.startswith("mlflow.runName")})
        try:
            yield handle
        except BaseException:
            self.client.set_terminated(run_id, "FAILED" if not _interrupted() else "KILLED")
            raise
        self.client.set_terminated(run_id, "FINISHED")


def _interrupted() -> bool:
    import sys

    return isinstance(sys.exc_info()[1], KeyboardInterrupt)


def make_tracker(uri: str | None, experiment: str, enabled: bool, work_dir: Path) -> Tracker:
    """The suite's tracker; default store: sqlite:///<work_dir>/mlflow.db with artifacts beside it."""
    if not enabled:
        return NullTracker()
    work_dir.mkdir(parents=True, exist_ok=True)
    remember(uri)
    uri = uri or f"sqlite:///{(work_dir / 'mlflow.db').resolve()}"
    artifacts = (work_dir / "mlartifacts").resolve().as_uri() if uri.startswith("sqlite") else None
    try:
        with _store_lock(work_dir, uri.startswith("sqlite")):
            tracker = MlflowTracker(uri, experiment, artifacts)
        mask_logging()  # mlflow's own log handlers (its "View run at <url>" lines) exist once it is imported
        return tracker
    except Exception as exc:  # an unreachable server or unusable store: say which, with credentials masked
        raise ConfigError(f"cannot open the MLflow tracking store {mask_credentials(uri)}: "
                          f"{type(exc).__name__}: {mask_credentials(str(exc).splitlines()[0])[:300]}", None, None,
                          "tracking.uri") from None


@contextmanager
def _store_lock(work_dir: Path, needed: bool):
    """Processes opening one SQLite store at once (workers on one host) take turns: creating its tables is a chain
    of migrations that a second process running alongside breaks."""
    if not needed:
        yield
        return
    import fcntl

    with open(work_dir / "mlflow.db.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def environment_info() -> str:
    """Package versions and device, logged as an artifact of the suite run."""
    import platform
    from importlib import metadata

    import torch

    pkgs = ["torch", "transformers", "tokenizers", "datasets", "mlflow", "optuna", "seqeval", "pydantic", "numpy"]
    info = {"python": platform.python_version(), "platform": platform.platform(),
            "packages": {p: _version(metadata, p) for p in pkgs}, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    return json.dumps(info, indent=2)


def _version(metadata, name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
