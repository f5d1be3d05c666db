"""Brain maps: offline surfaces (nested fsaverage), volumes, masks, HTML views, demo places."""

import html
import re

import numpy as np
import pytest

from sk_braintune.plotting import (brain_map_values, fsaverage5_surfaces, plot_brain_map,
                                   to_fsaverage5, view_brain_map, volume_image,
                                   write_brain_maps)

N5 = 10242


def _pixels(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


def _coordinate_values(axis=1):
    s = fsaverage5_surfaces()
    return np.concatenate([s["pial"][h][0][:, axis] for h in ("left", "right")]) / 100.0


def test_bundled_surfaces_are_nilearns():
    from nilearn import datasets

    mine = fsaverage5_surfaces()
    meshes = datasets.load_fsaverage("fsaverage5")
    sulcal = datasets.load_fsaverage_data(mesh="fsaverage5", data_type="sulcal")
    for name in ("pial", "inflated", "flat", "sphere"):
        for hemi in ("left", "right"):
            np.testing.assert_array_equal(mine[name][hemi][0], meshes[name].parts[hemi].coordinates)
            np.testing.assert_array_equal(mine[name][hemi][1], meshes[name].parts[hemi].faces)
    for hemi in ("left", "right"):
        np.testing.assert_array_equal(mine["sulcal"][hemi], sulcal.data.parts[hemi])


def test_fsaverage_meshes_are_nested_icosahedra():
    """fsaverage5's vertices 0..2561 are fsaverage4's (and so on down): every vertex added at a
    level is the midpoint, pushed onto the sphere, of two vertices of the level below. That is
    what makes keeping each hemisphere's first 10,242 fsaverage6 vertices exact."""
    from scipy.spatial import cKDTree

    sphere = fsaverage5_surfaces()["sphere"]["left"][0]
    unit = sphere / np.linalg.norm(sphere, axis=1, keepdims=True)
    counts = [10 * 4 ** k + 2 for k in range(6)]  # 12, 42, 162, 642, 2562, 10242
    assert counts[-1] == unit.shape[0]
    for coarse, fine in zip(counts[:-1], counts[1:]):
        parents = unit[:coarse]
        _, nearest = cKDTree(parents).query(unit[coarse:fine], k=2)
        midpoint = parents[nearest[:, 0]] + parents[nearest[:, 1]]
        midpoint /= np.linalg.norm(midpoint, axis=1, keepdims=True)
        angle = np.degrees(np.arccos(np.clip((midpoint * unit[coarse:fine]).sum(1), -1, 1)))
        assert angle.max() < 0.5, (coarse, fine, angle.max())  # ~1.7 deg between fs5 vertices


def _subdivide(coords, faces):
    """One icosahedral subdivision, FreeSurfer-style: old vertices first, then one new vertex
    per edge (on the sphere)."""
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [0, 2]]]), 1)
    edges = np.unique(edges, axis=0)
    middle = coords[edges[:, 0]] + coords[edges[:, 1]]
    middle *= np.linalg.norm(coords[0]) / np.linalg.norm(middle, axis=1, keepdims=True)
    return np.concatenate([coords, middle])


def test_fsaverage6_reduction_against_mesh_coordinates():
    s = fsaverage5_surfaces()
    # an fsaverage6-sized sphere built from fsaverage5 the way the meshes nest
    fine = {h: _subdivide(*s["sphere"][h]) for h in ("left", "right")}
    assert fine["left"].shape[0] == 40962  # fsaverage6's vertex count per hemisphere
    for axis in range(3):
        values = np.concatenate([fine["left"][:, axis], fine["right"][:, axis]])
        got = to_fsaverage5(values, "fsaverage6")
        want = np.concatenate([s["sphere"][h][0][:, axis] for h in ("left", "right")])
        np.testing.assert_array_equal(got, want)
    # sparse columns: only those among the first 10,242 of a hemisphere survive
    index = np.array([5, 40962 + 7, 20000, 40962 + 30000])
    got = to_fsaverage5(np.array([1.0, 2.0, 3.0, 4.0]), "fsaverage6", column_index=index)
    assert got[5] == 1.0 and got[N5 + 7] == 2.0 and np.isfinite(got).sum() == 2
    index = np.array([20, 163842 + 5, 80000, 163842 + 100000])  # fsaverage: 163,842 per hemi
    got = to_fsaverage5(np.array([1.0, 2.0, 3.0, 4.0]), "fsaverage", column_index=index)
    assert got[20] == 1.0 and got[N5 + 5] == 2.0 and np.isfinite(got).sum() == 2


def test_surface_errors():
    with pytest.raises(ValueError, match="need 81924 entries"):
        to_fsaverage5(np.zeros(20484), "fsaverage6")
    with pytest.raises(ValueError, match="coarser"):
        to_fsaverage5(np.zeros(2 * 2562), "fsaverage4")
    with pytest.raises(ValueError, match="unknown surface space"):
        to_fsaverage5(np.zeros(3), "fsaverage8")
    with pytest.raises(ValueError, match=r"downloads the others.*first 10,242"):
        plot_brain_map(np.zeros(81924), "fsaverage6", mesh="fsaverage6")
    with pytest.raises(ValueError, match="unknown surface space"):
        plot_brain_map(np.zeros(20484), "fsaverge5")
    with pytest.raises(ValueError, match="views"):
        plot_brain_map(np.zeros(20484), "fsaverage5", views=("dorsal",))


def test_brain_map_values_mask_threshold_and_limits():
    values = np.array([0.5, -0.2, 0.05, 0.3, np.nan])
    q = np.array([0.01, 0.04, 0.01, 0.2, 0.01])
    shown, vmin, vmax, symmetric = brain_map_values(values, q=q, alpha=0.05)
    np.testing.assert_array_equal(shown, [0.5, -0.2, 0.05, np.nan, np.nan])
    assert symmetric and (vmin, vmax) == (-0.5, 0.5)
    shown, vmin, vmax, symmetric = brain_map_values(values, threshold=0.1, symmetric=False)
    np.testing.assert_array_equal(shown, [0.5, -0.2, np.nan, 0.3, np.nan])
    assert not symmetric and (vmin, vmax) == (-0.2, 0.5)
    shown, vmin, vmax, _ = brain_map_values(np.abs(values), vmax=2.0)
    assert (vmin, vmax) == (0.0, 2.0)
    assert brain_map_values(np.full(3, np.nan))[2] == 1.0  # nothing shown: a usable scale
    # a robust limit: one extreme column saturates instead of paling the others
    spread = np.r_[np.linspace(-0.1, 0.1, 199), 5.0]
    assert brain_map_values(spread, percentile=99)[2] == pytest.approx(
        np.percentile(np.abs(spread), 99))
    assert brain_map_values(spread)[2] == 5.0


@pytest.mark.parametrize("view", ["lateral", "medial", "flat"])
def test_surface_map_renders_and_depends_on_values(view):
    y = _coordinate_values(1)
    first = _pixels(plot_brain_map(y, "fsaverage5", views=(view,), figsize=(3, 1.6)))
    again = _pixels(plot_brain_map(y, "fsaverage5", views=(view,), figsize=(3, 1.6)))
    other = _pixels(plot_brain_map(_coordinate_values(2), "fsaverage5", views=(view,),
                                   figsize=(3, 1.6)))
    np.testing.assert_array_equal(first, again)  # deterministic
    assert first.shape == other.shape
    assert np.mean(np.any(first != other, axis=-1)) > 0.02  # a different picture


def test_significance_mask_hides_columns():
    y = _coordinate_values(1)
    q = np.where(np.arange(y.size) % 2 == 0, 0.01, 0.5)
    masked = _pixels(plot_brain_map(y, "fsaverage5", q=q, views=("flat",), figsize=(3, 1.6)))
    by_hand = np.where(q <= 0.05, y, np.nan)
    same = _pixels(plot_brain_map(by_hand, "fsaverage5", views=("flat",), figsize=(3, 1.6)))
    whole = _pixels(plot_brain_map(y, "fsaverage5", views=("flat",), figsize=(3, 1.6)))
    np.testing.assert_array_equal(masked, same)
    assert np.any(masked != whole)


def test_fsaverage6_map_equals_its_fsaverage5_reduction():
    rng = np.random.default_rng(0)
    values = rng.standard_normal(2 * 40962)
    reduced = to_fsaverage5(values, "fsaverage6")
    a = _pixels(plot_brain_map(values, "fsaverage6", views=("lateral",), vmax=3,
                               figsize=(3, 1.6)))
    b = _pixels(plot_brain_map(reduced, "fsaverage5", views=("lateral",), vmax=3,
                               figsize=(3, 1.6)))
    np.testing.assert_array_equal(a, b)


def _small_mask():
    import nibabel as nib

    mask = np.zeros((10, 12, 10), dtype=np.uint8)
    mask[2:8, 2:10, 2:8] = 1
    affine = np.array([[8.0, 0, 0, -40], [0, 8, 0, -60], [0, 0, 8, -30], [0, 0, 0, 1]])
    return nib.Nifti1Image(mask, affine)


def test_volume_image_orders_and_maskers():
    from nilearn.maskers import NiftiMasker

    mask_img = _small_mask()
    mask = np.asarray(mask_img.dataobj) != 0
    values = np.arange(mask.sum(), dtype=float)
    by_mask = np.asarray(volume_image(values, mask_img).dataobj)
    by_index = np.asarray(volume_image(values, "MNI152NLin2009cAsym",
                                       column_index=np.flatnonzero(mask.ravel()),
                                       mask_img=mask_img).dataobj)
    np.testing.assert_array_equal(by_mask, by_index)
    masker = NiftiMasker(mask_img=mask_img).fit()
    via_masker = np.asarray(volume_image(values, masker).dataobj)
    np.testing.assert_array_equal(by_mask, via_masker)
    expected = masker.inverse_transform(values).get_fdata()  # nilearn's own placement
    np.testing.assert_array_equal(np.nan_to_num(by_mask), expected)
    with pytest.raises(ValueError, match="needs mask_img"):
        volume_image(values, "MNI152NLin2009cAsym")


@pytest.mark.parametrize("view", ["slices", "glass"])
def test_volume_map_renders_and_depends_on_values(view):
    mask_img = _small_mask()
    n = int(np.asarray(mask_img.dataobj).sum())
    ramp = np.linspace(-1, 1, n)
    a = _pixels(plot_brain_map(ramp, mask_img, views=(view,), figsize=(5, 2)))
    b = _pixels(plot_brain_map(ramp[::-1] * 0.5, mask_img, views=(view,), figsize=(5, 2)))
    assert a.shape == b.shape and np.mean(np.any(a != b, axis=-1)) > 0.01


def test_view_brain_map_is_self_contained_html(tmp_path):
    y = _coordinate_values(1)
    path = tmp_path / "map.html"
    view_brain_map(y, "fsaverage5", q=np.full(y.size, 0.01), title="y").save_as_html(path)
    page = html.unescape(path.read_text())
    assert "niivue" in page.lower()
    assert not re.search(r"<script[^>]+src=[\"']https?://", page)  # no remote scripts


def test_view_brain_map_volume(tmp_path):
    mask_img = _small_mask()
    n = int(np.asarray(mask_img.dataobj).sum())
    path = tmp_path / "volume.html"
    view_brain_map(np.linspace(-1, 1, n), mask_img, title="ramp").save_as_html(path)
    page = html.unescape(path.read_text())
    assert "ramp" in page
    assert not re.search(r"<script[^>]+src=[\"']https?://", page)


def test_write_brain_maps(tmp_path):
    from matplotlib.image import imread

    from sk_braintune.builtin.cortex import voxel_places

    labels = np.repeat(["semantic", "auditory", "mixed", "noise"], [40, 25, 15, 20])
    rng = np.random.default_rng(0)
    base = rng.uniform(0.1, 0.6, labels.size)
    scores = {"pretrained": base, "brain-tuned": base + np.where(labels == "semantic", 0.2, 0),
              "random-fMRI": base - 0.05}
    q = {name: np.where(labels == "noise", 0.5, 0.01) for name in scores}
    maps = write_brain_maps(scores, q, space="fsaverage5",
                            column_index=voxel_places(labels, "P01"), output=tmp_path,
                            prefix="ssl_", views=("lateral",), html=False, dpi=40)
    assert [p.name for p, _, _ in maps] == ["ssl_brainmap_pretrained.png",
                                            "ssl_brainmap_brain_tuned_minus_pretrained.png",
                                            "ssl_brainmap_brain_tuned_minus_random_fmri.png"]
    pictures = [imread(p) for p, _, _ in maps]
    assert all(pic.ndim == 3 and pic.shape[0] > 50 for pic in pictures)
    assert not np.array_equal(pictures[1], pictures[2])
    assert all(page is None for _, _, page in maps)
    assert "q <= 0.05" in maps[0][1] and "minus random-fMRI" in maps[2][1]
    with pytest.raises(KeyError, match="brain-tuned"):
        write_brain_maps({"pretrained": base}, None, space="fsaverage5", column_index=None,
                         output=tmp_path)


def test_voxel_places():
    from sk_braintune.builtin.cortex import CORTEX_REGIONS, voxel_places

    labels = np.repeat(["semantic", "auditory", "mixed", "noise"], [400, 250, 150, 200])
    first = voxel_places(labels, "P01", random_state=0)
    np.testing.assert_array_equal(first, voxel_places(labels, 0, random_state=0))
    second = voxel_places(labels, "P02", random_state=0)
    assert first.dtype == np.int64 and first.shape == labels.shape
    assert np.unique(first).size == labels.size and first.min() >= 0 and first.max() < 2 * N5
    assert not np.array_equal(first, second)
    s = fsaverage5_surfaces()
    pial = np.concatenate([s["pial"][h][0] for h in ("left", "right")])
    heschl = np.array(CORTEX_REGIONS["auditory"]["Heschl's gyrus"], dtype=float)

    def distance_to_heschl(index):
        xyz = pial[index]
        return np.linalg.norm(np.abs(xyz) - np.abs(heschl), axis=1)  # either hemisphere

    for places in (first, second):
        auditory = np.median(distance_to_heschl(places[labels == "auditory"]))
        semantic = np.median(distance_to_heschl(places[labels == "semantic"]))
        noise = np.median(distance_to_heschl(places[labels == "noise"]))
        assert auditory < 20 < semantic < noise
        left = places < N5
        assert 0.3 < left.mean() < 0.7  # both hemispheres
    medial_wall = np.setdiff1d(np.arange(N5), np.unique(s["flat"]["left"][1]))
    assert not np.isin(first, medial_wall).any()
    with pytest.raises(ValueError, match="unknown voxel kinds"):
        voxel_places(["semantic", "visual"])
