"""Manifest (versions, settings, fingerprints) and the self-contained report page, rendered in a
real headless Chromium."""

import base64
import csv
import hashlib
import json
import os

import numpy as np
import pytest

from sk_braintune import provenance
from sk_braintune.commands import report
from sk_braintune.testing.browser import check_report, find_chromium, parse_report, render_dom

# .ci/run installs Chromium and sets SK_BRAINTUNE_REQUIRE_CHROMIUM, so CI never skips these
needs_chromium = pytest.mark.skipif(
    find_chromium() is None and not os.environ.get("SK_BRAINTUNE_REQUIRE_CHROMIUM"),
    reason="Chromium is not installed (apt-get install chromium; .ci/run installs it)")


def _blake(*parts):
    hasher = hashlib.blake2b(digest_size=16)
    for part in parts:
        hasher.update(part)
    return "blake2b:" + hasher.hexdigest()


def test_fingerprint_arrays_is_a_hash_of_names_dtypes_shapes_and_bytes():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.ones(4, dtype=np.int16)
    expected = _blake(b"x\0", f"{a.dtype.str}{a.shape}".encode(), a.tobytes(),
                      b"y\0", f"{b.dtype.str}{b.shape}".encode(), b.tobytes())
    assert provenance.fingerprint_arrays({"y": b, "x": a}) == expected  # sorted keys
    assert provenance.fingerprint_arrays({"x": a, "y": b}) == expected
    changed = a.copy()
    changed[1, 2] = np.nextafter(changed[1, 2], np.inf)  # one ulp
    assert provenance.fingerprint_arrays({"x": changed, "y": b}) != expected
    # same bytes, other dtype or shape: another fingerprint
    assert provenance.fingerprint_arrays(a.view(np.int32)) != provenance.fingerprint_arrays(a)
    assert provenance.fingerprint_arrays(a.reshape(3, 2)) != provenance.fingerprint_arrays(a)
    # non-contiguous input hashes like its contiguous copy
    assert provenance.fingerprint_arrays(a.T) == provenance.fingerprint_arrays(np.ascontiguousarray(a.T))


def test_fingerprint_arrays_reads_lazy_arrays_in_slabs(tmp_path):
    h5py = pytest.importorskip("h5py")
    values = np.random.default_rng(0).standard_normal((50, 7)).astype(np.float32)
    with h5py.File(tmp_path / "x.hf5", "w") as f:
        f["data"] = values
    with h5py.File(tmp_path / "x.hf5", "r") as f:
        lazy = provenance.fingerprint_arrays({"story": f["data"]})
    direct = _blake(b"story\0", f"{values.dtype.str}{values.shape}".encode(), values.tobytes())
    assert lazy == direct


def test_fingerprint_files_and_models(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "m" / "README.md").write_text("not hashed")
    expected = _blake(b"config.json\0", b"{}", b"model.safetensors\0", b"weights")
    assert provenance.fingerprint_files([tmp_path / "m" / "model.safetensors",
                                     tmp_path / "m" / "config.json"]) == expected
    fp = provenance.fingerprint_model(tmp_path / "m")
    assert fp == {"name": str(tmp_path / "m"), "source": "files", "fingerprint": expected}
    assert provenance.fingerprint_model("org/some-hub-model")["fingerprint"] is None


def test_fingerprint_of_a_state_dict():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    first = torch.nn.Linear(3, 2)
    second = torch.nn.Linear(3, 2)
    second.load_state_dict(first.state_dict())
    assert (provenance.fingerprint_model(first)["fingerprint"]
            == provenance.fingerprint_model(second)["fingerprint"])
    with torch.no_grad():
        second.bias[0] += 1e-6
    assert (provenance.fingerprint_model(first)["fingerprint"]
            != provenance.fingerprint_model(second)["fingerprint"])
    # bf16 tensors are hashed by their bytes too
    assert provenance.fingerprint_model(first.to(torch.bfloat16))["source"] == "state_dict"


def test_voxel_selection_and_manifest_comparison():
    selection = provenance.voxel_selection([3, 5, 8], n_voxels=10)
    assert selection["count"] == 3 and selection["n_voxels"] == 10
    assert selection["fingerprint"] == provenance.fingerprint_arrays(np.array([3, 5, 8], np.int64))
    assert provenance.voxel_selection([3, 5, 9])["fingerprint"] != selection["fingerprint"]
    first = report.build_manifest("tune", {"seed": 0, "window": 4.0}, started="t0",
                                  seeds={"tuning": 0}, voxels={"targets": selection})
    second = json.loads(json.dumps(first))
    second["started"] = "t1"
    second["settings"]["window"] = 6.0
    assert report.compare_manifests(first, first) == []
    assert report.compare_manifests(first, second) == [("settings.window", 4.0, 6.0)]
    for key in ("sk_braintune", "torch", "transformers", "numpy", "scikit-learn", "python"):
        assert first["versions"][key], key


def _write_folder(folder, n_figures=2, broken=False):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_figures):
        figure, ax = plt.subplots(figsize=(2 + i, 2))
        ax.plot([0, 1], [i, 1])
        figure.savefig(folder / f"figure{i}.png", dpi=50)
        plt.close(figure)
    if broken:
        (folder / "zz_broken.png").write_bytes(b"\x89PNG not really")
    rows = [["model", "sem_last", "aud_best", "epochs"],
            ["pretrained", "0.123456789", "-0.5", "3"],
            ["brain-tuned", "0.25", "nan", "4"]]
    with open(folder / "results.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return rows


def test_report_is_self_contained(tmp_path):
    _write_folder(tmp_path)
    manifest = report.build_manifest("demo", {"seed": 1}, started="t0")
    report.write_manifest(manifest, tmp_path)
    page = report.write_report(tmp_path, title="a <title>").read_text()
    assert "src=\"data:image/png;base64," in page
    assert "a &lt;title&gt;" in page
    # nothing is fetched from outside the page: no http(s) and no file references
    assert "http://" not in page and "https://" not in page and 'src="figure' not in page
    png = (tmp_path / "figure0.png").read_bytes()
    assert base64.b64encode(png).decode() in page


@needs_chromium
def test_report_renders_in_chromium(tmp_path):
    _write_folder(tmp_path, n_figures=3)
    report.write_manifest(report.build_manifest("demo", {"seed": 1}, started="t0"), tmp_path)
    page = report.write_report(tmp_path, title="demo", summary="Three figures and a table.")
    rendered = check_report(tmp_path, page)
    from PIL import Image

    widths = sorted(image["natural_width"] for image in rendered["images"])
    assert widths == sorted(Image.open(tmp_path / f"figure{i}.png").width for i in range(3))


@needs_chromium
def test_a_broken_figure_is_caught(tmp_path):
    """The browser check can fail: an undecodable PNG has naturalWidth 0."""
    _write_folder(tmp_path, n_figures=1, broken=True)
    page = report.write_report(tmp_path, title="broken")
    rendered = parse_report(render_dom(page))
    assert rendered["images_total"] == 2 and rendered["images_loaded"] == 1
    widths = {image["file"]: image["natural_width"] for image in rendered["images"]}
    assert widths["zz_broken.png"] == 0 and widths["figure0.png"] > 0


def _wide_rows(n_columns=40):
    return [{"model": name, **{f"column_{j:02d}_with_a_long_name": 0.1 * j + k
                               for j in range(n_columns)}}
            for k, name in enumerate(("pretrained", "brain-tuned"))]


def _sectioned_report(folder):
    """A page as the demo writes it: two families, each with figures; two tables."""
    _write_folder(folder, n_figures=3)
    from sk_braintune.commands.results import write_csv

    write_csv(_wide_rows(), folder / "wide.csv")
    (folder / "map.html").write_text("<html><body>interactive</body></html>")
    sections = [
        report.ReportSection("Results", tables=[
            report.ReportTable("Alignment", "results.csv", note="Normalised r <per> layer."),
            report.ReportTable("Wide table", "wide.csv"),
            report.ReportTable("Significance", [{"model": "pretrained", "sem_sig": "3/40",
                                                 "sem_ci": "[0.09, 0.27]", "p": 0.012345}])]),
        report.ReportSection("Family A", figures=[
            report.ReportFigure("figure0.png", "Family A: semantic voxels, r per layer"),
            report.ReportFigure(folder / "figure1.png", "Family A: <b>training</b> curves",
                                link="map.html")]),
        report.ReportSection("Family B", figures=[
            report.ReportFigure("figure2.png", "Family B: semantic voxels, r per layer")]),
    ]
    report.write_manifest(report.build_manifest("demo", {"seed": 1}, started="t0"), folder)
    return report.write_report(folder, title="demo <page>", summary=[
        "What was run.", "What it found: brain-tuned > pretrained."], sections=sections)


def test_report_from_the_template_escapes_and_groups(tmp_path):
    page = _sectioned_report(tmp_path).read_text()
    # autoescaping: titles, captions and notes are text, never markup
    assert "demo &lt;page&gt;" in page and "&lt;b&gt;training&lt;/b&gt;" in page
    assert "<b>training</b>" not in page and "Normalised r &lt;per&gt; layer." in page
    assert page.index("What was run.") < page.index("<h2>Results</h2>")
    assert page.index("<h2>Family A</h2>") < page.index("Family A: semantic") < page.index(
        "<h2>Family B</h2>") < page.index("Family B: semantic")
    assert 'href="map.html"' in page and "https://" not in page and "http://" not in page
    # every table inside a horizontal scroll container
    assert page.count('<div class="table-scroll">') == page.count("<table") == 3
    assert 'id="results" data-source="results.csv"' in page
    for i in range(3):
        png = (tmp_path / f"figure{i}.png").read_bytes()
        assert base64.b64encode(png).decode() in page


def test_report_figure_needs_a_caption_and_a_table_a_source(tmp_path):
    _write_folder(tmp_path, n_figures=1)
    with pytest.raises(ValueError, match="figure0.png has no caption"):
        report.write_report(tmp_path, title="t", summary="s", sections=[
            report.ReportSection("A", figures=[report.ReportFigure("figure0.png", " ")])])
    with pytest.raises(ValueError, match="give csv_path or rows"):
        report.ReportTable("no source")


@needs_chromium
def test_sectioned_report_renders_in_chromium(tmp_path):
    page = _sectioned_report(tmp_path)
    rendered = check_report(tmp_path, page)
    assert [s["heading"] for s in rendered["sections"]] == ["Results", "Family A", "Family B"]
    captions = {f["file"]: f["caption"] for s in rendered["sections"] for f in s["figures"]}
    assert captions["figure0.png"] == "Family A: semantic voxels, r per layer"
    assert captions["figure1.png"].startswith("Family A: <b>training</b> curves")
    assert {image["section"] for image in rendered["images"]} == {"Family A", "Family B"}
    # the 41-column table scrolls inside the page: nothing runs off the right edge
    assert rendered["page_overflow"] is False
    assert len(rendered["tables"]["table-wide-table"]["header"]) == 41
    significance = rendered["tables"]["table-significance"]
    assert significance["header"] == ["model", "sem_sig", "sem_ci", "p"]
    assert [c["text"] for c in significance["rows"][0]] == ["pretrained", "3/40",
                                                            "[0.09, 0.27]", "0.012"]
    assert rendered["summary"] == "What was run. What it found: brain-tuned > pretrained."


@needs_chromium
def test_the_check_catches_a_table_running_off_the_page(tmp_path):
    """The overflow check can fail: the same wide table outside its scroll container."""
    page = _sectioned_report(tmp_path)
    text = page.read_text().replace('<div class="table-scroll">', "<div>")
    page.write_text(text)
    with pytest.raises(AssertionError, match="right edge"):
        check_report(tmp_path, page)


@needs_chromium
def test_the_check_catches_a_caption_that_is_a_file_name(tmp_path):
    _write_folder(tmp_path, n_figures=1)
    report.write_manifest(report.build_manifest("demo", {"seed": 1}, started="t0"), tmp_path)
    page = report.write_report(tmp_path, title="t", summary="s", sections=[
        report.ReportSection("A", figures=[report.ReportFigure("figure0.png", "figure0.png")])])
    with pytest.raises(AssertionError, match="no caption saying what it shows"):
        check_report(tmp_path, page)


@needs_chromium
def test_the_check_catches_a_link_to_a_missing_page(tmp_path):
    """A figure's interactive page (e.g. a brain map's) must be in the folder."""
    page = _sectioned_report(tmp_path)
    rendered = check_report(tmp_path, page)
    assert [image["link"] for image in rendered["images"]] == [None, "map.html", None]
    (tmp_path / "map.html").unlink()
    with pytest.raises(AssertionError, match="links map.html, which is not in"):
        check_report(tmp_path, page)
