"""What a results folder says about itself: ``manifest.json`` and a self-contained ``report.html``.

Every command (``demo``, ``tune``, ``evaluate``) writes both beside its results:

- ``manifest.json`` holds what is needed to reproduce the run and to compare two runs: package
  versions, the settings, seeds, the story split, the voxel selection (count and a hash of the
  indices), fingerprints of the data (a hash of the responses and audio arrays) and of the models
  (a hash of the weights files or of the state dict), the command line and the start and end
  times, and (added when the folder is sealed, see
  :func:`~sk_braintune.commands.results.results_folder`) every file of the folder with its
  SHA-256. :func:`compare_manifests` lists where two runs differ (``sk-braintune compare A B``,
  which first refuses a folder whose files do not match its manifest).
- ``report.html`` (:func:`write_report`, from the jinja2 template ``templates/report.html.j2``)
  opens with a summary of what was run and what it found, then sections (e.g. one per model
  family) of tables and captioned figures (embedded as base64 data URIs, so the page needs
  nothing beside it), then the manifest.

Hashes are BLAKE2b (16-byte digests) of the raw bytes, with names, dtypes and shapes mixed in,
so equal fingerprints mean equal arrays.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import datetime as _dt
import json
import math
import platform
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from .._utils import atomic_write_text
from .results import MANIFEST_NAME, check_folder

__all__ = ["MANIFEST_NAME", "REPORT_NAME", "package_versions", "utc_now", "build_manifest",
           "write_manifest", "read_manifest", "compare_manifests", "write_report",
           "ReportSection", "ReportTable", "ReportFigure"]

REPORT_NAME = "report.html"
"""File name of the report page in a results folder."""

_PACKAGES = {"sk_braintune": "sk-braintune", "torch": "torch", "transformers": "transformers",
             "numpy": "numpy", "scikit-learn": "scikit-learn", "scipy": "scipy"}


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


def read_manifest(source, *, check=False):
    """Read a manifest from a results folder or a ``manifest.json`` path.

    Parameters
    ----------
    source : str or pathlib.Path
    check : bool, default=False
        Also check that the folder's files are those the manifest lists, with the same
        SHA-256 (:func:`~sk_braintune.commands.results.check_folder`).

    Returns
    -------
    manifest : dict

    Raises
    ------
    FileNotFoundError
        When there is no manifest there.
    ValueError
        When the manifest is not valid JSON, or (``check``) the folder does not match it
        (:class:`~sk_braintune.exceptions.StudyInputError`, one line).
    """
    path = Path(source)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {MANIFEST_NAME} at {path}")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}): the results folder is "
                         "damaged") from None
    if check:
        check_folder(path.parent, manifest)
    return manifest


_VOLATILE = {"started", "finished", "command_line", "platform", "files"}


def compare_manifests(first, second, *, ignore=_VOLATILE):
    """Where two manifests differ, key path by key path.

    Parameters
    ----------
    first, second : dict
        Manifests (:func:`read_manifest`).
    ignore : set of str, default={"started", "finished", "command_line", "platform", "files"}
        Top-level keys left out (they differ between any two runs; ``files``, the hashes of
        the folder's files, differs with the times shown in ``report.html``).

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


@dataclasses.dataclass
class ReportTable:
    """A table of the report page, from a CSV file of the results folder or from rows.

    Parameters
    ----------
    title : str
        Shown above the table.
    csv_path : str or pathlib.Path, optional
        CSV file (relative paths are taken in the results folder). A list given here is taken
        as ``rows``.
    rows : list of dict or list of list, optional
        The rows (dicts: one column per key; lists: the first row is the header).
    note : str, optional
        What the columns mean, shown under the title.
    """

    title: str
    csv_path: object = None
    rows: list = None
    note: str = None

    def __post_init__(self):
        if isinstance(self.csv_path, (list, tuple)):
            self.csv_path, self.rows = None, list(self.csv_path)
        if (self.csv_path is None) == (self.rows is None):
            raise ValueError(f"ReportTable {self.title!r}: give csv_path or rows (one of them)")


@dataclasses.dataclass
class ReportFigure:
    """A figure of the report page: an image embedded in the page, with its caption.

    Parameters
    ----------
    path : str or pathlib.Path
        PNG, JPEG or SVG file (relative paths are taken in the results folder).
    caption : str
        What the figure shows (a sentence, not the file name).
    link : str or pathlib.Path, optional
        A page beside the report (e.g. an interactive brain map), linked from the caption;
        relative to the results folder.
    """

    path: object
    caption: str
    link: object = None


@dataclasses.dataclass
class ReportSection:
    """A section of the report page: a heading, tables, then figures.

    Parameters
    ----------
    heading : str
    tables : list of ReportTable, optional
    figures : list of ReportFigure, optional
    text : str, optional
        A paragraph under the heading.
    """

    heading: str
    tables: list = dataclasses.field(default_factory=list)
    figures: list = dataclasses.field(default_factory=list)
    text: str = None


_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
         ".svg": "image/svg+xml", ".gif": "image/gif", ".webp": "image/webp"}


def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _cell(value):
    """``{"text": shown, "value": exact text or None}``; numbers shown to 3 decimals."""
    if isinstance(value, bool) or value is None:
        return {"text": "" if value is None else str(value), "value": None}
    text = value if isinstance(value, str) else repr(float(value)) if isinstance(
        value, (float, np.floating)) else str(value)
    number = _number(text)
    if number is None:
        return {"text": text, "value": None}
    integral = not math.isfinite(number) or number == int(number)
    return {"text": text if integral else f"{number:.3f}", "value": text}


def _table_context(table, folder, anchor):
    if table.csv_path is not None:
        path = Path(table.csv_path)
        path = path if path.is_absolute() else folder / path
        with open(path, newline="", encoding="utf-8") as f:
            lines = list(csv.reader(f))
        header, body = (lines[0], lines[1:]) if lines else ([], [])
        source = path.relative_to(folder).as_posix() if path.is_relative_to(folder) else path.name
    else:
        rows = list(table.rows)
        if rows and isinstance(rows[0], dict):
            header = list(dict.fromkeys(key for row in rows for key in row))
            body = [[row.get(key) for key in header] for row in rows]
        else:
            header, body = (list(rows[0]), rows[1:]) if rows else ([], [])
        source = None
    return {"title": table.title, "note": table.note, "source": source,
            "anchor": "results" if source == "results.csv" else anchor,
            "header": [str(name) for name in header],
            "rows": [[_cell(value) for value in row] for row in body]}


def _figure_context(figure, folder):
    path = Path(figure.path)
    path = path if path.is_absolute() else folder / path
    if not str(figure.caption or "").strip():
        raise ValueError(f"figure {path.name} has no caption: say what it shows")
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    mime = _MIME.get(path.suffix.lower(), "image/png")
    link = figure.link
    if link is not None:
        link = Path(link)
        link = (link.relative_to(folder) if link.is_absolute() and link.is_relative_to(folder)
                else link).as_posix()
    return {"file": path.relative_to(folder).as_posix() if path.is_relative_to(folder)
            else path.name,
            "caption": figure.caption, "data_uri": f"data:{mime};base64,{data}", "link": link}


def _slug(text, taken):
    base = "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-") or "section"
    base = "-".join(part for part in base.split("-") if part)
    slug, n = base, 2
    while slug in taken:
        slug, n = f"{base}-{n}", n + 1
    taken.add(slug)
    return slug


def _default_sections(folder):
    """One section with ``results.csv`` and every PNG of the folder (captions: file stems)."""
    tables = ([ReportTable("Results", "results.csv")] if (folder / "results.csv").is_file()
              else [])
    figures = [ReportFigure(p, p.stem.replace("_", " ")) for p in sorted(folder.glob("*.png"))]
    return [ReportSection("Results", tables=tables, figures=figures)]


def _environment():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("sk_braintune.commands", "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
        lstrip_blocks=True, keep_trailing_newline=True)


def write_report(folder, *, title, summary=None, sections=None, manifest=None):
    """Write ``report.html``: a summary, then sections of tables and captioned figures.

    The page is self-contained (figures embedded as base64 data URIs) and rendered from the
    package's jinja2 template with autoescaping. Wide tables scroll inside the page. Each
    numeric cell shows 3 decimals and keeps its exact text in ``data-value``; the table read
    from ``results.csv`` has the id ``results``.

    Parameters
    ----------
    folder : str or pathlib.Path
        Results folder; relative table and figure paths are taken in it.
    title : str
        Page title.
    summary : str or list of str, optional
        What was run and what it found, one paragraph per string; shown first.
    sections : list of ReportSection, optional
        The page's sections, in order (default: one section with ``results.csv`` and every
        ``*.png`` of ``folder``, captioned by file name: for a quick look only).
    manifest : dict, optional
        Shown at the end (default: ``folder/manifest.json`` when present, without its file
        list, which is added when the folder is sealed).

    Returns
    -------
    path : pathlib.Path

    Raises
    ------
    ValueError
        For a figure without a caption.
    """
    folder = Path(folder)
    if manifest is None and (folder / MANIFEST_NAME).is_file():
        manifest = read_manifest(folder)
    manifest = {k: v for k, v in (manifest or {}).items() if k != "files"}
    if sections is None:
        sections = _default_sections(folder)
    if isinstance(summary, str):
        summary = [summary]
    anchors = {"title", "summary", "manifest", "manifest-section", "results"}
    context = []
    for section in sections:
        context.append({
            "heading": section.heading, "text": section.text,
            "anchor": _slug(section.heading, anchors),
            "tables": [_table_context(t, folder, _slug(f"table {t.title}", anchors))
                       for t in section.tables],
            "figures": [_figure_context(f, folder) for f in section.figures]})
    page = _environment().get_template("report.html.j2").render(
        title=title, summary=[p for p in (summary or []) if p], sections=context,
        manifest=json.dumps(manifest, indent=2, allow_nan=True))
    path = folder / REPORT_NAME
    atomic_write_text(path, page)
    return path


