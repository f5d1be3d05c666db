"""Data-efficiency curve for held-out participants: subsets, numbers against sklearn's Ridge."""

import math

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from sk_braintune import RidgeEncoder
from sk_braintune.analysis import data_efficiency_curve, plot_data_efficiency
from sk_braintune.evaluation import default_encoder


@pytest.fixture(scope="module")
def small_study():
    rng = np.random.RandomState(0)
    lengths = {"s0": 40, "s1": 56, "s2": 48, "s3": 50}
    groups = np.concatenate([[s] * n for s, n in lengths.items()])
    true = rng.randn(len(groups), 6)
    features = {"informative": true + 0.3 * rng.randn(*true.shape),
                "noisy": true + 3.0 * rng.randn(*true.shape)}
    responses = {p: true @ rng.randn(6, 5) + 1.5 * rng.randn(len(groups), 5) for p in ("P1", "P2")}
    return dict(features=features, responses=responses, groups=groups, lengths=lengths,
                train=["s0", "s1", "s2"], test=["s3"])


def _zscore(x, groups):
    out = np.empty_like(x)
    for s in np.unique(groups):
        block = x[groups == s]
        out[groups == s] = (block - block.mean(0)) / block.std(0)
    return out


def test_curve_matches_ridge_on_each_training_prefix(small_study):
    d = small_study
    curve = data_efficiency_curve(d["features"], d["responses"]["P1"], d["groups"], d["train"],
                                  d["test"], delays=(0,), estimator=RidgeEncoder(alphas=[10.0], cv=2))
    assert list(curve["fraction"].unique()) == [1 / 8, 1 / 4, 1 / 2, 1.0]
    assert set(curve["model"]) == {"informative", "noisy"} and curve["participant"].isna().all()
    y = d["responses"]["P1"]
    for row in curve.itertuples():
        # independent: first ceil(f * n) TRs of each training story, z-scored per story, Ridge
        keep = np.zeros(len(y), dtype=bool)
        for story in d["train"]:
            rows = np.flatnonzero(d["groups"] == story)
            keep[rows[:math.ceil(row.fraction * len(rows))]] = True
        assert row.n_train_trs == keep.sum()
        test = d["groups"] == "s3"
        X = d["features"][row.model]
        Xz = _zscore(X[keep | test], d["groups"][keep | test])
        train_in = keep[keep | test]
        model = Ridge(alpha=10.0).fit(Xz[train_in], y[keep])
        pred = model.predict(Xz[~train_in])
        r = [np.corrcoef(pred[:, j], y[test, j])[0, 1] for j in range(5)]
        assert row.mean_r == pytest.approx(np.mean(r), abs=1e-4)
        assert np.isnan(row.mean_normalized)
    full = curve[curve["fraction"] == 1].set_index("model")["mean_r"]
    small = curve[curve["fraction"] == 1 / 8].set_index("model")["mean_r"]
    assert full["informative"] > full["noisy"] + 0.2
    assert full["informative"] > small["informative"]


def test_several_participants_noise_ceiling_reference_and_figure(small_study):
    d = small_study
    ceiling = {p: np.full(5, 0.8) for p in d["responses"]}
    curve = data_efficiency_curve(d["features"], d["responses"], d["groups"], d["train"],
                                  d["test"], fractions=(0.25, 1.0), noise_ceiling=ceiling,
                                  voxels=[0, 1, 2], reference="noisy", estimator=default_encoder(cv=2))
    assert len(curve) == 2 * 2 * 2 and set(curve["participant"]) == {"P1", "P2"}
    one = data_efficiency_curve(d["features"], d["responses"]["P2"], d["groups"], d["train"],
                                d["test"], fractions=(0.25, 1.0), voxels=[0, 1, 2],
                                estimator=default_encoder(cv=2))
    np.testing.assert_allclose(curve[curve["participant"] == "P2"]["mean_r"], one["mean_r"])
    # normalised r = r / cc_max, averaged over the selected voxels
    np.testing.assert_allclose(curve["mean_normalized"], curve["mean_r"] / 0.8, rtol=1e-6)
    ref_full = curve[(curve["model"] == "noisy") & (curve["fraction"] == 1.0)]
    np.testing.assert_allclose(ref_full["relative_to_reference"], 1.0)
    fig = plot_data_efficiency(curve, reference="noisy")
    ax = fig.axes[0]
    informative = curve[curve["model"] == "informative"].groupby("fraction")["mean_r"].mean()
    line = [ln for ln in ax.get_lines() if ln.get_label() == "informative"][0]
    np.testing.assert_allclose(line.get_ydata(), informative.to_numpy())
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1/4", "1"]
    with pytest.raises(ValueError, match="fractions"):
        data_efficiency_curve(d["features"], d["responses"]["P1"], d["groups"], d["train"],
                              d["test"], fractions=(0, 1))
    with pytest.raises(ValueError, match="reference"):
        data_efficiency_curve(d["features"], d["responses"]["P1"], d["groups"], d["train"],
                              d["test"], reference="pretrained")


def test_story_counts_and_voxel_sets_match_ridge_on_whole_stories(small_study):
    d = small_study
    y = d["responses"]["P1"]
    sets = {"first": [0, 1], "rest": [2, 3, 4]}
    curve = data_efficiency_curve(d["features"], y, d["groups"], d["train"], d["test"],
                                  n_stories=(1, 2, 5), voxels=sets, delays=(0,),
                                  reference="noisy",
                                  estimator=RidgeEncoder(alphas=[10.0], cv=2))
    # 5 exceeds the 3 training stories: dropped, all of them always included
    assert sorted(curve["n_train_stories"].unique()) == [1, 2, 3]
    assert set(curve["voxels"]) == {"first", "rest"} and len(curve) == 3 * 2 * 2
    test = d["groups"] == "s3"
    for row in curve.itertuples():
        keep = np.isin(d["groups"], d["train"][:row.n_train_stories])
        assert row.n_train_trs == keep.sum()
        assert row.fraction == pytest.approx(row.n_train_stories / 3)
        X = d["features"][row.model]
        Xz = _zscore(X[keep | test], d["groups"][keep | test])
        train_in = keep[keep | test]
        # one story: RidgeEncoder's cv splits it in blocks, alphas=[10] leaves nothing to pick
        pred = Ridge(alpha=10.0).fit(Xz[train_in], y[keep]).predict(Xz[~train_in])
        r = [np.corrcoef(pred[:, j], y[test, j])[0, 1] for j in sets[row.voxels]]
        assert row.mean_r == pytest.approx(np.mean(r), abs=1e-4)
    full = curve[(curve["model"] == "noisy") & (curve["n_train_stories"] == 3)]
    np.testing.assert_allclose(full["relative_to_reference"], 1.0)
    with pytest.raises(ValueError, match="n_stories"):
        data_efficiency_curve(d["features"], y, d["groups"], d["train"], d["test"],
                              n_stories=(0, 2))
