"""What a results folder says about itself: ``manifest.json`` and a self-contained ``report.html``.

Every command (``demo``, ``tune``, ``evaluate``) writes both beside its results:

- ``manifest.json`` holds what is needed to reproduce the run and to compare two runs: package
  versions, the settings, seeds, the story split, the voxel selection (count and a hash of the
  indices), fingerprints of the data (a hash of the responses and audio arrays) and of the models
  (a hash of the weights files or of the state dict), the command line and the start and end
  times. :func:`compare_manifests` lists where two runs differ (``sk-braintune compare A B``).
- ``report.html`` shows the results table (read back from ``results.csv``), every figure
  (embedded as base64 PNG data URIs, so the page needs nothing beside it) and the manifest.

Hashes are BLAKE2b (16-byte digests) of the raw bytes, with names, dtypes and shapes mixed in,
so equal fingerprints mean equal arrays.
"""

from __future__ import annotations

import base64
import csv
import datetime as _dt
import hashlib
import html
import json
import math
import platform
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from .._utils import atomic_write_text

__all__ = ["MANIFEST_NAME", "REPORT_NAME", "package_versions", "fingerprint_arrays",
           "fingerprint_files", "fingerprint_model", "voxel_selection", "utc_now",
           "build_manifest", "write_manifest", "read_manifest", "compare_manifests",
           "write_report", "dataset_fingerprints"]

MANIFEST_NAME = "manifest.json"
"""File name of the manifest in a results folder."""
REPORT_NAME = "report.html"
"""File name of the report page in a results folder."""

_PACKAGES = {"sk_braintune": "sk-braintune", "torch": "torch", "transformers": "transformers",
             "numpy": "numpy", "scikit-learn": "scikit-learn", "scipy": "scipy"}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".json", ".model")


def package_versions():
    """Versions of Python and of the packages a result depends on (none imported).

    Returns
    -------
    versions : dict of str to str or None
        ``python``, ``sk_braintune``, ``torch``, ``transformers``, ``numpy``, ``scikit-learn``,
        ``scipy``; None for a package that is not installed.
    """
    from .. import __version__

    versions = {"python": platform.python_version()}
    for name, distribution in _PACKAGES.items():
        try:
            versions[name] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["sk_braintune"] = __version__  # the imported copy, installed or not
    return versions


def _hasher():
    return hashlib.blake2b(digest_size=16)


def _update_with_array(hasher, array):
    array = np.ascontiguousarray(array)
    hasher.update(f"{array.dtype.str}{array.shape}".encode())
    hasher.update(memoryview(array).cast("B") if array.size else b"")


def fingerprint_arrays(arrays):
    """Hash of arrays (a mapping name -> array, e.g. story -> responses, or one array).

    Parameters
    ----------
    arrays : ndarray or mapping of str to array-like
        Mapping keys are hashed with the values, in sorted order (the fingerprint does not
        depend on the mapping's order). Lazily loaded arrays are read chunk by chunk along
        their first axis.

    Returns
    -------
    fingerprint : str
        ``"blake2b:<32 hex digits>"``.
    """
    hasher = _hasher()
    if hasattr(arrays, "keys"):
        items = sorted(arrays.items(), key=lambda item: str(item[0]))
    else:
        items = [("", arrays)]
    for key, value in items:
        hasher.update(str(key).encode() + b"\0")
        shape = getattr(value, "shape", None)
        if shape is not None and len(shape) >= 1 and not isinstance(value, np.ndarray):
            # h5py datasets or memory maps: hash in slabs, never the whole array at once
            hasher.update(f"{np.dtype(value.dtype).str}{tuple(shape)}".encode())
            step = max(1, 2 ** 26 // max(1, int(np.prod(shape[1:])) * 4))
            for start in range(0, shape[0], step):
                hasher.update(np.ascontiguousarray(value[start:start + step]).tobytes())
        else:
            _update_with_array(hasher, np.asarray(value))
    return "blake2b:" + hasher.hexdigest()


def fingerprint_files(paths):
    """Hash of the contents of files, read in 1 MiB blocks.

    Parameters
    ----------
    paths : iterable of str or pathlib.Path
        Hashed in sorted order, each with its file name.

    Returns
    -------
    fingerprint : str
        ``"blake2b:<32 hex digits>"``.
    """
    hasher = _hasher()
    for path in sorted(Path(p) for p in paths):
        hasher.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(2 ** 20), b""):
                hasher.update(block)
    return "blake2b:" + hasher.hexdigest()


def fingerprint_model(model):
    """Fingerprint of a model: its weights files, or its state dict.

    Parameters
    ----------
    model : str, pathlib.Path, torch.nn.Module or fitted estimator
        A local model directory (its weights and config files are hashed), a hub name (not
        hashed: no local files), a torch module (its ``state_dict`` tensors are hashed) or an
        estimator holding one in ``backbone_`` (e.g. a fitted :class:`~sk_braintune.BrainTuner`).

    Returns
    -------
    fingerprint : dict
        ``source`` (what was hashed: ``"files"``, ``"state_dict"`` or ``"name"``),
        ``fingerprint`` (str, or None for a hub name) and ``name`` (the path or the class).
    """
    if isinstance(model, (str, Path)):
        path = Path(model).expanduser()
        if path.is_dir():
            files = [p for p in path.rglob("*") if p.is_file()
                     and p.suffix in _WEIGHT_SUFFIXES]
            return {"name": str(model), "source": "files",
                    "fingerprint": fingerprint_files(files) if files else None}
        if path.is_file():
            return {"name": str(model), "source": "files",
                    "fingerprint": fingerprint_files([path])}
        return {"name": str(model), "source": "name", "fingerprint": None}
    module = getattr(model, "backbone_", model)
    state = getattr(module, "state_dict", None)
    if state is None:
        raise TypeError(f"cannot fingerprint {type(model).__name__}: expected a model "
                        "directory, a torch module or an estimator with backbone_")
    import torch

    hasher = _hasher()
    for key, tensor in sorted(state().items()):
        tensor = tensor.detach().cpu().contiguous()
        hasher.update(f"{key}\0{tensor.dtype}{tuple(tensor.shape)}".encode())
        if tensor.numel():
            hasher.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return {"name": type(module).__name__, "source": "state_dict",
            "fingerprint": "blake2b:" + hasher.hexdigest()}


def voxel_selection(indices, n_voxels=None):
    """Count and hash of a voxel selection.

    Parameters
    ----------
    indices : array-like of int, shape (n_selected,)
        Selected voxel indices.
    n_voxels : int, optional
        Voxels the selection was made from.

    Returns
    -------
    selection : dict
        ``count``, ``n_voxels`` and ``fingerprint`` (of the int64 indices).
    """
    indices = np.asarray(indices, dtype=np.int64).ravel()
    return {"count": int(indices.size), "n_voxels": None if n_voxels is None else int(n_voxels),
            "fingerprint": fingerprint_arrays(indices)}


def utc_now():
    """The current time, ISO 8601 in UTC to the second.

    Returns
    -------
    timestamp : str
    """
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _plain(value):
    """JSON-ready copy of settings, numpy values, paths and tuples."""
    if isinstance(value, BaseModel):  # settings objects
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def build_manifest(command, settings, *, started, finished=None, command_line=None,
                   seeds=None, split=None, voxels=None, data=None, models=None, extra=None):
    """Everything needed to reproduce a result and to compare two, as one dict.

    Parameters
    ----------
    command : str
        ``"demo"``, ``"tune"`` or ``"evaluate"``.
    settings : settings object or dict
        The resolved settings (see :mod:`sk_braintune.commands.settings`).
    started : str
        Start time (:func:`utc_now`).
    finished : str, optional
        End time (default: now).
    command_line : list of str, optional
        The command as typed (default: ``sys.argv``).
    seeds : dict, optional
        Every seed the run used, by name.
    split : dict, optional
        ``train`` / ``validation`` / ``test`` story lists.
    voxels : dict, optional
        From :func:`voxel_selection` (or several, by name).
    data : dict, optional
        Data fingerprints by name (from :func:`fingerprint_arrays` or :func:`fingerprint_files`).
    models : dict, optional
        Model fingerprints by name (from :func:`fingerprint_model`).
    extra : dict, optional
        Anything else worth keeping.

    Returns
    -------
    manifest : dict
        JSON-serialisable.
    """
    return _plain({
        "command": command,
        "command_line": list(sys.argv if command_line is None else command_line),
        "started": started,
        "finished": finished or utc_now(),
        "versions": package_versions(),
        "platform": platform.platform(),
        "settings": settings,
        "seeds": seeds or {},
        "split": split or {},
        "voxels": voxels or {},
        "data": data or {},
        "models": models or {},
        **(extra or {}),
    })


def write_manifest(manifest, output):
    """Write ``manifest.json`` into ``output`` (atomically).

    Parameters
    ----------
    manifest : dict
        From :func:`build_manifest`.
    output : str or pathlib.Path
        Results folder.

    Returns
    -------
    path : pathlib.Path
    """
    path = Path(output) / MANIFEST_NAME
    atomic_write_text(path, json.dumps(manifest, indent=2, allow_nan=True))
    return path


def read_manifest(source):
    """Read a manifest from a results folder or a ``manifest.json`` path.

    Parameters
    ----------
    source : str or pathlib.Path

    Returns
    -------
    manifest : dict

    Raises
    ------
    FileNotFoundError
        When there is no manifest there.
    """
    path = Path(source)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {MANIFEST_NAME} at {path}")
    return json.loads(path.read_text())


_VOLATILE = {"started", "finished", "command_line", "platform"}


def compare_manifests(first, second, *, ignore=_VOLATILE):
    """Where two manifests differ, key path by key path.

    Parameters
    ----------
    first, second : dict
        Manifests (:func:`read_manifest`).
    ignore : set of str, default={"started", "finished", "command_line", "platform"}
        Top-level keys left out (they differ between any two runs).

    Returns
    -------
    differences : list of (str, object, object)
        ``(dotted key, value in first, value in second)``; a key missing on one side has
        ``None`` there. Empty when the runs agree on everything compared.
    """
    differences = []

    def walk(a, b, path):
        if isinstance(a, dict) and isinstance(b, dict):
            for key in list(a) + [k for k in b if k not in a]:
                if not path and key in ignore:
                    continue
                walk(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
        elif a != b:
            differences.append((path, a, b))

    walk(first, second, "")
    return differences


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #bbb; padding: 0.25em 0.6em; }}
td.number {{ text-align: right; font-variant-numeric: tabular-nums; }}
figure {{ display: inline-block; margin: 0.5em; vertical-align: top; }}
figure img {{ max-width: 32em; }}
pre {{ background: #f6f6f6; padding: 1em; overflow-x: auto; }}
</style>
</head>
<body>
<h1>{title}</h1>
{summary}
<h2>Results</h2>
{table}
<h2>Figures</h2>
<div id="figures">{figures}</div>
<h2>Manifest</h2>
<pre id="manifest">{manifest}</pre>
<script>
// Record in the page whether each figure decoded (read back by tests from the rendered DOM).
window.addEventListener("load", function () {{
  var images = document.images, loaded = 0;
  for (var i = 0; i < images.length; i++) {{
    images[i].setAttribute("data-natural-width", images[i].naturalWidth);
    if (images[i].complete && images[i].naturalWidth > 0) loaded++;
  }}
  document.body.setAttribute("data-images-loaded", loaded);
  document.body.setAttribute("data-images-total", images.length);
}});
</script>
</body>
</html>
"""


def _number(text):
    try:
        return float(text)
    except ValueError:
        return None


def _table_html(csv_path):
    with open(csv_path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return "<p>(empty table)</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = []
    for row in rows[1:]:
        cells = []
        for text in row:
            value = _number(text)
            if value is None:
                cells.append(f"<td>{html.escape(text)}</td>")
            else:
                integral = not math.isfinite(value) or value == int(value)
                shown = text if integral else f"{value:.3f}"
                cells.append(f'<td class="number" data-value="{html.escape(text)}">'
                             f"{html.escape(shown)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<table id="results" data-source="{html.escape(Path(csv_path).name)}">'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def _figure_html(path):
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    name = html.escape(Path(path).name)
    return (f'<figure><img alt="{name}" data-file="{name}" '
            f'src="data:image/png;base64,{data}"><figcaption>{name}</figcaption></figure>')


def write_report(output, *, title, table="results.csv", figures=None, manifest=None,
                 summary=None):
    """Write ``report.html``: the results table, the figures and the manifest in one page.

    Parameters
    ----------
    output : str or pathlib.Path
        Results folder.
    title : str
        Page title.
    table : str, default="results.csv"
        CSV file in ``output`` shown as the table (numbers to 3 decimals; each cell keeps the
        file's exact text in ``data-value``).
    figures : list of str or pathlib.Path, optional
        PNG files to embed (default: every ``*.png`` in ``output``, sorted).
    manifest : dict, optional
        Shown as JSON (default: ``output/manifest.json`` when present).
    summary : str, optional
        A paragraph of text above the table.

    Returns
    -------
    path : pathlib.Path
    """
    output = Path(output)
    if figures is None:
        figures = sorted(output.glob("*.png"))
    if manifest is None and (output / MANIFEST_NAME).is_file():
        manifest = read_manifest(output)
    table_path = output / table
    page = _PAGE.format(
        title=html.escape(title),
        summary=f"<p>{html.escape(summary)}</p>" if summary else "",
        table=_table_html(table_path) if table_path.is_file() else "<p>(no table)</p>",
        figures="".join(_figure_html(p) for p in figures) or "<p>(no figures)</p>",
        manifest=html.escape(json.dumps(manifest or {}, indent=2, allow_nan=True)),
    )
    path = output / REPORT_NAME
    atomic_write_text(path, page)
    return path


def dataset_fingerprints(data, stories=None):
    """Fingerprints of a dataset bunch's audio and responses (per participant when several).

    Parameters
    ----------
    data : sklearn.utils.Bunch
        Dataset following the sk_braintune contract.
    stories : list of str, optional
        Stories to include (default: ``data.stories``).

    Returns
    -------
    fingerprints : dict of str to str
        ``audio``, ``responses`` (of ``participants[0]``), ``repeats`` when present, and
        ``responses/<participant>`` for every participant of ``participant_data``.
    """
    stories = list(data.stories if stories is None else stories)
    out = {"audio": fingerprint_arrays({s: data.audio[s] for s in stories}),
           "responses": fingerprint_arrays({s: data.responses[s] for s in stories})}
    repeats = {s: r for s, r in (getattr(data, "repeats", None) or {}).items() if s in stories}
    if repeats:
        out["repeats"] = fingerprint_arrays(repeats)
    participant_data = getattr(data, "participant_data", None) or {}
    if len(participant_data) > 1:
        for participant, bunch in participant_data.items():
            out[f"responses/{participant}"] = fingerprint_arrays(
                {s: bunch.responses[s] for s in stories if s in bunch.responses})
    return out
