"""A transcript in the ``response_format`` a client asked for, shaped as OpenAI's API.

``json`` and ``verbose_json`` follow OpenAI's fields and add ctxasr's own:
``context_used`` (the terms the decoder was given) and, in ``verbose_json``,
``context_picks`` (which terms speech-aware pruning picked, per stretch, and why) and
``domain_lm`` (what the language model of ``context_text`` was built from, when one
was). Clients that do not know them ignore them.

With ``stream=true`` the answer is Server-Sent Events instead, as OpenAI streams a
transcription: a ``transcript.text.delta`` per segment, then ``transcript.text.done``.
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from collections.abc import Callable
from typing import Any

from fastapi.responses import JSONResponse, PlainTextResponse, Response

from ctxasr.results import Segment, Transcript
from ctxasr.server.errors import ApiError
from ctxasr.writers import format_transcript, pick_to_dict, round_seconds, to_milliseconds

FRAMES_PER_SECOND = 100  # Whisper's mel frames: OpenAI's ``seek`` counts them

_MEDIA_TYPES = {"text": "text/plain", "srt": "application/x-subrip", "vtt": "text/vtt"}


def render(t: Transcript, response_format: str, *, words: bool,
           encode: Callable[[str], list[int]]) -> Response:  # fmt: skip
    """The HTTP response for ``t``; ``encode`` gives the token ids of a segment's text."""
    if response_format == "json":
        return JSONResponse(
            {"text": t.text, "usage": _usage(t), "context_used": list(t.context_used)}
        )
    if response_format == "verbose_json":
        return JSONResponse(verbose(t, words=words, encode=encode))
    if response_format == "text":
        return PlainTextResponse(t.text + "\n" if t.text else "", media_type="text/plain")
    body = format_transcript(t, response_format)
    return PlainTextResponse(body, media_type=_MEDIA_TYPES[response_format])


def verbose(t: Transcript, *, words: bool, encode: Callable[[str], list[int]]) -> dict[str, Any]:
    """OpenAI's ``verbose_json`` body, plus ``context_used``, ``context_picks`` and,
    when a domain LM was built, ``domain_lm``."""
    out: dict[str, Any] = {
        "task": "transcribe",
        "language": t.language,
        "duration": round_seconds(t.duration),
        "text": t.text,
        "segments": [_segment(i, s, encode) for i, s in enumerate(t.segments)],
        "usage": _usage(t),
        "context_used": list(t.context_used),
        "context_picks": [pick_to_dict(p) for p in t.picks],
    }
    if words:
        out["words"] = [{"word": w.word.strip(), "start": round_seconds(w.start), "end": round_seconds(w.end)}
                        for w in t.words]  # fmt: skip
    if t.domain_lm is not None:
        out["domain_lm"] = dataclasses.asdict(t.domain_lm)
    return out


def _segment(i: int, s: Segment, encode: Callable[[str], list[int]]) -> dict[str, Any]:
    return {
        "id": i,
        "seek": round(s.start * FRAMES_PER_SECOND),
        "start": round_seconds(s.start),
        "end": round_seconds(s.end),
        "text": s.text,
        "tokens": encode(s.text),
        "temperature": s.temperature,
        "avg_logprob": s.avg_logprob,
        "compression_ratio": compression_ratio(s.text),
        "no_speech_prob": s.no_speech_prob,
    }


def compression_ratio(text: str) -> float:
    """Whisper's repetition check: UTF-8 length over zlib-compressed length."""
    data = text.encode("utf-8")
    return round(len(data) / len(zlib.compress(data)), 4) if data else 0.0


def _usage(t: Transcript) -> dict[str, Any]:
    # OpenAI bills whole seconds of input audio and reports them here.
    return {"type": "duration", "seconds": -(-to_milliseconds(t.duration) // 1000)}


# --- streaming: Server-Sent Events ---------------------------------------------------

SSE_MEDIA_TYPE = "text/event-stream"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # proxies: pass it on


def sse(event: dict[str, Any]) -> bytes:
    """One event as OpenAI sends them: a ``data:`` line of JSON and a blank line."""
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode()


def delta_event(s: Segment, first: bool) -> dict[str, Any] | None:
    """OpenAI's ``transcript.text.delta`` for a segment (None for one without text).

    The deltas add up to the transcript's text: a space before every one but the
    ``first``. ``start`` and ``end`` (seconds) are ctxasr's; clients ignore them.
    """
    text = s.text.strip()
    if not text:
        return None
    return {"type": "transcript.text.delta", "delta": text if first else " " + text,
            "start": round_seconds(s.start), "end": round_seconds(s.end)}  # fmt: skip


def done_event(t: Transcript) -> dict[str, Any]:
    """OpenAI's ``transcript.text.done``, plus ctxasr's ``context_used``, ``context_picks``,
    ``language`` and ``duration``. OpenAI's ``usage`` here counts tokens, which a Whisper
    model is not billed by, so it is left out rather than sent in another shape."""
    return {"type": "transcript.text.done", "text": t.text, "context_used": list(t.context_used),
            "context_picks": [pick_to_dict(p) for p in t.picks], "language": t.language,
            "duration": round_seconds(t.duration)}  # fmt: skip


def error_event(err: ApiError) -> dict[str, Any]:
    """The event that ends a stream which failed after it began.

    OpenAI documents no error event for transcription streams. This is the shape its
    other streams use (``type: error`` with the error body of a non-streaming answer),
    and OpenAI's Python client raises ``openai.APIError`` with its message for any
    event whose ``error`` is an object.
    """
    return {"type": "error", "error": {"message": err.message, "type": err.kind,
                                       "param": err.param, "code": err.code}}  # fmt: skip
