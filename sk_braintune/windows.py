"""Causal audio windows, one per fMRI volume.

A 10-minute story cut into 16 s windows at every TR is ~300 MB when materialised but ~38 MB as a
waveform. :class:`AudioWindows` holds each story's waveform once (left-padded with silence) and
serves zero-copy views, while behaving like a 2-D array of shape ``(n_windows, window_samples)``
for scikit-learn: it has ``shape``, ``len`` and array indexing, so CV splits inside
``GridSearchCV`` keep the story ids and TR times.

Only NumPy is imported here so that this module stays cheap.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping

import numpy as np

__all__ = ["AudioWindows", "check_audio_samples", "check_clips", "dataset_stories", "is_audio_windows",
           "make_windows",
           "window_end_samples", "windows_from_dataset", "dataset_windows", "stack_responses"]

DEFAULT_SAMPLE_RATE = 16_000


def window_end_samples(tr_times, tr, sample_rate=DEFAULT_SAMPLE_RATE):
    """Sample index (exclusive) at which the volume of each TR ends.

    Parameters
    ----------
    tr_times : array-like of shape (n_trs,)
        Mid-volume times in seconds, relative to the start of the audio.
    tr : float
        Repetition time in seconds.
    sample_rate : int, default=16000
        Audio sample rate in Hz.

    Returns
    -------
    ends : ndarray of shape (n_trs,), dtype int64
        ``round((t_mid + tr / 2) * sample_rate)``. Times are never truncated to whole seconds.
    """
    tr_times = np.asarray(tr_times, dtype=np.float64)
    return np.rint((tr_times + tr / 2.0) * sample_rate).astype(np.int64)


def _check_audio(audio, name, sample_rate):
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(
            f"Audio of story {name!r} must be mono 1-D, got shape {audio.shape}; mix stereo "
            "down first (e.g. sk_braintune.datasets.to_mono_16k)."
        )
    if audio.size == 0:
        raise ValueError(f"Story {name!r} has no audio samples.")
    check_audio_samples(audio, f"Audio of story {name!r}")
    if sample_rate != DEFAULT_SAMPLE_RATE:
        raise ValueError(
            f"Speech models expect 16 kHz audio; got sample_rate={sample_rate}. Resample first "
            "(sk_braintune.datasets.to_mono_16k)."
        )
    return audio.astype(np.float32, copy=False)


def check_audio_samples(audio, what="audio"):
    """The package's one check of audio samples: float dtype, no NaN or inf.

    Every path that takes audio (story waveforms cut into windows, windows or clips given to
    the feature extractor, the probe or the tuner as arrays) runs it, so that int16 samples are
    never used unscaled and a NaN never silently poisons every feature computed from it.

    Parameters
    ----------
    audio : ndarray
        Samples of any shape (a waveform, a batch of windows, one clip).
    what : str, default="audio"
        How the message names the samples, e.g. ``"Audio of story 'a'"`` or ``"clip 3"``.

    Raises
    ------
    TypeError
        For an integer (or other non-float) dtype.
    ValueError
        For NaN or infinite samples (the message gives their number and the first one).
    """
    audio = np.asarray(audio)
    if not np.issubdtype(audio.dtype, np.floating):
        kind = "integer " if np.issubdtype(audio.dtype, np.integer) else ""
        raise TypeError(
            f"{what} has {kind}dtype {audio.dtype}; pass float samples in [-1, 1] (divide "
            "int16 audio by 32768).")
    finite = np.isfinite(audio)
    if not finite.all():
        bad = np.flatnonzero(~finite.ravel())
        first = np.unravel_index(bad[0], audio.shape) if audio.ndim > 1 else bad[0]
        raise ValueError(
            f"{what} holds {bad.size} NaN or infinite sample(s) (the first at "
            f"{'index' if audio.ndim > 1 else 'sample'} {first}); every window and feature "
            "would inherit them. Fix the recording or replace them, e.g. "
            "np.nan_to_num(audio, nan=0.0, posinf=0.0, neginf=0.0).")


def check_clips(clips, noun="clip"):
    """Every clip (window) of audio given as an array or a list: no integer or non-finite samples.

    The windows made from story waveforms are checked when they are cut; audio given directly
    as arrays (to the extractor, the probe or the tuner) goes through this check, so that
    integer PCM samples (int16 from a WAV file) are refused rather than used unscaled and one
    NaN clip cannot silently turn every feature into NaN. Other dtypes (object, complex) are
    left to the caller's ``validate_data``.

    Parameters
    ----------
    clips : ndarray of shape (n, n_samples) or sequence of 1-D arrays
    noun : str, default="clip"
        How the message names one item (``"window"``, ``"clip"``).

    Raises
    ------
    TypeError
        For integer samples.
    ValueError
        For NaN or infinite samples; the message names the first bad clip.
    """
    if isinstance(clips, np.ndarray):
        if clips.dtype == object:
            return
        if np.issubdtype(clips.dtype, np.integer) or np.issubdtype(clips.dtype, np.bool_):
            check_audio_samples(clips, f"{noun.capitalize()}s given as an array")
        if not np.issubdtype(clips.dtype, np.floating) or np.isfinite(clips).all():
            return
    for index, clip in enumerate(clips):
        clip = np.asarray(clip)
        if np.issubdtype(clip.dtype, np.floating) or np.issubdtype(clip.dtype, np.integer):
            check_audio_samples(clip, f"{noun} {index}")


def _check_tr_times(tr_times, name):
    tr_times = np.asarray(tr_times, dtype=np.float64)
    if tr_times.ndim != 1 or tr_times.size == 0:
        raise ValueError(f"TR times of story {name!r} must be a non-empty 1-D array.")
    if not np.all(np.isfinite(tr_times)):
        raise ValueError(f"TR times of story {name!r} contain NaN or inf.")
    if tr_times.size > 1 and np.any(np.diff(tr_times) <= 0):
        raise ValueError(f"TR times of story {name!r} must be strictly increasing.")
    return tr_times


def is_audio_windows(X):
    """Whether ``X`` is an :class:`AudioWindows` (the one check every module uses).

    Parameters
    ----------
    X : object

    Returns
    -------
    is_windows : bool
    """
    return isinstance(X, AudioWindows)


class AudioWindows:
    """Lazy, equal-length causal audio windows over one or several stories.

    Each story's waveform is stored once, left-padded with ``window_samples`` zeros (so that the
    first windows of a story are silence-padded rather than shorter) and right-padded with zeros
    when the last volumes end after the audio. Window ``i`` is a zero-copy view of
    ``window_samples`` samples ending at ``ends[i]``.

    Use :func:`make_windows` to build one. Indexing with an integer returns the 1-D window;
    indexing with a slice, an integer array or a boolean mask returns a new ``AudioWindows``
    that shares the waveforms.

    Parameters
    ----------
    waveforms : dict of str to ndarray of shape (n_padded_samples,)
        Padded waveform per story (float32, 16 kHz).
    stories : ndarray of shape (n_windows,), dtype object
        Story name of each window (the ``groups`` of story-grouped CV).
    ends : ndarray of shape (n_windows,), dtype int64
        Sample index (exclusive, in unpadded story coordinates) at which each window ends.
    tr_times : ndarray of shape (n_windows,)
        Mid-volume time (s) of each window's TR.
    window_samples : int
        Window length in samples.
    sample_rate : int, default=16000
        Sample rate in Hz.
    check_finite : bool, default=True
        Raise a ValueError naming the story when a waveform holds NaN or inf (subsets made by
        indexing share already checked waveforms and skip the check).

    Attributes
    ----------
    shape : tuple of (int, int)
        ``(n_windows, window_samples)``.
    groups : ndarray of shape (n_windows,)
        Alias of ``stories``.
    """

    def __init__(self, waveforms, stories, ends, tr_times, window_samples,
                 sample_rate=DEFAULT_SAMPLE_RATE, check_finite=True):
        self.waveforms = dict(waveforms)
        if check_finite:
            for name, waveform in self.waveforms.items():
                check_audio_samples(waveform, f"Audio of story {name!r}")
        self.stories = np.asarray(stories, dtype=object)
        self.ends = np.asarray(ends, dtype=np.int64)
        self.tr_times = np.asarray(tr_times, dtype=np.float64)
        self.window_samples = int(window_samples)
        self.sample_rate = int(sample_rate)
        if not (len(self.stories) == len(self.ends) == len(self.tr_times)):
            raise ValueError("stories, ends and tr_times must have the same length.")

    # -- array protocol ---------------------------------------------------------------------
    @property
    def shape(self):
        """``(n_windows, window_samples)``, as for the equivalent 2-D array."""
        return (len(self.ends), self.window_samples)

    @property
    def ndim(self):
        """2, as for the equivalent 2-D array."""
        return 2

    @property
    def dtype(self):
        """float32, the dtype of the windows' samples."""
        return np.dtype(np.float32)

    @property
    def groups(self):
        """Story of each window (alias of ``stories``), the ``groups`` of story-grouped CV."""
        return self.stories

    @property
    def window_seconds(self):
        """Window length in seconds."""
        return self.window_samples / self.sample_rate

    def __len__(self):
        return len(self.ends)

    def _view(self, i):
        story = self.stories[i]
        # the stored waveform is offset by window_samples of left padding
        start = int(self.ends[i])
        return self.waveforms[story][start:start + self.window_samples]

    def story_audio(self, story, n_samples):
        """The first ``n_samples`` samples of a story's audio, without the padding: a view.

        Parameters
        ----------
        story : str
        n_samples : int
            Length of the story's audio (the stored waveform may be right-padded beyond it).

        Returns
        -------
        audio : ndarray of shape (n_samples,), float32
            A view of the stored waveform (no copy).
        """
        waveform = self.waveforms[story]
        if not 0 <= n_samples <= len(waveform) - self.window_samples:
            raise ValueError(f"story {story!r} holds {len(waveform) - self.window_samples} "
                             f"samples of audio, not {n_samples}")
        return waveform[self.window_samples:self.window_samples + int(n_samples)]

    def __getitem__(self, key):
        if isinstance(key, tuple):
            # sklearn's _safe_indexing asks for array[key, ...]
            if len(key) == 2 and key[1] is Ellipsis:
                key = key[0]
            else:
                return self.to_array()[key]
        if isinstance(key, np.ndarray) and key.ndim == 0 and np.issubdtype(key.dtype, np.integer):
            key = int(key)
        if isinstance(key, numbers.Integral):
            n = len(self)
            if not -n <= key < n:
                raise IndexError(f"window index {key} out of range for {n} windows")
            return self._view(int(key) % n)
        if isinstance(key, slice):
            index = np.arange(len(self))[key]
        else:
            index = np.asarray(key)
            if index.dtype == bool:
                if index.shape != (len(self),):
                    raise IndexError("boolean mask must have one entry per window")
                index = np.flatnonzero(index)
            elif index.size == 0:
                index = index.astype(np.int64)
            elif not np.issubdtype(index.dtype, np.integer):
                raise IndexError(f"cannot index AudioWindows with {index.dtype} keys")
        used = set(self.stories[index])
        return AudioWindows(
            {s: w for s, w in self.waveforms.items() if s in used},
            self.stories[index], self.ends[index], self.tr_times[index],
            self.window_samples, self.sample_rate, check_finite=False,
        )

    def __iter__(self):
        for i in range(len(self)):
            yield self._view(i)

    def __array__(self, dtype=None, copy=None):
        out = self.to_array()
        return out if dtype is None else out.astype(dtype, copy=False)

    def to_array(self):
        """Materialise all windows.

        Returns
        -------
        windows : ndarray of shape (n_windows, window_samples), dtype float32
        """
        out = np.empty(self.shape, dtype=np.float32)
        for i in range(len(self)):
            out[i] = self._view(i)
        return out

    def batches(self, batch_size):
        """Yield ``(index, array)`` pairs of at most ``batch_size`` windows.

        Parameters
        ----------
        batch_size : int
            Windows per batch.

        Yields
        ------
        index : ndarray of shape (n_batch,)
            Positions of the windows in ``self``.
        batch : ndarray of shape (n_batch, window_samples), dtype float32
        """
        for start in range(0, len(self), batch_size):
            index = np.arange(start, min(start + batch_size, len(self)))
            yield index, self[index].to_array()

    @property
    def nbytes(self):
        """Bytes held by the stored waveforms (not the materialised windows)."""
        return sum(w.nbytes for w in self.waveforms.values())

    def __repr__(self):
        n_stories = len(set(self.stories))
        return (f"AudioWindows(n_windows={len(self)}, window={self.window_seconds:g} s, "
                f"stories={n_stories}, sample_rate={self.sample_rate})")

    @classmethod
    def concatenate(cls, parts):
        """Join windows of disjoint stories into one container.

        Parameters
        ----------
        parts : sequence of AudioWindows
            Containers with the same window length and sample rate.

        Returns
        -------
        windows : AudioWindows
        """
        parts = list(parts)
        if not parts:
            raise ValueError("nothing to concatenate")
        ws, sr = parts[0].window_samples, parts[0].sample_rate
        if any(p.window_samples != ws or p.sample_rate != sr for p in parts):
            raise ValueError("all parts must share window length and sample rate")
        waveforms = {}
        for p in parts:
            for s, w in p.waveforms.items():
                if s in waveforms and waveforms[s] is not w:
                    raise ValueError(f"story {s!r} appears in two parts with different audio")
                waveforms[s] = w
        return cls(waveforms, np.concatenate([p.stories for p in parts]),
                   np.concatenate([p.ends for p in parts]),
                   np.concatenate([p.tr_times for p in parts]), ws, sr, check_finite=False)


def make_windows(audio, tr_times, *, window=10.0, tr=2.0045, sample_rate=DEFAULT_SAMPLE_RATE):
    """Cut causal equal-length windows that end at the end of each TR's volume.

    Parameters
    ----------
    audio : ndarray of shape (n_samples,) or dict of str to ndarray
        Mono float audio at ``sample_rate``; a dict maps story names to waveforms.
    tr_times : ndarray of shape (n_trs,) or dict of str to ndarray
        Mid-volume times (s) relative to the audio start; a dict per story (same keys as
        ``audio``, the order of ``tr_times`` decides the order of the windows).
    window : float, default=10.0
        Window length in seconds (the paper tunes on ~10 s and evaluates on 16 s).
    tr : float, default=2.0045
        Repetition time in seconds; a window ends at ``round((t_mid + tr / 2) * sample_rate)``.
    sample_rate : int, default=16000
        Must be 16000 (the rate of every supported speech model).

    Returns
    -------
    windows : AudioWindows
        ``shape == (total_trs, round(window * sample_rate))``.

    Raises
    ------
    ValueError
        For stereo or empty audio, audio holding NaN or inf (the error names the story and the
        first bad sample), a sample rate other than 16 kHz, non-increasing TR times,
        or volumes that end after the audio by more than one window (responses longer than the
        audio).
    TypeError
        For integer audio.
    """
    if not isinstance(audio, Mapping):
        audio, tr_times = {"story": audio}, {"story": tr_times}
    elif not isinstance(tr_times, Mapping):
        raise TypeError("when audio is a dict, tr_times must be a dict with the same keys")
    missing = set(tr_times) - set(audio)
    if missing:
        raise ValueError(f"no audio for stories {sorted(missing)}")
    if window <= 0:
        raise ValueError(f"window must be positive, got {window}")
    window_samples = int(round(window * sample_rate))
    waveforms, stories, ends, times = {}, [], [], []
    for name, times_s in tr_times.items():
        wav = _check_audio(audio[name], name, sample_rate)
        times_s = _check_tr_times(times_s, name)
        end = window_end_samples(times_s, tr, sample_rate)
        if end[0] <= 0:
            raise ValueError(f"story {name!r}: the first volume ends before the audio starts")
        overshoot = int(end[-1]) - wav.size
        if overshoot > window_samples:
            raise ValueError(
                f"story {name!r}: the last volume ends {overshoot / sample_rate:.1f} s after the "
                f"audio ({wav.size / sample_rate:.1f} s); are the responses longer than the audio, "
                "or the TR times in the wrong unit?"
            )
        padded = np.zeros(window_samples + wav.size + max(overshoot, 0), dtype=np.float32)
        padded[window_samples:window_samples + wav.size] = wav
        waveforms[name] = padded
        stories.extend([name] * len(end))
        ends.append(end)
        times.append(times_s)
    # each waveform was checked above (_check_audio), before padding
    return AudioWindows(waveforms, np.asarray(stories, dtype=object), np.concatenate(ends),
                        np.concatenate(times), window_samples, sample_rate, check_finite=False)


def dataset_stories(dataset, stories=None):
    """A dataset's stories to use, resolved to a list and checked.

    Parameters
    ----------
    dataset : sklearn.utils.Bunch
        Anything following the dataset contract (``stories``, ``split``, ``responses``).
    stories : list of str or str, optional
        Stories in order; a split's name (``"train"``, ``"validation"``, ``"test"``) selects
        that split; None means all of ``dataset.stories``.

    Returns
    -------
    stories : list of str

    Raises
    ------
    ValueError
        For an unknown split or story.
    """
    if stories is None:
        stories = list(dataset.stories)
    elif isinstance(stories, str):
        if stories not in dataset.split:
            raise ValueError(f"unknown split {stories!r}; splits are {list(dataset.split)} "
                             "(pass a list for one story)")
        stories = list(dataset.split[stories])
    else:
        stories = list(stories)
    unknown = [s for s in stories if s not in dataset.responses]
    if unknown:
        raise ValueError(f"unknown stories {unknown}; available: {list(dataset.stories)}")
    return stories


def dataset_windows(dataset, stories=None, *, window=10.0, share_audio=False):
    """The audio windows of a dataset's stories, one per TR, without stacking the responses.

    The ``X`` of :func:`windows_from_dataset`.

    Parameters
    ----------
    dataset : sklearn.utils.Bunch
        Anything following the dataset contract (``audio``, ``tr_times``, ``responses``, ``tr``,
        ``sample_rate``).
    stories : list of str, optional
        Stories to include, in order; all of ``dataset.stories`` by default. A name of a split
        (``"train"``, ``"validation"``, ``"test"``) selects that split.
    window : float, default=10.0
        Window length in seconds.
    share_audio : bool, default=False
        The windows keep a padded copy of each story's waveform. True replaces
        ``dataset.audio`` by a new dict in which each of ``stories`` is a view of that copy
        (the same samples, :meth:`AudioWindows.story_audio`), so the audio is held once, not
        twice (at ds003020's full size, 84 stories, ~4 GB each).

    Returns
    -------
    X : AudioWindows of shape (n_trs, window * 16000)
        ``X.groups`` is the story of each TR.
    """
    stories = dataset_stories(dataset, stories)
    for s in stories:
        if len(dataset.tr_times[s]) != len(dataset.responses[s]):
            raise ValueError(
                f"story {s!r}: {len(dataset.tr_times[s])} TR times but "
                f"{len(dataset.responses[s])} response rows"
            )
    X = make_windows({s: dataset.audio[s] for s in stories},
                     {s: dataset.tr_times[s] for s in stories},
                     window=window, tr=dataset.tr, sample_rate=dataset.sample_rate)
    if share_audio:
        dataset["audio"] = {**dataset.audio,
                            **{s: X.story_audio(s, len(dataset.audio[s])) for s in stories}}
    return X


def stack_responses(dataset, stories=None):
    """The responses of ``stories`` stacked in that order into one float32 array.

    Filled story by story: lazily read responses (``load_lebel2023``) are never all in memory
    twice, as a list of per-story arrays plus their concatenation would be.

    Parameters
    ----------
    dataset : sklearn.utils.Bunch
        With ``responses`` (story -> (n_trs, n_voxels)).
    stories : list of str, optional
        As in :func:`dataset_windows`.

    Returns
    -------
    y : ndarray of shape (n_trs, n_voxels), float32
    """
    stories = dataset_stories(dataset, stories)
    lengths = [len(dataset.responses[s]) for s in stories]
    first = np.asarray(dataset.responses[stories[0]], dtype=np.float32)
    y = np.empty((sum(lengths), *first.shape[1:]), dtype=np.float32)
    start = 0
    for s, length in zip(stories, lengths):
        y[start:start + length] = first if s == stories[0] else np.asarray(
            dataset.responses[s], dtype=np.float32)
        start += length
    return y


def windows_from_dataset(dataset, stories=None, *, window=10.0):
    """Turn a dataset bunch into ``(X_windows, y, groups)``.

    Parameters
    ----------
    dataset : sklearn.utils.Bunch
        Anything following the dataset contract (``audio``, ``tr_times``, ``responses``, ``tr``,
        ``sample_rate``), e.g. from :func:`sk_braintune.builtin.make_story_dataset` or
        :func:`sk_braintune.datasets.load_lebel2023`.
    stories : list of str, optional
        Stories to include, in order; all of ``dataset.stories`` by default. A name of a split
        (``"train"``, ``"validation"``, ``"test"``) selects that split.
    window : float, default=10.0
        Window length in seconds.

    Returns
    -------
    X : AudioWindows of shape (n_trs, window * 16000)
    y : ndarray of shape (n_trs, n_voxels), float32
    groups : ndarray of shape (n_trs,)
        Story name of each TR.

    See Also
    --------
    dataset_windows, stack_responses : the two halves, for callers that need the audio and
        the stacked responses at different times.
    """
    stories = dataset_stories(dataset, stories)
    X = dataset_windows(dataset, stories, window=window)
    return X, stack_responses(dataset, stories), X.groups.copy()
