"""Semantic preference: positive for meaning-based representations, negative for sound-based ones."""

import numpy as np
import pytest

from sk_braintune.analysis.preference import semantic_preference
from sk_braintune.builtin.word_pairs import (
    load_synonym_pairs,
    near_homophone_pairs,
    phone_edit_distance,
)


def test_phone_edit_distance():
    assert phone_edit_distance(["k", "a", "t"], ["b", "a", "t"]) == pytest.approx(1 / 3)
    assert phone_edit_distance(["k", "a", "t"], ["k", "a", "t"]) == 0.0
    assert phone_edit_distance(["s", "I", "t"], ["s", "t"]) == pytest.approx(1 / 3)
    assert phone_edit_distance([], ["a"]) == 1.0 and phone_edit_distance([], []) == 0.0
    assert phone_edit_distance("kitten", "sitting") == pytest.approx(3 / 7)


def test_near_homophone_pairs_exclude_synonyms_and_identical_sounds():
    phones = {"cat": "kat", "bat": "bat", "cap": "kap", "kat": "kat", "dog": "dOg"}
    pairs = near_homophone_pairs(phones, exclude=[("bat", "cat")])
    names = {(a, b) for a, b, _ in pairs}
    assert ("bat", "cat") not in names and ("cat", "kat") not in names
    assert {("cap", "cat"), ("bat", "kat"), ("cap", "kat")} <= names
    assert all(d < 0.4 for _, _, d in pairs)
    assert ("cat", "kat") in {(a, b) for a, b, _ in near_homophone_pairs(phones,
                                                                        include_identical=True)}


def _representations(rng, dim=64):
    """Layer 0 built from letters (sound-like), layer 1 from meanings (synonyms share one)."""
    synonyms = load_synonym_pairs()
    words = sorted({w for p in synonyms for w in p})
    meaning = {w: rng.standard_normal(dim) for w in words}
    for a, b in synonyms:
        meaning[b] = meaning[a] + 0.3 * rng.standard_normal(dim)
    letter = {c: rng.standard_normal(dim) for c in "abcdefghijklmnopqrstuvwxyz"}

    def sound(w):
        return sum(letter[c] for c in w) + sum(letter[a] * letter[b] for a, b in zip(w, w[1:]))

    reps = {w: np.stack([sound(w), meaning[w]]) for w in words}
    homophones = near_homophone_pairs({w: w for w in words}, max_distance=0.5, exclude=synonyms)
    return reps, synonyms, homophones


def test_preference_positive_for_meaning_negative_for_sound():
    reps, synonyms, homophones = _representations(np.random.default_rng(0))
    assert len(homophones) >= 10
    table = semantic_preference(reps, synonyms, homophones)
    assert list(table.index) == [0, 1]
    assert table.loc[0, "preference"] < -0.1  # sound: near-homophones more alike
    assert table.loc[1, "preference"] > 0.5  # meaning: synonyms more alike
    assert (table["sem"] > 0).all()
    np.testing.assert_allclose(table["preference"],
                               table["synonym_similarity"] - table["homophone_similarity"])


def test_preference_equals_direct_cosines():
    reps = {"a": np.array([1.0, 0.0]), "b": np.array([1.0, 1.0]), "c": np.array([0.0, 1.0])}
    table = semantic_preference(reps, [("a", "b")], [("a", "c", 0.1)])
    assert table.loc[0, "synonym_similarity"] == pytest.approx(1 / np.sqrt(2))
    assert table.loc[0, "homophone_similarity"] == pytest.approx(0.0)
    # a callable giving (n_words, n_layers, dim) works too
    table2 = semantic_preference(lambda ws: np.stack([reps[w][None] for w in ws]),
                                 [("a", "b")], [("a", "c")])
    assert table2.loc[0, "preference"] == pytest.approx(1 / np.sqrt(2))
    with pytest.raises(KeyError, match="no representation"):
        semantic_preference(reps, [("a", "zzz")], [("a", "c")])


def test_make_word_pairs_and_word_representations(tmp_path, monkeypatch):
    pytest.importorskip("espeakng_loader")
    monkeypatch.setenv("SK_BRAINTUNE_CACHE", str(tmp_path))
    from sk_braintune.analysis.preference import word_representations
    from sk_braintune.builtin.word_pairs import make_word_pairs
    from sk_braintune.testing.models import make_tiny_model

    data = make_word_pairs()
    assert len(data.synonym_pairs) >= 60 and len(data.homophone_pairs) == len(data.synonym_pairs)
    synonyms = {frozenset(p) for p in data.synonym_pairs}
    for a, b, d in data.homophone_pairs:
        assert frozenset((a, b)) not in synonyms and 0 < d < 0.4
        assert phone_edit_distance(data.phones[a], data.phones[b]) == pytest.approx(d)
    assert len(data.audio) == len(data.words)
    assert min(len(a) for a in data.audio) > 0.1 * 16000
    assert make_word_pairs().audio[5].tobytes() == data.audio[5].tobytes()  # cached

    from sklearn.utils import Bunch

    small = Bunch(**data)
    keep = [i for i, w in enumerate(data.audio_word) if w in {"big", "large", "cat", "bat"}]
    small.audio = [data.audio[i] for i in keep]
    small.audio_word = data.audio_word[keep]
    reps = word_representations(make_tiny_model("whisper", tmp_path / "whisper"), small,
                                device="cpu")
    assert set(reps) == {"big", "large", "cat", "bat"} and reps["cat"].shape == (3, 32)
    table = semantic_preference(reps, [("big", "large")], [("bat", "cat")])
    assert table.shape == (3, 4) and np.isfinite(table["preference"]).all()
