"""Features per TR: speech-model activations, the paper's story-level protocol, low-level features.

- :class:`SpeechFeatureExtractor`: per-layer pooled activations of a speech model for each
  causal audio window (one per TR), a scikit-learn transformer.
- :func:`forward_batches` / :func:`pooled_features`: the one batched forward loop of the
  package and pooling on top of it; :func:`pooled_layer_features` (per-clip features of the
  probe and the semantic preference) and :func:`extract_layer_features` (the commands') use it;
  :class:`TopBlockFeatures` reads the features of top-tuned copies from one forward pass.
- :func:`extract_story_features` / :func:`extract_stories_features`: the paper's evaluation
  protocol (16 s windows every 0.1 s, last frame, Lanczos resampling to TR times, trims,
  per-story z-scoring).
- :func:`lanczos_resample`: HuthLab's ``lanczosinterp2D``.
- :class:`FeatureCache`: on-disk cache of extracted features.
- :class:`LowLevelSpeechFeatures`, :class:`PowerSpectrumFeatures`: low-level controls.

Names are imported lazily, so importing this package loads neither torch nor transformers.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY_EXPORTS = {
    "SpeechFeatureExtractor": "extractor",
    "TopBlockFeatures": "extractor",
    "extract_layer_features": "extractor",
    "forward_batches": "extractor",
    "pooled_features": "extractor",
    "pooled_layer_features": "extractor",
    "FeatureCache": "cache",
    "lanczos_resample": "lanczos",
    "lanczos_weights": "lanczos",
    "extract_story_features": "protocol",
    "extract_stories_features": "protocol",
    "LowLevelSpeechFeatures": "lowlevel",
    "PowerSpectrumFeatures": "lowlevel",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY_EXPORTS)
