"""WAV reading and conversion to mono float32 16 kHz: numbers, not only shapes."""

import math

import numpy as np
import pytest
from scipy.io import wavfile

from sk_braintune.datasets.audio import load_audio, to_mono_16k


def _sine(frequency, rate, seconds, amplitude=0.5):
    t = np.arange(int(round(rate * seconds))) / rate
    return amplitude * np.sin(2 * np.pi * frequency * t)


@pytest.mark.parametrize("rate", [44100, 48000, 22050, 8000])
def test_resampled_sine_keeps_frequency_amplitude_and_duration(rate):
    frequency, seconds = 440.0, 2.0
    out = to_mono_16k(_sine(frequency, rate, seconds), rate)
    assert out.dtype == np.float32 and out.ndim == 1
    assert out.size == math.ceil(rate * seconds * 16000 / rate)
    # away from the filter's edge transients the output is the same sine sampled at 16 kHz
    expected = _sine(frequency, 16000, seconds)
    middle = slice(1600, out.size - 1600)
    np.testing.assert_allclose(out[middle], expected[middle], atol=2e-3)
    spectrum = np.abs(np.fft.rfft(out * np.hanning(out.size)))
    peak = np.fft.rfftfreq(out.size, 1 / 16000)[spectrum.argmax()]
    assert abs(peak - frequency) <= 0.5
    assert abs(np.abs(out[middle]).max() - 0.5) < 2e-3


def test_content_above_new_nyquist_is_removed():
    out = to_mono_16k(_sine(10_000.0, 44100, 1.0), 44100)  # above 8 kHz: must be filtered
    assert np.abs(out[1600:-1600]).max() < 0.01


def test_integer_pcm_scaling():
    np.testing.assert_array_equal(to_mono_16k(np.array([16384, -32768, 0], np.int16), 16000),
                                  np.array([0.5, -1.0, 0.0], np.float32))
    np.testing.assert_array_equal(to_mono_16k(np.array([2 ** 30, -2 ** 31], np.int32), 16000),
                                  np.array([0.5, -1.0], np.float32))
    np.testing.assert_array_equal(to_mono_16k(np.array([192, 128, 0], np.uint8), 16000),
                                  np.array([0.5, 0.0, -1.0], np.float32))


def test_float_audio_is_kept_as_is():
    x = np.array([0.25, -3.0, 2.0])  # out of [-1, 1]: kept, documented
    out = to_mono_16k(x, 16000)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, x.astype(np.float32))


def test_stereo_is_the_mean_of_channels_in_either_layout():
    rng = np.random.default_rng(0)
    left, right = rng.uniform(-1, 1, 1000), rng.uniform(-1, 1, 1000)
    expected = ((left + right) / 2).astype(np.float32)
    np.testing.assert_allclose(to_mono_16k(np.stack([left, right], axis=1), 16000), expected,
                               atol=1e-7)
    np.testing.assert_allclose(to_mono_16k(np.stack([left, right], axis=0), 16000), expected,
                               atol=1e-7)


@pytest.mark.parametrize("audio, rate, error, match", [
    (np.zeros(0), 16000, ValueError, "empty"),
    (np.array([0.0, np.nan]), 16000, ValueError, "NaN"),
    (np.zeros((2, 3, 4)), 16000, ValueError, "1-D"),
    (np.zeros(4, complex), 16000, TypeError, "real numbers"),
    (np.array(["a", "b"]), 16000, TypeError, "real numbers"),
    (np.zeros(4), 0, ValueError, "sample_rate"),
    (np.zeros(4), 44100.5, ValueError, "sample_rate"),
    (np.zeros(4), True, ValueError, "sample_rate"),
])
def test_refused_inputs(audio, rate, error, match):
    with pytest.raises(error, match=match):
        to_mono_16k(audio, rate)


def test_load_audio_stereo_int16_44k(tmp_path):
    stereo = np.stack([_sine(300.0, 44100, 1.5, 0.5), _sine(300.0, 44100, 1.5, 0.25)], axis=1)
    pcm = np.round(stereo * 32767).astype(np.int16)
    wavfile.write(tmp_path / "s.wav", 44100, pcm)
    out = load_audio(tmp_path / "s.wav")
    assert out.dtype == np.float32 and out.shape == (math.ceil(pcm.shape[0] * 160 / 441),)
    expected = _sine(300.0, 16000, 1.5, 0.375)  # mean of the two channels
    np.testing.assert_allclose(out[800:-800], expected[800:-800], atol=2e-3)


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.uint8])
def test_load_audio_other_pcm_types(tmp_path, dtype):
    x = _sine(200.0, 16000, 0.5, 0.5)
    if dtype is np.int32:
        data = np.round(x * 2 ** 31).astype(np.int32)
    elif dtype is np.uint8:
        data = np.round(x * 128 + 128).astype(np.uint8)
    else:
        data = x.astype(np.float32)
    wavfile.write(tmp_path / "a.wav", 16000, data)
    out = load_audio(tmp_path / "a.wav")
    np.testing.assert_allclose(out, x, atol=1 / 128 if dtype is np.uint8 else 1e-6)


def test_load_audio_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.wav"):
        load_audio(tmp_path / "nothere.wav")
    (tmp_path / "x.wav").write_bytes(b"not a wave file at all")
    with pytest.raises(ValueError, match="WAV"):
        load_audio(tmp_path / "x.wav")
