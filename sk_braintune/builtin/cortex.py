"""Places on fsaverage5 for the simulated listeners' voxels (the demo drawn on a brain).

The simulator's voxels have kinds, not places; for brain maps each listener's voxels are given
vertices of the fsaverage5 mesh that nilearn bundles. No atlas is available offline, so regions
are defined by centres in fsaverage's (MNI305-like) pial coordinates, left hemisphere, mirrored
for the right (:data:`CORTEX_REGIONS`):

- ``"auditory"`` voxels around Heschl's gyrus and the superior temporal plane (planum temporale,
  planum polare);
- ``"semantic"`` voxels along lateral temporal cortex (anterior, middle and posterior middle /
  inferior temporal gyrus), inferior parietal cortex (angular gyrus) and prefrontal cortex
  (inferior frontal gyrus, middle and superior frontal gyri), after the semantic maps of
  Huth et al. (2016);
- ``"mixed"`` voxels (half auditory, half semantic) along the superior temporal sulcus, between
  the two;
- ``"noise"`` voxels elsewhere on the cortex (at least 25 mm from every centre above; never on
  the medial wall, which the bundled flat patch leaves out).

Each voxel gets a distinct vertex drawn with probability proportional to a Gaussian (8 mm) of its
distance to its kind's nearest centre; each listener's centres are moved by a few millimetres
(3 mm standard deviation per axis), so listeners differ a little. The places only label the
voxels: the simulated responses do not depend on them.
"""

from __future__ import annotations

import re
import zlib

import numpy as np

__all__ = ["CORTEX_REGIONS", "voxel_places"]

#: Region centres (x, y, z in mm, left hemisphere; the right one mirrors x) of each voxel kind.
CORTEX_REGIONS = {
    "auditory": {"Heschl's gyrus": (-44, -20, 8), "planum temporale": (-54, -30, 14),
                 "planum polare": (-48, -6, -2)},
    "semantic": {"anterior middle temporal gyrus": (-56, -4, -24),
                 "middle temporal gyrus": (-62, -28, -12),
                 "posterior middle/inferior temporal gyrus": (-54, -52, -8),
                 "angular gyrus": (-46, -66, 34), "inferior frontal gyrus": (-50, 26, 10),
                 "middle frontal gyrus": (-42, 24, 42), "superior frontal gyrus": (-20, 40, 46)},
    "mixed": {"anterior superior temporal sulcus": (-56, -10, -8),
              "posterior superior temporal sulcus": (-54, -42, 8)},
}
_SIGMA_MM = 8.0
_JITTER_MM = 3.0
_NOISE_DISTANCE_MM = 25.0
_KIND_ORDER = ("auditory", "semantic", "mixed", "noise")


def _participant_index(participant):
    if isinstance(participant, (int, np.integer)):
        return int(participant)
    match = re.fullmatch(r"P(\d+)", str(participant))
    return int(match.group(1)) - 1 if match else zlib.crc32(str(participant).encode())


def _centres(kind):
    left = np.array(list(CORTEX_REGIONS[kind].values()), dtype=np.float64)
    return np.concatenate([left, left * [-1, 1, 1]])


def voxel_places(voxel_labels, participant=0, random_state=0):
    """fsaverage5 vertices of the built-in dataset's voxels for one simulated listener.

    Parameters
    ----------
    voxel_labels : array-like of str of shape (n_voxels,)
        Kinds ``"auditory"``, ``"semantic"``, ``"mixed"``, ``"noise"`` (the dataset's
        ``voxel_labels``).
    participant : str or int, default=0
        The listener (``"P01"``, ``"P02"``, ... or a 0-based index); each gets its own places.
    random_state : int, default=0
        Seed; the same arguments give the same places.

    Returns
    -------
    column_index : ndarray of int64 of shape (n_voxels,)
        Distinct vertex indices into fsaverage5's left hemisphere (0-10241) followed by the
        right (10242-20483), for ``plot_brain_map(values, "fsaverage5", column_index=...)``.

    Raises
    ------
    ValueError
        For an unknown kind or more voxels than fit on the cortex.
    """
    from ..plotting import fsaverage5_surfaces

    labels = np.asarray(voxel_labels).astype(str)
    unknown = sorted(set(labels) - set(_KIND_ORDER))
    if unknown:
        raise ValueError(f"unknown voxel kinds {unknown}; expected {list(_KIND_ORDER)}")
    surfaces = fsaverage5_surfaces()
    pial = np.concatenate([surfaces["pial"][h][0] for h in ("left", "right")])
    n_hemi = surfaces["pial"]["left"][0].shape[0]
    # cortex = vertices of the flat patch (the medial wall is cut out of it)
    cortex = np.zeros(2 * n_hemi, dtype=bool)
    cortex[np.unique(surfaces["flat"]["left"][1])] = True
    cortex[n_hemi + np.unique(surfaces["flat"]["right"][1])] = True
    if labels.size > cortex.sum():
        raise ValueError(f"{labels.size} voxels but only {int(cortex.sum())} cortical vertices")

    rng = np.random.default_rng([int(random_state), _participant_index(participant), 20484])
    free = cortex.copy()
    nearest = {}
    for kind in _KIND_ORDER[:3]:
        centres = _centres(kind) + rng.normal(0.0, _JITTER_MM, (2 * len(CORTEX_REGIONS[kind]), 3))
        distance = np.linalg.norm(pial[:, None, :] - centres[None], axis=2).min(axis=1)
        nearest[kind] = distance
    anywhere = np.min(np.stack(list(nearest.values())), axis=0)
    weights = {kind: np.exp(-0.5 * (d / _SIGMA_MM) ** 2) for kind, d in nearest.items()}
    weights["noise"] = (anywhere >= _NOISE_DISTANCE_MM).astype(np.float64)

    places = np.empty(labels.size, dtype=np.int64)
    for kind in _KIND_ORDER:
        which = np.flatnonzero(labels == kind)
        if not which.size:
            continue
        w = np.where(free, weights[kind], 0.0)
        if np.count_nonzero(w) < which.size:  # not enough room near the centres: anywhere free
            w = np.where(free, np.maximum(w, 1e-12), 0.0)
        chosen = rng.choice(w.size, size=which.size, replace=False, p=w / w.sum())
        places[which] = chosen
        free[chosen] = False
    return places
