"""Significance of voxel-wise scores: block permutation tests, FDR control, block bootstrap CIs.

fMRI time series are autocorrelated, so TRs are not exchangeable: the null distribution of a
held-out correlation is built by permuting *blocks* of consecutive TRs of the predictions
(each block keeps its internal autocorrelation), and confidence intervals resample blocks
of TRs. All functions take time (TRs) along the first axis and voxels along the last, like
:mod:`sk_braintune.metrics`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["time_blocks", "block_permutation_test", "fdr_bh", "roi_confidence_intervals"]


def time_blocks(n_samples, block_length, groups=None):
    """Consecutive blocks of TRs that never straddle two stories.

    Parameters
    ----------
    n_samples : int
    block_length : int
        TRs per block; the last block of each story may be shorter.
    groups : array-like of shape (n_samples,), default=None
        Story label per TR (each story one contiguous run); None: one run.

    Returns
    -------
    blocks : list of ndarray of int
        The TR indices of each block, in time order.
    """
    from .delays import contiguous_runs

    block_length = int(block_length)
    if block_length < 1:
        raise ValueError(f"block_length must be >= 1; got {block_length}.")
    starts, ends = contiguous_runs(groups, n_samples)
    return [np.arange(first, min(first + block_length, end))
            for start, end in zip(starts, ends) for first in range(start, end, block_length)]


_PERMUTATION_CHUNK_BYTES = 1024 * 1024  # one voxel chunk of the responses (and predictions)
_BOOTSTRAP_CHUNK_BYTES = 4 * 2 ** 20  # one voxel chunk's cumulative sums


def _standardise(values):
    """Columns centred and scaled to unit norm; constant columns (to round-off) become 0."""
    values = np.asarray(values, dtype=np.float64)
    centred = values - values.mean(0)
    norms = np.sqrt((centred ** 2).sum(0))
    scale = np.abs(values).max(0) * np.sqrt(len(values))
    constant = norms <= 1e3 * np.finfo(np.float64).eps * scale
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(constant, 0.0, centred / np.where(constant, 1.0, norms))


def _sample_correlations(y_true, y_pred, full_blocks, cut_start, cut_stop):
    """Pearson r of every voxel on resampled TRs, from sums over blocks (no row copies).

    ``full_blocks`` is ``(blocks, counts)``: ``counts[b, k]`` copies of block ``k`` in sample
    ``b``, which also holds TRs ``cut_start[b]:cut_stop[b]``. Returns ``(n_samples,
    n_voxels)``; 0 where a side is constant on the sample's TRs (as :func:`_standardise`).
    """
    true = _standardise(y_true)  # correlation is unchanged; sums stay well conditioned
    pred = _standardise(y_pred)
    blocks, counts = full_blocks
    n_trs = len(true)
    starts = np.array([block[0] for block in blocks])
    stops = np.array([block[-1] + 1 for block in blocks])
    moments = {}
    for name, values in (("t", true), ("p", pred), ("tt", true * true),
                         ("pp", pred * pred), ("tp", true * pred)):
        cumulative = np.zeros((n_trs + 1, values.shape[1]))
        np.cumsum(values, axis=0, out=cumulative[1:])
        per_block = cumulative[stops] - cumulative[starts]
        moments[name] = counts @ per_block + cumulative[cut_stop] - cumulative[cut_start]
    covariance = moments["tp"] - moments["t"] * moments["p"] / n_trs
    var_true = moments["tt"] - moments["t"] ** 2 / n_trs
    var_pred = moments["pp"] - moments["p"] ** 2 / n_trs
    # a side constant on the sample's TRs scores 0: its variance (of unit-norm columns) is
    # then round-off of the sums, about n_trs * eps
    tolerance = 100 * n_trs * np.finfo(np.float64).eps
    constant = (var_true <= tolerance) | (var_pred <= tolerance)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(constant, 0.0, covariance / np.sqrt(np.where(
            constant, 1.0, var_true * var_pred)))


def _check_pair(y_true, y_pred):
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape or y_true.ndim not in (1, 2):
        raise ValueError(f"y_true and y_pred must be arrays of the same shape (n_trs,) or "
                         f"(n_trs, n_voxels); got {y_true.shape} and {y_pred.shape}.")
    if len(y_true) < 3:
        raise ValueError(f"Need at least 3 TRs; got {len(y_true)}.")
    return y_true.reshape(len(y_true), -1), y_pred.reshape(len(y_pred), -1), y_true.ndim == 1


def block_permutation_test(y_true, y_pred, *, block_length=10, n_permutations=1000,
                           groups=None, alternative="greater", random_state=None):
    """Per-voxel p-values of held-out correlations by permuting blocks of the predictions.

    The predictions' TRs are cut into blocks of ``block_length`` consecutive TRs (within
    stories when ``groups`` is given); each permutation shuffles the blocks and concatenates
    them, which breaks the alignment of predictions and responses but keeps each block's
    autocorrelation. The same permutations serve every voxel (one p-value per voxel; use
    :func:`fdr_bh` across voxels). The p-value counts the observed statistic as one of the
    permutations, ``p = (1 + #{null >= observed}) / (1 + n_permutations)``, so it is never 0
    and is valid (not anti-conservative) at any ``n_permutations``; it is at least
    ``1 / (1 + n_permutations)``, so for FDR control over ``m`` voxels of which about ``k``
    carry signal, use ``n_permutations`` well above ``m / (alpha * k)``.

    Blocks should be much longer than the autocorrelation of the responses and predictions
    (about 10 TRs or more for BOLD at TR = 2 s, the HRF's length): with blocks shorter than
    that, the null is too narrow and the test too liberal.

    Parameters
    ----------
    y_true : array-like of shape (n_trs,) or (n_trs, n_voxels)
        Measured held-out responses.
    y_pred : array-like of shape (n_trs,) or (n_trs, n_voxels)
        Predicted responses.
    block_length : int, default=10
        TRs per block.
    n_permutations : int, default=1000
    groups : array-like of shape (n_trs,), default=None
        Story label per TR: blocks never straddle two stories.
    alternative : {"greater", "two-sided"}, default="greater"
        "greater" tests r > 0 (the usual question for encoding models); "two-sided" uses
        ``|r|``.
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    r : ndarray of shape (n_voxels,) (float for 1-D input)
        Observed Pearson correlations (0 for constant voxels).
    p_values : ndarray of shape (n_voxels,) (float for 1-D input)
        1 for constant voxels.

    See Also
    --------
    fdr_bh : Benjamini-Hochberg control of the false discovery rate across voxels.
    """
    from sklearn.utils import check_random_state

    y_true, y_pred, one_dim = _check_pair(y_true, y_pred)
    if alternative not in ("greater", "two-sided"):
        raise ValueError(f"alternative must be 'greater' or 'two-sided'; got {alternative!r}.")
    if int(n_permutations) < 1:
        raise ValueError(f"n_permutations must be >= 1; got {n_permutations}.")
    blocks = time_blocks(len(y_true), block_length, groups)
    if len(blocks) < 2:
        raise ValueError(f"{len(y_true)} TRs make {len(blocks)} block(s) of {block_length}: "
                         f"nothing to permute; use shorter blocks or more TRs.")
    rng = check_random_state(random_state)
    true_z, pred_z = _standardise(y_true), _standardise(y_pred)
    observed = (true_z * pred_z).sum(0)
    statistic = np.abs if alternative == "two-sided" else (lambda values: values)
    exceed = np.zeros(observed.shape, dtype=np.int64)
    reference = statistic(observed) - 1e-12  # ties count as exceeding (conservative)
    orders = [np.concatenate([blocks[k] for k in rng.permutation(len(blocks))])
              for _ in range(int(n_permutations))]
    # every permutation over a few thousand voxels at a time, which stay in the cache (at
    # 80,000 vertices, permuting whole arrays was memory-bound: 9x slower)
    step = max(1, _PERMUTATION_CHUNK_BYTES // (8 * len(true_z)))
    for first in range(0, true_z.shape[1], step):
        columns = slice(first, first + step)
        true_part = np.ascontiguousarray(true_z[:, columns])
        pred_part = np.ascontiguousarray(pred_z[:, columns])
        count, bar = exceed[columns], reference[columns]
        for order in orders:
            count += statistic((true_part * pred_part[order]).sum(0)) >= bar
    p_values = (1.0 + exceed) / (1.0 + int(n_permutations))
    if one_dim:
        return float(observed[0]), float(p_values[0])
    return observed, p_values


def fdr_bh(p_values, alpha=0.05):
    """Benjamini-Hochberg control of the false discovery rate across voxels.

    Parameters
    ----------
    p_values : array-like of shape (n_voxels,)
        NaN entries (e.g. excluded voxels) are left out of the correction.
    alpha : float, default=0.05
        Target false discovery rate.

    Returns
    -------
    rejected : ndarray of bool, shape (n_voxels,)
        Voxels declared significant (False where the p-value is NaN).
    q_values : ndarray of shape (n_voxels,)
        BH-adjusted p-values, ``min over j >= rank of p_(j) * m / j`` clipped at 1, from
        :func:`scipy.stats.false_discovery_control` over the ``m`` non-NaN p-values (NaN
        where the p-value is NaN); ``rejected == (q_values <= alpha)``.
    """
    p_values = np.asarray(p_values, dtype=np.float64)
    if p_values.ndim != 1:
        raise ValueError(f"p_values must be 1-D (one per voxel); got shape {p_values.shape}.")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1); got {alpha}.")
    valid = ~np.isnan(p_values)
    if np.any((p_values[valid] < 0) | (p_values[valid] > 1)):
        raise ValueError("p_values must lie in [0, 1].")
    q_values = np.full(p_values.shape, np.nan)
    if valid.any():
        from scipy.stats import false_discovery_control

        q_values[valid] = false_discovery_control(p_values[valid], method="bh")
    rejected = np.zeros(p_values.shape, dtype=bool)
    rejected[valid] = q_values[valid] <= alpha
    return rejected, q_values


def roi_confidence_intervals(y_true, y_pred, labels, *, block_length=10, n_bootstraps=1000,
                             confidence=0.95, groups=None, cc_max=None, min_ceiling=0.05,
                             random_state=None):
    """Block-bootstrap confidence intervals of the mean held-out correlation per ROI.

    Each bootstrap sample draws blocks of ``block_length`` consecutive TRs (within stories
    when ``groups`` is given) with replacement until it has as many TRs as the data (the
    last block drawn is cut), recomputes every voxel's correlation on those TRs, and
    averages it per ROI; the interval is the percentile interval of these means. The same
    TRs serve every voxel, so the spatial correlation of the noise is kept and the interval
    reflects the uncertainty of a mean over correlated voxels.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_trs, n_voxels)
        Measured and predicted held-out responses.
    labels : array-like of shape (n_voxels,)
        ROI (or voxel kind) of each voxel.
    block_length : int, default=10
    n_bootstraps : int, default=1000
    confidence : float, default=0.95
    groups : array-like of shape (n_trs,), default=None
        Story label per TR.
    cc_max : array-like of shape (n_voxels,), default=None
        Noise ceilings: when given, the correlations are normalised by them as in
        :func:`sk_braintune.metrics.normalized_correlation` (voxels with
        ``cc_max <= min_ceiling`` left out of the means).
    min_ceiling : float, default=0.05
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    intervals : dict
        ``{roi: {"mean": observed mean, "low": lower bound, "high": upper bound}}`` in sorted
        ROI order.
    """
    from sklearn.utils import check_random_state

    from ..metrics import normalized_correlation, roi_means

    y_true, y_pred, _ = _check_pair(y_true, y_pred)
    labels = np.asarray(labels)
    if labels.shape != (y_true.shape[1],):
        raise ValueError(f"labels must have one entry per voxel ({y_true.shape[1]}); got "
                         f"shape {labels.shape}.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1); got {confidence}.")
    blocks = time_blocks(len(y_true), block_length, groups)
    rng = check_random_state(random_state)
    n_trs = len(y_true)
    r = (_standardise(y_true) * _standardise(y_pred)).sum(0)
    if cc_max is not None:
        r = normalized_correlation(r, cc_max, min_ceiling=min_ceiling)
    observed = roi_means(r, labels)
    # each sample: whole blocks (counts) and the block drawn last, cut to fill n_trs
    counts = np.zeros((int(n_bootstraps), len(blocks)))
    cut_start = np.zeros(int(n_bootstraps), dtype=np.int64)
    cut_stop = np.zeros(int(n_bootstraps), dtype=np.int64)
    for b in range(int(n_bootstraps)):
        count = 0
        while count < n_trs:
            k = rng.randint(len(blocks))
            block = blocks[k]
            if count + len(block) < n_trs:
                counts[b, k] += 1
            else:
                cut_start[b], cut_stop[b] = block[0], block[0] + n_trs - count
            count += len(block)
    cc_max = None if cc_max is None else np.asarray(cc_max, dtype=np.float64)
    roi_names = list(observed)
    sums = np.zeros((int(n_bootstraps), len(roi_names)))
    sizes = np.zeros((int(n_bootstraps), len(roi_names)))
    step = max(1, _BOOTSTRAP_CHUNK_BYTES // (8 * (n_trs + 1)))
    for first in range(0, y_true.shape[1], step):
        columns = slice(first, first + step)
        r = _sample_correlations(y_true[:, columns], y_pred[:, columns],
                                 (blocks, counts), cut_start, cut_stop)
        if cc_max is not None:
            r = normalized_correlation(r, cc_max[columns], min_ceiling=min_ceiling)
        finite = ~np.isnan(r)
        for j, roi in enumerate(roi_names):
            in_roi = labels[columns] == roi
            sums[:, j] += np.where(finite[:, in_roi], r[:, in_roi], 0.0).sum(1)
            sizes[:, j] += finite[:, in_roi].sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        samples = dict(zip(roi_names, (sums / sizes).T))
    tail = 100 * (1 - confidence) / 2
    intervals = {}
    for roi, mean in observed.items():
        finite = samples[roi][np.isfinite(samples[roi])]
        low, high = (np.percentile(finite, [tail, 100 - tail]) if finite.size
                     else (np.nan, np.nan))
        intervals[roi] = {"mean": mean, "low": float(low), "high": float(high)}
    return intervals
