"""The paper's per-listener evaluation, in one call: :func:`evaluate_listener`.

For one listener (one participant's responses) and the features of one or several models, in
this order: the layer-wise alignment on the held-out stories
(:func:`~sk_braintune.evaluation.layerwise_alignment`), the significance of the last layer's
held-out fit (:func:`~sk_braintune.evaluation.alignment_significance`), the low-level impact on
the last layer (:func:`~sk_braintune.evaluation.low_level_impacts`) and its second estimate by
variance partitioning (:func:`~sk_braintune.evaluation.variance_partition_summary`). The demo's
study (:func:`sk_braintune.study.run_braintuning_study`) and ``sk-braintune evaluate`` both call
it, so the two run the same sequence with the same settings.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils import Bunch

from .._stages import LoggedStages
from .alignment import default_encoder, layerwise_alignment, split_layers
from .lowlevel import (
    LOW_LEVEL_KINDS,
    low_level_feature_spaces,
    low_level_impacts,
    variance_partition_summary,
)
from .significance import alignment_significance

__all__ = ["LISTENER_ANALYSES", "evaluate_listener"]

# what evaluate_listener can run; the layer-wise alignment always runs
LISTENER_ANALYSES = ("alignment", "significance", "low_level_impact", "variance_partitioning")


def evaluate_listener(features, n_layers, responses, groups, *, train_stories, test_stories,
                      noise_ceiling, voxel_labels, dataset=None, encoder=None,
                      analyses=LISTENER_ANALYSES, low_level=None,
                      low_level_kinds=LOW_LEVEL_KINDS, cv=5, backend="numpy",
                      n_permutations=1000, partitioning_n_iter=10, alpha=0.05, random_state=0,
                      stages=None, n_jobs=None):
    """Evaluate models on one listener: alignment, significance, low-level impact, partitioning.

    Parameters
    ----------
    features : dict of str to ndarray of shape (n_trs, n_layers * dim)
        Per-TR features of each model, layers concatenated, rows in the order of ``groups``.
    n_layers : int
        Layers in each model's features; the last one is the "last layer" of the analyses
        after the alignment.
    responses : ndarray of shape (n_trs, n_voxels)
        The listener's responses, stacked in the rows of ``groups`` (training stories, then
        test stories, each story contiguous: every fit then reads views, not copies).
    groups : array-like of shape (n_trs,)
        Story of each row.
    train_stories, test_stories : sequence of str
    noise_ceiling : ndarray of shape (n_voxels,)
        The listener's cc_max: alignments are r / cc_max (NaN where cc_max <= 0.05).
    voxel_labels : array-like of shape (n_voxels,)
        ROI or voxel kind per voxel; every table is per label.
    dataset : sklearn.utils.Bunch, optional
        The listener's story dataset, to build the low-level features (the audio, alignments
        and phonemes they need) when ``low_level`` is None and a low-level analysis runs.
    encoder : regressor or Pipeline, optional
        The encoding model of every fit (:func:`~sk_braintune.evaluation.fit_score_encoding`);
        ``default_encoder(cv=cv, backend=backend)`` when None.
    analyses : sequence of str, default=LISTENER_ANALYSES
        Which of ``"significance"``, ``"low_level_impact"`` and ``"variance_partitioning"``
        run after the alignment (which always runs); other names are ignored, so a caller
        may pass its own longer list.
    low_level : list of dict, optional
        The low-level feature spaces, already built by
        :func:`~sk_braintune.evaluation.low_level_feature_spaces` (e.g. once for several
        listeners, or before the audio is released); built from ``dataset`` when None.
    low_level_kinds : sequence of str, default=LOW_LEVEL_KINDS
        The spaces built when ``low_level`` is None.
    cv : int, default=5
        Inner CV folds (story-grouped, clamped to the training stories) of the default
        encoder, the residualising ridge and the partitioning's banded ridge.
    backend : {"numpy", "torch"}, default="numpy"
        Backend of the default encoder and of the banded ridge.
    n_permutations : int, default=1000
        Block permutations of the significance test, and bootstrap samples of its intervals.
    partitioning_n_iter : int, default=10
        Band-weight candidates of the variance partitioning.
    alpha : float, default=0.05
        FDR level of the significance counts.
    random_state : int, default=0
        Seeds the permutations, the bootstrap and the band-weight candidates.
    stages : callable, optional
        ``stages(name)`` returns a context manager wrapped around each stage (e.g. a timer
        that prints); stages are logged (:class:`sk_braintune._stages.LoggedStages`) when None.
    n_jobs : int, optional
        Layers fitted at once by the alignment (see
        :func:`~sk_braintune.evaluation.layerwise_alignment`).

    Returns
    -------
    result : sklearn.utils.Bunch
        ``models`` (list of str) and ``n_layers``;
        ``alignment``: model -> ``{"roi": {label: ndarray (n_layers,)}, "voxels": ndarray
        (n_layers, n_voxels)}`` (normalised r per layer, ROI means and per voxel);
        ``last_layer``: model -> the last layer's held-out fit (``y_true``, ``prediction`` of
        shape (n_test_rows, n_voxels), ``groups``);
        ``voxel_scores``: model -> ndarray (n_voxels,), the last layer's normalised r (NaN
        where excluded);
        ``significance``: model -> the result of
        :func:`~sk_braintune.evaluation.alignment_significance` (``r``, ``p_values``,
        ``q_values``, ``roi``), or None when not run;
        ``voxel_q``: model -> ndarray (n_voxels,), the BH-FDR q-values of the last layer
        (empty when the significance did not run);
        ``low_level_impact``: model -> label -> ``{"A", "A_resid", "impact_percent"}``, or
        None; ``variance_partitioning``: model -> label -> ``{"unique_model",
        "unique_lowlevel", "shared", "shared_fraction", "r2_joint", "n_voxels"}``, or None,
        and ``variance_partitioning_voxels`` its per-voxel values.

    Examples
    --------
    >>> import numpy as np
    >>> from sk_braintune.evaluation import evaluate_listener
    >>> rng = np.random.default_rng(0)
    >>> groups = np.repeat(["a", "b", "c"], 60)
    >>> features = {"model": rng.standard_normal((180, 2 * 4))}  # 2 layers of 4 units
    >>> responses = features["model"][:, 4:6] + 0.5 * rng.standard_normal((180, 2))
    >>> result = evaluate_listener(features, 2, responses, groups, train_stories=["a", "b"],
    ...                            test_stories=["c"], noise_ceiling=np.ones(2),
    ...                            voxel_labels=["v", "v"], analyses=("alignment",),
    ...                            cv=2)
    >>> result.alignment["model"]["voxels"].shape
    (2, 2)
    """
    analyses = set(analyses)
    train, test = list(train_stories), list(test_stories)
    groups = np.asarray(groups)
    labels = np.asarray(voxel_labels)
    noise_ceiling = np.asarray(noise_ceiling)
    stages = stages or LoggedStages()
    encoder = default_encoder(cv=cv, backend=backend) if encoder is None else encoder
    names = list(features)
    held_out = "story" if len(test) == 1 else "stories"

    with stages(f"alignment: voxelwise ridge per layer, scored on the held-out {held_out}"):
        tables = {name: layerwise_alignment(features[name], n_layers, responses, groups, train,
                                            test, noise_ceiling=noise_ceiling,
                                            voxel_labels=labels, estimator=encoder,
                                            n_jobs=n_jobs)
                  for name in names}
    result = Bunch(
        models=names, n_layers=n_layers,
        alignment={name: {"roi": t["roi"], "voxels": t["voxels"]} for name, t in tables.items()},
        last_layer={name: t["last_layer"] for name, t in tables.items()},
        voxel_scores={name: np.asarray(t["voxels"][-1]) for name, t in tables.items()},
        significance=None, voxel_q={}, low_level_impact=None, variance_partitioning=None,
        variance_partitioning_voxels=None)
    del tables

    if "significance" in analyses:
        with stages(f"significance: {n_permutations} block permutations, BH-FDR, "
                    "block-bootstrap intervals (last layer)"):
            result.significance = {}
            for name in names:
                fit = result.last_layer[name]
                result.significance[name] = alignment_significance(
                    fit["y_true"], fit["prediction"], labels, groups=fit["groups"],
                    noise_ceiling=noise_ceiling, n_permutations=n_permutations,
                    n_bootstraps=n_permutations, alpha=alpha, random_state=random_state)
            result.voxel_q = {name: sig["q_values"]
                              for name, sig in result.significance.items()}

    if not analyses & {"low_level_impact", "variance_partitioning"}:
        return result
    if low_level is None:
        if dataset is None:
            raise ValueError("the low-level analyses need the low-level features: pass "
                             "`low_level` (from low_level_feature_spaces) or the listener's "
                             "`dataset` to build them")
        with stages(f"low-level features: {', '.join(low_level_kinds)}"):
            low_level = low_level_feature_spaces(dataset, train, test, low_level_kinds)
    last_layers = {name: split_layers(np.asarray(f), n_layers)[:, -1]
                   for name, f in features.items()}
    if "low_level_impact" in analyses:
        with stages("low-level impact: the low-level features regressed out of the last "
                    "layer"):
            result.low_level_impact = low_level_impacts(
                dataset, last_layers, groups, train, test, estimator=encoder, cv=cv,
                low_level=low_level, responses=responses, noise_ceiling=noise_ceiling,
                voxel_labels=labels)
    if "variance_partitioning" in analyses:
        with stages("variance partitioning: last layer vs the same low-level features "
                    "(banded ridge)"):
            partitions = variance_partition_summary(
                dataset, last_layers, groups, train, test, low_level=low_level,
                n_iter=partitioning_n_iter, cv=cv, backend=backend,
                random_state=random_state, responses=responses, voxel_labels=labels)
            result.variance_partitioning = partitions["roi"]
            result.variance_partitioning_voxels = partitions["voxels"]
    return result
