"""Read Praat TextGrids (long and short text formats) into tables of intervals.

Praat writes TextGrids as text in a *long* format (``xmin = 0``, ``intervals [1]:``, ...) and a
*short* one (bare values, one per line); LeBel et al. (2023) ship both, in UTF-8 and UTF-16.
Both formats hold the same sequence of values once keys, ``[index]`` labels and ``<exists>``
flags are skipped, so one token reader serves both.

**Silence and non-speech labels.** Forced aligners mark pauses with ``"sp"``, ``"sil"``,
``"{SL}"`` or an empty label, and non-speech sounds with ``{BR}`` (breath), ``{LG}``
(laughter), ``{LS}`` (lip smack), ``{NS}`` (noise), ``{CG}`` (cough); espeak-ng writes pauses as
``"_"``. :data:`SILENCE_LABELS` lists them all (compared lower-cased, without surrounding white
space); :func:`drop_silences` removes them, as HuthLab's loaders do before building word and
phone features, and the low-level phone features drop the same set.
"""

from __future__ import annotations

import codecs
import os
import re

import numpy as np

__all__ = [
    "SILENCE_LABELS",
    "read_textgrid",
    "drop_silences",
    "strip_stress",
    "words_and_phones",
]

# The package's one silence set (also used by features.lowlevel to drop pauses from phone
# sequences): aligner pauses, HTK/Kaldi variants ("sp1"), espeak-ng's pause mnemonic "_", and
# non-speech sounds.
SILENCE_LABELS = frozenset({
    "", "sp", "sp1", "sil", "sl", "{sl}", "{sp}", "{sil}", "<sil>", "pau", "spn", "_",
    "sentence_start", "sentence_end",
    "br", "lg", "ls", "ns", "cg", "{br}", "{lg}", "{ls}", "{ns}", "{cg}",
})

# A quoted string ("" is an escaped quote), a [bracketed] index, a number, or a bare word.
_TOKEN = re.compile(
    r'"((?:[^"]|"")*)"'
    r'|(\[[^\]]*\])'
    r'|([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)'
    r'|(<[A-Za-z]+>|[A-Za-z_][\w?]*)'
)


def _decode(raw):
    for bom, encoding in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                          (codecs.BOM_UTF16_BE, "utf-16")):
        if raw.startswith(bom):
            return raw.decode(encoding)
    if len(raw) > 1 and raw[1:2] == b"\x00":  # UTF-16-LE without BOM: ASCII text, NUL-padded
        return raw.decode("utf-16-le")
    if len(raw) > 1 and raw[0:1] == b"\x00":
        return raw.decode("utf-16-be")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _values(text):
    """Strings and numbers of a TextGrid in file order (keys, indices and flags dropped)."""
    values = []
    for match in _TOKEN.finditer(text):
        string, _, number, _ = match.groups()
        if string is not None:
            values.append(string.replace('""', '"'))
        elif number is not None:
            values.append(float(number))
    return values


def read_textgrid(path, *, keep_text_tiers=False):
    """Read a Praat TextGrid (long or short text format, UTF-8 or UTF-16).

    Parameters
    ----------
    path : str or path-like
        ``.TextGrid`` file.
    keep_text_tiers : bool, default=False
        Point tiers (``TextTier``) have no durations. By default they are skipped; when True
        they are returned with ``offset == onset``.

    Returns
    -------
    tiers : dict of str to pandas.DataFrame
        One table per tier, in file order, with columns ``onset`` and ``offset`` (s, float64)
        and ``label`` (str, as in the file: silences are kept; see :func:`drop_silences`).
        Tiers with the same name get suffixes ``"name"``, ``"name_2"``, ...

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ValueError
        When the file is not a text TextGrid or is truncated, or when an interval tier has an
        interval that ends before it starts, overlaps the previous one, or lies outside the
        grid's time range (the message names the file, the tier and the interval).

    Examples
    --------
    >>> tiers = read_textgrid("story.TextGrid")  # doctest: +SKIP
    >>> phones, words = list(tiers.values())[:2]  # doctest: +SKIP
    """
    import pandas as pd

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"TextGrid not found: {path}")
    with open(path, "rb") as f:
        raw = f.read()
    if raw.startswith(b"ooBinaryFile"):
        raise ValueError(f"{path} is a binary TextGrid; save it as text from Praat "
                         "(Save as text file / short text file).")
    values = _values(_decode(raw))
    if (len(values) < 2 or not str(values[0]).startswith("ooTextFile")
            or values[1] != "TextGrid"):
        raise ValueError(f"{path} is not a Praat TextGrid text file (expected a header "
                         'File type = "ooTextFile" / Object class = "TextGrid").')
    position = 2

    def take(kind, what):
        nonlocal position
        if position >= len(values):
            raise ValueError(f"{path}: file ends while reading {what}; the TextGrid is "
                             "truncated.")
        value = values[position]
        position += 1
        if not isinstance(value, kind):
            raise ValueError(f"{path}: expected {what} but found {value!r}; the TextGrid is "
                             "malformed.")
        return value

    grid_start = take(float, "the grid's xmin")
    grid_end = take(float, "the grid's xmax")
    # a TextGrid without tiers has "<absent>" and no size
    n_tiers = int(take(float, "the number of tiers")) if position < len(values) else 0
    tiers = {}
    for tier_index in range(n_tiers):
        tier_class = take(str, f"the class of tier {tier_index + 1}")
        name = take(str, f"the name of tier {tier_index + 1}")
        tier_start = take(float, f"xmin of tier {name!r}")
        tier_end = take(float, f"xmax of tier {name!r}")
        n_items = int(take(float, f"the number of items of tier {name!r}"))
        if tier_class == "IntervalTier":
            rows = [(take(float, f"an interval start in tier {name!r}"),
                     take(float, f"an interval end in tier {name!r}"),
                     take(str, f"an interval label in tier {name!r}"))
                    for _ in range(n_items)]
            _check_intervals(rows, path, name, min(grid_start, tier_start),
                             max(grid_end, tier_end))
        elif tier_class == "TextTier":
            rows = []
            for _ in range(n_items):
                time = take(float, f"a point time in tier {name!r}")
                rows.append((time, time, take(str, f"a point label in tier {name!r}")))
            if not keep_text_tiers:
                continue
        else:
            raise ValueError(f"{path}: unknown tier class {tier_class!r} (expected "
                             "IntervalTier or TextTier).")
        table = pd.DataFrame(rows, columns=["onset", "offset", "label"])
        table = table.astype({"onset": np.float64, "offset": np.float64, "label": str})
        key, suffix = name, 2
        while key in tiers:
            key, suffix = f"{name}_{suffix}", suffix + 1
        tiers[key] = table
    return tiers


# Times are decimal text, rounded by some writers: 1 ms of slack when comparing them
_TIME_TOLERANCE = 1e-3


def _check_intervals(rows, path, tier, start, end):
    """Intervals of a tier must run forwards, in order, without overlap, inside the grid."""
    previous_end = None
    for index, (onset, offset, label) in enumerate(rows, start=1):
        where = f"{path}, tier {tier!r}, interval {index} ({label!r}, [{onset:g}, {offset:g}] s)"
        if offset < onset - _TIME_TOLERANCE:
            raise ValueError(f"{where} ends before it starts; the TextGrid is malformed.")
        if previous_end is not None and onset < previous_end - _TIME_TOLERANCE:
            raise ValueError(f"{where} starts at {onset:g} s, before the previous interval "
                             f"ends ({previous_end:g} s): intervals overlap or are out of "
                             "order; the TextGrid is malformed.")
        if onset < start - _TIME_TOLERANCE or offset > end + _TIME_TOLERANCE:
            raise ValueError(f"{where} lies outside the grid's [{start:g}, {end:g}] s; the "
                             "TextGrid is malformed.")
        previous_end = offset


def drop_silences(table, silence_labels=SILENCE_LABELS):
    """Remove silence and non-speech intervals from an interval table.

    Parameters
    ----------
    table : pandas.DataFrame
        Columns ``onset``, ``offset``, ``label``.
    silence_labels : collection of str, default=SILENCE_LABELS
        Labels to drop, compared lower-cased and stripped of white space.

    Returns
    -------
    table : pandas.DataFrame
        The remaining rows, re-indexed from 0, labels stripped of surrounding white space.
    """
    silence = {s.lower() for s in silence_labels}
    labels = table["label"].astype(str).str.strip()
    keep = ~labels.str.lower().isin(silence)
    out = table.loc[keep].copy()
    out["label"] = labels[keep]
    return out.reset_index(drop=True)


def strip_stress(labels):
    """Remove ARPAbet stress digits (``"AH0"`` -> ``"AH"``).

    Parameters
    ----------
    labels : str or sequence of str or pandas.Series
        ARPAbet phone label(s), e.g. ``"AH0"``.

    Returns
    -------
    stripped : str or list of str or pandas.Series
        The labels without their final stress digit, in the type of ``labels`` (a sequence
        gives a list).
    """
    pattern = re.compile(r"(?<=[A-Za-z])[012]$")
    if isinstance(labels, str):
        return pattern.sub("", labels.strip())
    if hasattr(labels, "str"):  # pandas Series
        return labels.astype(str).str.strip().str.replace(pattern, "", regex=True)
    return [pattern.sub("", str(label).strip()) for label in labels]


def words_and_phones(tiers, *, phone_tier=0, word_tier=1, silence_labels=SILENCE_LABELS):
    """Pick the phone and word tiers of an alignment and drop silences.

    LeBel et al. (2023) TextGrids hold phones (ARPAbet with stress digits) in tier 0 and
    words in tier 1, whatever the tiers are named.

    Parameters
    ----------
    tiers : dict of str to pandas.DataFrame
        Output of :func:`read_textgrid`.
    phone_tier, word_tier : int or str, default=0 and 1
        Tier position or name.
    silence_labels : collection of str, default=SILENCE_LABELS
        See :func:`drop_silences`.

    Returns
    -------
    words : pandas.DataFrame
        Columns ``onset``, ``offset``, ``label`` (labels as in the file, stripped).
    phones : pandas.DataFrame
        Same columns; raw ARPAbet labels with stress digits (see :func:`strip_stress`).
    """
    names = list(tiers)

    def pick(which, role):
        if isinstance(which, str):
            if which not in tiers:
                raise ValueError(f"no tier named {which!r} for the {role}; tiers: {names}")
            return tiers[which]
        if not -len(names) <= which < len(names):
            raise ValueError(f"the {role} should be in interval tier {which}, but the "
                             f"TextGrid has {len(names)} interval tier(s): {names}")
        return tiers[names[which]]

    phones = drop_silences(pick(phone_tier, "phones"), silence_labels)
    words = drop_silences(pick(word_tier, "words"), silence_labels)
    return words, phones
