"""Test helpers: miniature datasets in real formats and tiny models, for tests and examples.

Names are imported lazily (PEP 562).
"""

from __future__ import annotations

import importlib

_LAZY_EXPORTS = {
    "make_miniature_lebel2023": ".lebel",
    "make_tiny_model": ".models",
}

__all__ = sorted(_LAZY_EXPORTS)


def __getattr__(name: str):
    try:
        module_name = _LAZY_EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module_name, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY_EXPORTS))
