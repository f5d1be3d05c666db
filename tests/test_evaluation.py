"""The one evaluation API: encoding model as an estimator, routed groups, clamped inner CV."""

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sk_braintune.encoding import RidgeEncoder
from sk_braintune.evaluation import (default_encoder, fit_score_encoding, layerwise_alignment,
                                     split_layers)


def _data(seed=0, n_per=30, n_stories=4, dim=4, n_voxels=6):
    rng = np.random.default_rng(seed)
    stories = [f"s{i}" for i in range(n_stories)]
    groups = np.repeat(stories, n_per)
    X = rng.normal(size=(len(groups), dim)).astype(np.float32)
    Y = (X @ rng.normal(size=(dim, n_voxels)) + rng.normal(size=(len(groups), n_voxels)))
    return X, Y.astype(np.float32), groups, stories


def _by_hand(X, Y, groups, train, test, alpha, delays=(1, 2)):
    """z-score per story, delays within stories, sklearn Ridge, Pearson r: no package code."""
    Xz = np.empty_like(X)
    for s in np.unique(groups):
        rows = groups == s
        Xz[rows] = (X[rows] - X[rows].mean(0)) / X[rows].std(0)
    parts = []
    for s in dict.fromkeys(groups):
        block = Xz[groups == s]
        shifted = [np.vstack([np.zeros((d, block.shape[1]), block.dtype), block[:-d]])
                   for d in delays]
        parts.append(np.hstack(shifted))
    D = np.vstack(parts)
    tr, te = np.isin(groups, train), np.isin(groups, test)
    pred = Ridge(alpha=alpha).fit(D[tr], Y[tr]).predict(D[te])
    yt = Y[te]
    return np.array([np.corrcoef(pred[:, j], yt[:, j])[0, 1] for j in range(Y.shape[1])])


def test_fit_score_encoding_matches_a_direct_computation():
    X, Y, groups, stories = _data()
    result = fit_score_encoding(X, Y, groups, stories[:3], stories[3:], delays=(1, 2),
                                estimator=RidgeEncoder(alphas=[10.0], dtype="float64"))
    np.testing.assert_allclose(result["r"], _by_hand(X, Y, groups, stories[:3], stories[3:],
                                                     10.0), atol=1e-5)
    np.testing.assert_array_equal(result["best_alphas"], 10.0)


def test_estimator_is_cloned_and_its_cv_clamped_to_the_training_stories():
    X, Y, groups, stories = _data()
    encoder = RidgeEncoder(cv=5)
    result = fit_score_encoding(X, Y, groups, stories[:3], stories[3:], estimator=encoder)
    assert result["model"] is not encoder and encoder.cv == 5  # the given one is untouched
    assert result["model"].cv == 3 and result["model"].n_splits_ == 3  # 3 training stories


def test_default_estimator_is_ridge_encoder_default_grid_cv5():
    X, Y, groups, stories = _data()
    default = fit_score_encoding(X, Y, groups, stories[:3], stories[3:])
    explicit = fit_score_encoding(X, Y, groups, stories[:3], stories[3:],
                                  estimator=RidgeEncoder(alphas="default", cv=5))
    np.testing.assert_array_equal(default["r"], explicit["r"])
    assert default_encoder().get_params() == RidgeEncoder(alphas="default", cv=5).get_params()


def test_pipeline_gets_groups_on_its_last_step_and_cv_clamped(monkeypatch):
    X, Y, groups, stories = _data()
    seen = {}
    original = RidgeEncoder.fit

    def spy(self, X, y, groups=None):
        seen["groups"] = None if groups is None else np.unique(groups).tolist()
        return original(self, X, y, groups=groups)

    monkeypatch.setattr(RidgeEncoder, "fit", spy)
    pipe = make_pipeline(StandardScaler(), RidgeEncoder(cv=10))
    result = fit_score_encoding(X, Y, groups, stories[:3], stories[3:], estimator=pipe)
    assert seen["groups"] == stories[:3]
    assert result["model"][-1].cv == 3
    assert result["r"].shape == (Y.shape[1],)


def test_torch_backend_reaches_the_ridge(monkeypatch):
    pytest.importorskip("torch")
    X, Y, groups, stories = _data()
    backends = []
    original = RidgeEncoder.fit

    def spy(self, X, y, groups=None):
        backends.append(self.backend)
        return original(self, X, y, groups=groups)

    monkeypatch.setattr(RidgeEncoder, "fit", spy)
    torch_table = layerwise_alignment(np.hstack([X, X[:, ::-1]]), 2, Y, groups, stories[:3],
                                      stories[3:], noise_ceiling=np.full(Y.shape[1], 0.8),
                                      voxel_labels=np.array(["a", "b"] * 3),
                                      estimator=RidgeEncoder(backend="torch", device="cpu"))
    assert backends == ["torch", "torch"]
    numpy_table = layerwise_alignment(np.hstack([X, X[:, ::-1]]), 2, Y, groups, stories[:3],
                                      stories[3:], noise_ceiling=np.full(Y.shape[1], 0.8),
                                      voxel_labels=np.array(["a", "b"] * 3))
    assert backends[2:] == ["numpy", "numpy"]
    np.testing.assert_allclose(torch_table["voxels"], numpy_table["voxels"], atol=1e-4)


def test_layerwise_alignment_equals_one_fit_per_layer():
    X, Y, groups, stories = _data(dim=6)
    nc = np.linspace(0.2, 0.9, Y.shape[1])
    labels = np.array(["a", "b", "a", "b", "a", "b"])
    table = layerwise_alignment(X, 2, Y, groups, stories[:3], stories[3:], noise_ceiling=nc,
                                voxel_labels=labels, estimator=RidgeEncoder(cv=2))
    for layer, cols in enumerate((slice(0, 3), slice(3, 6))):
        r = fit_score_encoding(X[:, cols], Y, groups, stories[:3], stories[3:],
                               estimator=RidgeEncoder(cv=2))["r"]
        np.testing.assert_array_equal(table["voxels"][layer], r / nc)
        assert table["roi"]["a"][layer] == pytest.approx(np.mean((r / nc)[labels == "a"]))
    with pytest.raises(ValueError, match="do not split into 4 layers"):
        layerwise_alignment(X, 4, Y, groups, stories[:3], stories[3:], noise_ceiling=nc,
                            voxel_labels=labels)


def test_single_training_story_uses_contiguous_folds():
    X, Y, groups, stories = _data()
    result = fit_score_encoding(X, Y, groups, stories[:1], stories[3:],
                                estimator=RidgeEncoder(cv=3))
    assert result["model"].n_splits_ == 3 and np.all(np.isfinite(result["r"]))


def test_bad_story_names():
    X, Y, groups, stories = _data()
    with pytest.raises(ValueError, match="no rows for the training stories"):
        fit_score_encoding(X, Y, groups, ["nope"], stories[3:])
    with pytest.raises(ValueError, match=r"responses \(119\).*one row per TR"):
        fit_score_encoding(X, Y[:-1], groups, stories[:3], stories[3:])


def test_split_layers_is_a_view():
    X = np.arange(24.0).reshape(2, 12)
    per_layer = split_layers(X, 3)
    assert per_layer.shape == (2, 3, 4) and np.shares_memory(per_layer, X)
    np.testing.assert_array_equal(per_layer[:, -1], X[:, 8:])
