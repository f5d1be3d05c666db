"""Praat TextGrid reading: long and short text formats, encodings, silences, stress digits."""

import pandas as pd
import pytest

from sk_braintune.datasets.textgrid import (
    SILENCE_LABELS,
    drop_silences,
    read_textgrid,
    strip_stress,
    words_and_phones,
)

LONG = '''File type = "ooTextFile"
Object class = "TextGrid"

xmin = 0
xmax = 2.5
tiers? <exists>
size = 3
item []:
    item [1]:
        class = "IntervalTier"
        name = "phone"
        xmin = 0
        xmax = 2.5
        intervals: size = 6
        intervals [1]:
            xmin = 0
            xmax = 0.3
            text = ""
        intervals [2]:
            xmin = 0.3
            xmax = 0.55
            text = "HH"
        intervals [3]:
            xmin = 0.55
            xmax = 0.8
            text = "AH0"
        intervals [4]:
            xmin = 0.8
            xmax = 1.2
            text = "sp"
        intervals [5]:
            xmin = 1.2
            xmax = 1.7125
            text = "OW1"
        intervals [6]:
            xmin = 1.7125
            xmax = 2.5
            text = "sil"
    item [2]:
        class = "IntervalTier"
        name = "word"
        xmin = 0
        xmax = 2.5
        intervals: size = 5
        intervals [1]:
            xmin = 0
            xmax = 0.3
            text = ""
        intervals [2]:
            xmin = 0.3
            xmax = 0.8
            text = "say ""hi"""
        intervals [3]:
            xmin = 0.8
            xmax = 1.2
            text = "{SL}"
        intervals [4]:
            xmin = 1.2
            xmax = 1.7125
            text = "oh 2"
        intervals [5]:
            xmin = 1.7125
            xmax = 2.5
            text = "{BR}"
    item [3]:
        class = "TextTier"
        name = "events"
        xmin = 0
        xmax = 2.5
        points: size = 1
        points [1]:
            number = 1.25
            mark = "click"
'''

SHORT = '''File type = "ooTextFile"
Object class = "TextGrid"

0
2.5
<exists>
3
"IntervalTier"
"phone"
0
2.5
6
0
0.3
""
0.3
0.55
"HH"
0.55
0.8
"AH0"
0.8
1.2
"sp"
1.2
1.7125
"OW1"
1.7125
2.5
"sil"
"IntervalTier"
"word"
0
2.5
5
0
0.3
""
0.3
0.8
"say ""hi"""
0.8
1.2
"{SL}"
1.2
1.7125
"oh 2"
1.7125
2.5
"{BR}"
"TextTier"
"events"
0
2.5
1
1.25
"click"
'''


def _write(tmp_path, name, text, encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def test_long_format_values(tmp_path):
    tiers = read_textgrid(_write(tmp_path, "a.TextGrid", LONG))
    assert list(tiers) == ["phone", "word"]  # the TextTier is skipped by default
    phones = tiers["phone"]
    assert list(phones.columns) == ["onset", "offset", "label"]
    assert phones["label"].tolist() == ["", "HH", "AH0", "sp", "OW1", "sil"]
    assert phones["onset"].tolist() == [0.0, 0.3, 0.55, 0.8, 1.2, 1.7125]
    assert phones["offset"].tolist() == [0.3, 0.55, 0.8, 1.2, 1.7125, 2.5]
    # escaped quotes and digits inside labels survive
    assert tiers["word"]["label"].tolist() == ["", 'say "hi"', "{SL}", "oh 2", "{BR}"]


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le"])
def test_short_and_long_formats_give_identical_tables(tmp_path, encoding):
    long_tiers = read_textgrid(_write(tmp_path, "long.TextGrid", LONG))
    short_tiers = read_textgrid(_write(tmp_path, "short.TextGrid", SHORT, encoding))
    assert list(long_tiers) == list(short_tiers)
    for name in long_tiers:
        pd.testing.assert_frame_equal(long_tiers[name], short_tiers[name])


def test_text_tiers_kept_on_request(tmp_path):
    tiers = read_textgrid(_write(tmp_path, "a.TextGrid", SHORT), keep_text_tiers=True)
    assert list(tiers) == ["phone", "word", "events"]
    assert tiers["events"].to_dict("list") == {"onset": [1.25], "offset": [1.25],
                                               "label": ["click"]}


def test_words_and_phones_drop_silences(tmp_path):
    tiers = read_textgrid(_write(tmp_path, "a.TextGrid", LONG))
    words, phones = words_and_phones(tiers)
    assert words["label"].tolist() == ['say "hi"', "oh 2"]
    assert words["onset"].tolist() == [0.3, 1.2]
    assert phones["label"].tolist() == ["HH", "AH0", "OW1"]  # stress digits kept
    assert phones.index.tolist() == [0, 1, 2]
    by_name = words_and_phones(tiers, phone_tier="phone", word_tier="word")
    pd.testing.assert_frame_equal(by_name[0], words)
    with pytest.raises(ValueError, match="tier 5"):
        words_and_phones(tiers, word_tier=5)
    with pytest.raises(ValueError, match="no tier named"):
        words_and_phones(tiers, word_tier="words")


def test_drop_silences_labels():
    table = pd.DataFrame({"onset": range(7), "offset": range(1, 8),
                          "label": ["", " sp ", "SIL", "{sl}", "{LG}", "ns", " word "]})
    out = drop_silences(table)
    assert out["label"].tolist() == ["word"]
    assert out["onset"].tolist() == [6]
    assert {"sp", "", "sil", "{sl}"} <= SILENCE_LABELS
    kept = drop_silences(table, silence_labels={""})
    assert len(kept) == 6


def test_strip_stress():
    assert strip_stress("AH0") == "AH"
    assert strip_stress("OW1") == "OW"
    assert strip_stress("HH") == "HH"
    assert strip_stress(["EY2", "T"]) == ["EY", "T"]
    series = strip_stress(pd.Series(["IY0", "K"]))
    assert series.tolist() == ["IY", "K"]


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.TextGrid"):
        read_textgrid(tmp_path / "missing.TextGrid")
    with pytest.raises(ValueError, match="not a Praat TextGrid"):
        read_textgrid(_write(tmp_path, "x.TextGrid", "hello world\n"))
    with pytest.raises(ValueError, match="truncated"):
        read_textgrid(_write(tmp_path, "t.TextGrid", SHORT[: SHORT.index('"word"')]))
    binary = tmp_path / "b.TextGrid"
    binary.write_bytes(b"ooBinaryFile\x08TextGrid\x00\x01")
    with pytest.raises(ValueError, match="binary"):
        read_textgrid(binary)
