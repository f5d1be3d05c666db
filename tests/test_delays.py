"""Tests of FIRDelayer: hand-built shifts, story boundaries, names, routing."""

import numpy as np
import pytest
import sklearn
from sklearn.pipeline import make_pipeline

from sk_braintune.encoding import FIRDelayer, RidgeEncoder


def _hand_delayed(X, groups, delays):
    """Loop-by-loop reference: out[t, block k] = X[t - d_k] if same story else 0."""
    n, p = X.shape
    out = np.zeros((n, len(delays) * p))
    for t in range(n):
        for k, d in enumerate(delays):
            s = t - d
            if 0 <= s < n and groups[s] == groups[t]:
                out[t, k * p:(k + 1) * p] = X[s]
    return out


@pytest.mark.parametrize("delays", [(1, 2, 3, 4), (0, 2), (-1, 1)])
def test_delays_equal_hand_built_shift(delays):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((23, 3))
    groups = np.repeat(["s1", "s2", "s3"], [10, 3, 10])
    out = FIRDelayer(delays=delays).fit_transform(X, groups=groups)
    np.testing.assert_array_equal(out, _hand_delayed(X, groups, delays))
    # without groups: one contiguous run in the given order
    out_single = FIRDelayer(delays=delays).fit_transform(X)
    np.testing.assert_array_equal(out_single, _hand_delayed(X, np.zeros(23), delays))


def test_no_leakage_across_stories_and_padding_mask():
    X = np.vstack([np.full((5, 2), 1.0), np.full((5, 2), 2.0)])
    groups = np.repeat([0, 1], 5)
    delayer = FIRDelayer(delays=(1, 2))
    out = delayer.fit_transform(X, groups=groups)
    assert not np.any(out[5:] == 1.0)  # story 1 never sees story 0
    mask = delayer.padding_mask(10, groups)
    assert mask.shape == (10, 2)
    expected = np.zeros((10, 2), bool)
    expected[[0, 5], 0] = True
    expected[[0, 1, 5, 6], 1] = True
    np.testing.assert_array_equal(mask, expected)
    # the masked blocks are exactly the zero-filled ones
    blocks = out.reshape(10, 2, 2)
    np.testing.assert_array_equal(np.all(blocks == 0, axis=2), mask)


def test_noncontiguous_groups_raise():
    X = np.zeros((6, 1))
    with pytest.raises(ValueError, match="contiguous run"):
        FIRDelayer().fit_transform(X, groups=[0, 0, 1, 1, 0, 0])
    with pytest.raises(ValueError, match="one story label per sample"):
        FIRDelayer().fit_transform(X, groups=[0, 0, 1])
    with pytest.raises(ValueError, match="whole numbers"):
        FIRDelayer(delays=(1.5,)).fit_transform(X)


def test_feature_names_dtype_and_set_output():
    pd = pytest.importorskip("pandas")
    X = pd.DataFrame(np.arange(8, dtype=np.float32).reshape(4, 2), columns=["a", "b"])
    delayer = FIRDelayer(delays=(1, 2)).set_output(transform="pandas")
    out = delayer.fit_transform(X)
    assert list(out.columns) == ["a_delay1", "b_delay1", "a_delay2", "b_delay2"]
    assert list(out["a_delay1"]) == [0.0, 0.0, 2.0, 4.0]
    assert out.dtypes.iloc[0] == np.float32
    plain = FIRDelayer(delays=(3,)).fit(np.zeros((2, 2)))
    assert list(plain.get_feature_names_out()) == ["x0_delay3", "x1_delay3"]


def test_routed_groups_in_pipeline_prevent_leakage():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((60, 2))
    y = rng.standard_normal((60, 3))
    groups = np.repeat([0, 1, 2], 20)
    with sklearn.config_context(enable_metadata_routing=True):
        delayer = FIRDelayer(delays=(1, 2)).set_fit_request(groups=True).set_transform_request(
            groups=True)
        pipe = make_pipeline(delayer, RidgeEncoder(alphas=[1.0, 10.0], cv=3).set_fit_request(
            groups=True))
        pipe.fit(X, y, groups=groups)
        routed = pipe.predict(X, groups=groups)
    delayed = FIRDelayer(delays=(1, 2)).fit_transform(X, groups=groups)
    reference = RidgeEncoder(alphas=[1.0, 10.0], cv=3).fit(delayed, y, groups=groups)
    np.testing.assert_allclose(routed, reference.predict(delayed), rtol=1e-5, atol=1e-6)
