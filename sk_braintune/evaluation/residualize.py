"""Regress low-level speech features out of model features; the low-level impact on alignment.

The paper's control (after Oota et al.): a speech model's features ``M`` are predicted from
low-level features ``L`` (power spectrum, phonemes, diphones, triphones, articulation) with a
cross-validated ridge that picks one penalty per feature dimension; the residuals ``M - L W``
replace ``M`` in the encoding model. The ridge is fitted on training stories and applied out of
sample to the test story. The *low-level impact* is ``(A - A_resid) / A`` in percent, where
``A`` is the brain alignment of the raw features and ``A_resid`` that of the residuals.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import Bunch
from sklearn.utils.validation import check_is_fitted, validate_data

from ..preprocessing import zscore

__all__ = ["Residualizer", "low_level_impact", "low_level_comparison"]


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
    ``lowlevel`` says which columns are low-level. ``fit`` learns, on the training rows, a ridge
    from the low-level columns to every model column with one penalty per model column, chosen
    by held-out squared error (story-grouped inner CV when ``groups`` are given; correlation
    would be blind to over-shrinkage and leave low-level signal behind). ``transform`` returns the model columns
    minus their prediction from the low-level columns, so applying a fitted residualiser to a
    test story is out of sample.

    Parameters
    ----------
    lowlevel : int, slice, array-like of int or bool, default=None
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
    lowlevel_mask_ : ndarray of shape (n_features_in,), bool
        True for the low-level columns.
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from sk_braintune.evaluation import Residualizer
    >>> rng = np.random.default_rng(0)
    >>> L = rng.normal(size=(200, 3)); M = L @ rng.normal(size=(3, 5))
    >>> res = Residualizer(lowlevel=3, alphas=[1e-6]).fit(np.hstack([M, L]))
    >>> bool(np.abs(res.transform(np.hstack([M, L]))).max() < 1e-3)
    True
    """

    def __init__(self, lowlevel=None, alphas=None, cv=5):
        self.lowlevel = lowlevel
        self.alphas = alphas
        self.cv = cv

    def _mask(self, n_features):
        if self.lowlevel is None:
            raise ValueError("Residualizer needs `lowlevel`: the number of trailing low-level "
                             "columns of X, or their indices / boolean mask.")
        if isinstance(self.lowlevel, numbers.Integral) and not isinstance(self.lowlevel, bool):
            k = int(self.lowlevel)
            if not 0 < k < n_features:
                raise ValueError(f"lowlevel={k} must be between 1 and n_features - 1 = "
                                 f"{n_features - 1}: X holds model features and low-level "
                                 "features side by side.")
            mask = np.zeros(n_features, dtype=bool)
            mask[n_features - k:] = True
            return mask
        index = np.arange(n_features)[self.lowlevel] if isinstance(self.lowlevel, slice) \
            else np.asarray(self.lowlevel)
        mask = np.zeros(n_features, dtype=bool)
        if index.dtype == bool:
            if index.shape != (n_features,):
                raise ValueError(f"a boolean lowlevel mask needs {n_features} entries, got "
                                 f"{index.shape}")
            mask = index.copy()
        else:
            mask[index.astype(int)] = True
        if mask.all() or not mask.any():
            raise ValueError("lowlevel must select some, but not all, columns of X.")
        return mask

    def fit(self, X, y=None, groups=None):
        """Fit the ridge from low-level columns to model columns.

        Parameters
        ----------
        X : array-like of shape (n_trs, n_model + n_lowlevel)
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
        self.lowlevel_mask_ = self._mask(X.shape[1])
        low, model = X[:, self.lowlevel_mask_], X[:, ~self.lowlevel_mask_]
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
        X : array-like of shape (n_trs, n_model + n_lowlevel)

        Returns
        -------
        residuals : ndarray of shape (n_trs, n_model)
        """
        check_is_fitted(self, "ridge_")
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        low, model = X[:, self.lowlevel_mask_], X[:, ~self.lowlevel_mask_]
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
        return np.asarray(input_features, dtype=object)[~self.lowlevel_mask_]


def low_level_impact(A, A_resid, voxel_labels=None, rois=None):
    """Low-level impact ``(A - A_resid) / A`` in percent.

    Parameters
    ----------
    A : array-like of shape (n_voxels,) or scalar
        Alignment (e.g. noise-ceiling-normalised r) with the raw features.
    A_resid : array-like of shape (n_voxels,) or scalar
        Alignment after residualising the low-level features.
    voxel_labels : array-like of shape (n_voxels,), optional
        ROI or voxel kind per voxel. When given, ``A`` and ``A_resid`` are averaged per ROI
        (NaN voxels left out) and the impact is computed from the ROI means.
    rois : dict of str to list of str, optional
        Groups of labels (see :func:`sk_braintune.evaluation.roi_summary`).

    Returns
    -------
    impact : ndarray or pandas.DataFrame
        Element-wise impact without labels; otherwise a DataFrame indexed by ROI with columns
        ``A``, ``A_resid``, ``impact_percent``, ``n_voxels``.
    """
    if voxel_labels is None:
        A = np.asarray(A, dtype=np.float64)
        A_resid = np.asarray(A_resid, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            return 100.0 * (A - A_resid) / A
    from .roi import roi_summary

    raw = roi_summary(A, voxel_labels, rois=rois)
    resid = roi_summary(A_resid, voxel_labels, rois=rois)
    table = raw.rename(columns={"mean": "A"})[["A", "n_voxels"]]
    table.insert(1, "A_resid", resid["mean"])
    with np.errstate(divide="ignore", invalid="ignore"):
        table.insert(2, "impact_percent", 100.0 * (table["A"] - table["A_resid"]) / table["A"])
    return table


def _stack(per_story, stories):
    return np.concatenate([per_story[s] for s in stories], axis=0)


def _as_story_dict(value, name):
    if isinstance(value, dict):
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, dict) for v in value):
        # several low-level spaces: join their columns per story
        return {s: np.hstack([np.asarray(v[s], dtype=np.float64) for v in value])
                for s in value[0]}
    raise TypeError(f"{name} must be a dict story -> (n_trs, d) array (or a list of such dicts)")


def low_level_comparison(features, lowlevel, responses, train_stories, test_stories, *,
                         delays=(1, 2, 3, 4), estimator=None, alphas=None, cv=5,
                         noise_ceiling=None, voxel_labels=None, rois=None, min_ceiling=0.05):
    """Encoding model on raw features vs. refit on low-level residuals, on held-out stories.

    Per story, model and low-level features are z-scored; a :class:`Residualizer` is fitted on
    the training stories and applied to every story; both feature sets are then scored by
    :func:`sk_braintune.evaluation.fit_score_encoding` (FIR delays per story, the encoding model
    fitted on the training stories, Pearson r per voxel on the test stories).

    Parameters
    ----------
    features : dict of str to ndarray of shape (n_trs, d_model)
        Model features per story (one layer, or several joined).
    lowlevel : dict of str to ndarray of shape (n_trs, d_low), or list of such dicts
        Low-level features per story (a list is joined column-wise, e.g. phonemes + powspec).
    responses : dict of str to ndarray of shape (n_trs, n_voxels), or ndarray
        Per story, or already stacked: an ndarray of shape (n_trs_total, n_voxels) holding
        the stories of ``train_stories + test_stories`` in that order, used as is (at full
        size stacking them here would copy every response).
    train_stories, test_stories : list of str
    delays : tuple of int, default=(1, 2, 3, 4)
        FIR delays in TRs (empty for none).
    estimator : regressor or Pipeline, optional
        Encoding model, cloned twice (see :func:`sk_braintune.evaluation.fit_score_encoding`:
        its integer ``cv`` is clamped to the training stories and it receives their
        ``groups``); ``RidgeEncoder(alphas="default", cv=cv)`` by default.
    alphas, cv :
        Passed to the :class:`Residualizer` (and ``cv`` to the default encoding model); an int
        ``cv`` larger than the number of training stories becomes one fold per story.
    noise_ceiling : ndarray of shape (n_voxels,), optional
        cc_max per voxel; when given, alignments are r / cc_max with voxels of
        ``cc_max <= min_ceiling`` excluded (NaN) from ROI means.
    voxel_labels : ndarray of shape (n_voxels,), optional
        ROI / kind per voxel; the impact table is per ROI (one row ``"all"`` without labels).
    rois : dict of str to list of str, optional
        Label groups, see :func:`sk_braintune.evaluation.roi_summary`.
    min_ceiling : float, default=0.05

    Returns
    -------
    result : sklearn.utils.Bunch
        ``r_raw``, ``r_resid`` (ndarray (n_voxels,), Pearson r on the test stories),
        ``alignment_raw``, ``alignment_resid`` (normalised when ``noise_ceiling`` is given),
        ``impact`` (DataFrame per ROI: ``A``, ``A_resid``, ``impact_percent``, ``n_voxels``),
        ``residualizer`` (fitted).
    """
    from .alignment import default_encoder, fit_score_encoding
    from ..metrics import normalized_correlation
    from ..model_selection import clamp_cv

    lowlevel = _as_story_dict(lowlevel, "lowlevel")
    stories = list(train_stories) + list(test_stories)
    stacked = isinstance(responses, np.ndarray)
    for s in stories:
        n_responses = len(features[s]) if stacked else len(responses[s])
        if len(features[s]) != len(lowlevel[s]) or len(features[s]) != n_responses:
            raise ValueError(f"story {s!r}: features ({len(features[s])}), low-level features "
                             f"({len(lowlevel[s])}) and responses ({n_responses}) must have "
                             "one row per TR each")
    if stacked and len(responses) != sum(len(features[s]) for s in stories):
        raise ValueError(f"stacked responses have {len(responses)} rows, but the stories "
                         f"{stories} have {sum(len(features[s]) for s in stories)} TRs; stack "
                         "them in the order train_stories + test_stories")
    model_z = {s: zscore(features[s]) for s in stories}
    low_z = {s: zscore(lowlevel[s]) for s in stories}
    d_low = next(iter(low_z.values())).shape[1]
    groups = np.concatenate([[s] * len(features[s]) for s in train_stories])
    if len(train_stories) >= 2:
        cv = clamp_cv(cv, groups)  # at most one story per fold
    elif isinstance(cv, numbers.Integral):
        groups = None  # a single story: contiguous blocks of it
    residualizer = Residualizer(lowlevel=d_low, alphas=alphas, cv=cv).fit(
        np.hstack([_stack(model_z, train_stories), _stack(low_z, train_stories)]), groups=groups)
    resid = {s: residualizer.transform(np.hstack([model_z[s], low_z[s]])) for s in stories}

    if estimator is None:
        estimator = default_encoder(cv=cv)
    # the encoding fits see the stories stacked in this order, each story's rows contiguous
    fit_groups = np.concatenate([[s] * len(features[s]) for s in stories])
    y = responses if stacked else _stack(responses, stories)
    scores = {}
    for name, feats in (("raw", model_z), ("resid", resid)):
        result = fit_score_encoding(_stack(feats, stories), y, fit_groups, train_stories,
                                    test_stories, estimator=estimator, delays=tuple(delays),
                                    standardize=False)
        scores[name] = result["r"]
    align_raw, align_resid = scores["raw"], scores["resid"]
    if noise_ceiling is not None:
        align_raw = normalized_correlation(align_raw, noise_ceiling, min_ceiling)
        align_resid = normalized_correlation(align_resid, noise_ceiling, min_ceiling)
    labels = (np.asarray(voxel_labels) if voxel_labels is not None
              else np.full(len(align_raw), "all", dtype=object))
    impact = low_level_impact(align_raw, align_resid, labels, rois=rois)
    return Bunch(r_raw=scores["raw"], r_resid=scores["resid"], alignment_raw=align_raw,
                 alignment_resid=align_resid, impact=impact, residualizer=residualizer)
