"""Stimulus features of the simulated brain: band-power envelopes and recent-word contexts."""

from __future__ import annotations

import numpy as np

from ..preprocessing import mel_filterbank


def band_power_envelopes(audio, sample_rate, n_bands=24, step=0.1, n_steps=None, floor=1e-6):
    """Log mel band power of ``audio`` averaged in consecutive ``step``-second bins.

    Parameters
    ----------
    audio : ndarray of shape (n_samples,)
    sample_rate : int
    n_bands : int, default=24
    step : float, default=0.1
        Bin length in seconds (the simulator's fine time grid).
    n_steps : int, optional
        Number of bins to return (zero-padded audio beyond its end); default covers the audio.
    floor : float, default=1e-6
        Added to the power before the log so silence stays finite.

    Returns
    -------
    envelopes : ndarray of shape (n_steps, n_bands), float64
        Bin ``i`` averages the 25-ms frames (10-ms hop) starting in ``[i * step, (i + 1) * step)``.
    """
    win, hop, n_fft = int(0.025 * sample_rate), int(0.010 * sample_rate), 512
    frames_per_step = int(round(step / 0.010))
    if n_steps is None:
        n_steps = int(np.ceil(len(audio) / sample_rate / step))
    n_frames = n_steps * frames_per_step
    padded = np.zeros(n_frames * hop + win, dtype=np.float64)
    usable = min(len(audio), padded.size)
    padded[:usable] = audio[:usable]
    frames = np.lib.stride_tricks.sliding_window_view(padded, win)[::hop][:n_frames]
    spectrum = np.abs(np.fft.rfft(frames * np.hanning(win), n=n_fft, axis=1)) ** 2
    bands = spectrum @ mel_filterbank(n_bands, n_fft, sample_rate).T
    log_power = np.log(bands + floor)
    return log_power.reshape(n_steps, frames_per_step, n_bands).mean(axis=1)


def recent_word_contexts(words, n_words):
    """Text of the last ``n_words`` words heard at each word (the word itself included).

    Parameters
    ----------
    words : sequence of str
    n_words : int

    Returns
    -------
    contexts : list of str
    """
    words = list(words)
    return [" ".join(words[max(0, i - n_words + 1):i + 1]) for i in range(len(words))]


def hold_at_onsets(values, onsets, times):
    """Piecewise-constant signal: each row of ``values`` holds from its onset until the next.

    Parameters
    ----------
    values : ndarray of shape (n_events, n_features)
    onsets : ndarray of shape (n_events,)
        Non-decreasing event times (s).
    times : ndarray of shape (n_times,)

    Returns
    -------
    signal : ndarray of shape (n_times, n_features)
        Zero before the first onset.
    """
    index = np.searchsorted(onsets, times, side="right") - 1
    out = np.zeros((len(times), values.shape[1]))
    valid = index >= 0
    out[valid] = values[index[valid]]
    return out
