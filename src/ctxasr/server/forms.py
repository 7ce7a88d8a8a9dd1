"""The fields of ``POST /v1/audio/transcriptions``, parsed and checked.

OpenAI's multipart fields (``file``, ``model``, ``prompt``, ``language``,
``response_format``, ``temperature``, ``timestamp_granularities[]``, ``stream``) plus ctxasr's
``context`` (terms: a repeated field, or one value with a term a line) and
``context_text`` (free text such as slides: its terms join the context, and its text
is the document the transcriber builds a domain language model of). The form is parsed
by hand rather than declared as FastAPI ``Form`` parameters because a 100,000-term
context arrives as up to 100,000 fields, beyond Starlette's default form limits, and
because each bad field must answer 400 naming the field.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request

from ctxasr.context.extract import terms_from_text
from ctxasr.context.terms import (
    ContextTerm,
    decode_text,
    dedupe_terms,
    join_documents,
    parse_term_list,
)
from ctxasr.errors import ContextError
from ctxasr.server.errors import ApiError

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
STREAM_FORMATS = ("json", "text")  # the formats whose answer can come as text events
GRANULARITIES = ("segment", "word")
MAX_FIELDS = 200_000  # a 100,000-term context sent one term per field, and then some

# Media types a recording may be declared as; FFmpeg decides whether it really is one.
# Browsers and clients send application/octet-stream (or nothing) when they do not know.
_AUDIO_TYPES = ("audio/", "video/")
_NEUTRAL_TYPES = ("", "application/octet-stream", "application/ogg", "binary/octet-stream")


@dataclass(frozen=True)
class TranscriptionRequest:
    """One request, checked: everything the handler needs to call the library."""

    upload: UploadFile
    model: str | None  # as sent; None when the field was left out
    language: str | None  # ISO 639-1, lower case; None: the model's default
    response_format: str
    temperature: float  # 0: Whisper's fallback ladder from 0; above: that one temperature
    word_timestamps: bool
    terms: tuple[ContextTerm, ...]
    stream: bool = False  # answer Server-Sent Events, a segment at a time
    document: str | None = None  # the ``context_text`` values, a blank line between


async def read_form(request: Request, max_part_bytes: int) -> FormData:
    """The request's multipart form; 415 for another content type, 400 if malformed."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "multipart/form-data":
        raise ApiError(415, f"content type {kind or '(none)'!r} is not supported: send "
                       "multipart/form-data with the recording in the 'file' field",
                       code="unsupported_media_type")  # fmt: skip
    try:
        return await request.form(max_files=8, max_fields=MAX_FIELDS, max_part_size=max_part_bytes)
    except ApiError:
        raise
    except Exception as err:  # noqa: BLE001 - Starlette raises several types for one cause
        detail = getattr(err, "detail", None) or str(err) or type(err).__name__
        raise ApiError(400, f"malformed multipart body: {detail}", code="invalid_body") from None


def parse_transcription(form: FormData) -> TranscriptionRequest:
    """Check each field; ``ApiError`` 400 (or 415 for the file's type) naming the field."""
    upload = form.get("file")
    if isinstance(upload, str):
        raise ApiError(400, "field 'file' came as text: send the recording as a file "
                       "(a multipart part with a filename)", code="missing_file",
                       param="file")  # fmt: skip
    if upload is None:
        raise ApiError(400, "field 'file' is required: the recording to transcribe",
                       code="missing_file", param="file")  # fmt: skip
    _check_media_type(upload)
    response_format = _text(form, "response_format") or "json"
    if response_format not in RESPONSE_FORMATS:
        raise ApiError(400, f"response_format must be one of {', '.join(RESPONSE_FORMATS)}, "
                       f"got {response_format!r}", code="invalid_value",
                       param="response_format")  # fmt: skip
    granularities = _texts(form, "timestamp_granularities[]") + _texts(
        form, "timestamp_granularities"
    )
    for g in granularities:
        if g not in GRANULARITIES:
            raise ApiError(400, f"timestamp_granularities[] values must be one of "
                           f"{', '.join(GRANULARITIES)}, got {g!r}", code="invalid_value",
                           param="timestamp_granularities[]")  # fmt: skip
    if granularities and response_format != "verbose_json":
        raise ApiError(400, "timestamp_granularities[] needs response_format verbose_json",
                       code="invalid_value", param="timestamp_granularities[]")  # fmt: skip
    stream = _stream(_text(form, "stream"), response_format)
    language = (_text(form, "language") or "").lower() or None
    if language is not None and not (language.isalpha() and 2 <= len(language) <= 3):
        raise ApiError(400, f"language must be an ISO 639-1 code such as 'en', got {language!r}",
                       code="invalid_value", param="language")  # fmt: skip
    # Each upload is read once: its text gives terms and joins the document.
    texts = _texts(form, "context_text", files=True) + _texts(form, "context_text[]", files=True)
    return TranscriptionRequest(
        upload=upload,
        model=_text(form, "model"),
        language=language,
        response_format=response_format,
        temperature=_temperature(_text(form, "temperature")),
        word_timestamps="word" in granularities,
        terms=tuple(_context(form, texts)),
        stream=stream,
        document=join_documents(texts),
    )


def _check_media_type(upload: UploadFile) -> None:
    declared = (upload.content_type or "").split(";")[0].strip().lower()
    if declared.startswith(_AUDIO_TYPES) or declared in _NEUTRAL_TYPES:
        return
    raise ApiError(415, f"file {upload.filename or '(unnamed)'!r} is {declared!r}, not audio "
                   "or video", code="unsupported_media_type", param="file")  # fmt: skip


def _texts(form: FormData, name: str, *, files: bool = False) -> list[str]:
    """The field's non-blank values; with ``files`` (a context), an attached file counts
    as its UTF-8 text (``curl -F context=@glossary.txt``), and a NUL byte is refused in
    either (``curl -F "context_text=<slides.pdf"`` sends a file's bytes as text; Starlette
    reads text that is not UTF-8 as Latin-1, so only a file is checked for that)."""
    values: list[str] = []
    for v in form.getlist(name):
        if not isinstance(v, str):
            if not files:
                raise ApiError(400, f"field {name!r} must be text, not a file",
                               code="invalid_value", param=name)  # fmt: skip
            v = _file_text(v, name)
        elif files and "\0" in v:
            raise ApiError(400, f"field {name!r} is binary (a NUL byte), not text",
                           code="invalid_context", param=name)  # fmt: skip
        if v.strip():
            values.append(v.strip())
    return values


def _file_text(upload: UploadFile, name: str) -> str:
    """The upload's text, read as ``--context-text`` files are: binary (a NUL byte) and
    bytes that are not UTF-8 answer 400 naming the field and the file."""
    upload.file.seek(0)
    file = f"file {upload.filename or '(unnamed)'!r}"
    try:
        return decode_text(upload.file.read(), file)
    except ContextError as err:
        raise ApiError(400, f"field {name!r}: {file} {err.problem}", code="invalid_context",
                       param=name) from None  # fmt: skip


def _text(form: FormData, name: str) -> str | None:
    values = _texts(form, name)
    if len(values) > 1:
        raise ApiError(400, f"field {name!r} was given {len(values)} times; give it once",
                       code="invalid_value", param=name)  # fmt: skip
    return values[0] if values else None


def _stream(text: str | None, response_format: str) -> bool:
    value = (text or "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise ApiError(400, f"stream must be true or false, got {text!r}", code="invalid_value",
                       param="stream")  # fmt: skip
    stream = value in ("true", "1")
    # OpenAI streams text events for its gpt-4o transcription models (json, or text too
    # for the diarizing one) and ignores ``stream`` for whisper-1. ctxasr streams every
    # model it serves, since a client that asked for a stream reads only events; the
    # formats made of timed cues or segment lists cannot come as text deltas.
    if stream and response_format not in STREAM_FORMATS:
        raise ApiError(400, f"stream=true answers text events: use response_format "
                       f"{' or '.join(STREAM_FORMATS)}, not {response_format!r}, or leave "
                       "stream out", code="invalid_value", param="stream")  # fmt: skip
    return stream


def _temperature(text: str | None) -> float:
    if text is None:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise ApiError(400, f"temperature must be a number from 0 to 1, got {text!r}",
                       code="invalid_value", param="temperature")  # fmt: skip
    return value


def _context(form: FormData, texts: list[str]) -> list[ContextTerm]:
    """Terms from ``context``, then from the ``context_text`` values ``texts`` and
    ``prompt`` (weighted lower). The prompt gives terms only: it is no document."""
    terms: list[ContextTerm] = []
    try:
        # OpenAI's client sends a list in ``extra_body`` as ``name[]`` fields. All values
        # make one list, so a value that is only a comment or a heading is no error.
        listed = _texts(form, "context", files=True) + _texts(form, "context[]", files=True)
        if listed:
            terms.extend(parse_term_list("\n".join(listed), source="context"))
        for i, value in enumerate(texts):
            terms.extend(terms_from_text(value, source=f"context_text[{i}]"))
    except ContextError as err:
        param = "context_text" if err.source.startswith("context_text") else "context"
        raise ApiError(400, str(err), code="invalid_context", param=param) from None
    prompt = _text(form, "prompt")
    if prompt:
        # OpenAI's prompt steers style or spelling; what ctxasr can use of it is its
        # vocabulary, so its names and rare words join the context. A prompt with none
        # (plain prose) is no error.
        with contextlib.suppress(ContextError):
            terms.extend(terms_from_text(prompt, source="prompt"))
    return dedupe_terms(terms)
