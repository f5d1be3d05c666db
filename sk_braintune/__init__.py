"""sk_braintune: brain-tuning of speech models as scikit-learn estimators.

The estimators are exported lazily (PEP 562): ``import sk_braintune`` loads neither
scikit-learn, SciPy, torch nor transformers; each name is imported on first access.
"""

from __future__ import annotations

from ._lazy import lazy_exports
from ._version import __version__

# public name -> module that defines it (relative to this package)
_LAZY_EXPORTS = {
    "SpeechFeatureExtractor": "features.extractor",
    "FIRDelayer": "encoding.delays",
    "RidgeEncoder": "encoding.ridge",
    "BandedRidgeEncoder": "encoding.banded",
    "BrainTuner": "tuning.tuner",
    "SemanticProbe": "analysis.probe",
    "LowLevelSpeechFeatures": "features.lowlevel",
    "PowerSpectrumFeatures": "features.lowlevel",
    "Residualizer": "evaluation.residualize",
    "AudioWindows": "windows",
    "make_windows": "windows",
}

__getattr__, __dir__, _exported = lazy_exports(__name__, _LAZY_EXPORTS)
__all__ = ["__version__", *_exported]
