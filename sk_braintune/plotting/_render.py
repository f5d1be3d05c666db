"""Draw a triangle mesh on a 2-D matplotlib axes (orthographic views, painter's algorithm).

One renderer for the lateral, medial and flat views: faces are coloured by the mean of their
vertices' finite values (so a lone valued vertex still shows, as the faces around it), faces
without a value show the sulcal-depth background in grey, and faces are shaded by the angle
between their normal and the line of sight. matplotlib's 3-D axes would do the same more
slowly and with less control over missing values.
"""

from __future__ import annotations

import numpy as np

# (screen-x axis, screen-x sign, depth axis, depth sign): the viewer looks along +depth_sign*axis.
# Lateral left: the viewer stands at -x, anterior (+y) to the left of the picture.
_CAMERAS = {("left", "lateral"): (1, -1.0, 0, 1.0), ("left", "medial"): (1, 1.0, 0, -1.0),
            ("right", "lateral"): (1, 1.0, 0, -1.0), ("right", "medial"): (1, -1.0, 0, 1.0)}


def face_values(faces, vertex_values):
    """Mean of each face's finite vertex values; NaN where none is finite.

    Parameters
    ----------
    faces : ndarray of shape (n_faces, 3)
    vertex_values : ndarray of shape (n_vertices,)

    Returns
    -------
    values : ndarray of shape (n_faces,)
    """
    corner = vertex_values[faces]
    finite = np.isfinite(corner)
    count = finite.sum(axis=1)
    total = np.where(finite, corner, 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def draw_mesh(ax, coords, faces, vertex_values, *, background, norm, cmap, view):
    """Draw one hemisphere's mesh seen from ``view`` on ``ax``.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
    coords : ndarray of shape (n_vertices, 3)
    faces : ndarray of shape (n_faces, 3)
    vertex_values : ndarray of shape (n_vertices,)
        NaN where there is nothing to show.
    background : ndarray of shape (n_vertices,) or None
        Sulcal depth (positive = deep), drawn in two greys under missing values.
    norm : matplotlib.colors.Normalize
    cmap : matplotlib.colors.Colormap
    view : (hemi, "lateral" | "medial" | "flat")

    Returns
    -------
    collection : matplotlib.collections.PolyCollection
    """
    from matplotlib.collections import PolyCollection

    hemi, kind = view
    triangles = coords[faces]  # (n_faces, 3, 3)
    if kind == "flat":
        screen = triangles[:, :, :2]
        order = np.arange(len(faces))
        shade = np.ones(len(faces))
    else:
        axis, sign, depth_axis, depth_sign = _CAMERAS[(hemi, kind)]
        screen = np.stack([sign * triangles[:, :, axis], triangles[:, :, 2]], axis=-1)
        normal = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
        centre = triangles.mean(axis=1)
        # orient normals outwards (the faces' winding decides their sign)
        if np.sum(normal * (centre - coords.mean(axis=0))) < 0:
            normal = -normal
        length = np.linalg.norm(normal, axis=1)
        facing = depth_sign * normal[:, depth_axis] / np.where(length > 0, length, 1.0)
        # faces turned away from the viewer are hidden on a closed surface: skip them (half
        # the work); then the painter's algorithm, farthest faces first
        depth = depth_sign * centre[:, depth_axis]
        visible = np.flatnonzero(facing < 0)
        order = visible[np.argsort(-depth[visible], kind="stable")]
        shade = 0.55 + 0.45 * np.abs(facing)
    values = face_values(faces, vertex_values)
    if background is None:
        grey = np.full(len(faces), 0.75)
    else:
        deep = face_values(faces, np.asarray(background, dtype=np.float64)) > 0
        grey = np.where(deep, 0.55, 0.8)
    colours = np.repeat(grey[:, None], 4, axis=1)
    colours[:, 3] = 1.0
    shown = np.isfinite(values)
    colours[shown] = cmap(norm(values[shown]))
    colours[:, :3] *= shade[:, None]
    collection = PolyCollection(screen[order], facecolors=colours[order], edgecolors="none",
                                antialiased=False)
    ax.add_collection(collection)
    ax.set_xlim(screen[:, :, 0].min(), screen[:, :, 0].max())
    ax.set_ylim(screen[:, :, 1].min(), screen[:, :, 1].max())
    ax.set_aspect("equal")
    ax.set_axis_off()
    return collection
