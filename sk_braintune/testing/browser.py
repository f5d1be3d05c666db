"""Render a results folder's ``report.html`` in headless Chromium and read the page back.

Used by the tests to check that the report renders, that every figure decodes
(``naturalWidth > 0``, recorded into the DOM by the page's own script on ``load``) and that the
table shows ``results.csv``. Chromium comes from the Debian packages (``apt-get install
chromium``); :func:`find_chromium` returns None when it is absent.
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
             "--virtual-time-budget=5000", "--dump-dom", url],
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
        self.header = []
        self.rows = []
        self.manifest = ""
        self._cell = None
        self._in_table = False
        self._in_manifest = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "body":
            self.body = attrs
        elif tag == "img":
            self.images.append({"file": attrs.get("data-file"),
                                "natural_width": int(attrs.get("data-natural-width") or 0),
                                "src_prefix": (attrs.get("src") or "")[:22]})
        elif tag == "table" and attrs.get("id") == "results":
            self._in_table = True
        elif self._in_table and tag == "tr":
            self.rows.append([])
        elif self._in_table and tag in ("td", "th"):
            self._cell = {"text": "", "value": attrs.get("data-value"), "header": tag == "th"}
        elif tag == "pre" and attrs.get("id") == "manifest":
            self._in_manifest = True

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(self._cell)
            self._cell = None
        elif tag == "table":
            self._in_table = False
        elif tag == "pre":
            self._in_manifest = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data
        elif self._in_manifest:
            self.manifest += data


def parse_report(dom):
    """Read the figures, the table and the manifest back from a rendered report.

    Parameters
    ----------
    dom : str
        From :func:`render_dom`.

    Returns
    -------
    report : dict
        ``images`` (list of dict: ``file``, ``natural_width``), ``images_loaded`` and
        ``images_total`` (set by the page's script on ``load``; None when it did not run),
        ``header`` (list of str), ``rows`` (list of list of dict: ``text`` shown and ``value``,
        the CSV text of numeric cells) and ``manifest`` (str, the JSON shown).
    """
    parser = _ReportParser()
    parser.feed(dom)
    rows = [row for row in parser.rows if row]
    header = [cell["text"] for cell in rows[0]] if rows and rows[0][0]["header"] else []
    loaded = parser.body.get("data-images-loaded")
    total = parser.body.get("data-images-total")
    return {"images": parser.images,
            "images_loaded": None if loaded is None else int(loaded),
            "images_total": None if total is None else int(total),
            "header": header, "rows": rows[1:] if header else rows,
            "manifest": parser.manifest}


def check_report(folder, page=None):
    """Render a results folder's report and check it against the folder's files.

    Checks that the page's script ran, that every figure decoded (``naturalWidth > 0``), that
    the table has ``results.csv``'s header, rows and values (each numeric cell keeps the file's
    text and shows it to 3 decimals) and that the manifest shown is ``manifest.json``.

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
    import csv
    import json
    import math

    folder = Path(folder)
    rendered = parse_report(render_dom(page or folder / "report.html"))
    images = rendered["images"]
    assert rendered["images_total"] is not None, "the page's load script did not run"
    assert rendered["images_total"] == len(images) > 0, "no figures in the page"
    broken = [image["file"] for image in images if image["natural_width"] <= 0]
    assert not broken and rendered["images_loaded"] == len(images), f"figures not loaded: {broken}"
    with open(folder / "results.csv", newline="") as f:
        expected = list(csv.reader(f))
    assert rendered["header"] == expected[0], (rendered["header"], expected[0])
    assert len(rendered["rows"]) == len(expected) - 1, "the table has another number of rows"
    for line, (row, cells) in enumerate(zip(expected[1:], rendered["rows"]), start=2):
        assert len(cells) == len(row), f"results.csv line {line}: another number of cells"
        for text, cell in zip(row, cells):
            try:
                value = float(text)
            except ValueError:
                assert cell["text"] == text and cell["value"] is None, (line, text, cell)
                continue
            assert cell["value"] == text, (line, text, cell)
            shown = float(cell["text"])
            # shown with 3 decimals: at most half a unit of the last digit away, inclusive (an
            # exact half such as 1/16 = 0.0625 shows as 0.062, 5e-4 plus float rounding away)
            same = (math.isnan(value) and math.isnan(shown)) or math.isclose(
                shown, value, rel_tol=0, abs_tol=5e-4 * (1 + 1e-9)) or shown == value
            assert same, f"results.csv line {line}: page shows {shown}, file has {text}"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert json.loads(rendered["manifest"]) == manifest, "the manifest shown differs"
    return rendered
