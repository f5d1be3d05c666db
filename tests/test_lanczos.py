"""Lanczos resampling against an independent loop over the HuthLab formula."""

import numpy as np
import pytest

from lanczos_reference import loop_lanczos

from sk_braintune.features.lanczos import lanczos_resample, lanczos_weights


@pytest.mark.parametrize("window,cutoff_mult", [(3, 1.0), (2, 0.8)])
def test_unnormalised_equals_loop_formula(window, cutoff_mult):
    rng = np.random.default_rng(0)
    old_times = np.sort(rng.uniform(0, 30, 157))
    new_times = np.arange(1.0, 29.0, 2.0045)
    data = rng.standard_normal((157, 4))
    ours = lanczos_resample(data, old_times, new_times, window=window, cutoff_mult=cutoff_mult)
    np.testing.assert_allclose(ours, loop_lanczos(data, old_times, new_times, window,
                                                   cutoff_mult), rtol=1e-10, atol=1e-12)


def test_unnormalised_gain_is_ratio_of_rates_and_float32_kept():
    old_times = np.arange(0, 200, 0.1)
    new_times = np.arange(20, 180, 2.0)
    ones = np.ones((old_times.size, 1), dtype=np.float32)
    out = lanczos_resample(ones, old_times, new_times)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, 20.0, rtol=0.01)  # 2 s TR / 0.1 s frames


def test_normalised_weights_recover_slow_sinusoid():
    old_times = np.arange(0, 120, 0.1)
    new_times = np.arange(10, 110, 2.0)
    signal = np.sin(2 * np.pi * old_times / 30.0)
    out = lanczos_resample(signal, old_times, new_times, normalize=True)
    assert out.shape == new_times.shape
    np.testing.assert_allclose(out, np.sin(2 * np.pi * new_times / 30.0), atol=0.01)
    weights = lanczos_weights(old_times, new_times, normalize=True)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)


def test_weights_properties():
    new_times = np.arange(0, 10, 1.0)
    weights = lanczos_weights(new_times, new_times)
    np.testing.assert_allclose(weights, np.eye(10), atol=1e-12)  # zeros at integer offsets
    far = lanczos_weights(np.array([100.0]), new_times)
    assert np.all(far == 0)


def test_errors():
    with pytest.raises(ValueError, match="rows"):
        lanczos_resample(np.zeros((3, 2)), np.arange(4), np.arange(5))
    with pytest.raises(ValueError, match="two new times"):
        lanczos_weights(np.arange(3), np.array([1.0]))


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_resample_over_bands_equals_the_weight_matrix(normalize, dtype):
    # lanczos_resample sums each row over its band only (an hour of 0.01 s frames would make
    # a 6 GB matrix); the numbers are those of the whole weight matrix
    rng = np.random.default_rng(0)
    old = np.sort(rng.uniform(0, 100, 3000))
    new = np.arange(1.0, 99.0, 2.0)
    data = rng.standard_normal((old.size, 3)).astype(dtype)
    weights = lanczos_weights(old, new, normalize=normalize)
    out = lanczos_resample(data, old, new, normalize=normalize)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, weights @ data.astype(np.float64),
                               rtol=1e-5 if dtype == np.float32 else 1e-12,
                               atol=1e-4 if dtype == np.float32 else 1e-12)
    one = lanczos_resample(data[:, 0], old, new, normalize=normalize)
    np.testing.assert_allclose(one, out[:, 0], rtol=1e-5, atol=1e-5)
