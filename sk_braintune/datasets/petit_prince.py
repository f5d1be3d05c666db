"""Loader of Le Petit Prince (Li et al. 2022, OpenNeuro ds003643), one language at a time.

Layout read::

    root/sub-<s>/func/sub-<s>_task-lpp<L>_run-<k>_bold.nii.gz     raw runs (TR 2 s)
    root/task-lpp<L>_bold.json (or the runs' sidecars)             RepetitionTime
    root/stimuli/task-lpp<L>_section-<n>.wav                       the nine sections' audio
    root/annotation/<L>/lpp<L>_section<n>.TextGrid                 word timings per section
    root/derivatives/sub-<s>/func/<base>_space-MNIColin27_desc-preproc_bold.nii.gz

The audiobook was played in nine sections, one per run, in order; the run numbers in the file
names are not the section numbers (some listeners' runs are numbered from 15, say): the runs are
sorted by number and the k-th run is section k. Each section's audio starts about 8 s (4
volumes) after the run's first trigger (``lead_in``); a section ends with its audio or with the
scan, whichever is first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["load_petit_prince", "PETIT_PRINCE_LANGUAGES", "PETIT_PRINCE_LEAD_IN"]

PETIT_PRINCE_LANGUAGES = ("EN", "FR", "CN")
PETIT_PRINCE_LEAD_IN = 8.0
"""Seconds from a run's first trigger to the start of its section's audio."""


def _wav_seconds(path):
    from scipy.io import wavfile

    rate, data = wavfile.read(path, mmap=True)
    return data.shape[0] / float(rate)


def load_petit_prince(root, subject, *, language="EN", space="MNIColin27", derivatives=None,
                      sections=None, lead_in=PETIT_PRINCE_LEAD_IN, confounds=None,
                      clean_args=None, trim=(0, 0), split=None, nan_policy="raise"):
    """Load one or several Le Petit Prince listeners of one language.

    Parameters
    ----------
    root : str or path-like
        The dataset (``ds003643``).
    subject : str or list of str
        ``"sub-EN057"`` or ``"EN057"``.
    language : {"EN", "FR", "CN"}, default="EN"
    space : str, default="MNIColin27"
        The derivatives' space.
    derivatives : str or path-like, optional
        Folder of the preprocessed runs (default ``root/derivatives``).
    sections : list of int, optional
        Sections to load (1..9); all by default. Stories are named ``"section1"``...
    lead_in : float, default=8.0
        Seconds from a run's start to its audio.
    confounds, clean_args, trim, split, nan_policy
        As in :func:`~sk_braintune.datasets.load_bids`.

    Returns
    -------
    data : sklearn.utils.Bunch
        The dataset record (see :func:`~sk_braintune.datasets.load_bids`).

    Raises
    ------
    FileNotFoundError
        A missing section audio or TextGrid (named).
    ValueError
        More runs than sections, an unknown language, and as ``load_bids``.
    """
    import pandas as pd

    from .bids import load_bids

    root = Path(root).expanduser()
    if language not in PETIT_PRINCE_LANGUAGES:
        raise ValueError(f"language must be one of {PETIT_PRINCE_LANGUAGES}; got "
                         f"{language!r}.")
    if not root.is_dir():
        raise FileNotFoundError(f"Le Petit Prince root folder not found: {root}; download "
                                "OpenNeuro ds003643 and pass its folder.")
    task = f"lpp{language}"
    audio = sorted((root / "stimuli").glob(f"task-{task}_section-*.wav"),
                   key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    if not audio:
        raise FileNotFoundError(f"no section audio {root / 'stimuli'}/task-{task}_section-<n>"
                                ".wav; download the stimuli of ds003643.")
    numbers = [int(p.stem.rsplit("-", 1)[1]) for p in audio]
    alignments = {}
    for number, path in zip(numbers, audio):
        grid = root / "annotation" / language / f"{task}_section{number}.TextGrid"
        if not grid.is_file():
            raise FileNotFoundError(f"word timings of section {number} not found: {grid} "
                                    f"(expected annotation/{language}/{task}_section<n>."
                                    "TextGrid).")
        alignments[path.name] = grid
    seconds = {}

    def events(bold, position, n_volumes, tr):
        section = position + 1
        if section not in numbers:
            raise ValueError(f"{bold.name} is run {position + 1} of the listener's sorted runs "
                             f"but there are only sections {numbers}: extra runs? Pass "
                             "the derivatives of the nine story runs only.")
        stim = f"task-{task}_section-{section}.wav"
        if stim not in seconds:
            seconds[stim] = _wav_seconds(root / "stimuli" / stim)
        duration = seconds[stim]
        if n_volumes is not None:
            duration = min(duration, n_volumes * tr - lead_in)
        return pd.DataFrame({"onset": [float(lead_in)], "duration": [float(duration)],
                             "trial_type": ["story"], "stim_file": [stim]})

    names = {f"task-{task}_section-{n}.wav": f"section{n}" for n in numbers}
    stories = None if sections is None else [f"section{int(n)}" for n in np.atleast_1d(sections)]
    return load_bids(root, subject, task, space=space,
                     derivatives=derivatives if derivatives is not None
                     else root / "derivatives",
                     stories=stories, confounds=confounds, clean_args=clean_args,
                     story_names=names, alignments=alignments, trim=trim,
                     nan_policy=nan_policy, split=split, events=events,
                     dataset_name=f"Le Petit Prince (ds003643, {language})")
