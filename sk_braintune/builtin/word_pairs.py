"""Synonym and near-homophone word pairs, spoken by espeak-ng, for semantic preference.

Synonyms come from a list shipped with the package (``sk_braintune/data/synonyms.tsv``, 80 pairs of
common words); near-homophones are pairs of words from the shipped candidate vocabulary
(``sk_braintune/data/vocabulary.txt``) plus the synonym words, whose espeak-ng phone strings are
within a normalised edit distance of ``max_distance`` (synonym pairs and identical
pronunciations excluded). Needs the ``demo`` extra.
"""

from __future__ import annotations

import numpy as np

from .._utils import data_file

__all__ = ["phone_edit_distance", "near_homophone_pairs", "load_synonym_pairs",
           "make_word_pairs"]

_VERSION = 1


def phone_edit_distance(a, b):
    """Levenshtein distance between two phone sequences, divided by the longer length.

    Parameters
    ----------
    a, b : sequence of str
        Phone symbols (a string is taken as one symbol per character).

    Returns
    -------
    distance : float
        In [0, 1]; 0 for identical sequences (and for two empty ones).
    """
    a, b = list(a), list(b)
    if not a and not b:
        return 0.0
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        current = [i]
        for j, y in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1] / max(len(a), len(b))


def near_homophone_pairs(phones, max_distance=0.4, exclude=(), include_identical=False):
    """Word pairs whose phone strings are close: normalised edit distance below ``max_distance``.

    Parameters
    ----------
    phones : dict of str to sequence of str
        Phone sequence per word (e.g. from espeak-ng).
    max_distance : float, default=0.4
        Pairs with ``phone_edit_distance < max_distance`` qualify.
    exclude : iterable of (str, str), default=()
        Pairs to leave out in either order (the synonym pairs).
    include_identical : bool, default=False
        Keep pairs with identical phones (true homophones such as "sea"/"see"); left out by
        default because synthesised speech makes their audio identical.

    Returns
    -------
    pairs : list of (str, str, float)
        ``(word_a, word_b, distance)`` with ``word_a < word_b``, sorted by distance then words.
    """
    excluded = {frozenset(p) for p in exclude}
    words = sorted(phones)
    pairs = []
    for i, a in enumerate(words):
        for b in words[i + 1:]:
            if frozenset((a, b)) in excluded:
                continue
            d = phone_edit_distance(phones[a], phones[b])
            if d < max_distance and (include_identical or d > 0):
                pairs.append((a, b, d))
    return sorted(pairs, key=lambda p: (p[2], p[0], p[1]))


def load_synonym_pairs():
    """The synonym pairs shipped with the package.

    Returns
    -------
    pairs : list of (str, str)
    """
    path = data_file("synonyms.tsv")
    lines = path.read_text().splitlines()[1:]
    return [tuple(line.split("\t")[:2]) for line in lines if line.strip()]


def make_word_pairs(voices=("en-us",), rate=160, *, max_distance=0.4, n_homophone_pairs=None,
                    random_state=0, cache=True):
    """Spoken words with synonym pairs and near-homophone pairs.

    Parameters
    ----------
    voices : sequence of str, default=("en-us",)
        espeak-ng voices; every word is spoken by each (representations average over them).
    rate : int, default=160
        Speaking rate (words per minute).
    max_distance : float, default=0.4
        Near-homophones have a normalised phone edit distance below this.
    n_homophone_pairs : int, optional
        Number of near-homophone pairs kept (drawn at random); as many as synonym pairs by
        default (all when fewer qualify).
    random_state : int, default=0
        Seeds the draw of near-homophone pairs.
    cache : bool, default=True
        Reuse the synthesised audio from the cache directory.

    Returns
    -------
    data : sklearn.utils.Bunch
        ``words`` (list of str), ``phones`` (dict word -> tuple of espeak phones, first voice),
        ``audio`` (list of 1-D float32 arrays, one per word and voice), ``audio_word`` and
        ``audio_voice`` (ndarray of str, owner of each audio item), ``synonym_pairs`` (list of
        (str, str)), ``homophone_pairs`` (list of (str, str, distance)), ``sample_rate``,
        ``description``.
    """
    from sklearn.utils import Bunch

    from .._utils import cache_dir
    from .intents import _key, _load_cached, _save_cached, _synthesize_all, _vocabulary

    synonyms = load_synonym_pairs()
    words = list(dict.fromkeys([w for p in synonyms for w in p] + _vocabulary()))
    voices = [str(v) for v in voices]
    key = _key({"v": _VERSION, "kind": "pairs", "words": words, "voices": voices, "rate": int(rate)})
    path = cache_dir("word_pairs") / f"pairs_{key}.npz"
    if cache and path.exists():
        audio, arrays = _load_cached(path)
        source, voice, labels = arrays["source"], arrays["voice"], arrays["labels"]
    else:
        audio, labels, meta = _synthesize_all(words, voices, [int(rate)])
        source = np.array([m[0] for m in meta])
        voice = np.array([m[1] for m in meta])
        labels = np.array(labels)
        if cache:
            _save_cached(path, audio, {"source": source, "voice": voice, "labels": labels})
    first = {}
    for s, v, lab in zip(source, voice, labels):
        if v == voices[0]:
            first[words[s]] = tuple(str(lab).split())
    candidates = near_homophone_pairs(first, max_distance=max_distance, exclude=synonyms)
    n_keep = len(synonyms) if n_homophone_pairs is None else int(n_homophone_pairs)
    if len(candidates) > n_keep:
        rng = np.random.RandomState(random_state)
        keep = np.sort(rng.choice(len(candidates), size=n_keep, replace=False))
        candidates = [candidates[i] for i in keep]
    return Bunch(
        words=words, phones=first, audio=audio, audio_word=np.array(words)[source],
        audio_voice=voice, synonym_pairs=synonyms, homophone_pairs=candidates, sample_rate=16000,
        description=(f"{len(words)} words spoken by {voices} at {rate} wpm; {len(synonyms)} "
                     f"synonym pairs and {len(candidates)} near-homophone pairs (normalised phone "
                     f"edit distance < {max_distance})."),
    )
