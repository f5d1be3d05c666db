"""espeak-ng synthesis: audio, word/phone alignments, phonemisation, voices."""

import re

import numpy as np
import pytest

pytest.importorskip("espeakng_loader")

from sk_braintune.builtin import list_voices, synthesize, text_to_phonemes
from sk_braintune.builtin.espeak import SAMPLE_RATE  # noqa: E402
from sk_braintune.builtin.espeak import _align_words  # noqa: E402

TEXT = ("The old fisherman rowed his small boat across the quiet lake. "
        "He caught a silver trout before breakfast, and then a bigger one! "
        "It was the best morning of the whole summer.")


@pytest.fixture(scope="module")
def utterance():
    return synthesize(TEXT)


def _rms(audio, start, stop):
    segment = audio[int(start * SAMPLE_RATE):int(stop * SAMPLE_RATE)]
    return float(np.sqrt(np.mean(segment.astype(np.float64) ** 2))) if segment.size else 0.0


def test_audio_format(utterance):
    assert utterance.sample_rate == SAMPLE_RATE == 16000
    assert utterance.audio.dtype == np.float32 and utterance.audio.ndim == 1
    assert np.abs(utterance.audio).max() <= 1.0
    n_words = len(utterance.words)
    # 175 words per minute plus sentence pauses: between 0.7x and 2x the nominal duration
    nominal = n_words / 175 * 60
    assert 0.7 * nominal < utterance.duration < 2.0 * nominal


def test_every_word_aligned_in_order(utterance):
    words = utterance.words
    assert list(words.columns) == ["onset", "offset", "label"]
    assert list(words["label"]) == re.findall(r"[A-Za-z]+", TEXT)
    onsets, offsets = words["onset"].to_numpy(), words["offset"].to_numpy()
    assert np.all(np.diff(onsets) > 0)
    assert np.all(offsets > onsets)
    assert np.all(offsets[:-1] <= onsets[1:] + 1e-9)
    assert onsets[0] >= 0 and offsets[-1] <= utterance.duration + 1e-9


def test_energy_inside_words_exceeds_sentence_pauses(utterance):
    words = utterance.words
    audio = utterance.audio
    inside = np.mean([_rms(audio, on, off) for on, off in zip(words["onset"], words["offset"])])
    # sentence ends: after "lake", "one" and before the next sentence's first word
    labels = list(words["label"])
    pauses = []
    for last in ("lake", "one"):
        i = labels.index(last)
        gap = (words["offset"][i], words["onset"][i + 1])
        assert gap[1] - gap[0] > 0.1, "espeak pauses between sentences"
        pauses.append(_rms(audio, *gap))
    assert inside > 20 * max(pauses)


def test_phones_nested_in_words(utterance):
    words, phones = utterance.words, utterance.phones
    assert len(phones) > 2 * len(words)
    assert np.all(phones["offset"] > phones["onset"])
    mids = (phones["onset"] + phones["offset"]).to_numpy() / 2
    owner = np.searchsorted(words["onset"].to_numpy(), mids, side="right") - 1
    assert np.all(owner >= 0)
    assert np.all(mids <= words["offset"].to_numpy()[owner] + 1e-9)
    # every word holds at least one phone (merged function words excepted: <= 10 %)
    empty = np.setdiff1d(np.arange(len(words)), owner)
    assert len(empty) <= 0.1 * len(words)


def test_phones_match_text_to_phonemes(utterance):
    # two separate espeak code paths (synthesis events and the phonemiser) agree
    phonemes = text_to_phonemes(TEXT)
    expected = re.sub(r"[\s',;]|_:?", "", phonemes)  # spaces, stress, links, pauses
    assert "".join(utterance.phones["label"]) == expected


def test_text_to_phonemes():
    assert text_to_phonemes("cat") == "k'at"
    assert "æ" in text_to_phonemes("cat", ipa=True)
    assert len(text_to_phonemes("Hello world. The cat sat.").split()) == 5


def test_deterministic():
    a = synthesize("A short and simple sentence.")
    b = synthesize("A short and simple sentence.")
    np.testing.assert_array_equal(a.audio, b.audio)
    assert a.words.equals(b.words) and a.phones.equals(b.phones)


def test_rate_and_voices():
    slow = synthesize("The weather was cold and windy all day long.", rate=120)
    fast = synthesize("The weather was cold and windy all day long.", rate=260)
    assert fast.duration < 0.7 * slow.duration
    voices = list_voices()
    assert "en-us" in voices and len(voices) >= 3
    other = synthesize("The weather was cold.", voice=voices[0])
    assert other.audio.size > 0


def test_bad_input():
    with pytest.raises(ValueError, match="no word"):
        synthesize("   ")
    with pytest.raises(ValueError, match="no word"):
        synthesize("...!")
    with pytest.raises(TypeError):
        synthesize(b"bytes")
    with pytest.raises(ValueError, match="no voice"):
        synthesize("hello", voice="xx-not-a-voice")


def test_merged_word_events_are_split():
    # "of" and "the" merged into the event of "house": its span is shared by character length
    spans = [(0, 3, "end"), (4, 6, "of"), (7, 10, "the"), (11, 16, "house")]
    events = [(1, 3, 0), (5, 12, 500)]  # (1-based position, length, ms)
    onsets, offsets = _align_words(spans, events, duration=1.5)
    np.testing.assert_allclose(onsets, [0.0, 0.5, 0.7, 1.0])
    np.testing.assert_allclose(offsets, [0.5, 0.7, 1.0, 1.5])
