"""Tests of RidgeEncoder against scikit-learn's Ridge and brute-force cross-validation."""

import numpy as np
import pytest
import sklearn
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV, GroupKFold, KFold, LeaveOneGroupOut
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sk_braintune.encoding import ChunkedBootstrap, FIRDelayer, RidgeEncoder
from sk_braintune.encoding.ridge import ALPHA_GRIDS
from sk_braintune.metrics import correlation_score

ALPHAS = np.logspace(-1, 5, 7)


def _data(n_samples, n_features, n_targets=12, seed=0):
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((n_samples, n_features)) + 2.0).astype(np.float32)
    weights = rng.standard_normal((n_features, n_targets)) * rng.uniform(0, 0.3, n_targets)
    Y = X @ weights + 3 * rng.standard_normal((n_samples, n_targets)) + 10.0
    groups = np.repeat(np.arange(4), n_samples // 4)
    return X, Y.astype(np.float32), groups


def _brute_force_scores(X, Y, splits, alphas, scoring):
    """Mean over folds of each alpha's per-target score, one sklearn Ridge fit per (alpha, fold)."""
    scores = np.zeros((len(alphas), Y.shape[1]))
    X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
    for train, test in splits:
        for i, alpha in enumerate(alphas):
            prediction = Ridge(alpha=alpha).fit(X64[train], Y64[train]).predict(X64[test])
            if scoring == "correlation":
                scores[i] += correlation_score(Y64[test], prediction, "raw_values")
            else:
                scores[i] -= ((Y64[test] - prediction) ** 2).mean(0)
    return scores / len(splits)


def _backends():
    backends = ["numpy"]
    try:
        import torch  # noqa: F401
        backends.append("torch")
    except ImportError:
        pass
    return backends


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("solver,n_features", [("dual", 150), ("primal", 30), ("dual", 30),
                                               ("primal", 150), ("auto", 150)])
def test_predictions_equal_sklearn_ridge_at_chosen_alphas(backend, solver, n_features):
    X, Y, groups = _data(120, n_features)
    model = RidgeEncoder(alphas=ALPHAS, cv=4, solver=solver, backend=backend, device="cpu")
    model.fit(X, Y, groups=groups)
    assert model.solver_ == (solver if solver != "auto" else "dual")
    X_new = np.random.default_rng(9).standard_normal((20, n_features)).astype(np.float32)
    for v, alpha in enumerate(model.best_alphas_):
        reference = Ridge(alpha=alpha).fit(X.astype(np.float64), Y[:, v].astype(np.float64))
        np.testing.assert_allclose(model.coef_[v], reference.coef_, rtol=2e-3,
                                   atol=2e-4 * np.abs(reference.coef_).max())
        np.testing.assert_allclose(model.predict(X_new)[:, v], reference.predict(X_new),
                                   rtol=1e-4, atol=1e-4 * np.abs(reference.predict(X_new)).std())
    assert model.cv_scores_.shape == (len(ALPHAS), 12)
    assert isinstance(model.predict(X_new), np.ndarray)


def test_float64_agrees_tightly():
    X, Y, groups = _data(80, 50)
    model = RidgeEncoder(alphas=[3.0], cv=2, dtype="float64").fit(X, Y)
    reference = Ridge(alpha=3.0).fit(X.astype(np.float64), Y.astype(np.float64))
    np.testing.assert_allclose(model.coef_, reference.coef_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(model.intercept_, reference.intercept_, rtol=1e-9)


@pytest.mark.parametrize("scoring", ["correlation", "mse"])
@pytest.mark.parametrize("n_features", [20, 200])
def test_chosen_alphas_equal_brute_force(scoring, n_features):
    X, Y, groups = _data(120, n_features, seed=1)
    model = RidgeEncoder(alphas=ALPHAS, cv=4, cv_scoring=scoring).fit(X, Y, groups=groups)
    splits = list(GroupKFold(4).split(X, Y, groups))
    expected = _brute_force_scores(X, Y, splits, ALPHAS, scoring)
    np.testing.assert_allclose(model.cv_scores_, expected, rtol=1e-3,
                               atol=1e-4 * np.abs(expected).max())
    np.testing.assert_array_equal(model.best_alphas_, ALPHAS[expected.argmax(0)])
    # one shared alpha: best mean score
    shared = RidgeEncoder(alphas=ALPHAS, cv=4, cv_scoring=scoring, alpha_per_target=False)
    shared.fit(X, Y, groups=groups)
    assert np.all(shared.best_alphas_ == ALPHAS[expected.mean(1).argmax()])


def test_without_groups_folds_are_contiguous_blocks():
    X, Y, _ = _data(100, 20, seed=2)
    model = RidgeEncoder(alphas=ALPHAS, cv=5).fit(X, Y)
    expected = _brute_force_scores(X, Y, list(KFold(5).split(X)), ALPHAS, "correlation")
    np.testing.assert_array_equal(model.best_alphas_, ALPHAS[expected.argmax(0)])


def test_batching_and_alpha_chunks_do_not_change_results():
    X, Y, groups = _data(120, 150, n_targets=40, seed=3)
    big = RidgeEncoder(alphas=ALPHAS, cv=4).fit(X, Y, groups=groups)
    # ~0.05 MiB forces many target batches and one alpha per stacked matrix
    small = RidgeEncoder(alphas=ALPHAS, cv=4, working_memory=0.05).fit(X, Y, groups=groups)
    np.testing.assert_allclose(small.cv_scores_, big.cv_scores_, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(small.coef_, big.coef_, rtol=1e-4, atol=1e-5)


def test_bootstrap_cv_chunks_stay_within_stories():
    groups = np.repeat(["a", "b", "c"], [45, 30, 25])
    splitter = ChunkedBootstrap(n_splits=3, chunk_length=20, random_state=0)
    splits = list(splitter.split(np.zeros((100, 1)), groups=groups))
    assert len(splits) == 3
    starts = {0, 20, 40, 45, 65, 75, 95}
    for train, test in splits:
        assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == 100
        runs = np.split(test, np.flatnonzero(np.diff(test) > 1) + 1)
        assert all(any(run[0] == s or run[0] in starts for s in starts) for run in runs)
        for run in runs:  # every held-out run is made of whole chunks of one story at a time
            assert run[0] in starts
    again = list(splitter.split(np.zeros((100, 1)), groups=groups))
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(splits, again))
    X, Y, _ = _data(100, 10, seed=4)
    model = RidgeEncoder(alphas=ALPHAS, cv="bootstrap", random_state=0).fit(X, Y, groups=groups)
    expected = _brute_force_scores(X, Y, splits, ALPHAS, "correlation")
    np.testing.assert_array_equal(model.best_alphas_, ALPHAS[expected.argmax(0)])


def test_one_dimensional_target_and_score():
    X, Y, groups = _data(80, 10, seed=5)
    model = RidgeEncoder(alphas=ALPHAS, cv=4).fit(X, Y[:, 0], groups=groups)
    assert model.coef_.shape == (10,) and isinstance(model.intercept_, float)
    assert model.predict(X).shape == (80,)
    multi = RidgeEncoder(alphas=ALPHAS, cv=4).fit(X, Y, groups=groups)
    r = multi.score_voxels(X, Y)
    np.testing.assert_allclose(r, correlation_score(Y, multi.predict(X), "raw_values"))
    assert multi.score(X, Y) == pytest.approx(r.mean())


def test_named_grids_and_errors():
    np.testing.assert_allclose(ALPHA_GRIDS["huth"], np.logspace(1, 4, 15) ** 2)
    X, Y, groups = _data(40, 5)
    assert len(RidgeEncoder(alphas="huth", cv=2).fit(X, Y).alphas_) == 15
    with pytest.raises(ValueError, match="> 0"):
        RidgeEncoder(alphas=[0.0, 1.0]).fit(X, Y)
    with pytest.raises(ValueError, match="cv_scoring"):
        RidgeEncoder(cv_scoring="r2").fit(X, Y)
    with pytest.raises(ValueError, match="at least 5 groups"):
        RidgeEncoder().fit(X, Y, groups=groups)
    with pytest.raises(ValueError, match="alphas must be one of"):
        RidgeEncoder(alphas="wide").fit(X, Y)


def test_pipeline_grid_search_with_routed_groups():
    rng = np.random.default_rng(6)
    n_stories, n_per_story = 6, 40
    groups = np.repeat(np.arange(n_stories), n_per_story)
    X = rng.standard_normal((n_stories * n_per_story, 4))
    delayed = FIRDelayer(delays=(2,)).fit_transform(X, groups=groups)
    Y = delayed @ rng.standard_normal((4, 8)) + 0.5 * rng.standard_normal((len(X), 8))
    with sklearn.config_context(enable_metadata_routing=True):
        pipe = Pipeline([
            ("scale", StandardScaler()),
            ("delay", FIRDelayer().set_fit_request(groups=True).set_transform_request(
                groups=True)),
            # LeaveOneGroupOut cannot split without groups: fitting proves they were routed
            ("ridge", RidgeEncoder(alphas=ALPHAS, cv=LeaveOneGroupOut()).set_fit_request(
                groups=True)),
        ])
        search = GridSearchCV(pipe, {"delay__delays": [(1,), (2,), (1, 2, 3)]},
                              cv=GroupKFold(3), scoring=None)
        search.fit(X, Y, groups=groups)
    assert search.best_params_["delay__delays"] in [(2,), (1, 2, 3)]
    assert search.best_score_ > 0.8
    assert search.best_estimator_[-1].n_splits_ == n_stories



def test_direct_order_with_many_targets_matches_brute_force():
    # few held-out rows x alphas and many targets: the "direct" stacked order is chosen
    from sk_braintune.encoding._solvers import _batch_flops

    assert _batch_flops(60, 20, 59, 3, 300)[1] == "direct"
    X, Y, groups = _data(80, 100, n_targets=300, seed=7)
    alphas = np.array([1.0, 100.0, 1e4])
    big = RidgeEncoder(alphas=alphas, cv=4).fit(X, Y, groups=groups)
    small = RidgeEncoder(alphas=alphas, cv=4, working_memory=0.02).fit(X, Y, groups=groups)
    splits = list(GroupKFold(4).split(X, Y, groups))
    expected = _brute_force_scores(X, Y, splits, alphas, "correlation")
    np.testing.assert_allclose(big.cv_scores_, expected, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(small.cv_scores_, big.cv_scores_, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(big.best_alphas_, alphas[expected.argmax(0)])


def _reference_ridge_corr(Rstim, Pstim, Rresp, Presp, alphas, singcutoff=1e-10):
    """The reference ``ridge_corr(..., use_corr=False)``, written again from its formula."""
    U, S, Vh = np.linalg.svd(Rstim, full_matrices=False)
    keep = S > singcutoff
    U, S, Vh = U[:, keep], S[keep], Vh[keep]
    UR = U.T @ Rresp
    PVh = Pstim @ Vh.T
    assumed_variance = (1 + Presp.var(0)) / 2
    scores = []
    for alpha in alphas:
        prediction = (PVh * (S / (S ** 2 + alpha ** 2))) @ UR
        rsq = 1 - (Presp - prediction).var(0) / assumed_variance
        score = np.sqrt(np.abs(rsq)) * np.sign(rsq)
        score[np.isnan(score)] = 0
        scores.append(score)
    return np.array(scores)


def _reference_alphas(X, Y, splits, reference_alphas, centre):
    scores = []
    for train, test in splits:
        Rstim, Pstim, Rresp, Presp = X[train], X[test], Y[train], Y[test]
        if centre:  # the intercept RidgeEncoder fits: training means removed
            Pstim, Rstim = Pstim - Rstim.mean(0), Rstim - Rstim.mean(0)
            Presp, Rresp = Presp - Rresp.mean(0), Rresp - Rresp.mean(0)
        scores.append(_reference_ridge_corr(Rstim, Pstim, Rresp, Presp, reference_alphas))
    return reference_alphas[np.argmax(np.mean(scores, axis=0), axis=0)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_huth_protocol_alphas_equal_the_reference_formula(dtype):
    rng = np.random.default_rng(11)
    n_trs, n_features, n_voxels = 600, 40, 2000
    X = rng.standard_normal((n_trs, n_features)) @ rng.standard_normal((n_features, n_features))
    X = (X - X.mean(0)) / X.std(0)
    weights = rng.standard_normal((n_features, n_voxels)) * np.exp(rng.uniform(-5, 0, n_voxels))
    Y = X @ weights + rng.standard_normal((n_trs, n_voxels))
    Y = (Y - Y.mean(0)) / Y.std(0)  # the reference z-scores responses
    cv = ChunkedBootstrap(n_splits=5, chunk_length=20, chunking="reference", random_state=0)
    splits = list(cv.split(X))
    model = RidgeEncoder(alphas="huth", cv=cv, cv_scoring="huth_rsq", dtype=dtype).fit(
        X.astype(dtype), Y.astype(dtype))
    reference_alphas = np.logspace(1, 4, 15)  # the reference's units: lambda = alpha^2
    expected = _reference_alphas(X, Y, splits, reference_alphas, centre=True) ** 2
    np.testing.assert_allclose(ALPHA_GRIDS["huth"], reference_alphas ** 2)
    agreement = np.mean(np.isclose(model.best_alphas_, expected, rtol=1e-9))
    assert agreement >= 0.999, agreement
    assert len(np.unique(expected)) >= 8  # the voxels span the grid
    # the reference itself fits no intercept: on z-scored data that changes little
    uncentred = _reference_alphas(X, Y, splits, reference_alphas, centre=False) ** 2
    assert np.mean(np.isclose(model.best_alphas_, uncentred, rtol=1e-9)) >= 0.97
    # the criterion is not the correlation: choosing by r picks other alphas
    by_r = RidgeEncoder(alphas="huth", cv=cv, dtype=dtype).fit(X, Y)
    assert np.mean(by_r.best_alphas_ == model.best_alphas_) < 0.9


def test_reference_chunking_rule():
    cv = ChunkedBootstrap(n_splits=4, chunk_length=10, chunking="reference", random_state=0)
    for train, test in cv.split(np.zeros((107, 1))):
        assert len(test) == 10 * int(107 * 0.25 / 10)  # 2 chunks, rounded down
        assert np.all(test < 100)  # the trailing partial chunk (100-106) always trains
        runs = np.split(test, np.flatnonzero(np.diff(test) > 1) + 1)
        assert all(run[0] % 10 == 0 and len(run) % 10 == 0 for run in runs)
    default = ChunkedBootstrap(n_splits=20, chunk_length=10, random_state=0)
    held = np.concatenate([test for _, test in default.split(np.zeros((107, 1)))])
    assert held.max() == 106  # the default rule can hold out the partial chunk
    assert len(next(default.split(np.zeros((107, 1))))[1]) in (30, 27)  # round(0.25 * 11) = 3
    groups = np.repeat([0, 1], [55, 52])
    for train, test in cv.split(np.zeros((107, 1)), groups=groups):
        assert not np.any(np.isin(test, np.r_[50:55, 105:107]))  # each story's partial chunk
    with pytest.raises(ValueError, match="chunking"):
        next(ChunkedBootstrap(chunking="huth").split(np.zeros((100, 1))))


def test_constant_voxel_scores_zero():
    X, Y, groups = _data(80, 10, seed=12)
    Y = Y.astype(np.float64)
    Y[:, 3] = 0.3  # a constant non-zero voxel: centred, its values are round-off, not zeros
    assert np.any(Y[:, 3] - Y[:, 3].mean() != 0)
    model = RidgeEncoder(alphas=ALPHAS, cv=4, dtype="float64").fit(X, Y, groups=groups)
    prediction = model.predict(X)[:, 3]
    with np.errstate(invalid="ignore", divide="ignore"):
        naive = np.corrcoef(Y[:, 3], prediction)[0, 1]
    assert abs(naive) > 0.5  # round-off against round-off: what was scored before
    r = model.score_voxels(X, Y)
    assert r[3] == 0
    assert np.all(np.abs(r[np.arange(12) != 3]) > 0)


@pytest.mark.parametrize("backend", _backends())
def test_cholesky_refit_matches_sklearn_and_falls_back(backend):
    from sk_braintune.encoding import _solvers

    X, Y, _ = _data(100, 140, n_targets=30, seed=13)
    penalties = np.repeat([30.0, 300.0, 3e4], 10)
    ops = _solvers.make_ops(backend, "float32", "cpu")
    means = X.mean(0, dtype=np.float64)
    features = ops.copy_in(X)
    features -= ops.asarray(means)
    gram = features @ features.T
    coef, intercept = _solvers._cholesky_refit(ops, features, Y, penalties, gram, 2 ** 20,
                                                means)
    for v in (0, 15, 29):
        reference = Ridge(alpha=penalties[v]).fit(X.astype(np.float64), Y[:, v].astype(np.float64))
        np.testing.assert_allclose(coef[v], reference.coef_, rtol=1e-4,
                                   atol=1e-5 * np.abs(reference.coef_).max())
        assert intercept[v] == pytest.approx(reference.intercept_, rel=1e-4)
    # penalties at round-off level of the kernel, or fewer features than samples: decompose
    assert _solvers._cholesky_refit(ops, features, Y, np.full(30, 1e-6), gram, 2 ** 20,
                                    means) is None
    narrow = features[:, :50]
    assert _solvers._cholesky_refit(ops, narrow, Y, penalties, narrow @ narrow.T, 2 ** 20,
                                    means[:50]) is None
