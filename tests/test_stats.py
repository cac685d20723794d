"""The Multi-Bootstrap and its interval (electra_bench/stats.py) against closed-form cases on simulated normal data."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from electra_bench.stats import Grid, estimate, grid, mde, multi_bootstrap


def _cells(rng, P, F, sd_pre, sd_ft, delta=0.0):
    a = delta + rng.normal(0, sd_pre, (P, 1)) + rng.normal(0, sd_ft, (P, F))
    b = rng.normal(0, sd_pre, (P, 1)) + rng.normal(0, sd_ft, (P, F))
    labels = (tuple(range(P)), tuple(range(F)))
    return Grid(a, *labels), Grid(b, *labels)


def _coverage(P, F, sd_pre, sd_ft, delta, n_sims=400, seed=0):
    rng, hits, decisive = np.random.default_rng(seed), 0, 0
    for i in range(n_sims):
        a, b = _cells(rng, P, F, sd_pre, sd_ft, delta)
        d = multi_bootstrap([a], [b], n_resamples=1000, seed=i)
        hits += d.ci_low <= delta <= d.ci_high
        decisive += d.ci_low > 0 or d.ci_high < 0
    return hits / n_sims, decisive / n_sims


MC = 3 * math.sqrt(0.95 * 0.05 / 400)  # three Monte-Carlo standard errors of a coverage estimated from 400 runs


def test_one_level_normal_data_covers_at_the_nominal_rate():
    """One pretraining (or none): the fine-tuning runs are iid normal, the interval is a Welch t interval."""
    cov, _ = _coverage(1, 10, 0.0, 1.0, 0.7)
    assert abs(cov - 0.95) <= MC


@pytest.mark.parametrize("P,F,sd_pre,sd_ft", [(3, 3, 1.0, 1.0), (5, 5, 1.0, 0.3), (3, 10, 0.3, 1.0)])
def test_two_level_normal_data_covers_at_least_the_nominal_rate(P, F, sd_pre, sd_ft):
    cov, _ = _coverage(P, F, sd_pre, sd_ft, 1.0, seed=P * F)
    assert cov >= 0.95 - MC


def test_a_true_zero_difference_is_decisive_at_most_five_percent_of_the_time():
    for P, F in ((3, 3), (5, 3)):
        _, decisive = _coverage(P, F, 1.0, 1.0, 0.0, seed=7 + P)
        assert decisive <= 0.05 + MC


def test_one_pretraining_seed_misses_the_pretraining_variance():
    """Why a 1-seed design gets no decisive verdict: its interval covers fine-tuning noise only."""
    cov, _ = _coverage(1, 10, 1.0, 0.5, 0.0, n_sims=200)
    assert cov < 0.7


def test_estimate_is_the_mean_of_seed_means_and_missing_runs_are_left_out():
    g = grid([(0, 0, 1.0), (0, 1, 3.0), (1, 0, 10.0)])  # pretraining seed 1 lacks fine-tuning seed 1
    assert g.values.shape == (2, 2) and math.isnan(g.values[1, 1])
    assert estimate(g) == pytest.approx((2.0 + 10.0) / 2)
    assert g.n_pretrain == 2 and g.top_units() == 2


def test_standard_error_matches_the_closed_form_of_a_two_sample_mean():
    rng = np.random.default_rng(3)
    a = Grid(rng.normal(0, 2, (1, 40)), (0,), tuple(range(40)))
    b = Grid(rng.normal(0, 1, (1, 40)), (1,), tuple(range(40)))
    d = multi_bootstrap([a], [b], n_resamples=20000)
    closed = math.sqrt(a.values.var(ddof=1) / 40 + b.values.var(ddof=1) / 40)
    assert not d.paired and d.se == pytest.approx(closed, rel=0.03)
    welch = (a.values.var(ddof=1) / 40 + b.values.var(ddof=1) / 40) ** 2 / (
        (a.values.var(ddof=1) / 40) ** 2 / 39 + (b.values.var(ddof=1) / 40) ** 2 / 39)
    assert d.df == pytest.approx(welch, rel=0.05)  # Welch, with the bootstrap variances in the weights
    assert d.mde == pytest.approx((sps.t.ppf(0.975, d.df) + sps.t.ppf(0.8, d.df)) * d.se)


def test_percentile_interval_agrees_with_scipy_bootstrap():
    rng = np.random.default_rng(4)
    x, y = rng.normal(1, 1, 30), rng.normal(0, 1, 30)
    d = multi_bootstrap([Grid(x[None], (0,), tuple(range(30)))], [Grid(y[None], (1,), tuple(range(30)))],
                        n_resamples=20000)
    ref = sps.bootstrap((x, y), lambda u, v, axis: u.mean(axis) - v.mean(axis), method="percentile",
                        n_resamples=20000, random_state=0, vectorized=True).confidence_interval
    assert d.percentile == pytest.approx((ref.low, ref.high), abs=0.05)


def test_shared_seeds_are_paired_and_pairing_removes_a_shared_seed_effect():
    rng = np.random.default_rng(5)
    shared = rng.normal(0, 3, (4, 5))  # e.g. the fine-tuning subsample a seed draws, common to both cells
    a = Grid(1.0 + shared + rng.normal(0, 0.3, (4, 5)), tuple(range(4)), tuple(range(5)))
    b = Grid(shared + rng.normal(0, 0.3, (4, 5)), tuple(range(4)), tuple(range(5)))
    d = multi_bootstrap([a], [b])
    unpaired = multi_bootstrap([a], [Grid(b.values, tuple(range(10, 14)), b.seeds)])
    assert d.paired and not unpaired.paired
    assert d.se < unpaired.se / 3 and d.ci_low > 0


def test_dev_examples_are_resampled_when_given():
    rng = np.random.default_rng(6)
    per_example = (rng.random((3, 3, 200)) < 0.7).astype(float)  # correct / wrong per dev example
    other = (rng.random((3, 3, 200)) < 0.7).astype(float)
    g, h = Grid(per_example, (0, 1, 2), (0, 1, 2)), Grid(other, (0, 1, 2), (0, 1, 2))
    with_ex = multi_bootstrap([g], [h])
    runs_only = multi_bootstrap([Grid(per_example.mean(2), g.pretrain_seeds, g.seeds)],
                                [Grid(other.mean(2), h.pretrain_seeds, h.seeds)])
    assert with_ex.estimate == pytest.approx(runs_only.estimate)
    assert with_ex.se > runs_only.se  # the dev set's sampling noise is added


def test_a_design_without_replication_has_no_interval():
    d = multi_bootstrap([Grid(np.array([[1.0]]), (0,), (0,))], [Grid(np.array([[0.0]]), (0,), (0,))])
    assert d.estimate == 1.0 and math.isnan(d.ci_low) and math.isnan(d.mde)
    assert mde(1.0, 1e6) == pytest.approx(sps.norm.ppf(0.975) + sps.norm.ppf(0.8), rel=1e-4)
