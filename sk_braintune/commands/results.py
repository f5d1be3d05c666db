"""Reporting for the study commands: stage timer, dataset summary, results table and files.

Results folders are written as transactions (:func:`results_folder`): into a temporary folder
beside the target, sealed with the SHA-256 of every file in ``manifest.json``, then moved into
place in one rename; :func:`check_folder` tells a finished, untouched folder from any other.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from .._hashing import digest_file
from .._utils import UMASK, atomic_replace_dir, atomic_write_text, atomic_writer
from ..exceptions import StudyInputError

__all__ = ["StageTimer", "dataset_summary", "format_results_table", "write_json", "write_csv",
           "save_figure", "save_arrays", "write_results", "save_config", "peak_memory_mib",
           "MANIFEST_NAME", "results_folder", "prepare_results_folder", "file_hashes",
           "seal_folder", "check_folder"]


class StageTimer:
    """Prints each stage's name and wall time; keeps the times for the results file."""

    def __init__(self, stream=None, prefix=""):
        self.stream = stream or sys.stdout
        self.prefix = prefix
        self.times = {}
        self._start = time.perf_counter()

    def elapsed(self):
        """Seconds since the timer was made."""
        return time.perf_counter() - self._start

    @contextlib.contextmanager
    def __call__(self, name):
        name = self.prefix + name
        self._print(f"[{self._elapsed()}] {name} ...")
        t0 = time.perf_counter()
        yield
        self.times[name] = time.perf_counter() - t0
        self._print(f"[{self._elapsed()}] {name}: done in {self.times[name]:.1f} s")

    def _elapsed(self):
        seconds = int(time.perf_counter() - self._start)
        return f"{seconds // 60:02d}:{seconds % 60:02d}"

    def _print(self, message):
        print(message, file=self.stream, flush=True)


def dataset_summary(dataset):
    """One-paragraph text summary of a dataset bunch.

    Parameters
    ----------
    dataset : sklearn.utils.Bunch
        Dataset following the contract of :mod:`sk_braintune.datasets`.

    Returns
    -------
    text : str
    """
    lines = []
    n_trs = {s: len(dataset.responses[s]) for s in dataset.stories}
    seconds = {s: len(dataset.audio[s]) / dataset.sample_rate for s in dataset.stories}
    for split in ("train", "validation", "test"):
        stories = list(dataset.split.get(split, []))
        if stories:
            lines.append(f"  {split:<10} {len(stories):>2} stories, "
                         f"{sum(n_trs[s] for s in stories):>5} TRs, "
                         f"{sum(seconds[s] for s in stories) / 60:5.1f} min of audio")
    labels, counts = np.unique(np.asarray(dataset.voxel_labels), return_counts=True)
    nc = np.asarray(dataset.noise_ceiling)
    lines.append(f"  voxels     {nc.size} (" + ", ".join(
        f"{label}: {count}" for label, count in zip(labels, counts)) + ")")
    for label in labels:
        values = nc[np.asarray(dataset.voxel_labels) == label]
        lines.append(f"  noise ceiling {label:<9} median {np.median(values):.2f} "
                     f"[{values.min():.2f}, {values.max():.2f}], "
                     f"{np.mean(values > 0.4) * 100:.0f}% > 0.4")
    repeats = {s: np.asarray(r).shape[0] for s, r in getattr(dataset, "repeats", {}).items()}
    if repeats:
        lines.append("  repeats    " + ", ".join(f"{s}: {n}" for s, n in repeats.items()))
    participants = tuple(dataset.get("participants", None) or ())
    if len(participants) > 1:
        lines.append(f"  listeners  {', '.join(participants)} (noise ceilings above: "
                     f"{participants[0]}'s)")
    lines.append(f"  TR {dataset.tr} s, audio {dataset.sample_rate} Hz")
    return "\n".join(lines)


def format_results_table(rows):
    """Render the results rows as a fixed-width text table.

    Parameters
    ----------
    rows : list of dict
        From ``run_braintuning_study(...)["table"]``.

    Returns
    -------
    text : str
    """
    columns = [c for c in rows[0] if c != "model"]
    # wide enough for the header and for every value (text cells such as "[0.09, 0.27]")
    widths = [max([len(c), 7] + [len(str(row[c])) for row in rows
                                 if not isinstance(row[c], float)]) + 2 for c in columns]
    name_width = max([13] + [len(str(row["model"])) + 1 for row in rows])
    header = f"{'model':<{name_width}}" + "".join(f"{c:>{w}}" for c, w in zip(columns, widths))
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(f"{row['model']:<{name_width}}" + "".join(
            f"{row[c]:>{w}.3f}" if isinstance(row[c], float) else f"{row[c]!s:>{w}}"
            for c, w in zip(columns, widths)))
    return "\n".join(lines)


def _json_default(value):
    if isinstance(value, BaseModel):  # settings objects
        return value.model_dump(mode="json")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def write_json(path, value):
    """Write ``value`` as indented JSON to ``path`` atomically (NumPy values, paths converted).

    Parameters
    ----------
    path : str or pathlib.Path
    value : object
        JSON-serialisable, NumPy scalars and arrays and paths included.
    """
    atomic_write_text(path, json.dumps(value, indent=2, default=_json_default, allow_nan=True))


def write_csv(rows, path, fieldnames=None):
    """Write ``rows`` (dicts) as a CSV file, atomically.

    Parameters
    ----------
    rows : list of dict
    path : str or pathlib.Path
    fieldnames : list of str, optional
        Columns in order (default: every key of the rows, in order of first appearance).

    Returns
    -------
    path : pathlib.Path
    """
    path = Path(path)
    if fieldnames is None:
        fieldnames = list(dict.fromkeys(key for row in rows for key in row))
    with atomic_writer(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
    return path


def save_figure(figure, path, **savefig_kwargs):
    """Save a matplotlib figure atomically (PNG unless ``format`` says otherwise).

    Parameters
    ----------
    figure : matplotlib.figure.Figure
    path : str or pathlib.Path
    **savefig_kwargs
        Passed to ``Figure.savefig`` (``dpi``, ``bbox_inches``, ...).

    Returns
    -------
    path : pathlib.Path
    """
    path = Path(path)
    savefig_kwargs.setdefault("format", path.suffix.lstrip(".") or "png")
    with atomic_writer(path) as f:
        figure.savefig(f, **savefig_kwargs)
    return path


def save_arrays(path, arrays=None, /, **named):
    """Save one array (``.npy``) or several (compressed ``.npz``) atomically.

    Parameters
    ----------
    path : str or pathlib.Path
        ``.npy`` for one array, ``.npz`` for several.
    arrays : array-like, optional
        The array of a ``.npy`` file.
    **named : array-like
        The arrays of a ``.npz`` file, by name.

    Returns
    -------
    path : pathlib.Path
    """
    path = Path(path)
    with atomic_writer(path) as f:
        if path.suffix == ".npz":
            np.savez_compressed(f, **named)
        else:
            np.save(f, np.asarray(arrays))
    return path


def write_results(results, output):
    """Write ``results.json``, ``results.csv`` (the table) and ``voxel_scores.npz`` to ``output``.

    Each file is written atomically.

    Parameters
    ----------
    results : dict
    output : str or pathlib.Path

    Returns
    -------
    paths : list of str
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    paths = []
    results = dict(results)
    voxel_scores = results.pop("voxel_scores", None)
    if voxel_scores is not None:
        npz_path = save_arrays(output / "voxel_scores.npz",
                               **{k.replace("-", "_"): v for k, v in voxel_scores.items()})
        paths.append(str(npz_path))
    json_path = output / "results.json"
    write_json(json_path, results)
    csv_path = write_csv(results["table"], output / "results.csv",
                         fieldnames=list(results["table"][0]))
    return [str(json_path), str(csv_path), *paths]


def _toml_ready(value, key="config"):
    """``value`` with only TOML types: None left out of tables, tuples and paths converted."""
    if isinstance(value, BaseModel):  # settings objects
        value = value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): _toml_ready(v, f"{key}.{k}") for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        if any(v is None for v in value):
            raise ValueError(f"{key}: TOML has no null, cannot write {list(value)!r}")
        return [_toml_ready(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray):
        return _toml_ready(value.tolist(), key)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def save_config(config, output):
    """Write the resolved configuration as ``config.toml`` so the run can be repeated.

    Written with ``tomli_w``: nested dicts become tables (dicts inside lists inline tables);
    ``tomllib`` reads the file back to the same values. None values are left out (TOML has
    no null; a setting left out takes its default).

    Parameters
    ----------
    config : settings object or dict
        The command's settings (:mod:`sk_braintune.commands.settings`).
    output : str or pathlib.Path

    Returns
    -------
    path : pathlib.Path
    """
    import tomli_w

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    path = output / "config.toml"
    atomic_write_text(path, tomli_w.dumps(_toml_ready(config)))
    return path


def peak_memory_mib():
    """Peak resident memory of this process so far, in MiB (Linux ru_maxrss is in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- results folders as transactions ----------------------------------------------------------

MANIFEST_NAME = "manifest.json"
"""File name of the manifest in a results folder."""
_PARTIAL = ".partial-"


@contextlib.contextmanager
def results_folder(output, *, overwrite=True):
    """Write a results folder as a transaction: all of it, or none of it.

    Yields a temporary folder next to ``output`` (same file system, hidden name); the command
    writes every file there. On normal exit, ``manifest.json`` gets the list of every file with
    its SHA-256 (:func:`seal_folder`) and the folder replaces ``output`` in one rename (the
    previous results stay in place until then). If the block raises, the temporary folder is
    deleted and ``output`` is left as it was; if the process is killed, ``output`` is still the
    previous results and the temporary folder, whose manifest lists no files, is removed by the
    next run on the same machine.

    Parameters
    ----------
    output : str or pathlib.Path
        The results folder. Its parent is created.
    overwrite : bool, default=True
        Whether previous results in ``output`` may be replaced.

    Yields
    ------
    folder : pathlib.Path
        The temporary folder to write into.

    Raises
    ------
    StudyInputError
        Before anything is written, when ``output`` is a file, is a non-empty folder that is
        not a results folder (no ``manifest.json``: never replaced), holds results and
        ``overwrite`` is False, or its parent cannot be written.
    """
    output = Path(output).expanduser().absolute()
    staging = prepare_results_folder(output, overwrite=overwrite)
    try:
        yield staging
        seal_folder(staging)
        atomic_replace_dir(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def prepare_results_folder(output, *, overwrite=True):
    """Check that ``output`` can take new results and make the temporary folder beside it.

    The first half of :func:`results_folder`, for commands that check their output before
    any work.

    Parameters
    ----------
    output : str or pathlib.Path
    overwrite : bool, default=True

    Returns
    -------
    staging : pathlib.Path
        A new empty folder next to ``output``.

    Raises
    ------
    StudyInputError
        See :func:`results_folder`.
    """
    output = Path(output).expanduser().absolute()
    if output.exists() or output.is_symlink():
        if not output.is_dir():
            raise StudyInputError(f"output {output} exists and is not a folder; choose another "
                                  "--output")
        if any(output.iterdir()):
            if not (output / MANIFEST_NAME).is_file():
                raise StudyInputError(
                    f"output folder {output} is not empty and holds no {MANIFEST_NAME}, so it "
                    "is not a results folder; it is left alone: choose another --output")
            if not overwrite:
                raise StudyInputError(f"output folder {output} already holds results; "
                                      "choose another --output or allow overwriting")
    _remove_stale_partials(output)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{output.name}{_PARTIAL}{_owner()}-",
                                        dir=output.parent))
        os.chmod(staging, 0o777 & ~UMASK)  # mkdtemp's folder is private; results are not
        return staging
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise StudyInputError(f"cannot write results next to {output}: {reason}"
                              f"{f' ({exc.filename})' if exc.filename else ''}; choose another "
                              "--output") from None


def _owner():
    return f"{socket.gethostname().split('.')[0]}-{os.getpid()}"


def _remove_stale_partials(output):
    """Delete the temporary folders of killed runs of this machine next to ``output``."""
    host = socket.gethostname().split(".")[0]
    parent = output.parent
    if not parent.is_dir():
        return
    for path in parent.glob(f".{glob.escape(output.name)}{_PARTIAL}{glob.escape(host)}-*"):
        pid = path.name[len(f".{output.name}{_PARTIAL}{host}-"):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def file_hashes(folder):
    """SHA-256 and size of every file below ``folder`` except ``manifest.json``.

    Parameters
    ----------
    folder : str or pathlib.Path

    Returns
    -------
    files : dict of str to dict
        Relative POSIX path -> ``{"sha256": hex digest, "bytes": size}``, sorted by path.
    """
    folder = Path(folder)
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if name == MANIFEST_NAME:
            continue
        files[name] = {"sha256": digest_file(path, "sha256"), "bytes": path.stat().st_size}
    return files


def seal_folder(folder):
    """Add the list of the folder's files and their hashes to its ``manifest.json``.

    Called by :func:`results_folder` once everything is written; a folder without this list
    was not finished. Creates the manifest when there is none.

    Parameters
    ----------
    folder : str or pathlib.Path

    Returns
    -------
    path : pathlib.Path
        The manifest.
    """
    path = Path(folder) / MANIFEST_NAME
    manifest = json.loads(path.read_text()) if path.is_file() else {}
    manifest["files"] = file_hashes(folder)
    atomic_write_text(path, json.dumps(manifest, indent=2, allow_nan=True))
    return path


def check_folder(folder, manifest=None):
    """Check that a results folder's files are those its manifest lists, byte for byte.

    Parameters
    ----------
    folder : str or pathlib.Path
    manifest : dict, optional
        The folder's manifest (default: read from ``folder``).

    Raises
    ------
    StudyInputError
        One line naming the folder and what differs: no file list (a run that did not finish),
        files missing, changed or not listed.
    """
    folder = Path(folder)
    if manifest is None:
        manifest = json.loads((folder / MANIFEST_NAME).read_text())
    listed = manifest.get("files")
    if not isinstance(listed, dict):
        raise StudyInputError(f"{folder / MANIFEST_NAME} lists no files: the run that wrote "
                              f"{folder} did not finish (or an older version wrote it)")
    actual = file_hashes(folder)
    problems = [f"{name} missing" for name in listed if name not in actual]
    problems += [f"{name} changed" for name in listed
                 if name in actual and actual[name]["sha256"] != listed[name].get("sha256")]
    problems += [f"{name} not listed" for name in actual if name not in listed]
    if problems:
        shown = ", ".join(problems[:5]) + (f" and {len(problems) - 5} more"
                                           if len(problems) > 5 else "")
        raise StudyInputError(f"results folder {folder} does not match its {MANIFEST_NAME}: "
                              f"{shown}")
