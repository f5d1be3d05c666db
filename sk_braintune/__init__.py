"""sk_braintune: brain-tuning of speech models as scikit-learn estimators.

The estimators are exported lazily (PEP 562): ``import sk_braintune`` loads neither
scikit-learn, SciPy, torch nor transformers; each name is imported on first access.
"""

from __future__ import annotations

import importlib

from ._version import __version__

# public name -> module that defines it (relative to this package)
_LAZY_EXPORTS = {
    "SpeechFeatureExtractor": "features.extractor",
    "FIRDelayer": "encoding.delays",
    "RidgeEncoder": "encoding.ridge",
    "BrainTuner": "tuning.tuner",
    "SemanticProbe": "analysis.probe",
    "LowLevelSpeechFeatures": "features.lowlevel",
    "PowerSpectrumFeatures": "features.lowlevel",
    "Residualizer": "analysis.residualize",
    "AudioWindows": "windows",
    "make_windows": "windows",
}

__all__ = ["__version__", *sorted(_LAZY_EXPORTS)]


def __getattr__(name: str):
    try:
        module_name = _LAZY_EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'sk_braintune' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY_EXPORTS))
