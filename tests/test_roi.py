"""ROI summaries, ROI tables and Wilcoxon signed-rank comparisons across participants."""

import json

import numpy as np
import pytest
from scipy.stats import wilcoxon

from sk_braintune.evaluation import (
    compare_models,
    load_roi_table,
    participant_roi_table,
    roi_summary,
)


def test_roi_summary_by_kind_leaves_nan_out():
    scores = np.array([0.1, 0.3, np.nan, 0.5, 0.7, 0.9])
    labels = np.array(["auditory", "auditory", "auditory", "semantic", "semantic", "semantic"])
    table = roi_summary(scores, labels)
    assert table.loc["auditory", "mean"] == pytest.approx(0.2)
    assert table.loc["auditory", "n_voxels"] == 2
    assert table.loc["semantic", "sem"] == pytest.approx(np.std([0.5, 0.7, 0.9], ddof=1) / np.sqrt(3))


def test_glasser_groups_match_hemisphere_labels(tmp_path):
    table = load_roi_table("glasser")
    assert {"early_auditory", "auditory_association", "late_language"} <= set(table)
    labels = np.array(["L_A1_ROI", "R_LBelt_ROI", "L_44_ROI", "PGi", "L_V1_ROI"])
    scores = np.array([1.0, 3.0, 5.0, 7.0, 100.0])
    summary = roi_summary(scores, labels, rois="glasser")
    assert summary.loc["early_auditory", "mean"] == pytest.approx(2.0)
    assert summary.loc["late_language", "mean"] == pytest.approx(6.0)
    assert summary.loc["auditory_association", "n_voxels"] == 0
    # user tables from json and csv
    (tmp_path / "rois.json").write_text(json.dumps({"vision": ["V1"]}))
    assert roi_summary(scores, labels, tmp_path / "rois.json").loc["vision", "mean"] == 100.0
    (tmp_path / "rois.csv").write_text("roi,label\nvision,V1\naud,A1\naud,LBelt\n")
    assert load_roi_table(tmp_path / "rois.csv") == {"vision": ["V1"], "aud": ["A1", "LBelt"]}
    with pytest.raises(FileNotFoundError):
        load_roi_table(tmp_path / "missing.json")


def test_participant_table_accepts_different_voxel_counts():
    scores = [np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0])]
    labels = [np.array(["a", "a", "b"]), np.array(["a", "b"])]
    table = participant_roi_table(scores, labels)
    np.testing.assert_allclose(table.to_numpy(), [[1.5, 3.0], [4.0, 5.0]])


def test_compare_models_matches_scipy_wilcoxon():
    rng = np.random.default_rng(0)
    n_part, n_vox = 8, 60
    labels = np.repeat(["semantic", "auditory", "noise"], 20)
    a = [rng.normal(0.3, 0.05, n_vox) for _ in range(n_part)]
    b = [x.copy() for x in a]
    for x in b:
        x[:20] += 0.1 + rng.normal(0, 0.01, 20)  # model B better in semantic voxels
        x[20:40] += rng.normal(0, 0.05, 20)
    result = compare_models(b, a, labels, alternative="greater")
    # every participant improves: the exact one-sided p-value is 1 / 2^8
    assert result.loc["semantic", "p_value"] == pytest.approx(1 / 256)
    tb, ta = participant_roi_table(b, labels), participant_roi_table(a, labels)
    expected = wilcoxon(tb["auditory"], ta["auditory"], alternative="greater")
    assert result.loc["auditory", "p_value"] == pytest.approx(expected.pvalue)
    assert result.loc["semantic", "difference"] == pytest.approx((tb - ta)["semantic"].mean())
    assert np.isnan(result.loc["noise", "p_value"])  # identical scores: no test
    assert result.loc["semantic", "p_corrected"] >= result.loc["semantic", "p_value"]
    with pytest.raises(ValueError, match="labels"):
        compare_models(a, b)
