"""Miniature BIDS datasets in the real file formats: a generic fMRIPrep study, Narratives
(OpenNeuro ds002345) and Le Petit Prince (ds003643).

Every file is what the real datasets hold, only small: gzipped NIfTI runs with their
``RepetitionTime`` in sidecars (inherited from the top level) and in the header, GIfTI
hemispheres with one data array per volume (as fMRIPrep and AFNI write them, zeros on a
"medial wall"), ``events.tsv`` with ``music`` and ``story`` rows and ``stim_file``, WAV audio,
Praat TextGrids and Gentle ``align.json`` (with words ``not-found-in-audio``), fMRIPrep confounds
TSVs and brain masks, Narratives' ``code/event_meta.json`` and ``code/scan_exclude.json``.

Responses are a story-locked smooth signal (the same for every presentation of a story, so
repeats give a noise ceiling) plus independent noise; outside the brain mask and on the medial
wall they are zero.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .lebel import MINIATURE_LEXICON, _audio, _smooth_signal, _textgrid_text

__all__ = ["make_miniature_bids", "make_miniature_narratives", "make_miniature_petit_prince"]

_GRID = (5, 4, 3)
_AFFINE = np.diag([3.0, 3.0, 3.0, 1.0])
_WORD_SECONDS = 0.4
_GAP_SECONDS = 0.2
_SAMPLE_RATE = 16000


def _brain_mask():
    mask = np.zeros(_GRID, dtype=bool)
    mask[1:4, 1:3, :] = True
    return mask


def _words(start, stop, rng):
    """Words tiling [start, stop) (s), with their ARPAbet phones (stress digits)."""
    vocabulary = list(MINIATURE_LEXICON)
    words, time = [], start
    while time + _WORD_SECONDS <= stop:
        label = vocabulary[int(rng.integers(len(vocabulary)))]
        words.append((round(time, 4), round(time + _WORD_SECONDS, 4), label))
        time += _WORD_SECONDS + _GAP_SECONDS
    return words


def _phones(words):
    rows = []
    for onset, offset, label in words:
        pron = MINIATURE_LEXICON[label]
        edges = np.round(np.linspace(onset, offset, len(pron) + 1), 4)
        rows.extend((float(a), float(b), p) for a, b, p in zip(edges[:-1], edges[1:], pron))
    return rows


def _write_textgrid(path, words, duration):
    def tile(rows):
        out, time = [], 0.0
        for onset, offset, label in rows:
            if onset > time:
                out.append((time, onset, "sp" if time else ""))
            out.append((onset, offset, label))
            time = offset
        if time < duration:
            out.append((time, duration, ""))
        return out

    tiers = {"phones": tile(_phones(words)), "words": tile(words)}
    path.write_text(_textgrid_text(tiers, duration, "long"), encoding="utf-8")


def _write_gentle(path, words, not_found=()):
    """Gentle align.json: aligned words with phones (suffixes _B/_I/_E/_S), and missed words."""
    entries, offset = [], 0
    missed = list(not_found)
    for k, (onset, end, label) in enumerate(words):
        pron = [p.rstrip("012").lower() for p in MINIATURE_LEXICON[label]]
        duration = (end - onset) / len(pron)
        suffixes = (["S"] if len(pron) == 1
                    else ["B"] + ["I"] * (len(pron) - 2) + ["E"])
        entries.append({"alignedWord": label, "case": "success", "end": end,
                        "endOffset": offset + len(label), "start": onset,
                        "startOffset": offset, "word": label,
                        "phones": [{"duration": round(duration, 4), "phone": f"{p}_{s}"}
                                   for p, s in zip(pron, suffixes)]})
        offset += len(label) + 1
        if missed and k == len(words) // 2:
            word = missed.pop()
            entries.append({"case": "not-found-in-audio", "endOffset": offset + len(word),
                            "startOffset": offset, "word": word})
            offset += len(word) + 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"transcript": " ".join(e["word"] for e in entries),
                                "words": entries}, indent=1), encoding="utf-8")


def _write_wav(path, words, duration, sample_rate=22050):
    from scipy.io import wavfile

    path.parent.mkdir(parents=True, exist_ok=True)
    wavfile.write(path, sample_rate, _audio(words, duration, sample_rate, stereo=False))


def _write_nifti(path, data, tr, mask=None):
    """(n_volumes, n_mask_voxels) -> a gzipped 4-D NIfTI with TR in the header (s)."""
    import nibabel as nib

    mask = _brain_mask() if mask is None else mask
    volume = np.zeros((*_GRID, data.shape[0]), dtype=np.float32)
    volume[mask] = data.T
    img = nib.Nifti1Image(volume, _AFFINE)
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = tr
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)


def _write_gifti(path, data):
    """(n_volumes, n_vertices) -> a GIfTI with one float32 data array per volume."""
    import nibabel as nib

    arrays = [nib.gifti.GiftiDataArray(np.ascontiguousarray(row, dtype=np.float32),
                                       intent="NIFTI_INTENT_NONE", datatype="NIFTI_TYPE_FLOAT32")
              for row in data]
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.GiftiImage(darrays=arrays), path)


def _write_confounds(path, n_volumes, rng):
    import pandas as pd

    columns = {name: rng.standard_normal(n_volumes) * 0.1
               for name in ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z",
                            "csf", "white_matter", "global_signal")}
    columns["trans_x_derivative1"] = np.r_[np.nan, np.diff(columns["trans_x"])]
    columns["framewise_displacement"] = np.r_[np.nan, np.abs(rng.standard_normal(
        n_volumes - 1)) * 0.05]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(columns).to_csv(path, sep="\t", index=False, na_rep="n/a")


def _write_events(path, rows):
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["onset", "duration", "trial_type", "stim_file"]).to_csv(
        path, sep="\t", index=False, float_format="%.1f")


def _run_data(n_volumes, n_columns, segments, signals, rng, noise):
    """Noise everywhere, plus each story's signal at its volumes."""
    data = noise * rng.standard_normal((n_volumes, n_columns)).astype(np.float32)
    for story, start in segments:
        signal = signals[story]
        stop = min(start + len(signal), n_volumes)
        data[start:stop] += signal[:stop - start]
    return data + 100.0


def make_miniature_bids(root, *, subjects=("01", "02"), space="MNI152NLin2009cAsym",
                        task="listening", tr=2.0, confounds_naming="timeseries",
                        random_state=0, noise=0.5):
    """Write a small fMRIPrep-style BIDS study of story listening.

    Each subject has four runs of task ``task`` (``ses-1`` for runs 1 and 2, ``ses-2`` for
    runs 3 and 4): run 1 plays ``alpha.wav`` (story row at 4 s), run 2 a ``music`` row then
    ``beta.wav`` (the file starts with the music, at 2 s), run 3 ``alpha.wav`` again (a
    repeat), run 4 ``gamma.wav`` (story row at 6 s). ``alpha`` has a TextGrid, ``beta`` a
    Gentle ``beta_align.json`` and ``gamma`` a Gentle ``gentle/gamma/align.json``.
    ``RepetitionTime`` sits in the top-level ``task-<task>_bold.json`` (inherited).

    Parameters
    ----------
    root : str or path-like
        Folder to write (created).
    subjects : tuple of str, default=("01", "02")
    space : str, default="MNI152NLin2009cAsym"
        A volume space (``*_desc-preproc_bold.nii.gz`` on a 5x4x3 grid with a
        ``desc-brain_mask``) or ``"fsaverage5"``-like (``*_hemi-{L,R}_space-<s>_bold.func.gii``
        of 14 and 12 vertices, the first two of each hemisphere zero).
    task : str, default="listening"
    tr : float, default=2.0
    confounds_naming : {"timeseries", "regressors"}, default="timeseries"
        fMRIPrep's newer (``desc-confounds_timeseries.tsv``) or older naming.
    random_state : int, default=0
    noise : float, default=0.5
        Standard deviation of the noise (the signal has unit variance).

    Returns
    -------
    root : pathlib.Path
    """
    from ..datasets.record import is_surface_space

    root = Path(root)
    rng = np.random.default_rng(random_state)
    surface = is_surface_space(space)
    n_volumes = 30
    n_columns = (14 + 12) if surface else int(_brain_mask().sum())
    (root / "stimuli").mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "miniature", "BIDSVersion": "1.8.0"}))
    (root / f"task-{task}_bold.json").write_text(json.dumps({"RepetitionTime": tr,
                                                             "TaskName": task}))
    # stories: (audio onset in the run, story row onset, duration of the story row)
    alpha_seconds, beta_seconds = 40.0, 36.0
    alpha_words = _words(0.5, alpha_seconds - 0.5, rng)
    beta_words = _words(6.5, beta_seconds - 0.5, rng)
    _write_wav(root / "stimuli" / "alpha.wav", alpha_words, alpha_seconds)
    _write_wav(root / "stimuli" / "beta.wav", beta_words, beta_seconds)
    _write_textgrid(root / "stimuli" / "alpha.TextGrid", alpha_words, alpha_seconds)
    _write_gentle(root / "stimuli" / "beta_align.json", beta_words, not_found=("um",))
    gamma_seconds = 44.0
    gamma_words = _words(0.5, gamma_seconds - 0.5, rng)
    _write_wav(root / "stimuli" / "gamma.wav", gamma_words, gamma_seconds)
    _write_gentle(root / "stimuli" / "gentle" / "gamma" / "align.json", gamma_words)
    signals = {story: _smooth_signal(rng, n_volumes, n_columns)
               for story in ("alpha", "beta", "gamma")}
    runs = {  # run -> (session, events rows, [(story, first volume of the story row)])
        1: ("1", [(4.0, 40.0, "story", "alpha.wav")], [("alpha", 2)]),
        2: ("1", [(2.0, 6.0, "music", "beta.wav"), (8.0, 30.0, "story", "beta.wav")],
            [("beta", 4)]),
        3: ("2", [(4.0, 40.0, "story", "alpha.wav")], [("alpha", 2)]),
        4: ("2", [(6.0, 44.0, "story", "gamma.wav")], [("gamma", 3)]),
    }
    fmriprep = root / "derivatives" / "fmriprep"
    for subject in subjects:
        for run, (session, rows, segments) in runs.items():
            base = f"sub-{subject}_ses-{session}_task-{task}_run-{run}"
            func = root / f"sub-{subject}" / f"ses-{session}" / "func"
            out = fmriprep / f"sub-{subject}" / f"ses-{session}" / "func"
            raw = _run_data(n_volumes, int(_brain_mask().sum()), [], {}, rng, noise)
            _write_nifti(func / f"{base}_bold.nii.gz", raw, tr)
            _write_events(func / f"{base}_events.tsv", rows)
            data = _run_data(n_volumes, n_columns, segments, signals, rng, noise)
            if surface:
                data[:, [0, 1, 14, 15]] = 0.0  # medial wall
                _write_gifti(out / f"{base}_hemi-L_space-{space}_bold.func.gii", data[:, :14])
                _write_gifti(out / f"{base}_hemi-R_space-{space}_bold.func.gii", data[:, 14:])
            else:
                _write_nifti(out / f"{base}_space-{space}_desc-preproc_bold.nii.gz", data, tr)
                import nibabel as nib

                nib.save(nib.Nifti1Image(_brain_mask().astype(np.uint8), _AFFINE),
                         out / f"{base}_space-{space}_desc-brain_mask.nii.gz")
            (out / f"{base}_space-{space}_desc-preproc_bold.json").write_text(
                json.dumps({"RepetitionTime": tr}))
            _write_confounds(out / f"{base}_desc-confounds_{confounds_naming}.tsv", n_volumes,
                             rng)
    return root


# -- Narratives ---------------------------------------------------------------------------

NARRATIVES_TR = 1.5
_NARRATIVES_VERTICES = (30, 28)


def make_miniature_narratives(root, *, random_state=0, noise=0.5):
    """Write a small copy of Narratives (ds002345) in its real layout.

    Three subjects: ``sub-001`` heard ``pieman`` twice (``run-1``, ``run-2``) and
    ``slumlordreach``; ``sub-002`` heard ``pieman`` once (no run entity) and ``slumlordreach``;
    ``sub-003``'s ``pieman`` is listed in ``code/scan_exclude.json``. ``pieman`` runs have a
    ``music`` row at 0 s and the story at 4.5 s, all in ``pieman_audio.wav`` (which starts
    with the music); ``slumlordreach`` has two stories (``slumlord`` and ``reach``) in one
    file, with music before each, named by ``code/event_meta.json``. Derivatives:
    ``afni-nosmooth`` and ``afni-smooth`` in ``fsaverage6`` (GIfTI pairs of 30 and 28
    vertices here, one data array per volume, zeros on a medial wall) and
    ``MNI152NLin2009cAsym`` (``res-native``, ``desc-clean``), fMRIPrep confounds
    (``desc-confounds_regressors.tsv``) and brain masks under ``derivatives/fmriprep``. TR 1.5 s
    in the top-level ``task-<t>_bold.json``.

    Parameters
    ----------
    root : str or path-like
    random_state : int, default=0
    noise : float, default=0.5

    Returns
    -------
    root : pathlib.Path
    """
    import nibabel as nib

    root = Path(root)
    rng = np.random.default_rng(random_state)
    tr = NARRATIVES_TR
    n_surface = sum(_NARRATIVES_VERTICES)
    n_voxels = int(_brain_mask().sum())
    # task -> (n_volumes, events rows, audio seconds, {story: (first volume, n volumes)})
    tasks = {
        "pieman": (24, [(0.0, 3.0, "music", "pieman_audio.wav"),
                        (4.5, 27.0, "story", "pieman_audio.wav")], 33.0,
                   {"pieman": (3, 18)}),
        "slumlordreach": (40, [(1.5, 1.5, "music", "slumlordreach_audio.wav"),
                               (3.0, 21.0, "story", "slumlordreach_audio.wav"),
                               (25.5, 3.0, "music", "slumlordreach_audio.wav"),
                               (30.0, 21.0, "story", "slumlordreach_audio.wav")], 52.0,
                          {"slumlord": (2, 14), "reach": (20, 14)}),
    }
    (root / "stimuli").mkdir(parents=True, exist_ok=True)
    (root / "code").mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "Narratives (miniature)", "BIDSVersion": "1.2.1"}))
    event_meta, signals_surface, signals_volume = {}, {}, {}
    for task, (n_volumes, rows, seconds, stories) in tasks.items():
        (root / f"task-{task}_bold.json").write_text(json.dumps(
            {"RepetitionTime": tr, "TaskName": task}))
        audio_onset = rows[0][0]
        words = []
        for onset, duration, kind, _ in rows:
            if kind == "story":
                words += _words(onset - audio_onset + 0.3, onset + duration - audio_onset - 0.3,
                                rng)
        _write_wav(root / "stimuli" / f"{task}_audio.wav", words, seconds, sample_rate=44100)
        _write_gentle(root / "stimuli" / "gentle" / task / "align.json", words,
                      not_found=("uh", "hmm"))
        event_meta[task] = {name: {"onset": first, "duration": count}
                            for name, (first, count) in stories.items()}
        for name, (_, count) in stories.items():
            signals_surface[name] = _smooth_signal(rng, count, n_surface)
            signals_volume[name] = _smooth_signal(rng, count, n_voxels)
    (root / "code" / "event_meta.json").write_text(json.dumps(event_meta, indent=2))
    (root / "code" / "scan_exclude.json").write_text(json.dumps(
        {"pieman": {"sub-003": ["sub-003_task-pieman"]}, "slumlordreach": {}}, indent=2))
    scans = {"sub-001": [("pieman", "1"), ("pieman", "2"), ("slumlordreach", None)],
             "sub-002": [("pieman", None), ("slumlordreach", None)],
             "sub-003": [("pieman", None), ("slumlordreach", None)]}
    mni = "MNI152NLin2009cAsym"
    for subject, runs in scans.items():
        for task, run in runs:
            n_volumes, rows, _, stories = tasks[task]
            base = f"{subject}_task-{task}" + (f"_run-{run}" if run else "")
            func = root / subject / "func"
            _write_nifti(func / f"{base}_bold.nii.gz",
                         _run_data(n_volumes, n_voxels, [], {}, rng, noise), tr)
            _write_events(func / f"{base}_events.tsv", rows)
            segments = [(name, first) for name, (first, _) in stories.items()]
            surface = _run_data(n_volumes, n_surface, segments, signals_surface, rng, noise)
            n_left = _NARRATIVES_VERTICES[0]
            surface[:, [0, 1, 2, n_left, n_left + 1]] = 0.0  # medial wall
            volume = _run_data(n_volumes, n_voxels, segments, signals_volume, rng, noise)
            for pipeline in ("afni-nosmooth", "afni-smooth"):
                out = root / "derivatives" / pipeline / subject / "func"
                _write_gifti(out / f"{base}_space-fsaverage6_hemi-L_desc-clean.func.gii",
                             surface[:, :n_left])
                _write_gifti(out / f"{base}_space-fsaverage6_hemi-R_desc-clean.func.gii",
                             surface[:, n_left:])
                _write_nifti(out / f"{base}_space-{mni}_res-native_desc-clean_bold.nii.gz",
                             volume, tr)
            prep = root / "derivatives" / "fmriprep" / subject / "func"
            _write_confounds(prep / f"{base}_desc-confounds_regressors.tsv", n_volumes, rng)
            prep.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(_brain_mask().astype(np.uint8), _AFFINE),
                     prep / f"{base}_space-{mni}_res-native_desc-brain_mask.nii.gz")
    return root


# -- Le Petit Prince ----------------------------------------------------------------------

PETIT_PRINCE_TR = 2.0
PETIT_PRINCE_LEAD_IN = 8.0


def make_miniature_petit_prince(root, *, language="EN", subjects=("EN057",), runs=(9, 10, 11),
                                random_state=0, noise=0.5):
    """Write a small copy of Le Petit Prince (ds003643) in its layout.

    Sections 1..3 of ``task-lpp<language>``: audio ``stimuli/task-lpp<L>_section-<n>.wav``,
    TextGrids ``annotation/<L>/lpp<L>_section<n>.TextGrid``; runs numbered ``runs`` (by default
    9, 10, 11: sorted as text, run-10 would come before run-9), each starting
    :data:`PETIT_PRINCE_LEAD_IN` s (4 volumes) before its section's audio; derivatives
    ``derivatives/sub-<s>/func/<base>_space-MNIColin27_desc-preproc_bold.nii.gz`` with a brain
    mask; TR 2.0 s in ``task-lpp<L>_bold.json``. The raw runs are multi-echo (``echo-1``,
    ``echo-2``), the derivatives one combined run each, as in the English data.

    Parameters
    ----------
    root : str or path-like
    language : {"EN", "FR", "CN"}, default="EN"
    subjects : tuple of str, default=("EN057",)
    runs : tuple of int, default=(9, 10, 11)
    random_state : int, default=0
    noise : float, default=0.5

    Returns
    -------
    root : pathlib.Path
    """
    import nibabel as nib

    root = Path(root)
    rng = np.random.default_rng(random_state)
    tr, task = PETIT_PRINCE_TR, f"lpp{language}"
    lead = int(round(PETIT_PRINCE_LEAD_IN / tr))
    n_voxels = int(_brain_mask().sum())
    root.mkdir(parents=True, exist_ok=True)
    (root / f"task-{task}_bold.json").write_text(json.dumps({"RepetitionTime": tr}))
    seconds = {}
    signals = {}
    for section in range(1, len(runs) + 1):
        seconds[section] = 30.0 + 4.0 * section
        words = _words(0.4, seconds[section] - 0.4, rng)
        _write_wav(root / "stimuli" / f"task-{task}_section-{section}.wav", words,
                   seconds[section])
        folder = root / "annotation" / language
        folder.mkdir(parents=True, exist_ok=True)
        _write_textgrid(folder / f"{task}_section{section}.TextGrid", words, seconds[section])
        signals[section] = _smooth_signal(rng, int(seconds[section] / tr), n_voxels)
    for subject in subjects:
        for section, run in enumerate(runs, start=1):
            n_volumes = lead + int(seconds[section] / tr) + 3
            base = f"sub-{subject}_task-{task}_run-{run}"
            data = _run_data(n_volumes, n_voxels, [(section, lead)], signals, rng, noise)
            for echo in (1, 2):  # multi-echo raw runs, one combined derivative
                raw = root / f"sub-{subject}" / "func" / f"{base}_echo-{echo}_bold.nii.gz"
                _write_nifti(raw, _run_data(n_volumes, n_voxels, [], {}, rng, noise), tr)
            out = root / "derivatives" / f"sub-{subject}" / "func"
            _write_nifti(out / f"{base}_space-MNIColin27_desc-preproc_bold.nii.gz", data, tr)
            nib.save(nib.Nifti1Image(_brain_mask().astype(np.uint8), _AFFINE),
                     out / f"{base}_space-MNIColin27_desc-brain_mask.nii.gz")
    return root
