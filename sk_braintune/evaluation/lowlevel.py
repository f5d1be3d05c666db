"""The low-level family: the impact ``(A - A_resid) / A`` and the variance-partitioning summary.

The paper's control (after Oota et al.): low-level speech features (power spectrum, phonemes,
diphones, articulation; :mod:`sk_braintune.features.lowlevel`) are regressed out of a model's
features by a :class:`~sk_braintune.evaluation.Residualizer` fitted on the training stories, the
encoding model is refit on the residuals, and the *low-level impact* is ``(A - A_resid) / A`` in
percent, where ``A`` is the brain alignment of the raw features and ``A_resid`` that of the
residuals (:func:`low_level_impact`, :func:`low_level_comparison`, and per model and voxel kind
:func:`low_level_impacts`). :func:`variance_partition_summary` is a second estimate of the same
question: the variance the model's features share with the low-level features.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.utils import Bunch

from ..preprocessing import zscore
from .alignment import default_encoder, delay_per_story, fit_score_encoding
from .residualize import Residualizer
from .roi import roi_summary

__all__ = ["LOW_LEVEL_KINDS", "low_level_impact", "low_level_comparison",
           "low_level_feature_spaces", "low_level_impacts", "variance_partition_summary"]

# low-level feature spaces regressed out by the low-level impact (demo and real data alike)
LOW_LEVEL_KINDS = ("powspec", "phoneme", "diphone", "articulation")


def low_level_impact(A, A_resid, voxel_labels=None, rois=None):
    """Low-level impact ``(A - A_resid) / A`` in percent.

    Parameters
    ----------
    A : array-like of shape (n_voxels,) or scalar
        Alignment (e.g. noise-ceiling-normalised r) with the raw features.
    A_resid : array-like of shape (n_voxels,) or scalar
        Alignment after residualising the low-level features.
    voxel_labels : array-like of shape (n_voxels,), optional
        ROI or voxel kind per voxel. When given, ``A`` and ``A_resid`` are averaged per ROI
        (NaN voxels left out) and the impact is computed from the ROI means.
    rois : dict of str to list of str, optional
        Groups of labels (see :func:`sk_braintune.evaluation.roi_summary`).

    Returns
    -------
    impact : ndarray or pandas.DataFrame
        Element-wise impact without labels; otherwise a DataFrame indexed by ROI with columns
        ``A``, ``A_resid``, ``impact_percent``, ``n_voxels``.
    """
    if voxel_labels is None:
        A = np.asarray(A, dtype=np.float64)
        A_resid = np.asarray(A_resid, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            return 100.0 * (A - A_resid) / A
    raw = roi_summary(A, voxel_labels, rois=rois)
    resid = roi_summary(A_resid, voxel_labels, rois=rois)
    table = raw.rename(columns={"mean": "A"})[["A", "n_voxels"]]
    table.insert(1, "A_resid", resid["mean"])
    with np.errstate(divide="ignore", invalid="ignore"):
        table.insert(2, "impact_percent", 100.0 * (table["A"] - table["A_resid"]) / table["A"])
    return table


def _stack(per_story, stories):
    return np.concatenate([per_story[s] for s in stories], axis=0)


def _as_story_dict(value, name):
    if isinstance(value, dict):
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, dict) for v in value):
        # several low-level spaces: join their columns per story
        return {s: np.hstack([np.asarray(v[s], dtype=np.float64) for v in value])
                for s in value[0]}
    raise TypeError(f"{name} must be a dict story -> (n_trs, d) array (or a list of such dicts)")


def low_level_comparison(features, low_level, responses, train_stories, test_stories, *,
                         delays=(1, 2, 3, 4), estimator=None, alphas=None, cv=5,
                         noise_ceiling=None, voxel_labels=None, rois=None, min_ceiling=0.05):
    """Encoding model on raw features vs. refit on low-level residuals, on held-out stories.

    Per story, model and low-level features are z-scored; a :class:`Residualizer` is fitted on
    the training stories and applied to every story; both feature sets are then scored by
    :func:`sk_braintune.evaluation.fit_score_encoding` (FIR delays per story, the encoding model
    fitted on the training stories, Pearson r per voxel on the test stories).

    Parameters
    ----------
    features : dict of str to ndarray of shape (n_trs, d_model)
        Model features per story (one layer, or several joined).
    low_level : dict of str to ndarray of shape (n_trs, d_low), or list of such dicts
        Low-level features per story (a list is joined column-wise, e.g. phonemes + powspec).
    responses : dict of str to ndarray of shape (n_trs, n_voxels), or ndarray
        Per story, or already stacked: an ndarray of shape (n_trs_total, n_voxels) holding
        the stories of ``train_stories + test_stories`` in that order, used as is (at full
        size stacking them here would copy every response).
    train_stories, test_stories : list of str
    delays : tuple of int, default=(1, 2, 3, 4)
        FIR delays in TRs (empty for none).
    estimator : regressor or Pipeline, optional
        Encoding model, cloned twice (see :func:`sk_braintune.evaluation.fit_score_encoding`:
        its integer ``cv`` is clamped to the training stories and it receives their
        ``groups``); ``RidgeEncoder(alphas="default", cv=cv)`` by default.
    alphas, cv :
        Passed to the :class:`Residualizer` (and ``cv`` to the default encoding model); an int
        ``cv`` larger than the number of training stories becomes one fold per story.
    noise_ceiling : ndarray of shape (n_voxels,), optional
        cc_max per voxel; when given, alignments are r / cc_max with voxels of
        ``cc_max <= min_ceiling`` excluded (NaN) from ROI means.
    voxel_labels : ndarray of shape (n_voxels,), optional
        ROI / kind per voxel; the impact table is per ROI (one row ``"all"`` without labels).
    rois : dict of str to list of str, optional
        Label groups, see :func:`sk_braintune.evaluation.roi_summary`.
    min_ceiling : float, default=0.05

    Returns
    -------
    result : sklearn.utils.Bunch
        ``r_raw``, ``r_resid`` (ndarray (n_voxels,), Pearson r on the test stories),
        ``alignment_raw``, ``alignment_resid`` (normalised when ``noise_ceiling`` is given),
        ``impact`` (DataFrame per ROI: ``A``, ``A_resid``, ``impact_percent``, ``n_voxels``),
        ``residualizer`` (fitted).
    """
    from ..metrics import normalized_correlation
    from ..model_selection import clamp_cv

    low_level = _as_story_dict(low_level, "low_level")
    stories = list(train_stories) + list(test_stories)
    stacked = isinstance(responses, np.ndarray)
    for s in stories:
        n_responses = len(features[s]) if stacked else len(responses[s])
        if len(features[s]) != len(low_level[s]) or len(features[s]) != n_responses:
            raise ValueError(f"story {s!r}: features ({len(features[s])}), low-level features "
                             f"({len(low_level[s])}) and responses ({n_responses}) must have "
                             "one row per TR each")
    if stacked and len(responses) != sum(len(features[s]) for s in stories):
        raise ValueError(f"stacked responses have {len(responses)} rows, but the stories "
                         f"{stories} have {sum(len(features[s]) for s in stories)} TRs; stack "
                         "them in the order train_stories + test_stories")
    model_z = {s: zscore(features[s]) for s in stories}
    low_z = {s: zscore(low_level[s]) for s in stories}
    d_low = next(iter(low_z.values())).shape[1]
    groups = np.concatenate([[s] * len(features[s]) for s in train_stories])
    if len(train_stories) >= 2:
        cv = clamp_cv(cv, groups)  # at most one story per fold
    elif isinstance(cv, numbers.Integral):
        groups = None  # a single story: contiguous blocks of it
    residualizer = Residualizer(low_level=d_low, alphas=alphas, cv=cv).fit(
        np.hstack([_stack(model_z, train_stories), _stack(low_z, train_stories)]), groups=groups)
    resid = {s: residualizer.transform(np.hstack([model_z[s], low_z[s]])) for s in stories}

    if estimator is None:
        estimator = default_encoder(cv=cv)
    # the encoding fits see the stories stacked in this order, each story's rows contiguous
    fit_groups = np.concatenate([[s] * len(features[s]) for s in stories])
    y = responses if stacked else _stack(responses, stories)
    scores = {}
    for name, feats in (("raw", model_z), ("resid", resid)):
        result = fit_score_encoding(_stack(feats, stories), y, fit_groups, train_stories,
                                    test_stories, estimator=estimator, delays=tuple(delays),
                                    standardize=False)
        scores[name] = result["r"]
    align_raw, align_resid = scores["raw"], scores["resid"]
    if noise_ceiling is not None:
        align_raw = normalized_correlation(align_raw, noise_ceiling, min_ceiling)
        align_resid = normalized_correlation(align_resid, noise_ceiling, min_ceiling)
    labels = (np.asarray(voxel_labels) if voxel_labels is not None
              else np.full(len(align_raw), "all", dtype=object))
    impact = low_level_impact(align_raw, align_resid, labels, rois=rois)
    return Bunch(r_raw=scores["raw"], r_resid=scores["resid"], alignment_raw=align_raw,
                 alignment_resid=align_resid, impact=impact, residualizer=residualizer)


def low_level_feature_spaces(dataset, train_stories, test_stories, kinds=LOW_LEVEL_KINDS):
    """The low-level feature spaces of :func:`low_level_impacts`, built once for reuse.

    Parameters
    ----------
    dataset : sklearn.utils.Bunch
        Story dataset.
    train_stories, test_stories : sequence of str
        The features are fitted (e.g. phoneme vocabularies) on the training stories.
    kinds : sequence of str, default=LOW_LEVEL_KINDS

    Returns
    -------
    low_level : list of dict of str to ndarray of shape (n_trs_story, d_kind)
        One dict (story -> features) per kind of ``kinds``.
    """
    from ..features.lowlevel import lowlevel_features

    train = list(train_stories)
    stories = train + list(test_stories)
    return [lowlevel_features(dataset, kind, stories, fit_stories=train) for kind in kinds]


def _stacked_responses(dataset, responses, groups, stories):
    """Responses of ``stories`` stacked in that order: ``responses`` as is, or read and stacked.

    ``responses`` (rows in the order of ``groups``) is used without a copy when ``groups``
    holds ``stories`` as contiguous runs in that order; otherwise the dataset's responses are
    stacked (:func:`sk_braintune.windows.stack_responses`).
    """
    from ..windows import stack_responses

    groups = np.asarray(groups)
    if responses is not None:
        responses = np.asarray(responses)
        if len(responses) != len(groups):
            raise ValueError(f"responses ({len(responses)} rows) and groups ({len(groups)}) "
                             "need one row per TR each")
        lengths = [int(np.count_nonzero(groups == s)) for s in stories]
        expected = np.repeat(np.asarray(stories, dtype=object), lengths)
        if len(expected) == len(groups) and np.array_equal(expected, groups):
            return responses
    return stack_responses(dataset, stories)


def low_level_impacts(dataset, features, groups, train_stories, test_stories, *,
                      estimator=None, cv=5, kinds=LOW_LEVEL_KINDS, low_level=None,
                      responses=None, noise_ceiling=None, voxel_labels=None):
    """Low-level impact on the alignment of each model's features (demo and real data alike).

    The low-level features of ``kinds`` (:func:`sk_braintune.features.lowlevel.lowlevel_features`,
    fitted on the training stories) are joined and regressed out of each model's features by
    :func:`sk_braintune.evaluation.low_level_comparison`; the encoding model is refit on the
    residuals and the impact ``(A - A_resid) / A`` is computed per voxel kind / ROI of
    ``dataset.voxel_labels`` (alignment normalised by ``dataset.noise_ceiling``).

    Parameters
    ----------
    dataset : sklearn.utils.Bunch
        Story dataset (``responses``, ``noise_ceiling``, ``voxel_labels``, the alignments and
        audio the low-level features need).
    features : dict of str to ndarray of shape (n_trs, d)
        Features per model (e.g. its last layer), rows in the order of ``groups``.
    groups : array-like of shape (n_trs,)
        Story of each row.
    train_stories, test_stories : sequence of str
    estimator : regressor or Pipeline, optional
        Encoding model, as in :func:`fit_score_encoding`.
    cv : int or CV splitter, default=5
        Inner CV of the residualising ridge (and of the default encoding model).
    kinds : sequence of str, default=LOW_LEVEL_KINDS
        Low-level feature spaces regressed out.
    low_level : list of dict, optional
        Those spaces already built by :func:`low_level_feature_spaces` (``kinds`` is then
        ignored).
    responses : ndarray of shape (n_trs, n_voxels), optional
        The responses already stacked in the rows of ``groups`` (e.g. ``y`` of
        :func:`sk_braintune.windows.windows_from_dataset`): used without a copy when
        ``groups`` holds the training stories, then the test stories, each contiguous; read
        from ``dataset`` when None (at full size, a second copy of every response).
    noise_ceiling : ndarray of shape (n_voxels,), optional
        ``dataset.noise_ceiling`` when None.
    voxel_labels : array-like of shape (n_voxels,), optional
        ``dataset.voxel_labels`` when None.

    Returns
    -------
    impacts : dict of str to dict
        Per model, per ROI: ``{"A", "A_resid", "impact_percent"}`` (floats).
    """
    from ..preprocessing import split_by_story

    train, test = list(train_stories), list(test_stories)
    stories = train + test
    if low_level is None:
        low_level = low_level_feature_spaces(dataset, train, test, kinds)
    responses = _stacked_responses(dataset, responses, groups, stories)
    noise_ceiling = np.asarray(dataset.noise_ceiling if noise_ceiling is None else noise_ceiling)
    labels = np.asarray(dataset.voxel_labels if voxel_labels is None else voxel_labels)
    out = {}
    for name, feats in features.items():
        feats = np.asarray(feats)
        if len(feats) != len(groups):
            raise ValueError(f"features of {name!r} ({len(feats)} rows) and groups "
                             f"({len(groups)}) need one row per TR each")
        comparison = low_level_comparison(
            split_by_story(feats, groups), low_level, responses, train, test, cv=cv,
            estimator=estimator, noise_ceiling=noise_ceiling, voxel_labels=labels)
        table = comparison.impact
        out[name] = {str(row["roi"] if "roi" in table else idx): {
            "A": float(row["A"]), "A_resid": float(row["A_resid"]),
            "impact_percent": float(row["impact_percent"])}
            for idx, row in table.iterrows()}
    return out


def variance_partition_summary(dataset, features, groups, train_stories, test_stories, *,
                               low_level=None, kinds=LOW_LEVEL_KINDS, delays=(1, 2, 3, 4),
                               n_iter=10, cv=5, backend="numpy", random_state=0,
                               responses=None, voxel_labels=None):
    """Variance partitioning of each model's features vs the low-level features, per ROI.

    A second estimate of the low-level impact next to :func:`low_level_impacts`: per voxel,
    :func:`sk_braintune.encoding.variance_partitioning` splits the held-out R^2 of the joint
    banded-ridge model (model features + the low-level features of ``kinds``, each z-scored
    per story and FIR-delayed within stories) into the variance only the model explains, only
    the low-level features explain, and both explain (negative estimates corrected by the
    least-squares projection of de Heer et al. 2017); the ``shared_fraction``
    ``shared / (unique_model + shared)`` is the share of the model's explained variance that
    low-level features also explain. Means per voxel kind / ROI of ``dataset.voxel_labels``
    by :func:`sk_braintune.encoding.partition_roi_summary`.

    Parameters
    ----------
    dataset : sklearn.utils.Bunch
        Story dataset (``responses``, ``voxel_labels`` and what the low-level features need).
    features : dict of str to ndarray of shape (n_trs, d)
        Features per model (e.g. its last layer), rows in the order of ``groups``.
    groups : array-like of shape (n_trs,)
        Story of each row; each story one contiguous run.
    train_stories, test_stories : sequence of str
    low_level : list of dict, optional
        The low-level spaces from :func:`low_level_feature_spaces` (built here when None).
    kinds : sequence of str, default=LOW_LEVEL_KINDS
    delays : sequence of int, default=(1, 2, 3, 4)
    n_iter : int, default=10
        Band-weight candidates of the joint model (few keep it cheap).
    cv : int, default=5
        Story-grouped inner CV folds (clamped to the training stories).
    backend : {"numpy", "torch"}, default="numpy"
    random_state : int, default=0
        Seeds the band-weight candidates.
    responses : ndarray of shape (n_trs, n_voxels), optional
        The responses already stacked in the rows of ``groups``, used without a copy (read
        from ``dataset`` and stacked when None).
    voxel_labels : array-like of shape (n_voxels,), optional
        ``dataset.voxel_labels`` when None.

    Returns
    -------
    partitions : dict
        ``{"roi": {model: {roi: {"unique_model", "unique_lowlevel", "shared",
        "shared_fraction", "r2_joint", "n_voxels"}}}, "voxels": {model: {key: ndarray
        (n_voxels,)}}}`` (ROI means leave NaN voxels out).
    """
    from ..encoding import partition_roi_summary, variance_partitioning
    from ..preprocessing import zscore_per_story

    groups = np.asarray(groups)
    train, test = list(train_stories), list(test_stories)
    if low_level is None:
        low_level = low_level_feature_spaces(dataset, train, test, kinds)
    stories = list(dict.fromkeys(groups.tolist()))
    low = np.concatenate([np.hstack([np.asarray(space[s], dtype=np.float32)
                                     for space in low_level]) for s in stories])
    responses = _stacked_responses(dataset, responses, groups, stories)
    if len(low) != len(groups) or len(responses) != len(groups):
        raise ValueError(f"the low-level features ({len(low)} rows) and responses "
                         f"({len(responses)}) of the stories {stories} do not match groups "
                         f"({len(groups)} rows); give groups story by story, in time order")
    low = delay_per_story(zscore_per_story(low, groups, dtype=np.float32), groups, delays)
    labels = np.asarray(dataset.voxel_labels if voxel_labels is None else voxel_labels)
    keys = ("unique_model", "unique_lowlevel", "shared", "shared_fraction", "r2_joint")
    out = {"roi": {}, "voxels": {}}
    for name, feats in features.items():
        X = delay_per_story(zscore_per_story(feats, groups, dtype=np.float32), groups, delays)
        result = variance_partitioning(X, low, responses, groups, train, test, n_iter=n_iter,
                                       cv=cv, backend=backend, random_state=random_state)
        out["voxels"][name] = {k: np.asarray(result[k]) for k in keys}
        out["roi"][name] = {str(roi): {k: float(v) if k != "n_voxels" else int(v)
                                       for k, v in row.items()}
                            for roi, row in partition_roi_summary(result, labels,
                                                                  keys=keys).items()}
    return out
