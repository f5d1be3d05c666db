"""The training loop of a BrainTuner fit: initialise, run an epoch, validate, finish.

:class:`TrainingRun` holds everything one fit needs (backbone, head, optimiser, split, targets,
frozen-layer cache) and exposes the steps; early stopping, checkpoints and progress are
callbacks (:mod:`sk_braintune.tuning.callbacks`). The estimator drives it::

    run = TrainingRun(estimator, data, seed, device, precision, callbacks)
    run.fit()

Rows and windows: a fit on several participants has one row per (stimulus window, participant)
pair. The loop works on the *distinct* windows: each batch of windows is forwarded once, and
the loss of every participant who heard them is computed on that one forward pass. With one
participant, rows and windows coincide and the loop is the single-participant one.
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..preprocessing import select_rows
from . import _checkpoint, _network, _training
from .callbacks import Checkpoint, EarlyStopping, ProgressBar

PARTICIPANT_SCHEDULES = ("sequential", "averaged")
HEADS = ("shared", "per_participant")


class TrainingData:
    """Training rows grouped by stimulus window.

    Parameters
    ----------
    X : AudioWindows or ndarray of shape (n_rows, n_samples)
    y : ndarray of shape (n_rows, n_targets), float32
    groups : ndarray of shape (n_rows,) or None
    participant_codes : ndarray of shape (n_rows,) of int, or None
        Index into the estimator's ``participants_`` of each row; None for one participant.

    Attributes
    ----------
    windows : AudioWindows or ndarray of shape (n_windows, n_samples)
        The distinct windows (all rows when ``participant_codes`` is None).
    window_of_row : ndarray of shape (n_rows,)
    window_groups : ndarray of shape (n_windows,) or None
    codes : ndarray of shape (n_rows,)
        Participant code of each row (zeros for one participant).
    n_participants : int
    """

    def __init__(self, X, y, groups, participant_codes=None, n_participants=1):
        self.X, self.y, self.groups = X, y, groups
        self.multi = participant_codes is not None
        n_rows = len(y)
        if not self.multi:
            self.windows = X
            self.window_of_row = np.arange(n_rows)
            self.codes = np.zeros(n_rows, dtype=np.int64)
            self.n_participants = 1
            self.window_groups = groups
        else:
            first_rows, self.window_of_row = distinct_windows(X)
            self.windows = X[first_rows]
            self.codes = np.asarray(participant_codes, dtype=np.int64)
            self.n_participants = int(n_participants)
            pairs = self.window_of_row * self.n_participants + self.codes
            if len(np.unique(pairs)) != n_rows:
                raise ValueError("participants: a window appears twice for the same participant; "
                                 "each (window, participant) pair must be one row.")
            self.window_groups = None if groups is None else np.asarray(groups)[first_rows]
            if groups is not None and np.any(
                    np.asarray(groups, dtype=object) != np.asarray(
                        self.window_groups, dtype=object)[self.window_of_row]):
                raise ValueError("groups: the rows of one window (one per participant) must "
                                 "carry the same story.")
        # rows of each window, window by window (CSR layout)
        self._row_order = np.argsort(self.window_of_row, kind="stable")
        counts = np.bincount(self.window_of_row, minlength=self.n_windows)
        self._row_start = np.concatenate([[0], np.cumsum(counts)])

    @property
    def n_windows(self):
        return len(self.windows)

    def rows_of(self, windows):
        """Rows of ``windows`` and the position of each row's window in ``windows``.

        Parameters
        ----------
        windows : ndarray of int, window ids

        Returns
        -------
        rows, positions : ndarray of int
        """
        if not self.multi:
            return windows, None  # rows are the windows, in order
        rows = np.concatenate([self._row_order[self._row_start[w]:self._row_start[w + 1]]
                               for w in windows]) if len(windows) else np.zeros(0, np.int64)
        lookup = {int(w): i for i, w in enumerate(windows)}
        positions = np.array([lookup[int(w)] for w in self.window_of_row[rows]], dtype=np.int64)
        return rows, positions

    def rows_of_windows_mask(self, window_ids):
        """Boolean mask of the rows whose window is in ``window_ids``."""
        is_in = np.zeros(self.n_windows, dtype=bool)
        is_in[window_ids] = True
        return is_in[self.window_of_row]


def distinct_windows(X):
    """First row of each distinct window, in order of appearance, and each row's window id.

    Windows of an :class:`~sk_braintune.windows.AudioWindows` are the same when they have the
    same story and end; array rows when their samples are equal.

    Returns
    -------
    first_rows : ndarray of shape (n_windows,)
    window_of_row : ndarray of shape (n_rows,)
    """
    from ..windows import is_audio_windows

    if is_audio_windows(X):
        keys, window_of_row, first_rows = {}, np.empty(len(X), dtype=np.int64), []
        for i, key in enumerate(zip(X.stories.tolist(), X.ends.tolist())):
            if key not in keys:
                keys[key] = len(first_rows)
                first_rows.append(i)
            window_of_row[i] = keys[key]
        return np.asarray(first_rows, dtype=np.int64), window_of_row
    rows = np.ascontiguousarray(X)
    view = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
    _, first, inverse = np.unique(view, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))  # order of appearance
    return np.sort(first), rank[inverse.ravel()]


class TrainingRun:
    """One fit of a BrainTuner: the steps of the loop and the state a checkpoint holds.

    Parameters
    ----------
    estimator : BrainTuner
    data : TrainingData
    seed : int
    device : torch.device
    precision : {"fp32", "bf16"}
    user_callbacks : list of Callback
    checkpoint_dir : path-like
    distributed : DistributedContext or None, default=None
        Set in a data-parallel fit (``torchrun``): each rank forwards its shard of every batch
        (see :mod:`sk_braintune.tuning._distributed`); only rank 0 writes checkpoints and shows
        progress. User callbacks run on every rank (``run.is_main`` tells rank 0).
    """

    def __init__(self, estimator, data, seed, device, precision, user_callbacks, checkpoint_dir,
                 distributed=None):
        self.estimator = estimator
        self.distributed = distributed
        self.data = data
        self.seed = seed
        self.device = device
        self.precision = precision
        self.max_epochs = estimator.max_epochs
        self.early_stopping = EarlyStopping(estimator.patience)
        self.callbacks = [self.early_stopping, Checkpoint(checkpoint_dir)]
        if estimator.verbose and self.is_main:
            self.callbacks.append(ProgressBar())
        self.callbacks.extend(user_callbacks)
        self.history, self.epoch, self.next_epoch, self.step = [], 0, 0, 0
        self.stop_training = False
        self._resume_state = None

    # -- the loop -------------------------------------------------------------------------------
    def fit(self):
        """Initialise, train epoch by epoch with validation, restore the kept weights."""
        self.load_model()
        self._call("on_train_begin")
        self.initialise()
        while not self.stop_training and self.next_epoch < self.max_epochs:
            self.epoch = self.next_epoch
            started = time.perf_counter()
            self._call("on_epoch_begin")
            record = self.run_epoch()
            valid_loss, valid_r, per_participant = self.validate()
            record.update(valid_loss=valid_loss, valid_r=valid_r)
            if per_participant is not None:
                record["valid_r_per_participant"] = per_participant
            record["seconds"] = time.perf_counter() - started
            self.history.append(record)
            self._call("on_epoch_end")
            self.next_epoch += 1
        self._call("on_train_end")
        self.finish()

    @property
    def is_main(self):
        """Whether this process writes checkpoints and logs (always, outside ``torchrun``)."""
        return self.distributed is None or self.distributed.is_main

    def _call(self, hook, *args):
        for callback in self.callbacks:
            getattr(callback, hook)(self.estimator, self, *args)

    # -- initialise -----------------------------------------------------------------------------
    def load_model(self):
        """Load the backbone, check the parameters against it, compute the fingerprints."""
        from ..models.backbone import load_backbone

        est, data = self.estimator, self.data
        backbone = load_backbone(str(est.model), device="cpu")
        est._check_params(backbone.num_hidden_layers)
        self.n_layers = backbone.num_hidden_layers
        self.backbone_fingerprint = backbone.fingerprint()
        self.config_fingerprint = _checkpoint.config_fingerprint(est._result_params(),
                                                                 self.backbone_fingerprint)
        codes = data.codes if data.multi else None
        self.data_fingerprint = _checkpoint.data_fingerprint(data.X, data.y, data.groups,
                                                             participants=codes)
        self.backbone = backbone.to(self.device)
        self.n_input = est._min_input_samples(backbone, data.X.shape[1])
        self.autocast = est._autocast_factory(self.device, self.precision)

    def resume_from(self, state):
        """Resume from a checkpoint's state (called by :class:`Checkpoint` before
        :meth:`initialise`): its seed decides the head, the split and the shuffling."""
        self.seed = state["seed"]
        self._resume_state = state

    def initialise(self):
        """Trainable parameters, head(s), optimiser, validation split, targets, frozen cache."""
        backbone_params = self._set_trainable()
        self._make_head_and_optimizer(backbone_params)
        self._split_and_standardise()
        self.cached_hidden = self.cached_mask = None
        self._batch_buffers = self._copy_done = None
        if self.use_cache:
            self._fill_cache()
        est = self.estimator
        self.shuffle_rng = np.random.RandomState((self.seed + 1) % (2 ** 31))
        self.named_trainable = [(n, p) for n, p in self.backbone.named_parameters()
                                if p.requires_grad]
        self.batch_size = min(est.batch_size, len(self.train_windows))
        self.micro = est.micro_batch_size or self.batch_size
        self.steps_per_epoch = math.ceil(len(self.train_windows) / self.batch_size)
        self.total_steps = self.max_epochs * self.steps_per_epoch
        self.warmup_steps = _training.n_warmup_steps(self.total_steps, est.warmup_fraction)
        self.train_forward = None
        if self.distributed is not None:
            self._wrap_distributed()
        if self._resume_state is not None:
            self.load_state_dict(self._resume_state)
            self._resume_state = None

    def _set_trainable(self):
        """Freeze what does not train (and add LoRA adapters); the backbone's trainable params."""
        est, backbone, device = self.estimator, self.backbone, self.device
        k = est.trainable_layers
        self.start_layer = None if k is None else self.n_layers - k
        if self.start_layer is None:
            if est.freeze_feature_encoder:
                backbone.freeze_feature_encoder()
            trainable = {n for n, p in backbone.named_parameters() if p.requires_grad}
        else:
            trainable = _network.parameters_after(backbone, self.start_layer, self.n_input)
            for name, p in backbone.named_parameters():
                p.requires_grad_(name in trainable)
        if est.lora_rank is not None:
            _network.apply_lora(backbone, est.lora_rank, est.lora_alpha, trainable,
                                dropout=est.lora_dropout)
        backbone_params = [p for p in backbone.parameters() if p.requires_grad]
        est.n_trainable_parameters_ = int(sum(p.numel() for p in backbone_params))
        self.use_cache = self.start_layer is not None and est.cache_frozen_layers
        if device.type == "cuda" and hasattr(backbone.encoder, "gradient_checkpointing_enable"):
            backbone.encoder.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False})
        return backbone_params

    def _make_head_and_optimizer(self, backbone_params):
        """Linear head(s), initialised from the seed, and the two-group optimiser."""
        import torch

        est, data, backbone, seed = self.estimator, self.data, self.backbone, self.seed
        device = self.device
        n_targets = data.y.shape[1]
        self.per_participant_heads = est.head == "per_participant" and data.multi
        if self.per_participant_heads:
            self.head = torch.nn.ModuleList([
                _network.make_head(backbone.hidden_size, n_targets, seed + i)
                for i in range(data.n_participants)]).to(device)
        else:
            self.head = _network.make_head(backbone.hidden_size, n_targets, seed).to(device)
        self.optimizer, self.base_lrs = _training.make_optimizer(
            backbone_params, list(self.head.parameters()), est.lr_backbone, est.lr_head,
            est.weight_decay, kind=est.optimizer)

    def _wrap_distributed(self):
        """The trainable backbone in DistributedDataParallel (rank 0's weights everywhere).

        The head stays outside: it runs on the gathered whole batch on every rank, so its
        gradient is already the single-process one (an all-reduce would only average equal
        values); :meth:`finish` broadcasts rank 0's final weights all the same.
        """
        from torch.nn.parallel import DistributedDataParallel

        from . import _distributed

        module = _distributed.pooled_module(self.backbone, self.estimator.pooling,
                                            self.start_layer if self.use_cache else None)
        self.distributed.broadcast_tensors(list(self.head.parameters()))
        if not self.named_trainable:  # head only: nothing for DDP to reduce
            self.train_forward = module
            return
        self.train_forward = DistributedDataParallel(
            module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
            # e.g. wav2vec2's masked_spec_embed requires grad but is unused without SpecAugment
            find_unused_parameters=True)

    def _split_and_standardise(self):
        """Validation split over windows (whole stories, every participant at once), targets
        standardised with the training rows."""
        import torch

        est, data, seed = self.estimator, self.data, self.seed
        split_rng = np.random.RandomState(seed)
        n_windows = data.n_windows
        self.train_windows, self.valid_windows = _training.validation_split(
            n_windows, data.window_groups, est.validation, split_rng,
            X=np.zeros((n_windows, 1)), y=None if data.multi else data.y)
        if len(self.train_windows) == 0:
            raise ValueError("the validation split left no training samples")
        train_rows = (self.train_windows if not data.multi
                      else np.flatnonzero(data.rows_of_windows_mask(self.train_windows)))
        valid_rows = (self.valid_windows if not data.multi
                      else np.flatnonzero(data.rows_of_windows_mask(self.valid_windows)))
        y = data.y
        if est.standardize_targets:
            # a view when the training rows are contiguous (held-out stories stacked last)
            train_y = select_rows(y, np.isin(np.arange(len(y)), train_rows))
            mean = train_y.mean(0)
            scale = train_y.std(0)
            scale = np.where(scale > 0, scale, 1.0)
            del train_y
        else:
            mean, scale = np.zeros(y.shape[1]), np.ones(y.shape[1])
        # standardised column block by column block: the whole (y - mean) / scale made two
        # float64 temporaries of twice the size of y each
        targets = np.empty(y.shape, dtype=np.float32)
        step = max(1, (64 * 2 ** 20) // max(1, 8 * len(y)))
        for start in range(0, y.shape[1], step):
            cols = slice(start, start + step)
            targets[:, cols] = (y[:, cols] - mean[cols]) / scale[cols]
        self.targets = torch.from_numpy(targets)
        est.target_mean_ = mean.astype(np.float64)
        est.target_scale_ = scale.astype(np.float64)
        est.validation_groups_ = (np.unique(data.groups[valid_rows]) if data.groups is not None
                                  else np.array([], dtype=object))
        self.has_validation = len(self.valid_windows) > 0

    def _fill_cache(self):
        """Hidden states entering the trainable blocks, from the shared cache when it has them."""
        est = self.estimator
        cache = est.frozen_layer_cache
        key = (self.backbone_fingerprint, _checkpoint.windows_fingerprint(self.data.windows),
               self.start_layer, self.n_input, self.precision)
        entry = cache.get(key) if cache is not None else None
        if entry is None:
            entry = _network.cache_hidden(
                self.backbone, self._window_batch, self.data.n_windows, self.start_layer,
                est.batch_size, self.device, self.autocast, est._progress)
            if cache is not None:
                cache.put(key, *entry)
        self.cached_hidden, self.cached_mask = entry

    def _window_batch(self, windows):
        return self.estimator._window_batch(self.data.windows, windows, self.n_input)

    # -- forward ----------------------------------------------------------------------------------
    def _forward_inputs(self, windows):
        """Model inputs of ``windows``: ``(waveforms,)``, or ``(hidden, frame_mask)`` cached."""
        import torch

        if self.use_cache:
            return self._cached_inputs(windows)
        return (torch.from_numpy(self._window_batch(windows)).to(self.device),)

    def _cached_inputs(self, windows):
        """Cached ``(hidden, frame_mask)`` of ``windows`` on the device, hidden in float32.

        Each batch is gathered into CPU buffers kept for the whole fit (pinned when training on
        a GPU, so that the copy to the device is asynchronous) instead of allocating a (B, F, D)
        tensor every step. The gather is NumPy's single-threaded ``take``: torch's
        ``index_select`` and indexing run parallel regions that, on a machine shared with other
        jobs, wait for descheduled threads (measured on 2 busy cores: 250-330 ms per 20 MB batch
        for ``index_select``, 20-40 ms for indexing, 4 ms for ``np.take``). A float16 cache is
        widened to float32 by one copy (into a second buffer on the CPU, after the transfer on a
        GPU). On the CPU the returned hidden state *is* the buffer and the next call overwrites
        it: safe, because every step's backward pass (and every validation batch) is done with
        its inputs before the next batch is gathered.
        """
        import torch

        n = len(windows)
        index = np.asarray(windows, dtype=np.int64)
        store, mask_store = self.cached_hidden, self.cached_mask
        on_cpu = self.device.type == "cpu"
        if self._batch_buffers is None or self._batch_buffers[0].shape[0] < n:
            # normal tensors even when the first batch is a validation one (inference mode):
            # inference tensors could not be written or saved for backward later
            with torch.inference_mode(False):
                pinned = self.device.type == "cuda"
                shape = (n, *store.shape[1:])
                gathered = torch.empty(shape, dtype=store.dtype, pin_memory=pinned)
                wide = (torch.empty(shape, dtype=torch.float32)
                        if on_cpu and store.dtype != torch.float32 else gathered)
                mask = torch.empty((n, *mask_store.shape[1:]), dtype=mask_store.dtype,
                                   pin_memory=pinned)
            self._batch_buffers = (gathered, wide, mask)
        gathered, wide, mask = (buffer[:n] for buffer in self._batch_buffers)
        if self._copy_done is not None:  # the previous batch's copy to the GPU reads them
            self._copy_done.synchronize()
        # mode="clip" writes straight into ``out`` (mode="raise" buffers it); the window ids
        # are the fit's own, always in range
        np.take(store.numpy(), index, axis=0, out=gathered.numpy(), mode="clip")
        np.take(mask_store.numpy(), index, axis=0, out=mask.numpy(), mode="clip")
        if on_cpu:
            if wide is not gathered:
                np.copyto(wide.numpy(), gathered.numpy())
            return wide, mask
        hidden = gathered.to(self.device, non_blocking=True).to(torch.float32)
        mask = mask.to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            self._copy_done = torch.cuda.Event()
            self._copy_done.record()
        return hidden, mask

    def _target_rows(self, rows):
        """Standardised targets of ``rows`` on the device, (len(rows), K) float32, gathered with
        NumPy's single-threaded ``take`` (see :meth:`_cached_inputs`)."""
        import torch

        rows = np.asarray(rows, dtype=np.int64)
        return torch.from_numpy(np.take(self.targets.numpy(), rows, axis=0)).to(self.device)

    def pooled_batch(self, windows):
        """Pooled last hidden state of ``windows`` (window ids), shape (B, D): one forward."""
        inputs = self._forward_inputs(windows)
        if self.use_cache:
            return _network.pooled_cached(self.backbone, *inputs, self.start_layer,
                                          self.estimator.pooling)
        return _network.pooled_full(self.backbone, *inputs, self.estimator.pooling)

    def train_pooled_batch(self, windows):
        """:meth:`pooled_batch` for training; in a distributed fit each rank forwards its shard
        and the shards are gathered (with autograd) into the whole batch, in order."""
        if self.distributed is None:
            return self.pooled_batch(windows)
        from . import _distributed

        local = self.train_forward(*self._forward_inputs(self.distributed.shard(windows)))
        return _distributed.gather_rows(local, len(windows))

    def participant_predictions(self, pooled, windows):
        """Per participant present: ``(code, rows, predictions)`` for the rows of ``windows``.

        The shared head runs once on the batch; a per-participant head on its rows only.
        """
        rows, positions = self.data.rows_of(windows)
        if positions is None:  # one participant: rows are the windows
            yield 0, rows, self.head(pooled)
            return
        codes = self.data.codes[rows]
        shared = None if self.per_participant_heads else self.head(pooled)
        for code in np.unique(codes):
            mine = codes == code
            index = _as_index(positions[mine], pooled.device)
            pred = shared[index] if shared is not None else self.head[int(code)](pooled[index])
            yield int(code), rows[mine], pred

    # -- one epoch ------------------------------------------------------------------------------
    def run_epoch(self):
        """Shuffle the training windows, one optimiser step per batch; returns the record."""
        est, data = self.estimator, self.data
        self.backbone.train()
        self.head.train()
        order = self.train_windows[self.shuffle_rng.permutation(len(self.train_windows))]
        loss_sum, n_seen = 0.0, 0
        averaged = est.participant_schedule == "averaged"
        for b in range(self.steps_per_epoch):
            windows = order[b * self.batch_size:(b + 1) * self.batch_size]
            _training.set_learning_rates(self.optimizer, self.base_lrs, _training.lr_factor(
                self.step, self.total_steps, self.warmup_steps))
            self.optimizer.zero_grad(set_to_none=True)
            batch_rows = (np.bincount(data.codes[data.rows_of(windows)[0]],
                                      minlength=data.n_participants) if data.multi
                          else np.array([len(windows)]))
            n_present = int(np.count_nonzero(batch_rows))
            for c in range(0, len(windows), self.micro):
                chunk = windows[c:c + self.micro]
                with self.autocast():
                    pooled = self.train_pooled_batch(chunk)
                    parts = list(self.participant_predictions(pooled, chunk))
                total = None
                for code, rows, pred in parts:
                    loss = _training.compute_loss(pred, self._target_rows(rows), est.loss)
                    value = loss.item()  # the step's one host synchronisation
                    if not math.isfinite(value):
                        raise FloatingPointError(
                            f"training loss became {value} at epoch {self.epoch}; lower "
                            "lr_backbone/lr_head, or use precision='fp32'.")
                    # sequential: every participant's loss on this one forward pass is
                    # back-propagated (gradients add up); averaged: their mean. A share of 1
                    # (one participant, no micro-batches) needs no multiply: x * 1.0 == x.
                    share = len(rows) / int(batch_rows[code])
                    weighted = loss if share == 1.0 else loss * share
                    total = weighted if total is None else total + weighted
                    loss_sum += value * len(rows)
                    n_seen += len(rows)
                if averaged and n_present > 1:
                    total = total / n_present
                total.backward()
            self.optimizer.step()
            self.step += 1
            self._call("on_batch_end", loss_sum / max(n_seen, 1))
        return {"epoch": self.epoch, "train_loss": loss_sum / max(n_seen, 1),
                "lr_backbone": self.optimizer.param_groups[0]["lr"],
                "lr_head": self.optimizer.param_groups[1]["lr"]}

    # -- validation -------------------------------------------------------------------------------
    def validate(self):
        """Validation loss and mean r (modules in eval mode), streamed to CPU correlation sums.

        Returns
        -------
        valid_loss, valid_r : float
            NaN without validation. With several participants: means over participants.
        per_participant : dict or None
            Participant -> validation r (several participants only).
        """
        import torch

        est, data = self.estimator, self.data
        self.backbone.eval()
        self.head.eval()
        if not self.has_validation:
            return float("nan"), float("nan"), None
        result = self._validate()
        if self.distributed is not None:
            # every rank computed the same; rank 0's figures make every rank stop alike
            result = self.distributed.broadcast(result)
        return result

    def _validate(self):
        import torch

        est, data = self.estimator, self.data
        n_p = data.n_participants
        sums = [_training.CorrelationSums(self.targets.shape[1]) for _ in range(n_p)]
        loss_sums, counts = np.zeros(n_p), np.zeros(n_p, dtype=np.int64)
        with torch.inference_mode():
            for start in range(0, len(self.valid_windows), est.batch_size):
                windows = self.valid_windows[start:start + est.batch_size]
                with self.autocast():
                    pooled = self.pooled_batch(windows)
                    parts = list(self.participant_predictions(pooled, windows))
                for code, rows, pred in parts:
                    target = self._target_rows(rows)
                    if est.loss != "correlation":
                        loss_sums[code] += _training.compute_loss(
                            pred, target, est.loss).item() * len(rows)
                    counts[code] += len(rows)
                    sums[code].update(pred, target)
        present = np.flatnonzero(counts)
        r = [float(np.mean(sums[code].correlations())) for code in present]
        losses = [1.0 - r_p if est.loss == "correlation" else float(loss_sums[code] / counts[code])
                  for code, r_p in zip(present, r)]
        if not data.multi:
            return losses[0], r[0], None
        labels = est.participants_
        per_participant = {_label(labels[code]): r_p for code, r_p in zip(present, r)}
        return float(np.mean(losses)), float(np.mean(r)), per_participant

    # -- state ----------------------------------------------------------------------------------
    def trainable_state(self):
        """CPU copy of the trainable backbone parameters and the head(s)."""
        return {"backbone": {n: p.detach().to("cpu", copy=True) for n, p in self.named_trainable},
                "head": {n: t.detach().to("cpu", copy=True)
                         for n, t in self.head.state_dict().items()}}

    def load_trainable_state(self, state):
        """Put back what :meth:`trainable_state` returned."""
        import torch

        with torch.no_grad():
            params = dict(self.named_trainable)
            for name, value in state["backbone"].items():
                params[name].copy_(value)
        self.head.load_state_dict(state["head"])

    def state_dict(self):
        """Everything needed to resume after the current epoch (what a checkpoint holds)."""
        import torch

        device = self.device
        return {
            "config": self.config_fingerprint, "data": self.data_fingerprint, "seed": self.seed,
            "epoch": self.epoch, "step": self.step,
            "finished": self.stop_training or self.epoch + 1 >= self.max_epochs,
            "trainable": self.trainable_state(),
            "optimizer": self.optimizer.state_dict(), "shuffle_rng": self.shuffle_rng.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "stopper": self.early_stopping.state_dict(), "history": self.history,
        }

    def load_state_dict(self, state):
        """Restore what :meth:`state_dict` returned (after :meth:`initialise` built the parts)."""
        import torch

        self.load_trainable_state(state["trainable"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.shuffle_rng.set_state(state["shuffle_rng"])
        torch.set_rng_state(state["torch_rng"])
        if self.device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.early_stopping.load_state_dict(state["stopper"])
        self.history = list(state["history"])
        self.next_epoch, self.step = state["epoch"] + 1, state["step"]
        self.stop_training = bool(state["finished"])

    # -- finish ---------------------------------------------------------------------------------
    def finish(self):
        """Kept weights (restored by early stopping), merged adapters, everything to the CPU."""
        import torch

        est, backbone = self.estimator, self.backbone
        if self.distributed is not None:  # identical fitted weights on every rank, bit for bit
            self.distributed.broadcast_tensors(
                [p for _, p in self.named_trainable] + list(self.head.parameters()))
            self.train_forward = None
        stopper = self.early_stopping
        est.best_epoch_ = int(stopper.best_epoch if stopper.best_epoch >= 0
                              else len(self.history) - 1)
        est.history_ = self.history
        if est.lora_rank is not None:
            _network.merge_lora(backbone)
        if hasattr(backbone.encoder, "gradient_checkpointing_disable") and \
                self.device.type == "cuda":
            backbone.encoder.gradient_checkpointing_disable()
        for p in backbone.parameters():
            p.requires_grad_(False)
        self.cached_hidden = self.cached_mask = self.optimizer = None
        self._batch_buffers = self._copy_done = None
        est.backbone_ = backbone.to("cpu").eval()
        est.head_ = self.head.to("cpu").eval().requires_grad_(False)
        est._n_input_samples_ = self.n_input
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _as_index(positions, device):
    import torch

    return torch.as_tensor(positions, device=device)


def _label(value):
    """A participant label as a plain Python value (JSON-friendly history)."""
    return value.item() if hasattr(value, "item") else value
