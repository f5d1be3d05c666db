"""Speech-model features per TR: :class:`SpeechFeatureExtractor`.

Each sample is one causal audio window ending at the end of one fMRI volume (see
:mod:`sk_braintune.windows`); the extractor runs a speech model on the windows in batches and
pools each selected layer's frames into one vector per window.
"""

from __future__ import annotations

import copy
import numbers
import os

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted, validate_data

from .._docs import fill_doc
from ..models.pooling import POOLINGS, pool_frames
from ..windows import check_clips, is_audio_windows
from .cache import FeatureCache, hash_arrays, key_of

__all__ = ["SpeechFeatureExtractor", "TopBlockFeatures", "forward_batches", "pooled_features",
           "pooled_layer_features", "extract_layer_features"]

SAMPLE_RATE = 16_000
_DTYPES = ("float32", "float16", "bfloat16")


def _torch_dtype(dtype):
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {_DTYPES} or a torch.dtype, got {dtype!r}")
    return getattr(torch, dtype)


def frame_step_samples(backbone, n_samples):
    """Audio samples per output frame of ``backbone`` (320 for all supported families).

    Parameters
    ----------
    backbone : AudioBackbone
    n_samples : int
        Window length, used for generic models.

    Returns
    -------
    step : float
    """
    if backbone.family == "whisper":
        return float(2 * backbone.preprocessing["hop_length"])
    stride = getattr(backbone.config, "conv_stride", None)
    if stride is not None:
        return float(np.prod(stride))
    return n_samples / backbone.frame_count(n_samples)


def _audio_batch(windows, index):
    """float32 batch of the rows ``index``; variable-length clips right-padded with zeros."""
    if is_audio_windows(windows):
        return np.stack([windows[i] for i in index])
    if isinstance(windows, np.ndarray):
        # a copy: read-only inputs (memmaps) cannot back a torch tensor
        return np.array(windows[index], dtype=np.float32, copy=True)
    lengths = [len(windows[i]) for i in index]
    batch = np.zeros((len(index), max(lengths)), dtype=np.float32)
    for row, i in enumerate(index):
        batch[row, :lengths[row]] = windows[i]
    return batch


def forward_batches(backbone, windows, layers, on_batch, *, batch_size=16, batches=None,
                    load_batch=None, autocast=None, progress=False, description="features",
                    also_eval=()):
    """The package's one batched forward loop: run ``backbone`` on audio, batch by batch.

    Each batch's audio is assembled, moved to the backbone's device and run (eval mode, no
    gradients, inside ``autocast``); ``on_batch(index, hidden, frame_mask)`` then consumes the
    outputs inside the same contexts. :func:`pooled_features` (extraction, probes, preference,
    tuner features), :class:`TopBlockFeatures` (top-tuned copies sharing the lower layers), the
    tuner's head predictions and its frozen-layer cache are such consumers.

    Parameters
    ----------
    backbone : AudioBackbone
        Used on its device and in its dtype; its mode is restored after.
    windows : AudioWindows, ndarray of shape (n_windows, n_samples), or list of 1-D arrays
        The audio; any sized sequence when ``load_batch`` assembles the batches.
    layers : sequence of int or "last_hidden_state"
        ``hidden_states`` indices (0 = input embeddings), or the backbone's
        ``last_hidden_state`` (after the final layer norm of stable-layer-norm models).
    on_batch : callable
        ``on_batch(index, hidden, frame_mask)``: ``index`` (ndarray of int) the batch's rows,
        ``hidden`` a list of tensors (B, F, D) in the order of ``layers``, ``frame_mask`` (B, F)
        bool.
    batch_size : int, default=16
        Rows per batch when ``batches`` is None.
    batches : sequence of array-like of int, optional
        The rows of each batch; consecutive runs of ``batch_size`` rows when None.
    load_batch : callable, optional
        ``load_batch(index) -> ndarray (len(index), n_samples) float32``; by default the rows of
        ``windows`` (clips of a list right-padded with zeros to the batch's longest).
    autocast : callable, optional
        Context-manager factory (e.g. bf16 autocast on CUDA); none when None.
    progress : bool or callable, default=False
        Show a progress bar, or ``progress(iterable, description, total) -> iterable``.
    description : str, default="features"
        Progress bar label.
    also_eval : sequence of torch.nn.Module, default=()
        Other modules ``on_batch`` runs, put in eval mode for the loop (modes restored after).
    """
    import contextlib

    import torch
    from tqdm.auto import tqdm

    use_last_state = isinstance(layers, str)
    if use_last_state and layers != "last_hidden_state":
        raise ValueError(f'layers must be indices or "last_hidden_state", got {layers!r}')
    layers = layers if use_last_state else [int(k) for k in layers]
    n = len(windows)
    if batches is None:
        batches = [np.arange(start, min(start + batch_size, n))
                   for start in range(0, n, batch_size)]
    if load_batch is None:
        def load_batch(index):
            return _audio_batch(windows, index)
    autocast = autocast or contextlib.nullcontext
    if callable(progress):
        batches = progress(batches, description, len(batches))
    else:
        batches = tqdm(batches, desc=description, unit="batch", disable=not progress,
                       leave=False)
    device = next(backbone.parameters()).device
    models = [backbone, *also_eval]
    was_training = [m.training for m in models]
    for m in models:
        m.eval()  # no dropout at extraction, even for a backbone caught mid-training
    try:
        with torch.inference_mode():
            for index in batches:
                index = np.asarray(index)
                x = torch.from_numpy(load_batch(index)).to(device, non_blocking=True)
                with autocast():
                    if use_last_state:
                        output = backbone(x, output_hidden_states=False)
                        hidden, mask = [output.last_hidden_state], output.frame_mask
                    else:
                        hidden, mask = backbone.hidden_states_at(x, layers)
                    on_batch(index, hidden, mask)
    finally:
        for m, mode in zip(models, was_training):
            m.train(mode)


def pooled_features(backbone, windows, layers, pooling="mean", *, batch_size=16, tr=2.0045,
                    progress=False, description="features", batches=None, frame_counts=None,
                    weights_first=False, load_batch=None, autocast=None):
    """Run ``backbone`` on windows in batches and pool the chosen layers.

    Pooling on top of :func:`forward_batches` (the one batched forward loop):
    :class:`SpeechFeatureExtractor`, the story-level protocol
    (:mod:`sk_braintune.features.protocol`), the per-clip features of the probe and the semantic
    preference (:func:`pooled_layer_features`) and :class:`~sk_braintune.BrainTuner`'s
    ``transform`` use it. Other readers of the hidden states are consumers of
    :func:`forward_batches` (e.g. :class:`TopBlockFeatures`, or a tuner's head).

    Parameters
    ----------
    backbone : AudioBackbone
        Used on its device and in its dtype; run in eval mode (its mode is restored after).
    windows : AudioWindows, ndarray of shape (n_windows, n_samples), or list of 1-D arrays
        16 kHz audio. Clips of a list may differ in length: those sharing a batch are
        right-padded with zeros (see ``batches`` and ``frame_counts``).
    layers : sequence of int or "last_hidden_state"
        Indices into ``hidden_states`` (0 = input embeddings), or the backbone's
        ``last_hidden_state`` (after the final layer norm of stable-layer-norm models; what a
        :class:`~sk_braintune.BrainTuner` head sees).
    pooling : {"mean", "last", "last_tr_mean"}, default="mean"
        Over the frames that hold real audio: all of them, the last one, or those of the final
        ``tr`` seconds of the window.
    batch_size : int, default=16
        Rows per batch when ``batches`` is None.
    tr : float, default=2.0045
        Seconds pooled by ``"last_tr_mean"``.
    progress : bool, default=False
        Show a progress bar.
    description : str, default="features"
        Progress bar label.
    batches : sequence of array-like of int, optional
        The rows of each batch (together every row once), e.g. clips of equal length together;
        consecutive runs of ``batch_size`` rows when None.
    frame_counts : array-like of int of shape (n_windows,), optional
        Frames of each row's own audio: frames beyond are left out of its pooling (for clips
        right-padded in a batch, ``backbone.frame_count(len(clip))``).
    weights_first : bool, default=False
        Mean pooling in float32 with normalised weights (see
        :func:`sk_braintune.models.pooling.pool_frames`).
    load_batch : callable, optional
        ``load_batch(index) -> ndarray (len(index), n_samples) float32``, replacing the default
        batch assembly (e.g. a tuner's left-padding of too-short windows).
    autocast : callable, optional
        Context-manager factory wrapping each batch's forward pass and pooling (e.g. bf16
        autocast on CUDA).

    Returns
    -------
    features : ndarray of shape (n_windows, len(layers) * hidden_size), float32
        Layer blocks in the order of ``layers`` (``hidden_size`` columns for
        ``"last_hidden_state"``).
    """
    import torch

    n = len(windows)
    use_last_state = isinstance(layers, str)
    if use_last_state and layers != "last_hidden_state":
        raise ValueError(f'layers must be indices or "last_hidden_state", got {layers!r}')
    layers = layers if use_last_state else [int(k) for k in layers]
    n_layers = 1 if use_last_state else len(layers)
    out = np.empty((n, n_layers * backbone.hidden_size), dtype=np.float32)
    if n == 0:
        return out
    n_tr_frames = None
    if pooling == "last_tr_mean":
        n_samples = windows.shape[1] if hasattr(windows, "shape") else len(windows[0])
        n_tr_frames = max(1, round(tr * SAMPLE_RATE / frame_step_samples(backbone, n_samples)))

    def pool_batch(index, hidden, mask):
        if frame_counts is not None:  # each clip's own frames only
            real = torch.as_tensor(np.asarray(frame_counts)[index], device=mask.device)
            frames = torch.arange(mask.shape[1], device=mask.device)
            mask = mask & (frames[None] < real[:, None])
        out[index] = torch.cat([pool_frames(h, mask, pooling, n_tr_frames,
                                            weights_first=weights_first) for h in hidden],
                               dim=1).float().cpu().numpy()

    forward_batches(backbone, windows, layers, pool_batch, batch_size=batch_size,
                    batches=batches, load_batch=load_batch, autocast=autocast,
                    progress=progress, description=description)
    return out


class TopBlockFeatures:
    """A :func:`forward_batches` consumer: pooled features of a model and of its top-tuned copies.

    Models tuned with ``trainable_layers=1`` (e.g. a brain-tuned model and its controls) share
    every layer below the last with the model they were tuned from, so one forward pass of that
    model serves all of them: its hidden states are pooled, and only the last block of each
    copy runs on top of ``hidden_states[N - 1]``. The result equals running each copy
    separately (up to float rounding).

    Parameters
    ----------
    backbone : AudioBackbone
        The shared model, which :func:`forward_batches` runs.
    tops : dict of str to AudioBackbone
        Copies whose layers below the last equal ``backbone``'s; used on their own device (pass
        :attr:`modules` as ``forward_batches``' ``also_eval`` so that they run in eval mode).
    n_windows : int
        Rows of the features (the windows ``forward_batches`` runs on).
    layers : sequence of int, optional
        ``hidden_states`` indices to pool, ending with ``N`` and holding ``N - 1``; every layer
        (``0 .. N``) by default.
    pooling : {"mean", "last"}, default="mean"
        Over the frames that hold real audio.

    Attributes
    ----------
    layers : list of int
        What to pass as ``forward_batches``' ``layers``.
    modules : list of AudioBackbone
        The copies (``forward_batches``' ``also_eval``).
    features : ndarray of shape (n_windows, len(layers) * hidden_size), float32
        ``backbone``'s pooled features, filled batch by batch.
    top_features : dict of str to ndarray of shape (n_windows, len(layers) * hidden_size)
        Each copy's features: the blocks below the last shared with ``features``.

    Examples
    --------
    >>> reader = TopBlockFeatures(pretrained, {"tuned": tuned}, len(windows))  # doctest: +SKIP
    >>> forward_batches(pretrained, windows, reader.layers, reader,
    ...                 also_eval=reader.modules)  # doctest: +SKIP
    >>> reader.features, reader.top_features["tuned"]  # doctest: +SKIP
    """

    def __init__(self, backbone, tops, n_windows, *, layers=None, pooling="mean"):
        last = backbone.num_hidden_layers
        layers = list(range(last + 1)) if layers is None else [int(k) for k in layers]
        if not layers or layers[-1] != last or last - 1 not in layers:
            raise ValueError(f"tops need layers ending with {last} and holding {last - 1}, got "
                             f"{layers}")
        if pooling not in ("mean", "last"):
            raise ValueError(f"pooling must be 'mean' or 'last', got {pooling!r}")
        self.layers, self.pooling = layers, pooling
        self.tops = dict(tops)
        self.modules = list(self.tops.values())
        self._below_last = layers.index(last - 1)
        self._last = last
        self.features = np.empty((n_windows, len(layers) * backbone.hidden_size),
                                 dtype=np.float32)
        self.top_features = {name: np.empty_like(self.features) for name in self.tops}

    def __call__(self, index, hidden, mask):
        import torch

        pooled = [pool_frames(h, mask, self.pooling) for h in hidden]
        self.features[index] = torch.cat(pooled, dim=1).float().cpu().numpy()
        for name, model in self.tops.items():
            top = model.forward_from(hidden[self._below_last], self._last - 1, mask)
            self.top_features[name][index] = torch.cat(
                pooled[:-1] + [pool_frames(top, mask, self.pooling)], dim=1).float().cpu().numpy()


@fill_doc
def pooled_layer_features(source, audio, *, layers="all", batch_size=16, device="auto",
                          exact=True, verbose=False):
    """Mean-pooled hidden states of every layer for each audio clip (probe, preference).

    Clips of different lengths (e.g. single words) are never padded together: only clips of the
    same length share a batch, so each clip's features are those of the clip alone. Each clip
    is pooled over its real frames (the backbone's ``frame_mask``, e.g. Whisper's non-padding
    frames). Pass clips unpadded (``bunch.audio``, not a zero-padded matrix).

    Parameters
    ----------
    %(model_source)s
    audio : AudioWindows, ndarray of shape (n, n_samples), or list of 1-D arrays
        16 kHz float audio.
    %(layers)s
    %(batch_size)s
    %(device)s
    exact : bool, default=True
        True: only clips of equal length share a batch (features independent of the batch).
        False: clips sorted by length are batched with right zero-padding and each is pooled
        over its own ``frame_count(len(clip))`` frames: much faster for many clips of distinct
        lengths, but the padding is seen by waveform normalisation and attention, so features
        differ slightly from those of the clip alone.
    %(verbose)s

    Returns
    -------
    features : ndarray of shape (n, n_layers, hidden_size), float32
    """
    from .._utils import resolve_device

    device = resolve_device(device)
    backbone = resolve_backbone(source, device=device)
    items = _audio_items(audio)
    layer_index = (list(range(backbone.num_hidden_layers + 1)) if isinstance(layers, str)
                   else [int(k) for k in layers])
    lengths = np.array([len(a) for a in items])
    if exact:
        # zero-padding would change the features (waveform normalisation and attention see the
        # padding), so only clips of equal length share a batch
        batches = []
        for n in np.unique(lengths):
            same = np.flatnonzero(lengths == n)
            batches.extend(same[i:i + batch_size] for i in range(0, len(same), batch_size))
        frame_counts = None
    else:
        order = np.argsort(lengths, kind="stable")
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        frame_counts = np.array([backbone.frame_count(n) for n in lengths])
    original_device = next(backbone.parameters()).device
    backbone.to(device)
    try:
        features = pooled_features(backbone, items, layer_index, "mean", batches=batches,
                                   frame_counts=frame_counts, weights_first=True,
                                   progress=verbose, description="pooled features")
    finally:
        backbone.to(original_device)
    return features.reshape(len(items), len(layer_index), backbone.hidden_size)


def _audio_items(audio):
    """Audio as a list of 1-D float32 arrays (each clip checked like a story's waveform)."""
    if is_audio_windows(audio):  # checked when the windows were made
        return [np.asarray(w, dtype=np.float32) for w in audio]
    if isinstance(audio, np.ndarray) and audio.ndim == 1 and audio.dtype != object:
        audio = audio[None, :]
    items = [np.asarray(a) for a in audio]
    if not items:
        raise ValueError("no audio given")
    check_clips(items, "clip")
    return [a.astype(np.float32, copy=False).ravel() for a in items]



def resolve_backbone(model, *, device="auto", dtype="float32"):
    """Turn the ``model`` parameter into a backbone on ``device`` in ``dtype``.

    Parameters
    ----------
    model : str, os.PathLike, AudioBackbone, or fitted estimator with ``backbone_``
        A Hugging Face name or local directory, or a fitted ``BrainTuner`` (usually wrapped in
        ``sklearn.frozen.FrozenEstimator``); its backbone is copied, never modified.
    device : str, default="auto"
    dtype : {"float32", "float16", "bfloat16"} or torch.dtype, default="float32"

    Returns
    -------
    backbone : AudioBackbone
        In eval mode.
    """
    from .._utils import resolve_device
    from ..models.backbone import AudioBackbone, load_backbone

    device = resolve_device(device)
    torch_dtype = _torch_dtype(dtype)
    if device.type == "cpu" and str(torch_dtype) != "torch.float32":
        raise ValueError(
            f"dtype={dtype!r} on the CPU: half precision is emulated and very slow there; use "
            "dtype='float32' on the CPU (half precision is for GPUs).")
    if model is None:
        raise ValueError(
            "SpeechFeatureExtractor needs a model: a Hugging Face model name, a local model "
            "directory, or a fitted BrainTuner wrapped in sklearn.frozen.FrozenEstimator.")
    if isinstance(model, (str, os.PathLike)):
        backbone = load_backbone(model, device=device)
    elif isinstance(model, AudioBackbone):
        backbone = copy.deepcopy(model)
    else:
        inner = getattr(model, "estimator", model)  # FrozenEstimator(tuner).estimator
        backbone = getattr(inner, "backbone_", None)
        if backbone is None:
            if hasattr(inner, "fit"):
                raise NotFittedError(
                    f"The {type(inner).__name__} given as model is not fitted: fit it first, "
                    "then pass sklearn.frozen.FrozenEstimator(fitted_tuner) as model (a bare "
                    "fitted estimator would be re-fitted or lost by sklearn.clone).")
            raise TypeError(
                f"model must be a model name, a directory, or a fitted estimator with a "
                f"backbone_ attribute; got {type(model).__name__}.")
        if not isinstance(backbone, AudioBackbone):
            raise TypeError(f"{type(inner).__name__}.backbone_ is not an AudioBackbone.")
        backbone = copy.deepcopy(backbone)
    return backbone.to(device=device, dtype=torch_dtype).eval()


def resolve_layers(layers, num_hidden_layers):
    """Normalise the ``layers`` parameter to a tuple of ``hidden_states`` indices.

    Parameters
    ----------
    layers : "all", int or sequence of int
        Negative indices count from the end (-1 = last block).
    num_hidden_layers : int

    Returns
    -------
    layers : tuple of int
    """
    n_states = num_hidden_layers + 1
    if isinstance(layers, str):
        if layers != "all":
            raise ValueError(f"layers must be 'all', an int or a tuple of ints, got {layers!r}")
        return tuple(range(n_states))
    if isinstance(layers, numbers.Integral):
        layers = (layers,)
    try:
        layers = tuple(int(k) for k in layers)
    except TypeError:
        raise ValueError(f"layers must be 'all', an int or a tuple of ints, got {layers!r}")
    if not layers:
        raise ValueError("layers must not be empty")
    bad = [k for k in layers if not -n_states <= k < n_states]
    if bad:
        raise ValueError(f"layers {bad} out of range: the model has hidden_states indices 0.."
                         f"{num_hidden_layers} (0 = input embeddings).")
    return tuple(k % n_states for k in layers)


class SpeechFeatureExtractor(TransformerMixin, BaseEstimator):
    """Pooled per-layer activations of a speech model, one row per audio window (TR).

    Parameters
    ----------
    model : str, os.PathLike or FrozenEstimator, default=None
        A Hugging Face model name or local directory (loaded in :meth:`fit`, never at
        construction; works offline for local directories), or a fitted
        :class:`~sk_braintune.BrainTuner` wrapped in ``sklearn.frozen.FrozenEstimator`` to
        extract features of the tuned backbone (a bare fitted estimator as a parameter would be
        re-fitted or lost by ``clone``; an unfitted one is an error). Supported: wav2vec2,
        HuBERT, WavLM, Whisper encoders and any Hugging Face audio encoder that returns
        ``hidden_states``.
    layers : "all", int or tuple of int, default="all"
        Indices into the model's ``hidden_states``: 0 = input embeddings (input of the first
        transformer block), k = output of block k; negative indices count from the end.
    pooling : {"mean", "last", "last_tr_mean"}, default="mean"
        How frames become one vector, over frames holding real audio only (never Whisper's
        padding): ``"mean"`` of all frames, the ``"last"`` frame, or the mean of the frames in
        the window's final TR span (``"last_tr_mean"``, the newest ``tr`` seconds).
    batch_size : int, default=16
        Windows per forward pass.
    device : str, default="auto"
        ``"auto"`` uses CUDA when present, else the CPU.
    dtype : {"float32", "float16", "bfloat16"}, default="float32"
        Model precision; half precision only on GPUs. Features are returned as float32.
    tr : float, default=2.0045
        Repetition time in seconds, the span pooled by ``"last_tr_mean"``.
    cache_dir : str or os.PathLike, default=None
        Directory of an on-disk feature cache keyed by the model's weights, ``layers``,
        ``pooling`` and the audio content, so that e.g. a grid search over ridge parameters
        never re-extracts. For :class:`~sk_braintune.AudioWindows` entries are per story, so CV
        folds that reuse a story reuse its features.
    verbose : bool, default=False
        Show a progress bar (never shown when False, so ``--quiet`` commands stay quiet).

    Attributes
    ----------
    backbone_ : AudioBackbone
        The loaded model (eval mode).
    layers_ : tuple of int
        Resolved layer indices.
    hidden_size_ : int
        Units per layer.
    n_features_in_ : int
        Window length in samples.
    n_features_out_ : int
        ``len(layers_) * hidden_size_``.
    fingerprint_ : str or None
        Hash of the model's weights (only computed when ``cache_dir`` is set).

    Notes
    -----
    ``X`` is an :class:`~sk_braintune.AudioWindows`, a 2-D float array ``(n_windows,
    n_samples)`` or a list of equal-length 1-D arrays of 16 kHz audio. Whisper windows longer
    than 30 s are an error; shorter ones are fed with a sliced position table (see
    :mod:`sk_braintune.models.backbone`).

    Examples
    --------
    >>> from sk_braintune import SpeechFeatureExtractor, make_windows  # doctest: +SKIP
    >>> X = make_windows(audio, tr_times, window=10.0)  # doctest: +SKIP
    >>> extractor = SpeechFeatureExtractor("openai/whisper-tiny.en", layers=(2, 4))  # doctest:+SKIP
    >>> features = extractor.fit_transform(X)  # doctest: +SKIP
    """

    def __init__(self, model=None, layers="all", pooling="mean", batch_size=16, device="auto",
                 dtype="float32", tr=2.0045, cache_dir=None, verbose=False):
        self.model = model
        self.layers = layers
        self.pooling = pooling
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype
        self.tr = tr
        self.cache_dir = cache_dir
        self.verbose = verbose

    # -- validation -------------------------------------------------------------------------
    def _check_params(self):
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if not isinstance(self.batch_size, numbers.Integral) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if not isinstance(self.tr, numbers.Real) or not self.tr > 0:
            raise ValueError(f"tr must be a positive number of seconds, got {self.tr!r}")

    def _validate_X(self, X, reset):
        if is_audio_windows(X):
            if X.sample_rate != SAMPLE_RATE:
                raise ValueError(f"Audio must be 16 kHz, got {X.sample_rate} Hz.")
            if reset:
                self.n_features_in_ = X.shape[1]
            elif X.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"X has windows of {X.shape[1]} samples, but {type(self).__name__} was "
                    f"fitted on {self.n_features_in_}-sample windows.")
            return X
        if isinstance(X, (list, tuple)) and X and all(np.ndim(x) == 1 for x in X):
            lengths = {len(x) for x in X}
            if len(lengths) > 1:
                raise ValueError(
                    f"All windows must have the same number of samples, got lengths "
                    f"{sorted(lengths)[:5]}; cut them with sk_braintune.make_windows.")
        if isinstance(X, np.ndarray) or (isinstance(X, (list, tuple)) and X
                                         and all(np.ndim(x) == 1 for x in X)):
            check_clips(X if isinstance(X, np.ndarray) else [np.asarray(x) for x in X],
                        "window")
        return validate_data(self, X, reset=reset, dtype=[np.float32, np.float64])

    def _check_window_length(self, n_samples):
        limit = self.backbone_.max_samples
        if limit is not None and n_samples > limit:
            raise ValueError(
                f"Windows of {n_samples / SAMPLE_RATE:g} s are longer than the "
                f"{limit / SAMPLE_RATE:g} s the Whisper encoder accepts; use shorter windows.")
        if self.backbone_.family in ("wav2vec2", "hubert", "wavlm"):
            self.backbone_.frame_count(n_samples)  # raises for windows too short for the CNN

    # -- estimator API ----------------------------------------------------------------------
    def fit(self, X, y=None):
        """Load the model and check the windows.

        Parameters
        ----------
        X : AudioWindows, ndarray of shape (n_windows, n_samples) or list of 1-D arrays
            16 kHz audio windows.
        y : None
            Ignored.

        Returns
        -------
        self : SpeechFeatureExtractor
        """
        self._check_params()
        X = self._validate_X(X, reset=True)
        backbone = resolve_backbone(self.model, device=self.device, dtype=self.dtype)
        self.backbone_ = backbone
        self.layers_ = resolve_layers(self.layers, backbone.num_hidden_layers)
        self.hidden_size_ = backbone.hidden_size
        self.n_features_out_ = len(self.layers_) * self.hidden_size_
        self._check_window_length(X.shape[1])
        self.fingerprint_ = backbone.fingerprint() if self.cache_dir is not None else None
        return self

    def transform(self, X):
        """Pooled features of every window.

        Parameters
        ----------
        X : AudioWindows, ndarray of shape (n_windows, n_samples) or list of 1-D arrays

        Returns
        -------
        features : ndarray of shape (n_windows, n_features_out), float32
            Column blocks per layer in the order of ``layers_``.
        """
        check_is_fitted(self)
        X = self._validate_X(X, reset=False)
        self._check_window_length(X.shape[1])
        if self.cache_dir is None:
            return self._extract(X)
        return self._extract_cached(X)

    def _extract(self, X):
        return pooled_features(self.backbone_, X, self.layers_, self.pooling,
                               batch_size=self.batch_size, tr=self.tr,
                               progress=bool(self.verbose))

    def _cache_key(self):
        return key_of(model=self.fingerprint_, layers=list(self.layers_), pooling=self.pooling,
                      tr=float(self.tr) if self.pooling == "last_tr_mean" else None,
                      dtype=str(self.backbone_.encoder.dtype),
                      whisper_input=self.backbone_.whisper_input)

    def _extract_cached(self, X):
        cache = FeatureCache(self.cache_dir)
        model_key = self._cache_key()
        if not is_audio_windows(X):
            key = key_of(model=model_key, data=hash_arrays(X))
            with cache.locked(key):
                entry = cache.get(key)
                if entry is not None and entry["features"].shape == (X.shape[0],
                                                                      self.n_features_out_):
                    return entry["features"]
                features = self._extract(X)
                cache.put(key, features=features)
            return features
        # one entry per story: CV folds made of whole stories share them
        out = np.empty((X.shape[0], self.n_features_out_), dtype=np.float32)
        stories = list(dict.fromkeys(X.stories))
        for story in stories:
            rows = np.flatnonzero(X.stories == story)
            key = key_of(model=model_key, audio=hash_arrays(X.waveforms[story]),
                         window=X.window_samples)
            # read-compute-write under the entry's lock: concurrent jobs filling the same
            # cache neither lose each other's windows nor compute them twice
            with cache.locked(key):
                entry = cache.get(key)
                if entry is None:
                    known_ends = np.empty(0, dtype=np.int64)
                    known = np.empty((0, self.n_features_out_), dtype=np.float32)
                else:
                    known_ends, known = entry["ends"], entry["features"]
                wanted = np.unique(X.ends[rows])
                missing = wanted[~np.isin(wanted, known_ends)]
                if missing.size:
                    first_row = {int(e): r for r, e in zip(rows[::-1], X.ends[rows][::-1])}
                    new = self._extract(X[np.array([first_row[int(e)] for e in missing])])
                    known_ends = np.concatenate([known_ends, missing])
                    known = np.concatenate([known, new])
                    order = np.argsort(known_ends, kind="stable")
                    known_ends, known = known_ends[order], known[order]
                    cache.put(key, ends=known_ends, features=known)
            out[rows] = known[np.searchsorted(known_ends, X.ends[rows])]
        return out

    @fill_doc
    def get_feature_names_out(self, input_features=None):
        """Names ``layerLL_UUUU`` per layer and unit, e.g. ``layer07_0042``.

        Parameters
        ----------
        %(input_features)s

        Returns
        -------
        names : ndarray of shape (n_features_out,), dtype object
        """
        check_is_fitted(self)
        layer_width = max(2, len(str(self.backbone_.num_hidden_layers)))
        unit_width = max(4, len(str(self.hidden_size_ - 1)))
        return np.asarray([f"layer{k:0{layer_width}d}_{u:0{unit_width}d}"
                           for k in self.layers_ for u in range(self.hidden_size_)],
                          dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        tags.input_tags.two_d_array = True
        return tags


@fill_doc
def extract_layer_features(source, windows, *, layers="all", pooling="mean", batch_size=16,
                           device="auto", verbose=False):
    """Pooled features of the chosen layers of ``windows``, from a model path or a fitted model.

    The demo and ``sk-braintune evaluate`` extract their features with this.

    Parameters
    ----------
    source : str, os.PathLike, AudioBackbone or fitted estimator
        A model name or path, or a fitted :class:`~sk_braintune.BrainTuner` (or
        :class:`SpeechFeatureExtractor`), wrapped in :class:`~sklearn.frozen.FrozenEstimator`
        so it is never refitted.
    windows : AudioWindows or ndarray of shape (n_windows, n_samples)
    layers : "all", int or sequence of int, default="all"
        ``hidden_states`` indices (see :class:`SpeechFeatureExtractor`).
    pooling : {"mean", "last", "last_tr_mean"}, default="mean"
    %(batch_size)s
    %(device)s
    %(verbose)s

    Returns
    -------
    features : ndarray of shape (n_windows, n_layers * hidden_size), float32
        Layers concatenated.
    layers : tuple of int
        The ``hidden_states`` index of each block of columns.
    """
    from sklearn.base import BaseEstimator
    from sklearn.frozen import FrozenEstimator

    model = (FrozenEstimator(source) if isinstance(source, BaseEstimator)
             and not isinstance(source, FrozenEstimator) else source)
    extractor = SpeechFeatureExtractor(model=model, layers=layers, pooling=pooling,
                                       batch_size=batch_size, device=device, verbose=verbose)
    features = extractor.fit_transform(windows)
    return features, tuple(int(k) for k in extractor.layers_)
