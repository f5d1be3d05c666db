"""Atlas labels from nibabel-written annotations and label images, and the papers' ROI groups."""

import numpy as np
import pytest

from sk_braintune.evaluation import atlas_labels, load_roi_table, read_annotation, roi_summary

# a toy HCP-MMP1-style atlas: index 0 is "???" (unlabelled)
NAMES = ["???", "L_A1_ROI", "L_LBelt_ROI", "L_44_ROI", "L_V1_ROI"]


def _write_annot(path, keys, names):
    import nibabel as nib

    ctab = np.zeros((len(names), 5), dtype=np.int32)
    ctab[:, :3] = np.arange(len(names))[:, None] * [10, 20, 30] % 255
    ctab[:, 3] = 0
    ctab[:, 4] = ctab[:, 0] + ctab[:, 1] * 256 + ctab[:, 2] * 65536
    nib.freesurfer.write_annot(str(path), np.asarray(keys, dtype=np.int32), ctab,
                               [n.encode() for n in names], fill_ctab=False)


def _write_label_gii(path, keys, names):
    import nibabel as nib

    table = nib.gifti.GiftiLabelTable()
    for key, name in enumerate(names):
        label = nib.gifti.GiftiLabel(key=key)
        label.label = name
        table.labels.append(label)
    data = nib.gifti.GiftiDataArray(np.asarray(keys, dtype=np.int32), intent="NIFTI_INTENT_LABEL",
                                    datatype="NIFTI_TYPE_INT32")
    image = nib.gifti.GiftiImage(labeltable=table, darrays=[data])
    nib.save(image, str(path))


@pytest.fixture
def hemispheres(tmp_path):
    rng = np.random.default_rng(0)
    left = rng.integers(-1, len(NAMES), 60)  # -1: no label at all
    right = rng.integers(0, len(NAMES), 60)
    right_names = [n.replace("L_", "R_") for n in NAMES]
    _write_annot(tmp_path / "lh.HCP-MMP1.annot", left, NAMES)
    _write_annot(tmp_path / "rh.HCP-MMP1.annot", right, right_names)
    _write_label_gii(tmp_path / "lh.label.gii", np.maximum(left, 0), NAMES)
    _write_label_gii(tmp_path / "rh.label.gii", right, right_names)
    expected = np.array([NAMES[k] if k > 0 else "" for k in left]
                        + [right_names[k] if k > 0 else "" for k in right])
    return tmp_path, expected


def test_annotations_read_as_written(hemispheres):
    folder, expected = hemispheres
    for lh, rh in (("lh.HCP-MMP1.annot", "rh.HCP-MMP1.annot"), ("lh.label.gii", "rh.label.gii")):
        labels = atlas_labels((folder / lh, folder / rh), outside="exclude")
        np.testing.assert_array_equal(labels, expected)
    np.testing.assert_array_equal(read_annotation(folder / "lh.HCP-MMP1.annot"), expected[:60])
    columns = np.array([3, 70, 119, 0])
    np.testing.assert_array_equal(
        atlas_labels((folder / lh, folder / rh), outside="keep", column_index=columns),
        np.where(expected[columns] == "", "outside", expected[columns]))
    with pytest.raises(ValueError, match="have no atlas label"):
        atlas_labels((folder / lh, folder / rh), outside="error")
    with pytest.raises(ValueError, match="outside must be one of"):
        atlas_labels((folder / lh, folder / rh), outside="ignore")


def test_shared_names_get_hemisphere_prefixes(tmp_path):
    _write_annot(tmp_path / "lh.a.annot", [1, 2, 0], ["Unknown", "A1", "STV"])
    _write_annot(tmp_path / "rh.a.annot", [2, 1, 1], ["Unknown", "A1", "STV"])
    labels = atlas_labels((tmp_path / "lh.a.annot", tmp_path / "rh.a.annot"), outside="exclude")
    np.testing.assert_array_equal(labels, ["L_A1", "L_STV", "", "R_STV", "R_A1", "R_A1"])


def test_paper_roi_groups_on_an_annotation(hemispheres):
    folder, expected = hemispheres
    table = load_roi_table("brain-tuning")
    assert list(table) == ["primary_auditory", "early_auditory", "late_language"]
    assert table["primary_auditory"] == ["A1"]
    assert table["early_auditory"] == load_roi_table("glasser")["early_auditory"]
    labels = atlas_labels((folder / "lh.HCP-MMP1.annot", folder / "rh.HCP-MMP1.annot"),
                          outside="exclude")
    scores = np.random.default_rng(1).standard_normal(labels.size)
    summary = roi_summary(scores, labels, rois="brain-tuning")
    stem = np.array([x[2:-4] if x else "" for x in expected])  # L_A1_ROI -> A1
    for roi, members in (("primary_auditory", ["A1"]), ("early_auditory", ["A1", "LBelt"]),
                         ("late_language", ["44"])):
        chosen = scores[np.isin(stem, members)]
        assert summary.loc[roi, "n_voxels"] == chosen.size > 0
        np.testing.assert_allclose(summary.loc[roi, "mean"], chosen.mean())
    # without a table, unlabelled columns are no ROI of their own
    assert "" not in roi_summary(scores, labels).index


def test_volume_label_image(tmp_path):
    import nibabel as nib

    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    atlas = np.zeros((6, 5, 4), dtype=np.int16)
    atlas[:3] = 1
    atlas[3:, :2] = 2
    mask = np.zeros((6, 5, 4), dtype=np.uint8)
    mask[1:5, 1:4, 1:3] = 1
    nib.save(nib.Nifti1Image(atlas, affine), str(tmp_path / "atlas.nii.gz"))
    (tmp_path / "lut.txt").write_text("# index name r g b a\n1 L_A1_ROI 255 0 0 0\n"
                                      "2 L_44_ROI 0 255 0 0\n")
    mask_img = nib.Nifti1Image(mask, affine)
    labels = atlas_labels(tmp_path / "atlas.nii.gz", outside="keep", mask_img=mask_img,
                          lut=tmp_path / "lut.txt")
    flat_atlas = atlas[mask != 0]  # mask voxels in C order
    want = np.array(["L_A1_ROI" if v == 1 else "L_44_ROI" if v == 2 else "outside"
                     for v in flat_atlas])
    np.testing.assert_array_equal(labels, want)
    index = np.flatnonzero(mask.ravel())[::3]
    np.testing.assert_array_equal(
        atlas_labels(nib.load(str(tmp_path / "atlas.nii.gz")), outside="keep",
                     mask_img=mask_img, column_index=index, lut={1: "L_A1_ROI", 2: "L_44_ROI"}),
        want[::3])
    # an atlas on a finer grid is resampled (nearest neighbour) to the data's grid
    fine = np.repeat(np.repeat(np.repeat(atlas, 3, 0), 3, 1), 3, 2)
    fine_img = nib.Nifti1Image(fine, np.diag([1.0, 1.0, 1.0, 1.0]) @ np.array(
        [[1, 0, 0, -1], [0, 1, 0, -1], [0, 0, 1, -1], [0, 0, 0, 1.0]]))
    np.testing.assert_array_equal(atlas_labels(fine_img, outside="keep", mask_img=mask_img,
                                               lut={1: "L_A1_ROI", 2: "L_44_ROI"}), want)
    with pytest.raises(ValueError, match="needs mask_img"):
        atlas_labels(tmp_path / "atlas.nii.gz", outside="keep")


def test_label_vector():
    labels = atlas_labels(np.array(["A1", "???", "44"]), outside="keep")
    np.testing.assert_array_equal(labels, ["A1", "outside", "44"])
    np.testing.assert_array_equal(atlas_labels(["A1", "44", "V1"], outside="error",
                                               column_index=[2, 0]), ["V1", "A1"])
