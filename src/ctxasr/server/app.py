"""The HTTP API: OpenAI's ``/v1/audio/transcriptions`` with context, and a page.

Thin routes: parse the request, build options, call the library, serialise. The
model loads once when the app starts and every request shares it; ``Admission``
bounds how many transcriptions run and wait, ``Jobs`` runs them off the event loop.
With ``stream=true`` the segments go out as Server-Sent Events as they are decoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from ctxasr import __version__
from ctxasr.audio import probe
from ctxasr.errors import AudioError, CtxasrError
from ctxasr.options import CLIP_BACKENDS
from ctxasr.results import Segment, Transcript
from ctxasr.server.errors import ApiError, install_handlers, log
from ctxasr.server.forms import TranscriptionRequest, parse_transcription, read_form
from ctxasr.server.jobs import Cancelled, Handover, Jobs
from ctxasr.server.limits import Admission, BodyLimit
from ctxasr.server.responses import (
    SSE_HEADERS,
    SSE_MEDIA_TYPE,
    delta_event,
    done_event,
    error_event,
    render,
    sse,
)
from ctxasr.server.settings import ServerSettings, server_decoding
from ctxasr.transcribe import TranscribeOptions, Transcriber

TRANSCRIPTIONS = "/v1/audio/transcriptions"


@dataclasses.dataclass
class ServerState:
    """What every request shares: the settings, the loaded model and the limits."""

    settings: ServerSettings
    transcriber: Transcriber
    options: TranscribeOptions  # the server's defaults; requests override a few fields
    admission: Admission
    jobs: Jobs
    started: float  # time.time() when the model was ready

    @property
    def model_names(self) -> tuple[str, ...]:
        return (self.transcriber.resolved.name, *self.settings.model_aliases)


def create_app(settings: ServerSettings | None = None, *,
               transcriber: Transcriber | None = None) -> FastAPI:  # fmt: skip
    """The ASGI app. ``transcriber`` shares an already loaded model (tests, embedding);
    without it the app loads ``settings.model`` once at startup."""
    settings = settings or ServerSettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        model = transcriber or await asyncio.to_thread(load_transcriber, settings)
        # The settings' decoding fields win over the loaded model's own defaults.
        options = dataclasses.replace(model.options, **server_decoding(settings))
        jobs = Jobs(settings.concurrency)
        app.state.ctxasr = ServerState(settings, model, options,
                                       Admission(settings.concurrency, settings.max_queue),
                                       jobs, time.time())  # fmt: skip
        try:
            yield
        finally:
            await asyncio.to_thread(jobs.close)

    app = FastAPI(title="ctxasr", version=__version__, lifespan=lifespan,
                  summary="Contextual speech recognition with OpenAI's transcription API")  # fmt: skip
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes)
    install_handlers(app)
    app.include_router(_routes())
    return app


def load_transcriber(settings: ServerSettings) -> Transcriber:
    """The model the settings name, loaded with room for ``concurrency`` decodes."""
    return Transcriber(settings.model, settings.decoding, settings.model_options())


def _state(request: Request) -> ServerState:
    return request.app.state.ctxasr


State = Annotated[ServerState, Depends(_state)]


def _routes():
    from fastapi import APIRouter

    router = APIRouter()

    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        html = resources.files("ctxasr.server").joinpath("static/index.html").read_text("utf-8")
        return HTMLResponse(html)

    @router.get("/health")
    def health(state: State) -> dict[str, Any]:
        a = state.admission
        return {"status": "ok", "model": state.transcriber.resolved.name,
                "running": a.running, "waiting": a.waiting, "cancelled": state.jobs.cancelled,
                "concurrency": a.concurrency, "max_queue": a.max_queue,
                "max_upload_bytes": state.settings.max_upload_bytes,
                "request_timeout": state.settings.request_timeout}  # fmt: skip

    @router.get("/v1/models")
    def models(state: State) -> dict[str, Any]:
        return {"object": "list", "data": [_model(n, state) for n in state.model_names]}

    @router.get("/v1/models/{name:path}")
    def model(name: str, state: State) -> dict[str, Any]:
        if name not in state.model_names:
            raise ApiError(404, f"model {name!r} is not served here; GET /v1/models lists "
                           "those that are", code="model_not_found", param="model")  # fmt: skip
        return _model(name, state)

    @router.post(TRANSCRIPTIONS, openapi_extra=_OPENAPI_FORM)
    async def transcriptions(request: Request, state: State) -> Response:
        deadline = time.monotonic() + state.settings.request_timeout
        form = await read_form(request, state.settings.max_upload_bytes)
        async with contextlib.AsyncExitStack() as upload:
            upload.push_async_callback(form.close)
            req = parse_transcription(form)
            options = _options(req, state)
            path = await upload.enter_async_context(_saved(req))
            await asyncio.to_thread(_probe, path)
            if req.stream:  # the stream's work holds the upload from here on, and closes it
                return await _stream(state, path, req, options, deadline, request,
                                     upload.pop_all())  # fmt: skip
            transcript = await _transcribe(state, path, req, options, deadline, request)
        return render(transcript, req.response_format, words=req.word_timestamps,
                      encode=state.transcriber.encode)  # fmt: skip

    return router


def _model(name: str, state: ServerState) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": int(state.started), "owned_by": "ctxasr"}


def _options(req: TranscriptionRequest, state: ServerState) -> TranscribeOptions:
    if req.model is not None and req.model not in state.model_names:
        raise ApiError(400, f"model {req.model!r} is not served here; use one of "
                       f"{', '.join(state.model_names)}", code="model_not_found",
                       param="model")  # fmt: skip
    language = req.language
    if not state.transcriber.multilingual:
        if language not in (None, "en"):
            raise ApiError(400, f"model {state.transcriber.resolved.name!r} transcribes English "
                           f"only, not {language!r}", code="unsupported_language",
                           param="language")  # fmt: skip
        language = "en"
    if req.word_timestamps and state.transcriber.backend in CLIP_BACKENDS:
        raise ApiError(400, f"word timestamps are not available from the "
                       f"{state.transcriber.backend} backend "
                       "(segment times are)", param="timestamp_granularities[]")  # fmt: skip
    options = state.options
    # OpenAI: at 0 the model raises the temperature itself when decoding fails (the
    # fallback ladder); above 0, sample at that one temperature.
    temperatures = options.temperatures if req.temperature == 0 else (req.temperature,)
    return dataclasses.replace(options, language=language, temperatures=temperatures,
                               word_timestamps=req.word_timestamps)  # fmt: skip


@contextlib.asynccontextmanager
async def _saved(req: TranscriptionRequest) -> AsyncIterator[Path]:
    """The upload as a file on disk (the decoder reads paths), removed afterwards."""
    suffix = Path(req.upload.filename or "").suffix[:16]  # a hint for FFmpeg's probe
    if not suffix[1:].isalnum():  # a client's file name is not to be trusted
        suffix = ""
    fd, name = tempfile.mkstemp(prefix="ctxasr-upload-", suffix=suffix)

    def copy() -> None:
        with os.fdopen(fd, "wb") as out:
            req.upload.file.seek(0)
            shutil.copyfileobj(req.upload.file, out)

    try:
        await asyncio.to_thread(copy)  # up to 25 MB: not on the event loop
        yield Path(name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def _probe(path: Path) -> None:
    try:
        probe(path)
    except AudioError as err:
        raise _bad_audio(err) from None


def _bad_audio(err: AudioError) -> ApiError:
    # The upload's temporary path means nothing to the client: name its field instead.
    return ApiError(400, f"file: {err.problem}", code="invalid_audio", param="file")


async def _run(state: ServerState, path: Path, req: TranscriptionRequest,
               options: TranscribeOptions, deadline: float,
               on_segment: Callable[[Segment], None] | None = None) -> Transcript:  # fmt: skip
    """Wait for a slot, then transcribe on a worker thread: every request's way, streamed
    or not. Failures come out as ``ApiError``; cancelling the caller stops the work."""
    timeout = state.settings.request_timeout
    try:
        async with state.admission.slot(_left(deadline)):
            return await state.jobs.run(
                lambda progress: state.transcriber.transcribe(
                    path, req.terms, document=req.document, options=options, progress=progress,
                    on_segment=on_segment),
                _left(deadline),
            )  # fmt: skip
    except asyncio.TimeoutError:
        raise ApiError(504, f"request timed out after {timeout:g} s", code="timeout") from None
    except Cancelled:
        raise _shutting_down() from None
    except AudioError as err:
        raise _bad_audio(err) from None
    except CtxasrError as err:
        raise ApiError(400, str(err), code="invalid_request") from None


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _shutting_down() -> ApiError:
    return ApiError(503, "the server is shutting down; retry on another instance",
                    code="shutting_down", headers={"Retry-After": "5"})  # fmt: skip


async def _transcribe(state: ServerState, path: Path, req: TranscriptionRequest,
                      options: TranscribeOptions, deadline: float,
                      request: Request) -> Transcript:  # fmt: skip
    try:
        async with _unless_disconnected(request):
            return await _run(state, path, req, options, deadline)
    except ClientGone:
        raise _client_gone() from None
    except asyncio.CancelledError:
        # Only uvicorn cancels a request (Starlette does not when a client leaves): the
        # shutdown grace ran out. The work is stopped; answer instead of a reset.
        raise _shutting_down() from None


def _client_gone() -> ApiError:
    # Nobody reads this answer; the status is for the access log.
    return ApiError(499, "client closed the request", code="client_closed")


async def _stream(state: ServerState, path: Path, req: TranscriptionRequest,
                  options: TranscribeOptions, deadline: float, request: Request,
                  upload: contextlib.AsyncExitStack) -> Response:  # fmt: skip
    """Server-Sent Events: a ``transcript.text.delta`` per segment as it is decoded, then
    ``transcript.text.done``, as OpenAI streams a transcription.

    The work runs as its own task through ``_run`` (the slot, the queue, the deadline)
    and closes ``upload`` when it ends; a client that goes away cancels it. The answer
    starts with the first event: until then a failure (a full queue, a timeout, audio
    that does not decode) answers its usual JSON error and status; after it, the stream
    ends with an ``error`` event instead of ``transcript.text.done``.
    """
    feed: Handover[Segment | None] = Handover()  # None: the work has ended

    async def work() -> Transcript:
        async with upload:
            return await _run(state, path, req, options, deadline, on_segment=feed.put)

    job = asyncio.create_task(work())
    watcher = asyncio.create_task(_watch(request, job.cancel))
    job.add_done_callback(lambda _: (feed.put(None), watcher.cancel()))
    job.add_done_callback(lambda j: j.cancelled() or j.exception())  # retrieved: no warning
    events = _events(feed, job)
    try:
        first = await anext(events)
    except asyncio.CancelledError:  # uvicorn's shutdown grace ran out, as in _transcribe
        job.cancel()
        raise _shutting_down() from None
    return StreamingResponse(_sse(first, events, job), media_type=SSE_MEDIA_TYPE,
                             headers=SSE_HEADERS)  # fmt: skip


async def _events(feed: Handover[Segment | None],
                  job: asyncio.Task[Transcript]) -> AsyncIterator[dict[str, Any]]:  # fmt: skip
    """The events of the segments ``feed`` hands over, then the done event; raises the
    job's error instead when it failed (``ApiError`` 499 when the client left)."""
    first = True
    while (segment := await feed.get()) is not None:
        if (event := delta_event(segment, first)) is not None:
            first = False
            yield event
    if job.cancelled():
        raise _client_gone()
    if (err := job.exception()) is not None:
        raise err
    yield done_event(job.result())


async def _sse(first: dict[str, Any], events: AsyncIterator[dict[str, Any]],
               job: asyncio.Task[Transcript]) -> AsyncIterator[bytes]:  # fmt: skip
    """The stream's bytes. A stream that is not read to its end (the client left, or
    uvicorn's shutdown grace ran out) stops the work: it ends without a done event."""
    try:
        yield sse(first)
        try:
            async for event in events:
                yield sse(event)
        except ApiError as err:
            yield sse(error_event(err))
        except Exception as err:  # noqa: BLE001 - a bug: logged, and the client told
            log.exception("unexpected error in a transcription stream")
            yield sse(error_event(ApiError(500, f"internal error ({type(err).__name__})",
                                           code="internal_error")))  # fmt: skip
    finally:
        job.cancel()  # nothing when it has ended


class ClientGone(Exception):
    """The client closed the connection while its request waited or ran."""


async def _watch(request: Request, on_gone: Callable[[], object], every: float = 0.25) -> None:
    """Call ``on_gone`` once the client has closed the connection (polled every ``every`` s).

    Starlette does not cancel a handler whose client left, so a closed browser tab
    would keep its queue place and its transcription running; this watches for it
    (the body is read by now, so ``is_disconnected`` only sees the disconnect).
    """
    while not await request.is_disconnected():
        await asyncio.sleep(every)
    on_gone()


@contextlib.asynccontextmanager
async def _unless_disconnected(request: Request, every: float = 0.25) -> AsyncIterator[None]:
    """Cancel the body of the ``with`` when the client goes away, raising ``ClientGone``."""
    task = asyncio.current_task()
    assert task is not None
    gone = False

    def cancel() -> None:
        nonlocal gone
        gone = True
        task.cancel()

    watcher = asyncio.create_task(_watch(request, cancel, every))
    try:
        yield
    except asyncio.CancelledError:
        if not gone:
            raise
        if hasattr(task, "uncancel"):  # Python 3.11+: the cancel was ours and ends here
            task.uncancel()
        raise ClientGone() from None
    finally:
        watcher.cancel()


# FastAPI cannot infer the form from a handler that parses it by hand (see ``forms``),
# so the schema clients and /docs see is spelled out here.
_OPENAPI_FORM: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary",
                                 "description": "The recording: any format FFmpeg decodes."},
                        "model": {"type": "string", "description": "The served model's name "
                                  "or an alias such as whisper-1 (GET /v1/models)."},
                        "prompt": {"type": "string", "description": "Its names and rare words "
                                   "join the context (terms only: no language model)."},
                        "language": {"type": "string", "description": "ISO 639-1 code."},
                        "response_format": {"type": "string", "default": "json",
                                            "enum": ["json", "text", "srt", "vtt",
                                                     "verbose_json"]},
                        "temperature": {"type": "number", "minimum": 0, "maximum": 1,
                                        "default": 0},
                        "timestamp_granularities[]": {
                            "type": "array", "items": {"type": "string",
                                                       "enum": ["segment", "word"]}},
                        "context": {"type": "array", "items": {"type": "string"},
                                    "description": "Terms: one per field, or one a line "
                                    "(optional TAB weight, # comments)."},
                        "context_text": {"type": "array", "items": {"type": "string"},
                                         "description": "Free text (slides, documents; "
                                         "UTF-8, text or a text file) whose names, rare words "
                                         "and acronyms become terms. Its text also becomes a "
                                         "language model that re-ranks the search's "
                                         "hypotheses (the server's domain_lm setting); "
                                         "verbose_json's domain_lm says what was built."},
                        "stream": {"type": "boolean", "default": False,
                                   "description": "Answer Server-Sent Events (json or text "
                                   "format): transcript.text.delta per segment as it is "
                                   "decoded, then transcript.text.done."},
                    },
                }
            }
        },
    }
}  # fmt: skip
