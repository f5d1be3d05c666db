"""Tests of the block permutation test, BH-FDR and block-bootstrap ROI intervals."""

import numpy as np
import pytest
from scipy import stats

from sk_braintune.encoding import (
    block_permutation_test,
    fdr_bh,
    roi_confidence_intervals,
    time_blocks,
)
from sk_braintune.metrics import correlation_score


def _ar1(rng, shape, phi=0.5):
    """AR(1) noise of unit variance along the first axis (autocorrelated like BOLD)."""
    values = rng.standard_normal(shape)
    for t in range(1, shape[0]):
        values[t] = phi * values[t - 1] + np.sqrt(1 - phi ** 2) * values[t]
    return values


def test_time_blocks_respect_stories():
    groups = np.repeat(["a", "b"], [25, 12])
    blocks = time_blocks(37, 10, groups)
    assert [len(b) for b in blocks] == [10, 10, 5, 10, 2]
    assert np.array_equal(np.concatenate(blocks), np.arange(37))


def test_null_voxels_are_calibrated_and_planted_voxels_are_found():
    rng = np.random.default_rng(0)
    n_trs, n_null, n_signal = 400, 2000, 200
    prediction = _ar1(rng, (n_trs, n_null + n_signal))
    noise = _ar1(rng, (n_trs, n_null + n_signal))
    y = noise.copy()
    y[:, n_null:] += 0.35 * prediction[:, n_null:]  # r ~ 0.33
    groups = np.repeat([0, 1], n_trs // 2)
    r, p = block_permutation_test(y, prediction, block_length=10, n_permutations=200,
                                  groups=groups, random_state=0)
    np.testing.assert_allclose(r, correlation_score(y, prediction, "raw_values"), atol=1e-12)
    # false-positive rate at the nominal level, within the 99.9% binomial interval
    low, high = stats.binom.interval(0.999, n_null, 0.05)
    false_positives = int(np.sum(p[:n_null] <= 0.05))
    assert low <= false_positives <= high, false_positives
    # p-values of null voxels are uniform (Kolmogorov-Smirnov, on the discrete grid)
    assert stats.kstest(p[:n_null], "uniform").statistic < 0.05
    # power on the planted voxels
    assert np.mean(p[n_null:] <= 0.05) > 0.95
    # BH over 500 null and the 200 planted voxels (with 200 permutations p >= 1/201, so the
    # BH threshold k * 0.05 / m must exceed 1/201: m = 2200 would need more permutations)
    rejected, q = fdr_bh(p[n_null - 500:], alpha=0.05)
    discoveries = np.flatnonzero(rejected)
    assert discoveries.size > 0
    assert np.mean(discoveries < 500) <= 0.1  # false discovery proportion
    assert np.mean(rejected[500:]) > 0.9
    # two-sided test: negative correlations are significant too
    _, p_two = block_permutation_test(-y[:, n_null:], prediction[:, n_null:],
                                      n_permutations=200, alternative="two-sided",
                                      random_state=0)
    assert np.mean(p_two <= 0.05) > 0.95
    _, p_one = block_permutation_test(-y[:, n_null:], prediction[:, n_null:],
                                      n_permutations=200, random_state=0)
    assert np.mean(p_one <= 0.05) == 0


def test_permutation_p_value_matches_brute_force_and_constant_voxels():
    rng = np.random.default_rng(1)
    y = rng.standard_normal((60, 3))
    y[:, 2] = 4.2  # constant voxel
    prediction = y + rng.standard_normal((60, 3))
    r, p = block_permutation_test(y, prediction, block_length=6, n_permutations=50,
                                  random_state=np.random.RandomState(3))
    rng_again = np.random.RandomState(3)
    blocks = time_blocks(60, 6)
    exceed = np.zeros(3)
    for _ in range(50):
        order = np.concatenate([blocks[k] for k in rng_again.permutation(len(blocks))])
        exceed += correlation_score(y, prediction[order], "raw_values") >= r - 1e-12
    np.testing.assert_allclose(p, (1 + exceed) / 51)
    assert r[2] == 0 and p[2] == 1
    r1, p1 = block_permutation_test(y[:, 0], prediction[:, 0], n_permutations=10)
    assert isinstance(r1, float) and 0 < p1 <= 1
    with pytest.raises(ValueError, match="nothing to permute"):
        block_permutation_test(y[:8], prediction[:8], block_length=10)
    with pytest.raises(ValueError, match="same shape"):
        block_permutation_test(y, prediction[:, :2])


def test_fdr_bh_matches_definition():
    rng = np.random.default_rng(2)
    p = np.concatenate([rng.uniform(0, 1, 80), rng.uniform(0, 0.002, 20), [np.nan]])
    rejected, q = fdr_bh(p, alpha=0.1)
    valid = p[:-1]
    m = valid.size
    ranked = np.sort(valid)
    # step-up rule: reject the k smallest, k the largest rank with p_(k) <= k alpha / m
    below = np.flatnonzero(ranked <= np.arange(1, m + 1) * 0.1 / m)
    k = below.max() + 1 if below.size else 0
    assert rejected[:-1].sum() == k
    assert np.all(valid[rejected[:-1]] <= ranked[k - 1])
    expected = [min(1.0, min(ranked[j] * m / (j + 1) for j in range(i, m))) for i in range(m)]
    np.testing.assert_allclose(np.sort(q[:-1]), expected)
    assert np.isnan(q[-1]) and not rejected[-1]
    with pytest.raises(ValueError, match="1-D"):
        fdr_bh(np.ones((2, 2)))


def test_fdr_bh_equals_the_step_up_formula_with_ties_and_nans():
    """q_(i) = min over j >= i of p_(j) m / j, clipped at 1, over the m non-NaN p-values."""
    p = np.array([0.01, np.nan, 0.04, 0.01, 0.03, 0.5, 0.04, 1.0, 0.002, np.nan])
    valid = ~np.isnan(p)
    m = int(valid.sum())
    q_direct = np.full(p.size, np.nan)
    for i in np.flatnonzero(valid):
        # p_i's rank among the valid p-values; ties take the largest rank's (smaller) value
        ranks = np.arange(1, m + 1)
        ordered = np.sort(p[valid])
        k = np.searchsorted(ordered, p[i], side="left")
        q_direct[i] = min(1.0, np.min(ordered[k:] * m / ranks[k:]))
    rejected, q = fdr_bh(p, alpha=0.05)
    np.testing.assert_allclose(q, q_direct, rtol=1e-15, atol=0)
    np.testing.assert_array_equal(np.isnan(q), ~valid)
    np.testing.assert_array_equal(rejected, valid & (q_direct <= 0.05))
    # by hand, m = 8: 0.002 -> 0.002 * 8 / 1; the two 0.01 -> 0.01 * 8 / 3 (the tie's larger
    # rank); 0.03 and the two 0.04 -> 0.04 * 8 / 6; 1.0 -> 1
    assert q[8] == pytest.approx(0.016) and q[0] == q[3] == pytest.approx(0.08 / 3)
    assert q[4] == q[2] == q[6] == pytest.approx(0.32 / 6) and q[7] == 1.0


def test_roi_intervals_cover_the_true_mean():
    rng = np.random.default_rng(3)
    n_trs, n_voxels = 300, 20
    gains = np.linspace(0.2, 1.0, n_voxels)
    truth = np.mean(gains / np.sqrt(gains ** 2 + 1))  # population r of y = g s + noise
    labels = np.array(["roi"] * n_voxels)
    covered, widths = 0, []
    for rep in range(40):
        signal = _ar1(rng, (n_trs, 1), phi=0.3)
        y = gains * signal + _ar1(rng, (n_trs, n_voxels), phi=0.3)
        interval = roi_confidence_intervals(y, np.repeat(signal, n_voxels, 1), labels,
                                            n_bootstraps=150, random_state=rep)["roi"]
        covered += interval["low"] <= truth <= interval["high"]
        widths.append(interval["high"] - interval["low"])
    # nominal 95%: within binomial error of 40 draws (and not trivially wide)
    assert covered >= stats.binom.ppf(0.001, 40, 0.95)
    assert np.mean(widths) < 0.3
    # with noise ceilings: the means are of normalised correlations, low ceilings left out
    y = gains * signal + rng.standard_normal((n_trs, n_voxels))
    prediction = np.repeat(signal, n_voxels, 1)
    cc_max = np.full(n_voxels, 0.5)
    cc_max[:5] = 0.0
    out = roi_confidence_intervals(y, prediction, labels, n_bootstraps=50, cc_max=cc_max,
                                   random_state=0)["roi"]
    r = correlation_score(y, prediction, "raw_values")
    assert out["mean"] == pytest.approx(np.mean(r[5:] / 0.5))
    assert out["low"] < out["mean"] < out["high"]


def test_roi_intervals_are_percentiles_of_resampled_correlations():
    # the definition, computed row by row: blocks drawn with replacement (the last one cut)
    # until the sample has n_trs TRs; np.corrcoef on those rows; percentiles of ROI means
    rng = np.random.default_rng(4)
    n_trs, n_voxels = 53, 7
    groups = np.repeat(["a", "b"], [30, 23])
    y_true = _ar1(rng, (n_trs, n_voxels))
    y_pred = 0.5 * y_true + rng.standard_normal((n_trs, n_voxels))
    y_pred[:, 6] = 1.0  # a constant prediction scores 0
    labels = np.array(["x", "x", "x", "y", "y", "y", "y"])
    cc_max = np.array([0.5, 0.9, 0.01, 0.7, 0.6, 0.8, 0.5])
    out = roi_confidence_intervals(y_true, y_pred, labels, block_length=8, n_bootstraps=40,
                                   groups=groups, cc_max=cc_max, random_state=5)
    blocks = time_blocks(n_trs, 8, groups)
    draw = np.random.RandomState(5)
    means = {"x": [], "y": []}
    for _ in range(40):
        rows = []
        while len(rows) < n_trs:
            rows.extend(blocks[draw.randint(len(blocks))])
        rows = rows[:n_trs]
        r = np.array([np.corrcoef(y_true[rows, v], y_pred[rows, v])[0, 1]
                      if np.ptp(y_pred[rows, v]) > 0 else 0.0 for v in range(n_voxels)])
        normalized = np.where(cc_max > 0.05, r / cc_max, np.nan)
        for roi in means:
            means[roi].append(np.nanmean(normalized[labels == roi]))
    for roi in means:
        low, high = np.percentile(means[roi], [2.5, 97.5])
        assert out[roi]["low"] == pytest.approx(low, abs=1e-10)
        assert out[roi]["high"] == pytest.approx(high, abs=1e-10)
