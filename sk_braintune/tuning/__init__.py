"""Brain-tuning: fine-tune a speech model on fMRI, and the control targets to compare it with.

- :class:`BrainTuner`: backbone + pooling + linear head trained on per-TR targets.
- :func:`other_story_targets`, :func:`block_permuted_targets`, :func:`representation_targets`:
  control targets (another story's responses, block-permuted responses, another model's features).
"""

from .controls import block_permuted_targets, other_story_targets, representation_targets
from .tuner import BrainTuner

__all__ = ["BrainTuner", "block_permuted_targets", "other_story_targets",
           "representation_targets"]
