"""scikit-learn's estimator checks over every public estimator, found by walking the package.

The estimators are discovered as scikit-learn's ``all_estimators`` does: every public module of
``sk_braintune`` is imported and its public ``BaseEstimator`` subclasses collected, so a new
estimator is checked (or must be listed with the reason it cannot be) without editing a list.

Audio estimators need a model: a tiny randomly initialised one is written to a temporary
directory at collection time (``parametrize_with_checks`` needs instances then) and loaded
offline through ``from_pretrained``. Expected failures are listed with their reasons.
"""

import importlib
import inspect
import os
import pkgutil
import shutil
import tempfile
from pathlib import Path

from sklearn.base import BaseEstimator
from sklearn.utils.estimator_checks import parametrize_with_checks

import sk_braintune
from sk_braintune import (
    BandedRidgeEncoder,
    BrainTuner,
    FIRDelayer,
    LowLevelSpeechFeatures,
    PowerSpectrumFeatures,
    Residualizer,
    RidgeEncoder,
    SemanticProbe,
    SpeechFeatureExtractor,
)
from sk_braintune.testing.models import make_tiny_model


def all_estimators():
    """Public estimator classes of sk_braintune, sorted by name (as sklearn's all_estimators).

    Walks every module whose dotted path has no private (``_``) part, outside ``testing``, and
    keeps the public classes defined in the package that subclass ``BaseEstimator``.
    """
    found = {}
    for info in pkgutil.walk_packages(sk_braintune.__path__, "sk_braintune."):
        parts = info.name.split(".")[1:]
        if any(part.startswith("_") for part in parts) or parts[0] == "testing":
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, BaseEstimator)
                    and not name.startswith("_") and not inspect.isabstract(obj)
                    and obj.__module__.startswith("sk_braintune.")):
                found[obj] = name
    return sorted(found, key=lambda cls: cls.__name__)


def _shared_tiny_model(family):
    """A tiny model at a fixed path, so that test ids agree across pytest-xdist workers.

    Weights are deterministic (seed 0); each worker writes into its own temporary directory and
    renames it into place, so concurrent workers never see a half-written model.
    """
    import hashlib

    import transformers

    from sk_braintune.testing import models

    # keyed by the builder's code and transformers' version: a stale model is never reused
    key = hashlib.sha256(Path(models.__file__).read_bytes()
                         + transformers.__version__.encode()).hexdigest()[:12]
    root = Path(tempfile.gettempdir()) / f"sk_braintune_common_models_{key}"
    root.mkdir(exist_ok=True)
    final = root / family
    if not (final / "config.json").exists():
        staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{family}-"))
        make_tiny_model(family, staging / "model")
        try:
            os.rename(staging / "model", final)
        except OSError:  # another worker won the race with identical weights
            pass
        shutil.rmtree(staging, ignore_errors=True)
    return str(final)


TINY_WAV2VEC2 = _shared_tiny_model("wav2vec2")
TINY_WHISPER = _shared_tiny_model("whisper")

# Constructor arguments for the estimators that need some (a model) or are checked in several
# configurations; every other discovered estimator is checked with its defaults.
CONFIGURATIONS = {
    FIRDelayer: [FIRDelayer(), FIRDelayer(delays=(0, 2))],
    RidgeEncoder: [
        RidgeEncoder(alphas=[0.1, 10.0, 1000.0], cv=3),
        RidgeEncoder(alphas=[0.1, 10.0], cv=3, alpha_per_target=False, solver="dual"),
    ],
    BandedRidgeEncoder: [
        BandedRidgeEncoder(alphas=[0.1, 10.0, 1000.0], cv=3, random_state=0),
        BandedRidgeEncoder(alphas=[0.1, 10.0], n_iter=3, cv=3, cv_scoring="mse",
                           solver="primal", random_state=0),
    ],
    # wav2vec2-family extractors refuse windows shorter than their CNN's receptive field
    # (325 samples here) with a clear error, and sklearn's checks use windows of 1-20 samples;
    # the Whisper front-end accepts any length, so it stands in for the extractor here.
    SpeechFeatureExtractor: [
        SpeechFeatureExtractor(model=TINY_WHISPER, layers="all", batch_size=8, device="cpu"),
        SpeechFeatureExtractor(model=TINY_WHISPER, layers=-1, pooling="last", device="cpu"),
    ],
    BrainTuner: [
        BrainTuner(TINY_WAV2VEC2, max_epochs=2, batch_size=16, device="cpu", random_state=0),
        BrainTuner(TINY_WHISPER, trainable_layers=1, max_epochs=2, batch_size=16, device="cpu",
                   random_state=0),
    ],
    SemanticProbe: [SemanticProbe(max_epochs=30, lr=0.05, random_state=0)],
    Residualizer: [Residualizer(low_level=1)],
    PowerSpectrumFeatures: [PowerSpectrumFeatures(n_bands=4)],
}

# Estimators the common checks cannot take, with the reason (each has its own tests).
NOT_CHECKED = {
    LowLevelSpeechFeatures: (
        "its X is a list of per-story phone alignments (dicts of DataFrames and TR times) or a "
        "dataset bunch, never a numeric array, so the checks' arrays are not valid input; "
        "tested in tests/test_lowlevel.py"),
}

# The estimators that exist today: discovery must find each (a missing one fails here).
KNOWN_ESTIMATORS = {BandedRidgeEncoder, BrainTuner, FIRDelayer, LowLevelSpeechFeatures,
                    PowerSpectrumFeatures, Residualizer, RidgeEncoder, SemanticProbe,
                    SpeechFeatureExtractor}

DISCOVERED = all_estimators()
ESTIMATORS = [estimator for cls in DISCOVERED if cls not in NOT_CHECKED
              for estimator in (CONFIGURATIONS[cls] if cls in CONFIGURATIONS else [cls()])]


def test_discovery_finds_every_known_estimator():
    assert KNOWN_ESTIMATORS <= set(DISCOVERED), KNOWN_ESTIMATORS - set(DISCOVERED)
    # every discovered estimator is checked or listed with a reason, never silently left out
    checked = {type(estimator) for estimator in ESTIMATORS}
    assert checked | set(NOT_CHECKED) == set(DISCOVERED)
    assert not checked & set(NOT_CHECKED)
    assert set(CONFIGURATIONS) <= set(DISCOVERED)
    # the public exports name each of them
    exported = {getattr(sk_braintune, name) for name in sk_braintune.__all__
                if name != "__version__"}
    assert KNOWN_ESTIMATORS <= exported


_DELAY_ORDER = ("FIR delays shift rows in time: each output row depends on the rows before "
                "it, so the result depends on sample order by design.")
_DELAY_SUBSET = ("FIR delays read earlier rows: a row's delayed copies differ when the rows "
                 "before it are left out, by design.")


_INTEGER_AUDIO = ("integer windows are PCM samples (int16 from a WAV file) that would be used "
                  "unscaled: the audio estimators refuse them, as the windowing function "
                  "does, and ask for float samples in [-1, 1].")


def _expected_failed_checks(estimator):
    if isinstance(estimator, FIRDelayer):
        return {"check_methods_sample_order_invariance": _DELAY_ORDER,
                "check_methods_subset_invariance": _DELAY_SUBSET}
    if isinstance(estimator, (BrainTuner, SpeechFeatureExtractor)):
        return {"check_estimators_dtypes": _INTEGER_AUDIO}
    return {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failed_checks)
def test_sklearn_compatible(estimator, check):
    check(estimator)
