"""BrainTuner: learning, schedule, optimiser groups, validation split, resume, persistence."""

import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sklearn.model_selection import GridSearchCV, GroupKFold, GroupShuffleSplit  # noqa: E402

from sk_braintune.models.pooling import pool_frames  # noqa: E402
from sk_braintune.testing.models import make_tiny_model  # noqa: E402
from sk_braintune.tuning import BrainTuner, Callback, FrozenLayerCache  # noqa: E402
from sk_braintune.tuning import _network, _training  # noqa: E402

SR = 16_000
N_SAMPLES = 8_000  # 0.5 s windows: the tiny models' frames are the real ones (20 ms)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_models")
    return {family: make_tiny_model(family, root / family)
            for family in ("wav2vec2", "hubert", "wavlm", "whisper")}


def _tones(n, seed=0):
    """Windows of two random tones plus noise: spectrally different, learnable features."""
    rng = np.random.RandomState(seed)
    t = np.arange(N_SAMPLES) / SR
    freqs = rng.uniform(100, 3000, size=(n, 2))
    amps = rng.uniform(0, 1, size=(n, 2))
    X = (amps[:, :1] * np.sin(2 * np.pi * freqs[:, :1] * t)
         + amps[:, 1:] * np.sin(2 * np.pi * freqs[:, 1:] * t)
         + 0.05 * rng.randn(n, N_SAMPLES))
    return X.astype(np.float32)


@pytest.fixture(scope="module")
def toy(models):
    """Targets = fixed random linear map of the random-init model's pooled features, + noise."""
    from sk_braintune.models.backbone import load_backbone

    n = 64
    X = _tones(n)
    backbone = load_backbone(models["wav2vec2"])
    with torch.no_grad():
        out = backbone(torch.from_numpy(X), output_hidden_states=False)
        features = pool_frames(out.last_hidden_state, out.frame_mask).numpy()
    rng = np.random.RandomState(1)
    features = (features - features.mean(0)) / features.std(0)
    y = features @ rng.randn(features.shape[1], 5) + 0.3 * rng.randn(n, 5)
    groups = np.repeat(np.arange(8), 8)
    return X, y.astype(np.float32), groups


FAST = dict(batch_size=16, random_state=0, lr_backbone=1e-4, lr_head=3e-2)


def test_loss_falls_and_validation_r_rises(models, toy):
    X, y, groups = toy
    est = BrainTuner(models["wav2vec2"], max_epochs=6, validation=0.25, patience=None,
                     **{**FAST, "lr_head": 0.1})
    est.fit(X, y, groups=groups)
    train = [h["train_loss"] for h in est.history_]
    valid_r = [h["valid_r"] for h in est.history_]
    assert len(est.history_) == 6
    assert train[-1] < 0.6 * train[0]
    assert valid_r[-1] > valid_r[0] + 0.2 and valid_r[-1] > 0.55
    assert est.best_epoch_ == int(np.argmin([h["valid_loss"] for h in est.history_]))
    # validation r in history equals a direct computation on the held-out stories
    held_out = np.isin(groups, est.validation_groups_)
    pred = est.predict(X[held_out])
    direct = np.mean([np.corrcoef(pred[:, j], y[held_out, j])[0, 1] for j in range(5)])
    np.testing.assert_allclose(est.history_[est.best_epoch_]["valid_r"], direct, atol=1e-4)
    np.testing.assert_allclose(est.score(X[held_out], y[held_out]), direct, atol=1e-6)
    assert est.predict(X).dtype == np.float32


def test_schedule_formula_and_recorded_learning_rates(models, toy):
    # warm-up over the first 10% of steps, then linear decay to 0 after the last step
    total, warm = 50, _training.n_warmup_steps(50, 0.1)
    assert warm == 5
    factors = [_training.lr_factor(s, total, warm) for s in range(total + 1)]
    expected = [(s + 1) / 5 if s < 5 else (50 - s) / 45 for s in range(total)] + [0.0]
    np.testing.assert_allclose(factors, expected)
    assert max(factors) == 1.0 and factors[0] > 0
    X, y, groups = toy
    est = BrainTuner(models["wav2vec2"], max_epochs=5, validation=0.25, patience=None,
                     trainable_layers=1, **FAST).fit(X, y, groups=groups)
    steps_per_epoch = int(np.ceil(48 / 16))
    total = 5 * steps_per_epoch
    warm = _training.n_warmup_steps(total, 0.1)
    for epoch, record in enumerate(est.history_):
        last_step = (epoch + 1) * steps_per_epoch - 1
        factor = _training.lr_factor(last_step, total, warm)
        assert record["lr_backbone"] == pytest.approx(1e-4 * factor)
        assert record["lr_head"] == pytest.approx(3e-2 * factor)


def test_two_parameter_groups(models, toy, monkeypatch):
    captured = {}
    real = _training.make_optimizer

    def spy(*args, **kwargs):
        optimizer, base = real(*args, **kwargs)
        captured["optimizer"] = optimizer
        return optimizer, base

    monkeypatch.setattr(_training, "make_optimizer", spy)
    X, y, groups = toy
    est = BrainTuner(models["wav2vec2"], max_epochs=1, lr_backbone=2e-5, lr_head=7e-4,
                     batch_size=64, validation=None, random_state=0).fit(X, y, groups=groups)
    backbone_group, head_group = captured["optimizer"].param_groups
    assert backbone_group["name"] == "backbone" and head_group["name"] == "head"
    # one step: warm-up factor = 1 at the end, so the recorded lrs are the base ones
    assert est.history_[0]["lr_backbone"] == pytest.approx(2e-5)
    assert est.history_[0]["lr_head"] == pytest.approx(7e-4)
    head_ids = {id(p) for p in est.head_.parameters()}
    assert {id(p) for p in head_group["params"]} == head_ids
    backbone_ids = {id(p) for p in backbone_group["params"]}
    expected = {id(p) for n, p in est.backbone_.named_parameters()
                if not n.startswith("encoder.feature_extractor.")}
    assert backbone_ids == expected  # all but the frozen CNN feature encoder


def test_validation_split_holds_whole_stories():
    groups = np.repeat(["a", "b", "c", "d", "e"], [7, 5, 9, 4, 6])
    rng = np.random.RandomState(0)
    train, valid = _training.validation_split(len(groups), groups, 0.4, rng)
    assert set(groups[train]).isdisjoint(groups[valid])
    assert len(set(groups[valid])) == 2
    assert sorted(np.concatenate([train, valid])) == list(range(len(groups)))
    # a splitter: its first split
    splitter = GroupShuffleSplit(n_splits=1, test_size=1, random_state=0)
    train, valid = _training.validation_split(len(groups), groups, splitter, rng)
    assert len(set(groups[valid])) == 1 and set(groups[train]).isdisjoint(groups[valid])
    # without groups: a contiguous tail block
    train, valid = _training.validation_split(20, None, 0.25, rng)
    np.testing.assert_array_equal(valid, np.arange(15, 20))


def test_fitted_validation_stories_and_audio_windows_groups(models):
    from sk_braintune.windows import make_windows

    rng = np.random.RandomState(0)
    audio = {f"s{i}": (0.1 * rng.randn(SR * 3)).astype(np.float32) for i in range(4)}
    times = {s: np.arange(0.25, 2.5, 0.5) for s in audio}
    X = make_windows(audio, times, window=0.5, tr=0.5)
    y = rng.randn(len(X), 3).astype(np.float32)
    est = BrainTuner(models["hubert"], max_epochs=1, batch_size=8, validation=0.25,
                     random_state=3).fit(X, y)  # groups default to X.groups
    assert len(est.validation_groups_) == 1
    assert est.validation_groups_[0] in audio
    assert est.predict(X).shape == y.shape
    np.testing.assert_allclose(est.predict(X[:4]), est.predict(X.to_array()[:4]), atol=1e-6)


def test_random_state_leaves_global_rngs_alone(models, toy):
    X, y, groups = toy
    np.random.seed(123)
    torch.manual_seed(123)
    np_state, torch_state = np.random.get_state(), torch.get_rng_state()
    a = BrainTuner(models["wav2vec2"], max_epochs=1, **FAST).fit(X, y, groups=groups)
    assert np.array_equal(np.random.get_state()[1], np_state[1])
    assert torch.equal(torch.get_rng_state(), torch_state)
    b = BrainTuner(models["wav2vec2"], max_epochs=1, **FAST).fit(X, y, groups=groups)
    np.testing.assert_array_equal(a.predict(X[:8]), b.predict(X[:8]))
    c = BrainTuner(models["wav2vec2"], max_epochs=1, **{**FAST, "random_state": 1})
    assert not np.array_equal(c.fit(X, y, groups=groups).predict(X[:8]), a.predict(X[:8]))


class EpochEndHook(Callback):
    """User callback calling ``function(tuner, epoch, history)`` after each epoch's checkpoint."""

    def __init__(self, function):
        self.function = function

    def on_epoch_end(self, estimator, run):
        self.function(estimator, run.epoch, run.history)


def _state(est):
    state = {f"backbone.{k}": v for k, v in est.backbone_.state_dict().items()}
    state.update({f"head.{k}": v for k, v in est.head_.state_dict().items()})
    return state


@pytest.mark.parametrize("trainable_layers", [None, 1])
def test_resume_after_interruption_equals_uninterrupted_run(models, toy, tmp_path,
                                                            trainable_layers):
    X, y, groups = toy
    params = dict(max_epochs=3, validation=0.25, patience=None,
                  trainable_layers=trainable_layers, **FAST)
    reference = BrainTuner(models["wav2vec2"], **params).fit(X, y, groups=groups)

    class Interrupted(RuntimeError):
        pass

    def interrupt(tuner, epoch, history):
        if epoch == 0:
            raise Interrupted

    ckpt = tmp_path / "ckpt"
    with pytest.raises(Interrupted):
        BrainTuner(models["wav2vec2"], checkpoint_dir=str(ckpt),
                   callbacks=[EpochEndHook(interrupt)], **params).fit(X, y, groups=groups)
    assert (ckpt / "checkpoint.pt").exists()
    resumed = BrainTuner(models["wav2vec2"], checkpoint_dir=str(ckpt), **params)
    resumed.fit(X, y, groups=groups)
    ref_state, new_state = _state(reference), _state(resumed)
    assert ref_state.keys() == new_state.keys()
    for name in ref_state:
        torch.testing.assert_close(new_state[name], ref_state[name], rtol=0, atol=0, msg=name)
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in reference.history_]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in resumed.history_] == strip
    # the user's directory is kept; another configuration is refused
    assert (ckpt / "checkpoint.pt").exists()
    other = BrainTuner(models["wav2vec2"], checkpoint_dir=str(ckpt), **{**params, "lr_head": 1e-3})
    with pytest.raises(ValueError, match="another configuration"):
        other.fit(X, y, groups=groups)
    with pytest.raises(ValueError, match="another data"):
        BrainTuner(models["wav2vec2"], checkpoint_dir=str(ckpt), **params).fit(X, y + 1, groups)


@pytest.mark.parametrize("family", ["wav2vec2", "hubert", "wavlm", "whisper"])
def test_pickle_round_trip_gives_identical_predictions(models, family):
    X = _tones(24, seed=2)
    y = np.random.RandomState(0).randn(24, 3)
    est = BrainTuner(models[family], max_epochs=1, batch_size=8, lr_backbone=1e-3,
                     random_state=0, validation=None).fit(X, y)
    clone = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(clone.predict(X), est.predict(X))
    np.testing.assert_array_equal(clone.transform(X), est.transform(X))
    assert est.predict(X).dtype == np.float64  # y's dtype
    # the tuned backbone differs from the pretrained one
    from sk_braintune.models.backbone import load_backbone

    assert load_backbone(models[family]).fingerprint() != est.backbone_.fingerprint()


@pytest.mark.parametrize("family", ["wav2vec2", "wavlm"])
def test_hidden_state_count_is_stable_in_train_mode(models, family):
    X = _tones(8)
    est = BrainTuner(models[family], max_epochs=1, batch_size=8, validation=None,
                     transform_layers="all", random_state=0).fit(X, np.arange(8.0))
    backbone = est.backbone_
    assert backbone.config.layerdrop == 0
    backbone.train()
    counts = {len(backbone(torch.from_numpy(X[:2])).hidden_states) for _ in range(10)}
    backbone.eval()
    assert counts == {backbone.num_hidden_layers + 1}
    features = est.transform(X)
    assert features.shape == (8, (backbone.num_hidden_layers + 1) * backbone.hidden_size)
    assert len(est.get_feature_names_out()) == features.shape[1]


@pytest.mark.parametrize("family", ["wav2vec2", "whisper", "wavlm"])
def test_cached_path_matches_full_path(models, family):
    """Same batch: loss and gradients of the cached top-layer path equal the full path's."""
    from sk_braintune.models.backbone import load_backbone

    backbone = load_backbone(models[family]).eval()
    n_layers = backbone.num_hidden_layers
    start = n_layers - 1
    trainable = _network.parameters_after(backbone, start, N_SAMPLES)
    assert trainable and all(".layers.0." not in n for n in trainable)
    for name, p in backbone.named_parameters():
        p.requires_grad_(name in trainable)
    head = _network.make_head(backbone.hidden_size, 3, seed=0)
    X = torch.from_numpy(_tones(4))
    y = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))

    def loss_and_grads(run):
        for p in list(backbone.parameters()) + list(head.parameters()):
            p.grad = None
        loss = _training.compute_loss(run(), y, "mse")
        loss.backward()
        grads = {n: p.grad.clone() for n, p in backbone.named_parameters() if p.requires_grad}
        grads.update({f"head.{n}": p.grad.clone() for n, p in head.named_parameters()})
        return loss.detach(), grads

    full_loss, full_grads = loss_and_grads(
        lambda: _network.forward_full(backbone, head, X, "mean")[0])
    with torch.inference_mode():
        hidden, mask = backbone.hidden_at(X, start)
    hidden = hidden.clone()
    cached_loss, cached_grads = loss_and_grads(
        lambda: _network.forward_cached(backbone, head, hidden, mask, start, "mean")[0])
    torch.testing.assert_close(cached_loss, full_loss, rtol=1e-5, atol=1e-6)
    assert cached_grads.keys() == full_grads.keys()
    for name in full_grads:
        torch.testing.assert_close(cached_grads[name], full_grads[name], rtol=1e-4, atol=1e-6,
                                   msg=name)


def test_trainable_layers_only_changes_top_layers(models, toy):
    from sk_braintune.models.backbone import load_backbone

    X, y, groups = toy
    est = BrainTuner(models["wav2vec2"], max_epochs=2, trainable_layers=1,
                     **FAST).fit(X, y, groups=groups)
    before = load_backbone(models["wav2vec2"]).state_dict()
    after = est.backbone_.state_dict()
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all(n.startswith("encoder.encoder.layers.1.") for n in changed)
    assert est.n_trainable_parameters_ == sum(
        p.numel() for n, p in est.backbone_.named_parameters()
        if n.startswith("encoder.encoder.layers.1."))


def test_lora_adapters_train_and_merge(models, toy):
    pytest.importorskip("peft")
    from sk_braintune.models.backbone import load_backbone

    X, y, groups = toy
    est = BrainTuner(models["wav2vec2"], max_epochs=2, lora_rank=2, lr_backbone=1e-2,
                     **{k: v for k, v in FAST.items() if k != "lr_backbone"})
    est.fit(X, y, groups=groups)
    names = [n for n, _ in est.backbone_.named_parameters()]
    assert not any("lora_" in n for n in names)
    before = load_backbone(models["wav2vec2"]).state_dict()
    after = est.backbone_.state_dict()
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all(n.split(".")[-2] in ("q_proj", "k_proj", "v_proj", "out_proj")
                           for n in changed)
    clone = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(clone.predict(X[:4]), est.predict(X[:4]))


def test_losses_and_errors(models, toy):
    X, y, groups = toy
    for loss in ("correlation", "cosine_mse"):
        est = BrainTuner(models["whisper"], max_epochs=2, loss=loss, trainable_layers=1,
                         **FAST).fit(X, y, groups=groups)
        assert np.isfinite([h["valid_loss"] for h in est.history_]).all()
        if loss == "correlation":
            h = est.history_[-1]
            assert h["valid_loss"] == pytest.approx(1 - h["valid_r"])
    with pytest.raises(ValueError, match="bf16"):
        BrainTuner(models["whisper"], precision="bf16", device="cpu").fit(X, y)
    with pytest.raises(TypeError, match="model must be"):
        BrainTuner(object()).fit(X, y)
    with pytest.raises(ValueError, match="trainable_layers"):
        BrainTuner(models["whisper"], trainable_layers=9).fit(X, y)
    with pytest.raises(ValueError, match="loss"):
        BrainTuner(models["whisper"], loss="l1").fit(X, y)


def test_grid_search_over_stories_and_export(models, toy, tmp_path):
    from sklearn import config_context
    from transformers import AutoModel

    X, y, groups = toy
    base = BrainTuner(models["whisper"], trainable_layers=1, validation=None, **FAST)
    with config_context(enable_metadata_routing=True):
        search = GridSearchCV(base.set_fit_request(groups=True),
                              {"lr_backbone": [1e-4, 1e-3], "max_epochs": [1, 2]},
                              cv=GroupKFold(n_splits=2), n_jobs=1)
        search.fit(X, y, groups=groups)
    assert search.cv_results_["mean_test_score"].shape == (4,)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    best = search.best_estimator_
    out = best.save_pretrained(tmp_path / "tuned")
    assert (out / "preprocessor_config.json").exists()
    loaded = AutoModel.from_pretrained(out)
    encoder_state = loaded.get_encoder().state_dict()
    for name, value in best.backbone_.encoder.state_dict().items():
        torch.testing.assert_close(encoder_state[name], value, msg=name)
    # the exported directory works as a model for a new tuner / extractor
    from sk_braintune.models.backbone import load_backbone

    assert load_backbone(str(out)).fingerprint() == best.backbone_.fingerprint()


def test_feature_extractor_accepts_frozen_tuner(models, toy):
    extractor_module = pytest.importorskip("sk_braintune.features.extractor")
    from sklearn.frozen import FrozenEstimator

    X, y, groups = toy
    est = BrainTuner(models["wavlm"], max_epochs=1, **FAST).fit(X, y, groups=groups)
    extractor = extractor_module.SpeechFeatureExtractor(model=FrozenEstimator(est), layers=-1,
                                                        pooling="mean")
    features = extractor.fit_transform(X[:6])
    np.testing.assert_allclose(features, est.transform(X[:6]), rtol=1e-4, atol=1e-5)


def test_resume_without_random_state_keeps_the_validation_split(models, toy, tmp_path):
    X, y, groups = toy
    seen = []

    def interrupt(tuner, epoch, history):
        seen.append(list(tuner.validation_groups_))
        if len(seen) == 1:
            raise KeyboardInterrupt

    params = dict(max_epochs=2, validation=0.25, trainable_layers=0, batch_size=16,
                  checkpoint_dir=str(tmp_path / "ckpt"), random_state=None,
                  callbacks=[EpochEndHook(interrupt)])
    with pytest.raises(KeyboardInterrupt):
        BrainTuner(models["whisper"], **params).fit(X, y, groups=groups)
    resumed = BrainTuner(models["whisper"], **params).fit(X, y, groups=groups)
    assert seen[0] == seen[1] == list(resumed.validation_groups_)
    assert len(resumed.history_) == 2


def test_frozen_cache_is_reused_by_the_next_fit(models, toy, monkeypatch):
    X, y, groups = toy
    params = dict(max_epochs=1, trainable_layers=1, frozen_layer_cache=FrozenLayerCache(), **FAST)
    fresh = BrainTuner(models["whisper"], **params).fit(X, y, groups=groups)
    calls = []
    monkeypatch.setattr(_network, "cache_hidden",
                        lambda *a, **k: calls.append(1) or pytest.fail("cache recomputed"))
    reused = BrainTuner(models["whisper"], **params).fit(X, y, groups=groups)
    assert not calls
    np.testing.assert_array_equal(reused.predict(X[:8]), fresh.predict(X[:8]))
