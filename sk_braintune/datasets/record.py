"""The dataset record: the one Bunch every loader returns, written down once, and its validator.

Every loader (:func:`~sk_braintune.datasets.load_lebel2023`,
:func:`~sk_braintune.datasets.load_bids`, :func:`~sk_braintune.datasets.load_narratives`,
:func:`~sk_braintune.datasets.load_petit_prince`, and the built-in
:func:`~sk_braintune.builtin.make_story_dataset`) returns a :class:`sklearn.utils.Bunch` with the
keys of :data:`RECORD_KEYS`:

``stories`` : list of str
    Story names, unique, in a fixed order.
``sample_rate`` : int
    Sample rate of ``audio`` (16000).
``audio`` : dict of str to ndarray of shape (n_samples,), float32
    Each story's waveform, mono at 16 kHz. Time 0 of a story's *clock* is the first sample of
    this waveform: every other time in the record is on that clock.
``tr`` : float
    Repetition time (s), the duration of one volume.
``tr_times`` : dict of str to ndarray of shape (n_trs,), float64
    Mid-volume time of each row of ``responses[story]``, in seconds on the audio's clock (can be
    negative for volumes acquired before the sound started), strictly increasing.
``responses`` : dict of str to array of shape (n_trs, n_voxels), float32
    Each story's responses (possibly a lazy array that reads its file on access); every story
    has the same ``n_voxels`` columns. A story heard several times holds the mean of its
    presentations.
``repeats`` : dict of str to array of shape (n_repeats, n_trs, n_voxels)
    Stories presented ``n_repeats >= 2`` times; empty when none.
``noise_ceiling`` : ndarray of shape (n_voxels,) or None
    Schoppe ``cc_max`` from some story's repeats (see :func:`sk_braintune.metrics.noise_ceiling`),
    None when no story has repeats.
``words``, ``phones`` : dict of str to pandas.DataFrame
    Columns ``onset``, ``offset`` (s, on the audio's clock) and ``label``, silences dropped.
``split`` : dict of str to list of str
    ``"train"``, ``"validation"`` and ``"test"`` story lists (each story in at most one).
``voxel_labels`` : ndarray of shape (n_voxels,)
    A label (ROI or kind) per column.
``participants`` : tuple of str
    Participant ids; the top-level ``responses``, ``repeats`` and ``noise_ceiling`` are those
    of ``participants[0]``. ``participant_data`` (optional) maps each participant to a Bunch of
    its own ``responses``, ``repeats`` and ``noise_ceiling`` over the same columns.
``space`` : str or None
    The space of the columns: ``"fsaverage5"``, ``"fsaverage6"``, ``"fsaverage"``, a volume
    template (``"MNI152NLin2009cAsym"``, ``"MNIColin27"``, ...), ``"T1w"``, or None for data
    in a space the toolkit cannot map back (e.g. a participant's own cortical voxels).
``column_index`` : ndarray of shape (n_voxels,), int64
    Where each column lives. On a surface: the vertex index into the left hemisphere's
    vertices followed by the right's (right vertex ``v`` is ``n_left + v``). In a volume: the
    flat C-order index into ``mask_img``'s grid (``np.unravel_index(column_index,
    mask_img.shape[:3])``). With ``space=None``: the column of the loader's source files.
``mask_img`` : nibabel image or None
    The volume grid (a 3-D mask image) of a volume space, None on surfaces and for
    ``space=None``: with ``column_index`` it writes scores back as a NIfTI image.
``description`` : str
    One paragraph saying what was loaded and how.

Loaders add their own keys (``subject``, ``root``, ``phone_set``, ...); :func:`validate_record`
checks the shared ones and leaves the others alone.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["RECORD_KEYS", "SURFACE_SPACES", "validate_record", "is_surface_space",
           "resolve_split", "record_image", "save_record_image"]

RECORD_KEYS = ("stories", "sample_rate", "audio", "tr", "tr_times", "responses", "repeats",
               "noise_ceiling", "words", "phones", "split", "voxel_labels", "participants",
               "space", "column_index", "mask_img", "description")
"""Keys every dataset record has."""

SURFACE_SPACES = ("fsaverage3", "fsaverage4", "fsaverage5", "fsaverage6", "fsaverage7",
                  "fsaverage", "fsLR", "fslr")
"""Names of surface spaces (everything else that is not None is a volume space)."""

_SPLITS = ("train", "validation", "test")


def is_surface_space(space):
    """Whether ``space`` names a surface (fsaverage*, fsLR) rather than a volume.

    Parameters
    ----------
    space : str or None

    Returns
    -------
    bool
    """
    return space is not None and (str(space) in SURFACE_SPACES
                                  or str(space).startswith(("fsaverage", "fsLR")))


def _fail(key, message):
    raise ValueError(f"dataset record: {key!r} {message}")


def _story_dict(record, key, stories):
    value = record[key]
    if not hasattr(value, "keys"):
        _fail(key, f"must be a dict story -> value; got {type(value).__name__}.")
    missing = [s for s in stories if s not in value]
    if missing:
        _fail(key, f"has no entry for the stories {missing}.")
    return value


def _table(record, key, story, duration):
    table = record[key][story]
    columns = getattr(table, "columns", None)
    if columns is None or not {"onset", "offset", "label"} <= set(columns):
        _fail(key, f"[{story!r}] must be a DataFrame with columns onset, offset, label; got "
                   f"{type(table).__name__} with {list(columns) if columns is not None else []}.")
    if len(table) == 0:
        return
    onset = np.asarray(table["onset"], dtype=np.float64)
    offset = np.asarray(table["offset"], dtype=np.float64)
    if not (np.all(np.isfinite(onset)) and np.all(np.isfinite(offset))):
        _fail(key, f"[{story!r}] has onsets or offsets that are not finite.")
    if np.any(offset < onset):
        _fail(key, f"[{story!r}] has intervals ending before they start.")
    # an alignment of another recording (or on another clock) ends after the sound
    if offset.max() > duration + 0.5:
        _fail(key, f"[{story!r}] ends at {offset.max():.2f} s but the audio lasts "
                   f"{duration:.2f} s: the alignment is not on the audio's clock (or belongs to "
                   "another recording).")


def validate_record(record, *, check_values=False):
    """Check that a dataset Bunch follows the record contract (see the module's docstring).

    Shapes are read without reading lazy responses (``np.shape``); ``check_values=True`` also
    reads them to check that every value is finite.

    Parameters
    ----------
    record : sklearn.utils.Bunch or dict
        What a loader returned.
    check_values : bool, default=False
        Also read every response and repeat and check that they are finite float32 values.

    Returns
    -------
    record : the same object
        So that a loader can end with ``return validate_record(Bunch(...))``.

    Raises
    ------
    ValueError
        Naming the first key that breaks the contract and how.

    Examples
    --------
    >>> from sk_braintune.datasets import validate_record
    >>> validate_record(load_lebel2023(root, "UTS03"))  # doctest: +SKIP
    """
    missing = [key for key in RECORD_KEYS if key not in record]
    if missing:
        raise ValueError(f"dataset record: missing keys {missing} (every loader returns "
                         f"{list(RECORD_KEYS)}).")
    stories = record["stories"]
    if isinstance(stories, str) or not all(isinstance(s, str) for s in stories):
        _fail("stories", f"must be a list of str; got {stories!r}.")
    stories = list(stories)
    if not stories or len(set(stories)) != len(stories):
        _fail("stories", f"must be a non-empty list of unique names; got {stories}.")
    rate = record["sample_rate"]
    if not isinstance(rate, numbers.Integral) or rate <= 0:
        _fail("sample_rate", f"must be a positive int; got {rate!r}.")
    tr = record["tr"]
    if not isinstance(tr, numbers.Real) or not np.isfinite(tr) or tr <= 0:
        _fail("tr", f"must be a positive float (s); got {tr!r}.")

    audio = _story_dict(record, "audio", stories)
    times = _story_dict(record, "tr_times", stories)
    responses = _story_dict(record, "responses", stories)
    n_voxels = None
    for story in stories:
        wave = audio[story]
        if not isinstance(wave, np.ndarray) or wave.ndim != 1 or wave.dtype != np.float32 \
                or wave.size == 0:
            _fail("audio", f"[{story!r}] must be a non-empty 1-D float32 ndarray; got "
                           f"{getattr(wave, 'dtype', type(wave))} of shape {np.shape(wave)}.")
        t = np.asarray(times[story])
        if t.ndim != 1 or t.dtype != np.float64 or t.size == 0:
            _fail("tr_times", f"[{story!r}] must be a non-empty 1-D float64 array; got "
                              f"{t.dtype} of shape {t.shape}.")
        if not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0):
            _fail("tr_times", f"[{story!r}] must be finite and strictly increasing.")
        duration = wave.size / rate
        if t[0] - tr / 2 >= duration:
            _fail("tr_times", f"[{story!r}] starts at {t[0]:.2f} s, after the audio "
                              f"({duration:.2f} s) ended: not on the audio's clock.")
        shape = np.shape(responses[story])
        if len(shape) != 2 or shape[0] != t.size:
            _fail("responses", f"[{story!r}] must have shape (n_trs={t.size}, n_voxels); got "
                               f"{shape}.")
        if getattr(responses[story], "dtype", None) != np.float32:
            _fail("responses", f"[{story!r}] must be float32; got "
                               f"{getattr(responses[story], 'dtype', None)}.")
        if n_voxels is None:
            n_voxels = shape[1]
        elif shape[1] != n_voxels:
            _fail("responses", f"[{story!r}] has {shape[1]} columns but "
                               f"{stories[0]!r} has {n_voxels}.")
        for key in ("words", "phones"):
            _story_dict(record, key, stories)
            _table(record, key, story, duration)

    repeats = record["repeats"]
    if not hasattr(repeats, "items"):
        _fail("repeats", f"must be a dict story -> (n_repeats, n_trs, n_voxels); got "
                         f"{type(repeats).__name__}.")
    for story, block in repeats.items():
        if story not in stories:
            _fail("repeats", f"has story {story!r}, which is not in stories.")
        shape = np.shape(block)
        if len(shape) != 3 or shape[0] < 2 or shape[1:] != (len(times[story]), n_voxels):
            _fail("repeats", f"[{story!r}] must have shape (n_repeats >= 2, "
                             f"{len(times[story])}, {n_voxels}); got {shape}.")
    ceiling = record["noise_ceiling"]
    if ceiling is None:
        if len(repeats):
            _fail("noise_ceiling", "is None although some stories have repeats.")
    elif np.shape(ceiling) != (n_voxels,):
        _fail("noise_ceiling", f"must have shape ({n_voxels},); got {np.shape(ceiling)}.")

    split = record["split"]
    if not hasattr(split, "items"):
        _fail("split", f"must be a dict of story lists; got {type(split).__name__}.")
    seen = {}
    for name in _SPLITS:
        if name not in split:
            _fail("split", f"has no {name!r} list (keys: {list(split)}).")
    for name, members in split.items():
        for story in members:
            if story not in stories:
                _fail("split", f"[{name!r}] names {story!r}, which is not in stories.")
            if name in _SPLITS and story in seen:
                _fail("split", f"puts {story!r} in both {seen[story]!r} and {name!r}.")
            if name in _SPLITS:
                seen[story] = name
    labels = record["voxel_labels"]
    if labels is not None and np.shape(labels) != (n_voxels,):
        _fail("voxel_labels", f"must have shape ({n_voxels},); got {np.shape(labels)}.")
    participants = record["participants"]
    if isinstance(participants, str) or not participants:
        _fail("participants", f"must be a non-empty tuple of ids; got {participants!r}.")
    per = record.get("participant_data")
    if per is not None:
        for participant in participants:
            if participant not in per:
                _fail("participant_data", f"has no entry for participant {participant!r}.")
            for story in stories:
                shape = np.shape(per[participant]["responses"][story])
                if shape != np.shape(responses[story]):
                    _fail("participant_data", f"[{participant!r}] responses of {story!r} "
                                              f"have shape {shape}, not "
                                              f"{np.shape(responses[story])}.")

    space = record["space"]
    if space is not None and not isinstance(space, str):
        _fail("space", f"must be a str or None; got {space!r}.")
    index = np.asarray(record["column_index"])
    if index.shape != (n_voxels,) or not np.issubdtype(index.dtype, np.integer):
        _fail("column_index", f"must be an int array of shape ({n_voxels},); got "
                              f"{index.dtype} of shape {index.shape}.")
    if index.size and (index.min() < 0 or np.unique(index).size != index.size):
        _fail("column_index", "must hold unique non-negative indices.")
    mask_img = record["mask_img"]
    if is_surface_space(space) or space is None:
        if space is not None and mask_img is not None:
            _fail("mask_img", f"must be None on the surface space {space!r}.")
    else:
        if mask_img is None or len(getattr(mask_img, "shape", ())) < 3:
            _fail("mask_img", f"must be a 3-D nibabel image for the volume space {space!r}.")
        n_grid = int(np.prod(mask_img.shape[:3]))
        if index.size and index.max() >= n_grid:
            _fail("column_index", f"indexes past the mask grid ({n_grid} voxels of shape "
                                  f"{tuple(mask_img.shape[:3])}).")
    if not isinstance(record["description"], str):
        _fail("description", "must be a str.")

    if check_values:
        for key, blocks in (("responses", responses), ("repeats", repeats)):
            for story, block in blocks.items():
                values = np.asarray(block)
                if values.dtype != np.float32:
                    _fail(key, f"[{story!r}] must be float32; got {values.dtype}.")
                if not np.all(np.isfinite(values)):
                    _fail(key, f"[{story!r}] holds NaN or infinite values.")
    return record


def resolve_split(split, stories, *, repeated=()):
    """The train/validation/test story lists of a record, checked.

    Parameters
    ----------
    split : dict or None
        ``{"train": [...], "validation": [...], "test": [...]}`` (missing keys are empty). None
        puts the first story of ``repeated`` (else the last story) in test and the others in
        train.
    stories : list of str
        The loaded stories.
    repeated : sequence of str, default=()
        Stories with repeats (the natural test stories: they give the noise ceiling).

    Returns
    -------
    split : dict of str to list of str

    Raises
    ------
    ValueError
        For unknown keys, stories that were not loaded, or a story in two lists.
    """
    stories = list(stories)
    if split is None:
        test = [repeated[0]] if len(repeated) else ([stories[-1]] if len(stories) > 1 else [])
        return {"train": [s for s in stories if s not in test], "validation": [],
                "test": test}
    unknown = set(split) - set(_SPLITS)
    if unknown:
        raise ValueError(f"split keys must be {list(_SPLITS)}; got {sorted(unknown)}.")
    out = {key: list(split.get(key, [])) for key in _SPLITS}
    seen = {}
    for key, names in out.items():
        for name in names:
            if name not in stories:
                raise ValueError(f"split[{key!r}] names story {name!r}, which was not loaded; "
                                 f"loaded stories: {stories}.")
            if name in seen:
                raise ValueError(f"story {name!r} is in both split[{seen[name]!r}] and "
                                 f"split[{key!r}].")
            seen[name] = key
    return out


def record_image(values, record, *, fill=np.nan):
    """Column values of a record (e.g. per-voxel scores) as an image in the record's space.

    Parameters
    ----------
    values : array-like of shape (n_voxels,) or (n_maps, n_voxels)
        One value per column of ``record.responses`` (several maps become volumes / data
        arrays).
    record : sklearn.utils.Bunch
        The dataset record: its ``space``, ``column_index``, and ``mask_img`` (volumes) or
        ``n_vertices`` (surfaces, ``(n_left, n_right)``).
    fill : float, default=nan
        Value of the voxels or vertices without a column (outside the mask, medial wall).

    Returns
    -------
    image : nibabel.Nifti1Image or tuple of two nibabel.gifti.GiftiImage
        A 3-D (or 4-D for several maps) NIfTI on ``mask_img``'s grid, or the left and right
        hemispheres with one data array per map.

    Raises
    ------
    ValueError
        When the record has no space to map back to (``space=None``), or ``values`` does not
        have one value per column.
    """
    import nibabel as nib

    values = np.asarray(values, dtype=np.float32)
    maps = values[None] if values.ndim == 1 else values
    index = np.asarray(record["column_index"])
    if maps.ndim != 2 or maps.shape[1] != index.size:
        raise ValueError(f"values must have shape ({index.size},) or (n_maps, {index.size}): "
                         f"one value per column of the record; got {values.shape}.")
    space = record["space"]
    if space is None:
        raise ValueError("the record's space is None (its columns are not on a template or "
                         "surface), so its values cannot be written as an image.")
    if is_surface_space(space):
        n_left, n_right = (int(n) for n in record["n_vertices"])
        full = np.full((maps.shape[0], n_left + n_right), fill, dtype=np.float32)
        full[:, index] = maps
        return tuple(nib.GiftiImage(darrays=[nib.gifti.GiftiDataArray(
            np.ascontiguousarray(row[part]), intent="NIFTI_INTENT_NONE",
            datatype="NIFTI_TYPE_FLOAT32") for row in full])
            for part in (slice(0, n_left), slice(n_left, None)))
    mask_img = record["mask_img"]
    shape = tuple(mask_img.shape[:3])
    full = np.full((maps.shape[0], int(np.prod(shape))), fill, dtype=np.float32)
    full[:, index] = maps
    data = full.reshape(maps.shape[0], *shape)
    data = data[0] if values.ndim == 1 else np.moveaxis(data, 0, -1)
    return nib.Nifti1Image(data, mask_img.affine)


def save_record_image(values, record, path, *, fill=np.nan):
    """Write column values as a NIfTI file, or a GIfTI pair on surfaces.

    Parameters
    ----------
    values : array-like of shape (n_voxels,) or (n_maps, n_voxels)
    record : sklearn.utils.Bunch
    path : str or path-like
        File stem, e.g. ``"scores_layer07"``: ``<stem>.nii.gz`` in a volume space,
        ``<stem>_hemi-L.func.gii`` and ``<stem>_hemi-R.func.gii`` on a surface (the space is
        added as ``_space-<space>`` before the hemisphere).
    fill : float, default=nan

    Returns
    -------
    paths : list of pathlib.Path
        The files written.
    """
    from pathlib import Path

    import nibabel as nib

    stem = Path(path)
    stem = stem.with_name(stem.name.split(".")[0])
    stem.parent.mkdir(parents=True, exist_ok=True)
    image = record_image(values, record, fill=fill)
    if isinstance(image, tuple):
        paths = [stem.with_name(f"{stem.name}_space-{record['space']}_hemi-{h}.func.gii")
                 for h in "LR"]
    else:
        image, paths = (image,), [stem.with_name(f"{stem.name}_space-{record['space']}"
                                                 ".nii.gz")]
    for img, target in zip(image, paths):
        nib.save(img, target)
    return paths
