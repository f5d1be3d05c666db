"""Tests of sk_braintune.metrics against independent computations."""

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV, GroupKFold, KFold

from sk_braintune.metrics import (
    correlation_score,
    correlation_scorer,
    cross_val_voxel_scores,
    noise_ceiling,
    normalized_correlation,
    roi_means,
)


def test_correlation_score_matches_corrcoef():
    rng = np.random.default_rng(0)
    y_true = rng.standard_normal((50, 4))
    y_pred = y_true + rng.standard_normal((50, 4))
    expected = [np.corrcoef(y_true[:, j], y_pred[:, j])[0, 1] for j in range(4)]
    np.testing.assert_allclose(correlation_score(y_true, y_pred, "raw_values"), expected)
    assert correlation_score(y_true, y_pred) == pytest.approx(np.mean(expected))
    weights = np.array([1.0, 0.0, 0.0, 3.0])
    assert correlation_score(y_true, y_pred, weights) == pytest.approx(
        (expected[0] + 3 * expected[3]) / 4)
    assert correlation_score(y_true[:, 0], y_pred[:, 0]) == pytest.approx(expected[0])


def test_correlation_score_constant_columns_are_zero_and_errors():
    y_true = np.column_stack([np.arange(5.0), np.ones(5)])
    assert np.array_equal(correlation_score(y_true, y_true, "raw_values"), [1.0, 0.0])
    with pytest.raises(ValueError, match="same shape"):
        correlation_score(np.ones((3, 2)), np.ones((3, 3)))
    with pytest.raises(ValueError, match="multioutput"):
        correlation_score(y_true, y_true, "variance_weighted")


@pytest.mark.parametrize("n_repeats", [2, 10])
def test_noise_ceiling_matches_closed_form(n_repeats):
    # signal of variance s2 plus independent noise of variance sigma2 in each repeat:
    # SP = s2 / (s2 + sigma2) and cc_max = corr(mean of repeats, signal) = sqrt(s2 / (s2 + sigma2 / N))
    rng = np.random.default_rng(1)
    n_trs = 40000
    signal_sd = np.array([1.0, 1.0, 2.0, 0.5])
    noise_sd = np.array([0.5, 2.0, 1.0, 3.0])
    signal = rng.standard_normal((n_trs, 4)) * signal_sd
    repeats = signal[None] + rng.standard_normal((n_repeats, n_trs, 4)) * noise_sd + 7.0
    s2, sigma2 = signal_sd ** 2, noise_sd ** 2
    expected = np.sqrt(s2 / (s2 + sigma2 / n_repeats))
    np.testing.assert_allclose(noise_ceiling(repeats), expected, atol=0.015)
    # the same number is the correlation of the repeat mean with the true signal
    empirical = correlation_score(signal, repeats.mean(0), "raw_values")
    np.testing.assert_allclose(noise_ceiling(repeats), empirical, atol=0.015)


def test_noise_ceiling_formula_and_degenerate_voxels():
    rng = np.random.default_rng(2)
    repeats = rng.standard_normal((3, 30, 3))
    repeats[:, :, 2] = 1.0  # constant voxel: undefined -> 0
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (repeats - repeats.mean(1, keepdims=True)) / repeats.std(1, keepdims=True)
        y = z.mean(0)
        sp = (3 * y.var(0, ddof=1) - 1) / 2
        expected = np.nan_to_num(1 / np.sqrt(1 + (1 / sp - 1) / 3))
    result = noise_ceiling(repeats)
    np.testing.assert_allclose(result, expected)
    assert result[2] == 0.0 and result.shape == (3,)
    with pytest.raises(ValueError, match="at least 2 repeats"):
        noise_ceiling(repeats[:1])


def test_normalized_correlation_excludes_low_ceilings():
    r = np.array([0.2, 0.3, 0.01, -0.1])
    cc_max = np.array([0.5, 0.05, 0.01, 0.8])
    out = normalized_correlation(r, cc_max)
    np.testing.assert_allclose(out, [0.4, np.nan, np.nan, -0.125])
    assert np.nanmean(out) == pytest.approx((0.4 - 0.125) / 2)


def test_roi_means_excludes_nan_voxels():
    scores = np.array([0.1, np.nan, 0.3, 0.5, np.nan])
    labels = np.array(["a", "a", "a", "b", "c"])
    means = roi_means(scores, labels)
    assert means["a"] == pytest.approx(0.2) and means["b"] == pytest.approx(0.5)
    assert np.isnan(means["c"])
    assert np.isnan(roi_means(scores, labels, exclude_nan=False)["a"])


def _story_data(seed=0, n_stories=4, n_per_story=40, n_features=6, n_voxels=5):
    rng = np.random.default_rng(seed)
    n = n_stories * n_per_story
    X = rng.standard_normal((n, n_features))
    Y = X @ rng.standard_normal((n_features, n_voxels)) + rng.standard_normal((n, n_voxels))
    groups = np.repeat(np.arange(n_stories), n_per_story)
    return X, Y, groups


def test_correlation_scorer_in_grid_search():
    X, Y, groups = _story_data()
    search = GridSearchCV(Ridge(), {"alpha": [0.1, 1e4]}, scoring=correlation_scorer,
                          cv=GroupKFold(2)).fit(X, Y, groups=groups)
    manual = []
    for train, test in GroupKFold(2).split(X, Y, groups):
        model = Ridge(alpha=search.best_params_["alpha"]).fit(X[train], Y[train])
        manual.append(correlation_score(Y[test], model.predict(X[test])))
    assert search.best_score_ == pytest.approx(np.mean(manual))


def test_cross_val_voxel_scores_matches_manual_loop():
    X, Y, groups = _story_data(1)
    scores = cross_val_voxel_scores(Ridge(alpha=3.0), X, Y, groups, cv=4)
    assert scores.shape == (4, 5)
    for fold, (train, test) in enumerate(GroupKFold(4).split(X, Y, groups)):
        prediction = Ridge(alpha=3.0).fit(X[train], Y[train]).predict(X[test])
        np.testing.assert_allclose(scores[fold], correlation_score(Y[test], prediction,
                                                                   "raw_values"))
    contiguous = cross_val_voxel_scores(Ridge(alpha=3.0), X, Y, None, cv=KFold(3))
    assert contiguous.shape == (3, 5)


def test_cross_val_voxel_scores_routes_groups():
    import sklearn
    from sklearn.model_selection import LeaveOneGroupOut
    from sk_braintune.encoding import RidgeEncoder

    X, Y, groups = _story_data(2)
    with sklearn.config_context(enable_metadata_routing=True):
        # LeaveOneGroupOut fails without groups, so success shows they were routed
        model = RidgeEncoder(alphas=[1.0, 100.0], cv=LeaveOneGroupOut()).set_fit_request(
            groups=True)
        scores = cross_val_voxel_scores(model, X, Y, groups, cv=2)
    assert scores.shape == (2, 5) and np.all(scores > 0.3)


def test_weighted_correlation_equals_repeated_samples():
    rng = np.random.default_rng(3)
    y_true, y_pred = rng.standard_normal((10, 3)), rng.standard_normal((10, 3))
    counts = rng.integers(0, 4, 10)
    repeated = np.repeat(np.arange(10), counts)
    np.testing.assert_allclose(
        correlation_score(y_true, y_pred, "raw_values", sample_weight=counts),
        correlation_score(y_true[repeated], y_pred[repeated], "raw_values"))


def test_constant_nonzero_voxels_score_zero_not_one():
    rng = np.random.default_rng(7)
    prediction = rng.standard_normal((37, 3))
    y = prediction + 0.1 * rng.standard_normal((37, 3))
    y[:, 1] = 0.3  # constant non-zero: its centred values are round-off, not zeros
    y[:, 2] = 3.3
    for column in (1, 2):  # the case that used to give r = +-1
        assert np.any(y[:, column] - y[:, column].mean() != 0)
    r = correlation_score(y, prediction, "raw_values")
    assert r[0] > 0.9 and r[1] == 0 and r[2] == 0
    # a constant prediction (to round-off) scores 0 as well
    flat = np.full(37, 7.1) + np.finfo(float).eps * 7.1 * rng.standard_normal(37)
    assert correlation_score(y[:, 0], flat) == 0
    # a small but real signal is not mistaken for a constant
    tiny = 1e-9 * prediction[:, 0] + 5.0
    assert correlation_score(tiny, prediction[:, 0]) == pytest.approx(1.0)


def test_noise_ceiling_rejects_two_dimensional_input():
    with pytest.raises(ValueError, match="2-D array is ambiguous"):
        noise_ceiling(np.ones((3, 20)))


def test_noise_ceiling_in_voxel_chunks_equals_one_pass(monkeypatch):
    # the ceiling is computed a chunk of voxels at a time (bounded float64 temporaries at
    # 90,000 voxels); chunk edges must not change any voxel's value
    from sk_braintune import metrics

    rng = np.random.default_rng(7)
    repeats = (rng.standard_normal((1, 40, 10)) + rng.standard_normal((3, 40, 10))).astype(
        np.float32)
    whole = metrics.noise_ceiling(repeats)
    monkeypatch.setattr(metrics, "_CEILING_CHUNK_VOXELS", 3)
    np.testing.assert_array_equal(metrics.noise_ceiling(repeats), whole)


def test_correlation_score_in_column_blocks_equals_one_pass(monkeypatch):
    # Pearson r is computed a block of columns at a time (bounded float64 temporaries on the
    # held-out story at 80,000 voxels); block edges must not change a column
    from sk_braintune import metrics

    rng = np.random.default_rng(8)
    y_true = rng.standard_normal((30, 11)).astype(np.float32)
    y_pred = 0.5 * y_true + rng.standard_normal((30, 11)).astype(np.float32)
    y_pred[:, 4] = 2.0  # constant: r = 0
    weights = rng.uniform(0.5, 1.5, 30)
    whole = metrics.correlation_score(y_true, y_pred, multioutput="raw_values",
                                      sample_weight=weights)
    monkeypatch.setattr(metrics, "_CORRELATION_BLOCK", 3)
    blocks = metrics.correlation_score(y_true, y_pred, multioutput="raw_values",
                                       sample_weight=weights)
    np.testing.assert_allclose(blocks, whole, rtol=1e-12, atol=1e-15)
    assert blocks[4] == 0.0
    expected = [np.corrcoef(y_true[:, k], y_pred[:, k])[0, 1] for k in range(11) if k != 4]
    unweighted = metrics.correlation_score(y_true, y_pred, multioutput="raw_values")
    np.testing.assert_allclose(np.delete(unweighted, 4), expected, rtol=1e-5)
