"""A suite, expanded into units with run keys, and executed with skip / resume / failure isolation.

Units: one pre-training per cell (unless the cell fine-tunes a random or external encoder), then one fine-tune
per (task, seed). A unit's run key hashes everything that determines its result:
- the semantic part of its resolved config (NON_SEMANTIC paths left out: they change logging, not results),
- the identity of its data: corpus file names and sizes, the vocab file's digest, the task spec and its version,
- CODE_VERSION (bumped by hand when a change alters training results; the git commit goes into records as
  provenance, not into keys, so an unrelated commit does not invalidate finished work),
- for a fine-tune, the run key of the pre-training it starts from.
Finished units are found through their records and skipped; an interrupted pre-training resumes from its state.

Pretraining seeds (`pretrain_seeds`, MultiBERTs): each pre-trained cell is copied once per seed with `pretrain.seed`
set (`seed_cells`), so each copy has its own pre-training key and fine-tune keys; the seed that equals the cell's
own `pretrain.seed` keeps the keys it had without the list. Cells that do not pre-train (random init, an external
encoder) are not copied: their encoder initialisation is drawn by the fine-tuning seed. Every record carries
`pretrain_seed` (None for those cells); records written before the field existed are read as one seed. MLflow:
one cell run per (cell, pretraining seed), named `cell/<label>/pretrain_seed<k>`, under the suite run.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from . import results as results_mod
from .claims import CellInfo
from .config import Cell, Suite
from .robustness import PERTURB_VERSION
from .schema import RunConfig
from .tasks import TaskSpec, default_data_root

CODE_VERSION = "1"  # bump when a change alters what a unit computes
# Per-algorithm versions, in the pre-training key only for the algorithm named (other keys stay): bump when a change
# alters what that algorithm computes. two_stage 2: G truly frozen in stage two (issue 14); 3: FLOPs (so the steps
# that spend a `budget_flops`) count stage one as G alone and stage two as G forward + D, not both trained every step.
ALGORITHM_VERSIONS = {"two_stage": "3"}
NON_SEMANTIC = ("pretrain.eval_every", "pretrain.eval_batches", "pretrain.log_every", "pretrain.device",
                "finetune.device", "finetune.save_model",  # where a unit runs, what it also writes
                # speed-only GPU options (issue 15): other kernels for the same arithmetic, like `device`
                "pretrain.fused_adam", "pretrain.compile", "pretrain.sdpa_backend")
# Semantic fields added after results were keyed: left out of the key at these values (what the code did before
# they existed), so finished units keep their keys; any other value changes it.
KEYED_UNLESS_DEFAULT = {"pretrain.tf32": True, "pretrain.grad_accumulation": 1,
                        "pretrain.flops_convention": "official", "pretrain.temperature_end": None}
# Fields added after results were keyed whose earlier behaviour was another field's value: left out of the key
# when equal to it (fine-tuning used the pre-training dropout before finetune.dropout existed).
KEYED_UNLESS_EQUAL = {"finetune.dropout": "model.dropout",
                      "finetune.attention_dropout": "model.attention_dropout"}
PRETRAIN_SECTIONS = ("model", "tokenizer", "corpus", "pretrain")


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _semantic(run: RunConfig, sections: tuple[str, ...]) -> dict:
    data = {s: run.model_dump(mode="json")[s] for s in sections}
    for path in NON_SEMANTIC:
        sec, key = path.split(".")
        if sec in data:
            data[sec].pop(key, None)
    for path, before in KEYED_UNLESS_DEFAULT.items():
        sec, key = path.split(".")
        if sec in data and data[sec].get(key) == before:
            data[sec].pop(key)
    for path, other in KEYED_UNLESS_EQUAL.items():
        sec, key = path.split(".")
        if sec in data and _field(run, path) == _field(run, other):
            data[sec].pop(key)
    return data


def _field(run: RunConfig, path: str):
    sec, key = path.split(".")
    return getattr(getattr(run, sec), key)


def data_identity(run: RunConfig, data_root: Path) -> dict:
    """Corpus files (names, sizes) and the vocab file's size: what the data side of a pre-training key sees."""
    import glob

    files = []
    for pattern in run.corpus.sources:
        full = pattern if Path(pattern).is_absolute() else str(data_root / pattern)
        files += [f"{Path(p).name}:{Path(p).stat().st_size}" for p in sorted(glob.glob(full))]
    vocab = Path(run.tokenizer.vocab)
    vocab = vocab if vocab.is_absolute() else data_root / vocab
    return {"corpus": files, "vocab": vocab.stat().st_size if vocab.exists() else None}


def pretrain_key(run: RunConfig, data_root: Path) -> str:
    ident = {"code": CODE_VERSION, "config": _semantic(run, PRETRAIN_SECTIONS), "data": data_identity(run, data_root)}
    if (version := ALGORITHM_VERSIONS.get(run.pretrain.algorithm)) is not None:
        ident["algorithm_version"] = version
    return _digest(ident)


TASK_PRESENTATION = {"glue"}  # TaskSpec fields that change how results are shown, not what a fine-tune computes


def finetune_key(run: RunConfig, spec: TaskSpec, seed: int, upstream: str, robustness: dict | None = None) -> str:
    """`upstream`: the pre-training key, or the encoder source ('random' + model/tokenizer, a path, a hub id).
    `robustness`: robustness_identity of the suite; None (no `robustness:` section) leaves the key as it was."""
    ident = {"code": CODE_VERSION, "finetune": _semantic(run, ("finetune",)), "upstream": upstream,
             "task": spec.model_dump(mode="json", exclude=TASK_PRESENTATION), "seed": seed}
    return _digest(ident if robustness is None else {**ident, "robustness": robustness})


def upstream_of(run: RunConfig, data_root: Path) -> str:
    if run.needs_pretraining:
        return pretrain_key(run, data_root)
    if run.finetune.init == "random":
        return "random:" + _digest(_semantic(run, ("model", "tokenizer")) | {"data": data_identity(run, data_root)})
    return f"external:{run.finetune.init}"


@dataclass
class Unit:
    kind: str  # "pretrain" | "finetune"
    cell: Cell
    key: str
    task: str | None = None
    seed: int | None = None
    status: str = "pending"  # pending | done | failed | blocked (a fine-tune whose pre-training failed)
    reason: str = ""


@dataclass
class Plan:
    suite: Suite
    data_root: Path
    units: list[Unit] = field(default_factory=list)
    cells: list[Cell] = field(default_factory=list)  # seed_cells(suite): one per (cell, pretraining seed)

    @property
    def records_path(self) -> Path:
        return Path(self.suite.config.results_dir) / self.suite.config.name / "records.jsonl"

    @property
    def work_dir(self) -> Path:
        return Path(self.suite.config.work_dir) / self.suite.config.name


def robustness_identity(suite: Suite, data_root: Path) -> dict | None:
    """What a fine-tune run key sees of the suite's `robustness:` section (robustness.py); None without one (keys of
    other suites do not change). The generator enters by its pre-training key, so two suites naming one generator by
    different labels agree."""
    cfg = suite.config.robustness
    if cfg is None:
        return None
    return {**cfg.model_dump(mode="json", exclude={"generator_cell"}), "version": PERTURB_VERSION,
            "generator": pretrain_key(suite.generator.config, data_root) if suite.generator is not None else None}


def cell_digest(cell: Cell) -> str:
    """A cell's identity for its MLflow run: its whole resolved config (not the order of its units)."""
    return _digest(cell.config.model_dump(mode="json"))


def failures(work_dir: Path) -> dict[str, str]:
    """run_key -> reason of the last failure, from work/<suite>/failures.jsonl (the runner appends to it)."""
    path = work_dir / "failures.jsonl"
    out: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line from a kill: the unit simply shows as pending
            out[rec["run_key"]] = rec["reason"]
    return out


def seed_cells(suite: Suite) -> list[Cell]:
    """The suite's cells with each pre-trained cell repeated once per entry of its `pretrain_seeds` (its
    `pretrain.seed` set to it); a cell without the list is itself (unchanged: every run key stays what it was)."""
    out = []
    for cell in suite.cells:
        if cell.pretrain_seeds is None or not cell.config.needs_pretraining:
            out.append(cell)
            continue
        for s in cell.pretrain_seeds:
            pre = cell.config.pretrain.model_copy(update={"seed": s})
            out.append(dataclasses.replace(cell, config=cell.config.model_copy(update={"pretrain": pre}),
                                           pretrain_seed=s))
    return out


def pretrain_seed_of(cell: Cell) -> int | None:
    """The pretraining seed a record of this cell carries: None for a cell that does not pre-train."""
    return cell.config.pretrain.seed if cell.config.needs_pretraining else None


def make_plan(suite: Suite, data_root: Path | None = None) -> Plan:
    root = Path(data_root or suite.config.data_root or default_data_root())
    plan = Plan(suite, root, cells=seed_cells(suite))
    done = {r["run_key"]: r for r in read_records_safe(plan.records_path)}
    failed = failures(plan.work_dir)
    robust = robustness_identity(suite, root)
    ups = {}
    for cell in plan.cells:
        up = ups[id(cell)] = upstream_of(cell.config, root)
        if cell.config.needs_pretraining and all(u.key != up for u in plan.units):  # shared cells run once
            plan.units.append(Unit("pretrain", cell, up, status="done" if up in done else "pending"))
        for task in suite.config.tasks:
            for seed in suite.config.seeds:
                key = finetune_key(cell.config, suite.tasks[task], seed, up, robust)
                finished = key in done and model_saved(cell.config, done[key])
                plan.units.append(Unit("finetune", cell, key, task, seed, "done" if finished else "pending"))
    for unit in plan.units:
        if unit.status == "pending" and unit.key in failed:
            unit.status, unit.reason = "failed", failed[unit.key]  # shown by `plan`; `run` retries it
    broken = {u.key: u.reason for u in plan.units if u.kind == "pretrain" and u.status == "failed"}
    for unit in plan.units:  # fine-tunes of a failed pre-training wait for it: `run` retries the pre-training first
        if unit.kind == "finetune" and unit.status == "pending" and (up := ups[id(unit.cell)]) in broken:
            unit.status, unit.reason = "blocked", f"pre-training failed: {broken[up]}"
    return plan


def label_clashes(plan: Plan) -> list[Unit]:
    """Units still to run whose cell label, task and seeds already have a record of another run key: run, they
    would put two configs under one label (a `--set` re-run), and tables keep only the newer without saying so."""
    have = {(r["unit"], r["cell"], r.get("task"), r.get("seed"), r.get("pretrain_seed")): r["run_key"]
            for r in read_records_safe(plan.records_path)}
    return [u for u in plan.units if u.status != "done"
            and have.get((u.kind, u.cell.label, u.task, u.seed, pretrain_seed_of(u.cell)), u.key) != u.key]


def failed_units(plan: Plan) -> list[results_mod.Failure]:
    """The plan's failed and blocked units, as tables count them (results.Failure)."""
    return [results_mod.Failure(u.cell.label, u.cell.axes, u.kind, u.task, u.seed, pretrain_seed_of(u.cell),
                                u.status == "blocked", u.reason)
            for u in plan.units if u.status in ("failed", "blocked")]


def planned_cells(plan: Plan) -> list[CellInfo]:
    """The plan's cells as table rows name them (claims.CellInfo, one per label: a cell's pretraining-seed copies
    share its row), in the plan's order; tables show a cell with no record yet as not run."""
    return list({u.cell.label: CellInfo(u.cell.label, u.cell.label, u.cell.axes) for u in plan.units}.values())


def as_planned(plan: Plan, records: Iterable[dict]) -> list[dict]:
    """The records, each of a unit of this plan under that unit's cell (label and axes): a record reused by run key
    from another suite (same settings, written under that suite's label) lands in this suite's row for it. A record
    whose key is not in the plan, or is in several of its cells, keeps its own label."""
    cells: dict[str, list] = {}
    for u in plan.units:
        cells.setdefault(u.key, []).append(u.cell)
    out = []
    for r in records:
        mine = cells.get(r["run_key"], [])
        cell = mine[0] if len({c.label for c in mine}) == 1 else None
        out.append(r if cell is None or (r["cell"], r["axes"]) == (cell.label, cell.axes)
                   else {**r, "cell": cell.label, "label": cell.label, "axes": cell.axes})
    return out


def model_saved(run: RunConfig, record: dict) -> bool:
    """Whether a finished fine-tune has what `finetune.save_model` asks of it: nothing, or a saved model of that kind
    whose folder is still there. A unit without one runs again (same key: its new record replaces the old)."""
    want = run.finetune.save_model
    return want == "none" or (record.get("saved_model_weights") == want
                              and (Path(record.get("saved_model") or "") / "config.json").is_file())


def model_dir(plan: Plan, key: str) -> Path:
    """work/<suite>/models/<run_key>/: a fine-tune's saved HF model (`finetune.save_model`)."""
    return plan.work_dir / "models" / key


def read_records_safe(path: Path) -> list[dict]:
    return results_mod.read_records(path) if path.exists() else []


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """CODE_VERSION + the git commit, read once per process: the code a run loaded, not a later HEAD."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{CODE_VERSION}+git:{sha}" if sha else CODE_VERSION


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def base_record(plan: Plan, unit: Unit) -> dict:
    return {"suite": plan.suite.config.name, "unit": unit.kind, "run_key": unit.key,
            "cell": unit.cell.label, "label": unit.cell.label, "axes": unit.cell.axes, "task": unit.task,
            "seed": unit.seed if unit.kind == "finetune" else unit.cell.config.pretrain.seed,
            "pretrain_seed": pretrain_seed_of(unit.cell),
            "code_version": code_version(), "finished_at": _now()}


def unit_record(plan: Plan, unit: Unit, metrics: dict[str, float], flags: list[str], **fields) -> dict:
    """The one constructor of a finished unit's record: its identity (`base_record`), metrics and flags, and the
    unit's own `fields` (a fine-tune: headline_metric, headline, higher_is_better, n_train, n_dev; a pre-training:
    train_flops, params, steps, precision; both: wall_s). Checked against results.validate_record."""
    return results_mod.validate_record({**base_record(plan, unit), "metrics": metrics, "flags": list(flags), **fields})


def pretrain_dir(plan: Plan, key: str) -> Path:
    """Pre-training output by run key, shared by every suite under the same work dir (one run per key)."""
    return Path(plan.suite.config.work_dir) / "pretrain" / key


def unit_store(plan: Plan) -> Path:
    """work/units/<run_key>.json: every finished unit's record, so a unit shared by several suites (same run key,
    e.g. the default ELECTRA cell of every paper table) is computed once and adopted by the others."""
    return Path(plan.suite.config.work_dir) / "units"


def stored_record(plan: Plan, unit: Unit) -> dict | None:
    """The record another suite wrote for this run key, if its outputs are still there; else None."""
    path = unit_store(plan) / f"{unit.key}.json"
    try:
        rec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if rec.get("run_key") != unit.key:
        return None
    if unit.kind == "pretrain" and not (pretrain_dir(plan, unit.key) / "state.pt").exists():
        return None  # the record outlived its checkpoint: train again
    if unit.kind == "finetune" and not model_saved(unit.cell.config, rec):
        return None  # a model is asked for that this record's run did not save (or that was deleted): train again
    return rec


def store_record(plan: Plan, record: dict) -> None:
    folder = unit_store(plan)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{record['run_key']}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(record, sort_keys=True))
    os.replace(tmp, folder / f"{record['run_key']}.json")  # atomic: a kill leaves the old file or none


def encoder_source(plan: Plan, cell: Cell) -> str | None:
    init = cell.config.finetune.init
    if init == "random":
        return None
    if init != "pretrained":
        return init
    from .pretrain import checkpoint_dir  # deferred: torch stays off `plan` and cached runs

    return str(checkpoint_dir(pretrain_dir(plan, upstream_of(cell.config, plan.data_root)),
                              cell.config.finetune.checkpoint))


def failure_reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0

