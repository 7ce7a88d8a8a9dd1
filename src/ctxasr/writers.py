"""Render a :class:`~ctxasr.results.Transcript` as text, JSON, SRT, WebVTT or TSV.

This is the JSON/text edge of the library: everything above it works on typed
results, and the CLI, server and batch shells call :func:`format_transcript`.

Decisions shared by all formats:

* Times are rounded to the nearest millisecond once, by :func:`to_milliseconds`,
  so a segment's end reads the same in SRT, VTT, TSV and JSON. Halves round up,
  judged on the shortest decimal form of the float (``1.0005`` -> 1001 ms even
  though the binary value is a hair below), which is what a person reading the
  number expects. Negative times clamp to 0; NaN and infinities are a bug upstream
  and raise.
* A segment whose text is empty after stripping is left out of text, SRT, VTT and
  TSV (a cue with no text is invalid SubRip and useless elsewhere); JSON keeps every
  segment because it is the lossless format.
* Every non-JSON file ends with exactly one newline, and an empty transcript gives
  the smallest valid file: ``""`` for text and SRT, ``"WEBVTT\\n"`` for VTT, the
  header line for TSV.
"""

from __future__ import annotations

import dataclasses
import json
import math
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from ctxasr.errors import CtxasrError
from ctxasr.results import ContextPick, Segment, TermEvidence, Transcript, Word

FORMATS = ("text", "json", "srt", "vtt", "tsv")

TIME_DECIMALS = 3  # JSON times in seconds, to the millisecond like the subtitle formats
PROBABILITY_DECIMALS = 4


# --- times -------------------------------------------------------------------------


def to_milliseconds(seconds: float) -> int:
    """Seconds -> whole milliseconds, rounded half up and clamped at 0."""
    if not math.isfinite(seconds):
        raise ValueError(f"time must be finite, got {seconds!r}")
    # Decimal(str(x)) rounds the number as printed; int(x * 1000 + 0.5) would turn
    # 1.0005 into 1000 because the float is 1.000499999...
    ms = int(Decimal(str(seconds)).scaleb(3).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    return max(ms, 0)


def format_timestamp(seconds: float, *, decimal_marker: str = ",") -> str:
    """``HH:MM:SS<marker>mmm``; hours keep growing past 99 instead of wrapping."""
    ms = to_milliseconds(seconds)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1_000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_marker}{ms:03d}"


def round_seconds(seconds: float) -> float:
    """Seconds rounded as every format rounds them: to the millisecond, halves up."""
    return to_milliseconds(seconds) / 1000


# --- JSON --------------------------------------------------------------------------


def word_to_dict(w: Word) -> dict[str, Any]:
    return {
        "start": round_seconds(w.start),
        "end": round_seconds(w.end),
        "word": w.word,
        "probability": round(w.probability, PROBABILITY_DECIMALS),
    }


def segment_to_dict(s: Segment) -> dict[str, Any]:
    return {"start": round_seconds(s.start), "end": round_seconds(s.end), "text": s.text}


def transcript_to_dict(t: Transcript, *, word_timestamps: bool) -> dict[str, Any]:
    """The JSON shape of a transcript: a fresh plain dict that callers may extend.

    With ``word_timestamps`` the words are one flat top-level ``"words"`` list, as in
    OpenAI's ``verbose_json``; segments do not repeat them, so each word is written
    once and a word belongs to the segment whose span holds it. Without it there is
    no ``"words"`` key at all, so clients can tell "not asked" from "no words".
    """
    out: dict[str, Any] = {
        "text": t.text,
        "segments": [segment_to_dict(s) for s in t.segments],
        "duration": round_seconds(t.duration),
        "model": t.model,
        "language": t.language,
        "context_used": list(t.context_used),
    }
    if word_timestamps:
        out["words"] = [word_to_dict(w) for w in t.words]
    if t.picks:
        out["context_picks"] = [pick_to_dict(p) for p in t.picks]
    if t.domain_lm is not None:
        out["domain_lm"] = dataclasses.asdict(t.domain_lm)
    return out


def pick_to_dict(p: ContextPick) -> dict[str, Any]:
    """One stretch's retrieval: what the first pass heard, the terms picked and why."""
    return {
        "start": round_seconds(p.start),
        "end": round_seconds(p.end),
        "heard": p.heard,
        "selected": [_evidence(e) for e in p.selected],
        "rejected": [_evidence(e) for e in p.rejected],
        "second_pass": p.second_pass,
        "seconds": p.seconds,
    }


def _evidence(e: TermEvidence) -> dict[str, Any]:
    """A term's evidence, without the kinds of evidence its retriever did not compute."""
    return {k: v for k, v in dataclasses.asdict(e).items() if v is not None}


# --- text formats ------------------------------------------------------------------


def _cue_text(text: str) -> str:
    """Stripped text with no blank lines: a blank line would end an SRT/VTT cue early."""
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())


def _spoken(t: Transcript) -> list[tuple[Segment, str]]:
    """Segments with non-empty cue text, paired with that text."""
    return [(s, text) for s in t.segments if (text := _cue_text(s.text))]


def _lines(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)


def _write_text(t: Transcript) -> str:
    # A transcript with no segments (e.g. text-only backends) still has its text.
    if t.segments:
        lines = [s.text.strip() for s in t.segments if s.text.strip()]
    else:
        lines = [t.text.strip()] if t.text.strip() else []
    return _lines(lines)


def _write_srt(t: Transcript) -> str:
    cues = [
        f"{i}\n{format_timestamp(s.start)} --> {format_timestamp(s.end)}\n{text}\n"
        for i, (s, text) in enumerate(_spoken(t), start=1)
    ]
    return "\n".join(cues)


def _escape_vtt(text: str) -> str:
    # WebVTT cue text is markup: a bare "<" or "&" starts a tag or an entity, and
    # "-->" is forbidden. Players show the escaped forms as the original characters.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _write_vtt(t: Transcript) -> str:
    cues = [
        f"{format_timestamp(s.start, decimal_marker='.')} --> "
        f"{format_timestamp(s.end, decimal_marker='.')}\n{_escape_vtt(text)}\n"
        for s, text in _spoken(t)
    ]
    return "\n".join(["WEBVTT\n", *cues])


def _write_tsv(t: Transcript) -> str:
    # Integer milliseconds, as openai-whisper's tsv writer, so spreadsheets never
    # misread a decimal comma. A tab or newline in the text would break the columns,
    # so every whitespace run becomes one space.
    rows = ["start\tend\ttext"]
    for s, text in _spoken(t):
        flat = " ".join(text.split())
        rows.append(f"{to_milliseconds(s.start)}\t{to_milliseconds(s.end)}\t{flat}")
    return _lines(rows)


def format_transcript(t: Transcript, fmt: str, *, word_timestamps: bool = False) -> str:
    """Render ``t`` as one of :data:`FORMATS`; ``word_timestamps`` only affects JSON."""
    if fmt == "text":
        return _write_text(t)
    if fmt == "json":
        d = transcript_to_dict(t, word_timestamps=word_timestamps)
        return json.dumps(d, ensure_ascii=False, indent=2) + "\n"
    if fmt == "srt":
        return _write_srt(t)
    if fmt == "vtt":
        return _write_vtt(t)
    if fmt == "tsv":
        return _write_tsv(t)
    raise CtxasrError(
        "format", f"unknown output format {fmt!r}; choose one of {', '.join(FORMATS)}"
    )
