"""AudioWindows: exact causal cuts, padding, zero-copy views and survival through sklearn."""

import pickle

import numpy as np
import pytest
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.model_selection import GridSearchCV, GroupKFold, train_test_split
from sklearn.utils import Bunch, shuffle

from sk_braintune.windows import (
    AudioWindows,
    make_windows,
    window_end_samples,
    windows_from_dataset,
)

SR = 16000
TR = 2.0045


def _ramp(seconds, offset=0):
    """Audio whose sample k holds k + 1 + offset: every window says where it was cut."""
    return (np.arange(int(seconds * SR), dtype=np.float32) + 1 + offset)


def _expected_window(audio, end, window_samples):
    """Hand-cut window: the window_samples samples before `end`, zeros before the audio."""
    out = np.zeros(window_samples, dtype=np.float32)
    start = end - window_samples
    source = audio[max(start, 0):min(end, audio.size)]
    out[max(-start, 0):max(-start, 0) + source.size] = source
    return out


def test_window_ends_hand_computed():
    # (t_mid + TR / 2) * 16000, rounded, never truncated to whole seconds
    np.testing.assert_array_equal(
        window_end_samples([11.0, 13.0, 0.123456, 5.5], TR),
        [192036, 224036, 18011, 104036])  # 0.123456 s -> 18011.296
    assert window_end_samples([3.7], 2.0)[0] == 75200  # 4.7 s, not 4 s
    assert window_end_samples([1.0], 2.0, sample_rate=8000)[0] == 16000


def test_windows_are_exact_cuts_with_left_padding():
    audio = _ramp(30.0)
    times = np.array([0.2, 2.2045, 4.209, 13.37, 27.1])
    X = make_windows(audio, times, window=5.0, tr=TR)
    assert X.shape == (5, 80000) and X.window_samples == 80000 and X.dtype == np.float32
    ends = [int(round((t + TR / 2) * SR)) for t in times]
    np.testing.assert_array_equal(X.ends, ends)
    for i, end in enumerate(ends):
        window = X[i]
        assert window.shape == (80000,)
        np.testing.assert_array_equal(window, _expected_window(audio, end, 80000))
        assert window[-1] == end  # the ramp value of the last sample before the volume end
    # the first window starts before the audio: zeros then the audio from sample 0
    first = X[0]
    n_zeros = 80000 - ends[0]
    assert np.all(first[:n_zeros] == 0) and first[n_zeros] == 1.0


def test_last_volume_after_the_audio_is_zero_padded_or_refused():
    audio = _ramp(10.0)
    X = make_windows(audio, [8.0, 10.0], window=4.0, tr=2.0)  # last volume ends at 11 s
    np.testing.assert_array_equal(X[1], _expected_window(audio, 176000, 64000))
    assert np.all(X[1][-16000:] == 0)
    with pytest.raises(ValueError, match="longer than the audio"):
        make_windows(audio, [8.0, 20.0], window=4.0, tr=2.0)


def test_views_are_zero_copy():
    audio = {"a": _ramp(20.0), "b": _ramp(20.0, offset=10 ** 6)}
    X = make_windows(audio, {"a": [3.0, 5.0, 7.0], "b": [4.0, 6.0]}, window=3.0, tr=2.0)
    assert X.nbytes < 2 * 4 * (20 + 3) * SR + 1  # the waveforms once, not the windows
    for i in range(len(X)):
        story = X.stories[i]
        assert np.shares_memory(X[i], X.waveforms[story])
    subset = X[np.array([4, 0])]
    assert isinstance(subset, AudioWindows)
    assert subset.waveforms["a"] is X.waveforms["a"]
    assert np.shares_memory(subset[1], X.waveforms["a"])
    np.testing.assert_array_equal(subset[0], X[4])
    np.testing.assert_array_equal(subset.stories, ["b", "a"])
    np.testing.assert_array_equal(subset.tr_times, [6.0, 3.0])


def test_indexing_forms():
    X = make_windows({"a": _ramp(12.0), "b": _ramp(12.0, 7)},
                     {"a": [2.0, 4.0, 6.0], "b": [3.0, 5.0]}, window=2.0, tr=2.0)
    full = X.to_array()
    assert full.shape == (5, 32000)
    np.testing.assert_array_equal(np.asarray(X), full)
    np.testing.assert_array_equal(X[-1], full[4])
    np.testing.assert_array_equal(X[np.int64(2)], full[2])
    np.testing.assert_array_equal(X[1:4].to_array(), full[1:4])
    np.testing.assert_array_equal(X[[True, False, True, False, True]].to_array(), full[::2])
    np.testing.assert_array_equal(X[[3, 1]].to_array(), full[[3, 1]])
    np.testing.assert_array_equal(X[np.array([], dtype=int)].shape, (0, 32000))
    np.testing.assert_array_equal(X[np.array([1, 2]), ...].to_array(), full[1:3])
    np.testing.assert_array_equal(X[:, :10], full[:, :10])
    np.testing.assert_array_equal(np.stack(list(X)), full)
    with pytest.raises(IndexError):
        X[5]
    with pytest.raises(IndexError):
        X[[True, False]]
    batches = list(X.batches(2))
    assert [len(i) for i, _ in batches] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate([b for _, b in batches]), full)
    joined = AudioWindows.concatenate([X[3:], X[:3]])
    np.testing.assert_array_equal(joined.to_array(), np.concatenate([full[3:], full[:3]]))
    np.testing.assert_array_equal(joined.groups, ["b", "b", "a", "a", "a"])


def test_pickle_round_trip():
    X = make_windows({"a": _ramp(9.0), "b": _ramp(9.0, 3)},
                     {"a": [2.0, 4.0], "b": [3.0, 5.0, 7.0]}, window=2.5, tr=TR)
    Y = pickle.loads(pickle.dumps(X[[4, 1, 2]]))
    assert isinstance(Y, AudioWindows) and Y.shape == (3, 40000)
    np.testing.assert_array_equal(Y.to_array(), X[[4, 1, 2]].to_array())
    np.testing.assert_array_equal(Y.stories, ["b", "a", "b"])
    np.testing.assert_array_equal(Y.tr_times, [7.0, 4.0, 3.0])
    np.testing.assert_array_equal(Y.ends, X.ends[[4, 1, 2]])
    assert Y.sample_rate == SR


def _three_stories():
    rng = np.random.default_rng(0)
    audio, times, responses = {}, {}, {}
    for k, story in enumerate(["s1", "s2", "s3"]):
        n = 6 + k
        audio[story] = rng.standard_normal(int((2 * n + 4) * SR)).astype(np.float32)
        times[story] = 1.0 + 2.0 * np.arange(n)
        responses[story] = rng.standard_normal((n, 3)).astype(np.float32)
    return audio, times, responses


class StoryRecorder(RegressorMixin, BaseEstimator):
    """Predicts the training mean; records what each fit and predict call receives."""

    calls = []  # class level: GridSearchCV works on clones

    def __init__(self, shift=0.0):
        self.shift = shift

    def fit(self, X, y):
        StoryRecorder.calls.append(("fit", X))
        self.mean_ = np.asarray(y).mean(axis=0) + self.shift
        return self

    def predict(self, X):
        StoryRecorder.calls.append(("predict", X))
        return np.tile(self.mean_, (len(X), 1))


def test_grid_search_with_group_kfold_keeps_story_ids_without_leakage():
    audio, times, responses = _three_stories()
    X = make_windows(audio, times, window=3.0, tr=2.0)
    y = np.concatenate(list(responses.values()))
    groups = X.groups.copy()
    StoryRecorder.calls.clear()
    search = GridSearchCV(StoryRecorder(), {"shift": [0.0, 1.0]}, cv=GroupKFold(n_splits=3))
    search.fit(X, y, groups=groups)
    calls = StoryRecorder.calls
    assert len(calls) == 2 * 3 * 2 + 1  # (fit, predict) per candidate and fold, then the refit
    assert all(isinstance(received, AudioWindows) for _, received in calls)
    test_stories = []
    for (kind_fit, train), (kind_predict, test) in zip(calls[:-1:2], calls[1:-1:2]):
        assert (kind_fit, kind_predict) == ("fit", "predict")
        train_stories, held_out = set(train.stories), set(test.stories)
        assert not train_stories & held_out  # no story in both
        assert train_stories | held_out == {"s1", "s2", "s3"}
        assert set(train.waveforms) == train_stories  # only the needed waveforms travel
        test_stories.append(tuple(sorted(held_out)))
        for story in held_out:  # windows, times and ends are those of the original story
            mask = X.stories == story
            np.testing.assert_array_equal(test[test.stories == story].to_array(),
                                          X[mask].to_array())
            np.testing.assert_array_equal(test.tr_times[test.stories == story],
                                          times[story])
            assert np.shares_memory(test[test.stories == story][0], X.waveforms[story])
    assert sorted(set(test_stories)) == [("s1",), ("s2",), ("s3",)]
    assert calls[-1][0] == "fit" and len(calls[-1][1]) == len(X)


def test_public_sklearn_indexing_paths_keep_the_container():
    audio, times, _ = _three_stories()
    X = make_windows(audio, times, window=2.0, tr=2.0)
    train, test = train_test_split(X, test_size=0.25, shuffle=False)
    assert isinstance(train, AudioWindows) and isinstance(test, AudioWindows)
    np.testing.assert_array_equal(np.concatenate([train.to_array(), test.to_array()]),
                                  X.to_array())
    shuffled, order = shuffle(X, np.arange(len(X)), random_state=0)
    assert isinstance(shuffled, AudioWindows)
    np.testing.assert_array_equal(shuffled.stories, X.stories[order])
    np.testing.assert_array_equal(shuffled.to_array(), X.to_array()[order])


def test_windows_from_dataset_on_a_bunch():
    audio, times, responses = _three_stories()
    dataset = Bunch(stories=["s1", "s2", "s3"], audio=audio, tr_times=times,
                    responses=responses, tr=2.0, sample_rate=SR,
                    split={"train": ["s3", "s1"], "validation": [], "test": ["s2"]})
    X, y, groups = windows_from_dataset(dataset, window=4.0)
    assert X.shape == (21, 64000) and y.shape == (21, 3) and y.dtype == np.float32
    np.testing.assert_array_equal(groups, ["s1"] * 6 + ["s2"] * 7 + ["s3"] * 8)
    np.testing.assert_array_equal(y, np.concatenate([responses[s] for s in ["s1", "s2", "s3"]]))
    end = int(round((times["s2"][2] + 1.0) * SR))
    np.testing.assert_array_equal(X[6 + 2], _expected_window(audio["s2"], end, 64000))
    X_train, y_train, g_train = windows_from_dataset(dataset, "train", window=1.0)
    np.testing.assert_array_equal(g_train, ["s3"] * 8 + ["s1"] * 6)
    np.testing.assert_array_equal(y_train[:8], responses["s3"])
    with pytest.raises(ValueError, match="unknown stories"):
        windows_from_dataset(dataset, ["s4"])
    dataset.responses = dict(responses, s1=responses["s1"][:-1])
    with pytest.raises(ValueError, match="5 response rows"):
        windows_from_dataset(dataset, ["s1"])


@pytest.mark.parametrize("audio, times, kwargs, error, match", [
    (np.zeros((SR * 5, 2), np.float32), [1.0], {}, ValueError, "mono"),
    (np.zeros(SR * 5, np.int16), [1.0], {}, TypeError, "integer"),
    (np.zeros(SR * 5, np.float32), [1.0], {"sample_rate": 44100}, ValueError, "16 kHz"),
    (np.zeros(SR * 5, np.float32), [1.0, 3.0, 2.0], {}, ValueError, "strictly increasing"),
    (np.zeros(SR * 5, np.float32), [1.0, 1.0], {}, ValueError, "strictly increasing"),
    (np.zeros(SR * 5, np.float32), [1.0, np.nan], {}, ValueError, "NaN"),
    (np.zeros(SR * 5, np.float32), [], {}, ValueError, "non-empty"),
    (np.zeros(0, np.float32), [1.0], {}, ValueError, "no audio"),
    (np.zeros(SR * 5, np.float32), [1.0, 3.0, 20.0], {}, ValueError, "longer than the audio"),
    (np.zeros(SR * 5, np.float32), [-3.0], {}, ValueError, "before the audio starts"),
    (np.zeros(SR * 5, np.float32), [1.0], {"window": 0.0}, ValueError, "window"),
])
def test_bad_inputs_are_refused_with_clear_messages(audio, times, kwargs, error, match):
    with pytest.raises(error, match=match):
        make_windows(audio, times, **{"tr": 2.0, "window": 2.0, **kwargs})


def test_dict_inputs_must_match():
    with pytest.raises(ValueError, match="no audio for stories"):
        make_windows({"a": np.zeros(SR * 4, np.float32)}, {"b": [1.0]}, window=1.0)
    with pytest.raises(TypeError, match="tr_times must be a dict"):
        make_windows({"a": np.zeros(SR * 4, np.float32)}, [1.0], window=1.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_make_windows_rejects_non_finite_audio_naming_the_story(bad):
    audio = {"ok": np.zeros(16000 * 4, np.float32), "broken": np.zeros(16000 * 4, np.float32)}
    audio["broken"][12345] = bad
    times = {"ok": np.array([1.0, 3.0]), "broken": np.array([1.0, 3.0])}
    with pytest.raises(ValueError, match=r"story 'broken' holds 1 NaN or infinite.*12345"):
        make_windows(audio, times, window=2.0, tr=2.0)
    del audio["broken"], times["broken"]
    assert make_windows(audio, times, window=2.0, tr=2.0).shape == (2, 32000)


def test_audio_windows_rejects_non_finite_waveforms():
    from sk_braintune.windows import AudioWindows

    waveform = np.zeros(1000, np.float32)
    waveform[7] = np.nan
    with pytest.raises(ValueError, match=r"story 's'.*sample 7"):
        AudioWindows({"s": waveform}, ["s"], [500], [0.01], 100)
    windows = AudioWindows({"s": np.zeros(1000, np.float32)}, ["s", "s"], [500, 600],
                           [0.01, 0.02], 100)
    assert windows[1:].shape == (1, 100)
