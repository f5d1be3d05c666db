"""Model analyses above the evaluation layer: semantic probes, semantic preference, the
encoding-data curve and figures.

- :class:`SemanticProbe`, :func:`probe_layers` (``analysis.probe``): linear probes on frozen
  per-layer features (computed by :func:`sk_braintune.features.pooled_layer_features`, also
  exported here).
- :func:`semantic_preference`, :func:`word_representations` (``analysis.preference``).
- :func:`data_efficiency_curve`, :func:`plot_data_efficiency` (``analysis.data_efficiency``):
  alignment vs the amount of encoding training data.
- plotting functions in ``analysis.figures`` (matplotlib object API, return the figure).

The paper's evaluation (alignment, low-level impact, significance, ROI summaries) is
:mod:`sk_braintune.evaluation`. Names are imported lazily, so importing this package loads
neither torch nor scikit-learn.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY_EXPORTS = {
    "SemanticProbe": "probe",
    "probe_layers": "probe",
    "pooled_layer_features": "sk_braintune.features.extractor",
    "semantic_preference": "preference",
    "word_representations": "preference",
    "data_efficiency_curve": "data_efficiency",
    "plot_data_efficiency": "data_efficiency",
    "plot_layer_alignment": "figures",
    "plot_roi_scores": "figures",
    "plot_low_level_impact": "figures",
    "plot_probe_scores": "figures",
    "plot_semantic_preference": "figures",
    "plot_training_curves": "figures",
    "plot_surface_scores": "figures",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY_EXPORTS)
