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
the Narratives AFNI pipeline ``_space-fsaverage6_hemi-L_desc-clean``).

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
blocks, masked as they are read (only the volumes of the selected stories, unless cleaning
needs the whole run); GIfTI files (XML, which nibabel parses whole) one at a time.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

__all__ = ["load_bids", "parse_bids_name", "subject_label"]

_NIFTI = (".nii.gz", ".nii")
_CONFOUND_SUFFIXES = ("timeseries", "regressors")
_NILEARN_STRATEGIES = ("motion", "high_pass", "wm_csf", "global_signal", "compcor",
                       "ica_aroma", "tedana", "scrub", "non_steady_state")
# entities that tell runs apart; a derivative must agree on every one the raw run has
_RUN_ENTITIES = ("sub", "ses", "task", "acq", "ce", "rec", "dir", "run", "echo")


def parse_bids_name(name):
    """Split a BIDS file name into its entities, suffix and extension.

    Parameters
    ----------
    name : str or path-like
        File name or path, e.g. ``"sub-01_task-x_hemi-L_space-fsaverage5_bold.func.gii"``.

    Returns
    -------
    entities : dict of str to str
        ``{"sub": "01", "task": "x", "hemi": "L", "space": "fsaverage5"}``.
    suffix : str or None
        ``"bold"`` (None when the last part is an entity, as in ``..._desc-clean.func.gii``).
    extension : str
        ``".func.gii"``.

    Examples
    --------
    >>> parse_bids_name("sub-01_task-pieman_run-1_events.tsv")
    ({'sub': '01', 'task': 'pieman', 'run': '1'}, 'events', '.tsv')
    """
    name = Path(name).name
    stem, dot, rest = name.partition(".")
    extension = dot + rest
    entities, suffix = {}, None
    for part in stem.split("_"):
        key, dash, value = part.partition("-")
        if dash:
            entities[key] = value
        else:
            suffix = part
    return entities, suffix, extension


def subject_label(subject):
    """A BIDS subject label without ``sub-``.

    Parameters
    ----------
    subject : str or int
        ``"sub-001"``, ``"001"`` or ``1`` (an int is matched to a folder later).

    Returns
    -------
    label : str
    """
    text = str(subject).strip()
    return text[4:] if text.startswith("sub-") else text


def _find_subject(root, subject, where):
    label = subject_label(subject)
    candidates = [label]
    if label.isdigit():
        candidates += [f"{int(label):0{width}d}" for width in (2, 3, 4)] + [str(int(label))]
    for candidate in candidates:
        if (root / f"sub-{candidate}").is_dir():
            return candidate
    available = sorted(p.name for p in root.glob("sub-*") if p.is_dir())
    raise FileNotFoundError(f"subject {subject!r} not found in {where} {root}: no folder "
                            f"sub-{label}; available: {available[:20]}"
                            f"{' ...' if len(available) > 20 else ''}.")


def _participant_list(subject):
    if isinstance(subject, (str, int, np.integer)):
        return [subject]
    subjects = list(subject)
    if not subjects:
        raise ValueError("subject is empty; pass a label such as 'sub-01' or a list of them.")
    return subjects


def _matches(entities, wanted):
    return all(entities.get(key) == value for key, value in wanted.items())


def _run_key(entities):
    return {k: entities[k] for k in _RUN_ENTITIES if k in entities}


def _inherited(root, path, suffix, extension, entities):
    """Files of the BIDS inheritance chain of ``path`` (top level first, the nearest last)."""
    chain = []
    folder = path.parent
    folders = []
    while True:
        folders.append(folder)
        if folder == root or root not in folder.parents:
            break
        folder = folder.parent
    for folder in reversed(folders):
        for candidate in sorted(folder.glob(f"*{extension}")):
            ents, suf, ext = parse_bids_name(candidate)
            if suf == suffix and ext == extension and all(entities.get(k) == v
                                                          for k, v in ents.items()):
                chain.append(candidate)
    return chain


def _repetition_time(root, bold, derivative):
    """TR (s) from the sidecars (BIDS inheritance), the derivative's sidecar as a fallback."""
    entities, _, _ = parse_bids_name(bold)
    tr, source = None, None
    for sidecar in _inherited(root, bold, "bold", ".json", entities):
        with open(sidecar, encoding="utf-8") as f:
            content = json.load(f)
        if "RepetitionTime" in content:
            tr, source = content["RepetitionTime"], sidecar
    if tr is None and derivative is not None:
        sidecar = Path(str(derivative).split(".")[0] + ".json")
        if sidecar.is_file():
            content = json.loads(sidecar.read_text(encoding="utf-8"))
            if "RepetitionTime" in content:
                tr, source = content["RepetitionTime"], sidecar
    if tr is None:
        sidecars = [str(p) for p in _inherited(root, bold, "bold", ".json", entities)]
        own = bold.with_name(bold.name.split(".")[0] + ".json")
        raise ValueError(
            f"no RepetitionTime for {bold.name}: none of its sidecars ({sidecars or 'none'}) "
            f"has it. Add \"RepetitionTime\": <seconds> to {own} (or a task-level "
            "task-<t>_bold.json), or pass tr=<seconds>.")
    tr = float(tr)
    if not (np.isfinite(tr) and tr > 0):
        raise ValueError(f"RepetitionTime {tr!r} in {source} is not a positive number of "
                         "seconds.")
    return tr, source


def _header_tr(path):
    import nibabel as nib

    img = nib.load(str(path))
    zooms = img.header.get_zooms()
    if len(zooms) < 4 or not zooms[3] > 0:
        return None
    unit = img.header.get_xyzt_units()[1]
    return float(zooms[3]) / 1000.0 if unit == "msec" else float(zooms[3])


def _read_events(path, trial_types):
    import pandas as pd

    table = pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=True)
    for column in ("onset", "duration", "stim_file"):
        if column not in table.columns:
            raise ValueError(f"{path} has no {column!r} column (columns: {list(table.columns)});"
                             " every story row needs onset, duration and stim_file (the audio "
                             "file under stimuli/).")
    named = table[table["stim_file"].notna()]
    if "trial_type" in table.columns and trial_types is not None:
        selected = named[named["trial_type"].astype(str).isin(list(trial_types))]
    else:
        selected = named
    return named, selected


def _nifti_shape(path):
    import nibabel as nib

    return nib.load(str(path)).shape


def _gifti_volumes(path):
    """(n_volumes, n_vertices) float32 of a GIfTI with one data array per volume (or one 2-D)."""
    import nibabel as nib

    img = nib.load(str(path))
    arrays = img.darrays
    if not arrays:
        raise ValueError(f"{path} holds no data arrays.")
    if len(arrays) == 1 and np.ndim(arrays[0].data) == 2:
        return np.ascontiguousarray(np.asarray(arrays[0].data, dtype=np.float32).T)
    lengths = [np.size(a.data) for a in arrays]
    if len(set(lengths)) > 1 or any(np.ndim(a.data) != 1 for a in arrays):
        bad = next(i for i, a in enumerate(arrays)
                   if np.size(a.data) != lengths[0] or np.ndim(a.data) != 1)
        raise ValueError(f"{path}: the GIfTI data arrays differ in length (array 0 has "
                         f"{lengths[0]} vertices, array {bad} has shape "
                         f"{np.shape(arrays[bad].data)}); each volume must be one array over "
                         "all vertices of the hemisphere. Re-export the file.")
    out = np.empty((len(arrays), lengths[0]), dtype=np.float32)
    for i, array in enumerate(arrays):
        out[i] = array.data
    return out


class _Run:
    """One run of one subject: its files, TR and presentations."""

    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


def _derivative_roots(root, derivatives):
    if derivatives is not None:
        roots = [Path(d).expanduser() for d in
                 ([derivatives] if isinstance(derivatives, (str, Path)) else derivatives)]
        for d in roots:
            if not d.is_dir():
                raise FileNotFoundError(f"derivatives folder not found: {d}.")
        return roots
    base = root / "derivatives"
    if not base.is_dir():
        raise FileNotFoundError(f"{root} has no derivatives/ folder; pass derivatives= the "
                                "folder of the preprocessed data (e.g. fMRIPrep's output).")
    return sorted(p for p in base.iterdir() if p.is_dir())


def _derivative_files(roots, label):
    files = []
    for d in roots:
        folder = d / f"sub-{label}"
        if folder.is_dir():
            files.extend(p for p in folder.rglob("*") if p.is_file())
    return files


def _find_data(run_entities, files, space, surface, desc, extra, bold):
    """The derivative file(s) of one run in ``space``: a NIfTI, or the (left, right) GIfTIs."""
    wanted = dict(run_entities, **(extra or {}))
    spaces, hits = set(), {"L": [], "R": [], "vol": []}
    for path in files:
        entities, suffix, extension = parse_bids_name(path)
        if not _matches(entities, wanted):
            continue
        if desc is not None and entities.get("desc") != desc:
            continue
        if extension == ".func.gii" and "hemi" in entities:
            spaces.add(entities.get("space"))
            if surface and entities.get("space") == space and entities["hemi"] in "LR":
                hits[entities["hemi"]].append(path)
        elif extension in _NIFTI and suffix == "bold":
            spaces.add(entities.get("space"))
            if not surface and entities.get("space") == space:
                hits["vol"].append(path)
    name = bold.name if bold is not None else str(run_entities)
    if surface:
        for hemi in "LR":
            if len(hits[hemi]) > 1:
                raise ValueError(f"run {name}: several hemi-{hemi} files in space {space}: "
                                 f"{[str(p) for p in hits[hemi]]}; pass desc= or "
                                 "entities={...} to pick one.")
        if not hits["L"] and not hits["R"]:
            return None, spaces
        missing = [h for h in "LR" if not hits[h]]
        if missing:
            present = hits["L"] or hits["R"]
            raise FileNotFoundError(
                f"run {name}: the hemi-{missing[0]} file of space {space} is missing (found "
                f"{present[0]}); both hemispheres are needed: restore the "
                f"{'left' if missing[0] == 'L' else 'right'} hemisphere's file.")
        return (hits["L"][0], hits["R"][0]), spaces
    if len(hits["vol"]) > 1:
        raise ValueError(f"run {name}: several volume files in space {space}: "
                         f"{[str(p) for p in hits['vol']]}; pass desc= or entities={{...}} "
                         "(e.g. {'res': 'native'}) to pick one.")
    return (hits["vol"][0] if hits["vol"] else None), spaces


def _find_aux(run_entities, files, *, suffixes, desc, space=None, extension):
    for path in files:
        entities, suffix, ext = parse_bids_name(path)
        if (suffix in suffixes and ext == extension and entities.get("desc") == desc
                and _matches(entities, run_entities)
                and (space is None or entities.get("space") in (space, None))):
            return path
    return None


def _alignment_file(stimuli, stim_file, alignments):
    stem = Path(stim_file).name.split(".")[0]
    if alignments is not None:
        for key in (stim_file, stem):
            if key in alignments:
                return Path(alignments[key])
    folder = (stimuli / stim_file).parent
    for candidate in (folder / f"{stem}.TextGrid", folder / f"{stem}.textgrid",
                      folder / f"{stem}_align.json", folder / f"{stem}.align.json",
                      folder / "gentle" / stem / "align.json", folder / f"{stem}.json"):
        if candidate.is_file():
            return candidate
    return None


def read_alignment(path):
    """Words, phones and the number of words not aligned, from a TextGrid or a Gentle JSON.

    Parameters
    ----------
    path : str or path-like
        ``.TextGrid`` (phones in tier 0, words in tier 1, or tiers named ``phones`` and
        ``words``) or Gentle ``align.json``.

    Returns
    -------
    words, phones : pandas.DataFrame
        ``onset``, ``offset``, ``label``, silences dropped.
    n_not_found : int
        Words the aligner did not find in the audio (Gentle only; 0 for TextGrids).
    """
    from .gentle import read_gentle
    from .textgrid import read_textgrid, words_and_phones

    path = Path(path)
    if path.suffix.lower() == ".json":
        return read_gentle(path)
    tiers = read_textgrid(path)
    lower = {name.lower(): name for name in tiers}
    if "words" in lower and "phones" in lower:
        words, phones = words_and_phones(tiers, phone_tier=lower["phones"],
                                         word_tier=lower["words"])
    else:
        words, phones = words_and_phones(tiers)
    return words, phones, 0


def _story_names(stim_file, n_rows, story_names):
    stem = Path(stim_file).name.split(".")[0]
    if callable(story_names):
        given = story_names(stim_file, n_rows)
    else:
        given = None if story_names is None else story_names.get(stim_file,
                                                                  story_names.get(stem))
    if given is None:
        return [stem] if n_rows == 1 else [f"{stem}-{k + 1}" for k in range(n_rows)]
    given = [given] if isinstance(given, str) else list(given)
    if len(given) != n_rows:
        raise ValueError(f"story_names gives {len(given)} name(s) for {stim_file} but its "
                         f"events have {n_rows} story row(s) in one run.")
    return given


def _run_order(path):
    """Sort key: session, task, then run as a number (run-10 after run-9), then the name."""
    entities, _, _ = parse_bids_name(path)
    run = entities.get("run", "")
    return (entities.get("ses", ""), entities.get("task", ""),
            int(run) if run.isdigit() else -1, path.name)


def _collect_runs(root, label, task, files, *, space, surface, desc, entities, trial_types,
                  story_names, tr_override, session, exclude, events_hook):
    """Raw runs of one subject with their derivative files, TR and presentations."""
    folder = root / f"sub-{label}"
    bolds = sorted((p for p in folder.rglob("*_bold.nii*")
                    if "derivatives" not in p.relative_to(root).parts), key=_run_order)
    runs, skipped, other_spaces = [], [], {}
    for bold in bolds:
        ents, _, _ = parse_bids_name(bold)
        if task is not None and ents.get("task") not in ([task] if isinstance(task, str)
                                                         else list(task)):
            continue
        if session is not None and ents.get("ses") != str(session).removeprefix("ses-"):
            continue
        if exclude is not None and exclude(bold):
            skipped.append(bold.name)
            continue
        run_entities = _run_key(ents)
        data, spaces = _find_data(run_entities, files, space, surface, desc, entities, bold)
        if data is None and "echo" in run_entities:
            # multi-echo raw runs share one (optimally combined) derivative without echo-
            run_entities = {k: v for k, v in run_entities.items() if k != "echo"}
            data, spaces = _find_data(run_entities, files, space, surface, desc, entities,
                                      bold)
        if data is not None and any(r.data == data for r in runs):
            continue  # another echo of a run already found
        if data is None:
            other_spaces[bold.name] = sorted(s for s in spaces if s)
            continue
        events = bold.with_name(bold.name.split("_bold")[0] + "_events.tsv")
        if events_hook is None and not events.is_file():
            chain = _inherited(root, bold, "events", ".tsv", ents)
            if not chain:
                raise FileNotFoundError(f"no events file for {bold}: expected {events} (with "
                                        "onset, duration, trial_type and stim_file columns).")
            events = chain[-1]
        if tr_override is None:
            tr, tr_source = _repetition_time(root, bold, data if not surface else None)
        else:
            tr, tr_source = float(tr_override), "tr="
        header_tr = _header_tr(data if not surface else bold)
        if header_tr is not None and abs(header_tr - tr) > 1e-3:
            warnings.warn(f"{bold.name}: the sidecar's RepetitionTime ({tr} s, {tr_source}) "
                          f"and the NIfTI header's ({header_tr} s) disagree; the sidecar's is "
                          "used (BIDS says it is authoritative).", UserWarning, stacklevel=4)
        if surface:
            n_volumes = None  # known once read (GIfTI files are parsed whole)
        else:
            shape = _nifti_shape(data)
            if len(shape) != 4:
                raise ValueError(f"{data} has shape {shape}; a run must be a 4-D image.")
            n_volumes = shape[3]
        runs.append(_Run(bold=bold, entities=run_entities, data=data, events=events, tr=tr,
                         n_volumes=n_volumes))
    if other_spaces and runs:
        names = ", ".join(f"{k} (spaces {v})" for k, v in list(other_spaces.items())[:5])
        raise ValueError(f"sub-{label}: some runs have derivatives in space {space} and others "
                         f"do not: {names}. Runs of one subject must be in one space: "
                         "preprocess every run into that space, or pass task=/session= to "
                         "select the runs that are.")
    if not runs:
        where = ", ".join(f"{k}: {v}" for k, v in list(other_spaces.items())[:5])
        raise FileNotFoundError(
            f"sub-{label}: no run{'' if task is None else f' of task {task!r}'} has "
            f"{'surface (hemi-L/R .func.gii)' if surface else 'volume (_bold.nii.gz)'} "
            f"derivatives in space {space!r}"
            + (f"; spaces found: {where}" if where else "")
            + (f"; excluded runs: {skipped}" if skipped else "")
            + ". Check space=, derivatives= and task=.")
    for position, run in enumerate(runs):
        if events_hook is None:
            run.named, run.selected = _read_events(run.events, trial_types)
        else:
            run.events = f"the events of {run.bold.name}"
            run.named = run.selected = events_hook(run.bold, position, run.n_volumes, run.tr)
        run.story_names = story_names
    return runs, skipped


def _row_story_names(run):
    """The story names a run's selected rows give (without reading the run)."""
    names = set()
    for stim_file, rows in run.selected.groupby("stim_file", sort=False):
        names.update(_story_names(stim_file, len(rows), run.story_names))
    return names


def _presentations(run, n_volumes, trim, story_volumes=None):
    """(story, stim_file, audio_onset, start, stop) of each selected row of one run."""
    out = []
    tr = run.tr
    selected = run.selected.sort_values("onset", kind="stable")
    for stim_file, rows in selected.groupby("stim_file", sort=False):
        audio_onset = float(run.named.loc[run.named["stim_file"] == stim_file, "onset"].min())
        names = _story_names(stim_file, len(rows), run.story_names)
        for name, (_, row) in zip(names, rows.iterrows()):
            onset, duration = float(row["onset"]), float(row["duration"])
            run_seconds = n_volumes * tr
            if not (np.isfinite(onset) and np.isfinite(duration)) or onset < 0 or duration <= 0:
                raise ValueError(f"{run.events}: story row of {stim_file} has onset {onset} and"
                                 f" duration {duration}; both must be finite, onset >= 0 and "
                                 "duration > 0.")
            if onset >= run_seconds:
                data_file = run.data[0] if isinstance(run.data, tuple) else run.data
                raise ValueError(f"{run.events}: the {stim_file} row starts at {onset} s, "
                                 f"after the run ends ({n_volumes} volumes x {tr} s = "
                                 f"{run_seconds:.1f} s in {Path(data_file).name}). "
                                 "The events belong to another run, or the run is truncated: "
                                 "fix the onsets or exclude the run.")
            start = int(round(onset / tr))
            stop = start + int(round(duration / tr))
            if story_volumes is not None and name in story_volumes:
                first, count = (int(v) for v in story_volumes[name])
                if abs(first - start) > 1 or abs(count - (stop - start)) > 1:
                    warnings.warn(f"{run.events}: the {name!r} row gives volumes {start} to "
                                  f"{stop} but story_volumes {first} to {first + count}; "
                                  "story_volumes are used.", UserWarning, stacklevel=5)
                start, stop = first, first + count
            if stop > n_volumes:
                warnings.warn(f"{run.events}: the {stim_file} row ends at "
                              f"{onset + duration:.1f} s, after the run ({run_seconds:.1f} s); "
                              f"its last {stop - n_volumes} volume(s) are missing.",
                              UserWarning, stacklevel=5)
                stop = n_volumes
            start, stop = start + trim[0], stop - trim[1]
            if stop - start < 2:
                raise ValueError(f"{run.events}: the {stim_file} row keeps {stop - start} "
                                 "volume(s) after trimming; a story needs at least 2.")
            out.append(dict(story=name, stim_file=stim_file, audio_onset=audio_onset,
                            start=start, stop=stop, row_onset=onset, row_duration=duration))
    return out


def _volume_mask(runs, files, mask_img, space):
    """Boolean 3-D mask and affine shared by the runs (given, brain masks, or first volumes)."""
    import nibabel as nib

    first = nib.load(str(runs[0].data))
    shape, affine = first.shape[:3], first.affine
    for run in runs[1:]:
        img = nib.load(str(run.data))
        if img.shape[:3] != shape or not np.allclose(img.affine, affine, atol=1e-3):
            raise ValueError(f"{run.data} is on a different grid ({img.shape[:3]}) from "
                             f"{runs[0].data} ({shape}); runs of one subject in space {space} "
                             "must share one grid: resample them (nilearn.image.resample_to_img"
                             ").")
    if mask_img is not None:
        from nilearn.image import load_img

        img = load_img(mask_img)
        if img.shape[:3] != shape or not np.allclose(img.affine, affine, atol=1e-3):
            raise ValueError(f"mask_img has shape {img.shape[:3]} but the runs {shape}; "
                             "resample it to the runs' grid (nilearn.image.resample_to_img, "
                             "interpolation='nearest').")
        return np.asarray(img.dataobj).astype(bool).reshape(shape), affine, "mask_img"
    mask, sources = np.ones(shape, dtype=bool), []
    for run in runs:
        path = _find_aux(run.entities, files, suffixes=("mask",), desc="brain", space=space,
                         extension=".nii.gz")
        if path is None:
            # no brain mask: voxels non-zero and finite in the run's first volume
            volume = np.asarray(nib.load(str(run.data)).dataobj[..., 0], dtype=np.float32)
            mask &= np.isfinite(volume) & (volume != 0)
            sources.append(f"{run.data.name} (first volume non-zero)")
        else:
            img = nib.load(str(path))
            if img.shape[:3] != shape:
                raise ValueError(f"brain mask {path} has shape {img.shape[:3]}, its run "
                                 f"{run.data} {shape}; pass mask_img= on the runs' grid.")
            mask &= np.asarray(img.dataobj).astype(bool)
            sources.append(path.name)
    if not mask.any():
        raise ValueError(f"the brain masks of the runs ({sources}) have no voxel in common.")
    sources = sorted(set(sources))
    return mask, affine, (sources[0] + (f" and {len(sources) - 1} more" if len(sources) > 1
                                        else ""))


def _read_volume_run(run, mask, span, block=64):
    """(n_volumes_read, n_mask_voxels) float32 of a NIfTI run, masked as it is read."""
    import nibabel as nib

    proxy = nib.load(str(run.data)).dataobj
    start, stop = span
    out = np.empty((stop - start, int(mask.sum())), dtype=np.float32)
    for first in range(start, stop, block):
        last = min(first + block, stop)
        chunk = np.asarray(proxy[..., first:last], dtype=np.float32)
        out[first - start:last - start] = chunk[mask].T
    return out


def _confounds(run, files_all, confounds):
    """(n_volumes, n_confounds) float64 of one run, or None."""
    import pandas as pd

    if confounds is None:
        return None
    path = None
    for suffix in _CONFOUND_SUFFIXES:
        path = _find_aux(run.entities, files_all, suffixes=(suffix,), desc="confounds",
                         extension=".tsv")
        if path is not None:
            break
    if path is None:
        raise FileNotFoundError(f"no confounds for {run.bold.name}: expected "
                                f"<run>_desc-confounds_timeseries.tsv (or _regressors.tsv) in "
                                "the derivatives; pass confounds=None to load without cleaning.")
    strategy = (confounds,) if isinstance(confounds, str) else confounds
    if isinstance(confounds, dict) or all(s in _NILEARN_STRATEGIES for s in strategy):
        from nilearn.interfaces.fmriprep import load_confounds

        kwargs = dict(confounds) if isinstance(confounds, dict) else {"strategy": strategy}
        # nilearn finds the TSV from a preprocessed file's name; give it a name it parses
        stem = path.name.split("_desc-confounds")[0]
        image = path.with_name(f"{stem}_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz")
        try:
            table, _ = load_confounds(str(image), **kwargs)
        except Exception as exc:  # nilearn raises several types for a file it cannot match
            raise ValueError(f"nilearn could not read the confounds {path} with {kwargs} "
                             f"({exc}); pass confounds=[column names] to read the TSV "
                             "directly.") from exc
        values = np.asarray(table, dtype=np.float64)
    else:
        table = pd.read_csv(path, sep="\t", na_values=["n/a"])
        missing = [c for c in strategy if c not in table.columns]
        if missing:
            raise ValueError(f"{path} has no columns {missing}; available: "
                             f"{list(table.columns)[:30]}.")
        values = table[list(strategy)].to_numpy(dtype=np.float64)
        # derivatives and the like are undefined on the first volume
        values = np.where(np.isfinite(values), values, 0.0)
    return values


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
    deriv_roots = _derivative_roots(root, derivatives)
    pipelines = (sorted(p for p in (root / "derivatives").iterdir() if p.is_dir())
                 if (root / "derivatives").is_dir() else [])

    # -- runs of each participant --------------------------------------------------------
    participants, per_runs, aux_files, excluded = [], {}, {}, {}
    for subj in _participant_list(subject):
        label = _find_subject(root, subj, "the BIDS root")
        name = f"sub-{label}"
        if name in per_runs:
            raise ValueError(f"subject {name} is listed twice.")
        files = _derivative_files(deriv_roots, label)
        if not files:
            raise FileNotFoundError(f"no derivatives for {name} under "
                                    f"{[str(d) for d in deriv_roots]}; pass derivatives= the "
                                    "pipeline folder holding sub-<label>/.")
        runs, skipped = _collect_runs(root, label, task, files, space=space, surface=surface,
                                      desc=desc, entities=entities, trial_types=trial_types,
                                      story_names=story_names, tr_override=tr,
                                      session=session, exclude=exclude,
                                      events_hook=events)
        participants.append(name)
        per_runs[name] = runs
        aux_files[name] = (files, _derivative_files(list(set(deriv_roots) | set(pipelines)),
                                                    label))
        excluded[name] = skipped
    if stories is not None:
        # runs that present none of the stories asked for are not read
        wanted = {stories} if isinstance(stories, str) else set(stories)
        for name in participants:
            per_runs[name] = [r for r in per_runs[name] if _row_story_names(r) & wanted]
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
        mask, affine, mask_source = _volume_mask(
            all_runs, [f for n in participants for f in aux_files[n][1]], mask_img, space)

    # -- read every run once; presentations; valid columns ---------------------------------
    keep, n_vertices, presentations = _read_runs(
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
    audio, words, phones, not_found, clock = _stimuli(
        order, participants, presentations, stimuli=stimuli, alignments=alignments,
        tr_value=tr_value)

    # -- responses per participant: cleaned runs, presentations, repeats ------------------
    per_data, tr_times = _responses(order, participants, per_runs, presentations, keep,
                                    aux_files, confounds=confounds, clean_args=clean_args,
                                    tr_value=tr_value)
    from .lebel2023 import _chunked_noise_ceiling  # the noise ceiling in voxel chunks

    split = resolve_split(split, order, repeated=[s for s in order
                                                  if s in per_data[participants[0]].repeats])
    for name in participants:
        own = per_data[name]
        ceiling_story = next((s for s in split["test"] if s in own.repeats),
                             next((s for s in order if s in own.repeats), None))
        own.noise_ceiling = (None if ceiling_story is None
                             else _chunked_noise_ceiling(own.repeats[ceiling_story]))
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


def _surface_mask_columns(mask_img, n_vertices):
    parts = [np.asarray(mask_img.data.parts[h]).ravel().astype(bool) for h in ("left", "right")]
    sizes = tuple(p.size for p in parts)
    if sizes != tuple(n_vertices):
        raise ValueError(f"mask_img has {sizes} vertices per hemisphere but the runs "
                         f"{tuple(n_vertices)}; use a mask of the runs' space.")
    return np.concatenate(parts)


def _clean(values, run, files, confounds, clean_args, tr):
    from nilearn.signal import clean

    regressors = _confounds(run, files, confounds)
    if regressors is not None and len(regressors) != run.n_volumes:
        raise ValueError(f"the confounds of {run.bold.name} have {len(regressors)} rows but "
                         f"the run {run.n_volumes} volumes.")
    if regressors is not None and run.offset:
        regressors = regressors[run.offset:run.offset + len(values)]
    args = dict(detrend=True, standardize=None) if clean_args is None else dict(clean_args)
    return clean(values, confounds=regressors, t_r=tr, **args).astype(np.float32, copy=False)


def _empty_table():
    import pandas as pd

    return pd.DataFrame({"onset": np.zeros(0), "offset": np.zeros(0),
                         "label": np.zeros(0, dtype=str)})


def _within(table, span):
    """Rows of an interval table that start inside ``span`` (s, audio clock), re-indexed."""
    start, stop = span
    inside = (table["onset"] >= start - 1e-6) & (table["onset"] < stop)
    return table.loc[inside].reset_index(drop=True)


def _read_runs(participants, per_runs, *, surface, mask, surface_masker, confounds,
               clean_args, trim, story_volumes, nan_policy):
    """Read every run once; its presentations; the columns valid in every run.

    Returns ``keep`` (bool per column), ``n_vertices`` (surfaces) and ``presentations``
    (participant -> list of dicts, each with its ``run``); each run keeps its ``values``.
    """
    keep = None
    n_vertices = None
    presentations = {}
    for name in participants:
        presentations[name] = []
        for run in per_runs[name]:
            if surface:
                left, right = (_gifti_volumes(p) for p in run.data)
                if left.shape[0] != right.shape[0]:
                    raise ValueError(f"{run.data[0].name} has {left.shape[0]} volumes but "
                                     f"{run.data[1].name} {right.shape[0]}; the hemispheres of "
                                     "a run must have the same volumes.")
                sizes = (left.shape[1], right.shape[1])
                if n_vertices is None:
                    n_vertices = sizes
                elif sizes != n_vertices:
                    raise ValueError(f"{run.data[0].name}: hemispheres of {sizes} vertices, "
                                     f"other runs {n_vertices}; runs must be in one space.")
                run.n_volumes = left.shape[0]
                run.values = np.concatenate([left, right], axis=1)
                del left, right
                run.offset = 0
            run.items = _presentations(run, run.n_volumes, trim, story_volumes)
            if not surface:
                span = ((0, run.n_volumes) if confounds is not None or clean_args
                        else (min(p["start"] for p in run.items),
                              max(p["stop"] for p in run.items)) if run.items else (0, 0))
                run.values = _read_volume_run(run, mask, span)
                run.offset = span[0]
            values = run.values
            finite_all = np.isfinite(values)
            finite = finite_all.all(axis=0)
            valid = np.ones(values.shape[1], dtype=bool)
            partial = ~finite
            if surface and surface_masker is None:
                # the medial wall: constant (zeros), or NaN throughout, in fMRIPrep/AFNI output
                all_nan = ~finite_all.any(axis=0)
                valid = ~(values.min(axis=0) == values.max(axis=0)) & ~all_nan
                partial = ~finite & ~all_nan
            del finite_all
            if partial.any():
                source = run.data if not surface else f"{run.data[0].name} / {run.data[1].name}"
                if nan_policy == "raise":
                    raise ValueError(
                        f"{source}: {int(partial.sum())} column(s) of run {run.bold.name} hold "
                        "NaN or infinite values; fix the preprocessing, or pass "
                        "nan_policy='drop' to leave those columns out.")
                warnings.warn(f"{source}: {int(partial.sum())} column(s) with NaN or infinite "
                              "values dropped (nan_policy='drop').", UserWarning, stacklevel=2)
            valid &= finite
            keep = valid if keep is None else keep & valid
            presentations[name].extend(dict(p, run=run) for p in run.items)
    if surface_masker is not None:
        keep = _surface_mask_columns(surface_masker, n_vertices) & keep
    if not keep.any():
        raise ValueError("no column is valid in every run (all constant, NaN or masked).")
    return keep, n_vertices, presentations


def _stimuli(order, participants, presentations, *, stimuli, alignments, tr_value):
    """Audio, words, phones, words not found and clock figures of each story (files read once)."""
    from .audio import TARGET_SAMPLE_RATE, load_audio

    waves, aligned, clock = {}, {}, {}
    audio, words, phones, not_found, story_files = {}, {}, {}, {}, {}
    for name in participants:
        for p in presentations[name]:
            if p["story"] in order:
                story_files.setdefault(p["story"], (p, name))
    for story in order:
        p, _ = story_files[story]
        stim_file, run = p["stim_file"], p["run"]
        path = stimuli / stim_file
        if stim_file not in waves:
            if not path.is_file():
                raise FileNotFoundError(f"stimulus {path} (stim_file of {run.events}) is "
                                        "missing; put the audio under stimuli/ or fix the "
                                        "events' stim_file column.")
            waves[stim_file] = load_audio(path)
        wave = waves[stim_file]
        duration = wave.size / TARGET_SAMPLE_RATE
        story_end = p["row_onset"] + p["row_duration"] - p["audio_onset"]
        if story_end > duration + tr_value:
            raise ValueError(f"{path} lasts {duration:.1f} s but the {story!r} row of "
                             f"{run.events} ends {story_end:.1f} s after the file starts "
                             f"(at {p['audio_onset']} s in the run): the audio is shorter than"
                             " the story it should cover (truncated, or another file?).")
        if stim_file not in aligned:
            alignment = _alignment_file(stimuli, stim_file, alignments)
            if alignment is None:
                warnings.warn(f"no word alignment for {path} (looked for <stem>.TextGrid, "
                              "<stem>_align.json, gentle/<stem>/align.json); words and phones "
                              "are empty.", UserWarning, stacklevel=2)
                aligned[stim_file] = None
            else:
                w, ph, missing = read_alignment(alignment)
                end = max(w["offset"].max() if len(w) else 0.0,
                          ph["offset"].max() if len(ph) else 0.0)
                if end > duration + 0.5:
                    raise ValueError(f"the words file {alignment} ends at {end:.2f} s but "
                                     f"{path} lasts {duration:.2f} s: the alignment is of "
                                     "another recording or on another clock; realign it to "
                                     "this audio file.")
                aligned[stim_file] = (w, ph, missing)
        audio[story] = wave
        scan_seconds = run.n_volumes * run.tr
        if p["audio_onset"] + duration > scan_seconds + tr_value:
            warnings.warn(f"{path} plays until {p['audio_onset'] + duration:.1f} s of "
                          f"{run.bold.name} but the scan ends at {scan_seconds:.1f} s: the "
                          "end of the audio was not scanned.", UserWarning, stacklevel=2)
        span = (p["row_onset"] - p["audio_onset"], story_end)
        clock[story] = {"audio_seconds": duration, "audio_onset_in_run": p["audio_onset"],
                        "story_in_audio": span, "scan_seconds": scan_seconds}
        if aligned[stim_file] is None:
            words[story] = phones[story] = _empty_table()
            not_found[story] = 0
        else:
            w, ph, missing = aligned[stim_file]
            words[story] = _within(w, span)
            phones[story] = _within(ph, span)
            not_found[story] = int(missing)
        if len(words[story]):
            clock[story]["words"] = (float(words[story]["onset"].min()),
                                     float(words[story]["offset"].max()))
    return audio, words, phones, not_found, clock


def _responses(order, participants, per_runs, presentations, keep, aux_files, *, confounds,
               clean_args, tr_value):
    """Per participant: responses and repeats of each story; the stories' TR times."""
    from sklearn.utils import Bunch

    per_data = {}
    tr_times = {}
    columns = np.flatnonzero(keep)
    for name in participants:
        blocks = {}
        for run in per_runs[name]:
            values = run.values[:, columns] if not keep.all() else run.values
            run.values = None
            if confounds is not None or clean_args:
                values = _clean(values, run, aux_files[name][1], confounds, clean_args,
                                tr_value)
            for p in presentations[name]:
                if p["run"] is run and p["story"] in order:
                    rows = values[p["start"] - run.offset:p["stop"] - run.offset]
                    times = (np.arange(p["start"], p["stop"], dtype=np.float64) + 0.5) \
                        * run.tr - p["audio_onset"]
                    blocks.setdefault(p["story"], []).append((np.array(rows), times, p))
            del values
        responses, repeats = {}, {}
        for story in order:
            found = blocks[story]
            n = min(len(b[0]) for b in found)
            if len({len(b[0]) for b in found}) > 1:
                warnings.warn(f"{name}, story {story!r}: presentations of different lengths "
                              f"{[len(b[0]) for b in found]} volumes; cut to {n}.",
                              UserWarning, stacklevel=2)
            times = found[0][1][:n]
            for _, other, p in found[1:]:
                if np.max(np.abs(other[:n] - times)) > tr_value / 2:
                    raise ValueError(f"{name}, story {story!r}: its presentations are on "
                                     f"different clocks ({p['run'].events} starts the audio "
                                     "at another phase of the volumes); they cannot be "
                                     "averaged.")
            if story in tr_times and (len(tr_times[story]) != n or np.max(
                    np.abs(tr_times[story] - times)) > tr_value / 2):
                raise ValueError(f"story {story!r}: the subjects' volumes do not match "
                                 f"({len(tr_times[story])} and {n} volumes); load them "
                                 "separately.")
            tr_times.setdefault(story, times)
            if len(found) == 1:
                responses[story] = found[0][0]
            else:
                stack = np.stack([b[0][:n] for b in found]).astype(np.float32, copy=False)
                repeats[story] = stack
                responses[story] = stack.mean(axis=0, dtype=np.float64).astype(np.float32)
        per_data[name] = Bunch(responses=responses, repeats=repeats, subject=name,
                               presentations=[{k: (str(v.data) if k == "run" else v)
                                               for k, v in p.items()}
                                              for p in presentations[name]
                                              if p["story"] in order])
    for name in participants:
        for run in per_runs[name]:
            run.values = None

    return per_data, tr_times
