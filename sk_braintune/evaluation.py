"""Layer-wise encoding evaluation of per-TR features (the paper's alignment protocol).

Per layer: z-score the features per story, add FIR delays within each story, fit a voxelwise
ridge (one alpha per voxel, story-grouped inner CV) on the training stories, predict the
held-out story, and divide Pearson r by the noise ceiling. These functions take features that
are already computed, so the same code scores a pretrained model, a brain-tuned one, a control,
or features with low-level information regressed out.
"""

from __future__ import annotations

import numpy as np

__all__ = ["zscore_per_story", "delay_per_story", "layer_slices", "fit_score_encoding",
           "layerwise_alignment"]


def zscore_per_story(features, groups):
    """Z-score each column within each story (constant columns become 0).

    Parameters
    ----------
    features : ndarray of shape (n_trs, n_features)
    groups : array-like of shape (n_trs,)
        Story of each row.

    Returns
    -------
    zscored : ndarray of shape (n_trs, n_features), float32
    """
    features = np.asarray(features, dtype=np.float32)
    groups = np.asarray(groups)
    out = np.empty_like(features)
    for story in np.unique(groups):
        rows = groups == story
        block = features[rows]
        std = block.std(axis=0)
        out[rows] = (block - block.mean(axis=0)) / np.where(std > 0, std, 1.0)
    return out


def delay_per_story(features, groups, delays=(1, 2, 3, 4)):
    """FIR delays that never cross a story boundary.

    Parameters
    ----------
    features : ndarray of shape (n_trs, n_features)
    groups : array-like of shape (n_trs,)
        Story of each row; each story one contiguous run in time order.
    delays : sequence of int, default=(1, 2, 3, 4)

    Returns
    -------
    delayed : ndarray of shape (n_trs, len(delays) * n_features)
    """
    from .encoding import FIRDelayer

    return FIRDelayer(delays=delays).fit_transform(features, groups=np.asarray(groups))


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


def fit_score_encoding(features, responses, groups, train_stories, test_stories, *,
                       noise_ceiling=None, delays=(1, 2, 3, 4), alphas="default", cv=5,
                       backend="numpy"):
    """Fit a voxelwise encoding model on training stories and score held-out stories.

    Parameters
    ----------
    features : ndarray of shape (n_trs, n_features)
        Per-TR features of all stories (rows in story order, contiguous per story).
    responses : ndarray of shape (n_trs, n_voxels)
    groups : array-like of shape (n_trs,)
        Story of each row.
    train_stories, test_stories : sequence of str
    noise_ceiling : ndarray of shape (n_voxels,), optional
        When given, ``normalized`` holds r / cc_max (NaN where cc_max <= 0.05).
    delays : sequence of int, default=(1, 2, 3, 4)
    alphas : str or array-like, default="default"
        Ridge grid (scikit-learn units), see :class:`sk_braintune.RidgeEncoder`.
    cv : int or splitter, default=5
        Inner CV over the training stories (grouped by story).
    backend : {"numpy", "torch"}, default="numpy"

    Returns
    -------
    result : dict
        ``r`` (n_voxels,) Pearson r on the test rows, ``normalized`` (n_voxels,) or None,
        ``best_alphas`` (n_voxels,), ``model`` (the fitted RidgeEncoder).
    """
    from .encoding import RidgeEncoder
    from .metrics import correlation_score, normalized_correlation

    groups = np.asarray(groups)
    X = delay_per_story(zscore_per_story(features, groups), groups, delays)
    train = np.isin(groups, list(train_stories))
    test = np.isin(groups, list(test_stories))
    if not train.any() or not test.any():
        raise ValueError("no rows for the training or the test stories")
    n_train_stories = len(np.unique(groups[train]))
    inner_cv = min(cv, n_train_stories) if isinstance(cv, int) else cv
    model = RidgeEncoder(alphas=alphas, cv=inner_cv, backend=backend)
    model.fit(X[train], responses[train], groups=groups[train])
    r = correlation_score(responses[test], model.predict(X[test]), multioutput="raw_values")
    normalized = None if noise_ceiling is None else normalized_correlation(r, noise_ceiling)
    return {"r": r, "normalized": normalized, "best_alphas": model.best_alphas_, "model": model}


def layerwise_alignment(features, n_layers, responses, groups, train_stories, test_stories, *,
                        noise_ceiling, voxel_labels, delays=(1, 2, 3, 4), alphas="default",
                        cv=5):
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
    delays, alphas, cv
        As in :func:`fit_score_encoding`.

    Returns
    -------
    table : dict
        ``{"roi": {label: ndarray (n_layers,)}, "voxels": ndarray (n_layers, n_voxels)}``: ROI
        means of the normalised r per layer, and the per-voxel normalised r.
    """
    from .metrics import roi_means

    dim = features.shape[1] // n_layers
    if dim * n_layers != features.shape[1]:
        raise ValueError(f"{features.shape[1]} feature columns do not split into {n_layers} "
                         "layers")
    per_voxel = []
    for cols in layer_slices(n_layers, dim):
        result = fit_score_encoding(features[:, cols], responses, groups, train_stories,
                                    test_stories, noise_ceiling=noise_ceiling, delays=delays,
                                    alphas=alphas, cv=cv)
        per_voxel.append(result["normalized"])
    per_voxel = np.asarray(per_voxel)
    labels = np.asarray(voxel_labels)
    rois = {}
    for layer_scores in per_voxel:
        for label, value in roi_means(layer_scores, labels).items():
            rois.setdefault(label, []).append(value)
    return {"roi": {k: np.asarray(v) for k, v in rois.items()}, "voxels": per_voxel}
