"""Control target builders: statistics of the permutations and mappings."""

import numpy as np
import pytest

from sk_braintune.tuning.controls import (
    block_permuted_targets,
    other_story_targets,
    phase_randomized_targets,
    representation_targets,
)


@pytest.mark.parametrize("n_trs", [300, 311, 450])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_block_permutation_keeps_marginals_and_moves_blocks_far(n_trs, seed):
    rng = np.random.RandomState(seed)
    y = rng.randn(n_trs, 4).astype(np.float32)
    permuted, index = block_permuted_targets(y, block_size=15, min_distance=10,
                                             random_state=seed, return_permutation=True)
    assert permuted.shape == y.shape and permuted.dtype == y.dtype
    # a row permutation: same multiset of rows, so identical marginals
    assert np.array_equal(np.sort(index), np.arange(n_trs))
    np.testing.assert_array_equal(np.sort(permuted, axis=0), np.sort(y, axis=0))
    np.testing.assert_array_equal(permuted, y[index])
    # blocks stay contiguous and every block lands >= 10 block positions from home
    placed_blocks, position = [], 0
    while position < n_trs:
        first = index[position]
        assert first % 15 == 0
        length = min(15, n_trs - first)
        np.testing.assert_array_equal(index[position:position + length],
                                      np.arange(first, first + length))
        placed_blocks.append(first // 15)
        position += length
    assert sorted(placed_blocks) == list(range(-(-n_trs // 15)))
    for placed_at, block in enumerate(placed_blocks):
        assert abs(placed_at - block) >= 10


def test_block_permutation_is_random_and_seeded():
    y = np.arange(600, dtype=float)[:, None]
    a = block_permuted_targets(y, random_state=0)
    b = block_permuted_targets(y, random_state=0)
    c = block_permuted_targets(y, random_state=1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_block_permutation_per_story_never_mixes_stories():
    groups = np.repeat(["a", "b"], [300, 320])
    y = np.arange(620, dtype=float)[:, None]
    permuted, index = block_permuted_targets(y, groups=groups, random_state=0,
                                             return_permutation=True)
    assert np.all(groups[index] == groups)
    assert not np.array_equal(permuted, y)


def test_block_permutation_too_short_story_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 20 blocks"):
        block_permuted_targets(np.zeros((200, 3)), block_size=15, min_distance=10)
    # exactly 2 * min_distance blocks is feasible
    out = block_permuted_targets(np.arange(60.0), block_size=3, min_distance=10, random_state=0)
    assert sorted(out) == list(np.arange(60.0))


@pytest.mark.parametrize("seed", range(5))
def test_other_story_mapping_never_maps_a_story_to_itself(seed):
    rng = np.random.RandomState(seed)
    lengths = {"a": 50, "b": 70, "c": 30, "d": 64}
    responses = {s: rng.randn(n, 3) for s, n in lengths.items()}
    targets, mapping = other_story_targets(responses, random_state=seed)
    assert set(mapping) == set(responses)
    assert all(src != s for s, src in mapping.items())
    # a derangement that is a permutation: every story's responses are used once
    assert sorted(mapping.values()) == sorted(responses)
    for s, source in mapping.items():
        assert targets[s].shape == responses[s].shape
        n, m = lengths[s], lengths[source]
        expected = responses[source][np.arange(n) % m]  # cropped or wrapped
        np.testing.assert_array_equal(targets[s], expected)


def test_other_story_explicit_mapping_and_errors():
    responses = {"a": np.zeros((4, 2)), "b": np.ones((6, 2))}
    targets, mapping = other_story_targets(responses, mapping={"a": "b", "b": "a"})
    np.testing.assert_array_equal(targets["a"], np.ones((4, 2)))
    np.testing.assert_array_equal(targets["b"], np.zeros((6, 2)))  # wrapped 4 -> 6 rows
    with pytest.raises(ValueError, match="themselves"):
        other_story_targets(responses, mapping={"a": "a", "b": "a"})
    with pytest.raises(ValueError, match="at least two stories"):
        other_story_targets({"a": np.zeros((4, 2))})


def test_representation_targets_are_zscored_per_story():
    rng = np.random.RandomState(0)
    features = rng.randn(100, 6) * 5 + 3
    features[:, 5] = 1.0  # constant column
    groups = np.repeat([0, 1], 50)
    targets = representation_targets(features, groups=groups)
    assert targets.dtype == np.float32
    for g in (0, 1):
        block = targets[groups == g]
        np.testing.assert_allclose(block[:, :5].mean(0), 0, atol=1e-5)
        np.testing.assert_allclose(block[:, :5].std(0), 1, atol=1e-5)
        np.testing.assert_array_equal(block[:, 5], 0)
    reduced = representation_targets(features, n_components=3, random_state=0)
    assert reduced.shape == (100, 3)
    np.testing.assert_allclose(reduced.std(0), 1, atol=1e-5)


def _ar1(n_trs, n_voxels, phi, rng):
    """AR(1) series with a common driver: autocorrelated and correlated across voxels."""
    noise = rng.standard_normal((n_trs, n_voxels)) + rng.standard_normal((n_trs, 1))
    y = np.empty_like(noise)
    y[0] = noise[0]
    for t in range(1, n_trs):
        y[t] = phi * y[t - 1] + noise[t]
    return y + 3.0


@pytest.mark.parametrize("n_trs", [200, 201])
def test_phase_randomization_keeps_spectra_autocorrelation_and_covariance(n_trs):
    rng = np.random.default_rng(0)
    y = _ar1(n_trs, 5, 0.8, rng)
    s = phase_randomized_targets(y, random_state=1)
    assert s.shape == y.shape and s.dtype == y.dtype
    # every voxel's periodogram, hence its mean and variance (Parseval), is kept exactly
    np.testing.assert_allclose(np.abs(np.fft.rfft(s, axis=0)), np.abs(np.fft.rfft(y, axis=0)),
                               rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(s.mean(0), y.mean(0), atol=1e-10)
    np.testing.assert_allclose(s.var(0), y.var(0), rtol=1e-10)

    # circular autocorrelation computed directly from its definition
    def circular_autocorrelation(x, lag):
        c = x - x.mean(0)
        return (c * np.roll(c, lag, axis=0)).sum(0)

    for lag in (1, 2, 5):
        np.testing.assert_allclose(circular_autocorrelation(s, lag),
                                   circular_autocorrelation(y, lag), rtol=1e-8)
    # the shared phase shift keeps the covariance between voxels
    np.testing.assert_allclose(np.cov(s.T), np.cov(y.T), rtol=1e-8, atol=1e-8)
    # ... and breaks the alignment with the original time course
    centred = [(a - a.mean(0)) / a.std(0) for a in (s, y)]
    r = (centred[0] * centred[1]).mean(0)
    assert np.all(np.abs(r) < 0.5)


def test_phase_randomization_is_seeded_per_story_and_validated():
    rng = np.random.default_rng(3)
    y = _ar1(120, 3, 0.5, rng).astype(np.float32)
    groups = np.repeat(["b", "a"], 60)
    first = phase_randomized_targets(y, groups=groups, random_state=7)
    np.testing.assert_array_equal(first, phase_randomized_targets(y, groups=groups,
                                                                  random_state=7))
    assert not np.allclose(first, phase_randomized_targets(y, groups=groups, random_state=8))
    assert first.dtype == np.float32
    # each story keeps its own spectrum: the stories are randomised separately
    for g in ("a", "b"):
        rows = groups == g
        np.testing.assert_allclose(np.abs(np.fft.rfft(first[rows], axis=0)),
                                   np.abs(np.fft.rfft(y[rows], axis=0)), rtol=1e-4, atol=1e-4)
    one = phase_randomized_targets(y[:, 0], random_state=0)
    assert one.shape == (120,)
    with pytest.raises(ValueError, match="groups must have shape"):
        phase_randomized_targets(y, groups=groups[:-1])
    with pytest.raises(ValueError, match="at least 3"):
        phase_randomized_targets(y[:2])
    bad = y.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        phase_randomized_targets(bad)
