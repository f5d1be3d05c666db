"""Speech synthesis with word and phone alignments from espeak-ng (through ctypes).

The ``espeakng_loader`` wheel ships ``libespeak-ng`` and its data, so nothing is installed
system-wide. espeak-ng is GPL-3: it stays a runtime dependency loaded from that wheel and is
never vendored here.

The library is loaded afresh for every call (see ``_session``): espeak-ng carries synthesis
state from one utterance to the next, and a fresh load is what makes the same text give the
same audio. espeak-ng runs in synchronous mode: ``espeak_Synth`` calls our callback with blocks
of 22.05 kHz int16 samples and with events. Word events (type 1) carry the character offset and length of
the word in the text and its audio position in ms; phoneme events (type 7) carry espeak's
phoneme mnemonic. Those give word and phone alignments for free.
"""

from __future__ import annotations

import ctypes
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from .._utils import require

ESPEAK_SAMPLE_RATE = 22050
SAMPLE_RATE = 16000

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_PHONEME = 7
_PARAM_RATE = 1
_PARAM_PITCH = 3

# Events that are not speech sounds: pauses and markers espeak emits as phonemes.
# (";" is a linking glide marker between words, not a phone of either word.)
_NON_PHONES = {"", "_", "_:", "_!", "_^_", "||", "|", "_|", "'", ",", ";"}

_WORD_RE = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p),
                ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int), ("length", ctypes.c_int),
                ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EventId)]


class _Voice(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_char_p),
                ("identifier", ctypes.c_char_p), ("gender", ctypes.c_ubyte),
                ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte),
                ("xx1", ctypes.c_ubyte), ("score", ctypes.c_int), ("spare", ctypes.c_void_p)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_Event))

# espeak-ng holds global state: one synthesis at a time in a process.
_LOCK = threading.RLock()

@dataclass
class Utterance:
    """Synthesised speech with its alignments.

    Attributes
    ----------
    audio : ndarray of shape (n_samples,), float32
        Waveform at ``sample_rate`` (16 kHz), in [-1, 1].
    sample_rate : int
        16000.
    words : pandas.DataFrame
        One row per word of ``text`` (in order), columns ``onset``, ``offset`` (s), ``label``.
    phones : pandas.DataFrame
        One row per phone, columns ``onset``, ``offset`` (s), ``label`` (espeak mnemonics).
    text : str
        The synthesised text.
    voice : str
        The espeak-ng voice used.
    """

    audio: np.ndarray
    sample_rate: int
    words: object
    phones: object
    text: str
    voice: str = "en-us"

    @property
    def duration(self):
        """Length of the audio in seconds."""
        return len(self.audio) / self.sample_rate


def _declare(lib):
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                 ctypes.c_uint, ctypes.c_uint, ctypes.POINTER(ctypes.c_uint),
                                 ctypes.c_void_p]
    lib.espeak_Synchronize.restype = ctypes.c_int
    lib.espeak_Terminate.restype = ctypes.c_int
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int,
                                          ctypes.c_int]
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
    lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
    lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))


@contextmanager
def _session(on_audio=None):
    """A freshly loaded and initialised libespeak-ng, unloaded again on exit.

    espeak-ng keeps synthesis state (pitch flutter phase, random generators) across calls and
    even across ``espeak_Terminate``/``espeak_Initialize``, so the same text gives slightly
    different audio each time in one process. Loading the library afresh for every call
    (``dlopen`` after ``dlclose`` re-creates its static state; ~25 ms) makes synthesis
    deterministic. Callers hold ``_LOCK``.

    Parameters
    ----------
    on_audio : callable, optional
        ``on_audio(samples_int16_or_None, events)`` for the synth callback.
    """
    import _ctypes

    loader = require("espeakng_loader", "speech synthesis")
    lib = ctypes.CDLL(loader.get_library_path())
    _declare(lib)
    data_path = loader.get_data_path().encode()
    options = _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, options)
    if rate <= 0:
        raise RuntimeError(f"espeak_Initialize failed (returned {rate}) with data at {data_path!r}")

    def collect(wav, n_samples, events):
        if on_audio is None:
            return 0
        samples = (np.ctypeslib.as_array(wav, shape=(n_samples,)).copy()
                   if n_samples > 0 and wav else None)
        found = []
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type == _EVENT_WORD:
                found.append(("word", ev.text_position, ev.length, ev.audio_position, ""))
            elif ev.type == _EVENT_PHONEME:
                label = bytes(ev.id.string).split(b"\0", 1)[0].decode("ascii", "replace")
                found.append(("phone", ev.text_position, 0, ev.audio_position, label))
            i += 1
        on_audio(samples, found)
        return 0

    callback = _CALLBACK(collect)  # referenced until the library is unloaded
    lib.espeak_SetSynthCallback(callback)
    try:
        yield lib, rate
    finally:
        lib.espeak_Terminate()
        _ctypes.dlclose(lib._handle)
        del callback


def _set_voice(lib, voice, rate=None, pitch=None):
    if lib.espeak_SetVoiceByName(str(voice).encode()) != 0:
        raise ValueError(f"espeak-ng has no voice {voice!r}; see sk_braintune.builtin.list_voices()")
    if rate is not None:
        lib.espeak_SetParameter(_PARAM_RATE, int(rate), 0)
    if pitch is not None:
        lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)


def list_voices():
    """English voices available in the bundled espeak-ng data.

    Returns
    -------
    voices : list of str
        Voice names usable as ``synthesize(..., voice=...)``, e.g. ``"en-us"``, ``"en-gb-x-rp"``.
    """
    with _LOCK, _session() as (lib, _):
        voices = lib.espeak_ListVoices(None)
        names = []
        i = 0
        while voices[i]:
            voice = voices[i].contents
            # languages: (priority byte, language string) pairs, ends with an empty string
            raw = ctypes.string_at(voice.languages, 64)
            languages = [part[1:].decode("ascii", "replace") for part in raw.split(b"\0")
                         if len(part) > 1]
            name = voice.name.decode("utf-8", "replace") if voice.name else ""
            ident = voice.identifier.decode("utf-8", "replace") if voice.identifier else ""
            # espeak_SetVoiceByName accepts the voice file's name (identifier's basename)
            if languages[:1] and languages[0].startswith("en") and "Shaw" not in ident:
                names.append(ident.rsplit("/", 1)[-1].lower() or name)
            i += 1
        return sorted(set(names))


def _split_words(text):
    """Word spans ``(start, end, word)`` (character offsets into ``text``)."""
    return [(m.start(), m.end(), m.group()) for m in _WORD_RE.finditer(text)]


def _align_words(spans, word_events, duration):
    """Map each text word to the word event covering it; split merged events' time spans.

    Parameters
    ----------
    spans : list of (start, end, word)
        Character spans of the text words (0-based).
    word_events : list of (text_position, length, audio_ms)
        espeak word events (1-based text positions), in audio order.
    duration : float
        Length of the audio in seconds.

    Returns
    -------
    onsets, offsets : ndarray of shape (n_words,)
    """
    events = sorted(word_events, key=lambda e: e[2])
    starts = np.array([e[2] / 1000.0 for e in events] + [duration])
    ev_begin = [e[0] - 1 for e in events]
    ev_end = [e[0] - 1 + max(e[1], 1) for e in events]
    # In text order, a word's owner is the event overlapping it, else the event starting inside
    # it, else the nearest event before it (a function word merged into that event).
    by_text = np.argsort(ev_begin, kind="stable")
    begins = np.asarray(ev_begin)[by_text]
    ends = np.asarray(ev_end)[by_text]
    owner = np.full(len(spans), -1)
    for w, (start, end, _) in enumerate(spans):
        if not len(events):
            break
        i = int(np.searchsorted(begins, start, side="right")) - 1
        if i >= 0 and ends[i] > start:
            owner[w] = by_text[i]
        elif i + 1 < len(begins) and (begins[i + 1] < end or i < 0):
            owner[w] = by_text[i + 1]
        else:
            owner[w] = by_text[max(i, 0)]
    # Text order must give non-decreasing events (espeak speaks in order).
    owner = np.maximum.accumulate(owner)
    onsets = np.zeros(len(spans))
    offsets = np.zeros(len(spans))
    for k in np.unique(owner):
        members = np.flatnonzero(owner == k)
        if k < 0:
            onsets[members], offsets[members] = 0.0, 0.0
            continue
        t0, t1 = starts[k], starts[k + 1]
        # Merged function words: share the event's span in proportion to word lengths.
        lengths = np.array([len(spans[m][2]) for m in members], dtype=float)
        edges = t0 + (t1 - t0) * np.concatenate([[0.0], np.cumsum(lengths) / lengths.sum()])
        onsets[members], offsets[members] = edges[:-1], edges[1:]
    return onsets, offsets


def _spread_instant_phones(phones):
    """Give zero-length phones half of a neighbour's span.

    espeak reports some phones blended into a neighbour (postvocalic /l/ in "silver") at the
    same audio position as the next phone; they are real phones, so they keep a share of time.
    """
    onset = phones["onset"].to_numpy(dtype=float).copy()
    offset = phones["offset"].to_numpy(dtype=float).copy()
    keep = np.ones(len(onset), dtype=bool)
    for i in range(len(onset)):
        if offset[i] > onset[i]:
            continue
        if i > 0 and abs(offset[i - 1] - onset[i]) < 1e-9 and offset[i - 1] > onset[i - 1]:
            middle = (onset[i - 1] + offset[i - 1]) / 2
            offset[i - 1], onset[i], offset[i] = middle, middle, offset[i - 1]
        elif i + 1 < len(onset) and abs(onset[i + 1] - offset[i]) < 1e-9 \
                and offset[i + 1] > onset[i + 1]:
            middle = (onset[i + 1] + offset[i + 1]) / 2
            offset[i], onset[i + 1] = middle, middle
        else:
            keep[i] = False
    out = phones.assign(onset=onset, offset=offset)
    return out[keep].reset_index(drop=True)


def _trim_pause_tails(onsets, offsets, phones):
    """End each word at the end of its last phone, so pauses are not counted as speech."""
    if phones.empty:
        return offsets
    p_on = phones["onset"].to_numpy()
    p_off = phones["offset"].to_numpy()
    # phones are sorted and disjoint: the last phone starting inside the word ends it
    first = np.searchsorted(p_on, onsets - 1e-9, side="left")
    last = np.searchsorted(p_on, offsets - 1e-9, side="left") - 1
    new = offsets.copy()
    has_phone = last >= first
    new[has_phone] = np.minimum(offsets[has_phone], p_off[last[has_phone]])
    return new


def synthesize(text, *, voice="en-us", rate=175, pitch=50):
    """Synthesise English speech with word and phone alignments.

    Parameters
    ----------
    text : str
        Text to speak (plain text, not SSML).
    voice : str, default="en-us"
        espeak-ng voice name (see :func:`list_voices`).
    rate : int, default=175
        Speaking rate in words per minute (espeak-ng accepts 80-450).
    pitch : int, default=50
        Base pitch, 0-100.

    Returns
    -------
    utterance : Utterance
        ``audio`` (float32, 16 kHz), ``words`` (one row per word of ``text``, in order) and
        ``phones`` (espeak phoneme mnemonics; pauses dropped) with onsets/offsets in seconds.

    Raises
    ------
    ValueError
        If ``text`` holds no word, or ``voice`` does not exist.
    """
    import pandas as pd
    from scipy.signal import resample_poly

    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    spans = _split_words(text)
    if not spans:
        raise ValueError("text holds no word to speak: give a non-empty English text")
    encoded = text.encode("utf-8")
    chunks, events = [], []

    def on_audio(samples, found):
        if samples is not None:
            chunks.append(samples)
        events.extend(found)

    with _LOCK, _session(on_audio) as (lib, native_rate):
        _set_voice(lib, voice, rate, pitch)
        err = lib.espeak_Synth(encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8,
                               None, None)
        lib.espeak_Synchronize()
    if err != 0:
        raise RuntimeError(f"espeak_Synth failed with error {err}")
    samples = (np.concatenate(chunks) if chunks
               else np.zeros(0, dtype=np.int16))
    native = samples.astype(np.float32) / 32768.0
    audio = resample_poly(native, SAMPLE_RATE, native_rate).astype(np.float32)
    np.clip(audio, -1.0, 1.0, out=audio)
    duration = len(audio) / SAMPLE_RATE

    # espeak counts text positions in characters; map them to our character offsets.
    word_events = [(pos, length, ms) for kind, pos, length, ms, _ in events
                   if kind == "word"]
    phone_events = [(ms, label) for kind, _, _, ms, label in events if kind == "phone"]

    phone_times = np.array([ms / 1000.0 for ms, _ in phone_events] + [duration])
    phone_rows = [(min(phone_times[i], duration), min(phone_times[i + 1], duration), label)
                  for i, (_, label) in enumerate(phone_events)]
    phones = pd.DataFrame(phone_rows, columns=["onset", "offset", "label"])
    phones["label"] = phones["label"].str.replace("'", "", regex=False).str.replace(
        ",", "", regex=False)
    phones = phones[~phones["label"].isin(_NON_PHONES)].reset_index(drop=True)
    phones = _spread_instant_phones(phones)

    onsets, offsets = _align_words(spans, word_events, duration)
    offsets = _trim_pause_tails(onsets, offsets, phones)
    words = pd.DataFrame({"onset": onsets, "offset": offsets,
                          "label": [w for _, _, w in spans]})
    return Utterance(audio=audio, sample_rate=SAMPLE_RATE, words=words, phones=phones,
                     text=text, voice=voice)


def text_to_phonemes(text, voice="en-us", *, ipa=False):
    """Phonemic transcription with espeak-ng's ``espeak_TextToPhonemes``.

    Parameters
    ----------
    text : str or list of str
        One text, or several (transcribed in one library session, faster than one call each).
    voice : str, default="en-us"
    ipa : bool, default=False
        Return IPA symbols instead of espeak's ASCII phoneme mnemonics.

    Returns
    -------
    phonemes : str or list of str
        Per text: its clauses joined by single spaces; words are separated by spaces, stress
        marks (``'`` primary, ``,`` secondary) kept.
    """
    single = isinstance(text, str)
    texts = [text] if single else list(text)
    for item in texts:
        if not isinstance(item, str):
            raise TypeError(f"text must be a str or a list of str, got {type(item).__name__}")
    results = []
    with _LOCK, _session() as (lib, _):
        _set_voice(lib, voice)
        for item in texts:
            buf = ctypes.create_string_buffer(item.encode("utf-8"))
            pointer = ctypes.c_void_p(ctypes.addressof(buf))
            parts = []
            while pointer.value:
                out = lib.espeak_TextToPhonemes(ctypes.byref(pointer), _CHARS_UTF8,
                                                0x02 if ipa else 0)
                if out:
                    parts.append(out.decode("utf-8", "replace").strip())
            results.append(" ".join(p for p in parts if p))
    return results[0] if single else results
