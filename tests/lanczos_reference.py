"""Independent reference for resampling tests: a straight transcription of HuthLab's
lanczosinterp2D, one new time and one old time at a time."""

import numpy as np


def loop_lanczos(data, old_times, new_times, window=3, cutoff_mult=1.0):
    """Straight transcription of lanczosinterp2D: one new time at a time, one old at a time."""
    cutoff = cutoff_mult / np.mean(np.diff(new_times))
    out = np.zeros((len(new_times), data.shape[1]))
    for i, t_new in enumerate(new_times):
        for j, t_old in enumerate(old_times):
            u = (t_new - t_old) * cutoff
            if u == 0:
                weight = 1.0
            elif abs(u) > window:
                weight = 0.0
            else:
                weight = (window * np.sin(np.pi * u) * np.sin(np.pi * u / window)
                          / (np.pi ** 2 * u ** 2))
            out[i] += weight * data[j]
    return out
