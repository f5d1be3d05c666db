"""Low-level speech features: power spectrum, phoneme / diphone / triphone and articulatory counts.

These are the "low-level" feature spaces whose contribution to brain alignment is regressed out
(:class:`sk_braintune.evaluation.Residualizer`) to measure the *low-level impact* of a
speech model's features.

Phone-based features follow the reference recipe of ``downsample_word_vectors``: every phone (or
phone n-gram) is an event at its midpoint carrying a one-hot (or articulatory) vector; the events
are resampled to the TR times with a 3-lobe Lanczos filter (unnormalised by default, exactly like
HuthLab's ``lanczosinterp2D``; the per-story z-scoring that follows removes the gain).
``resample="count"`` instead counts the events whose midpoint falls inside each volume
``[t - TR/2, t + TR/2)``, which is easy to check by hand.

Two phone sets are supported: ``"arpabet"`` (the TextGrid phone tier of ds003020, ARPAbet with
stress digits, silences ``sp``/``sil``/empty) and ``"espeak"`` (espeak-ng phoneme mnemonics, as in
the built-in simulator). Articulatory tables for both ship in ``sk_braintune/data``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from .._docs import fill_doc
from .._utils import data_file
from ..datasets.textgrid import SILENCE_LABELS
from ..preprocessing import mel_filterbank
from ..windows import is_audio_windows
from .lanczos import lanczos_resample

__all__ = [
    "LowLevelSpeechFeatures",
    "PowerSpectrumFeatures",
    "articulatory_table",
    "lowlevel_features",
    "normalize_phone",
    "phone_inventory",
    "power_spectrum_features",
    "story_alignments",
]

_SILENCES = SILENCE_LABELS  # the package-wide set, compared lower-cased
_KINDS = ("phoneme", "diphone", "triphone", "articulation")
_PHONE_SETS = ("arpabet", "espeak")
OTHER = "other"


# ---------------------------------------------------------------------------------------------
# phone tables
# ---------------------------------------------------------------------------------------------
def articulatory_table(phone_set="arpabet"):
    """Phone -> articulatory-feature table shipped with the package.

    Parameters
    ----------
    phone_set : {"arpabet", "espeak"}, default="arpabet"
        ``"arpabet"``: the 39 ARPAbet phones (no stress digits). ``"espeak"``: espeak-ng English
        phoneme mnemonics (as emitted in its phoneme events), with an ``arpabet`` column giving
        the nearest ARPAbet phone.

    Returns
    -------
    table : pandas.DataFrame
        Index: phone symbol (str). Columns: 27 binary articulatory features (``vowel``,
        ``consonant``, ``voiced``, manner, place, height, backness, ``rounded``, ``diphthong``,
        ``syllabic``), int8; plus ``arpabet`` for ``"espeak"``.
    """
    import pandas as pd

    _check_phone_set(phone_set)
    path = data_file(f"articulatory_{phone_set}.csv")
    table = pd.read_csv(path, dtype={"phone": str, "arpabet": str}, keep_default_na=False)
    table = table.set_index("phone")
    features = [c for c in table.columns if c != "arpabet"]
    table[features] = table[features].astype(np.int8)
    return table


def phone_inventory(phone_set="arpabet"):
    """Phone symbols of a phone set (the rows of :func:`articulatory_table`).

    Parameters
    ----------
    phone_set : {"arpabet", "espeak"}

    Returns
    -------
    phones : list of str
    """
    return list(articulatory_table(phone_set).index)


def _check_phone_set(phone_set):
    if phone_set not in _PHONE_SETS:
        raise ValueError(f"phone_set must be one of {_PHONE_SETS}, got {phone_set!r}")


def normalize_phone(label, phone_set="arpabet", inventory=None):
    """Canonical phone symbol, or ``None`` for silences.

    ARPAbet labels lose their stress digit and are upper-cased (``"AH0"`` -> ``"AH"``). espeak
    labels lose stress marks; unknown espeak variants fall back to their base symbol by dropping
    trailing variant marks (``"t#"`` -> ``"t"``) when ``inventory`` is given. Labels that are
    still unknown map to ``"other"``.

    Parameters
    ----------
    label : str
        Phone label from an alignment.
    phone_set : {"arpabet", "espeak"}
    inventory : collection of str, optional
        Known phones; when given, unknown labels map to ``"other"``.

    Returns
    -------
    phone : str or None
    """
    if label is None or (isinstance(label, float) and np.isnan(label)):
        return None
    label = str(label).strip()
    if label.lower() in _SILENCES:
        return None
    if phone_set == "arpabet":
        label = re.sub(r"\d+$", "", label.upper())
        if not label or label.lower() in _SILENCES:
            return None
    else:
        label = label.replace("'", "").replace(",", "")
        if not label or label in _SILENCES:
            return None
    if inventory is not None and label not in inventory:
        base = label
        while phone_set == "espeak" and len(base) > 1 and base not in inventory:
            base = base[:-1]
        label = base if base in inventory else OTHER
    return label


# ---------------------------------------------------------------------------------------------
# alignment containers
# ---------------------------------------------------------------------------------------------
def story_alignments(dataset, stories=None):
    """Per-story alignment records of a dataset, the input of :class:`LowLevelSpeechFeatures`.

    Parameters
    ----------
    dataset : sklearn.utils.Bunch
        Anything following the dataset contract (``phones``, ``tr_times``, ``tr``, optionally
        ``words`` and ``phone_set``).
    stories : list of str or str, optional
        Stories in order; a split name (``"train"``, ``"validation"``, ``"test"``) selects that
        split; all stories by default.

    Returns
    -------
    records : list of dict
        One dict per story with keys ``story``, ``phones`` (DataFrame onset/offset/label),
        ``tr_times`` (ndarray of shape (n_trs,)), ``tr`` (float).
    """
    if stories is None:
        stories = list(dataset["stories"])
    elif isinstance(stories, str):
        stories = list(dataset["split"][stories])
    missing = [s for s in stories if s not in dataset["phones"]]
    if missing:
        raise ValueError(f"the dataset has no phone alignment for stories {missing}")
    return [{"story": s, "phones": dataset["phones"][s],
             "tr_times": np.asarray(dataset["tr_times"][s], dtype=np.float64),
             "tr": float(dataset["tr"])} for s in stories]


def _as_records(X, need_times=True):
    """Normalise the accepted inputs to a list of alignment records."""
    import pandas as pd

    if isinstance(X, Mapping) and "phones" in X and "tr_times" in X:
        if "stories" in X:  # a whole dataset bunch
            return story_alignments(X)
        X = [X]
    if isinstance(X, pd.DataFrame):
        X = [{"phones": X}]
    if not isinstance(X, (list, tuple)) or not X:
        raise TypeError(
            "LowLevelSpeechFeatures expects alignments: a dataset bunch, or a list of dicts with "
            "keys 'phones' (DataFrame with onset, offset, label) and 'tr_times' (mid-volume times); "
            "use sk_braintune.features.lowlevel.story_alignments(dataset, stories). Got "
            f"{type(X).__name__}."
        )
    records = []
    for i, rec in enumerate(X):
        if isinstance(rec, pd.DataFrame):
            rec = {"phones": rec}
        if not isinstance(rec, Mapping) or "phones" not in rec:
            raise TypeError(f"alignment record {i} must be a dict with a 'phones' DataFrame")
        phones = rec["phones"]
        missing = {"onset", "offset", "label"} - set(getattr(phones, "columns", ()))
        if missing:
            raise ValueError(f"alignment record {i}: the phone table lacks columns {sorted(missing)}")
        if need_times and "tr_times" not in rec:
            raise ValueError(f"alignment record {i} has no 'tr_times' (mid-volume times, s)")
        records.append(rec)
    return records


def _phone_events(phones, phone_set, inventory):
    """Phones of one story as (labels, onsets, offsets, run ids), silences dropped.

    Run ids increase at every silence or gap so that n-grams never span a pause.
    """
    labels, onsets, offsets, runs = [], [], [], []
    run, last_offset = 0, None
    for onset, offset, label in zip(phones["onset"].to_numpy(float), phones["offset"].to_numpy(float),
                                    phones["label"].tolist()):
        phone = normalize_phone(label, phone_set, inventory)
        if phone is None:
            run += 1
            last_offset = None
            continue
        if last_offset is not None and onset - last_offset > 0.05:  # unmarked pause
            run += 1
        labels.append(phone)
        onsets.append(onset)
        offsets.append(offset)
        runs.append(run)
        last_offset = offset
    return labels, np.asarray(onsets), np.asarray(offsets), np.asarray(runs, dtype=np.int64)


def _ngrams(labels, onsets, offsets, runs, n):
    """Phone n-grams within pause-free runs: (names, midpoint times)."""
    names, times = [], []
    for i in range(len(labels) - n + 1):
        if runs[i] != runs[i + n - 1]:
            continue
        names.append("_".join(labels[i:i + n]))
        times.append(0.5 * (onsets[i] + offsets[i + n - 1]))
    return names, np.asarray(times, dtype=np.float64)


def _resample_events(values, times, tr_times, tr, resample, window):
    """Place event vectors at their times and bring them to the TR grid."""
    n_trs, d = len(tr_times), values.shape[1]
    if len(times) == 0:
        return np.zeros((n_trs, d))
    if resample == "count":
        edges = np.concatenate([tr_times - tr / 2.0, [tr_times[-1] + tr / 2.0]])
        which = np.searchsorted(edges, times, side="right") - 1
        keep = (which >= 0) & (which < n_trs)
        out = np.zeros((n_trs, d))
        np.add.at(out, which[keep], values[keep])
        return out
    return lanczos_resample(values, times, tr_times, window=window,
                            normalize=(resample == "lanczos_normalized"))


# ---------------------------------------------------------------------------------------------
# phone-based features
# ---------------------------------------------------------------------------------------------
class LowLevelSpeechFeatures(TransformerMixin, BaseEstimator):
    """Phoneme, diphone, triphone or articulatory-feature counts per TR from phone alignments.

    One sample is one TR. ``X`` is a list of per-story alignment records (dicts with a
    ``phones`` DataFrame of onset/offset/label and the story's ``tr_times``), as returned by
    :func:`story_alignments`, or a whole dataset bunch; ``transform`` returns the rows of all
    stories concatenated in record order, aligned with
    :func:`sk_braintune.windows.windows_from_dataset` for the same stories.

    Parameters
    ----------
    kind : {"phoneme", "diphone", "triphone", "articulation"}, default="phoneme"
        ``"phoneme"``: one column per phone of the phone set (+ ``other``). ``"diphone"`` /
        ``"triphone"``: phone n-grams inside pause-free runs; the ``top_k`` most frequent in the
        training stories get a column, the rest count as ``other``. ``"articulation"``: sums of
        the binary articulatory features of the phones (:func:`articulatory_table`).
    phone_set : {"arpabet", "espeak"}, default="arpabet"
        ``"arpabet"`` for ds003020 TextGrids (stress digits are stripped), ``"espeak"`` for the
        built-in simulator.
    top_k : int, default=200
        Vocabulary size for diphones / triphones.
    resample : {"lanczos", "lanczos_normalized", "count"}, default="lanczos"
        ``"lanczos"``: events at their midpoints, 3-lobe Lanczos to TR times, unnormalised (the
        reference recipe). ``"lanczos_normalized"``: weights sum to one per TR. ``"count"``:
        number of events whose midpoint falls in each volume ``[t - tr/2, t + tr/2)``.
    window : int, default=3
        Lanczos lobes.
    tr : float, default=2.0045
        Volume duration in s, used by ``resample="count"`` when a record carries no ``tr``.

    Attributes
    ----------
    vocabulary_ : list of str
        Column names (phones, n-grams joined by ``_``, or articulatory features).
    n_features_out_ : int
    """

    def __init__(self, kind="phoneme", phone_set="arpabet", top_k=200, resample="lanczos",
                 window=3, tr=2.0045):
        self.kind = kind
        self.phone_set = phone_set
        self.top_k = top_k
        self.resample = resample
        self.window = window
        self.tr = tr

    def _check_params(self):
        if self.kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {self.kind!r}")
        _check_phone_set(self.phone_set)
        if self.resample not in ("lanczos", "lanczos_normalized", "count"):
            raise ValueError("resample must be 'lanczos', 'lanczos_normalized' or 'count', "
                             f"got {self.resample!r}")
        if int(self.top_k) < 1:
            raise ValueError(f"top_k must be a positive integer, got {self.top_k!r}")

    def fit(self, X, y=None):
        """Learn the column vocabulary (n-grams from these training stories).

        Parameters
        ----------
        X : list of dict or dataset bunch
            Training alignments (``tr_times`` not needed for fitting).
        y : None
            Ignored.

        Returns
        -------
        self : LowLevelSpeechFeatures
        """
        self._check_params()
        records = _as_records(X, need_times=False)
        table = articulatory_table(self.phone_set)
        self.inventory_ = list(table.index)
        if self.kind == "phoneme":
            vocabulary = self.inventory_ + [OTHER]
        elif self.kind == "articulation":
            vocabulary = [c for c in table.columns if c != "arpabet"]
        else:
            n = 2 if self.kind == "diphone" else 3
            counts = Counter()
            known = set(self.inventory_)
            for rec in records:
                events = _phone_events(rec["phones"], self.phone_set, known)
                counts.update(_ngrams(*events, n)[0])
            # ties broken alphabetically so the vocabulary does not depend on story order
            ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            vocabulary = [k for k, _ in ranked[:int(self.top_k)]] + [OTHER]
        self.vocabulary_ = vocabulary
        self.n_features_out_ = len(vocabulary)
        return self

    def _story_events(self, phones):
        """(values (n_events, d), times (n_events,)) for one story."""
        known = set(self.inventory_)
        labels, onsets, offsets, runs = _phone_events(phones, self.phone_set, known)
        column = {name: j for j, name in enumerate(self.vocabulary_)}
        if self.kind in ("phoneme", "diphone", "triphone"):
            if self.kind == "phoneme":
                names, times = labels, 0.5 * (onsets + offsets)
            else:
                names, times = _ngrams(labels, onsets, offsets, runs,
                                       2 if self.kind == "diphone" else 3)
            values = np.zeros((len(names), len(self.vocabulary_)))
            values[np.arange(len(names)), [column.get(k, column[OTHER]) for k in names]] = 1.0
            return values, np.asarray(times, dtype=np.float64)
        table = articulatory_table(self.phone_set)[self.vocabulary_]
        zeros = np.zeros(len(self.vocabulary_))
        values = np.array([table.loc[p].to_numpy(float) if p in table.index else zeros
                           for p in labels]).reshape(len(labels), len(self.vocabulary_))
        return values, 0.5 * (onsets + offsets)

    def transform_stories(self, X):
        """Per-story feature matrices.

        Parameters
        ----------
        X : list of dict or dataset bunch
            Alignment records with ``tr_times``.

        Returns
        -------
        features : list of ndarray of shape (n_trs_story, n_features_out), float32
        """
        check_is_fitted(self, "vocabulary_")
        out = []
        for rec in _as_records(X):
            tr_times = np.asarray(rec["tr_times"], dtype=np.float64)
            values, times = self._story_events(rec["phones"])
            tr = float(rec.get("tr", self.tr))
            out.append(_resample_events(values, times, tr_times, tr, self.resample,
                                        self.window).astype(np.float32))
        return out

    def transform(self, X):
        """Feature counts per TR, stories concatenated in order.

        Parameters
        ----------
        X : list of dict or dataset bunch
            Alignment records with ``tr_times``.

        Returns
        -------
        features : ndarray of shape (n_trs_total, n_features_out), float32
        """
        return np.concatenate(self.transform_stories(X), axis=0)

    @fill_doc
    def get_feature_names_out(self, input_features=None):
        """Column names, prefixed by the kind (e.g. ``phoneme_AH``, ``diphone_DH_AH``).

        Parameters
        ----------
        %(input_features)s

        Returns
        -------
        names : ndarray of str
        """
        check_is_fitted(self, "vocabulary_")
        return np.asarray([f"{self.kind}_{v}" for v in self.vocabulary_], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.dict = True
        tags.requires_fit = True
        return tags


# ---------------------------------------------------------------------------------------------
# power spectrum
# ---------------------------------------------------------------------------------------------
def _band_matrix(n_fft, sample_rate, n_bands, fmin, fmax):
    """Triangular mel filters as a C-ordered (n_fft // 2 + 1, n_bands) matrix (``spectrum @ W``)."""
    return np.ascontiguousarray(mel_filterbank(n_bands, n_fft, sample_rate, fmin, fmax).T)


def _frame_band_power(audio, sample_rate, frame_length, hop, band_weights):
    """Band power of each frame (n_frames, n_bands) and the frame centres in samples."""
    n = int(round(frame_length * sample_rate))
    step = max(int(round(hop * sample_rate)), 1)
    audio = np.asarray(audio)  # float64 a block at a time (an hour at 16 kHz: 0.4 GB)
    if audio.dtype.kind != "f":
        audio = audio.astype(np.float64)
    if audio.size < n:
        audio = np.pad(audio, (0, n - audio.size))
    n_frames = 1 + (audio.size - n) // step
    frames = np.lib.stride_tricks.sliding_window_view(audio, n)[::step][:n_frames]
    taper = np.hanning(n)
    power = np.empty((n_frames, band_weights.shape[1]))
    # a block of frames at a time: the windowed frames and their spectra are 8 and 16 bytes a
    # sample (3 GB for an hour of audio at once), the band powers a few per frame
    for first in range(0, n_frames, _FRAMES_PER_BLOCK):
        block = frames[first:first + _FRAMES_PER_BLOCK]
        power[first:first + len(block)] = (np.abs(np.fft.rfft(block * taper, axis=1)) ** 2
                                           ) @ band_weights
    centres = np.arange(n_frames) * step + n / 2.0
    return power, centres


_FRAMES_PER_BLOCK = 8192


class PowerSpectrumFeatures(TransformerMixin, BaseEstimator):
    """Log power in mel-spaced frequency bands over the final TR span of each audio window.

    Stateless: each row of ``X`` is a causal audio window ending at its TR's volume end (as
    produced by :func:`sk_braintune.make_windows`), and the output row is the log of the mean
    band power of the short-time spectra in the last ``span`` seconds of the window.

    Parameters
    ----------
    n_bands : int, default=32
        Mel-spaced bands between ``fmin`` and ``fmax``.
    span : float or None, default=2.0045
        Seconds at the end of each window to analyse (one TR); ``None`` uses the whole window.
    fmin, fmax : float, default=50.0, 8000.0
        Band limits in Hz.
    frame_length, hop : float, default=0.025, 0.010
        Short-time analysis frames in seconds.
    sample_rate : int, default=16000
    log : bool, default=True
        Return ``log(power + 1e-10)`` instead of power.

    Attributes
    ----------
    n_features_in_ : int
        Window length in samples.
    """

    def __init__(self, n_bands=32, span=2.0045, fmin=50.0, fmax=8000.0, frame_length=0.025,
                 hop=0.010, sample_rate=16000, log=True):
        self.n_bands = n_bands
        self.span = span
        self.fmin = fmin
        self.fmax = fmax
        self.frame_length = frame_length
        self.hop = hop
        self.sample_rate = sample_rate
        self.log = log

    def fit(self, X, y=None):
        """Check the windows (the transformer is stateless).

        Parameters
        ----------
        X : array-like of shape (n_windows, n_samples) or AudioWindows
        y : None
            Ignored.

        Returns
        -------
        self : PowerSpectrumFeatures
        """
        if int(self.n_bands) < 1:
            raise ValueError(f"n_bands must be >= 1, got {self.n_bands}")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ValueError(f"need 0 <= fmin < fmax <= sample_rate / 2, got fmin={self.fmin}, "
                             f"fmax={self.fmax}")
        X = self._validate(X, reset=True)
        return self

    def _validate(self, X, reset):
        if is_audio_windows(X):  # stay lazy
            if reset:
                self.n_features_in_ = int(X.shape[1])
            elif X.shape[1] != self.n_features_in_:
                raise ValueError(f"X has {X.shape[1]} features, but PowerSpectrumFeatures is "
                                 f"expecting {self.n_features_in_} features as input.")
            return X
        return validate_data(self, X, reset=reset, dtype=[np.float32, np.float64])

    def transform(self, X):
        """Log band power per window.

        Parameters
        ----------
        X : array-like of shape (n_windows, n_samples) or AudioWindows

        Returns
        -------
        power : ndarray of shape (n_windows, n_bands)
            float32 for AudioWindows and float32 input, float64 for float64 input.
        """
        check_is_fitted(self, "n_features_in_")
        X = self._validate(X, reset=False)
        n_fft = int(round(self.frame_length * self.sample_rate))
        weights = _band_matrix(n_fft, self.sample_rate, int(self.n_bands), self.fmin, self.fmax)
        n_samples = X.shape[1]
        keep = n_samples if self.span is None else min(n_samples, int(round(self.span * self.sample_rate)))
        dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.float32
        out = np.empty((X.shape[0], int(self.n_bands)), dtype=dtype)
        for i in range(X.shape[0]):
            window = np.asarray(X[i])[n_samples - keep:]
            power, _ = _frame_band_power(window, self.sample_rate, self.frame_length, self.hop,
                                         weights)
            mean_power = power.mean(axis=0)
            out[i] = np.log(mean_power + 1e-10) if self.log else mean_power
        return out

    @fill_doc
    def get_feature_names_out(self, input_features=None):
        """Names ``powspec_00`` ... ``powspec_{n_bands-1}``.

        Parameters
        ----------
        %(input_features)s

        Returns
        -------
        names : ndarray of str
        """
        check_is_fitted(self, "n_features_in_")
        return np.asarray([f"powspec_{b:02d}" for b in range(int(self.n_bands))], dtype=object)


def power_spectrum_features(audio, tr_times, *, n_bands=32, fmin=50.0, fmax=8000.0,
                            frame_length=0.025, hop=0.010, sample_rate=16000, window=3,
                            normalize=False):
    """Story-level power spectrum: log band power of short frames, Lanczos-resampled to TRs.

    Like the reference's ``powspec`` features: frame-level spectra (25 ms frames every 10 ms)
    summed into mel-spaced bands, log-compressed, then resampled to the TR times like the model
    features (3-lobe Lanczos, unnormalised unless ``normalize``).

    Parameters
    ----------
    audio : ndarray of shape (n_samples,)
        Mono float audio at ``sample_rate``.
    tr_times : ndarray of shape (n_trs,)
        Mid-volume times (s) relative to the audio start.
    n_bands, fmin, fmax, frame_length, hop, sample_rate :
        See :class:`PowerSpectrumFeatures`.
    window : int, default=3
        Lanczos lobes.
    normalize : bool, default=False
        Normalise the Lanczos weights per TR.

    Returns
    -------
    features : ndarray of shape (n_trs, n_bands), float32
    """
    n_fft = int(round(frame_length * sample_rate))
    weights = _band_matrix(n_fft, sample_rate, int(n_bands), fmin, fmax)
    power, centres = _frame_band_power(audio, sample_rate, frame_length, hop, weights)
    logpow = np.log(power + 1e-10)
    return lanczos_resample(logpow, centres / sample_rate, np.asarray(tr_times, dtype=np.float64),
                            window=window, normalize=normalize).astype(np.float32)


def lowlevel_features(dataset, kind="phoneme", stories=None, *, fit_stories="train",
                      phone_set=None, **params):
    """Low-level features of a dataset's stories, one matrix per story.

    Parameters
    ----------
    dataset : sklearn.utils.Bunch
        Dataset following the contract (``audio``, ``phones``, ``tr_times``, ``tr``, ``split``,
        ``phone_set``).
    kind : {"powspec", "phoneme", "diphone", "triphone", "articulation"}, default="phoneme"
    stories : list of str or str, optional
        Stories to compute (a split name selects a split); all by default.
    fit_stories : list of str or str, default="train"
        Stories whose n-grams define the diphone / triphone vocabulary (never the test story).
    phone_set : {"arpabet", "espeak"}, optional
        Defaults to ``dataset.phone_set`` (else ``"arpabet"``).
    **params
        Passed to :class:`LowLevelSpeechFeatures` or :func:`power_spectrum_features`.

    Returns
    -------
    features : dict of str to ndarray of shape (n_trs_story, d), float32
    """
    if stories is None:
        stories = list(dataset["stories"])
    elif isinstance(stories, str):
        stories = list(dataset["split"][stories])
    if kind == "powspec":
        return {s: power_spectrum_features(dataset["audio"][s], dataset["tr_times"][s],
                                           sample_rate=dataset.get("sample_rate", 16000), **params)
                for s in stories}
    if phone_set is None:
        phone_set = dataset.get("phone_set", "arpabet")
    transformer = LowLevelSpeechFeatures(kind=kind, phone_set=phone_set, **params)
    if isinstance(fit_stories, str):
        fit_stories = list(dataset["split"][fit_stories])
    transformer.fit(story_alignments(dataset, fit_stories))
    matrices = transformer.transform_stories(story_alignments(dataset, stories))
    return dict(zip(stories, matrices))
