"""Flatmap mappers: drawing a hand-made mapper, and building one against pycortex itself."""

import json

import numpy as np
import pytest
from scipy import sparse

from sk_braintune.plotting import Mapper, load_mapper, plot_brain_map


def _hand_made_mapper(rng):
    """A 6 x 5 flatmap (width x height) with 20 inside pixels seeing 7 voxels."""
    mask = np.zeros((6, 5), dtype=bool)
    mask[1:5, :] = True
    n_pixels, n_voxels = int(mask.sum()), 7
    dense = rng.random((n_pixels, n_voxels)) * (rng.random((n_pixels, n_voxels)) < 0.4)
    dense[3] = 0.0  # a pixel that sees no voxel
    rows = dense.sum(axis=1, keepdims=True)
    dense = np.divide(dense, rows, out=np.zeros_like(dense), where=rows > 0)
    return Mapper(voxel_to_flatmap=sparse.csr_matrix(dense), flatmap_mask=mask,
                  extents=np.array([0.0, 6.0, 0.0, 5.0]), subject="toy"), dense


def test_hand_made_mapper_image_matches_numpy(tmp_path):
    rng = np.random.default_rng(0)
    mapper, dense = _hand_made_mapper(rng)
    values = rng.standard_normal(7)
    values[2] = np.nan
    # direct computation: per inside pixel, weighted mean over the finite voxels it sees
    expected = np.full((6, 5), np.nan)
    inside = np.argwhere(mapper.flatmap_mask)
    for row, (i, j) in enumerate(inside):
        w = dense[row].copy()
        w[2] = 0.0
        if w.sum() > 0:
            expected[i, j] = np.dot(w, np.nan_to_num(values)) / w.sum()
    expected = expected.T[::-1]  # pycortex's picture orientation
    np.testing.assert_allclose(mapper.flatmap_image(values), expected, equal_nan=True)
    assert np.isnan(mapper.flatmap_image(values)).sum() > 10  # outside + empty pixels

    path = mapper.save(tmp_path / "toy_mapper.npz")
    again = load_mapper(path)
    np.testing.assert_allclose(again.flatmap_image(values), expected, equal_nan=True)
    assert again.subject == "toy" and again.voxel_to_fsaverage5 is None

    fig_a = plot_brain_map(values, again, title="a", figsize=(3, 2))
    fig_b = plot_brain_map(-values, path, title="a", figsize=(3, 2))  # the file will do
    a, b = (np.asarray(_pixels(f)) for f in (fig_a, fig_b))
    assert a.shape == b.shape and not np.array_equal(a, b)
    with pytest.raises(ValueError, match="expects 7 values"):
        plot_brain_map(np.zeros(6), again)
    with pytest.raises(ValueError, match="no voxel-to-fsaverage5"):
        plot_brain_map(values, again, views=("flat", "lateral"))


def _pixels(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())


def test_load_mapper_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="sk-braintune mappers"):
        load_mapper(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(2))
    with pytest.raises(ValueError, match="not a mapper file"):
        load_mapper(tmp_path / "other.npz")


def test_mappers_command_missing_subject(tmp_path, capsys):
    from sk_braintune.commands.cli import main

    assert main(["mappers", "--root", str(tmp_path), "--subject", "UTS03"]) == 2
    err = capsys.readouterr().err
    # without pycortex the error names the extra; with it, the missing database folder
    assert "sk-braintune[maps]" in err or "derivative/pycortex-db/UTS03" in err


# --- against pycortex, on a small synthetic subject -------------------------------------------

def _grid(n):
    u, v = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n), indexing="ij")
    index = np.arange(n * n).reshape(n, n)
    a, b, c, d = index[:-1, :-1], index[1:, :-1], index[1:, 1:], index[:-1, 1:]
    faces = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3),
                            np.stack([a, c, d], -1).reshape(-1, 3)])
    return u.ravel(), v.ravel(), faces.astype(np.int32)


def _write_gifti(path, coords, faces):
    import nibabel as nib

    image = nib.gifti.GiftiImage(darrays=[
        nib.gifti.GiftiDataArray(coords.astype(np.float32), intent="NIFTI_INTENT_POINTSET"),
        nib.gifti.GiftiDataArray(faces.astype(np.int32), intent="NIFTI_INTENT_TRIANGLE")])
    nib.save(image, str(path))


def _synthetic_subject(store, subject, xfm):
    """Two curved cortical sheets in a 16^3 volume of 2-mm voxels, with flat patches, a
    coord transform, a thick mask and spherical registrations."""
    import nibabel as nib

    u, v, faces = _grid(14)
    folder = store / subject
    (folder / "surfaces").mkdir(parents=True)
    (folder / "transforms" / xfm).mkdir(parents=True)
    (folder / "anatomicals").mkdir()
    (folder / "surf").mkdir()
    for hemi, x0, side in (("lh", 6.0, -1.0), ("rh", 20.0, 1.0)):
        wm = np.stack([x0 + 2.0 * np.sin(np.pi * u), 3 + 26 * u, 3 + 26 * v], axis=1)
        pia = wm + [side * 3.0, 0.0, 0.0]
        flat = np.stack([side * (10 + 100 * u), 100 * v, np.zeros_like(u)], axis=1)
        for name, coords in (("wm", wm), ("pia", pia), ("inflated", wm), ("flat", flat)):
            _write_gifti(folder / "surfaces" / f"{name}_{hemi}.gii", coords, faces)
        lon, lat = (u - 0.5) * 2.5 + (0 if hemi == "lh" else 0.1), (v - 0.5) * 2.5
        sphere = 100 * np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon),
                                 np.sin(lat)], axis=1)
        nib.freesurfer.write_geometry(str(folder / "surf" / f"{hemi}.sphere.reg"), sphere,
                                      faces)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    reference = nib.Nifti1Image(np.random.default_rng(0).random((16, 16, 16)), affine)
    nib.save(reference, str(folder / "transforms" / xfm / "reference.nii.gz"))
    nib.save(reference, str(folder / "anatomicals" / "raw.nii.gz"))
    coord = np.linalg.inv(affine)
    (folder / "transforms" / xfm / "matrices.xfm").write_text(json.dumps(
        {"coord": coord.tolist(), "magnet": np.eye(4).tolist()}))
    mask = np.zeros((16, 16, 16), dtype=np.uint8)  # nibabel's (x, y, z)
    mask[:, 1:15, 2:15] = 1
    mask[5, 5:9, 5:9] = 0
    nib.save(nib.Nifti1Image(mask, affine), str(folder / "transforms" / xfm / "mask_thick.nii.gz"))
    return mask


def test_mapper_matches_pycortex(tmp_path):
    cortex = pytest.importorskip("cortex", reason="pycortex not installed (pip install "
                                 "'sk-braintune[maps]'; it builds from source)")
    from cortex.quickflat import utils as quickflat

    from sk_braintune.commands.cli import main

    root = tmp_path / "ds003020"
    store, subject, xfm = root / "derivative" / "pycortex-db", "SYNTH01", "SYNTH01_auto"
    mask = _synthetic_subject(store, subject, xfm)
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    output = tmp_path / "maps" / "SYNTH01.npz"
    assert main(["mappers", "--root", str(root), "--subject", subject, "--height", "60",
                 "--sphere-reg", str(store / subject / "surf"), "--output", str(output)]) == 0
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before  # nothing written
    mapper = load_mapper(output)
    pycortex_mask = mask.T != 0  # pycortex's (z, y, x) arrays; columns in their C order
    assert mapper.n_voxels == int(pycortex_mask.sum())
    assert mapper.xfm == xfm and mapper.mask_name == "thick"
    assert mapper.flatmap_curvature is not None

    rng = np.random.default_rng(1)
    values = rng.standard_normal(mapper.n_voxels)
    values[rng.random(values.size) < 0.05] = np.nan
    volume = np.full(pycortex_mask.shape, np.nan)
    volume[pycortex_mask] = values
    original = cortex.db.filestore
    cortex.db.filestore = str(store)
    cortex.db.reload_subjects()
    try:
        expected, extents = quickflat.make_flatmap_image(cortex.Volume(volume, subject, xfm),
                                                         height=60)
        # fsaverage5 side: pycortex's line-nearest vertex values, then the nearest registered
        # vertex of each fsaverage5 vertex (brute force on the unit sphere)
        full = np.where(np.isfinite(volume), volume, 0.0)
        vertex_mapper = cortex.get_mapper(subject, xfm, "line_nearest")
        per_hemi = [np.asarray(m @ full.ravel()).ravel() for m in vertex_mapper.masks]
        # voxels outside the mask carry no data: a vertex averages over its mask voxels only
        in_mask = [np.asarray(m @ pycortex_mask.ravel().astype(float)).ravel()
                   for m in vertex_mapper.masks]
    finally:
        cortex.db.filestore = original
        cortex.db.reload_subjects()
    image = mapper.flatmap_image(values)
    assert image.shape == expected.shape
    assert np.isfinite(expected).sum() > 100
    np.testing.assert_allclose(image, expected, rtol=1e-6, atol=1e-9, equal_nan=True)
    np.testing.assert_allclose(mapper.extents, extents)

    import nibabel as nib

    from sk_braintune.plotting import fsaverage5_surfaces

    complete = np.where(np.isfinite(values), values, 0.0)  # no NaN: plain weighted sums
    weight = mapper.voxel_to_fsaverage5 @ np.ones(mapper.n_voxels)
    got = mapper.to_fsaverage5(complete)
    sphere = fsaverage5_surfaces()["sphere"]
    for k, (hemi, fs_hemi) in enumerate((("lh", "left"), ("rh", "right"))):
        reg, _ = nib.freesurfer.read_geometry(str(store / subject / "surf" / f"{hemi}.sphere.reg"))
        reg = reg / np.linalg.norm(reg, axis=1, keepdims=True)
        target = sphere[fs_hemi][0] / 100.0
        target = target / np.linalg.norm(target, axis=1, keepdims=True)
        similarity = target @ reg.T
        nearest = np.argmax(similarity, axis=1)
        top_two = np.sort(similarity, axis=1)[:, -2:]
        unique = top_two[:, 1] - top_two[:, 0] > 1e-9  # ties may break either way
        sums = in_mask[k][nearest]
        want = np.divide(per_hemi[k][nearest], sums, out=np.full(nearest.size, np.nan),
                         where=sums > 0)
        half = got[k * 10242:(k + 1) * 10242]
        seen = (weight[k * 10242:(k + 1) * 10242] > 0) & unique
        assert seen.sum() > 1000
        np.testing.assert_allclose(half[seen], want[seen], rtol=1e-6)

    fig = plot_brain_map(values, mapper, views=("flat", "lateral"), figsize=(4, 4))
    assert len(fig.axes) >= 3
