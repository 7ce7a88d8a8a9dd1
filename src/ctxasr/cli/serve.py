"""``ctxasr serve``: OpenAI's transcription API with context, and a page for people."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ctxasr.cli.common import user_errors, with_options
from ctxasr.options import PER_REQUEST, ModelOptions, TranscribeOptions
from ctxasr.server.settings import MAX_DEFAULT_CONCURRENCY, MIB, ServerSettings


def _default(name: str) -> str:
    """A server setting's default, for the help text."""
    field = ServerSettings.model_fields[name]
    value = field.get_default(call_default_factory=True)
    if name == "max_upload_bytes":
        value /= MIB
    return f"{value:g}" if isinstance(value, float) else f"{value}"


@with_options(TranscribeOptions, ModelOptions, skip=PER_REQUEST, given_only=True)
def serve(
    host: Annotated[
        str | None,
        typer.Option("--host", help=f"Interface (default {_default('host')}; 0.0.0.0: all)."),
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", "-p", help=f"TCP port (default {_default('port')}).")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="As for transcribe; loaded once and shared.")
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency",
            help=f"Transcriptions at once (default: one per CPU, at most {MAX_DEFAULT_CONCURRENCY}).",
        ),
    ] = None,
    max_queue: Annotated[
        int | None,
        typer.Option(
            "--max-queue",
            help=f"Requests that may wait; more get 503 (default {_default('max_queue')}).",
        ),
    ] = None,
    max_upload_mb: Annotated[
        float | None,
        typer.Option(
            "--max-upload-mb",
            help=f"Largest upload in MiB; more gets 413 (default {_default('max_upload_bytes')}).",
        ),
    ] = None,
    request_timeout: Annotated[
        float | None,
        typer.Option(
            "--request-timeout",
            help=f"Seconds per request, queueing included (default {_default('request_timeout')}).",
        ),
    ] = None,
    shutdown_grace: Annotated[
        float | None,
        typer.Option(
            "--shutdown-grace",
            help=f"On SIGTERM, seconds in-flight requests get to finish (default {_default('shutdown_grace')}).",
        ),
    ] = None,
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
