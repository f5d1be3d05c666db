"""Voxel-wise encoding models: FIR delays and multi-output ridge regression with per-voxel alphas."""

from .delays import FIRDelayer
from .ridge import RidgeEncoder
from ._cv import ChunkedBootstrap

__all__ = ["FIRDelayer", "RidgeEncoder", "ChunkedBootstrap"]
