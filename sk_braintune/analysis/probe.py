"""Linear probes on frozen speech-model features (the paper's downstream semantic tasks).

:class:`SemanticProbe` fits a linear classifier on one layer of frozen features, or on a learned
softmax-weighted sum of all layers (the SUPERB convention), mean-pooled over the frames that
hold real audio. Epochs are selected on a validation split carved from the training data, never
on the test set. :func:`~sk_braintune.features.extractor.pooled_layer_features` computes the
``(n, n_layers, dim)`` features once so that many probes (one per layer,
:func:`probe_layers`) share them.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import (check_is_fitted, check_random_state, column_or_1d,
                                      validate_data)

from ..features.extractor import pooled_layer_features
from ..tuning.callbacks import EarlyStopping

__all__ = ["SemanticProbe", "probe_layers"]

_SCORINGS = ("accuracy", "f1", "f1_macro", "f1_micro", "f1_weighted", "f1_samples")


# ---------------------------------------------------------------------------------------------
# the probe
# ---------------------------------------------------------------------------------------------
class SemanticProbe(ClassifierMixin, BaseEstimator):
    """Linear probe on frozen per-layer features, for single-label or multi-label tasks.

    Parameters
    ----------
    layer : int or "weighted", default="weighted"
        Index along the layer axis of the features (0 = input embeddings when the features come
        from ``hidden_states``), or ``"weighted"`` to learn a softmax weighting of all layers
        jointly with the classifier (``layer_weights_``).
    extractor : str, AudioBackbone or fitted estimator, optional
        When given, ``X`` is raw audio and features come from
        :func:`pooled_layer_features` of this source: a model name/path, a fitted
        ``SpeechFeatureExtractor``, or a fitted ``BrainTuner`` wrapped in
        :class:`sklearn.frozen.FrozenEstimator`. Without it, ``X`` holds precomputed features.
    scoring : {"accuracy", "f1", "f1_macro", "f1_micro", "f1_weighted", "f1_samples"}, \
            default="accuracy"
        Metric of ``score`` and of epoch selection on the validation split (``"f1"`` is macro
        F1). Multi-label accuracy is subset accuracy; prefer an F1 there.
    alpha : float, default=1e-4
        Weight decay (L2) of the classifier weights.
    lr : float, default=0.01
        Adam learning rate.
    max_epochs : int, default=300
        Passes over the training data (one Adam step each in full-batch mode).
    batch_size : int or None, default=None
        Mini-batch size; full batch when None.
    validation_fraction : float, default=0.2
        Share of the training data held out to pick the best epoch (by ``groups`` when given,
        stratified otherwise). 0 disables selection (the last epoch is kept); so does a training
        set too small to split (fewer than 10 samples).
    patience : int, default=50
        Stop when the validation score has not improved for this many epochs.
    standardize : bool, default=True
        Z-score each feature (per layer) with training statistics before the linear map.
    batch_size_extraction : int, default=16
        Clips per forward pass when ``extractor`` is set.
    device : str, default="cpu"
        Torch device of the probe (and of the extraction); ``"auto"`` picks CUDA when present.
    random_state : int, RandomState instance or None, default=None
        Seeds the validation split and mini-batch order (weights start at zero).
    verbose : bool, default=False

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels; for multi-label ``y`` the label indices ``0..n_labels-1``.
    layer_weights_ : ndarray of shape (n_layers,)
        Softmax layer weights (one-hot for an integer ``layer``).
    coef_ : ndarray of shape (n_outputs, dim)
        Weights on the standardised (weighted) features.
    intercept_ : ndarray of shape (n_outputs,)
    best_epoch_ : int
        0-based epoch whose weights were kept.
    history_ : list of dict
        Per epoch: ``epoch``, ``train_loss``, ``valid_loss``, ``valid_score``.
    n_layers_ : int
    n_features_in_ : int
        Second dimension of array inputs (number of layers for 3-D inputs).
    backbone_ : AudioBackbone
        The frozen speech model (only with ``extractor``).
    """

    def __init__(self, layer="weighted", extractor=None, scoring="accuracy", alpha=1e-4, lr=0.01,
                 max_epochs=300, batch_size=None, validation_fraction=0.2, patience=50,
                 standardize=True, batch_size_extraction=16, device="cpu", random_state=None,
                 verbose=False):
        self.layer = layer
        self.extractor = extractor
        self.scoring = scoring
        self.alpha = alpha
        self.lr = lr
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.standardize = standardize
        self.batch_size_extraction = batch_size_extraction
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # -- inputs -----------------------------------------------------------------------------
    def _features(self, X, reset):
        """(n, n_layers, dim) float32 features of X."""
        if self.extractor is not None:
            if reset:  # load once; predict reuses it
                from ..features.extractor import resolve_backbone

                self.backbone_ = resolve_backbone(self.extractor, device=self.device)
            feats = pooled_layer_features(self.backbone_, X, batch_size=self.batch_size_extraction,
                                          device=self.device, verbose=self.verbose)
            if reset:
                self._input_ndim_ = "audio"
            return feats
        X = np.asarray(X) if not hasattr(X, "shape") else X
        ndim = 3 if getattr(X, "ndim", 2) == 3 else 2
        if not reset and ndim != self._input_ndim_:
            raise ValueError(f"X must be {self._input_ndim_}-D like the training features, got "
                             f"{ndim}-D")
        X = validate_data(self, X, reset=reset, allow_nd=ndim == 3, dtype=[np.float32, np.float64])
        if reset:
            self._input_ndim_ = ndim
        feats = X if ndim == 3 else X[:, None, :]
        return np.asarray(feats, dtype=np.float32)

    def _check_params(self):
        if self.scoring not in _SCORINGS:
            raise ValueError(f"scoring must be one of {_SCORINGS}, got {self.scoring!r}")
        if not (self.layer == "weighted" or isinstance(self.layer, numbers.Integral)):
            raise ValueError(f"layer must be an int or 'weighted', got {self.layer!r}")
        if not (isinstance(self.validation_fraction, numbers.Real)
                and 0 <= self.validation_fraction < 1):
            raise ValueError(f"validation_fraction must be in [0, 1), got "
                             f"{self.validation_fraction!r}")
        # checked here (not with sklearn's private _parameter_constraints): a NaN alpha or lr
        # would train a NaN model and max_epochs=0 an untrained one, both without an error
        for name, low, strict in (("alpha", 0.0, False), ("lr", 0.0, True)):
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, numbers.Real)
                    or not np.isfinite(value) or value < low or (strict and value == low)):
                bound = "> 0" if strict else ">= 0"
                raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
        for name, allow_none in (("max_epochs", False), ("patience", False),
                                 ("batch_size", True), ("batch_size_extraction", False)):
            value = getattr(self, name)
            if value is None and allow_none:
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                extra = " or None" if allow_none else ""
                raise ValueError(f"{name} must be an integer >= 1{extra}, got {value!r}")

    def _validation_split(self, y_codes, groups, rng):
        """The tuner's validation split with the probe's splitter: whole groups when given,
        stratified by class when every class can be split, else a plain random split."""
        from sklearn.model_selection import GroupShuffleSplit, ShuffleSplit, StratifiedShuffleSplit

        from ..tuning import validation_split

        n = len(y_codes)
        if self.validation_fraction == 0 or n < 10:
            return validation_split(n, None, None, rng)
        seed = rng.randint(np.iinfo(np.int32).max)
        fraction = self.validation_fraction
        splitter = ShuffleSplit(1, test_size=fraction, random_state=seed)
        if groups is not None and len(np.unique(np.asarray(groups))) >= 2:
            splitter = GroupShuffleSplit(1, test_size=fraction, random_state=seed)
        elif y_codes.ndim == 1:
            counts = np.bincount(y_codes)
            n_valid = int(np.ceil(fraction * n))
            if counts.min() >= 2 and n_valid >= len(counts) and n - n_valid >= len(counts):
                splitter = StratifiedShuffleSplit(1, test_size=fraction, random_state=seed)
        return validation_split(n, None if groups is None else np.asarray(groups), splitter,
                                rng, y=y_codes)

    def _score_codes(self, y_true, y_pred):
        from sklearn.metrics import f1_score

        if self.scoring == "accuracy":  # plain NumPy: called every epoch
            if y_true.ndim == 2:
                return float(np.mean(np.all(y_true == y_pred, axis=1)))
            return float(np.mean(y_true == y_pred))
        average = "macro" if self.scoring == "f1" else self.scoring.split("_", 1)[1]
        if average == "samples" and not self.multilabel_:
            average = "macro"
        return f1_score(y_true, y_pred, average=average, zero_division=0)

    # -- fit --------------------------------------------------------------------------------
    def fit(self, X, y, groups=None):
        """Train the probe, keeping the epoch with the best validation score.

        Parameters
        ----------
        X : ndarray of shape (n, n_layers, dim) or (n, dim), or audio when ``extractor`` is set
            Precomputed pooled features, or raw 16 kHz audio (AudioWindows, 2-D array, list of
            1-D arrays).
        y : array-like of shape (n,) or (n, n_labels)
            Class labels, or a binary indicator matrix for multi-label tasks (BCE loss).
        groups : array-like of shape (n,), optional
            Group of each sample (e.g. paraphrase template): the validation split holds out
            whole groups.

        Returns
        -------
        self : SemanticProbe
        """
        import torch

        self._check_params()
        feats = self._features(X, reset=True)
        if y is None:
            raise ValueError("SemanticProbe requires y to be passed, but the target y is None")
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        target_type = type_of_target(y, input_name="y")
        if len(y) != len(feats):
            raise ValueError(f"X has {len(feats)} samples but y has {len(y)}")
        self.multilabel_ = target_type == "multilabel-indicator"
        if self.multilabel_:
            codes = y.astype(np.float32)
            self.classes_ = np.arange(y.shape[1])
        else:
            if target_type not in ("binary", "multiclass"):
                raise ValueError(f"Unknown label type: {target_type}; SemanticProbe takes class "
                                 "labels or a multi-label indicator matrix")
            self.classes_, codes = np.unique(y, return_inverse=True)
            if len(self.classes_) < 2:
                raise ValueError("SemanticProbe needs at least 2 classes; y holds only one class")
        n_layers = feats.shape[1]
        if self.layer != "weighted" and not -n_layers <= int(self.layer) < n_layers:
            raise ValueError(f"layer={self.layer} is out of range for features with {n_layers} "
                             "layers")
        self.n_layers_ = n_layers
        rng = check_random_state(self.random_state)
        train, valid = self._validation_split(codes, groups, rng)

        if self.layer != "weighted":
            feats = feats[:, [int(self.layer)], :]
        if self.standardize:
            self.mean_ = feats[train].mean(axis=0)
            std = feats[train].std(axis=0)
            self.scale_ = np.where(std > 1e-12, std, 1.0).astype(np.float32)
        else:
            self.mean_ = np.zeros(feats.shape[1:], dtype=np.float32)
            self.scale_ = np.ones(feats.shape[1:], dtype=np.float32)
        from .._utils import resolve_device

        device = resolve_device(self.device)
        Z = torch.from_numpy(((feats - self.mean_) / self.scale_).astype(np.float32)).to(device)
        T = torch.from_numpy(codes.astype(np.float32 if self.multilabel_ else np.int64)).to(device)
        n_out = codes.shape[1] if self.multilabel_ else len(self.classes_)
        dim = Z.shape[2]
        logits_w = torch.zeros(Z.shape[1], device=device, requires_grad=self.layer == "weighted")
        weight = torch.zeros(n_out, dim, device=device, requires_grad=True)
        bias = torch.zeros(n_out, device=device, requires_grad=True)
        params = [{"params": [weight], "weight_decay": float(self.alpha)},
                  {"params": [bias], "weight_decay": 0.0}]
        if self.layer == "weighted":
            params.append({"params": [logits_w], "weight_decay": 0.0})
        optimizer = torch.optim.Adam(params, lr=float(self.lr))
        loss_fn = (torch.nn.functional.binary_cross_entropy_with_logits if self.multilabel_
                   else torch.nn.functional.cross_entropy)

        def forward(index):
            mixed = torch.einsum("l,nld->nd", torch.softmax(logits_w, 0), Z[index])
            return mixed @ weight.T + bias

        train_t = torch.as_tensor(train, device=device)
        valid_t = torch.as_tensor(valid, device=device)
        batch = len(train) if self.batch_size is None else int(self.batch_size)
        # a better score wins; at equal score only a clearly lower loss counts, so that patience
        # can stop a run whose loss creeps down while nothing else changes
        stopper = EarlyStopping(int(self.patience), monitor=("valid_score", "valid_loss"),
                                lower_is_better=(False, True), min_delta=(1e-12, 1e-3))
        history = []

        def current_state():
            return [t.detach().clone() for t in (logits_w, weight, bias)]

        for epoch in range(int(self.max_epochs)):
            order = train_t[torch.as_tensor(rng.permutation(len(train)), device=device)] \
                if batch < len(train) else train_t
            total = 0.0
            for start in range(0, len(order), batch):
                index = order[start:start + batch]
                optimizer.zero_grad()
                loss = loss_fn(forward(index), T[index])
                loss.backward()
                optimizer.step()
                total += loss.item() * len(index)
            record = {"epoch": epoch, "train_loss": total / len(train),
                      "valid_loss": np.nan, "valid_score": np.nan}
            if len(valid):
                with torch.no_grad():
                    logits = forward(valid_t)
                    record["valid_loss"] = loss_fn(logits, T[valid_t]).item()
                    pred = self._decode(logits.cpu().numpy())
                record["valid_score"] = self._score_codes(
                    codes[valid] if not self.multilabel_ else codes[valid].astype(int), pred)
            history.append(record)
            if len(valid) and stopper.update(
                    epoch, (record["valid_score"], record["valid_loss"]), current_state):
                break
        best_state = stopper.best_state
        self.best_epoch_ = stopper.best_epoch
        if best_state is None:  # no validation: the last epoch
            best_state = current_state()
            self.best_epoch_ = len(history) - 1
        self.history_ = history
        layer_logits, weight, bias = (t.cpu().numpy().astype(np.float64) for t in best_state)
        weights = np.exp(layer_logits - layer_logits.max())
        weights /= weights.sum()
        if self.layer == "weighted":
            self.layer_weights_ = weights
        else:
            self.layer_weights_ = np.zeros(n_layers)
            self.layer_weights_[int(self.layer)] = 1.0
        self._mix_ = weights
        self.coef_ = weight
        self.intercept_ = bias
        return self

    def _decode(self, logits):
        """Class codes (single-label) or indicator matrix (multi-label) from logits."""
        if self.multilabel_:
            return (logits > 0).astype(int)
        return logits.argmax(axis=1)

    # -- inference --------------------------------------------------------------------------
    def decision_function(self, X):
        """Logits of each class (or label).

        Parameters
        ----------
        X : features or audio, as in ``fit``

        Returns
        -------
        logits : ndarray of shape (n, n_outputs), or (n,) for two classes
            For two classes (single-label), the logit difference of the second class.
        """
        check_is_fitted(self, "coef_")
        feats = self._features(X, reset=False)
        if self.layer != "weighted":
            feats = feats[:, [int(self.layer)], :]
        Z = (feats - self.mean_) / self.scale_
        mixed = np.einsum("l,nld->nd", self._mix_, Z.astype(np.float64))
        logits = mixed @ self.coef_.T + self.intercept_
        if not self.multilabel_ and len(self.classes_) == 2:
            return logits[:, 1] - logits[:, 0]
        return logits

    def _logits(self, X):
        logits = self.decision_function(X)
        if logits.ndim == 1:
            logits = np.stack([np.zeros_like(logits), logits], axis=1)
        return logits

    def predict_proba(self, X):
        """Class probabilities (softmax), or per-label probabilities (sigmoid) for multi-label.

        Parameters
        ----------
        X : features or audio, as in ``fit``

        Returns
        -------
        proba : ndarray of shape (n, n_classes) or (n, n_labels)
        """
        logits = self._logits(X)
        if self.multilabel_:
            return 1.0 / (1.0 + np.exp(-logits))
        logits = logits - logits.max(axis=1, keepdims=True)
        proba = np.exp(logits)
        return proba / proba.sum(axis=1, keepdims=True)

    def predict(self, X):
        """Predicted classes, or the indicator matrix of predicted labels for multi-label.

        Parameters
        ----------
        X : features or audio, as in ``fit``

        Returns
        -------
        y_pred : ndarray of shape (n,) or (n, n_labels)
        """
        codes = self._decode(self._logits(X))
        return codes if self.multilabel_ else self.classes_[codes]

    def score(self, X, y, sample_weight=None):
        """``scoring`` (accuracy or F1) of the predictions on ``X``.

        Parameters
        ----------
        X : features or audio, as in ``fit``
        y : array-like of shape (n,) or (n, n_labels)
        sample_weight : array-like of shape (n,), optional

        Returns
        -------
        score : float
        """
        from sklearn.metrics import accuracy_score, f1_score

        pred = self.predict(X)
        if self.scoring == "accuracy":
            return float(accuracy_score(y, pred, sample_weight=sample_weight))
        average = "macro" if self.scoring == "f1" else self.scoring.split("_", 1)[1]
        if average == "samples" and not self.multilabel_:
            average = "macro"
        return float(f1_score(y, pred, average=average, sample_weight=sample_weight,
                              zero_division=0))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        tags.target_tags.multi_output = True
        tags.non_deterministic = False
        return tags


def probe_layers(features_train, y_train, features_test, y_test, *, layers=None,
                 weighted=True, groups=None, **probe_params):
    """Probe every layer (and the learned layer weighting) and score on held-out data.

    Parameters
    ----------
    features_train : ndarray of shape (n_train, n_layers, dim)
    y_train : array-like of shape (n_train,) or (n_train, n_labels)
    features_test : ndarray of shape (n_test, n_layers, dim)
    y_test : array-like of shape (n_test,) or (n_test, n_labels)
    layers : sequence of int, optional
        Layers to probe; all by default.
    weighted : bool, default=True
        Add a row ``"weighted"`` for the softmax-weighted probe.
    groups : array-like of shape (n_train,), optional
        Groups for the validation split (e.g. paraphrase templates).
    **probe_params
        Passed to :class:`SemanticProbe` (e.g. ``scoring``, ``random_state``).

    Returns
    -------
    table : pandas.DataFrame
        Columns ``layer`` (int or ``"weighted"``), ``score`` (on the test data),
        ``best_epoch``.
    """
    import pandas as pd

    features_train = np.asarray(features_train)
    if features_train.ndim != 3:
        raise ValueError("probe_layers needs features of shape (n, n_layers, dim); compute them "
                         "with pooled_layer_features")
    if layers is None:
        layers = range(features_train.shape[1])
    rows = []
    for layer in [*layers, *(["weighted"] if weighted else [])]:
        probe = SemanticProbe(layer=layer, **probe_params).fit(features_train, y_train,
                                                               groups=groups)
        rows.append({"layer": layer, "score": probe.score(features_test, y_test),
                     "best_epoch": probe.best_epoch_})
    return pd.DataFrame(rows)
