"""Verdicts on a suite's claims, from its records alone, and the claims of several suites as one table.

A claim is pairwise (`better`, `worse`) or `best_among` / `expected` (claims.py lists the keys). Each compared pair of
cells gets the Multi-Bootstrap of its difference of means (stats.py: pretraining seeds, then fine-tuning seeds,
paired when both cells share their seeds; for metric "glue" the mean over the GLUE tasks, each task resampled on
its own) and one of four verdicts, decided in this order:

1. **inconclusive** (with a note) when a cell has no records or fewer than MIN_RUNS kept runs on a needed task;
2. **out of regime** when both compared cells pre-train and neither beats a random-init control of the same suite on
   that metric beyond its interval (`neither beats random init`), or the suite has no such control (`no random-init
   control`): a difference between two encoders that learned nothing transferable says nothing about the paper's
   claim, which is made where pre-training pays off;
3. **inconclusive: too few pretraining seeds** when a compared cell pre-trains with fewer than MIN_PRETRAIN_SEEDS
   seeds: its interval cannot cover pretraining-seed variance at the nominal rate (MultiBERTs; measured in
   results/benchmarks/verdict_calibration.md), so no decisive verdict is printed for it;
4. otherwise **reproduced** if the 95% interval of the improvement lies above 0 (for best_among: the best cell is
   in `expected`), **contradicted** if it lies below 0 (best_among: the best is outside `expected` and clearly
   ahead), **inconclusive** if it contains 0.

Each verdict carries the minimum detectable effect of the design at 80% power (stats.mde), so an inconclusive
verdict says whether the suite could ever have decided; with one pretraining seed it is a floor (`≥`), as the
pretraining-seed variance is not measured. A record without `pretrain_seed` counts as one pretraining seed.
Renderers (tables.py, `claim_rows` below) only format these Verdicts.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from .claims import BEST_KEYS, GLUE, PAIR_KEYS, TableSpec, select_cells
from .config import load_suite
from .registry import did_you_mean
from .results import Verdict, aggregate, cell_infos, metric_view, pretrain_seed, read_records
from .stats import Difference, Grid, estimate, grid, multi_bootstrap
from .tables import as_spec

MIN_RUNS = 3  # fewer kept runs of a cell on a task leave no interval worth the name
# The fewest pretraining seeds per pre-trained cell for a decisive verdict: the smallest design whose false-verdict
# rate at a true difference of 0 is <= 5% in results/benchmarks/verdict_calibration.md (1 seed: far above; a test
# holds the two together).
MIN_PRETRAIN_SEEDS = 3
N_RESAMPLES = 2000


class _Cells:
    """Per cell, the kept runs of one claim metric as one stats.Grid per task (GLUE: one per GLUE task)."""

    def __init__(self, records: list[dict], metric: str, glue_tasks: Sequence[str] | None, min_runs: int,
                 suite_tasks: Sequence[str] = ()):
        stats = {(s.cell, s.task): s for s in aggregate(records, n_resamples=1)}
        self.infos = cell_infos(records)
        if metric == "glue" and not glue_tasks:
            raise ValueError("a claim on metric 'glue' needs the list of GLUE tasks")
        tasks = list(glue_tasks) if metric == "glue" else [metric]
        known = sorted({t for _, t in stats})
        if metric != "glue" and metric not in known and metric not in suite_tasks:
            raise ValueError(f"claim metric '{metric}' matches no task in the records{did_you_mean(metric, known)}")
        # Without a list of controls: a cell pre-trains when it has a pretraining record or its fine-tunes name a
        # pretraining seed (set_controls refines it: the partly trained checkpoints of one pre-training have
        # neither in records written before pretrain_seed existed).
        self.pretrained = {r["cell"] for r in records if r["unit"] == "pretrain" or pretrain_seed(r) is not None}
        self.grids: dict[str, list[Grid]] = {}
        for cell in self.infos:
            ss = [stats.get((cell, t)) for t in tasks]
            if all(s is not None and s.n >= min_runs for s in ss):
                self.grids[cell] = [grid(list(zip(s.pretrain_seeds, s.seeds, s.values))) for s in ss]
        directions = {s.higher_is_better for (_, t), s in stats.items() if t in tasks}
        if len(directions) > 1:
            raise ValueError(f"claim metric '{metric}' mixes higher- and lower-is-better tasks")
        self.higher_is_better = directions.pop() if directions else True

    def set_controls(self, controls: Sequence[str | Mapping]) -> list[str]:
        """The control cells with data; every other cell pre-trains (here or elsewhere: an external checkpoint is
        one pre-training too). Returns the controls."""
        ctl = [c for sel in controls for c in select_cells(self.infos, sel)]
        self.pretrained = set(self.infos) - set(ctl)
        return list(dict.fromkeys(c for c in ctl if c in self.grids))

    def key(self, cell: str) -> float:
        """Ranking key, larger is better: the (GLUE-averaged) mean, negated for lower-is-better metrics."""
        point = sum(estimate(g) for g in self.grids[cell]) / len(self.grids[cell])
        return point if self.higher_is_better else -point

    def compare(self, a: str, b: str, n_resamples: int, seed: int) -> Difference:
        """The improvement of a over b (b − a for a lower-is-better metric) with its Multi-Bootstrap interval."""
        first, second = (a, b) if self.higher_is_better else (b, a)
        return multi_bootstrap(self.grids[first], self.grids[second], n_resamples=n_resamples, seed=seed)

    def n_pretrain(self, cell: str) -> int:
        """Pretraining seeds of a cell (the fewest over the claim's tasks); 0 for a cell that does not pre-train."""
        return min(g.n_pretrain for g in self.grids[cell]) if cell in self.pretrained else 0


def _no_data(claim: dict, metric: str, better: str, worse: str, note: str) -> Verdict:
    return Verdict(claim["name"], "inconclusive", metric, better, worse, math.nan, math.nan, math.nan, note)


def _regime(sc: _Cells, cells: tuple[str, str], controls: list[str] | None, n_resamples: int, seed: int) -> str:
    """Why a comparison of two pre-trained cells is out of regime ("" when one of them beats a control).
    `controls`: the control cells with enough runs; None when the suite declares none."""
    if controls is None:
        return "no random-init control"
    if not controls:
        return "random-init control not run"
    for cell in cells:
        for ctl in controls:
            if sc.compare(cell, ctl, n_resamples, seed).ci_low > 0:
                return ""
    return "neither beats " + " / ".join(sc.infos[c].name for c in controls)


def _judge(claim: dict, sc: _Cells, metric: str, cells: tuple[str, str], decide, controls: list[str] | None,
           n_resamples: int, seed: int, note: str = "") -> Verdict:
    """The verdict on `cells[0]` being better than `cells[1]`; `decide(Difference)` gives the decisive wording."""
    d = sc.compare(*cells, n_resamples, seed)
    n_pre = (sc.n_pretrain(cells[0]), sc.n_pretrain(cells[1]))
    pre = [c in sc.pretrained for c in cells]
    fields = dict(name=claim["name"], metric=metric, better=sc.infos[cells[0]].name, worse=sc.infos[cells[1]].name,
                  diff=d.estimate, ci_low=d.ci_low, ci_high=d.ci_high, mde=d.mde, n_pretrain=n_pre,
                  mde_floor=any(p and n < 2 for p, n in zip(pre, n_pre)))
    if all(pre) and (regime := _regime(sc, cells, controls, n_resamples, seed)):
        return Verdict(verdict="out of regime", reason=regime, note=note, **fields)
    few = [f"{sc.infos[c].name} {n}" for c, p, n in zip(cells, pre, n_pre) if p and n < MIN_PRETRAIN_SEEDS]
    if few:
        why = f"pretraining seeds: {', '.join(few)}; a decisive verdict needs {MIN_PRETRAIN_SEEDS}"
        return Verdict(verdict="inconclusive", reason="too few pretraining seeds",
                       note="; ".join(x for x in (why, note) if x), **fields)
    return Verdict(verdict=decide(d), note=note, **fields)


def _pairwise(claim: dict, sc: _Cells, metric: str, controls: list[str] | None, n_resamples: int,
              seed: int) -> Verdict:
    ends = []
    for side in ("better", "worse"):
        cells = select_cells(sc.infos, claim[side])
        if len(cells) > 1:
            raise ValueError(f"claim '{claim['name']}': {side} selector {claim[side]!r} matches {len(cells)} cells: "
                             f"{', '.join(cells)}")
        ends.append(cells[0] if cells else None)
    names = [sc.infos[c].name if c else str(claim[s]) for c, s in zip(ends, ("better", "worse"))]
    lacking = [n for c, n in zip(ends, names) if c not in sc.grids]
    if lacking:
        return _no_data(claim, metric, *names, f"fewer than the minimum runs (or no records) for: {', '.join(lacking)}")

    def decide(d: Difference) -> str:
        return "reproduced" if d.ci_low > 0 else "contradicted" if d.ci_high < 0 else "inconclusive"

    return _judge(claim, sc, metric, (ends[0], ends[1]), decide, controls, n_resamples, seed)


def _best_among(claim: dict, sc: _Cells, metric: str, controls: list[str] | None, n_resamples: int,
                seed: int) -> Verdict:
    expected = {c for sel in claim["expected"] for c in select_cells(sc.infos, sel)}
    candidates = list(dict.fromkeys(c for sel in [*claim["best_among"], *claim["expected"]]
                                    for c in select_cells(sc.infos, sel)))
    ranked = sorted((c for c in candidates if c in sc.grids), key=sc.key, reverse=True)  # stable: ties keep order
    skipped = [sc.infos[c].name for c in candidates if c not in sc.grids]
    note = f"skipped (too few runs or no records): {', '.join(skipped)}" if skipped else ""
    inside, outside = [c for c in ranked if c in expected], [c for c in ranked if c not in expected]
    if not inside or not outside:
        return _no_data(claim, metric, "", "", f"need data both inside and outside `expected`. {note}".strip())
    top = ranked[0]
    rival = (outside if top in expected else inside)[0]  # the best cell on the other side of the claim

    def decide(d: Difference) -> str:
        return "inconclusive" if not d.ci_low > 0 else "reproduced" if top in expected else "contradicted"

    return _judge(claim, sc, metric, (top, rival), decide, controls, n_resamples, seed, note)


def evaluate_claims(records: Sequence[dict], claims: Sequence[dict], glue_tasks: Sequence[str] | None = None,
                    controls: Sequence[str | Mapping] | None = None, *, min_runs: int = MIN_RUNS,
                    n_resamples: int = N_RESAMPLES, seed: int = 0, tasks: Sequence[str] = ()) -> list[Verdict]:
    """Verdict per claim (rules in the module docstring). `controls`: selectors of the suite's random-init cells
    (every other cell then counts as pre-trained); None: no control, and cells without pretraining records count
    as not pre-trained.

    Either claim form may add `task`: then `metric` is a metric recorded by that task's fine-tunes, such as the
    robustness metric `robust_rel_drop/all` (lower is better), judged like a headline (`results.metric_view`).
    A pairwise side must match at most one cell. Malformed claims raise ValueError, and so does a claim on a task
    without records, unless it is one of `tasks` (the suite's: not run yet, or all its units failed), which makes
    the claim inconclusive for want of records."""
    out = []
    for claim in claims:
        keys = set(claim) - {"task"}
        best_form = keys in (BEST_KEYS, BEST_KEYS - {"metric"})
        form = _pairwise if keys == PAIR_KEYS else _best_among if best_form else None
        if form is None:
            raise ValueError(f"claim {claim.get('name', claim)!r}: keys {sorted(keys)} are neither "
                             f"{sorted(PAIR_KEYS)} nor {sorted(BEST_KEYS)} (either with an optional 'task')")
        metric = claim.get("metric", "glue")
        if "task" in claim:  # a recorded metric of one task, judged as its headline would be
            view = metric_view(records, metric, claim["task"])
            sc, label = _Cells(view, claim["task"], None, min_runs, tasks), f"{claim['task']} {metric}"
        else:
            sc, label = _Cells(list(records), metric, glue_tasks, min_runs, tasks), metric
        ctl = sc.set_controls(controls) if controls else None
        out.append(form(claim, sc, label, ctl, n_resamples, seed))
    return out


def judge(records: Sequence[dict], spec: TableSpec | Mapping) -> list[Verdict]:
    """The verdicts of a table spec's claims (its GLUE tasks and random-init `controls`), for tables.render_all."""
    spec = as_spec(spec, records)
    if not spec.claims:
        return []
    return evaluate_claims(records, spec.claims, spec.glue_tasks, spec.controls, tasks=spec.columns)


# ------------------------------------------------------------------------------------ the claims of several suites

HEADER = ["suite", "claim", "metric", "paper", "ours: better − worse [95% CI]", "MDE (80%)", "verdict"]


def claim_rows(suite_files: list[Path], repo: Path) -> list[list[str]]:
    """One row per claim of each suite: the paper's numbers, our difference of means with its Multi-Bootstrap
    interval, the design's minimum detectable effect and the verdict, from the committed records alone."""
    rows = []
    for path in suite_files:
        suite = load_suite(path)
        if not suite.config.table.claims:
            continue
        folder = repo / suite.config.results_dir / suite.config.name
        records = read_records(folder / "records.jsonl") if (folder / "records.jsonl").exists() else []
        verdicts = judge(records, suite.table_spec) if records else []
        link = f"[{suite.config.name}]({Path(suite.config.results_dir) / suite.config.name / 'table.md'})"
        ref = suite.config.table.reference
        for claim, v in zip(suite.config.table.claims, verdicts or [None] * len(suite.config.table.claims)):
            metric = claim.get("metric", "glue")
            col = GLUE if metric == "glue" else metric
            paper = [ref.get(claim.get(side), {}).get(col) if isinstance(claim.get(side), str) else None
                     for side in ("better", "worse")]
            rows.append([link, claim["name"], (claim.get("task", "") + " " + metric).strip(),
                         f"{paper[0]} vs {paper[1]}" if None not in paper else "–", *_ours(v)])
    return rows


def _ours(v: Verdict | None) -> list[str]:
    """The difference, MDE and verdict cells of one claim row."""
    if v is None:
        return ["–", "–", "not run"]
    ok = lambda x: x == x  # noqa: E731 (not NaN)
    ci = f" [{v.ci_low:+.2f}, {v.ci_high:+.2f}]" if ok(v.ci_low) else ""
    diff = f"{v.diff:+.2f}{ci}" if ok(v.diff) else "–"
    mde = (("≥ " if v.mde_floor else "") + f"{v.mde:.2f}") if ok(v.mde) else "–"
    return [diff, mde, f"**{v.verdict}**" + (f": {v.reason}" if v.reason else "")]


def markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
