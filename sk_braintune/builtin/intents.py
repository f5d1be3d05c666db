"""Spoken-command datasets for probing: intents (semantic) and phone presence (phonetic).

:func:`make_intent_dataset` speaks short commands of 8 intents with espeak-ng in several voices
and rates. Each intent has five paraphrase templates; three are used for training and two,
worded differently, for testing, so a probe must recognise the *meaning* of a command rather
than its words. :func:`make_phone_presence_dataset` is the low-level contrast: which of a set
of phones a spoken word contains (multi-label). Both need the ``demo`` extra (espeak-ng), take a
few seconds, and are cached on disk.
"""

from __future__ import annotations

import io
import re

import numpy as np

from .._hashing import digest_json
from .._utils import data_file

__all__ = ["INTENT_TEMPLATES", "make_intent_dataset", "make_phone_presence_dataset"]

_VERSION = 2

#: intent -> (slot name, fillers, five paraphrase templates: three for training, two for testing)
INTENT_TEMPLATES = {
    "weather": ("city", ["Paris", "Boston", "Tokyo", "Denver", "Madrid"], [
        "what is the weather like in {city}",
        "tell me the forecast for {city}",
        "how hot is it in {city} today",
        "will it rain in {city} tomorrow",
        "should I bring an umbrella in {city}",
    ]),
    "play_music": ("genre", ["jazz", "rock", "classical", "country", "reggae"], [
        "play some {genre} music",
        "put on a {genre} song",
        "I want to hear {genre} tunes",
        "start my {genre} playlist",
        "let me listen to {genre} please",
    ]),
    "set_alarm": ("time", ["six", "seven thirty", "five fifteen", "eight", "nine forty"], [
        "wake me up at {time}",
        "set an alarm for {time}",
        "I need an alarm at {time}",
        "make sure I get up at {time}",
        "do not let me oversleep past {time}",
    ]),
    "call": ("person", ["Anna", "David", "my sister", "Doctor Lee", "grandma"], [
        "call {person}",
        "phone {person} right now",
        "dial the number of {person}",
        "get {person} on the line",
        "I want to talk to {person}",
    ]),
    "lights_on": ("room", ["kitchen", "bedroom", "garage", "hallway", "office"], [
        "turn on the lights in the {room}",
        "switch the {room} lamp on",
        "make the {room} brighter",
        "it is too dark in the {room}",
        "I cannot see anything in the {room}",
    ]),
    "order_food": ("food", ["pizza", "burger", "salad", "curry", "sandwich"], [
        "order a {food} for dinner",
        "get me a {food} delivered",
        "I would like to buy a {food}",
        "I am hungry for a {food}",
        "have a {food} brought to my house",
    ]),
    "navigate": ("place", ["airport", "station", "museum", "hospital", "stadium"], [
        "take me to the {place}",
        "give me directions to the {place}",
        "how do I get to the {place}",
        "what is the fastest route to the {place}",
        "show the way to the {place} on the map",
    ]),
    "send_message": ("person", ["Anna", "David", "my sister", "Doctor Lee", "grandma"], [
        "send a text to {person}",
        "write a message to {person}",
        "text {person} that I am late",
        "let {person} know I will be late",
        "tell {person} I am on my way",
    ]),
}

_N_TRAIN_TEMPLATES = 3
DEFAULT_VOICES = ("en-us", "en-gb-x-rp", "en-gb-scotland")
DEFAULT_RATES = (150, 200)


def _key(payload):
    return digest_json(payload, length=16)


def _load_cached(path):
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    offsets = arrays.pop("offsets")
    flat = arrays.pop("flat")
    audio = [flat[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]
    return audio, arrays


def _save_cached(path, audio, arrays):
    from .._utils import atomic_write_bytes

    offsets = np.concatenate([[0], np.cumsum([len(a) for a in audio])]).astype(np.int64)
    buffer = io.BytesIO()
    np.savez(buffer, flat=np.concatenate(audio).astype(np.float32), offsets=offsets, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def _padded(audio):
    """(n, max_len) right-zero-padded float32 matrix and the lengths."""
    lengths = np.array([len(a) for a in audio], dtype=np.int64)
    data = np.zeros((len(audio), lengths.max()), dtype=np.float32)
    for i, a in enumerate(audio):
        data[i, :len(a)] = a
    return data, lengths


_WORD_RE = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)*")  # as sk_braintune.builtin splits words
_MARGIN = 0.04  # s of context kept around each clip (sentences are ~0.3 s apart)
_CHUNK_WORDS = 150  # words per espeak call: few calls, but no quadratic cost in the aligner


def _synthesize_all(texts, voices, rates):
    """Audio and phone labels of every text x voice x rate, in that nested order.

    Texts are spoken as consecutive sentences in a few espeak-ng calls and cut apart at their
    first word's onset and last word's offset (plus a small margin): one call per text would
    cost ~40 ms each in voice loading and resampling.
    """
    from . import synthesize

    n_words = [len(_WORD_RE.findall(t)) for t in texts]
    if min(n_words) == 0:
        raise ValueError("every text must contain a word")
    chunks, current, count = [], [], 0
    for i, n in enumerate(n_words):
        if current and count + n > _CHUNK_WORDS:
            chunks.append(current)
            current, count = [], 0
        current.append(i)
        count += n
    chunks.append(current)
    clips = {}
    for voice in voices:
        for rate in rates:
            for chunk in chunks:
                utt = synthesize(". ".join(texts[i] for i in chunk) + ".", voice=voice,
                                 rate=int(rate))
                onsets, offsets = utt.words["onset"].to_numpy(), utt.words["offset"].to_numpy()
                mids = 0.5 * (utt.phones["onset"].to_numpy() + utt.phones["offset"].to_numpy())
                labels = utt.phones["label"].astype(str).to_numpy()
                first = 0
                for i in chunk:
                    last = first + n_words[i] - 1
                    start = max(onsets[first] - _MARGIN, 0.0)
                    end = min(offsets[last] + _MARGIN, utt.duration)
                    inside = (mids >= onsets[first]) & (mids <= offsets[last])
                    clips[i, voice, int(rate)] = (
                        utt.audio[int(round(start * 16000)):int(round(end * 16000))],
                        " ".join(labels[inside]))
                    first = last + 1
    audio, phones, meta = [], [], []
    for i in range(len(texts)):
        for voice in voices:
            for rate in rates:
                clip, labels = clips[i, voice, int(rate)]
                audio.append(clip)
                phones.append(labels)
                meta.append((i, voice, int(rate)))
    return audio, phones, meta


def make_intent_dataset(voices=DEFAULT_VOICES, rates=DEFAULT_RATES, *, fillers_per_template=3,
                        random_state=0, cache=True, return_padded=False):
    """Spoken commands with intents; train/test split by paraphrase template.

    Parameters
    ----------
    voices : sequence of str, default=("en-us", "en-gb-x-rp", "en-gb-scotland")
        espeak-ng voices (:func:`sk_braintune.builtin.list_voices`).
    rates : sequence of int, default=(150, 200)
        Speaking rates in words per minute.
    fillers_per_template : int, default=3
        Slot fillers drawn (without replacement) for each template.
    random_state : int, default=0
        Seeds the choice of fillers.
    cache : bool, default=True
        Store the generated audio under :func:`sk_braintune._utils.cache_dir` and reuse it.
    return_padded : bool, default=False
        Also return ``data``, the clips right-zero-padded into one matrix (~130 MB for the
        default 720 clips). Probes should take ``audio`` (unpadded) so that pooling sees only
        real frames.

    Returns
    -------
    data : sklearn.utils.Bunch
        ``audio`` (list of 1-D float32 arrays, 16 kHz), ``lengths`` (samples), ``data`` (only
        with ``return_padded``: ndarray of shape (n, max_samples), right-zero-padded); ``target`` (int codes),
        ``target_names`` (intents), ``intents`` (str per sample), ``texts``, ``template``
        (global template id, e.g. ``"weather/3"``; use as ``groups``), ``paraphrase`` (template
        index within its intent, 0-4), ``voice``, ``rate``, ``split`` (``{"train": indices,
        "test": indices}``: templates 0-2 train, 3-4 test), ``sample_rate``, ``description``.
    """
    from sklearn.utils import Bunch

    from .._utils import cache_dir

    rng = np.random.RandomState(random_state)
    texts, intents, paraphrase = [], [], []
    for intent, (slot, fillers, templates) in INTENT_TEMPLATES.items():
        for t, template in enumerate(templates):
            chosen = rng.choice(len(fillers), size=min(fillers_per_template, len(fillers)),
                                replace=False)
            for f in chosen:
                texts.append(template.format(**{slot: fillers[f]}))
                intents.append(intent)
                paraphrase.append(t)
    voices, rates = [str(v) for v in voices], [int(r) for r in rates]
    key = _key({"v": _VERSION, "kind": "intents", "texts": texts, "voices": voices, "rates": rates})
    path = cache_dir("intents") / f"intents_{key}.npz"
    if cache and path.exists():
        audio, arrays = _load_cached(path)
        source, voice, rate = arrays["source"], arrays["voice"], arrays["rate"]
    else:
        audio, _, meta = _synthesize_all(texts, voices, rates)
        source = np.array([m[0] for m in meta])
        voice = np.array([m[1] for m in meta])
        rate = np.array([m[2] for m in meta])
        if cache:
            _save_cached(path, audio, {"source": source, "voice": voice, "rate": rate})
    names = list(INTENT_TEMPLATES)
    sample_intents = np.array(intents)[source]
    sample_paraphrase = np.array(paraphrase)[source]
    train = np.flatnonzero(sample_paraphrase < _N_TRAIN_TEMPLATES)
    test = np.flatnonzero(sample_paraphrase >= _N_TRAIN_TEMPLATES)
    bunch = Bunch(
        audio=audio, lengths=np.array([len(a) for a in audio], dtype=np.int64),
        target=np.array([names.index(i) for i in sample_intents]), target_names=names,
        intents=sample_intents, texts=np.array(texts)[source],
        template=np.array([f"{i}/{p}" for i, p in zip(sample_intents, sample_paraphrase)]),
        paraphrase=sample_paraphrase, voice=voice, rate=rate,
        split={"train": train, "test": test}, sample_rate=16000,
        description=(f"{len(audio)} spoken commands, {len(names)} intents x 5 paraphrase "
                     f"templates x {fillers_per_template} slot fillers, voices {voices}, rates "
                     f"{rates}; train on templates 0-{_N_TRAIN_TEMPLATES - 1}, test on the others "
                     "(different wording, same meanings)."),
    )
    if return_padded:
        bunch.data = _padded(audio)[0]
    return bunch


DEFAULT_PHONES = ("s", "t", "n", "k", "m", "p", "l", "d", "b", "f")


def _vocabulary():
    path = data_file("vocabulary.txt")
    return [w.strip() for w in path.read_text().splitlines() if w.strip()]


def make_phone_presence_dataset(phones=DEFAULT_PHONES, voices=DEFAULT_VOICES[:2],
                                rates=DEFAULT_RATES, *, test_fraction=0.3, random_state=0,
                                cache=True, return_padded=False):
    """Spoken words labelled with the phones they contain (multi-label), the phonetic contrast.

    Parameters
    ----------
    phones : sequence of str, default=("s", "t", "n", "k", "m", "p", "l", "d", "b", "f")
        espeak-ng phone symbols to detect.
    voices : sequence of str, default=("en-us", "en-gb-x-rp")
    rates : sequence of int, default=(150, 200)
    test_fraction : float, default=0.3
        Share of the *words* held out for testing (every voice and rate of a word stays on one
        side).
    random_state : int, default=0
        Seeds the word split.
    cache : bool, default=True
    return_padded : bool, default=False
        Also return the zero-padded matrix ``data``.

    Returns
    -------
    data : sklearn.utils.Bunch
        ``audio``, ``lengths`` (and ``data``; as in :func:`make_intent_dataset`), ``target``
        (ndarray of shape (n, n_phones), 0/1: the phone occurs in the word's espeak phones),
        ``target_names`` (the phones), ``words``, ``word_phones`` (space-separated phones of
        each sample), ``voice``, ``rate``, ``split``, ``sample_rate``, ``description``.
    """
    from sklearn.utils import Bunch

    from .._utils import cache_dir

    words = _vocabulary()
    voices, rates = [str(v) for v in voices], [int(r) for r in rates]
    key = _key({"v": _VERSION, "kind": "phones", "words": words, "voices": voices, "rates": rates})
    path = cache_dir("intents") / f"phones_{key}.npz"
    if cache and path.exists():
        audio, arrays = _load_cached(path)
        source, voice, rate, labels = (arrays["source"], arrays["voice"], arrays["rate"],
                                       arrays["labels"])
    else:
        audio, labels, meta = _synthesize_all(words, voices, rates)
        source = np.array([m[0] for m in meta])
        voice = np.array([m[1] for m in meta])
        rate = np.array([m[2] for m in meta])
        labels = np.array(labels)
        if cache:
            _save_cached(path, audio, {"source": source, "voice": voice, "rate": rate,
                                       "labels": labels})
    phones = [str(p) for p in phones]
    target = np.array([[int(p in set(lab.split())) for p in phones] for lab in labels])
    rng = np.random.RandomState(random_state)
    test_words = set(rng.choice(len(words), size=int(round(test_fraction * len(words))),
                                replace=False))
    is_test = np.array([s in test_words for s in source])
    bunch = Bunch(
        audio=audio, lengths=np.array([len(a) for a in audio], dtype=np.int64), target=target, target_names=phones,
        words=np.array(words)[source], word_phones=labels, voice=voice, rate=rate,
        split={"train": np.flatnonzero(~is_test), "test": np.flatnonzero(is_test)},
        sample_rate=16000,
        description=(f"{len(audio)} spoken words ({len(words)} words x voices {voices} x rates "
                     f"{rates}), labelled with the presence of the phones {phones}; split by "
                     "word."),
    )
    if return_padded:
        bunch.data = _padded(audio)[0]
    return bunch
