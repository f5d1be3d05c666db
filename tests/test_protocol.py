"""The story-level protocol against an independent computation with the plain HF model."""

import warnings

import numpy as np
import pytest
from lanczos_reference import loop_lanczos

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from sk_braintune.features.extractor import SpeechFeatureExtractor  # noqa: E402
from sk_braintune.features.protocol import extract_stories_features, extract_story_features
from sk_braintune.testing.models import make_tiny_model  # noqa: E402

SR = 16000


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model("wav2vec2", tmp_path_factory.mktemp("m") / "w2v")


@pytest.fixture(scope="module")
def story():
    rng = np.random.default_rng(3)
    audio = (0.1 * rng.standard_normal(int(6.05 * SR))).astype(np.float32)
    tr = 0.5
    tr_times = np.arange(11) * tr + tr / 2
    return audio, tr_times, tr


def _reference(path, audio, tr_times, window, step, trim):
    """Windows cut by hand, last frame of the HF model, loop Lanczos, trim, z-score."""
    n_windows = int(np.floor(len(audio) / SR / step + 1e-9))
    end_times = np.arange(1, n_windows + 1) * step
    ws = int(window * SR)
    padded = np.concatenate([np.zeros(ws, np.float32), audio, np.zeros(ws, np.float32)])
    cut = np.stack([padded[int(round(t * SR)):int(round(t * SR)) + ws] for t in end_times])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fe = transformers.AutoFeatureExtractor.from_pretrained(path)
        model = transformers.AutoModel.from_pretrained(path).eval()
    with torch.inference_mode():
        out = model(fe(list(cut), sampling_rate=SR, return_tensors="pt").input_values,
                    output_hidden_states=True)
    last = np.concatenate([h[:, -1].numpy() for h in out.hidden_states], axis=1)
    resampled = loop_lanczos(last, end_times, tr_times)
    resampled = resampled[trim[0]:len(resampled) - trim[1]]
    return (resampled - resampled.mean(0)) / resampled.std(0), resampled


def test_story_features_equal_independent_computation(model_dir, story):
    audio, tr_times, tr = story
    features = extract_story_features(model_dir, audio, tr_times, window=1.0, step=0.1, tr=tr,
                                      trim=(2, 1), batch_size=7, device="cpu")
    expected, _ = _reference(model_dir, audio, tr_times, 1.0, 0.1, (2, 1))
    assert features.shape == (8, 3 * 32) and features.dtype == np.float32
    np.testing.assert_allclose(features, expected, atol=2e-4)
    np.testing.assert_allclose(features.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(features.std(0), 1, atol=1e-4)


def test_without_zscore_and_trim_keeps_lanczos_gain(model_dir, story):
    audio, tr_times, tr = story
    raw = extract_story_features(model_dir, audio, tr_times, window=1.0, tr=tr, trim=None,
                                 zscore=False, layers=(2,), device="cpu")
    _, expected = _reference(model_dir, audio, tr_times, 1.0, 0.1, (0, 0))
    np.testing.assert_allclose(raw, expected[:, 64:], rtol=1e-4, atol=2e-4)


def test_multi_story_wrapper_and_fitted_extractor(model_dir, story):
    audio, tr_times, tr = story
    stories = extract_stories_features(model_dir, {"x": audio, "y": audio[::-1].copy()},
                                       {"x": tr_times, "y": tr_times}, window=1.0, tr=tr,
                                       trim=(1, 1), layers=(1, 2), device="cpu")
    assert list(stories) == ["x", "y"]
    single = extract_story_features(model_dir, audio, tr_times, window=1.0, tr=tr, trim=(1, 1),
                                    layers=(1, 2), device="cpu")
    np.testing.assert_allclose(stories["x"], single, atol=1e-5)
    fitted = SpeechFeatureExtractor(model_dir, layers=(1, 2), device="cpu").fit(
        np.zeros((1, SR), np.float32))
    via_extractor = extract_story_features(fitted, audio, tr_times, window=1.0, tr=tr,
                                           trim=(1, 1))
    np.testing.assert_allclose(via_extractor, single, atol=1e-5)


def test_protocol_errors(model_dir, story):
    audio, tr_times, tr = story
    with pytest.raises(ValueError, match="leaves no TRs"):
        extract_story_features(model_dir, audio, tr_times, window=1.0, trim=(6, 5))
    with pytest.raises(ValueError, match="TR times"):
        extract_story_features(model_dir, audio, tr_times * 1000, window=1.0)
    with pytest.raises(TypeError, match="unexpected"):
        extract_stories_features(model_dir, {"x": audio}, {"x": tr_times}, pooling="mean")
