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

This is the one evaluation path of :func:`sk_braintune.evaluation.evaluate_listener` (the demo's
study and ``sk-braintune evaluate``) and of the low-level residualiser
(:func:`sk_braintune.evaluation.low_level_comparison`).
"""

from __future__ import annotations

import inspect
import numbers

import numpy as np

__all__ = ["delay_per_story", "layer_slices", "split_layers", "default_encoder",
           "fit_score_encoding", "layerwise_alignment"]


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
        :func:`sk_braintune.evaluation.alignment_significance` without a refit.
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
