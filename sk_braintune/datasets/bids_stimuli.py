"""The stimuli of a BIDS dataset's stories: audio, word and phone alignments, their clock.

Each story's audio file and alignment (a Praat TextGrid or a Gentle ``align.json`` beside the
stimulus, with the same stem) is read once, and checked against the story rows of the events.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

__all__ = ["read_alignment", "story_stimuli"]

def _alignment_file(stimuli, stim_file, alignments):
    stem = Path(stim_file).name.split(".")[0]
    if alignments is not None:
        for key in (stim_file, stem):
            if key in alignments:
                return Path(alignments[key])
    folder = (stimuli / stim_file).parent
    for candidate in (folder / f"{stem}.TextGrid", folder / f"{stem}.textgrid",
                      folder / f"{stem}_align.json", folder / f"{stem}.align.json",
                      folder / "gentle" / stem / "align.json", folder / f"{stem}.json"):
        if candidate.is_file():
            return candidate
    return None


def read_alignment(path):
    """Words, phones and the number of words not aligned, from a TextGrid or a Gentle JSON.

    Parameters
    ----------
    path : str or path-like
        ``.TextGrid`` (phones in tier 0, words in tier 1, or tiers named ``phones`` and
        ``words``) or Gentle ``align.json``.

    Returns
    -------
    words, phones : pandas.DataFrame
        ``onset``, ``offset``, ``label``, silences dropped.
    n_not_found : int
        Words the aligner did not find in the audio (Gentle only; 0 for TextGrids).
    """
    from .gentle import read_gentle
    from .textgrid import read_textgrid, words_and_phones

    path = Path(path)
    if path.suffix.lower() == ".json":
        return read_gentle(path)
    tiers = read_textgrid(path)
    lower = {name.lower(): name for name in tiers}
    if "words" in lower and "phones" in lower:
        words, phones = words_and_phones(tiers, phone_tier=lower["phones"],
                                         word_tier=lower["words"])
    else:
        words, phones = words_and_phones(tiers)
    return words, phones, 0


def _empty_table():
    import pandas as pd

    return pd.DataFrame({"onset": np.zeros(0), "offset": np.zeros(0),
                         "label": np.zeros(0, dtype=str)})


def _within(table, span):
    """Rows of an interval table that start inside ``span`` (s, audio clock), re-indexed."""
    start, stop = span
    inside = (table["onset"] >= start - 1e-6) & (table["onset"] < stop)
    return table.loc[inside].reset_index(drop=True)


def story_stimuli(order, participants, presentations, *, stimuli, alignments, tr_value):
    """Audio, words, phones, words not found and clock figures of each story (files read once)."""
    from .audio import TARGET_SAMPLE_RATE, load_audio

    waves, aligned, clock = {}, {}, {}
    audio, words, phones, not_found, story_files = {}, {}, {}, {}, {}
    for name in participants:
        for p in presentations[name]:
            if p["story"] in order:
                story_files.setdefault(p["story"], (p, name))
    for story in order:
        p, _ = story_files[story]
        stim_file, run = p["stim_file"], p["run"]
        path = stimuli / stim_file
        if stim_file not in waves:
            if not path.is_file():
                raise FileNotFoundError(f"stimulus {path} (stim_file of {run.events}) is "
                                        "missing; put the audio under stimuli/ or fix the "
                                        "events' stim_file column.")
            waves[stim_file] = load_audio(path)
        wave = waves[stim_file]
        duration = wave.size / TARGET_SAMPLE_RATE
        story_end = p["row_onset"] + p["row_duration"] - p["audio_onset"]
        if story_end > duration + tr_value:
            raise ValueError(f"{path} lasts {duration:.1f} s but the {story!r} row of "
                             f"{run.events} ends {story_end:.1f} s after the file starts "
                             f"(at {p['audio_onset']} s in the run): the audio is shorter than"
                             " the story it should cover (truncated, or another file?).")
        if stim_file not in aligned:
            alignment = _alignment_file(stimuli, stim_file, alignments)
            if alignment is None:
                warnings.warn(f"no word alignment for {path} (looked for <stem>.TextGrid, "
                              "<stem>_align.json, gentle/<stem>/align.json); words and phones "
                              "are empty.", UserWarning, stacklevel=2)
                aligned[stim_file] = None
            else:
                w, ph, missing = read_alignment(alignment)
                end = max(w["offset"].max() if len(w) else 0.0,
                          ph["offset"].max() if len(ph) else 0.0)
                if end > duration + 0.5:
                    raise ValueError(f"the words file {alignment} ends at {end:.2f} s but "
                                     f"{path} lasts {duration:.2f} s: the alignment is of "
                                     "another recording or on another clock; realign it to "
                                     "this audio file.")
                aligned[stim_file] = (w, ph, missing)
        audio[story] = wave
        scan_seconds = run.n_volumes * run.tr
        if p["audio_onset"] + duration > scan_seconds + tr_value:
            warnings.warn(f"{path} plays until {p['audio_onset'] + duration:.1f} s of "
                          f"{run.bold.name} but the scan ends at {scan_seconds:.1f} s: the "
                          "end of the audio was not scanned.", UserWarning, stacklevel=2)
        span = (p["row_onset"] - p["audio_onset"], story_end)
        clock[story] = {"audio_seconds": duration, "audio_onset_in_run": p["audio_onset"],
                        "story_in_audio": span, "scan_seconds": scan_seconds}
        if aligned[stim_file] is None:
            words[story] = phones[story] = _empty_table()
            not_found[story] = 0
        else:
            w, ph, missing = aligned[stim_file]
            words[story] = _within(w, span)
            phones[story] = _within(ph, span)
            not_found[story] = int(missing)
        if len(words[story]):
            clock[story]["words"] = (float(words[story]["onset"].min()),
                                     float(words[story]["offset"].max()))
    return audio, words, phones, not_found, clock
