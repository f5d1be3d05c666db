"""fsaverage surfaces available offline, and the nested-mesh reduction to fsaverage5.

nilearn's wheel bundles the fsaverage5 meshes (pial, white, inflated, sphere, flat) and its
sulcal depth and curvature; every other fsaverage resolution is a download. FreeSurfer's
fsaverage meshes are nested icosahedra: the first ``10 * 4**k + 2`` vertices of a hemisphere of
any finer fsaverage are the vertices of ``fsaverage<k>`` (same order, same places). So data on
fsaverage6 (40,962 vertices per hemisphere) or fsaverage / fsaverage7 (163,842) is drawn on the
bundled fsaverage5 mesh by keeping each hemisphere's first 10,242 values: no interpolation,
nothing downloaded, a quarter (fsaverage6) or a sixteenth (fsaverage) of the vertices shown.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["SURFACE_SPACES", "FSAVERAGE5_VERTICES", "fsaverage5_surfaces", "to_fsaverage5"]

#: Vertices per hemisphere of each fsaverage resolution (``10 * 4**k + 2``).
SURFACE_SPACES = {"fsaverage3": 642, "fsaverage4": 2562, "fsaverage5": 10242,
                  "fsaverage6": 40962, "fsaverage7": 163842, "fsaverage": 163842}
FSAVERAGE5_VERTICES = SURFACE_SPACES["fsaverage5"]
_MESHES = ("pial", "inflated", "flat", "sphere")


_FILES = {"pial": "pial", "inflated": "infl", "flat": "flat", "sphere": "sphere"}


def _bundled_folder():
    """nilearn's bundled fsaverage5 folder, found without importing nilearn.datasets (whose
    import takes seconds); None if nilearn lays its files out differently."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "fsaverage5"
    names = [f"{stem}_{hemi}.gii.gz" for stem in (*_FILES.values(), "sulc")
             for hemi in ("left", "right")]
    return folder if all((folder / name).is_file() for name in names) else None


@functools.lru_cache(maxsize=1)
def fsaverage5_surfaces():
    """The fsaverage5 meshes and sulcal depth bundled with nilearn (no download).

    Returns
    -------
    surfaces : dict
        ``surfaces[mesh][hemi]`` is a ``(coordinates, faces)`` pair of arrays of shapes
        ``(10242, 3)`` and ``(n_faces, 3)`` for ``mesh`` in ``"pial"``, ``"inflated"``,
        ``"flat"`` (the flat patch: its faces leave out the medial wall's vertices, its z is 0)
        and ``"sphere"``, and ``hemi`` in ``"left"``, ``"right"``; ``surfaces["sulcal"][hemi]``
        is the sulcal depth, shape ``(10242,)``.
    """
    folder = _bundled_folder()
    if folder is None:  # through nilearn's loaders (same files, slower import)
        from nilearn import datasets

        meshes = datasets.load_fsaverage("fsaverage5")
        out = {name: {hemi: (np.asarray(part.coordinates, dtype=np.float64),
                             np.asarray(part.faces, dtype=np.int64))
                      for hemi, part in meshes[name].parts.items()} for name in _FILES}
        sulcal = datasets.load_fsaverage_data(mesh="fsaverage5", data_type="sulcal")
        out["sulcal"] = {hemi: np.asarray(v, dtype=np.float64)
                         for hemi, v in sulcal.data.parts.items()}
        return out
    import nibabel as nib

    def arrays(name):
        return [np.asarray(d.data) for d in nib.load(str(folder / name)).darrays]

    out = {}
    for name, stem in _FILES.items():
        out[name] = {}
        for hemi in ("left", "right"):
            coords, faces = arrays(f"{stem}_{hemi}.gii.gz")
            out[name][hemi] = (coords.astype(np.float64), faces.astype(np.int64))
    out["sulcal"] = {hemi: arrays(f"sulc_{hemi}.gii.gz")[0].astype(np.float64)
                     for hemi in ("left", "right")}
    return out


def _unknown_space(space):
    return ValueError(f"unknown surface space {space!r}; give one of {sorted(SURFACE_SPACES)}, "
                      "a volume mask image or fitted masker, or a Mapper (ds003020 flatmaps)")


def to_fsaverage5(values, space, column_index=None):
    """Per-vertex values of an fsaverage space, on the bundled fsaverage5 mesh.

    Parameters
    ----------
    values : array-like of shape (n_columns,)
        One value per data column.
    space : {"fsaverage5", "fsaverage6", "fsaverage7", "fsaverage"}
        The space of the values. Finer meshes are reduced to fsaverage5 by keeping each
        hemisphere's first 10,242 vertices (the meshes are nested; see the module docstring).
    column_index : array-like of int of shape (n_columns,), optional
        Vertex of each column: an index into the left hemisphere's vertices followed by the
        right's (``0 .. 2 * n_vertices - 1``). Without it ``values`` must hold every vertex of
        both hemispheres, left first.

    Returns
    -------
    vertex_values : ndarray of shape (20484,)
        fsaverage5 values, left hemisphere first; NaN where no column falls.

    Raises
    ------
    ValueError
        For an unknown or coarser space, or values that do not match the space's vertices.
    """
    if space not in SURFACE_SPACES:
        raise _unknown_space(space)
    n_hemi = SURFACE_SPACES[space]
    if n_hemi < FSAVERAGE5_VERTICES:
        raise ValueError(f"{space} ({n_hemi} vertices per hemisphere) is coarser than the "
                         "bundled fsaverage5 mesh; resample the data to fsaverage5 first")
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"values must be 1-D (one value per column), got shape {values.shape}")
    full = np.full(2 * n_hemi, np.nan)
    if column_index is None:
        if values.size != 2 * n_hemi:
            raise ValueError(f"{space} values need {2 * n_hemi} entries (left hemisphere's "
                             f"{n_hemi} vertices, then the right's), got {values.size}; pass "
                             "column_index for data on a subset of vertices")
        full[:] = values
    else:
        column_index = np.asarray(column_index)
        if column_index.shape != values.shape or not np.issubdtype(column_index.dtype,
                                                                     np.integer):
            raise ValueError(f"column_index must be integers, one per value ({values.shape}), "
                             f"got {column_index.dtype} {column_index.shape}")
        if column_index.size and (column_index.min() < 0 or column_index.max() >= 2 * n_hemi):
            raise ValueError(f"column_index must lie in [0, {2 * n_hemi}) for {space}, got "
                             f"[{column_index.min()}, {column_index.max()}]")
        full[column_index] = values
    keep = np.r_[np.arange(FSAVERAGE5_VERTICES), n_hemi + np.arange(FSAVERAGE5_VERTICES)]
    return full[keep]
