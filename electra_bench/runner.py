"""Execute a suite's plan: pre-train cells, fine-tune task x seed, append records, render tables.

Each finished unit appends its record at once (atomic line append), so a kill loses at most the unit in flight;
a failing unit is recorded as failed with its reason and the suite goes on (its dependants are blocked), and the
run's exit status says so.
"""
from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path

from . import results as results_mod
from .config import ConfigError, flatten
from .metrics import METRICS
from .paths import path_part
from .robustness import GENERATOR_CHECKPOINT, RobustSettings
from .suite import (
    Plan,
    Unit,
    as_planned,
    base_record,
    cell_digest,
    encoder_source,
    failed_units,
    failure_reason,
    model_dir,
    planned_cells,
    pretrain_dir,
    store_record,
    stored_record,
    timed,
    unit_record,
    unit_store,
    upstream_of,
)
from .tables import render_all
from .tracking import environment_info, make_tracker
from .verdicts import judge

# work/<suite>/tracking.open: a run opened the suite's MLflow runs and has not closed them (killed, even after its
# last record): the next `run` enters every cell run and the suite run again, which closes them (FINISHED).
OPEN_MARK = "tracking.open"
FAILURES = "failures.jsonl"  # work/<suite>/failures.jsonl: failed units and why (plan shows them)
# A saved fine-tuned model goes into MLflow only up to this size: ELECTRA-Small (14M params, ~55 MB fp32) and the
# CPU-scale models fit, Base (110M, ~440 MB) and Large do not; their folder stays under work/<suite>/models/.
MAX_MODEL_ARTIFACT_BYTES = 200_000_000


def render(plan: Plan) -> list[Path]:
    """The suite's tables and plots from its records, with the plan's failed and blocked units counted in them;
    nothing (no paths) while neither a record nor a failure exists."""
    records = as_planned(plan, results_mod.read_records(plan.records_path) if plan.records_path.exists() else [])
    failures = failed_units(plan)
    if not records and not failures:
        return []
    spec = plan.suite.table_spec
    return render_all(records, spec, plan.records_path.parent, judge(records, spec), failures, planned_cells(plan))


def resolved_config(plan: Plan) -> str:
    """The suite after extends, scale and --set, with every cell's full run config (what actually ran)."""
    import yaml

    data = plan.suite.config.model_dump(mode="json")
    data["resolved_cells"] = {c.label: c.config.model_dump(mode="json") for c in plan.suite.cells}
    return yaml.safe_dump(data, sort_keys=False)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_plan(plan: Plan, show_progress: bool = True) -> list[Unit]:
    """Run every pending unit; returns the units that failed or were blocked.

    One process at a time per suite (a lock file in the work dir): a second `run` exits with a clear error."""
    cfg = plan.suite.config
    pending = [u for u in plan.units if u.status != "done"]
    _log(f"suite {cfg.name}: {len(plan.units)} units, {len(plan.units) - len(pending)} done, "
         f"{len(pending)} to run")
    left_open = (plan.work_dir / OPEN_MARK).exists()
    if not pending and not left_open:  # fully cached: no tracker, no training imports
        render(plan)
        return []
    plan.work_dir.mkdir(parents=True, exist_ok=True)
    with suite_lock(plan.work_dir / "run.lock"):
        return _run_pending(plan, show_progress, reopen=left_open)


@contextmanager
def suite_lock(path: Path, shared: bool = False):
    """`run` holds the suite's lock alone; workers (worker.py) hold it `shared`, so the two never mix."""
    import fcntl

    with open(path, "a") as f:
        try:
            fcntl.flock(f, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"another `electra-bench run` or worker holds {path}; wait for it or stop "
                              f"it") from None
        yield


def _run_pending(plan: Plan, show_progress: bool, reopen: bool = False) -> list[Unit]:
    from .units import Env  # deferred, as every units/torch import here: a fully cached run never loads torch

    cfg = plan.suite.config
    env = Env(plan.data_root, plan.work_dir, show_progress, Path(cfg.work_dir) / "cache")
    tracker = make_tracker(cfg.tracking.uri, cfg.name, cfg.tracking.enabled, plan.work_dir)
    plan.records_path.parent.mkdir(parents=True, exist_ok=True)
    failed_pretrain: dict[str, str] = {}
    bad: list[Unit] = []
    mark = plan.work_dir / OPEN_MARK
    mark.write_text("the suite's MLflow runs are open\n")
    with suite_run_of(plan, tracker) as suite_run:
        for cell in plan.cells:
            units = [u for u in plan.units if u.cell is cell]
            if all(u.status == "done" for u in units) and not reopen:
                continue
            with cell_run_of(plan, tracker, cell, suite_run) as cell_run:
                for unit in units:
                    if unit.status == "done":
                        continue  # pending, and failed ones from an earlier run (retried)
                    up = upstream_of(cell.config, plan.data_root)
                    if unit.kind == "finetune" and up in failed_pretrain:
                        unit.status, unit.reason = "blocked", f"pre-training failed: {failed_pretrain[up]}"
                        bad.append(unit)
                        continue
                    ok = run_unit(plan, unit, env, tracker, cell_run)
                    if not ok:
                        bad.append(unit)
                        if unit.kind == "pretrain":
                            failed_pretrain[unit.key] = unit.reason
                log_cell_summary(plan, cell, cell_run)
        for path in render(plan):
            suite_run.log_artifact(path, "tables")
    mark.unlink(missing_ok=True)  # the suite run and every cell run are closed
    return bad


@contextmanager
def suite_run_of(plan: Plan, tracker):
    """The suite's MLflow run (found by its run key, else created), with the suite file and environment logged."""
    name = plan.suite.config.name
    with tracker.run(suite_run_name(name), f"suite:{name}", "suite") as suite_run:
        suite_run.log_text(plan.suite.path.read_text(), "suite.yaml")
        suite_run.log_text(resolved_config(plan), "resolved_config.yaml")
        suite_run.log_text(environment_info(), "environment.json")
        yield suite_run


@contextmanager
def cell_run_of(plan: Plan, tracker, cell, suite_run):
    """A cell's MLflow run under the suite run, with the cell's whole config as params."""
    name = plan.suite.config.name
    with tracker.run(cell.short_label, f"cell:{name}:{cell_digest(cell)}", "cell", suite_run,
                     run_tags(plan, cell)) as cell_run:
        cell_run.log_params({**flatten(cell.config.model_dump(mode="json")), "cell.label": cell.label})
        yield cell_run


def run_unit(plan: Plan, unit: Unit, env, tracker, cell_run, commit=None) -> bool:
    """Run (or adopt) one unit and write its record; `commit(record)` replaces the append (a worker's
    exactly-once write). Returns False (unit.status "failed", the reason in failures.jsonl) if the unit raised."""
    write = commit or (lambda record: results_mod.append_record(plan.records_path, record))
    name = unit_name(unit)
    counts = {s: sum(u.status == s for u in plan.units) for s in ("done", "failed", "blocked")}
    progress = f"[{counts['done']}/{len(plan.units)} done" \
        + (f", {counts['failed']} failed" if counts["failed"] else "") \
        + (f", {counts['blocked']} blocked" if counts["blocked"] else "") + "]"
    _log(f"-> {progress} {name}")
    with _unit_lock(plan, unit):  # two suites sharing a pre-training: the second waits, then adopts it
        shared = stored_record(plan, unit)
        if shared is not None:
            _adopt(plan, unit, shared, tracker, cell_run, write)
            return True
        return _execute(plan, unit, env, tracker, cell_run, write)


def unit_name(unit: Unit) -> str:
    """<stage>/<cell label>[/<task>/seed<k>]: the unit's log line (and worker queue entry); its MLflow run name is
    `unit_run_name`."""
    return f"{unit.kind}/{unit.cell.run_label}" + (f"/{unit.task}/seed{unit.seed}" if unit.kind == "finetune" else "")


# MLflow run names lead with what tells a run apart from its neighbours, because the UI's runs table cuts names at
# about 12 characters: a fine-tune with its task and seed (`sst2 s0 · ELECTRA 0.25`), a cell and its pre-training
# with the cell's short label (config.Cell.short_label), the suite run with the suite's name. Everything a name
# leaves out is a tag (`run_tags`: suite, stage, cell, pretrain_seed, task, seed) or a param.
SEP = " · "


def suite_run_name(suite: str) -> str:
    return f"{suite}{SEP}suite"


def unit_run_name(unit: Unit) -> str:
    if unit.kind == "finetune":
        return f"{unit.task} s{unit.seed}{SEP}{unit.cell.short_label}"
    return f"{unit.kind}{SEP}{unit.cell.short_label}"


def run_tags(plan: Plan, cell, unit: Unit | None = None) -> dict[str, str]:
    """The tags of a cell's run and of its units' runs: what their names shorten, in full."""
    tags = {"suite": plan.suite.config.name, "cell": cell.label}
    if cell.pretrain_seed is not None:
        tags["pretrain_seed"] = str(cell.pretrain_seed)
    if unit is not None and unit.kind == "finetune":
        tags |= {"task": unit.task, "seed": str(unit.seed)}
    return tags


@contextmanager
def _unit_lock(plan: Plan, unit: Unit):
    if unit.kind != "pretrain":
        yield
        return
    with pretrain_lock(pretrain_dir(plan, unit.key)):
        yield


@contextmanager
def pretrain_lock(folder: Path):
    """One process at a time pre-trains into `folder` (suites and search trials sharing a run key, one host)."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder.with_suffix(".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _pretrain_wall(wall: float, out: dict) -> dict:
    """A pre-training's wall_s: this process's plus the training time of the processes it resumed from (a resumed
    run also names its `resumed_at_step`). Resumed from a state that did not keep that time, wall_s is this
    process's only and `wall_s_partial` says so (eta.py leaves such records out of its rates)."""
    if not out.get("resumed_at"):
        return {"wall_s": wall}
    prior = out.get("prior_wall_s")
    return {"wall_s": wall + (prior or 0.0), "resumed_at_step": out["resumed_at"],
            **({"wall_s_partial": True} if prior is None else {})}


def _execute(plan: Plan, unit: Unit, env, tracker, cell_run, write) -> bool:
    from .units import run_finetune, run_pretrain  # deferred: torch

    cell = unit.cell
    try:
        if unit.kind == "pretrain":
            with tracker.run(unit_run_name(unit), unit.key, "pretrain", cell_run, run_tags(plan, cell, unit)) as run:
                run.log_params(flatten(cell.config.model_dump(mode="json")))
                run.log_dataset("corpus", ",".join(cell.config.corpus.sources), unit.key, "training")
                out, wall = timed(lambda: run_pretrain(cell.config, env, pretrain_dir(plan, unit.key),
                                                       run.log_metrics))
                cell_run.log_metrics({f"rtd/{k}": v for k, v in out["metrics"].items()}, out["steps"])
            record = unit_record(plan, unit, out["metrics"], [], train_flops=out["train_flops"], params=out["params"],
                                 steps=out["steps"], precision=cell.config.pretrain.precision,
                                 flops_convention=cell.config.pretrain.flops_convention,
                                 **_pretrain_wall(wall, out), train_tokens=out["train_tokens"],
                                 **{k: v for k, v in out.items() if k.startswith("train_flops_")},
                                 **({"evals": out["evals"]} if out["evals"] else {}))
        else:
            spec = plan.suite.tasks[unit.task]
            with tracker.run(unit_run_name(unit), unit.key, "finetune", cell_run, run_tags(plan, cell, unit)) as run:
                run.log_params({**flatten(cell.config.model_dump(mode="json")["finetune"], "finetune."),
                                "task": unit.task, "seed": unit.seed, "upstream": encoder_source(plan, cell)})
                for split in ("train", spec.dev_splits[0]):
                    run.log_dataset(f"{unit.task}/{split}", str(spec.file_path(split, plan.data_root)),
                                    f"{spec.name}:{spec.version}", "training" if split == "train" else "evaluation")
                preds_dir = plan.work_dir / "predictions" / path_part(cell.label)
                robust = robust_settings(plan)  # None unless the suite has a `robustness:` section
                out, wall = timed(lambda: run_finetune(cell.config, spec, unit.seed, env,
                                                       encoder_source(plan, cell), run.log_metrics, preds_dir,
                                                       robust, model_dir(plan, unit.key)))
                run.log_metrics(final_metrics(out["metrics"]), out["steps"])
                saved = {k: v for k, v in out.items() if k.startswith("saved_model")}
                if saved:
                    log_model(run, Path(saved["saved_model"]))
            record = unit_record(plan, unit, out["metrics"], out["flags"], headline_metric=spec.headline,
                                 headline=out["headline"], higher_is_better=METRICS.get(spec.headline).higher_is_better,
                                 n_train=out["n_train"], n_dev=out["n_dev"], wall_s=wall,
                                 dev_predictions=results_mod.write_predictions_file(
                                     plan.records_path.parent, unit.key, out["dev_predictions"]), **saved)
        store_record(plan, record)  # first: a kill between the two leaves a record another suite can adopt
        write(record)
        unit.status = "done"
        _log(f"   done in {wall:.0f}s: " + json.dumps({k: round(v, 4) for k, v in list(out['metrics'].items())[:6]}))
        return True
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # one failing unit never stops the suite
        unit.status, unit.reason = "failed", failure_reason(exc)
        _log(f"   FAILED: {unit.reason}")
        with open(plan.work_dir / FAILURES, "a") as f:
            f.write(json.dumps({"run_key": unit.key, "unit": unit.kind, "cell": cell.label, "task": unit.task,
                                "seed": unit.seed, "reason": unit.reason}) + "\n")
        return False


def log_model(run, folder: Path) -> None:
    """A saved fine-tuned model (`finetune.save_model`) as the `model/` artifact of its MLflow run, unless it is over
    MAX_MODEL_ARTIFACT_BYTES; the run is tagged with the folder either way."""
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    logged = size <= MAX_MODEL_ARTIFACT_BYTES
    if logged:
        run.log_artifacts(folder, "model")
    run.set_tags({"saved_model": str(folder), "saved_model_artifact": "model" if logged else
                  f"not logged: {size / 1e6:.0f} MB > {MAX_MODEL_ARTIFACT_BYTES / 1e6:.0f} MB"})


def robust_settings(plan: Plan) -> RobustSettings | None:
    """The fine-tunes' robustness settings (robustness.py), None without a `robustness:` section. A generator
    pre-trained before generators were saved is exported from its final training state once."""
    cfg, cell = plan.suite.config.robustness, plan.suite.generator
    if cfg is None:
        return None
    if cell is None:
        return RobustSettings(tuple(cfg.kinds), tuple(cfg.rates), cfg.seed)
    from .pretrain import GENERATOR_DIR, checkpoint_dir  # deferred: torch

    out_dir = pretrain_dir(plan, upstream_of(cell.config, plan.data_root))
    ckpt = checkpoint_dir(out_dir, GENERATOR_CHECKPOINT)
    if (ckpt / "config.json").is_file() and not (ckpt / GENERATOR_DIR).is_dir() and (out_dir / "state.pt").is_file():
        from .units import export_generator  # deferred: torch

        export_generator(cell.config, out_dir, ckpt)
    return RobustSettings(tuple(cfg.kinds), tuple(cfg.rates), cfg.seed, ckpt / GENERATOR_DIR, cell.label)


def final_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """A fine-tune's end metrics as MLflow shows them: `final/<metric>`, and the robustness metrics under their own
    names (`robust/<kind>/<rate>/<metric>`, `robust_drop/...`: already namespaced, logged once)."""
    return {(k if k.startswith("robust") else "final/" + k): v for k, v in metrics.items()}


def _adopt(plan: Plan, unit: Unit, shared: dict, tracker, cell_run, write) -> None:
    """Take a unit another suite already ran (same run key): its record, re-labelled for this suite and cell;
    its numbers, code version and wall time stay those of the run that made them."""
    here = base_record(plan, unit)
    own = shared["suite"] == here["suite"] and "shared_from" not in shared  # stored, then killed before the append
    record = {**shared, **{k: here[k] for k in ("suite", "cell", "label", "axes", "pretrain_seed")}}
    if not own:
        record["shared_from"] = shared.get("shared_from", shared["suite"])
    tags = {**run_tags(plan, unit.cell, unit), "shared_from": record.get("shared_from", record["suite"])}
    with tracker.run(unit_run_name(unit), unit.key, unit.kind, cell_run, tags) as run:
        metrics = final_metrics(record["metrics"]) if unit.kind == "finetune" else record["metrics"]
        run.log_metrics(metrics, record.get("steps") or 0)
    write(record)
    unit.status = "done"
    _log(f"   recorded: finished before a kill, record taken from {unit_store(plan)}" if own else
         f"   shared: finished earlier in suite {record['shared_from']} (same run key), record adopted")


def log_cell_summary(plan: Plan, cell, cell_run) -> None:
    """Seed-aggregated task scores on the cell run (median over seeds, the paper's statistic)."""
    if not plan.records_path.exists():
        return
    records = [r for r in results_mod.read_records(plan.records_path) if r.get("cell") == cell.label
               and (cell.pretrain_seed is None or r.get("pretrain_seed") == cell.pretrain_seed)]
    stats = results_mod.aggregate([r for r in records if r["unit"] == "finetune"])
    cell_run.log_metrics({f"median/{s.task}": s.median for s in stats if s.median is not None})
