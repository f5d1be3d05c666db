"""Array preprocessing shared by every layer: z-scoring (per story) and the mel filterbank.

Only NumPy is imported here, so the datasets, features, encoding and tuning layers can all use
these without loading scikit-learn or torch.
"""

from __future__ import annotations

import numpy as np

__all__ = ["zscore", "zscore_per_story", "split_by_story", "select_rows", "nonfinite_columns",
           "zero_nonfinite", "mel_filterbank"]


def zscore(X, axis=0, *, dtype=np.float64):
    """Z-score along ``axis`` (population standard deviation); constant slices become 0.

    Parameters
    ----------
    X : array-like
        E.g. ``(n_samples, n_features)`` to z-score each column with ``axis=0``.
    axis : int, default=0
    dtype : numpy dtype, default=numpy.float64
        The computation is done, and the result returned, in this dtype (the input is cast
        first), so a float32 result is the float32 computation, not a float64 one rounded.

    Returns
    -------
    zscored : ndarray of the shape of ``X`` and dtype ``dtype``
        ``(X - mean) / std``, with ``std`` replaced by 1 where it is 0.
    """
    X = np.asarray(X, dtype=dtype)
    std = X.std(axis=axis, keepdims=True)
    return (X - X.mean(axis=axis, keepdims=True)) / np.where(std > 0, std, 1.0)


def zscore_per_story(X, groups=None, *, dtype=np.float64):
    """Z-score each column within each story (all rows as one story when ``groups`` is None).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    groups : array-like of shape (n_samples,), optional
        Story of each row; rows of a story need not be contiguous.
    dtype : numpy dtype, default=numpy.float64
        Dtype of the computation and of the result (see :func:`zscore`).

    Returns
    -------
    zscored : ndarray of shape (n_samples, n_features), dtype ``dtype``
        Zero mean and unit population variance per column and story; constant columns are 0.
    """
    X = np.asarray(X, dtype=dtype)
    if groups is None:
        return zscore(X, axis=0, dtype=dtype)
    groups = np.asarray(groups)
    if groups.shape != (X.shape[0],):
        raise ValueError(f"groups must have shape ({X.shape[0]},) (one story per row of X), "
                         f"got {groups.shape}")
    out = np.empty_like(X)
    for story in dict.fromkeys(groups.tolist()):
        rows = groups == story
        out[rows] = zscore(X[rows], axis=0, dtype=dtype)
    return out


def split_by_story(matrix, groups):
    """Rows of ``matrix`` per story, stories in order of first appearance.

    Parameters
    ----------
    matrix : ndarray of shape (n_samples, ...)
    groups : array-like of shape (n_samples,)
        Story of each row.

    Returns
    -------
    per_story : dict of str to ndarray of shape (n_story_samples, ...)
    """
    groups = np.asarray(groups)
    return {story: select_rows(matrix, groups == story) for story in dict.fromkeys(groups)}


def select_rows(array, mask):
    """The rows of ``array`` where ``mask`` is True: a view when they are one contiguous run.

    Boolean indexing always copies; at full size (tens of thousands of TRs x 90,000 voxels)
    a copy of the training rows of the responses is as large as the responses themselves.
    The stories of a stacked dataset are contiguous, so the rows of a story, or of training
    stories stacked before the test story, are a slice: returned as a view (no copy). Callers
    must not modify the result in place.

    Parameters
    ----------
    array : ndarray of shape (n_samples, ...)
    mask : array-like of bool of shape (n_samples,)

    Returns
    -------
    rows : ndarray of shape (mask.sum(), ...)
        A view of ``array`` when the selected rows are contiguous (or none), else a copy.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (len(array),):
        raise ValueError(f"mask must have shape ({len(array)},) (one entry per row), got "
                         f"{mask.shape}")
    selected = np.flatnonzero(mask)
    if selected.size == 0:
        return array[:0]
    first, last = int(selected[0]), int(selected[-1])
    if last - first + 1 == selected.size:
        return array[first:last + 1]
    return array[mask]


def nonfinite_columns(block, axis=0):
    """Which columns hold a NaN or an infinite value (the package's one non-finite test).

    NaN and +-inf are treated alike everywhere: an ``inf`` in a response would otherwise
    become +-3.4e38 in float32 arithmetic (``np.nan_to_num``'s default) and dominate every
    correlation it enters.

    Parameters
    ----------
    block : array-like of shape (..., n_columns)
    axis : int or tuple of int, default=0
        Axes reduced over (all but the last for a 3-D ``(n_repeats, n_trs, n_voxels)`` block
        with ``axis=(0, 1)``).

    Returns
    -------
    mask : ndarray of bool
        True where any value along ``axis`` is NaN, +inf or -inf.
    """
    return ~np.isfinite(np.asarray(block)).all(axis=axis)


def zero_nonfinite(block):
    """Replace NaN, +inf and -inf by 0, in place (the policy ``nan_policy="zero"`` applies).

    Parameters
    ----------
    block : ndarray of float
        Modified in place.

    Returns
    -------
    block : ndarray
        The same array.
    """
    return np.nan_to_num(block, copy=False, nan=0.0, posinf=0.0, neginf=0.0)


def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(n_bands, n_fft, sample_rate, fmin=100.0, fmax=7000.0):
    """Triangular filters equally spaced on the (HTK) mel scale.

    A band too narrow to cover any FFT bin (many bands, a short FFT) gets weight 1 on its
    nearest bin instead of staying all zero, so every band measures some power.

    Parameters
    ----------
    n_bands : int
    n_fft : int
    sample_rate : int
        In Hz.
    fmin, fmax : float, default=100.0, 7000.0
        Lower edge of the lowest filter and upper edge of the highest, in Hz.

    Returns
    -------
    filters : ndarray of shape (n_bands, n_fft // 2 + 1)
        ``filters @ power_spectrum`` gives the band powers.
    """
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_bands + 2))
    filters = np.zeros((n_bands, freqs.size))
    for b in range(n_bands):
        lo, mid, hi = edges[b], edges[b + 1], edges[b + 2]
        rising = (freqs - lo) / max(mid - lo, 1e-9)
        falling = (hi - freqs) / max(hi - mid, 1e-9)
        filters[b] = np.clip(np.minimum(rising, falling), 0.0, None)
        if filters[b].sum() == 0:
            filters[b, np.argmin(np.abs(freqs - mid))] = 1.0
    return filters
