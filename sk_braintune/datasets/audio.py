"""Read WAV files and bring audio to the format of every speech model: mono float32 at 16 kHz.

**Converted** (silently, because each has a single correct meaning):

* integer PCM to float in [-1, 1]: signed ints are divided by ``2 ** (bits - 1)`` (int16 by
  32768; 24-bit WAV, which SciPy reads as left-justified int32, by ``2 ** 31``), unsigned 8-bit
  PCM is centred first (``(x - 128) / 128``);
* several channels to mono, by the mean over channels;
* any sample rate to 16 kHz, with :func:`scipy.signal.resample_poly` and the reduced ratio
  ``16000 / gcd(rate, 16000)`` over ``rate / gcd(rate, 16000)`` (e.g. 160 / 441 from 44.1 kHz),
  which keeps the duration: the output has ``ceil(n * 16000 / rate)`` samples;
* float64 to float32. Float audio is kept as it is (not clipped or rescaled), also when it
  exceeds [-1, 1]: speech models normalise their input themselves.

**Refused** (``ValueError`` / ``TypeError``), because guessing would silently give wrong data:
empty audio, NaN or infinite samples, complex or non-numeric arrays, arrays with more than two
dimensions, non-positive or non-integer sample rates.
"""

from __future__ import annotations

import math
import numbers
import os

import numpy as np

__all__ = ["TARGET_SAMPLE_RATE", "load_audio", "to_mono_16k"]

TARGET_SAMPLE_RATE = 16_000


def _to_float(audio):
    """Integer PCM -> float32 in [-1, 1]; floats -> float32 unchanged."""
    if audio.dtype == np.uint8:
        return (audio.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(audio.dtype, np.signedinteger):
        scale = float(2 ** (8 * audio.dtype.itemsize - 1))
        if audio.dtype.itemsize <= 2:  # exact in float32
            return audio.astype(np.float32) * np.float32(1.0 / scale)
        return (audio.astype(np.float64) / scale).astype(np.float32)
    if np.issubdtype(audio.dtype, np.unsignedinteger):
        # other unsigned PCM widths are not produced by WAV writers; centre like uint8
        half = float(2 ** (8 * audio.dtype.itemsize - 1))
        return ((audio.astype(np.float64) - half) / half).astype(np.float32)
    if np.issubdtype(audio.dtype, np.floating):
        return audio.astype(np.float32, copy=False)
    raise TypeError(f"audio must hold real numbers (int or float PCM); got dtype {audio.dtype}.")


def _to_mono(audio):
    """(n_samples,) stays; (n_samples, n_channels) or (n_channels, n_samples) -> mean."""
    if audio.ndim == 1:
        return audio
    if audio.ndim != 2:
        raise ValueError(f"audio must be 1-D (mono) or 2-D (samples x channels); got shape "
                         f"{audio.shape}.")
    # scipy.io.wavfile gives (n_samples, n_channels); torchaudio/librosa give (n_channels,
    # n_samples). Channels are few, samples many: the short axis is the channel axis.
    channels = audio.T if audio.shape[1] <= audio.shape[0] else audio
    # summing channel rows is ~10x faster than a reduction over a length-2 inner axis
    mono = np.zeros(channels.shape[1], dtype=np.float32)
    for channel in channels:
        mono += channel
    return mono / np.float32(len(channels))


def to_mono_16k(audio, sample_rate):
    """Mix down, convert to float and resample audio to 16 kHz.

    Parameters
    ----------
    audio : array-like of shape (n_samples,) or (n_samples, n_channels)
        Integer PCM or float audio. ``(n_channels, n_samples)`` is also recognised (the shorter
        axis is taken as the channel axis).
    sample_rate : int
        Sample rate of ``audio`` in Hz.

    Returns
    -------
    audio_16k : ndarray of shape (ceil(n_samples * 16000 / sample_rate),), dtype float32
        Mono audio at 16 kHz; integer input is scaled to [-1, 1].

    Raises
    ------
    ValueError
        For empty audio, NaN/inf samples, more than 2 dimensions or a bad sample rate.
    TypeError
        For complex or non-numeric audio.

    Examples
    --------
    >>> import numpy as np
    >>> stereo = np.zeros((44100, 2), dtype=np.int16)
    >>> to_mono_16k(stereo, 44100).shape
    (16000,)
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Real) \
            or sample_rate <= 0 or int(sample_rate) != sample_rate:
        raise ValueError(f"sample_rate must be a positive integer number of Hz; got "
                         f"{sample_rate!r}.")
    sample_rate = int(sample_rate)
    audio = np.asarray(audio)
    if audio.dtype == object or np.iscomplexobj(audio) or audio.dtype.kind not in "iuf":
        raise TypeError(f"audio must hold real numbers (int or float PCM); got dtype "
                        f"{audio.dtype}.")
    if audio.size == 0:
        raise ValueError("audio is empty.")
    audio = _to_mono(_to_float(audio))
    if not np.all(np.isfinite(audio)):
        raise ValueError("audio contains NaN or infinite samples.")
    if sample_rate == TARGET_SAMPLE_RATE:
        return np.ascontiguousarray(audio, dtype=np.float32)
    from scipy.signal import resample_poly

    common = math.gcd(sample_rate, TARGET_SAMPLE_RATE)
    up, down = TARGET_SAMPLE_RATE // common, sample_rate // common
    return resample_poly(audio, up, down).astype(np.float32)


def load_audio(path):
    """Read a WAV file as mono float32 audio at 16 kHz.

    Parameters
    ----------
    path : str or path-like
        WAV file (PCM uint8/int16/24-bit/int32 or float, any number of channels, any rate).

    Returns
    -------
    audio : ndarray of shape (n_samples_16k,), dtype float32
        See :func:`to_mono_16k` for the conversions applied.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ValueError
        When the file is not a readable WAV file, or is empty.
    """
    from scipy.io import wavfile

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"audio file not found: {path}")
    try:
        rate, data = wavfile.read(path, mmap=False)
    except ValueError as exc:
        raise ValueError(f"cannot read {path} as a WAV file ({exc}); convert it to PCM WAV "
                         "first (e.g. `ffmpeg -i in.mp3 out.wav`).") from exc
    if data.size == 0:
        raise ValueError(f"audio file {path} contains no samples.")
    return to_mono_16k(data, rate)
