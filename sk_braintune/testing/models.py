"""Tiny randomly initialised speech models, saved like real checkpoints, for tests.

Nothing is downloaded: each model is built from a transformers config with a fixed seed and
written with ``save_pretrained`` next to the matching feature extractor's
``preprocessor_config.json``, so it loads through exactly the code path of a real checkpoint.
"""

from __future__ import annotations

import os

__all__ = ["TINY_FAMILIES", "make_tiny_model"]

TINY_FAMILIES = ("wav2vec2", "hubert", "wavlm", "whisper")

# wav2vec2-style CNN with the real total stride of 320 samples (50 frames/s) but 4 cheap layers
_W2V_COMMON = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(32, 32, 32, 32),
    conv_stride=(5, 4, 4, 4),
    conv_kernel=(10, 4, 4, 4),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
    vocab_size=32,
    hidden_dropout=0.1,
    attention_dropout=0.1,
    activation_dropout=0.0,
    feat_proj_dropout=0.0,
)

_WHISPER = dict(
    vocab_size=64,
    num_mel_bins=80,
    d_model=32,
    encoder_layers=2,
    encoder_attention_heads=2,
    encoder_ffn_dim=64,
    decoder_layers=1,
    decoder_attention_heads=2,
    decoder_ffn_dim=64,
    max_source_positions=1500,
    max_target_positions=64,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    decoder_start_token_id=3,
    suppress_tokens=None,
    begin_suppress_tokens=None,
)


def make_tiny_model(family, directory, seed=0, *, do_normalize=None, **config_overrides):
    """Write a tiny random model of one family to ``directory`` and return its path.

    Parameters
    ----------
    family : {"wav2vec2", "hubert", "wavlm", "whisper"}
        Architecture. Whisper is saved as a ``WhisperForConditionalGeneration`` (like the real
        checkpoints), the others as their base model.
    directory : str or os.PathLike
        Output folder (created).
    seed : int, default=0
        Torch seed for the weights: equal seeds give equal weights.
    do_normalize : bool, optional
        Written to ``preprocessor_config.json``; default True for wav2vec2, False otherwise
        (as in the released base checkpoints).
    **config_overrides
        Passed to the transformers config, e.g. ``do_stable_layer_norm=True``,
        ``num_hidden_layers=3``, ``hidden_size=64``.

    Returns
    -------
    path : str
        ``directory``, loadable with :func:`sk_braintune.models.load_backbone` and with
        ``transformers.AutoModel.from_pretrained`` offline.

    Examples
    --------
    >>> path = make_tiny_model("wav2vec2", tmp_path / "w2v")  # doctest: +SKIP
    """
    import torch
    import transformers

    from ..models.backbone import quiet_transformers

    if family not in TINY_FAMILIES:
        raise ValueError(f"family must be one of {TINY_FAMILIES}, got {family!r}")
    os.makedirs(directory, exist_ok=True)
    if do_normalize is None:
        do_normalize = family == "wav2vec2"
    if family == "whisper":
        config = transformers.WhisperConfig(**{**_WHISPER, **config_overrides})
        model_class = transformers.WhisperForConditionalGeneration
        feature_extractor = transformers.WhisperFeatureExtractor(
            feature_size=config.num_mel_bins, do_normalize=do_normalize)
    else:
        options = dict(_W2V_COMMON)
        if config_overrides.get("do_stable_layer_norm"):
            options["feat_extract_norm"] = "layer"  # as in the released stable-layer-norm models
        options.update(config_overrides)
        config_class, model_class = {
            "wav2vec2": (transformers.Wav2Vec2Config, transformers.Wav2Vec2Model),
            "hubert": (transformers.HubertConfig, transformers.HubertModel),
            "wavlm": (transformers.WavLMConfig, transformers.WavLMModel),
        }[family]
        config = config_class(**options)
        feature_extractor = transformers.Wav2Vec2FeatureExtractor(
            do_normalize=do_normalize, return_attention_mask=False)
    with quiet_transformers():
        state = torch.random.get_rng_state()
        try:
            torch.manual_seed(seed)
            model = model_class(config)
        finally:
            torch.random.set_rng_state(state)
        model.save_pretrained(directory)
        feature_extractor.save_pretrained(directory)
    return str(directory)
