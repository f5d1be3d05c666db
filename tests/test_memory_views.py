"""The evaluation path holds the responses and the audio once: views, not copies.

At ds003020's full size (84 stories, 29,000 TRs x 90,000 voxels: 10 GB of float32 responses,
4 GB of 16 kHz audio) a single copy of the responses does not fit next to them on a 24 GB
machine, so these tests check with ``np.shares_memory`` and ``tracemalloc`` that none is
made, and that the results equal those of the copying code.
"""

import tempfile
import tracemalloc

import numpy as np
import pytest
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils import Bunch

from sk_braintune.encoding import BandedRidgeEncoder, RidgeEncoder
from sk_braintune.evaluation import (
    fit_score_encoding,
    low_level_impacts,
    variance_partition_summary,
)
from sk_braintune.preprocessing import select_rows, split_by_story


class _SpyRegressor(RegressorMixin, BaseEstimator):
    """Least squares that records the arrays ``fit`` received (class-level, survives clone)."""

    seen = []

    def fit(self, X, y):
        type(self).seen.append(y)
        self.coef_, *_ = np.linalg.lstsq(np.c_[X, np.ones(len(X))], y, rcond=None)
        return self

    def predict(self, X):
        return np.c_[X, np.ones(len(X))] @ self.coef_


def _stacked(seed=0, n_per=(40, 35, 30, 25), dim=3, n_voxels=7):
    rng = np.random.default_rng(seed)
    stories = [f"s{i}" for i in range(len(n_per))]
    groups = np.repeat(stories, n_per)
    X = rng.standard_normal((len(groups), dim)).astype(np.float32)
    Y = (X @ rng.standard_normal((dim, n_voxels))
         + rng.standard_normal((len(groups), n_voxels))).astype(np.float32)
    return X, Y, groups, stories


def test_select_rows_is_a_view_for_one_run_and_a_copy_otherwise():
    a = np.arange(40.0).reshape(10, 4)
    run = np.zeros(10, bool)
    run[3:7] = True
    view = select_rows(a, run)
    assert np.shares_memory(view, a)
    np.testing.assert_array_equal(view, a[run])
    gaps = run.copy()
    gaps[8] = True
    copy = select_rows(a, gaps)
    assert not np.shares_memory(copy, a)
    np.testing.assert_array_equal(copy, a[gaps])
    assert select_rows(a, np.zeros(10, bool)).shape == (0, 4)
    with pytest.raises(ValueError, match="one entry per row"):
        select_rows(a, np.ones(9, bool))
    # per-story rows of a stacked array are views too
    groups = np.repeat(["x", "y"], 5)
    assert all(np.shares_memory(v, a) for v in split_by_story(a, groups).values())


def test_fit_score_encoding_fits_on_a_view_of_the_training_rows():
    X, Y, groups, stories = _stacked()
    _SpyRegressor.seen = []
    result = fit_score_encoding(X, Y, groups, stories[:3], stories[3:], delays=(1,),
                                estimator=_SpyRegressor())
    (fitted_on,) = _SpyRegressor.seen
    assert np.shares_memory(fitted_on, Y)
    # the same numbers as fitting on a copy of the training rows (what it did before)
    train = np.isin(groups, stories[:3])
    np.testing.assert_array_equal(fitted_on, Y[train])
    copied = fit_score_encoding(X, Y.copy(), groups, stories[:3], stories[3:], delays=(1,),
                                estimator=RidgeEncoder(alphas=[1.0, 10.0], cv=2))
    viewed = fit_score_encoding(X, Y, groups, stories[:3], stories[3:], delays=(1,),
                                estimator=RidgeEncoder(alphas=[1.0, 10.0], cv=2))
    np.testing.assert_array_equal(viewed["r"], copied["r"])
    # the test story first: the training rows are still one run (a view)
    _SpyRegressor.seen = []
    fit_score_encoding(X, Y, groups, stories[1:], stories[:1], delays=(1,),
                       estimator=_SpyRegressor())
    assert np.shares_memory(_SpyRegressor.seen[0], Y)
    # the test story in the middle: the training rows must be gathered (a copy), same values
    _SpyRegressor.seen = []
    fit_score_encoding(X, Y, groups, ["s0", "s2", "s3"], ["s1"], delays=(1,),
                       estimator=_SpyRegressor())
    assert not np.shares_memory(_SpyRegressor.seen[0], Y)
    np.testing.assert_array_equal(_SpyRegressor.seen[0], Y[groups != "s1"])


def test_ridge_fit_on_a_view_allocates_far_less_than_the_responses():
    rng = np.random.default_rng(0)
    n, n_voxels = 600, 4000
    X = rng.standard_normal((n, 8)).astype(np.float32)
    Y = rng.standard_normal((n, n_voxels)).astype(np.float32)
    groups = np.repeat(np.arange(6), 100)
    train = groups < 5
    model = RidgeEncoder(alphas=[1.0, 100.0], cv=5, working_memory=1)
    tracemalloc.start()
    try:
        model.fit(select_rows(X, train), select_rows(Y, train), groups=groups[train])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the coefficients (4000 x 8) and CV scores are kept; the responses are ~9.6 MB: a
    # copy of them, or a float64 version, would show here
    assert peak < 0.5 * Y[train].nbytes
    reference = RidgeEncoder(alphas=[1.0, 100.0], cv=5).fit(X[train], Y[train],
                                                             groups=groups[train])
    np.testing.assert_allclose(model.coef_, reference.coef_, rtol=1e-5, atol=1e-6)


def test_banded_refit_reads_columns_in_batches_with_the_same_weights():
    from sk_braintune.encoding import _solvers

    rng = np.random.default_rng(1)
    features = rng.standard_normal((80, 6))
    features -= features.mean(0)
    targets = rng.standard_normal((80, 50))
    columns = np.array([3, 7, 8, 20, 41, 49])
    penalties = np.array([1.0, 10.0, 1.0, 100.0, 10.0, 1.0])
    ops = _solvers.make_ops("numpy", "float64")
    for solver in ("primal", "dual"):
        direct, direct_means = _solvers.refit(ops, features, targets[:, columns], penalties,
                                              solver=solver, working_memory=2 ** 20)
        batched, batched_means = _solvers.refit(ops, features, targets, penalties,
                                                solver=solver, working_memory=2 ** 20,
                                                target_columns=columns)
        np.testing.assert_allclose(batched, direct, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(batched_means, direct_means, rtol=1e-12, atol=1e-12)
        # and ridge's closed form for one of them
        y = targets[:, columns[3]] - targets[:, columns[3]].mean()
        closed = np.linalg.solve(features.T @ features + 100.0 * np.eye(6), features.T @ y)
        np.testing.assert_allclose(batched[3], closed, rtol=1e-8, atol=1e-10)
    # the estimator itself still fits through it
    banded = BandedRidgeEncoder(bands=[3, 3], alphas=[1.0, 10.0], n_iter=3, cv=2,
                                random_state=0).fit(features, targets)
    assert banded.coef_.shape == (50, 6)


def _story_dataset(stories, n_per, n_voxels, seed=0):
    rng = np.random.default_rng(seed)
    responses = {s: rng.standard_normal((n, n_voxels)).astype(np.float32)
                 for s, n in zip(stories, n_per)}
    return Bunch(responses=responses, noise_ceiling=np.full(n_voxels, 0.5),
                 voxel_labels=np.array(["a", "b"] * (n_voxels // 2)))


def test_low_level_impacts_and_partitioning_use_the_stacked_responses_as_given():
    stories = ["s0", "s1", "s2", "s3"]
    n_per = [40, 35, 30, 25]
    data = _story_dataset(stories, n_per, n_voxels=6)
    groups = np.repeat(stories, n_per)
    rng = np.random.default_rng(3)
    y = np.concatenate([data.responses[s] for s in stories])
    model = {"m": (y[:, :2] @ rng.standard_normal((2, 3))
                   + rng.standard_normal((len(y), 3))).astype(np.float32)}
    lowlevel = [{s: rng.standard_normal((n, 2)) for s, n in zip(stories, n_per)}]
    encoder = RidgeEncoder(alphas=[1.0, 10.0], cv=2)
    read = low_level_impacts(data, model, groups, stories[:3], stories[3:], estimator=encoder,
                             cv=2, low_level=lowlevel)
    given = low_level_impacts(data, model, groups, stories[:3], stories[3:],
                              estimator=encoder, cv=2, low_level=lowlevel, responses=y)
    assert given == read
    # the stacked responses reach the encoding fits as views (never restacked)
    _SpyRegressor.seen = []
    low_level_impacts(data, model, groups, stories[:3], stories[3:],
                      estimator=_SpyRegressor(), cv=2, low_level=lowlevel, responses=y)
    assert len(_SpyRegressor.seen) == 2
    assert all(np.shares_memory(seen, y) for seen in _SpyRegressor.seen)
    with pytest.raises(ValueError, match="one row per TR"):
        low_level_impacts(data, model, groups, stories[:3], stories[3:], estimator=encoder,
                          cv=2, low_level=lowlevel, responses=y[:-1])
    part_read = variance_partition_summary(data, model, groups, stories[:3], stories[3:],
                                           low_level=lowlevel, n_iter=2, cv=2, delays=(0, 1))
    part_given = variance_partition_summary(data, model, groups, stories[:3], stories[3:],
                                            low_level=lowlevel, n_iter=2, cv=2, delays=(0, 1),
                                            responses=y)
    for key, values in part_read["voxels"]["m"].items():
        np.testing.assert_array_equal(part_given["voxels"]["m"][key], values)


def test_share_audio_keeps_one_copy_of_each_waveform():
    from sk_braintune.windows import dataset_windows, stack_responses, windows_from_dataset

    rng = np.random.default_rng(0)
    sr, tr = 16000, 2.0
    stories = ["a", "b"]
    n_trs = {"a": 6, "b": 5}
    audio = {s: rng.standard_normal(int(n * tr * sr)).astype(np.float32)
             for s, n in n_trs.items()}
    data = Bunch(stories=stories, sample_rate=sr, tr=tr, audio=dict(audio),
                 tr_times={s: (np.arange(n) + 0.5) * tr for s, n in n_trs.items()},
                 responses={s: rng.standard_normal((n, 3)).astype(np.float32)
                            for s, n in n_trs.items()}, split={"train": ["a"], "test": ["b"]})
    X_ref, y_ref, groups_ref = windows_from_dataset(data, stories, window=4.0)
    X = dataset_windows(data, stories, window=4.0, share_audio=True)
    for s in stories:
        assert np.shares_memory(data.audio[s], X.waveforms[s])
        np.testing.assert_array_equal(data.audio[s], audio[s])
    np.testing.assert_array_equal(np.asarray(X), np.asarray(X_ref))
    np.testing.assert_array_equal(stack_responses(data, stories), y_ref)
    np.testing.assert_array_equal(X.groups, groups_ref)
    with pytest.raises(ValueError, match="holds"):
        X.story_audio("a", len(audio["a"]) + 10 * sr)


def test_participant_windows_fills_y_without_a_second_copy():
    from sk_braintune.datasets import participant_windows

    rng = np.random.default_rng(0)
    sr, tr, n_voxels = 16000, 2.0, 3000
    stories = ["s1", "s2", "s3"]
    n_trs = {"s1": 60, "s2": 50, "s3": 40}
    participants = ("P01", "P02")
    per = {p: Bunch(responses={s: rng.standard_normal((n, n_voxels)).astype(np.float32)
                               for s, n in n_trs.items()}) for p in participants}
    data = Bunch(stories=stories, sample_rate=sr, tr=tr,
                 audio={s: np.zeros(int(n * tr * sr), np.float32) for s, n in n_trs.items()},
                 tr_times={s: (np.arange(n) + 0.5) * tr for s, n in n_trs.items()},
                 responses=per["P01"].responses, participants=participants,
                 participant_data=per, split={"train": stories[:2], "test": stories[2:]})
    tracemalloc.start()
    try:
        X, y, groups, labels = participant_windows(data, stories, 2.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    waveforms = sum(w.nbytes for w in X.waveforms.values())
    # y (2 x 150 x 3000 float32, 3.6 MB) plus the padded waveforms plus small index arrays;
    # a list of blocks plus their concatenation would peak at twice y
    assert peak < waveforms + 1.3 * y.nbytes
    expected = np.concatenate([per[p].responses[s] for s in stories for p in participants])
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(labels, np.concatenate(
        [[p] * n_trs[s] for s in stories for p in participants]))


def test_waveform_normalisation_matches_the_hf_feature_extractor():
    torch = pytest.importorskip("torch")
    from transformers import Wav2Vec2FeatureExtractor

    from sk_braintune.models import load_backbone
    from sk_braintune.testing import make_tiny_model

    rng = np.random.default_rng(0)
    batch = (3.0 * rng.standard_normal((2, 4000)) + 0.5).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        backbone = load_backbone(make_tiny_model("wav2vec2", tmp, do_normalize=True))
    ours = backbone._normalize(torch.from_numpy(batch.copy())).numpy()
    reference = np.stack(Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm(list(batch), None))
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5)


def test_extractor_shows_no_progress_bar_unless_verbose(tmp_path, capsys):
    from sk_braintune import SpeechFeatureExtractor
    from sk_braintune.testing import make_tiny_model

    model = make_tiny_model("wav2vec2", tmp_path / "m")
    X = np.random.default_rng(0).standard_normal((100, 800)).astype(np.float32)
    SpeechFeatureExtractor(model, layers=[1], batch_size=1, device="cpu").fit_transform(X)
    err = capsys.readouterr().err
    assert "batch" not in err and "it/s" not in err
    SpeechFeatureExtractor(model, layers=[1], batch_size=50, device="cpu",
                           verbose=True).fit_transform(X)
    assert "batch" in capsys.readouterr().err  # the bar is there when asked for
