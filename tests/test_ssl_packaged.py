"""The packaged self-supervised speech model: loading, features, and its reproducible recipe."""

import fnmatch
import json
import os
import tomllib
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

from hf_reference import hf_reference  # noqa: E402

from sk_braintune.models import load_backbone
from sk_braintune.builtin import load_ssl_speech_model  # noqa: E402
from sk_braintune.builtin import ssl as ssl_module  # noqa: E402
from sk_braintune.builtin.ssl import (
    MARKER_FILE,
    PACKAGED_DIR,
    PACKAGED_RECORD,
    PACKAGED_WEIGHTS,
    SSL_RECIPE,
    SSL_REVISION,
    package_ssl_model,
    packaged_ssl_model,
    pretrain_ssl_speech_model,
    unpack_ssl_model,
)
from sk_braintune.windows import make_windows  # noqa: E402

SR = 16000
TINY = dict(encoder_layers=2, d_model=32, attention_heads=2, ffn_dim=64, crop_seconds=2.0,
            batch_size=4, n_steps=6, warmup_steps=2, learning_rate=3e-3, codebook_size=32,
            codebook_dim=8, summary_weight=1.0, summary_chunks=4, summary_layer=1,
            max_source_positions=300)


def _audio(n_seconds=8, n=2, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n_seconds * SR) / SR
    return [(0.3 * np.sin(2 * np.pi * (300 + 150 * np.sin(2 * np.pi * 0.7 * t + k)) * t)
             * (np.sin(2 * np.pi * (1.5 + 0.3 * k) * t) > 0)
             + 0.01 * rng.standard_normal(t.size)).astype(np.float32) for k in range(n)]


@pytest.fixture(scope="module")
def packaged_path(tmp_path_factory):
    """The shipped model, unpacked by load_ssl_speech_model into an empty cache."""
    if packaged_ssl_model() is None:
        pytest.fail(f"no packaged SSL model in {PACKAGED_DIR}: run benchmarks/pretrain_ssl.py")
    cache = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()

    def no_pretraining(*args, **kwargs):
        raise AssertionError("the default recipe must come from the package, not pretraining")

    mp.setattr(ssl_module, "pretrain_ssl_speech_model", no_pretraining)
    try:
        path = load_ssl_speech_model(cache_dir=cache)
        assert load_ssl_speech_model(cache_dir=cache) == path  # second call: the unpacked copy
    finally:
        mp.undo()
    return path


def test_packaged_model_is_the_current_default_recipe():
    from sk_braintune.builtin.story import story_speech

    record = packaged_ssl_model()
    assert record["revision"] == SSL_REVISION
    assert {k: record["recipe"][k] for k in SSL_RECIPE} == SSL_RECIPE
    assert record["recipe"]["random_state"] == 0
    _, digest = story_speech(stories="library", split="train", synthesize=False)
    # fails when the library's training texts change: rerun benchmarks/pretrain_ssl.py
    assert record["texts_digest"] == digest
    weights = PACKAGED_DIR / PACKAGED_WEIGHTS
    assert weights.stat().st_size == record["weights_bytes"] < 20 * 2 ** 20
    assert ssl_module._sha256(weights) == record["sha256"]
    # the files install with the package (wheel / non-editable install)
    with open(Path(__file__).parents[1] / "pyproject.toml", "rb") as f:
        globs = tomllib.load(f)["tool"]["setuptools"]["package-data"]["sk_braintune"]
    for name in (PACKAGED_WEIGHTS, PACKAGED_RECORD):
        assert any(fnmatch.fnmatch(f"data/ssl_model/{name}", g) for g in globs), name


def test_packaged_model_loads_with_every_weight(packaged_path):
    full, info = transformers.WhisperModel.from_pretrained(packaged_path,
                                                           output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    backbone = load_backbone(packaged_path)
    recipe = packaged_ssl_model()["recipe"]
    assert backbone.num_hidden_layers == recipe["encoder_layers"]
    assert backbone.hidden_size == recipe["d_model"]
    # the encoder holds the packaged float16 weights exactly (cast to float32)
    shipped = safetensors_torch.load_file(str(PACKAGED_DIR / PACKAGED_WEIGHTS))
    state = full.encoder.state_dict()
    assert set(state) - set(shipped) == {"embed_positions.weight"}
    for name, value in shipped.items():
        assert value.dtype == torch.float16
        torch.testing.assert_close(state[name], value.float(), rtol=0, atol=0)
    with open(os.path.join(packaged_path, MARKER_FILE)) as f:
        assert json.load(f)["sha256"] == packaged_ssl_model()["sha256"]


def test_packaged_features_equal_a_direct_whisper_call(packaged_path):
    from sk_braintune import SpeechFeatureExtractor

    audio = _audio(n_seconds=10, n=1, seed=4)[0]
    windows = make_windows(audio, np.array([4.0, 6.5, 9.0]), window=4.0, tr=1.0)
    features = SpeechFeatureExtractor(packaged_path, batch_size=2).fit_transform(windows)
    reference = hf_reference(packaged_path, windows.to_array(), sliced_frames=200)
    expected = np.concatenate([h.numpy().mean(axis=1) for h in reference.hidden_states], axis=1)
    np.testing.assert_allclose(features, expected, atol=2e-4, rtol=1e-3)


def test_tiny_recipe_reproduces_its_package_exactly(tmp_path):
    records = []
    for run in ("a", "b"):
        pretrain_ssl_speech_model(_audio(), tmp_path / run, **TINY)
        records.append(package_ssl_model(tmp_path / run, tmp_path / f"{run}-package",
                                         texts_digest="tiny"))
    assert records[0]["sha256"] == records[1]["sha256"]
    assert (tmp_path / "a-package" / PACKAGED_WEIGHTS).read_bytes() == (
        tmp_path / "b-package" / PACKAGED_WEIGHTS).read_bytes()
    assert records[0]["summary_losses"] == records[1]["summary_losses"]
    # another seed, other weights
    pretrain_ssl_speech_model(_audio(), tmp_path / "c", **dict(TINY, random_state=1))
    other = package_ssl_model(tmp_path / "c", tmp_path / "c-package")
    assert other["sha256"] != records[0]["sha256"]
    # unpacked, the package is the trained model up to float16 rounding, decoder included
    metadata = unpack_ssl_model(tmp_path / "unpacked", tmp_path / "a-package")
    assert metadata["texts_digest"] == "tiny"
    trained = transformers.WhisperModel.from_pretrained(tmp_path / "a").state_dict()
    unpacked = transformers.WhisperModel.from_pretrained(tmp_path / "unpacked").state_dict()
    assert set(trained) == set(unpacked)
    for name, value in trained.items():
        if name.startswith("encoder.") and name != "encoder.embed_positions.weight":
            torch.testing.assert_close(unpacked[name], value.half().float(), rtol=0, atol=0)
        else:  # rebuilt from the seed
            torch.testing.assert_close(unpacked[name], value, rtol=0, atol=0)


def test_unpack_refuses_damaged_weights(tmp_path):
    pretrain_ssl_speech_model(_audio(), tmp_path / "m", **dict(TINY, n_steps=1))
    package_ssl_model(tmp_path / "m", tmp_path / "p")
    weights = tmp_path / "p" / PACKAGED_WEIGHTS
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 1
    weights.write_bytes(bytes(blob))
    with pytest.raises(OSError, match="SHA-256"):
        unpack_ssl_model(tmp_path / "u", tmp_path / "p")
    with pytest.raises(FileNotFoundError, match="no packaged"):
        unpack_ssl_model(tmp_path / "u", tmp_path / "nothing")


def test_summary_objective_settings(tmp_path):
    history = pretrain_ssl_speech_model(_audio(), tmp_path / "s", **dict(TINY, n_steps=4))
    assert len(history["summary_losses"]) == 4
    # standardised targets: an untrained linear read-out starts near unit error
    assert 0.3 < history["fixed_batch_summary_loss"]["before"] < 3.0
    off = pretrain_ssl_speech_model(_audio(), tmp_path / "o",
                                    **dict(TINY, n_steps=2, summary_weight=0.0))
    assert off["summary_losses"] == [] and off["fixed_batch_summary_loss"]["before"] is None
    with pytest.raises(ValueError, match="summary_layer"):
        pretrain_ssl_speech_model(_audio(), tmp_path / "x", **dict(TINY, summary_layer=3))
    with pytest.raises(ValueError, match="summary_chunks"):
        pretrain_ssl_speech_model(_audio(), tmp_path / "x", **dict(TINY, summary_chunks=0))


def test_package_is_used_only_for_its_own_recipe_texts_and_revision():
    record = {"revision": SSL_REVISION, "texts_digest": "abc",
              "recipe": {**SSL_RECIPE, "random_state": 0, "max_source_positions": 1500}}
    recipe = {**SSL_RECIPE, "random_state": 0}
    assert ssl_module._is_packaged_recipe(record, recipe, "abc")
    assert not ssl_module._is_packaged_recipe(record, recipe, "other texts")
    assert not ssl_module._is_packaged_recipe(record, {**recipe, "random_state": 1}, "abc")
    assert not ssl_module._is_packaged_recipe(record, {**recipe, "n_steps": 10}, "abc")
    assert not ssl_module._is_packaged_recipe(dict(record, revision=SSL_REVISION - 1), recipe,
                                              "abc")


def test_texts_digest_needs_no_synthesis():
    pytest.importorskip("espeakng_loader")
    from sk_braintune.builtin import story_speech

    speech, digest = story_speech("default", "test", max_words=60)
    assert story_speech("default", "test", max_words=60, synthesize=False) == (None, digest)
    assert story_speech("default", "test", max_words=50, synthesize=False)[1] != digest
