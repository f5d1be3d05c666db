"""Data efficiency of an encoding model for held-out participants (multi-brain-tuning).

The multi-brain-tuning follow-up (Moussa et al., NeurIPS 2025) asks how much of a *new*
participant's fMRI the features of a model need: the voxelwise encoding model of that
participant is trained on a growing fraction of its training data (1/8, 1/4, 1/2, all) and
scored on held-out stories, for pretrained and tuned features alike. A model whose curve reaches
the pretrained model's full-data alignment at a small fraction is more data-efficient.
:func:`data_efficiency_curve` computes the table, :func:`plot_data_efficiency` draws it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from ..evaluation.alignment import fit_score_encoding

__all__ = ["DEFAULT_FRACTIONS", "data_efficiency_curve", "plot_data_efficiency"]

DEFAULT_FRACTIONS = (1 / 8, 1 / 4, 1 / 2, 1.0)


def _training_prefix(groups, train_stories, fraction):
    """Rows of the first ``ceil(fraction * n)`` TRs of every training story."""
    keep = np.zeros(len(groups), dtype=bool)
    for story in train_stories:
        rows = np.flatnonzero(groups == story)
        keep[rows[:max(1, math.ceil(fraction * len(rows)))]] = True
    return keep


def _training_stories(groups, train_stories, n_stories):
    """Rows of the first ``n_stories`` training stories, whole."""
    return np.isin(groups, list(train_stories)[:n_stories])


def data_efficiency_curve(features, responses, groups, train_stories, test_stories, *,
                          fractions=DEFAULT_FRACTIONS, n_stories=None, noise_ceiling=None,
                          voxels=None, reference=None, estimator=None, delays=(1, 2, 3, 4)):
    """Alignment of each model's features vs the fraction of a participant's training data.

    For each fraction ``f`` the encoding model (:func:`sk_braintune.evaluation.fit_score_encoding`:
    per-story z-scoring, FIR delays, per-voxel ridge by story-grouped CV) is fitted on the first
    ``ceil(f * n)`` TRs of each of the ``n``-TR training stories (contiguous, so that
    autocorrelated neighbours never straddle the cut, and every story stays available to the
    inner CV) and scored on all TRs of the test stories.

    Parameters
    ----------
    features : dict of str to ndarray of shape (n_trs, n_features)
        Model name -> per-TR features of all stories (rows in story order, contiguous per
        story), e.g. ``{"pretrained": ..., "multi-participant tuned": ...}``.
    responses : ndarray of shape (n_trs, n_voxels) or dict of str to such arrays
        The held-out participant's responses, or participant -> responses for several held-out
        participants (same rows as ``features``).
    groups : array-like of shape (n_trs,)
        Story of each row.
    train_stories, test_stories : sequence of str
    fractions : sequence of float in (0, 1], default=(1/8, 1/4, 1/2, 1)
        Ignored when ``n_stories`` is given.
    n_stories : sequence of int, optional
        Fit instead on the first ``k`` training stories, whole, for each ``k`` (in the order
        of ``train_stories``; counts above their number are dropped, and all of them is always
        included): the encoding-data curve over stories rather than over parts of every story.
        The ``fraction`` column then holds ``k / len(train_stories)``.
    noise_ceiling : ndarray of shape (n_voxels,) or dict of str to such arrays, optional
        Per participant when ``responses`` is a dict; adds ``mean_normalized`` (r / cc_max).
    voxels : array-like of int or bool, or dict of str to such arrays, optional
        Voxels averaged in the table (all by default), e.g. those with a noise ceiling above a
        threshold; a dict gives one row per voxel set (e.g. ``{"semantic": ..., "auditory":
        ...}``) with its name in the ``voxels`` column, from the same fits.
    reference : str, optional
        A key of ``features``: adds ``relative_to_reference``, each mean r divided by the
        reference model's full-data (largest fraction) mean r of the same participant.
    estimator : estimator or Pipeline, optional
        The encoding model, passed to :func:`~sk_braintune.evaluation.fit_score_encoding`
        (cloned for every fit; its integer ``cv`` is clamped to the training stories); by
        default :func:`~sk_braintune.evaluation.default_encoder`.
    delays : sequence of int, default=(1, 2, 3, 4)
        FIR delays in TRs.

    Returns
    -------
    curve : pandas.DataFrame
        One row per (participant, model, fraction): ``participant`` (None for a single array),
        ``model``, ``fraction``, ``n_train_trs``, ``mean_r``, ``mean_normalized`` (NaN without
        a noise ceiling) and, with ``reference``, ``relative_to_reference``; with
        ``n_stories``, ``n_train_stories``; with a dict ``voxels``, ``voxels`` (one row per
        voxel set, ``relative_to_reference`` within each set).
    """
    import pandas as pd

    if not isinstance(features, Mapping) or not features:
        raise TypeError("features must be a non-empty dict model name -> (n_trs, n_features) "
                        "array, e.g. {'pretrained': F0, 'tuned': F1}")
    groups = np.asarray(groups)
    train_stories = list(train_stories)
    if n_stories is not None:
        counts = sorted({int(k) for k in n_stories})
        if not counts or counts[0] < 1:
            raise ValueError(f"n_stories must be positive story counts, got {n_stories}")
        counts = [k for k in counts if k < len(train_stories)] + [len(train_stories)]
        sizes = [(k / len(train_stories), _training_stories(groups, train_stories, k), k)
                 for k in counts]
    else:
        fractions = [float(f) for f in fractions]
        if not fractions or any(not 0 < f <= 1 for f in fractions):
            raise ValueError(f"fractions must be in (0, 1], got {fractions}")
        sizes = [(f, _training_prefix(groups, train_stories, f), None) for f in fractions]
    voxel_sets = dict(voxels) if isinstance(voxels, Mapping) else {None: voxels}
    if reference is not None and reference not in features:
        raise ValueError(f"reference={reference!r} is not one of the models {list(features)}")
    per_participant = isinstance(responses, Mapping)
    all_responses = dict(responses) if per_participant else {None: responses}
    if noise_ceiling is None or isinstance(noise_ceiling, Mapping):
        ceilings = dict(noise_ceiling or {})
    else:
        ceilings = {p: noise_ceiling for p in all_responses}
    for name, feats in features.items():
        if len(feats) != len(groups):
            raise ValueError(f"features[{name!r}] has {len(feats)} rows but groups has "
                             f"{len(groups)}; pass the features of every TR of all stories")
    test_rows = np.isin(groups, list(test_stories))
    rows = []
    for participant, y in all_responses.items():
        y = np.asarray(y)
        if len(y) != len(groups):
            raise ValueError(f"responses of {participant!r} have {len(y)} rows but groups has "
                             f"{len(groups)}")
        nc = ceilings.get(participant)
        for fraction, training, count in sizes:
            keep = training | test_rows
            fit_stories = [s for s in train_stories if s in set(groups[training])]
            for name, feats in features.items():
                result = fit_score_encoding(np.asarray(feats)[keep], y[keep], groups[keep],
                                            fit_stories, test_stories, noise_ceiling=nc,
                                            estimator=estimator, delays=delays)
                normalized = result["normalized"]
                for label, chosen in voxel_sets.items():
                    selected = np.arange(y.shape[1]) if chosen is None else np.asarray(chosen)
                    row = {
                        "participant": participant, "model": name, "fraction": fraction,
                        "n_train_trs": int(np.count_nonzero(training)),
                        "mean_r": float(np.mean(result["r"][selected])),
                        "mean_normalized": (float(np.nanmean(normalized[selected]))
                                            if normalized is not None else float("nan")),
                    }
                    if count is not None:
                        row["n_train_stories"] = count
                    if label is not None:
                        row["voxels"] = label
                    rows.append(row)
    curve = pd.DataFrame(rows)
    if reference is not None:
        largest = max(fraction for fraction, _, _ in sizes)
        full = curve[(curve["model"] == reference) & (curve["fraction"] == largest)]
        keys = ["participant"] + (["voxels"] if "voxels" in curve else [])
        base = {tuple(k): r for k, r in zip(full[keys].itertuples(index=False), full["mean_r"])}
        curve["relative_to_reference"] = [
            r / base[tuple(k)] if base[tuple(k)] != 0 else float("nan")
            for k, r in zip(curve[keys].itertuples(index=False), curve["mean_r"])]
    return curve


def plot_data_efficiency(curve, *, metric="mean_r", reference=None,
                         ylabel="brain alignment (mean r)",
                         title="Data efficiency for held-out participants", figsize=(6, 4)):
    """Alignment vs fraction of the participant's training data, one curve per model.

    Parameters
    ----------
    curve : pandas.DataFrame
        What :func:`data_efficiency_curve` returns; several participants give mean ± s.e.m.
        across participants.
    metric : str, default="mean_r"
        Column drawn (``"mean_normalized"``, ``"relative_to_reference"``, ...).
    reference : str, optional
        Model whose full-data value is drawn as a dashed horizontal line (the level the other
        curves should reach).
    ylabel, title : str
    figsize : tuple of float

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    from .figures import _figure

    if metric not in curve:
        raise ValueError(f"curve has no column {metric!r}; columns: {list(curve.columns)}")
    fig, ax = _figure(figsize)
    table = curve.assign(participant=curve["participant"].astype(str))
    fractions = np.sort(table["fraction"].unique())
    for name, part in table.groupby("model", sort=False):
        values = part.pivot(index="fraction", columns="participant", values=metric)
        values = values.reindex(fractions)
        mean = values.mean(axis=1).to_numpy()
        ax.plot(fractions, mean, marker="o", label=name)
        if values.shape[1] > 1:
            sem = (values.std(axis=1, ddof=1) / np.sqrt(values.count(axis=1))).to_numpy()
            ax.fill_between(fractions, mean - sem, mean + sem, alpha=0.2)
        if name == reference:
            ax.axhline(mean[-1], linestyle="--", color="0.5", linewidth=1,
                       label=f"{name}, all data")
    ax.set_xscale("log", base=2)
    ax.set_xticks(fractions, [_fraction_label(f) for f in fractions])
    ax.set_xlabel("fraction of the participant's encoding training data")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    return fig


def _fraction_label(fraction):
    if fraction == 1:
        return "1"
    inverse = 1 / fraction
    return f"1/{inverse:.0f}" if abs(inverse - round(inverse)) < 1e-9 else f"{fraction:g}"
