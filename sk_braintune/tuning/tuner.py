"""BrainTuner: fine-tune a speech model to predict fMRI responses (brain-tuning).

The paper's method (Moussa et al.): a pretrained speech encoder, its last hidden state pooled over
each TR's causal audio window, a linear head to the voxels, all trained with Adam on the fMRI
responses. The tuned backbone then replaces the pretrained one in the encoding pipeline.
"""

from __future__ import annotations

import contextlib
import numbers
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import (check_array, check_consistent_length, check_is_fitted,
                                      validate_data)

from .._docs import fill_doc
from ..windows import check_clips, is_audio_windows
from . import _distributed, _loop, _training
from .callbacks import check_callbacks
from ._network import HeadOutputs
from .frozen_cache import FrozenLayerCache

__all__ = ["BrainTuner"]

# parameters that do not change the result of a fit (ignored when matching a checkpoint)
_NON_RESULT_PARAMS = ("verbose", "checkpoint_dir", "device", "callbacks", "frozen_layer_cache")


class BrainTuner(RegressorMixin, TransformerMixin, BaseEstimator):
    """Fine-tune a speech model on fMRI (or any per-TR targets): backbone + pooling + linear head.

    Each sample is one TR: a causal audio window ending at the end of the volume, and the
    responses ``y[i]`` of that volume. The backbone's last hidden state is pooled over the real
    frames of the window, a linear head maps it to the targets, and both are trained with Adam
    (two parameter groups) under a linear warm-up / linear decay schedule, with early stopping on
    held-out stories. After ``fit`` the tuned backbone (``backbone_``) can replace a pretrained
    model anywhere, e.g. ``SpeechFeatureExtractor(model=FrozenEstimator(tuner))`` or
    ``tuner.save_pretrained(dir)``.

    Parameters
    ----------
    model : str
        Hugging Face model name or local directory (wav2vec2, HuBERT, WavLM, Whisper encoder or
        a generic audio encoder), loaded in ``fit`` with ``layerdrop=0`` and SpecAugment off.
        Never a model instance (``clone`` must stay cheap and picklable).
    pooling : {"mean", "last"}, default="mean"
        Pool the last hidden state over all real frames of the window, or take the last real
        frame. Padded frames (Whisper) are never pooled.
    freeze_feature_encoder : bool, default=True
        Keep the convolutional feature encoder fixed (the paper's setting). Ignored when
        ``trainable_layers`` is set (everything below the trainable blocks is frozen then).
    trainable_layers : int or None, default=None
        None: the whole transformer trains (the paper). ``k``: only the top ``k`` transformer
        blocks (and what follows them, e.g. a final layer norm) train; everything that computes
        ``hidden_states[N - k]`` is frozen. ``0`` trains the head only.
    cache_frozen_layers : bool, default=True
        With ``trainable_layers`` set, compute the frozen part once for all windows
        (``hidden_at(x, N - k)`` under ``torch.inference_mode``, kept on the CPU as float32, or
        float16 beyond 4 GiB) and train the top blocks on the cached hidden states each epoch.
        Much faster; the frozen layers run without dropout (eval mode), as they would in any
        frozen feature extractor.
    frozen_layer_cache : FrozenLayerCache or None, default=None
        Where the frozen layers' outputs are kept between fits: tuners given the same
        :class:`~sk_braintune.tuning.FrozenLayerCache` (e.g. a brain-tuned model and its
        controls, on the same model, windows and ``trainable_layers``) compute them once.
        ``clone`` keeps the same instance, so a grid search shares it too. None: computed for
        this fit only, nothing is kept.
    loss : {"mse", "correlation", "spatial_correlation", "cosine_mse", "mse_plus_cosine"}, \
            default="mse"
        ``"mse"``: mean squared error. ``"correlation"``: 1 - mean Pearson r over targets, across
        the samples of each (micro-)batch. ``"spatial_correlation"``: 1 - mean over samples of
        the Pearson r across the targets (voxels) of each sample. ``"cosine_mse"``: the
        multi-brain-tuning paper's cos+L2, Huber loss (delta 0.6) + 0.5 * mean(1 - cosine
        similarity) between predicted and true target vectors of each sample.
        ``"mse_plus_cosine"``: MSE + mean(1 - cosine similarity) (what ``"cosine_mse"``
        meant before the multi-participant release; see the changelog). With several
        participants each participant's loss is computed on its own rows of the batch.
    head : {"shared", "per_participant"}, default="shared"
        With ``participants``: one linear head for everyone over the common voxel space (the
        multi-brain-tuning paper's choice), or one head per participant (``predict`` and
        ``score`` then need ``participants``). Targets are standardised with the training rows
        of all participants either way. Ignored without ``participants``.
    participant_schedule : {"sequential", "averaged"}, default="sequential"
        With ``participants``: the backbone runs once per batch of stimulus windows in both.
        ``"sequential"`` (the paper's): each participant's loss on those windows is
        back-propagated in turn and the gradients add up before the optimiser step (computed
        as one backward pass of their sum, which gives the same gradient). ``"averaged"``: one
        loss, the mean of the participants' losses. With Adam the two differ only through the
        gradient's scale (number of participants in the batch), which Adam normalises away
        except for its ``eps`` and an L2 ``weight_decay``.
    optimizer : {"adam", "adamw"}, default="adam"
        Adam (``weight_decay`` is an L2 penalty in the gradient) or AdamW (decoupled weight
        decay); two parameter groups, backbone and head, either way.
    lr_backbone : float, default=5e-5
        Peak learning rate of the backbone's parameters (LoRA adapters with ``lora_rank``).
    lr_head : float, default=1e-4
        Peak learning rate of the head.
    warmup_fraction : float, default=0.1
        Fraction of all optimiser steps spent in linear warm-up; then linear decay to 0 at the
        last step (see :func:`sk_braintune.tuning._training.lr_factor` for the exact formula).
    weight_decay : float, default=0.0
        Weight decay of both groups (see ``optimizer``).
    batch_size : int, default=128
        Windows per optimiser step (also the inference batch).
    micro_batch_size : int or None, default=None
        Split each batch into chunks of this size and accumulate gradients, to bound memory
        (exact for "mse"; "correlation" is then computed per chunk). None: no split.
    max_epochs : int, default=30
    validation : float, CV splitter or None, default=0.1
        Held-out data for early stopping and best-epoch selection. A float: that fraction of the
        **stories** in ``groups`` (at least one, drawn with ``random_state``); without groups, the
        last fraction of the samples as one contiguous block. A splitter (e.g.
        ``GroupShuffleSplit``): its first split. None: no validation (the last epoch is kept).
    patience : int or None, default=5
        Stop after this many epochs without a lower validation loss; the best epoch's weights are
        restored at the end in any case. None: never stop early.
    standardize_targets : bool, default=True
        Train on targets z-scored with the training rows' mean and std (predictions are mapped
        back), so that the default learning rates suit targets of any scale.
    transform_layers : {"last", "all"}, default="last"
        What ``transform`` returns: the pooled last hidden state ``(n, D)``, or the pooled
        ``hidden_states`` of every layer, 0 (input embeddings) to N (last block), concatenated
        ``(n, (N + 1) * D)``.
    checkpoint_dir : str or None, default=None
        Directory of the per-epoch checkpoint (written atomically). A fit whose directory holds a
        checkpoint of the same configuration and data resumes from it; one of another
        configuration is refused. None: a temporary directory, deleted after a successful fit.
    lora_rank : int or None, default=None
        Train rank-``r`` LoRA adapters (peft) on the attention projections of the trainable
        blocks instead of their weights; they are merged into the weights after ``fit``.
    lora_alpha : float or None, default=None
        LoRA scaling numerator (``2 * lora_rank`` when None).
    lora_dropout : float, default=0.0
        Dropout on the LoRA adapters' input during training.
    device : str, default="auto"
        "auto" uses CUDA when present, else the CPU. The model is moved back to the CPU after
        ``fit``; ``predict``/``transform`` move it to ``device`` for the call.
        Under ``torchrun`` (see Notes), "auto" and "cuda" mean ``cuda:LOCAL_RANK``.
    precision : {"auto", "fp32", "bf16"}, default="auto"
        "auto": bf16 autocast and gradient checkpointing on CUDA, fp32 on the CPU. bf16 on the
        CPU is refused (emulated, very slow).
    random_state : int, RandomState instance or None, default=None
        Seeds the head's initialisation, LoRA initialisation, dropout, shuffling and the
        validation split. The caller's global NumPy and torch RNGs are left untouched (for
        ``None`` one seed is drawn from NumPy's global RNG, as scikit-learn does).
    callbacks : list of Callback or None, default=None
        User callbacks (:class:`~sk_braintune.tuning.Callback` subclasses), called after the
        built-in ones (early stopping, checkpoint, progress bar) at each hook.
    verbose : bool, default=False
        Progress bar per epoch and an epoch summary logged at INFO level
        (``sk_braintune.tuning.callbacks`` logger).

    Attributes
    ----------
    backbone_ : AudioBackbone
        The tuned backbone (on the CPU, eval mode).
    head_ : torch.nn.Linear or torch.nn.ModuleList
        Linear head from pooled features to standardised targets (on the CPU); with
        ``head="per_participant"`` one per participant, in the order of ``participants_``.
    participants_ : ndarray or None
        Sorted participant labels seen in ``fit`` (None without ``participants``).
    history_ : list of dict
        Per epoch: ``epoch``, ``train_loss``, ``valid_loss``, ``valid_r`` (mean Pearson r over
        targets on the validation stories; NaN without validation), ``lr_backbone`` and
        ``lr_head`` (at the epoch's last step), ``seconds``. With ``participants`` also
        ``valid_r_per_participant`` (participant -> mean r over targets on its validation
        rows); ``valid_r`` and ``valid_loss`` are then means over participants.
    best_epoch_ : int
        0-based epoch whose weights were kept.
    n_features_in_ : int
        Window length in samples.
    n_outputs_ : int
        Number of targets.
    target_mean_, target_scale_ : ndarray of shape (n_outputs,)
        Standardisation of the targets (0 and 1 when ``standardize_targets=False``).
    validation_groups_ : ndarray
        Stories held out for validation (empty without groups or validation).
    n_trainable_parameters_ : int
        Trainable backbone parameters (LoRA adapters with ``lora_rank``), head excluded.

    Notes
    -----
    Several participants (the multi-brain-tuning follow-up, Moussa et al., NeurIPS 2025): pass
    one row per (stimulus window, participant) pair with ``participants`` (e.g. from
    :func:`sk_braintune.datasets.participant_windows`); rows of one window share one forward
    pass, the validation split holds out whole stories for all participants. The paper's
    recipe is reachable with ``lora_rank=8, lora_alpha=32, lora_dropout=0.1,
    optimizer="adamw", lr_backbone=1e-4, lr_head=1e-4`` (LoRA on the attention q/k/v/out
    projections, CNN frozen, 10% warm-up then linear decay, batch 128, up to 30 epochs with
    early stopping are the defaults) and ``loss="mse"``, ``"spatial_correlation"`` or
    ``"cosine_mse"``; the defaults stay those of the single-participant paper.

    Layers follow the ``hidden_states`` convention: 0 = input embeddings, N = last block.
    Searches (``GridSearchCV``) on one GPU should use ``n_jobs=1``: every fit holds a model on it.

    Several GPUs: run the script with ``torchrun --nproc_per_node N script.py``. ``fit`` then
    initialises the process group from the environment (NCCL on CUDA, gloo on the CPU; or uses
    one already initialised), wraps the trainable backbone in ``DistributedDataParallel``, cuts
    each global batch of ``batch_size`` windows into one contiguous shard per process and gathers
    the pooled features (with autograd) so that the head and the loss see the whole batch, as in
    one process: any loss gives one process's weights for the same ``random_state`` (to float
    rounding; without dropout, whose masks each process draws itself). Validation runs on every
    process, rank 0's figures decide early stopping; only rank 0 writes checkpoints and shows
    progress; every process ends with rank 0's weights.
    Without ``groups`` (and without ``AudioWindows``, whose stories are used), samples are taken as
    one contiguous run.
    """

    # predict/score need participants only with one head per participant: not requested by
    # default, so a shared-head tuner in a search ignores routed participants
    # (set_score_request(participants=True) asks for them)
    __metadata_request__predict = {"participants": False}
    __metadata_request__score = {"participants": False}

    def __init__(self, model, *, pooling="mean", freeze_feature_encoder=True,
                 trainable_layers=None, cache_frozen_layers=True, frozen_layer_cache=None,
                 loss="mse", head="shared", participant_schedule="sequential", optimizer="adam",
                 lr_backbone=5e-5, lr_head=1e-4, warmup_fraction=0.1, weight_decay=0.0,
                 batch_size=128, micro_batch_size=None, max_epochs=30, validation=0.1,
                 patience=5, standardize_targets=True, transform_layers="last",
                 checkpoint_dir=None, lora_rank=None, lora_alpha=None, lora_dropout=0.0,
                 device="auto", precision="auto", random_state=None, callbacks=None,
                 verbose=False):
        self.model = model
        self.pooling = pooling
        self.freeze_feature_encoder = freeze_feature_encoder
        self.trainable_layers = trainable_layers
        self.cache_frozen_layers = cache_frozen_layers
        self.frozen_layer_cache = frozen_layer_cache
        self.loss = loss
        self.head = head
        self.participant_schedule = participant_schedule
        self.optimizer = optimizer
        self.lr_backbone = lr_backbone
        self.lr_head = lr_head
        self.warmup_fraction = warmup_fraction
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.micro_batch_size = micro_batch_size
        self.max_epochs = max_epochs
        self.validation = validation
        self.patience = patience
        self.standardize_targets = standardize_targets
        self.transform_layers = transform_layers
        self.checkpoint_dir = checkpoint_dir
        self.lora_rank = lora_rank
        self.lora_alpha = lora_alpha
        self.lora_dropout = lora_dropout
        self.device = device
        self.precision = precision
        self.random_state = random_state
        self.callbacks = callbacks
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        # a speech model on a few random "samples" of audio cannot reach R^2 > 0.5
        tags.regressor_tags.poor_score = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

    # -- validation ------------------------------------------------------------------------------
    def _check_params(self, n_layers=None):
        if not isinstance(self.model, (str, Path)):
            raise TypeError(
                "model must be a Hugging Face model name or a local directory (str), not "
                f"{type(self.model).__name__}; pass the path you would give from_pretrained."
            )
        if self.pooling not in _training.POOLINGS:
            raise ValueError(f"pooling must be one of {_training.POOLINGS}, got {self.pooling!r}")
        if self.loss not in _training.LOSSES:
            raise ValueError(f"loss must be one of {_training.LOSSES}, got {self.loss!r}")
        if self.head not in _loop.HEADS:
            raise ValueError(f"head must be one of {_loop.HEADS}, got {self.head!r}")
        if self.participant_schedule not in _loop.PARTICIPANT_SCHEDULES:
            raise ValueError(f"participant_schedule must be one of "
                             f"{_loop.PARTICIPANT_SCHEDULES}, got {self.participant_schedule!r}")
        if self.optimizer not in _training.OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {_training.OPTIMIZERS}, got "
                             f"{self.optimizer!r}")
        if not (isinstance(self.lora_dropout, numbers.Real) and 0 <= self.lora_dropout < 1):
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        cache = self.frozen_layer_cache
        if cache is not None and not isinstance(cache, FrozenLayerCache):
            raise TypeError("frozen_layer_cache must be None or a "
                            f"sk_braintune.tuning.FrozenLayerCache, got {type(cache).__name__}")
        check_callbacks(self.callbacks)
        if self.transform_layers not in ("last", "all"):
            raise ValueError(f"transform_layers must be 'last' or 'all', got "
                             f"{self.transform_layers!r}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {self.precision!r}")
        for name in ("batch_size", "max_epochs"):
            value = getattr(self, name)
            if not (isinstance(value, numbers.Integral) and value >= 1):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.micro_batch_size is not None and not (
                isinstance(self.micro_batch_size, numbers.Integral) and self.micro_batch_size >= 1):
            raise ValueError(f"micro_batch_size must be None or a positive int, got "
                             f"{self.micro_batch_size!r}")
        for name in ("lr_backbone", "lr_head", "weight_decay"):
            value = getattr(self, name)
            if not (isinstance(value, numbers.Real) and value >= 0):
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        if not (isinstance(self.warmup_fraction, numbers.Real) and 0 <= self.warmup_fraction < 1):
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction!r}")
        if self.patience is not None and not (
                isinstance(self.patience, numbers.Integral) and self.patience >= 1):
            raise ValueError(f"patience must be None or a positive int, got {self.patience!r}")
        if self.lora_rank is not None and not (
                isinstance(self.lora_rank, numbers.Integral) and self.lora_rank >= 1):
            raise ValueError(f"lora_rank must be None or a positive int, got {self.lora_rank!r}")
        k = self.trainable_layers
        if k is not None:
            if not (isinstance(k, numbers.Integral) and k >= 0):
                raise ValueError(f"trainable_layers must be None or an int >= 0, got {k!r}")
            if n_layers is not None and k > n_layers:
                raise ValueError(f"trainable_layers={k} but the model has only {n_layers} "
                                 "transformer layers.")

    def _resolve_precision(self, device):
        if self.precision == "bf16" and device.type != "cuda":
            raise ValueError("precision='bf16' needs a CUDA device; bf16 on the CPU is emulated "
                             "and very slow. Use precision='fp32' (or 'auto').")
        if self.precision == "auto":
            return "bf16" if device.type == "cuda" else "fp32"
        return self.precision

    def _check_X(self, X, *, reset, y=None):
        """Validate windows: AudioWindows stay lazy, arrays/lists become float32 2-D arrays."""
        if is_audio_windows(X):
            if y is not None:
                y = check_array(y, ensure_2d=False, dtype=None, input_name="y")
                check_consistent_length(X, y)
            if reset:
                self.n_features_in_ = X.shape[1]
            elif X.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"X has {X.shape[1]} features (samples per window), but BrainTuner is "
                    f"expecting {self.n_features_in_} features as input.")
            return X, y
        if isinstance(X, np.ndarray) or (isinstance(X, (list, tuple)) and X
                                         and all(np.ndim(x) == 1 for x in X)):
            check_clips(X if isinstance(X, np.ndarray) else [np.asarray(x) for x in X],
                        "window")
        if y is not None:
            return validate_data(self, X, y, reset=reset, dtype=[np.float32, np.float64],
                                 multi_output=True, y_numeric=True)
        return validate_data(self, X, reset=reset, dtype=[np.float32, np.float64]), None

    # -- helpers -----------------------------------------------------------------------------
    def _window_batch(self, X, index, n_input_samples):
        """float32 array (len(index), n_input_samples): windows, left-padded with silence."""
        batch = (X[index].to_array() if is_audio_windows(X)
                 else np.asarray(X[index], dtype=np.float32))
        if batch.shape[1] < n_input_samples:
            pad = np.zeros((batch.shape[0], n_input_samples - batch.shape[1]), dtype=np.float32)
            batch = np.concatenate([pad, batch], axis=1)
        return np.ascontiguousarray(batch, dtype=np.float32)

    @staticmethod
    def _min_input_samples(backbone, n_samples):
        """Window length fed to the model: ``n_samples``, or more when that gives no frame."""
        n = int(n_samples)
        try:
            if backbone.frame_count(n) >= 1:
                return n
        except Exception:  # noqa: BLE001 - a backbone may refuse absurdly short inputs
            pass
        n = max(n, 1)
        while n < 2 ** 24:
            try:
                if backbone.frame_count(n) >= 1:
                    return n
            except Exception:  # noqa: BLE001
                pass
            n *= 2
        raise ValueError(f"windows of {n_samples} samples give no frames for this model")

    def _progress(self, iterable, desc, total):
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, total=total, disable=not self.verbose, leave=False)

    @staticmethod
    def _autocast_factory(device, precision):
        import torch

        if precision == "bf16":
            return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext

    def _result_params(self):
        params = self.get_params(deep=False)
        for name in _NON_RESULT_PARAMS:
            params.pop(name, None)
        return params

    # -- fit ---------------------------------------------------------------------------------
    def fit(self, X, y, groups=None, participants=None):
        """Fine-tune the backbone and head on ``(X, y)``.

        Parameters
        ----------
        X : AudioWindows, ndarray of shape (n_rows, n_samples) or list of 1-D arrays
            16 kHz causal audio windows, one per TR (per TR and participant with
            ``participants``: a window then appears once per participant who heard it). Windows
            too short to give one frame are left-padded with silence.
        y : ndarray of shape (n_rows, n_targets) or (n_rows,)
            Targets per row: voxel responses (of the row's participant, in the voxel space
            common to all participants), a control (see :mod:`sk_braintune.tuning.controls`)
            or another model's representations.
        groups : array-like of shape (n_rows,), optional
            Story of each row (routed with ``set_fit_request(groups=True)``); the validation
            split holds out whole stories. Defaults to ``X.groups`` for ``AudioWindows``.
        participants : array-like of shape (n_rows,), optional
            Participant of each row (routed with ``set_fit_request(participants=True)``). The
            rows of one window (same story and end for ``AudioWindows``, same samples for
            arrays) are forwarded once per batch for all their participants. None: one
            participant, every row its own window.

        Returns
        -------
        self : BrainTuner
        """
        import torch

        from .._utils import resolve_device

        self._check_params()
        if y is None:
            raise ValueError("BrainTuner requires y to be passed, but the target y is None; "
                             "pass the (n_trs, n_targets) responses.")
        X, y = self._check_X(X, reset=True, y=y)
        y = np.asarray(y)
        if y.dtype not in (np.float32, np.float64):
            y = y.astype(np.float64)
        self._y_dtype_ = y.dtype
        self._y_1d_ = y.ndim == 1
        y2 = y.reshape(len(y), -1)
        if not np.all(np.isfinite(y2)):
            raise ValueError("y contains NaN or inf; drop or impute those voxels/TRs first.")
        if groups is None and is_audio_windows(X):
            groups = np.asarray(X.groups)
        if groups is not None:
            groups = np.asarray(groups)
            check_consistent_length(X, groups)
        codes = None
        self.participants_ = None
        if participants is not None:
            participants = np.asarray(participants)
            if participants.ndim != 1:
                raise ValueError(f"participants must be 1-D (one label per row), got shape "
                                 f"{participants.shape}")
            check_consistent_length(X, participants)
            self._check_search_routing()
            self.participants_, codes = np.unique(participants, return_inverse=True)
        self.n_outputs_ = y2.shape[1]
        callbacks = check_callbacks(self.callbacks)
        data = _loop.TrainingData(X, y2.astype(np.float32, copy=False), groups, codes,
                                  None if codes is None else len(self.participants_))

        distributed = _distributed.distributed_context()
        device = (resolve_device(self.device) if distributed is None
                  else _distributed.resolve_distributed_device(self.device, distributed))
        precision = self._resolve_precision(device)
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        if distributed is not None:  # random_state=None draws differ between ranks
            seed = distributed.broadcast(seed)
        fork_devices = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else []
        # without a user directory nothing can resume, so the temporary one goes in any case
        owns_dir = self.checkpoint_dir is None
        ckpt_dir = Path(tempfile.mkdtemp(prefix="braintuner-") if owns_dir else self.checkpoint_dir)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        try:
            with torch.random.fork_rng(devices=fork_devices):
                torch.manual_seed(seed)
                _loop.TrainingRun(self, data, seed, device, precision, callbacks,
                                  ckpt_dir, distributed).fit()
        finally:
            if owns_dir:
                shutil.rmtree(ckpt_dir, ignore_errors=True)
        return self

    # -- inference ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _on_device(self):
        """Move backbone and head to ``device`` for the call and back to the CPU afterwards."""
        from .._utils import resolve_device

        device = resolve_device(self.device)
        precision = "fp32" if self.precision == "fp32" or device.type != "cuda" else "bf16"
        try:
            self.backbone_.to(device)
            self.head_.to(device)
            yield device, self._autocast_factory(device, precision)
        finally:
            self.backbone_.to("cpu")
            self.head_.to("cpu")

    def _pooled(self, X, layers, participant_codes=None):
        """Pooled features (and head predictions) for every window, in batches.

        ``participant_codes`` (one per window) picks each window's head when there is one head
        per participant.
        """
        import torch

        from ..features import forward_batches, pooled_features

        n_input = getattr(self, "_n_input_samples_", X.shape[1])
        per_participant = layers == "predict" and participant_codes is not None
        options = dict(batch_size=self.batch_size,
                       load_batch=lambda index: self._window_batch(X, index, n_input))
        with self._on_device() as (device, autocast):
            if layers == "predict" and not per_participant:
                predictions = HeadOutputs(self.head_, len(X), self.pooling)
                forward_batches(self.backbone_, X, "last_hidden_state", predictions,
                                autocast=autocast, **options)
                return predictions.outputs
            out = pooled_features(
                self.backbone_, X,
                range(self.backbone_.num_hidden_layers + 1) if layers == "all"
                else "last_hidden_state", self.pooling, autocast=autocast, **options)
        if per_participant:  # each window through its participant's head (on the CPU)
            with torch.inference_mode():
                out = self._head_predict(torch.from_numpy(out), participant_codes)
        return out

    def _head_predict(self, pooled, codes):
        """Head output for a batch of pooled features, as a float32 NumPy array."""
        import torch

        if codes is None:
            return self.head_(pooled).float().cpu().numpy()
        out = torch.empty((pooled.shape[0], self.n_outputs_), dtype=torch.float32)
        for code in np.unique(codes):
            rows = np.flatnonzero(codes == code)
            index = torch.as_tensor(rows, device=pooled.device)
            out[rows] = self.head_[int(code)](pooled[index]).float().cpu()
        return out.numpy()

    def _check_search_routing(self):
        """Refuse a per-participant-head fit inside a search whose scores would all be NaN.

        Without metadata routing (or without ``set_score_request(participants=True)``)
        ``GridSearchCV`` and ``cross_validate`` still pass ``participants`` to ``fit`` but not to
        ``score``, which then cannot pick the heads: scikit-learn turns that error into NaN
        scores and the search "succeeds" with ``best_score_ = nan``. A failed fit, unlike a
        failed score, is reported (every fit failing raises), so the check is made here.
        """
        if self.head != "per_participant" or not _called_by_sklearn_validation():
            return
        import sklearn

        routed = (sklearn.get_config()["enable_metadata_routing"]
                  and self.get_metadata_routing().score.requests.get("participants") is True)
        if not routed:
            raise ValueError(
                "BrainTuner(head='per_participant') is fitted inside a scikit-learn search or "
                "cross-validation that will not pass participants to score, so every score "
                "would be NaN. Enable metadata routing: sklearn.set_config("
                "enable_metadata_routing=True) (or a config_context) and "
                "tuner.set_fit_request(groups=True, participants=True)"
                ".set_score_request(participants=True); or use head='shared'.")

    @property
    def _per_participant_heads(self):
        return getattr(self, "participants_", None) is not None and self.head == "per_participant"

    def _participant_codes(self, X, participants):
        """Head index of each row (per-participant heads), or None (one shared head)."""
        if not self._per_participant_heads:
            return None
        if participants is None:
            raise ValueError(
                "this BrainTuner has one head per participant (head='per_participant'): pass "
                "participants= (one label per row) to predict/score, routed with "
                "set_predict_request(participants=True) / set_score_request(participants=True) "
                "in a Pipeline or search.")
        participants = np.asarray(participants)
        check_consistent_length(X, participants)
        codes = np.searchsorted(self.participants_, participants)
        codes = np.clip(codes, 0, len(self.participants_) - 1)
        unknown = self.participants_[codes] != participants
        if np.any(unknown):
            raise ValueError(f"participants {sorted(set(participants[unknown].tolist()))} have no "
                             f"head; this model was fitted on {list(self.participants_)}. Use "
                             "head='shared' to predict for new participants.")
        return codes

    def predict(self, X, participants=None):
        """Predict the targets of each window.

        Parameters
        ----------
        X : AudioWindows, ndarray of shape (n_trs, n_samples) or list of 1-D arrays
        participants : array-like of shape (n_trs,), optional
            Participant of each row: needed (and only used) with ``head="per_participant"``.

        Returns
        -------
        y_pred : ndarray of shape (n_trs, n_targets), or (n_trs,) when fitted on 1-D ``y``
            In the units of ``y`` and its dtype (float32 or float64).
        """
        check_is_fitted(self)
        X, _ = self._check_X(X, reset=False)
        codes = self._participant_codes(X, participants)
        pred = self._pooled(X, "predict", codes).astype(np.float64)
        pred = (pred * self.target_scale_ + self.target_mean_).astype(self._y_dtype_)
        return pred.ravel() if self._y_1d_ else pred

    def transform(self, X):
        """Features of the tuned backbone, pooled like in training.

        Parameters
        ----------
        X : AudioWindows, ndarray of shape (n_trs, n_samples) or list of 1-D arrays

        Returns
        -------
        features : ndarray of shape (n_trs, D) or (n_trs, (N + 1) * D), float32
            ``transform_layers="last"``: the pooled last hidden state; ``"all"``: the pooled
            hidden states of layers 0..N concatenated (layer-major).
        """
        check_is_fitted(self)
        X, _ = self._check_X(X, reset=False)
        return self._pooled(X, self.transform_layers)

    @fill_doc
    def get_feature_names_out(self, input_features=None):
        """Names of the ``transform`` columns: ``last_0042`` or ``layer07_0042``.

        Parameters
        ----------
        %(input_features)s

        Returns
        -------
        names : ndarray of str
        """
        check_is_fitted(self)
        dim = self.backbone_.hidden_size
        if self.transform_layers == "last":
            return np.array([f"last_{j:04d}" for j in range(dim)], dtype=object)
        return np.array([f"layer{layer:02d}_{j:04d}"
                         for layer in range(self.backbone_.num_hidden_layers + 1)
                         for j in range(dim)], dtype=object)

    def score(self, X, y, sample_weight=None, participants=None):
        """Mean Pearson correlation over targets between predictions and ``y``.

        Parameters
        ----------
        X : AudioWindows, ndarray of shape (n_trs, n_samples) or list of 1-D arrays
        y : ndarray of shape (n_trs, n_targets) or (n_trs,)
        sample_weight : None
            Not supported (present for scikit-learn's scorer signature).
        participants : array-like of shape (n_trs,), optional
            Participant of each row. When given, the score is the mean over participants of
            each participant's mean r over targets (and it picks the head with
            ``head="per_participant"``, where it is required); otherwise all rows are pooled.

        Returns
        -------
        r : float
            Constant targets or predictions count as r = 0.
        """
        if sample_weight is not None:
            raise ValueError("BrainTuner.score does not support sample_weight")
        pred = self.predict(X, participants=participants)
        y = np.asarray(y, dtype=np.float64)
        if participants is None:
            return float(np.mean(_training.pearson_per_target(y, pred)))
        participants = np.asarray(participants)
        check_consistent_length(y, participants)
        return float(np.mean([np.mean(_training.pearson_per_target(y[participants == p],
                                                                   pred[participants == p]))
                              for p in np.unique(participants)]))

    def save_pretrained(self, directory):
        """Export the tuned backbone so that Hugging Face tools load it.

        Writes the model (``transformers.AutoModel.from_pretrained(directory)`` loads it; for
        Whisper the full ``WhisperModel``) and ``preprocessor_config.json``, plus the head and
        target standardisation in ``braintuner_head.pt`` (ignored by Hugging Face).

        Parameters
        ----------
        directory : str or path-like

        Returns
        -------
        directory : pathlib.Path
        """
        import io

        import torch

        from .._utils import atomic_write_bytes

        check_is_fitted(self)
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.backbone_.save_pretrained(directory)
        buffer = io.BytesIO()
        torch.save({"head": self.head_.state_dict(), "target_mean": self.target_mean_,
                    "target_scale": self.target_scale_, "pooling": self.pooling,
                    "participants": (None if getattr(self, "participants_", None) is None
                                     else list(self.participants_.tolist())),
                    "per_participant_heads": self._per_participant_heads}, buffer)
        atomic_write_bytes(directory / "braintuner_head.pt", buffer.getvalue())
        return directory


def _called_by_sklearn_validation():
    """Whether scikit-learn's ``_fit_and_score`` (searches, ``cross_validate``) is on the stack."""
    frame = sys._getframe(1)
    while frame is not None:
        if (frame.f_code.co_name == "_fit_and_score"
                and frame.f_globals.get("__name__", "").startswith("sklearn.model_selection")):
            return True
        frame = frame.f_back
    return False
