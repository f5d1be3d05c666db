"""Brain-tuning: fine-tune a speech model on fMRI, and the control targets to compare it with.

- :class:`BrainTuner`: backbone + pooling + linear head trained on per-TR targets, for one or
  several participants.
- :class:`Callback`, :class:`EarlyStopping`, :class:`Checkpoint`, :class:`ProgressBar`
  (``tuning.callbacks``): the training loop's hooks; :func:`validation_split`: the story-level
  validation split (also used by :class:`~sk_braintune.analysis.SemanticProbe`).
- :class:`FrozenLayerCache`: frozen-layer outputs shared by fits on the same windows.
- :func:`other_story_targets`, :func:`block_permuted_targets`, :func:`phase_randomized_targets`,
  :func:`representation_targets`:
  control targets (another story's responses, block-permuted responses,
  phase-randomised responses, another model's features).

Names are imported lazily, so importing this package loads neither torch nor scikit-learn.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY_EXPORTS = {
    "BrainTuner": "tuner",
    "Callback": "callbacks",
    "Checkpoint": "callbacks",
    "EarlyStopping": "callbacks",
    "ProgressBar": "callbacks",
    "FrozenLayerCache": "frozen_cache",
    "validation_split": "_training",
    "block_permuted_targets": "controls",
    "other_story_targets": "controls",
    "phase_randomized_targets": "controls",
    "representation_targets": "controls",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY_EXPORTS)
