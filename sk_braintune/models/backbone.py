"""One interface over Hugging Face speech encoders: wav2vec2, HuBERT, WavLM, Whisper, generic.

:func:`load_backbone` returns an :class:`AudioBackbone`, a ``torch.nn.Module`` that takes raw
16 kHz waveforms ``(batch, n_samples)`` and returns per-layer frame features. It owns the input
preprocessing that Hugging Face does in NumPy feature extractors (zero-mean unit-variance
normalisation, Whisper's log-mel spectrogram) and does it in torch, batched, on the model's
device, following the checkpoint's own ``preprocessor_config.json``.

Layer convention
----------------
``hidden_states`` has ``num_hidden_layers + 1`` entries and matches Hugging Face's
``model(..., output_hidden_states=True).hidden_states`` exactly:

- index 0 is the input of the first transformer block (the "input embeddings": CNN features after
  the feature projection and the convolutional position embedding, plus the encoder layer norm
  for post-norm models; Whisper: conv stem plus sinusoidal positions);
- index ``k`` is the output of block ``k``;
- for *stable-layer-norm* (pre-norm) wav2vec2/HuBERT/WavLM models, ``hidden_states[-1]`` is the
  last block's output *before* the final layer norm, so ``last_hidden_state`` differs from it;
  for post-norm models they are equal; for Whisper, Hugging Face replaces ``hidden_states[-1]``
  with the layer-normed ``last_hidden_state``, and so do we.

:meth:`AudioBackbone.hidden_at` and :meth:`AudioBackbone.forward_from` split the network at any
such index, so a tuner can compute the frozen lower blocks once and train the rest:
``forward_from(*hidden_at(x, k), k) == forward(x).last_hidden_state``.

Whisper
-------
Whisper's encoder insists on exactly ``2 * max_source_positions`` mel frames (30 s). Two modes:
``whisper_input="slice"`` (default) feeds only the window's own frames and slices the sinusoidal
position table to that length (about 2.3x faster for 16 s windows; the numbers equal a Hugging
Face encoder built from a config with the shorter ``max_source_positions``); ``"pad"`` pads the
audio to 30 s like ``WhisperFeatureExtractor`` does (the real frames then also attend to the
padding, so the two modes do not give identical features). Either way ``frame_mask`` marks the
frames that hold real audio (``ceil(n_samples / 320)`` of them). Windows longer than 30 s are
an error.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._hashing import new_hasher, update_array, update_json

__all__ = ["AudioBackbone", "BackboneOutput", "load_backbone", "load_preprocessing", "quiet_transformers"]

SAMPLE_RATE = 16_000

# model_type in the HF config -> family handled natively
_FAMILY_OF_MODEL_TYPE = {
    "wav2vec2": "wav2vec2",
    "hubert": "hubert",
    "wavlm": "wavlm",
    "whisper": "whisper",
}

# Released checkpoints disagree on do_normalize; these are only used when a checkpoint ships no
# preprocessor_config.json (e.g. facebook/wav2vec2-base: True, hubert-base-ls960: False,
# wavlm-base-plus: False), and the user is warned.
_DEFAULT_DO_NORMALIZE = {
    "wav2vec2": True,
    "hubert": False,
    "wavlm": False,
    "whisper": False,
    "generic": True,
}


_VOLATILE_CONFIG = ("_name_or_path", "transformers_version", "_commit_hash", "architectures",
                    "_attn_implementation_autoset", "_attn_implementation_internal", "dtype",
                    "torch_dtype")


@dataclass
class BackboneOutput:
    """Outputs of :meth:`AudioBackbone.forward`.

    Attributes
    ----------
    last_hidden_state : torch.Tensor of shape (batch, n_frames, hidden_size)
        Output of the encoder (after the final layer norm where the model has one).
    hidden_states : tuple of torch.Tensor of shape (batch, n_frames, hidden_size), or None
        ``num_hidden_layers + 1`` entries, index 0 = input embeddings (see the module docstring).
    frame_mask : torch.Tensor of shape (batch, n_frames), dtype bool
        True for frames that hold real audio (False for Whisper's 30 s padding).
    """

    last_hidden_state: object
    hidden_states: tuple | None
    frame_mask: object


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' progress bars and info/warning logs inside the block.

    Loading and saving models print "Loading weights" bars and load reports; library code should
    not. The previous settings are restored on exit.

    Yields
    ------
    None
        Control returns to the ``with`` block with transformers quiet.
    """
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="transformers")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _looks_like_path(name):
    return (name.startswith(("/", "./", "../", "~")) or os.sep != "/" and os.sep in name
            or name.count("/") > 1)


def _load_config(model):
    from transformers import AutoConfig

    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    if not os.path.isdir(model) and _looks_like_path(model):
        raise FileNotFoundError(
            f"Model directory {model!r} does not exist. Pass an existing local directory "
            "(saved with save_pretrained) or a Hugging Face model name."
        )
    try:
        with quiet_transformers():
            return AutoConfig.from_pretrained(model)
    except (OSError, ValueError) as exc:
        if offline and not os.path.isdir(model):
            raise OSError(
                f"{model!r} is not a local directory and HF_HUB_OFFLINE=1 forbids downloading "
                "it from the Hugging Face hub. Pass the path of a saved model directory, download "
                "the model once with network access (it is then cached), or unset HF_HUB_OFFLINE."
            ) from exc
        raise OSError(f"Could not load a model config from {model!r}: {exc}") from exc


def _family_of(config):
    family = _FAMILY_OF_MODEL_TYPE.get(getattr(config, "model_type", None), "generic")
    if family in ("wav2vec2", "hubert", "wavlm") and getattr(config, "add_adapter", False):
        # the adapter changes the frame rate of last_hidden_state; use HF's own forward
        family = "generic"
    return family


def _disable_training_augmentation(config):
    """Set layerdrop to 0 and switch SpecAugment off on a config (in place)."""
    for name in ("layerdrop", "encoder_layerdrop", "decoder_layerdrop",
                 "mask_time_prob", "mask_feature_prob"):
        if hasattr(config, name):
            setattr(config, name, 0.0)
    if hasattr(config, "apply_spec_augment"):
        config.apply_spec_augment = False
    return config


def _default_feature_extractor(family, config):
    if family == "whisper":
        from transformers import WhisperFeatureExtractor

        return WhisperFeatureExtractor(feature_size=config.num_mel_bins)
    from transformers import Wav2Vec2FeatureExtractor

    return Wav2Vec2FeatureExtractor(do_normalize=_DEFAULT_DO_NORMALIZE[family])


def load_preprocessing(model, family, config):
    """Read the checkpoint's feature-extractor settings into a plain (picklable) dict.

    Parameters
    ----------
    model : str
        Model directory (or a name the Hugging Face cache holds).
    family : str
        The backbone family (``"whisper"``, ``"wav2vec2"``, ...): its defaults are used, with a
        warning, where the directory has no ``preprocessor_config.json``.
    config : transformers.PretrainedConfig
        The model's configuration.

    Returns
    -------
    preprocessing : dict
        What the backbone needs to turn waveforms into model inputs.
    """
    from transformers import AutoFeatureExtractor

    source = "preprocessor_config.json"
    try:
        with quiet_transformers():
            fe = AutoFeatureExtractor.from_pretrained(model)
    except (OSError, ValueError, KeyError):
        fe = None
    if fe is None or (family == "whisper" and not hasattr(fe, "mel_filters")):
        fe = _default_feature_extractor(family, config)
        source = "family defaults"
        warnings.warn(
            f"{model!r} has no usable preprocessor_config.json; using the {family} family's "
            f"default input preprocessing (do_normalize={_DEFAULT_DO_NORMALIZE[family]}"
            f"{', 80/128-bin log-mel as num_mel_bins' if family == 'whisper' else ''}). "
            "Save the checkpoint's feature extractor next to it to silence this warning.",
            UserWarning, stacklevel=3,
        )
    sampling_rate = int(getattr(fe, "sampling_rate", SAMPLE_RATE))
    if sampling_rate != SAMPLE_RATE:
        raise ValueError(f"{model!r} expects {sampling_rate} Hz audio; only 16 kHz models are "
                         "supported.")
    prep = {
        "source": source,
        "do_normalize": bool(getattr(fe, "do_normalize", False)),
        "feature_extractor": fe.to_dict(),
    }
    if family == "whisper":
        prep.update(
            n_fft=int(fe.n_fft),
            hop_length=int(fe.hop_length),
            padding_value=float(getattr(fe, "padding_value", 0.0)),
            mel_filters=np.asarray(fe.mel_filters, dtype=np.float32),
        )
    return prep


def _check_no_missing(info, prefix, model):
    missing = sorted(k for k in info.get("missing_keys", ()) if k.startswith(prefix))
    if missing:
        raise ValueError(
            f"Loading {model!r} left weights uninitialised: {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}. The checkpoint does not match its config."
        )


def _check_audio_input(config, model):
    """Refuse a model whose input is text tokens (a text model is no speech encoder)."""
    from transformers import MODEL_MAPPING

    try:
        main_input = MODEL_MAPPING[type(config)].main_input_name
    except (KeyError, AttributeError):  # an architecture transformers' AutoModel lacks
        return
    if main_input not in ("input_values", "input_features"):
        raise ValueError(
            f"{model!r} is a {config.model_type!r} model whose input is {main_input!r} (text "
            "tokens or images), not audio; sk_braintune needs a speech encoder (wav2vec2, "
            "HuBERT, WavLM, Whisper or another Hugging Face audio model).")


@contextlib.contextmanager
def _naming_weights(model):
    """Weights that cannot be read: an OSError naming the file (safetensors' error does not)."""
    import pickle

    from safetensors import SafetensorError

    try:
        yield
    except (OSError, EOFError, pickle.UnpicklingError, SafetensorError) as exc:
        if isinstance(exc, FileNotFoundError) or not os.path.isdir(model):
            raise
        files = sorted(name for name in os.listdir(model)
                       if name.endswith((".safetensors", ".bin", ".pt", ".ckpt")))
        named = ", ".join(os.path.join(model, name) for name in files) or model
        raise OSError(f"the weights of {model!r} cannot be read ({named}: "
                      f"{type(exc).__name__}: {exc}); the file is damaged or incomplete: copy "
                      "or download it again.") from exc


def load_backbone(model, *, device="cpu", whisper_input="slice"):
    """Load a Hugging Face speech encoder as an :class:`AudioBackbone`.

    Parameters
    ----------
    model : str or os.PathLike or AudioBackbone
        Hugging Face model name or local directory (``save_pretrained`` output). Works offline
        (``HF_HUB_OFFLINE=1``) for local directories and cached names. An ``AudioBackbone`` is
        returned as is (moved to ``device``).
    device : str or torch.device, default="cpu"
        ``"auto"`` picks CUDA when present.
    whisper_input : {"slice", "pad"}, default="slice"
        Whisper only: feed windows shorter than 30 s with a sliced position table, or pad them to
        30 s as ``WhisperFeatureExtractor`` does. See the module docstring.

    Returns
    -------
    backbone : AudioBackbone
        In eval mode, ``layerdrop=0``, SpecAugment off.

    Raises
    ------
    FileNotFoundError
        For a path-like ``model`` that does not exist.
    OSError
        When the model is not local and cannot be fetched (e.g. ``HF_HUB_OFFLINE=1``).
    """
    from .._utils import resolve_device

    if isinstance(model, AudioBackbone):
        return model.to(resolve_device(device))
    if whisper_input not in ("slice", "pad"):
        raise ValueError(f"whisper_input must be 'slice' or 'pad', got {whisper_input!r}")
    model = os.fspath(model)
    if model.startswith("~"):
        model = os.path.expanduser(model)
    config = _disable_training_augmentation(_load_config(model))
    family = _family_of(config)
    if family == "generic":
        _check_audio_input(config, model)
    with quiet_transformers(), _naming_weights(model):
        if family == "whisper":
            from transformers import WhisperModel

            # WhisperEncoder.from_pretrained(dir_of_full_model) silently returns random weights:
            # load the full model and keep its encoder.
            full, info = WhisperModel.from_pretrained(model, config=config,
                                                      output_loading_info=True)
            _check_no_missing(info, "encoder.", model)
            encoder = full.get_encoder()
            del full
        else:
            from transformers import AutoModel

            encoder, info = AutoModel.from_pretrained(model, config=config,
                                                      output_loading_info=True)
            if family != "generic":
                _check_no_missing(info, "", model)
    prep = load_preprocessing(model, family, config)
    backbone = AudioBackbone(encoder, family=family, name_or_path=model, preprocessing=prep,
                             whisper_input=whisper_input)
    return backbone.to(resolve_device(device)).eval()


class AudioBackbone(nn.Module):
    """A Hugging Face speech encoder behind one interface (see the module docstring).

    Build it with :func:`load_backbone`.

    Parameters
    ----------
    encoder : torch.nn.Module
        The Hugging Face module: ``Wav2Vec2Model``/``HubertModel``/``WavLMModel``, Whisper's
        ``WhisperEncoder``, or any ``AutoModel`` audio encoder (family ``"generic"``).
    family : {"wav2vec2", "hubert", "wavlm", "whisper", "generic"}
    name_or_path : str
        Where the weights came from.
    preprocessing : dict
        Input preprocessing settings read from the checkpoint's feature extractor.
    whisper_input : {"slice", "pad"}, default="slice"

    Attributes
    ----------
    family : str
    hidden_size : int
    num_hidden_layers : int
        ``hidden_states`` has ``num_hidden_layers + 1`` entries.
    name_or_path : str
    encoder : torch.nn.Module
    config : transformers.PretrainedConfig
    """

    def __init__(self, encoder, *, family, name_or_path, preprocessing,
                 whisper_input="slice"):
        super().__init__()
        self.encoder = encoder
        self.family = family
        self.name_or_path = str(name_or_path)
        self.preprocessing = preprocessing
        self.whisper_input = whisper_input
        if family == "whisper":
            self.register_buffer(
                "_mel_filters", torch.from_numpy(np.array(preprocessing["mel_filters"])),
                persistent=False)
            self.register_buffer("_stft_window",
                                 torch.hann_window(preprocessing["n_fft"]), persistent=False)

    # -- description --------------------------------------------------------------------
    @property
    def config(self):
        """The Hugging Face configuration of the encoder."""
        return self.encoder.config

    @property
    def hidden_size(self):
        """Width of the hidden states (``d_model`` for Whisper)."""
        c = self.config
        return int(c.d_model if self.family == "whisper" else c.hidden_size)

    @property
    def num_hidden_layers(self):
        """Number of transformer blocks (``hidden_states`` has one entry more)."""
        c = self.config
        return int(c.encoder_layers if self.family == "whisper" else c.num_hidden_layers)

    @property
    def max_samples(self):
        """Longest window the model accepts in samples (Whisper: 30 s), or None."""
        if self.family != "whisper":
            return None
        return 2 * int(self.config.max_source_positions) * self.preprocessing["hop_length"]

    @property
    def _stable_layer_norm(self):
        return bool(getattr(self.config, "do_stable_layer_norm", False))

    def extra_repr(self):
        return (f"family={self.family!r}, name_or_path={self.name_or_path!r}, "
                f"layers={self.num_hidden_layers}, hidden_size={self.hidden_size}")

    def frame_count(self, n_samples):
        """Number of output frames for a window of ``n_samples`` samples.

        Parameters
        ----------
        n_samples : int

        Returns
        -------
        n_frames : int
            Frames of ``last_hidden_state`` (Whisper in "pad" mode: 1500 frames, of which
            ``ceil(n_samples / 320)`` are real; this returns the latter).
        """
        n = int(n_samples)
        if self.family == "whisper":
            return -(-n // (2 * self.preprocessing["hop_length"]))
        if self.family == "generic" and not hasattr(self.config, "conv_kernel"):
            with torch.inference_mode():
                p = next(self.parameters())
                out = self.forward(torch.zeros(1, n, device=p.device),
                                   output_hidden_states=False)
            return int(out.last_hidden_state.shape[1])
        for kernel, stride in zip(self.config.conv_kernel, self.config.conv_stride):
            n = (n - kernel) // stride + 1
        if n < 1:
            need = 1
            for kernel, stride in reversed(list(zip(self.config.conv_kernel,
                                                    self.config.conv_stride))):
                need = (need - 1) * stride + kernel
            raise ValueError(
                f"A window of {n_samples} samples is too short for {self.name_or_path!r}: its "
                f"convolutional front-end needs at least {need} samples "
                f"({need / SAMPLE_RATE * 1000:g} ms at 16 kHz).")
        return n

    # -- preprocessing ------------------------------------------------------------------
    def _as_waveforms(self, waveforms):
        p = next(self.parameters())
        x = torch.as_tensor(waveforms)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2:
            raise ValueError(f"waveforms must be (batch, n_samples), got shape "
                             f"{tuple(x.shape)}")
        return x.to(device=p.device, dtype=torch.float32)

    def _normalize(self, x):
        if not self.preprocessing["do_normalize"]:
            return x
        # same formula as Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm, in torch; the
        # variance from the centred samples (needed anyway) took a third of the time of
        # Tensor.var (whose own pass was ~15% of a small model's forward pass on the CPU)
        centred = x - x.mean(dim=1, keepdim=True)
        var = (centred * centred).mean(dim=1, keepdim=True)
        return centred.mul_(torch.rsqrt(var + 1e-7))

    def log_mel(self, waveforms):
        """Whisper's log-mel spectrogram in torch (matches ``WhisperFeatureExtractor``).

        Parameters
        ----------
        waveforms : torch.Tensor of shape (batch, n_samples)
            Already padded audio.

        Returns
        -------
        log_mel : torch.Tensor of shape (batch, n_mels, n_samples // hop_length)
        """
        prep = self.preprocessing
        stft = torch.stft(waveforms, prep["n_fft"], prep["hop_length"],
                          window=self._stft_window, return_complex=True)
        power = (stft[..., :-1].abs() ** 2).contiguous()
        mel = self._mel_filters.T @ power
        log_spec = torch.clamp(mel, min=1e-10).log10()
        peak = log_spec.amax(dim=(1, 2), keepdim=True)
        log_spec = torch.maximum(log_spec, peak - 8.0)
        return (log_spec + 4.0) / 4.0

    def _prepare(self, waveforms):
        """Waveforms -> (model input, frame_mask)."""
        x = self._normalize(self._as_waveforms(waveforms))
        batch, n = x.shape
        if self.family != "whisper":
            if self.family == "generic":
                return x, None
            frames = self.frame_count(n)
            return x, torch.ones(batch, frames, dtype=torch.bool, device=x.device)
        limit = self.max_samples
        if n > limit:
            raise ValueError(
                f"Whisper takes at most {limit / SAMPLE_RATE:g} s of audio per window; got "
                f"{n / SAMPLE_RATE:g} s. Use shorter windows (e.g. window=16.0).")
        step = 2 * self.preprocessing["hop_length"]
        target = limit if self.whisper_input == "pad" else -(-n // step) * step
        if target > n:
            x = torch.nn.functional.pad(x, (0, target - n),
                                        value=self.preprocessing["padding_value"])
        real = self.frame_count(n)
        mask = torch.arange(target // step, device=x.device) < real
        return self.log_mel(x), mask[None].expand(batch, -1)

    # -- network pieces -----------------------------------------------------------------
    def _model_dtype(self):
        return next(self.parameters()).dtype

    def _embed(self, inputs):
        """Model input -> hidden_states[0]."""
        inputs = inputs.to(self._model_dtype())
        if self.family == "whisper":
            enc = self.encoder
            h = nn.functional.gelu(enc.conv1(inputs))
            h = nn.functional.gelu(enc.conv2(h)).permute(0, 2, 1)
            positions = enc.embed_positions.weight[: h.shape[1]]
            h = h + positions
            return nn.functional.dropout(h, p=enc.dropout, training=self.training)
        model = self.encoder
        feats = model.feature_extractor(inputs).transpose(1, 2)
        h = model.feature_projection(feats)
        if isinstance(h, tuple):  # wav2vec2 and WavLM also return the normed CNN features
            h = h[0]
        enc = model.encoder
        h = h + enc.pos_conv_embed(h)
        if not self._stable_layer_norm:
            h = enc.layer_norm(h)
        return enc.dropout(h)

    @property
    def _layers(self):
        return self.encoder.layers if self.family == "whisper" else self.encoder.encoder.layers

    def _wavlm_position_bias(self, h):
        attention = self._layers[0].attention
        batch, frames = h.shape[:2]
        bias = attention.compute_bias(frames, frames)
        return bias.unsqueeze(0).repeat(batch, 1, 1, 1).view(
            batch * attention.num_heads, frames, frames)

    def _run_layers(self, h, start, stop):
        """Blocks ``start..stop-1``; yields the output after each block."""
        layers = self._layers
        position_bias = None
        if self.family == "wavlm" and start > 0:
            position_bias = self._wavlm_position_bias(h)
        for i in range(start, stop):
            layer = layers[i]
            if self.family == "whisper":
                h = layer(h, None)
            elif self.family == "wavlm":
                kwargs = {} if self._stable_layer_norm else {"index": i}
                h, position_bias = layer(h, attention_mask=None,
                                         position_bias=position_bias, **kwargs)
            else:
                h = layer(h, attention_mask=None)
            if isinstance(h, tuple):
                h = h[0]
            yield h

    def _final(self, h):
        if self.family == "whisper":
            return self.encoder.layer_norm(h)
        if self._stable_layer_norm:
            return self.encoder.encoder.layer_norm(h)
        return h

    # -- public API ---------------------------------------------------------------------
    def forward(self, waveforms, output_hidden_states=True):
        """Run the encoder on raw audio.

        Parameters
        ----------
        waveforms : torch.Tensor or ndarray of shape (batch, n_samples)
            16 kHz float audio, not normalised (the checkpoint's normalisation is applied).
        output_hidden_states : bool, default=True

        Returns
        -------
        output : BackboneOutput
        """
        if self.family == "generic":
            return self._generic_forward(waveforms, output_hidden_states)
        inputs, mask = self._prepare(waveforms)
        h = self._embed(inputs)
        hidden = [h]
        for h in self._run_layers(h, 0, self.num_hidden_layers):
            hidden.append(h)
        last = self._final(h)
        if self.family == "whisper":
            hidden[-1] = last  # Hugging Face ties Whisper's last hidden state
        return BackboneOutput(last_hidden_state=last,
                              hidden_states=tuple(hidden) if output_hidden_states else None,
                              frame_mask=mask)

    def _generic_forward(self, waveforms, output_hidden_states=True):
        x, _ = self._prepare(waveforms)
        out = self.encoder(x.to(self._model_dtype()), output_hidden_states=True)
        last = out.last_hidden_state
        mask = torch.ones(last.shape[:2], dtype=torch.bool, device=last.device)
        return BackboneOutput(last_hidden_state=last,
                              hidden_states=tuple(out.hidden_states)
                              if output_hidden_states else None,
                              frame_mask=mask)

    def hidden_states_at(self, waveforms, layers):
        """Only the requested ``hidden_states`` entries, stopping after the highest one.

        Parameters
        ----------
        waveforms : torch.Tensor or ndarray of shape (batch, n_samples)
        layers : sequence of int
            Indices into ``hidden_states`` (0 = input embeddings).

        Returns
        -------
        hidden : list of torch.Tensor of shape (batch, n_frames, hidden_size)
            In the order of ``layers``.
        frame_mask : torch.Tensor of shape (batch, n_frames), dtype bool
        """
        layers = [int(k) for k in layers]
        n = self.num_hidden_layers
        if any(not 0 <= k <= n for k in layers):
            raise ValueError(f"layer indices must be in [0, {n}], got {layers}")
        if self.family == "generic":
            out = self.forward(waveforms)
            return [out.hidden_states[k] for k in layers], out.frame_mask
        inputs, mask = self._prepare(waveforms)
        h = self._embed(inputs)
        found = {0: h}
        top = max(layers)
        for i, h in enumerate(self._run_layers(h, 0, top), start=1):
            found[i] = h
        if self.family == "whisper" and top == n:
            found[n] = self._final(found[n])
        return [found[k] for k in layers], mask

    def hidden_at(self, waveforms, layer):
        """``hidden_states[layer]`` and the frame mask, running only the blocks below it.

        Parameters
        ----------
        waveforms : torch.Tensor or ndarray of shape (batch, n_samples)
        layer : int
            Index into ``hidden_states`` (0 = input embeddings).

        Returns
        -------
        hidden : torch.Tensor of shape (batch, n_frames, hidden_size)
        frame_mask : torch.Tensor of shape (batch, n_frames), dtype bool
        """
        (hidden,), mask = self.hidden_states_at(waveforms, [layer])
        return hidden, mask

    def forward_from(self, hidden, layer, frame_mask=None):
        """Run the blocks above ``hidden_states[layer]`` (with gradients).

        Both ``forward_from(hidden, layer, frame_mask)`` and
        ``forward_from(*hidden_at(x, layer), layer)`` (mask second) are accepted.

        Parameters
        ----------
        hidden : torch.Tensor of shape (batch, n_frames, hidden_size)
            ``hidden_states[layer]``, e.g. from :meth:`hidden_at`.
        layer : int
        frame_mask : torch.Tensor of shape (batch, n_frames), optional
            Accepted for symmetry with :meth:`hidden_at`; the encoders attend to all frames.

        Returns
        -------
        last_hidden_state : torch.Tensor of shape (batch, n_frames, hidden_size)
        """
        n = self.num_hidden_layers
        if torch.is_tensor(layer) and layer.ndim > 0:
            # called as forward_from(*hidden_at(x, k), k): (hidden, frame_mask, layer)
            layer, frame_mask = frame_mask, layer
        layer = int(layer)
        if not 0 <= layer <= n:
            raise ValueError(f"layer must be in [0, {n}], got {layer}")
        if self.family == "generic":
            raise NotImplementedError(
                "forward_from is only available for the wav2vec2, hubert, wavlm and whisper "
                "families; this model is handled through its generic Hugging Face forward.")
        if self.family == "whisper" and layer == n:
            return hidden  # hidden_states[n] is already layer-normed (Hugging Face's tie)
        h = hidden.to(self._model_dtype())
        for h in self._run_layers(h, layer, n):
            pass
        return self._final(h)

    def freeze_feature_encoder(self):
        """Stop gradients into the convolutional front-end.

        The CNN feature encoder of wav2vec2/HuBERT/WavLM; Whisper's conv1 and conv2.

        Returns
        -------
        self : AudioBackbone
        """
        if self.family == "whisper":
            modules = [self.encoder.conv1, self.encoder.conv2]
        elif hasattr(self.encoder, "feature_extractor"):
            modules = [self.encoder.feature_extractor]
        elif hasattr(self.encoder, "freeze_feature_encoder"):
            self.encoder.freeze_feature_encoder()
            return self
        else:
            raise NotImplementedError(
                f"Do not know the feature encoder of {type(self.encoder).__name__}.")
        for module in modules:
            for param in module.parameters():
                param.requires_grad_(False)
        return self

    # -- persistence --------------------------------------------------------------------
    def fingerprint(self):
        """Hash of the family, config, preprocessing and weights.

        Returns
        -------
        fingerprint : str
            Hex digest; changes whenever any weight changes.
        """
        h = new_hasher("blake2b", 16)
        h.update(self.family.encode())
        # where the weights were read from does not change what the model computes
        config = {k: v for k, v in self.config.to_dict().items() if k not in _VOLATILE_CONFIG}
        update_json(h, config, default=str)
        prep = {k: v for k, v in self.preprocessing.items()
                if k not in ("mel_filters", "source")}
        update_json(h, prep, default=str)
        if "mel_filters" in self.preprocessing:
            update_array(h, self.preprocessing["mel_filters"], header=None)
        for name, tensor in sorted(self.encoder.state_dict().items()):
            h.update(name.encode())
            t = tensor.detach().to("cpu").contiguous().reshape(-1)
            h.update(str(t.dtype).encode())
            h.update(t.view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    def save_pretrained(self, directory):
        """Write the model so that Hugging Face tools and :func:`load_backbone` load it.

        Writes ``config.json``, the weights and ``preprocessor_config.json``. Whisper: a full
        ``WhisperModel`` (or ``WhisperForConditionalGeneration`` when the source was one)
        whose encoder holds this backbone's weights; the decoder comes from the source
        checkpoint when it can be loaded, else it is randomly initialised (with a warning).

        Parameters
        ----------
        directory : str or os.PathLike

        Returns
        -------
        directory : str
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu") for k, v in self.encoder.state_dict().items()}
        with quiet_transformers():
            if self.family == "whisper":
                full = self._full_whisper_model()
                full.get_encoder().load_state_dict(state)
                full.save_pretrained(directory)
            else:
                self.encoder.save_pretrained(directory)
        fe = dict(self.preprocessing["feature_extractor"])
        with open(directory / "preprocessor_config.json", "w") as f:
            json.dump(fe, f, indent=2, sort_keys=True, default=_json_default)
        return str(directory)

    def _full_whisper_model(self):
        import transformers

        archs = getattr(self.config, "architectures", None) or []
        cls = (transformers.WhisperForConditionalGeneration
               if "WhisperForConditionalGeneration" in archs else transformers.WhisperModel)
        try:
            return cls.from_pretrained(self.name_or_path, config=self.config)
        except (OSError, ValueError):
            warnings.warn(
                f"Source checkpoint {self.name_or_path!r} is not available; the saved "
                "Whisper model's decoder is randomly initialised (the encoder holds the "
                "backbone's weights).", UserWarning, stacklevel=3)
            return cls(copy.deepcopy(self.config))

    def __getstate__(self):
        # wav2vec2's weight-norm parametrisation does not pickle: store config + weights
        return {
            "config": self.config,
            "encoder_class": type(self.encoder),
            "state_dict": {k: v.detach().to("cpu")
                           for k, v in self.encoder.state_dict().items()},
            "frozen": [n for n, p in self.encoder.named_parameters()
                       if not p.requires_grad],
            "family": self.family,
            "name_or_path": self.name_or_path,
            "preprocessing": self.preprocessing,
            "whisper_input": self.whisper_input,
            "training": self.training,
        }

    def __setstate__(self, state):
        with quiet_transformers():
            encoder = state["encoder_class"](state["config"])
        encoder.load_state_dict(state["state_dict"])
        frozen = set(state["frozen"])
        for name, param in encoder.named_parameters():
            param.requires_grad_(name not in frozen)
        self.__init__(encoder, family=state["family"], name_or_path=state["name_or_path"],
                      preprocessing=state["preprocessing"],
                      whisper_input=state["whisper_input"])
        self.train(state["training"])


def _json_default(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)

