"""Tests of variance partitioning on planted unique and shared components."""

import numpy as np
import pytest
from scipy.optimize import nnls

from sk_braintune.encoding import (RidgeEncoder, correct_partitions, partition_roi_summary,
                                   variance_partitioning)
from sk_braintune.encoding.partitioning import r2_voxels

# (shared, model-only, low-level-only) amplitudes of each voxel kind; noise sd 0.5
KINDS = {"model": (0, 1, 0), "lowlevel": (0, 0, 1), "shared": (1, 0, 0),
         "model+shared": (1, 1, 0), "all": (0.7, 1, 0.7), "null": (0, 0, 0)}
NOISE = 0.5


def _planted(n_stories=8, n_per_story=200, per_kind=5, seed=0):
    rng = np.random.default_rng(seed)
    n = n_stories * n_per_story
    shared, only_model, only_low = rng.standard_normal((3, n, 3))
    X_model = np.hstack([shared, only_model]) @ rng.standard_normal((6, 20))
    X_low = np.hstack([shared, only_low]) @ rng.standard_normal((6, 10))
    X_model += 0.05 * rng.standard_normal(X_model.shape)
    X_low += 0.05 * rng.standard_normal(X_low.shape)
    groups = np.repeat(np.arange(n_stories), n_per_story)
    test = groups >= n_stories - 2
    columns, truth, labels = [], [], []
    for name, (a_s, a_m, a_l) in KINDS.items():
        for _ in range(per_kind):
            # unit-norm weights on white latents: each component has variance amplitude^2
            parts = [amplitude * latent @ (w / np.linalg.norm(w)) for amplitude, latent, w in
                     zip((a_s, a_m, a_l), (shared, only_model, only_low),
                         rng.standard_normal((3, 3)))]
            noise = NOISE * rng.standard_normal(n)
            columns.append(sum(parts) + noise)
            # the truth on the held-out stories: the partitions of the R^2 of the oracle
            # predictions E[y | features] (what each feature space can explain there)
            total = columns[-1][test].var()
            r2_model = 1 - (parts[2] + noise)[test].var() / total
            r2_low = 1 - (parts[1] + noise)[test].var() / total
            r2_joint = 1 - noise[test].var() / total
            truth.append((r2_joint - r2_low, r2_joint - r2_model, r2_model + r2_low - r2_joint))
            labels.append(name)
    return X_model, X_low, np.column_stack(columns), groups, np.array(truth), np.array(labels)


def test_planted_unique_and_shared_variance_are_recovered():
    X_model, X_low, y, groups, truth, labels = _planted()
    result = variance_partitioning(X_model, X_low, y, groups, train=[0, 1, 2, 3, 4, 5],
                                   test=[6, 7], alphas=np.logspace(-2, 4, 4), n_iter=6,
                                   random_state=0, return_models=True)
    for column, key in enumerate(("unique_model", "unique_lowlevel", "shared")):
        np.testing.assert_allclose(result[key], truth[:, column], atol=0.06, err_msg=key)
    np.testing.assert_allclose(result["r2_joint"], truth.sum(1), atol=0.06)
    # without negative estimates the projection changes nothing
    raw = np.stack([result[f"{k}_raw"] for k in ("unique_model", "unique_lowlevel", "shared")])
    clean = np.all(raw >= 0, axis=0)
    assert clean.sum() > 10
    np.testing.assert_allclose(result["shared"][clean], result["shared_raw"][clean])
    # the partitions add up to the (corrected) R^2 and the split R^2 to the joint R^2
    np.testing.assert_allclose(result["unique_model"] + result["shared"],
                               result["r2_model"], atol=0.03)
    np.testing.assert_allclose(result["split_r2_model"] + result["split_r2_lowlevel"],
                               result["r2_joint"], atol=0.02)
    model_only = labels == "model"
    assert np.all(result["split_r2_model"][model_only] > 0.7)
    assert np.all(np.abs(result["split_r2_lowlevel"][model_only]) < 0.05)
    # shared fraction of the model's explained variance (the "low-level impact")
    np.testing.assert_allclose(result["shared_fraction"][labels == "model+shared"], 0.5,
                               atol=0.08)
    assert np.all(np.isnan(result["shared_fraction"][labels == "lowlevel"])
                  | (result["shared_fraction"][labels == "lowlevel"] < 0.3))
    # held-out R^2 equals a direct computation from the returned models
    models = result["models"]
    test = groups >= 6
    expected = r2_voxels(y[test], models["model"].predict(X_model[test]))
    np.testing.assert_allclose(result["r2_model"], expected)
    assert models["joint"].best_band_weights_.shape == (y.shape[1], 2)


def test_correction_is_nonnegative_least_squares():
    rng = np.random.default_rng(1)
    r2 = rng.uniform(-0.2, 0.6, (3, 300))
    combine = np.array([[1.0, 0, 1], [0, 1, 1], [1, 1, 1]])
    parts = correct_partitions(*r2, correction="projection")
    stacked = np.stack([parts["unique_model"], parts["unique_lowlevel"], parts["shared"]])
    for v in range(r2.shape[1]):
        expected, _ = nnls(combine, r2[:, v])
        np.testing.assert_allclose(stacked[:, v], expected, atol=1e-10)
    raw = correct_partitions(*r2, correction="none")
    np.testing.assert_allclose(raw["unique_model"], r2[2] - r2[1])
    np.testing.assert_allclose(raw["unique_lowlevel"], r2[2] - r2[0])
    np.testing.assert_allclose(raw["shared"], r2[0] + r2[1] - r2[2])
    clipped = correct_partitions(*r2, correction="clip")
    np.testing.assert_allclose(clipped["shared"], np.maximum(raw["shared"], 0))
    # nothing explained: all zeros; NaN inputs stay NaN
    zero = correct_partitions([-0.1, np.nan], [-0.2, 0.1], [-0.05, 0.2])
    assert zero["shared"][0] == 0 and zero["unique_model"][0] == 0
    assert np.isnan(zero["shared"][1])
    with pytest.raises(ValueError, match="correction"):
        correct_partitions([0.1], [0.1], [0.1], correction="abs")


def test_roi_summary_and_input_errors():
    X_model, X_low, y, groups, truth, labels = _planted(n_stories=4, n_per_story=100,
                                                        per_kind=2)
    result = variance_partitioning(X_model, X_low, y, groups, train=[0, 1, 2], test=[3],
                                   alphas=[0.1, 10, 1000], n_iter=3, cv=3, random_state=0)
    summary = partition_roi_summary(result, labels)
    assert sorted(summary) == sorted(KINDS)
    for roi in KINDS:
        mask = labels == roi
        assert summary[roi]["shared"] == pytest.approx(result["shared"][mask].mean())
        assert summary[roi]["n_voxels"] == 2
    kept = partition_roi_summary(result, labels, keys=["unique_model"], min_r2_joint=0.3)
    assert set(kept["model"]) == {"unique_model", "n_voxels"}
    assert kept["null"]["n_voxels"] == 0 and np.isnan(kept["null"]["unique_model"])
    with pytest.raises(ValueError, match="overlap"):
        variance_partitioning(X_model, X_low, y, groups, train=[0, 1, 2], test=[2])
    with pytest.raises(ValueError, match="not in groups"):
        variance_partitioning(X_model, X_low, y, groups, train=[0, 1, 9], test=[3])
    # one training story: contiguous blocks of it choose the penalties, as a RidgeEncoder
    # fitted without groups does
    single = variance_partitioning(X_model, X_low, y, groups, train=[0], test=[3],
                                   alphas=[0.1, 10, 1000], n_iter=3, cv=3, random_state=0)
    alone = RidgeEncoder(alphas=[0.1, 10, 1000], cv=3, cv_scoring="mse").fit(
        X_model[groups == 0], y[groups == 0])
    expected = r2_voxels(y[groups == 3], alone.predict(X_model[groups == 3]))
    np.testing.assert_allclose(single["r2_model"], expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="one row per TR"):
        variance_partitioning(X_model[:-1], X_low, y, groups, train=[0, 1], test=[3])
    with pytest.raises(ValueError, match="per-voxel entries"):
        partition_roi_summary(result, labels, keys=["unique"])


def test_r2_voxels_matches_sklearn_and_constant_voxels():
    from sklearn.metrics import r2_score

    rng = np.random.default_rng(2)
    y = rng.standard_normal((50, 4))
    p = y + rng.standard_normal((50, 4))
    np.testing.assert_allclose(r2_voxels(y, p), r2_score(y, p, multioutput="raw_values"))
    constant = np.column_stack([np.full(50, 3.7), y[:, 0]])
    r2 = r2_voxels(constant, np.column_stack([p[:, 0], p[:, 0]]))
    assert np.isnan(r2[0]) and np.isfinite(r2[1])
