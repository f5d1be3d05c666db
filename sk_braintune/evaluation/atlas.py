"""Voxel labels from an atlas in the data's space: volume label images, surface annotations.

ROI summaries (:mod:`sk_braintune.evaluation.roi`) need one label per data column. Atlases come
as a volume label image on (or resampled to) the data's grid, as FreeSurfer ``.annot`` or GIfTI
``.label.gii`` files per hemisphere on the data's fsaverage mesh, or as a plain vector. Where a
column has no atlas label (label 0, ``???``, ``Unknown``, the medial wall, or outside the atlas
image), the caller chooses what happens: ``outside="exclude"`` gives it the empty label (left
out of every ROI), ``outside="keep"`` labels it ``"outside"`` (its own ROI), ``outside="error"``
refuses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["atlas_labels", "read_annotation", "read_label_image"]

_UNLABELLED = {"", "???", "unknown", "medial_wall", "medial wall", "0"}
_OUTSIDE_CHOICES = ("exclude", "keep", "error")


def _name(label):
    return label.decode() if isinstance(label, bytes) else str(label)


def read_annotation(path):
    """Per-vertex label names of one hemisphere's annotation.

    Parameters
    ----------
    path : str or pathlib.Path
        A FreeSurfer annotation (``lh.HCP-MMP1.annot``; read with
        ``nibabel.freesurfer.read_annot``) or a GIfTI label file (``*.label.gii``).

    Returns
    -------
    names : ndarray of str of shape (n_vertices,)
        ``""`` for vertices without a label (annotation value -1, or a name such as ``???``,
        ``Unknown`` or ``Medial_Wall``).
    """
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no annotation file at {path}")
    if path.name.endswith(".gii") or path.name.endswith(".gii.gz"):
        image = nib.load(str(path))
        keys = np.asarray(image.darrays[0].data).astype(np.int64).ravel()
        table = {int(k): _name(v) for k, v in image.labeltable.get_labels_as_dict().items()}
        names = np.array([table.get(k, "") for k in keys], dtype=object)
    else:
        keys, _, table = nib.freesurfer.read_annot(str(path))
        table = [_name(v) for v in table]
        names = np.array([table[k] if 0 <= k < len(table) else "" for k in keys], dtype=object)
    names = np.array(["" if n.strip().lower() in _UNLABELLED else n for n in names], dtype=str)
    return names


def read_label_image(img, lut=None):
    """Integer label image and its names.

    Parameters
    ----------
    img : str, pathlib.Path or nibabel image
        3-D integer label image (0 = no label).
    lut : dict of int to str, str or pathlib.Path, optional
        Label names: a dict, or a text file with one ``index name`` per line (a FreeSurfer
        colour lookup table or a two-column TSV; further columns are ignored). Without it the
        names are the integers as strings.

    Returns
    -------
    img : nibabel image
    names : dict of int to str
    """
    import nibabel as nib

    if isinstance(img, (str, Path)):
        if not Path(img).is_file():
            raise FileNotFoundError(f"no label image at {img}")
        img = nib.load(str(img))
    data = np.asarray(img.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3 or not np.allclose(data, np.round(data)):
        raise ValueError(f"a label image must be 3-D with integer labels, got shape {data.shape}")
    if lut is None:
        names = {}
    elif isinstance(lut, dict):
        names = {int(k): str(v) for k, v in lut.items()}
    else:
        names = {}
        for line in Path(lut).read_text().splitlines():
            parts = line.replace("\t", " ").split()
            if len(parts) >= 2 and parts[0].lstrip("-").isdigit():
                names[int(parts[0])] = parts[1]
    return nib.Nifti1Image(np.round(data).astype(np.int32), img.affine), names


def atlas_labels(atlas, *, outside, column_index=None, mask_img=None, lut=None,
                 hemisphere_prefix=None):
    """One atlas label per data column.

    Parameters
    ----------
    atlas : array-like, image, path, or (left, right) pair of annotation paths
        - a vector of labels, one per column (or per vertex/voxel, with ``column_index``);
          ``""``, ``0``, ``???``, ``Unknown`` and ``Medial_Wall`` count as no label;
        - a 3-D label image (nibabel image or ``.nii``/``.nii.gz`` path) for volume data; it is
          resampled (nearest neighbour) to ``mask_img``'s grid when the grids differ;
        - a ``(left, right)`` pair of FreeSurfer ``.annot`` or GIfTI ``.label.gii`` files on
          the data's fsaverage mesh, for surface data.
    outside : {"exclude", "keep", "error"}
        Columns without an atlas label: ``"exclude"``: label ``""`` (left out of every ROI
        summary); ``"keep"``: label ``"outside"``; ``"error"``: raise, with their count.
    column_index : array-like of int of shape (n_columns,), optional
        Where each column lies (vertex index, left hemisphere first; or flat C-order voxel index
        in ``mask_img``'s grid). Volumes default to the mask's voxels in C order; surfaces
        and vectors to every entry.
    mask_img : nibabel image, optional
        The data's volume grid (required with a label image).
    lut : dict, str or pathlib.Path, optional
        Names of a label image's integers (see :func:`read_label_image`).
    hemisphere_prefix : bool, optional
        Prefix annotation names with ``L_``/``R_`` (HCP-MMP1 style) unless they already carry
        one. By default, when the two hemispheres share names.

    Returns
    -------
    labels : ndarray of str of shape (n_columns,)
        For :func:`sk_braintune.evaluation.roi_summary` (e.g. with
        ``rois="brain-tuning"`` for an HCP-MMP1 atlas).

    Raises
    ------
    ValueError
        For an unknown ``outside``, mismatched sizes, or unlabelled columns with
        ``outside="error"``.
    """
    if outside not in _OUTSIDE_CHOICES:
        raise ValueError(f"outside must be one of {_OUTSIDE_CHOICES}, got {outside!r}")
    if isinstance(atlas, (tuple, list)) and len(atlas) == 2 and all(
            isinstance(a, (str, Path)) for a in atlas):
        labels = _surface_labels(atlas, hemisphere_prefix)
        labels = _pick(labels, column_index, "annotation vertices")
    elif isinstance(atlas, (str, Path)) or hasattr(atlas, "affine"):
        labels = _volume_labels(atlas, column_index, mask_img, lut)
    else:
        labels = np.asarray(atlas)
        if labels.ndim != 1:
            raise ValueError(f"a label vector must be 1-D, got shape {labels.shape}")
        labels = _pick(np.array([_name(x) for x in labels], dtype=str), column_index,
                       "label vector entries")
        labels = np.array(["" if x.strip().lower() in _UNLABELLED else x for x in labels],
                          dtype=str)
    missing = labels == ""
    if missing.any():
        if outside == "error":
            raise ValueError(f"{int(missing.sum())} of {labels.size} columns have no atlas "
                             "label; choose outside='exclude' or outside='keep'")
        if outside == "keep":
            labels = np.where(missing, "outside", labels)
    return labels


def _pick(labels, column_index, what):
    if column_index is None:
        return labels
    column_index = np.asarray(column_index)
    if column_index.size and (column_index.min() < 0 or column_index.max() >= labels.size):
        raise ValueError(f"column_index must lie in [0, {labels.size}) ({labels.size} "
                         f"{what}), got [{column_index.min()}, {column_index.max()}]")
    return labels[column_index]


def _surface_labels(paths, hemisphere_prefix):
    left, right = (read_annotation(p) for p in paths)
    if hemisphere_prefix is None:
        hemisphere_prefix = bool((set(left) & set(right)) - {""})
    if hemisphere_prefix:
        def prefixed(names, prefix):
            return np.array([n if not n or n[:2] in ("L_", "R_") else f"{prefix}_{n}"
                             for n in names], dtype=str)
        left, right = prefixed(left, "L"), prefixed(right, "R")
    return np.concatenate([left, right])


def _volume_labels(atlas, column_index, mask_img, lut):
    img, names = read_label_image(atlas, lut)
    if mask_img is None:
        raise ValueError("a label image needs mask_img, the data's volume grid")
    mask = np.asarray(mask_img.dataobj) != 0
    if mask.ndim == 4 and mask.shape[3] == 1:
        mask = mask[..., 0]
    if img.shape[:3] != mask.shape or not np.allclose(img.affine, mask_img.affine):
        from nilearn.image import resample_to_img

        img = resample_to_img(img, mask_img, interpolation="nearest", force_resample=True,
                              copy_header=True)
    data = np.asarray(img.dataobj).astype(np.int64).reshape(-1)
    index = np.flatnonzero(mask.ravel()) if column_index is None else np.asarray(column_index)
    if index.size and (index.min() < 0 or index.max() >= data.size):
        raise ValueError(f"column_index must lie in [0, {data.size}) for the grid "
                         f"{mask.shape}")
    values = data[index]
    return np.array(["" if v == 0 else names.get(int(v), str(int(v))) for v in values],
                    dtype=str)
