"""Spoken-intent and phone-presence datasets (espeak-ng)."""

import time

import numpy as np
import pytest

pytest.importorskip("espeakng_loader")

from sk_braintune.builtin.intents import (
    INTENT_TEMPLATES,
    make_intent_dataset,
    make_phone_presence_dataset,
)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SK_BRAINTUNE_CACHE", str(tmp_path))


def test_intents_split_by_paraphrase_and_cache():
    started = time.perf_counter()
    data = make_intent_dataset(voices=("en-us", "en-gb-x-rp"), rates=(170,), return_padded=True)
    assert time.perf_counter() - started < 30  # ~3 s alone; generous for a shared CPU
    n = len(INTENT_TEMPLATES) * 5 * 3 * 2
    assert len(data.audio) == n == len(data.target) == data.data.shape[0]
    train, test = data.split["train"], data.split["test"]
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == n
    # no template is on both sides, and every intent is on both sides
    assert not set(data.template[train]) & set(data.template[test])
    assert set(data.paraphrase[test]) == {3, 4}
    assert set(data.intents[train]) == set(data.intents[test]) == set(INTENT_TEMPLATES)
    np.testing.assert_array_equal(np.bincount(data.target), [n // 8] * 8)
    # clips hold speech: plausible durations for their word counts, padded matrix agrees
    words = np.array([len(t.split()) for t in data.texts])
    seconds = data.lengths / 16000
    assert (seconds > 0.12 * words).all() and (seconds < 0.6 * words + 0.5).all()
    assert all(np.abs(a).max() > 0.05 for a in data.audio)
    i = int(np.argmax(data.lengths))
    np.testing.assert_array_equal(data.data[i], data.audio[i])
    again = make_intent_dataset(voices=("en-us", "en-gb-x-rp"), rates=(170,))
    assert again.audio[7].tobytes() == data.audio[7].tobytes()


def test_phone_presence_labels_follow_the_phones():
    data = make_phone_presence_dataset(voices=("en-us",), rates=(170,))
    assert data.target.shape == (len(data.audio), len(data.target_names))
    for row, phones in zip(data.target, data.word_phones):
        present = set(phones.split())
        assert [int(p in present) for p in data.target_names] == list(row)
    train, test = data.split["train"], data.split["test"]
    assert not set(data.words[train]) & set(data.words[test])
    assert 0.05 < data.target.mean() < 0.5
    cat = list(data.words).index("cat")
    assert data.target[cat, data.target_names.index("k")] == 1
