"""Records of finished units and the statistics over them (DESIGN.md principle 7: results are records).

Owns `results/<suite>/records.jsonl`: one JSON object per line, one line per finished unit (a pretraining run or
one fine-tuning task x seed). The runner appends with `append_record`; tables, plots and verdicts read the file
back with `read_records` and never need MLflow or a GPU.

Statistics follow the paper: a (cell, task) is summarised by the *median* over fine-tuning seeds (Paper §3.1;
fine-tuning is noisy and a few runs fail, which a mean would absorb), with mean ± sd and a seeded bootstrap 95% CI
of the median beside it. Bootstrap resampling uses `numpy.random.default_rng(seed)` so the same records always
give the same intervals. Verdicts on paper claims (`evaluate_claims`) are pure functions of records.
"""
from __future__ import annotations

import fcntl
import json
import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from electra_bench.claims import CellInfo
from electra_bench.metrics import higher_is_better
from electra_bench.registry import did_you_mean

if TYPE_CHECKING:  # annotations only: the import is deferred to the functions that compute
    import numpy as np

UNITS = ("pretrain", "finetune")
# Every record names its suite, unit, identity, cell, axes, task, seed, metrics, flags and code version.
COMMON_KEYS = ("suite", "unit", "run_key", "cell", "axes", "task", "seed", "metrics", "flags", "code_version")
# A fine-tuning record also says which metric is its headline and which way is better (STYLE.md #8).
FINETUNE_KEYS = ("headline_metric", "headline", "higher_is_better")
# Flagged fine-tuning runs are excluded from the statistics and counted instead, never silently averaged.
DEGENERATE, DIVERGED = "degenerate", "diverged"
N_RESAMPLES, CI_LEVEL = 2000, 0.95  # 2000: enough for stable 2.5/97.5 percentiles, milliseconds per cell


class RecordError(ValueError):
    """An invalid record; the message starts with `file:line:` when the record came from a file."""


class TornRecordWarning(UserWarning):
    """The final line of a records file lacks its newline: a writer crashed mid-append; the line is ignored."""


# ---------------------------------------------------------------------------------------------------- file I/O


def validate_record(record: object, where: str = "record") -> dict:
    """Check the keys and types every reader relies on; raise RecordError naming `where` (file:line)."""
    if not isinstance(record, dict):
        raise RecordError(f"{where}: expected a JSON object, got {type(record).__name__}")
    need = COMMON_KEYS + (FINETUNE_KEYS if record.get("unit") == "finetune" else ())
    missing = [k for k in need if k not in record]
    if missing:
        raise RecordError(f"{where}: missing key(s) {', '.join(missing)}")
    if record["unit"] not in UNITS:
        unit = record["unit"]
        raise RecordError(f"{where}: unit '{unit}' is not one of {UNITS}{did_you_mean(str(unit), UNITS)}")
    for key, typ in (("axes", dict), ("metrics", dict), ("flags", list), ("cell", str), ("run_key", str)):
        if not isinstance(record[key], typ):
            raise RecordError(f"{where}: '{key}' must be a {typ.__name__}")
    if record["unit"] == "finetune" and not isinstance(record["task"], str):
        raise RecordError(f"{where}: a finetune record needs a task name")
    return record


def dedupe(records: Iterable[dict]) -> list[dict]:
    """One record per run_key, the last one written wins (a re-run of the same unit replaces the earlier)."""
    by_key: dict[str, dict] = {}
    for r in records:
        by_key.pop(r["run_key"], None)  # move to the position of its latest occurrence
        by_key[r["run_key"]] = r
    return list(by_key.values())


def read_records(path: str | Path, *, unique: bool = True) -> list[dict]:
    """All records of a JSON-lines file, deduplicated by run_key (last wins) unless `unique=False`.

    Any invalid line raises RecordError naming `file:line`. The one exception is a final line without its
    trailing newline: `append_record` writes line and newline in one call, so such a line is a torn write, not
    a record; it is ignored with a TornRecordWarning (a complete-looking one too, as the newline is the commit).
    """
    path = Path(path)
    data = path.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # the bytes after the last newline: b"" for a well-formed file
    if tail:
        warnings.warn(f"{path}:{len(lines) + 1}: torn final line (no trailing newline) ignored: {tail[:80]!r}",
                      TornRecordWarning, stacklevel=2)
    records = []
    for lineno, raw in enumerate(lines, start=1):
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RecordError(f"{where}: not a JSON record ({e})") from None
        records.append(validate_record(obj, where))
    return dedupe(records) if unique else records


def append_record(path: str | Path, record: dict, if_absent: bool = False) -> bool:
    """Append one record as one line, safely against crashes and concurrent writers; returns whether it did.

    The whole line (newline included) goes out in a single `os.write` on an O_APPEND descriptor under an
    exclusive `flock`, then `fsync`: a crash leaves either the full line or a tail without a newline, which
    `read_records` ignores. A torn tail left by an earlier crash is moved to `<path>.torn` first, so the new
    line never glues onto half a line. NaN is allowed (a diverged run's metrics) and keys are sorted.
    `if_absent`: write nothing when a line with the record's run_key is there already, checked under the same
    lock (workers sharing a suite, and collecting their records from the study, each write a unit once).
    """
    validate_record(record)
    line = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _set_aside_torn_tail(fd, path)
        if if_absent and _has_run_key(fd, record["run_key"]):
            return False
        written = os.write(fd, line)
        if written != len(line):  # never seen on local files; fail loudly rather than leave a short line
            raise OSError(f"{path}: short write ({written} of {len(line)} bytes)")
        os.fsync(fd)
    finally:
        os.close(fd)  # closing releases the flock
    return True


def _has_run_key(fd: int, key: str) -> bool:
    needle = json.dumps({"run_key": key})[1:-1].encode()  # `"run_key": "<key>"`, as append_record writes it
    for line in os.pread(fd, os.fstat(fd).st_size, 0).splitlines():
        if needle in line:
            try:
                if json.loads(line).get("run_key") == key:
                    return True
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue
    return False


def _set_aside_torn_tail(fd: int, path: Path) -> None:
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    data = os.pread(fd, size, 0)
    keep = data.rfind(b"\n") + 1  # 0 when the whole file is one torn line
    with open(f"{path}.torn", "ab") as f:
        f.write(data[keep:] + b"\n")
    os.ftruncate(fd, keep)
    warnings.warn(f"{path}: torn final line moved to {path}.torn before appending", TornRecordWarning, stacklevel=3)


# Per-example dev predictions of a fine-tune, beside the records: `<results>/<suite>/predictions/<run_key>.jsonl`,
# named (relative to the records' folder) by the record's `dev_predictions`. One JSON object per line, one line per
# dev example in dev order: `id` (0-based row of the dev split file), `gold` and `pred` (label names; for tagging
# lists of tag names, one per word; for regression floats), `probs` (classification: probability of each label, in
# the task's label order) or `score` (tagging: probability of each word's predicted tag, null for a word with no
# word-piece). The record's metrics are recomputed from `gold` and `pred` alone (tests/test_suite_e2e.py).
PREDICTIONS_DIR = "predictions"


def write_predictions_file(folder: str | Path, run_key: str, rows: list[dict]) -> str:
    """Write a fine-tune's dev predictions atomically (temp file, then rename); returns the path relative to
    `folder`, as the record's `dev_predictions` names it."""
    out = Path(folder) / PREDICTIONS_DIR
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{run_key}.{os.getpid()}.tmp"
    tmp.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows))
    os.replace(tmp, out / f"{run_key}.jsonl")
    return f"{PREDICTIONS_DIR}/{run_key}.jsonl"


def read_predictions_file(records_folder: str | Path, record: dict) -> list[dict]:
    """The dev predictions a fine-tune record names (`dev_predictions`), one dict per example."""
    path = Path(records_folder) / record["dev_predictions"]
    return [json.loads(line) for line in path.read_text().splitlines() if line]


# ------------------------------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class CellTaskStats:
    """Headline statistics of one (cell, task) over its fine-tuning seeds; NaN where n is too small."""

    cell: str
    task: str
    metric: str  # the headline metric name, e.g. "accuracy"
    higher_is_better: bool
    seeds: tuple[int, ...]  # fine-tuning seeds of the kept runs, ascending within each pretraining seed
    values: tuple[float, ...]  # headline values of the kept runs, in (pretraining seed, seed) order
    median: float
    mean: float
    sd: float  # sample sd (ddof=1); NaN for n < 2
    ci_low: float  # bootstrap 95% CI of the median
    ci_high: float
    n_degenerate: int  # runs flagged "degenerate" (predicted one class), excluded from the above
    n_diverged: int  # runs flagged "diverged" or with a non-finite headline, excluded from the above
    n_superseded: int  # older records of the same (cell, task, seed) replaced by a later one
    pretrain_seeds: tuple[int | None, ...] = ()  # pretraining seed of each kept run (None: no pre-training/legacy)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def n_pretrain(self) -> int:
        """Distinct pretraining seeds among the kept runs (1 for a cell without pre-training)."""
        return len(set(self.pretrain_seeds)) if self.values else 0


def _resampled_stat(values: Sequence[float], stat: Callable, rng: np.random.Generator, n: int) -> np.ndarray:
    """`stat` of `n` bootstrap resamples of `values` -> array (n,). `stat` must accept `axis=` (numpy does)."""
    import numpy as np  # deferred: numpy costs ~0.25 s to import; `validate` and `plan` compute nothing

    v = np.asarray(values, dtype=float)
    return stat(v[rng.integers(0, len(v), size=(n, len(v)))], axis=1)


def _interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    import numpy as np  # deferred: numpy costs ~0.25 s to import; `validate` and `plan` compute nothing

    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(samples, [tail, 100 - tail])
    return float(lo), float(hi)


def bootstrap_group_ci(groups: Sequence[Sequence[float]], stat: Callable | None = None, *,
                       n_resamples: int = N_RESAMPLES, seed: int = 0, level: float = CI_LEVEL) -> tuple[float, float]:
    """Percentile bootstrap CI of mean_g stat(group g) (stat: np.median unless given), groups (tasks) resampled
    independently: with one group per GLUE task this is the CI of a GLUE score. (nan, nan) when a group is empty.
    Seeded, hence deterministic."""
    import numpy as np  # deferred: numpy costs ~0.25 s to import; `validate` and `plan` compute nothing

    if not groups or any(len(g) == 0 for g in groups):
        return math.nan, math.nan
    stat = np.median if stat is None else stat
    rng = np.random.default_rng(seed)
    return _interval(np.mean([_resampled_stat(g, stat, rng, n_resamples) for g in groups], axis=0), level)


def bootstrap_ci(values: Sequence[float], stat: Callable | None = None, **kw) -> tuple[float, float]:
    """Percentile bootstrap CI of `stat(values)` (keywords as in `bootstrap_group_ci`)."""
    return bootstrap_group_ci([values], stat, **kw)


def pretrain_seed(record: dict) -> int | None:
    """A record's pretraining seed; None for a cell that does not pre-train, and for records written before the
    field existed (read as the cell's one pretraining seed)."""
    return record.get("pretrain_seed")


def _seed_order(key: tuple[int | None, int]) -> tuple:
    return (-1 if key[0] is None else key[0], key[1])


def _latest_per_seed(records: list[dict]) -> tuple[list[dict], int]:
    """Keep one record per (pretraining seed, fine-tuning seed): the latest `finished_at` (file order breaks ties).
    Returns (kept, n_dropped), kept in (pretraining seed, seed) order.

    Different run_keys for the same cell/task/seeds arise when code or data versions change and the suite is
    re-run; counting both would inflate n, so the newer wins and the count of replaced ones is reported.
    """
    best: dict[tuple, tuple[str, int, dict]] = {}
    for i, r in enumerate(records):
        key = (str(r.get("finished_at") or ""), i, r)
        seeds = (pretrain_seed(r), r["seed"])
        if seeds not in best or key[:2] > best[seeds][:2]:
            best[seeds] = key
    kept = [best[s][2] for s in sorted(best, key=_seed_order)]
    return kept, len(records) - len(kept)


def _cell_task_stats(cell: str, task: str, records: list[dict], n_resamples: int, seed: int) -> CellTaskStats:
    import numpy as np  # deferred: numpy costs ~0.25 s to import; `validate` and `plan` compute nothing

    kept, n_superseded = _latest_per_seed(records)
    directions = {bool(r["higher_is_better"]) for r in kept}
    metrics = {r["headline_metric"] for r in kept}
    if len(directions) > 1 or len(metrics) > 1:
        raise RecordError(f"cell '{cell}' task '{task}': records disagree on the headline metric or its direction "
                          f"({sorted(metrics)}, higher_is_better {sorted(directions)})")
    # A degenerate run that also diverged counts once, as degenerate; an unflagged NaN headline is a divergence.
    kind = [DEGENERATE if DEGENERATE in r["flags"] else DIVERGED if DIVERGED in r["flags"] or not _finite(r["headline"])
            else "" for r in kept]
    good = [r for r, k in zip(kept, kind) if not k]
    v = np.array([float(r["headline"]) for r in good])
    lo, hi = bootstrap_ci(v, n_resamples=n_resamples, seed=seed)
    return CellTaskStats(
        cell=cell, task=task, metric=metrics.pop(), higher_is_better=directions.pop(),
        seeds=tuple(r["seed"] for r in good), values=tuple(float(x) for x in v),
        pretrain_seeds=tuple(pretrain_seed(r) for r in good),
        median=float(np.median(v)) if len(v) else math.nan, mean=float(v.mean()) if len(v) else math.nan,
        sd=float(v.std(ddof=1)) if len(v) > 1 else math.nan, ci_low=lo, ci_high=hi,
        n_degenerate=kind.count(DEGENERATE), n_diverged=kind.count(DIVERGED), n_superseded=n_superseded)


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def aggregate(records: Iterable[dict], *, n_resamples: int = N_RESAMPLES, seed: int = 0) -> list[CellTaskStats]:
    """Statistics per (cell, task) over the fine-tuning records, sorted by (cell, task) for determinism."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        if r["unit"] == "finetune":
            groups.setdefault((r["cell"], r["task"]), []).append(r)
    return [_cell_task_stats(c, t, groups[(c, t)], n_resamples, seed) for c, t in sorted(groups)]


def metric_view(records: Iterable[dict], metric: str, task: str | None = None) -> list[dict]:
    """The records with `metrics[metric]` as the headline of every fine-tuning record that has it (of `task` only,
    when given), so that `aggregate`, claims and plots treat a recorded robustness metric (robustness.py) as they
    treat the headline: medians over seeds, flagged runs left out. Pretraining records pass unchanged."""
    out = []
    for r in records:
        if r["unit"] != "finetune":
            out.append(r)
        elif (task is None or r["task"] == task) and metric in r["metrics"]:
            out.append({**r, "headline_metric": metric, "headline": r["metrics"][metric],
                        "higher_is_better": higher_is_better(metric, bool(r["higher_is_better"]))})
    return out


@dataclass(frozen=True)
class GlueScore:
    """Mean over `tasks` of the headline medians; None when a task is missing (a partial mean would mislead)."""

    value: float | None
    tasks: tuple[str, ...]
    missing: tuple[str, ...]


def glue_score(stats: Iterable[CellTaskStats], tasks: Sequence[str]) -> dict[str, GlueScore]:
    """GLUE score per cell over exactly the listed `tasks` (the table's GLUE tasks; CoNLL is not one)."""
    import numpy as np  # deferred: numpy costs ~0.25 s to import; `validate` and `plan` compute nothing

    medians: dict[str, dict[str, float]] = {}
    for s in stats:
        if s.n:
            medians.setdefault(s.cell, {})[s.task] = s.median
    out = {}
    for cell, m in sorted(medians.items()):
        missing = tuple(t for t in tasks if t not in m)
        value = None if missing or not tasks else float(np.mean([m[t] for t in tasks]))
        out[cell] = GlueScore(value, tuple(tasks), missing)
    return out


@dataclass(frozen=True)
class Failure:
    """A unit of the suite that did not finish: it raised ("failed"), or it was not run because the pre-training it
    starts from failed ("blocked"). Not a record (no result exists): `run` keeps failures in
    work/<suite>/failures.jsonl and `suite.failed_units` reads them off the plan; tables count them beside the
    records, so a cell whose every unit failed still has its row."""

    cell: str  # as in a record: the cell's label
    axes: Mapping[str, object]
    unit: str  # "pretrain" | "finetune"
    task: str | None
    seed: int | None
    pretrain_seed: int | None
    blocked: bool = False
    reason: str = ""


def cell_infos(records: Iterable[dict]) -> dict[str, CellInfo]:
    """CellInfo per cell string, sorted by cell; conflicting labels or axes for one cell raise."""
    infos: dict[str, CellInfo] = {}
    for r in records:
        info = CellInfo(r["cell"], r.get("label"), r["axes"])
        old = infos.setdefault(r["cell"], info)
        if (old.label, dict(old.axes)) != (info.label, dict(info.axes)):
            raise RecordError(f"cell '{r['cell']}' has conflicting label/axes: {old} vs {info} (run {r['run_key']})")
    return dict(sorted(infos.items()))


# Figures of a pre-training record besides its metrics, usable as table `extra` columns and plot axes.
PRETRAIN_FIGURES = ("train_flops", "train_flops_official", "train_flops_compute", "train_tokens", "params", "steps")


def pretrain_summary(records: Iterable[dict]) -> dict[str, dict[str, float]]:
    """Per cell: median over pretraining seeds of each RTD metric, plus train_flops and params when recorded.

    Runs flagged "diverged" are left out; `n_pretrain` and `n_pretrain_diverged` say how many were used/dropped.
    """
    import numpy as np  # deferred: numpy costs ~0.25 s to import; `validate` and `plan` compute nothing

    groups: dict[str, list[dict]] = {}
    for r in records:
        if r["unit"] == "pretrain":
            groups.setdefault(r["cell"], []).append(r)
    out = {}
    for cell, rs in sorted(groups.items()):
        good = [r for r in rs if DIVERGED not in r["flags"]]
        cols: dict[str, list[float]] = {}
        for r in good:
            figures = [(k, r.get(k)) for k in PRETRAIN_FIGURES]
            for k, v in [*r["metrics"].items(), *figures]:
                if _finite(v):
                    cols.setdefault(k, []).append(float(v))
        out[cell] = {k: float(np.median(v)) for k, v in sorted(cols.items())}
        out[cell].update(n_pretrain=len(good), n_pretrain_diverged=len(rs) - len(good))
    return out


# --------------------------------------------------------------------------------------------------- verdicts

# The four verdicts (verdicts.py judges them; tables.py and the README's claims table print them).
VERDICTS = ("reproduced", "contradicted", "inconclusive", "out of regime")


@dataclass(frozen=True)
class Verdict:
    """Outcome of one claim; `diff` and its CI are the improvement of `better` over `worse` (direction-aware):
    the difference of means over pretraining and fine-tuning seeds, with its Multi-Bootstrap interval (stats.py)."""

    name: str
    verdict: str  # one of VERDICTS
    metric: str  # "glue" or a task name
    better: str  # row name of the cell claimed (pairwise) or found (best_among) to be best
    worse: str
    diff: float
    ci_low: float
    ci_high: float
    note: str = ""
    reason: str = ""  # why the verdict is not decisive: "too few pretraining seeds", "no random-init control", ...
    mde: float = math.nan  # minimum detectable effect of the design at 80% power
    mde_floor: bool = False  # the MDE omits unmeasured pretraining-seed variance (a lower bound)
    n_pretrain: tuple[int, int] = (0, 0)  # pretraining seeds of better and worse (0: the cell does not pre-train)

    @property
    def label(self) -> str:
        """The verdict as printed: `inconclusive: too few pretraining seeds`, `out of regime: ...`."""
        return f"{self.verdict}: {self.reason}" if self.reason else self.verdict


