"""The statistics of a verdict: the Multi-Bootstrap of a difference between two cells, and its detectable effect.

Ground floor: numpy and scipy only, no records, no claims (verdicts.py turns records into the arrays below).

A cell's scores on one task are a grid `(pretraining seeds, fine-tuning seeds)`, NaN where a run is missing or was
left out (degenerate, diverged), optionally with a third axis of per-example dev scores (a metric that is a mean
over examples, e.g. accuracy). The quantity judged is the mean over the population of pretraining runs and
fine-tuning runs (MultiBERTs: Sellam et al., "The MultiBERTs: BERT Reproductions for Robustness Analysis", ICLR
2022, §4): the estimate is the mean over pretraining seeds of the mean over fine-tuning seeds, averaged over tasks
(a GLUE score is the mean of its tasks). The Multi-Bootstrap resamples, per task and for each draw, pretraining
seeds with replacement, then fine-tuning seeds within each drawn pretraining seed, then (when given) dev examples;
when both cells were run with the same seeds (same seed labels on both axes) the draws are shared (paired), as
Sellam et al. do for two models that share their seeds.

The interval. A percentile interval of that bootstrap is far too short when the top level has few units: the
bootstrap variance of a mean of n units is (n-1)/n of the plug-in variance, its quantiles are normal ones where a t
with n-1 degrees of freedom is due, and (with 3 pretraining seeds) it says "reproduced" about one time in five when
nothing differs (benchmarks/verdict_calibration.py measures it). So the interval is `estimate ± t(df) · se`, with
`se` from the Multi-Bootstrap draws corrected twice (`_share`): the within-seed term that two-stage resampling counts
twice is removed (Davison & Hinkley 1997, §3.8) and the rest rescaled by n/(n-1), n the top-level units (the
pretraining seeds, or the fine-tuning runs of a cell with one pretraining); df is Welch-Satterthwaite's over the two
cells' n-1 (n-1 of the difference when paired). For normal balanced data this is the t interval on the
pretraining-seed means, exact; its false-verdict rate on the noise measured in results/ is in
results/benchmarks/verdict_calibration.md. The minimum detectable effect at power 1-β is
(t_{1-α/2}(df) + t_{1-β}(df)) · se. Dev examples, when given, are a third stage (their noise is added, not removed).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

N_RESAMPLES, LEVEL, POWER = 2000, 0.95, 0.80  # 2000 draws: se to ~1.6%; 95% intervals; 80% power for the MDE


@dataclass(frozen=True)
class Grid:
    """One cell's scores on one task: values (P, F) or (P, F, N examples), NaN = missing; seed labels per axis."""

    values: np.ndarray
    pretrain_seeds: tuple = ()  # labels of axis 0 (None for a cell without pre-training)
    seeds: tuple = ()  # fine-tuning seed labels of axis 1

    @property
    def n_pretrain(self) -> int:
        return int(np.sum(~np.all(np.isnan(self._runs()), axis=1)))

    def _runs(self) -> np.ndarray:
        return self.values if self.values.ndim == 2 else np.nanmean(self.values, axis=2)

    def top_units(self) -> int:
        """Units at the level the interval's degrees of freedom come from: pretraining seeds when there are two or
        more, else the fine-tuning runs of the one pretraining (or of a cell that does not pre-train)."""
        runs = self._runs()
        return self.n_pretrain if self.n_pretrain > 1 else int(np.sum(~np.isnan(runs)))


def grid(runs: Sequence[tuple[object, object, float]]) -> Grid:
    """A Grid from (pretraining seed, fine-tuning seed, value) triples; missing combinations become NaN."""
    pre = sorted({p for p, _, _ in runs}, key=_order)
    ft = sorted({f for _, f, _ in runs}, key=_order)
    values = np.full((len(pre), len(ft)), np.nan)
    for p, f, v in runs:
        values[pre.index(p), ft.index(f)] = v
    return Grid(values, tuple(pre), tuple(ft))


def _order(x: object) -> tuple:
    return (0, x, "") if isinstance(x, (int, float)) else (1, 0, str(x))


def estimate(g: Grid) -> float:
    """Mean over pretraining seeds of the mean over fine-tuning seeds (and examples)."""
    return float(np.nanmean(np.nanmean(g._runs(), axis=1)))


def _draws(g: Grid, rng: np.random.Generator, n: int, idx: tuple | None = None) -> tuple[np.ndarray, tuple]:
    """`n` Multi-Bootstrap estimates of one grid (n,), and the indices drawn (for a paired partner)."""
    v = g.values
    P, F = v.shape[:2]
    if idx is None:
        ip = rng.integers(0, P, size=(n, P))
        jf = rng.integers(0, F, size=(n, P, F))
        ke = rng.integers(0, v.shape[2], size=(n, v.shape[2])) if v.ndim == 3 else None
        idx = (ip, jf, ke)
    ip, jf, ke = idx
    x = v[ip[:, :, None], jf]  # (n, P, F) or (n, P, F, N)
    if ke is not None:
        x = np.take_along_axis(x, ke[:, None, None, :], axis=3).mean(axis=3)
    with np.errstate(all="ignore"), _quiet():
        per_seed = np.nanmean(x, axis=2)  # (n, P)
        return np.nanmean(per_seed, axis=1), idx


class _quiet:
    """Silence numpy's 'mean of empty slice' (an all-missing draw is NaN, dropped by the caller)."""

    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._w.__exit__(*exc)


def paired(a: Grid, b: Grid) -> bool:
    """Both cells ran the same pretraining and fine-tuning seeds (and, with examples, the same dev set). Pairing
    shares what a seed fixes (a fine-tuning seed draws the training subsample and order for every cell); where it
    fixes nothing shared, the paired interval is still valid, on n-1 degrees of freedom."""
    return a.values.shape == b.values.shape and a.pretrain_seeds == b.pretrain_seeds and a.seeds == b.seeds


@dataclass(frozen=True)
class Difference:
    """Estimate and interval of mean(a) − mean(b), with what the interval rests on."""

    estimate: float
    ci_low: float
    ci_high: float
    se: float
    df: float
    mde: float  # smallest true difference detected with probability POWER at LEVEL
    paired: bool
    n_pretrain: tuple[int, int]  # pretraining seeds of a and b (the fewest over tasks)
    percentile: tuple[float, float]  # the plain percentile interval of the same draws, for comparison


def multi_bootstrap(a: Sequence[Grid], b: Sequence[Grid], *, n_resamples: int = N_RESAMPLES, seed: int = 0,
                    level: float = LEVEL, power: float = POWER) -> Difference:
    """The Multi-Bootstrap of mean_t(a_t) − mean_t(b_t) over tasks t (one Grid per task and cell); each task is
    resampled independently, the two cells jointly on a task whose seeds they share. Seeded: deterministic."""
    if len(a) != len(b) or not a:
        raise ValueError("multi_bootstrap needs one grid per task for both cells")
    rng, T = np.random.default_rng(seed), len(a)
    pair = all(paired(x, y) for x, y in zip(a, b))
    diff, terms = np.zeros(n_resamples), []  # terms: (variance share of the estimate, its degrees of freedom)
    for ga, gb in zip(a, b):
        da, idx = _draws(ga, rng, n_resamples)
        db, _ = _draws(gb, rng, n_resamples, idx if pair else None)
        diff += (da - db) / T
        if pair:
            terms.append(_share(da - db, Grid(ga.values - gb.values, ga.pretrain_seeds, ga.seeds), T))
        else:
            terms += [_share(da, ga, T), _share(db, gb, T)]
    point = float(np.mean([estimate(g) for g in a]) - np.mean([estimate(g) for g in b]))
    diff = diff[np.isfinite(diff)]
    tail = 100 * (1 - level) / 2
    pct = tuple(float(x) for x in np.percentile(diff, [tail, 100 - tail])) if len(diff) else (math.nan,) * 2
    n_pre = (min(g.n_pretrain for g in a), min(g.n_pretrain for g in b))
    var = sum(v for v, _ in terms)
    den = sum(v * v / d for v, d in terms if d > 0)
    if any(d <= 0 for _, d in terms) or not var > 0 or not den > 0:  # a cell without replication: no interval
        return Difference(point, math.nan, math.nan, math.nan, 0.0, math.nan, pair, n_pre, pct)
    se, df = math.sqrt(var), var * var / den  # Welch-Satterthwaite over cells (and tasks)
    half = float(sps.t.ppf(1 - (1 - level) / 2, df)) * se
    return Difference(point, point - half, point + half, se, df, mde(se, df, level, power), pair, n_pre, pct)


def _share(draws: np.ndarray, g: Grid, n_tasks: int) -> tuple[float, float]:
    """One cell's (or, paired, one difference grid's) share of the estimate's variance on one task, from its
    Multi-Bootstrap draws, and its degrees of freedom.

    The draws' variance is (n-1)/n of the plug-in variance of a mean of n top-level units, plus, with two or more
    pretraining seeds, the variance the second stage adds by resampling fine-tuning seeds inside each drawn one
    (Davison & Hinkley 1997, §3.8: two-stage resampling counts the within-seed noise twice). Removing that plug-in
    term and rescaling by n/(n-1) leaves the unbiased variance of the mean of the pretraining-seed means, whose
    t statistic has n-1 degrees of freedom (exact for normal, balanced data)."""
    draws = draws[np.isfinite(draws)]
    n = g.top_units()
    if n < 2 or len(draws) < 2:
        return 0.0, 0.0
    v = float(np.var(draws, ddof=1))
    if g.n_pretrain >= 2:
        runs = g._runs()
        runs = runs[~np.all(np.isnan(runs), axis=1)]
        n_f = np.sum(~np.isnan(runs), axis=1)
        with _quiet():
            plug_in = np.where(n_f > 1, np.nanvar(runs, axis=1, ddof=0) / n_f, 0.0)  # stage-2 variance of a seed mean
        v = max(v - float(np.mean(plug_in)) / len(runs), 0.0)
    return n / (n - 1) * v / n_tasks ** 2, float(n - 1)


def mde(se: float, df: float, level: float = LEVEL, power: float = POWER) -> float:
    """Minimum detectable effect of a two-sided test at `level` with probability `power` (t approximation)."""
    return float((sps.t.ppf(1 - (1 - level) / 2, df) + sps.t.ppf(power, df)) * se)
