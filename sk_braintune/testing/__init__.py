"""Test helpers: miniature datasets in real formats and tiny models, for tests and examples.

Names are imported lazily (PEP 562).
"""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY_EXPORTS = {
    "make_miniature_lebel2023": ".lebel",
    "make_tiny_model": ".models",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY_EXPORTS)
