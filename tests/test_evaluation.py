"""The one evaluation API: encoding model as an estimator, routed groups, clamped inner CV."""

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sk_braintune.encoding import RidgeEncoder
from sk_braintune.evaluation import (
    default_encoder,
    fit_score_encoding,
    layerwise_alignment,
    split_layers,
)


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


# -- the second low-level estimate and the significance of the demo and ``evaluate`` ----------

def _zscore_delay(X, groups, delays):
    """z-score per story and delay within stories, by hand (as in ``_by_hand``)."""
    Xz = np.empty_like(X, dtype=np.float64)
    for s in np.unique(groups):
        rows = groups == s
        Xz[rows] = (X[rows] - X[rows].mean(0)) / X[rows].std(0)
    parts = []
    for s in dict.fromkeys(groups):
        block = Xz[groups == s]
        parts.append(np.hstack([np.vstack([np.zeros((d, block.shape[1])),
                                           block[:len(block) - d]]) for d in delays]))
    return np.vstack(parts)


def test_layerwise_alignment_keeps_the_last_layers_held_out_fit():
    X, Y, groups, stories = _data(dim=6)
    encoder = RidgeEncoder(alphas=[1.0, 10.0], dtype="float64")
    table = layerwise_alignment(X, 2, Y, groups, stories[:3], stories[3:],
                                noise_ceiling=np.ones(Y.shape[1]),
                                voxel_labels=np.array(["a"] * Y.shape[1]), estimator=encoder)
    direct = fit_score_encoding(split_layers(X, 2)[:, -1], Y, groups, stories[:3], stories[3:],
                                estimator=encoder)
    last = table["last_layer"]
    test = groups == stories[3]
    np.testing.assert_array_equal(last["y_true"], Y[test])
    np.testing.assert_array_equal(last["groups"], groups[test])
    np.testing.assert_allclose(last["prediction"], direct["prediction"], rtol=1e-10)
    np.testing.assert_allclose(last["prediction"], direct["model"].predict(
        _zscore_delay(split_layers(X, 2)[:, -1], groups, (1, 2, 3, 4))[test]), rtol=1e-5,
        atol=1e-6)
    r = [np.corrcoef(last["prediction"][:, j], Y[test][:, j])[0, 1] for j in range(Y.shape[1])]
    np.testing.assert_allclose(table["voxels"][-1], r, rtol=1e-5)


def test_alignment_significance_is_the_underlying_tests_with_one_random_stream():
    from sklearn.utils import check_random_state

    from sk_braintune.encoding import block_permutation_test, fdr_bh, roi_confidence_intervals
    from sk_braintune.evaluation import alignment_significance

    rng = np.random.default_rng(1)
    n_trs, n_signal, n_null = 200, 10, 30
    signal = rng.standard_normal((n_trs, n_signal + n_null))
    y_pred = signal.copy()
    y_true = signal + 2 * rng.standard_normal(signal.shape)
    y_true[:, n_signal:] = rng.standard_normal((n_trs, n_null))  # planted null voxels
    labels = np.array(["sig"] * n_signal + ["null"] * n_null)
    groups = np.repeat(["a", "b"], n_trs // 2)
    nc = np.full(labels.size, 0.5)
    result = alignment_significance(y_true, y_pred, labels, groups=groups, noise_ceiling=nc,
                                    n_permutations=200, n_bootstraps=100, random_state=3)
    stream = check_random_state(3)
    r, p = block_permutation_test(y_true, y_pred, n_permutations=200, groups=groups,
                                  random_state=stream)
    rejected, q = fdr_bh(p)
    intervals = roi_confidence_intervals(y_true, y_pred, labels, n_bootstraps=100,
                                         groups=groups, cc_max=nc, random_state=stream)
    np.testing.assert_array_equal(result["p_values"], p)
    np.testing.assert_array_equal(result["q_values"], q)
    np.testing.assert_allclose(result["r"], [np.corrcoef(y_true[:, j], y_pred[:, j])[0, 1]
                                             for j in range(labels.size)], rtol=1e-10)
    for roi in ("sig", "null"):
        entry = result["roi"][roi]
        assert entry["n_voxels"] == np.sum(labels == roi)
        assert entry["n_significant"] == np.sum(rejected & (labels == roi))
        assert (entry["mean"], entry["low"], entry["high"]) == tuple(
            intervals[roi][k] for k in ("mean", "low", "high"))
        assert entry["low"] <= entry["mean"] <= entry["high"]
    # r ~ 0.45 over 200 TRs is far outside the block-permutation null; the null voxels are not
    assert result["roi"]["sig"]["n_significant"] == n_signal
    assert result["roi"]["null"]["n_significant"] <= 2


def test_variance_partition_summary_is_variance_partitioning_on_the_delayed_spaces():
    from sklearn.utils import Bunch

    from sk_braintune.encoding import partition_roi_summary, variance_partitioning
    from sk_braintune.evaluation import variance_partition_summary

    rng = np.random.default_rng(2)
    stories = ["s0", "s1", "s2", "s3"]
    groups = np.repeat(stories, 40)
    shared, only_model = rng.standard_normal((2, len(groups), 2))
    model = np.hstack([shared, only_model]) @ rng.standard_normal((4, 5))
    low_a, low_b = shared[:, :1], shared[:, 1:] + 0.1 * rng.standard_normal((len(groups), 1))
    Y = np.hstack([shared @ [[1.0], [1.0]] + only_model @ [[1.0], [0.0]],
                   shared @ [[1.0], [0.5]]]) + 0.3 * rng.standard_normal((len(groups), 2))
    by_story = lambda a: {s: a[groups == s] for s in stories}  # noqa: E731
    dataset = Bunch(responses=by_story(Y), voxel_labels=np.array(["both", "low"]))
    lowlevel = [by_story(low_a), by_story(low_b)]
    out = variance_partition_summary(dataset, {"m": model}, groups, stories[:3], stories[3:],
                                     low_level=lowlevel, delays=(0, 1), n_iter=4, cv=3,
                                     random_state=0)
    direct = variance_partitioning(_zscore_delay(model, groups, (0, 1)),
                                   _zscore_delay(np.hstack([low_a, low_b]), groups, (0, 1)),
                                   Y, groups, stories[:3], stories[3:], n_iter=4, cv=3,
                                   random_state=0)
    for key in ("unique_model", "unique_lowlevel", "shared", "shared_fraction"):
        np.testing.assert_allclose(out["voxels"]["m"][key], direct[key], rtol=1e-4, atol=1e-5)
    summary = partition_roi_summary(direct, dataset.voxel_labels)
    for roi in ("both", "low"):
        for key in ("unique_model", "shared", "shared_fraction"):
            np.testing.assert_allclose(out["roi"]["m"][roi][key], summary[roi][key],
                                       rtol=1e-4, atol=1e-5)
    # planted: voxel "both" has variance only the model explains, voxel "low" has none
    assert out["roi"]["m"]["both"]["unique_model"] > 0.1
    assert out["roi"]["m"]["low"]["unique_model"] < 0.05


def _listener(seed=4, n_per=80, n_stories=4):
    """Two models' 2-layer features, a listener's responses and two low-level spaces."""
    rng = np.random.default_rng(seed)
    stories = [f"s{i}" for i in range(n_stories)]
    groups = np.repeat(stories, n_per)
    low = rng.standard_normal((len(groups), 2))
    semantic = rng.standard_normal((len(groups), 2))
    last = np.hstack([low, semantic]) @ rng.standard_normal((4, 4))
    features = {"a": np.hstack([rng.standard_normal((len(groups), 4)), last]),
                "b": np.hstack([last, rng.standard_normal((len(groups), 4))])}
    # the response follows its stimulus by 2 TRs (within the FIR delays 1-4), within stories
    lagged = lambda a: np.vstack([np.vstack([np.zeros((2, a.shape[1])), a[groups == s][:-2]])  # noqa: E731
                                  for s in stories])
    responses = np.hstack([lagged(low) @ [[1.0], [0.5]], lagged(semantic) @ [[1.0], [1.0]],
                           rng.standard_normal((len(groups), 1))])
    responses += 0.5 * rng.standard_normal(responses.shape)
    labels = np.array(["auditory", "semantic", "noise"])
    low_level = [{s: low[groups == s, :1] for s in stories},
                 {s: low[groups == s, 1:] for s in stories}]
    return features, responses, groups, stories, labels, low_level


def test_evaluate_listener_is_the_paper_sequence_of_the_building_blocks():
    from sk_braintune.evaluation import (
        alignment_significance,
        evaluate_listener,
        low_level_impacts,
        variance_partition_summary,
    )

    features, Y, groups, stories, labels, low_level = _listener()
    nc = np.array([0.8, 0.9, 0.5])
    train, test = stories[:3], stories[3:]
    seen = []

    class Stages:
        def __call__(self, name):
            seen.append(name)
            return __import__("contextlib").nullcontext()

    result = evaluate_listener(features, 2, Y, groups, train_stories=train, test_stories=test,
                               noise_ceiling=nc, voxel_labels=labels, low_level=low_level,
                               cv=3, n_permutations=50, partitioning_n_iter=3, random_state=0,
                               stages=Stages())
    assert [name.split(":")[0] for name in seen] == [
        "alignment", "significance", "low-level impact", "variance partitioning"]
    encoder = default_encoder(cv=3)
    last_layers = {name: split_layers(f, 2)[:, -1] for name, f in features.items()}
    for name, feats in features.items():
        table = layerwise_alignment(feats, 2, Y, groups, train, test, noise_ceiling=nc,
                                    voxel_labels=labels, estimator=encoder)
        np.testing.assert_array_equal(result.alignment[name]["voxels"], table["voxels"])
        np.testing.assert_array_equal(result.voxel_scores[name], table["voxels"][-1])
        assert result.voxel_scores[name].shape == (3,)
        fit = table["last_layer"]
        sig = alignment_significance(fit["y_true"], fit["prediction"], labels,
                                     groups=fit["groups"], noise_ceiling=nc,
                                     n_permutations=50, n_bootstraps=50, random_state=0)
        np.testing.assert_array_equal(result.voxel_q[name], sig["q_values"])
        np.testing.assert_equal(result.significance[name]["roi"], sig["roi"])
        # the impact's A is the alignment of the same last layer (z-scored in float64 there)
        for roi, entry in result.low_level_impact[name].items():
            np.testing.assert_allclose(entry["A"], result.voxel_scores[name][labels == roi][0],
                                       rtol=1e-3, atol=1e-4)
    np.testing.assert_equal(result.low_level_impact, low_level_impacts(
        None, last_layers, groups, train, test, estimator=encoder, cv=3, low_level=low_level,
        responses=Y, noise_ceiling=nc, voxel_labels=labels))
    partitions = variance_partition_summary(
        None, last_layers, groups, train, test, low_level=low_level, n_iter=3, cv=3,
        random_state=0, responses=Y, voxel_labels=labels)
    np.testing.assert_equal(result.variance_partitioning, partitions["roi"])
    # the low-level features explain the auditory voxel of model "a", not its semantic one
    assert result.low_level_impact["a"]["auditory"]["impact_percent"] > 50
    assert result.low_level_impact["a"]["semantic"]["impact_percent"] < 20


def test_evaluate_listener_runs_only_what_is_asked():
    from sk_braintune.evaluation import evaluate_listener

    features, Y, groups, stories, labels, _ = _listener()
    kwargs = dict(train_stories=stories[:3], test_stories=stories[3:], noise_ceiling=np.ones(3),
                  voxel_labels=labels, cv=3)
    result = evaluate_listener(features, 2, Y, groups, analyses=("alignment", "probe"),
                               **kwargs)
    assert result.significance is None and result.voxel_q == {}
    assert result.low_level_impact is None and result.variance_partitioning is None
    assert result.models == ["a", "b"] and set(result.alignment["a"]["roi"]) == set(labels)
    with pytest.raises(ValueError, match="low_level_feature_spaces"):
        evaluate_listener(features, 2, Y, groups, analyses=("low_level_impact",), **kwargs)
