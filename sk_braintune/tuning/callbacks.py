"""Callbacks of the :class:`~sk_braintune.tuning.BrainTuner` training loop.

The loop (initialise, then per epoch: run the epoch, validate, call the callbacks) knows nothing
of early stopping, checkpoints or progress display: those are callbacks, in this order:
:class:`EarlyStopping` (always present; it keeps the best epoch's weights), :class:`Checkpoint`
(always present; writes the per-epoch checkpoint and resumes from it), :class:`ProgressBar`
(with ``verbose=True``), then the user's ``callbacks``. A callback sees the estimator and the
running fit (see :class:`Callback` for what the fit exposes).

:class:`EarlyStopping` is also the epoch selection of
:class:`~sk_braintune.analysis.SemanticProbe` (through :meth:`EarlyStopping.update`).

torch is not imported here; :class:`Checkpoint` imports it when it writes.
"""

from __future__ import annotations

import logging
import math

__all__ = ["Callback", "Checkpoint", "EarlyStopping", "ProgressBar"]

logger = logging.getLogger(__name__)


class Callback:
    """Base class: hooks called by the training loop, all doing nothing by default.

    Each hook receives the estimator and the running fit ``run``, which exposes:

    - ``run.epoch`` (0-based index of the current epoch), ``run.max_epochs``,
      ``run.steps_per_epoch``;
    - ``run.history`` (list of dict, the epochs so far, the current one last at
      ``on_epoch_end``), ``run.has_validation`` (bool);
    - ``run.stop_training``: set it to True to stop after the current epoch;
    - ``run.trainable_state()`` (a CPU copy of the trainable weights) and
      ``run.load_trainable_state(state)``;
    - ``run.state_dict()`` / ``run.load_state_dict(state)``: everything needed to resume.

    Hooks: ``on_train_begin`` (after the model is loaded, before the head, the optimiser and the
    validation split are made: a resume may still change the seed), ``on_epoch_begin``,
    ``on_batch_end`` (with the running mean training loss of the epoch), ``on_epoch_end`` (after
    validation, the epoch's record in ``run.history[-1]``), ``on_train_end`` (before the kept
    weights are merged and moved to the CPU).
    """

    def on_train_begin(self, estimator, run):
        """Called once before training.

        Parameters
        ----------
        estimator : BrainTuner
            The estimator being fitted.
        run : TrainingRun
            The running fit (see :class:`Callback`).
        """

    def on_epoch_begin(self, estimator, run):
        """Called at the start of each epoch.

        Parameters
        ----------
        estimator : BrainTuner
            The estimator being fitted.
        run : TrainingRun
            The running fit (see :class:`Callback`).
        """

    def on_batch_end(self, estimator, run, train_loss):
        """Called after each optimiser step.

        Parameters
        ----------
        estimator : BrainTuner
            The estimator being fitted.
        run : TrainingRun
            The running fit (see :class:`Callback`).
        train_loss : float
            Running mean training loss of the epoch so far.
        """

    def on_epoch_end(self, estimator, run):
        """Called after each epoch's validation.

        Parameters
        ----------
        estimator : BrainTuner
            The estimator being fitted.
        run : TrainingRun
            The running fit (see :class:`Callback`).
        """

    def on_train_end(self, estimator, run):
        """Called once after the last epoch.

        Parameters
        ----------
        estimator : BrainTuner
            The estimator being fitted.
        run : TrainingRun
            The running fit (see :class:`Callback`).
        """

    def __repr__(self):
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_")
                           and not k.startswith("best_") and k != "bad_epochs")
        return f"{type(self).__name__}({params})"


def _as_tuple(value, n, name):
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,) * n
    if len(values) != n:
        raise ValueError(f"{name} must have one entry per monitored quantity ({n}), "
                         f"got {value!r}")
    return values


class EarlyStopping(Callback):
    """Keep the best epoch's weights; stop after ``patience`` epochs without improvement.

    An epoch improves on the best one when its monitored value is better by more than
    ``min_delta``. Several monitored quantities are compared lexicographically: the first one
    decides unless the two epochs tie within its ``min_delta``, then the next one decides, and so
    on (e.g. a probe's validation score, and at equal score a clearly lower loss). NaN never
    improves. At the end of training the best epoch's weights are restored. Without validation
    data every epoch counts as the best (the last epoch is kept) and nothing stops early.

    Parameters
    ----------
    patience : int or None, default=5
        Epochs without improvement before stopping; None never stops early (the best epoch is
        still restored).
    monitor : str or tuple of str, default="valid_loss"
        Key(s) of the epoch record (``run.history[-1]``) to compare.
    lower_is_better : bool or tuple of bool, default=True
        One per monitored key.
    min_delta : float or tuple of float, default=0.0
        One per monitored key: smaller changes count as ties.

    Attributes
    ----------
    best_epoch : int
        0-based epoch of the best value so far (-1 before the first).
    best_values : tuple of float
    best_state : object or None
        What ``state_fn`` returned at the best epoch.
    bad_epochs : int
        Epochs since the best one.
    """

    def __init__(self, patience=5, monitor="valid_loss", lower_is_better=True, min_delta=0.0):
        self.patience = patience
        self.monitor = monitor
        self.lower_is_better = lower_is_better
        self.min_delta = min_delta
        self.reset()

    def _keys(self):
        return (self.monitor,) if isinstance(self.monitor, str) else tuple(self.monitor)

    def reset(self):
        """Forget the epochs seen so far."""
        keys = self._keys()
        lower = _as_tuple(self.lower_is_better, len(keys), "lower_is_better")
        self.best_values = tuple(math.inf if low else -math.inf for low in lower)
        self.best_epoch = -1
        self.bad_epochs = 0
        self.best_state = None

    def is_improvement(self, values):
        """Whether ``values`` (one per monitored key) beat the best ones.

        Parameters
        ----------
        values : float or tuple of float

        Returns
        -------
        improved : bool
        """
        keys = self._keys()
        values = _as_tuple(values, len(keys), "values")
        lower = _as_tuple(self.lower_is_better, len(keys), "lower_is_better")
        deltas = _as_tuple(self.min_delta, len(keys), "min_delta")
        for value, best, low, delta in zip(values, self.best_values, lower, deltas):
            gain = (best - value) if low else (value - best)
            if gain > delta:  # False for NaN
                return True
            if not gain >= -delta:  # clearly worse (or NaN): this key decides
                return False
        return False

    def update(self, epoch, values, state_fn):
        """Record an epoch; returns True when training should stop.

        Parameters
        ----------
        epoch : int
        values : float or tuple of float
            The monitored value(s) of the epoch.
        state_fn : callable
            Called (and its result kept in ``best_state``) only when the epoch is a new best.

        Returns
        -------
        stop : bool
        """
        if self.is_improvement(values):
            values = _as_tuple(values, len(self._keys()), "values")
            self.best_values = tuple(float(v) for v in values)
            self.best_epoch = int(epoch)
            self.bad_epochs = 0
            self.best_state = state_fn()
        else:
            self.bad_epochs += 1
        return self.patience is not None and self.bad_epochs >= self.patience

    # -- callback hooks ------------------------------------------------------------------------
    def on_train_begin(self, estimator, run):
        self.reset()

    def on_epoch_end(self, estimator, run):
        if not run.has_validation:
            self.best_epoch, self.best_state = run.epoch, None
            return
        record = run.history[-1]
        values = tuple(record[key] for key in self._keys())
        if self.update(run.epoch, values, run.trainable_state):
            run.stop_training = True

    def on_train_end(self, estimator, run):
        if self.best_state is not None:
            run.load_trainable_state(self.best_state)

    # -- resume ---------------------------------------------------------------------------------
    def state_dict(self):
        """What a checkpoint stores to resume the best-epoch tracking.

        Returns
        -------
        state : dict
            ``best_loss`` (the best monitored value, a tuple for several), ``best_epoch``,
            ``bad_epochs``, ``best_state``.
        """
        best = self.best_values[0] if len(self.best_values) == 1 else self.best_values
        return {"best_loss": best, "best_epoch": self.best_epoch,
                "bad_epochs": self.bad_epochs, "best_state": self.best_state}

    def load_state_dict(self, state):
        """Restore what :meth:`state_dict` returned.

        Parameters
        ----------
        state : dict
        """
        best = state["best_loss"]
        self.best_values = tuple(best) if isinstance(best, (tuple, list)) else (best,)
        self.best_epoch = state["best_epoch"]
        self.bad_epochs = state["bad_epochs"]
        self.best_state = state["best_state"]


class Checkpoint(Callback):
    """Write the fit's state after every epoch (atomically) and resume from it.

    At ``on_train_begin`` a checkpoint found in ``directory`` is checked against the fit's
    configuration and data fingerprints (one of another configuration or other data is refused
    with a ValueError) and handed to the fit, which resumes from the epoch after it (same seed,
    weights, optimiser, random generators, history and early-stopping state).

    Parameters
    ----------
    directory : str or path-like
        Holds ``checkpoint.pt``.
    """

    def __init__(self, directory):
        self.directory = directory

    def on_train_begin(self, estimator, run):
        from . import _checkpoint

        state = _checkpoint.load_checkpoint(self.directory)
        if state is None:
            return
        if state["config"] != run.config_fingerprint or state["data"] != run.data_fingerprint:
            what = "configuration" if state["config"] != run.config_fingerprint else "data"
            from ..exceptions import CheckpointError

            raise CheckpointError(
                f"checkpoint_dir={str(self.directory)!r} holds a checkpoint of another {what} "
                "(parameters, model weights or training data differ), so it cannot be resumed. "
                "Use another checkpoint_dir, or delete that checkpoint to start afresh."
            )
        run.resume_from(state)

    def on_epoch_end(self, estimator, run):
        from . import _checkpoint

        if not getattr(run, "is_main", True):  # distributed fit: rank 0 writes
            return
        _checkpoint.save_checkpoint(self.directory, run.state_dict())


class ProgressBar(Callback):
    """A tqdm bar over each epoch's optimiser steps and a log line per epoch.

    The bar shows the running training loss; the epoch summary (training and validation loss,
    validation r) goes to the ``sk_braintune.tuning.callbacks`` logger at INFO level.

    Parameters
    ----------
    leave : bool, default=False
        Keep each epoch's finished bar on screen.
    """

    def __init__(self, leave=False):
        self.leave = leave
        self._bar = None

    def on_epoch_begin(self, estimator, run):
        from tqdm.auto import tqdm

        self._bar = tqdm(total=run.steps_per_epoch, leave=self.leave,
                         desc=f"epoch {run.epoch + 1}/{run.max_epochs}")

    def on_batch_end(self, estimator, run, train_loss):
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{train_loss:.4f}")

    def on_epoch_end(self, estimator, run):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        record = run.history[-1]
        logger.info("epoch %d/%d: train loss %.4f, valid loss %.4f, valid r %.4f",
                    run.epoch + 1, run.max_epochs, record["train_loss"], record["valid_loss"],
                    record["valid_r"])

    def on_train_end(self, estimator, run):
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __getstate__(self):
        state = dict(vars(self))
        state["_bar"] = None  # a live bar cannot be pickled or copied
        return state


def check_callbacks(callbacks):
    """Validate a ``callbacks`` parameter: None or a sequence of :class:`Callback` instances.

    Returns
    -------
    callbacks : list of Callback
    """
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback) or not hasattr(callbacks, "__iter__"):
        raise TypeError("callbacks must be None or a list of Callback instances, got "
                        f"{type(callbacks).__name__}; wrap a single callback in a list.")
    callbacks = list(callbacks)
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise TypeError(f"callbacks must hold sk_braintune.tuning.Callback instances, got "
                            f"{type(cb).__name__}; subclass Callback and override its hooks.")
    return callbacks
