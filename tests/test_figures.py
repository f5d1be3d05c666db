"""Figures: each renders to a non-empty file, has labelled axes and leaves pyplot untouched."""

import numpy as np
import pandas as pd
import pytest

from sk_braintune.analysis import figures
from sk_braintune.analysis.preference import semantic_preference


def _check(fig, path):
    fig.savefig(path)
    assert path.stat().st_size > 1000
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert axes and all(ax.get_xlabel() and ax.get_ylabel() for ax in axes if ax.name != "3d")


@pytest.fixture(autouse=True)
def _no_pyplot_figures():
    yield
    import matplotlib.pyplot as plt

    assert plt.get_fignums() == []


def test_layer_alignment(tmp_path):
    rng = np.random.default_rng(0)
    fig = figures.plot_layer_alignment({"pretrained": rng.random(5),
                                        "brain-tuned": rng.random((5, 3))})
    _check(fig, tmp_path / "layers.png")
    assert len(fig.axes[0].get_lines()) == 2


def test_roi_scores_and_low_level_impact(tmp_path):
    table = pd.DataFrame({"semantic": [0.3, 0.4, 0.35], "auditory": [0.5, 0.45, 0.6]})
    fig = figures.plot_roi_scores({"pretrained": table, "tuned": table + 0.05})
    _check(fig, tmp_path / "roi.png")
    assert len(fig.axes[0].patches) == 4
    impact = pd.DataFrame({"A": [0.4, 0.3], "A_resid": [0.2, 0.25],
                           "impact_percent": [50.0, 16.7]}, index=["auditory", "semantic"])
    fig = figures.plot_low_level_impact({"pretrained": impact,
                                         "tuned": pd.Series({"auditory": 30.0, "semantic": 5.0})})
    _check(fig, tmp_path / "impact.png")
    heights = sorted(p.get_height() for p in fig.axes[0].patches)
    np.testing.assert_allclose(heights, [5.0, 16.7, 30.0, 50.0])


def test_probe_scores_and_preference(tmp_path):
    table = pd.DataFrame({"layer": [0, 1, 2, "weighted"], "score": [0.3, 0.6, 0.7, 0.72]})
    fig = figures.plot_probe_scores({"pretrained": table, "tuned": 0.8}, chance=0.125)
    _check(fig, tmp_path / "probe.png")
    reps = {"a": np.eye(3)[:2], "b": np.eye(3)[[0, 2]], "c": np.eye(3)[[1, 2]]}
    pref = semantic_preference(reps, [("a", "b"), ("b", "c")], [("a", "c"), ("a", "b")])
    fig = figures.plot_semantic_preference({"pretrained": pref})
    _check(fig, tmp_path / "preference.png")


def test_training_curves(tmp_path):
    history = [{"epoch": e, "train_loss": 1 / (e + 1), "valid_loss": 1.2 / (e + 1),
                "valid_r": 0.1 * e, "lr_backbone": 1e-5 * e, "lr_head": 1e-4, "seconds": 1.0}
               for e in range(4)]
    fig = figures.plot_training_curves(history, best_epoch=2)
    _check(fig, tmp_path / "history.png")
    assert len(fig.axes) == 3
    with pytest.raises(ValueError, match="empty"):
        figures.plot_training_curves([])


def test_surface_scores(tmp_path):
    pytest.importorskip("nilearn")
    # a small closed surface: an octahedron
    coords = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]],
                      dtype=float) * 50
    faces = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4],
                      [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
    fig = figures.plot_surface_scores(np.linspace(-1, 1, 6), (coords, faces), title="r")
    fig.savefig(tmp_path / "surface.png")
    assert (tmp_path / "surface.png").stat().st_size > 1000
