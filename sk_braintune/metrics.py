"""Voxel-wise metrics: Pearson correlation, noise ceiling, normalised correlation, ROI means.

All functions take voxels along the last axis and time (TRs) along the first, the layout of
``y`` everywhere in sk_braintune.
"""

from __future__ import annotations

import inspect

import numpy as np
from sklearn.base import clone
from sklearn.metrics import make_scorer
from sklearn.model_selection import check_cv

__all__ = [
    "correlation_score",
    "correlation_scorer",
    "noise_ceiling",
    "normalized_correlation",
    "roi_means",
    "cross_val_voxel_scores",
]


#: Spread (standard deviation) below which a column counts as constant, relative to its
#: largest magnitude: far above float64 round-off of a mean (~1e-16), far below any signal.
_ROUND_OFF = 1e3 * np.finfo(np.float64).eps


def _column_correlations(y_true, y_pred, sample_weight=None):
    """Pearson r per column of two (n_samples, n_targets) arrays; 0 for constant columns.

    A column is constant when its spread about the mean is at round-off level relative to its
    magnitude (``std <= 1e3 * eps * max|x|``): the centred values of a constant non-zero
    column are round-off, not zeros, and their correlation would be a meaningless +-1.
    """
    if sample_weight is None:
        weights = np.full(len(y_true), 1.0 / len(y_true))
    else:
        weights = np.asarray(sample_weight, dtype=np.float64)
        if weights.shape != (len(y_true),) or np.any(weights < 0) or weights.sum() <= 0:
            raise ValueError("sample_weight must be non-negative, one per sample, not all 0.")
        weights = weights / weights.sum()
    # a block of columns at a time: five float64 temporaries of the whole held-out story
    # would be 0.9 GB at 80,000 voxels
    return np.concatenate([
        _block_correlations(y_true[:, first:first + _CORRELATION_BLOCK],
                            y_pred[:, first:first + _CORRELATION_BLOCK], weights)
        for first in range(0, max(y_true.shape[1], 1), _CORRELATION_BLOCK)])


_CORRELATION_BLOCK = 4096


def _block_correlations(y_true, y_pred, weights):
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    true_centred = y_true - weights @ y_true
    pred_centred = y_pred - weights @ y_pred
    covariance = weights @ (true_centred * pred_centred)
    true_var = weights @ true_centred ** 2
    pred_var = weights @ pred_centred ** 2
    norms = np.sqrt(true_var * pred_var)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = covariance / norms
    # A constant prediction or response carries no linear information: count it as r = 0,
    # so that averages over voxels are not poisoned by NaN.
    constant = ((np.sqrt(true_var) <= _ROUND_OFF * np.abs(y_true).max(0))
                | (np.sqrt(pred_var) <= _ROUND_OFF * np.abs(y_pred).max(0)))
    return np.where((norms > 0) & ~constant, r, 0.0)


def correlation_score(y_true, y_pred, multioutput="uniform_average", sample_weight=None):
    """Pearson correlation between true and predicted responses, per target (voxel).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,) or (n_samples, n_targets)
        Measured responses.
    y_pred : array-like of shape (n_samples,) or (n_samples, n_targets)
        Predicted responses.
    multioutput : {"uniform_average", "raw_values"} or array-like of shape (n_targets,), \
            default="uniform_average"
        ``"raw_values"`` returns one r per target; ``"uniform_average"`` their mean; an array
        gives weights for a weighted mean.
    sample_weight : array-like of shape (n_samples,), default=None
        Weights of the samples (weighted means and covariances).

    Returns
    -------
    score : float or ndarray of shape (n_targets,)
        Targets whose true or predicted values are constant get r = 0 (constant: a spread at
        round-off level relative to the values' magnitude, so that a constant non-zero voxel
        is not scored r = +-1 from round-off).

    Examples
    --------
    >>> import numpy as np
    >>> from sk_braintune.metrics import correlation_score
    >>> correlation_score(np.arange(5.0), 2 * np.arange(5.0) + 1)
    1.0
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred must have the same shape; got {y_true.shape} and "
                         f"{y_pred.shape}.")
    if y_true.ndim not in (1, 2):
        raise ValueError(f"y_true must be 1-D or 2-D (n_samples, n_targets); got {y_true.ndim}-D.")
    if y_true.shape[0] < 2:
        raise ValueError("correlation_score needs at least 2 samples.")
    one_dim = y_true.ndim == 1
    r = _column_correlations(y_true.reshape(len(y_true), -1), y_pred.reshape(len(y_pred), -1),
                             sample_weight)
    if isinstance(multioutput, str):
        if multioutput == "raw_values":
            return float(r[0]) if one_dim else r
        if multioutput == "uniform_average":
            return float(np.mean(r))
        raise ValueError(f"multioutput must be 'raw_values', 'uniform_average' or an array of "
                         f"weights; got {multioutput!r}.")
    return float(np.average(r, weights=np.asarray(multioutput, dtype=np.float64)))


#: Scorer for ``GridSearchCV(scoring=correlation_scorer)``: mean Pearson r over targets.
correlation_scorer = make_scorer(correlation_score)


def noise_ceiling(repeats):
    """Maximum attainable correlation per voxel (Schoppe et al. 2016, ``cc_max``).

    Each repeat is z-scored per voxel over time; with ``y`` the mean over the ``N`` repeats,
    the signal-power fraction is ``SP = (N * var(y, ddof=1) - 1) / (N - 1)`` and
    ``cc_max = 1 / sqrt(1 + (1 / SP - 1) / N)``. For a response made of a signal of variance
    ``s2`` plus independent noise of variance ``sigma2`` per repeat, ``SP = s2 / (s2 + sigma2)``
    and ``cc_max = sqrt(s2 / (s2 + sigma2 / N))``, the correlation between the repeat mean and
    the signal. Undefined values (constant voxels, negative signal power) are set to 0.

    Parameters
    ----------
    repeats : array-like of shape (n_repeats, n_trs, n_voxels)
        Responses to the same stimulus presented ``n_repeats`` (>= 2) times; for one voxel
        pass shape ``(n_repeats, n_trs, 1)``.

    Returns
    -------
    cc_max : ndarray of shape (n_voxels,)
        float64; may slightly exceed 1 by chance for near-noiseless voxels.
    """
    repeats = np.asarray(repeats)
    if repeats.ndim != 3:
        hint = (" (a 2-D array is ambiguous: for one voxel use repeats[:, :, None], for one "
                "repeat there is no ceiling to estimate)" if repeats.ndim == 2 else "")
        raise ValueError(f"repeats must have shape (n_repeats, n_trs, n_voxels); got "
                         f"{repeats.shape}{hint}.")
    n_repeats, n_trs = repeats.shape[:2]
    if n_repeats < 2 or n_trs < 2:
        raise ValueError(f"noise_ceiling needs at least 2 repeats of at least 2 TRs; got "
                         f"{n_repeats} repeats of {n_trs} TRs.")
    # in voxel chunks (the metric is per voxel): the float64 temporaries of 90,000 voxels'
    # repeats would be several times the repeats themselves
    cc_max = np.empty(repeats.shape[2])
    for first in range(0, repeats.shape[2], _CEILING_CHUNK_VOXELS):
        part = np.asarray(repeats[:, :, first:first + _CEILING_CHUNK_VOXELS], dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            zscored = (part - part.mean(axis=1, keepdims=True)) / part.std(axis=1,
                                                                           keepdims=True)
            mean_response = zscored.mean(axis=0)
            signal_power = ((n_repeats * mean_response.var(axis=0, ddof=1) - 1.0)
                            / (n_repeats - 1.0))
            cc_max[first:first + _CEILING_CHUNK_VOXELS] = 1.0 / np.sqrt(
                1.0 + (1.0 / signal_power - 1.0) / n_repeats)
    return np.nan_to_num(cc_max, nan=0.0, posinf=0.0, neginf=0.0)


_CEILING_CHUNK_VOXELS = 8192


def normalized_correlation(r, cc_max, min_ceiling=0.05):
    """Correlation divided by the noise ceiling, NaN where the ceiling is too low.

    Voxels with ``cc_max <= min_ceiling`` carry no measurable signal; dividing by a tiny
    ceiling would explode, so they are set to NaN and thereby excluded from means taken with
    ``np.nanmean`` or :func:`roi_means`. (The reference code divides ``corrs / cc_max`` after
    ``nan_to_num(cc_max)``: zero-ceiling voxels get +-inf, or NaN where r is 0 too, and any
    mean over them is not finite.)

    Parameters
    ----------
    r : array-like of shape (n_voxels,) or (..., n_voxels)
        Correlations between predicted and measured responses.
    cc_max : array-like of shape (n_voxels,)
        Noise ceilings, e.g. from :func:`noise_ceiling`.
    min_ceiling : float, default=0.05
        Voxels with ``cc_max <= min_ceiling`` get NaN.

    Returns
    -------
    normalized : ndarray of the shape of ``r``
    """
    r = np.asarray(r, dtype=np.float64)
    cc_max = np.asarray(cc_max, dtype=np.float64)
    if r.shape[-1] != cc_max.shape[-1]:
        raise ValueError(f"r has {r.shape[-1]} voxels but cc_max has {cc_max.shape[-1]}.")
    valid = cc_max > min_ceiling
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(valid, r / np.where(valid, cc_max, 1.0), np.nan)


def roi_means(scores, labels, exclude_nan=True):
    """Mean score per region of interest (or voxel kind).

    Parameters
    ----------
    scores : array-like of shape (n_voxels,)
        Per-voxel scores (e.g. from :func:`normalized_correlation`).
    labels : array-like of shape (n_voxels,)
        ROI name (or any hashable label) per voxel.
    exclude_nan : bool, default=True
        Leave NaN scores (excluded voxels) out of each mean rather than propagating them;
        an ROI whose voxels are all NaN gets NaN.

    Returns
    -------
    means : dict
        ``{label: mean score}`` in sorted label order.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError(f"scores and labels must be 1-D arrays of the same length; got "
                         f"{scores.shape} and {labels.shape}.")
    means = {}
    for label in np.unique(labels):
        values = scores[labels == label]
        if exclude_nan:
            values = values[~np.isnan(values)]
        means[label.item() if hasattr(label, "item") else label] = (
            float(values.mean()) if values.size else float("nan"))
    return means


def _requested_params(estimator, method, available):
    """Metadata among ``available`` that ``estimator.<method>`` should receive."""
    from sklearn import get_config
    from sklearn.utils.metadata_routing import get_routing_for_object

    if get_config().get("enable_metadata_routing", False):
        routing = get_routing_for_object(estimator)
        return {k: v for k, v in available.items() if k in routing.consumes(method, list(available))}
    # Without routing, pass what the method's signature names explicitly.
    parameters = inspect.signature(getattr(estimator, method)).parameters
    return {k: v for k, v in available.items() if k in parameters}


def cross_val_voxel_scores(estimator, X, y, groups=None, cv=5):
    """Per-fold, per-voxel test correlations of a cross-validated encoding model.

    Parameters
    ----------
    estimator : estimator
        Regressor (or pipeline) with ``fit`` and ``predict``; cloned for each fold.
    X : array-like of shape (n_samples, ...)
        Inputs indexable by sample (arrays or :class:`~sk_braintune.AudioWindows`).
    y : array-like of shape (n_samples, n_voxels)
        Responses.
    groups : array-like of shape (n_samples,), default=None
        Story label per sample, used by group splitters and routed to the estimator's ``fit``
        (and ``predict``) when it requests ``groups`` (metadata routing enabled) or, without
        routing, when the method's signature has a ``groups`` parameter.
    cv : int, cross-validation generator or iterable, default=5
        As in :func:`sklearn.model_selection.cross_val_score`; an int means ``KFold`` without
        shuffling (contiguous blocks), or ``GroupKFold`` when ``groups`` is given.

    Returns
    -------
    scores : ndarray of shape (n_splits, n_voxels)
    """
    from sklearn.model_selection import GroupKFold

    y = np.asarray(y)
    if groups is not None:
        groups = np.asarray(groups)
    if isinstance(cv, int) and groups is not None:
        cv = GroupKFold(n_splits=cv)
    splitter = check_cv(cv)
    scores = []
    for train, test in splitter.split(X, y, groups):
        model = clone(estimator)
        fit_params = {} if groups is None else _requested_params(model, "fit",
                                                                 {"groups": groups[train]})
        model.fit(_take(X, train), y[train], **fit_params)
        predict_params = {} if groups is None else _requested_params(model, "predict",
                                                                     {"groups": groups[test]})
        prediction = np.asarray(model.predict(_take(X, test), **predict_params))
        scores.append(correlation_score(y[test].reshape(len(test), -1),
                                        prediction.reshape(len(test), -1), "raw_values"))
    return np.asarray(scores)


def _take(X, indices):
    """Rows ``indices`` of X, keeping its type (arrays, DataFrames, AudioWindows)."""
    if hasattr(X, "iloc"):
        return X.iloc[indices]
    if hasattr(X, "shape") and hasattr(X, "__getitem__"):
        return X[indices]
    return [X[i] for i in indices]
