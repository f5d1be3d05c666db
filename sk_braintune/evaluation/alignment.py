"""Layer-wise encoding evaluation of per-TR features (the toolkit's alignment protocol).

Its defaults (``alphas="default"``, story-grouped ``cv=5``, correlation scoring) are not the
brain-tuning paper's protocol; ``sk-braintune evaluate --protocol paper`` selects that one (the
paper's 24 training stories, ``alphas="huth"``, ``cv_scoring="huth_rsq"``, the reference's
global chunk grid, and scores against the mean of the test story's repeats).

Per layer: z-score the features per story, add FIR delays within each story, fit an encoding
model (by default a voxelwise ridge with one alpha per voxel and story-grouped inner CV) on the
training stories, predict the held-out story, and divide Pearson r by the noise ceiling. These
functions take features that are already computed, so the same code scores a pretrained model,
a brain-tuned one, a control, or features with low-level information regressed out.

The encoding model is an estimator (or a :class:`~sklearn.pipeline.Pipeline` ending in one),
as in MNE's ``ReceptiveField(estimator=...)``: it is cloned for every fit, an integer ``cv`` in
it is clamped to the number of training stories, and the story of each row reaches its ``fit``
as ``groups``. So ``RidgeEncoder(backend="torch")`` runs every fit of the demo and of
``sk-braintune evaluate`` on the GPU.

This is the one evaluation path of the demo (``sk_braintune.study``), the real-data commands
(``sk_braintune.commands.realdata``) and the low-level residualiser
(:func:`sk_braintune.evaluation.low_level_comparison`).
"""

from __future__ import annotations

import inspect
import logging
import math
import numbers

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["LOW_LEVEL_KINDS", "delay_per_story", "layer_slices", "split_layers",
           "default_encoder", "fit_score_encoding", "layerwise_alignment",
           "lowlevel_feature_spaces", "low_level_impacts", "variance_partition_summary",
           "alignment_significance"]

# low-level feature spaces regressed out by the low-level impact (demo and real data alike)
LOW_LEVEL_KINDS = ("powspec", "phoneme", "diphone", "articulation")


def delay_per_story(features, groups, delays=(1, 2, 3, 4)):
    """FIR delays that never cross a story boundary.

    Parameters
    ----------
    features : ndarray of shape (n_trs, n_features)
    groups : array-like of shape (n_trs,)
        Story of each row; each story one contiguous run in time order.
    delays : sequence of int, default=(1, 2, 3, 4)
        Empty for none (``features`` returned unchanged).

    Returns
    -------
    delayed : ndarray of shape (n_trs, len(delays) * n_features)
    """
    from ..encoding import FIRDelayer

    if len(delays) == 0:
        return features
    return FIRDelayer(delays=tuple(delays)).fit_transform(features, groups=np.asarray(groups))


def layer_slices(n_layers, dim):
    """Column slices of each layer in features concatenated layer by layer.

    Parameters
    ----------
    n_layers : int
    dim : int
        Units per layer.

    Returns
    -------
    slices : list of slice
    """
    return [slice(i * dim, (i + 1) * dim) for i in range(n_layers)]


def split_layers(features, n_layers):
    """View features concatenated layer by layer as ``(n_samples, n_layers, dim)``.

    Parameters
    ----------
    features : ndarray of shape (n_samples, n_layers * dim)
    n_layers : int

    Returns
    -------
    per_layer : ndarray of shape (n_samples, n_layers, dim)
        A view (no copy); ``per_layer[:, -1]`` is the last layer.
    """
    n, total = features.shape
    if total % n_layers:
        raise ValueError(f"{total} feature columns do not split into {n_layers} layers")
    return features.reshape(n, n_layers, total // n_layers)


def default_encoder(cv=5, backend="numpy"):
    """The encoding model used when none is given: ``RidgeEncoder(alphas="default", cv=cv)``.

    Parameters
    ----------
    cv : int or CV splitter, default=5
        Inner CV over the training stories (clamped to their number at fit time).
    backend : {"numpy", "torch"}, default="numpy"

    Returns
    -------
    encoder : RidgeEncoder
    """
    from ..encoding import RidgeEncoder

    return RidgeEncoder(alphas="default", cv=cv, backend=backend)


def _clamp_inner_cv(estimator, train_groups):
    """Clamp every integer ``cv`` parameter (``cv`` or ``<step>__cv``) to the story count."""
    from ..model_selection import clamp_cv

    updates = {key: clamp_cv(value, train_groups)
               for key, value in estimator.get_params(deep=True).items()
               if (key == "cv" or key.endswith("__cv")) and isinstance(value, numbers.Integral)
               and not isinstance(value, bool)}
    return estimator.set_params(**updates) if updates else estimator


def _fit_with_groups(estimator, X, y, groups):
    """Fit, passing the stories as ``groups`` to the estimator (or a Pipeline's last step)."""
    from sklearn import get_config
    from sklearn.pipeline import Pipeline

    if groups is None:
        return estimator.fit(X, y)
    if get_config().get("enable_metadata_routing", False):
        return estimator.fit(X, y, groups=groups)
    if isinstance(estimator, Pipeline):
        name, last = estimator.steps[-1]
        if last != "passthrough" and "groups" in inspect.signature(last.fit).parameters:
            return estimator.fit(X, y, **{f"{name}__groups": groups})
        return estimator.fit(X, y)
    if "groups" in inspect.signature(estimator.fit).parameters:
        return estimator.fit(X, y, groups=groups)
    return estimator.fit(X, y)


def fit_score_encoding(features, responses, groups, train_stories, test_stories, *,
                       estimator=None, delays=(1, 2, 3, 4), noise_ceiling=None,
                       standardize=True):
    """Fit an encoding model on training stories and score held-out stories.

    Parameters
    ----------
    features : ndarray of shape (n_trs, n_features)
        Per-TR features of all stories (rows of each story contiguous and in time order).
    responses : ndarray of shape (n_trs, n_voxels)
        Never copied whole: when the rows of the training stories (of the test stories) are
        one contiguous run, e.g. the test story stacked last, the model is fitted (scored) on
        a view; otherwise those rows are copied.
    groups : array-like of shape (n_trs,)
        Story of each row.
    train_stories, test_stories : sequence of str
    estimator : regressor or Pipeline, optional
        The encoding model; ``RidgeEncoder(alphas="default", cv=5)``
        (:func:`default_encoder`) when None. It is cloned; an integer ``cv`` parameter (also a
        step's ``<step>__cv``) is clamped to the number of training stories, and ``groups``
        (the training rows' stories) reach its ``fit`` (a Pipeline's last step's ``fit``, or
        any step through metadata routing when that is enabled). With a single training story
        no groups are passed, so an integer ``cv`` splits that story into contiguous blocks.
    delays : sequence of int, default=(1, 2, 3, 4)
        FIR delays in TRs, never crossing a story boundary (empty for none).
    noise_ceiling : ndarray of shape (n_voxels,), optional
        When given, ``normalized`` holds r / cc_max (NaN where cc_max <= 0.05).
    standardize : bool, default=True
        Z-score the features per story first (float32); False uses them as given (cast to
        float32), e.g. when they are already z-scored.

    Returns
    -------
    result : dict
        ``r`` (n_voxels,) Pearson r on the test rows, ``normalized`` (n_voxels,) or None,
        ``best_alphas`` (n_voxels,) or None when the model has no ``best_alphas_``, ``model``
        (the fitted estimator), ``prediction`` (n_test_rows, n_voxels) the predictions of the
        test rows (in row order), ``test_rows`` (n_trs,) bool mask of those rows.
    """
    from sklearn.base import clone

    from ..metrics import correlation_score, normalized_correlation
    from ..preprocessing import select_rows, zscore_per_story

    groups = np.asarray(groups)
    responses = np.asarray(responses)
    n_features_rows = np.shape(features)[0]
    if not n_features_rows == len(responses) == len(groups):
        raise ValueError(f"features ({n_features_rows} rows), responses ({len(responses)}) and "
                         f"groups ({len(groups)}) need one row per TR each")
    features = (zscore_per_story(features, groups, dtype=np.float32) if standardize
                else np.asarray(features, dtype=np.float32))
    X = delay_per_story(features, groups, delays)
    train = np.isin(groups, list(train_stories))
    test = np.isin(groups, list(test_stories))
    if not train.any() or not test.any():
        raise ValueError(f"no rows for the training stories {list(train_stories)} or the test "
                         f"stories {list(test_stories)}; the stories present are "
                         f"{list(dict.fromkeys(groups.tolist()))}")
    train_groups = groups[train]
    model = clone(default_encoder() if estimator is None else estimator)
    if len(np.unique(train_groups)) >= 2:
        model = _clamp_inner_cv(model, train_groups)
    else:
        train_groups = None  # one story: an integer cv takes contiguous blocks of it
    # views, not copies, when the training (test) stories are stacked contiguously, as
    # windows_from_dataset(data, train + test) stacks them: at full size a copy of the
    # training responses is as large as the responses
    _fit_with_groups(model, select_rows(X, train), select_rows(responses, train), train_groups)
    prediction = np.asarray(model.predict(select_rows(X, test))).reshape(int(test.sum()), -1)
    r = correlation_score(select_rows(responses, test), prediction, multioutput="raw_values")
    normalized = None if noise_ceiling is None else normalized_correlation(r, noise_ceiling)
    return {"r": r, "normalized": normalized,
            "best_alphas": getattr(model, "best_alphas_", None), "model": model,
            "prediction": prediction, "test_rows": test}


def _layer_scores(item, **kwargs):
    """One layer of :func:`layerwise_alignment` (module level: picklable for joblib).

    ``item`` is ``(layer_features, keep_prediction)``; the held-out prediction comes back only
    where asked (the last layer), so workers do not ship every layer's predictions.
    """
    layer_features, keep_prediction = item
    result = fit_score_encoding(layer_features, **kwargs)
    return (result["normalized"], result["prediction"] if keep_prediction else None,
            result["test_rows"])


def layerwise_alignment(features, n_layers, responses, groups, train_stories, test_stories, *,
                        noise_ceiling, voxel_labels, estimator=None, delays=(1, 2, 3, 4),
                        n_jobs=None):
    """Noise-ceiling-normalised alignment of every layer, averaged per voxel group.

    Parameters
    ----------
    features : ndarray of shape (n_trs, n_layers * dim)
        Per-TR features, layers concatenated (as :class:`sk_braintune.SpeechFeatureExtractor`
        returns them).
    n_layers : int
    responses : ndarray of shape (n_trs, n_voxels)
    groups : array-like of shape (n_trs,)
    train_stories, test_stories : sequence of str
    noise_ceiling : ndarray of shape (n_voxels,)
    voxel_labels : ndarray of shape (n_voxels,)
        ROI or voxel kind per voxel.
    estimator, delays
        As in :func:`fit_score_encoding` (one clone per layer).
    n_jobs : int, optional
        Layers fitted at once, through joblib (:func:`sk_braintune.parallel.parallel_map`):
        None follows the active joblib configuration (one at a time by default; every worker
        of a dask cluster inside ``joblib.parallel_config(backend="dask")``). Each worker
        holds one layer's fit, so memory grows with ``n_jobs``.

    Returns
    -------
    table : dict
        ``{"roi": {label: ndarray (n_layers,)}, "voxels": ndarray (n_layers, n_voxels),
        "last_layer": dict}``: ROI means of the normalised r per layer, the per-voxel
        normalised r, and the last layer's held-out fit (``y_true`` and ``prediction`` of
        shape (n_test_rows, n_voxels), ``groups`` (n_test_rows,)) for
        :func:`alignment_significance` without a refit.
    """
    from functools import partial

    from ..metrics import roi_means
    from ..parallel import parallel_map
    from ..preprocessing import select_rows

    per_layer = split_layers(features, n_layers)
    fit_layer = partial(_layer_scores, responses=responses, groups=groups,
                        train_stories=train_stories, test_stories=test_stories,
                        estimator=estimator, delays=delays, noise_ceiling=noise_ceiling)
    scores = parallel_map(fit_layer, ((per_layer[:, layer], layer == n_layers - 1)
                                      for layer in range(n_layers)), n_jobs=n_jobs)
    per_voxel = np.asarray([normalized for normalized, _, _ in scores])
    _, prediction, test_rows = scores[-1]
    last_layer = {"y_true": np.array(select_rows(np.asarray(responses), test_rows)),
                  "prediction": prediction, "groups": np.asarray(groups)[test_rows]}
    labels = np.asarray(voxel_labels)
    rois = {}
    for layer_scores in per_voxel:
        for label, value in roi_means(layer_scores, labels).items():
            rois.setdefault(label, []).append(value)
    return {"roi": {k: np.asarray(v) for k, v in rois.items()}, "voxels": per_voxel,
            "last_layer": last_layer}


def lowlevel_feature_spaces(dataset, train_stories, test_stories, kinds=LOW_LEVEL_KINDS):
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
    lowlevel : list of dict of str to ndarray of shape (n_trs_story, d_kind)
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
                      estimator=None, cv=5, kinds=LOW_LEVEL_KINDS, lowlevel=None,
                      responses=None):
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
    lowlevel : list of dict, optional
        Those spaces already built by :func:`lowlevel_feature_spaces` (``kinds`` is then
        ignored).
    responses : ndarray of shape (n_trs, n_voxels), optional
        The responses already stacked in the rows of ``groups`` (e.g. ``y`` of
        :func:`sk_braintune.windows.windows_from_dataset`): used without a copy when
        ``groups`` holds the training stories, then the test stories, each contiguous; read
        from ``dataset`` when None (at full size, a second copy of every response).

    Returns
    -------
    impacts : dict of str to dict
        Per model, per ROI: ``{"A", "A_resid", "impact_percent"}`` (floats).
    """
    from . import low_level_comparison
    from ..preprocessing import split_by_story

    train, test = list(train_stories), list(test_stories)
    stories = train + test
    if lowlevel is None:
        lowlevel = lowlevel_feature_spaces(dataset, train, test, kinds)
    responses = _stacked_responses(dataset, responses, groups, stories)
    noise_ceiling = np.asarray(dataset.noise_ceiling)
    labels = np.asarray(dataset.voxel_labels)
    out = {}
    for name, feats in features.items():
        feats = np.asarray(feats)
        if len(feats) != len(groups):
            raise ValueError(f"features of {name!r} ({len(feats)} rows) and groups "
                             f"({len(groups)}) need one row per TR each")
        comparison = low_level_comparison(
            split_by_story(feats, groups), lowlevel, responses, train, test, cv=cv,
            estimator=estimator, noise_ceiling=noise_ceiling, voxel_labels=labels)
        table = comparison.impact
        out[name] = {str(row["roi"] if "roi" in table else idx): {
            "A": float(row["A"]), "A_resid": float(row["A_resid"]),
            "impact_percent": float(row["impact_percent"])}
            for idx, row in table.iterrows()}
    return out



def variance_partition_summary(dataset, features, groups, train_stories, test_stories, *,
                               lowlevel=None, kinds=LOW_LEVEL_KINDS, delays=(1, 2, 3, 4),
                               n_iter=10, cv=5, backend="numpy", random_state=0,
                               responses=None):
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
    lowlevel : list of dict, optional
        The low-level spaces from :func:`lowlevel_feature_spaces` (built here when None).
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
    if lowlevel is None:
        lowlevel = lowlevel_feature_spaces(dataset, train, test, kinds)
    stories = list(dict.fromkeys(groups.tolist()))
    low = np.concatenate([np.hstack([np.asarray(space[s], dtype=np.float32) for space in lowlevel])
                          for s in stories])
    responses = _stacked_responses(dataset, responses, groups, stories)
    if len(low) != len(groups) or len(responses) != len(groups):
        raise ValueError(f"the low-level features ({len(low)} rows) and responses "
                         f"({len(responses)}) of the stories {stories} do not match groups "
                         f"({len(groups)} rows); give groups story by story, in time order")
    low = delay_per_story(zscore_per_story(low, groups, dtype=np.float32), groups, delays)
    labels = np.asarray(dataset.voxel_labels)
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


def alignment_significance(y_true, y_pred, voxel_labels, *, groups=None, noise_ceiling=None,
                           block_length=10, n_permutations=1000, n_bootstraps=1000,
                           alpha=0.05, random_state=0):
    """Significance of a held-out fit: per-voxel p and q values, ROI counts and intervals.

    Per voxel, the p-value of the held-out Pearson r comes from permuting blocks of
    ``block_length`` TRs of the predictions
    (:func:`sk_braintune.encoding.block_permutation_test`, one-sided, r > 0); q-values are
    Benjamini-Hochberg adjusted across voxels (:func:`sk_braintune.encoding.fdr_bh`). Per ROI:
    the number of voxels with ``q < alpha`` and a block-bootstrap confidence interval (95%)
    of the mean normalised r (:func:`sk_braintune.encoding.roi_confidence_intervals`).

    Parameters
    ----------
    y_true, y_pred : ndarray of shape (n_test_rows, n_voxels)
        Held-out responses and predictions (``layerwise_alignment(...)["last_layer"]``).
    voxel_labels : array-like of shape (n_voxels,)
    groups : array-like of shape (n_test_rows,), optional
        Story of each row: blocks never straddle stories.
    noise_ceiling : ndarray of shape (n_voxels,), optional
        Normalises the r of the intervals (raw r when None).
    block_length : int, default=10
    n_permutations, n_bootstraps : int, default=1000
    alpha : float, default=0.05
        FDR level of the counts.
    random_state : int, default=0
        Seeds the permutations and the bootstrap.

    Returns
    -------
    significance : dict
        ``r``, ``p_values``, ``q_values`` (ndarrays of shape (n_voxels,)) and ``roi``:
        ``{roi: {"n_voxels", "n_significant", "mean", "low", "high"}}``.
    """
    from sklearn.utils import check_random_state

    from ..encoding import block_permutation_test, fdr_bh, roi_confidence_intervals, time_blocks

    labels = np.asarray(voxel_labels)
    n_blocks = len(time_blocks(len(y_true), block_length, groups))
    if math.factorial(min(n_blocks, 20)) < 20 * n_permutations:
        # few blocks have few distinct orders: many permutations repeat the observed one
        logger.warning("the held-out data make only %d blocks of %d TRs (%d orders): the "
                       "block-permutation p-values cannot be small; use a longer test story",
                       n_blocks, block_length, math.factorial(n_blocks))
    rng = check_random_state(random_state)
    r, p_values = block_permutation_test(y_true, y_pred, block_length=block_length,
                                         n_permutations=n_permutations, groups=groups,
                                         random_state=rng)
    significant, q_values = fdr_bh(p_values, alpha=alpha)
    intervals = roi_confidence_intervals(y_true, y_pred, labels, block_length=block_length,
                                         n_bootstraps=n_bootstraps, groups=groups,
                                         cc_max=noise_ceiling, random_state=rng)
    roi = {str(label): {"n_voxels": int(np.sum(labels == label)),
                        "n_significant": int(np.sum(significant & (labels == label))),
                        **{k: float(v) for k, v in interval.items()}}
           for label, interval in intervals.items()}
    return {"r": r, "p_values": p_values, "q_values": q_values, "roi": roi}
