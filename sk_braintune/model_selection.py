"""Story-aware splitters."""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["HeldOutStories", "clamp_cv"]


class HeldOutStories:
    """Splitter holding out named stories (one split), e.g. the dataset's validation story.

    Parameters
    ----------
    stories : sequence of str
        Stories of the held-out part.
    """

    def __init__(self, stories):
        self.stories = stories

    def get_n_splits(self, X=None, y=None, groups=None):
        """Number of splits (always 1)."""
        return 1

    def split(self, X, y=None, groups=None):
        """Yield ``(train_indices, held_out_indices)`` by story membership.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
        y : ignored
        groups : array-like of shape (n_samples,)
            Story of each sample (taken from ``X.groups`` for AudioWindows when None).

        Yields
        ------
        train, held_out : ndarray of int
        """
        if groups is None:
            groups = getattr(X, "groups", None)
        if groups is None:
            raise ValueError("HeldOutStories needs groups (the story of each sample)")
        held_out = np.isin(np.asarray(groups), list(self.stories))
        if not held_out.any() or held_out.all():
            raise ValueError(f"held-out stories {list(self.stories)} must be some but not all "
                             "of the stories")
        yield np.flatnonzero(~held_out), np.flatnonzero(held_out)


def clamp_cv(cv, groups):
    """Clamp an integer number of story-grouped folds to the number of stories.

    An inner CV of ``cv`` folds grouped by story needs at least ``cv`` stories; with fewer, one
    story per fold is the most that can be done. Splitters are returned unchanged.

    Parameters
    ----------
    cv : int or CV splitter
    groups : array-like of shape (n_samples,) or None
        Story of each sample (None: returned unchanged).

    Returns
    -------
    cv : int or CV splitter
        ``min(cv, n_stories)`` for an int ``cv`` and given groups, else ``cv``.
    """
    if groups is None or isinstance(cv, bool) or not isinstance(cv, numbers.Integral):
        return cv
    return min(int(cv), len(np.unique(np.asarray(groups))))
