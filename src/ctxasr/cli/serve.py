"""``ctxasr serve``: OpenAI's transcription API with context, and a page for people."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ctxasr.cli.common import user_errors, with_options
from ctxasr.options import PER_REQUEST, ModelOptions, TranscribeOptions


@with_options(TranscribeOptions, ModelOptions, skip=PER_REQUEST, given_only=True)
def serve(
    host: Annotated[str | None, typer.Option("--host", help="Interface (default 127.0.0.1; 0.0.0.0: all).")] = None,
    port: Annotated[int | None, typer.Option("--port", "-p", help="TCP port (default 8000).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="As for transcribe; loaded once and shared.")] = None,
    concurrency: Annotated[int | None, typer.Option("--concurrency", help="Transcriptions at once (default: one per CPU, at most 8).")] = None,
    max_queue: Annotated[int | None, typer.Option("--max-queue", help="Requests that may wait; more get 503 (default 8).")] = None,
    max_upload_mb: Annotated[float | None, typer.Option("--max-upload-mb", help="Largest upload in MiB; more gets 413 (default 25).")] = None,
    request_timeout: Annotated[float | None, typer.Option("--request-timeout", help="Seconds per request, queueing included (default 600).")] = None,
    shutdown_grace: Annotated[float | None, typer.Option("--shutdown-grace", help="On SIGTERM, seconds in-flight requests get to finish (default 30).")] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn's log level.")] = "info",
    *,
    given: dict[str, Any],
) -> None:
    """Serve OpenAI's transcription API with context, and a page for people, over HTTP.

    Every setting can also come from the environment as CTXASR_<NAME>
    (CTXASR_PORT, CTXASR_CONCURRENCY, CTXASR_BEAM_SIZE, ...); flags win. Decoding flags
    default to the transcribe command's defaults; --threads is per transcription
    (default: the CPUs shared out).
    """
    from pydantic import ValidationError

    from ctxasr.server.run import serve as run_server
    from ctxasr.server.settings import MIB, ServerSettings

    flags = {
        "host": host, "port": port, "model": model, "concurrency": concurrency,
        "max_queue": max_queue, "request_timeout": request_timeout,
        "shutdown_grace": shutdown_grace,
        "max_upload_bytes": round(max_upload_mb * MIB) if max_upload_mb is not None else None,
    }  # fmt: skip
    try:
        settings = ServerSettings(**{k: v for k, v in flags.items() if v is not None}, **given)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        message = first["msg"].removeprefix("Value error, ")
        typer.echo(f"ctxasr: error: {where}: {message}", err=True)
        raise typer.Exit(2) from None
    with user_errors():
        run_server(settings, log_level=log_level)
