"""Voxel-wise encoding models: FIR delays, ridge and banded ridge regression with per-voxel
penalties, variance partitioning and significance of held-out scores."""

from .._lazy import lazy_exports

_LAZY_EXPORTS = {
    "FIRDelayer": "delays",
    "RidgeEncoder": "ridge",
    "BandedRidgeEncoder": "banded",
    "band_weight_candidates": "banded",
    "ChunkedBootstrap": "_cv",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY_EXPORTS)
