"""Significance of a held-out fit: block-permutation p-values, BH-FDR q-values, ROI intervals.

The voxel-wise machinery (block permutations that never straddle stories, Benjamini-Hochberg
q-values, block-bootstrap intervals) lives in :mod:`sk_braintune.encoding.significance`; this
module applies it to the last layer's held-out fit of
:func:`sk_braintune.evaluation.layerwise_alignment`, as the paper reports it.
"""

from __future__ import annotations

import logging
import math

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["alignment_significance"]


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
