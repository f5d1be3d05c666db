"""Canonical double-gamma haemodynamic response function and convolution helpers."""

from __future__ import annotations

import math

import numpy as np


def double_gamma_hrf(dt=0.1, duration=32.0, peak=6.0, undershoot=16.0, ratio=1.0 / 6.0):
    """SPM's canonical double-gamma HRF sampled every ``dt`` seconds, normalised to unit sum.

    ``h(t) = g(t; peak) - ratio * g(t; undershoot)`` with ``g(t; a) = t^(a-1) e^(-t) / Gamma(a)``
    (unit dispersion): the response peaks about 5 s after a brief stimulus and undershoots
    around 15 s.

    Parameters
    ----------
    dt : float, default=0.1
        Sampling step in seconds.
    duration : float, default=32.0
        Length of the kernel in seconds.
    peak, undershoot : float, default=6.0, 16.0
        Shape parameters (s) of the positive and the negative gamma lobes.
    ratio : float, default=1/6
        Size of the undershoot relative to the peak lobe.

    Returns
    -------
    hrf : ndarray of shape (round(duration / dt),), float64
        Sums to 1, so convolving a constant signal keeps its level.
    """
    t = np.arange(int(round(duration / dt))) * dt

    def gamma_pdf(a):
        with np.errstate(divide="ignore"):
            log_pdf = (a - 1.0) * np.log(t) - t - math.lgamma(a)
        return np.where(t > 0, np.exp(log_pdf), 0.0)

    hrf = gamma_pdf(peak) - ratio * gamma_pdf(undershoot)
    return hrf / hrf.sum()


def convolve_hrf(signals, hrf):
    """Causal convolution of each column with the HRF, truncated to the input length.

    Parameters
    ----------
    signals : ndarray of shape (n_times, n_features)
        Sampled at the HRF's step.
    hrf : ndarray of shape (n_taps,)

    Returns
    -------
    convolved : ndarray of shape (n_times, n_features), float64
        ``convolved[t] = sum_k hrf[k] * signals[t - k]`` (zero before the start).
    """
    from scipy.signal import fftconvolve

    signals = np.asarray(signals, dtype=np.float64)
    out = fftconvolve(signals, np.asarray(hrf, dtype=np.float64)[:, None], mode="full", axes=0)
    return out[:signals.shape[0]]
