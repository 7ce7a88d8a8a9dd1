"""Golden tests for ``ctxasr.writers``: every expected file is written out in full."""

from __future__ import annotations

import json
import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ctxasr.errors import CtxasrError
from ctxasr.results import Segment, Transcript, Word
from ctxasr.writers import (
    FORMATS,
    format_timestamp,
    format_transcript,
    to_milliseconds,
    transcript_to_dict,
)

HELLO = Segment(
    0.0,
    2.5,
    " Hello world.",
    words=(Word(0.0, 0.48, " Hello", 0.91234), Word(0.5, 2.5, " world.", 0.87656)),
)
# Crosses the hour; 3601.0625 is exact in binary, so half-even rounding would give
# ...062 and only half-up gives ...063.
HOUR = Segment(
    3598.25,
    3601.0625,
    " Across the hour.",
    words=(
        Word(3598.25, 3599.0, " Across", 0.5),
        Word(3599.0, 3600.2, " the", 0.99999),
        Word(3600.2, 3601.0625, " hour.", 1.0),
    ),
)
BLANK = Segment(3601.5, 3602.0, "  ", words=())  # skipped everywhere but JSON

T = Transcript(
    text=" Hello world. Across the hour.",
    segments=(HELLO, HOUR, BLANK),
    duration=3602.0,
    model="tiny",
    language="en",
    context_used=("hour", "Müller"),
)
EMPTY = Transcript(text="", segments=(), duration=0.0, model="tiny", language="en")


# --- golden files ------------------------------------------------------------------


def test_text() -> None:
    assert format_transcript(T, "text") == "Hello world.\nAcross the hour.\n"


def test_srt() -> None:
    assert format_transcript(T, "srt") == (
        "1\n"
        "00:00:00,000 --> 00:00:02,500\n"
        "Hello world.\n"
        "\n"
        "2\n"
        "00:59:58,250 --> 01:00:01,063\n"
        "Across the hour.\n"
    )


def test_vtt() -> None:
    assert format_transcript(T, "vtt") == (
        "WEBVTT\n"
        "\n"
        "00:00:00.000 --> 00:00:02.500\n"
        "Hello world.\n"
        "\n"
        "00:59:58.250 --> 01:00:01.063\n"
        "Across the hour.\n"
    )


def test_tsv() -> None:
    assert format_transcript(T, "tsv") == (
        "start\tend\ttext\n0\t2500\tHello world.\n3598250\t3601063\tAcross the hour.\n"
    )


GOLDEN_JSON_WORDS = """\
{
  "text": " Hello world. Across the hour.",
  "segments": [
    {
      "start": 0.0,
      "end": 2.5,
      "text": " Hello world."
    },
    {
      "start": 3598.25,
      "end": 3601.063,
      "text": " Across the hour."
    },
    {
      "start": 3601.5,
      "end": 3602.0,
      "text": "  "
    }
  ],
  "duration": 3602.0,
  "model": "tiny",
  "language": "en",
  "context_used": [
    "hour",
    "Müller"
  ],
  "words": [
    {
      "start": 0.0,
      "end": 0.48,
      "word": " Hello",
      "probability": 0.9123
    },
    {
      "start": 0.5,
      "end": 2.5,
      "word": " world.",
      "probability": 0.8766
    },
    {
      "start": 3598.25,
      "end": 3599.0,
      "word": " Across",
      "probability": 0.5
    },
    {
      "start": 3599.0,
      "end": 3600.2,
      "word": " the",
      "probability": 1.0
    },
    {
      "start": 3600.2,
      "end": 3601.063,
      "word": " hour.",
      "probability": 1.0
    }
  ]
}
"""


def test_json_with_words() -> None:
    assert format_transcript(T, "json", word_timestamps=True) == GOLDEN_JSON_WORDS


def test_json_without_words_is_the_same_minus_words() -> None:
    golden = json.loads(GOLDEN_JSON_WORDS)
    del golden["words"]
    out = format_transcript(T, "json")
    assert out.endswith("}\n")
    assert "Müller" in out  # ensure_ascii=False
    assert json.loads(out) == golden


# --- JSON round trip ---------------------------------------------------------------


def test_json_round_trip() -> None:
    d = json.loads(format_transcript(T, "json", word_timestamps=True))
    assert d["text"] == T.text
    assert d["model"] == T.model and d["language"] == T.language
    assert d["duration"] == T.duration
    assert tuple(d["context_used"]) == T.context_used
    half_ms = 5e-4 + 1e-9  # rounding to the millisecond moves a time by at most this
    for got, s in zip(d["segments"], T.segments, strict=True):  # blank ones kept
        assert got["text"] == s.text
        assert got["start"] == pytest.approx(s.start, abs=half_ms)
        assert got["end"] == pytest.approx(s.end, abs=half_ms)
    for got, w in zip(d["words"], T.words, strict=True):
        assert got["word"] == w.word
        assert got["start"] == pytest.approx(w.start, abs=half_ms)
        assert got["end"] == pytest.approx(w.end, abs=half_ms)
        assert got["probability"] == pytest.approx(w.probability, abs=5e-5 + 1e-12)
    assert all("words" not in s for s in d["segments"])  # words live only at the top


def test_words_key_only_with_word_timestamps() -> None:
    assert "words" not in transcript_to_dict(T, word_timestamps=False)
    assert "words" not in json.loads(format_transcript(T, "json"))
    # Asked for but none decoded: present and empty, unlike "not asked".
    assert transcript_to_dict(EMPTY, word_timestamps=True)["words"] == []


def test_dict_is_fresh_and_extensible() -> None:
    d = transcript_to_dict(T, word_timestamps=False)
    d["explanations"] = ["x"]
    d["context_used"].append("y")
    assert transcript_to_dict(T, word_timestamps=False)["context_used"] == ["hour", "Müller"]
    assert json.loads(json.dumps(d))["explanations"] == ["x"]


# --- empty transcript --------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("text", ""),
        ("srt", ""),
        ("vtt", "WEBVTT\n"),
        ("tsv", "start\tend\ttext\n"),
        (
            "json",
            '{\n  "text": "",\n  "segments": [],\n  "duration": 0.0,\n  "model": "tiny",\n'
            '  "language": "en",\n  "context_used": []\n}\n',
        ),
    ],
)
def test_empty_transcript(fmt: str, expected: str) -> None:
    assert format_transcript(EMPTY, fmt) == expected


def test_only_blank_segments_is_empty() -> None:
    t = Transcript(text=" ", segments=(BLANK,), duration=1.0, model="m", language="en")
    assert format_transcript(t, "text") == ""
    assert format_transcript(t, "srt") == ""
    assert format_transcript(t, "vtt") == "WEBVTT\n"
    assert format_transcript(t, "tsv") == "start\tend\ttext\n"


def test_text_falls_back_to_transcript_text_without_segments() -> None:
    t = Transcript(text="  just text \n", segments=(), duration=1.0, model="m", language="en")
    assert format_transcript(t, "text") == "just text\n"


def test_formats_cover_every_writer() -> None:
    assert FORMATS == ("text", "json", "srt", "vtt", "tsv")
    for fmt in FORMATS:
        assert isinstance(format_transcript(T, fmt), str)


# --- awkward text ------------------------------------------------------------------


ODD = Transcript(
    text="a\tb\nc",
    segments=(Segment(1.0, 2.0, "  a\tb\n\n c  "),),
    duration=2.0,
    model="m",
    language="en",
)


def test_tsv_flattens_tabs_and_newlines() -> None:
    assert format_transcript(ODD, "tsv") == "start\tend\ttext\n1000\t2000\ta b c\n"


def test_srt_cue_has_no_blank_line_inside() -> None:
    assert format_transcript(ODD, "srt") == "1\n00:00:01,000 --> 00:00:02,000\na\tb\nc\n"


def test_vtt_escapes_markup() -> None:
    t = Transcript("", (Segment(0.0, 1.0, " x<y && a-->b "),), 1.0, "m", "en")
    assert format_transcript(t, "vtt") == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nx&lt;y &amp;&amp; a--&gt;b\n"
    )


# --- errors ------------------------------------------------------------------------


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match=r"'docx'.*text, json, srt, vtt, tsv") as info:
        format_transcript(T, "docx")
    assert isinstance(info.value, CtxasrError)
    assert info.value.source == "format"


def test_non_finite_time_raises() -> None:
    with pytest.raises(ValueError, match="finite"):
        to_milliseconds(math.nan)
    with pytest.raises(ValueError, match="finite"):
        format_timestamp(math.inf)


# --- rounding ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "srt"),
    [
        (0.0, "00:00:00,000"),
        (0.0004, "00:00:00,000"),
        (0.0005, "00:00:00,001"),  # half up, not half even
        (1.0005, "00:00:01,001"),  # the float is 1.000499999..., read as written
        (59.9995, "00:01:00,000"),  # carries into minutes
        (3599.9996, "01:00:00,000"),  # carries into hours
        (3599.9994, "00:59:59,999"),
        (-0.2, "00:00:00,000"),  # never negative
        (-0.0, "00:00:00,000"),
        (362_439.5, "100:40:39,500"),  # hours past 99 keep growing
        (3, "00:00:03,000"),  # ints are fine
    ],
)
def test_timestamp_rounding(seconds: float, srt: str) -> None:
    assert format_timestamp(seconds) == srt
    assert format_timestamp(seconds, decimal_marker=".") == srt.replace(",", ".")


def test_json_times_match_subtitle_times() -> None:
    t = Transcript("x", (Segment(0.0005, 3599.9996, "x"),), 3599.9996, "m", "en")
    d = transcript_to_dict(t, word_timestamps=False)
    assert d["segments"][0] == {"start": 0.001, "end": 3600.0, "text": "x"}
    assert d["duration"] == 3600.0
    assert "00:00:00,001 --> 01:00:00,000" in format_transcript(t, "srt")


_STAMP = re.compile(r"^(\d{2,}):([0-5]\d):([0-5]\d),(\d{3})$")


@given(st.floats(min_value=-10.0, max_value=1e6, allow_nan=False))
def test_timestamp_is_well_formed_and_within_half_a_millisecond(seconds: float) -> None:
    m = _STAMP.match(format_timestamp(seconds))
    assert m is not None
    h, mi, s, ms = (int(g) for g in m.groups())
    back = h * 3600 + mi * 60 + s + ms / 1000
    assert abs(back - max(seconds, 0.0)) <= 0.0005 + 1e-9
    assert to_milliseconds(seconds) == round(back * 1000)


def test_json_lists_the_context_picks_with_their_evidence() -> None:
    import dataclasses

    from ctxasr.results import ContextPick, TermEvidence

    pick = ContextPick(
        start=0.0,
        end=29.4,
        heard=" Mr. Burkett Foster's landscapes",
        selected=(TermEvidence("Birket", 1.0, "Burkett", False),),
        rejected=(TermEvidence("Burkitt", 0.72, "Burkett", False),),
        second_pass=True,
        seconds=0.0042,
    )
    out = transcript_to_dict(dataclasses.replace(T, picks=(pick,)), word_timestamps=False)
    assert out["context_picks"] == [
        {
            "start": 0.0,
            "end": 29.4,
            "heard": " Mr. Burkett Foster's landscapes",
            "selected": [{"term": "Birket", "score": 1.0, "span": "Burkett", "in_text": False}],
            "rejected": [{"term": "Burkitt", "score": 0.72, "span": "Burkett", "in_text": False}],
            "second_pass": True,
            "seconds": 0.0042,
        }
    ]
    assert "context_picks" not in transcript_to_dict(T, word_timestamps=False)
