"""AudioBackbone against direct Hugging Face calls, for every family (tiny random models)."""

import pickle

import numpy as np
import pytest
from hf_reference import hf_reference

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from sk_braintune.models.backbone import load_backbone  # noqa: E402
from sk_braintune.testing.models import make_tiny_model  # noqa: E402

VARIANTS = {
    "wav2vec2": ("wav2vec2", {}),
    "wav2vec2-stable": ("wav2vec2", {"do_stable_layer_norm": True}),
    "hubert": ("hubert", {}),
    "hubert-stable": ("hubert", {"do_stable_layer_norm": True}),
    "wavlm": ("wavlm", {}),
    "wavlm-stable": ("wavlm", {"do_stable_layer_norm": True}),
    "whisper": ("whisper", {}),
}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_models")
    return {name: make_tiny_model(family, root / name, **overrides)
            for name, (family, overrides) in VARIANTS.items()}


@pytest.fixture(scope="module")
def waveforms():
    rng = np.random.default_rng(0)
    return (0.1 * rng.standard_normal((3, 16000))).astype(np.float32)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_outputs_equal_hugging_face(model_dirs, waveforms, name):
    backbone = load_backbone(model_dirs[name])
    sliced = waveforms.shape[1] // 320 if name == "whisper" else None
    ref = hf_reference(model_dirs[name], waveforms, sliced_frames=sliced)
    with torch.inference_mode():
        out = backbone(waveforms)
    assert len(out.hidden_states) == backbone.num_hidden_layers + 1 == len(ref.hidden_states)
    for ours, theirs in zip(out.hidden_states, ref.hidden_states):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(out.last_hidden_state.numpy(), ref.last_hidden_state.numpy(),
                               atol=2e-5, rtol=1e-5)
    n_frames = backbone.frame_count(waveforms.shape[1])
    assert out.last_hidden_state.shape == (3, n_frames, backbone.hidden_size)
    assert out.frame_mask.shape == (3, n_frames) and bool(out.frame_mask.all())
    if "stable" in name:  # pre-norm models: the final layer norm comes after hidden_states[-1]
        assert not torch.allclose(out.hidden_states[-1], out.last_hidden_state)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_forward_from_hidden_at_equals_forward(model_dirs, waveforms, name):
    backbone = load_backbone(model_dirs[name])
    with torch.inference_mode():
        out = backbone(waveforms)
        for k in range(backbone.num_hidden_layers + 1):
            hidden, mask = backbone.hidden_at(waveforms, k)
            torch.testing.assert_close(hidden, out.hidden_states[k], rtol=0, atol=0)
            torch.testing.assert_close(backbone.forward_from(*backbone.hidden_at(waveforms, k), k),
                                       out.last_hidden_state, rtol=0, atol=0)
            torch.testing.assert_close(backbone.forward_from(hidden, k, mask),
                                       out.last_hidden_state, rtol=0, atol=0)


def test_forward_from_trains_only_upper_layers(model_dirs, waveforms):
    backbone = load_backbone(model_dirs["wavlm"]).train()
    with torch.no_grad():
        hidden, mask = backbone.hidden_at(waveforms, 1)
    backbone.forward_from(hidden, 1, mask).sum().backward()
    layers = backbone.encoder.encoder.layers
    # WavLM's relative position embedding lives in block 0 but every block uses it
    assert all(p.grad is None for n, p in layers[0].named_parameters()
               if "rel_attn_embed" not in n)
    assert layers[0].attention.rel_attn_embed.weight.grad is not None
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in layers[1].parameters())


def test_whisper_pad_mode_equals_hugging_face_30s(model_dirs, waveforms):
    path = model_dirs["whisper"]
    backbone = load_backbone(path, whisper_input="pad")
    ref = hf_reference(path, waveforms)
    with torch.inference_mode():
        out = backbone(waveforms)
    assert out.last_hidden_state.shape[1] == 1500
    for ours, theirs in zip(out.hidden_states, ref.hidden_states):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=2e-5, rtol=1e-5)
    assert out.frame_mask.sum(dim=1).tolist() == [50, 50, 50]


def test_whisper_pad_and_slice_agree_on_the_stem_not_after_attention(model_dirs, waveforms):
    path = model_dirs["whisper"]
    with torch.inference_mode():
        sliced = load_backbone(path)(waveforms)
        padded = load_backbone(path, whisper_input="pad")(waveforms)
    n = sliced.last_hidden_state.shape[1]
    # conv stem + positions are local: equal except the last frame, whose STFT window reaches
    # past the audio (reflection padding vs zeros)
    np.testing.assert_allclose(sliced.hidden_states[0][:, :n - 1].numpy(),
                               padded.hidden_states[0][:, :n - 1].numpy(), atol=1e-5)
    # attention sees the padding in 30 s mode, so later layers differ
    diff = (sliced.last_hidden_state - padded.last_hidden_state[:, :n]).abs().max()
    assert diff > 1e-3


def test_whisper_rejects_windows_longer_than_30s(model_dirs):
    backbone = load_backbone(model_dirs["whisper"])
    with pytest.raises(ValueError, match="at most 30 s"):
        backbone(np.zeros((1, 16000 * 31), dtype=np.float32))


@pytest.mark.parametrize("n_samples", [400, 1234, 16000, 16321])
@pytest.mark.parametrize("name", ["wav2vec2", "whisper"])
def test_frame_count(model_dirs, name, n_samples):
    backbone = load_backbone(model_dirs[name])
    with torch.inference_mode():
        out = backbone(np.zeros((1, n_samples), dtype=np.float32) + 0.01)
    assert out.last_hidden_state.shape[1] == backbone.frame_count(n_samples)
    if name == "whisper":
        assert backbone.frame_count(n_samples) == int(np.ceil(n_samples / 320))


def test_too_short_window_is_a_clear_error(model_dirs):
    backbone = load_backbone(model_dirs["wav2vec2"])
    with pytest.raises(ValueError, match="at least 325 samples"):
        backbone.frame_count(100)


@pytest.mark.parametrize("name", ["wav2vec2", "wavlm-stable", "whisper"])
def test_pickle_and_save_pretrained_round_trip(model_dirs, waveforms, tmp_path, name):
    backbone = load_backbone(model_dirs[name]).freeze_feature_encoder()
    frozen = {n for n, p in backbone.named_parameters() if not p.requires_grad}
    assert frozen
    clone = pickle.loads(pickle.dumps(backbone))
    saved = load_backbone(backbone.save_pretrained(tmp_path / "saved"))
    with torch.inference_mode():
        expected = backbone(waveforms).last_hidden_state
        torch.testing.assert_close(clone(waveforms).last_hidden_state, expected)
        torch.testing.assert_close(saved(waveforms).last_hidden_state, expected)
    assert {n for n, p in clone.named_parameters() if not p.requires_grad} == frozen
    assert clone.fingerprint() == saved.fingerprint() == backbone.fingerprint()
    if name == "whisper":
        # a full model whose encoder keeps the full 1500-position table
        model, info = transformers.WhisperForConditionalGeneration.from_pretrained(
            tmp_path / "saved", output_loading_info=True)
        assert not info["missing_keys"]
        assert model.get_encoder().embed_positions.weight.shape[0] == 1500


def test_fingerprint_changes_with_weights(model_dirs):
    backbone = load_backbone(model_dirs["hubert"])
    before = backbone.fingerprint()
    with torch.no_grad():
        backbone.encoder.encoder.layers[-1].feed_forward.output_dense.bias += 1e-3
    assert backbone.fingerprint() != before


def test_freeze_feature_encoder_whisper_and_hubert(model_dirs):
    whisper = load_backbone(model_dirs["whisper"]).freeze_feature_encoder()
    assert not any(p.requires_grad for p in whisper.encoder.conv1.parameters())
    assert not any(p.requires_grad for p in whisper.encoder.conv2.parameters())
    assert all(p.requires_grad for p in whisper.encoder.layers.parameters())
    hubert = load_backbone(model_dirs["hubert"]).freeze_feature_encoder()
    assert not any(p.requires_grad for p in hubert.encoder.feature_extractor.parameters())
    assert all(p.requires_grad for p in hubert.encoder.encoder.parameters())


def test_training_augmentation_is_off(model_dirs):
    backbone = load_backbone(model_dirs["wav2vec2"])
    assert backbone.config.layerdrop == 0.0
    assert backbone.config.mask_time_prob == 0.0
    assert not backbone.config.apply_spec_augment
    assert not backbone.training


def test_missing_preprocessor_config_warns_and_uses_defaults(model_dirs, tmp_path, waveforms):
    backbone = load_backbone(model_dirs["hubert"])
    path = backbone.save_pretrained(tmp_path / "hubert")
    (tmp_path / "hubert" / "preprocessor_config.json").unlink()
    with pytest.warns(UserWarning, match="family's default"):
        fallback = load_backbone(path)
    assert fallback.preprocessing["do_normalize"] is False  # HuBERT base default
    with torch.inference_mode():
        torch.testing.assert_close(fallback(waveforms).last_hidden_state,
                                   backbone(waveforms).last_hidden_state)


def test_loading_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_backbone(tmp_path / "nope" / "model")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="HF_HUB_OFFLINE"):
        load_backbone("no-such-org/no-such-speech-model")


def test_tiny_models_are_deterministic(tmp_path):
    a = load_backbone(make_tiny_model("wavlm", tmp_path / "a", seed=3))
    b = load_backbone(make_tiny_model("wavlm", tmp_path / "b", seed=3))
    c = load_backbone(make_tiny_model("wavlm", tmp_path / "c", seed=4))
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
