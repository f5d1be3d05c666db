"""Layer-wise encoding evaluation of per-TR features (the paper's alignment protocol).

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
(``sk_braintune.realdata``) and the low-level residualiser
(:func:`sk_braintune.analysis.low_level_comparison`).
"""

from __future__ import annotations

import inspect
import numbers

import numpy as np

__all__ = ["LOW_LEVEL_KINDS", "delay_per_story", "layer_slices", "split_layers",
           "default_encoder", "fit_score_encoding", "layerwise_alignment", "low_level_impacts"]

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
    from .encoding import FIRDelayer

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
    from .encoding import RidgeEncoder

    return RidgeEncoder(alphas="default", cv=cv, backend=backend)


def _clamp_inner_cv(estimator, train_groups):
    """Clamp every integer ``cv`` parameter (``cv`` or ``<step>__cv``) to the story count."""
    from .model_selection import clamp_cv

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
        (the fitted estimator).
    """
    from sklearn.base import clone

    from .metrics import correlation_score, normalized_correlation
    from .preprocessing import zscore_per_story

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
    _fit_with_groups(model, X[train], responses[train], train_groups)
    r = correlation_score(responses[test], np.asarray(model.predict(X[test])),
                          multioutput="raw_values")
    normalized = None if noise_ceiling is None else normalized_correlation(r, noise_ceiling)
    return {"r": r, "normalized": normalized,
            "best_alphas": getattr(model, "best_alphas_", None), "model": model}


def _normalized_layer_scores(layer_features, **kwargs):
    """One layer of :func:`layerwise_alignment` (module level: picklable for joblib)."""
    return fit_score_encoding(layer_features, **kwargs)["normalized"]


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
        ``{"roi": {label: ndarray (n_layers,)}, "voxels": ndarray (n_layers, n_voxels)}``: ROI
        means of the normalised r per layer, and the per-voxel normalised r.
    """
    from .metrics import roi_means

    from functools import partial

    from .parallel import parallel_map

    per_layer = split_layers(features, n_layers)
    fit_layer = partial(_normalized_layer_scores, responses=responses, groups=groups,
                        train_stories=train_stories, test_stories=test_stories,
                        estimator=estimator, delays=delays, noise_ceiling=noise_ceiling)
    per_voxel = np.asarray(parallel_map(
        fit_layer, (per_layer[:, layer] for layer in range(n_layers)), n_jobs=n_jobs))
    labels = np.asarray(voxel_labels)
    rois = {}
    for layer_scores in per_voxel:
        for label, value in roi_means(layer_scores, labels).items():
            rois.setdefault(label, []).append(value)
    return {"roi": {k: np.asarray(v) for k, v in rois.items()}, "voxels": per_voxel}


def low_level_impacts(dataset, features, groups, train_stories, test_stories, *,
                      estimator=None, cv=5, kinds=LOW_LEVEL_KINDS):
    """Low-level impact on the alignment of each model's features (demo and real data alike).

    The low-level features of ``kinds`` (:func:`sk_braintune.features.lowlevel.lowlevel_features`,
    fitted on the training stories) are joined and regressed out of each model's features by
    :func:`sk_braintune.analysis.low_level_comparison`; the encoding model is refit on the
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

    Returns
    -------
    impacts : dict of str to dict
        Per model, per ROI: ``{"A", "A_resid", "impact_percent"}`` (floats).
    """
    from .analysis import low_level_comparison
    from .features.lowlevel import lowlevel_features
    from .preprocessing import split_by_story

    train, test = list(train_stories), list(test_stories)
    stories = train + test
    lowlevel = [lowlevel_features(dataset, kind, stories, fit_stories=train) for kind in kinds]
    responses = {s: np.asarray(dataset.responses[s]) for s in stories}
    noise_ceiling = np.asarray(dataset.noise_ceiling)
    labels = np.asarray(dataset.voxel_labels)
    out = {}
    for name, feats in features.items():
        comparison = low_level_comparison(
            split_by_story(feats, groups), lowlevel, responses, train, test, cv=cv,
            estimator=estimator, noise_ceiling=noise_ceiling, voxel_labels=labels)
        table = comparison.impact
        out[name] = {str(row["roi"] if "roi" in table else idx): {
            "A": float(row["A"]), "A_resid": float(row["A_resid"]),
            "impact_percent": float(row["impact_percent"])}
            for idx, row in table.iterrows()}
    return out
