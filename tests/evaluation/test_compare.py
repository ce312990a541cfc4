"""Set measures against closed forms: overlap of two Gaussians, their KL, the Fréchet distance."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from aurl.evaluation import compare


def test_overlap_and_kl_of_two_unit_gaussians_match_closed_forms():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 20_000), rng.normal(1, 1, 20_000)
    h = compare.shared_bandwidth(a, b)
    grid, p, q = compare.kde_pair(a, b, h)
    # both densities are N(mu, 1 + h^2) after smoothing: overlap 2 Phi(-d / 2 sigma), KL d^2 / 2 sigma^2
    sigma = math.sqrt(1 + h * h)
    assert compare.overlap_area(p, q, grid) == pytest.approx(2 * norm.cdf(-0.5 / sigma), abs=0.01)
    assert compare.kl_divergence(p, q, grid) == pytest.approx(0.5 / sigma**2, abs=0.03)
    assert compare.overlap_area(p, p, grid) == pytest.approx(1.0, abs=1e-9)
    assert (p.sum() * (grid[1] - grid[0])) == pytest.approx(1.0, abs=1e-3)


def test_overlap_is_symmetric_because_the_bandwidth_is_shared():
    rng = np.random.default_rng(1)
    a, b = rng.gamma(2.0, 1.0, 3000), rng.gamma(2.0, 1.5, 500)
    g1, p1, q1 = compare.kde_pair(a, b)
    g2, p2, q2 = compare.kde_pair(b, a)
    assert compare.overlap_area(p1, q1, g1) == pytest.approx(compare.overlap_area(q2, p2, g2))


def test_compare_feature_same_distribution_high_shifted_low():
    rng = np.random.default_rng(2)
    ref = rng.normal(0, 1, 300)
    same = compare.compare_feature(rng.normal(0, 1, 100), ref)
    far = compare.compare_feature(rng.normal(6, 1, 100), ref)
    assert same["overlap_area"] > 0.9
    assert far["overlap_area"] < 0.1
    assert far["kl"] > 10 * same["kl"]


def test_compare_feature_on_histograms_and_nan_rows():
    rng = np.random.default_rng(3)
    ref = rng.dirichlet(np.ones(12) * 5, 200)
    samples = rng.dirichlet(np.ones(12) * 5, 50)
    samples[0] = np.nan  # an undefined feature leaves that piece out
    assert compare.compare_feature(samples, ref)["overlap_area"] > 0.85
    skewed = rng.dirichlet(np.r_[np.full(6, 50.0), np.full(6, 0.5)], 50)
    assert compare.compare_feature(skewed, ref)["overlap_area"] < 0.3


def test_constant_feature_equal_in_both_sets_overlaps_fully():
    assert compare.compare_feature(np.ones(20), np.ones(40))["overlap_area"] == pytest.approx(1.0)


def test_frechet_distance_is_the_squared_mean_shift_in_reference_units():
    rng = np.random.default_rng(4)
    ref = rng.normal(0, [1.0, 10.0, 0.1], (20_000, 3))
    same = rng.normal(0, [1.0, 10.0, 0.1], (20_000, 3))
    shifted = ref + np.array([0.0, 20.0, 0.0])  # 2 reference standard deviations on the second axis
    assert compare.frechet_distance(same, ref) == pytest.approx(0.0, abs=0.01)
    expected = (20.0 / ref[:, 1].std()) ** 2  # ≈ 4; exact shift over the reference's own sd
    assert compare.frechet_distance(shifted, ref) == pytest.approx(expected, abs=1e-4)
    wider = rng.normal(0, [2.0, 10.0, 0.1], (20_000, 3))  # sd 2 vs 1: (2 - 1)^2 = 1
    assert compare.frechet_distance(wider, ref) == pytest.approx(1.0, abs=0.05)


def test_nanmean_scalar_and_histogram():
    assert compare.nanmean(np.array([1.0, np.nan, 3.0])) == 2.0
    assert compare.nanmean(np.array([[1.0, 0.0], [0.0, 1.0]])) == [0.5, 0.5]


def test_frechet_scales_a_histogram_as_one_block_so_a_rare_bin_cannot_dominate():
    rng = np.random.default_rng(5)
    a = rng.uniform(0.3, 0.7, 5000)
    rare = np.abs(rng.normal(0, 0.001, 5000))
    ref = np.stack([a - rare / 2, 1 - a - rare / 2, rare], axis=1)  # rows sum to 1
    moved = ref[::-1] + np.array([-0.01, 0.0, 0.01])  # 1 % of the mass into the rare bin
    per_bin = compare.frechet_distance(moved, ref)
    as_block = compare.frechet_distance(moved, ref, blocks=[3])
    assert per_bin > 50  # (0.01 / ~0.0006)^2: one rare bin swamps everything
    assert as_block < 0.05  # 0.01 against the block's total sd of ~0.16
    with pytest.raises(ValueError, match="blocks"):
        compare.frechet_distance(moved, ref, blocks=[2])
