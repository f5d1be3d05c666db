"""BrainTuner: fine-tune a speech model to predict fMRI responses (brain-tuning).

The paper's method (Moussa et al.): a pretrained speech encoder, its last hidden state pooled over
each TR's causal audio window, a linear head to the voxels, all trained with Adam on the fMRI
responses. The tuned backbone then replaces the pretrained one in the encoding pipeline.
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import (check_array, check_consistent_length, check_is_fitted,
                                      validate_data)

from .._docs import fill_doc
from ..windows import is_audio_windows
from . import _checkpoint, _network, _training

__all__ = ["BrainTuner"]

logger = logging.getLogger(__name__)

# Test hook: called as ``_epoch_end_hook(tuner, epoch, history)`` after each epoch's checkpoint
# is written (tests raise from it to simulate an interrupted fit).
_epoch_end_hook = None

# parameters that do not change the result of a fit (ignored when matching a checkpoint)
_NON_RESULT_PARAMS = ("verbose", "checkpoint_dir", "device")


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
    cache_frozen : bool, default=True
        With ``trainable_layers`` set, compute the frozen part once for all windows
        (``hidden_at(x, N - k)`` under ``torch.inference_mode``, kept on the CPU as float32, or
        float16 beyond 4 GiB) and train the top blocks on the cached hidden states each epoch.
        Much faster; the frozen layers run without dropout (eval mode), as they would in any
        frozen feature extractor. The latest cache (up to 2 GiB) is kept in memory so that the
        next fit with the same model, windows and ``trainable_layers`` (e.g. a control run)
        skips this step; ``sk_braintune.tuning._network.clear_frozen_cache()`` frees it.
    loss : {"mse", "correlation", "cosine_mse"}, default="mse"
        ``"mse"``: mean squared error. ``"correlation"``: 1 - mean Pearson r over targets, across
        the samples of each (micro-)batch. ``"cosine_mse"``: MSE + mean(1 - cosine similarity)
        between predicted and true target vectors of each sample.
    lr_backbone : float, default=5e-5
        Peak learning rate of the backbone's parameters (LoRA adapters with ``lora_rank``).
    lr_head : float, default=1e-4
        Peak learning rate of the head.
    warmup_fraction : float, default=0.1
        Fraction of all optimiser steps spent in linear warm-up; then linear decay to 0 at the
        last step (see :func:`sk_braintune.tuning._training.lr_factor` for the exact formula).
    weight_decay : float, default=0.0
        Adam's L2 penalty (both groups).
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
    device : str, default="auto"
        "auto" uses CUDA when present, else the CPU. The model is moved back to the CPU after
        ``fit``; ``predict``/``transform`` move it to ``device`` for the call.
    precision : {"auto", "fp32", "bf16"}, default="auto"
        "auto": bf16 autocast and gradient checkpointing on CUDA, fp32 on the CPU. bf16 on the
        CPU is refused (emulated, very slow).
    random_state : int, RandomState instance or None, default=None
        Seeds the head's initialisation, LoRA initialisation, dropout, shuffling and the
        validation split. The caller's global NumPy and torch RNGs are left untouched (for
        ``None`` one seed is drawn from NumPy's global RNG, as scikit-learn does).
    verbose : bool, default=False
        Progress bar per epoch.

    Attributes
    ----------
    backbone_ : AudioBackbone
        The tuned backbone (on the CPU, eval mode).
    head_ : torch.nn.Linear
        Linear head from pooled features to standardised targets (on the CPU).
    history_ : list of dict
        Per epoch: ``epoch``, ``train_loss``, ``valid_loss``, ``valid_r`` (mean Pearson r over
        targets on the validation stories; NaN without validation), ``lr_backbone`` and
        ``lr_head`` (at the epoch's last step), ``seconds``.
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
    Layers follow the ``hidden_states`` convention: 0 = input embeddings, N = last block.
    Searches (``GridSearchCV``) on one GPU should use ``n_jobs=1``: every fit holds a model on it.
    Without ``groups`` (and without ``AudioWindows``, whose stories are used), samples are taken as
    one contiguous run.
    """

    def __init__(self, model, *, pooling="mean", freeze_feature_encoder=True,
                 trainable_layers=None, cache_frozen=True, loss="mse", lr_backbone=5e-5,
                 lr_head=1e-4, warmup_fraction=0.1, weight_decay=0.0, batch_size=128,
                 micro_batch_size=None, max_epochs=30, validation=0.1, patience=5,
                 standardize_targets=True, transform_layers="last", checkpoint_dir=None,
                 lora_rank=None, lora_alpha=None, device="auto", precision="auto",
                 random_state=None, verbose=False):
        self.model = model
        self.pooling = pooling
        self.freeze_feature_encoder = freeze_feature_encoder
        self.trainable_layers = trainable_layers
        self.cache_frozen = cache_frozen
        self.loss = loss
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
        self.device = device
        self.precision = precision
        self.random_state = random_state
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
    def fit(self, X, y, groups=None):
        """Fine-tune the backbone and head on ``(X, y)``.

        Parameters
        ----------
        X : AudioWindows, ndarray of shape (n_trs, n_samples) or list of 1-D arrays
            16 kHz causal audio windows, one per TR. Windows too short to give one frame are
            left-padded with silence.
        y : ndarray of shape (n_trs, n_targets) or (n_trs,)
            Targets per TR: voxel responses, a control (see :mod:`sk_braintune.tuning.controls`)
            or another model's representations.
        groups : array-like of shape (n_trs,), optional
            Story of each TR (routed with ``set_fit_request(groups=True)``); the validation split
            holds out whole stories. Defaults to ``X.groups`` for ``AudioWindows``.

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
        self.n_outputs_ = y2.shape[1]

        device = resolve_device(self.device)
        precision = self._resolve_precision(device)
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        fork_devices = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else []
        # without a user directory nothing can resume, so the temporary one goes in any case
        owns_dir = self.checkpoint_dir is None
        ckpt_dir = Path(tempfile.mkdtemp(prefix="braintuner-") if owns_dir else self.checkpoint_dir)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        try:
            with torch.random.fork_rng(devices=fork_devices):
                torch.manual_seed(seed)
                self._fit(X, y2.astype(np.float32), groups, seed, device, precision, ckpt_dir)
        finally:
            if owns_dir:
                shutil.rmtree(ckpt_dir, ignore_errors=True)
        return self

    def _fit(self, X, y, groups, seed, device, precision, ckpt_dir):
        import torch

        from ..models.backbone import load_backbone

        backbone = load_backbone(str(self.model), device="cpu")
        self._check_params(backbone.num_hidden_layers)
        n_layers = backbone.num_hidden_layers
        backbone_fingerprint = backbone.fingerprint()
        fingerprint = _checkpoint.config_fingerprint(self._result_params(), backbone_fingerprint)
        data_fingerprint = _checkpoint.data_fingerprint(X, y, groups)
        backbone.to(device)
        n_input = self._min_input_samples(backbone, X.shape[1])
        autocast = self._autocast_factory(device, precision)

        checkpoint = _checkpoint.load_checkpoint(ckpt_dir)
        if checkpoint is not None:
            if checkpoint["config"] != fingerprint or checkpoint["data"] != data_fingerprint:
                what = "configuration" if checkpoint["config"] != fingerprint else "data"
                raise ValueError(
                    f"checkpoint_dir={str(ckpt_dir)!r} holds a checkpoint of another {what} "
                    "(parameters, model weights or training data differ), so it cannot be resumed. "
                    "Use another checkpoint_dir, or delete that checkpoint to start afresh."
                )
            # the interrupted run's seed: same validation split even with random_state=None
            seed = checkpoint["seed"]

        # -- what trains ------------------------------------------------------------------------
        k = self.trainable_layers
        start_layer = None if k is None else n_layers - k
        if start_layer is None:
            if self.freeze_feature_encoder:
                backbone.freeze_feature_encoder()
            trainable = {n for n, p in backbone.named_parameters() if p.requires_grad}
        else:
            trainable = _network.parameters_after(backbone, start_layer, n_input)
            for name, p in backbone.named_parameters():
                p.requires_grad_(name in trainable)
        if self.lora_rank is not None:
            _network.apply_lora(backbone, self.lora_rank, self.lora_alpha, trainable)
        backbone_params = [p for p in backbone.parameters() if p.requires_grad]
        self.n_trainable_parameters_ = int(sum(p.numel() for p in backbone_params))
        use_cache = start_layer is not None and self.cache_frozen
        if device.type == "cuda" and hasattr(backbone.encoder, "gradient_checkpointing_enable"):
            backbone.encoder.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False})

        head = _network.make_head(backbone.hidden_size, y.shape[1], seed).to(device)
        optimizer, base_lrs = _training.make_optimizer(
            backbone_params, list(head.parameters()), self.lr_backbone, self.lr_head,
            self.weight_decay)

        # -- data -------------------------------------------------------------------------------
        split_rng = np.random.RandomState(seed)
        train_index, valid_index = _training.validation_split(
            len(y), groups, self.validation, split_rng, X=np.zeros((len(y), 1)), y=y)
        if len(train_index) == 0:
            raise ValueError("the validation split left no training samples")
        if self.standardize_targets:
            mean = y[train_index].mean(0)
            scale = y[train_index].std(0)
            scale = np.where(scale > 0, scale, 1.0)
        else:
            mean, scale = np.zeros(y.shape[1]), np.ones(y.shape[1])
        targets = torch.from_numpy(((y - mean) / scale).astype(np.float32))
        self.target_mean_ = mean.astype(np.float64)
        self.target_scale_ = scale.astype(np.float64)
        self.validation_groups_ = (np.unique(groups[valid_index]) if groups is not None
                                   else np.array([], dtype=object))

        def windows_fn(index):
            return self._window_batch(X, index, n_input)

        cached_hidden = cached_mask = None
        if use_cache:
            # a control tuned next on the same windows reuses the frozen layers' outputs
            cache_key = (backbone_fingerprint, _checkpoint.windows_fingerprint(X), start_layer,
                         n_input, precision)
            remembered = _network.remembered_cache(cache_key)
            if remembered is None:
                cached_hidden, cached_mask = _network.cache_hidden(
                    backbone, windows_fn, len(y), start_layer, self.batch_size, device,
                    autocast, self._progress)
                _network.remember_cache(cache_key, cached_hidden, cached_mask)
            else:
                cached_hidden, cached_mask = remembered

        def predict_batch(index):
            if use_cache:
                hidden = cached_hidden[index].to(device, torch.float32, non_blocking=True)
                mask = cached_mask[index].to(device)
                return _network.forward_cached(backbone, head, hidden, mask, start_layer,
                                               self.pooling)[0]
            waves = torch.from_numpy(windows_fn(index)).to(device)
            return _network.forward_full(backbone, head, waves, self.pooling)[0]

        # -- resume state -----------------------------------------------------------------------
        shuffle_rng = np.random.RandomState((seed + 1) % (2 ** 31))
        stopper = _training.EarlyStopping(self.patience)
        history, first_epoch, step, finished = [], 0, 0, False
        named_trainable = [(n, p) for n, p in backbone.named_parameters() if p.requires_grad]

        def trainable_state():
            return {"backbone": {n: p.detach().to("cpu", copy=True) for n, p in named_trainable},
                    "head": {n: t.detach().to("cpu", copy=True)
                             for n, t in head.state_dict().items()}}

        def load_trainable_state(state):
            with torch.no_grad():
                params = dict(named_trainable)
                for name, value in state["backbone"].items():
                    params[name].copy_(value)
            head.load_state_dict(state["head"])

        if checkpoint is not None:
            load_trainable_state(checkpoint["trainable"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            shuffle_rng.set_state(checkpoint["shuffle_rng"])
            torch.set_rng_state(checkpoint["torch_rng"])
            if device.type == "cuda" and checkpoint.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(checkpoint["cuda_rng"], device)
            stopper.load_state_dict(checkpoint["stopper"])
            history = list(checkpoint["history"])
            first_epoch, step, finished = checkpoint["epoch"] + 1, checkpoint["step"], \
                checkpoint["finished"]

        # -- training loop ----------------------------------------------------------------------
        batch_size = min(self.batch_size, len(train_index))
        micro = self.micro_batch_size or batch_size
        steps_per_epoch = math.ceil(len(train_index) / batch_size)
        total_steps = self.max_epochs * steps_per_epoch
        warmup_steps = _training.n_warmup_steps(total_steps, self.warmup_fraction)

        epoch = first_epoch
        while not finished and epoch < self.max_epochs:
            started = time.perf_counter()
            backbone.train()
            head.train()
            order = train_index[shuffle_rng.permutation(len(train_index))]
            loss_sum, n_seen = 0.0, 0
            bar = self._progress(range(steps_per_epoch), f"epoch {epoch + 1}/{self.max_epochs}",
                                 steps_per_epoch)
            for b in bar:
                index = order[b * batch_size:(b + 1) * batch_size]
                _training.set_learning_rates(
                    optimizer, base_lrs, _training.lr_factor(step, total_steps, warmup_steps))
                optimizer.zero_grad(set_to_none=True)
                for c in range(0, len(index), micro):
                    chunk = index[c:c + micro]
                    with autocast():
                        pred = predict_batch(chunk)
                    loss = _training.compute_loss(pred, targets[chunk].to(device), self.loss)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(
                            f"training loss became {loss.item()} at epoch {epoch}; lower "
                            "lr_backbone/lr_head, or use precision='fp32'.")
                    (loss * (len(chunk) / len(index))).backward()
                    loss_sum += loss.item() * len(chunk)
                    n_seen += len(chunk)
                optimizer.step()
                step += 1
                if self.verbose:
                    bar.set_postfix(loss=f"{loss_sum / n_seen:.4f}")
            record = {"epoch": epoch, "train_loss": loss_sum / max(n_seen, 1),
                      "lr_backbone": optimizer.param_groups[0]["lr"],
                      "lr_head": optimizer.param_groups[1]["lr"]}
            backbone.eval()
            head.eval()
            valid_loss, valid_r = self._validate(predict_batch, targets, valid_index, device,
                                                 autocast)
            record.update(valid_loss=valid_loss, valid_r=valid_r,
                          seconds=time.perf_counter() - started)
            history.append(record)
            if self.verbose:
                logger.info(f"epoch {epoch + 1}/{self.max_epochs}: train loss "
                            f"{record['train_loss']:.4f}, valid loss {valid_loss:.4f}, "
                            f"valid r {valid_r:.4f}")
            monitored = valid_loss if len(valid_index) else record["train_loss"]
            stop = stopper.step(epoch, monitored, trainable_state) if len(valid_index) else False
            if not len(valid_index):
                stopper.best_epoch, stopper.best_state = epoch, None
            finished = stop or epoch + 1 >= self.max_epochs
            _checkpoint.save_checkpoint(ckpt_dir, {
                "config": fingerprint, "data": data_fingerprint, "seed": seed, "epoch": epoch,
                "step": step,
                "finished": finished, "trainable": trainable_state(),
                "optimizer": optimizer.state_dict(), "shuffle_rng": shuffle_rng.get_state(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "stopper": stopper.state_dict(), "history": history,
            })
            if _epoch_end_hook is not None:
                _epoch_end_hook(self, epoch, history)
            epoch += 1

        # -- finish: best weights, merge adapters, back to the CPU ------------------------------
        if stopper.best_state is not None:
            load_trainable_state(stopper.best_state)
        self.best_epoch_ = int(stopper.best_epoch if stopper.best_epoch >= 0 else len(history) - 1)
        self.history_ = history
        if self.lora_rank is not None:
            _network.merge_lora(backbone)
        if hasattr(backbone.encoder, "gradient_checkpointing_disable") and device.type == "cuda":
            backbone.encoder.gradient_checkpointing_disable()
        for p in backbone.parameters():
            p.requires_grad_(False)
        del cached_hidden, cached_mask, optimizer
        self.backbone_ = backbone.to("cpu").eval()
        self.head_ = head.to("cpu").eval().requires_grad_(False)
        self._n_input_samples_ = n_input
        if device.type == "cuda":
            torch.cuda.empty_cache()

    def _validate(self, predict_batch, targets, valid_index, device, autocast):
        """Validation loss and mean r (modules in eval mode), streamed to CPU correlation sums."""
        import torch

        if len(valid_index) == 0:
            return float("nan"), float("nan")
        sums = _training.CorrelationSums(targets.shape[1])
        loss_sum = 0.0
        with torch.inference_mode():
            for start in range(0, len(valid_index), self.batch_size):
                index = valid_index[start:start + self.batch_size]
                with autocast():
                    pred = predict_batch(index)
                target = targets[index].to(device)
                if self.loss != "correlation":
                    loss_sum += _training.compute_loss(pred, target, self.loss).item() * len(index)
                sums.update(pred, target)
        r = float(np.mean(sums.correlations()))
        valid_loss = 1.0 - r if self.loss == "correlation" else loss_sum / len(valid_index)
        return valid_loss, r

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

    def _pooled(self, X, layers):
        """Pooled features (and head predictions) for every window, in batches."""
        from ..features import pooled_features

        n_input = getattr(self, "_n_input_samples_", X.shape[1])
        with self._on_device() as (device, autocast):
            return pooled_features(
                self.backbone_, X,
                range(self.backbone_.num_hidden_layers + 1) if layers == "all"
                else "last_hidden_state", self.pooling, batch_size=self.batch_size,
                load_batch=lambda index: self._window_batch(X, index, n_input),
                autocast=autocast, head=self.head_ if layers == "predict" else None)

    def predict(self, X):
        """Predict the targets of each window.

        Parameters
        ----------
        X : AudioWindows, ndarray of shape (n_trs, n_samples) or list of 1-D arrays

        Returns
        -------
        y_pred : ndarray of shape (n_trs, n_targets), or (n_trs,) when fitted on 1-D ``y``
            In the units of ``y`` and its dtype (float32 or float64).
        """
        check_is_fitted(self)
        X, _ = self._check_X(X, reset=False)
        pred = self._pooled(X, "predict").astype(np.float64)
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

    def score(self, X, y, sample_weight=None):
        """Mean Pearson correlation over targets between predictions and ``y``.

        Parameters
        ----------
        X : AudioWindows, ndarray of shape (n_trs, n_samples) or list of 1-D arrays
        y : ndarray of shape (n_trs, n_targets) or (n_trs,)
        sample_weight : None
            Not supported (present for scikit-learn's scorer signature).

        Returns
        -------
        r : float
            Constant targets or predictions count as r = 0.
        """
        if sample_weight is not None:
            raise ValueError("BrainTuner.score does not support sample_weight")
        pred = self.predict(X)
        y = np.asarray(y, dtype=np.float64)
        return float(np.mean(_training.pearson_per_target(y, pred)))

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
                    "target_scale": self.target_scale_, "pooling": self.pooling}, buffer)
        atomic_write_bytes(directory / "braintuner_head.pt", buffer.getvalue())
        return directory
