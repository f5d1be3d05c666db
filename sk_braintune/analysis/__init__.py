"""Analyses of the paper: low-level residualisation, semantic probes, semantic preference, ROI
statistics and figures.

- :class:`Residualizer`, :func:`low_level_impact`, :func:`low_level_comparison`
  (``analysis.residualize``): regress low-level features out of model features; impact in %.
- :class:`SemanticProbe`, :func:`probe_layers` (``analysis.probe``): linear probes on frozen
  per-layer features (computed by :func:`sk_braintune.features.pooled_layer_features`, also
  exported here).
- :func:`semantic_preference`, :func:`word_representations` (``analysis.preference``).
- :func:`data_efficiency_curve`, :func:`plot_data_efficiency` (``analysis.data_efficiency``):
  alignment vs the fraction of a held-out participant's encoding training data.
- :func:`roi_summary`, :func:`participant_roi_table`, :func:`compare_models`,
  :func:`load_roi_table` (``analysis.roi``).
- plotting functions in ``analysis.figures`` (matplotlib object API, return the figure).

Names are imported lazily, so importing this package loads neither torch nor scikit-learn.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY_EXPORTS = {
    "Residualizer": "residualize",
    "low_level_impact": "residualize",
    "low_level_comparison": "residualize",
    "SemanticProbe": "probe",
    "probe_layers": "probe",
    "pooled_layer_features": "sk_braintune.features.extractor",
    "semantic_preference": "preference",
    "word_representations": "preference",
    "near_homophone_pairs": "sk_braintune.datasets.word_pairs",
    "phone_edit_distance": "sk_braintune.datasets.word_pairs",
    "data_efficiency_curve": "data_efficiency",
    "plot_data_efficiency": "data_efficiency",
    "roi_summary": "roi",
    "participant_roi_table": "roi",
    "compare_models": "roi",
    "load_roi_table": "roi",
    "plot_layer_alignment": "figures",
    "plot_roi_scores": "figures",
    "plot_low_level_impact": "figures",
    "plot_probe_scores": "figures",
    "plot_semantic_preference": "figures",
    "plot_training_curves": "figures",
    "plot_surface_scores": "figures",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY_EXPORTS)
