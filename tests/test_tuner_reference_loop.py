"""The cached top-block fit equals a plain PyTorch loop over the same cached inputs, bit for bit.

The reference below re-implements, independently of ``tuning._loop``, what a BrainTuner fit with
``trainable_layers=1`` computes: target standardisation over the training windows, the head
initialisation, the shuffling, the warm-up/linear-decay schedule, batches (and micro-batches
whose losses are weighted by their share of the batch), mean pooling over real frames, MSE,
Adam with two parameter groups, validation loss and the best epoch kept by early stopping. The
frozen hidden states are the ones the fit cached (read from its ``FrozenLayerCache``), so the
two sides see the same inputs and every fitted weight must be *equal*, not merely close: this
pins what any speed-up of the training loop may change (nothing).
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sk_braintune.models.backbone import load_backbone  # noqa: E402
from sk_braintune.testing.models import make_tiny_model  # noqa: E402
from sk_braintune.tuning import BrainTuner, FrozenLayerCache  # noqa: E402
from sk_braintune.tuning import _network  # noqa: E402

SR = 16_000
N_SAMPLES = 8_000


@pytest.fixture(scope="module")
def whisper(tmp_path_factory):
    # Whisper's configs have no dropout, so the reference needs no RNG bookkeeping
    return make_tiny_model("whisper", tmp_path_factory.mktemp("tiny") / "whisper")


def _data(n_windows, n_targets=5, seed=0):
    rng = np.random.RandomState(seed)
    t = np.arange(N_SAMPLES) / SR
    freqs = rng.uniform(100, 3000, size=(n_windows, 1))
    X = (np.sin(2 * np.pi * freqs * t) + 0.1 * rng.randn(n_windows, N_SAMPLES)).astype(np.float32)
    y = rng.randn(n_windows, n_targets).astype(np.float32)
    return X, y


def _lr_factor(step, total, warmup):
    if step < warmup:
        return (step + 1) / warmup
    return (total - step) / max(1, total - warmup)


def _reference_fit(path, hidden_store, mask_store, y, train, valid, params, seed):
    """Plain-PyTorch top-block fit; returns the weights after every epoch and the valid losses."""
    backbone = load_backbone(path)
    block, norm = backbone.encoder.layers[-1], backbone.encoder.layer_norm
    head = _network.make_head(backbone.hidden_size, y.shape[1], seed)
    block_params = [*block.parameters(), *norm.parameters()]
    optimizer = torch.optim.Adam(
        [{"params": block_params, "lr": params["lr_backbone"]},
         {"params": list(head.parameters()), "lr": params["lr_head"]}],
        lr=params["lr_head"], weight_decay=0.0)
    mean, scale = y[train].mean(0), y[train].std(0)
    scale = np.where(scale > 0, scale, 1.0)
    targets = torch.from_numpy(((y - mean) / scale).astype(np.float32))

    def pooled(windows):
        index = torch.as_tensor(windows)
        h = block(hidden_store[index].float(), None)
        h = norm(h[0] if isinstance(h, tuple) else h)
        weights = mask_store[index].to(h.dtype)[..., None]
        return (h * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    batch = min(params["batch_size"], len(train))
    micro = params.get("micro_batch_size") or batch
    steps_per_epoch = int(np.ceil(len(train) / batch))
    total = params["max_epochs"] * steps_per_epoch
    warmup = max(1, int(round(0.1 * total)))
    shuffle = np.random.RandomState((seed + 1) % 2 ** 31)
    step, epochs, valid_losses = 0, [], []
    for _ in range(params["max_epochs"]):
        order = train[shuffle.permutation(len(train))]
        for b in range(steps_per_epoch):
            windows = order[b * batch:(b + 1) * batch]
            factor = _lr_factor(step, total, warmup)
            for group, base in zip(optimizer.param_groups,
                                   (params["lr_backbone"], params["lr_head"])):
                group["lr"] = base * factor
            optimizer.zero_grad(set_to_none=True)
            for c in range(0, len(windows), micro):
                chunk = windows[c:c + micro]
                loss = torch.mean((head(pooled(chunk)) - targets[chunk]) ** 2)
                if len(chunk) != len(windows):
                    loss = loss * (len(chunk) / len(windows))
                loss.backward()
            optimizer.step()
            step += 1
        if len(valid):
            with torch.inference_mode():
                loss_sum = 0.0
                for start in range(0, len(valid), params["batch_size"]):
                    windows = valid[start:start + params["batch_size"]]
                    loss = torch.mean((head(pooled(windows)) - targets[windows]) ** 2)
                    loss_sum += loss.item() * len(windows)
            valid_losses.append(loss_sum / len(valid))
        epochs.append({"block": {n: p.detach().clone() for n, p in block.named_parameters()},
                       "norm": {n: p.detach().clone() for n, p in norm.named_parameters()},
                       "head": {n: p.detach().clone() for n, p in head.named_parameters()}})
    return epochs, valid_losses


def _assert_equal_weights(est, expected):
    n_layers = est.backbone_.num_hidden_layers
    encoder = est.backbone_.encoder
    pairs = [(encoder.layers[n_layers - 1], expected["block"]),
             (encoder.layer_norm, expected["norm"]), (est.head_, expected["head"])]
    for module, weights in pairs:
        for name, p in module.named_parameters():
            assert torch.equal(p, weights[name]), name


def _cached_entry(cache):
    assert len(cache) == 1
    return next(iter(cache._entries.values()))


def test_cached_top_block_fit_equals_plain_loop(whisper):
    """fp32 cache, a partial last batch, two epochs, no validation: equal weights."""
    X, y = _data(20)
    params = dict(batch_size=8, max_epochs=2, lr_backbone=1e-3, lr_head=3e-2)
    cache = FrozenLayerCache()
    est = BrainTuner(whisper, trainable_layers=1, validation=None, random_state=0,
                     frozen_layer_cache=cache, **params).fit(X, y)
    hidden, mask = _cached_entry(cache)
    assert hidden.dtype == torch.float32
    seed = int(np.random.RandomState(0).randint(np.iinfo(np.int32).max))
    epochs, _ = _reference_fit(whisper, hidden, mask, y, np.arange(20), np.arange(0), params,
                               seed)
    backbone = load_backbone(whisper)
    n_block = sum(p.numel() for p in backbone.encoder.layers[-1].parameters())
    n_norm = sum(p.numel() for p in backbone.encoder.layer_norm.parameters())
    assert est.n_trainable_parameters_ == n_block + n_norm
    _assert_equal_weights(est, epochs[-1])
    # the weights did move: the comparison is not between two untouched models
    assert not torch.equal(est.head_.weight, _network.make_head(
        backbone.hidden_size, y.shape[1], seed).weight)


def test_micro_batches_float16_cache_and_validation_equal_plain_loop(whisper, monkeypatch):
    """Micro-batches of 3 in batches of 8, a float16 cache, validation batches larger than the
    training chunks (the batch buffers grow inside inference mode) and the best epoch kept."""
    monkeypatch.setattr(_network, "CACHE_FLOAT32_LIMIT_BYTES", 0)
    X, y = _data(24, seed=1)
    groups = np.repeat(np.arange(4), 6)
    params = dict(batch_size=8, micro_batch_size=3, max_epochs=3, lr_backbone=3e-3,
                  lr_head=1e-1)
    cache = FrozenLayerCache()
    est = BrainTuner(whisper, trainable_layers=1, validation=0.5, patience=10, random_state=0,
                     frozen_layer_cache=cache, **params).fit(X, y, groups=groups)
    hidden, mask = _cached_entry(cache)
    assert hidden.dtype == torch.float16
    is_valid = np.isin(groups, est.validation_groups_)
    train, valid = np.flatnonzero(~is_valid), np.flatnonzero(is_valid)
    assert len(valid) == 12
    seed = int(np.random.RandomState(0).randint(np.iinfo(np.int32).max))
    epochs, valid_losses = _reference_fit(whisper, hidden, mask, y, train, valid, params, seed)
    np.testing.assert_allclose([h["valid_loss"] for h in est.history_], valid_losses,
                               rtol=1e-12)
    assert est.best_epoch_ == int(np.argmin(valid_losses))
    _assert_equal_weights(est, epochs[est.best_epoch_])
