"""Low-level speech features: hand counts, the reference Lanczos recipe, phone tables, power spectrum."""

import numpy as np
import pandas as pd
import pytest
from sklearn.utils import Bunch

from sk_braintune.features.lowlevel import (
    LowLevelSpeechFeatures,
    PowerSpectrumFeatures,
    articulatory_table,
    lowlevel_features,
    normalize_phone,
    power_spectrum_features,
)

# "sp DH AH0 K AE1 T sp S IH1 T": one silence splits the two runs; TR = 1 s
PHONES = pd.DataFrame({
    "onset": [0.0, 0.5, 0.6, 0.8, 1.0, 1.3, 1.5, 2.1, 2.3, 2.5],
    "offset": [0.5, 0.6, 0.8, 1.0, 1.3, 1.5, 2.1, 2.3, 2.5, 2.7],
    "label": ["sp", "DH", "AH0", "K", "AE1", "T", "sp", "S", "IH1", "T"],
})
TR_TIMES = np.array([0.5, 1.5, 2.5])
RECORD = {"phones": PHONES, "tr_times": TR_TIMES, "tr": 1.0}


def _column(transformer, X, name):
    return X[:, transformer.vocabulary_.index(name)]


def test_phoneme_counts_match_hand_count():
    t = LowLevelSpeechFeatures(kind="phoneme", resample="count").fit([RECORD])
    X = t.transform([RECORD])
    assert X.shape == (3, 40)  # 39 ARPAbet phones + other
    # midpoints: DH .55 AH .7 K .9 | AE 1.15 T 1.4 | S 2.2 IH 2.4 T 2.6
    expected = {"DH": [1, 0, 0], "AH": [1, 0, 0], "K": [1, 0, 0], "AE": [0, 1, 0],
                "T": [0, 1, 1], "S": [0, 0, 1], "IH": [0, 0, 1]}
    for phone, counts in expected.items():
        np.testing.assert_array_equal(_column(t, X, phone), counts)
    np.testing.assert_array_equal(X.sum(axis=1), [3, 2, 3])


def test_diphones_and_triphones_stay_inside_pause_free_runs():
    t = LowLevelSpeechFeatures(kind="diphone", resample="count").fit([RECORD])
    assert set(t.vocabulary_) == {"DH_AH", "AH_K", "K_AE", "AE_T", "S_IH", "IH_T", "other"}
    X = t.transform([RECORD])
    # DH_AH (.65) AH_K (.8) | K_AE (1.05) AE_T (1.25) | S_IH (2.3) IH_T (2.5); no T_S across "sp"
    np.testing.assert_array_equal(X.sum(axis=1), [2, 2, 2])
    np.testing.assert_array_equal(_column(t, X, "K_AE"), [0, 1, 0])
    tri = LowLevelSpeechFeatures(kind="triphone", resample="count").fit([RECORD])
    X3 = tri.transform([RECORD])
    assert set(tri.vocabulary_) == {"DH_AH_K", "AH_K_AE", "K_AE_T", "S_IH_T", "other"}
    np.testing.assert_array_equal(X3.sum(axis=1), [2, 1, 1])


def test_top_k_vocabulary_is_learned_on_training_stories_only():
    t = LowLevelSpeechFeatures(kind="diphone", top_k=2, resample="count").fit([RECORD])
    assert t.vocabulary_ == ["AE_T", "AH_K", "other"]  # ties broken alphabetically
    X = t.transform([RECORD])
    np.testing.assert_array_equal(_column(t, X, "other"), [1, 1, 2])
    unseen = {"phones": pd.DataFrame({"onset": [0.2, 0.4], "offset": [0.4, 0.6],
                                      "label": ["Z", "UW1"]}),
              "tr_times": TR_TIMES, "tr": 1.0}
    np.testing.assert_array_equal(t.transform([unseen])[:, -1], [1, 0, 0])


def test_articulation_counts_sum_phone_features():
    t = LowLevelSpeechFeatures(kind="articulation", resample="count").fit([RECORD])
    X = t.transform([RECORD])
    table = articulatory_table("arpabet")
    expected = table.loc[["DH", "AH", "K"]].sum(axis=0).to_numpy()
    np.testing.assert_array_equal(X[0], expected)
    assert _column(t, X, "vowel")[0] == 1 and _column(t, X, "voiced")[0] == 2


def _reference_lanczosinterp2d(data, oldtime, newtime, window=3):
    # HuthLab's lanczosinterp2D / lanczosfun, written out independently
    cutoff = 1 / np.mean(np.diff(newtime))
    out = np.zeros((len(newtime), data.shape[1]))
    for i, t in enumerate(newtime):
        u = (t - oldtime) * cutoff
        with np.errstate(divide="ignore", invalid="ignore"):
            w = window * np.sin(np.pi * u) * np.sin(np.pi * u / window) / (np.pi ** 2 * u ** 2)
        w[u == 0] = 1.0
        w[np.abs(u) > window] = 0.0
        out[i] = w @ data
    return out


def test_lanczos_counts_follow_the_reference_recipe():
    rng = np.random.default_rng(0)
    onsets = np.sort(rng.uniform(0, 30, 120))
    labels = rng.choice(["AA", "B", "S", "T", "IY1", "N"], size=120)
    phones = pd.DataFrame({"onset": onsets, "offset": onsets + 0.05, "label": labels})
    tr_times = np.arange(15) * 2.0 + 1.0
    rec = {"phones": phones, "tr_times": tr_times, "tr": 2.0}
    t = LowLevelSpeechFeatures(kind="phoneme").fit([rec])
    X = t.transform([rec])
    one_hot = np.zeros((120, len(t.vocabulary_)))
    names = [normalize_phone(x) for x in labels]
    one_hot[np.arange(120), [t.vocabulary_.index(n) for n in names]] = 1
    expected = _reference_lanczosinterp2d(one_hot, onsets + 0.025, tr_times)
    np.testing.assert_allclose(X, expected, rtol=1e-5, atol=1e-5)
    # the unnormalised gain is ~ events per TR in the interior; normalised weights remove it
    tn = LowLevelSpeechFeatures(kind="phoneme", resample="lanczos_normalized").fit([rec])
    assert abs(tn.transform([rec])[3:-3].sum(axis=1).mean() - 1.0) < 0.2


def test_phone_normalisation_and_tables():
    assert normalize_phone("AH0") == "AH" and normalize_phone("sp") is None
    assert normalize_phone("") is None and normalize_phone("ER1") == "ER"
    espeak = articulatory_table("espeak")
    assert normalize_phone("t#", "espeak", set(espeak.index)) == "t#"
    assert normalize_phone("aI9", "espeak", set(espeak.index)) == "aI"
    assert normalize_phone("qq", "espeak", set(espeak.index)) == "other"
    arpa = articulatory_table("arpabet")
    assert len(arpa) == 39
    for table in (arpa, espeak[arpa.columns]):
        values = table.to_numpy()
        assert set(np.unique(values)) <= {0, 1}
        np.testing.assert_array_equal(table["vowel"] + table["consonant"], 1)
    assert set(espeak["arpabet"]) <= set(arpa.index)


def test_espeak_phones_are_all_in_the_table():
    pytest.importorskip("espeakng_loader")
    from sk_braintune.builtin import synthesize

    text = ("The quick brown fox jumps over the lazy dog; judge the measure of pleasure. "
            "Thin things think thoughts although the weather was rough in the tower.")
    known = set(articulatory_table("espeak").index)
    for voice in ("en-us", "en-gb-x-rp"):
        labels = set(synthesize(text, voice=voice).phones["label"])
        assert labels <= known, labels - known


def test_lowlevel_features_of_a_dataset():
    stories = ["a", "b"]
    ds = Bunch(stories=stories, phones={"a": PHONES, "b": PHONES.iloc[:6]},
               tr_times={"a": TR_TIMES, "b": TR_TIMES}, tr=1.0, phone_set="arpabet",
               split={"train": ["a"], "test": ["b"]},
               audio={s: np.zeros(48000, np.float32) for s in stories}, sample_rate=16000)
    feats = lowlevel_features(ds, "diphone", resample="count")
    assert set(feats) == {"a", "b"} and feats["b"].shape == (3, 7)
    np.testing.assert_array_equal(feats["b"].sum(axis=1), [2, 2, 0])
    spec = lowlevel_features(ds, "powspec", n_bands=8)
    assert spec["a"].shape == (3, 8)


def test_power_spectrum_finds_a_tone_in_the_last_tr():
    sr = 16000
    t = np.arange(4 * sr) / sr
    tone = np.sin(2 * np.pi * 1000 * t).astype(np.float32)
    silent_end = tone.copy()
    silent_end[2 * sr:] = 0
    X = np.stack([tone, silent_end])
    est = PowerSpectrumFeatures(n_bands=16, span=2.0).fit(X)
    out = est.transform(X)
    assert out.shape == (2, 16) and out.dtype == np.float32
    mel = np.linspace(2595 * np.log10(1 + 50 / 700), 2595 * np.log10(1 + 8000 / 700), 18)
    centres = 700 * (10 ** (mel[1:-1] / 2595) - 1)
    assert abs(int(out[0].argmax()) - int(np.argmin(np.abs(centres - 1000)))) <= 1
    assert out[0].max() > out[1].max() + 10  # the second window's last TR is silent
    story = power_spectrum_features(silent_end, np.array([1.0, 3.0]), n_bands=16)
    assert story[0].max() > story[1].max()


def test_one_silence_set_for_textgrids_and_phone_features():
    from sk_braintune.datasets.textgrid import SILENCE_LABELS, drop_silences
    from sk_braintune.features.lowlevel import normalize_phone

    for label in SILENCE_LABELS:
        for variant in (label, label.upper(), f" {label} "):
            assert normalize_phone(variant, "arpabet") is None, variant
            assert normalize_phone(variant.strip().lower(), "espeak") is None, variant
    for label in ("sp1", "_", "{BR}", "sentence_start"):  # formerly in only one of two sets
        assert label.lower() in SILENCE_LABELS
    table = pd.DataFrame({"onset": [0.0, 1.0, 2.0, 3.0], "offset": [1.0, 2.0, 3.0, 4.0],
                          "label": ["AH0", "sp1", "_", "T"]})
    assert drop_silences(table)["label"].tolist() == ["AH0", "T"]
    assert normalize_phone("AH0") == "AH" and normalize_phone("t", "espeak") == "t"


def test_power_spectrum_in_blocks_of_frames(monkeypatch):
    # the frames are windowed and transformed a block at a time (an hour of audio at once is
    # 3 GB of spectra); block edges change no frame
    from sk_braintune.features import lowlevel

    rng = np.random.default_rng(1)
    audio = rng.standard_normal(16000 * 12)
    tr_times = np.arange(1.0, 11.0, 2.0)
    whole = lowlevel.power_spectrum_features(audio, tr_times)
    monkeypatch.setattr(lowlevel, "_FRAMES_PER_BLOCK", 37)
    np.testing.assert_allclose(lowlevel.power_spectrum_features(audio, tr_times), whole,
                               rtol=1e-6)
