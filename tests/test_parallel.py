"""Our sweeps and scikit-learn's searches on a dask.distributed cluster give the sequential results."""

import numpy as np
import pytest
from joblib import parallel_config
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sk_braintune.encoding import FIRDelayer, RidgeEncoder
from sk_braintune.evaluation import fit_score_encoding
from sk_braintune.parallel import parallel_map, sweep

distributed = pytest.importorskip("distributed")


def _stories(seed=0, n_stories=6, n_per_story=40, n_features=5, n_voxels=12):
    rng = np.random.default_rng(seed)
    groups = np.repeat([f"story{i}" for i in range(n_stories)], n_per_story)
    X = rng.standard_normal((len(groups), n_features))
    delayed = FIRDelayer(delays=(1, 2)).fit_transform(X, groups=groups)
    Y = delayed @ rng.standard_normal((delayed.shape[1], n_voxels))
    Y += 2.0 * rng.standard_normal(Y.shape)
    return X, Y, groups


def _fit_layer(layer, features, responses, groups):
    """One layer's held-out r (our per-layer loop body)."""
    stories = list(dict.fromkeys(groups))
    result = fit_score_encoding(features[:, layer::3], responses, groups, stories[:-1],
                                stories[-1:], delays=(1, 2),
                                estimator=RidgeEncoder(alphas=np.logspace(-1, 4, 6), cv=3))
    return result["r"]


def _executed(client):
    """Tasks run so far by the cluster's workers."""
    return sum(client.run(lambda dask_worker: dask_worker.state.executed_count).values())


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as local, \
            distributed.Client(local) as client:
        yield client


def test_parallel_map_and_sweep_without_a_cluster():
    assert parallel_map(abs, [-1, 2, -3], n_jobs=1) == [1, 2, 3]
    assert parallel_map(abs, [-1, 2, -3], n_jobs=2) == [1, 2, 3]
    def divide(a, b):
        return divmod(a, b)

    assert sweep(divide, a=[7, 9], b=[2, 4], n_jobs=2) == [
        ({"a": 7, "b": 2}, (3, 1)), ({"a": 7, "b": 4}, (1, 3)),
        ({"a": 9, "b": 2}, (4, 1)), ({"a": 9, "b": 4}, (2, 1))]


def test_our_sweep_on_dask_equals_the_sequential_loop(cluster):
    X, Y, groups = _stories()
    features = np.repeat(X, 3, axis=1) + 0.1 * np.random.default_rng(1).standard_normal(
        (len(X), 3 * X.shape[1]))

    def fit(layer):
        return _fit_layer(layer, features, Y, groups)

    sequential = [fit(layer) for layer in range(3)]
    before = _executed(cluster)
    with parallel_config(backend="dask"):
        on_dask = parallel_map(fit, range(3))
        swept = sweep(lambda layer, scale: scale * fit(layer), layer=range(3), scale=[1.0])
    assert _executed(cluster) > before  # the layers ran as tasks on the workers
    for expected, got, (params, value) in zip(sequential, on_dask, swept):
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(value, expected)
    assert [params["layer"] for params, _ in swept] == [0, 1, 2]
    assert np.mean(sequential[0]) > 0.2  # the layers do predict the held-out story


def test_grid_search_over_a_ridge_pipeline_on_dask_equals_sequential(cluster):
    X, Y, groups = _stories(seed=2)
    pipe = Pipeline([("scale", StandardScaler()), ("delay", FIRDelayer()),
                     ("ridge", RidgeEncoder(alphas=np.logspace(-1, 4, 6), cv=3))])
    grid = {"delay__delays": [(1,), (1, 2), (1, 2, 3)]}

    def search(n_jobs):
        # story-grouped outer CV: no story is both fitted and scored
        return GridSearchCV(pipe, grid, cv=GroupKFold(3), n_jobs=n_jobs).fit(X, Y,
                                                                              groups=groups)

    sequential = search(None)
    before = _executed(cluster)
    with parallel_config(backend="dask"):
        on_dask = search(-1)
    assert _executed(cluster) > before  # the fits ran as tasks on the workers (joblib batches them)
    np.testing.assert_allclose(on_dask.cv_results_["mean_test_score"],
                               sequential.cv_results_["mean_test_score"], rtol=1e-6)
    assert on_dask.best_params_ == sequential.best_params_
    assert sequential.best_params_["delay__delays"] in [(1, 2), (1, 2, 3)]
    np.testing.assert_allclose(on_dask.best_estimator_[-1].coef_,
                               sequential.best_estimator_[-1].coef_, rtol=1e-5)


def test_layerwise_alignment_on_dask_equals_sequential(cluster):
    from sk_braintune.evaluation import layerwise_alignment

    X, Y, groups = _stories(seed=3)
    features = np.hstack([X, X[:, ::-1] ** 2, X[:, :2]])[:, :15]
    stories = list(dict.fromkeys(groups))
    kwargs = dict(noise_ceiling=np.full(Y.shape[1], 0.8), voxel_labels=np.repeat(["a", "b"], 6))
    sequential = layerwise_alignment(features, 3, Y, groups, stories[:-1], stories[-1:],
                                     **kwargs)
    before = _executed(cluster)
    with parallel_config(backend="dask"):
        on_dask = layerwise_alignment(features, 3, Y, groups, stories[:-1], stories[-1:],
                                      n_jobs=-1, **kwargs)
    assert _executed(cluster) > before
    np.testing.assert_array_equal(on_dask["voxels"], sequential["voxels"])
    assert sequential["voxels"].shape == (3, Y.shape[1])
    for label in ("a", "b"):
        np.testing.assert_array_equal(on_dask["roi"][label], sequential["roi"][label])
