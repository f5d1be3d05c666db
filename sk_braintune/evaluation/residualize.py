"""Regress low-level speech features out of model features: the :class:`Residualizer`.

The paper's control (after Oota et al.): a speech model's features ``M`` are predicted from
low-level features ``L`` (power spectrum, phonemes, diphones, triphones, articulation) with a
cross-validated ridge that picks one penalty per feature dimension; the residuals ``M - L W``
replace ``M`` in the encoding model. The ridge is fitted on training stories and applied out of
sample to the test story. The low-level impact built on it lives in
:mod:`sk_braintune.evaluation.lowlevel`.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["Residualizer"]


def _ridge(alphas, cv, dtype="float64", cv_scoring="mse"):
    """Per-target cross-validated ridge (one penalty per output column).

    Residualising needs penalties chosen by squared error: correlation is blind to shrinkage,
    and an over-shrunk fit would leave low-level signal in the residuals.
    """
    from ..encoding import RidgeEncoder

    return RidgeEncoder(alphas="default" if alphas is None else alphas, cv=cv,
                        cv_scoring=cv_scoring, dtype=dtype)


class Residualizer(TransformerMixin, BaseEstimator):
    """Remove from model features what a ridge regression on low-level features predicts.

    ``X`` holds the model features and the low-level features side by side, one row per TR;
    ``low_level`` says which columns are low-level. ``fit`` learns, on the training rows, a ridge
    from the low-level columns to every model column with one penalty per model column, chosen
    by held-out squared error (story-grouped inner CV when ``groups`` are given; correlation
    would be blind to over-shrinkage and leave low-level signal behind). ``transform`` returns the model columns
    minus their prediction from the low-level columns, so applying a fitted residualiser to a
    test story is out of sample.

    Parameters
    ----------
    low_level : int, slice, array-like of int or bool, default=None
        Low-level columns of ``X``: an int ``k`` means the last ``k`` columns; otherwise column
        indices or a boolean mask. Required.
    alphas : array-like of float, optional
        Penalty grid in scikit-learn's units (λ on ‖w‖²); the ridge's default grid when None.
    cv : int or CV splitter, default=5
        Inner CV of the ridge (story-grouped when ``groups`` reach ``fit``).

    Attributes
    ----------
    ridge_ : estimator
        Fitted per-target ridge (:class:`sk_braintune.encoding.RidgeEncoder`).
    low_level_mask_ : ndarray of shape (n_features_in,), bool
        True for the low-level columns.
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from sk_braintune.evaluation import Residualizer
    >>> rng = np.random.default_rng(0)
    >>> L = rng.normal(size=(200, 3)); M = L @ rng.normal(size=(3, 5))
    >>> res = Residualizer(low_level=3, alphas=[1e-6]).fit(np.hstack([M, L]))
    >>> bool(np.abs(res.transform(np.hstack([M, L]))).max() < 1e-3)
    True
    """

    def __init__(self, low_level=None, alphas=None, cv=5):
        self.low_level = low_level
        self.alphas = alphas
        self.cv = cv

    def _mask(self, n_features):
        if self.low_level is None:
            raise ValueError("Residualizer needs `low_level`: the number of trailing low-level "
                             "columns of X, or their indices / boolean mask.")
        if isinstance(self.low_level, numbers.Integral) and not isinstance(self.low_level, bool):
            k = int(self.low_level)
            if not 0 < k < n_features:
                raise ValueError(f"low_level={k} must be between 1 and n_features - 1 = "
                                 f"{n_features - 1}: X holds model features and low-level "
                                 "features side by side.")
            mask = np.zeros(n_features, dtype=bool)
            mask[n_features - k:] = True
            return mask
        index = np.arange(n_features)[self.low_level] if isinstance(self.low_level, slice) \
            else np.asarray(self.low_level)
        mask = np.zeros(n_features, dtype=bool)
        if index.dtype == bool:
            if index.shape != (n_features,):
                raise ValueError(f"a boolean low_level mask needs {n_features} entries, got "
                                 f"{index.shape}")
            mask = index.copy()
        else:
            mask[index.astype(int)] = True
        if mask.all() or not mask.any():
            raise ValueError("low_level must select some, but not all, columns of X.")
        return mask

    def fit(self, X, y=None, groups=None):
        """Fit the ridge from low-level columns to model columns.

        Parameters
        ----------
        X : array-like of shape (n_trs, n_model + n_low_level)
            Training rows (training stories).
        y : None
            Ignored.
        groups : array-like of shape (n_trs,), optional
            Story of each row, for story-grouped inner CV.

        Returns
        -------
        self : Residualizer
        """
        X = validate_data(self, X, dtype=[np.float64, np.float32])
        if X.shape[0] < 2:
            raise ValueError(f"Residualizer needs at least 2 samples, got n_samples = {X.shape[0]}")
        if X.shape[1] == 1:
            raise ValueError("Residualizer got 1 feature(s): X must hold model features and "
                             "low-level features side by side.")
        self.low_level_mask_ = self._mask(X.shape[1])
        low, model = X[:, self.low_level_mask_], X[:, ~self.low_level_mask_]
        cv = self.cv
        if groups is None and isinstance(cv, numbers.Integral):
            # without stories, contiguous folds (never shuffled TRs: autocorrelation leaks)
            from sklearn.model_selection import KFold
            cv = KFold(min(int(cv), len(X)))
        self.ridge_ = _ridge(self.alphas, cv).fit(low, model, groups=groups)
        return self

    def transform(self, X):
        """Model columns minus their prediction from the low-level columns.

        Parameters
        ----------
        X : array-like of shape (n_trs, n_model + n_low_level)

        Returns
        -------
        residuals : ndarray of shape (n_trs, n_model)
        """
        check_is_fitted(self, "ridge_")
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        low, model = X[:, self.low_level_mask_], X[:, ~self.low_level_mask_]
        predicted = np.asarray(self.ridge_.predict(low)).reshape(model.shape)
        return (model - predicted).astype(X.dtype, copy=False)

    def get_feature_names_out(self, input_features=None):
        """Names of the model columns (the residualised outputs).

        Parameters
        ----------
        input_features : array-like of str, default=None
            Names of all input columns (default: ``feature_names_in_``, else ``x0``, ``x1``,
            ...); those of the model columns are returned.

        Returns
        -------
        names : ndarray of str
        """
        check_is_fitted(self, "ridge_")
        if input_features is None:
            input_features = getattr(self, "feature_names_in_",
                                     [f"x{i}" for i in range(self.n_features_in_)])
        return np.asarray(input_features, dtype=object)[~self.low_level_mask_]
