"""Per-column values on the brain: fsaverage surfaces, volumes and ds003020 flatmaps, offline.

- Surface spaces (``"fsaverage5"``, ``"fsaverage6"``, ``"fsaverage7"``/``"fsaverage"``): drawn
  on the fsaverage5 mesh that nilearn bundles; finer data keeps each hemisphere's first 10,242
  vertices (nested meshes, :func:`sk_braintune.plotting.to_fsaverage5`). The full-resolution
  fsaverage6/7 meshes are downloads and are never fetched.
- Volume spaces: a mask image (nibabel) or a fitted nilearn masker; nilearn's slices or glass
  brain over its bundled MNI152 template.
- ds003020 subjects: a :class:`~sk_braintune.plotting.Mapper` (flatmap, no pycortex needed).
"""

from __future__ import annotations

import numpy as np

from ._render import draw_mesh
from .mapper import Mapper
from .surfaces import FSAVERAGE5_VERTICES, SURFACE_SPACES, fsaverage5_surfaces, to_fsaverage5

__all__ = ["plot_brain_map", "view_brain_map", "brain_map_values", "volume_image"]

_SURFACE_VIEWS = ("lateral", "medial", "flat")
_VOLUME_VIEWS = ("slices", "glass")


def brain_map_values(values, *, threshold=None, q=None, alpha=0.05, symmetric=None, vmax=None,
                     percentile=100.0):
    """The values a map shows and its colour limits.

    Parameters
    ----------
    values : array-like of shape (n_columns,)
    threshold : float, optional
        Hide values with ``|value| < threshold``.
    q : array-like of shape (n_columns,), optional
        q-values (e.g. BH-FDR) of the values: hide columns with ``q > alpha`` or NaN q.
    alpha : float, default=0.05
    symmetric : bool, optional
        Colour limits ``[-vmax, vmax]`` (differences). By default symmetric when any shown
        value is negative, else ``[0, vmax]``.
    vmax : float, optional
        Upper colour limit; the largest shown ``|value|`` by default (1 when nothing shows).
    percentile : float, default=100
        Without ``vmax``, the limit is this percentile of the shown ``|value|``: below 100, a
        few extreme columns saturate instead of paling every other one.

    Returns
    -------
    shown : ndarray of shape (n_columns,)
        The values, NaN where hidden.
    vmin, vmax : float
    symmetric : bool
    """
    shown = np.array(values, dtype=np.float64)
    if shown.ndim != 1:
        raise ValueError(f"values must be 1-D (one per column), got shape {shown.shape}")
    if q is not None:
        q = np.asarray(q, dtype=np.float64)
        if q.shape != shown.shape:
            raise ValueError(f"q must have one q-value per value ({shown.shape}), got {q.shape}")
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must lie in (0, 1], got {alpha!r}")
        shown[~(q <= alpha)] = np.nan
    if threshold is not None:
        shown[np.abs(shown) < threshold] = np.nan
    finite = shown[np.isfinite(shown)]
    if symmetric is None:
        symmetric = bool(finite.size and finite.min() < 0)
    if vmax is None:
        vmax = float(np.percentile(np.abs(finite), percentile)) if finite.size else 1.0
        vmax = vmax if vmax > 0 else 1.0
    vmin = -vmax if symmetric else (min(0.0, float(finite.min())) if finite.size else 0.0)
    return shown, float(vmin), float(vmax), bool(symmetric)


def _colours(vmin, vmax, cmap, symmetric):
    import matplotlib
    from matplotlib.colors import Normalize

    name = cmap or ("RdBu_r" if symmetric else "YlOrRd")
    cmap = matplotlib.colormaps[name] if isinstance(name, str) else name
    return Normalize(vmin=vmin, vmax=vmax), cmap


def _is_masker(space):
    return hasattr(space, "inverse_transform") and hasattr(space, "mask_img_")


def _load_space(space):
    """A mapper file's path becomes its Mapper."""
    from pathlib import Path

    if isinstance(space, (str, Path)) and str(space).endswith(".npz"):
        from .mapper import load_mapper

        return load_mapper(space)
    return space


def _kind(space):
    if isinstance(space, Mapper):
        return "mapper"
    if isinstance(space, str):
        if space in SURFACE_SPACES:
            return "surface"
        if space.lower().startswith(("fsav", "fslr", "fs_lr")):
            raise ValueError(f"unknown surface space {space!r}; give one of "
                             f"{sorted(SURFACE_SPACES)}")
        return "volume"
    if _is_masker(space) or hasattr(space, "affine"):
        return "volume"
    raise TypeError(f"space must be a surface space name ({sorted(SURFACE_SPACES)}), a volume "
                    "space name with mask_img, a nibabel mask image, a fitted nilearn masker "
                    f"or a Mapper; got {type(space).__name__}")


def _check_mesh(space, mesh):
    if mesh in (None, "fsaverage5"):
        return
    if mesh in SURFACE_SPACES:
        raise ValueError(
            f"the {mesh} mesh is not available offline: nilearn bundles only fsaverage5, and "
            f"nilearn.datasets.load_fsaverage({mesh!r}) downloads the others. sk_braintune "
            f"draws {space} data on fsaverage5 (each hemisphere's first 10,242 vertices: the "
            "meshes are nested). For the full mesh, fetch it yourself and draw with "
            "nilearn.plotting.plot_surf_stat_map")
    raise ValueError(f"mesh must be 'fsaverage5', got {mesh!r}")


def volume_image(values, space, *, column_index=None, mask_img=None):
    """Per-voxel values as a 3-D image of the mask's grid (NaN outside the data).

    Parameters
    ----------
    values : array-like of shape (n_columns,)
    space : nibabel image, fitted nilearn masker or str
        The mask image, a masker (its ``mask_img_``), or a space name with ``mask_img``.
    column_index : array-like of int of shape (n_columns,), optional
        Flat C-order index of each column in the mask image's grid; by default the columns
        are the mask's non-zero voxels in C order (what a masker returns).
    mask_img : nibabel image, optional
        The grid, when ``space`` is a name.

    Returns
    -------
    img : nibabel.Nifti1Image
    """
    import nibabel as nib

    if _is_masker(space):
        mask_img = space.mask_img_
    elif not isinstance(space, str):
        mask_img = space
    if mask_img is None:
        raise ValueError(f"a volume space ({space!r}) needs mask_img (the image whose grid the "
                         "column_index refers to), or give the mask image or fitted masker "
                         "as space")
    mask = np.asarray(mask_img.dataobj) != 0
    if mask.ndim == 4 and mask.shape[3] == 1:
        mask = mask[..., 0]
    values = np.asarray(values, dtype=np.float64)
    data = np.full(mask.shape, np.nan)
    if column_index is None:
        if values.size != mask.sum():
            raise ValueError(f"{values.size} values for a mask of {int(mask.sum())} voxels; "
                             "pass column_index (flat C-order voxel indices) or the matching "
                             "mask")
        data[mask] = values
    else:
        column_index = np.asarray(column_index)
        if column_index.shape != values.shape:
            raise ValueError(f"column_index {column_index.shape} must match values "
                             f"{values.shape}")
        if column_index.size and (column_index.min() < 0 or column_index.max() >= mask.size):
            raise ValueError(f"column_index must lie in [0, {mask.size}) for a grid of shape "
                             f"{mask.shape}")
        data.reshape(-1)[column_index] = values
    return nib.Nifti1Image(data, mask_img.affine)


def _figure(figsize):
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def _colorbar(fig, axes, norm, cmap, label):
    from matplotlib.cm import ScalarMappable

    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes, shrink=0.6,
                       location="right")
    if label:
        bar.set_label(label)
    return bar


def _surface_figure(vertex_values, views, norm, cmap, figsize):
    surfaces = fsaverage5_surfaces()
    fig = _figure(figsize or (6.4, 1.9 * len(views) + 0.5))
    axes = fig.subplots(len(views), 2, squeeze=False)
    halves = {"left": vertex_values[:FSAVERAGE5_VERTICES],
              "right": vertex_values[FSAVERAGE5_VERTICES:]}
    for row, view in zip(axes, views):
        for ax, hemi in zip(row, ("left", "right")):
            mesh = "flat" if view == "flat" else "inflated"
            coords, faces = surfaces[mesh][hemi]
            draw_mesh(ax, coords, faces, halves[hemi], background=surfaces["sulcal"][hemi],
                      norm=norm, cmap=cmap, view=(hemi, view))
            ax.set_title(f"{hemi} {view}", fontsize=8)
    return fig, axes.ravel().tolist()


def _mapper_figure(mapper, values, views, norm, cmap, figsize):
    flat = [v for v in views if v == "flat"]
    rest = [v for v in views if v != "flat"]
    n_rows = len(flat) + len(rest)
    fig = _figure(figsize or (6.4, 2.6 * len(flat) + 1.9 * len(rest) + 0.5))
    grid = fig.add_gridspec(n_rows, 2)
    axes = []
    row = 0
    if flat:
        ax = fig.add_subplot(grid[0, :])
        image = mapper.flatmap_image(values)
        left, right, bottom, top = mapper.extents
        if mapper.flatmap_curvature is not None:
            curvature = np.asarray(mapper.flatmap_curvature, dtype=np.float64)
            ax.imshow(np.where(curvature > 0, 0.55, 0.8), cmap="gray", vmin=0, vmax=1,
                      extent=(left, right, bottom, top), interpolation="nearest")
        else:  # the cortex's outline in grey
            background = np.where(mapper.flatmap_mask.T[::-1], 0.75, np.nan)
            ax.imshow(background, cmap="gray", vmin=0, vmax=1,
                      extent=(left, right, bottom, top), interpolation="nearest")
        ax.imshow(np.ma.masked_invalid(image), cmap=cmap, norm=norm,
                  extent=(left, right, bottom, top), interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(f"{mapper.subject} flatmap" if mapper.subject else "flatmap", fontsize=8)
        axes.append(ax)
        row = 1
    if rest:
        vertex_values = mapper.to_fsaverage5(values)
        surfaces = fsaverage5_surfaces()
        for i, view in enumerate(rest):
            for j, hemi in enumerate(("left", "right")):
                ax = fig.add_subplot(grid[row + i, j])
                half = vertex_values[:FSAVERAGE5_VERTICES] if hemi == "left" \
                    else vertex_values[FSAVERAGE5_VERTICES:]
                coords, faces = surfaces["inflated"][hemi]
                draw_mesh(ax, coords, faces, half, background=surfaces["sulcal"][hemi],
                          norm=norm, cmap=cmap, view=(hemi, view))
                ax.set_title(f"{hemi} {view} (fsaverage5)", fontsize=8)
                axes.append(ax)
    return fig, axes


def _volume_figure(img, views, norm, cmap, symmetric, figsize, label):
    from nilearn import plotting

    fig = _figure(figsize or (7.0, 2.3 * len(views) + 0.4))
    fig.set_layout_engine("none")
    height = 1.0 / len(views)
    data = np.asarray(img.dataobj)
    finite = np.isfinite(data)
    # nilearn hides values below its threshold: missing voxels become 0 and sit under it
    shown = np.where(finite, data, 0.0)
    tiny = 1e-12 * max(abs(norm.vmin), abs(norm.vmax))
    import nibabel as nib

    stat = nib.Nifti1Image(shown, img.affine)
    for i, view in enumerate(views):
        rect = (0.0, 1.0 - (i + 1) * height, 1.0, height * 0.92)
        kwargs = dict(threshold=tiny, vmax=norm.vmax, cmap=cmap, colorbar=True, figure=fig,
                      axes=rect, annotate=True)
        if view == "slices":
            display = plotting.plot_stat_map(stat, display_mode="ortho", draw_cross=False,
                                             symmetric_cbar=symmetric,
                                             vmin=None if symmetric else norm.vmin, **kwargs)
        else:
            display = plotting.plot_glass_brain(stat, plot_abs=False, symmetric_cbar=symmetric,
                                                vmin=None if symmetric else norm.vmin, **kwargs)
        if label and getattr(display, "_cbar", None) is not None:
            display._cbar.set_label(label)
    return fig


def plot_brain_map(values, space, *, column_index=None, mask_img=None, threshold=None, q=None,
                   alpha=0.05, symmetric=None, vmax=None, title=None, cmap=None, views=None,
                   mesh="fsaverage5", colorbar_label=None, figsize=None):
    """Draw per-column values (vertices or voxels) on the brain; nothing is downloaded.

    Parameters
    ----------
    values : array-like of shape (n_columns,)
        One value per data column (e.g. noise-ceiling-normalised r, or a difference of two
        models' r); NaN columns are not drawn.
    space : str, nibabel image, nilearn masker or Mapper
        - ``"fsaverage5"``, ``"fsaverage6"``, ``"fsaverage7"`` or ``"fsaverage"``: per-vertex
          values (left hemisphere first), drawn on the fsaverage5 mesh bundled with nilearn
          (inflated lateral and medial views, and the flat patch). Finer meshes are reduced
          to fsaverage5 by keeping each hemisphere's first 10,242 vertices (the meshes are
          nested); the full-resolution fsaverage6/7 meshes are downloads and are not used.
        - a volume: a mask image, a fitted nilearn masker, or a space name (such as
          ``"MNI152NLin2009cAsym"``) with ``mask_img``; drawn as nilearn's slices
          (``plot_stat_map``) or glass brain (``plot_glass_brain``) over nilearn's bundled
          MNI152 template (meaningful for MNI-space data).
        - a :class:`~sk_braintune.plotting.Mapper` or the path of its ``.npz`` file (ds003020
          subjects, built once by ``sk-braintune mappers``): the subject's pycortex flatmap,
          drawn without pycortex.
    column_index : array-like of int of shape (n_columns,), optional
        Where each column lies: for surfaces the vertex index (left hemisphere's vertices,
        then the right's), for volumes the flat C-order index in ``mask_img``'s grid. By
        default the columns are all vertices (surfaces) or the mask's voxels in C order.
    mask_img : nibabel image, optional
        The volume grid (when ``space`` is a volume space's name).
    threshold : float, optional
        Hide ``|value| < threshold``.
    q : array-like of shape (n_columns,), optional
        q-values of the values (e.g. BH-FDR): columns with ``q > alpha`` are hidden.
    alpha : float, default=0.05
        Significance level for ``q``.
    symmetric : bool, optional
        Colour limits ``[-vmax, vmax]`` and a diverging colour map (for differences). By
        default symmetric when any shown value is negative.
    vmax : float, optional
        Upper colour limit (default: the largest shown ``|value|``).
    title : str, optional
    cmap : str or matplotlib colormap, optional
        ``"RdBu_r"`` for symmetric maps, ``"YlOrRd"`` otherwise.
    views : sequence of str, optional
        Surfaces: any of ``"lateral"``, ``"medial"``, ``"flat"`` (default all three, each
        for both hemispheres). Volumes: ``"slices"`` and/or ``"glass"`` (default
        ``("slices",)``). Mappers: ``"flat"`` (default), plus ``"lateral"``/``"medial"`` on
        fsaverage5 when the mapper has a voxel-to-fsaverage5 matrix.
    mesh : str, default="fsaverage5"
        The mesh to draw surfaces on; only the bundled fsaverage5 is available offline
        (asking for another raises an error saying how to get it).
    colorbar_label : str, optional
    figsize : (float, float), optional

    Returns
    -------
    fig : matplotlib.figure.Figure
        Built without pyplot (headless-safe); save it with ``fig.savefig(path)``.

    Raises
    ------
    ValueError
        For values that do not match the space, unknown views, or an unavailable mesh.
    """
    space = _load_space(space)
    kind = _kind(space)
    shown, vmin, vmax, symmetric = brain_map_values(values, threshold=threshold, q=q,
                                                    alpha=alpha, symmetric=symmetric, vmax=vmax)
    norm, colour_map = _colours(vmin, vmax, cmap, symmetric)
    if kind == "volume":
        views = tuple(views or ("slices",))
        _check_views(views, _VOLUME_VIEWS)
        img = volume_image(shown, space, column_index=column_index, mask_img=mask_img)
        fig = _volume_figure(img, views, norm, colour_map, symmetric, figsize, colorbar_label)
    else:
        views = tuple(views or (("flat",) if kind == "mapper" else _SURFACE_VIEWS))
        _check_views(views, _SURFACE_VIEWS)
        if kind == "mapper":
            if column_index is not None:
                raise ValueError("a Mapper's columns are its voxels: give values in its order, "
                                 "without column_index")
            fig, axes = _mapper_figure(space, shown, views, norm, colour_map, figsize)
        else:
            _check_mesh(space, mesh)
            fig, axes = _surface_figure(to_fsaverage5(shown, space, column_index), views, norm,
                                        colour_map, figsize)
        _colorbar(fig, axes, norm, colour_map, colorbar_label)
    if title:
        fig.suptitle(title)
    return fig


def _check_views(views, allowed):
    unknown = [v for v in views if v not in allowed]
    if unknown or not views:
        raise ValueError(f"views must be a non-empty subset of {allowed}, got {views!r}")


def view_brain_map(values, space, *, column_index=None, mask_img=None, threshold=None, q=None,
                   alpha=0.05, symmetric=None, vmax=None, title=None, cmap=None, hemi="both"):
    """Interactive view of a brain map (self-contained HTML; nilearn's niivue engine).

    Parameters
    ----------
    values, space, column_index, mask_img, threshold, q, alpha, symmetric, vmax, title, cmap
        As :func:`plot_brain_map`. Surface spaces and mappers with a voxel-to-fsaverage5
        matrix are shown on the inflated fsaverage5 mesh; volumes with nilearn's
        ``view_img`` over the MNI152 template.
    hemi : {"both", "left", "right"}, default="both"

    Returns
    -------
    view : nilearn HTML document
        ``view.save_as_html(path)`` writes one HTML file (the viewer is embedded, so the page
        works offline).
    """
    from nilearn import plotting

    space = _load_space(space)
    kind = _kind(space)
    shown, vmin, vmax, symmetric = brain_map_values(values, threshold=threshold, q=q,
                                                    alpha=alpha, symmetric=symmetric, vmax=vmax)
    cmap = cmap or ("RdBu_r" if symmetric else "YlOrRd")
    if kind == "volume":
        img = volume_image(shown, space, column_index=column_index, mask_img=mask_img)
        data = np.nan_to_num(np.asarray(img.dataobj), nan=0.0)
        import nibabel as nib

        return plotting.view_img(nib.Nifti1Image(data, img.affine),
                                 threshold=1e-12 * vmax, vmax=vmax,
                                 vmin=None if symmetric else vmin, symmetric_cmap=symmetric,
                                 cmap=cmap, title=title)
    if kind == "mapper":
        vertex_values = space.to_fsaverage5(shown)
    else:
        vertex_values = to_fsaverage5(shown, space, column_index)
    surfaces = fsaverage5_surfaces()
    if hemi not in ("both", "left", "right"):
        raise ValueError(f"hemi must be 'both', 'left' or 'right', got {hemi!r}")
    from nilearn.surface import InMemoryMesh, PolyMesh, SurfaceImage

    parts = ("left", "right") if hemi == "both" else (hemi,)
    coords = {h: surfaces["inflated"][h][0] for h in parts}
    if hemi == "both":  # the two inflated hemispheres share a centre: move them apart
        shift = (coords["left"][:, 0].max() - coords["right"][:, 0].min()) / 2 + 5.0
        coords = {"left": coords["left"] - [shift, 0, 0], "right": coords["right"] + [shift, 0, 0]}
    mesh = PolyMesh(**{h: InMemoryMesh(coords[h], surfaces["inflated"][h][1]) for h in parts})
    halves = {"left": vertex_values[:FSAVERAGE5_VERTICES],
              "right": vertex_values[FSAVERAGE5_VERTICES:]}
    surf_map = SurfaceImage(mesh, {h: np.nan_to_num(halves[h], nan=0.0) for h in parts})
    bg = SurfaceImage(mesh, {h: surfaces["sulcal"][h] for h in parts})
    return plotting.view_surf(surf_mesh=mesh, surf_map=surf_map, bg_map=bg, hemi=hemi,
                              threshold=1e-12 * vmax, vmax=vmax,
                              vmin=None if symmetric else vmin, symmetric_cmap=symmetric,
                              cmap=cmap, title=title, engine="niivue")
