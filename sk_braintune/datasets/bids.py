"""Loader of any BIDS dataset with preprocessed derivatives (fMRIPrep, AFNI, ...).

What is read, for each subject (``sub-<label>``), session and run of a task::

    root/sub-<l>[/ses-<s>]/func/sub-<l>[_ses-<s>]_task-<t>[_run-<k>]_bold.nii.gz   raw run
    ..._events.tsv                  onset, duration, [trial_type,] stim_file  (BIDS inheritance)
    ..._bold.json, task-<t>_bold.json, ...  RepetitionTime                  (BIDS inheritance)
    root/stimuli/<stim_file>        the audio (WAV)
    root/stimuli/<stem>.TextGrid or <stem>_align.json or <stem>.align.json or
        gentle/<stem>/align.json    word and phone timings (Praat TextGrid or Gentle)
    <derivatives>/sub-<l>/.../<run entities>_space-<space>[_desc-<d>]_bold.nii.gz     volumes
    <derivatives>/sub-<l>/.../<run entities>_hemi-{L,R}_space-<space>...func.gii     surfaces
    <derivatives>/.../<run entities>[_space-<space>]_desc-brain_mask.nii.gz          brain mask
    <any pipeline>/.../<run entities>_desc-confounds_{timeseries,regressors}.tsv     confounds

Entities are matched by name, not position (fMRIPrep writes ``_hemi-L_space-fsaverage5_bold``,
the Narratives AFNI pipeline ``_space-fsaverage6_hemi-L_desc-clean``). Finding the files is
``datasets.bids_layout``, reading the runs ``datasets.bids_runs``, the stimuli
``datasets.bids_stimuli``.

**The clock.** The audio file of a ``stim_file`` starts at the earliest onset of the events rows
that name it (a ``music`` row before the ``story`` row plays the start of the same file, as in
Narratives). The rows of the selected trial types (``"story"``) each become one presentation of
a story: its volumes are ``round(onset / TR)`` to ``round(onset / TR) + round(duration / TR)``
(the rule that reproduces Narratives' ``code/event_meta.json``), and their mid-volume times
``(volume + 0.5) * TR - audio_onset`` are the record's ``tr_times``, on the audio's clock.
Word and phone times from the alignment are on the audio file's clock too. A story presented
in several runs (the same file and row) becomes ``repeats``, and its ``responses`` the mean of
the presentations.

**Columns.** Volumes are masked with the derivative's brain mask (intersected over runs), or
the ``mask_img`` given, through :class:`nilearn.maskers.NiftiMasker` (the record keeps the
fitted masker; its columns are ``mask_img``'s voxels in C order). Surfaces are the left then the
right hemisphere's vertices; vertices that are constant within some run (the medial wall,
zeros in fMRIPrep and AFNI outputs) are dropped, unless a :class:`nilearn.surface.SurfaceImage`
mask is given, which is then applied with :class:`nilearn.maskers.SurfaceMasker`.

**Reading once.** Each run file is read once: NIfTI volumes through nibabel's ``dataobj`` in
blocks of volumes from one open file (a ``.nii.gz`` is decompressed once, front to back),
masked as they are read (only the volumes of the selected stories, unless cleaning needs the
whole run); GIfTI files (XML, which nibabel parses whole) one at a time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .bids_layout import (
    collect_runs,
    derivative_files,
    derivative_roots,
    find_subject,
    parse_bids_name,
    participant_list,
    row_story_names,
    subject_label,
)
from .bids_runs import read_runs, story_responses, volume_mask
from .bids_stimuli import read_alignment, story_stimuli

__all__ = ["load_bids", "parse_bids_name", "read_alignment", "subject_label"]


def load_bids(root, subject, task=None, *, space, derivatives=None, stories=None,
              confounds=None, clean_args=None, mask_img=None, desc=None, entities=None,
              session=None, trial_types=("story",), story_names=None, alignments=None,
              tr=None, trim=(0, 0), nan_policy="raise", split=None, voxel_labels=None,
              exclude=None, events=None, story_volumes=None, dataset_name="BIDS"):
    """Load naturalistic-listening fMRI from a BIDS dataset with preprocessed derivatives.

    See the module's docstring for the files read and the clock.

    Parameters
    ----------
    root : str or path-like
        The BIDS dataset (raw data, ``stimuli/``, usually ``derivatives/``).
    subject : str or int or list of them
        Subject label(s): ``"sub-01"``, ``"01"`` or ``1``. With several, the stories all of
        them heard are loaded, over the columns valid for all (they must share ``space``).
    task : str or list of str, optional
        Task label(s); all tasks by default.
    space : str
        ``"fsaverage5"``/``"fsaverage6"``/``"fsaverage"`` (surfaces) or a volume space
        (``"MNI152NLin2009cAsym"``, ``"T1w"``, ...), as in the derivatives' ``space-`` entity.
    derivatives : str or path-like or list, optional
        Folder(s) of the preprocessed runs; by default every pipeline under
        ``root/derivatives`` (an ambiguous match is an error naming the files).
    stories : list of str, optional
        Stories to load (names from ``story_names`` or the stimulus file's stem); all by
        default.
    confounds : None, str, tuple of str, list of column names or dict, default=None
        Confound regression per run with :func:`nilearn.signal.clean`: a nilearn
        ``load_confounds`` strategy (``"motion"``, ``("motion", "wm_csf")``, or a dict of its
        arguments) read through :func:`nilearn.interfaces.fmriprep.load_confounds`, or a list
        of column names of the fMRIPrep confounds TSV (either naming,
        ``desc-confounds_timeseries`` or ``desc-confounds_regressors``). Censoring
        (``sample_mask``) is not applied: it would break the TR clock.
    clean_args : dict, optional
        Arguments of :func:`nilearn.signal.clean` (``detrend``, ``standardize``,
        ``high_pass``, ...); default ``{"detrend": True, "standardize": None}`` when
        ``confounds`` is given, no cleaning otherwise.
    mask_img : str, nibabel image or nilearn SurfaceImage, optional
        Volume mask on the runs' grid (instead of the derivatives' brain masks), or a surface
        mask applied with :class:`~nilearn.maskers.SurfaceMasker`.
    desc, entities : str and dict, optional
        Pick among several derivatives of a run: ``desc="preproc"``, ``entities={"res":
        "native"}``.
    session : str, optional
        Only this session.
    trial_types : tuple of str or None, default=("story",)
        ``trial_type`` values of the story rows; rows of other types (``music``, ...) are
        skipped, but still set the audio's start. None takes every row with a ``stim_file``.
    story_names : dict, optional
        ``stim_file`` (or its stem) -> story name, or list of names for a file with several
        story rows in one run. Default: the file's stem (``-1``, ``-2`` suffixes for parts).
    alignments : dict, optional
        ``stim_file`` (or stem) -> alignment file, instead of looking beside the stimulus.
    tr : float, optional
        Repetition time (s), instead of the sidecars' ``RepetitionTime``.
    trim : (int, int), default=(0, 0)
        Volumes dropped at the start and end of every presentation (e.g. the first volumes'
        transient).
    nan_policy : {"raise", "drop"}, default="raise"
        Columns with NaN or infinite values: an error naming the run, or dropped.
    split : dict, optional
        ``{"train": [...], "validation": [...], "test": [...]}``; default: the first story with
        repeats (else the last story) is the test story, the others train.
    voxel_labels : array-like of shape (n_columns,), optional
        Label per column after masking; default ``"left"``/``"right"`` per hemisphere on
        surfaces, ``"brain"`` in volumes.
    exclude : callable, optional
        ``exclude(bold_path) -> bool``: runs to leave out.
    events : callable, optional
        ``events(bold_path, position, n_volumes, tr) -> DataFrame`` (columns ``onset``,
        ``duration``, ``trial_type``, ``stim_file``) instead of the runs' ``events.tsv``, for
        datasets whose events do not name the audio (``position``: the run's rank among the
        subject's selected runs, sorted by session and run number).
    story_volumes : dict, optional
        Story -> ``(first volume, number of volumes)``, instead of rounding the story row's
        onset and duration (e.g. Narratives' ``code/event_meta.json``); a difference of more
        than one volume from the events warns.
    dataset_name : str, default="BIDS"
        Name used in the description.

    Returns
    -------
    data : sklearn.utils.Bunch
        The dataset record (:mod:`sk_braintune.datasets.record`) with, besides its keys:
        ``subject``, ``root``, ``phone_set`` (``"arpabet"``), ``masker`` (the fitted
        ``NiftiMasker``, or ``SurfaceMasker`` when a surface mask was given, else None),
        ``n_vertices`` (``(n_left, n_right)`` on surfaces), ``clock`` (story -> the audio's
        duration and onset in its run, the story's span on the audio's clock, the scan's
        duration and the first word's onset and last word's end), ``presentations`` (participant ->
        list of dicts: story, run file, events file, volumes, audio onset), ``words_not_found``
        (story -> words the aligner did not place), ``excluded_runs``.

    Raises
    ------
    FileNotFoundError
        Missing subject, derivatives, stimulus, hemisphere or events (the message names the
        file and what to do).
    ValueError
        Missing TR, onsets beyond the run, runs in different spaces or grids, GIfTI arrays of
        different lengths, NaN or infinite values (``nan_policy="raise"``), alignments ending
        after the audio, audio shorter than the story rows.
    """
    from sklearn.utils import Bunch

    from .audio import TARGET_SAMPLE_RATE
    from .record import is_surface_space, resolve_split, validate_record

    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"BIDS root folder not found: {root}.")
    if not isinstance(space, str) or not space:
        raise ValueError(f"space must be a space name such as 'fsaverage6' or "
                         f"'MNI152NLin2009cAsym'; got {space!r}.")
    if nan_policy not in ("raise", "drop"):
        raise ValueError(f"nan_policy must be 'raise' or 'drop'; got {nan_policy!r}.")
    trim = (int(trim), 0) if np.isscalar(trim) else tuple(int(t) for t in trim)
    surface = is_surface_space(space)
    surface_masker = None
    if mask_img is not None and hasattr(mask_img, "mesh"):
        if not surface:
            raise ValueError(f"mask_img is a surface image but space {space!r} is a volume.")
        surface_masker = mask_img
    elif mask_img is not None and surface:
        raise ValueError(f"space {space!r} is a surface: mask_img must be a nilearn "
                         f"SurfaceImage of its mesh, not {type(mask_img).__name__}.")
    stimuli = root / "stimuli"
    deriv_roots = derivative_roots(root, derivatives)
    pipelines = (sorted(p for p in (root / "derivatives").iterdir() if p.is_dir())
                 if (root / "derivatives").is_dir() else [])

    # -- runs of each participant --------------------------------------------------------
    participants, per_runs, aux_files, excluded = [], {}, {}, {}
    for subj in participant_list(subject):
        label = find_subject(root, subj, "the BIDS root")
        name = f"sub-{label}"
        if name in per_runs:
            raise ValueError(f"subject {name} is listed twice.")
        files = derivative_files(deriv_roots, label)
        if not files:
            raise FileNotFoundError(f"no derivatives for {name} under "
                                    f"{[str(d) for d in deriv_roots]}; pass derivatives= the "
                                    "pipeline folder holding sub-<label>/.")
        runs, skipped = collect_runs(root, label, task, files, space=space, surface=surface,
                                     desc=desc, entities=entities, trial_types=trial_types,
                                     story_names=story_names, tr_override=tr,
                                     session=session, exclude=exclude,
                                     events_hook=events)
        participants.append(name)
        per_runs[name] = runs
        aux_files[name] = (files, derivative_files(list(set(deriv_roots) | set(pipelines)),
                                                   label))
        excluded[name] = skipped
    if stories is not None:
        # runs that present none of the stories asked for are not read
        wanted = {stories} if isinstance(stories, str) else set(stories)
        for name in participants:
            per_runs[name] = [r for r in per_runs[name] if row_story_names(r) & wanted]
            if not per_runs[name]:
                raise ValueError(f"{name} has no run presenting the stories {sorted(wanted)}.")
    all_runs = [r for name in participants for r in per_runs[name]]
    trs = sorted({r.tr for r in all_runs})
    if max(trs) - min(trs) > 1e-3:
        raise ValueError(f"the runs have different TRs {trs}; load them separately (task=).")
    tr_value = trs[0]

    # -- volume grid (before reading: volumes are masked as they are read) ----------------
    mask = affine = None
    mask_source = None
    if not surface:
        # brain masks may sit in another pipeline's folder (Narratives: fmriprep's masks of
        # the AFNI-cleaned runs)
        mask, affine, mask_source = volume_mask(
            all_runs, [f for n in participants for f in aux_files[n][1]], mask_img, space)

    # -- read every run once; presentations; valid columns ---------------------------------
    keep, n_vertices, presentations = read_runs(
        participants, per_runs, surface=surface, mask=mask, surface_masker=surface_masker,
        confounds=confounds, clean_args=clean_args, trim=trim, story_volumes=story_volumes,
        nan_policy=nan_policy)

    # -- stories ------------------------------------------------------------------------
    heard = []
    for name in participants:
        names = []
        for p in presentations[name]:
            if p["story"] not in names:
                names.append(p["story"])
        heard.append(names)
    common = [s for s in heard[0] if all(s in h for h in heard[1:])]
    if stories is None:
        order = common
        if not order:
            raise ValueError(f"the subjects {participants} heard no story in common.")
    else:
        order = [stories] if isinstance(stories, str) else list(stories)
        unknown = [s for s in order if s not in common]
        if unknown:
            raise ValueError(f"stories {unknown} were not heard by every subject "
                             f"{participants}; stories available: {common}.")

    # -- stimuli and alignments (one read per file) ---------------------------------------
    audio, words, phones, not_found, clock = story_stimuli(
        order, participants, presentations, stimuli=stimuli, alignments=alignments,
        tr_value=tr_value)

    # -- responses per participant: cleaned runs, presentations, repeats ------------------
    per_data, tr_times = story_responses(order, participants, per_runs, presentations, keep,
                                         aux_files, confounds=confounds, clean_args=clean_args,
                                         tr_value=tr_value)
    from ..metrics import noise_ceiling

    split = resolve_split(split, order, repeated=[s for s in order
                                                  if s in per_data[participants[0]].repeats])
    for name in participants:
        own = per_data[name]
        ceiling_story = next((s for s in split["test"] if s in own.repeats),
                             next((s for s in order if s in own.repeats), None))
        own.noise_ceiling = (None if ceiling_story is None
                             else noise_ceiling(own.repeats[ceiling_story]))
        own.noise_ceiling_story = ceiling_story
    columns = np.flatnonzero(keep)

    # -- columns back to images ------------------------------------------------------------
    masker = None
    if surface:
        column_index = columns.astype(np.int64)
        kept_img = None
        labels = np.where(column_index < n_vertices[0], "left", "right")
        if surface_masker is not None:
            from nilearn.maskers import SurfaceMasker

            masker = SurfaceMasker(surface_masker, standardize=None).fit()
    else:
        import nibabel as nib
        from nilearn.maskers import NiftiMasker

        flat = np.flatnonzero(mask.ravel(order="C"))
        column_index = flat[columns].astype(np.int64)
        grid = np.zeros(mask.size, dtype=np.uint8)
        grid[column_index] = 1
        kept_img = nib.Nifti1Image(grid.reshape(mask.shape), affine)
        masker = NiftiMasker(mask_img=kept_img, standardize=None).fit()
        labels = np.full(column_index.size, "brain")
    if voxel_labels is not None:
        labels = np.asarray(voxel_labels).astype(str)
        if labels.shape != column_index.shape:
            raise ValueError(f"voxel_labels has {labels.size} labels for "
                             f"{column_index.size} columns.")

    first = per_data[participants[0]]
    described = (f"{dataset_name}: {', '.join(participants)}, {len(order)} "
                 f"stor{'y' if len(order) == 1 else 'ies'} ({', '.join(order)}), "
                 f"{column_index.size} columns in space {space}"
                 + (f" (mask: {mask_source})" if mask_source else "")
                 + f", TR {tr_value} s"
                 + (f", confounds {confounds!r} regressed per run" if confounds is not None
                    else "")
                 + (f", noise ceiling from {first.noise_ceiling_story!r}"
                    if first.noise_ceiling_story else ", no repeats so no noise ceiling")
                 + ". Times are on each stimulus file's clock.")
    record = Bunch(
        stories=order, sample_rate=TARGET_SAMPLE_RATE, audio=audio, tr=float(tr_value),
        tr_times=tr_times, responses=first.responses, repeats=first.repeats,
        noise_ceiling=first.noise_ceiling, words=words, phones=phones, phone_set="arpabet",
        split=split, voxel_labels=labels, participants=tuple(participants),
        participant_data=per_data, space=space, column_index=column_index,
        mask_img=kept_img, description=described, subject=participants[0], root=str(root),
        masker=masker, n_vertices=n_vertices, words_not_found=not_found,
        presentations={n: per_data[n].presentations for n in participants},
        excluded_runs=excluded, clock=clock, noise_ceiling_story=first.noise_ceiling_story,
    )
    return validate_record(record)
