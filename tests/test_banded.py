"""Tests of BandedRidgeEncoder against brute-force search with scikit-learn's Ridge."""

import numpy as np
import pytest
import sklearn
from sklearn.linear_model import Ridge
from sklearn.model_selection import GroupKFold, KFold, LeaveOneGroupOut, cross_val_predict

from sk_braintune.encoding import BandedRidgeEncoder, RidgeEncoder, band_weight_candidates
from sk_braintune.metrics import correlation_score

ALPHAS = np.logspace(-1, 4, 6)


def _data(n_samples=120, sizes=(30, 8), n_targets=10, seed=0):
    """Two bands; targets driven by band 0, band 1 or both, with graded noise."""
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((n_samples, sum(sizes))) + 1.5).astype(np.float32)
    edges = np.cumsum((0,) + tuple(sizes))
    weights = np.zeros((sum(sizes), n_targets))
    for v in range(n_targets):
        band = v % 3  # 0: band 0 only, 1: band 1 only, 2: both
        for b in range(2):
            if band == b or band == 2:
                weights[edges[b]:edges[b + 1], v] = rng.standard_normal(sizes[b]) * (0.3 + b)
    Y = X @ weights + rng.uniform(0.5, 3, n_targets) * rng.standard_normal((n_samples, n_targets))
    groups = np.repeat(np.arange(4), n_samples // 4)
    return X, (Y + 5).astype(np.float32), groups


def _scaled(X, sizes, weights):
    scale = np.repeat(np.sqrt(weights), sizes)
    return X.astype(np.float64) * scale, scale


def _brute_force(X, Y, sizes, candidates, splits, alphas, scoring):
    """Mean held-out score of every (candidate, alpha), one sklearn Ridge fit per fold."""
    scores = np.zeros((len(candidates), len(alphas), Y.shape[1]))
    Y64 = Y.astype(np.float64)
    for c, weights in enumerate(candidates):
        Z, _ = _scaled(X, sizes, weights)
        for train, test in splits:
            for a, alpha in enumerate(alphas):
                prediction = Ridge(alpha=alpha).fit(Z[train], Y64[train]).predict(Z[test])
                if scoring == "correlation":
                    scores[c, a] += correlation_score(Y64[test], prediction, "raw_values")
                else:
                    scores[c, a] -= ((Y64[test] - prediction) ** 2).mean(0)
    return scores / len(splits)


@pytest.mark.parametrize("solver", ["dual", "primal"])
@pytest.mark.parametrize("scoring", ["correlation", "mse"])
def test_search_and_refit_equal_brute_force(solver, scoring):
    sizes = (30, 8)
    X, Y, groups = _data(sizes=sizes)
    model = BandedRidgeEncoder(bands=list(sizes), alphas=ALPHAS, n_iter=6, cv=4,
                               cv_scoring=scoring, solver=solver, dtype="float64",
                               random_state=0).fit(X, Y, groups=groups)
    candidates = band_weight_candidates(6, 2, random_state=0)
    np.testing.assert_allclose(model.band_weight_candidates_, candidates)
    splits = list(GroupKFold(4).split(X, Y, groups))
    expected = _brute_force(X, Y, sizes, candidates, splits, ALPHAS, scoring)
    np.testing.assert_allclose(model.cv_scores_, expected.max(1), rtol=1e-6, atol=1e-8)
    flat = expected.reshape(-1, Y.shape[1]).argmax(0)  # candidate-major: first best wins
    best_candidate, best_alpha = np.divmod(flat, len(ALPHAS))
    np.testing.assert_array_equal(model.best_alphas_, ALPHAS[best_alpha])
    np.testing.assert_allclose(model.best_band_weights_, candidates[best_candidate])
    np.testing.assert_allclose(model.best_penalties_,
                               ALPHAS[best_alpha][:, None] / candidates[best_candidate])
    X_new = np.random.default_rng(5).standard_normal((15, X.shape[1]))
    for v in range(Y.shape[1]):
        Z, scale = _scaled(X, sizes, candidates[best_candidate[v]])
        reference = Ridge(alpha=ALPHAS[best_alpha[v]]).fit(Z, Y[:, v].astype(np.float64))
        np.testing.assert_allclose(model.coef_[v], reference.coef_ * scale, rtol=1e-6,
                                   atol=1e-9)
        np.testing.assert_allclose(model.predict(X_new)[:, v], reference.predict(X_new * scale),
                                   rtol=1e-6, atol=1e-8)
    # the band that drives a target gets most of the weight where the signal is clear
    assert np.all(model.best_band_weights_[[0, 3], 0] > 0.5)
    assert np.all(model.best_band_weights_[[1, 4], 1] > 0.5)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_float32_and_backends_agree_with_float64(backend):
    pytest.importorskip(backend)
    X, Y, groups = _data(seed=1)
    reference = BandedRidgeEncoder(bands=[30, 8], alphas=ALPHAS, n_iter=5, cv=4,
                                   dtype="float64", random_state=1).fit(X, Y, groups=groups)
    model = BandedRidgeEncoder(bands=[30, 8], alphas=ALPHAS, n_iter=5, cv=4, backend=backend,
                               device="cpu", random_state=1).fit(X, Y, groups=groups)
    np.testing.assert_allclose(model.cv_scores_, reference.cv_scores_, atol=2e-4)
    np.testing.assert_array_equal(model.best_alphas_, reference.best_alphas_)
    np.testing.assert_allclose(model.predict(X), reference.predict(X), rtol=1e-3,
                               atol=1e-3 * reference.predict(X).std())


def test_explicit_candidates_bands_as_indices_and_one_band_is_ridge():
    X, Y, groups = _data(seed=2)
    permutation = np.random.default_rng(0).permutation(X.shape[1])
    sizes_model = BandedRidgeEncoder(bands=[30, 8], alphas=ALPHAS, n_iter=np.eye(2), cv=4)
    sizes_model.fit(X, Y, groups=groups)
    # the same bands given as column indices of permuted features
    inverse = np.argsort(permutation)
    index_model = BandedRidgeEncoder(bands=[inverse[:30], inverse[30:]], alphas=ALPHAS,
                                     n_iter=np.eye(2) * 3, cv=4)
    index_model.fit(X[:, permutation], Y, groups=groups)
    np.testing.assert_allclose(index_model.coef_[:, inverse], sizes_model.coef_, rtol=1e-4,
                               atol=1e-5)
    # winner-take-all: a band of weight 0 has no weights and an infinite penalty
    dropped = sizes_model.best_band_weights_ == 0
    assert dropped.any() and np.all(np.isinf(sizes_model.best_penalties_[dropped]))
    for v, (w0, _) in enumerate(sizes_model.best_band_weights_):
        band = slice(30, 38) if w0 == 1 else slice(0, 30)
        assert np.all(sizes_model.coef_[v, band] == 0)
    # one band: the search reduces to RidgeEncoder
    one = BandedRidgeEncoder(alphas=ALPHAS, cv=4).fit(X, Y, groups=groups)
    ridge = RidgeEncoder(alphas=ALPHAS, cv=4).fit(X, Y, groups=groups)
    np.testing.assert_array_equal(one.best_alphas_, ridge.best_alphas_)
    np.testing.assert_allclose(one.predict(X), ridge.predict(X), rtol=1e-5, atol=1e-5)


def test_predict_bands_sum_to_predictions_and_scores():
    X, Y, groups = _data(seed=3)
    model = BandedRidgeEncoder(bands=[30, 8], alphas=ALPHAS, n_iter=4, cv=4,
                               random_state=0).fit(X, Y, groups=groups)
    parts = model.predict_bands(X)
    assert parts.shape == (2, len(X), Y.shape[1])
    np.testing.assert_allclose(parts[0], X[:, :30] @ model.coef_[:, :30].T, rtol=1e-5)
    np.testing.assert_allclose(parts.sum(0) + model.intercept_, model.predict(X), rtol=1e-5,
                               atol=1e-4)
    r = model.score_voxels(X, Y)
    np.testing.assert_allclose(r, correlation_score(Y, model.predict(X), "raw_values"))
    assert model.score(X, Y) == pytest.approx(r.mean())
    single = BandedRidgeEncoder(bands=[30, 8], alphas=ALPHAS, n_iter=4, cv=4,
                                random_state=0).fit(X, Y[:, 0], groups=groups)
    assert single.coef_.shape == (38,) and isinstance(single.intercept_, float)
    assert single.predict_bands(X).shape == (2, len(X))


def test_without_groups_folds_are_contiguous_and_routing():
    X, Y, groups = _data(seed=4)
    model = BandedRidgeEncoder(bands=[30, 8], alphas=ALPHAS, n_iter=3, cv=4, dtype="float64",
                               random_state=0).fit(X, Y)
    expected = _brute_force(X, Y, (30, 8), model.band_weight_candidates_,
                            list(KFold(4).split(X)), ALPHAS, "correlation")
    np.testing.assert_allclose(model.cv_scores_, expected.max(1), rtol=1e-6, atol=1e-8)
    with sklearn.config_context(enable_metadata_routing=True):
        # LeaveOneGroupOut cannot split without groups: fitting proves they were routed
        routed = BandedRidgeEncoder(bands=[30, 8], alphas=ALPHAS, n_iter=3,
                                    cv=LeaveOneGroupOut()).set_fit_request(groups=True)
        prediction = cross_val_predict(routed, X, Y, cv=GroupKFold(2),
                                       params={"groups": groups})
    assert prediction.shape == Y.shape


def test_bad_bands_and_candidates_are_clear_errors():
    X, Y, _ = _data()
    with pytest.raises(ValueError, match="sum to the number of features"):
        BandedRidgeEncoder(bands=[30, 9]).fit(X, Y)
    with pytest.raises(ValueError, match="exactly one band"):
        BandedRidgeEncoder(bands=[np.arange(30), np.arange(29, 38)]).fit(X, Y)
    with pytest.raises(ValueError, match="n_candidates"):
        BandedRidgeEncoder(bands=[30, 8], n_iter=np.ones((2, 3))).fit(X, Y)
    with pytest.raises(ValueError, match="n_iter must be >= 1"):
        BandedRidgeEncoder(bands=[30, 8], n_iter=0).fit(X, Y)
