"""Read Gentle forced alignments (``align.json``) into word and phone tables.

Gentle (the aligner of the Narratives dataset) writes one JSON object with a ``words`` list. Each
word has ``word`` (the transcript's spelling), ``case`` and, when it was aligned
(``case == "success"``), ``start`` and ``end`` (s, on the clock of the aligned audio file),
``alignedWord`` (the dictionary form, ``"<unk>"`` for words outside Gentle's lexicon) and
``phones``: a list of ``{"phone": "p_B", "duration": 0.07}`` that tile the word from its
``start``, with a position suffix ``_B`` (begin), ``_I`` (inside), ``_E`` (end) or ``_S``
(a one-phone word) after a lower-case ARPAbet phone without stress digits. Words Gentle did not
find (``case == "not-found-in-audio"``) have no times: they are dropped and counted.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np

__all__ = ["read_gentle"]

_SUFFIX = re.compile(r"_[BIES]$")
# Gentle's phone for out-of-vocabulary words, and its silences
_NOT_PHONES = {"oov", "sil", "sp", ""}


def read_gentle(path):
    """Read a Gentle ``align.json``.

    Parameters
    ----------
    path : str or path-like
        The ``align.json`` file.

    Returns
    -------
    words : pandas.DataFrame
        Aligned words: ``onset``, ``offset`` (s), ``label`` (the transcript's word).
    phones : pandas.DataFrame
        ``onset``, ``offset``, ``label``: upper-case ARPAbet without stress digits (``"AY"``),
        position suffixes removed; out-of-vocabulary placeholders (``oov``) are left out.
    n_not_found : int
        Words of the transcript Gentle did not find in the audio (dropped from ``words``).

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ValueError
        When the file is not a Gentle alignment, or an aligned word has no valid times.
    """
    import pandas as pd

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Gentle alignment not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); expected a Gentle align.json.") \
            from exc
    if not isinstance(content, dict) or not isinstance(content.get("words"), list):
        raise ValueError(f"{path} is not a Gentle alignment: it has no 'words' list.")
    words, phones, n_not_found = [], [], 0
    for number, entry in enumerate(content["words"]):
        if entry.get("case") != "success":
            n_not_found += 1
            continue
        start, end = entry.get("start"), entry.get("end")
        if not (isinstance(start, (int, float)) and isinstance(end, (int, float))
                and np.isfinite(start) and np.isfinite(end) and end >= start):
            raise ValueError(f"{path}: word {number} ({entry.get('word')!r}) is aligned "
                             f"('success') but has start={start!r}, end={end!r}.")
        words.append((float(start), float(end), str(entry.get("word", ""))))
        time = float(start)
        for phone in entry.get("phones", []):
            duration = float(phone.get("duration", 0.0))
            label = _SUFFIX.sub("", str(phone.get("phone", ""))).strip().lower()
            if label not in _NOT_PHONES:
                phones.append((time, time + duration, label.upper()))
            time += duration

    def table(rows):
        frame = pd.DataFrame(rows, columns=["onset", "offset", "label"])
        return frame.astype({"onset": np.float64, "offset": np.float64, "label": str})

    return table(words), table(phones), n_not_found
