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

__all__ = [
    "ACQUISITION_TR",
    "TRIGGER_TR",
    "SOUND_START",
    "RESPDICT_PAD",
    "LEBEL2023_TRIM",
    "TEST_STORY",
    "TEST_STORY_EXTRA_TRIM",
    "VALIDATION_STORIES",
    "NaNVoxelWarning",
    "lebel2023_tr_times",
    "lebel2023_paths",
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


def _read_responses(path, story):
    import h5py

    with h5py.File(path, "r") as f:
        if "data" not in f:
            raise ValueError(f"{path} has no dataset 'data' (found {sorted(f)}); expected the "
                             "ds003020 preprocessed responses (n_trs, n_voxels).")
        data = np.asarray(f["data"][...], dtype=np.float32)
        repeats = (np.asarray(f["individual_repeats"][...], dtype=np.float32)
                   if "individual_repeats" in f else None)
    if data.ndim != 2:
        raise ValueError(f"{path}: 'data' must be 2-D (n_trs, n_voxels); got shape "
                         f"{data.shape}.")
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise ValueError(f"story {story!r} is empty: {path} holds 'data' of shape "
                         f"{data.shape}.")
    if repeats is not None and (repeats.ndim != 3 or repeats.shape[1:] != data.shape):
        raise ValueError(f"{path}: 'individual_repeats' must have shape (n_repeats, "
                         f"{data.shape[0]}, {data.shape[1]}) to match 'data'; got "
                         f"{repeats.shape}.")
    return data, repeats


def _align_rows(story, path, data, repeats, n_respdict, extra):
    """Check data rows against the convention and apply the story's extra trim."""
    trim_start, trim_end = LEBEL2023_TRIM
    convention_rows = n_respdict - RESPDICT_PAD - trim_start - trim_end
    expected = convention_rows - sum(extra)
    rows = data.shape[0]
    if rows == expected:  # delivered already trimmed (or no extra trim)
        return data, repeats
    if rows == convention_rows and sum(extra):
        stop = rows - extra[1]
        return data[extra[0]:stop], (None if repeats is None else repeats[:, extra[0]:stop])
    extra_note = (f" (or {convention_rows} before the extra trim of {extra} TRs)"
                  if sum(extra) else "")
    raise ValueError(
        f"story {story!r}: {path} has {rows} rows but respdict.json gives {n_respdict} TRs; "
        f"the convention (n - {RESPDICT_PAD} simulated triggers trimmed "
        f"[{trim_start}:-{trim_end}]) expects {expected} rows{extra_note}. The responses and "
        "respdict.json do not belong together (wrong subject folder or an edited file?).")


def _default_split(stories):
    test = [s for s in stories if s == TEST_STORY]
    validation = [s for s in stories if s in VALIDATION_STORIES]
    train = [s for s in stories if s not in test and s not in validation]
    return {"train": train, "validation": validation, "test": test}


def _check_split(split, stories):
    if split is None:
        return _default_split(stories)
    unknown_keys = set(split) - {"train", "validation", "test"}
    if unknown_keys:
        raise ValueError(f"split keys must be 'train', 'validation' and 'test'; got "
                         f"{sorted(unknown_keys)}.")
    out = {key: list(split.get(key, [])) for key in ("train", "validation", "test")}
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


def load_lebel2023(root, subject, stories=None, *, tr=ACQUISITION_TR, trigger_tr=TRIGGER_TR,
                   extra_trim=None, nan_policy="zero", split=None, voxel_labels=None,
                   verbose=False):
    """Load one participant of LeBel et al. (2023) in the sk_braintune dataset format.

    Parameters
    ----------
    root : str or path-like
        Local copy of OpenNeuro ds003020 (or a folder holding ``ds003020/``).
    subject : str or int
        Participant, ``"UTS01"`` to ``"UTS08"`` (``1`` or ``"1"`` also work).
    stories : list of str, optional
        Stories to load, in order. By default every story with responses for ``subject``
        (sorted by name).
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
        What to do with voxels holding NaN (the release has some): ``"zero"`` replaces NaN by 0
        (what HuthLab's loaders do); ``"drop"`` removes every voxel with a NaN in any loaded
        story, the same voxels for all stories (``voxel_indices`` says which remain);
        ``"raise"`` raises a ValueError listing the stories. ``"zero"`` and ``"drop"`` issue a
        :class:`NaNVoxelWarning` with the counts, which are also in ``nan_voxels``.
    split : dict, optional
        ``{"train": [...], "validation": [...], "test": [...]}`` of loaded stories. By default
        the paper's: test ``wheretheressmoke``, validation ``stagefright`` and ``life``, the
        rest train, restricted to the loaded stories.
    voxel_labels : array-like of shape (n_voxels,) or path, optional
        ROI name per voxel of the files (``.npy`` or a text file of white-space separated
        labels). Default: ``"unlabelled"`` everywhere.
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
        - ``responses``: story -> ndarray of shape (n_trs, n_voxels), float32,
        - ``repeats``: story -> ndarray of shape (n_repeats, n_trs, n_voxels) for stories with
          ``individual_repeats``,
        - ``noise_ceiling``: ndarray of shape (n_voxels,), Schoppe cc_max from the repeats
          (of the test story when loaded, else of the first story with repeats), or None when
          no loaded story has repeats,
        - ``words``, ``phones``: story -> DataFrame (``onset``, ``offset``, ``label``), silences
          dropped, phones in ARPAbet with stress digits (``phone_set == "arpabet"``),
        - ``split``: dict of story lists, ``voxel_labels``: ndarray of shape (n_voxels,) of str,
        - ``description`` (str),

        and, specific to this loader: ``subject``, ``root``, ``trigger_tr``,
        ``n_trs_respdict`` (story -> n), ``nan_voxels`` (story -> number of voxels with NaN),
        ``voxel_indices`` (ndarray of shape (n_voxels,), columns of the files kept),
        ``noise_ceiling_story``.

    Raises
    ------
    FileNotFoundError
        Missing root, subject folder, story file, audio, TextGrid or respdict.json (the message
        names the path and the expected layout).
    ValueError
        Row counts that disagree with respdict.json, empty stories, responses that outlast the
        audio, voxel counts that differ between stories, NaN with ``nan_policy="raise"``.

    Examples
    --------
    >>> from sk_braintune.datasets import load_lebel2023, windows_from_dataset
    >>> data = load_lebel2023("~/data/ds003020", "UTS03")  # doctest: +SKIP
    >>> X, y, groups = windows_from_dataset(data, "train", window=16.0)  # doctest: +SKIP
    """
    from sklearn.utils import Bunch
    from tqdm.auto import tqdm

    from .audio import TARGET_SAMPLE_RATE, load_audio
    from .textgrid import read_textgrid, words_and_phones

    if nan_policy not in ("zero", "drop", "raise"):
        raise ValueError(f"nan_policy must be 'zero', 'drop' or 'raise'; got {nan_policy!r}.")
    if not (np.isfinite(tr) and tr > 0 and np.isfinite(trigger_tr) and trigger_tr > 0):
        raise ValueError(f"tr and trigger_tr must be positive; got {tr!r} and {trigger_tr!r}.")
    root = _find_root(root)
    subject = _subject_name(subject)
    subject_dir = root / "derivative" / "preprocessed_data" / subject
    if not subject_dir.is_dir():
        available = sorted(p.name for p in subject_dir.parent.iterdir() if p.is_dir())
        raise FileNotFoundError(f"no responses for subject {subject!r}: {subject_dir} is "
                                f"missing; available subjects: {available}.")
    respdict_path = root / "derivative" / "respdict.json"
    if not respdict_path.is_file():
        raise FileNotFoundError(f"{respdict_path} is missing; it gives each story's number "
                                f"of TRs (expected {_LAYOUT}).")
    with open(respdict_path, encoding="utf-8") as f:
        respdict = json.load(f)
    available = sorted(p.stem for p in subject_dir.glob("*.hf5"))
    if stories is None:
        stories = available
        if not stories:
            raise FileNotFoundError(f"{subject_dir} holds no <story>.hf5 files.")
    elif isinstance(stories, str):
        stories = [stories]
    stories = list(stories)
    if len(set(stories)) != len(stories):
        raise ValueError(f"stories contains duplicates: {stories}.")
    if not stories:
        raise ValueError("stories is empty; pass None to load every story.")
    extra_trim = {TEST_STORY: TEST_STORY_EXTRA_TRIM} if extra_trim is None else extra_trim

    audio, tr_times, responses, repeats, words, phones, n_trs = {}, {}, {}, {}, {}, {}, {}
    for story in tqdm(stories, desc=f"LeBel 2023 {subject}", disable=not verbose):
        path = subject_dir / f"{story}.hf5"
        if not path.is_file():
            raise FileNotFoundError(f"no responses of {subject} for story {story!r}: {path} is "
                                    f"missing; stories with responses: {available}.")
        if story not in respdict:
            raise ValueError(f"story {story!r} is not in {respdict_path}; its TR times cannot "
                             "be computed.")
        data, story_repeats = _read_responses(path, story)
        extra = _pair(extra_trim.get(story, 0), f"extra_trim[{story!r}]")
        data, story_repeats = _align_rows(story, path, data, story_repeats,
                                          int(respdict[story]), extra)
        times = lebel2023_tr_times(respdict[story], trigger_tr=trigger_tr, extra_trim=extra)

        paths = lebel2023_paths(root, subject, story)
        if not paths["audio"].is_file():
            raise FileNotFoundError(f"audio of story {story!r} not found: {paths['audio']} "
                                    f"(expected {_LAYOUT}).")
        if not paths["textgrid"].is_file():
            raise FileNotFoundError(f"word/phone alignment of story {story!r} not found: "
                                    f"{paths['textgrid']} (expected {_LAYOUT}).")
        wave = load_audio(paths["audio"])
        duration = wave.size / TARGET_SAMPLE_RATE
        last_volume_end = times[-1] + tr / 2.0
        # The convention ends the kept volumes before the sound stops; a volume ending more
        # than a TR after it means the audio and responses do not belong together.
        if last_volume_end > duration + trigger_tr:
            raise ValueError(
                f"story {story!r}: the responses ({len(data)} TRs) last until "
                f"{last_volume_end:.1f} s but the audio {paths['audio']} lasts {duration:.1f} s; "
                "the responses are longer than the audio (truncated or wrong audio file?).")
        story_words, story_phones = words_and_phones(read_textgrid(paths["textgrid"]))

        audio[story], tr_times[story], responses[story] = wave, times, data
        if story_repeats is not None:
            repeats[story] = story_repeats
        words[story], phones[story], n_trs[story] = story_words, story_phones, int(
            respdict[story])

    n_file_voxels = {story: data.shape[1] for story, data in responses.items()}
    if len(set(n_file_voxels.values())) > 1:
        raise ValueError(f"stories have different numbers of voxels: {n_file_voxels}; they "
                         "must come from the same participant's preprocessed data.")
    n_voxels = next(iter(n_file_voxels.values()))
    labels = _voxel_labels(voxel_labels, n_voxels)

    nan_masks = {}
    for story in stories:
        mask = np.isnan(responses[story]).any(axis=0)
        if story in repeats:
            mask |= np.isnan(repeats[story]).any(axis=(0, 1))
        nan_masks[story] = mask
    nan_voxels = {story: int(mask.sum()) for story, mask in nan_masks.items()}
    voxel_indices = np.arange(n_voxels)
    with_nan = {story: count for story, count in nan_voxels.items() if count}
    if with_nan:
        if nan_policy == "raise":
            raise ValueError(f"voxels with NaN responses in stories {with_nan} (story: number "
                             "of voxels); pass nan_policy='zero' or 'drop'.")
        if nan_policy == "zero":
            for story in with_nan:
                np.nan_to_num(responses[story], copy=False, nan=0.0)
                if story in repeats:
                    np.nan_to_num(repeats[story], copy=False, nan=0.0)
            action = "set to 0"
        else:
            keep = ~np.logical_or.reduce(list(nan_masks.values()))
            if not keep.any():
                raise ValueError("every voxel has NaN in some loaded story; nothing is left "
                                 "with nan_policy='drop' (use 'zero').")
            voxel_indices = np.flatnonzero(keep)
            for story in stories:
                responses[story] = np.ascontiguousarray(responses[story][:, keep])
                if story in repeats:
                    repeats[story] = np.ascontiguousarray(repeats[story][:, :, keep])
            labels = labels[keep]
            action = f"dropped: {n_voxels - keep.sum()} of {n_voxels} voxels removed"
        warnings.warn(f"{subject}: voxels with NaN responses {with_nan} (story: number of "
                      f"voxels), {action} (nan_policy={nan_policy!r}).", NaNVoxelWarning,
                      stacklevel=2)

    split = _check_split(split, stories)
    ceiling_story = next((s for s in split["test"] if s in repeats),
                         next((s for s in stories if s in repeats), None))
    noise_ceiling = None
    if ceiling_story is not None:
        from ..metrics import noise_ceiling as _noise_ceiling

        noise_ceiling = _noise_ceiling(repeats[ceiling_story])

    n_kept = len(voxel_indices)
    description = (
        f"LeBel et al. (2023), OpenNeuro ds003020, participant {subject}: {len(stories)} "
        f"stories, {n_kept} voxels, TR {tr} s. TR times follow the simulated-trigger convention "
        f"(respdict - {RESPDICT_PAD} triggers every {trigger_tr} s, sound at {SOUND_START} s, "
        f"trimmed [{LEBEL2023_TRIM[0]}:-{LEBEL2023_TRIM[1]}]). NaN policy: {nan_policy}. "
        + (f"Noise ceiling from {ceiling_story!r}." if ceiling_story else "No repeats loaded, "
           "so no noise ceiling.")
    )
    return Bunch(
        stories=stories, sample_rate=TARGET_SAMPLE_RATE, audio=audio, tr=float(tr),
        tr_times=tr_times, responses=responses, repeats=repeats, noise_ceiling=noise_ceiling,
        words=words, phones=phones, phone_set="arpabet", split=split, voxel_labels=labels,
        description=description, subject=subject, root=str(root), trigger_tr=float(trigger_tr),
        n_trs_respdict=n_trs, nan_voxels=nan_voxels, voxel_indices=voxel_indices,
        noise_ceiling_story=ceiling_story,
    )
