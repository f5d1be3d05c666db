"""HeldOutStories: one split holding out named stories."""

import numpy as np
import pytest

from sk_braintune.model_selection import HeldOutStories
from sk_braintune.windows import make_windows


def test_holds_out_exactly_the_named_stories():
    groups = np.array(["a"] * 3 + ["b"] * 2 + ["c"] * 4)
    splits = list(HeldOutStories(["b", "c"]).split(np.zeros((9, 1)), groups=groups))
    assert len(splits) == 1 == HeldOutStories(["b"]).get_n_splits()
    train, held_out = splits[0]
    np.testing.assert_array_equal(train, [0, 1, 2])
    np.testing.assert_array_equal(held_out, np.arange(3, 9))


def test_reads_story_ids_from_audio_windows():
    audio = {s: np.zeros(16000 * 6, np.float32) for s in ("a", "b")}
    times = {s: np.arange(2) * 2.0 + 1.0 for s in audio}
    X = make_windows(audio, times, window=1.0, tr=2.0)
    (train, held_out), = HeldOutStories(["b"]).split(X)
    assert set(X.groups[train]) == {"a"} and set(X.groups[held_out]) == {"b"}


@pytest.mark.parametrize("stories", [["zzz"], ["a", "b"]])
def test_refuses_empty_or_complete_hold_out(stories):
    with pytest.raises(ValueError, match="some but not all"):
        next(HeldOutStories(stories).split(np.zeros((4, 1)), groups=["a", "a", "b", "b"]))


def test_needs_groups():
    with pytest.raises(ValueError, match="needs groups"):
        next(HeldOutStories(["a"]).split(np.zeros((4, 1))))
