"""The brain maps of a results folder: the demo's per model family, ``evaluate``'s per subject.

Both draw the last layer with :mod:`sk_braintune.plotting`, where the data have places (a
``space`` and ``column_index``, or a ds003020 mapper): the demo the first listener's maps of what
brain-tuning changed (:func:`study_brain_maps`), ``evaluate`` each subject's alignment of the
evaluated model (:func:`subject_brain_map`). Each map is a PNG shown in the report and, where
asked, an interactive HTML page (nilearn's niivue viewer) the report links; a page holds the
whole mesh (about 3 MB on fsaverage5), so the demo writes one per family.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..exceptions import StudyInputError

__all__ = ["DEMO_INTERACTIVE_MAPS", "study_brain_maps", "load_subject_mappers",
           "subject_brain_map", "map_figures"]

logger = logging.getLogger(__name__)

DEMO_INTERACTIVE_MAPS = (1,)
"""Positions (in :func:`~sk_braintune.plotting.write_brain_maps`'s order) of the demo's maps
that get an interactive page: brain-tuned minus pretrained, what brain-tuning changed."""


def _significance_mask(q, alpha):
    """``(q, note)``: the q-values to mask with, or None and why not, when none passes.

    A map that hides every voxel shows nothing; when no voxel reaches ``q <= alpha`` (e.g. a
    held-out story too short for the block-permutation test) there is no significance mask
    and the note says why.
    """
    qs = [np.asarray(v, dtype=np.float64) for v in (q or {}).values() if v is not None]
    if not qs:
        return None, ""
    if not any(np.any(v <= alpha) for v in qs):
        return None, (f" No voxel reaches q <= {alpha:g} (the held-out data are too short for "
                      "the block-permutation test to find any)")
    return q, ""


def _places_of(own):
    """``(space, column_index, mask_img)`` of a record, or None when it has no places."""
    space, column_index = own.get("space"), own.get("column_index")
    if space is None or column_index is None:
        return None
    return space, np.asarray(column_index), own.get("mask_img")


def study_brain_maps(result, folder, *, participant=None, pages=DEMO_INTERACTIVE_MAPS,
                     alpha=0.05, min_ceiling=None, views=None, dpi=110):
    """Draw a study's last-layer brain maps of one listener into ``folder``.

    The maps of :func:`~sk_braintune.plotting.write_brain_maps`: the pretrained model's
    alignment, brain-tuned minus pretrained and minus each control, significance-masked, at
    the listener's places.

    Parameters
    ----------
    result : dict
        From :func:`sk_braintune.study.run_braintuning_study`: its ``voxel_maps`` (per
        listener: ``space``, ``column_index``, ``mask_img``, ``noise_ceiling``,
        ``voxel_scores``, ``voxel_q``)
        and ``models`` (``"pretrained"``, ``"brain-tuned"``, then the controls).
    folder : str or pathlib.Path
        Where the PNG (and HTML) files go.
    participant : str, optional
        The listener drawn (default: the first).
    pages : bool or sequence of int, default=DEMO_INTERACTIVE_MAPS
        Which maps get an interactive page (``html`` of ``write_brain_maps``).
    alpha : float, default=0.05
        FDR level of the significance mask (no mask when no voxel of any model passes it).
    min_ceiling : float, optional
        Without a significance mask, show only the voxels whose noise ceiling (the listener's
        ``noise_ceiling``) exceeds this (the study's ``min_ceiling``); every voxel when None.
    views : sequence of str, optional
        As :func:`~sk_braintune.plotting.plot_brain_map` (default: all of the space's).
    dpi : int, default=110

    Returns
    -------
    maps : list of dict
        ``figure`` (PNG path), ``caption`` (what it shows, naming the listener) and
        ``interactive`` (HTML path or None); empty when the listener's voxels have no places.
    """
    from ..plotting import write_brain_maps

    listeners = result.get("voxel_maps") or {}
    if not listeners:
        return []
    participant = participant or next(iter(listeners))
    own = listeners[participant]
    places = _places_of(own)
    if places is None:
        logger.info("no brain maps: the dataset gives %s's voxels no places (space, "
                    "column_index)", participant)
        return []
    space, column_index, mask_img = places
    models = list(result.get("models") or own["voxel_scores"])
    voxel_q, note = _significance_mask(own.get("voxel_q"), alpha)
    scores = {name: np.asarray(own["voxel_scores"][name], dtype=np.float64) for name in models}
    ceiling = own.get("noise_ceiling")
    if note and min_ceiling is not None and ceiling is not None:
        # normalised r (r / noise ceiling) is unbounded where the ceiling is low: without a
        # significance mask, show the voxels whose ceiling the tuning targets' threshold passes
        unreliable = ~(np.asarray(ceiling, dtype=np.float64) > min_ceiling)
        scores = {name: np.where(unreliable, np.nan, v) for name, v in scores.items()}
        note += (f", so the map shows the voxels whose noise ceiling exceeds {min_ceiling:g} "
                 "(the study's tuning targets' threshold) instead.")
    elif note:
        note += ", so every voxel is shown."
    written = write_brain_maps(
        scores, voxel_q, alpha=alpha,
        space=space, column_index=column_index, mask_img=mask_img, output=folder,
        pretrained=models[0], tuned=models[1], controls=models[2:], html=pages, views=views,
        dpi=dpi)
    where = space if isinstance(space, str) else "the data's space"
    return [{"figure": str(png),
             "caption": f"{caption}{note} Listener {participant}, last layer, its voxels at "
                        f"their places on {where}.",
             "interactive": None if page is None else str(page)}
            for png, caption, page in written]


def load_subject_mappers(path, subjects):
    """The ds003020 mappers (``sk-braintune mappers``) of ``subjects`` from ``path``.

    Parameters
    ----------
    path : str or pathlib.Path or None
        One mapper ``.npz`` (for the subject it was built for, or for the only subject), or a
        folder holding ``<subject>_mapper.npz`` files.
    subjects : sequence of str

    Returns
    -------
    mappers : dict of str to Mapper
        Subject -> mapper, for the subjects that have one (empty when ``path`` is None).

    Raises
    ------
    StudyInputError
        When the file or folder does not exist, is not a mapper, or fits none of
        ``subjects``.
    """
    if path is None:
        return {}
    from ..plotting import load_mapper

    path = Path(path).expanduser()
    if path.is_dir():
        files = {s: path / f"{s}_mapper.npz" for s in subjects}
        files = {s: f for s, f in files.items() if f.is_file()}
        if not files:
            raise StudyInputError(f"--mapper {path}: no <subject>_mapper.npz for "
                                  f"{', '.join(subjects)} in it; build them with "
                                  "sk-braintune mappers --root ... --subject ...")
    elif path.is_file():
        files = {None: path}
    else:
        raise StudyInputError(f"--mapper {path} does not exist; build it with "
                              "sk-braintune mappers --root ... --subject ...")
    mappers = {}
    for subject, file in files.items():
        try:
            mapper = load_mapper(file)
        except (OSError, ValueError, KeyError) as exc:
            raise StudyInputError(f"--mapper {file} is not a mapper from sk-braintune "
                                  f"mappers: {exc}") from exc
        if subject is None:
            if mapper.subject in subjects:
                subject = mapper.subject
            elif len(subjects) == 1:
                subject = subjects[0]
            else:
                raise StudyInputError(f"--mapper {file} was built for subject "
                                      f"{mapper.subject!r}, not one of {', '.join(subjects)}; "
                                      "give a folder of <subject>_mapper.npz files")
        mappers[subject] = mapper
    return mappers


def _on_mapper(values, mapper, voxel_indices, subject):
    """Values of the kept voxels, placed among the mapper's voxels (NaN where not kept)."""
    values = np.asarray(values, dtype=np.float64)
    if voxel_indices is None:
        if values.size != mapper.n_voxels:
            raise StudyInputError(f"{subject}: {values.size} voxels, but the mapper of "
                                  f"{mapper.subject or subject} has {mapper.n_voxels}: was it "
                                  "built for this subject and transform?")
        return values
    voxel_indices = np.asarray(voxel_indices)
    if voxel_indices.size and voxel_indices.max() >= mapper.n_voxels:
        raise StudyInputError(f"{subject}: voxel index {int(voxel_indices.max())} beyond the "
                              f"{mapper.n_voxels} voxels of the mapper of "
                              f"{mapper.subject or subject}: was it built for this subject?")
    full = np.full(mapper.n_voxels, np.nan)
    full[voxel_indices] = values
    return full


def subject_brain_map(values, q, places, folder, subject, *, model, mapper=None, alpha=0.05,
                      html=True, views=None, dpi=110):
    """Draw one subject's last-layer alignment map (``evaluate``) into ``folder``.

    Parameters
    ----------
    values : ndarray of shape (n_voxels,)
        The last layer's noise-ceiling-normalised r per voxel.
    q : ndarray of shape (n_voxels,) or None
        Its BH-FDR q-values (None, or none at most ``alpha``: no significance mask).
    places : dict
        The subject's record's ``space``, ``column_index``, ``mask_img`` and
        ``voxel_indices`` (the file columns kept, for a mapper).
    folder : str or pathlib.Path
    subject : str
    model : str
        The evaluated model, for the caption.
    mapper : Mapper, optional
        The subject's flatmap mapper; used when given (ds003020 has no other space).
    alpha : float, default=0.05
    html : bool, default=True
        Also write the interactive page (not for a mapper without fsaverage5 weights).
    views : sequence of str, optional
        As :func:`~sk_braintune.plotting.plot_brain_map`.
    dpi : int, default=110

    Returns
    -------
    entry : dict or None
        ``figure``, ``caption``, ``interactive`` (as :func:`study_brain_maps`); None when the
        subject's voxels have no places and no mapper is given.
    """
    from ..plotting import plot_brain_map, view_brain_map

    values = np.asarray(values, dtype=np.float64)
    masked, note = _significance_mask({"model": q}, alpha)
    q = None if masked is None else masked["model"]
    if note:
        note += ", so every voxel is shown."
    if mapper is not None:
        space, column_index, mask_img = mapper, None, None
        values = _on_mapper(values, mapper, places.get("voxel_indices"), subject)
        q = None if q is None else _on_mapper(q, mapper, places.get("voxel_indices"), subject)
        where = f"{mapper.subject or subject}'s flatmap"
    else:
        found = _places_of(places)
        if found is None:
            return None
        space, column_index, mask_img = found
        where = space if isinstance(space, str) else "the data's space"
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    title = f"{subject}: last-layer alignment"
    common = dict(column_index=column_index, mask_img=mask_img, q=q, alpha=alpha, title=title)
    png = folder / f"brainmap_{subject}.png"
    plot_brain_map(values, space, colorbar_label="normalised r", views=views,
                   **common).savefig(png, dpi=dpi)
    page = None
    if html and (mapper is None or mapper.voxel_to_fsaverage5 is not None):
        page = folder / f"brainmap_{subject}.html"
        view_brain_map(values, space, **common).save_as_html(page)
    mask = (f"shown where significant (q <= {alpha:g}, BH-FDR)" if q is not None
            else "without a significance mask")
    caption = (f"{subject}: where the last layer of {model} predicts the held-out story: "
               f"noise-ceiling-normalised r per voxel on {where}, {mask}.{note}")
    return {"figure": str(png), "caption": caption,
            "interactive": None if page is None else str(page)}


def map_figures(maps, output, *, prefix=""):
    """Report figures of brain maps: each PNG with its caption and interactive page's link.

    Parameters
    ----------
    maps : list of dict
        From :func:`study_brain_maps` or :func:`subject_brain_map`.
    output : str or pathlib.Path
        The results folder the paths point into (links and paths are made relative to it).
    prefix : str, default=""
        Put before each caption (e.g. ``"<family>: "``).

    Returns
    -------
    figures : list of ReportFigure
    """
    from .report import ReportFigure

    def relative(path):
        path = Path(path)
        return path.relative_to(output) if path.is_relative_to(output) else path

    output = Path(output)
    return [ReportFigure(relative(m["figure"]), f"{prefix}{m['caption']}",
                         link=None if m.get("interactive") is None else relative(
                             m["interactive"]))
            for m in maps]
