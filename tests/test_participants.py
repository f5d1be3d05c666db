"""Several participants: select_participant and zero-copy (window, participant) rows."""

import numpy as np
import pytest
from sklearn.utils import Bunch

from sk_braintune.datasets import dataset_participants, participant_windows, select_participant
from sk_braintune.windows import windows_from_dataset

SR = 16000
TR = 2.0


def _dataset(participants=("P01", "P02", "P03"), n_voxels=5, seed=0):
    """Three stories of ramp audio; each participant's responses say who and where they are."""
    rng = np.random.default_rng(seed)
    stories = ["s1", "s2", "s3"]
    n_trs = {"s1": 6, "s2": 4, "s3": 5}
    audio = {s: rng.standard_normal(int(n_trs[s] * TR * SR)).astype(np.float32) for s in stories}
    tr_times = {s: (np.arange(n_trs[s]) + 0.5) * TR for s in stories}
    per = {}
    for k, p in enumerate(participants):
        responses = {s: (100 * k + 10 * i + rng.standard_normal((n_trs[s], n_voxels))
                         ).astype(np.float32) for i, s in enumerate(stories)}
        repeats = {"s3": rng.standard_normal((3, n_trs["s3"], n_voxels)).astype(np.float32)}
        per[p] = Bunch(responses=responses, repeats=repeats,
                       noise_ceiling=np.full(n_voxels, 0.1 * (k + 1)),
                       ground_truth={"weights": np.full((2, n_voxels), float(k))})
    first = per[participants[0]]
    return Bunch(stories=stories, sample_rate=SR, audio=audio, tr=TR, tr_times=tr_times,
                 responses=first.responses, repeats=first.repeats,
                 noise_ceiling=first.noise_ceiling,
                 split={"train": ["s1", "s2"], "validation": [], "test": ["s3"]},
                 voxel_labels=np.array(["a"] * n_voxels),
                 ground_truth={"shared": np.arange(3), "weights": first.ground_truth["weights"]},
                 participants=tuple(participants), participant_data=per)


def test_rows_labels_and_targets():
    data = _dataset()
    X, y, groups, labels = participant_windows(data, ["s1", "s3"], window=3.0)
    n1, n3 = 6, 5
    assert X.shape == (3 * (n1 + n3), 3 * SR) and y.shape == (3 * (n1 + n3), 5)
    expected_groups = ["s1"] * (3 * n1) + ["s3"] * (3 * n3)
    assert list(groups) == expected_groups
    expected_labels = (["P01"] * n1 + ["P02"] * n1 + ["P03"] * n1
                       + ["P01"] * n3 + ["P02"] * n3 + ["P03"] * n3)
    assert list(labels) == expected_labels
    # each row holds its participant's response at its TR
    offset = 0
    for s, n in (("s1", n1), ("s3", n3)):
        for p in data.participants:
            np.testing.assert_array_equal(y[offset:offset + n],
                                          data.participant_data[p].responses[s])
            np.testing.assert_array_equal(X.tr_times[offset:offset + n], data.tr_times[s])
            offset += n
    # a window is the audio that ends at its volume's end, the same for every participant
    single, _, _ = windows_from_dataset(data, ["s1", "s3"], window=3.0)
    for row in (0, n1, 2 * n1 + 3, 3 * n1 + 4 + n3):
        base_row = row % n1 if row < 3 * n1 else n1 + (row - 3 * n1) % n3
        np.testing.assert_array_equal(X[row], single[base_row])


def test_zero_copy():
    data = _dataset()
    X, _, _, _ = participant_windows(data, "train", window=3.0)
    assert sorted(X.waveforms) == ["s1", "s2"]  # one waveform per story, not per participant
    single, _, _ = windows_from_dataset(data, "train", window=3.0)
    assert X.nbytes == single.nbytes
    # rows of different participants are views of the same waveform
    first_p1, first_p2 = X[0], X[6]
    assert np.shares_memory(first_p1, first_p2)
    assert np.shares_memory(first_p1, X.waveforms["s1"])
    # selecting rows keeps the same waveform objects
    sub = X[np.arange(14, 22)]  # s1 rows end at 18
    assert sub.waveforms["s1"] is X.waveforms["s1"] and sub.waveforms["s2"] is X.waveforms["s2"]


def test_one_participant_equals_windows_from_dataset():
    data = _dataset()
    X, y, groups, labels = participant_windows(data, "train", window=2.5, participants=["P02"])
    data_p2 = select_participant(data, "P02")
    Xs, ys, gs = windows_from_dataset(data_p2, "train", window=2.5)
    np.testing.assert_array_equal(X.to_array(), Xs.to_array())
    np.testing.assert_array_equal(X.ends, Xs.ends)
    np.testing.assert_array_equal(y, ys)
    np.testing.assert_array_equal(groups, gs)
    assert set(labels) == {"P02"}
    # the first participant equals the top-level responses
    X1, y1, _, _ = participant_windows(data, None, window=2.5, participants="P01")
    Xw, yw, _ = windows_from_dataset(data, None, window=2.5)
    np.testing.assert_array_equal(y1, yw)
    np.testing.assert_array_equal(X1.ends, Xw.ends)


def test_participant_order_follows_the_argument():
    data = _dataset()
    _, y, _, labels = participant_windows(data, ["s2"], window=1.0, participants=["P03", "P01"])
    assert list(labels) == ["P03"] * 4 + ["P01"] * 4
    np.testing.assert_array_equal(y[:4], data.participant_data["P03"].responses["s2"])


def test_select_participant():
    data = _dataset()
    p3 = select_participant(data, "P03")
    own = data.participant_data["P03"]
    assert p3.responses is own.responses and p3.repeats is own.repeats
    np.testing.assert_array_equal(p3.noise_ceiling, own.noise_ceiling)
    assert p3.participants == ("P03",) and list(p3.participant_data) == ["P03"]
    # shared parts are the same objects; the ground truth merges shared and own entries
    assert p3.audio is data.audio and p3.voxel_labels is data.voxel_labels
    assert p3.ground_truth["shared"] is data.ground_truth["shared"]
    assert np.all(p3.ground_truth["weights"] == 2.0)
    # the input is left unchanged
    assert data.responses is data.participant_data["P01"].responses
    assert np.all(data.ground_truth["weights"] == 0.0)
    with pytest.raises(ValueError, match="unknown participant 'P09'"):
        select_participant(data, "P09")


def test_dataset_without_participant_fields_is_one_participant():
    data = _dataset(participants=("P01",))
    del data["participants"], data["participant_data"]
    participants, per = dataset_participants(data)
    assert participants == ("P01",) and per["P01"].responses is data.responses
    X, y, groups, labels = participant_windows(data, "train", window=2.0)
    _, yw, gw = windows_from_dataset(data, "train", window=2.0)
    np.testing.assert_array_equal(y, yw)
    assert set(labels) == {"P01"} and list(groups) == list(gw)


def test_bad_input():
    data = _dataset()
    with pytest.raises(ValueError, match="unknown stories"):
        participant_windows(data, ["nope"], window=2.0)
    with pytest.raises(ValueError, match="unknown split"):
        participant_windows(data, "nope", window=2.0)
    with pytest.raises(ValueError, match="unknown participant"):
        participant_windows(data, "train", window=2.0, participants=["P01", "X"])
    with pytest.raises(ValueError, match="empty"):
        participant_windows(data, "train", window=2.0, participants=[])
    data.participant_data["P02"].responses["s1"] = data.participant_data["P02"].responses["s1"][:3]
    with pytest.raises(ValueError, match="participant 'P02', story 's1'"):
        participant_windows(data, "train", window=2.0)
