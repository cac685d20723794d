"""Optuna search over any dotted config path, scored by fine-tuned dev metrics.

A trial = the suite's first cell with the trial's values set (validated like any cell), pre-trained if its
pre-training is not already in the work dir (same run keys and folders as `run`, so trials share and resume
pre-trainings), then fine-tuned on the suite's tasks x seeds. Its value is the objective task's median headline
over seeds, or the GLUE score (mean of the GLUE tasks' medians); the direction comes from the metric registry.
The pruner sees the objective task's dev headline after every epoch of the first seed.

Storage: a journal file under the work dir by default (safe for several processes on one host), or an RDB URL.
SQLite is refused for more than one worker (its file locking serialises and fails under concurrent writers).
Several `electra-bench worker` processes share one study (worker.py): each runs `Study.optimize` on the shared
storage, trials whose worker died are re-queued (leases.py) and re-run, and the workers stop together once
`n_trials` trials are finished or running.
Tracking: one study run with a child run per trial (params = the trial's dotted paths and number; state tag).
Outputs: results/<suite>/search.jsonl (one line per finished trial), best.yaml (a suite snippet to `extends`),
and optimisation-history / importance plots.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from statistics import median

from .config import ConfigError, set_path
from .leases import LeaseTimes, open_storage, trial_id, worker_id
from .metrics import METRICS
from .runner import pretrain_lock
from .schema import RunConfig, SearchConfig
from .suite import Plan, pretrain_dir, upstream_of
from .tasks import TaskSpec, glue_tasks
from .tracking import make_tracker


def storage_for(cfg: SearchConfig, work_dir: Path, n_workers: int = 1):
    """The study's storage: `search.storage` (an RDB URL or a journal file path), else work/<suite>/optuna.journal.
    RDB storage gets Optuna's heartbeat, and a trial whose process died is re-queued (leases.py)."""
    import optuna

    if cfg.storage is not None and cfg.storage.startswith("sqlite"):
        if n_workers > 1:
            raise ConfigError("SQLite storage cannot serve several workers (concurrent writers fail on its file "
                              "lock); use the default journal file on one host, or PostgreSQL for many hosts",
                              None, None, "search.storage")
        return optuna.storages.RDBStorage(cfg.storage)
    return open_storage(cfg.storage, work_dir, LeaseTimes(heartbeat_s=60, grace_s=180))[0]


def direction(cfg: SearchConfig, tasks: Mapping[str, TaskSpec]) -> str:
    """Optuna's direction: the objective task's headline metric's (`tasks`: the suite's specs); GLUE is maximised."""
    if cfg.objective == "glue":
        return "maximize"
    return METRICS.get(tasks[cfg.objective].headline).direction


def make_sampler(cfg: SearchConfig, seed: int | None = None):
    """(sampler, pruner); `seed` overrides search.sampler_seed (each worker of a shared study needs its own, or
    they would all propose the same values)."""
    import optuna

    seed = cfg.sampler_seed if seed is None else seed
    samplers = {"tpe": lambda: optuna.samplers.TPESampler(seed=seed),
                "random": lambda: optuna.samplers.RandomSampler(seed=seed),
                "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed),
                "grid": lambda: optuna.samplers.GridSampler(_grid(cfg), seed=seed)}
    pruners = {"median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
               "hyperband": lambda: optuna.pruners.HyperbandPruner(), "none": lambda: optuna.pruners.NopPruner()}
    return samplers[cfg.sampler](), pruners[cfg.pruner]()


def _grid(cfg: SearchConfig) -> dict[str, list]:
    grid = {}
    for path, p in cfg.space.items():
        if p.type == "categorical":
            grid[path] = list(p.choices)
        elif p.step:
            n = int(round((p.high - p.low) / p.step))
            grid[path] = [p.low + i * p.step for i in range(n + 1)]
        else:
            raise ConfigError(f"grid search needs `step` or `choices` for '{path}'", None, None, "search.space")
    return grid


def suggest(trial, cfg: SearchConfig) -> dict:
    values = {}
    for path, p in cfg.space.items():
        if p.type == "categorical":
            values[path] = trial.suggest_categorical(path, p.choices)
        elif p.type == "int":
            values[path] = trial.suggest_int(path, int(p.low), int(p.high), step=int(p.step or 1))
        else:
            values[path] = trial.suggest_float(path, p.low, p.high, log=p.type == "logfloat",
                                               step=None if p.type == "logfloat" else p.step)
    return values


def trial_config(base: RunConfig, values: dict) -> RunConfig:
    data = base.model_dump(mode="json")
    for path, value in values.items():
        data = set_path(data, tuple(path.split(".")), value)
    return RunConfig.model_validate(data)


def score(cfg: SearchConfig, per_task: dict[str, list[float]], tasks: Mapping[str, TaskSpec]) -> float:
    """The trial's objective: the median over seeds of the objective task, or the mean of the GLUE tasks' medians."""
    if cfg.objective != "glue":
        return median(per_task[cfg.objective])
    glue = glue_tasks(tasks[t] for t in per_task)
    return sum(median(per_task[t]) for t in glue) / len(glue)


@dataclass(frozen=True)
class Shared:
    """A worker's share of a study: the shared storage, its lease, and the study's MLflow run made by setup."""

    storage: object
    lease: object  # leases.Lease
    study_run_id: str | None


def run_search(plan: Plan, n_trials: int | None = None, show_progress: bool = True, shared: Shared | None = None):
    """Run (or resume) the suite's study, alone or as one of several workers (`shared`); returns the Study."""
    import optuna

    suite = plan.suite.config
    cfg = suite.search
    if cfg is None:
        raise ConfigError("the suite has no `search:` block", str(plan.suite.path), None, "search")
    if cfg.objective != "glue" and cfg.objective not in suite.tasks:
        raise ConfigError(f"search objective '{cfg.objective}' is not one of the suite's tasks {suite.tasks}",
                          str(plan.suite.path), None, "search.objective")
    sampler, pruner = make_sampler(cfg, _worker_seed(cfg.sampler_seed) if shared else None)
    name = cfg.study_name or suite.name
    storage = shared.storage if shared else storage_for(cfg, plan.work_dir)
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                                direction=direction(cfg, plan.suite.tasks), load_if_exists=True)
    total = n_trials or cfg.n_trials
    tracker = make_tracker(suite.tracking.uri, suite.name, suite.tracking.enabled, plan.work_dir)
    out = plan.records_path.parent
    out.mkdir(parents=True, exist_ok=True)
    study_run_ctx = nullcontext(tracker.handle(shared.study_run_id)) if shared else \
        tracker.run(f"study/{name}", f"study:{name}", "study", None, {"suite": suite.name})
    with study_run_ctx as study_run:
        objective = lambda t: _objective(t, plan, cfg, tracker, study_run, show_progress)  # noqa: E731
        if shared:
            _optimize_shared(study, objective, cfg, total, shared, tracker)
        else:
            todo = total - len([t for t in study.trials if t.state.is_finished()])
            if todo > 0:
                study.optimize(objective, n_trials=todo, timeout=cfg.timeout_s, catch=(Exception,))
        _write_outputs(study, cfg, out, study_run)
    return study


def _worker_seed(seed: int) -> int:
    """A sampler seed per worker process, derived from search.sampler_seed (a shared study's order of trials
    depends on timing anyway, so it is not reproducible)."""
    import zlib

    return zlib.crc32(f"{seed}:{worker_id()}".encode())


def _counted(study) -> int:
    """Trials that count towards n_trials: all but the failed ones whose retry copy was enqueued."""
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    return sum(t.number not in retried for t in trials)


def _optimize_shared(study, objective, cfg: SearchConfig, total: int, shared: Shared, tracker) -> None:
    """Optimise with other workers until `total` trials are finished or running, then wait for the running ones,
    re-running any whose worker died. RDB storage: Study.optimize keeps the heartbeat and fails stale trials
    itself; journal storage: the lease does (leases.py)."""
    from optuna.trial import TrialState

    lease = shared.lease
    lease.requeue.on_lost.append(lambda st, t: tracker.mark_lost(f"trial:{st.study_name}:{t.number}",
                                                                 "worker lost (no heartbeat)"))

    def leased(trial):
        lease.reclaim(study)
        with lease.hold(trial_id(shared.storage, study, trial)):
            return objective(trial)

    run = objective if lease.native else leased

    def stop_at_total(st, _trial) -> None:
        if _counted(st) >= total:
            st.stop()

    deadline = None if cfg.timeout_s is None else time.monotonic() + cfg.timeout_s
    while deadline is None or time.monotonic() < deadline:
        lease.reclaim(study)
        trials = study.get_trials(deepcopy=False)
        waiting = any(t.state == TrialState.WAITING for t in trials)
        if _counted(study) < total or waiting:
            study.optimize(run, n_trials=1 if waiting else None, catch=(Exception,), callbacks=[stop_at_total],
                           timeout=None if deadline is None else max(1.0, deadline - time.monotonic()))
        elif any(t.state == TrialState.RUNNING for t in trials):
            time.sleep(2.0)  # other workers' last trials: wait, to re-run them if their worker dies
        else:
            return


def _objective(trial, plan: Plan, cfg: SearchConfig, tracker, study_run, show_progress: bool) -> float:
    import optuna

    from .units import Env, run_finetune, run_pretrain  # deferred: torch, for trials only

    suite = plan.suite.config
    values = suggest(trial, cfg)
    env = Env(plan.data_root, plan.work_dir, show_progress, Path(suite.work_dir) / "cache")
    key = f"trial:{trial.study.study_name}:{trial.number}"
    with tracker.run(f"trial/{trial.number}", key, "trial", study_run, {"suite": suite.name}) as run:
        run.log_params({**values, "trial": trial.number})
        try:
            run_cfg = trial_config(plan.suite.cells[0].config, values)
            source = None
            if run_cfg.needs_pretraining:
                folder = pretrain_dir(plan, upstream_of(run_cfg, plan.data_root))
                from .pretrain import checkpoint_dir  # deferred: torch

                source = checkpoint_dir(folder, run_cfg.finetune.checkpoint)
                with pretrain_lock(folder):  # shared with `run`, other trials and workers: same key, same folder
                    if not source.exists():
                        run_pretrain(run_cfg, env, folder, run.log_metrics)
                source = str(source)
            elif run_cfg.finetune.init != "random":
                source = run_cfg.finetune.init
            per_task: dict[str, list[float]] = {}
            for task in suite.tasks:
                spec = plan.suite.tasks[task]
                for i, seed in enumerate(suite.seeds):
                    report = task == (cfg.objective if cfg.objective != "glue" else suite.tasks[0]) and i == 0
                    log = _pruning_log(trial, run, f"dev/{spec.headline}") if report else run.log_metrics
                    res = run_finetune(run_cfg, spec, seed, env, source, log)
                    per_task.setdefault(task, []).append(res["headline"])
            value = score(cfg, per_task, plan.suite.tasks)
            run.log_metrics({"objective": value, **{f"median/{t}": median(v) for t, v in per_task.items()}})
            run.set_tags({"state": "COMPLETE"})
            return value
        except optuna.TrialPruned:
            run.set_tags({"state": "PRUNED"})
            raise
        except Exception as exc:
            run.set_tags({"state": "FAIL", "error": f"{type(exc).__name__}: {exc}"[:5000]})
            raise


def _pruning_log(trial, run, metric: str):
    import optuna

    epoch = [0]

    def log(metrics: dict, step: int) -> None:
        run.log_metrics(metrics, step)
        if metric in metrics:
            trial.report(metrics[metric], epoch[0])
            epoch[0] += 1
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch[0]}: {metric} = {metrics[metric]:.3f}")
    return log


def _write_outputs(study, cfg: SearchConfig, out: Path, study_run) -> None:
    import yaml

    lines = [json.dumps({"trial": t.number, "state": t.state.name, "value": t.value, "params": t.params,
                         "error": t.system_attrs.get("fail_reason")}) for t in study.trials if t.state.is_finished()]
    _write_atomic(out / "search.jsonl", "\n".join(lines) + ("\n" if lines else ""))
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if not complete:
        return
    best = study.best_trial
    snippet = {}
    for path, value in best.params.items():
        snippet = set_path(snippet, ("base", *path.split(".")), value)
    header = f"# best trial {best.number} of study '{study.study_name}': {cfg.objective} = {best.value:.4f}\n"
    _write_atomic(out / "best.yaml", header + yaml.safe_dump(snippet, sort_keys=False))
    study_run.log_metrics({"best_value": best.value, "n_complete": len(complete)})
    study_run.log_artifact(out / "best.yaml")
    _plots(study, out, study_run)


def _write_atomic(path: Path, text: str) -> None:
    """Workers sharing a study each write the outputs when they stop: a reader never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _plots(study, out: Path, study_run) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as vis

    for name, fn in (("optimization_history", vis.plot_optimization_history),
                     ("param_importances", vis.plot_param_importances)):
        try:
            ax = fn(study)
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue  # importances need >= 2 complete trials with varying params
        path = out / f"search_{name}.png"
        ax.figure.savefig(path, dpi=110, bbox_inches="tight")
        study_run.log_artifact(path)
