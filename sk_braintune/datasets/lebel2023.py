"""Loader of the LeBel et al. (2023) natural-speech fMRI dataset (OpenNeuro ds003020).

Layout read from a local copy (``root`` is the dataset folder, or a folder holding
``ds003020/``)::

    root/derivative/preprocessed_data/UTS0X/<story>.hf5   dataset "data" (n_trs, n_voxels);
                                                           the test story also has
                                                           "individual_repeats" (R, n_trs, n_voxels)
    root/stimuli/<story>.wav                               story audio (any rate, mono or stereo)
    root/derivative/TextGrids/<story>.TextGrid             tier 0 phones (ARPAbet), tier 1 words
    root/derivative/respdict.json                          story -> number of TRs (n)

**TR times (the community convention).** The release has no trigger files. HuthLab's loaders (reused by the brain-tuning paper) simulate
them: ``n - 5`` triggers every ``trigger_tr = 2.0`` s, the sound starting 10 s after the first,
so trigger times relative to the sound are ``arange(n - 5) * 2.0 - 10.0``; TR (mid-volume) times
are those plus ``trigger_tr / 2``. Features sampled at these times are trimmed ``[10:-5]``, which
matches the rows of ``data``: a story with ``n`` TRs in ``respdict.json`` has ``n - 20`` rows.
The loader returns the trimmed times, one per row of the responses, so that the two can never
drift apart, and fails when the counts disagree. The grid uses 2.0 s although the acquisition TR
is 2.0045 s: ``trigger_tr`` keeps the convention, ``tr`` (the bunch's ``tr``, used for the end of
each volume when cutting audio windows) the acquisition value.

The test story ``wheretheressmoke`` drops 40 more TRs (see ``extra_trim``).
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

import numpy as np

from ..exceptions import NaNVoxelWarning
from ..metrics import noise_ceiling
from ..preprocessing import nonfinite_columns, zero_nonfinite
from .audio import TARGET_SAMPLE_RATE
from .record import resolve_split

__all__ = [
    "ACQUISITION_TR",
    "TRIGGER_TR",
    "SOUND_START",
    "RESPDICT_PAD",
    "LEBEL2023_TRIM",
    "TEST_STORY",
    "TEST_STORY_EXTRA_TRIM",
    "VALIDATION_STORIES",
    "NAN_POLICIES",
    "PAPER_TRAIN_STORIES",
    "NaNVoxelWarning",
    "LazyStoryArray",
    "lebel2023_tr_times",
    "lebel2023_paths",
    "check_lebel2023",
    "load_lebel2023",
]

ACQUISITION_TR = 2.0045
"""Repetition time of the acquisition (s)."""
TRIGGER_TR = 2.0
"""Spacing (s) of the simulated triggers in the community convention."""
SOUND_START = 10.0
"""Seconds from the first simulated trigger to the start of the sound."""
RESPDICT_PAD = 5
"""``respdict[story] - RESPDICT_PAD`` triggers are simulated."""
LEBEL2023_TRIM = (10, 5)
"""TRs cut from the start and end of the simulated grid to match the rows of ``data``."""
TEST_STORY = "wheretheressmoke"
"""The paper's test story (the one with ``individual_repeats``)."""
TEST_STORY_EXTRA_TRIM = 40
"""TRs the test story drops in addition to :data:`LEBEL2023_TRIM` (at its start by default)."""
VALIDATION_STORIES = ("stagefright", "life")
"""The paper's validation stories."""
NAN_POLICIES = ("zero", "drop", "raise")
"""Values of ``load_lebel2023(nan_policy=...)`` (NaN and inf are treated alike)."""
PAPER_TRAIN_STORIES = (
    "adollshouse", "adventuresinsayingyes", "alternateithicatom", "avatar", "buck", "exorcism",
    "eyespy", "fromboyhoodtofatherhood", "hangtime", "haveyoumethimyet", "howtodraw",
    "inamoment", "itsabox", "legacy", "naked", "odetostepfather", "sloth", "souls",
    "stagefright", "swimmingwithastronauts", "thatthingonmyarm", "theclosetthatateeverything",
    "tildeath", "undertheinfluence")
"""The 24 training stories of the brain-tuning paper's evaluation.

Its ``eval_utils``'s ``train_stories``; ``stagefright`` trains there, although it validates the
tuning.
"""

_LAYOUT = ("root/derivative/preprocessed_data/<subject>/<story>.hf5, root/stimuli/<story>.wav, "
           "root/derivative/TextGrids/<story>.TextGrid and root/derivative/respdict.json")


def lebel2023_tr_times(n_trs, *, trigger_tr=TRIGGER_TR, trim=LEBEL2023_TRIM, extra_trim=(0, 0)):
    """Mid-volume TR times of one story by the simulated-trigger convention.

    Parameters
    ----------
    n_trs : int
        ``respdict[story]``, the story's number of TRs in ``respdict.json``.
    trigger_tr : float, default=2.0
        Spacing of the simulated triggers (s).
    trim : (int, int), default=(10, 5)
        TRs cut at the start and end of the grid; ``(0, 0)`` returns the whole grid.
    extra_trim : (int, int) or int, default=(0, 0)
        Further TRs cut at the start and end (an int cuts at the start).

    Returns
    -------
    tr_times : ndarray of shape (n_trs - 5 - sum(trim) - sum(extra_trim),), float64
        ``(arange(n_trs - 5) * trigger_tr - 10.0 + trigger_tr / 2)[start:n - end]``, in seconds
        relative to the start of the audio.

    Examples
    --------
    >>> lebel2023_tr_times(25)
    array([11., 13., 15., 17., 19.])
    """
    n_trs = int(n_trs)
    start, end = _pair(trim, "trim")
    extra_start, extra_end = _pair(extra_trim, "extra_trim")
    start, end = start + extra_start, end + extra_end
    n_grid = n_trs - RESPDICT_PAD
    if n_grid - start - end <= 0:
        raise ValueError(f"a story of {n_trs} TRs leaves no TRs after removing "
                         f"{RESPDICT_PAD} + {start} + {end}.")
    grid = np.arange(n_grid, dtype=np.float64) * trigger_tr - SOUND_START + trigger_tr / 2.0
    return grid[start:n_grid - end]


def _pair(value, name):
    if np.isscalar(value):
        value = (int(value), 0)
    value = tuple(int(v) for v in value)
    if len(value) != 2 or min(value) < 0:
        raise ValueError(f"{name} must be a non-negative int or a pair (start, end); got "
                         f"{value!r}.")
    return value


def _find_root(root):
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"LeBel et al. (2023) root folder not found: {root}. Download "
                                f"OpenNeuro ds003020 and pass its folder (expected {_LAYOUT}).")
    for candidate in (root, root / "ds003020"):
        if (candidate / "derivative" / "preprocessed_data").is_dir():
            return candidate
    raise FileNotFoundError(f"{root} does not look like ds003020: "
                            f"{root / 'derivative' / 'preprocessed_data'} is missing (expected "
                            f"{_LAYOUT}).")


def _subject_name(subject):
    if isinstance(subject, (int, np.integer)):
        return f"UTS{int(subject):02d}"
    text = str(subject).strip()
    match = re.fullmatch(r"(?i)(?:uts)?0*(\d+)", text)
    return f"UTS{int(match.group(1)):02d}" if match else text


def lebel2023_paths(root, subject, story):
    """Paths of the files the loader reads for one story.

    Parameters
    ----------
    root : str or path-like
        Dataset folder (or a folder holding ``ds003020/``).
    subject : str or int
        ``"UTS01"``, ``"1"`` or ``1``.
    story : str
        Story name.

    Returns
    -------
    paths : dict of str to pathlib.Path
        Keys ``"responses"``, ``"audio"``, ``"textgrid"``, ``"respdict"``.
    """
    root = _find_root(root)
    return {
        "responses": root / "derivative" / "preprocessed_data" / _subject_name(subject)
        / f"{story}.hf5",
        "audio": root / "stimuli" / f"{story}.wav",
        "textgrid": root / "derivative" / "TextGrids" / f"{story}.TextGrid",
        "respdict": root / "derivative" / "respdict.json",
    }


class LazyStoryArray(np.lib.mixins.NDArrayOperatorsMixin):
    """One story's responses (or repeats), read from its hf5 file on every access.

    Behaves like the float32 array it stands for: ``shape``, ``dtype``, ``ndim``, ``len``,
    indexing (``a[rows]``, ``a[:, voxels]``), ``np.asarray(a)``, NumPy ufuncs and operators; any
    other ndarray attribute (``a.mean(0)``, ``a.T``) reads the array first. Nothing is held in
    memory between accesses, and the object pickles as a few paths and indices, so it travels
    cheaply to worker processes and cluster jobs. For a 2-D array, indexing by rows reads only
    those rows from the file.

    Each access reads the file's rows, replaces NaN and +-inf by 0, maps the file's voxels to the output
    voxel space (``mapping``) and keeps the output columns ``columns``.

    Parameters
    ----------
    path : str or path-like
        The hf5 file.
    dataset : {"data", "individual_repeats"}
        HDF5 dataset: ``(n_file_rows, n_file_voxels)`` or ``(n_repeats, n_file_rows,
        n_file_voxels)``.
    rows : (int, int)
        ``start, stop`` of the kept rows (TRs) in the file.
    mapping : ndarray of shape (n_common,) of int, or (n_file_voxels, n_common) matrix, optional
        File voxels to a common voxel space: an index of file voxels, or a projection matrix
        (dense or ``scipy.sparse``) applied as ``responses @ mapping``. None keeps the file's
        voxels.
    columns : ndarray of int, optional
        Columns of the mapped space kept (e.g. voxels without NaN). None keeps all.
    n_file_voxels : int
        Voxels in the file (for the shape).
    n_repeats : int, optional
        For ``"individual_repeats"``: the number of repeats (the leading axis).

    Attributes
    ----------
    shape : tuple of int
        ``(n_trs, n_voxels)``, or ``(n_repeats, n_trs, n_voxels)`` for repeats.
    dtype : numpy.dtype
        Always float32.
    """

    def __init__(self, path, dataset, rows, *, mapping=None, columns=None, n_file_voxels,
                 n_repeats=None):
        self.path = str(path)
        self.dataset = dataset
        self.rows = (int(rows[0]), int(rows[1]))
        self.mapping = mapping
        self.columns = columns
        self.n_file_voxels = int(n_file_voxels)
        self.n_repeats = n_repeats

    @property
    def shape(self):
        """Shape of the array, ``(n_trs, n_voxels)`` or ``(R, n_trs, n_voxels)``."""
        if self.columns is not None:
            n_out = len(self.columns)
        elif self.mapping is None:
            n_out = self.n_file_voxels
        else:
            n_out = self.mapping.shape[-1] if self.mapping.ndim == 2 else len(self.mapping)
        lead = () if self.n_repeats is None else (int(self.n_repeats),)
        return (*lead, self.rows[1] - self.rows[0], int(n_out))

    dtype = np.dtype(np.float32)

    @property
    def ndim(self):
        """Number of dimensions."""
        return len(self.shape)

    @property
    def size(self):
        """Number of elements."""
        return int(np.prod(self.shape))

    @property
    def nbytes(self):
        """Bytes the array takes once read."""
        return self.size * self.dtype.itemsize

    def __len__(self):
        return self.shape[0]

    def __repr__(self):
        return (f"LazyStoryArray({self.path!r}, {self.dataset!r}, shape={self.shape}, "
                f"dtype=float32)")

    def _read(self, row_index=None):
        """Rows (file-relative indices, sorted unique, or None for all) -> output block."""
        import h5py

        start, stop = self.rows
        with h5py.File(self.path, "r") as f:
            source = f[self.dataset]
            if row_index is None:
                selection = slice(start, stop)
            elif row_index.size and np.all(np.diff(row_index) == 1):
                selection = slice(start + int(row_index[0]), start + int(row_index[-1]) + 1)
            else:
                selection = start + row_index
            if self.n_repeats is None:
                block = source[selection]
            else:
                block = source[:, selection]
        block = zero_nonfinite(np.asarray(block, dtype=np.float32))
        if self.mapping is not None:
            if self.mapping.ndim == 1:
                block = block[..., self.mapping]
            else:
                flat = block.reshape(-1, block.shape[-1])
                mapped = self.mapping.T @ flat.T  # works for dense and scipy.sparse matrices
                block = np.asarray(mapped, dtype=np.float32).T.reshape(*block.shape[:-1], -1)
        if self.columns is not None:
            block = block[..., self.columns]
        return np.ascontiguousarray(block, dtype=np.float32)

    def __array__(self, dtype=None, copy=None):
        block = self._read()
        return block if dtype is None else block.astype(dtype, copy=False)

    def __getitem__(self, key):
        if self.n_repeats is not None:
            return self._read()[key]
        key = key if isinstance(key, tuple) else (key,)
        if not key or key[0] is Ellipsis or key[0] is None:
            return self._read()[key]
        n_rows = self.shape[0]
        first = key[0]
        if isinstance(first, (int, np.integer)):
            index = int(first) + n_rows if first < 0 else int(first)
            if not 0 <= index < n_rows:
                raise IndexError(f"row {first} is out of range for {n_rows} rows")
            return self._read(np.array([index]))[(0, *key[1:])]
        wanted = np.arange(n_rows)[first]
        unique, inverse = np.unique(wanted, return_inverse=True)
        block = self._read(unique)
        if isinstance(first, slice):
            # a slice stays a slice (a basic index), so later fancy indices do not broadcast
            # against it; the rows read are sorted, a negative step reverses them
            rows = slice(None, None, -1) if (first.step or 1) < 0 else slice(None)
            return block[(rows, *key[1:])]
        return block[(inverse.reshape(wanted.shape), *key[1:])]

    def __iter__(self):
        yield from np.asarray(self)

    def take_columns(self, columns):
        """A lazy array of some of the voxels only (nothing is read).

        Parameters
        ----------
        columns : array-like of int or bool of shape (n_voxels,)
            Voxels (columns) to keep, e.g. those with a noise ceiling above a threshold.

        Returns
        -------
        subset : LazyStoryArray
            Reads the same file; its columns are ``self[..., columns]``.
        """
        columns = np.arange(self.shape[-1])[np.asarray(columns)]
        if columns.ndim != 1:
            raise ValueError("columns must be a 1-D array of voxel indices or a voxel mask.")
        kept = columns if self.columns is None else np.asarray(self.columns)[columns]
        return LazyStoryArray(self.path, self.dataset, self.rows, mapping=self.mapping,
                              columns=kept, n_file_voxels=self.n_file_voxels,
                              n_repeats=self.n_repeats)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        inputs = tuple(np.asarray(x) if isinstance(x, LazyStoryArray) else x for x in inputs)
        if "out" in kwargs:
            kwargs["out"] = tuple(np.asarray(x) if isinstance(x, LazyStoryArray) else x
                                  for x in kwargs["out"])
        return getattr(ufunc, method)(*inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        if func is np.concatenate:
            return _concatenate(*args, **kwargs)
        return func(*_materialize(args), **_materialize(kwargs))

    def astype(self, dtype, copy=True):
        """The array read from the file, converted to ``dtype``.

        Parameters
        ----------
        dtype : numpy dtype
        copy : bool, default=True
            Accepted for NumPy compatibility: the result is always a new array (read from the
            file).

        Returns
        -------
        array : ndarray
        """
        return self._read().astype(dtype, copy=False)

    def __getattr__(self, name):
        # private names stay private (pickle and copy probe them); anything else an ndarray
        # has reads the array, so code written for in-memory responses keeps working
        if name.startswith("_") or not hasattr(np.ndarray, name):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(self._read(), name)


def _materialize(value):
    """Lazy arrays inside (nested) arguments -> ndarrays."""
    if isinstance(value, LazyStoryArray):
        return np.asarray(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_materialize(v) for v in value)
    if isinstance(value, dict):
        return {k: _materialize(v) for k, v in value.items()}
    return value


def _concatenate(arrays, axis=0, out=None, dtype=None, **kwargs):
    """``np.concatenate`` that reads lazy arrays one at a time into the preallocated result.

    Plain NumPy would first read every story (a list of copies) and then concatenate (a second
    copy of everything); this holds one story at a time besides the result.
    """
    arrays = list(arrays)
    if axis != 0 or kwargs or not arrays:
        return np.concatenate(_materialize(arrays), axis=axis, out=out, dtype=dtype, **kwargs)
    shapes = [tuple(np.shape(a)) for a in arrays]
    if any(len(shape) == 0 or shape[1:] != shapes[0][1:] for shape in shapes):
        return np.concatenate(_materialize(arrays), axis=axis, out=out, dtype=dtype)
    if dtype is None:
        dtype = np.result_type(*[a.dtype if hasattr(a, "dtype") else np.asarray(a).dtype
                                 for a in arrays])
    total = sum(shape[0] for shape in shapes)
    result = np.empty((total, *shapes[0][1:]), dtype=dtype) if out is None else out
    if result.shape != (total, *shapes[0][1:]):
        raise ValueError(f"out has shape {result.shape}; expected {(total, *shapes[0][1:])}")
    start = 0
    for array, shape in zip(arrays, shapes):
        result[start:start + shape[0]] = np.asarray(array)
        start += shape[0]
    return result


def _open_hf5(path):
    """``h5py.File(path, "r")``; a truncated, empty or foreign file is a ValueError naming it."""
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as exc:
        size = Path(path).stat().st_size if Path(path).exists() else 0
        raise ValueError(f"{path} cannot be read as HDF5 ({size} bytes; h5py: {exc}); the file "
                         "is truncated, empty or not an hf5 file. Download it again.") from None


def _inspect_story(path, story):
    """Shapes of 'data' and 'individual_repeats' in one file (nothing is read)."""
    with _open_hf5(path) as f:
        if "data" not in f:
            raise ValueError(f"{path} has no dataset 'data' (found {sorted(f)}); expected the "
                             "ds003020 preprocessed responses (n_trs, n_voxels).")
        shape = tuple(f["data"].shape)
        repeats_shape = (tuple(f["individual_repeats"].shape) if "individual_repeats" in f
                         else None)
    if len(shape) != 2:
        raise ValueError(f"{path}: 'data' must be 2-D (n_trs, n_voxels); got shape {shape}.")
    if shape[0] == 0 or shape[1] == 0:
        raise ValueError(f"story {story!r} is empty: {path} holds 'data' of shape {shape}.")
    if repeats_shape is not None and (len(repeats_shape) != 3 or repeats_shape[1:] != shape):
        raise ValueError(f"{path}: 'individual_repeats' must have shape (n_repeats, "
                         f"{shape[0]}, {shape[1]}) to match 'data'; got {repeats_shape}.")
    return shape, repeats_shape


def _nonfinite_voxels(path, rows, has_repeats, chunk_rows=64):
    """Voxels (file columns) with a NaN or inf in the kept rows of 'data' or 'individual_repeats'.

    Read in blocks of rows so that memory stays at a few rows of the file.
    """
    start, stop = rows
    with _open_hf5(path) as f:
        mask = np.zeros(f["data"].shape[1], dtype=bool)
        blocks = [(f["data"], None)]
        if has_repeats:
            blocks += [(f["individual_repeats"], k)
                       for k in range(f["individual_repeats"].shape[0])]
        for source, repeat in blocks:
            for first in range(start, stop, chunk_rows):
                rows_read = slice(first, min(stop, first + chunk_rows))
                try:
                    block = source[rows_read] if repeat is None else source[repeat, rows_read]
                except OSError as exc:  # the header is intact but the data are cut short
                    raise ValueError(f"{path}: rows {rows_read.start}-{rows_read.stop} of "
                                     f"{source.name!r} cannot be read (h5py: {exc}); the file "
                                     "is truncated or damaged. Download it again.") from None
                mask |= nonfinite_columns(block)
    return mask


def _read_respdict(path):
    """``respdict.json``: story -> number of TRs, checked (the message names the file)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; it gives each story's number of TRs "
                                f"(expected {_LAYOUT}).")
    try:
        with open(path, encoding="utf-8") as f:
            respdict = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); it should map each story to its "
                         'number of TRs, e.g. {"alternateithicatom": 373}.') from None
    if not isinstance(respdict, dict):
        raise ValueError(f"{path} must hold a JSON object (story -> number of TRs); got a "
                         f"{type(respdict).__name__}.")
    bad = {story: n for story, n in respdict.items()
           if isinstance(n, bool) or not isinstance(n, (int, float)) or n != int(n) or n < 0}
    if bad:
        first = dict(list(bad.items())[:3])
        raise ValueError(f"{path}: every value must be a whole number of TRs; got {first}.")
    return {story: int(n) for story, n in respdict.items()}


def _alignment(textgrid_path, duration, audio_path, tolerance):
    """Words and phones of one story, their timing checked against the audio's duration."""
    from .textgrid import read_textgrid, words_and_phones

    tiers = read_textgrid(textgrid_path)
    words, phones = words_and_phones(tiers)
    names = list(tiers)
    for table, tier in ((phones, names[0]), (words, names[1] if len(names) > 1 else names[0])):
        if len(table) and table["offset"].max() > duration + tolerance:
            late = table.loc[table["offset"] > duration + tolerance].iloc[0]
            raise ValueError(
                f"{textgrid_path}, tier {tier!r}: interval {late['label']!r} "
                f"[{late['onset']:.2f}, {late['offset']:.2f}] s ends after the audio "
                f"{audio_path} ({duration:.2f} s); the alignment belongs to another (or a "
                "longer) recording.")
    return words, phones


def _row_range(story, path, n_file_rows, n_respdict, extra):
    """Rows of the file kept, checked against the convention (and the story's extra trim)."""
    trim_start, trim_end = LEBEL2023_TRIM
    convention_rows = n_respdict - RESPDICT_PAD - trim_start - trim_end
    expected = convention_rows - sum(extra)
    if n_file_rows == expected:  # delivered already trimmed (or no extra trim)
        return 0, n_file_rows
    if n_file_rows == convention_rows and sum(extra):
        return extra[0], n_file_rows - extra[1]
    extra_note = (f" (or {convention_rows} before the extra trim of {extra} TRs)"
                  if sum(extra) else "")
    raise ValueError(
        f"story {story!r}: {path} has {n_file_rows} rows but respdict.json gives {n_respdict} "
        f"TRs; the convention (n - {RESPDICT_PAD} simulated triggers trimmed "
        f"[{trim_start}:-{trim_end}]) expects {expected} rows{extra_note}. The responses and "
        "respdict.json do not belong together (wrong subject folder or an edited file?).")


def _default_split(stories):
    test = [s for s in stories if s == TEST_STORY]
    validation = [s for s in stories if s in VALIDATION_STORIES]
    train = [s for s in stories if s not in test and s not in validation]
    return {"train": train, "validation": validation, "test": test}


def _check_split(split, stories):
    """The paper's split by default, else ``split`` checked as the record does."""
    if split is None:
        return _default_split(stories)
    return resolve_split(split, stories)


def _voxel_labels(voxel_labels, n_voxels):
    if voxel_labels is None:
        return np.full(n_voxels, "unlabelled", dtype="<U10")
    if isinstance(voxel_labels, (str, os.PathLike)):
        path = Path(voxel_labels)
        if not path.is_file():
            raise FileNotFoundError(f"voxel label file not found: {path}")
        labels = (np.load(path, allow_pickle=False) if path.suffix == ".npy"
                  else np.asarray(path.read_text().split()))
    else:
        labels = np.asarray(voxel_labels)
    labels = labels.astype(str).ravel()
    if labels.shape != (n_voxels,):
        raise ValueError(f"voxel_labels must have one label per voxel of the responses "
                         f"({n_voxels}, before any NaN dropping); got {labels.shape[0]}.")
    return labels


def _common_space_mapping(spec, participant, n_file_voxels):
    """A participant's map to the common voxel space: int index (n_common,) or matrix."""
    source = spec
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"common_space[{participant!r}]: file not found: {path}")
        if path.suffix == ".npz":
            import scipy.sparse

            try:
                spec = scipy.sparse.load_npz(path)
            except (ValueError, OSError, KeyError):
                with np.load(path, allow_pickle=False) as npz:
                    spec = npz[npz.files[0]]
        elif path.suffix == ".npy":
            spec = np.load(path, allow_pickle=False)
        else:
            spec = np.loadtxt(path, dtype=np.int64, ndmin=1)
    import scipy.sparse

    if scipy.sparse.issparse(spec):
        matrix = scipy.sparse.csr_matrix(spec, dtype=np.float32)
    else:
        array = np.asarray(spec)
        if array.ndim == 1:
            if array.size == 0 or not np.issubdtype(array.dtype, np.integer):
                raise ValueError(f"common_space[{participant!r}] ({source!r:.60}): a 1-D "
                                 "mapping must be a non-empty array of integer voxel indices "
                                 f"(one per common voxel); got dtype {array.dtype}, size "
                                 f"{array.size}.")
            if array.min() < 0 or array.max() >= n_file_voxels:
                raise ValueError(f"common_space[{participant!r}]: voxel indices must lie in "
                                 f"[0, {n_file_voxels}) (the participant's voxels); got "
                                 f"[{array.min()}, {array.max()}].")
            return array.astype(np.int64)
        if array.ndim != 2:
            raise ValueError(f"common_space[{participant!r}] must be an index array of shape "
                             f"(n_common,) or a projection matrix of shape ({n_file_voxels}, "
                             f"n_common); got shape {array.shape}.")
        matrix = array.astype(np.float32)
    if matrix.shape[0] != n_file_voxels:
        raise ValueError(f"common_space[{participant!r}]: a projection matrix needs one row per "
                         f"voxel of the participant ({n_file_voxels}); got shape "
                         f"{matrix.shape}.")
    return matrix


def _mapped_mask(mask, mapping):
    """File-space voxel mask -> common-space mask (a common voxel touched by a masked one)."""
    if mapping is None:
        return mask
    if mapping.ndim == 1:
        return mask[mapping]
    touched = abs(mapping).T @ mask.astype(np.float32)
    return np.asarray(touched).ravel() > 0


def _participant_list(subject):
    if isinstance(subject, (str, bytes, int, np.integer, os.PathLike)):
        names = [_subject_name(subject)]
    else:
        names = [_subject_name(s) for s in subject]
    if not names:
        raise ValueError("subject is empty; pass a participant such as 'UTS01' or a list.")
    if len(set(names)) != len(names):
        raise ValueError(f"subject lists a participant twice: {names}.")
    return names


class _Lebel2023Loading:
    """One call of :func:`load_lebel2023`, as steps (the way ``TrainingRun`` splits a fit).

    Each step reads what the earlier ones left on ``self`` and adds its own part::

        loading = _Lebel2023Loading(root, subject, ...)
        loading.check_arguments()     # parameters, root, participant folders, respdict.json
        loading.choose_stories()      # story list, every file present
        loading.story_times()         # TR times and row counts from respdict.json
        loading.inspect_files()       # shapes, kept rows, voxels with NaN or inf (per story)
        loading.voxel_space()         # common-space mappings, voxel labels
        loading.apply_nan_policy()    # zero / drop / raise, with the warning
        loading.read_stimuli()        # audio and word/phone alignments, checked against each other
        loading.participant_data()    # lazy responses, repeats and noise ceilings
        return loading.bunch()

    :meth:`run` calls them in that order. Nothing heavy happens before every file has been
    found and its shape checked.
    """

    def __init__(self, root, subject, stories, *, tr, trigger_tr, extra_trim, nan_policy, split,
                 voxel_labels, common_space, lazy, verbose):
        self.root, self.subject, self.stories = root, subject, stories
        self.tr, self.trigger_tr, self.extra_trim = tr, trigger_tr, extra_trim
        self.nan_policy, self.split, self.voxel_labels = nan_policy, split, voxel_labels
        self.common_space, self.lazy, self.verbose = common_space, lazy, verbose

    def run(self):
        """All the steps; returns the dataset Bunch."""
        self.check_arguments()
        self.choose_stories()
        self.story_times()
        self.inspect_files()
        self.voxel_space()
        self.apply_nan_policy()
        self.read_stimuli()
        self.participant_data()
        return self.bunch()

    def _progress(self, iterable, desc):
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, disable=not self.verbose)

    # -- steps ------------------------------------------------------------------------------
    def check_arguments(self):
        """Parameters, the root, one folder per participant and respdict.json."""
        if self.nan_policy not in NAN_POLICIES:
            raise ValueError(f"nan_policy must be 'zero', 'drop' or 'raise'; got "
                             f"{self.nan_policy!r}.")
        tr, trigger_tr = self.tr, self.trigger_tr
        if not (np.isfinite(tr) and tr > 0 and np.isfinite(trigger_tr) and trigger_tr > 0):
            raise ValueError(f"tr and trigger_tr must be positive; got {tr!r} and "
                             f"{trigger_tr!r}.")
        self.root = _find_root(self.root)
        self.participants = _participant_list(self.subject)
        self.preprocessed = self.root / "derivative" / "preprocessed_data"
        self.folders = {}
        for participant in self.participants:
            folder = self.preprocessed / participant
            if not folder.is_dir():
                available = sorted(p.name for p in self.preprocessed.iterdir() if p.is_dir())
                raise FileNotFoundError(f"no responses for subject {participant!r}: {folder} "
                                        f"is missing; available subjects: {available}.")
            self.folders[participant] = folder
        if self.common_space is not None:
            missing = [p for p in self.participants if p not in self.common_space]
            if missing:
                raise ValueError(f"common_space has no mapping for {missing}; it needs one per "
                                 f"loaded participant (keys {self.participants}).")
        self.respdict_path = self.root / "derivative" / "respdict.json"
        self.respdict = _read_respdict(self.respdict_path)

    def choose_stories(self):
        """The stories to load (all common ones by default), each with a file per participant."""
        participants = self.participants
        available = {p: sorted(path.stem for path in self.folders[p].glob("*.hf5"))
                     for p in participants}
        stories = self.stories
        if stories is None:
            stories = [s for s in available[participants[0]]
                       if all(s in available[p] for p in participants[1:])]
            if not stories:
                raise FileNotFoundError(
                    f"no <story>.hf5 files common to {participants} in {self.preprocessed}.")
        elif isinstance(stories, str):
            stories = [stories]
        stories = list(stories)
        if len(set(stories)) != len(stories):
            raise ValueError(f"stories contains duplicates: {stories}.")
        if not stories:
            raise ValueError("stories is empty; pass None to load every story.")
        for participant in participants:
            for story in stories:
                path = self.folders[participant] / f"{story}.hf5"
                if not path.is_file():
                    raise FileNotFoundError(
                        f"no responses of {participant} for story {story!r}: {path} is "
                        f"missing; stories with responses: {available[participant]}.")
        self.stories = stories

    def story_times(self):
        """TR times and respdict row counts of every story (and its extra trim)."""
        extra_trim = ({TEST_STORY: TEST_STORY_EXTRA_TRIM} if self.extra_trim is None
                      else self.extra_trim)
        self.tr_times, self.n_trs, self.extras = {}, {}, {}
        for story in self.stories:
            if story not in self.respdict:
                raise ValueError(f"story {story!r} is not in {self.respdict_path}; its TR times "
                                 "cannot be computed.")
            self.extras[story] = _pair(extra_trim.get(story, 0), f"extra_trim[{story!r}]")
            self.tr_times[story] = lebel2023_tr_times(self.respdict[story],
                                                      trigger_tr=self.trigger_tr,
                                                      extra_trim=self.extras[story])
            self.n_trs[story] = int(self.respdict[story])

    def inspect_files(self, scan_values=True):
        """Each participant's files: shapes, kept rows, voxels with NaN or inf (row blocks).

        ``scan_values=False`` reads the files' headers only (no voxel is read).
        """
        self.files = {}  # participant -> story -> (path, rows, repeats_shape)
        self.file_masks, self.n_file_voxels = {}, {}
        for participant in self.participants:
            self.files[participant], self.file_masks[participant] = {}, {}
            voxel_counts = {}
            for story in self._progress(self.stories, f"LeBel 2023 {participant}"):
                path = self.folders[participant] / f"{story}.hf5"
                shape, repeats_shape = _inspect_story(path, story)
                rows = _row_range(story, path, shape[0], self.n_trs[story], self.extras[story])
                self.files[participant][story] = (path, rows, repeats_shape)
                voxel_counts[story] = shape[1]
                if not scan_values:
                    continue
                mask = _nonfinite_voxels(path, rows, repeats_shape is not None)
                if mask.all():
                    raise ValueError(
                        f"story {story!r} of {participant}: every one of its {mask.size} voxels "
                        f"holds NaN or inf ({path}); zero-filling would give a story of "
                        "silence. The file is damaged (download it again) or leave the story "
                        "out (stories=...).")
                self.file_masks[participant][story] = mask
            if len(set(voxel_counts.values())) > 1:
                raise ValueError(f"{participant}: stories have different numbers of voxels: "
                                 f"{voxel_counts}; they must come from the same participant's "
                                 "preprocessed data.")
            self.n_file_voxels[participant] = next(iter(voxel_counts.values()))

    def voxel_space(self):
        """One voxel space for every participant (their own, or ``common_space``); labels."""
        participants, n_file_voxels = self.participants, self.n_file_voxels
        if self.common_space is None:
            if len(set(n_file_voxels.values())) > 1:
                raise ValueError(
                    f"the participants have different numbers of voxels: {n_file_voxels}. Each "
                    "participant's preprocessed responses are in their own cortical space, so "
                    "several participants need a shared voxel set: pass common_space="
                    "{participant: mapping}, one mapping per participant, either an index "
                    "array of shape (n_common,) selecting its voxels or a projection matrix of "
                    "shape (n_voxels_participant, n_common) (e.g. to a common surface), or a "
                    ".npy/.npz file holding one.")
            self.mappings = dict.fromkeys(participants)
            self.n_voxels = n_file_voxels[participants[0]]
        else:
            self.mappings = {p: _common_space_mapping(self.common_space[p], p, n_file_voxels[p])
                             for p in participants}
            widths = {p: (m.shape[1] if m.ndim == 2 else len(m))
                      for p, m in self.mappings.items()}
            if len(set(widths.values())) > 1:
                raise ValueError(f"common_space maps the participants to different numbers of "
                                 f"voxels: {widths}; every mapping must end in the same common "
                                 "voxel set.")
            self.n_voxels = next(iter(widths.values()))
        self.labels = _voxel_labels(self.voxel_labels, self.n_voxels)

    def apply_nan_policy(self):
        """``nan_policy`` on the voxels holding NaN or inf (counted per participant and story)."""
        participants, stories, n_voxels = self.participants, self.stories, self.n_voxels
        masks = {p: {s: _mapped_mask(self.file_masks[p][s], self.mappings[p]) for s in stories}
                 for p in participants}
        self.nan_voxels = {p: {s: int(masks[p][s].sum()) for s in stories} for p in participants}
        with_nan = {p: {s: c for s, c in counts.items() if c}
                    for p, counts in self.nan_voxels.items()}
        with_nan = {p: counts for p, counts in with_nan.items() if counts}
        keep = None
        if with_nan:
            described = "; ".join(f"{p}: {counts}" for p, counts in with_nan.items())
            if self.nan_policy == "raise":
                raise ValueError(f"voxels with NaN or inf responses ({described}; story: "
                                 "number of voxels); pass nan_policy='zero' or 'drop'.")
            if self.nan_policy == "zero":
                action = "set to 0"
            else:
                keep = ~np.logical_or.reduce([m for p in participants
                                              for m in masks[p].values()])
                if not keep.any():
                    raise ValueError("every voxel has NaN or inf in some loaded story; nothing "
                                     "is left with nan_policy='drop' (use 'zero').")
                action = f"dropped: {n_voxels - keep.sum()} of {n_voxels} voxels removed"
                self.labels = self.labels[keep]
            warnings.warn(f"voxels with NaN or inf responses ({described}; story: number of "
                          f"voxels), {action} (nan_policy={self.nan_policy!r}).",
                          NaNVoxelWarning, stacklevel=4)
        self.voxel_indices = np.arange(n_voxels) if keep is None else np.flatnonzero(keep)
        self.columns = None if keep is None else self.voxel_indices

    def read_stimuli(self):
        """Audio (mono 16 kHz) and word/phone alignments, checked against the responses."""
        from .audio import load_audio

        self.audio, self.words, self.phones = {}, {}, {}
        paths = {story: lebel2023_paths(self.root, self.participants[0], story)
                 for story in self.stories}
        for story, story_paths in paths.items():
            if not story_paths["audio"].is_file():
                raise FileNotFoundError(f"audio of story {story!r} not found: "
                                        f"{story_paths['audio']} (expected {_LAYOUT}).")
            if not story_paths["textgrid"].is_file():
                raise FileNotFoundError(f"word/phone alignment of story {story!r} not found: "
                                        f"{story_paths['textgrid']} (expected {_LAYOUT}).")
        for story in self._progress(self.stories, "LeBel 2023 audio"):
            wave = load_audio(paths[story]["audio"])
            duration = wave.size / TARGET_SAMPLE_RATE
            times = self.tr_times[story]
            last_volume_end = times[-1] + self.tr / 2.0
            # The convention ends the kept volumes before the sound stops; a volume ending more
            # than a TR after it means the audio and responses do not belong together.
            if last_volume_end > duration + self.trigger_tr:
                raise ValueError(
                    f"story {story!r}: the responses ({len(times)} TRs) last until "
                    f"{last_volume_end:.1f} s but the audio {paths[story]['audio']} lasts "
                    f"{duration:.1f} s; the responses are longer than the audio (truncated or "
                    "wrong audio file?).")
            self.audio[story] = wave
            self.words[story], self.phones[story] = _alignment(
                paths[story]["textgrid"], duration, paths[story]["audio"], self.trigger_tr)

    def participant_data(self):
        """Per participant: lazy responses and repeats, and the noise ceiling."""
        from sklearn.utils import Bunch

        self.split = _check_split(self.split, self.stories)
        self.by_participant = {}
        for participant in self.participants:
            responses, repeats = {}, {}
            for story in self.stories:
                path, rows, repeats_shape = self.files[participant][story]
                common = dict(mapping=self.mappings[participant], columns=self.columns,
                              n_file_voxels=self.n_file_voxels[participant])
                responses[story] = LazyStoryArray(path, "data", rows, **common)
                if repeats_shape is not None:
                    repeats[story] = LazyStoryArray(path, "individual_repeats", rows,
                                                    n_repeats=repeats_shape[0], **common)
            if not self.lazy:
                responses = {s: np.asarray(a) for s, a in responses.items()}
                repeats = {s: np.asarray(a) for s, a in repeats.items()}
            ceiling_story = next((s for s in self.split["test"] if s in repeats),
                                 next((s for s in self.stories if s in repeats), None))
            ceiling = (None if ceiling_story is None
                       else noise_ceiling(repeats[ceiling_story]))
            self.by_participant[participant] = Bunch(
                responses=responses, repeats=repeats, noise_ceiling=ceiling,
                noise_ceiling_story=ceiling_story, nan_voxels=self.nan_voxels[participant],
                subject=participant)

    def bunch(self):
        """The dataset contract's Bunch (the first participant at the top level)."""
        from sklearn.utils import Bunch

        participants = self.participants
        first = self.by_participant[participants[0]]
        ceiling_story = first.noise_ceiling_story
        space = ("" if self.common_space is None
                 else f" (common voxel space of {self.n_voxels} voxels from common_space)")
        description = (
            f"LeBel et al. (2023), OpenNeuro ds003020, participant"
            f"{'s' if len(participants) > 1 else ''} {', '.join(participants)}: "
            f"{len(self.stories)} stories, {len(self.voxel_indices)} voxels{space}, TR "
            f"{self.tr} s. TR times follow the simulated-trigger convention (respdict - "
            f"{RESPDICT_PAD} triggers every {self.trigger_tr} s, sound at {SOUND_START} s, "
            f"trimmed [{LEBEL2023_TRIM[0]}:-{LEBEL2023_TRIM[1]}]). NaN policy: "
            f"{self.nan_policy}. "
            + (f"Noise ceiling from {ceiling_story!r}." if ceiling_story else "No repeats "
               "loaded, so no noise ceiling.")
        )
        return Bunch(
            stories=self.stories, sample_rate=TARGET_SAMPLE_RATE, audio=self.audio,
            tr=float(self.tr), tr_times=self.tr_times, responses=first.responses,
            repeats=first.repeats, noise_ceiling=first.noise_ceiling, words=self.words,
            phones=self.phones, phone_set="arpabet", split=self.split,
            voxel_labels=self.labels, description=description,
            participants=tuple(participants), participant_data=self.by_participant,
            subject=participants[0], root=str(self.root), trigger_tr=float(self.trigger_tr),
            n_trs_respdict=self.n_trs, nan_voxels=first.nan_voxels,
            voxel_indices=self.voxel_indices, noise_ceiling_story=ceiling_story,
            # the hf5 columns are the participant's own cortical voxels: no space to map back to
            space=None, column_index=np.asarray(self.voxel_indices, dtype=np.int64),
            mask_img=None,
        )


def load_lebel2023(root, subject, stories=None, *, tr=ACQUISITION_TR, trigger_tr=TRIGGER_TR,
                   extra_trim=None, nan_policy="zero", split=None, voxel_labels=None,
                   common_space=None, lazy=True, verbose=False):
    """Load one or several participants of LeBel et al. (2023) in the sk_braintune format.

    Responses are not read into memory: each story's ``responses`` (and ``repeats``) is a
    :class:`LazyStoryArray` that reads its rows from the hf5 file when used
    (``np.asarray(data.responses[story])``, ``data.responses[story][rows]``), so that a
    participant with 90,000 voxels and 84 stories costs no memory until a story is needed.

    Parameters
    ----------
    root : str or path-like
        Local copy of OpenNeuro ds003020 (or a folder holding ``ds003020/``).
    subject : str or int, or sequence of those
        Participant(s), ``"UTS01"`` to ``"UTS08"`` (``1`` or ``"1"`` also work). With several,
        the result holds every participant (``participants``, ``participant_data``) over one
        voxel space; the top-level ``responses``, ``repeats`` and ``noise_ceiling`` are those of
        the first.
    stories : list of str, optional
        Stories to load, in order. By default every story with responses for all the
        participants (sorted by name).
    tr : float, default=2.0045
        Acquisition TR (s), stored as the bunch's ``tr`` (used for the end of each volume when
        cutting audio windows).
    trigger_tr : float, default=2.0
        Spacing of the simulated triggers: see the module notes.
    extra_trim : dict of str to int or (int, int), optional
        TRs dropped from a story in addition to the ``[10:-5]`` trim (an int drops them at the
        start, a pair at the start and end). Default ``{"wheretheressmoke": 40}``; pass ``{}``
        to drop nothing more. A file whose ``data`` already has the reduced number of rows is
        taken as delivered trimmed; one with the untrimmed number is trimmed here (with its
        ``individual_repeats``).
    nan_policy : {"zero", "drop", "raise"}, default="zero"
        What to do with voxels holding NaN or +-inf (the release has NaN in some; an inf is
        treated alike, never as +-3.4e38): ``"zero"`` replaces them by 0 (what HuthLab's
        loaders do for NaN); ``"drop"`` removes every voxel with a NaN or inf in any loaded
        story of any participant, the same voxels for all (``voxel_indices`` says which
        remain); ``"raise"`` raises a ValueError listing the stories. ``"zero"`` and ``"drop"``
        issue a :class:`NaNVoxelWarning` naming each story and its number of such voxels, also
        in ``nan_voxels``. Whatever the policy, a story whose every voxel holds NaN or inf is
        an error (a damaged file, not a story of silence).
    split : dict, optional
        ``{"train": [...], "validation": [...], "test": [...]}`` of loaded stories. By default
        the paper's: test ``wheretheressmoke``, validation ``stagefright`` and ``life``, the
        rest train, restricted to the loaded stories.
    voxel_labels : array-like of shape (n_voxels,) or path, optional
        ROI name per voxel of the files (of the common space with ``common_space``; ``.npy`` or
        a text file of white-space separated labels). Default: ``"unlabelled"`` everywhere.
    common_space : dict of str to array-like, sparse matrix or path, optional
        Per participant, its map to a voxel space shared by all (needed when the participants'
        voxel counts differ; each participant's preprocessed voxels are in their own cortical
        space): an int index array of shape ``(n_common,)`` (common voxel ``j`` is the
        participant's voxel ``index[j]``), or a projection matrix of shape ``(n_voxels_p,
        n_common)`` (dense, or ``scipy.sparse``; responses become ``responses @ matrix``,
        e.g. a surface resampling). Paths: ``.npy`` (either form), ``.npz`` (a scipy sparse
        matrix, or one array), or a text file of indices. Keys are participant names
        (``"UTS01"``). NaN become 0 before the projection; with ``nan_policy="drop"`` a common
        voxel is dropped when any voxel mapped to it has a NaN.
    lazy : bool, default=True
        Read responses on access (:class:`LazyStoryArray`). False reads every story into
        memory now (plain ndarrays), which is faster for repeated use of small data.
    verbose : bool, default=False
        Show a progress bar over stories.

    Returns
    -------
    dataset : sklearn.utils.Bunch
        The sk_braintune dataset contract:

        - ``stories`` (list of str), ``sample_rate`` (16000), ``tr`` (float, s),
        - ``audio``: story -> ndarray of shape (n_samples,), float32 mono at 16 kHz,
        - ``tr_times``: story -> ndarray of shape (n_trs,), float64 mid-volume times of the rows
          of ``responses`` relative to the audio start,
        - ``responses``: story -> array of shape (n_trs, n_voxels), float32 (lazy, see above),
        - ``repeats``: story -> array of shape (n_repeats, n_trs, n_voxels) for stories with
          ``individual_repeats``,
        - ``noise_ceiling``: ndarray of shape (n_voxels,), Schoppe cc_max from the repeats
          (of the test story when loaded, else of the first story with repeats), or None when
          no loaded story has repeats,
        - ``words``, ``phones``: story -> DataFrame (``onset``, ``offset``, ``label``), silences
          dropped, phones in ARPAbet with stress digits (``phone_set == "arpabet"``),
        - ``split``: dict of story lists, ``voxel_labels``: ndarray of shape (n_voxels,) of str,
        - ``participants``: tuple of participant names; ``participant_data``: participant ->
          Bunch of its ``responses``, ``repeats``, ``noise_ceiling``, ``noise_ceiling_story``
          and ``nan_voxels``, all over the same voxels,
        - ``description`` (str), ``space`` (None: the participant's own voxels),
          ``column_index`` (the kept columns of the files or of the common space) and
          ``mask_img`` (None), as the record documents (:mod:`sk_braintune.datasets.record`),

        and, specific to this loader: ``subject`` (the first participant), ``root``,
        ``trigger_tr``, ``n_trs_respdict`` (story -> n), ``nan_voxels`` (story -> number of
        voxels with NaN or inf, of the first participant), ``voxel_indices`` (ndarray of shape
        (n_voxels,), columns of the files, or of the common space, that are kept),
        ``noise_ceiling_story``.

    Raises
    ------
    FileNotFoundError
        Missing root, subject folder, story file, audio, TextGrid or respdict.json (the message
        names the path and the expected layout).
    ValueError
        Row counts that disagree with respdict.json, empty stories, responses that outlast the
        audio, voxel counts that differ between stories or (without ``common_space``) between
        participants, NaN or inf with ``nan_policy="raise"``, a story whose every voxel is
        NaN or inf, an hf5 file that cannot be read (truncated, empty), a malformed
        respdict.json, a TextGrid whose intervals overlap, run backwards, or end after the
        audio (each message names the file).

    Examples
    --------
    >>> from sk_braintune.datasets import load_lebel2023, windows_from_dataset
    >>> data = load_lebel2023("~/data/ds003020", "UTS03")  # doctest: +SKIP
    >>> X, y, groups = windows_from_dataset(data, "train", window=16.0)  # doctest: +SKIP
    >>> both = load_lebel2023("~/data/ds003020", ["UTS01", "UTS02"],
    ...                       common_space={"UTS01": "uts01_to_fsaverage.npz",
    ...                                     "UTS02": "uts02_to_fsaverage.npz"})  # doctest: +SKIP
    """
    return _Lebel2023Loading(
        root, subject, stories, tr=tr, trigger_tr=trigger_tr, extra_trim=extra_trim,
        nan_policy=nan_policy, split=split, voxel_labels=voxel_labels,
        common_space=common_space, lazy=lazy, verbose=verbose).run()


def check_lebel2023(root, subject, stories=None, *, extra_trim=None, split=None):
    """Check what :func:`load_lebel2023` would load, reading only file headers (fast).

    Commands run it for every participant before any heavy work: a missing participant,
    story, respdict entry or alignment, a truncated or empty hf5 file, or row counts that
    disagree with ``respdict.json`` fail here with the loader's own messages. Voxel values
    (NaN, inf) and the audio are not read.

    Parameters
    ----------
    root, subject, stories, extra_trim, split
        As in :func:`load_lebel2023`.

    Returns
    -------
    summary : sklearn.utils.Bunch
        ``participants`` (tuple of str), ``stories`` (list of str), ``split`` (dict of story
        lists, the paper's by default), ``n_trs`` (story -> number of response rows) and
        ``n_voxels`` (participant -> voxels in its files).

    Raises
    ------
    FileNotFoundError, ValueError
        As :func:`load_lebel2023` for the same problems.
    """
    from sklearn.utils import Bunch

    loading = _Lebel2023Loading(root, subject, stories, tr=ACQUISITION_TR,
                                trigger_tr=TRIGGER_TR, extra_trim=extra_trim, nan_policy="zero",
                                split=split, voxel_labels=None, common_space=None, lazy=True,
                                verbose=False)
    loading.check_arguments()
    loading.choose_stories()
    loading.story_times()
    loading.inspect_files(scan_values=False)
    for story in loading.stories:
        paths = lebel2023_paths(loading.root, loading.participants[0], story)
        for kind, what in (("audio", "audio"), ("textgrid", "word/phone alignment")):
            if not paths[kind].is_file():
                raise FileNotFoundError(f"{what} of story {story!r} not found: {paths[kind]} "
                                        f"(expected {_LAYOUT}).")
    return Bunch(participants=tuple(loading.participants), stories=list(loading.stories),
                 split=_check_split(split, loading.stories),
                 n_trs={s: len(t) for s, t in loading.tr_times.items()},
                 n_voxels=dict(loading.n_file_voxels))
