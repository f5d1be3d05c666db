"""SemanticProbe: planted accuracy, chance on shuffled labels, layer weighting, audio input."""

import numpy as np
import pytest
import torch

from sk_braintune.analysis.probe import SemanticProbe, pooled_layer_features, probe_layers
from sk_braintune.features.extractor import resolve_backbone


FAST = dict(lr=0.05, max_epochs=100, random_state=0)  # converges well within the test budget


def _layered(n, rng, informative_layer=1, n_layers=3, dim=8, n_classes=4, margin=4.0):
    """Features where only one layer carries the class."""
    y = rng.integers(0, n_classes, n)
    X = rng.standard_normal((n, n_layers, dim))
    centres = rng.standard_normal((n_classes, dim))
    centres *= margin / np.linalg.norm(centres, axis=1, keepdims=True)
    X[:, informative_layer] += centres[y]
    return X.astype(np.float32), y


def test_reaches_planted_accuracy():
    rng = np.random.default_rng(0)
    X, y = _layered(600, rng, margin=8.0)
    # test data from the training centres (estimated)
    rng2 = np.random.default_rng(2)
    centres = np.stack([X[y == c, 1].mean(axis=0) for c in range(4)])
    y_test = rng2.integers(0, 4, 400)
    X_test = rng2.standard_normal((400, 3, 8)).astype(np.float32)
    X_test[:, 1] += centres[y_test]
    flipped = rng2.random(400) < 0.2  # 20 % of the test labels replaced by another class
    y_noisy = np.where(flipped, (y_test + rng2.integers(1, 4, 400)) % 4, y_test)
    probe = SemanticProbe(layer=1, **FAST).fit(X, y)
    assert probe.score(X_test, y_test) > 0.97
    assert probe.score(X_test, y_noisy) == pytest.approx(1 - flipped.mean(), abs=0.03)
    assert probe.best_epoch_ < len(probe.history_)
    np.testing.assert_array_equal(probe.layer_weights_, [0, 1, 0])


def test_chance_on_shuffled_labels_and_on_uninformative_layers():
    rng = np.random.default_rng(0)
    X, y = _layered(600, rng)
    X_test, y_test = X[400:], y[400:]
    X, y = X[:400], y[:400]
    shuffled = np.random.default_rng(5).permutation(y)
    assert SemanticProbe(layer=1, **FAST).fit(X, shuffled).score(X_test, y_test) < 0.4
    assert SemanticProbe(layer=0, **FAST).fit(X, y).score(X_test, y_test) < 0.4
    assert SemanticProbe(layer=1, **FAST).fit(X, y).score(X_test, y_test) > 0.85


def test_weighted_layers_find_the_informative_layer():
    rng = np.random.default_rng(0)
    X, y = _layered(500, rng, informative_layer=2)
    probe = SemanticProbe(layer="weighted", **FAST).fit(X[:400], y[:400])
    assert probe.layer_weights_.argmax() == 2
    assert probe.layer_weights_.sum() == pytest.approx(1.0)
    assert probe.score(X[400:], y[400:]) > 0.85
    proba = probe.predict_proba(X[400:])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(probe.classes_[proba.argmax(axis=1)], probe.predict(X[400:]))


def test_string_classes_and_groups_for_validation():
    rng = np.random.default_rng(0)
    X, y = _layered(300, rng)
    labels = np.array(["alarm", "call", "music", "weather"])[y]
    groups = np.arange(300) % 10
    probe = SemanticProbe(layer=1, scoring="f1", **FAST).fit(X, labels, groups=groups)
    assert list(probe.classes_) == ["alarm", "call", "music", "weather"]
    assert probe.predict(X).dtype == labels.dtype
    assert probe.score(X, labels) > 0.85


def test_multilabel_uses_bce_and_f1():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((500, 2, 6)).astype(np.float32)
    Y = (X[:, 1, :3] > 0).astype(int)  # three independent labels read from layer 1
    probe = SemanticProbe(layer=1, scoring="f1_micro", **FAST).fit(X[:400], Y[:400])
    assert probe.predict(X[400:]).shape == (100, 3)
    assert probe.score(X[400:], Y[400:]) > 0.9
    proba = probe.predict_proba(X[400:])
    assert proba.shape == (100, 3) and ((proba >= 0) & (proba <= 1)).all()


def test_probe_layers_table():
    rng = np.random.default_rng(0)
    X, y = _layered(500, rng)
    table = probe_layers(X[:350], y[:350], X[350:], y[350:], **FAST)
    assert list(table["layer"]) == [0, 1, 2, "weighted"]
    scores = table.set_index("layer")["score"]
    assert scores[1] > 0.85 and scores[0] < 0.4 and scores["weighted"] > 0.85


def test_invalid_inputs_are_clear_errors():
    X = np.zeros((10, 4))
    with pytest.raises(ValueError, match="only one class"):
        SemanticProbe().fit(X, np.zeros(10))
    with pytest.raises(ValueError, match="out of range"):
        SemanticProbe(layer=3).fit(np.zeros((10, 2, 4)), np.arange(10) % 2)
    with pytest.raises(ValueError, match="scoring"):
        SemanticProbe(scoring="auc").fit(X, np.arange(10) % 2)
    with pytest.raises(TypeError, match="model name"):
        resolve_backbone(3.0)


@pytest.fixture(scope="module")
def tiny_wav2vec2(tmp_path_factory):
    from sk_braintune.testing.models import make_tiny_model

    return make_tiny_model("wav2vec2", tmp_path_factory.mktemp("w2v"))


def test_pooled_features_from_audio_match_a_direct_backbone_call(tiny_wav2vec2):
    import torch

    from sk_braintune.models.backbone import load_backbone

    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (4000, 6400, 4000)]
    feats = pooled_layer_features(tiny_wav2vec2, clips, device="cpu", batch_size=2)
    backbone = load_backbone(tiny_wav2vec2)
    assert feats.shape == (3, backbone.num_hidden_layers + 1, backbone.hidden_size)
    with torch.inference_mode():
        for i, clip in enumerate(clips):  # each clip alone: padding never leaks in
            out = backbone(torch.from_numpy(clip)[None])
            expected = torch.stack([h[0].mean(dim=0) for h in out.hidden_states]).numpy()
            np.testing.assert_allclose(feats[i], expected, rtol=1e-4, atol=1e-5)
    # padded batching: same shapes; equal-length clips unchanged, the padded one only close
    fast = pooled_layer_features(tiny_wav2vec2, clips, device="cpu", batch_size=3, exact=False)
    np.testing.assert_allclose(fast[1], feats[1], rtol=1e-4, atol=1e-5)  # longest: no padding
    assert np.corrcoef(fast[0].ravel(), feats[0].ravel())[0, 1] > 0.9


def test_probe_on_raw_audio_with_an_extractor(tiny_wav2vec2):
    from sklearn.frozen import FrozenEstimator

    rng = np.random.default_rng(0)
    # two "classes" of sound: low and high tones, of varied lengths
    t = [np.arange(n) / 16000 for n in rng.integers(4000, 8000, 40)]
    y = np.arange(40) % 2
    clips = [np.sin(2 * np.pi * (200 if c == 0 else 3000) * tt).astype(np.float32) * 0.5
             for tt, c in zip(t, y)]
    probe = SemanticProbe(layer=0, extractor=tiny_wav2vec2, **FAST).fit(clips, y)
    assert probe.score(clips, y) > 0.9
    feats = pooled_layer_features(tiny_wav2vec2, clips, device="cpu")
    on_feats = SemanticProbe(layer=0, **FAST).fit(feats, y)
    np.testing.assert_array_equal(on_feats.predict(feats), probe.predict(clips))

    class Fitted:  # anything exposing a fitted backbone_, e.g. a BrainTuner
        def fit(self, X, y=None):
            return self

    holder = Fitted()
    holder.backbone_ = resolve_backbone(tiny_wav2vec2, device="cpu")
    copied = resolve_backbone(FrozenEstimator(holder), device="cpu")
    assert copied is not holder.backbone_  # the fitted model is never modified
    for (name, a), (_, b) in zip(holder.backbone_.state_dict().items(),
                                 copied.state_dict().items()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="fit it first"):
        resolve_backbone(FrozenEstimator(Fitted()))
