"""Brain maps in the results folders: the demo's per model family, ``evaluate``'s per subject,
and the report that shows them and links their interactive pages (headless Chromium)."""

from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from scipy import sparse

from sk_braintune.builtin.cortex import voxel_places
from sk_braintune.commands import report
from sk_braintune.commands.brainmaps import (
    load_subject_mappers,
    study_brain_maps,
    subject_brain_map,
)
from sk_braintune.commands.demo_report import demo_sections
from sk_braintune.commands.results import write_csv
from sk_braintune.exceptions import StudyInputError
from sk_braintune.plotting import Mapper, plot_brain_map, write_brain_maps
from sk_braintune.testing.browser import check_report, find_chromium

LABELS = np.repeat(["semantic", "auditory", "mixed", "noise"], [40, 25, 15, 20])
FAST = {"views": ("lateral",), "dpi": 40}
MODELS = ["pretrained", "brain-tuned", "random-fMRI"]


def _study_result():
    """What run_braintuning_study gives the maps: two listeners, each its scores and places."""
    rng = np.random.default_rng(0)
    listeners = {}
    for participant in ("P01", "P02"):
        base = rng.uniform(0.1, 0.6, LABELS.size)
        scores = {"pretrained": base,
                  "brain-tuned": base + np.where(LABELS == "semantic", 0.2, 0.0),
                  "random-fMRI": base - 0.05}
        listeners[participant] = {
            "space": "fsaverage5", "column_index": voxel_places(LABELS, participant),
            "mask_img": None, "voxel_scores": scores,
            "voxel_q": {name: np.where(LABELS == "noise", 0.5, 0.01) for name in scores}}
    return {"models": MODELS, "voxel_maps": listeners}


def test_study_brain_maps_draw_the_first_listener(tmp_path):
    result = _study_result()
    maps = study_brain_maps(result, tmp_path / "family", **FAST)
    assert [Path(m["figure"]).name for m in maps] == [
        "brainmap_pretrained.png", "brainmap_brain_tuned_minus_pretrained.png",
        "brainmap_brain_tuned_minus_random_fmri.png"]
    # one interactive page per family: what brain-tuning changed
    assert [m["interactive"] is not None for m in maps] == [False, True, False]
    assert Path(maps[1]["interactive"]).stat().st_size > 10_000
    # the first listener's scores at the first listener's places: the pictures drawn directly
    own = result["voxel_maps"]["P01"]
    direct = write_brain_maps(own["voxel_scores"], own["voxel_q"], space="fsaverage5",
                              column_index=own["column_index"], output=tmp_path / "direct",
                              html=False, **FAST)
    for entry, (png, caption, _) in zip(maps, direct):
        np.testing.assert_array_equal(imread(entry["figure"]), imread(png))
        assert entry["caption"].startswith(caption)
        assert "Listener P01, last layer" in entry["caption"] and "fsaverage5" in entry["caption"]
    # no voxel significant (the quick demo's short test story): no significance mask, the
    # voxels with a reliable noise ceiling shown instead, and the captions say so
    ceiling = np.where(LABELS == "noise", 0.1, 0.8)
    for listener in result["voxel_maps"].values():
        listener["voxel_q"] = {name: np.full(LABELS.size, 0.6) for name in MODELS}
        listener["noise_ceiling"] = ceiling
    fallback = study_brain_maps(result, tmp_path / "fallback", pages=False, min_ceiling=0.4,
                                **FAST)
    reliable = {name: np.where(ceiling > 0.4, v, np.nan)
                for name, v in own["voxel_scores"].items()}
    direct = write_brain_maps(reliable, None, space="fsaverage5",
                              column_index=own["column_index"], output=tmp_path / "reliable",
                              html=False, **FAST)
    for entry, (png, _, _) in zip(fallback, direct):
        np.testing.assert_array_equal(imread(entry["figure"]), imread(png))
        assert "No voxel reaches q <= 0.05" in entry["caption"]
        assert "noise ceiling exceeds 0.4" in entry["caption"]
        assert "without a significance mask" in entry["caption"]
    # a dataset without places gets no maps
    result["voxel_maps"]["P01"]["space"] = None
    assert study_brain_maps(result, tmp_path / "none", **FAST) == []
    assert study_brain_maps({"models": MODELS}, tmp_path / "none", **FAST) == []


def test_demo_report_shows_the_maps_and_links_the_page(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    family = tmp_path / "Family_A"
    maps = study_brain_maps(_study_result(), family, **FAST)
    plot = Figure(figsize=(2, 2))
    plot.add_subplot().plot([0, 1], [1, 0])
    plot.savefig(family / "alignment_semantic.png", dpi=40)
    figures = [str(family / "alignment_semantic.png"), *(m["figure"] for m in maps)]
    results = {"families": {"a": {"figures": figures, "brain_maps": maps}}}
    write_csv([{"family": "Family A", "model": m, "sem_last": 0.1 * k}
               for k, m in enumerate(MODELS)], tmp_path / "results.csv")
    sections = demo_sections(results, ["Family A"], output=tmp_path, table_note="note")
    shown = sections[1].figures
    assert [str(f.path) for f in shown] == [str(Path(f).relative_to(tmp_path)) for f in figures]
    assert [f.link for f in shown] == [
        None, None, Path("Family_A/brainmap_brain_tuned_minus_pretrained.html"), None]
    assert shown[0].caption.startswith("Family A: noise-ceiling-normalised r in the semantic")
    assert all(f.caption == f"Family A: {m['caption']}" for f, m in zip(shown[1:], maps))
    report.write_manifest(report.build_manifest("demo", {"seed": 0}, started="t0"), tmp_path)
    page = report.write_report(tmp_path, title="demo", summary="What was run.",
                               sections=sections)
    assert 'href="Family_A/brainmap_brain_tuned_minus_pretrained.html"' in page.read_text()
    if find_chromium() is not None:
        rendered = check_report(tmp_path)  # every image decodes, every link is in the folder
        assert [image["file"] for image in rendered["images"]] == [
            str(Path(f).relative_to(tmp_path)) for f in figures]
        assert all(image["natural_width"] > 0 for image in rendered["images"])
        assert [image["link"] for image in rendered["images"]] == [
            None, None, "Family_A/brainmap_brain_tuned_minus_pretrained.html", None]


def _toy_mapper(n_voxels=7, subject="UTS01"):
    """A 6 x 5 flatmap whose 24 inside pixels each see one or two voxels."""
    mask = np.zeros((6, 5), dtype=bool)
    mask[1:5, :] = True
    n_pixels = int(mask.sum())
    dense = np.zeros((n_pixels, n_voxels))
    dense[np.arange(n_pixels), np.arange(n_pixels) % n_voxels] = 1.0
    return Mapper(voxel_to_flatmap=sparse.csr_matrix(dense), flatmap_mask=mask,
                  extents=np.array([0.0, 6.0, 0.0, 5.0]), subject=subject)


def test_subject_brain_map_places_the_kept_voxels_on_the_mapper(tmp_path):
    mapper = _toy_mapper()
    kept = np.array([0, 2, 3, 6])  # the file columns the loader kept
    values, q = np.array([0.1, 0.4, -0.2, 0.3]), np.array([0.01, 0.01, 0.5, 0.01])
    entry = subject_brain_map(values, q, {"space": None, "voxel_indices": kept}, tmp_path,
                              "UTS01", model="tiny", mapper=mapper, dpi=40)
    assert Path(entry["figure"]).name == "brainmap_UTS01.png"
    assert entry["interactive"] is None  # no voxel-to-fsaverage5 matrix: no interactive page
    assert entry["caption"].startswith("UTS01: where the last layer of tiny predicts")
    assert "UTS01's flatmap" in entry["caption"] and "q <= 0.05" in entry["caption"]
    # the same picture as the mapper's voxels drawn directly, NaN where not kept
    full, full_q = np.full(7, np.nan), np.full(7, np.nan)
    full[kept], full_q[kept] = values, q
    plot_brain_map(full, mapper, q=full_q, title="UTS01: last-layer alignment",
                   colorbar_label="normalised r").savefig(tmp_path / "direct.png", dpi=40)
    np.testing.assert_array_equal(imread(entry["figure"]), imread(tmp_path / "direct.png"))
    with pytest.raises(StudyInputError, match="voxel index 6 beyond the 5 voxels"):
        subject_brain_map(values, q, {"voxel_indices": kept}, tmp_path, "UTS01", model="m",
                          mapper=_toy_mapper(5))
    with pytest.raises(StudyInputError, match="4 voxels, but the mapper of UTS01 has 7"):
        subject_brain_map(values, None, {}, tmp_path, "UTS01", model="m", mapper=mapper)
    # no space and no mapper: no map
    assert subject_brain_map(values, q, {"space": None}, tmp_path, "UTS01", model="m") is None


def test_subject_brain_map_on_a_surface_writes_the_interactive_page(tmp_path):
    places = {"space": "fsaverage5", "column_index": voxel_places(LABELS, "P01")}
    values = np.linspace(-0.2, 0.6, LABELS.size)
    entry = subject_brain_map(values, None, places, tmp_path, "sub-01", model="m", **FAST)
    assert Path(entry["interactive"]).name == "brainmap_sub-01.html"
    assert "sub-01: last-layer alignment" in Path(entry["interactive"]).read_text()
    assert "without a significance mask" in entry["caption"] and "fsaverage5" in entry["caption"]
    assert imread(entry["figure"]).shape[0] > 50
    # q-values that hide every voxel would leave an empty brain: drawn unmasked, and said so
    unmasked = imread(entry["figure"])
    entry = subject_brain_map(values, np.full(values.size, 0.5), places, tmp_path, "sub-01",
                              model="m", html=False, **FAST)
    assert "No voxel reaches q <= 0.05" in entry["caption"]
    assert "so every voxel is shown" in entry["caption"]
    np.testing.assert_array_equal(imread(entry["figure"]), unmasked)
    masked = subject_brain_map(values, np.where(LABELS == "semantic", 0.01, 0.5), places,
                               tmp_path / "masked", "sub-01", model="m", html=False, **FAST)
    assert "shown where significant" in masked["caption"]
    assert not np.array_equal(imread(masked["figure"]), unmasked)


def test_load_subject_mappers(tmp_path):
    assert load_subject_mappers(None, ["UTS01"]) == {}
    first = _toy_mapper(subject="UTS01").save(tmp_path / "UTS01_mapper.npz")
    _toy_mapper(subject="UTS02").save(tmp_path / "UTS02_mapper.npz")
    # one file: for the subject it was built for, or for the only subject
    assert list(load_subject_mappers(first, ["UTS02", "UTS01"])) == ["UTS01"]
    assert list(load_subject_mappers(first, ["UTS03"])) == ["UTS03"]
    with pytest.raises(StudyInputError, match="built for subject 'UTS01'"):
        load_subject_mappers(first, ["UTS02", "UTS03"])
    # a folder: each subject's <subject>_mapper.npz, where there is one
    found = load_subject_mappers(tmp_path, ["UTS01", "UTS02", "UTS03"])
    assert {s: m.subject for s, m in found.items()} == {"UTS01": "UTS01", "UTS02": "UTS02"}
    with pytest.raises(StudyInputError, match="no <subject>_mapper.npz for UTS05"):
        load_subject_mappers(tmp_path, ["UTS05"])
    with pytest.raises(StudyInputError, match="does not exist"):
        load_subject_mappers(tmp_path / "missing.npz", ["UTS01"])
    np.savez(tmp_path / "other.npz", x=np.zeros(2))
    with pytest.raises(StudyInputError, match="not a mapper"):
        load_subject_mappers(tmp_path / "other.npz", ["UTS01"])
