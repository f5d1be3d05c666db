"""SpeechFeatureExtractor against direct Hugging Face calls; cache, pickling, sklearn use."""

import pickle

import numpy as np
import pytest
from hf_reference import hf_reference

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.frozen import FrozenEstimator  # noqa: E402
from sklearn.linear_model import Ridge  # noqa: E402
from sklearn.model_selection import GridSearchCV, GroupKFold  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402

from sk_braintune.features.extractor import SpeechFeatureExtractor  # noqa: E402
from sk_braintune.models.backbone import load_backbone  # noqa: E402
from sk_braintune.testing.models import make_tiny_model  # noqa: E402
from sk_braintune.windows import make_windows  # noqa: E402

FAMILIES = ("wav2vec2", "hubert", "wavlm", "whisper")
SR = 16000
WINDOW_S = 1.5
TR = 0.5


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_models")
    return {f: make_tiny_model(f, root / f) for f in FAMILIES}


@pytest.fixture(scope="module")
def windows():
    rng = np.random.default_rng(1)
    audio = {"a": (0.1 * rng.standard_normal(5 * SR)).astype(np.float32),
             "b": (0.1 * rng.standard_normal(4 * SR)).astype(np.float32)}
    tr_times = {"a": np.arange(4) * 1.1 + 0.7, "b": np.arange(3) * 1.1 + 0.5}
    return make_windows(audio, tr_times, window=WINDOW_S, tr=TR)


def _hf_frames(path, x):
    """All hidden states (L+1, B, F, D) from the plain HF model + its feature extractor."""
    out = hf_reference(path, x, sliced_frames=int(np.ceil(x.shape[1] / 320)))
    return np.stack([h.numpy() for h in out.hidden_states])


def _pool(frames, pooling, n_tr_frames):
    if pooling == "mean":
        return frames.mean(axis=-2)
    if pooling == "last":
        return frames[..., -1, :]
    return frames[..., -n_tr_frames:, :].mean(axis=-2)


@pytest.mark.parametrize("pooling", ["mean", "last", "last_tr_mean"])
@pytest.mark.parametrize("family", FAMILIES)
def test_features_equal_direct_hugging_face_call(model_dirs, windows, family, pooling):
    extractor = SpeechFeatureExtractor(model_dirs[family], pooling=pooling, batch_size=3, tr=TR)
    features = extractor.fit_transform(windows)
    frames = _hf_frames(model_dirs[family], windows.to_array())  # (L+1, B, F, D)
    expected = _pool(frames, pooling, n_tr_frames=round(TR * SR / 320))
    expected = np.concatenate(list(expected), axis=1)  # layer blocks side by side
    assert features.dtype == np.float32
    assert features.shape == (len(windows), 3 * 32)
    np.testing.assert_allclose(features, expected, atol=2e-5, rtol=1e-4)


def test_whisper_pad_mode_pools_only_real_frames(model_dirs, windows):
    from sk_braintune.features.extractor import pooled_features

    backbone = load_backbone(model_dirs["whisper"], whisper_input="pad")
    x = windows.to_array()[:2]
    features = pooled_features(backbone, x, [2], "mean")
    with torch.inference_mode():
        out = backbone(x)
    real = int(np.ceil(x.shape[1] / 320))
    assert out.frame_mask.sum(dim=1).tolist() == [real, real]
    expected = out.hidden_states[2][:, :real].mean(dim=1).numpy()
    np.testing.assert_allclose(features, expected, atol=1e-6)
    padded_mean = out.hidden_states[2].mean(dim=1).numpy()
    assert not np.allclose(features, padded_mean, atol=1e-3)


def test_layer_selection_and_feature_names(model_dirs, windows):
    path = model_dirs["wavlm"]
    everything = SpeechFeatureExtractor(path).fit_transform(windows)
    ext = SpeechFeatureExtractor(path, layers=(2, 0)).fit(windows)
    two = ext.transform(windows)
    np.testing.assert_array_equal(two[:, :32], everything[:, 64:96])
    np.testing.assert_array_equal(two[:, 32:], everything[:, :32])
    last = SpeechFeatureExtractor(path, layers=-1).fit(windows)
    assert last.layers_ == (2,)
    names = ext.get_feature_names_out()
    assert names[0] == "layer02_0000" and names[33] == "layer00_0001" and len(names) == 64
    with pytest.raises(ValueError, match="out of range"):
        SpeechFeatureExtractor(path, layers=3).fit(windows)


def test_array_list_and_windows_inputs_agree(model_dirs, windows):
    ext = SpeechFeatureExtractor(model_dirs["hubert"], batch_size=2).fit(windows)
    from_windows = ext.transform(windows)
    array = windows.to_array()
    np.testing.assert_allclose(ext.transform(array), from_windows, atol=1e-6)
    np.testing.assert_allclose(ext.transform(list(array)), from_windows, atol=1e-6)
    np.testing.assert_allclose(ext.transform(array.astype(np.float64)), from_windows, atol=1e-6)


def test_set_output_pandas(model_dirs, windows):
    pd = pytest.importorskip("pandas")
    ext = SpeechFeatureExtractor(model_dirs["wav2vec2"], layers=1).set_output(transform="pandas")
    frame = ext.fit_transform(windows)
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns[:2]) == ["layer01_0000", "layer01_0001"]


def test_pickle_and_clone(model_dirs, windows):
    ext = SpeechFeatureExtractor(model_dirs["wav2vec2"], layers=(1, 2)).fit(windows)
    restored = pickle.loads(pickle.dumps(ext))
    np.testing.assert_array_equal(restored.transform(windows), ext.transform(windows))
    fresh = clone(ext)
    assert fresh.get_params() == ext.get_params()
    assert not hasattr(fresh, "backbone_")


class _FakeTuner:
    """Stands in for a fitted BrainTuner: anything with a ``backbone_``."""

    def __init__(self, model=None):
        self.model = model

    def fit(self, X, y=None):
        self.backbone_ = load_backbone(self.model)
        return self

    def get_params(self, deep=True):
        return {"model": self.model}

    def set_params(self, **params):
        self.model = params.get("model", self.model)
        return self


def test_frozen_fitted_tuner_as_model(model_dirs, windows):
    path = model_dirs["whisper"]
    tuner = _FakeTuner(path).fit(None)
    via_tuner = SpeechFeatureExtractor(FrozenEstimator(tuner)).fit_transform(windows)
    np.testing.assert_array_equal(via_tuner, SpeechFeatureExtractor(path).fit_transform(windows))
    with pytest.raises(NotFittedError, match="FrozenEstimator"):
        SpeechFeatureExtractor(FrozenEstimator(_FakeTuner(path))).fit(windows)


def test_bad_inputs_are_clear_errors(model_dirs, windows):
    path = model_dirs["whisper"]
    with pytest.raises(ValueError, match="pooling"):
        SpeechFeatureExtractor(path, pooling="max").fit(windows)
    with pytest.raises(ValueError, match="needs a model"):
        SpeechFeatureExtractor().fit(windows)
    with pytest.raises(ValueError, match="same number of samples"):
        SpeechFeatureExtractor(path).fit([np.zeros(800), np.zeros(900)])
    with pytest.raises(ValueError, match="30 s"):
        SpeechFeatureExtractor(path).fit(np.zeros((1, 31 * SR), dtype=np.float32))
    with pytest.raises(ValueError, match="float32"):
        SpeechFeatureExtractor(path, device="cpu", dtype="bfloat16").fit(windows)
    with pytest.raises(ValueError, match="at least"):
        SpeechFeatureExtractor(model_dirs["wavlm"]).fit(np.zeros((2, 100)))
    ext = SpeechFeatureExtractor(path).fit(windows)
    with pytest.raises(ValueError, match="expecting 24000 features"):
        ext.transform(np.zeros((2, 800), dtype=np.float32))


def _count_forwards(extractor):
    calls = []
    original = extractor.backbone_.hidden_states_at

    def counting(x, layers):
        calls.append(x.shape[0])
        return original(x, layers)

    extractor.backbone_.hidden_states_at = counting
    return calls


def test_cache_hit_miss_and_corrupt_entry(model_dirs, windows, tmp_path):
    path = model_dirs["wav2vec2"]
    reference = SpeechFeatureExtractor(path).fit_transform(windows)
    ext = SpeechFeatureExtractor(path, cache_dir=tmp_path).fit(windows)
    calls = _count_forwards(ext)
    np.testing.assert_array_equal(ext.transform(windows), reference)
    assert sum(calls) == len(windows)  # miss: computed once
    np.testing.assert_array_equal(ext.transform(windows), reference)
    assert sum(calls) == len(windows)  # hit: no model call
    # a subset of one story is served from that story's entry
    np.testing.assert_array_equal(ext.transform(windows[[5, 4]]), reference[[5, 4]])
    assert sum(calls) == len(windows)
    # arrays have their own entries
    array = windows.to_array()[:3]
    np.testing.assert_allclose(ext.transform(array), reference[:3], atol=1e-6)
    np.testing.assert_allclose(ext.transform(array), reference[:3], atol=1e-6)
    assert sum(calls) == len(windows) + 3
    # truncate every entry: detected, warned about, recomputed
    for entry in tmp_path.glob("*.npz"):
        entry.write_bytes(entry.read_bytes()[:-10])
    with pytest.warns(UserWarning, match="corrupt"):
        again = ext.transform(windows)
    np.testing.assert_array_equal(again, reference)
    assert sum(calls) == 2 * len(windows) + 3
    # another model or pooling never shares entries
    other = SpeechFeatureExtractor(path, pooling="last", cache_dir=tmp_path).fit(windows)
    other_calls = _count_forwards(other)
    other.transform(windows)
    assert sum(other_calls) == len(windows)


def test_grid_search_over_ridge_never_re_extracts(model_dirs, windows, tmp_path):
    rng = np.random.default_rng(0)
    y = rng.standard_normal((len(windows), 4))
    pipe = make_pipeline(SpeechFeatureExtractor(model_dirs["whisper"], layers=2,
                                                cache_dir=tmp_path), Ridge())
    search = GridSearchCV(pipe, {"ridge__alpha": [0.1, 1.0, 10.0]}, cv=GroupKFold(2))
    search.fit(windows, y, groups=windows.groups)
    n_entries = len(list(tmp_path.glob("*.npz")))
    assert n_entries == 2  # one per story, reused by every fold and alpha

    # with the cache warm, a repeated search runs no forward pass at all
    def no_forward(*args, **kwargs):
        raise AssertionError("re-extracted")

    from sk_braintune.models import backbone as backbone_module

    original = backbone_module.AudioBackbone.hidden_states_at
    backbone_module.AudioBackbone.hidden_states_at = no_forward
    try:
        clone(search).fit(windows, y, groups=windows.groups)
    finally:
        backbone_module.AudioBackbone.hidden_states_at = original


@pytest.mark.parametrize("family", ["wav2vec2", "whisper"])
def test_pooled_features_tops_equal_running_each_model(model_dirs, windows, family):
    """The demo's shared frozen layers: one pretrained pass + each tuned model's top block."""
    from sk_braintune.features.extractor import TopBlockFeatures, forward_batches, pooled_features

    pretrained = load_backbone(model_dirs[family])
    tuned = load_backbone(model_dirs[family])
    with torch.no_grad():  # a different last block, everything below shared
        for p in tuned._layers[-1].parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    tuned.train()  # left in training mode: the loop must run it in eval mode and restore
    layers = range(pretrained.num_hidden_layers + 1)
    reader = TopBlockFeatures(pretrained, {"tuned": tuned}, len(windows), layers=layers)
    forward_batches(pretrained, windows, reader.layers, reader, batch_size=3,
                    also_eval=reader.modules)
    shared, tops = reader.features, reader.top_features
    assert tuned.training
    np.testing.assert_array_equal(shared, pooled_features(pretrained, windows, layers,
                                                          batch_size=3))
    alone = pooled_features(tuned, windows, layers, batch_size=3)
    np.testing.assert_allclose(tops["tuned"], alone, atol=1e-5, rtol=1e-5)
    dim = pretrained.hidden_size
    assert not np.allclose(tops["tuned"][:, -dim:], shared[:, -dim:], atol=1e-3)


def test_pooled_features_head_and_batches_against_direct_calls(model_dirs, windows):
    from sk_braintune.features.extractor import TopBlockFeatures, forward_batches
    from sk_braintune.models.pooling import pool_frames
    from sk_braintune.tuning._network import HeadOutputs

    backbone = load_backbone(model_dirs["wav2vec2"])
    head = torch.nn.Linear(backbone.hidden_size, 3)
    x = windows.to_array()
    with torch.inference_mode():
        out = backbone(torch.from_numpy(x), output_hidden_states=False)
        pooled = pool_frames(out.last_hidden_state, out.frame_mask)
        expected = head(pooled).numpy()
    order = [np.array([4, 0]), np.arange(1, 4), np.arange(5, len(x))]  # any partition
    predictions = HeadOutputs(head, len(x), "mean")
    forward_batches(backbone, windows, "last_hidden_state", predictions, batches=order)
    got = predictions.outputs
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
    seen = []
    forward_batches(backbone, windows, [1], lambda index, hidden, mask: seen.append(
        (index.tolist(), hidden[0].shape[0])), batch_size=4,
        progress=lambda it, desc, total: (seen.append((desc, total)), it)[1])
    assert seen[0] == ("features", -(-len(x) // 4))
    assert [s[0] for s in seen[1:]] == [list(range(i, min(i + 4, len(x))))
                                       for i in range(0, len(x), 4)]
    with pytest.raises(ValueError, match="last_hidden_state"):
        forward_batches(backbone, windows, [0, 1], HeadOutputs(head, len(x), "mean"))
    with pytest.raises(ValueError, match="ending with"):
        TopBlockFeatures(backbone, {}, len(x), layers=[0])
