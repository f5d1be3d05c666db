"""A self-supervised speech encoder pretrained here: BEST-RQ on a Whisper-architecture encoder.

The paper's semantic gains from brain-tuning are for self-supervised speech models (wav2vec2,
HuBERT), trained without transcripts. No such checkpoint ships offline, so this module pretrains
one on the built-in story library's speech (the validation and test stories excluded):

- the model is a randomly initialised Whisper-architecture encoder (transformers'
  ``WhisperModel``; 4 blocks of width 256 by default, 3.5 M encoder parameters) over 80-bin
  log-mel frames, so it loads through :func:`sk_braintune.models.load_backbone` like any
  Whisper checkpoint;
- the main objective is BEST-RQ (Chiu et al., 2022): a frozen random projection and a frozen
  random codebook quantise the normalised log-mel frames of each encoder frame (20 ms) into
  discrete targets; spans of input frames (about 40%) are replaced by noise, and a linear
  softmax head on the last layer predicts the codes of the masked frames (cross-entropy);
- a second, window-summary objective (revision 2) makes the hidden states of layer 2 carry
  *when* in the window each sound was: a linear head maps each frame's state to the frame's
  own log-mel placed in the slot of its quarter of the crop (zeros in the other three slots),
  so that the mean of these states over a window, which is how
  :class:`sk_braintune.SpeechFeatureExtractor` reads every model, holds the window's log-mel
  timeline (quarter by quarter) rather than only its average. Whisper's encoder carries this
  timing (it is trained to emit timestamps); masked prediction alone does not need it.

Nothing in either objective knows words. Why the second objective: on the simulated auditory
voxels (HRF-convolved log mel band envelopes) the revision-1 model (BEST-RQ alone, 600 steps)
reached 0.68 against Whisper tiny.en's 0.85 (noise-ceiling-normalised r, best layer, 63
training minutes). Model-free baselines measured in one run on 25 training minutes show why:
Whisper tiny.en 0.82 (layer 1), the window's mean-pooled log-mel 0.50, the same log-mel
mean-pooled in 4 consecutive chunks 0.84 (8 chunks 0.82), the simulator's own band envelopes
mean-pooled 0.50 and in 8 chunks 0.83. The gap was the timing inside the window, lost by
mean-pooling position-free features, not the acoustic detail of the frames.

The default recipe (:data:`SSL_RECIPE`) ships pretrained as package data
(``sk_braintune/data/ssl_model``: the encoder in float16, 6.5 MB, made by
``benchmarks/pretrain_ssl.py``): :func:`load_ssl_speech_model` unpacks it into a whole
``WhisperModel`` directory under ``cache_dir("models", "ssl")`` in about a second, with no
pretraining and no speech synthesis. Other recipes and seeds are pretrained at first use and
cached, keyed by the recipe and the training texts; :func:`pretrain_ssl_speech_model` runs the
recipe on any waveforms.

Measured (``benchmarks/ssl_alignment.py``; ridge on 63 training minutes of the library dataset,
held-out story, noise-ceiling-normalised r by layer 0-4), the packaged model against Whisper
tiny.en in the same run: auditory voxels 0.53 0.87 0.87 0.85 0.84 (Whisper 0.57 0.85 0.84 0.82
0.81); semantic voxels 0.36 0.31 0.30 0.29 0.31 (Whisper 0.37 0.40 0.41 0.43 0.51); phone probe
accuracy 0.974 0.972 0.970 0.963 0.956 (Whisper 0.979 0.990 0.989 0.985 0.966).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from .._hashing import digest_file, digest_json
from .._utils import cache_dir as _cache_root

__all__ = ["SSL_RECIPE", "load_ssl_speech_model", "package_ssl_model", "packaged_ssl_model",
           "pretrain_ssl_speech_model", "unpack_ssl_model"]

logger = logging.getLogger(__name__)

#: Bump when the recipe's code changes, so that stale cached models are rebuilt.
SSL_REVISION = 2
MARKER_FILE = "sk_braintune_ssl.json"
#: The packaged model (package data): float16 encoder weights and their record.
PACKAGED_DIR = Path(__file__).resolve().parent.parent / "data" / "ssl_model"
PACKAGED_WEIGHTS = "encoder.safetensors"
PACKAGED_RECORD = "ssl_model.json"
_SAMPLE_RATE = 16000
_HOP = 160  # log-mel hop (10 ms); two mel frames per encoder frame

#: The default recipe of :func:`load_ssl_speech_model` (keyword arguments of
#: :func:`pretrain_ssl_speech_model`).
SSL_RECIPE = dict(
    encoder_layers=4, d_model=256, attention_heads=4, ffn_dim=1024, crop_seconds=8.0,
    batch_size=8, n_steps=900, learning_rate=1e-3, warmup_steps=60, weight_decay=0.01,
    mask_probability=0.05, mask_span=10, codebook_size=1024, codebook_dim=16,
    summary_weight=1.0, summary_chunks=4, summary_layer=2, summary_target="input",
    summary_readout="frames",
)


def _whisper_config(encoder_layers, d_model, attention_heads, ffn_dim, max_source_positions):
    from transformers import WhisperConfig

    # A one-block, 64-token decoder: only the encoder is ever used, but the Whisper loaders
    # expect a whole WhisperModel.
    return WhisperConfig(
        vocab_size=64, num_mel_bins=80, d_model=d_model, encoder_layers=encoder_layers,
        encoder_attention_heads=attention_heads, encoder_ffn_dim=ffn_dim, decoder_layers=1,
        decoder_attention_heads=attention_heads, decoder_ffn_dim=ffn_dim,
        max_source_positions=max_source_positions, max_target_positions=64, dropout=0.0,
        attention_dropout=0.0, activation_dropout=0.0, encoder_layerdrop=0.0,
        decoder_layerdrop=0.0, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        decoder_start_token_id=3, suppress_tokens=None, begin_suppress_tokens=None)


def _save_preprocessor(directory):
    from transformers import WhisperFeatureExtractor

    from ..models.backbone import quiet_transformers

    with quiet_transformers():
        WhisperFeatureExtractor(feature_size=80, sampling_rate=_SAMPLE_RATE, hop_length=_HOP,
                                chunk_length=30, n_fft=400, padding_value=0.0,
                                return_attention_mask=False).save_pretrained(directory)


def _save_whisper_model(encoder_state, directory, recipe, *, crop_frames=None):
    """Save a whole ``WhisperModel`` whose encoder holds ``encoder_state``.

    The unused one-block decoder and the sinusoidal position table are initialised with
    ``torch.manual_seed(recipe["random_state"])``, so they are the same at every call:
    ``encoder_state`` may lack ``embed_positions.weight`` (the packaged model), or hold the
    first ``crop_frames`` rows of the table (the training encoder), which are checked.
    """
    import torch
    from transformers import WhisperModel

    from ..models.backbone import quiet_transformers

    with quiet_transformers():
        torch_state = torch.random.get_rng_state()
        try:
            torch.manual_seed(recipe["random_state"])
            full = WhisperModel(_whisper_config(
                recipe["encoder_layers"], recipe["d_model"], recipe["attention_heads"],
                recipe["ffn_dim"], recipe["max_source_positions"]))
        finally:
            torch.random.set_rng_state(torch_state)
        state = dict(encoder_state)
        table = full.encoder.embed_positions.weight.detach()
        if "embed_positions.weight" in state:
            given = state["embed_positions.weight"]
            if not torch.allclose(table[:given.shape[0]], given.float(), atol=1e-6):
                raise RuntimeError("the sinusoidal position tables of the training and the "
                                   "saved encoders disagree")
        state["embed_positions.weight"] = table.clone()
        state = {k: v.float() for k, v in state.items()}
        full.encoder.load_state_dict(state, strict=True)  # every encoder weight given
        full.eval()
        full.save_pretrained(directory)


def _check_waveforms(waveforms, crop_samples):
    if isinstance(waveforms, dict):
        waveforms = list(waveforms.values())
    out = []
    for i, w in enumerate(waveforms):
        w = np.asarray(w, dtype=np.float32)
        if w.ndim != 1:
            raise ValueError(f"waveform {i} must be mono 1-D 16 kHz audio, got shape {w.shape}")
        if w.size >= crop_samples:
            out.append(w)
    if not out:
        raise ValueError(f"no waveform is at least one crop long ({crop_samples} samples); "
                         "pass longer audio or a shorter crop_seconds")
    return out


def _crop_plan(lengths, crop_samples, n_crops, rng):
    """(waveform index, start sample) of ``n_crops`` crops, drawn proportionally to length."""
    usable = np.asarray(lengths) - crop_samples + 1
    which = rng.choice(len(lengths), size=n_crops, p=usable / usable.sum())
    starts = (rng.random(n_crops) * usable[which]).astype(np.int64)
    return which, starts


def _span_mask(rng, batch, n_frames, probability, span):
    """Boolean (batch, n_frames): spans of ``span`` frames starting with ``probability``."""
    starts = rng.random((batch, n_frames)) < probability
    mask = np.zeros((batch, n_frames + span), dtype=bool)
    for offset in range(span):
        mask[:, offset:offset + n_frames] |= starts
    mask = mask[:, :n_frames]
    mask[~mask.any(axis=1), rng.integers(n_frames)] = True  # at least one target per crop
    return mask


class _BestRQ:
    """The frozen BEST-RQ quantiser and the masking of the log-mel input."""

    def __init__(self, feature_mean, feature_std, codebook_size, codebook_dim, generator):
        import torch

        self.mean, self.std = feature_mean, feature_std
        n_in = feature_mean.numel()
        projection = torch.empty(n_in, codebook_dim)
        torch.nn.init.xavier_uniform_(projection, generator=generator)
        self.projection = projection
        codebook = torch.randn(codebook_size, codebook_dim, generator=generator)
        self.codebook = torch.nn.functional.normalize(codebook, dim=1)

    @staticmethod
    def stacked(mel):
        """(batch, 80, 2T) log-mel -> (batch, T, 160): the two mel frames of each frame."""
        batch, n_mels, n = mel.shape
        return mel[:, :, : n - n % 2].transpose(1, 2).reshape(batch, n // 2, 2 * n_mels)

    def targets(self, mel):
        import torch

        stacked = (self.stacked(mel) - self.mean) / self.std
        projected = torch.nn.functional.normalize(stacked @ self.projection, dim=-1)
        return (projected @ self.codebook.T).argmax(dim=-1)  # nearest unit codeword


def _chunk_means(mel, n_chunks):
    """(batch, 80, n) log-mel -> (batch, n_chunks * 80): its means over consecutive chunks."""
    batch, n_mels, n = mel.shape
    usable = n - n % n_chunks
    return mel[:, :, :usable].reshape(batch, n_mels, n_chunks, -1).mean(dim=3).transpose(
        1, 2).reshape(batch, n_chunks * n_mels)


def _slotted_frames(mel, n_chunks, mean=0.0, std=1.0):
    """(batch, 80, 2T) log-mel -> (batch, T, n_chunks * 80).

    Each encoder frame's log-mel (the mean of its two mel frames, standardised with ``mean``
    and ``std`` of shape (80,)) placed in the slot of its chunk of the crop, zeros in the other
    slots: frame-wise targets whose mean over the crop is the crop's standardised chunk means
    divided by ``n_chunks``.
    """
    import torch

    batch, n_mels, n = mel.shape
    frames = mel[:, :, : n - n % 2].reshape(batch, n_mels, n // 2, 2).mean(dim=3)
    frames = (frames.transpose(1, 2) - mean) / std  # (batch, T, 80)
    n_frames = frames.shape[1]
    slot = torch.arange(n_frames) * n_chunks // n_frames
    out = torch.zeros(batch, n_frames, n_chunks, n_mels, dtype=frames.dtype)
    out[:, torch.arange(n_frames), slot] = frames
    return out.reshape(batch, n_frames, n_chunks * n_mels)


def _masked_input(mel, mask, noise):
    """The encoder's input: the two mel frames of each masked encoder frame become noise."""
    import torch

    return torch.where(mask.repeat_interleave(2, dim=1)[:, None, :], noise, mel)


def _loss(encoder, head, mel, mask, targets, noise, summary=None):
    """Masked-prediction cross-entropy and, with ``summary``, the window-summary error.

    ``summary`` is ``(summary_head, layer, target, of_input, pooled)``: through the linear
    ``summary_head``, the hidden states of ``layer`` (averaged over the crop's frames when
    ``pooled``) must predict ``target(log_mel)``, where ``log_mel`` is the masked input the
    encoder saw (``of_input``) or the clean crop.
    """
    import torch

    masked = _masked_input(mel, mask, noise)
    out = encoder(input_features=masked, output_hidden_states=summary is not None)
    hidden = out.last_hidden_state
    logits = head(hidden[mask])
    masked_loss = torch.nn.functional.cross_entropy(logits, targets[mask])
    if summary is None:
        return masked_loss, None
    summary_head, layer, target, of_input, pooled = summary
    states = hidden if layer == -1 else out.hidden_states[layer]
    if pooled:
        states = states.mean(dim=1)
    return masked_loss, torch.nn.functional.mse_loss(summary_head(states),
                                                     target(masked if of_input else mel))


def pretrain_ssl_speech_model(waveforms, directory, *, encoder_layers=4, d_model=256,
                              attention_heads=4, ffn_dim=1024, crop_seconds=8.0, batch_size=8,
                              n_steps=900, learning_rate=1e-3, warmup_steps=60,
                              weight_decay=0.01, mask_probability=0.05, mask_span=10,
                              codebook_size=1024, codebook_dim=16, summary_weight=1.0,
                              summary_chunks=4, summary_layer=2, summary_target="input",
                              summary_readout="frames", max_source_positions=1500,
                              random_state=0, verbose=False):
    """Pretrain a Whisper-architecture speech encoder with BEST-RQ (and a window summary).

    Parameters
    ----------
    waveforms : sequence of ndarray of shape (n_samples,), or dict of str to ndarray
        Mono 16 kHz float training audio (e.g. the training stories); waveforms shorter than
        one crop are skipped.
    directory : str or os.PathLike
        Output folder (created): a ``WhisperModel`` (its one-block decoder is unused),
        ``preprocessor_config.json`` and ``sk_braintune_ssl.json`` (recipe, losses, timing).
    encoder_layers, d_model, attention_heads, ffn_dim : int
        Size of the encoder (4 blocks of width 256, 4 heads, FFN 1024 by default; 3.5 M
        encoder parameters, a 19 MB directory with the unused one-block decoder).
    crop_seconds : float, default=8.0
        Length of the random training crops.
    batch_size : int, default=8
        Crops per step.
    n_steps : int, default=900
        Optimiser steps (900 x 8 x 8 s is about 4.6 passes over the library's 3.4 hours of
        training speech).
    learning_rate : float, default=1e-3
        Peak AdamW learning rate, reached after ``warmup_steps`` linear steps, then decayed
        linearly to zero.
    warmup_steps : int, default=60
        Linear warm-up steps of the learning rate.
    weight_decay : float, default=0.01
        AdamW weight decay.
    mask_probability : float, default=0.05
        Probability that a masked span starts at an encoder frame.
    mask_span : int, default=10
        Span length in encoder frames (200 ms). With 0.05 and 10, about 40% of frames are
        masked.
    codebook_size, codebook_dim : int, default=1024, 16
        The random codebook of the quantiser.
    summary_weight : float, default=1.0
        Weight of the window-summary objective (mean squared error, added to the
        cross-entropy); 0 turns it off (the revision-1 recipe).
    summary_chunks : int, default=4
        Consecutive chunks of the crop whose timeline the summary keeps (2 s each for 8 s
        crops).
    summary_layer : int, default=2
        Hidden state read by the summary head: an index into ``hidden_states`` (0 = the input
        embedding, ``encoder_layers`` = the output), or -1 for the output.
    summary_target : {"input", "clean"}, default="input"
        Summarise the masked input the encoder sees, or the clean crop (whose masked spans the
        encoder cannot see).
    summary_readout : {"frames", "pooled"}, default="frames"
        ``"frames"``: each frame's state predicts its own standardised log-mel in its chunk's
        slot of ``summary_chunks * 80`` outputs (zeros elsewhere), so the linear head applied
        to the mean state predicts the chunk means; a per-frame signal that trains in a few
        hundred steps. ``"pooled"``: the mean state predicts the standardised chunk means
        directly (one gradient for all frames; measured to learn far slower).
    max_source_positions : int, default=1500
        Length of the saved model's sinusoidal position table in frames (1500: windows up to
        30 s, as Whisper); training uses ``crop_seconds`` windows.
    random_state : int, default=0
        Seeds the initial weights, the quantiser, the crops and the masks.
    verbose : bool, default=False
        Show a progress bar.

    Returns
    -------
    history : dict
        ``losses`` (masked-prediction cross-entropy per step), ``summary_losses`` (the
        summary error per step; empty when off), ``fixed_batch_loss`` and
        ``fixed_batch_summary_loss`` (``before`` and ``after``: the same losses on one fixed
        batch of crops and masks), ``mask_fraction``, ``seconds``, ``seconds_per_step``,
        ``n_parameters`` and the ``recipe``. The same record is written to
        ``sk_braintune_ssl.json``.
    """
    started = time.perf_counter()
    recipe = dict(encoder_layers=encoder_layers, d_model=d_model,
                  attention_heads=attention_heads, ffn_dim=ffn_dim, crop_seconds=crop_seconds,
                  batch_size=batch_size, n_steps=n_steps, learning_rate=learning_rate,
                  warmup_steps=warmup_steps, weight_decay=weight_decay,
                  mask_probability=mask_probability, mask_span=mask_span,
                  codebook_size=codebook_size, codebook_dim=codebook_dim,
                  summary_weight=summary_weight, summary_chunks=summary_chunks,
                  summary_layer=summary_layer, summary_target=summary_target,
                  summary_readout=summary_readout,
                  max_source_positions=max_source_positions,
                  random_state=random_state)
    crop_frames = _check_recipe(recipe)
    run = _PretrainingRun(waveforms, directory, recipe, crop_frames, verbose=verbose,
                          started=started)
    return run.fit()


def _check_recipe(recipe):
    """Validate a recipe; its crop length in encoder frames."""
    crop_seconds, mask_span = recipe["crop_seconds"], recipe["mask_span"]
    crop_frames = int(round(crop_seconds * _SAMPLE_RATE / (2 * _HOP)))
    if crop_frames < 2 * mask_span:
        raise ValueError(f"crop_seconds={crop_seconds} gives {crop_frames} frames; need at "
                         f"least {2 * mask_span} (two mask spans)")
    if crop_frames > recipe["max_source_positions"]:
        raise ValueError(f"crops of {crop_seconds} s exceed max_source_positions="
                         f"{recipe['max_source_positions']} frames")
    layer, n_layers = recipe["summary_layer"], recipe["encoder_layers"]
    if not -1 <= layer <= n_layers:
        raise ValueError(f"summary_layer must be -1 (the output) or a hidden-state index 0.."
                         f"{n_layers}, got {layer}")
    if recipe["summary_readout"] not in ("pooled", "frames"):
        raise ValueError(f"summary_readout must be 'pooled' or 'frames', got "
                         f"{recipe['summary_readout']!r}")
    if recipe["summary_target"] not in ("input", "clean"):
        raise ValueError(f"summary_target must be 'input' or 'clean', got "
                         f"{recipe['summary_target']!r}")
    chunks = recipe["summary_chunks"]
    if recipe["summary_weight"] < 0 or not 1 <= chunks <= 2 * crop_frames:
        raise ValueError(f"need summary_weight >= 0 and 1 <= summary_chunks <= "
                         f"{2 * crop_frames}, got {recipe['summary_weight']} and {chunks}")
    return crop_frames


class _PretrainingRun:
    """One run of :func:`pretrain_ssl_speech_model`: its steps and the state they share.

    :meth:`fit` runs the steps in order: build the networks, fit the normalisation statistics
    (quantiser and summary targets), fix the monitoring batch, make the optimiser, train, save.
    The random streams are the recipe's: the torch seed makes the initial weights, a torch
    generator the quantiser, and NumPy generators the crops and masks (``[seed, 1]`` the
    quantiser's statistics, ``[seed, 3]`` the summary statistics' masks, ``[seed, 2]`` the
    fixed batch, ``seed`` the training batches).
    """

    def __init__(self, waveforms, directory, recipe, crop_frames, *, verbose=False,
                 started=None):
        import torch

        self.recipe, self.verbose = recipe, verbose
        self.started = time.perf_counter() if started is None else started
        self.crop_frames = crop_frames
        self.crop_samples = crop_frames * 2 * _HOP
        self.waveforms = _check_waveforms(waveforms, self.crop_samples)
        self.lengths = [w.size for w in self.waveforms]
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        seed = recipe["random_state"]
        self.generator = torch.Generator().manual_seed(seed)
        self.rng = np.random.default_rng(seed)

    def fit(self):
        """Run every step; the training record (also written to ``sk_braintune_ssl.json``)."""
        self.build_networks()
        self.fit_statistics()
        self.fix_batch()
        self.make_optimizer()
        before = self.fixed_loss()
        losses = self.train()
        after = self.fixed_loss()
        self.encoder.eval()
        return self.save(losses, before, after)

    # -- the networks and the data -------------------------------------------------------------
    def build_networks(self):
        """Seeded encoder and heads, the preprocessor file, and the log-mel front end."""
        import torch
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        from ..models.backbone import AudioBackbone, load_preprocessing, quiet_transformers

        r = self.recipe
        with quiet_transformers():
            torch_state = torch.random.get_rng_state()
            try:
                torch.manual_seed(r["random_state"])
                # trained as an encoder of exactly one crop (Hugging Face's encoder insists on
                # 2 * max_source_positions mel frames); the saved model gets the longer table,
                # whose first rows are the same sinusoids
                self.encoder = WhisperEncoder(_whisper_config(
                    r["encoder_layers"], r["d_model"], r["attention_heads"], r["ffn_dim"],
                    self.crop_frames))
                self.head = torch.nn.Linear(r["d_model"], r["codebook_size"])
                self.summary_head = torch.nn.Linear(r["d_model"], r["summary_chunks"] * 80)
            finally:
                torch.random.set_rng_state(torch_state)
        _save_preprocessor(self.directory)
        config = self.encoder.config
        self.mel_maker = AudioBackbone(
            self.encoder, family="whisper", name_or_path=str(self.directory),
            preprocessing=load_preprocessing(str(self.directory), "whisper", config))

    def crops(self, n, rng):
        """Log-mel of ``n`` random crops, drawn with ``rng``: (n, 80, 2 * crop_frames)."""
        import torch

        which, starts = _crop_plan(self.lengths, self.crop_samples, n, rng)
        crops = np.stack([self.waveforms[i][s:s + self.crop_samples]
                          for i, s in zip(which, starts)])
        with torch.no_grad():
            return self.mel_maker.log_mel(torch.from_numpy(crops))

    def masks_and_noise(self, n, rng):
        """Span masks (n, crop_frames) and the noise that replaces masked input frames."""
        import torch

        r = self.recipe
        mask = torch.from_numpy(_span_mask(rng, n, self.crop_frames, r["mask_probability"],
                                           r["mask_span"]))
        noise = torch.from_numpy(rng.standard_normal((n, 80, 2 * self.crop_frames)).astype(
            np.float32) * np.float32(0.1))
        return mask, noise

    # -- normalisation statistics --------------------------------------------------------------
    def fit_statistics(self):
        """The quantiser (on 64 crops' statistics) and the summary targets' standardisation."""
        import torch

        r, seed = self.recipe, self.recipe["random_state"]
        with torch.no_grad():
            statistics_mel = self.crops(64, np.random.default_rng([seed, 1]))
            stacked = _BestRQ.stacked(statistics_mel)
            flat = stacked.reshape(-1, stacked.shape[-1])
            self.mean, self.std = flat.mean(0), flat.std(0).clamp(min=1e-5)
        self.quantiser = _BestRQ(self.mean, self.std, r["codebook_size"], r["codebook_dim"],
                                 self.generator)
        # the same 64 crops, masked like the encoder's input when the summary is of the input
        with torch.no_grad():
            statistics_input = statistics_mel
            if r["summary_target"] == "input":
                statistics_input = _masked_input(statistics_mel, *self.masks_and_noise(
                    64, np.random.default_rng([seed, 3])))
            chunked = _chunk_means(statistics_input, r["summary_chunks"])
            self.summary_mean = chunked.mean(0)
            self.summary_std = chunked.std(0).clamp(min=1e-5)

    def summary_target(self, mel):
        """What the summary head must predict from ``mel`` (see ``summary_readout``)."""
        chunks = self.recipe["summary_chunks"]
        if self.recipe["summary_readout"] == "frames":
            # per-bin standardisation of the frames (the quantiser's statistics); the slots of
            # the other chunks stay 0
            mean, std = self.mean, self.std
            slotted = _slotted_frames(mel, chunks, (mean[:80] + mean[80:]) / 2,
                                      (std[:80] + std[80:]) / 2)
            return slotted * chunks ** 0.5  # the occupied slot: unit variance
        return (_chunk_means(mel, chunks) - self.summary_mean) / self.summary_std

    def summary(self):
        """The ``summary`` argument of :func:`_loss` (None when the objective is off)."""
        r = self.recipe
        if r["summary_weight"] == 0:
            return None
        return (self.summary_head, r["summary_layer"], self.summary_target,
                r["summary_target"] == "input", r["summary_readout"] == "pooled")

    # -- monitoring ------------------------------------------------------------------------------
    def fix_batch(self):
        """One fixed batch of crops, masks and targets, scored before and after training."""
        batch_size, seed = self.recipe["batch_size"], self.recipe["random_state"]
        fixed_rng = np.random.default_rng([seed, 2])
        self.fixed_mel = self.crops(batch_size, fixed_rng)
        self.fixed_mask, self.fixed_noise = self.masks_and_noise(batch_size, fixed_rng)
        self.fixed_targets = self.quantiser.targets(self.fixed_mel)

    def fixed_loss(self):
        """(masked-prediction loss, summary loss or None) on the fixed batch, in eval mode."""
        import torch

        self.encoder.eval()
        with torch.no_grad():
            masked_loss, summary_loss = _loss(self.encoder, self.head, self.fixed_mel,
                                              self.fixed_mask, self.fixed_targets,
                                              self.fixed_noise, self.summary())
        self.encoder.train()
        return float(masked_loss), None if summary_loss is None else float(summary_loss)

    # -- training --------------------------------------------------------------------------------
    def make_optimizer(self):
        """AdamW over the trainable weights, with linear warm-up then linear decay."""
        import torch

        r = self.recipe
        params = list(self.encoder.parameters()) + list(self.head.parameters())
        if r["summary_weight"] > 0:
            params += list(self.summary_head.parameters())
        self.trainable = [p for p in params if p.requires_grad]  # the position table is frozen
        self.optimizer = torch.optim.AdamW(self.trainable, lr=r["learning_rate"],
                                           weight_decay=r["weight_decay"])
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.lr_factor)

    def lr_factor(self, step):
        """Multiplier of the peak learning rate at optimiser step ``step``."""
        n_steps, warmup_steps = self.recipe["n_steps"], self.recipe["warmup_steps"]
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (n_steps - step) / max(1, n_steps - warmup_steps))

    def train(self):
        """The optimiser steps; per-step losses and mask fractions."""
        from tqdm.auto import tqdm

        r = self.recipe
        losses = dict(losses=[], summary_losses=[], masked=[])
        loop_started = time.perf_counter()
        self.encoder.train()
        for _ in tqdm(range(r["n_steps"]), desc="BEST-RQ pretraining",
                      disable=not self.verbose):
            self.step(losses)
        self.loop_seconds = time.perf_counter() - loop_started
        return losses

    def step(self, losses):
        """One optimiser step on a fresh batch of crops and masks."""
        import torch

        mel = self.crops(self.recipe["batch_size"], self.rng)
        mask, noise = self.masks_and_noise(self.recipe["batch_size"], self.rng)
        targets = self.quantiser.targets(mel)
        loss, summary_loss = _loss(self.encoder, self.head, mel, mask, targets, noise,
                                   self.summary())
        losses["losses"].append(loss.item())
        if summary_loss is not None:
            losses["summary_losses"].append(summary_loss.item())
            loss = loss + self.recipe["summary_weight"] * summary_loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.trainable, 1.0)
        self.optimizer.step()
        self.scheduler.step()
        losses["masked"].append(float(mask.float().mean()))

    # -- saving ----------------------------------------------------------------------------------
    def save(self, losses, before, after):
        """Write the whole ``WhisperModel`` and its training record; the record."""
        import torch

        r, directory = self.recipe, self.directory
        # the saved model: a whole WhisperModel whose encoder holds the trained weights
        _save_whisper_model(self.encoder.state_dict(), directory, r,
                            crop_frames=self.crop_frames)
        n_parameters = sum(p.numel() for p in self.encoder.parameters())
        (before, summary_before), (after, summary_after) = before, after
        masked = losses["masked"]
        history = dict(
            recipe=r, revision=SSL_REVISION, objective="BEST-RQ masked prediction",
            losses=losses["losses"], fixed_batch_loss=dict(before=before, after=after),
            summary_losses=losses["summary_losses"],
            fixed_batch_summary_loss=dict(before=summary_before, after=summary_after),
            mask_fraction=float(np.mean(masked)) if masked else None,
            n_training_seconds=float(sum(self.lengths) / _SAMPLE_RATE),
            n_parameters=int(n_parameters),
            seconds=round(time.perf_counter() - self.started, 2),
            seconds_per_step=round(self.loop_seconds / max(r["n_steps"], 1), 4),
            torch_threads=torch.get_num_threads())
        with open(directory / MARKER_FILE, "w", encoding="utf-8") as f:
            json.dump(history, f, indent=1)
        first, last = (losses["losses"][0], losses["losses"][-1]) if losses["losses"] \
            else (float("nan"), float("nan"))
        logger.info("BEST-RQ pretraining: %d steps in %.0f s, loss %.3f -> %.3f", r["n_steps"],
                    history["seconds"], first, last)
        return history


def package_ssl_model(model_directory, output_directory, *, texts_digest=None):
    """Write a pretrained model's encoder as package data (float16, a few MB).

    ``output_directory`` receives ``encoder.safetensors`` (the encoder's weights in float16,
    without the sinusoidal position table, which is rebuilt at load time like the unused
    decoder) and ``ssl_model.json`` (the training record of ``model_directory``, the SHA-256
    of the weights file and ``texts_digest``). :func:`load_ssl_speech_model` turns these
    into a whole ``WhisperModel`` directory (:func:`unpack_ssl_model`).

    Parameters
    ----------
    model_directory : str or os.PathLike
        Output of :func:`pretrain_ssl_speech_model`.
    output_directory : str or os.PathLike
        Created if needed; existing files are replaced.
    texts_digest : str, optional
        What the training speech depends on (``story_speech(...)[1]``), recorded so that a
        packaged model is only used for the training texts it was made from.

    Returns
    -------
    metadata : dict
        The record written to ``ssl_model.json``; ``sha256`` identifies the weights.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import WhisperModel

    from ..models.backbone import quiet_transformers

    history = _read_marker(model_directory)
    if history is None:
        raise FileNotFoundError(f"{model_directory} holds no {MARKER_FILE}: not a model made "
                                "by pretrain_ssl_speech_model")
    with quiet_transformers():
        encoder = WhisperModel.from_pretrained(model_directory).get_encoder()
    state = {k: v.detach().to(torch.float16).contiguous()
             for k, v in encoder.state_dict().items() if k != "embed_positions.weight"}
    output_directory = Path(output_directory)
    output_directory.mkdir(parents=True, exist_ok=True)
    weights = output_directory / PACKAGED_WEIGHTS
    # fixed metadata, sorted keys: the same weights give the same bytes
    save_file(dict(sorted(state.items())), str(weights), metadata={"format": "pt"})
    metadata = dict(history, packaged=True, texts_digest=texts_digest,
                    sha256=_sha256(weights), weights_bytes=weights.stat().st_size,
                    dtype="float16")
    with open(output_directory / PACKAGED_RECORD, "w", encoding="utf-8") as f:
        json.dump(metadata, f, indent=1)
    return metadata


def _sha256(path):
    return digest_file(path, "sha256")


def packaged_ssl_model(directory=None):
    """The record of the packaged SSL model (``ssl_model.json``), or None when absent.

    Parameters
    ----------
    directory : str or os.PathLike, optional
        Folder of :func:`package_ssl_model`'s output; the copy shipped in
        ``sk_braintune/data/ssl_model`` by default.

    Returns
    -------
    metadata : dict or None
        The recipe, revision, training record, ``texts_digest`` and ``sha256`` of the weights.
    """
    directory = PACKAGED_DIR if directory is None else Path(directory)
    record = _read_marker(directory, PACKAGED_RECORD)
    if record is None or not (directory / PACKAGED_WEIGHTS).is_file():
        return None
    return record


def unpack_ssl_model(directory, package_directory=None):
    """Write the packaged encoder as a whole ``WhisperModel`` directory.

    The encoder weights come from ``encoder.safetensors`` (float16, loaded as float32); the
    sinusoidal position table and the unused one-block decoder are rebuilt from the recipe's
    seed, as :func:`pretrain_ssl_speech_model` builds them.

    Parameters
    ----------
    directory : str or os.PathLike
        Output folder (created).
    package_directory : str or os.PathLike, optional
        Output of :func:`package_ssl_model`; the shipped copy by default.

    Returns
    -------
    metadata : dict
        The package's record, also written to ``sk_braintune_ssl.json`` in ``directory``.
    """
    from safetensors.torch import load_file

    package_directory = PACKAGED_DIR if package_directory is None else Path(package_directory)
    metadata = packaged_ssl_model(package_directory)
    if metadata is None:
        raise FileNotFoundError(f"no packaged SSL model in {package_directory}")
    weights = package_directory / PACKAGED_WEIGHTS
    if _sha256(weights) != metadata["sha256"]:
        raise OSError(f"{weights} does not match the SHA-256 recorded in {PACKAGED_RECORD}: "
                      "a damaged install; reinstall sk_braintune")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _save_whisper_model(load_file(str(weights)), directory, metadata["recipe"])
    _save_preprocessor(directory)
    with open(directory / MARKER_FILE, "w", encoding="utf-8") as f:
        json.dump(metadata, f, indent=1)
    return metadata


def _install(target, build):
    """Run ``build(staging)`` in a temporary sibling folder, then rename it to ``target``."""
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=parent))
    try:
        build(staging)
        if _read_marker(target) is not None:
            return  # another process finished first
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)  # an incomplete copy
        os.chmod(staging, 0o755)  # mkdtemp makes it private (0700)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _recipe_key(recipe, texts_digest):
    return digest_json({"recipe": recipe, "texts": texts_digest, "revision": SSL_REVISION},
                       length=16, default=str)


def _read_marker(directory, name=MARKER_FILE):
    try:
        with open(Path(directory) / name, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def load_ssl_speech_model(random_state=0, *, max_words=None, cache_dir=None, packaged=True,
                          verbose=False, **recipe):
    """Path of the self-supervised speech model pretrained on the story library (cached).

    With the default recipe (:data:`SSL_RECIPE`, ``random_state=0``, all words) the model is
    the one shipped in the package: the first call writes it as a whole ``WhisperModel``
    directory (:func:`unpack_ssl_model`, about a second, no pretraining and no speech
    synthesis), later calls return that directory. The package records the recipe, the
    revision and the digest of the training texts it was made from; when any of them differs
    from the current ones (or ``packaged=False``), the model is pretrained instead.

    Any other recipe or seed synthesises the library's training stories (cached, shared with
    ``make_story_dataset(stories="library")``), runs :func:`pretrain_ssl_speech_model` (900
    steps: about 15 minutes of CPU time on one core) and writes the model under a temporary
    name, renamed into place when complete; later calls return the cached directory at once.
    The validation and test stories of the library are never heard in pretraining.

    Measured (``benchmarks/ssl_alignment.py``, ``benchmarks/results/ssl_alignment_library.json``)
    against Whisper tiny.en on the library dataset: see the user guide's section on the
    self-supervised model.

    Parameters
    ----------
    random_state : int, default=0
        Seed of the recipe (weights, quantiser, crops, masks).
    max_words : int, optional
        Pretrain on only the first ``max_words`` words of each story (quick, small models).
    cache_dir : str or path-like, optional
        Parent folder of the cached models; ``sk_braintune._utils.cache_dir("models", "ssl")``
        (below ``$SK_BRAINTUNE_CACHE`` or ``~/.cache/sk_braintune``) by default.
    packaged : bool, default=True
        Use the packaged weights when they are this recipe's (see above); False always
        pretrains (e.g. to check that the recipe reproduces them).
    verbose : bool, default=False
        Show progress bars.
    **recipe
        Overrides of :data:`SSL_RECIPE` (e.g. ``n_steps=300``); they change the cache key.

    Returns
    -------
    path : str
        Directory loadable with :func:`sk_braintune.models.load_backbone`,
        :class:`sk_braintune.SpeechFeatureExtractor` and ``transformers.WhisperModel``.
    """
    from .story import story_speech

    unknown = set(recipe) - set(SSL_RECIPE)
    if unknown:
        raise TypeError(f"unknown recipe settings {sorted(unknown)}; valid: {sorted(SSL_RECIPE)}")
    recipe = {**SSL_RECIPE, **recipe, "random_state": int(random_state)}
    parent = Path(cache_dir) if cache_dir is not None else _cache_root("models", "ssl")
    parent = parent.expanduser().absolute()
    _, digest = story_speech(stories="library", split="train", max_words=max_words,
                             synthesize=False)
    package = packaged_ssl_model() if packaged else None
    if package is not None and _is_packaged_recipe(package, recipe, digest):
        target = parent / f"bestrq-whisper-packaged-{package['sha256'][:16]}"
        if _read_marker(target) is None or not (target / "model.safetensors").is_file():
            _install(target, unpack_ssl_model)
        return str(target)
    target = parent / f"bestrq-whisper-{_recipe_key(recipe, digest)}"
    if _read_marker(target) is not None and (target / "config.json").is_file():
        return str(target)
    speech, _ = story_speech(stories="library", split="train", max_words=max_words,
                             verbose=verbose)

    def build(staging):
        pretrain_ssl_speech_model([s.audio for s in speech.values()], staging,
                                  verbose=verbose, **recipe)

    _install(target, build)
    return str(target)


def _is_packaged_recipe(package, recipe, texts_digest):
    """Whether the packaged model is what ``recipe`` on the current texts would pretrain."""
    if package.get("revision") != SSL_REVISION or package.get("texts_digest") != texts_digest:
        return False
    return all(package["recipe"].get(k) == v for k, v in recipe.items())
