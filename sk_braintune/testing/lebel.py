"""A miniature copy of LeBel et al. (2023) (OpenNeuro ds003020) in the exact file formats.

Used by the tests of :func:`sk_braintune.datasets.load_lebel2023` and of the command line: the
files are those of the real release (HDF5 responses, WAV audio at 44.1 kHz, Praat TextGrids in
the long and short text formats, ``respdict.json``), only small, and their durations follow the
simulated-trigger convention, so the loader cannot tell them from the real thing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["make_miniature_lebel2023", "MINIATURE_LEXICON"]

# word -> ARPAbet phones with stress digits (as in the LeBel TextGrids)
MINIATURE_LEXICON = {
    "the": ("DH", "AH0"),
    "story": ("S", "T", "AO1", "R", "IY0"),
    "begins": ("B", "IH0", "G", "IH1", "N", "Z"),
    "in": ("IH0", "N"),
    "a": ("AH0",),
    "small": ("S", "M", "AO1", "L"),
    "town": ("T", "AW1", "N"),
    "where": ("W", "EH1", "R"),
    "smoke": ("S", "M", "OW1", "K"),
    "rises": ("R", "AY1", "Z", "IH0", "Z"),
    "every": ("EH1", "V", "R", "IY0"),
    "morning": ("M", "AO1", "R", "N", "IH0", "NG"),
}

_WORD_SECONDS = 0.45
_GAP_SECONDS = 0.15  # an "sp" pause after every fourth word
_LEAD_SECONDS = 0.5  # leading and trailing silence (empty label)


def _story_rows(rows, extra_start, pretrimmed_test):
    """(rows of data, respdict n) for one story with ``rows`` rows after all trims."""
    from ..datasets.lebel2023 import LEBEL2023_TRIM, RESPDICT_PAD

    n_respdict = rows + RESPDICT_PAD + sum(LEBEL2023_TRIM) + extra_start
    file_rows = rows if pretrimmed_test else rows + extra_start
    return file_rows, n_respdict


def _alignment(duration, rng):
    """Word and phone intervals tiling [0, duration] with silences."""
    vocabulary = list(MINIATURE_LEXICON)
    words, phones = [], []
    time = _LEAD_SECONDS
    words.append((0.0, time, ""))
    phones.append((0.0, time, ""))
    count = 0
    while time + _WORD_SECONDS + _GAP_SECONDS < duration - _LEAD_SECONDS:
        word = vocabulary[int(rng.integers(len(vocabulary)))]
        end = round(time + _WORD_SECONDS, 6)
        words.append((time, end, word))
        pron = MINIATURE_LEXICON[word]
        edges = np.round(np.linspace(time, end, len(pron) + 1), 6)
        phones.extend((float(a), float(b), p) for a, b, p in zip(edges[:-1], edges[1:], pron))
        time = end
        count += 1
        if count % 4 == 0:
            gap_end = round(time + _GAP_SECONDS, 6)
            words.append((time, gap_end, "sp"))
            phones.append((time, gap_end, "sp"))
            time = gap_end
    words.append((time, duration, ""))
    phones.append((time, duration, ""))
    return words, phones


def _format_number(value):
    return repr(float(value)).removesuffix(".0") if float(value).is_integer() else repr(
        float(value))


def _textgrid_text(tiers, duration, fmt):
    """Praat TextGrid text (``fmt`` "long" or "short") for IntervalTiers ``{name: rows}``."""
    num = _format_number
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', ""]
    if fmt == "short":
        lines += ["0", num(duration), "<exists>", str(len(tiers))]
        for name, rows in tiers.items():
            lines += ['"IntervalTier"', f'"{name}"', "0", num(duration), str(len(rows))]
            for onset, offset, label in rows:
                lines += [num(onset), num(offset), '"' + label.replace('"', '""') + '"']
    else:
        lines += ["xmin = 0 ", f"xmax = {num(duration)} ", "tiers? <exists> ",
                  f"size = {len(tiers)} ", "item []: "]
        for tier_number, (name, rows) in enumerate(tiers.items(), start=1):
            lines += [f"    item [{tier_number}]:", '        class = "IntervalTier" ',
                      f'        name = "{name}" ', "        xmin = 0 ",
                      f"        xmax = {num(duration)} ", f"        intervals: size = {len(rows)} "]
            for k, (onset, offset, label) in enumerate(rows, start=1):
                text = label.replace('"', '""')
                lines += [f"        intervals [{k}]:", f"            xmin = {num(onset)} ",
                          f"            xmax = {num(offset)} ", f'            text = "{text}" ']
    return "\n".join(lines) + "\n"


def _audio(words, duration, sample_rate, stereo):
    """Tone bursts at word times (one frequency per word), int16 PCM."""
    vocabulary = list(MINIATURE_LEXICON)
    signal = np.zeros(int(round(duration * sample_rate)), dtype=np.float32)
    bursts = {}  # (label, n_samples) -> windowed tone, computed once
    for onset, offset, label in words:
        if label in MINIATURE_LEXICON:
            start, stop = int(round(onset * sample_rate)), int(round(offset * sample_rate))
            key = (label, stop - start)
            if key not in bursts:
                t = np.arange(stop - start, dtype=np.float32) / sample_rate
                frequency = 200.0 + 60.0 * vocabulary.index(label)
                bursts[key] = (0.3 * np.sin(2 * np.pi * frequency * t)
                               * np.hanning(stop - start)).astype(np.float32)
            signal[start:stop] = bursts[key]
    pcm = np.round(signal * 32767).astype(np.int16)
    return np.stack([pcm, pcm], axis=1) if stereo else pcm


def make_miniature_lebel2023(root, subjects=("UTS01",),
                             stories=("storyA", "storyB", "wheretheressmoke"), *, n_voxels=16,
                             n_trs=12, n_repeats=3, random_state=0, stereo=True,
                             sample_rate=44100, textgrid_format="long", nan_voxels=1,
                             pretrimmed_test=True, noise_sd=(0.3, 3.0), verbose=False):
    """Write a dataset in the ds003020 layout and formats: tiny by default, or full size.

    The same writer makes the miniature copies of the tests and the full-size simulation of
    ``benchmarks/bench_realdata_scale.py`` (27 or 84 stories of 300-400 TRs, 90,000 voxels):
    memory stays at a few copies of one story's responses whatever the size.

    Parameters
    ----------
    root : str or path-like
        Folder to write into (created if needed).
    subjects : sequence of str, default=("UTS01",)
        Participant folders to write (same stimuli, different responses).
    stories : sequence of str, default=("storyA", "storyB", "wheretheressmoke")
        Story names. Story ``i`` has ``n_trs + i`` response rows. ``"wheretheressmoke"`` also
        gets ``individual_repeats`` and 40 more TRs in ``respdict.json`` (the extra trim the
        loader applies by default).
    n_voxels : int or dict of str to int, default=16
        Voxels per story, or per participant (``{"UTS01": 16, "UTS02": 12}``: participants in
        their own voxel spaces, as in the real release).
    n_trs : int or sequence of int, default=12
        Response rows of the first story (after all trims); story ``i`` gets ``n_trs + i``.
        A sequence gives each story's rows.
    n_repeats : int, default=3
        Repeats of the test story.
    random_state : int, default=0
        Seed of the responses and word sequences.
    stereo : bool, default=True
        Write two identical channels.
    sample_rate : int, default=44100
        WAV sample rate.
    textgrid_format : {"long", "short", "mixed"}, default="long"
        Praat text format; "mixed" alternates long (UTF-8) and short (UTF-16 with BOM).
    nan_voxels : int, default=1
        The last ``nan_voxels`` voxels are NaN at every TR of the second story (of the first
        one when there is only one), as some voxels of the real release are.
    pretrimmed_test : bool, default=True
        If True, the test story's ``data`` already lacks the 40 extra TRs; otherwise it holds
        them and the loader removes them.
    noise_sd : (float, float), default=(0.3, 3.0)
        Noise standard deviation of the first and last voxel (linear in between), against a
        signal of unit variance; larger values give lower noise ceilings.
    verbose : bool, default=False
        Show a progress bar over the files written.

    Returns
    -------
    root : pathlib.Path
        The dataset folder, to pass to :func:`sk_braintune.datasets.load_lebel2023`.

    Notes
    -----
    The audio of a story with ``n`` TRs in ``respdict.json`` lasts ``(n - 5) * 2.0 - 10.0`` s,
    the end of the simulated trigger grid, so the last kept volume ends 10 s before the sound.
    Responses are a smooth random signal shared by the repeats plus independent noise whose
    level grows with the voxel index, so noise ceilings decrease across voxels. Values are
    float32 draws; the files are uncompressed, contiguous HDF5 datasets like the release's.

    Examples
    --------
    >>> from sk_braintune.testing import make_miniature_lebel2023
    >>> from sk_braintune.datasets import load_lebel2023
    >>> root = make_miniature_lebel2023(tmp_path)  # doctest: +SKIP
    >>> data = load_lebel2023(root, "UTS01", nan_policy="drop")  # doctest: +SKIP
    """
    import h5py
    from scipy.io import wavfile
    from tqdm.auto import tqdm

    from ..datasets.lebel2023 import (
        RESPDICT_PAD,
        SOUND_START,
        TEST_STORY,
        TEST_STORY_EXTRA_TRIM,
        TRIGGER_TR,
    )

    if textgrid_format not in ("long", "short", "mixed"):
        raise ValueError(f"textgrid_format must be 'long', 'short' or 'mixed'; got "
                         f"{textgrid_format!r}.")
    stories = list(stories)
    if np.ndim(n_trs) == 0:
        story_trs = [int(n_trs) + index for index in range(len(stories))]
    else:
        story_trs = [int(n) for n in n_trs]
        if len(story_trs) != len(stories):
            raise ValueError(f"n_trs gives {len(story_trs)} lengths for {len(stories)} "
                             "stories; pass one per story or a single int.")
    voxel_counts = (dict(n_voxels) if isinstance(n_voxels, dict)
                    else dict.fromkeys(subjects, int(n_voxels)))
    missing = [s for s in subjects if s not in voxel_counts]
    if missing:
        raise ValueError(f"n_voxels has no count for subjects {missing}.")
    root = Path(root)
    rng = np.random.default_rng(random_state)
    (root / "stimuli").mkdir(parents=True, exist_ok=True)
    (root / "derivative" / "TextGrids").mkdir(parents=True, exist_ok=True)

    respdict, layout = {}, {}
    for index, story in enumerate(tqdm(stories, desc="stimuli", disable=not verbose)):
        extra = TEST_STORY_EXTRA_TRIM if story == TEST_STORY else 0
        file_rows, n_respdict = _story_rows(story_trs[index], extra, pretrimmed_test)
        respdict[story] = n_respdict
        layout[story] = file_rows
        duration = (n_respdict - RESPDICT_PAD) * TRIGGER_TR - SOUND_START
        words, phones = _alignment(duration, rng)
        fmt = textgrid_format if textgrid_format != "mixed" else ("long", "short")[index % 2]
        text = _textgrid_text({"phone": phones, "word": words}, duration, fmt)
        encoding = "utf-16" if textgrid_format == "mixed" and fmt == "short" else "utf-8"
        (root / "derivative" / "TextGrids" / f"{story}.TextGrid").write_bytes(
            text.encode(encoding))
        wavfile.write(root / "stimuli" / f"{story}.wav", sample_rate,
                      _audio(words, duration, sample_rate, stereo))
    respdict["storynotdownloaded"] = 300  # the real respdict lists stories one may not have
    (root / "derivative" / "respdict.json").write_text(json.dumps(respdict, indent=1))

    nan_story = stories[1] if len(stories) > 1 else stories[0]
    for subject in subjects:
        folder = root / "derivative" / "preprocessed_data" / subject
        folder.mkdir(parents=True, exist_ok=True)
        count = voxel_counts[subject]
        voxel_noise = np.linspace(*noise_sd, count, dtype=np.float32)
        for story in tqdm(stories, desc=subject, disable=not verbose):
            rows = layout[story]
            signal = _smooth_signal(rng, rows, count)
            with h5py.File(folder / f"{story}.hf5", "w") as f:
                if story == TEST_STORY:
                    # written one repeat at a time: memory stays at a few copies of one story
                    repeats = f.create_dataset("individual_repeats", (n_repeats, rows, count),
                                               dtype=np.float32)
                    data = np.zeros((rows, count), dtype=np.float32)
                    for k in range(n_repeats):
                        repeat = signal + voxel_noise * rng.standard_normal((rows, count),
                                                                         dtype=np.float32)
                        repeats[k] = repeat
                        data += repeat
                    data /= np.float32(n_repeats)
                else:
                    data = signal + voxel_noise * rng.standard_normal((rows, count),
                                                                   dtype=np.float32)
                if story == nan_story and nan_voxels:
                    data[:, count - nan_voxels:] = np.nan
                f.create_dataset("data", data=data)
    return root


def _smooth_signal(rng, rows, n_voxels):
    """Random walk low-passed by a 5-TR moving average, z-scored per voxel, float32."""
    drive = rng.standard_normal((rows + 4, n_voxels), dtype=np.float32).cumsum(axis=0)
    signal = drive[4:].copy()
    for shift in range(4):
        signal += drive[shift:shift + rows]
    del drive
    signal -= signal.mean(axis=0)
    signal /= signal.std(axis=0) + np.float32(1e-6)
    return signal
