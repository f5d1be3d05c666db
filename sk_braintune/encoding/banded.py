"""Banded ridge regression: one penalty per feature band and per target, by random search."""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from . import _solvers
from .ridge import _VoxelwiseRidge

__all__ = ["BandedRidgeEncoder", "band_weight_candidates"]


def band_weight_candidates(n_candidates, n_bands, concentration=(0.1, 1.0), random_state=None):
    """Random band weights on the simplex, the first one uniform.

    Candidate ``k > 0`` is drawn from a symmetric Dirichlet distribution whose concentration
    cycles through ``concentration`` (small values favour weights near the simplex's
    corners, i.e. one dominant band; 1 is uniform over the simplex), as in himalaya's
    random search.

    Parameters
    ----------
    n_candidates : int
    n_bands : int
    concentration : float or sequence of float, default=(0.1, 1.0)
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    weights : ndarray of shape (n_candidates, n_bands)
        Non-negative rows summing to 1.
    """
    rng = check_random_state(random_state)
    concentration = np.atleast_1d(np.asarray(concentration, dtype=np.float64))
    if n_candidates < 1 or n_bands < 1 or np.any(concentration <= 0):
        raise ValueError(f"Need n_candidates >= 1, n_bands >= 1 and concentrations > 0; got "
                         f"{n_candidates}, {n_bands} and {concentration}.")
    weights = np.full((n_candidates, n_bands), 1.0 / n_bands)
    for k in range(1, n_candidates):
        weights[k] = rng.dirichlet(np.full(n_bands, concentration[(k - 1) % len(concentration)]))
    return weights


def _resolve_bands(bands, n_features):
    """Index array of each band; the bands must partition the columns."""
    if bands is None:
        return [np.arange(n_features)]
    bands = list(bands)
    if not bands:
        raise ValueError("bands must name at least one band.")
    if all(isinstance(b, numbers.Integral) and not isinstance(b, bool) for b in bands):
        sizes = np.asarray(bands, dtype=np.int64)
        if np.any(sizes < 1) or sizes.sum() != n_features:
            raise ValueError(f"bands given as sizes must be positive and sum to the number of "
                             f"features ({n_features}); got {list(sizes)} (sum "
                             f"{int(sizes.sum())}).")
        edges = np.concatenate([[0], np.cumsum(sizes)])
        return [np.arange(a, b) for a, b in zip(edges[:-1], edges[1:])]
    indices = []
    for band in bands:
        if isinstance(band, slice):
            band = np.arange(n_features)[band]
        band = np.asarray(band)
        if band.dtype == bool:
            if band.shape != (n_features,):
                raise ValueError(f"A boolean band mask needs one entry per feature "
                                 f"({n_features}); got shape {band.shape}.")
            band = np.flatnonzero(band)
        if band.ndim != 1 or band.size == 0 or not np.issubdtype(band.dtype, np.integer):
            raise ValueError(f"Each band must be a slice, a boolean mask or a non-empty 1-D "
                             f"array of column indices; got {band!r}.")
        indices.append(band.astype(np.int64))
    every = np.concatenate(indices)
    if (np.any(every < 0) or np.any(every >= n_features)
            or not np.array_equal(np.sort(every), np.arange(n_features))):
        raise ValueError(f"bands must partition the {n_features} feature columns: every column "
                         f"in exactly one band (got {every.size} indices, {np.unique(every).size}"
                         f" distinct, range [{every.min()}, {every.max()}]).")
    return indices


class BandedRidgeEncoder(_VoxelwiseRidge):
    """Banded ridge regression: one penalty per feature band and per target, chosen by inner CV.

    The features are split into bands (column groups: e.g. a model layer's features and
    low-level features). For each target (voxel) the model minimises
    ``||y - Xw - b||^2 + sum_k lambda_k ||w_k||^2`` with one penalty ``lambda_k`` per band
    (Nunez-Elizalde et al. 2019; Dupre la Tour et al. 2022). Writing
    ``lambda_k = alpha / gamma_k`` with band weights ``gamma`` on the simplex, this is kernel
    ridge regression with penalty ``alpha`` on the kernel ``sum_k gamma_k X_k X_k^T`` (or
    ridge on the scaled features ``[sqrt(gamma_1) X_1, ...]``). The hyperparameters are
    chosen by random search, as himalaya's ``solve_multiple_kernel_ridge_random_search``:
    for each candidate ``gamma`` (the uniform one, then Dirichlet draws), one
    eigendecomposition per inner fold serves every ``alpha`` of the grid and every target
    (the machinery of :class:`RidgeEncoder`); each target keeps the candidate and alpha of
    its best mean held-out score. The refit decomposes the full problem once per candidate
    that some target chose.

    Parameters
    ----------
    bands : list of int, list of slices / index arrays / bool masks, or None, default=None
        The bands: sizes of consecutive column groups (summing to ``n_features``), or the
        columns of each band (together: every column exactly once). ``None`` is one band of
        all features (then the model is :class:`RidgeEncoder`).
    alphas : {"default", "huth"} or array-like of shape (n_alphas,), default="default"
        Candidate overall penalties (> 0), as in :class:`RidgeEncoder`.
    n_iter : int or array-like of shape (n_candidates, n_bands), default=20
        Number of band-weight candidates (the first is uniform, the others Dirichlet draws),
        or the candidates themselves (non-negative rows, normalised here to sum to 1; e.g.
        ``np.eye(n_bands)`` for a winner-take-all choice of one band).
    concentration : float or sequence of float, default=(0.1, 1.0)
        Dirichlet concentrations, used in turn for the drawn candidates.
    cv : int, "bootstrap", cross-validation splitter or iterable, default=5
        Inner cross-validation, as in :class:`RidgeEncoder` (an int: ``GroupKFold`` over the
        routed ``groups``, else contiguous ``KFold``).
    cv_scoring : {"correlation", "mse", "huth_rsq"}, default="correlation"
        Criterion for choosing hyperparameters, as in :class:`RidgeEncoder`. Use "mse" when
        the predictions' scale matters (e.g. for variance partitioning).
    solver : {"auto", "dual", "primal"}, default="auto"
        "dual" works on ``n x n`` kernels (band kernels are computed once), "primal" on the
        ``p x p`` covariance of the scaled features.
    backend : {"numpy", "torch"}, default="numpy"
    device : str, default="auto"
        Torch device for ``backend="torch"``.
    dtype : {"float32", "float64"}, default="float32"
    working_memory : int, default=256
        MiB for the per-batch buffers.
    random_state : int, RandomState instance or None, default=None
        Seeds the Dirichlet draws and ``cv="bootstrap"``.
    verbose : bool, default=False
        Show a progress bar over candidates.

    Attributes
    ----------
    coef_ : ndarray of shape (n_targets, n_features) or (n_features,)
        Weights on the original (unscaled) features.
    intercept_ : ndarray of shape (n_targets,) or float
    best_alphas_ : ndarray of shape (n_targets,)
        Chosen overall penalty ``alpha`` per target.
    best_band_weights_ : ndarray of shape (n_targets, n_bands)
        Chosen band weights ``gamma`` per target (rows sum to 1).
    best_penalties_ : ndarray of shape (n_targets, n_bands)
        Penalty of each band, ``alpha / gamma`` (inf for a band of weight 0, whose weights
        are 0).
    band_weight_candidates_ : ndarray of shape (n_candidates, n_bands)
        The candidates searched.
    cv_scores_ : ndarray of shape (n_candidates, n_targets)
        Mean held-out score of each candidate at its best alpha (per target).
    bands_ : list of ndarray of int
        Columns of each band.
    alphas_ : ndarray of shape (n_alphas,)
    solver_ : str
    n_splits_ : int
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in,)
        Defined when ``X`` has string column names.

    See Also
    --------
    RidgeEncoder : one penalty for all features.
    sk_braintune.encoding.variance_partitioning : unique and shared variance of two bands.

    Examples
    --------
    >>> import numpy as np
    >>> from sk_braintune.encoding import BandedRidgeEncoder
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((200, 10)).astype("float32")
    >>> Y = X[:, :4] @ rng.standard_normal((4, 3)) + 0.1 * rng.standard_normal((200, 3))
    >>> model = BandedRidgeEncoder(bands=[4, 6], alphas=[0.1, 10, 1000], n_iter=10,
    ...                            random_state=0).fit(X, Y)
    >>> model.best_band_weights_.shape, model.predict_bands(X).shape
    ((3, 2), (2, 200, 3))
    >>> bool(np.all(model.best_band_weights_[:, 0] > 0.5))
    True
    """

    def __init__(self, bands=None, alphas="default", *, n_iter=20, concentration=(0.1, 1.0),
                 cv=5, cv_scoring="correlation", solver="auto", backend="numpy", device="auto",
                 dtype="float32", working_memory=256, random_state=None, verbose=False):
        self.bands = bands
        self.alphas = alphas
        self.n_iter = n_iter
        self.concentration = concentration
        self.cv = cv
        self.cv_scoring = cv_scoring
        self.solver = solver
        self.backend = backend
        self.device = device
        self.dtype = dtype
        self.working_memory = working_memory
        self.random_state = random_state
        self.verbose = verbose

    def _candidates(self, n_bands):
        if isinstance(self.n_iter, numbers.Integral) and not isinstance(self.n_iter, bool):
            if self.n_iter < 1:
                raise ValueError(f"n_iter must be >= 1; got {self.n_iter}.")
            n_candidates = 1 if n_bands == 1 else int(self.n_iter)
            return band_weight_candidates(n_candidates, n_bands, self.concentration,
                                          self.random_state)
        weights = np.asarray(self.n_iter, dtype=np.float64)
        if (weights.ndim != 2 or weights.shape[1] != n_bands or len(weights) == 0
                or not np.all(np.isfinite(weights)) or np.any(weights < 0)
                or np.any(weights.sum(1) <= 0)):
            raise ValueError(f"n_iter must be an int or an array of shape (n_candidates, "
                             f"{n_bands}) of non-negative band weights, each row with a "
                             f"positive sum; got {self.n_iter!r}.")
        return weights / weights.sum(1, keepdims=True)

    def fit(self, X, y, groups=None):
        """Choose band weights and a penalty per target by inner CV, then fit on all samples.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Features of all bands, one row per TR.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Responses (voxels).
        groups : array-like of shape (n_samples,), default=None
            Story label per sample for the inner CV. Without it, folds are contiguous blocks.

        Returns
        -------
        self : BandedRidgeEncoder
        """
        X, targets, groups, alphas, one_target = self._fit_inputs(X, y, groups)
        n_samples, n_features = X.shape
        n_targets = targets.shape[1]
        bands = _resolve_bands(self.bands, n_features)
        candidates = self._candidates(len(bands))
        splits = self._splits(X, targets, groups)
        solver = self.solver
        if solver == "auto":
            solver = _solvers.choose_solver(n_samples, n_features, n_targets, len(alphas),
                                            splits)
        ops = _solvers.make_ops(self.backend, np.dtype(self.dtype).name, self.device)
        feature_means = X.mean(axis=0, dtype=np.float64)
        features = ops.copy_in(X)
        features -= ops.asarray(feature_means)
        budget = int(self.working_memory * 2 ** 20)
        band_grams = ([features[:, ops.index(b)] @ features[:, ops.index(b)].T for b in bands]
                      if solver == "dual" else None)

        def problem(weights, need_features=True):
            """Scaled features and (dual) kernel of one candidate; the kernel is fresh."""
            scale = np.zeros(n_features)
            for band, weight in zip(bands, weights):
                scale[band] = np.sqrt(weight)
            scaled = (features * ops.asarray(scale)[None, :]
                      if need_features or solver == "primal" else features)
            gram = None
            if solver == "dual":
                gram = band_grams[0] * float(weights[0])
                for band_gram, weight in zip(band_grams[1:], weights[1:]):
                    gram += band_gram * float(weight)
            return scale, scaled, gram

        best_scores = np.full(n_targets, -np.inf)
        best_candidate = np.zeros(n_targets, dtype=np.int64)
        best_alpha = np.zeros(n_targets, dtype=np.int64)
        cv_scores = np.empty((len(candidates), n_targets))
        progress_bar = None
        if self.verbose:
            from tqdm.auto import tqdm

            progress_bar = tqdm(total=len(candidates), desc="BandedRidgeEncoder search")
        try:
            for index, weights in enumerate(candidates):
                # the dual CV reads only the kernel
                _, scaled, gram = problem(weights, need_features=False)
                scores = _solvers.cross_validate_alphas(
                    ops, scaled, targets, splits, alphas, solver=solver,
                    scoring=self.cv_scoring, working_memory=budget, gram=gram)
                del scaled, gram
                cv_scores[index] = scores.max(0)
                better = cv_scores[index] > best_scores  # ties keep the earlier candidate
                best_scores[better] = cv_scores[index][better]
                best_candidate[better] = index
                best_alpha[better] = scores.argmax(0)[better]
                if progress_bar is not None:
                    progress_bar.update(1)
        finally:
            if progress_bar is not None:
                progress_bar.close()

        coef = np.empty((n_targets, n_features), dtype=ops.np_dtype)
        intercept = np.empty(n_targets)
        for index in np.unique(best_candidate):
            columns = np.flatnonzero(best_candidate == index)
            scale, scaled, gram = problem(candidates[index])
            # the columns are read batch by batch: targets[:, columns] would copy them all
            scaled_coef, target_means = _solvers.refit(
                ops, scaled, targets, alphas[best_alpha[columns]], solver=solver,
                working_memory=budget, gram=gram, target_columns=columns)
            del scaled, gram
            coef[columns] = scaled_coef * scale[None, :].astype(ops.np_dtype)
            intercept[columns] = target_means - feature_means @ coef[columns].T.astype(
                np.float64)
        del band_grams

        band_weights = candidates[best_candidate]
        best_alphas = alphas[best_alpha]
        with np.errstate(divide="ignore"):
            penalties = best_alphas[:, None] / band_weights
        self.alphas_ = alphas
        self.bands_ = bands
        self.band_weight_candidates_ = candidates
        self.solver_ = solver
        self.n_splits_ = len(splits)
        self.cv_scores_ = cv_scores
        self.best_alphas_ = best_alphas
        self.best_band_weights_ = band_weights
        self.best_penalties_ = penalties
        self.coef_ = coef[0] if one_target else coef
        self.intercept_ = float(intercept[0]) if one_target else intercept.astype(coef.dtype)
        return self

    def predict_bands(self, X):
        """Each band's contribution to the predictions (without the intercept).

        ``predict_bands(X).sum(0) + intercept_`` equals ``predict(X)``; the contributions
        feed split R^2 scores and variance partitioning.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        contributions : ndarray of shape (n_bands, n_samples, n_targets) or (n_bands, n_samples)
            ``X[:, band] @ coef_[..., band].T`` for each band.
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float32, np.float64], reset=False)
        coef = self.coef_
        return np.stack([X[:, band] @ coef[..., band].T for band in self.bands_])

