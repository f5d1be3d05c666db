"""Features per TR: speech-model activations, the paper's story-level protocol, low-level features.

- :class:`SpeechFeatureExtractor`: per-layer pooled activations of a speech model for each
  causal audio window (one per TR), a scikit-learn transformer.
- :func:`extract_story_features` / :func:`extract_stories_features`: the paper's evaluation
  protocol (16 s windows every 0.1 s, last frame, Lanczos resampling to TR times, trims,
  per-story z-scoring).
- :func:`lanczos_resample`: HuthLab's ``lanczosinterp2D``.
- :class:`FeatureCache`: on-disk cache of extracted features.
- :class:`LowLevelSpeechFeatures`, :class:`PowerSpectrumFeatures`: low-level controls.

Names are imported lazily, so importing this package loads neither torch nor transformers.
"""

from __future__ import annotations

import importlib

_LAZY_EXPORTS = {
    "SpeechFeatureExtractor": "extractor",
    "FeatureCache": "cache",
    "lanczos_resample": "lanczos",
    "lanczos_weights": "lanczos",
    "extract_story_features": "protocol",
    "extract_stories_features": "protocol",
    "LowLevelSpeechFeatures": "lowlevel",
    "PowerSpectrumFeatures": "lowlevel",
}

__all__ = sorted(_LAZY_EXPORTS)


def __getattr__(name):
    try:
        module_name = _LAZY_EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY_EXPORTS))
