"""Render a results folder's ``report.html`` in headless Chromium and read the page back.

Used by the tests to check that the report renders, that every figure decodes
(``naturalWidth > 0``, recorded into the DOM by the page's own script on ``load``) and has a
caption, that nothing runs off the window's right edge, that the sections have headings and
that every table read from a CSV file shows it. Chromium comes from the Debian packages
(``apt-get install chromium``); :func:`find_chromium` returns None when it is absent.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

__all__ = ["CHROMIUM_FLAGS", "find_chromium", "render_dom", "parse_report", "check_report"]

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync")
"""Flags for a headless, offline Chromium that touches nothing outside its profile folder."""


def find_chromium():
    """Path of a Chromium executable, or None.

    Returns
    -------
    path : str or None
    """
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def render_dom(page, *, timeout=120):
    """Load ``page`` in headless Chromium and return the DOM after the ``load`` event.

    Parameters
    ----------
    page : str or pathlib.Path
        HTML file.
    timeout : float, default=120
        Seconds before Chromium is stopped.

    Returns
    -------
    dom : str
        The serialised DOM (``--dump-dom``).

    Raises
    ------
    RuntimeError
        When Chromium is missing or fails.
    """
    chromium = find_chromium()
    if chromium is None:
        raise RuntimeError("Chromium is not installed (apt-get install chromium)")
    url = Path(page).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="sk_braintune_chromium_") as profile:
        completed = subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
             "--window-size=1024,768", "--virtual-time-budget=5000", "--dump-dom", url],
            capture_output=True, text=True, timeout=timeout, check=False)
    if completed.returncode != 0 or "<html" not in completed.stdout:
        raise RuntimeError(f"Chromium failed on {page} (status {completed.returncode}): "
                           f"{completed.stderr[-2000:]}")
    return completed.stdout


class _ReportParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.body = {}
        self.images = []
        self.tables = {}
        self.sections = []
        self.summary = ""
        self.manifest = ""
        self._cell = None
        self._table = None
        self._figure = None
        self._in_caption = False
        self._in_summary = False
        self._in_manifest = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "body":
            self.body = attrs
        elif tag == "section" and "report-section" in (attrs.get("class") or "").split():
            self.sections.append({"heading": attrs.get("data-heading"), "id": attrs.get("id"),
                                  "figures": [], "tables": []})
        elif tag == "section" and attrs.get("id") == "summary":
            self._in_summary = True
        elif tag == "figure":
            self._figure = {"caption": "", "file": None, "link": None}
        elif tag == "a" and self._figure is not None and self._in_caption:
            self._figure["link"] = attrs.get("href")
        elif tag == "figcaption" and self._figure is not None:
            self._in_caption = True
        elif tag == "img":
            image = {"file": attrs.get("data-file"),
                     "natural_width": int(attrs.get("data-natural-width") or 0),
                     "src_prefix": (attrs.get("src") or "")[:22], "caption": None,
                     "link": None,
                     "section": self.sections[-1]["heading"] if self.sections else None}
            self.images.append(image)
            if self._figure is not None:
                self._figure["image"] = image
        elif tag == "table":
            self._table = {"source": attrs.get("data-source"), "rows": []}
            self.tables[attrs.get("id")] = self._table
            if self.sections:
                self.sections[-1]["tables"].append(attrs.get("id"))
        elif self._table is not None and tag == "tr":
            self._table["rows"].append([])
        elif self._table is not None and tag in ("td", "th"):
            self._cell = {"text": "", "value": attrs.get("data-value"), "header": tag == "th"}
        elif tag == "pre" and attrs.get("id") == "manifest":
            self._in_manifest = True

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._table["rows"][-1].append(self._cell)
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "pre":
            self._in_manifest = False
        elif tag == "figcaption":
            self._in_caption = False
        elif tag == "section":
            self._in_summary = False
        elif tag == "figure" and self._figure is not None:
            image = self._figure.get("image")
            caption = " ".join(self._figure["caption"].split())
            if image is not None:
                image["caption"] = caption
                image["link"] = self._figure["link"]
                if self.sections:
                    self.sections[-1]["figures"].append({"file": image["file"],
                                                         "caption": caption})
            self._figure = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data
        elif self._in_manifest:
            self.manifest += data
        elif self._in_caption:
            self._figure["caption"] += data
        elif self._in_summary:
            self.summary += data


def _split_table(rows):
    rows = [row for row in rows if row]
    header = [cell["text"] for cell in rows[0]] if rows and rows[0][0]["header"] else []
    return header, rows[1:] if header else rows


def parse_report(dom):
    """Read the summary, sections, figures, tables and manifest back from a rendered report.

    Parameters
    ----------
    dom : str
        From :func:`render_dom`.

    Returns
    -------
    report : dict
        ``images`` (list of dict: ``file``, ``natural_width``, ``caption``, ``section``,
        ``link``: the caption's link, e.g. to an interactive brain map, or None),
        ``images_loaded`` and ``images_total`` (set by the page's script on ``load``; None when
        it did not run), ``page_overflow`` (whether the page is wider than the window; None
        when the script did not run), ``header`` and ``rows`` of the ``results`` table (list
        of str; list of list of dict: ``text`` shown and ``value``, the exact text of numeric
        cells),
        ``tables`` (table id -> ``source``, ``header``, ``rows``), ``sections`` (list of dict:
        ``heading``, ``figures`` with ``file`` and ``caption``, ``tables`` ids), ``summary``
        (str) and ``manifest`` (str, the JSON shown).
    """
    parser = _ReportParser()
    parser.feed(dom)
    tables = {}
    for name, table in parser.tables.items():
        header, rows = _split_table(table["rows"])
        tables[name] = {"source": table["source"], "header": header, "rows": rows}
    results = tables.get("results", {"header": [], "rows": []})
    loaded = parser.body.get("data-images-loaded")
    total = parser.body.get("data-images-total")
    overflow = parser.body.get("data-page-overflow")
    return {"images": parser.images, "page_overflow": None if overflow is None
            else overflow == "true",
            "images_loaded": None if loaded is None else int(loaded),
            "images_total": None if total is None else int(total),
            "header": results["header"], "rows": results["rows"], "tables": tables,
            "sections": parser.sections, "summary": " ".join(parser.summary.split()),
            "manifest": parser.manifest}


def _check_table(folder, table, name):
    """The table shown is the CSV file's header, rows and values (numbers to 3 decimals)."""
    import csv
    import math

    with open(folder / table["source"], newline="", encoding="utf-8") as f:
        expected = list(csv.reader(f))
    assert table["header"] == expected[0], (name, table["header"], expected[0])
    assert len(table["rows"]) == len(expected) - 1, f"{name}: another number of rows"
    for line, (row, cells) in enumerate(zip(expected[1:], table["rows"]), start=2):
        assert len(cells) == len(row), f"{name} line {line}: another number of cells"
        for text, cell in zip(row, cells):
            try:
                value = float(text)
            except ValueError:
                assert cell["text"] == text and cell["value"] is None, (name, line, text, cell)
                continue
            assert cell["value"] == text, (name, line, text, cell)
            shown = float(cell["text"])
            # shown with 3 decimals: at most half a unit of the last digit away, inclusive (an
            # exact half such as 1/16 = 0.0625 shows as 0.062, 5e-4 plus float rounding away)
            same = (math.isnan(value) and math.isnan(shown)) or math.isclose(
                shown, value, rel_tol=0, abs_tol=5e-4 * (1 + 1e-9)) or shown == value
            assert same, f"{name} line {line}: page shows {shown}, file has {text}"


def check_report(folder, page=None):
    """Render a results folder's report and check it against the folder's files.

    Checks that the page's script ran, that every figure decoded (``naturalWidth > 0``) and
    has a caption that is more than its file name (and that the page its caption links, if
    any, is in the folder), that nothing runs off the right edge of
    the window (wide tables scroll inside the page), that every section has a heading, that
    the page opens with a summary, that every table read from a CSV file of the folder (the
    ``results`` table from ``results.csv`` among them) has that file's header, rows and values
    (each numeric cell keeps the file's text and shows it to 3 decimals) and that the manifest
    shown is ``manifest.json`` (less the file list it gets when the folder is sealed).

    Parameters
    ----------
    folder : str or pathlib.Path
        Results folder holding ``results.csv``, ``manifest.json`` and ``report.html``.
    page : str or pathlib.Path, optional
        The page (default: ``folder/report.html``).

    Returns
    -------
    report : dict
        From :func:`parse_report`.

    Raises
    ------
    AssertionError
        Naming the first difference found.
    """
    import json

    folder = Path(folder)
    rendered = parse_report(render_dom(page or folder / "report.html"))
    images = rendered["images"]
    assert rendered["images_total"] is not None, "the page's load script did not run"
    assert rendered["images_total"] == len(images) > 0, "no figures in the page"
    broken = [image["file"] for image in images if image["natural_width"] <= 0]
    assert not broken and rendered["images_loaded"] == len(images), f"figures not loaded: {broken}"
    for image in images:
        caption = image["caption"] or ""
        assert caption and caption != Path(image["file"] or "").name, (
            f"figure {image['file']} has no caption saying what it shows: {caption!r}")
        link = image.get("link")
        assert link is None or (folder / link).is_file(), (
            f"figure {image['file']} links {link}, which is not in {folder}")
    assert rendered["page_overflow"] is False, "the page runs off the right edge of the window"
    assert all(section["heading"] for section in rendered["sections"]), "a section has no heading"
    assert rendered["summary"], "the page has no summary"
    if (folder / "results.csv").is_file():
        assert "results" in rendered["tables"], "results.csv is not shown"
    for name, table in rendered["tables"].items():
        if table["source"] is not None:
            _check_table(folder, table, name)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.pop("files", None)
    assert json.loads(rendered["manifest"]) == manifest, "the manifest shown differs"
    return rendered
