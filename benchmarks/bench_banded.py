"""Benchmark BandedRidgeEncoder against himalaya's MultipleKernelRidgeCV (single-threaded).

Both search the same band-weight candidates (the uniform one, then Dirichlet draws), the same
alphas and the same folds, with the same scorer and an intercept, on the same data: two bands
(a "model" band and a "low-level" band), voxels driven by one band, the other or both, with
graded noise. himalaya runs its kernel random search (``solver="random_search"``, linear band
kernels from ``ColumnKernelizer``, dual refit for the intercept). The two methods run in
alternation (``--repeats``) and the fastest run of each is kept, so the speed ratio is
comparable on a busy machine. Printed: fit seconds, the ratio, the share of voxels whose
chosen (band weights, alpha) agree, and the agreement of held-out predictions (max |dr| of
held-out correlations, relative RMS difference of the predictions).

Usage::

    python benchmarks/bench_banded.py --voxels 10000 --n-train 1200 --features 1024 256
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_data(n_train, n_test, sizes, n_voxels, seed=0):
    """Correlated features in two bands; voxels of graded SNR driven by band 0, 1 or both."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    blocks, latents = [], []
    for size in sizes:
        latent = rng.standard_normal((n, 32)).astype(np.float32)
        mixing = rng.standard_normal((32, size)).astype(np.float32) / 6
        blocks.append(latent @ mixing + rng.standard_normal((n, size), dtype=np.float32))
        latents.append(latent)
    X = np.hstack(blocks)
    kind = np.arange(n_voxels) % 3
    Y = np.zeros((n, n_voxels), dtype=np.float32)
    for band, latent in enumerate(latents):
        gains = np.exp(rng.uniform(np.log(0.02), np.log(1.0), n_voxels)).astype(np.float32)
        gains[(kind != band) & (kind != 2)] = 0
        Y += (latent @ rng.standard_normal((32, n_voxels), dtype=np.float32)) * gains
    Y += rng.standard_normal((n, n_voxels), dtype=np.float32) * 3
    return X[:n_train], Y[:n_train], X[n_train:], Y[n_train:]


def fit_ours(X, Y, sizes, candidates, alphas, splits, scoring):
    from sk_braintune.encoding import BandedRidgeEncoder

    model = BandedRidgeEncoder(bands=list(sizes), alphas=alphas, n_iter=candidates, cv=splits,
                               cv_scoring=scoring)
    start = time.perf_counter()
    model.fit(X, Y)
    seconds = time.perf_counter() - start
    return model, seconds, model.best_band_weights_, model.best_alphas_


def fit_himalaya(X, Y, sizes, candidates, alphas, splits, scoring):
    from himalaya.backend import set_backend
    from himalaya.kernel_ridge import (ColumnKernelizer, Kernelizer, MultipleKernelRidgeCV)
    from himalaya.scoring import correlation_score, l2_neg_loss
    from sklearn.pipeline import make_pipeline

    set_backend("numpy", on_error="raise")
    edges = np.concatenate([[0], np.cumsum(sizes)])
    kernelizer = ColumnKernelizer([(f"band{b}", Kernelizer(kernel="linear"),
                                    slice(int(edges[b]), int(edges[b + 1])))
                                   for b in range(len(sizes))])
    solver_params = dict(n_iter=candidates, alphas=alphas, progress_bar=False,
                         score_func=correlation_score if scoring == "correlation" else l2_neg_loss,
                         n_targets_batch=2000, n_alphas_batch=len(alphas),
                         n_targets_batch_refit=2000)
    ridge = MultipleKernelRidgeCV(kernels="precomputed", solver="random_search",
                                  solver_params=solver_params, fit_intercept=True, cv=splits)
    model = make_pipeline(kernelizer, ridge)
    start = time.perf_counter()
    model.fit(X, Y)
    seconds = time.perf_counter() - start
    deltas = np.asarray(ridge.deltas_).T  # (n_targets, n_bands): log(gamma / alpha)
    weights = np.exp(deltas)
    best_alphas = 1.0 / weights.sum(1)  # gammas sum to 1
    return model, seconds, weights * best_alphas[:, None], best_alphas


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--voxels", type=int, default=10000)
    parser.add_argument("--n-train", type=int, default=1200)
    parser.add_argument("--n-test", type=int, default=300)
    parser.add_argument("--features", type=int, nargs="+", default=[1024, 256],
                        help="size of each band")
    parser.add_argument("--n-alphas", type=int, default=8)
    parser.add_argument("--candidates", type=int, default=10)
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--scoring", choices=["mse", "correlation"], default="mse")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from sk_braintune.encoding import band_weight_candidates
    from sk_braintune.metrics import correlation_score

    sizes = tuple(args.features)
    X, Y, X_test, Y_test = make_data(args.n_train, args.n_test, sizes, args.voxels)
    fold_of = np.repeat(np.arange(args.folds), int(np.ceil(args.n_train / args.folds)))
    fold_of = fold_of[:args.n_train]
    splits = [(np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k))
              for k in range(args.folds)]
    alphas = np.logspace(-1, 6, args.n_alphas)
    candidates = band_weight_candidates(args.candidates, len(sizes), random_state=0)

    best = {}
    for repeat in range(args.repeats):
        for name, fit in (("ours-numpy", fit_ours), ("himalaya-numpy", fit_himalaya)):
            print(f"[repeat {repeat + 1}] fitting {name} ...", flush=True)
            model, seconds, weights, chosen = fit(X, Y, sizes, candidates, alphas, splits,
                                                  args.scoring)
            if name not in best or seconds < best[name][1]:
                prediction = np.asarray(model.predict(X_test), dtype=np.float64)
                best[name] = (None, seconds, weights, chosen, prediction)
            del model

    ours, theirs = best["ours-numpy"], best["himalaya-numpy"]
    grid = np.log(alphas)
    ours_alpha = np.abs(np.log(ours[3])[:, None] - grid).argmin(1)
    their_alpha = np.abs(np.log(theirs[3])[:, None] - grid).argmin(1)
    ours_candidate = np.abs(ours[2][:, None, :] - candidates[None]).sum(2).argmin(1)
    their_candidate = np.abs(theirs[2][:, None, :] - candidates[None]).sum(2).argmin(1)
    same = (ours_alpha == their_alpha) & (ours_candidate == their_candidate)
    r_ours = correlation_score(Y_test, ours[4], "raw_values")
    r_theirs = correlation_score(Y_test, theirs[4], "raw_values")
    dr = np.abs(r_ours - r_theirs)
    relative = (np.linalg.norm(ours[4] - theirs[4], axis=0)
                / np.maximum(np.linalg.norm(theirs[4] - theirs[4].mean(0), axis=0), 1e-12))
    print(f"\n=== {args.voxels} voxels, n_train={args.n_train}, n_test={args.n_test}, bands "
          f"{sizes}, {args.candidates} candidates x {args.n_alphas} alphas, {args.folds} folds, "
          f"scoring={args.scoring}, 1 thread ===")
    print(f"ours-numpy fit {ours[1]:.1f} s, himalaya-numpy fit {theirs[1]:.1f} s: "
          f"speed-up {theirs[1] / ours[1]:.2f}x")
    print(f"same (band weights, alpha): {100 * same.mean():.2f}% of voxels "
          f"(same candidate {100 * np.mean(ours_candidate == their_candidate):.2f}%, "
          f"same alpha {100 * np.mean(ours_alpha == their_alpha):.2f}%)")
    print(f"held-out r: mean {r_ours.mean():.4f} (ours) vs {r_theirs.mean():.4f} (himalaya); "
          f"max |dr| {dr.max():.1e}, max |dr| where the choice agrees "
          f"{dr[same].max() if same.any() else float('nan'):.1e}")
    print(f"held-out predictions: median relative difference {np.median(relative):.1e}, "
          f"99.9th percentile {np.quantile(relative, 0.999):.1e}")
    # arbiter for the largest disagreements: scikit-learn's Ridge in float64 on the scaled
    # bands, at the hyperparameters both chose
    from sklearn.linear_model import Ridge

    worst = [v for v in np.argsort(relative)[::-1] if same[v]][:5]
    print("largest disagreements (same choice), relative error vs float64 sklearn Ridge:")
    for v in worst:
        scale = np.repeat(np.sqrt(candidates[ours_candidate[v]]), sizes)
        reference = Ridge(alpha=alphas[ours_alpha[v]]).fit(
            X.astype(np.float64) * scale, Y[:, v].astype(np.float64)).predict(
            X_test.astype(np.float64) * scale)
        spread = np.linalg.norm(reference - reference.mean())
        print(f"  voxel {v}: alpha {alphas[ours_alpha[v]]:.3g}, band weights "
              f"{np.round(candidates[ours_candidate[v]], 4)}: ours "
              f"{np.linalg.norm(ours[4][:, v] - reference) / spread:.1e}, himalaya "
              f"{np.linalg.norm(theirs[4][:, v] - reference) / spread:.1e}")


if __name__ == "__main__":
    main()
