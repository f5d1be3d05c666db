"""Datasets: loaders of real fMRI listening experiments (LeBel et al. 2023) and the dataset record.

The built-in simulated story experiment and its probe data live in :mod:`sk_braintune.builtin`.

Every loader returns a :class:`sklearn.utils.Bunch` following one contract (``stories``,
``sample_rate``, ``audio``, ``tr``, ``tr_times``, ``responses``, ``repeats``, ``noise_ceiling``,
``words``, ``phones``, ``split``, ``voxel_labels``, ...); :func:`windows_from_dataset` turns it
into ``(X_windows, y, groups)``.

Names are imported lazily (PEP 562), so importing this subpackage loads neither SciPy, h5py,
pandas nor scikit-learn.
"""

from __future__ import annotations

from .._lazy import lazy_exports


# public name -> module that defines it (relative to this package unless absolute)

_LAZY_EXPORTS = {
    "load_lebel2023": ".lebel2023",
    "check_lebel2023": ".lebel2023",
    "lebel2023_tr_times": ".lebel2023",
    "lebel2023_paths": ".lebel2023",
    "LEBEL2023_TRIM": ".lebel2023",
    "TEST_STORY": ".lebel2023",
    "TEST_STORY_EXTRA_TRIM": ".lebel2023",
    "NaNVoxelWarning": ".lebel2023",
    "LazyStoryArray": ".lebel2023",
    "read_textgrid": ".textgrid",
    "words_and_phones": ".textgrid",
    "drop_silences": ".textgrid",
    "strip_stress": ".textgrid",
    "SILENCE_LABELS": ".textgrid",
    "load_audio": ".audio",
    "to_mono_16k": ".audio",
    "windows_from_dataset": "sk_braintune.windows",
    "select_participant": ".participants",
    "participant_windows": ".participants",
    "dataset_participants": ".participants",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY_EXPORTS)
