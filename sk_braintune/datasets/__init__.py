"""Datasets: loaders of real fMRI listening experiments and the dataset record.

LeBel et al. 2023 (:func:`load_lebel2023`), Narratives (:func:`load_narratives`), Le Petit
Prince (:func:`load_petit_prince`) and any BIDS dataset with preprocessed derivatives, in
volumes or on surfaces (:func:`load_bids`); :mod:`sk_braintune.datasets.record` documents the
record they all return and :func:`validate_record` checks it.

The built-in simulated story experiment and its probe data live in :mod:`sk_braintune.builtin`.

Every loader returns a :class:`sklearn.utils.Bunch` following one contract (``stories``,
``sample_rate``, ``audio``, ``tr``, ``tr_times``, ``responses``, ``repeats``, ``noise_ceiling``,
``words``, ``phones``, ``split``, ``voxel_labels``, ``space``, ``column_index``, ``mask_img``,
...); :func:`windows_from_dataset` turns it into ``(X_windows, y, groups)``.

Names are imported lazily (PEP 562), so importing this subpackage loads neither SciPy, h5py,
pandas, nibabel, nilearn nor scikit-learn.
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
    "PAPER_TRAIN_STORIES": ".lebel2023",
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
    "validate_record": ".record",
    "is_surface_space": ".record",
    "RECORD_KEYS": ".record",
    "record_image": ".record",
    "save_record_image": ".record",
    "resolve_split": ".record",
    "read_alignment": ".bids",
    "load_bids": ".bids",
    "load_narratives": ".narratives",
    "load_petit_prince": ".petit_prince",
    "read_gentle": ".gentle",
    "select_participant": ".participants",
    "participant_windows": ".participants",
    "dataset_participants": ".participants",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY_EXPORTS)
