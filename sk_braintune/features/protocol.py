"""The paper's story-level feature protocol.

For each story: causal 16 s windows ending every 0.1 s, the *last* frame of every selected layer
for each window, 3-lobe Lanczos resampling from the window end times to the TR times
(unnormalised, as in HuthLab's ``lanczosinterp2D``), trimming ``[10:-5]`` to match the LeBel
responses, and z-scoring per story.

It costs about ``tr / step`` (~20) forward passes per TR, against one for
:class:`~sk_braintune.SpeechFeatureExtractor`'s per-TR path; it shares that path's batched
forward (:func:`sk_braintune.features.extractor.pooled_features`).
"""

from __future__ import annotations

import numpy as np

from ..preprocessing import zscore_per_story
from ..windows import make_windows
from .extractor import pooled_features, resolve_backbone, resolve_layers
from .lanczos import lanczos_resample

__all__ = ["extract_stories_features", "extract_story_features"]

SAMPLE_RATE = 16_000


def _prepare(model, layers, device):
    """Backbone and layer indices from any accepted ``model``."""
    from ..models.backbone import AudioBackbone

    backbone = getattr(model, "backbone_", None)
    if backbone is not None and hasattr(model, "layers_") and layers is None:
        return backbone, tuple(model.layers_)  # a fitted SpeechFeatureExtractor
    if backbone is not None and hasattr(model, "layers_"):
        pass  # a fitted extractor with other layers: reuse its backbone
    elif isinstance(model, AudioBackbone):
        backbone = model  # used as is (device, dtype), never copied
    else:
        backbone = resolve_backbone(model, device=device)
    return backbone, resolve_layers("all" if layers is None else layers,
                                    backbone.num_hidden_layers)


def _story_features(backbone, layers, audio, tr_times, *, window, step, tr, trim, zscore,
                    batch_size, lanczos_window, normalize, verbose, name="story"):
    audio = np.asarray(audio, dtype=np.float32)
    tr_times = np.asarray(tr_times, dtype=np.float64)
    if audio.ndim != 1 or audio.size == 0:
        raise ValueError(f"Audio of {name!r} must be a non-empty 1-D 16 kHz waveform.")
    if tr_times.ndim != 1 or tr_times.size < 2:
        raise ValueError(f"TR times of {name!r} must be a 1-D array of at least 2 times.")
    if step <= 0 or window <= 0:
        raise ValueError("step and window must be positive (seconds).")
    duration = audio.size / SAMPLE_RATE
    if tr_times[-1] - tr / 2 > duration + window:
        raise ValueError(
            f"{name!r}: the last volume starts at {tr_times[-1] - tr / 2:.1f} s, after the "
            f"audio ({duration:.1f} s) ends; are the TR times in seconds from the audio start?")
    n_windows = int(np.floor(duration / step + 1e-9))
    if n_windows < 1:
        raise ValueError(f"{name!r} is shorter than one step ({step} s).")
    end_times = np.arange(1, n_windows + 1) * step
    # tr=0: each window ends exactly at its end time (make_windows adds tr / 2)
    windows = make_windows(audio, end_times, window=window, tr=0.0)
    features = pooled_features(backbone, windows, layers, "last", batch_size=batch_size,
                               progress=verbose, description=f"{name} windows")
    resampled = lanczos_resample(features, end_times, tr_times, window=lanczos_window,
                                 normalize=normalize)
    if trim is not None:
        start, stop = (int(t) for t in trim)
        if start + stop >= len(resampled):
            raise ValueError(f"{name!r}: trimming {trim} leaves no TRs of {len(resampled)}.")
        resampled = resampled[start:len(resampled) - stop]
    if zscore:
        return zscore_per_story(resampled).astype(np.float32)  # one story
    return np.asarray(resampled, dtype=np.float32)


def extract_story_features(model, audio, tr_times, *, window=16.0, step=0.1, layers=None,
                           tr=2.0045, trim=(10, 5), zscore=True, batch_size=16, device="auto",
                           lanczos_window=3, normalize=False, verbose=False):
    """Features of one story by the paper's protocol (``(n_trs, n_features)``).

    Parameters
    ----------
    model : str, os.PathLike, AudioBackbone, fitted SpeechFeatureExtractor or FrozenEstimator
        A Hugging Face name or local directory, a loaded backbone (used as is, on its device),
        a fitted extractor (its backbone, and its layers unless ``layers`` is given), or a
        fitted BrainTuner wrapped in ``sklearn.frozen.FrozenEstimator``.
    audio : ndarray of shape (n_samples,)
        Mono 16 kHz float audio of the story.
    tr_times : ndarray of shape (n_trs,)
        Mid-volume times (s) relative to the audio start, *before* trimming.
    window : float, default=16.0
        Context of each causal window (s); story starts are padded with silence.
    step : float, default=0.1
        Seconds between window ends.
    layers : "all", int or tuple of int, default=None
        ``hidden_states`` indices (0 = input embeddings); None means "all", or the fitted
        extractor's layers.
    tr : float, default=2.0045
        Repetition time (s); only used to check ``tr_times`` against the audio length.
    trim : tuple of (int, int) or None, default=(10, 5)
        TRs dropped at the start and end after resampling (the LeBel responses are delivered
        trimmed ``[10:-5]``).
    zscore : bool, default=True
        Z-score each feature within the story (after trimming).
    batch_size : int, default=16
    device : str, default="auto"
    lanczos_window : int, default=3
        Lanczos lobes.
    normalize : bool, default=False
        Normalised Lanczos weights instead of the reference's raw sums.
    verbose : bool, default=False
        Progress bar.

    Returns
    -------
    features : ndarray of shape (n_trs - sum(trim), n_layers * hidden_size), float32
    """
    backbone, layers = _prepare(model, layers, device)
    return _story_features(backbone, layers, audio, tr_times, window=window, step=step, tr=tr,
                           trim=trim, zscore=zscore, batch_size=batch_size,
                           lanczos_window=lanczos_window, normalize=normalize, verbose=verbose)


def extract_stories_features(model, audio, tr_times, *, stories=None, **kwargs):
    """The story-level protocol for several stories, loading the model once.

    Parameters
    ----------
    model : str, os.PathLike, AudioBackbone, fitted SpeechFeatureExtractor or FrozenEstimator
        See :func:`extract_story_features`.
    audio : dict of str to ndarray of shape (n_samples,)
        Story name -> 16 kHz audio (e.g. ``dataset.audio``).
    tr_times : dict of str to ndarray of shape (n_trs,)
        Story name -> mid-volume times (e.g. ``dataset.tr_times``).
    stories : list of str, optional
        Stories to process, in order; default all keys of ``tr_times``.
    **kwargs
        Keyword arguments of :func:`extract_story_features`.

    Returns
    -------
    features : dict of str to ndarray of shape (n_trs_story, n_features)
    """
    layers = kwargs.pop("layers", None)
    device = kwargs.pop("device", "auto")
    options = dict(window=16.0, step=0.1, tr=2.0045, trim=(10, 5), zscore=True, batch_size=16,
                   lanczos_window=3, normalize=False, verbose=False)
    unknown = set(kwargs) - set(options)
    if unknown:
        raise TypeError(f"unexpected keyword arguments {sorted(unknown)}")
    options.update(kwargs)
    backbone, layers = _prepare(model, layers, device)
    names = list(tr_times) if stories is None else list(stories)
    missing = [s for s in names if s not in audio or s not in tr_times]
    if missing:
        raise ValueError(f"no audio or TR times for stories {missing}")
    return {s: _story_features(backbone, layers, audio[s], tr_times[s], name=s, **options)
            for s in names}
