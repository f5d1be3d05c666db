"""Reporting for the study commands: stage timer, dataset summary, results table and files."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from .._utils import atomic_write_text

__all__ = ["StageTimer", "dataset_summary", "format_results_table", "write_json",
           "write_results", "save_config", "peak_memory_mib"]


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


def write_results(results, output):
    """Write ``results.json`` and ``results.csv`` (the table) into ``output``.

    Parameters
    ----------
    results : dict
    output : str or pathlib.Path

    Returns
    -------
    paths : list of str
    """
    import csv

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    paths = []
    results = dict(results)
    voxel_scores = results.pop("voxel_scores", None)
    if voxel_scores is not None:
        npz_path = output / "voxel_scores.npz"
        np.savez_compressed(npz_path, **{k.replace("-", "_"): v for k, v in voxel_scores.items()})
        paths.append(str(npz_path))
    json_path = output / "results.json"
    write_json(json_path, results)
    csv_path = output / "results.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(results["table"][0]))
        writer.writeheader()
        writer.writerows(results["table"])
    return [str(json_path), str(csv_path), *paths]


def _toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def _toml_lines(table, prefix=""):
    """Scalars of ``table`` first, then its sub-tables as ``[prefix.key]`` sections."""
    lines = [f"{key} = {_toml_value(value)}" for key, value in sorted(table.items())
             if value is not None and not isinstance(value, dict)]
    for key, value in sorted(table.items()):
        if isinstance(value, dict) and value:
            name = f"{prefix}{key}"
            lines += ["", f"[{name}]", *_toml_lines(value, prefix=f"{name}.")]
    return lines


def save_config(config, output):
    """Write the resolved configuration as ``config.toml`` so the run can be repeated.

    Parameters
    ----------
    config : settings object or dict
        The command's settings (:mod:`sk_braintune.commands.settings`); nested dicts become tables.
    output : str or pathlib.Path

    Returns
    -------
    path : pathlib.Path
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    if isinstance(config, BaseModel):
        config = config.model_dump(mode="json")
    path = output / "config.toml"
    atomic_write_text(path, "\n".join(_toml_lines(config)) + "\n")
    return path


def peak_memory_mib():
    """Peak resident memory of this process so far, in MiB (Linux ru_maxrss is in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
