"""The self-supervised speech model pretrained here (BEST-RQ on a Whisper-architecture encoder)."""

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from hf_reference import hf_reference  # noqa: E402

from sk_braintune.models import load_backbone  # noqa: E402
from sk_braintune.builtin.ssl import MARKER_FILE, _BestRQ, _span_mask, pretrain_ssl_speech_model
from sk_braintune.windows import make_windows  # noqa: E402

SR = 16000
TINY = dict(encoder_layers=2, d_model=32, attention_heads=2, ffn_dim=64, crop_seconds=2.0,
            batch_size=4, n_steps=25, warmup_steps=5, learning_rate=3e-3, codebook_size=32,
            codebook_dim=8, max_source_positions=300)


def _audio(n_seconds=12, n=3, seed=0):
    """Structured audio (gliding tones switched on and off, a little noise): learnable codes."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_seconds * SR) / SR
    return [(0.3 * np.sin(2 * np.pi * (300 + 150 * np.sin(2 * np.pi * 0.7 * t + k)) * t)
             * (np.sin(2 * np.pi * (1.5 + 0.3 * k) * t) > 0)
             + 0.01 * rng.standard_normal(t.size)).astype(np.float32) for k in range(n)]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ssl") / "model"
    history = pretrain_ssl_speech_model(_audio(), directory, **TINY)
    return str(directory), history


def test_loss_falls_on_a_fixed_batch(tiny_model):
    path, history = tiny_model
    assert len(history["losses"]) == TINY["n_steps"]
    before, after = history["fixed_batch_loss"]["before"], history["fixed_batch_loss"]["after"]
    # at initialisation the head predicts about uniformly over the 32 codes
    assert before == pytest.approx(np.log(32), abs=0.6)
    assert after < before - 0.2
    assert np.mean(history["losses"][-5:]) < np.mean(history["losses"][:5])
    assert 0.3 < history["mask_fraction"] < 0.5
    with open(os.path.join(path, MARKER_FILE)) as f:
        marker = json.load(f)
    assert marker["recipe"]["n_steps"] == TINY["n_steps"] and marker["losses"] == history["losses"]


def test_same_seed_same_model(tiny_model, tmp_path):
    path, history = tiny_model
    again = pretrain_ssl_speech_model(_audio(), tmp_path / "again", **dict(TINY, n_steps=3))
    np.testing.assert_allclose(again["losses"], history["losses"][:3], rtol=1e-5)
    other = pretrain_ssl_speech_model(_audio(), tmp_path / "other",
                                      **dict(TINY, n_steps=3, random_state=1))
    assert not np.allclose(other["losses"], history["losses"][:3])


def test_loads_through_the_backbone_like_whisper(tiny_model):
    path, _ = tiny_model
    backbone = load_backbone(path)  # raises on any missing encoder weight
    assert backbone.family == "whisper" and backbone.num_hidden_layers == 2
    assert backbone.hidden_size == 32 and backbone.max_samples == 300 * 320
    full, info = transformers.WhisperModel.from_pretrained(path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    x = np.stack(_audio(n_seconds=3, n=2, seed=3))[:, : int(2.5 * SR)]
    with torch.inference_mode():
        ours = backbone(torch.from_numpy(x))
    reference = hf_reference(path, x, sliced_frames=int(np.ceil(x.shape[1] / 320)))
    assert len(ours.hidden_states) == len(reference.hidden_states) == 3
    for mine, theirs in zip(ours.hidden_states, reference.hidden_states):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), atol=2e-5, rtol=1e-4)


def test_speech_feature_extractor(tiny_model):
    from sk_braintune import SpeechFeatureExtractor

    path, _ = tiny_model
    audio = _audio(n_seconds=6, n=1, seed=4)[0]
    windows = make_windows(audio, np.array([1.0, 2.5, 4.0]), window=2.0, tr=1.0)
    features = SpeechFeatureExtractor(path, batch_size=2).fit_transform(windows)
    reference = hf_reference(path, windows.to_array(), sliced_frames=100)
    expected = np.concatenate([h.numpy().mean(axis=1) for h in reference.hidden_states], axis=1)
    np.testing.assert_allclose(features, expected, atol=2e-5, rtol=1e-4)


def test_trained_weights_differ_from_initial(tiny_model, tmp_path):
    path, _ = tiny_model
    untrained = tmp_path / "untrained"
    pretrain_ssl_speech_model(_audio(), untrained, **dict(TINY, n_steps=0))
    a = load_backbone(path).encoder.state_dict()
    b = load_backbone(untrained).encoder.state_dict()
    assert not torch.allclose(a["layers.0.fc1.weight"], b["layers.0.fc1.weight"])
    torch.testing.assert_close(a["embed_positions.weight"], b["embed_positions.weight"])


def test_best_rq_targets_and_masks():
    rng = np.random.default_rng(0)
    mask = _span_mask(rng, 200, 400, 0.05, 10)
    assert 0.35 < mask.mean() < 0.45  # 1 - 0.95 ** 10 = 0.40
    # spans: every masked run is at least 10 frames long unless cut by the crop's end
    row = mask[0].astype(int)
    edges = np.flatnonzero(np.diff(np.r_[0, row, 0]))
    runs = edges[1::2] - edges[::2]
    assert np.all(runs[:-1] >= 10)
    generator = torch.Generator().manual_seed(0)
    quantiser = _BestRQ(torch.zeros(160), torch.ones(160), 16, 4, generator)
    mel = torch.randn(2, 80, 40, generator=generator)
    targets = quantiser.targets(mel)
    assert targets.shape == (2, 20)
    # independent computation: the nearest unit codeword of the normalised projection
    stacked = mel[0].T.reshape(20, 160).numpy()
    projected = stacked @ quantiser.projection.numpy()
    projected /= np.linalg.norm(projected, axis=1, keepdims=True)
    distances = ((projected[:, None, :] - quantiser.codebook.numpy()[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(targets[0].numpy(), distances.argmin(1))


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="at least one crop"):
        pretrain_ssl_speech_model([np.zeros(100, np.float32)], tmp_path / "x", **TINY)
    with pytest.raises(ValueError, match="mono"):
        pretrain_ssl_speech_model([np.zeros((2, 50000), np.float32)], tmp_path / "x", **TINY)
    with pytest.raises(ValueError, match="max_source_positions"):
        pretrain_ssl_speech_model(_audio(), tmp_path / "x", **dict(TINY, crop_seconds=8.0))


def test_load_ssl_speech_model_is_cached(tmp_path, monkeypatch):
    pytest.importorskip("espeakng_loader")
    from sk_braintune.builtin import load_ssl_speech_model

    monkeypatch.setenv("SK_BRAINTUNE_CACHE", str(tmp_path))
    recipe = dict(encoder_layers=1, d_model=32, attention_heads=2, ffn_dim=64, crop_seconds=2.0,
                  batch_size=2, n_steps=2, warmup_steps=1, codebook_size=16, codebook_dim=4,
                  summary_layer=1)
    path = load_ssl_speech_model(max_words=25, **recipe)
    with open(os.path.join(path, MARKER_FILE)) as f:
        marker = json.load(f)
    assert marker["recipe"]["random_state"] == 0
    mtime = os.path.getmtime(os.path.join(path, "model.safetensors"))
    assert load_ssl_speech_model(max_words=25, **recipe) == path  # from the cache
    assert os.path.getmtime(os.path.join(path, "model.safetensors")) == mtime
    assert load_ssl_speech_model(1, max_words=25, **recipe) != path  # another seed
    assert load_backbone(path).num_hidden_layers == 1
    assert not [p for p in os.listdir(os.path.dirname(path)) if p.startswith(".")]
    with pytest.raises(TypeError, match="unknown recipe"):
        load_ssl_speech_model(max_words=25, n_layers=3)
