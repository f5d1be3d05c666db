"""Where a BIDS dataset keeps a subject's runs: file names, inheritance, sidecars, events.

The part of :func:`~sk_braintune.datasets.load_bids` that finds files and reads small ones
(names, ``RepetitionTime`` with BIDS inheritance, headers, ``events.tsv``), never a run's data.
Entities are matched by name, not position (fMRIPrep writes ``_hemi-L_space-fsaverage5_bold``,
the Narratives AFNI pipeline ``_space-fsaverage6_hemi-L_desc-clean``).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

__all__ = ["parse_bids_name", "subject_label", "find_subject", "participant_list",
           "derivative_roots", "derivative_files", "find_aux", "presentation_names",
           "collect_runs", "row_story_names", "BidsRun"]

_NIFTI = (".nii.gz", ".nii")


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


def find_subject(root, subject, where):
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


def participant_list(subject):
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


class BidsRun:
    """One run of one subject: its files, TR and presentations."""

    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


def derivative_roots(root, derivatives):
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


def derivative_files(roots, label):
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


def find_aux(run_entities, files, *, suffixes, desc, space=None, extension):
    for path in files:
        entities, suffix, ext = parse_bids_name(path)
        if (suffix in suffixes and ext == extension and entities.get("desc") == desc
                and _matches(entities, run_entities)
                and (space is None or entities.get("space") in (space, None))):
            return path
    return None


def presentation_names(stim_file, n_rows, story_names):
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


def collect_runs(root, label, task, files, *, space, surface, desc, entities, trial_types,
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
        runs.append(BidsRun(bold=bold, entities=run_entities, data=data, events=events, tr=tr,
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


def row_story_names(run):
    """The story names a run's selected rows give (without reading the run)."""
    names = set()
    for stim_file, rows in run.selected.groupby("stim_file", sort=False):
        names.update(presentation_names(stim_file, len(rows), run.story_names))
    return names
