"""Test helpers: miniature datasets in real formats, tiny models, and a headless-browser check
of results reports, for tests and examples.

Names are imported lazily (PEP 562).
"""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY_EXPORTS = {
    "make_miniature_lebel2023": ".lebel",
    "make_tiny_model": ".models",
    "make_miniature_bids": ".bids",
    "make_miniature_narratives": ".bids",
    "make_miniature_petit_prince": ".bids",
    "find_chromium": ".browser",
    "render_dom": ".browser",
    "parse_report": ".browser",
    "check_report": ".browser",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY_EXPORTS)
