"""The paper's evaluation: alignment, low-level impact, significance and ROI summaries.

- alignment (``evaluation.alignment``): :func:`fit_score_encoding`, :func:`layerwise_alignment`
  (FIR delays per story, a story-grouped ridge, normalised r on held-out stories);
- low-level impact (``evaluation.residualize``): :class:`Residualizer`, :func:`low_level_impact`,
  :func:`low_level_comparison`, :func:`low_level_impacts`, :func:`variance_partition_summary`;
- significance: :func:`alignment_significance`;
- ROI summaries (``evaluation.roi``): :func:`roi_summary`, :func:`participant_roi_table`,
  :func:`compare_models`, :func:`load_roi_table`; labels from atlases (``evaluation.atlas``):
  :func:`atlas_labels`, :func:`read_annotation`, :func:`read_label_image`.

Names are imported lazily, so importing this package loads neither torch nor scikit-learn.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY_EXPORTS = {
    "LOW_LEVEL_KINDS": ".alignment",
    "delay_per_story": ".alignment",
    "layer_slices": ".alignment",
    "split_layers": ".alignment",
    "default_encoder": ".alignment",
    "fit_score_encoding": ".alignment",
    "layerwise_alignment": ".alignment",
    "lowlevel_feature_spaces": ".alignment",
    "low_level_impacts": ".alignment",
    "variance_partition_summary": ".alignment",
    "alignment_significance": ".alignment",
    "Residualizer": ".residualize",
    "low_level_impact": ".residualize",
    "low_level_comparison": ".residualize",
    "roi_summary": ".roi",
    "participant_roi_table": ".roi",
    "compare_models": ".roi",
    "load_roi_table": ".roi",
    "atlas_labels": ".atlas",
    "read_annotation": ".atlas",
    "read_label_image": ".atlas",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY_EXPORTS)
