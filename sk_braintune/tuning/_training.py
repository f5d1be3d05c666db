"""Training machinery of :class:`~sk_braintune.tuning.BrainTuner`, kept free of estimator logic.

Learning-rate schedule, optimiser parameter groups, losses, streamed correlation sums
and the story-level validation split (early stopping is a callback, in ``callbacks.py``). torch
is imported inside the functions that need it so that this module can be imported cheaply.
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np

LOSSES = ("mse", "correlation", "spatial_correlation", "cosine_mse", "mse_plus_cosine")
OPTIMIZERS = ("adam", "adamw")
# the multi-brain-tuning paper's cos+L2 loss: Huber (this delta) + COSINE_WEIGHT * (1 - cos)
HUBER_DELTA = 0.6
COSINE_WEIGHT = 0.5
# poolings BrainTuner offers (sk_braintune.models.pooling.pool_frames does the pooling)
POOLINGS = ("mean", "last")


# -- learning-rate schedule ----------------------------------------------------------------------
def n_warmup_steps(total_steps, warmup_fraction=0.1):
    """Optimiser steps of linear warm-up: ``max(1, round(warmup_fraction * total_steps))``.

    Parameters
    ----------
    total_steps : int
    warmup_fraction : float, default=0.1

    Returns
    -------
    n_warmup : int
    """
    if warmup_fraction <= 0:
        return 0
    return max(1, int(round(warmup_fraction * total_steps)))


def lr_factor(step, total_steps, warmup_steps):
    """Multiplier of the base learning rate used by optimiser step ``step`` (0-based).

    Linear warm-up over the first ``warmup_steps`` steps, then linear decay that reaches 0 after
    the last step::

        factor(s) = (s + 1) / W                 for s < W
        factor(s) = (T - s) / (T - W)           for W <= s < T

    so that the first step already learns (unlike a schedule starting at 0), the peak (1.0) is
    reached at the end of warm-up, and the last step uses ``1 / (T - W)``.

    Parameters
    ----------
    step : int
        Index of the optimiser step, ``0 <= step``.
    total_steps : int
        ``T``, total optimiser steps of the run.
    warmup_steps : int
        ``W``.

    Returns
    -------
    factor : float
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if step >= total_steps:
        return 0.0
    return (total_steps - step) / max(1, total_steps - warmup_steps)


def set_learning_rates(optimizer, base_lrs, factor):
    """Set every parameter group's lr to ``base_lr * factor``."""
    for group, base in zip(optimizer.param_groups, base_lrs):
        group["lr"] = base * factor


def make_optimizer(backbone_params, head_params, lr_backbone, lr_head, weight_decay=0.0,
                   kind="adam"):
    """Adam(W) with two parameter groups: backbone (``lr_backbone``) then head (``lr_head``).

    Parameters
    ----------
    backbone_params, head_params : list of torch.nn.Parameter
        Trainable parameters; an empty backbone list gives a group with no parameters (kept so that
        group 0 is always the backbone's).
    lr_backbone, lr_head : float
    weight_decay : float, default=0.0
        Adam: an L2 penalty added to the gradient; AdamW: decoupled weight decay.
    kind : {"adam", "adamw"}, default="adam"

    Returns
    -------
    optimizer : torch.optim.Adam or torch.optim.AdamW
    base_lrs : list of float
    """
    import torch

    groups = [
        {"params": list(backbone_params), "lr": lr_backbone, "name": "backbone"},
        {"params": list(head_params), "lr": lr_head, "name": "head"},
    ]
    if kind not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {kind!r}")
    optimizer_class = torch.optim.AdamW if kind == "adamw" else torch.optim.Adam
    optimizer = optimizer_class(groups, lr=lr_head, weight_decay=weight_decay)
    return optimizer, [lr_backbone, lr_head]


# -- losses --------------------------------------------------------------------------------
def compute_loss(pred, target, loss="mse"):
    """Training loss of a batch.

    Parameters
    ----------
    pred, target : torch.Tensor of shape (B, K)
    loss : {"mse", "correlation", "spatial_correlation", "cosine_mse", "mse_plus_cosine"}
        - ``"mse"``: mean squared error over samples and targets.
        - ``"correlation"``: 1 minus the mean over targets of the Pearson r across the batch's
          samples (needs B >= 2).
        - ``"spatial_correlation"``: 1 minus the mean over samples of the Pearson r across the
          targets (voxels) of each sample.
        - ``"cosine_mse"``: the multi-brain-tuning paper's cos+L2 loss, the Huber loss
          (``delta=0.6``, mean over samples and targets) plus 0.5 times the mean over samples
          of 1 minus the cosine similarity between predicted and true target vectors.
        - ``"mse_plus_cosine"``: MSE plus the mean of 1 minus the cosine similarity (what
          ``"cosine_mse"`` meant before).

    Returns
    -------
    value : torch.Tensor, scalar (float32)
    """
    import torch

    pred = pred.float()
    target = target.float()
    if loss == "mse":
        return torch.mean((pred - target) ** 2)
    if loss == "correlation":
        pc = pred - pred.mean(0, keepdim=True)
        tc = target - target.mean(0, keepdim=True)
        r = (pc * tc).sum(0) / (pc.norm(dim=0) * tc.norm(dim=0)).clamp_min(1e-8)
        return 1.0 - r.mean()
    if loss == "spatial_correlation":
        pc = pred - pred.mean(1, keepdim=True)
        tc = target - target.mean(1, keepdim=True)
        r = (pc * tc).sum(1) / (pc.norm(dim=1) * tc.norm(dim=1)).clamp_min(1e-8)
        return 1.0 - r.mean()
    if loss == "cosine_mse":
        cos = torch.nn.functional.cosine_similarity(pred, target, dim=1, eps=1e-8)
        huber = torch.nn.functional.huber_loss(pred, target, delta=HUBER_DELTA)
        return huber + COSINE_WEIGHT * torch.mean(1.0 - cos)
    if loss == "mse_plus_cosine":
        cos = torch.nn.functional.cosine_similarity(pred, target, dim=1, eps=1e-8)
        return torch.mean((pred - target) ** 2) + torch.mean(1.0 - cos)
    raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")


class CorrelationSums:
    """Streamed per-target Pearson correlation: float64 sums updated batch by batch on the CPU.

    Parameters
    ----------
    n_targets : int
    """

    def __init__(self, n_targets):
        self.n = 0
        shape = (n_targets,)
        self.sx, self.sy = np.zeros(shape), np.zeros(shape)
        self.sxx, self.syy, self.sxy = np.zeros(shape), np.zeros(shape), np.zeros(shape)

    def update(self, pred, target):
        """Add a batch (arrays of shape (B, K); torch tensors are moved to the CPU)."""
        pred = _to_numpy64(pred)
        target = _to_numpy64(target)
        self.n += pred.shape[0]
        self.sx += pred.sum(0)
        self.sy += target.sum(0)
        self.sxx += (pred * pred).sum(0)
        self.syy += (target * target).sum(0)
        self.sxy += (pred * target).sum(0)

    def correlations(self):
        """Pearson r per target, shape (K,); 0 where either side is constant."""
        n = self.n
        cov = n * self.sxy - self.sx * self.sy
        var_x = n * self.sxx - self.sx ** 2
        var_y = n * self.syy - self.sy ** 2
        denom = np.sqrt(np.clip(var_x, 0, None) * np.clip(var_y, 0, None))
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.where(denom > 1e-12 * max(n, 1) ** 2, cov / denom, 0.0)
        return r


def _to_numpy64(a):
    if hasattr(a, "detach"):
        a = a.detach().float().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def pearson_per_target(y_true, y_pred):
    """Pearson r per column, shape (K,), 0 for constant columns (computed in float64)."""
    sums = CorrelationSums(np.asarray(y_true).reshape(len(y_true), -1).shape[1])
    sums.update(np.asarray(y_pred).reshape(len(y_pred), -1),
                np.asarray(y_true).reshape(len(y_true), -1))
    return sums.correlations()


# -- validation split ----------------------------------------------------------------------------
def validation_split(n_samples, groups, validation, rng, X=None, y=None):
    """Split sample indices into training and validation, holding out whole stories.

    Used by :class:`~sk_braintune.tuning.BrainTuner` (over distinct stimulus windows, so that a
    held-out story is held out for every participant) and by
    :class:`~sk_braintune.analysis.SemanticProbe` (which passes its splitter).

    Parameters
    ----------
    n_samples : int
    groups : ndarray of shape (n_samples,) or None
        Story of each sample.
    validation : None, float in (0, 1) or CV splitter
        ``None`` or ``0``: no validation. A float: that fraction of the stories (at least one,
        at most all but one) is drawn at random and held out; without ``groups`` (or with a single
        story) the last ``fraction`` of the samples is held out as one contiguous block, since
        random TRs would leak through autocorrelation. A splitter (anything with ``split``, e.g.
        ``GroupShuffleSplit``): its first ``(train, test)`` split is used.
    rng : numpy.random.RandomState
        Draws the held-out stories.
    X, y : optional
        Passed to a splitter's ``split``.

    Returns
    -------
    train_index, valid_index : ndarray of int64
        ``valid_index`` is empty when there is no validation.
    """
    everything = np.arange(n_samples)
    empty = np.zeros(0, dtype=np.int64)
    if validation is None or (isinstance(validation, numbers.Real) and validation == 0):
        return everything, empty
    if hasattr(validation, "split"):
        from ..model_selection import check_story_splits

        X_split = np.zeros((n_samples, 1)) if X is None else X
        train, valid = next(iter(validation.split(X_split, y, groups)))
        train, valid = np.asarray(train, dtype=np.int64), np.asarray(valid, dtype=np.int64)
        check_story_splits([(train, valid)], groups, what=f"validation={validation!r}",
                           stacklevel=3)
        return train, valid
    if not (isinstance(validation, numbers.Real) and 0 < validation < 1):
        raise ValueError(
            f"validation must be None, a fraction in (0, 1) of the stories, or a CV splitter "
            f"with a split method; got {validation!r}"
        )
    if groups is not None:
        stories = np.array(list(dict.fromkeys(np.asarray(groups).tolist())), dtype=object)
        if len(stories) >= 2:
            n_valid = min(len(stories) - 1, max(1, int(round(validation * len(stories)))))
            held_out = stories[rng.permutation(len(stories))[:n_valid]]
            is_valid = np.isin(np.asarray(groups, dtype=object), held_out)
            return everything[~is_valid], everything[is_valid]
    n_valid = int(math.floor(validation * n_samples))
    too_few = n_valid < 1 or n_samples - n_valid < 1
    if groups is not None:  # a single story
        if too_few:
            what = (f"but its {n_samples} TRs are too few to hold out {validation:.0%} of "
                    "them: training without validation (no early stopping)")
        else:
            what = (f"holding out its last {n_valid} of {n_samples} TRs "
                    f"({validation:.0%}) as one contiguous block instead of whole stories")
        warnings.warn(f"validation: only one story in groups, {what}.", UserWarning,
                      stacklevel=3)
    if too_few:
        return everything, empty
    return everything[:-n_valid], everything[-n_valid:]
