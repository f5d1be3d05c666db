"""Voxel-wise encoding models: FIR delays, ridge and banded ridge regression with per-voxel
penalties, variance partitioning and significance of held-out scores."""

from .._lazy import lazy_exports

_LAZY_EXPORTS = {
    "FIRDelayer": "delays",
    "RidgeEncoder": "ridge",
    "BandedRidgeEncoder": "banded",
    "band_weight_candidates": "banded",
    "ChunkedBootstrap": "_cv",
    "variance_partitioning": "partitioning",
    "partition_roi_summary": "partitioning",
    "correct_partitions": "partitioning",
    "block_permutation_test": "significance",
    "fdr_bh": "significance",
    "roi_confidence_intervals": "significance",
    "time_blocks": "significance",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY_EXPORTS)
