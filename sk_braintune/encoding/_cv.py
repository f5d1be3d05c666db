"""Cross-validation splitters that respect the temporal structure of fMRI data."""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.model_selection import GroupKFold, KFold
from sklearn.utils import check_random_state

from .._docs import fill_doc
from ..model_selection import check_story_splits
from .delays import contiguous_runs

__all__ = ["ChunkedBootstrap", "inner_cv_splits"]


class ChunkedBootstrap:
    """Random held-out chunks of consecutive TRs, as in the reference ``bootstrap_ridge``.

    Each split holds out a fraction ``test_size`` of the data as whole chunks, drawn without
    replacement; chunks are ``chunk_length`` consecutive TRs so that the autocorrelation of the
    BOLD signal and the FIR delays leak little between training and held-out TRs. With
    ``groups`` (one label per TR, each story one contiguous run) chunks never straddle two
    stories. Without ``groups`` the samples are one contiguous run.

    Two chunking rules are offered (``chunking``):

    * ``"default"``: every run is cut into chunks, its last chunk possibly shorter, and
      ``round(test_size * n_chunks)`` chunks are held out. Every TR can be held out, and the
      held-out fraction is the closest to ``test_size`` that whole chunks allow.
    * ``"reference"``: the rule of HuthLab's ``bootstrap_ridge`` as the paper's script calls
      it: ``int(n_samples * test_size / chunk_length)`` chunks are held out (rounded down) and
      the trailing partial chunk of each run is never held out (it always trains). Without
      ``groups`` this is exactly the reference's chunking of the concatenated data.

    ``"default"`` stays the default because the reference's rule leaves the last
    ``n_samples mod chunk_length`` TRs of each story out of every validation set (they are
    never scored, so the alpha choice ignores the end of every story) and holds out less than
    ``test_size`` whenever the division is not exact (with 20-TR chunks and 150-TR stories
    held out one story at a time, up to 20% less).

    Parameters
    ----------
    n_splits : int, default=3
        Number of bootstrap draws.
    chunk_length : int, default=20
        TRs per chunk.
    test_size : float, default=0.25
        Fraction of the data held out in each draw (at least one chunk).
    chunking : {"default", "reference"}, default="default"
        How chunks are cut and counted (see above).
    random_state : int, RandomState instance or None, default=None
        Seeds the draws; an int gives the same splits at every call of ``split``.

    Examples
    --------
    >>> import numpy as np
    >>> from sk_braintune.encoding import ChunkedBootstrap
    >>> cv = ChunkedBootstrap(n_splits=2, chunk_length=10, random_state=0)
    >>> [len(test) for train, test in cv.split(np.zeros((100, 1)))]
    [20, 20]
    >>> cv = ChunkedBootstrap(n_splits=1, chunk_length=10, chunking="reference")
    >>> [len(test) for train, test in cv.split(np.zeros((105, 1)))]
    [20]
    """

    def __init__(self, n_splits=3, chunk_length=20, test_size=0.25, chunking="default",
                 random_state=None):
        self.n_splits = n_splits
        self.chunk_length = chunk_length
        self.test_size = test_size
        self.chunking = chunking
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

    def _chunks(self, n_samples, groups):
        """Start and end of every chunk that may be held out, and how many to hold out."""
        length = int(self.chunk_length)
        starts, ends = contiguous_runs(groups, n_samples)
        chunk_starts, chunk_ends = [], []
        for start, end in zip(starts, ends):
            if self.chunking == "reference":
                last = start + (end - start) // length * length  # full chunks only
            else:
                last = end
            first = np.arange(start, last, length)
            chunk_starts.append(first)
            chunk_ends.append(np.minimum(first + length, end))
        chunk_starts = np.concatenate(chunk_starts)
        chunk_ends = np.concatenate(chunk_ends)
        if self.chunking == "reference":
            n_held = max(1, int(n_samples * self.test_size / length))
        else:
            n_held = max(1, int(round(self.test_size * len(chunk_starts))))
        return chunk_starts, chunk_ends, n_held

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
        if self.chunking not in ("default", "reference"):
            raise ValueError(f"chunking must be 'default' or 'reference'; got "
                             f"{self.chunking!r}.")
        chunk_starts, chunk_ends, n_held = self._chunks(n_samples, groups)
        n_chunks = len(chunk_starts)
        if n_chunks < 2 or n_held >= n_chunks:
            raise ValueError(f"ChunkedBootstrap needs more chunks: {n_samples} samples make "
                             f"{n_chunks} chunks of {self.chunk_length} TRs that may be held "
                             f"out, and {n_held} are to be held out; use shorter chunks or "
                             f"more samples.")
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
                f"test_size={self.test_size}, chunking={self.chunking!r}, "
                f"random_state={self.random_state})")


def inner_cv_splits(cv, X, y, groups, random_state=None):
    """Materialise an encoder's inner cross-validation as a list of index pairs.

    Parameters
    ----------
    cv : int, "bootstrap", cross-validation splitter or iterable
        An int means ``GroupKFold(cv)`` over ``groups`` when given, else ``KFold(cv)``
        without shuffling (contiguous blocks). ``"bootstrap"`` is :class:`ChunkedBootstrap`
        with 3 draws of 25% in 20-TR chunks, seeded by ``random_state``. A splitter's
        ``split(X, y, groups)`` is called with ``groups``.
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples, n_targets)
    groups : ndarray of shape (n_samples,) or None
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    splits : list of (train, test) int64 arrays
    """
    if isinstance(cv, str):
        if cv != "bootstrap":
            raise ValueError(f"cv must be an int, 'bootstrap', a splitter or an iterable "
                             f"of (train, test); got {cv!r}.")
        cv = ChunkedBootstrap(n_splits=3, chunk_length=20, test_size=0.25,
                              random_state=random_state)
    elif isinstance(cv, numbers.Integral) and not isinstance(cv, bool):
        if cv < 2:
            raise ValueError(f"cv must be >= 2 folds; got {cv}.")
        if groups is not None:
            n_groups = len(np.unique(groups))
            if n_groups < 2:
                raise ValueError(
                    f"cv={cv} story-grouped folds need at least 2 stories, but groups holds "
                    "only one; use cv='bootstrap' (chunks held out within the story), pass "
                    "groups=None to split the story into contiguous blocks, or add stories.")
            if n_groups < cv:
                raise ValueError(
                    f"cv={cv} story-grouped folds need at least {cv} groups, but groups "
                    f"has {n_groups}; use cv={n_groups} or cv='bootstrap'.")
            cv = GroupKFold(n_splits=cv)
        else:
            cv = KFold(n_splits=cv, shuffle=False)
    within_stories = isinstance(cv, ChunkedBootstrap)  # holds out chunks of each story by design
    if hasattr(cv, "split"):
        splits = list(cv.split(X, y, groups))
    else:
        splits = list(cv)
    if not splits:
        raise ValueError("cv produced no splits.")
    out = []
    for train, test in splits:
        train, test = np.asarray(train), np.asarray(test)
        if train.dtype == bool:
            train = np.flatnonzero(train)
        if test.dtype == bool:
            test = np.flatnonzero(test)
        if len(train) < 2 or len(test) < 1:
            raise ValueError(f"Each inner CV split needs >= 2 training and >= 1 held-out "
                             f"samples; got {len(train)} and {len(test)}.")
        out.append((train.astype(np.int64), test.astype(np.int64)))
    if not within_stories:
        check_story_splits(out, groups, what=f"the inner cv {cv!r}", stacklevel=4)
    return out
