"""Ridge solvers serving every alpha and every target from one decomposition per fold.

Notation: ``n`` samples, ``p`` features, ``t`` targets (voxels), ``a`` candidate alphas
(penalties ``lambda`` on ``||w||^2``, scikit-learn's units). Features and targets are centred
inside each training fold (``fit_intercept=True``).

Per fold the training problem is diagonalised once, in float64:

* **dual** (kernel) path: ``K_c = U diag(e) U^T`` for the centred training kernel
  ``K_c = X_c X_c^T`` (``n_tr x n_tr``); the held-out predictions for penalty ``lambda`` are
  ``K_te U diag(1 / (e + lambda)) U^T Y_c``.
* **primal** path: ``X_c^T X_c = V diag(e) V^T`` (``p x p``); predictions are
  ``X_te V diag(1 / (e + lambda)) V^T X_c^T Y_c``.

Both read ``P_lambda = A diag(d_lambda) Pi Y_c`` with a held-out basis ``A`` (``n_te x m``),
a projector ``Pi`` (``m x n_tr``) and ``d_lambda = 1 / (e + lambda)``. Stacking all alphas'
``A diag(d_lambda)`` into one ``(a * n_te) x m`` matrix makes every voxel batch cost a single
GEMM: either ``[stacked] @ (Pi @ Y_c)`` ("project") or ``([stacked] @ Pi) @ Y_c`` ("direct",
cheaper when there are more voxels than ``a * n_te``); a cost model picks per fold. Scores
(correlation or MSE) are reduced per voxel batch, so the ``(a, n_te, t)`` predictions never
exist at once. The refit diagonalises the full problem once and applies each voxel's own
penalty as a diagonal scaling of its projected targets: ``W = R diag(d_lambda_v) Pi Y_c``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["make_ops", "choose_solver", "cross_validate_alphas", "refit", "SCORINGS"]

# An eigendecomposition costs about this many float32-GEMM flops per n^3 (x86 OpenBLAS:
# eigh(2400) ~ 2.5-3.7 s vs sgemm ~ 79 GFLOP/s); only used to pick a path.
_EIGH_FLOPS_PER_N3 = 20.0


# --------------------------------------------------------------------------------------------
# Array backends: a handful of operations that differ between numpy and torch. Everything else
# (``@``, ``*``, ``.sum(0)``, ``.mean(0)``, ``.T``, slicing) is shared syntax.
# --------------------------------------------------------------------------------------------
class _NumpyOps:
    name = "numpy"

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)
        self.np_dtype = np.dtype(dtype)
        self.float64 = np.float64
        self.itemsize = self.dtype.itemsize

    def asarray(self, array, dtype=None):
        return np.ascontiguousarray(array, dtype=self.dtype if dtype is None else dtype)

    def copy_in(self, array):
        """A fresh array in the compute dtype (safe to modify in place)."""
        return np.array(array, dtype=self.dtype, order="C", copy=True)

    def cast(self, array, dtype):
        return array.astype(dtype, copy=False)

    def contiguous(self, array):
        return np.ascontiguousarray(array)

    def to_numpy(self, array):
        return np.asarray(array)

    def index(self, indices):
        return np.asarray(indices)

    def submatrix(self, matrix, rows, cols):
        return matrix[np.ix_(rows, cols)]

    def einsum(self, subscripts, *operands):
        return np.einsum(subscripts, *operands)

    def eigh(self, matrix):
        """Eigenvalues (numpy float64) and eigenvectors (compute dtype); may overwrite input."""
        return _lapack_eigh(matrix, self.np_dtype)

    def cholesky_solver(self, matrix):
        """``rhs -> matrix^{-1} rhs`` for a positive definite ``matrix``, or None if not PD."""
        from scipy.linalg import LinAlgError, cho_factor, cho_solve

        try:
            factor = cho_factor(matrix, lower=True, overwrite_a=True, check_finite=False)
        except LinAlgError:
            return None
        return lambda rhs: cho_solve(factor, rhs, check_finite=False)


def _lapack_eigh(matrix, dtype):
    """SciPy's divide-and-conquer eigh in ``dtype``: float64 eigenvalues, ``dtype`` vectors.

    The matrix is centred in float64 by the caller (that is where cancellation bites). With
    float32 data the decomposition itself runs in float32: its backward error
    (~eps32 * ||K||) is that of the float32 Gram matrix anyway, and it ran ~2x faster than
    float64 here (2400 x 2400 kernel: 2.4-5.9 s vs 6.6-11.5 s on a busy machine); chosen
    alphas agreed on all voxels and CV scores to 4e-5. "evd" beat "evr" (MRRR), which was
    slow on kernels with clustered spectra.
    """
    from scipy.linalg import eigh

    values, vectors = eigh(matrix.astype(dtype, copy=False), overwrite_a=True,
                           check_finite=False, driver="evd")
    return values.astype(np.float64), vectors


class _TorchOps:
    name = "torch"

    def __init__(self, dtype, device):
        import torch

        self.torch = torch
        self.device = device
        self.dtype = {"float32": torch.float32, "float64": torch.float64}[np.dtype(dtype).name]
        self.float64 = torch.float64
        self.np_dtype = np.dtype(dtype)
        self.itemsize = np.dtype(dtype).itemsize

    def asarray(self, array, dtype=None):
        dtype = self.dtype if dtype is None else dtype
        if isinstance(array, self.torch.Tensor):
            return array.to(device=self.device, dtype=dtype).contiguous()
        array = np.ascontiguousarray(array)
        return self.torch.as_tensor(array, device=self.device).to(dtype).contiguous()

    def copy_in(self, array):
        """A fresh tensor in the compute dtype on the device (safe to modify in place)."""
        fresh = self.torch.from_numpy(np.array(array, order="C", copy=True))
        return fresh.to(device=self.device, dtype=self.dtype)

    def cast(self, array, dtype):
        return array.to(dtype)

    def contiguous(self, array):
        return array.contiguous()

    def to_numpy(self, array):
        return array.detach().cpu().numpy()

    def index(self, indices):
        return self.torch.as_tensor(np.asarray(indices), device=self.device)

    def submatrix(self, matrix, rows, cols):
        return matrix.index_select(0, rows).index_select(1, cols)

    def einsum(self, subscripts, *operands):
        return self.torch.einsum(subscripts, *operands)

    def cholesky_solver(self, matrix):
        """``rhs -> matrix^{-1} rhs`` for a positive definite ``matrix``, or None if not PD."""
        factor, info = self.torch.linalg.cholesky_ex(matrix)
        if int(info) != 0:
            return None
        return lambda rhs: self.torch.cholesky_solve(rhs, factor)

    def eigh(self, matrix):
        if matrix.device.type == "cpu":
            # LAPACK through SciPy was ~1.6x faster than torch.linalg.eigh on this CPU.
            values, vectors = _lapack_eigh(matrix.numpy(), self.np_dtype)
            return values, self.torch.from_numpy(vectors)
        values, vectors = self.torch.linalg.eigh(matrix.to(self.float64))
        return values.cpu().numpy(), vectors.to(self.dtype)


def make_ops(backend, dtype, device="auto"):
    """Array operations for ``backend`` ("numpy" or "torch") computing in ``dtype``.

    Parameters
    ----------
    backend : {"numpy", "torch"}
    dtype : {"float32", "float64"}
    device : str, default="auto"
        Torch device; "auto" picks CUDA when present. Ignored for numpy.

    Returns
    -------
    ops : object
    """
    if backend == "numpy":
        return _NumpyOps(dtype)
    if backend == "torch":
        from .._utils import require, resolve_device

        require("torch", "the torch backend of RidgeEncoder")
        return _TorchOps(dtype, resolve_device(device))
    raise ValueError(f"backend must be 'numpy' or 'torch'; got {backend!r}.")


# --------------------------------------------------------------------------------------------
# Cost model
# --------------------------------------------------------------------------------------------
def _batch_flops(n_train, n_test, rank, n_alphas, n_targets):
    """Flops of the cheaper of the "project" and "direct" stacked-GEMM orders."""
    rows = n_alphas * n_test
    project = 2.0 * rank * n_train * n_targets + 2.0 * rows * rank * n_targets
    direct = 2.0 * rows * rank * n_train + 2.0 * rows * n_train * n_targets
    return min(project, direct), ("project" if project <= direct else "direct")


def choose_solver(n_samples, n_features, n_targets, n_alphas, splits):
    """Pick "dual" or "primal" by a flop model of the whole fit (both give the same result).

    Parameters
    ----------
    n_samples, n_features, n_targets, n_alphas : int
    splits : list of (train, test) index arrays

    Returns
    -------
    solver : {"dual", "primal"}
    """
    n, p, t = float(n_samples), float(n_features), float(n_targets)
    dual = 2 * n * n * p + _EIGH_FLOPS_PER_N3 * n ** 3 + 2 * n * n * t + 2 * n * p * t
    primal = 4 * n * p * p + _EIGH_FLOPS_PER_N3 * p ** 3 + 2 * n * p * t + 2 * p * p * t
    for train, test in splits:
        n_tr, n_te = float(len(train)), float(len(test))
        dual += _EIGH_FLOPS_PER_N3 * n_tr ** 3 + 2 * n_te * n_tr * n_tr
        dual += _batch_flops(n_tr, n_te, min(n_tr, p), n_alphas, t)[0]
        primal += 6 * n_tr * p * p + _EIGH_FLOPS_PER_N3 * p ** 3
        primal += _batch_flops(n_tr, n_te, min(n_tr, p), n_alphas, t)[0]
    return "dual" if dual < primal else "primal"


def _keep_positive(values, dtype_eps):
    """Mask of eigenvalues above round-off level (the rest span the kernel's null space)."""
    if values.size == 0:
        return np.zeros(0, dtype=bool)
    tolerance = max(float(values.max()), 0.0) * 10.0 * dtype_eps
    return values > tolerance


class _Basis:
    """One diagonalised training problem: eigenvalues, held-out basis ``A``, projector ``Pi``."""

    def __init__(self, eigenvalues, test_basis, projector):
        self.eigenvalues = eigenvalues  # numpy float64 (m,)
        self.test_basis = test_basis    # (n_te, m) in compute dtype, or None
        self.projector = projector      # (m, n_tr) in compute dtype


def _centred_fold_kernels(ops, gram, train, test):
    """Centred training kernel and held-out cross kernel of one fold, in float64.

    ``gram`` is ``X X^T`` of features centred over all samples; centring again over the
    fold's training rows is done in float64, where the cancellation is harmless.
    """
    kernel = ops.cast(ops.submatrix(gram, train, train), ops.float64)
    row_means = kernel.mean(0)
    grand_mean = row_means.mean()
    kernel -= row_means[:, None]
    kernel -= row_means[None, :]
    kernel += grand_mean
    cross = ops.cast(ops.submatrix(gram, test, train), ops.float64)
    cross -= cross.mean(1)[:, None]
    cross -= row_means[None, :]
    cross += grand_mean
    return kernel, cross


def _dual_fold(ops, kernel, cross, eps):
    """Diagonalise the centred training kernel of one fold (float64 kernels, consumed)."""
    # the float64 copy is freed before the decomposition
    kernel = ops.cast(kernel, ops.dtype) if ops.np_dtype != np.float64 else kernel
    values, vectors = ops.eigh(kernel)
    del kernel
    keep = _keep_positive(values, eps)
    vectors = vectors[:, ops.index(np.flatnonzero(keep))]
    test_basis = ops.cast(cross, ops.dtype) @ vectors
    projector = ops.contiguous(vectors.T)
    return _Basis(values[keep], test_basis, projector)


def _primal_fold(ops, features, train, test, eps):
    """Diagonalise the centred training covariance of one fold."""
    train_features = features[train]
    means = train_features.mean(0)
    train_features -= means
    train64 = ops.cast(train_features, ops.float64)
    values, vectors = ops.eigh(train64.T @ train64)
    del train64
    keep = _keep_positive(values, eps)
    vectors = ops.contiguous(vectors[:, ops.index(np.flatnonzero(keep))])
    projector = ops.contiguous((train_features @ vectors).T)
    test_basis = (features[test] - means) @ vectors
    return _Basis(values[keep], test_basis, projector)


def _chunk_sizes(ops, n_train, n_test, rank, stack_width, n_alphas, n_targets, working_memory):
    """Alphas per stacked matrix and targets per batch that fit in ``working_memory`` bytes."""
    itemsize = ops.itemsize
    alpha_chunk = int(max(1, min(n_alphas, (working_memory // 2)
                                 // max(1, n_test * stack_width * itemsize))))
    stack_bytes = alpha_chunk * n_test * stack_width * itemsize
    per_target = itemsize * (n_train + 2 * n_test + rank + alpha_chunk * n_test)
    batch = int(max(1, (working_memory - stack_bytes) // per_target))
    return alpha_chunk, int(min(n_targets, max(batch, 32)))


#: Held-out scores computed from stacked predictions (see :func:`_reduce_scores`).
SCORINGS = ("correlation", "mse", "huth_rsq")


def _prepare_test_targets(ops, test_targets, train_means, scoring):
    """Centre held-out targets in place and sum their squares.

    Centred at the held-out mean for the criteria that ignore offsets (correlation, and the
    reference's ``huth_rsq``, built on variances), at the training mean for the MSE.
    """
    test_targets -= train_means if scoring == "mse" else test_targets.mean(0)
    sum_squares = ops.to_numpy((test_targets * test_targets).sum(0)).astype(np.float64)
    return test_targets, sum_squares


def _reduce_scores(ops, predictions, test_targets, target_ss, scoring):
    """Per-alpha, per-target score of stacked predictions (numpy float64, shape (a, b)).

    ``"huth_rsq"`` is the criterion of the reference ``ridge_corr(..., use_corr=False)``:
    ``Rsq = 1 - var(y - p) / ((1 + var(y)) / 2)`` (variances over held-out TRs, ddof 0; the
    ``1`` assumes z-scored responses), scored as ``sign(Rsq) * sqrt(|Rsq|)``.
    """
    n_test = predictions.shape[1]
    squares = ops.to_numpy(ops.einsum("aib,aib->ab", predictions, predictions)).astype(np.float64)
    cross = ops.to_numpy(ops.einsum("aib,ib->ab", predictions, test_targets)).astype(np.float64)
    sums = (None if scoring == "mse"
            else ops.to_numpy(predictions.sum(1)).astype(np.float64))
    return _scores_from_moments(squares, cross, sums, target_ss, n_test, scoring)


def _projected_moments(test_basis, projected, shrinkage, test_targets):
    """``squares``, ``cross``, ``sums`` of the held-out predictions, never forming them.

    The predictions of alpha ``a`` are ``A diag(s_a) P`` (``A`` the held-out basis, n_te x m;
    ``P`` the projected training targets, m x b). Their per-target sum of squares is
    ``p^T (diag(s_a) A^T A diag(s_a)) p``, their cross product with the held-out targets
    ``Y`` is ``s_a . (P * (A^T Y))`` and their sum ``(s_a * 1^T A) P``: ``2 m n_te b`` flops for
    ``A^T Y`` plus ``2 a m^2 b`` for the quadratic forms, instead of ``4 a n_te m b`` to form
    and reduce the stacked predictions (20x fewer for 20 alphas, 64 features and a
    6,000-TR fold). The moments are accumulated in float64.
    """
    A = np.asarray(test_basis, dtype=np.float64)
    P = np.asarray(projected, dtype=np.float64)
    gram = A.T @ A
    cross = shrinkage @ (P * (A.T @ np.asarray(test_targets, dtype=np.float64)))
    sums = (shrinkage * A.sum(0)[None, :]) @ P
    squares = np.empty((len(shrinkage), P.shape[1]))
    for a, factors in enumerate(shrinkage):
        scaled = factors[:, None] * P
        squares[a] = np.einsum("rb,rb->b", (gram @ scaled), scaled)
    return squares, cross, sums


def _scores_from_moments(squares, cross, sums, target_ss, n_test, scoring):
    """Per-alpha, per-target scores from the predictions' moments (see _reduce_scores)."""
    if scoring == "mse":
        return -(target_ss[None, :] - 2.0 * cross + squares) / n_test
    prediction_ss = np.maximum(squares - sums ** 2 / n_test, 0.0)
    if scoring == "huth_rsq":
        # targets are centred at their held-out mean, so cross = sum(y_c * p_c)
        residual_variance = np.maximum(target_ss[None, :] - 2.0 * cross + prediction_ss,
                                       0.0) / n_test
        assumed_variance = (1.0 + target_ss[None, :] / n_test) / 2.0
        rsq = 1.0 - residual_variance / assumed_variance
        return np.sign(rsq) * np.sqrt(np.abs(rsq))
    denominator = np.sqrt(prediction_ss * target_ss[None, :])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, cross / denominator, 0.0)


def _fold_scores(ops, targets, train, test, alphas, basis, scoring, working_memory):
    """Scores (n_alphas, n_targets) of one fold from its diagonalised training problem."""
    n_targets = targets.shape[1]
    n_train, n_test = len(train), len(test)
    rank = basis.eigenvalues.size
    order = _batch_flops(n_train, n_test, rank, len(alphas), n_targets)[1]
    width = rank if order == "project" else n_train
    alpha_chunk, batch = _chunk_sizes(ops, n_train, n_test, rank, width, len(alphas),
                                      n_targets, working_memory)
    chunks = [slice(first, min(len(alphas), first + alpha_chunk))
              for first in range(0, len(alphas), alpha_chunk)]
    shrinkage = 1.0 / (basis.eigenvalues[None, :] + np.asarray(alphas)[:, None])
    scores = np.zeros((len(alphas), n_targets))

    def stack(chunk):
        """All alphas' held-out operators of a chunk, stacked along rows."""
        factors = ops.asarray(shrinkage[chunk])
        stacked = (basis.test_basis[None, :, :] * factors[:, None, :]).reshape(-1, rank)
        return stacked if order == "project" else stacked @ basis.projector

    # numpy, "project" order and a basis narrower than the fold: the moments of the
    # predictions come from the m x m Gram matrix of the held-out basis (_projected_moments)
    moments = ops.name == "numpy" and order == "project" and rank <= n_test

    def batch_scores(columns, operators):
        """Scores of target batch ``columns`` for each (chunk, stacked operator)."""
        # fancy indexing copies, so the in-place centring never touches ``targets``
        train_targets = ops.asarray(targets[train, columns])
        train_means = train_targets.mean(0)
        train_targets -= train_means
        if order == "project":
            train_targets = basis.projector @ train_targets
        test_targets, target_ss = _prepare_test_targets(
            ops, ops.asarray(targets[test, columns]), train_means, scoring)
        if moments:
            squares, cross, sums = _projected_moments(basis.test_basis, train_targets,
                                                      shrinkage, test_targets)
            scores[:, columns] += _scores_from_moments(squares, cross, sums, target_ss,
                                                       n_test, scoring)
            return
        for chunk, stacked in operators:
            if stacked is None:
                stacked = stack(chunk)
            predictions = (stacked @ train_targets).reshape(chunk.stop - chunk.start,
                                                            n_test, -1)
            scores[chunk, columns] += _reduce_scores(ops, predictions, test_targets,
                                                     target_ss, scoring)
            del predictions

    batches = [slice(start, min(n_targets, start + batch))
               for start in range(0, n_targets, batch)]
    if moments:
        for columns in batches:
            batch_scores(columns, [])
    elif order == "project" or len(chunks) == 1:
        # stacking is a cheap scaling ("project"), or done once: targets are projected
        # once per batch and every chunk reuses them
        operators = ([(chunks[0], stack(chunks[0]))] if len(chunks) == 1
                     else [(chunk, None) for chunk in chunks])
        for columns in batches:
            batch_scores(columns, operators)
    else:
        # "direct" stacking costs a GEMM: build each chunk once, stream the batches
        for chunk in chunks:
            operators = [(chunk, stack(chunk))]
            for columns in batches:
                batch_scores(columns, operators)
            del operators
    return scores


def cross_validate_alphas(ops, features, targets, splits, alphas, *, solver, scoring,
                          working_memory, gram=None, progress=None):
    """Cross-validated score of every alpha for every target.

    Parameters
    ----------
    ops : backend operations from :func:`make_ops`
    features : backend array of shape (n_samples, n_features)
        Centred over all samples (the fold-wise centring is done here).
    targets : ndarray of shape (n_samples, n_targets)
        Any float dtype, on the CPU; batches are converted and moved as needed.
    splits : list of (train, test) index arrays
    alphas : ndarray of shape (n_alphas,)
    solver : {"dual", "primal"}
    scoring : {"correlation", "mse", "huth_rsq"}
    working_memory : int
        Bytes for the per-batch buffers and the stacked matrices.
    gram : backend array of shape (n_samples, n_samples), default=None
        ``features @ features.T`` (dual path); computed when absent.
    progress : callable, default=None
        Called with the number of finished folds.

    Returns
    -------
    scores : ndarray of shape (n_alphas, n_targets)
        Mean over folds of the per-fold score (Pearson r, minus the mean squared error, or
        the reference's signed root of its R^2 for ``"huth_rsq"``).
    """
    eps = float(np.finfo(ops.np_dtype).eps)
    n_targets = targets.shape[1]
    scores = np.zeros((len(alphas), n_targets))
    if solver == "dual" and gram is None:
        gram = features @ features.T
    for fold, (train, test) in enumerate(splits):
        train_index, test_index = ops.index(train), ops.index(test)
        if solver == "dual":
            kernel, cross = _centred_fold_kernels(ops, gram, train_index, test_index)
            basis = _dual_fold(ops, kernel, cross, eps)
            del kernel, cross
        else:
            basis = _primal_fold(ops, features, train_index, test_index, eps)
        scores += _fold_scores(ops, targets, train, test, alphas, basis, scoring,
                               working_memory)
        del basis
        if progress is not None:
            progress(fold + 1)
    scores /= len(splits)
    return scores


def refit(ops, features, targets, penalties, *, solver, working_memory, gram=None,
          feature_means=None, target_columns=None):
    """Ridge weights of every target at its own penalty, from one decomposition.

    Parameters
    ----------
    ops : backend operations from :func:`make_ops`
    features : backend array of shape (n_samples, n_features)
        Centred over all samples.
    targets : ndarray of shape (n_samples, n_targets)
    penalties : ndarray of shape (n_targets,)
        Penalty of each target.
    solver : {"dual", "primal"}
    working_memory : int
        Bytes for the per-batch buffers.
    gram : backend array of shape (n_samples, n_samples), default=None
        ``features @ features.T`` for the dual path; overwritten (consumed) here.
    feature_means : ndarray of shape (n_features,), default=None
        Means subtracted from the original features (for the intercepts); zeros if None.
    target_columns : ndarray of int of shape (n_selected,), default=None
        Refit only these columns of ``targets`` (``penalties`` then has one entry per
        selected column), read batch by batch: ``targets[:, target_columns]`` would copy
        them all at once.

    Returns
    -------
    coef : ndarray of shape (n_targets, n_features)
        In the compute dtype.
    intercept : ndarray of shape (n_targets,)
        ``target_mean - feature_means @ coef.T`` per target, float64.
    """
    eps = float(np.finfo(ops.np_dtype).eps)
    n_samples, n_features = features.shape
    n_targets = targets.shape[1] if target_columns is None else len(target_columns)
    if feature_means is None:
        feature_means = np.zeros(n_features)
    if solver == "dual":
        if gram is None:
            gram = features @ features.T
        result = _cholesky_refit(ops, features, targets, penalties, gram, working_memory,
                                 feature_means, target_columns)
        if result is not None:
            return result
        # the Gram matrix of centred features is the centred kernel; it is consumed here
        values, vectors = ops.eigh(gram)
        del gram
        keep = _keep_positive(values, eps)
        vectors = ops.contiguous(vectors[:, ops.index(np.flatnonzero(keep))])
        projector = ops.contiguous(vectors.T)
        # W = X^T U D U^T Y: with fewer targets than features, map back through the samples
        # (2 n^2 t + 2 n p t) rather than precompute X^T U (2 n^2 p).
        lift = features.T @ vectors if n_targets >= n_features else None
    else:
        features64 = ops.cast(features, ops.float64)
        values, vectors = ops.eigh(features64.T @ features64)
        del features64
        keep = _keep_positive(values, eps)
        lift = ops.contiguous(vectors[:, ops.index(np.flatnonzero(keep))])
        projector = ops.contiguous((features @ lift).T)
    values = values[keep]
    rank = values.size
    per_target = ops.itemsize * (2 * n_samples + 2 * rank + 2 * n_features)
    batch = int(min(n_targets, max(32, working_memory // per_target)))
    coef = np.empty((n_targets, n_features), dtype=ops.np_dtype)
    intercept = np.empty(n_targets)
    for start in range(0, n_targets, batch):
        columns = slice(start, min(n_targets, start + batch))
        # a contiguous slice of targets may be a view: copy before centring in place
        batch_targets = ops.copy_in(targets[:, columns if target_columns is None
                                            else target_columns[columns]])
        means = batch_targets.mean(0)
        batch_targets -= means
        projected = projector @ batch_targets
        del batch_targets
        projected *= ops.asarray(1.0 / (values[:, None] + penalties[None, columns]))
        # (targets x features) straight from the GEMM: BLAS reads the transposed operands
        # in place, while transposing a (features x targets) result afterwards was a
        # cache-unfriendly copy (~10% of the refit at 3,072 features x 10,000 targets)
        weights = (projected.T @ lift.T if lift is not None
                   else (projected.T @ projector) @ features)
        coef[columns] = ops.to_numpy(weights)
        # per batch, so that no float64 copy of the whole coef_ is ever made
        intercept[columns] = (ops.to_numpy(means).astype(np.float64)
                              - feature_means @ coef[columns].T.astype(np.float64))
    return coef, intercept


def _cholesky_refit(ops, features, targets, penalties, gram, working_memory, feature_means,
                    target_columns=None):
    """Dual refit by one Cholesky factorisation per distinct penalty, or None to decompose.

    ``W = X^T (K + lambda I)^{-1} Y_c`` for the targets of each penalty. With few distinct
    penalties this replaces the eigendecomposition of ``K`` (~20 n^3 flops) and ``X^T U``
    (2 p n^2) by ``n^3 / 3`` per penalty; the per-target work (two triangular solves, then
    ``X^T``) has the flops of ``U^T Y`` and ``(X^T U) D``. It was also more accurate in
    float32 than the eigenbasis, whose truncation of round-off-level eigenvalues costs
    accuracy on collinear features. The constant vector spans the
    null space of the centred kernel: the solution's error along it is multiplied by
    ``X_c^T 1 = 0``. Used only when every penalty is far above the round-off of the kernel
    (``lambda >= 100 eps trace(K)``, and ``trace(K) >= lambda_max``); ``gram`` is left intact
    when None is returned.
    """
    unique = np.unique(penalties)
    n_samples, n_features = features.shape
    n_targets = targets.shape[1] if target_columns is None else len(target_columns)
    if n_features < n_samples:
        # fewer features than samples: the kernel has a null space beyond the constant
        # vector, which the eigendecomposition drops and the factorisation would amplify
        return None
    # GEMM-equivalent flops: LAPACK's Cholesky ran at about half the GEMM rate and the
    # triangular solves at about 0.7 of it here (OpenBLAS, one thread)
    cholesky = (len(unique) * 2.0 * n_samples ** 3 / 3.0
                + 2.0 * n_samples ** 2 * n_targets / 0.7)
    eigen = (_EIGH_FLOPS_PER_N3 * n_samples ** 3 + 2.0 * n_features * n_samples ** 2
             + 2.0 * n_samples ** 2 * n_targets)
    if cholesky >= eigen:
        return None
    trace = float(ops.to_numpy(gram.diagonal().sum()))
    if unique[0] < 100.0 * float(np.finfo(ops.np_dtype).eps) * max(trace, 0.0):
        return None
    coef = np.empty((n_targets, n_features), dtype=ops.np_dtype)
    intercept = np.empty(n_targets)
    per_target = ops.itemsize * (3 * n_samples + 2 * n_features)
    batch = int(max(32, working_memory // per_target))
    diagonal = ops.index(np.arange(n_samples))
    for penalty in unique:
        shifted = gram.clone() if ops.name == "torch" else gram.copy()
        shifted[diagonal, diagonal] += float(penalty)
        solve = ops.cholesky_solver(shifted)
        del shifted
        if solve is None:
            return None
        columns_all = np.flatnonzero(penalties == penalty)
        for start in range(0, len(columns_all), batch):
            columns = columns_all[start:start + batch]
            batch_targets = ops.asarray(targets[:, columns if target_columns is None
                                                else target_columns[columns]])
            means = batch_targets.mean(0)
            batch_targets -= means
            dual = solve(batch_targets)
            del batch_targets
            coef[columns] = ops.to_numpy(dual.T @ features)
            intercept[columns] = (ops.to_numpy(means).astype(np.float64)
                                  - coef[columns].astype(np.float64) @ feature_means)
    return coef, intercept
