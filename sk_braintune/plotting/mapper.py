"""ds003020 flatmaps without pycortex at plot time: a precomputed voxel-to-pixel mapper.

The Huth lab draws each ds003020 subject's scores on that subject's pycortex flatmap; the dataset
ships the pycortex database (``derivative/pycortex-db/UTS0X/``). pycortex is a source-only build
(a C compiler; Inkscape for ROI labels), so, as voxelwise_tutorials does, the mapping is built
once with pycortex and saved as sparse matrices; drawing then needs numpy, SciPy and matplotlib
only. :func:`build_mapper` (needs ``pip install sk-braintune[maps]``, i.e. pycortex) writes what
:func:`load_mapper` reads and ``plot_brain_map(values, space=mapper)`` draws.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .surfaces import FSAVERAGE5_VERTICES, fsaverage5_surfaces

__all__ = ["Mapper", "build_mapper", "load_mapper"]

logger = logging.getLogger(__name__)
_FORMAT = 1


@dataclass
class Mapper:
    """Voxel-to-flatmap (and optionally voxel-to-fsaverage5) mapping of one subject.

    Parameters
    ----------
    voxel_to_flatmap : scipy.sparse.csr_matrix of shape (n_pixels, n_voxels)
        Weight of each data column (voxel) in each flatmap pixel inside the cortex (the
        ``True`` pixels of ``flatmap_mask`` in C order); rows sum to 1 where a pixel sees any
        voxel (pycortex's average across cortical depth).
    flatmap_mask : ndarray of bool of shape (width, height)
        Pixels inside the flattened cortex, in pycortex's layout (the picture is its transpose
        flipped upside down).
    extents : ndarray of shape (4,)
        Flatmap extents (left, right, bottom, top) in flat-surface units.
    subject : str
        Subject name in the pycortex database.
    voxel_to_fsaverage5 : scipy.sparse.csr_matrix of shape (20484, n_voxels), optional
        Per-vertex weights onto fsaverage5 (left hemisphere first), when a spherical
        registration was given to :func:`build_mapper`.
    flatmap_curvature : ndarray of shape (height, width), optional
        Curvature in the picture's orientation, drawn in grey under the data.
    xfm, mask_name : str
        pycortex transform and voxel mask the columns follow.
    """

    voxel_to_flatmap: object
    flatmap_mask: np.ndarray
    extents: np.ndarray
    subject: str = ""
    voxel_to_fsaverage5: object = None
    flatmap_curvature: np.ndarray = None
    xfm: str = ""
    mask_name: str = ""

    @property
    def n_voxels(self):
        """Number of data columns the mapper expects."""
        return self.voxel_to_flatmap.shape[1]

    def _check(self, values):
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 1 or values.size != self.n_voxels:
            raise ValueError(f"the mapper of {self.subject or 'this subject'} expects "
                             f"{self.n_voxels} values (the {self.mask_name or 'mask'} voxels of "
                             f"transform {self.xfm or '?'}), got shape {values.shape}")
        return values

    def flatmap_image(self, values):
        """The flatmap picture of per-voxel values.

        Each pixel is the weighted mean of the finite values of the voxels it sees (NaN
        voxels are left out, as pycortex's ``nanmean``); pixels outside the cortex or seeing
        no finite value are NaN.

        Parameters
        ----------
        values : array-like of shape (n_voxels,)

        Returns
        -------
        image : ndarray of shape (height, width)
            Row 0 is the top of the picture (draw with ``imshow(origin="upper")``).
        """
        values = self._check(values)
        finite = np.isfinite(values)
        total = self.voxel_to_flatmap @ np.where(finite, values, 0.0)
        weight = self.voxel_to_flatmap @ finite.astype(np.float64)
        pixels = np.full(total.shape, np.nan)
        np.divide(total, weight, out=pixels, where=weight > 0)
        image = np.full(self.flatmap_mask.shape, np.nan)
        image[self.flatmap_mask] = pixels
        return np.ascontiguousarray(image.T[::-1])

    def to_fsaverage5(self, values):
        """Per-voxel values on fsaverage5 (weighted mean of the finite voxels of each vertex).

        Parameters
        ----------
        values : array-like of shape (n_voxels,)

        Returns
        -------
        vertex_values : ndarray of shape (20484,)

        Raises
        ------
        ValueError
            When the mapper was built without a spherical registration.
        """
        if self.voxel_to_fsaverage5 is None:
            raise ValueError(f"this mapper of {self.subject!r} has no voxel-to-fsaverage5 "
                             "matrix: rebuild it with build_mapper(..., sphere_reg=<FreeSurfer "
                             "surf folder with lh.sphere.reg and rh.sphere.reg>) or draw the "
                             "flat view only (views=('flat',))")
        values = self._check(values)
        finite = np.isfinite(values)
        total = self.voxel_to_fsaverage5 @ np.where(finite, values, 0.0)
        weight = self.voxel_to_fsaverage5 @ finite.astype(np.float64)
        out = np.full(total.shape, np.nan)
        np.divide(total, weight, out=out, where=weight > 0)
        return out

    def save(self, path):
        """Write the mapper to one ``.npz`` file (read it back with :func:`load_mapper`).

        Parameters
        ----------
        path : str or pathlib.Path

        Returns
        -------
        path : pathlib.Path
        """
        arrays = {"format": np.array(_FORMAT), "subject": np.array(self.subject),
                  "xfm": np.array(self.xfm), "mask_name": np.array(self.mask_name),
                  "flatmap_mask": np.asarray(self.flatmap_mask, dtype=bool),
                  "extents": np.asarray(self.extents, dtype=np.float64)}
        for name in ("voxel_to_flatmap", "voxel_to_fsaverage5"):
            matrix = getattr(self, name)
            if matrix is not None:
                matrix = matrix.tocsr()
                arrays.update({f"{name}_data": matrix.data, f"{name}_indices": matrix.indices,
                               f"{name}_indptr": matrix.indptr,
                               f"{name}_shape": np.array(matrix.shape)})
        if self.flatmap_curvature is not None:
            arrays["flatmap_curvature"] = np.asarray(self.flatmap_curvature, dtype=np.float32)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:  # np.savez would append .npz to other suffixes
            np.savez_compressed(f, **arrays)
        return path


def load_mapper(path):
    """Read a mapper written by :func:`build_mapper` or :meth:`Mapper.save`.

    Parameters
    ----------
    path : str or pathlib.Path

    Returns
    -------
    mapper : Mapper
    """
    from scipy import sparse

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no mapper file at {path}; build one with `sk-braintune "
                                "mappers --root <ds003020> --subject UTS0X --output "
                                f"{path}` (needs pip install 'sk-braintune[maps]')")
    with np.load(path) as npz:
        if "voxel_to_flatmap_data" not in npz or "flatmap_mask" not in npz:
            raise ValueError(f"{path} is not a mapper file (keys {sorted(npz.files)})")

        def matrix(name):
            if f"{name}_data" not in npz:
                return None
            return sparse.csr_matrix((npz[f"{name}_data"], npz[f"{name}_indices"],
                                      npz[f"{name}_indptr"]),
                                     shape=tuple(npz[f"{name}_shape"]))

        mapper = Mapper(voxel_to_flatmap=matrix("voxel_to_flatmap"),
                        flatmap_mask=npz["flatmap_mask"], extents=npz["extents"],
                        subject=str(npz["subject"]), voxel_to_fsaverage5=matrix(
                            "voxel_to_fsaverage5"),
                        flatmap_curvature=(npz["flatmap_curvature"]
                                           if "flatmap_curvature" in npz else None),
                        xfm=str(npz["xfm"]), mask_name=str(npz["mask_name"]))
    if mapper.voxel_to_flatmap.shape[0] != int(mapper.flatmap_mask.sum()):
        raise ValueError(f"{path}: voxel_to_flatmap has {mapper.voxel_to_flatmap.shape[0]} rows "
                         f"but the flatmap mask {int(mapper.flatmap_mask.sum())} pixels")
    return mapper


@contextlib.contextmanager
def _pycortex_store(pycortex_db, subject):
    """pycortex's database pointed at a shadow copy of ``subject`` (folders made, files linked):
    pycortex writes caches, masks and surface info into the subject's folder, and the dataset's
    folder stays untouched."""
    import cortex
    from cortex import database

    source = Path(pycortex_db) / subject
    if not (source / "surfaces").is_dir():
        raise FileNotFoundError(
            f"no pycortex subject {subject!r} under {pycortex_db} (expected "
            f"{source}/surfaces/); ds003020 ships it as derivative/pycortex-db/{subject}/ "
            "(datalad get or openneuro download of that folder)")
    db = database.db
    previous = db.filestore
    with tempfile.TemporaryDirectory(prefix="pycortex-") as store:
        shadow = Path(store) / subject
        for folder, dirs, files in os.walk(source):
            relative = Path(folder).relative_to(source)
            if relative.parts[:1] == ("cache",):
                continue
            (shadow / relative).mkdir(parents=True, exist_ok=True)
            for name in files:
                os.symlink(Path(folder) / name, shadow / relative / name)
        db.filestore = store
        db.reload_subjects()
        try:
            yield cortex
        finally:
            db.filestore = previous
            db.reload_subjects()


def _fsaverage5_matrix(cortex, subject, xfm, columns, sphere_reg):
    """Sparse (20484, n_columns): fsaverage5 vertex -> nearest registered subject vertex ->
    that vertex's voxels (pycortex's line-nearest vertex mapper)."""
    import nibabel as nib
    from scipy import sparse
    from scipy.spatial import cKDTree

    vertex_mapper = cortex.get_mapper(subject, xfm, "line_nearest")
    sphere = fsaverage5_surfaces()["sphere"]
    blocks = []
    for hemi, fs_hemi, part in (("lh", "left", vertex_mapper.masks[0]),
                                ("rh", "right", vertex_mapper.masks[1])):
        path = Path(sphere_reg) / f"{hemi}.sphere.reg"
        if not path.is_file():
            raise FileNotFoundError(f"no {path}: give the subject's FreeSurfer surf folder "
                                    "(with lh.sphere.reg and rh.sphere.reg) as sphere_reg")
        coords, _ = nib.freesurfer.read_geometry(str(path))
        part = part.tocsr()
        if coords.shape[0] != part.shape[0]:
            raise ValueError(f"{path} has {coords.shape[0]} vertices but the pycortex "
                             f"surfaces of {subject} {part.shape[0]}: not the same subject")
        target = sphere[fs_hemi][0]
        unit = coords / np.linalg.norm(coords, axis=1, keepdims=True)
        _, nearest = cKDTree(unit).query(target / np.linalg.norm(target, axis=1, keepdims=True))
        blocks.append(part[nearest][:, columns])
    matrix = sparse.vstack(blocks).tocsr()
    assert matrix.shape[0] == 2 * FSAVERAGE5_VERTICES
    return matrix


def build_mapper(pycortex_db, subject, *, xfm=None, mask="thick", height=1024,
                 sphere_reg=None):
    """Build a subject's flatmap mapper with pycortex (once; plotting then needs no pycortex).

    Parameters
    ----------
    pycortex_db : str or pathlib.Path
        A pycortex database folder holding ``<subject>/`` (ds003020:
        ``<root>/derivative/pycortex-db``). Nothing is written there.
    subject : str
        e.g. ``"UTS03"``.
    xfm : str, optional
        pycortex transform; ``"<subject>_auto"`` by default (ds003020's).
    mask : str, default="thick"
        pycortex voxel mask whose voxels are the data's columns, in pycortex's C order of its
        (z, y, x) arrays: the column order of ds003020's ``.hf5`` responses.
    height : int, default=1024
        Flatmap height in pixels.
    sphere_reg : str or pathlib.Path, optional
        FreeSurfer ``surf`` folder of the subject with ``lh.sphere.reg`` and ``rh.sphere.reg``:
        adds a voxel-to-fsaverage5 matrix (each fsaverage5 vertex takes the voxels of the
        nearest registered subject vertex; an approximation of FreeSurfer's ``mri_surf2surf``,
        which needs a FreeSurfer install). ds003020's pycortex database does not hold the
        registration.

    Returns
    -------
    mapper : Mapper
        Save it with :meth:`Mapper.save`.

    Raises
    ------
    ImportError
        Without pycortex (``pip install 'sk-braintune[maps]'``; it builds from source).
    """
    from .._utils import require

    require("cortex", "building flatmap mappers (pycortex compiles from source)")
    xfm = f"{subject}_auto" if xfm is None else xfm
    chatter = io.StringIO()  # pycortex prints its progress: log it instead
    with _pycortex_store(pycortex_db, subject) as cortex, contextlib.redirect_stdout(chatter):
        from cortex.quickflat import utils as quickflat

        try:
            voxel_mask = cortex.db.get_mask(subject, xfm, mask)
        except Exception as exc:  # pycortex raises several kinds for a missing mask
            raise FileNotFoundError(f"pycortex could not read mask {mask!r} of transform "
                                    f"{xfm!r} for {subject} in {pycortex_db}: {exc}") from exc
        columns = np.flatnonzero(np.asarray(voxel_mask).ravel())
        pixmap = quickflat.get_flatcache(subject, xfm, height=height)
        flat_mask, extents = quickflat.get_flatmask(subject, height=height)
        voxel_to_flatmap = pixmap.tocsc()[:, columns].tocsr()
        voxel_to_flatmap.eliminate_zeros()
        curvature = None
        try:
            curv = cortex.db.get_surfinfo(subject, "curvature")
            curvature, _ = quickflat.make_flatmap_image(curv, height=height)
            curvature = np.asarray(curvature, dtype=np.float32)
        except Exception as exc:  # the background is optional
            logger.info("build_mapper: no flatmap curvature for %s (%s)", subject, exc)
        to_fsaverage5 = None
        if sphere_reg is not None:
            to_fsaverage5 = _fsaverage5_matrix(cortex, subject, xfm, columns, sphere_reg)
    for line in chatter.getvalue().splitlines():
        logger.info("pycortex: %s", line)
    return Mapper(voxel_to_flatmap=voxel_to_flatmap, flatmap_mask=np.asarray(flat_mask, bool),
                  extents=np.asarray(extents, dtype=np.float64), subject=subject,
                  voxel_to_fsaverage5=to_fsaverage5, flatmap_curvature=curvature, xfm=xfm,
                  mask_name=mask)
