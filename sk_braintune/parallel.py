"""Parallel loops through joblib, so that they run on whatever joblib backend is active.

A study's independent pieces of work (one encoding model per layer, per participant, per seed,
per model) go through :func:`parallel_map`, a thin layer over :class:`joblib.Parallel`; scikit-learn
searches (``GridSearchCV(..., n_jobs=...)``) go through joblib too. Both therefore follow the
backend chosen by the caller: processes on this machine by default (``n_jobs=-1``), or the
workers of a dask.distributed cluster::

    from dask.distributed import Client
    from joblib import parallel_config

    client = Client("tcp://scheduler:8786")       # or Client(LocalCluster(...))
    with parallel_config(backend="dask"):
        scores = parallel_map(fit_layer, layers)  # one task per layer on the cluster
        search.fit(X, y, groups=groups)           # GridSearchCV's fits too

Nothing here is a scheduler of its own: joblib splits the work, the backend runs it.
"""

from __future__ import annotations

__all__ = ["parallel_map", "sweep"]


def parallel_map(function, items, *, n_jobs=None, verbose=0, **parallel_options):
    """``[function(item) for item in items]``, run by joblib.

    Parameters
    ----------
    function : callable
        Called once per item. With process-based backends it is pickled (cloudpickle: closures
        and lambdas work); large NumPy arguments are memory-mapped by joblib's default
        backend and sent once per worker by the dask backend.
    items : iterable
    n_jobs : int, optional
        Workers; None follows the active joblib configuration (one worker outside a
        ``parallel_config`` context, all of the dask cluster's inside
        ``parallel_config(backend="dask")``), -1 uses all CPUs.
    verbose : int, default=0
        joblib's progress messages.
    **parallel_options
        Passed to :class:`joblib.Parallel` (``prefer``, ``max_nbytes``, ...).

    Returns
    -------
    results : list
        In the order of ``items``.

    Examples
    --------
    >>> parallel_map(abs, [-2, 3, -4], n_jobs=1)
    [2, 3, 4]
    """
    from joblib import Parallel, delayed

    return list(Parallel(n_jobs=n_jobs, verbose=verbose, **parallel_options)(
        delayed(function)(item) for item in items))


def sweep(function, *, n_jobs=None, verbose=0, **axes):
    """``function(**params)`` for every combination of the given values, run by joblib.

    Parameters
    ----------
    function : callable
        Called with one keyword argument per axis.
    n_jobs : int, optional
        As in :func:`parallel_map`.
    verbose : int, default=0
    **axes : sequence
        Parameter name -> values, e.g. ``layer=range(13), seed=[0, 1, 2]``.

    Returns
    -------
    results : list of (dict, object)
        ``(params, function(**params))`` per combination, the last axis varying fastest (as
        :func:`sk_braintune.executors.job_grid` orders them).

    Examples
    --------
    >>> sweep(pow, base=[2, 3], exp=[2], n_jobs=1)
    [({'base': 2, 'exp': 2}, 4), ({'base': 3, 'exp': 2}, 9)]
    """
    from .executors import job_grid

    grid = job_grid(**axes)
    results = parallel_map(_CallWithKeywords(function), grid, n_jobs=n_jobs, verbose=verbose)
    return list(zip(grid, results))


class _CallWithKeywords:
    """Picklable ``lambda params: function(**params)``."""

    def __init__(self, function):
        self.function = function

    def __call__(self, params):
        return self.function(**params)
