"""Cross-validation splitters that respect the temporal structure of fMRI data."""

from __future__ import annotations

import numpy as np
from sklearn.utils import check_random_state

from .._docs import fill_doc
from .delays import contiguous_runs

__all__ = ["ChunkedBootstrap"]


class ChunkedBootstrap:
    """Random held-out chunks of consecutive TRs, as in the reference ``bootstrap_ridge``.

    Each split holds out ``test_size`` of the chunks, drawn without replacement; chunks are
    ``chunk_length`` consecutive TRs so that the autocorrelation of the BOLD signal and the
    FIR delays leak little between training and held-out TRs. With ``groups`` (one label per
    TR, each story one contiguous run) chunks never straddle two stories; the last chunk of a
    story may be shorter. Without ``groups`` the samples are one contiguous run.

    Parameters
    ----------
    n_splits : int, default=3
        Number of bootstrap draws.
    chunk_length : int, default=20
        TRs per chunk.
    test_size : float, default=0.25
        Fraction of chunks held out in each draw (at least one chunk).
    random_state : int, RandomState instance or None, default=None
        Seeds the draws; an int gives the same splits at every call of ``split``.

    Examples
    --------
    >>> import numpy as np
    >>> from sk_braintune.encoding import ChunkedBootstrap
    >>> cv = ChunkedBootstrap(n_splits=2, chunk_length=10, random_state=0)
    >>> [len(test) for train, test in cv.split(np.zeros((100, 1)))]
    [20, 20]
    """

    def __init__(self, n_splits=3, chunk_length=20, test_size=0.25, random_state=None):
        self.n_splits = n_splits
        self.chunk_length = chunk_length
        self.test_size = test_size
        self.random_state = random_state

    @fill_doc
    def get_n_splits(self, X=None, y=None, groups=None):
        """Number of splits.

        Parameters
        ----------
        %(splitter_args)s

        Returns
        -------
        n_splits : int
        """
        return int(self.n_splits)

    def split(self, X, y=None, groups=None):
        """Generate train and held-out indices.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
        y : ignored
        groups : array-like of shape (n_samples,), default=None
            Story label per sample.

        Yields
        ------
        train, test : ndarray of int
            Sorted sample indices.
        """
        n_samples = len(X) if not hasattr(X, "shape") else X.shape[0]
        if not 0 < self.test_size < 1:
            raise ValueError(f"test_size must be in (0, 1); got {self.test_size}.")
        if int(self.chunk_length) < 1:
            raise ValueError(f"chunk_length must be >= 1; got {self.chunk_length}.")
        starts, ends = contiguous_runs(groups, n_samples)
        chunk_starts = np.concatenate([np.arange(s, e, int(self.chunk_length))
                                       for s, e in zip(starts, ends)])
        chunk_ends = np.concatenate([np.minimum(np.arange(s, e, int(self.chunk_length))
                                                + int(self.chunk_length), e)
                                     for s, e in zip(starts, ends)])
        n_chunks = len(chunk_starts)
        n_held = max(1, int(round(self.test_size * n_chunks)))
        if n_chunks < 2 or n_held >= n_chunks:
            raise ValueError(f"ChunkedBootstrap needs more chunks: {n_samples} samples make "
                             f"{n_chunks} chunks of {self.chunk_length} TRs; use shorter "
                             f"chunks or more samples.")
        rng = check_random_state(self.random_state)
        if isinstance(self.random_state, (int, np.integer)):
            rng = np.random.RandomState(self.random_state)
        for _ in range(int(self.n_splits)):
            held = np.zeros(n_samples, dtype=bool)
            for chunk in rng.choice(n_chunks, size=n_held, replace=False):
                held[chunk_starts[chunk]:chunk_ends[chunk]] = True
            yield np.flatnonzero(~held), np.flatnonzero(held)

    def __repr__(self):
        return (f"ChunkedBootstrap(n_splits={self.n_splits}, chunk_length={self.chunk_length}, "
                f"test_size={self.test_size}, random_state={self.random_state})")
