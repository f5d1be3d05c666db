"""The brain-tuning study: the library pipeline behind ``sk-braintune demo``.

:func:`run_braintuning_study` runs the paper's study on a dataset for one pretrained model (brain-
tune, tune the controls, evaluate pretrained, brain-tuned and controls on held-out stories); its
stage functions are public so that scripts can repeat the study over seeds and sizes. The
pipeline logs and never prints: the ``demo`` command (:mod:`sk_braintune.commands.demo`) prints.

Names are imported lazily, so importing this package loads neither torch nor transformers.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY_EXPORTS = {
    "StudyInputError": "sk_braintune.exceptions",
    "DemoSettings": ".settings",
    "StoryDatasetSettings": ".settings",
    "TunerSettings": ".settings",
    "ProbeSettings": ".settings",
    "CONTROL_MODELS": ".settings",
    "DEFAULT_CONTROLS": ".settings",
    "RIDGE_BACKENDS": ".settings",
    "demo_settings": ".pipeline",
    "model_names": ".pipeline",
    "control_targets": ".pipeline",
    "study_dataset": ".pipeline",
    "run_braintuning_study": ".pipeline",
    "shared_layer_features": ".pipeline",
    "mean_of_results": ".pipeline",
    "results_rows": ".pipeline",
    "MODEL_NAMES": ".pipeline",
    "ANALYSES": ".pipeline",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY_EXPORTS)
