"""Variance partitioning: unique and shared variance of two feature spaces, per voxel."""

from __future__ import annotations

import itertools

import numpy as np

__all__ = ["variance_partitioning", "partition_roi_summary", "correct_partitions",
           "r2_voxels"]

#: Partitions in the order of the non-negative least squares below.
_PARTITIONS = ("unique_model", "unique_lowlevel", "shared")
# R^2 of (model, low-level, joint) = _COMBINE @ (unique_model, unique_lowlevel, shared)
_COMBINE = np.array([[1.0, 0.0, 1.0],
                     [0.0, 1.0, 1.0],
                     [1.0, 1.0, 1.0]])


def r2_voxels(y_true, y_pred):
    """Coefficient of determination per voxel, ``1 - SSE / SST`` (SST about ``y_true``'s mean).

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples, n_voxels)

    Returns
    -------
    r2 : ndarray of shape (n_voxels,)
        Negative when the predictions are worse than the mean; NaN for constant voxels.
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape or y_true.ndim != 2:
        raise ValueError(f"y_true and y_pred must be 2-D arrays (n_samples, n_voxels) of the "
                         f"same shape; got {y_true.shape} and {y_pred.shape}.")
    centred = y_true - y_true.mean(0)
    total = (centred ** 2).sum(0)
    residual = ((y_true - y_pred) ** 2).sum(0)
    # a voxel constant up to round-off has no variance to explain
    scale = np.maximum(np.abs(y_true).max(0), np.finfo(np.float64).tiny)
    constant = total <= (len(y_true) * (1e3 * np.finfo(np.float64).eps * scale) ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(constant, np.nan, 1.0 - residual / total)


def correct_partitions(r2_model, r2_lowlevel, r2_joint, correction="projection"):
    """Set-theoretic partitions of explained variance, with a correction for negative estimates.

    With ``A`` the model features and ``B`` the low-level features (Lescroart et al. 2015;
    de Heer et al. 2017)::

        unique_model    = R2(A u B) - R2(B)
        unique_lowlevel = R2(A u B) - R2(A)
        shared          = R2(A) + R2(B) - R2(A u B)

    Estimated from held-out R^2, any of these can come out negative (noise, and ridge models
    whose joint fit is worse than a single-space fit: the estimates are biased).
    ``correction`` says what is done then:

    * ``"projection"``: de Heer et al. (2017) correct the bias post hoc by the smallest change
      of the three R^2 estimates that makes every partition non-negative. Here "smallest" is
      in the least-squares sense: per voxel, the partitions are the non-negative least-squares
      fit of ``(R2(A), R2(B), R2(A u B))`` (exact when no partition is negative; solved by
      enumerating the 8 active sets). A voxel with no explained variance (all R^2 <= 0) gets
      three zeros.
    * ``"clip"``: negative partitions are set to 0 and the others left alone (biased upwards;
      the partitions no longer add up to the R^2 estimates).
    * ``"none"``: the raw estimates, negative values kept.

    Parameters
    ----------
    r2_model, r2_lowlevel, r2_joint : array-like of shape (n_voxels,)
        Held-out R^2 of the model-only, low-level-only and joint models.
    correction : {"projection", "clip", "none"}, default="projection"

    Returns
    -------
    partitions : dict of str to ndarray of shape (n_voxels,)
        ``unique_model``, ``unique_lowlevel`` and ``shared``; NaN where an input is NaN.
    """
    r2 = np.stack([np.asarray(r2_model, dtype=np.float64),
                   np.asarray(r2_lowlevel, dtype=np.float64),
                   np.asarray(r2_joint, dtype=np.float64)])
    if r2.ndim != 2:
        raise ValueError(f"R^2 arrays must be 1-D and of the same length; got shapes "
                         f"{[np.shape(a) for a in (r2_model, r2_lowlevel, r2_joint)]}.")
    raw = np.linalg.solve(_COMBINE, r2)  # (3, n_voxels)
    if correction == "none":
        parts = raw
    elif correction == "clip":
        parts = np.maximum(raw, 0.0)
    elif correction == "projection":
        parts = _nonnegative_fit(r2)
    else:
        raise ValueError(f"correction must be 'projection', 'clip' or 'none'; got "
                         f"{correction!r}.")
    parts = np.where(np.isnan(r2).any(0), np.nan, parts)
    return dict(zip(_PARTITIONS, parts))


def _nonnegative_fit(r2):
    """argmin_{p >= 0} ||_COMBINE p - r2||^2 per column, by enumerating active sets."""
    n_voxels = r2.shape[1]
    best = np.zeros((3, n_voxels))
    best_loss = (np.nan_to_num(r2) ** 2).sum(0)  # the all-zero solution
    for size in (1, 2, 3):
        for support in itertools.combinations(range(3), size):
            support = list(support)
            solution = np.zeros((3, n_voxels))
            solution[support] = np.linalg.pinv(_COMBINE[:, support]) @ np.nan_to_num(r2)
            feasible = np.all(solution >= 0, axis=0)
            loss = ((_COMBINE @ solution - np.nan_to_num(r2)) ** 2).sum(0)
            # a feasible least-squares point on its support; the best of them is the optimum
            better = feasible & (loss < best_loss)
            best[:, better] = solution[:, better]
            best_loss[better] = loss[better]
    return best


def _story_mask(groups, stories, name):
    stories = np.atleast_1d(np.asarray(stories))
    mask = np.isin(groups, stories)
    missing = np.setdiff1d(stories, groups)
    if missing.size:
        raise ValueError(f"{name} stories {list(missing)} are not in groups (labels: "
                         f"{list(np.unique(groups))[:10]}...).")
    if not mask.any():
        raise ValueError(f"{name} names no samples.")
    return mask


def variance_partitioning(X_model, X_lowlevel, y, groups, train, test, *, alphas="default",
                          n_iter=20, cv=5, correction="projection", backend="numpy",
                          device="auto", dtype="float32", random_state=None,
                          return_models=False):
    """Unique and shared variance of model features vs low-level features, per voxel.

    Three encoding models are fitted on the training stories, each choosing its penalties
    by story-grouped inner CV on the MSE (R^2 is what is partitioned): the joint model, a
    :class:`~sk_braintune.encoding.BandedRidgeEncoder` with one band per feature space (so
    that the two spaces are not forced to share one penalty), and one
    :class:`~sk_braintune.encoding.RidgeEncoder` per feature space. Their held-out R^2 on the
    test stories give the set-theoretic partitions (Lescroart et al. 2015; de Heer et al.
    2017), corrected as described in :func:`correct_partitions`::

        unique_model    = R2(joint) - R2(lowlevel)
        unique_lowlevel = R2(joint) - R2(model)
        shared          = R2(model) + R2(lowlevel) - R2(joint)

    The joint model also gives the split R^2 of Dupre la Tour et al. (2022) (the "product
    measure": each band's share ``(2 y.p_k - p_k.p) / ||y||^2`` of the joint R^2, centred
    at the test mean; it sums to the joint R^2 and needs no single-space fit).

    Parameters
    ----------
    X_model : array-like of shape (n_samples, n_model_features)
        Per-TR model features (e.g. delayed features of one layer).
    X_lowlevel : array-like of shape (n_samples, n_lowlevel_features)
        Per-TR low-level features (e.g. delayed power spectrum and phoneme rates).
    y : array-like of shape (n_samples, n_voxels)
        Responses.
    groups : array-like of shape (n_samples,)
        Story label of each sample (each story one contiguous run).
    train, test : sequence of story labels
        Stories to fit on and to score on (disjoint).
    alphas : {"default", "huth"} or array-like, default="default"
        Penalty grid of all three models.
    n_iter : int or array-like of shape (n_candidates, 2), default=20
        Band-weight candidates of the joint model (see ``BandedRidgeEncoder``).
    cv : int, "bootstrap" or splitter, default=5
        Inner CV of every model, over the training stories (an int: ``GroupKFold``; capped
        at the number of training stories; with a single training story, ``cv`` contiguous
        blocks of it).
    correction : {"projection", "clip", "none"}, default="projection"
        Handling of negative partition estimates (see :func:`correct_partitions`).
    backend, device, dtype : see ``RidgeEncoder``
    random_state : int or None, default=None
        Seeds the band-weight candidates.
    return_models : bool, default=False
        Also return the three fitted models under ``"models"``.

    Returns
    -------
    result : dict of str to ndarray of shape (n_voxels,)
        ``r2_joint``, ``r2_model``, ``r2_lowlevel`` (held-out R^2); ``unique_model``,
        ``unique_lowlevel``, ``shared`` (corrected) and ``unique_model_raw``,
        ``unique_lowlevel_raw``, ``shared_raw`` (uncorrected); ``shared_fraction``:
        ``shared / (unique_model + shared)``, the share of the model's explainable variance
        that low-level features also explain (NaN where the model explains nothing), a second
        estimate of the "low-level impact"; ``split_r2_model``, ``split_r2_lowlevel`` (the
        joint model's product measure). With ``return_models``, also ``"models"``: dict with
        ``joint``, ``model``, ``lowlevel``.

    Examples
    --------
    >>> import numpy as np
    >>> from sk_braintune.encoding import variance_partitioning
    >>> rng = np.random.default_rng(0)
    >>> shared, only_model = rng.standard_normal((2, 600, 1))
    >>> X_model = np.hstack([shared, only_model]) @ rng.standard_normal((2, 6))
    >>> X_low = shared @ rng.standard_normal((1, 3))
    >>> y = np.hstack([shared + only_model, shared]) + 0.1 * rng.standard_normal((600, 2))
    >>> groups = np.repeat(np.arange(6), 100)
    >>> result = variance_partitioning(X_model, X_low, y, groups, train=[0, 1, 2, 3, 4],
    ...                                test=[5], alphas=[1e-2, 1, 100], n_iter=5,
    ...                                random_state=0)
    >>> np.round(result["unique_model"], 1), np.round(result["shared"], 1)
    (array([0.5, 0. ]), array([0.5, 1. ]))
    """
    from sklearn.utils.validation import check_array

    from ..model_selection import clamp_cv
    from ..preprocessing import select_rows
    from .banded import BandedRidgeEncoder
    from .ridge import RidgeEncoder

    X_model = check_array(X_model, dtype=[np.float32, np.float64])
    X_lowlevel = check_array(X_lowlevel, dtype=[np.float32, np.float64])
    y = check_array(y, dtype=[np.float32, np.float64], ensure_2d=False)
    if y.ndim == 1:
        y = y[:, None]
    groups = np.asarray(groups)
    n_samples = len(y)
    if not (len(X_model) == len(X_lowlevel) == n_samples == len(groups)):
        raise ValueError(f"X_model, X_lowlevel, y and groups need one row per TR; got "
                         f"{len(X_model)}, {len(X_lowlevel)}, {n_samples} and {len(groups)}.")
    train_mask = _story_mask(groups, train, "train")
    test_mask = _story_mask(groups, test, "test")
    if np.any(train_mask & test_mask):
        raise ValueError("train and test stories overlap; give disjoint story lists.")
    train_groups = groups[train_mask]
    if isinstance(cv, int) and not isinstance(cv, bool):
        if len(np.unique(train_groups)) < 2:
            # one training story (a Narratives listener's long story): contiguous blocks of
            # it, as the alignment and the low-level impact do
            train_groups = None
        else:
            cv = clamp_cv(cv, train_groups)
    common = dict(alphas=alphas, cv=cv, cv_scoring="mse", backend=backend, device=device,
                  dtype=dtype)
    joint_X = np.hstack([X_model, X_lowlevel])
    models = {
        "joint": BandedRidgeEncoder(bands=[X_model.shape[1], X_lowlevel.shape[1]],
                                    n_iter=n_iter, random_state=random_state, **common),
        "model": RidgeEncoder(**common),
        "lowlevel": RidgeEncoder(**common),
    }
    inputs = {"joint": joint_X, "model": X_model, "lowlevel": X_lowlevel}
    # a view when the training stories are contiguous (no copy of the training responses)
    y_train = select_rows(y, train_mask)
    y_test = select_rows(y, test_mask).astype(np.float64)
    r2 = {}
    for name, model in list(models.items()):
        model.fit(select_rows(inputs[name], train_mask), y_train, groups=train_groups)
        prediction = model.predict(select_rows(inputs[name], test_mask)).reshape(len(y_test),
                                                                                  -1)
        r2[name] = r2_voxels(y_test, prediction)
        del prediction
        if name != "joint" and not return_models:
            # only the joint model is used below: at 80,000 voxels each model's coefficients
            # (one per delayed feature and voxel) are hundreds of MB
            models[name] = None

    result = {"r2_joint": r2["joint"], "r2_model": r2["model"], "r2_lowlevel": r2["lowlevel"]}
    raw = correct_partitions(r2["model"], r2["lowlevel"], r2["joint"], correction="none")
    corrected = correct_partitions(r2["model"], r2["lowlevel"], r2["joint"],
                                   correction=correction)
    result.update(corrected)
    result.update({f"{key}_raw": value for key, value in raw.items()})
    explained = corrected["unique_model"] + corrected["shared"]
    with np.errstate(divide="ignore", invalid="ignore"):
        result["shared_fraction"] = np.where(explained > 0, corrected["shared"] / explained,
                                             np.nan)
    contributions = models["joint"].predict_bands(joint_X[test_mask]).reshape(
        2, len(y_test), -1).astype(np.float64)
    centred = y_test - y_test.mean(0)
    total = contributions.sum(0)
    total -= total.mean(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = (centred ** 2).sum(0)
        for key, part in zip(("split_r2_model", "split_r2_lowlevel"), contributions):
            part = part - part.mean(0)
            result[key] = (2 * (centred * part).sum(0) - (part * total).sum(0)) / norm
    if return_models:
        result["models"] = models
    return result


def partition_roi_summary(result, labels, keys=None, min_r2_joint=None):
    """Mean of each partition per region of interest.

    Parameters
    ----------
    result : dict of str to ndarray of shape (n_voxels,)
        Output of :func:`variance_partitioning` (entries that are not per-voxel arrays, such
        as ``"models"``, are skipped).
    labels : array-like of shape (n_voxels,)
        ROI (or voxel kind) of each voxel.
    keys : sequence of str, default=None
        Entries to summarise; default all per-voxel entries.
    min_r2_joint : float, default=None
        Only average voxels whose joint R^2 exceeds this (e.g. 0 to leave out voxels the
        features do not predict at all).

    Returns
    -------
    summary : dict
        ``{roi: {key: mean over the ROI's voxels (NaN left out), ..., "n_voxels": count}}``
        in sorted ROI order.
    """
    from ..metrics import roi_means

    labels = np.asarray(labels)
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in result.items()
              if isinstance(v, np.ndarray) and v.shape == labels.shape}
    if keys is not None:
        missing = [k for k in keys if k not in arrays]
        if missing:
            raise ValueError(f"keys {missing} are not per-voxel entries of result "
                             f"({sorted(arrays)}).")
        arrays = {k: arrays[k] for k in keys}
    if not arrays:
        raise ValueError(f"result has no per-voxel arrays of {labels.shape[0]} voxels.")
    keep = np.ones(labels.shape, dtype=bool)
    if min_r2_joint is not None:
        keep = np.asarray(result["r2_joint"]) > min_r2_joint
    summary = {}
    for key, values in arrays.items():
        for roi, mean in roi_means(np.where(keep, values, np.nan), labels).items():
            summary.setdefault(roi, {})[key] = mean
    for roi in summary:
        summary[roi]["n_voxels"] = int(np.sum(keep & (labels == roi)))
    return summary
