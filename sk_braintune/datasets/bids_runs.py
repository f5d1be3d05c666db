"""Reading a subject's runs once: volumes, surfaces, confounds, presentations, responses.

NIfTI volumes are read through nibabel's ``dataobj`` in blocks of volumes from one open file (a
``.nii.gz`` is decompressed once, front to back) and masked as they are read; GIfTI files (XML,
which nibabel parses whole) one at a time. Each run's values are dropped as soon as its
stories are copied out.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .bids_layout import find_aux, presentation_names

__all__ = ["volume_mask", "read_runs", "story_responses"]

_CONFOUND_SUFFIXES = ("timeseries", "regressors")


_NILEARN_STRATEGIES = ("motion", "high_pass", "wm_csf", "global_signal", "compcor",
                       "ica_aroma", "tedana", "scrub", "non_steady_state")


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


def _presentations(run, n_volumes, trim, story_volumes=None):
    """(story, stim_file, audio_onset, start, stop) of each selected row of one run."""
    out = []
    tr = run.tr
    selected = run.selected.sort_values("onset", kind="stable")
    for stim_file, rows in selected.groupby("stim_file", sort=False):
        audio_onset = float(run.named.loc[run.named["stim_file"] == stim_file, "onset"].min())
        names = presentation_names(stim_file, len(rows), run.story_names)
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


def volume_mask(runs, files, mask_img, space):
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
        path = find_aux(run.entities, files, suffixes=("mask",), desc="brain", space=space,
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

    # one open file for all blocks: nibabel reopens a file per slice by default, and a
    # gzipped run (.nii.gz) is then decompressed from its start again for every block
    # (quadratic in the run's length; 4x nibabel's plain read at 600 volumes, measured)
    proxy = nib.load(str(run.data), keep_file_open=True).dataobj
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
        path = find_aux(run.entities, files_all, suffixes=(suffix,), desc="confounds",
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


def read_runs(participants, per_runs, *, surface, mask, surface_masker, confounds,
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


def story_responses(order, participants, per_runs, presentations, keep, aux_files, *, confounds,
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
