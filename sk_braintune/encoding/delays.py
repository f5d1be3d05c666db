"""Finite impulse response (FIR) delays: stack time-shifted copies of the features.

The BOLD response peaks 4-6 s after the stimulus, so an encoding model predicts the response
at TR ``t`` from the features at TRs ``t - 1, ..., t - 4``. Shifts never cross a story
boundary: the rows shifted in at the start of each story are zeros.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import validate_data

from .._docs import fill_doc

__all__ = ["FIRDelayer", "contiguous_runs"]


def contiguous_runs(groups, n_samples):
    """Start and end positions of the contiguous runs of equal labels in ``groups``.

    Parameters
    ----------
    groups : array-like of shape (n_samples,) or None
        Story label per sample. ``None`` means one run holding all samples.
    n_samples : int
        Expected length of ``groups``.

    Returns
    -------
    starts, ends : ndarray of shape (n_runs,)
        Run ``k`` holds samples ``starts[k]:ends[k]``.

    Raises
    ------
    ValueError
        If ``groups`` has the wrong length, or a label occurs in two separate runs (the samples
        of a story were not kept together and in order).
    """
    if groups is None:
        return np.array([0]), np.array([n_samples])
    groups = np.asarray(groups)
    if groups.ndim != 1 or len(groups) != n_samples:
        raise ValueError(f"groups must be a 1-D array with one story label per sample "
                         f"({n_samples}); got shape {groups.shape}.")
    if n_samples == 0:
        return np.array([0]), np.array([0])
    change = np.flatnonzero(groups[1:] != groups[:-1]) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [n_samples]])
    run_labels = groups[starts]
    if len(np.unique(run_labels)) != len(run_labels):
        _, counts = np.unique(run_labels, return_counts=True)
        repeated = np.unique(run_labels)[counts > 1][:5].tolist()
        raise ValueError(
            f"The samples of each story must form one contiguous run in time order, but the "
            f"labels {repeated} occur in several separate runs. Sort the samples by story (and "
            f"time within each story), or give each run its own label.")
    return starts, ends


@fill_doc
class FIRDelayer(TransformerMixin, BaseEstimator):
    """Concatenate copies of the features delayed by whole TRs, never across stories.

    Output column block ``k`` holds the features delayed by ``delays[k]`` TRs:
    ``out[t, k * n_features + j] = X[t - delays[k], j]`` when ``t - delays[k]`` lies in the
    same story as ``t``, else 0 (zero-filled). Feature names are delay-major:
    ``<name>_delay<d>``. The transformer is stateless (``fit`` only records the input
    features).

    Story boundaries come from ``groups`` (one label per sample, each story one contiguous
    run in time order), passed to ``fit_transform``/``transform`` directly or through
    scikit-learn metadata routing (``set_fit_request(groups=True)`` and
    ``set_transform_request(groups=True)`` inside
    ``sklearn.config_context(enable_metadata_routing=True)``). **Without** ``groups`` the
    samples are taken as one contiguous run in their given order (never shuffled): correct for
    one story, but at each boundary between concatenated stories the first ``max(delays)``
    rows would see the previous story. Note that scikit-learn does not pass ``groups`` to
    test-time ``transform`` when ``GridSearchCV`` uses a scorer object: delay each story
    before cross-validation, or use ``scoring=None`` (the estimator's own ``score``).

    Parameters
    ----------
    %(delays)s

    Attributes
    ----------
    n_features_in_ : int
        Number of input features seen in ``fit``.
    feature_names_in_ : ndarray of shape (n_features_in,)
        Input feature names, when ``X`` had string column names.

    Examples
    --------
    >>> import numpy as np
    >>> from sk_braintune.encoding import FIRDelayer
    >>> X = np.arange(6.0).reshape(6, 1)
    >>> FIRDelayer(delays=(1, 2)).fit_transform(X, groups=[0, 0, 0, 1, 1, 1])[:, 0]
    array([0., 0., 1., 0., 3., 4.])
    """

    def __init__(self, delays=(1, 2, 3, 4)):
        self.delays = delays

    def _checked_delays(self):
        delays = np.atleast_1d(np.asarray(self.delays))
        if delays.ndim != 1 or delays.size == 0 or not all(
                isinstance(d, numbers.Integral) or float(d).is_integer() for d in delays):
            raise ValueError(f"delays must be a non-empty sequence of whole numbers of TRs; "
                             f"got {self.delays!r}.")
        return delays.astype(int)

    @fill_doc
    def fit(self, X, y=None, groups=None):
        """Record the number (and names) of input features.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Features, one row per TR.
        y : None
            Ignored.
        %(groups)s
            Only checked here.

        Returns
        -------
        self : FIRDelayer
        """
        X = validate_data(self, X, dtype=[np.float64, np.float32], ensure_all_finite=False)
        self._checked_delays()
        contiguous_runs(groups, X.shape[0])
        return self

    @fill_doc
    def fit_transform(self, X, y=None, groups=None):
        """Fit, then delay ``X``, forwarding ``groups`` to both steps.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : None
            Ignored.
        %(groups)s

        Returns
        -------
        X_delayed : ndarray of shape (n_samples, n_delays * n_features)
        """
        # TransformerMixin.fit_transform does not forward metadata such as groups.
        return self.fit(X, y, groups=groups).transform(X, groups=groups)

    @fill_doc
    def transform(self, X, groups=None):
        """Delay the features within each story.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Features, one row per TR, each story's rows contiguous and in time order.
        %(groups)s
            Without it all samples form one contiguous run.

        Returns
        -------
        X_delayed : ndarray of shape (n_samples, n_delays * n_features)
            Same float dtype as ``X`` (float32 stays float32).
        """
        X = validate_data(self, X, dtype=[np.float64, np.float32], ensure_all_finite=False,
                          reset=False)
        source, valid = self._source_rows(X.shape[0], groups)
        n_samples, n_features = X.shape
        empty = [int(d) for d, keep in zip(self._checked_delays(), valid) if not keep.any()]
        if empty and n_samples:
            longest = int(np.max(np.diff(np.stack(contiguous_runs(groups, n_samples)), axis=0)))
            warnings.warn(
                f"FIRDelayer: delay(s) {empty} TRs are at least as long as every story (the "
                f"longest has {longest} TRs), so their feature columns are all zeros. Use "
                "delays shorter than the stories (the paper's are 1-4 TRs) or pass groups "
                "that match the stories.", UserWarning, stacklevel=2)
        out = np.zeros((n_samples, len(source) * n_features), dtype=X.dtype)
        for k, (rows, keep) in enumerate(zip(source, valid)):
            block = out[:, k * n_features:(k + 1) * n_features]
            block[keep] = X[rows[keep]]
        return out

    def _source_rows(self, n_samples, groups):
        """Row read by each output row for each delay, and whether it lies in the same story."""
        delays = self._checked_delays()
        starts, ends = contiguous_runs(groups, n_samples)
        run_of_row = np.repeat(np.arange(len(starts)), ends - starts)
        row_start, row_end = starts[run_of_row], ends[run_of_row]
        positions = np.arange(n_samples)
        sources, valid = [], []
        for delay in delays:
            rows = positions - delay
            sources.append(rows)
            valid.append((rows >= row_start) & (rows < row_end))
        return sources, valid

    @fill_doc
    def padding_mask(self, n_samples, groups=None):
        """Which delayed values are zero fill rather than data.

        Parameters
        ----------
        n_samples : int
            Number of samples (TRs).
        %(groups)s
            As given to :meth:`transform`.

        Returns
        -------
        mask : ndarray of shape (n_samples, n_delays), dtype bool
            ``mask[t, k]`` is True when column block ``k`` of row ``t`` is zero padding
            (the delayed row falls before the story start or after its end).
            ``mask.any(axis=1)`` marks the rows that hold any padding.
        """
        _, valid = self._source_rows(int(n_samples), groups)
        return ~np.stack(valid, axis=1)

    def get_feature_names_out(self, input_features=None):
        """Delay-major output feature names ``<input name>_delay<d>``.

        Parameters
        ----------
        input_features : array-like of str, default=None
            Input feature names; defaults to ``feature_names_in_`` or ``x0, x1, ...``.

        Returns
        -------
        names : ndarray of shape (n_delays * n_features,), dtype object
        """
        n_features = getattr(self, "n_features_in_", None)
        names_in = getattr(self, "feature_names_in_", None)
        if input_features is None:
            if names_in is not None:
                input_features = names_in
            elif n_features is not None:
                input_features = [f"x{i}" for i in range(n_features)]
            else:
                raise ValueError("input_features is required before FIRDelayer is fitted.")
        input_features = np.asarray(input_features, dtype=object)
        if n_features is not None and len(input_features) != n_features:
            raise ValueError(f"input_features should have length {n_features}, equal to the "
                             f"number of features seen in fit; got {len(input_features)}.")
        if names_in is not None and not np.array_equal(input_features, names_in):
            raise ValueError("input_features is not equal to feature_names_in_.")
        return np.asarray([f"{name}_delay{delay}" for delay in self._checked_delays()
                           for name in input_features], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Stateless: transform needs nothing learnt in fit.
        tags.requires_fit = False
        tags.input_tags.allow_nan = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags
