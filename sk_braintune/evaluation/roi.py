"""ROI summaries and across-participant statistics.

A voxel's label is its ROI (real data, e.g. an HCP-MMP1 parcel such as ``"L_A1_ROI"``) or its
kind (the built-in simulator: ``"semantic"``, ``"auditory"``, ``"mixed"``, ``"noise"``). An ROI
table groups labels: ``{"early_auditory": ["A1", "LBelt", ...], ...}``. Without a table, every
distinct label is its own ROI.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from .._utils import data_file

__all__ = ["load_roi_table", "roi_summary", "participant_roi_table", "compare_models"]

_SHIPPED = {"glasser": "glasser_groups.json"}
# The brain-tuning papers' ROI lists as HCP-MMP1 groups: primary auditory (A1), then the shipped
# early auditory and late language groups.
_PAPER_GROUPS = {"primary_auditory": ["A1"], "early_auditory": "glasser",
                 "late_language": "glasser"}


def load_roi_table(source="glasser"):
    """Read an ROI table: a mapping ROI name -> list of voxel labels.

    Parameters
    ----------
    source : str, path or dict, default="glasser"
        ``"glasser"``: the HCP-MMP1 grouping shipped with the package (early auditory, auditory
        association, late language). ``"brain-tuning"``: the brain-tuning papers' ROI lists,
        primary auditory (``A1``), early auditory and late language (the last two as in
        ``"glasser"``), for labels from an HCP-MMP1 atlas the user supplies
        (:func:`sk_braintune.evaluation.atlas_labels`). A ``.json`` file holding ``{roi: [labels]}``, or a
        ``.csv`` / ``.tsv`` file with columns ``roi`` and ``label`` (one row per label). A dict
        is validated and returned.

    Returns
    -------
    table : dict of str to list of str
    """
    if isinstance(source, dict):
        table = source
    elif isinstance(source, str) and source == "brain-tuning":
        glasser = load_roi_table("glasser")
        table = {roi: glasser[roi] if members == "glasser" else members
                 for roi, members in _PAPER_GROUPS.items()}
    elif isinstance(source, str) and source in _SHIPPED:
        path = data_file(_SHIPPED[source])
        table = json.loads(path.read_text())
    else:
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"no ROI table at {path}; give 'glasser', a dict, or a "
                                    ".json/.csv/.tsv file")
        if path.suffix == ".json":
            table = json.loads(path.read_text())
        else:
            import pandas as pd

            frame = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",", dtype=str)
            if not {"roi", "label"} <= set(frame.columns):
                raise ValueError(f"{path} needs columns 'roi' and 'label', has {list(frame.columns)}")
            table = {roi: list(g["label"]) for roi, g in frame.groupby("roi", sort=False)}
    table = {k: v for k, v in table.items() if not str(k).startswith("_")}
    for roi, labels in table.items():
        if isinstance(labels, str) or not all(isinstance(x, str) for x in labels):
            raise ValueError(f"ROI {roi!r} must map to a list of label strings, got {labels!r}")
    return {str(k): list(v) for k, v in table.items()}


def _canonical(label):
    """HCP-MMP1 label without hemisphere prefix and ``_ROI`` suffix (``L_A1_ROI`` -> ``A1``)."""
    return re.sub(r"_ROI$", "", re.sub(r"^[LR]_", "", str(label)))


def _roi_masks(labels, rois):
    labels = np.asarray(labels).astype(str)
    if rois is None:  # the empty label marks columns left out (no atlas label)
        return {label: labels == label for label in sorted(set(labels) - {""})}
    canonical = np.array([_canonical(x) for x in labels])
    masks = {}
    for roi, members in load_roi_table(rois).items():
        members = set(members) | {_canonical(m) for m in members}
        masks[roi] = np.isin(labels, list(members)) | np.isin(canonical, list(members))
    return masks


def roi_summary(scores, labels, rois=None):
    """Mean, standard error and voxel count of a per-voxel score in each ROI.

    Parameters
    ----------
    scores : array-like of shape (n_voxels,)
        e.g. noise-ceiling-normalised correlations; NaN voxels (excluded) are left out.
    labels : array-like of shape (n_voxels,)
        ROI or kind per voxel.
    rois : dict, str or path, optional
        ROI table (see :func:`load_roi_table`); each distinct label by default.

    Returns
    -------
    summary : pandas.DataFrame
        Indexed by ROI, columns ``mean``, ``sem`` (across voxels), ``n_voxels`` (non-NaN).
    """
    import pandas as pd

    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 1 or scores.shape != labels.shape:
        raise ValueError(f"scores and labels must be 1-D with one entry per voxel, got "
                         f"{scores.shape} and {labels.shape}")
    rows = {}
    for roi, mask in _roi_masks(labels, rois).items():
        values = scores[mask & ~np.isnan(scores)]
        n = values.size
        rows[roi] = {"mean": values.mean() if n else np.nan,
                     "sem": values.std(ddof=1) / np.sqrt(n) if n > 1 else np.nan,
                     "n_voxels": n}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "roi"
    return frame.astype({"n_voxels": int}) if len(frame) else frame


def participant_roi_table(scores, labels, rois=None, participants=None):
    """ROI means of each participant: a participants x ROIs table.

    Parameters
    ----------
    scores : list of ndarray of shape (n_voxels_p,), or ndarray of shape (n_participants, n_voxels)
        Per-voxel scores of each participant (voxel counts may differ between participants).
    labels : list of ndarray, or ndarray of shape (n_voxels,)
        Labels per participant, or one array shared by all.
    rois : dict, str or path, optional
        ROI table (see :func:`load_roi_table`).
    participants : list of str, optional
        Row names; ``P0, P1, ...`` by default.

    Returns
    -------
    table : pandas.DataFrame of shape (n_participants, n_rois)
    """
    import pandas as pd

    scores = list(scores)
    if isinstance(labels, np.ndarray) and labels.ndim == 1 or (
            isinstance(labels, (list, tuple)) and labels and isinstance(labels[0], str)):
        labels = [np.asarray(labels)] * len(scores)
    if len(labels) != len(scores):
        raise ValueError(f"{len(scores)} participants' scores but {len(labels)} label arrays")
    if participants is None:
        participants = [f"P{i}" for i in range(len(scores))]
    rows = [roi_summary(s, lab, rois)["mean"] for s, lab in zip(scores, labels)]
    return pd.DataFrame(rows, index=list(participants))


def compare_models(scores_a, scores_b, labels=None, rois=None, *, alternative="two-sided",
                   correction="fdr_bh"):
    """Wilcoxon signed-rank test across participants of two models' ROI scores.

    Parameters
    ----------
    scores_a, scores_b : participants x ROIs DataFrames, or per-voxel scores per participant
        Either tables from :func:`participant_roi_table` (same rows and columns), or what it
        accepts (then ``labels`` is required).
    labels : list of ndarray or ndarray, optional
        Voxel labels, when per-voxel scores are given.
    rois : dict, str or path, optional
        ROI table.
    alternative : {"two-sided", "greater", "less"}, default="two-sided"
        ``"greater"`` tests model A > model B.
    correction : {"fdr_bh", None}, default="fdr_bh"
        Benjamini-Hochberg correction across ROIs (:func:`sk_braintune.encoding.fdr_bh`;
        ROIs without a p-value are left out of it).

    Returns
    -------
    result : pandas.DataFrame
        Indexed by ROI: ``mean_a``, ``mean_b``, ``difference`` (mean of A - B),
        ``n_participants``, ``statistic``, ``p_value``, ``p_corrected``. ROIs where every
        difference is zero (or fewer than 2 participants) get NaN p-values.
    """
    import pandas as pd
    from scipy.stats import wilcoxon

    from ..encoding import fdr_bh

    if not isinstance(scores_a, pd.DataFrame):
        if labels is None:
            raise ValueError("give voxel labels with per-voxel scores, or ROI tables")
        scores_a = participant_roi_table(scores_a, labels, rois)
        scores_b = participant_roi_table(scores_b, labels, rois)
    if list(scores_a.columns) != list(scores_b.columns) or len(scores_a) != len(scores_b):
        raise ValueError("the two models' ROI tables must have the same participants and ROIs")
    rows = {}
    for roi in scores_a.columns:
        a = scores_a[roi].to_numpy(float)
        b = scores_b[roi].to_numpy(float)
        ok = ~(np.isnan(a) | np.isnan(b))
        diff = a[ok] - b[ok]
        stat = p = np.nan
        if ok.sum() >= 2 and np.any(diff != 0):
            test = wilcoxon(a[ok], b[ok], alternative=alternative)
            stat, p = float(test.statistic), float(test.pvalue)
        rows[roi] = {"mean_a": a[ok].mean() if ok.any() else np.nan,
                     "mean_b": b[ok].mean() if ok.any() else np.nan,
                     "difference": diff.mean() if ok.any() else np.nan,
                     "n_participants": int(ok.sum()), "statistic": stat, "p_value": p}
    result = pd.DataFrame.from_dict(rows, orient="index")
    result.index.name = "roi"
    result["p_corrected"] = (fdr_bh(result["p_value"].to_numpy(float))[1]
                             if correction == "fdr_bh" else result["p_value"])
    return result
