"""Residualiser: removes a planted low-level component, keeps an orthogonal one; impact in %."""

import numpy as np
import pandas as pd
import pytest

from sk_braintune.evaluation import Residualizer, low_level_comparison, low_level_impact


def _planted(n, rng, W):
    L = rng.standard_normal((n, W.shape[0]))
    Z = rng.standard_normal((n, W.shape[1]))
    design = np.column_stack([np.ones(n), L])
    Z -= design @ np.linalg.lstsq(design, Z, rcond=None)[0]  # orthogonal to L and constants
    return L, Z, L @ W + Z + 3.0


def test_removes_planted_low_level_component_and_keeps_the_orthogonal_one():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((3, 5))
    L, Z, M = _planted(400, rng, W)
    res = Residualizer(low_level=3, alphas=[1e-8]).fit(np.hstack([M, L]))
    out = res.transform(np.hstack([M, L]))
    assert out.shape == (400, 5)
    np.testing.assert_allclose(out, Z, atol=1e-6)  # the constant goes to the intercept
    # out of sample: same mapping on new rows, new orthogonal part survives untouched
    L2 = rng.standard_normal((100, 3))
    Z2 = rng.standard_normal((100, 5))
    out2 = res.transform(np.hstack([L2 @ W + Z2 + 3.0, L2]))
    np.testing.assert_allclose(out2, Z2, atol=1e-6)


def test_one_penalty_per_model_column_with_story_groups():
    rng = np.random.default_rng(1)
    L = rng.standard_normal((300, 4))
    M = np.column_stack([L @ rng.standard_normal(4), rng.standard_normal(300)])  # predictable, noise
    groups = np.repeat(["s1", "s2", "s3"], 100)
    res = Residualizer(low_level=[2, 3, 4, 5], alphas=np.logspace(-3, 6, 10), cv=3)
    res.fit(np.hstack([M, L]), groups=groups)
    assert res.ridge_.best_alphas_.shape == (2,)
    assert res.ridge_.best_alphas_[0] < res.ridge_.best_alphas_[1]  # noise column shrinks hard
    out = res.transform(np.hstack([M, L]))
    assert np.abs(out[:, 0]).max() < 1e-2 and np.corrcoef(out[:, 1], M[:, 1])[0, 1] > 0.99
    np.testing.assert_array_equal(res.get_feature_names_out(), ["x0", "x1"])


def test_bad_lowlevel_is_a_clear_error():
    X = np.random.default_rng(0).standard_normal((20, 3))
    with pytest.raises(ValueError, match="needs `low_level`"):
        Residualizer().fit(X)
    with pytest.raises(ValueError, match="between 1 and"):
        Residualizer(low_level=3).fit(X)


def test_low_level_impact_formula_and_roi_table():
    assert low_level_impact(0.5, 0.4) == pytest.approx(20.0)
    A = np.array([0.4, 0.6, 0.2, 0.2, np.nan])
    A_resid = np.array([0.1, 0.3, 0.2, 0.1, 0.3])
    labels = np.array(["auditory", "auditory", "semantic", "semantic", "semantic"])
    table = low_level_impact(A, A_resid, labels)
    assert isinstance(table, pd.DataFrame)
    assert table.loc["auditory", "impact_percent"] == pytest.approx(100 * (0.5 - 0.2) / 0.5)
    # NaN voxels are left out of both means
    assert table.loc["semantic", "A"] == pytest.approx(0.2)
    assert table.loc["semantic", "A_resid"] == pytest.approx((0.2 + 0.1 + 0.3) / 3)


def test_low_level_comparison_separates_auditory_from_semantic_voxels():
    rng = np.random.default_rng(0)
    stories = ["s0", "s1", "s2", "s3"]
    n, feats, low, resp = 150, {}, {}, {}
    mix = rng.standard_normal((3, 6))
    for s in stories:
        acoustic = rng.standard_normal((n, 3))
        meaning = rng.standard_normal((n, 3))
        # model features: an acoustic mixture with its own variance, plus semantics
        feats[s] = np.hstack([acoustic @ mix + rng.standard_normal((n, 6)), meaning])
        low[s] = acoustic
        drive = np.zeros((n, 6))
        drive[2:] = np.hstack([acoustic, meaning])[:-2]  # voxels respond 2 TRs later
        resp[s] = (drive + 0.3 * rng.standard_normal((n, 6))).astype(np.float32)
    labels = np.array(["auditory"] * 3 + ["semantic"] * 3)
    out = low_level_comparison(feats, low, resp, stories[:3], stories[3:], delays=(1, 2, 3),
                               voxel_labels=labels)
    assert out.r_raw.shape == (6,)
    assert out.r_raw.min() > 0.5  # raw features explain every voxel
    impact = out.impact["impact_percent"]
    assert impact["auditory"] > 80 and abs(impact["semantic"]) < 5
