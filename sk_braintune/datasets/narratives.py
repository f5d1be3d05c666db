"""Loader of the Narratives dataset (Nastase et al. 2021, OpenNeuro ds002345).

Layout read (the release's; see :func:`load_narratives`)::

    root/sub-NNN/func/sub-NNN_task-<t>[_run-K]_bold.nii.gz, ..._events.tsv
    root/task-<t>_bold.json                                 RepetitionTime 1.5
    root/stimuli/<t>_audio.wav                              the audio of task <t>
    root/stimuli/gentle/<t>/align.json                      Gentle word/phone alignment
    root/code/event_meta.json       {task: {story: {"onset": volume, "duration": volumes}}}
    root/code/scan_exclude.json     {task: {subject: [file-name prefixes]}}
    root/derivatives/afni-{nosmooth,smooth}/sub-NNN/func/
        <base>_space-fsaverage6_hemi-{L,R}_desc-clean.func.gii   (one data array per volume)
        <base>_space-MNI152NLin2009cAsym_res-native_desc-clean_bold.nii.gz
    root/derivatives/fmriprep/sub-NNN/func/<base>_desc-confounds_regressors.tsv, masks

**The clock (what the dataset's code and files say).** Each run's ``events.tsv`` has a
``story`` row and, for some tasks, a ``music`` row before it, both naming the same
``<t>_audio.wav``: the file starts with the music, at the music row's onset (0 s for
``pieman``, whose file spans the 300-volume scan; the paper's Figure 1 draws its waveform over
the whole scan and the Gentle word times on the same axis, the first words at 15 s, the story
row's onset). Tasks without music (``tunnel``, ``bronx``...) start the file at the story row's
onset (the presentation script waits 12 s after the first trigger, the onset in their events).
Gentle's ``start``/``end`` are seconds on the audio file's clock. ``code/event_meta.json``
gives each story's first volume and length, ``round(onset / 1.5)`` and ``round(duration /
1.5)`` of the story row (it splits ``slumlordreach`` into ``slumlord`` and ``reach``); the
dataset's own analyses keep ``[onset:onset + duration]`` and then drop a few initial volumes
(``trim``). So the loader's TR times are ``(volume + 0.5) * 1.5 - audio onset``; at load time it
checks that the words lie inside the audio, that the audio covers the story row, and warns when
the audio outlasts the scan (the record's ``clock`` keeps the figures).
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["load_narratives", "NARRATIVES_PIPELINES"]

NARRATIVES_PIPELINES = ("afni-nosmooth", "afni-smooth", "fmriprep")
"""Derivatives of the release that hold preprocessed runs."""


def _read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _exclusions(root):
    path = root / "code" / "scan_exclude.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; it lists the scans the dataset's authors "
                                "exclude. Restore it from the release, or pass exclude=False "
                                "to keep every scan.")
    table = _read_json(path)
    # the dataset's own exclude_scan: every listed prefix, matched inside the file name
    return [prefix for task in table.values() for prefixes in task.values()
            for prefix in prefixes]


def _excluder(prefixes):
    def excluded(path):
        return any(prefix in Path(path).name for prefix in prefixes)

    return excluded


def load_narratives(root, subject, stories=None, *, space="fsaverage6",
                    pipeline="afni-nosmooth", exclude=True, task=None, confounds=None,
                    clean_args=None, trim=(0, 0), split=None, nan_policy="raise"):
    """Load one or several Narratives listeners.

    Parameters
    ----------
    root : str or path-like
        The dataset (``ds002345``).
    subject : str or int or list of them
        ``"sub-001"``, ``"001"`` or ``1``; with several, the stories all heard.
    stories : list of str, optional
        Story names as in ``code/event_meta.json`` (the task, ``"pieman"``, or the parts of a
        task, ``"slumlord"``, ``"reach"``); all by default.
    space : {"fsaverage6", "MNI152NLin2009cAsym"} or another space of the pipeline
    pipeline : {"afni-nosmooth", "afni-smooth", "fmriprep"}, default="afni-nosmooth"
    exclude : bool, default=True
        Leave out the scans listed in ``code/scan_exclude.json`` (prefixes matched inside the
        file names, as the dataset's ``exclude_scan`` does).
    task : str or list of str, optional
        Only these tasks.
    confounds, clean_args, trim, split, nan_policy
        As in :func:`~sk_braintune.datasets.load_bids` (confounds come from
        ``derivatives/fmriprep``, whatever the pipeline).

    Returns
    -------
    data : sklearn.utils.Bunch
        The dataset record (see :func:`~sk_braintune.datasets.load_bids`); ``phone_set`` is
        ``"arpabet"`` (Gentle's phones, upper case, without stress digits);
        ``words_not_found`` counts each story's words Gentle marked ``not-found-in-audio``
        (dropped from ``words``); a story heard twice (``pieman`` run-1 and run-2) has
        ``repeats``.

    Raises
    ------
    FileNotFoundError, ValueError
        As :func:`~sk_braintune.datasets.load_bids`, plus an unknown pipeline.
    """
    from .bids import load_bids

    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"Narratives root folder not found: {root}; download "
                                "OpenNeuro ds002345 and pass its folder.")
    if pipeline not in NARRATIVES_PIPELINES:
        raise ValueError(f"pipeline must be one of {NARRATIVES_PIPELINES}; got {pipeline!r}.")
    derivatives = root / "derivatives" / pipeline
    if not derivatives.is_dir():
        raise FileNotFoundError(f"{derivatives} is missing; download the {pipeline} "
                                "derivatives of ds002345 (or choose another pipeline).")
    meta_path = root / "code" / "event_meta.json"
    event_meta = _read_json(meta_path) if meta_path.is_file() else {}
    story_volumes = {story: (entry["onset"], entry["duration"])
                     for parts in event_meta.values() for story, entry in parts.items()}

    def story_names(stim_file, n_rows):
        stem = Path(stim_file).name.split(".")[0].removesuffix("_audio")
        parts = event_meta.get(stem)
        if parts and len(parts) == n_rows:
            return sorted(parts, key=lambda name: parts[name]["onset"])
        return [stem] if n_rows == 1 else [f"{stem}-{k + 1}" for k in range(n_rows)]

    alignments = {f"{folder.name}_audio.wav": folder / "align.json"
                  for folder in sorted((root / "stimuli" / "gentle").glob("*"))
                  if (folder / "align.json").is_file()}
    skip = _excluder(_exclusions(root)) if exclude else None

    desc = "clean" if pipeline.startswith("afni") else None
    return load_bids(root, subject, task, space=space, derivatives=derivatives,
                     stories=stories, confounds=confounds, clean_args=clean_args, desc=desc,
                     trial_types=("story",), story_names=story_names, alignments=alignments,
                     trim=trim, nan_policy=nan_policy, split=split, exclude=skip,
                     story_volumes=story_volumes or None,
                     dataset_name=f"Narratives (ds002345, {pipeline})")
