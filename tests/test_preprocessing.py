"""Shared preprocessing pieces: z-scoring, mel filterbank, pooling, fold clamping, atomic writes."""

import numpy as np
import pytest

from sk_braintune.model_selection import clamp_cv
from sk_braintune.preprocessing import mel_filterbank, zscore, zscore_per_story


def _reference_zscore(block):
    """Formula by hand: population std, constant columns -> 0."""
    block = np.asarray(block, dtype=np.float64)
    out = np.zeros_like(block)
    for j in range(block.shape[1]):
        col = block[:, j]
        sd = np.sqrt(np.mean((col - col.mean()) ** 2))
        out[:, j] = 0.0 if sd == 0 else (col - col.mean()) / sd
    return out


def test_zscore_matches_formula_and_scipy():
    from scipy.stats import zscore as scipy_zscore

    rng = np.random.default_rng(0)
    X = rng.normal(3.0, 2.0, size=(40, 5))
    X[:, 2] = 7.0  # constant column
    got = zscore(X)
    np.testing.assert_allclose(got, _reference_zscore(X), atol=1e-12)
    np.testing.assert_allclose(got[:, [0, 1, 3, 4]], scipy_zscore(X[:, [0, 1, 3, 4]], axis=0),
                               atol=1e-12)
    assert np.all(got[:, 2] == 0)
    # along rows
    np.testing.assert_allclose(zscore(X.T, axis=1), _reference_zscore(X).T, atol=1e-12)


def test_zscore_dtype_is_the_computation_dtype():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(30, 4))
    got = zscore(X, dtype=np.float32)
    assert got.dtype == np.float32
    x32 = X.astype(np.float32)
    sd = x32.std(axis=0)
    np.testing.assert_array_equal(got, (x32 - x32.mean(axis=0)) / sd)


def test_zscore_per_story_each_story_separately():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(50, 3)) + np.repeat([[0.0], [10.0]], 25, axis=0)
    groups = np.repeat(["b", "a"], 25)
    groups[[3, 40]] = groups[[40, 3]]  # rows of a story need not be contiguous
    got = zscore_per_story(X, groups)
    for story in ("a", "b"):
        rows = groups == story
        np.testing.assert_allclose(got[rows], _reference_zscore(X[rows]), atol=1e-12)
    np.testing.assert_array_equal(zscore_per_story(X), zscore(X))
    assert zscore_per_story(X, groups, dtype=np.float32).dtype == np.float32
    with pytest.raises(ValueError, match="one story per row"):
        zscore_per_story(X, groups[:-1])


def test_mel_filterbank_against_hand_triangles():
    n_fft, sr = 512, 16000
    filters = mel_filterbank(8, n_fft, sr, fmin=100.0, fmax=7000.0)
    assert filters.shape == (8, n_fft // 2 + 1)
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    hz = lambda m: 700 * (10 ** (m / 2595) - 1)  # noqa: E731
    edges = hz(np.linspace(mel(100.0), mel(7000.0), 10))
    freqs = np.arange(n_fft // 2 + 1) * sr / n_fft
    for b in range(8):
        lo, mid, hi = edges[b:b + 3]
        expected = np.maximum(0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))
        np.testing.assert_allclose(filters[b], expected, atol=1e-12)


def test_mel_filterbank_narrow_bands_get_their_nearest_bin():
    filters = mel_filterbank(64, 64, 16000, fmin=0.0, fmax=8000.0)
    assert np.all(filters.sum(axis=1) > 0)


def test_clamp_cv():
    groups = np.repeat(["a", "b", "c"], 4)
    assert clamp_cv(5, groups) == 3
    assert clamp_cv(2, groups) == 2
    assert clamp_cv(5, None) == 5
    from sklearn.model_selection import GroupKFold

    splitter = GroupKFold(2)
    assert clamp_cv(splitter, groups) is splitter


def test_atomic_writes(tmp_path):
    from sk_braintune._utils import atomic_replace_dir, atomic_write_bytes, atomic_write_text

    atomic_write_bytes(tmp_path / "sub" / "a.bin", b"\x00\x01")
    assert (tmp_path / "sub" / "a.bin").read_bytes() == b"\x00\x01"
    atomic_write_text(tmp_path / "b.txt", "héllo")
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "héllo"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.txt", "sub"]  # no temp files left
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "new.txt").write_text("new")
    atomic_replace_dir(staging, target)
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert not staging.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.txt", "model", "sub"]


def test_data_file_finds_packaged_files():
    from sk_braintune._utils import data_file

    assert data_file("synonyms.tsv").is_file()
    assert len(list(data_file("stories").glob("*.txt"))) >= 10
    with pytest.raises(FileNotFoundError, match="reinstall"):
        data_file("no_such_file.txt")


def test_pool_frames_against_direct_loops():
    torch = pytest.importorskip("torch")
    from sk_braintune.models.pooling import pool_frames

    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 7, 4, generator=gen)
    real = [7, 4, 1]
    mask = torch.zeros(3, 7, dtype=torch.bool)
    for i, n in enumerate(real):
        mask[i, :n] = True
    mean = pool_frames(hidden, mask, "mean")
    mean_w = pool_frames(hidden, mask, "mean", weights_first=True)
    last = pool_frames(hidden, mask, "last")
    tail = pool_frames(hidden, mask, "last_tr_mean", n_tr_frames=2)
    for i, n in enumerate(real):
        torch.testing.assert_close(mean[i], hidden[i, :n].mean(0))
        torch.testing.assert_close(mean_w[i], hidden[i, :n].mean(0))
        torch.testing.assert_close(last[i], hidden[i, n - 1])
        torch.testing.assert_close(tail[i], hidden[i, max(0, n - 2):n].mean(0))
    with pytest.raises(ValueError, match="pooling must be one of"):
        pool_frames(hidden, mask, "max")
    with pytest.raises(ValueError, match="n_tr_frames"):
        pool_frames(hidden, mask, "last_tr_mean")


def test_is_audio_windows():
    from sk_braintune.windows import is_audio_windows, make_windows

    X = make_windows({"s": np.zeros(16000 * 6, np.float32)}, {"s": np.array([1.0, 3.0])},
                     window=2.0, tr=2.0)
    assert is_audio_windows(X)
    assert not is_audio_windows(np.zeros((2, 32000)))
    assert not is_audio_windows(type("Fake", (), {"waveforms": 1, "window_samples": 2,
                                                  "shape": (1, 2)})())
