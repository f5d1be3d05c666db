"""The paper's evaluation: alignment, low-level impact, significance, ROI summaries, per listener.

- alignment (``evaluation.alignment``): :func:`fit_score_encoding`, :func:`layerwise_alignment`
  (FIR delays per story, a story-grouped ridge, normalised r on held-out stories);
- the low-level family (``evaluation.lowlevel``): :func:`low_level_impact`,
  :func:`low_level_comparison`, :func:`low_level_feature_spaces`, :func:`low_level_impacts`,
  :func:`variance_partition_summary`, on the :class:`Residualizer` (``evaluation.residualize``);
- significance (``evaluation.significance``): :func:`alignment_significance`;
- ROI summaries (``evaluation.roi``): :func:`roi_summary`, :func:`participant_roi_table`,
  :func:`compare_models`, :func:`load_roi_table`; labels from atlases (``evaluation.atlas``):
  :func:`atlas_labels`, :func:`read_annotation`, :func:`read_label_image`;
- the per-listener sequence (``evaluation.listener``): :func:`evaluate_listener`.

Names are imported lazily, so importing this package loads neither torch nor scikit-learn.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY_EXPORTS = {
    "delay_per_story": ".alignment",
    "layer_slices": ".alignment",
    "split_layers": ".alignment",
    "default_encoder": ".alignment",
    "fit_score_encoding": ".alignment",
    "layerwise_alignment": ".alignment",
    "LOW_LEVEL_KINDS": ".lowlevel",
    "low_level_impact": ".lowlevel",
    "low_level_comparison": ".lowlevel",
    "low_level_feature_spaces": ".lowlevel",
    "low_level_impacts": ".lowlevel",
    "variance_partition_summary": ".lowlevel",
    "Residualizer": ".residualize",
    "alignment_significance": ".significance",
    "roi_summary": ".roi",
    "participant_roi_table": ".roi",
    "compare_models": ".roi",
    "load_roi_table": ".roi",
    "LISTENER_ANALYSES": ".listener",
    "evaluate_listener": ".listener",
    "atlas_labels": ".atlas",
    "read_annotation": ".atlas",
    "read_label_image": ".atlas",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY_EXPORTS)
