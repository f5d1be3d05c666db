"""The study's brain maps as files: alignment and what brain-tuning changed, per voxel."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .brainmap import brain_map_values, plot_brain_map, view_brain_map

__all__ = ["write_brain_maps"]

DIFFERENCE_PERCENTILE = 99.0
"""The percentile of |difference| at which the difference maps' colours saturate."""


def _slug(name):
    return re.sub(r"[^a-z0-9]+", "_", str(name).lower()).strip("_") or "model"


def _check(name, scores, q, n):
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1 or (n is not None and values.size != n):
        raise ValueError(f"voxel_scores[{name!r}] must be 1-D with {n} voxels, got "
                         f"{values.shape}")
    if q is not None and np.shape(q) != values.shape:
        raise ValueError(f"voxel_q[{name!r}] has shape {np.shape(q)}, voxel_scores "
                         f"{values.shape}")
    return values


def write_brain_maps(voxel_scores, voxel_q, *, space, column_index, output, mask_img=None,
                     pretrained="pretrained", tuned="brain-tuned", controls=None, prefix="",
                     alpha=0.05, html=True, views=None, dpi=110):
    """Write the study's brain maps: pretrained alignment and brain-tuned minus the others.

    Maps (last layer, significance-masked):

    - the pretrained model's alignment, shown where its q-value is at most ``alpha``;
    - brain-tuned minus pretrained, and brain-tuned minus each control, shown where either
      model of the pair aligns significantly (``min(q_a, q_b) <= alpha``); the difference maps
      share one symmetric colour scale so they compare at a glance.

    Parameters
    ----------
    voxel_scores : dict of str to array-like of shape (n_voxels,)
        Per-voxel score of each model (noise-ceiling-normalised r; NaN where excluded).
    voxel_q : dict of str to array-like of shape (n_voxels,), or None
        BH-FDR q-values of each model's alignment; ``None`` (or a model missing) draws that
        model unmasked.
    space : str, nibabel image, nilearn masker or Mapper
        As :func:`plot_brain_map`.
    column_index : array-like of int of shape (n_voxels,) or None
        As :func:`plot_brain_map`.
    output : str or pathlib.Path
        Folder to write into (created).
    mask_img : nibabel image, optional
        Volume grid, as :func:`plot_brain_map`.
    pretrained, tuned : str
        Keys of the pretrained and brain-tuned models.
    controls : sequence of str, optional
        Keys of the controls; by default every other key of ``voxel_scores``.
    prefix : str, default=""
        Prepended to every file name (e.g. ``"whisper_tiny_en_"``).
    alpha : float, default=0.05
    html : bool or sequence of int, default=True
        Also write an interactive page (nilearn's niivue viewer; not for Mappers without a
        voxel-to-fsaverage5 matrix): for every map (True), none (False), or the maps at these
        positions of the returned list (each page holds the mesh: ~3 MB on fsaverage5).
    views : sequence of str, optional
        As :func:`plot_brain_map`.
    dpi : int, default=110

    Returns
    -------
    maps : list of (pathlib.Path, str, pathlib.Path or None)
        ``(png_path, caption, html_path)`` of each map, in the order above.
    """
    if pretrained not in voxel_scores or tuned not in voxel_scores:
        raise KeyError(f"voxel_scores needs {pretrained!r} and {tuned!r}; it has "
                       f"{sorted(voxel_scores)}")
    voxel_q = voxel_q or {}
    if controls is None:
        controls = [name for name in voxel_scores if name not in (pretrained, tuned)]
    missing = [c for c in controls if c not in voxel_scores]
    if missing:
        raise KeyError(f"controls {missing} are not in voxel_scores ({sorted(voxel_scores)})")
    n = np.asarray(voxel_scores[pretrained]).size
    scores = {name: _check(name, voxel_scores[name], voxel_q.get(name), n)
              for name in (pretrained, tuned, *controls)}

    def q_of(*names):
        qs = [np.asarray(voxel_q[m], dtype=np.float64) for m in names if voxel_q.get(m) is
              not None]
        return np.fmin.reduce(qs) if qs else None

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    significance = f"q <= {alpha:g}, BH-FDR"

    def shown(q, where):  # the caption says what the mask is, or that there is none
        return (f"shown {where} ({significance})" if q is not None else
                "without a significance mask")

    q = q_of(pretrained)
    specs = [(f"{prefix}brainmap_{_slug(pretrained)}", scores[pretrained], q,
              f"{pretrained}: last-layer alignment", False,
              f"Where the {pretrained} model's last layer predicts the held-out story: "
              f"noise-ceiling-normalised r per voxel, {shown(q, 'where significant')}.")]
    for other in (pretrained, *controls):
        q = q_of(tuned, other)
        specs.append((f"{prefix}brainmap_{_slug(tuned)}_minus_{_slug(other)}",
                      scores[tuned] - scores[other], q, f"{tuned} minus {other}", True,
                      f"What brain-tuning changed: {tuned} minus {other} in last-layer "
                      "normalised r per voxel (red: brain-tuned higher, blue: lower; the "
                      f"colours saturate at the {DIFFERENCE_PERCENTILE:g}th percentile of "
                      f"|difference|), {shown(q, 'where either model aligns significantly')}."))
    # one colour scale for every difference map, set by their robust extremes: the largest
    # |difference| is often a handful of noisy voxels that would pale all the others
    differences = [brain_map_values(values, q=q, alpha=alpha, symmetric=True,
                                    percentile=DIFFERENCE_PERCENTILE)[2]
                   for _, values, q, _, diff, _ in specs if diff]
    shared_vmax = max(differences) if differences else None

    if isinstance(html, (bool, np.bool_)):
        pages = range(len(specs)) if html else ()
    else:
        pages = {int(i) % len(specs) for i in html}
    written = []
    for position, (stem, values, q, title, diff, caption) in enumerate(specs):
        vmax = shared_vmax if diff else None
        label = "difference in normalised r" if diff else "normalised r"
        fig = plot_brain_map(values, space, column_index=column_index, mask_img=mask_img, q=q,
                             alpha=alpha, symmetric=True if diff else None, vmax=vmax,
                             title=title, views=views, colorbar_label=label)
        png = output / f"{stem}.png"
        fig.savefig(png, dpi=dpi)
        page = None
        can_view = not hasattr(space, "voxel_to_flatmap") or \
            space.voxel_to_fsaverage5 is not None
        if position in pages and can_view:
            page = output / f"{stem}.html"
            view_brain_map(values, space, column_index=column_index, mask_img=mask_img, q=q,
                           alpha=alpha, symmetric=True if diff else None, vmax=vmax,
                           title=title).save_as_html(page)
        written.append((png, caption, page))
    return written
