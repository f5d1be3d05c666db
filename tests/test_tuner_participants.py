"""BrainTuner on several participants: routing, one forward per stimulus batch, losses against
NumPy, story-level validation for all participants, per-participant heads; callbacks."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sklearn import config_context  # noqa: E402
from sklearn.model_selection import GridSearchCV, GroupKFold  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402

from sk_braintune.models.backbone import AudioBackbone, load_backbone  # noqa: E402
from sk_braintune.models.pooling import pool_frames  # noqa: E402
from sk_braintune.testing.models import make_tiny_model  # noqa: E402
from sk_braintune.tuning import BrainTuner, Callback, EarlyStopping, FrozenLayerCache, _training
from sk_braintune.windows import AudioWindows, make_windows  # noqa: E402

SR = 16_000


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_models")
    return {family: make_tiny_model(family, root / family) for family in ("wav2vec2", "whisper")}


@pytest.fixture(scope="module")
def two_listeners(models):
    """Six stories of tones heard by two participants with different linear maps of the same
    features, as a contract dataset; rows from ``datasets.participant_windows``."""
    from sklearn.utils import Bunch

    from sk_braintune.datasets import participant_windows

    rng = np.random.RandomState(0)
    t = np.arange(int(2.5 * SR)) / SR
    audio = {}
    for i in range(6):
        f = rng.uniform(200, 3000, size=5)
        audio[f"story{i}"] = (sum(np.sin(2 * np.pi * fk * t) * rng.uniform(0.2, 1, t.shape)
                                  for fk in f) * 0.2).astype(np.float32)
    tr_times = {s: np.arange(0.25, 2.5, 0.25) for s in audio}
    windows = make_windows(audio, tr_times, window=0.5, tr=0.25)
    backbone = load_backbone(models["wav2vec2"])
    with torch.no_grad():
        out = backbone(torch.from_numpy(windows.to_array()), output_hidden_states=False)
        feats = pool_frames(out.last_hidden_state, out.frame_mask).numpy()
    feats = (feats - feats.mean(0)) / feats.std(0)
    participant_data = {}
    for p in ("A", "B"):
        responses = feats @ rng.randn(feats.shape[1], 6) + 0.3 * rng.randn(len(feats), 6)
        participant_data[p] = Bunch(
            responses={s: responses[windows.stories == s].astype(np.float32) for s in audio},
            repeats={}, noise_ceiling=np.ones(6))
    data = Bunch(stories=list(audio), sample_rate=SR, audio=audio, tr=0.25, tr_times=tr_times,
                 participants=("A", "B"), participant_data=participant_data,
                 responses=participant_data["A"].responses, split={})
    X, y, groups, participants = participant_windows(data, list(audio), window=0.5)
    return {"X": X, "y": y, "groups": np.asarray(groups), "participants": participants,
            "windows": windows}


FAST = dict(batch_size=16, random_state=0, lr_backbone=1e-4, lr_head=3e-2, trainable_layers=1)


def test_rows_share_one_waveform_per_story(two_listeners):
    X = two_listeners["X"]
    assert isinstance(X, AudioWindows) and len(X) == 2 * len(two_listeners["windows"])
    # one stored waveform per story for both participants' rows: the audio of one participant
    assert len(X.waveforms) == 6 and X.nbytes == two_listeners["windows"].nbytes
    rows_a = np.flatnonzero(two_listeners["participants"] == "A")
    rows_b = np.flatnonzero(two_listeners["participants"] == "B")
    for i, j in zip(rows_a, rows_b):
        assert np.shares_memory(X[i], X[j]) and X.stories[i] == X.stories[j]


def _count_forward_calls(monkeypatch):
    calls = []
    real_forward, real_from = AudioBackbone.forward, AudioBackbone.forward_from

    def forward(self, *args, **kwargs):
        calls.append(len(args[0]))
        return real_forward(self, *args, **kwargs)

    def forward_from(self, *args, **kwargs):
        calls.append(len(args[0]))
        return real_from(self, *args, **kwargs)

    monkeypatch.setattr(AudioBackbone, "forward", forward)
    monkeypatch.setattr(AudioBackbone, "forward_from", forward_from)
    return calls


@pytest.mark.parametrize("trainable_layers", [None, 1])
def test_backbone_runs_once_per_stimulus_batch(models, two_listeners, monkeypatch,
                                               trainable_layers):
    d = two_listeners
    single = d["participants"] == "A"
    params = dict(FAST, trainable_layers=trainable_layers, max_epochs=2, validation=0.34,
                  batch_size=8)
    calls = _count_forward_calls(monkeypatch)
    BrainTuner(models["wav2vec2"], **params).fit(d["X"][single], d["y"][single],
                                                 groups=d["groups"][single])
    one_participant = list(calls)
    calls.clear()
    est = BrainTuner(models["wav2vec2"], **params).fit(d["X"], d["y"], groups=d["groups"],
                                                      participants=d["participants"])
    # same forward passes (number and batch sizes) for two participants as for one
    assert calls == one_participant
    n_windows = len(d["windows"])
    n_valid = int(np.isin(d["windows"].stories, est.validation_groups_).sum())
    per_epoch = int(np.ceil((n_windows - n_valid) / 8)) + int(np.ceil(n_valid / 8))
    # two epochs of (training + validation) batches, plus the one-window probe that finds the
    # trainable parameters above the frozen layers
    assert len(calls) == 2 * per_epoch + (0 if trainable_layers is None else 1)
    assert sum(calls[-per_epoch:]) == n_windows  # last epoch: every window once, not twice


def test_identical_participants_equal_one_participant(models, two_listeners):
    """Two participants with the same responses, loss averaged: the fit of one participant."""
    d = two_listeners
    single = d["participants"] == "A"
    y_same = d["y"].copy()
    y_same[~single] = y_same[single]  # B's rows := A's rows (same story order)
    params = dict(FAST, max_epochs=2, validation=0.34, patience=None)
    one = BrainTuner(models["wav2vec2"], **params).fit(d["X"][single], d["y"][single],
                                                       groups=d["groups"][single])
    two = BrainTuner(models["wav2vec2"], participant_schedule="averaged", **params).fit(
        d["X"], y_same, groups=d["groups"], participants=d["participants"])
    np.testing.assert_allclose(two.predict(d["X"][single]), one.predict(d["X"][single]),
                               rtol=1e-5, atol=1e-5)
    for h1, h2 in zip(one.history_, two.history_):
        assert h2["train_loss"] == pytest.approx(h1["train_loss"], rel=1e-5)
        assert h2["valid_r"] == pytest.approx(h1["valid_r"], abs=1e-5)
        assert h2["valid_r_per_participant"]["A"] == pytest.approx(h1["valid_r"], abs=1e-5)
        assert h2["valid_r_per_participant"]["B"] == pytest.approx(h1["valid_r"], abs=1e-5)
    # sequential sums the participants' gradients: twice the gradient, which Adam normalises
    seq = BrainTuner(models["wav2vec2"], **params).fit(
        d["X"], y_same, groups=d["groups"], participants=d["participants"])
    np.testing.assert_allclose(seq.predict(d["X"][single]), one.predict(d["X"][single]),
                               rtol=1e-3, atol=1e-3)


def test_validation_holds_out_whole_stories_for_all_and_records_each_participant(
        models, two_listeners):
    d = two_listeners
    est = BrainTuner(models["wav2vec2"], max_epochs=3, validation=0.34, patience=None,
                     **{k: v for k, v in FAST.items() if k != "trainable_layers"})
    seen = {}

    class Spy(Callback):
        def on_train_end(self, estimator, run):
            seen["valid_rows"] = run.data.rows_of_windows_mask(run.valid_windows)

    est.set_params(callbacks=[Spy()]).fit(d["X"], d["y"], groups=d["groups"],
                                          participants=d["participants"])
    valid_rows = seen["valid_rows"]
    held_out = np.isin(d["groups"], est.validation_groups_)
    np.testing.assert_array_equal(valid_rows, held_out)  # both participants' rows of a story
    assert len(est.validation_groups_) == 2
    assert list(est.participants_) == ["A", "B"]
    record = est.history_[est.best_epoch_]
    assert set(record["valid_r_per_participant"]) == {"A", "B"}
    for p in ("A", "B"):
        rows = held_out & (d["participants"] == p)
        pred = est.predict(d["X"][rows])
        direct = np.mean([np.corrcoef(pred[:, j], d["y"][rows, j])[0, 1] for j in range(6)])
        assert record["valid_r_per_participant"][p] == pytest.approx(direct, abs=1e-4)
    assert record["valid_r"] == pytest.approx(np.mean(list(
        record["valid_r_per_participant"].values())))
    # the score with participants: mean of the per-participant scores
    direct_score = np.mean([est.score(d["X"][held_out & (d["participants"] == p)],
                                      d["y"][held_out & (d["participants"] == p)])
                            for p in ("A", "B")])
    assert est.score(d["X"][held_out], d["y"][held_out],
                     participants=d["participants"][held_out]) == pytest.approx(direct_score)


def test_per_participant_heads(models, two_listeners):
    d = two_listeners
    est = BrainTuner(models["whisper"], head="per_participant", max_epochs=2, validation=None,
                     **FAST).fit(d["X"], d["y"], groups=d["groups"],
                                 participants=d["participants"])
    assert len(est.head_) == 2
    rows_a = d["participants"] == "A"
    pred = est.predict(d["X"], participants=d["participants"])
    # each row through its participant's head, on the shared backbone's features
    features = torch.from_numpy(est.transform(d["X"][rows_a]))
    with torch.no_grad():
        direct_a = est.head_[0](features).numpy() * est.target_scale_ + est.target_mean_
    np.testing.assert_allclose(pred[rows_a], direct_a, rtol=1e-4, atol=1e-4)
    assert not np.allclose(pred[rows_a], pred[~rows_a], atol=1e-3)  # B's head differs
    with pytest.raises(ValueError, match="participants="):
        est.predict(d["X"])
    with pytest.raises(ValueError, match="no head"):
        est.predict(d["X"][:3], participants=["C", "A", "A"])
    # a shared head predicts without participants, one row per window
    shared = BrainTuner(models["whisper"], max_epochs=1, validation=None, **FAST).fit(
        d["X"], d["y"], groups=d["groups"], participants=d["participants"])
    np.testing.assert_array_equal(shared.predict(d["X"][rows_a]),
                                  shared.predict(d["X"][~rows_a]))


@pytest.mark.parametrize("head", ["shared", "per_participant"])
def test_routing_in_pipeline_and_grid_search_over_stories(models, two_listeners, head):
    d = two_listeners
    with config_context(enable_metadata_routing=True):
        tuner = BrainTuner(models["whisper"], validation=None, head=head, **FAST)
        tuner.set_fit_request(groups=True, participants=True)
        if head == "per_participant":
            tuner.set_score_request(participants=True)
        pipe = Pipeline([("tuner", tuner)])
        search = GridSearchCV(pipe, {"tuner__max_epochs": [1, 2]}, cv=GroupKFold(n_splits=3),
                              n_jobs=1)
        search.fit(d["X"], d["y"], groups=d["groups"], participants=d["participants"])
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    best = search.best_estimator_.named_steps["tuner"]
    assert list(best.participants_) == ["A", "B"]
    assert best.head_.__class__.__name__ == ("Linear" if head == "shared" else "ModuleList")
    # each test fold holds whole stories with both participants' rows
    for train, test in GroupKFold(n_splits=3).split(d["X"], d["y"], d["groups"]):
        assert set(d["groups"][train]).isdisjoint(d["groups"][test])
        assert set(d["participants"][test]) == {"A", "B"}


def test_participants_errors(models, two_listeners):
    d = two_listeners
    with pytest.raises(ValueError, match="head must be"):
        BrainTuner(models["whisper"], head="separate").fit(d["X"], d["y"])
    with pytest.raises(ValueError, match="participant_schedule"):
        BrainTuner(models["whisper"], participant_schedule="random").fit(d["X"], d["y"])
    with pytest.raises(ValueError, match="same participant"):
        BrainTuner(models["whisper"], **FAST).fit(d["X"], d["y"],
                                                  participants=np.full(len(d["y"]), "A"))
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        BrainTuner(models["whisper"], **FAST).fit(d["X"], d["y"], participants=["A", "B"])
    with pytest.raises(TypeError, match="list of Callback"):
        BrainTuner(models["whisper"], callbacks=Callback()).fit(d["X"], d["y"])
    with pytest.raises(TypeError, match="FrozenLayerCache"):
        BrainTuner(models["whisper"], frozen_layer_cache={}).fit(d["X"], d["y"])


# -- losses against NumPy ---------------------------------------------------------------------
def _numpy_loss_and_grad(pred, target, loss):
    B, K = pred.shape
    if loss == "spatial_correlation":
        pc = pred - pred.mean(1, keepdims=True)
        tc = target - target.mean(1, keepdims=True)
        npc, ntc = np.linalg.norm(pc, axis=1), np.linalg.norm(tc, axis=1)
        r = (pc * tc).sum(1) / (npc * ntc)
        grad = -(tc / (npc * ntc)[:, None] - r[:, None] * pc / (npc ** 2)[:, None]) / B
        return 1 - r.mean(), grad
    np_, nt = np.linalg.norm(pred, axis=1), np.linalg.norm(target, axis=1)
    cos = (pred * target).sum(1) / (np_ * nt)
    dcos = target / (np_ * nt)[:, None] - cos[:, None] * pred / (np_ ** 2)[:, None]
    diff = pred - target
    if loss == "cosine_mse":  # Huber(delta=0.6) + 0.5 * (1 - cos)
        delta = 0.6
        huber = np.where(np.abs(diff) < delta, 0.5 * diff ** 2, delta * (np.abs(diff) - delta / 2))
        value = huber.mean() + 0.5 * (1 - cos).mean()
        grad = np.clip(diff, -delta, delta) / (B * K) - 0.5 * dcos / B
        return value, grad
    if loss == "mse_plus_cosine":
        return (diff ** 2).mean() + (1 - cos).mean(), 2 * diff / (B * K) - dcos / B
    raise ValueError(loss)


@pytest.mark.parametrize("loss", ["spatial_correlation", "cosine_mse", "mse_plus_cosine"])
def test_losses_value_and_gradient_against_numpy(loss):
    rng = np.random.RandomState(0)
    pred = rng.randn(7, 11)
    target = 0.5 * pred + rng.randn(7, 11)
    assert np.mean(np.abs(pred - target) > 0.6) > 0.2  # both Huber branches are exercised
    expected, expected_grad = _numpy_loss_and_grad(pred, target, loss)
    p = torch.tensor(pred, dtype=torch.float32, requires_grad=True)
    value = _training.compute_loss(p, torch.tensor(target, dtype=torch.float32), loss)
    value.backward()
    assert value.item() == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(p.grad.numpy(), expected_grad, rtol=1e-4, atol=1e-7)


def test_spatial_correlation_ignores_each_samples_offset_and_scale():
    rng = np.random.RandomState(1)
    target = torch.tensor(rng.randn(5, 20), dtype=torch.float32)
    scaled = 3.0 * target + torch.tensor(rng.randn(5, 1), dtype=torch.float32)
    assert _training.compute_loss(scaled, target, "spatial_correlation").item() == \
        pytest.approx(0.0, abs=1e-6)
    assert _training.compute_loss(-target, target, "spatial_correlation").item() == \
        pytest.approx(2.0, abs=1e-6)


def test_new_losses_train(models, two_listeners):
    d = two_listeners
    for loss in ("spatial_correlation", "cosine_mse"):
        est = BrainTuner(models["whisper"], max_epochs=2, loss=loss, validation=0.34,
                         **FAST).fit(d["X"], d["y"], groups=d["groups"],
                                     participants=d["participants"])
        assert np.isfinite([h["valid_loss"] for h in est.history_]).all()


# -- the follow-up's recipe, callbacks, the shared cache ----------------------------------------
def test_recipe_parameters_reach_the_optimizer_and_adapters(models, two_listeners, monkeypatch):
    pytest.importorskip("peft")
    from sk_braintune.tuning import _network

    captured = {}
    real_make, real_lora = _training.make_optimizer, _network.apply_lora

    def make(*args, **kwargs):
        optimizer, base = real_make(*args, **kwargs)
        captured["optimizer"] = optimizer
        return optimizer, base

    def lora(*args, **kwargs):
        captured["dropout"] = kwargs.get("dropout")
        n = real_lora(*args, **kwargs)
        captured["dropout_modules"] = [m.p for name, m in args[0].named_modules()
                                       if "lora_dropout" in name and hasattr(m, "p")]
        return n

    monkeypatch.setattr(_training, "make_optimizer", make)
    monkeypatch.setattr(_network, "apply_lora", lora)
    d = two_listeners
    BrainTuner(models["wav2vec2"], lora_rank=8, lora_alpha=32, lora_dropout=0.1,
               optimizer="adamw", lr_backbone=1e-4, lr_head=1e-4, max_epochs=1, batch_size=16,
               validation=None, random_state=0).fit(d["X"], d["y"], groups=d["groups"],
                                                    participants=d["participants"])
    assert isinstance(captured["optimizer"], torch.optim.AdamW)
    assert [g["name"] for g in captured["optimizer"].param_groups] == ["backbone", "head"]
    assert captured["dropout"] == 0.1
    assert captured["dropout_modules"] and set(captured["dropout_modules"]) == {0.1}


def test_user_callbacks_see_every_hook_and_can_stop(models, two_listeners):
    d = two_listeners
    events = []

    class Recorder(Callback):
        def on_train_begin(self, estimator, run):
            events.append("begin")

        def on_epoch_begin(self, estimator, run):
            events.append(f"epoch{run.epoch}")

        def on_batch_end(self, estimator, run, train_loss):
            events.append("batch")

        def on_epoch_end(self, estimator, run):
            events.append(f"end{run.epoch}")
            run.stop_training = run.epoch == 1

        def on_train_end(self, estimator, run):
            events.append("train_end")

    single = d["participants"] == "A"
    est = BrainTuner(models["whisper"], max_epochs=5, validation=None, callbacks=[Recorder()],
                     **{**FAST, "batch_size": 32}).fit(d["X"][single], d["y"][single])
    assert len(est.history_) == 2
    steps = int(np.ceil(single.sum() / 32))
    assert events == ["begin", "epoch0", *["batch"] * steps, "end0", "epoch1",
                      *["batch"] * steps, "end1", "train_end"]


def test_early_stopping_lexicographic_rule():
    stopper = EarlyStopping(patience=2, monitor=("score", "loss"), lower_is_better=(False, True),
                            min_delta=(1e-12, 1e-3))
    assert stopper.update(0, (0.5, 1.0), lambda: "s0") is False and stopper.best_state == "s0"
    assert not stopper.is_improvement((0.5, 0.9995))  # tie on score, loss not clearly lower
    assert stopper.is_improvement((0.5, 0.99))
    assert not stopper.is_improvement((0.4, 0.1))  # lower score loses whatever the loss
    assert stopper.is_improvement((0.6, 5.0))
    assert not stopper.is_improvement((float("nan"), 0.0))
    assert stopper.update(1, (0.4, 0.1), lambda: "s1") is False
    assert stopper.update(2, (0.5, 1.0), lambda: "s2") is True  # two epochs without progress
    assert (stopper.best_epoch, stopper.best_state) == (0, "s0")


def test_frozen_cache_is_shared_by_clones_and_not_pickled(models, two_listeners):
    import copy
    import pickle

    from sklearn.base import clone

    cache = FrozenLayerCache()
    est = BrainTuner(models["whisper"], frozen_layer_cache=cache, max_epochs=1, validation=None,
                     **FAST)
    assert clone(est).frozen_layer_cache is cache and copy.deepcopy(cache) is cache
    d = two_listeners
    est.fit(d["X"], d["y"], groups=d["groups"], participants=d["participants"])
    assert len(cache) == 1
    (hidden, _), = cache._entries.values()
    assert hidden.shape[0] == len(d["windows"])  # distinct windows only, not rows
    restored = pickle.loads(pickle.dumps(est))
    assert len(restored.frozen_layer_cache) == 0
    np.testing.assert_array_equal(restored.predict(d["X"][:5]), est.predict(d["X"][:5]))
    # without a cache object nothing is kept
    other = BrainTuner(models["whisper"], max_epochs=1, validation=None, **FAST)
    other.fit(d["X"], d["y"])
    assert other.frozen_layer_cache is None


def test_resume_with_participants_equals_uninterrupted_run(models, two_listeners, tmp_path):
    d = two_listeners
    params = dict(FAST, max_epochs=3, validation=0.34, patience=None)
    fit_args = dict(groups=d["groups"], participants=d["participants"])
    reference = BrainTuner(models["whisper"], **params).fit(d["X"], d["y"], **fit_args)

    class Interrupt(Callback):
        def on_epoch_end(self, estimator, run):
            if run.epoch == 1:
                raise KeyboardInterrupt

    ckpt = str(tmp_path / "ckpt")
    with pytest.raises(KeyboardInterrupt):
        BrainTuner(models["whisper"], checkpoint_dir=ckpt, callbacks=[Interrupt()],
                   **params).fit(d["X"], d["y"], **fit_args)
    resumed = BrainTuner(models["whisper"], checkpoint_dir=ckpt, **params).fit(
        d["X"], d["y"], **fit_args)
    np.testing.assert_array_equal(resumed.predict(d["X"]), reference.predict(d["X"]))
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in reference.history_]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in resumed.history_] == strip
    # the participants are part of the data a checkpoint belongs to
    swapped = np.where(d["participants"] == "A", "B", "A")
    with pytest.raises(ValueError, match="another data"):
        BrainTuner(models["whisper"], checkpoint_dir=ckpt, **params).fit(
            d["X"], d["y"], groups=d["groups"], participants=swapped)
