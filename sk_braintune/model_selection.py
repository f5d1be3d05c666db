"""Story-aware splitters."""

from __future__ import annotations

import numbers
import warnings

import numpy as np

from ._docs import fill_doc
from .exceptions import StoryLeakWarning

__all__ = ["HeldOutStories", "ConcatenatedSplits", "clamp_cv", "check_story_splits",
           "StoryLeakWarning"]


class HeldOutStories:
    """Splitter holding out named stories (one split), e.g. the dataset's validation story.

    Parameters
    ----------
    stories : sequence of str
        Stories of the held-out part.
    """

    def __init__(self, stories):
        self.stories = stories

    @fill_doc
    def get_n_splits(self, X=None, y=None, groups=None):
        """Number of splits (always 1).

        Parameters
        ----------
        %(splitter_args)s

        Returns
        -------
        n_splits : int
            1.
        """
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


class ConcatenatedSplits:
    """A splitter applied to the concatenated samples: the ``groups`` it is given are dropped.

    Story-aware code passes ``groups`` to every splitter; some protocols split the training
    data as one run instead. The brain-tuning paper's script draws its
    ``bootstrap_ridge`` chunks on a single grid over the concatenated training stories, so
    chunks may straddle two stories: ``ConcatenatedSplits(ChunkedBootstrap(...,
    chunking="reference"))`` reproduces that, where ``ChunkedBootstrap`` alone (given the
    stories) restarts its chunks at every story.

    Parameters
    ----------
    cv : cross-validation splitter
        Its ``split(X, y)`` is called without groups.
    """

    def __init__(self, cv):
        self.cv = cv

    @fill_doc
    def get_n_splits(self, X=None, y=None, groups=None):
        """Number of splits of ``cv``.

        Parameters
        ----------
        %(splitter_args)s

        Returns
        -------
        n_splits : int
        """
        return self.cv.get_n_splits(X, y)

    def split(self, X, y=None, groups=None):
        """Yield ``cv``'s splits of the samples taken as one run.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
        y : ignored
        groups : ignored
            Dropped on purpose (see the class docstring).

        Yields
        ------
        train, test : ndarray of int
        """
        yield from self.cv.split(X, y)


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


def check_story_splits(splits, groups, *, what="cv", stacklevel=2):
    """Warn when a cross-validation puts rows of one story on both sides of a split.

    Neighbouring TRs are correlated (autocorrelation, the HRF), so a split that trains on
    some TRs of a story and scores on others of the same story inflates the score (0.86
    against 0.30 with story-grouped folds on the built-in data). Such a split is what a
    splitter that ignores ``groups`` gives (``KFold(shuffle=True)``, ``ShuffleSplit``).
    The estimators of the package run this check on their inner splits when ``groups`` is
    given; call it on the outer splits of a search::

        check_story_splits(list(cv.split(X, y, groups)), groups)

    Parameters
    ----------
    splits : iterable of (train, test)
        Index arrays (or boolean masks) of each split.
    groups : array-like of shape (n_samples,) or None
        Story of each sample; None checks nothing.
    what : str, default="cv"
        How the warning names the cross-validation (e.g. ``"RidgeEncoder(cv=KFold(...))"``).
    stacklevel : int, default=2
        Passed to :func:`warnings.warn`.

    Returns
    -------
    shared : list of str
        The stories found on both sides of some split (empty when none), as in the warning.

    Warns
    -----
    StoryLeakWarning
        When a story has rows in the training and the held-out part of some split.
    """
    if groups is None:
        return []
    groups = np.asarray(groups)
    shared = {}
    for train, test in splits:
        train, test = np.asarray(train), np.asarray(test)
        common = np.intersect1d(groups[train], groups[test])
        for story in common.tolist():
            shared.setdefault(story, None)
    if shared:
        names = list(shared)
        listed = ", ".join(repr(s) for s in names[:5]) + (", ..." if len(names) > 5 else "")
        warnings.warn(
            f"{what} puts rows of the same story in the training and the held-out part of a "
            f"split ({len(names)} of {len(np.unique(groups))} stories: {listed}); neighbouring "
            "TRs are correlated, so the held-out scores are inflated. Use a story-grouped "
            "splitter (e.g. GroupKFold, LeaveOneGroupOut) or an int cv with groups.",
            StoryLeakWarning, stacklevel=stacklevel)
    return list(shared)
